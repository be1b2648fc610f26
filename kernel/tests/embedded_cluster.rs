//! The embedded cluster: init once, join a running server, stop with the last user, recover
//! from a stale postmaster.pid, and clear errors for every bad setup.

use std::path::Path;

use dbos_kernel::embedded::{self, Cluster, Options};
use dbos_kernel::{testing, Config, Error};
use sqlx::{Connection, PgConnection};

fn options(dir: &Path) -> Options {
    Options {
        data_dir: dir.to_owned(),
        ..Options::from_config(&Config::default())
    }
}

async fn query_one(url: &str, sql: &str) -> Result<i64, sqlx::Error> {
    let mut c = PgConnection::connect(url).await?;
    let v = sqlx::query_scalar(sql).fetch_one(&mut c).await;
    let _ = c.close().await;
    v
}

fn postmaster_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("pgdata/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("a pid")
}

/// Kills the postmaster of cluster `c` (started by this process, in `dir`) with SIGKILL and
/// reaps it once it has ended; its backends are left to notice on their own.
fn kill_postmaster(c: Cluster, dir: &Path) {
    let pid = postmaster_pid(dir);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    drop(c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !testing::process_gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

#[tokio::test]
async fn the_last_process_to_leave_stops_the_server_and_data_survives_a_restart() {
    let scratch = testing::scratch_dir_for_cluster();
    let dir = scratch.path().join("d");
    let first = Cluster::start(options(&dir)).await.expect("start");
    assert!(first.started_here());
    sqlx::query("CREATE TABLE kept (x int)")
        .execute(&mut PgConnection::connect(first.url()).await.expect("connect"))
        .await
        .expect("create table");
    let pid = first.info().pid;

    let second = Cluster::start(options(&dir)).await.expect("join");
    assert!(
        !second.started_here(),
        "the running server is joined, not restarted"
    );
    assert_eq!(second.info().port, first.info().port);
    assert_eq!(
        embedded::discover(&dir).expect("discover").port,
        first.info().port
    );

    assert!(
        !first.stop().await.expect("stop"),
        "another process is attached"
    );
    assert!(!testing::process_gone(pid));
    assert_eq!(
        query_one(second.url(), "SELECT 1::int8")
            .await
            .expect("still up"),
        1
    );
    assert!(
        second.stop().await.expect("stop"),
        "the last one out stops the server"
    );
    assert!(
        testing::process_gone(pid),
        "no Postgres process is left behind"
    );
    assert!(matches!(
        embedded::discover(&dir),
        Err(Error::NoRunningCluster { .. })
    ));

    let again = Cluster::start(options(&dir)).await.expect("restart");
    assert_eq!(
        query_one(again.url(), "SELECT count(*) FROM kept")
            .await
            .expect("table kept"),
        0
    );
    let settings: (String, String) =
        sqlx::query_as("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            .fetch_one(&mut PgConnection::connect(again.url()).await.expect("connect"))
            .await
            .expect("settings");
    assert_eq!(
        settings,
        ("on".into(), "on".into()),
        "durable settings stay on"
    );
    again.stop().await.expect("stop");
}

#[tokio::test]
async fn autovacuum_keeps_up_with_queue_churn_and_a_setting_of_the_node_overrides_it() {
    let scratch = testing::scratch_dir_for_cluster();
    let dir = scratch.path().join("d");
    let settings = |c: &Cluster| {
        let url = c.url().to_owned();
        async move {
            let mut conn = PgConnection::connect(&url).await.expect("connect");
            let v: (String, String, String, String) = sqlx::query_as(
                "SELECT current_setting('autovacuum_naptime'),
                        current_setting('autovacuum_vacuum_scale_factor'),
                        current_setting('autovacuum_vacuum_cost_limit'),
                        current_setting('autovacuum_analyze_scale_factor')",
            )
            .fetch_one(&mut conn)
            .await
            .expect("settings");
            v
        }
    };
    let c = Cluster::start(options(&dir)).await.expect("start");
    assert_eq!(
        settings(&c).await,
        ("1s".into(), "0.02".into(), "1000".into(), "0.3".into())
    );
    c.stop().await.expect("stop");

    let mut own = options(&dir);
    own.settings = vec![("autovacuum_naptime".into(), "30s".into())];
    let c = Cluster::start(own).await.expect("restart");
    assert_eq!(
        settings(&c).await,
        ("30s".into(), "0.02".into(), "1000".into(), "0.3".into())
    );
    c.stop().await.expect("stop");
}

#[tokio::test]
async fn a_stale_postmaster_pid_after_kill_9_is_handled() {
    let scratch = testing::scratch_dir_for_cluster();
    let dir = scratch.path().join("d");
    let c = Cluster::start(options(&dir)).await.expect("start");
    kill_postmaster(c, &dir);
    assert!(
        dir.join("pgdata/postmaster.pid").exists(),
        "kill -9 leaves the pid file"
    );
    // Orphaned backends may linger for a moment holding shared memory; start must cope.
    let c = Cluster::start(options(&dir))
        .await
        .expect("start over a stale pid file");
    assert!(c.started_here());
    assert_eq!(query_one(c.url(), "SELECT 2::int8").await.expect("up"), 2);
    c.stop().await.expect("stop");
}

/// Backends of a killed postmaster run on until they notice; a new server starts only once
/// they have left, never beside them on the same files.
#[tokio::test]
async fn a_new_server_waits_for_the_backends_of_a_killed_one() {
    let scratch = testing::scratch_dir_for_cluster();
    let dir = scratch.path().join("d");
    let c = Cluster::start(options(&dir)).await.expect("start");
    let url = c.url().to_owned();
    let ended_file = dir.join("pgdata/busy_ended");
    // A backend busy for 4 s, then noting when it ended (in its data directory); a busy loop
    // does not look for its postmaster's death, as a wait would.
    let busy_sql = format!(
        "DO $busy$
         DECLARE t timestamptz := clock_timestamp();
         BEGIN
             WHILE clock_timestamp() < t + interval '4 seconds' LOOP NULL; END LOOP;
             EXECUTE 'COPY (SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::int8) '
                     'TO ''{}''';
         END $busy$",
        ended_file.display()
    );
    let busy = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&url).await.expect("connect");
        sqlx::query(&busy_sql).execute(&mut conn).await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut orphan = 0;
    while orphan == 0 {
        assert!(
            !busy.is_finished() && std::time::Instant::now() < deadline,
            "the busy statement runs"
        );
        orphan = query_one(
            c.url(),
            "SELECT COALESCE(max(pid), 0)::int8 FROM pg_stat_activity
             WHERE query LIKE 'DO $busy$%' AND state = 'active'",
        )
        .await
        .expect("look for the busy backend");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    kill_postmaster(c, &dir);
    assert!(
        !testing::process_gone(orphan as i32),
        "backend {orphan} outlived its postmaster"
    );
    let c = Cluster::start(options(&dir))
        .await
        .expect("start once the old backends are gone");
    let ended: i64 = std::fs::read_to_string(&ended_file)
        .expect("the old backend had ended when the new server started")
        .trim()
        .parse()
        .expect("a time");
    let started = query_one(
        c.url(),
        "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1e6)::int8",
    )
    .await
    .expect("up");
    let _ = busy.await;
    assert!(
        started >= ended,
        "the new server started at {started}, before backend {orphan} of the old one ended at {ended}"
    );
    c.stop().await.expect("stop");
}

#[tokio::test]
async fn missing_binaries_name_the_package_to_install() {
    let scratch = testing::scratch_dir_for_cluster();
    let empty = scratch.path().join("bin");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = Cluster::start(Options {
        pg_bindir: Some(empty),
        ..options(&scratch.path().join("d"))
    })
    .await
    .expect_err("no binaries");
    assert!(matches!(err, Error::BinariesNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("apt-get install postgresql"),
        "{err}"
    );
}

#[tokio::test]
async fn a_busy_port_is_reported() {
    let scratch = testing::scratch_dir_for_cluster();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let err = Cluster::start(Options {
        pg_port: Some(port),
        ..options(&scratch.path().join("d"))
    })
    .await
    .expect_err("busy");
    assert!(
        matches!(err, Error::PortInUse { port: p } if p == port),
        "{err}"
    );
    assert!(err.to_string().contains("--pg-port"), "{err}");
}

#[tokio::test]
async fn an_unwritable_data_directory_is_reported() {
    let scratch = testing::scratch_dir_for_cluster();
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let err = Cluster::start(options(&file.join("d")))
        .await
        .expect_err("not a directory");
    assert!(matches!(err, Error::DataDirNotWritable { .. }), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
}

#[tokio::test]
async fn a_directory_that_is_not_a_cluster_is_refused_untouched() {
    let scratch = testing::scratch_dir_for_cluster();
    // Someone else's files.
    let other = scratch.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), b"mine").expect("write");
    let err = Cluster::start(options(&other)).await.expect_err("refused");
    assert!(matches!(err, Error::NotACluster { .. }), "{err}");
    assert_eq!(
        std::fs::read(other.join("notes.txt")).expect("kept"),
        b"mine"
    );
    assert_eq!(
        std::fs::read_dir(&other).expect("ls").count(),
        1,
        "nothing was added"
    );

    // A data directory of ours whose cluster was damaged.
    let ours = scratch.path().join("ours");
    Cluster::start(options(&ours))
        .await
        .expect("start")
        .stop()
        .await
        .expect("stop");
    std::fs::remove_file(ours.join("pgdata/PG_VERSION")).expect("damage");
    let err = Cluster::start(options(&ours)).await.expect_err("refused");
    assert!(matches!(err, Error::NotACluster { .. }), "{err}");
    assert!(err.to_string().contains("PG_VERSION"), "{err}");
}

/// Owners of the objects in the kernel's schemas that are not the node role, as "kind name".
async fn not_owned_by_node(url: &str) -> Vec<String> {
    let mut c = PgConnection::connect(url).await.expect("connect");
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT 'schema ' || nspname FROM pg_namespace
         WHERE nspname IN ('kernel', 'os') AND nspowner <> 'dbos_node'::regrole
         UNION ALL
         SELECT 'relation ' || c.oid::regclass::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('kernel', 'os') AND c.relowner <> 'dbos_node'::regrole
         UNION ALL
         SELECT 'routine ' || p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('kernel', 'os') AND p.proowner <> 'dbos_node'::regrole
         UNION ALL
         SELECT 'database ' || datname FROM pg_database
         WHERE datname = current_database() AND datdba <> 'dbos_node'::regrole",
    )
    .fetch_all(&mut c)
    .await
    .expect("owners");
    let _ = c.close().await;
    rows
}

fn node_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        drain_timeout_ms: 1_000,
        ..Config::default()
    }
}

#[tokio::test]
async fn a_node_works_as_a_role_that_owns_the_schemas_and_is_not_a_superuser() {
    let scratch = testing::scratch_dir_for_cluster();
    let dir = scratch.path().join("d");
    let kernel = dbos_kernel::Kernel::boot(node_config(&dir), &[])
        .await
        .expect("boot");
    let (user, superuser): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(kernel.pool())
    .await
    .expect("who am I");
    assert_eq!((user.as_str(), superuser), ("dbos_node", false));
    // The node reaches the server it booted through its Unix socket (no client address); the
    // URL it hands to other programs stays TCP on the loopback.
    let tcp: Option<String> = sqlx::query_scalar("SELECT inet_client_addr()::text")
        .fetch_one(kernel.pool())
        .await
        .expect("client address");
    assert_eq!(tcp, None);
    assert!(
        kernel.url().contains("@127.0.0.1:"),
        "{}",
        dbos_kernel::redact_url(kernel.url())
    );
    let from_elsewhere: String = sqlx::query_scalar("SELECT inet_client_addr()::text")
        .fetch_one(&mut PgConnection::connect(kernel.url()).await.expect("connect"))
        .await
        .expect("client address");
    assert_eq!(from_elsewhere, "127.0.0.1/32");
    assert!(
        !kernel.url().contains("//dbos:"),
        "{}",
        dbos_kernel::redact_url(kernel.url())
    );
    assert_eq!(not_owned_by_node(kernel.url()).await, Vec::<String>::new());
    // What only a superuser may do is refused to the node.
    let err = sqlx::query("SELECT pg_read_file('/etc/hostname')")
        .execute(kernel.pool())
        .await
        .expect_err("a node role cannot read server files");
    assert!(err.to_string().contains("permission denied"), "{err}");
    kernel.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_database_made_by_the_superuser_is_handed_to_the_node_role_at_boot() {
    let scratch = testing::scratch_dir_for_cluster();
    let dir = scratch.path().join("d");
    // A data directory from before nodes had a role: the superuser migrated it and there is no
    // node password yet; it recorded the first text of the reader-role migration.
    let cluster = Cluster::start(options(&dir)).await.expect("start");
    let pool = dbos_kernel::db::connect(cluster.url(), &Default::default())
        .await
        .expect("connect");
    dbos_kernel::migrate::apply(&pool, &[dbos_kernel::migrate::KERNEL])
        .await
        .expect("migrate as the superuser");
    sqlx::query(
        "UPDATE kernel.migrations SET checksum = $1 WHERE service = 'kernel' AND version = 6",
    )
    .bind(dbos_kernel::migrate::KERNEL.migrations[5].earlier[0])
    .execute(&pool)
    .await
    .expect("record the earlier text");
    pool.close().await;
    cluster.stop().await.expect("stop");
    std::fs::remove_file(dir.join("node-password")).expect("no node password yet");

    let kernel = dbos_kernel::Kernel::boot(node_config(&dir), &[])
        .await
        .expect("boot on the old data directory");
    assert_eq!(not_owned_by_node(kernel.url()).await, Vec::<String>::new());
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM os.nodes")
        .fetch_one(kernel.pool())
        .await
        .expect("the node reads its views");
    assert_eq!(nodes, 1);
    kernel.shutdown().await.expect("shutdown");
}
