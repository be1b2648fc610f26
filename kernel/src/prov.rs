//! Provenance capture: what the code of one workflow step touched (files, commands), noted by
//! the services as it happens and written with the step's checkpoint, in the same commit.
//!
//! The workflow engine runs a step's body inside [`capture`]; a service the body calls
//! ([`note`]s) what it did. Outside a capture (a CLI command, a FUSE request) noting costs
//! nothing and records nothing.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// One thing a step touched, as the `prov.events` row it becomes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// What happened: `file_read`, `file_write`, `file_create`, `file_remove`, `command`, ...
    pub kind: &'static str,
    /// What it happened to: a path, a destination, a topic, a command line.
    pub object: Option<String>,
    /// The file's inode, for file events.
    pub inode: Option<i64>,
    /// Bytes read or written.
    pub bytes: Option<i64>,
    /// Anything else worth keeping (argv, user, exit code, ...).
    pub detail: Option<serde_json::Value>,
}

tokio::task_local! {
    static CAPTURE: Arc<Mutex<Vec<Event>>>;
}

/// Runs `f`, collecting the events noted while it runs (on this task).
pub async fn capture<F: Future>(f: F) -> (F::Output, Vec<Event>) {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let out = CAPTURE.scope(sink.clone(), f).await;
    let events = std::mem::take(&mut *sink.lock());
    (out, events)
}

/// Notes an event for the capture running on this task, if any; `event` is built only then.
/// An event about an inode without an object takes the object an earlier event of the same
/// capture gave that inode (a write by inode after a create by path).
pub fn note(event: impl FnOnce() -> Event) {
    let _ = CAPTURE.try_with(|sink| {
        let mut e = event();
        let mut sink = sink.lock();
        if let (None, Some(ino)) = (&e.object, e.inode) {
            e.object = sink
                .iter()
                .rev()
                .find(|p| p.inode == Some(ino) && p.object.is_some())
                .and_then(|p| p.object.clone());
        }
        sink.push(e);
    });
}

/// Names the object of the last event noted about `inode` that has none (a call by path
/// names what the call by inode under it noted).
pub fn name_last(inode: i64, object: &str) {
    let _ = CAPTURE.try_with(|sink| {
        if let Some(e) = sink
            .lock()
            .iter_mut()
            .rev()
            .find(|e| e.inode == Some(inode))
        {
            if e.object.is_none() {
                e.object = Some(object.to_owned());
            }
        }
    });
}

/// Whether a capture runs on this task.
pub fn capturing() -> bool {
    CAPTURE.try_with(|_| ()).is_ok()
}

/// Events as the JSON array the statements that write them take; `None` for none.
pub fn to_json(events: &[Event]) -> Option<String> {
    if events.is_empty() {
        None
    } else {
        serde_json::to_string(events).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_reach_the_capture_of_their_task_only() {
        note(|| panic!("no capture runs: the event is not built"));
        assert!(!capturing());
        let ((), events) = capture(async {
            assert!(capturing());
            note(|| Event {
                kind: "file_read",
                object: Some("/a".into()),
                inode: Some(2),
                bytes: Some(3),
                detail: None,
            });
        })
        .await;
        assert_eq!(events.len(), 1);
        let ((), named) = capture(async {
            note(|| Event {
                kind: "file_write",
                object: None,
                inode: Some(7),
                bytes: None,
                detail: None,
            });
            name_last(7, "/b");
            name_last(7, "/c");
        })
        .await;
        assert_eq!(named[0].object.as_deref(), Some("/b"));
        let ((), inherited) = capture(async {
            for object in [Some("/d".to_owned()), None] {
                note(|| Event {
                    kind: "file_write",
                    object: object.clone(),
                    inode: Some(9),
                    bytes: None,
                    detail: None,
                });
            }
        })
        .await;
        assert_eq!(inherited[1].object.as_deref(), Some("/d"));
        assert_eq!(
            to_json(&events).unwrap(),
            r#"[{"kind":"file_read","object":"/a","inode":2,"bytes":3,"detail":null}]"#
        );
        assert_eq!(to_json(&[]), None);
    }
}
