//! The dashboard in a real headless Chromium: the overview shows the node, a task submitted
//! from the form shows its output live, and a sleeping task cancelled from its page shows
//! CANCELLED. Screenshots of the pages go to `target/dashboard-*.png`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use support::Node;

/// The browser: Chromium's headless shell (installed by scripts/setup) or a full Chromium.
fn chromium() -> Option<PathBuf> {
    [
        "chromium-headless-shell",
        "chromium",
        "chromium-browser",
        "google-chrome",
    ]
    .iter()
    .find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// A headless Chromium and one page of it, driven over the DevTools protocol. Chromium runs in
/// a process group of its own, with its zygotes, renderers and utility processes: killing only
/// the browser process would leave those behind.
struct Browser {
    child: Child,
    page: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Set once [`Browser::close`] has reaped the browser: its process ID, and so its group's,
    /// may be another process's now.
    closed: bool,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// The process group of the browser and every process it started.
    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Kills the browser's whole process group and waits until no process of it is left.
    fn close(mut self) {
        let _ = killpg(self.group(), Signal::SIGKILL);
        let _ = self.child.wait();
        self.closed = true;
        let until = Instant::now() + Duration::from_secs(30);
        // A process of the group that is still there answers signal 0.
        while killpg(self.group(), None).is_ok() {
            assert!(
                Instant::now() < until,
                "a process of Chromium's group outlived the kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            let _ = killpg(self.group(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on the DevTools HTTP endpoint; the JSON body (read by its length: the endpoint
/// keeps the connection open).
fn devtools_get(port: u16, path: &str) -> Value {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("the DevTools endpoint");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(&s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("the body");
    serde_json::from_slice(&body).expect("DevTools JSON")
}

impl Browser {
    fn launch(bin: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("Chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let port: u16 = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("Chromium printed its DevTools address"))
                .expect("stderr");
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().expect("a port");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let targets = devtools_get(port, "/json/list");
        let ws = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("a page target: {targets}"))
            .to_owned();
        let (page, _) = tungstenite::connect(ws.as_str()).expect("the page's DevTools socket");
        Browser {
            child,
            page,
            next_id: 0,
            closed: false,
            _profile: profile,
        }
    }

    /// Sends a DevTools command and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page
            .send(tungstenite::Message::text(msg))
            .expect("send");
        loop {
            let m = self.page.read().expect("a DevTools message");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page; its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        r["result"]["value"].clone()
    }

    fn text(&mut self) -> String {
        self.eval("document.readyState === 'complete' ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn url(&mut self) -> String {
        self.eval("location.href")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.until("the page loads", false, |_| true);
    }

    /// Waits until the page's text satisfies `ok`, reloading it when `reload`.
    fn until(&mut self, what: &str, reload: bool, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.text();
            if !t.is_empty() && ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "the page shows {what}:\n{t}");
            std::thread::sleep(Duration::from_millis(200));
            if reload {
                self.call("Page.reload", json!({}));
            }
        }
    }

    fn screenshot(&mut self, name: &str) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("image data"))
            .expect("base64");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).expect("target/");
        std::fs::write(dir.join(format!("dashboard-{name}.png")), png).expect("written");
    }

    /// Submits `command` from the overview's form; returns the task's ID, from the page it
    /// leads to.
    fn submit(&mut self, base: &str, command: &str) -> String {
        self.goto(base);
        let js = format!(
            "document.querySelector('input[name=command]').value = {};
             document.querySelector('form[action=\"/tasks\"]').submit(); true",
            json!(command)
        );
        self.eval(&js);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.url();
            if url.contains("/workflows/") {
                return url.rsplit('/').next().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the form leads to the task's page ({url})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_dashboard_in_chromium_submits_follows_and_cancels() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no Chromium: scripts/setup installs chromium-headless-shell"
        );
        eprintln!("NOTICE: no Chromium here; the dashboard is not tested in a browser");
        return;
    };
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &["--http", "127.0.0.1:0"]);
    let base = format!("http://{}/", node.http.clone().expect("the HTTP address"));

    let mut b = Browser::launch(&bin);

    // The overview: this node, alive, and the default queue.
    b.goto(&base);
    let overview = b.until("the node", false, |t| t.contains(&node.node_id));
    assert!(overview.contains("default") && overview.contains("Submit a command task"));
    b.screenshot("overview");

    // A task from the form: its page fills in its output as it is produced.
    let id = b.submit(&base, "echo hello from chromium; sleep 1; echo and goodbye");
    b.until("the live output", false, |t| {
        t.contains("hello from chromium") && t.contains("and goodbye")
    });
    b.until("SUCCESS", true, |t| t.contains("SUCCESS"));
    // A page loaded after the task ended shows its whole output too.
    b.until("the output, again", false, |t| t.contains("and goodbye"));
    assert!(b.text().contains(&id));
    b.screenshot("workflow");

    // A sleeping task, cancelled from its page.
    let sleeper = b.submit(&base, "sleep 600");
    b.until("PENDING", true, |t| t.contains("PENDING"));
    b.eval("document.querySelector('button.cancel').click(); true");
    b.until("CANCELLED", true, |t| t.contains("CANCELLED"));
    assert!(b.text().contains(&sleeper));

    // The workflows list and the files page.
    b.goto(&format!("{base}workflows"));
    b.until("both tasks", false, |t| {
        t.contains(&id) && t.contains(&sleeper)
    });
    b.screenshot("workflows");
    b.goto(&format!("{base}files?path=/"));
    b.until("the usage of /", false, |t| t.contains("Usage"));
    b.close();
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}
