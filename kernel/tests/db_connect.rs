//! Connecting: bad URLs and unreachable servers give clear errors; a missing database is made.

use dbos_kernel::db::{self, PoolLimits};
use dbos_kernel::{testing, Config, Error, Kernel};

fn quick() -> PoolLimits {
    PoolLimits {
        connect_retry_ms_max: 500,
        ..PoolLimits::default()
    }
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_a_clear_error() {
    for url in ["mysql://x@y/z", "postgres://u:pw@host:notaport/db"] {
        let err = db::connect(url, &quick()).await.expect_err("refused");
        assert!(matches!(err, Error::BadUrl { .. }), "{url}: {err}");
        assert!(
            !err.to_string().contains("pw@"),
            "the password is hidden: {err}"
        );
    }
}

/// A port of this host that refuses connections for as long as the socket lives: bound, so no
/// other process can take it meanwhile, but not listening.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bound");
    let port = socket.local_addr().expect("its address").port();
    (socket, port)
}

#[tokio::test]
async fn an_unreachable_server_fails_after_bounded_retries() {
    let (_held, port) = refusing_port();
    let url = format!("postgres://u:secret@127.0.0.1:{port}/db");
    let err = db::connect(&url, &quick()).await.expect_err("unreachable");
    match &err {
        Error::Unreachable { attempts, .. } => assert!(*attempts > 1, "it retried"),
        other => panic!("expected Unreachable, got {other}"),
    }
    // Bounded: it gave up with Unreachable instead of retrying forever (how long the budget
    // takes is a benchmark's business, not an assertion here).
    assert!(!err.to_string().contains("secret"), "{err}");
    let config = Config {
        database_url: Some(url),
        connect_retry_ms_max: 300,
        ..Config::default()
    };
    assert!(matches!(
        Kernel::boot(config, &[]).await,
        Err(Error::Unreachable { .. })
    ));
}

#[tokio::test]
async fn a_missing_database_is_created_and_sessions_carry_the_guards() {
    let db = testing::database().await;
    // Creating a database takes a role that may: the superuser here, not the node role.
    let url = format!("{}_fresh", db.admin_url);
    let limits = PoolLimits {
        idle_in_transaction_timeout_ms: 1234,
        ..PoolLimits::default()
    };
    let pool = db::connect(&url, &limits)
        .await
        .expect("created and connected");
    let (name, guard, plans, seqscan, jit): (String, String, String, String, String) =
        sqlx::query_as(
            "SELECT current_database(), current_setting('idle_in_transaction_session_timeout'),
                    current_setting('plan_cache_mode'), current_setting('enable_seqscan'),
                    current_setting('jit')",
        )
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(name, format!("{}_fresh", db.name));
    assert_eq!(guard, "1234ms");
    assert_eq!(plans, "force_generic_plan");
    assert_eq!(seqscan, "off");
    assert_eq!(jit, "off");
}

#[tokio::test]
async fn a_multi_host_url_connects_to_the_first_host_that_answers_and_accepts_writes() {
    let db = testing::database().await;
    // A host nothing listens on comes first in the list.
    let (_held, dead) = refusing_port();
    let (head, rest) = db.url.split_once('@').expect("user info");
    let (live, path) = rest.split_once('/').expect("a database");
    let url = format!("{head}@127.0.0.1:{dead},{live}/{path}?target_session_attrs=read-write");
    let pool = db::connect(&url, &quick()).await.expect("the live host");
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&pool)
        .await
        .expect("a query");
    assert!(!standby);
    // A single connection (what the CLI's one-shot commands open) resolves the same way.
    let mut one = db::connect_one(&url, &quick())
        .await
        .expect("one connection");
    sqlx::query("SELECT 1")
        .execute(&mut one)
        .await
        .expect("it answers");
    // No host answering is a clear error naming what each host said.
    let none = format!("{head}@127.0.0.1:{dead},127.0.0.1:{dead}/{path}");
    let err = db::connect(&none, &quick())
        .await
        .expect_err("no host")
        .to_string();
    assert!(err.contains("no writable server among 2 hosts"), "{err}");
    let password = head.rsplit_once(':').expect("a password").1;
    assert!(!err.contains(password), "the password is hidden: {err}");
}

#[tokio::test]
async fn a_pool_of_its_own_keeps_to_its_size_and_carries_the_guards() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let pool = k.endpoint().own_pool(2);
    // Four statements at once on a pool of two: two wait for a connection, none opens a third.
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        running.spawn(async move {
            sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
                .fetch_one(&pool)
                .await
        });
    }
    let sessions: Vec<i32> = running
        .join_all()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("statements");
    let distinct: std::collections::HashSet<i32> = sessions.into_iter().collect();
    assert_eq!(distinct.len(), 2, "four statements ran on two sessions");
    assert_eq!(pool.size(), 2);
    let plans: String = sqlx::query_scalar("SELECT current_setting('plan_cache_mode')")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(plans, "force_generic_plan", "the node's session settings");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_kept_connection_serves_the_next_statement_until_one_fails() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let kept = k.endpoint().kept(2);
    let mut c = kept.acquire().await.expect("a connection");
    let first = backend_pid(&mut c).await.expect("query");
    c.keep();
    // Kept, the session serves the next statement as it is; given back to its pool, sqlx
    // would test it with a round trip first.
    let mut c = kept.acquire().await.expect("a connection");
    let again = backend_pid(&mut c).await.expect("query");
    assert_eq!(again, first, "the kept session served the next statement");
    // A statement that fails leaves its connection out: ended by the server, this one is not
    // handed out again.
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(k.pool())
        .await
        .expect("terminate");
    assert!(ended, "the session was ended");
    backend_pid(&mut c).await.expect_err("its session is gone");
    drop(c);
    let mut c = kept.acquire().await.expect("a connection");
    let next = backend_pid(&mut c).await.expect("the next statement runs");
    assert_ne!(next, first, "a new session");
    c.keep();
    kept.release_all();
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_connection_kept_while_all_are_in_use_goes_to_the_statement_waiting_for_one() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    // One connection: while it is in use, the next acquire waits for the pool.
    let kept = k.endpoint().kept(1);
    let mut held = kept.acquire().await.expect("a connection");
    let first = backend_pid(&mut held).await.expect("query");
    let waiting = kept.acquire();
    tokio::pin!(waiting);
    tokio::select! {
        biased;
        _ = &mut waiting => panic!("the pool's only connection is in use"),
        () = std::future::ready(()) => {}
    }
    // Kept rather than given back to the pool: the waiting acquire must still get it, not
    // wait for the pool until its acquire timeout.
    held.keep();
    let mut next = waiting.await.expect("the kept connection");
    assert_eq!(backend_pid(&mut next).await.expect("query"), first);
    next.keep();
    kept.release_all();
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn touching_idle_connections_makes_their_held_back_statistics_public() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let kept = k.endpoint().kept(1);
    let scans = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(sum(seq_scan), 0)::int8 FROM pg_stat_user_tables WHERE relname = 'counted'",
        )
        .fetch_one(k.pool())
        .await
        .expect("read statistics")
    };
    // A backend publishes when it goes idle, unless it published within the last second; then
    // it holds its counts back for ten seconds more, or until it ends another transaction.
    let settle = || async {
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        k.endpoint().touch_idle().await
    };
    sqlx::query("CREATE TABLE counted (x int)")
        .execute(k.pool())
        .await
        .expect("create");
    let mut c = kept.acquire().await.expect("a connection");
    scan(&mut c).await;
    c.keep();
    settle().await;
    let before = scans().await;
    // Within a second of the last publication: held back.
    let mut c = kept.acquire().await.expect("a connection");
    for _ in 0..20 {
        scan(&mut c).await;
    }
    c.keep();
    assert!(settle().await >= 1, "the kept connection answered");
    let after = scans().await;
    assert_eq!(
        after - before,
        20,
        "every scan of the kept connection is counted: {before} then {after}"
    );
    kept.release_all();
    k.shutdown().await.expect("shutdown");
}

/// Reads table `counted` whole (one sequential scan).
async fn scan(conn: &mut sqlx::PgConnection) {
    sqlx::query("SELECT count(*) FROM counted")
        .execute(conn)
        .await
        .expect("scan");
}

/// The server process of the session `conn` is on.
async fn backend_pid(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
}
