//! Nodes register, heartbeat, leave cleanly, and count as dead after their lease.

use std::time::Duration;

use dbos_kernel::node::{self, NodeInfo};
use dbos_kernel::{testing, Config, Kernel};

/// A pid that belonged to a process that has exited.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id() as i32;
    child.wait().expect("wait");
    pid
}

fn info(node_id: &str, pid: i32, data_dir: Option<&str>) -> NodeInfo {
    NodeInfo {
        node_id: node_id.into(),
        hostname: node::hostname(),
        machine_id: node::machine_id(),
        boot_id: node::boot_id(),
        pid,
        version: "0.0.0".into(),
        data_dir: data_dir.map(str::to_owned),
        slots: 4,
        labels: Default::default(),
        // Long enough that no test's own pace can expire it; tests that need it expired
        // age the heartbeat themselves.
        lease_ms: 60_000,
    }
}

#[tokio::test]
async fn a_booted_node_is_alive_with_its_labels_and_heartbeats() {
    let db = testing::database().await;
    let mut config = db.config();
    config.labels.insert("gpu".into(), "true".into());
    config.slots = 7;
    let k = Kernel::boot(config, &[]).await.expect("boot");
    let (alive, slots, gpu, hb1): (bool, i32, Option<String>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "SELECT alive, slots, labels->>'gpu', heartbeat_at FROM os.nodes WHERE node_id = $1",
        )
        .bind(k.node_id())
        .fetch_one(k.pool())
        .await
        .expect("the node's row");
    assert!(alive);
    assert_eq!(slots, 7);
    assert_eq!(gpu.as_deref(), Some("true"));
    // The heartbeat advances: wait for the next one rather than sleeping a guessed interval.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let hb2: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT heartbeat_at FROM kernel.nodes WHERE node_id = $1")
                .bind(k.node_id())
                .fetch_one(k.pool())
                .await
                .expect("heartbeat");
        if hb2 > hb1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the heartbeat advances"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = k.node_id().to_owned();
    let db_pool = dbos_kernel::db::connect(&db.url, &Default::default())
        .await
        .expect("pool");
    k.shutdown().await.expect("shutdown");
    let (state, alive): (String, bool) =
        sqlx::query_as("SELECT state, alive FROM os.nodes WHERE node_id = $1")
            .bind(&id)
            .fetch_one(&db_pool)
            .await
            .expect("row");
    assert_eq!((state.as_str(), alive), ("stopped", false));
    assert!(
        node::dead_nodes(&db_pool).await.expect("dead").is_empty(),
        "a clean stop is not a death"
    );
}

#[tokio::test]
async fn a_silent_node_is_listed_dead_after_its_lease() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let ghost = info("ghost", dead_pid(), Some("/elsewhere"));
    node::register(k.pool(), &ghost).await.expect("register");
    let dead = node::dead_nodes(k.pool()).await.expect("dead nodes");
    assert!(
        dead.iter().all(|n| n.node_id != "ghost"),
        "fresh heartbeat: alive"
    );
    // A lease shorter than the server has been up: the heartbeat's age alone decides.
    sqlx::query(
        "UPDATE kernel.nodes SET heartbeat_at = now() - interval '2 seconds', lease_ms = 1
         WHERE node_id = 'ghost'",
    )
    .execute(k.pool())
    .await
    .expect("age the heartbeat");
    let dead = node::dead_nodes(k.pool()).await.expect("dead nodes");
    assert_eq!(
        dead.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
        vec!["ghost"]
    );
    assert!(!dead[0].alive);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn no_node_is_declared_dead_for_a_lease_that_ran_out_while_the_server_was_down() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let ghost = info("ghost", dead_pid(), Some("/elsewhere"));
    node::register(k.pool(), &ghost).await.expect("register");
    // Its last heartbeat is older than its lease, but the server started within the lease:
    // the node could not heartbeat while the server was down, and counts as alive.
    sqlx::query(
        "UPDATE kernel.nodes
         SET lease_ms = (extract(epoch FROM now() - pg_postmaster_start_time()) * 1000)::bigint
                        + 3600000,
             heartbeat_at = pg_postmaster_start_time() - interval '2 hours'
         WHERE node_id = 'ghost'",
    )
    .execute(k.pool())
    .await
    .expect("age the heartbeat");
    let mut conn = k.pool().acquire().await.expect("conn");
    let declared = node::declare_expired_dead(&mut conn)
        .await
        .expect("declare");
    assert!(!declared.contains(&"ghost".to_owned()), "{declared:?}");
    let dead = node::dead_nodes(k.pool()).await.expect("dead nodes");
    assert!(dead.iter().all(|n| n.node_id != "ghost"));
    drop(conn);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_node_id_held_by_a_live_node_is_refused_and_reusable_once_stopped() {
    let db = testing::database().await;
    let config = Config {
        node_id: Some("fixed".into()),
        ..db.config()
    };
    let k = Kernel::boot(config.clone(), &[]).await.expect("boot");
    // Another process (not this one) holds the id and heartbeats.
    sqlx::query("UPDATE kernel.nodes SET pid = 1 WHERE node_id = 'fixed'")
        .execute(k.pool())
        .await
        .expect("update");
    let err = Kernel::boot(config.clone(), &[])
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("belongs to a live node"), "{err}");
    k.shutdown().await.expect("shutdown");
    let k = Kernel::boot(config, &[]).await.expect("reuse after stop");
    assert_eq!(k.node_id(), "fixed");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_restart_on_the_same_host_marks_the_crashed_predecessor_dead_at_once() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    // External database: data_dir is NULL for this host's nodes, as for the predecessor.
    let crashed = info("crashed", dead_pid(), None);
    // Another machine with the same host name: never this machine's predecessor.
    let live_elsewhere = NodeInfo {
        machine_id: "another-machine".into(),
        ..info("other", dead_pid(), None)
    };
    // This machine before a reboot: gone, even though its pid now belongs to a live process.
    let before_reboot = NodeInfo {
        boot_id: "an-earlier-boot".into(),
        ..info("rebooted", std::process::id() as i32, None)
    };
    for n in [&crashed, &live_elsewhere, &before_reboot] {
        node::register(k.pool(), n).await.expect("register");
    }
    k.shutdown().await.expect("shutdown");

    let k = Kernel::boot(db.config(), &[]).await.expect("restart");
    let mut replaced = k.replaced_nodes().to_vec();
    replaced.sort();
    assert_eq!(replaced, ["crashed".to_owned(), "rebooted".to_owned()]);
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT node_id, state FROM kernel.nodes WHERE node_id IN ('crashed', 'other') ORDER BY 1",
    )
    .fetch_all(k.pool())
    .await
    .expect("states");
    assert_eq!(
        states,
        vec![
            ("crashed".into(), "dead".into()),
            ("other".into(), "running".into())
        ],
        "only this machine's vanished process is marked dead before its lease, not another \
         machine's of the same host name"
    );
    let dead = node::dead_nodes(k.pool()).await.expect("dead");
    assert!(dead.iter().any(|n| n.node_id == "crashed"));
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_node_declared_dead_by_the_cluster_stops_itself() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    sqlx::query("UPDATE kernel.nodes SET state = 'dead', stopped_at = now() WHERE node_id = $1")
        .bind(k.node_id())
        .execute(k.pool())
        .await
        .expect("declare dead");
    tokio::time::timeout(Duration::from_secs(10), k.shutdown_token().cancelled())
        .await
        .expect("the node notices at its next heartbeat");
    let state: String = sqlx::query_scalar("SELECT state FROM kernel.nodes WHERE node_id = $1")
        .bind(k.node_id())
        .fetch_one(k.pool())
        .await
        .expect("state");
    assert_eq!(state, "dead", "a fenced node does not resurrect its row");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_stop_right_after_the_server_ended_the_nodes_connections_is_still_recorded() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let id = k.node_id().to_owned();
    // Several connections of the node's pool, each used a moment ago: a connection used within
    // the last second is handed out again without a test.
    let nap = || sqlx::query("SELECT pg_sleep(0.05)").execute(k.pool());
    let (a, b, c, d) = tokio::join!(nap(), nap(), nap(), nap());
    for r in [a, b, c, d] {
        r.expect("a statement on the node's pool");
    }
    let admin = dbos_kernel::db::connect(&db.url, &Default::default())
        .await
        .expect("pool");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND backend_type = 'client backend') t",
    )
    .fetch_one(&admin)
    .await
    .expect("terminate the node's connections");
    assert!(ended >= 4, "the node's connections ended: {ended}");
    k.shutdown().await.expect("shutdown");
    let state: String = sqlx::query_scalar("SELECT state FROM kernel.nodes WHERE node_id = $1")
        .bind(&id)
        .fetch_one(&admin)
        .await
        .expect("row");
    assert_eq!(
        state, "stopped",
        "the stop is recorded on a fresh connection"
    );
}
