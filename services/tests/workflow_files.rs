//! A workflow step writes files and records its checkpoint in one commit.

use dbos_fs::{Fs, Identity, Options};
use dbos_services::testing::{node, step_names};
use dbos_services::workflow::{self, StartOptions};

async fn report(
    ctx: workflow::Context,
    (name, body): (String, String),
) -> Result<u64, workflow::Error> {
    let path = format!("/reports/{name}.txt");
    let p = path.clone();
    let written: u64 = ctx
        .transaction("write report", move |c| {
            let (path, body) = (p.clone(), body.clone());
            Box::pin(async move {
                let fs = Fs::new(Options::default());
                let root = Identity::root();
                fs.mkdir_all(&mut *c, &root, "/reports", 0o755).await?;
                // O_EXCL: a second execution of this step would fail here.
                let st = fs.create(&mut *c, &root, &path, 0o644).await?;
                Ok(fs
                    .write_at(&mut *c, &root, st.ino, 0, body.as_bytes())
                    .await?)
            })
        })
        .await?;
    // A step that writes a file and then fails leaves no file behind.
    let failed: Result<(), workflow::Error> = ctx
        .transaction("write and fail", move |c| {
            Box::pin(async move {
                let fs = Fs::new(Options::default());
                fs.create(&mut *c, &Identity::root(), "/reports/partial", 0o644)
                    .await?;
                Err(workflow::Error::failed("Abort", "changed my mind"))
            })
        })
        .await;
    assert!(failed.is_err());
    // A file-system error is recorded as the step's error, with its errno.
    let refused: Result<(), workflow::Error> = ctx
        .transaction("refused", move |c| {
            let path = path.clone();
            Box::pin(async move {
                let fs = Fs::new(Options::default());
                fs.create(&mut *c, &Identity::root(), &path, 0o644).await?;
                Ok(())
            })
        })
        .await;
    match refused {
        Err(workflow::Error::Failed(p)) => {
            assert_eq!(p.name, "OSError");
            assert_eq!(p.code, Some(serde_json::json!(libc_eexist())));
        }
        other => panic!("expected EEXIST as a recorded error, got {other:?}"),
    }
    Ok(written)
}

fn libc_eexist() -> i32 {
    17
}

#[tokio::test]
async fn a_step_writes_files_and_its_checkpoint_in_one_commit() {
    let n = node(|r| {
        r.register("report", report);
    })
    .await;
    let opts = || StartOptions {
        workflow_id: Some("r1".into()),
        ..StartOptions::default()
    };
    let args = ("q1".to_owned(), "revenue up".to_owned());
    let out: u64 = n.wf.run("report", args.clone(), opts()).await.expect("run");
    assert_eq!(out, 10);
    // The same workflow again replays the recorded steps: no second create (which would fail
    // with EEXIST), the same result.
    let again: u64 = n.wf.run("report", args, opts()).await.expect("replay");
    assert_eq!(again, 10);
    let fs = Fs::new(Options::default());
    let mut c = n.pool().acquire().await.expect("conn");
    let root = Identity::root();
    let body = fs
        .read(&mut c, &root, "/reports/q1.txt", 0, 100)
        .await
        .expect("the report exists");
    assert_eq!(body, b"revenue up");
    assert_eq!(
        fs.stat(&mut c, &root, "/reports/partial")
            .await
            .expect_err("rolled back")
            .errno(),
        2
    );
    assert_eq!(
        step_names(n.pool(), "r1").await,
        vec![
            (1, "write report".into()),
            (2, "write and fail".into()),
            (3, "refused".into())
        ]
    );
    assert!(fs.fsck(&mut c).await.expect("fsck").is_empty());
    n.stop().await;
}
