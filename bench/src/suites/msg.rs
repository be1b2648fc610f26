//! Suite `msg`: the paper's IPC benchmark (B4) on our messaging, beside tokio TCP on loopback and
//! a Unix domain socket measured in the same run.
//!
//! - ping-pong: a workflow sends a message to another workflow, which sends it back; 64 B, 1 KB,
//!   8 KB; a round trip is 2 commits when each send hands its message to the waiting `recv`
//!   (both workflows run on the bench's node), 4 when it does not (send, recv, send, recv).
//! - ping20-pong20: 20 messages outstanding (one bulk send), replies received one by one.
//! - broadcast: a publisher publishes 64 B messages to a topic (batches of 100 per commit) and R
//!   plain subscribers consume them through their cursors; figure: deliveries per second.
//!   Then the same to 40 subscriber workflows, each taking its messages with `next_messages`,
//!   which records every batch it takes as the workflow's operation.
//! - send to a waiting `recv`: time from the client's send to the workflow's receipt, alone and
//!   among a crowd of waiting workflows (10,000 in `recv`, 10,000 in `sleep`), with the node's
//!   resident memory while they wait.

use std::time::{SystemTime, UNIX_EPOCH};

use dbos_msg::{Outgoing, Start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Workflow that answers every "ping" message `(reply_to, payload)` with a "pong" carrying the
/// payload, until it gets an empty `reply_to` or waits a minute.
pub(super) const PONG: &str = "bench.pong";
/// Workflow that plays ping-pong with a pong workflow: input `(pong_id, bytes, batch, run_ms)`;
/// output the round-trip latencies in ms (one per batch).
pub(super) const PING: &str = "bench.ping";
/// Workflow that receives `n` messages carrying their send time (µs since the epoch) and returns
/// each one's delay in ms.
pub(super) const PROBE: &str = "bench.recv_probe";
/// The topic the probe receives on.
const PROBE_TOPIC: &str = "probe";
/// Messages the running probe has received (one probe runs at a time, in this process).
static PROBE_RECEIVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Workflow subscribed to topic `topic` (by the bench, as its ID) that takes `n` messages of it
/// with `next_messages`; output how many it took.
pub(super) const TOPIC_READER: &str = "bench.topic_reader";
/// Workflow that waits up to an hour for one message on topic "wake".
pub(super) const WAIT_RECV: &str = "bench.wait_recv";
/// Workflow that sleeps an hour (until cancelled).
pub(super) const WAIT_SLEEP: &str = "bench.wait_sleep";

const WAIT: Duration = Duration::from_secs(60);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(super) async fn pong(ctx: wf::Context, (_,): (u32,)) -> Result<u64, wf::Error> {
    let mut n = 0;
    while let Some((from, payload)) = ctx.recv::<(String, String)>(Some("ping"), WAIT).await? {
        if from.is_empty() {
            break;
        }
        ctx.send(&from, &payload, Some("pong")).await?;
        n += 1;
    }
    Ok(n)
}

pub(super) async fn ping(
    ctx: wf::Context,
    (pong, bytes, batch, run_ms): (String, usize, usize, u64),
) -> Result<Vec<f64>, wf::Error> {
    let me = ctx.workflow_id().to_owned();
    let payload = "x".repeat(bytes);
    let message = serde_json::to_string(&(&me, &payload))?;
    let start = Instant::now();
    let mut lats = Vec::new();
    while start.elapsed() < Duration::from_millis(run_ms) {
        let t = Instant::now();
        if batch == 1 {
            ctx.send(&pong, &(&me, &payload), Some("ping")).await?;
        } else {
            let msgs: Vec<Outgoing> = (0..batch)
                .map(|_| Outgoing {
                    destination: pong.clone(),
                    message: message.clone(),
                    topic: Some("ping".into()),
                    idempotency_key: None,
                })
                .collect();
            ctx.send_bulk(&msgs).await?;
        }
        for _ in 0..batch {
            ctx.recv::<String>(Some("pong"), WAIT).await?;
        }
        lats.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(lats)
}

pub(super) async fn probe(ctx: wf::Context, (n,): (u32,)) -> Result<Vec<f64>, wf::Error> {
    let mut lats = Vec::new();
    for _ in 0..n {
        let Some(sent_us) = ctx.recv::<i64>(Some(PROBE_TOPIC), WAIT).await? else {
            break;
        };
        lats.push((now_us() - sent_us) as f64 / 1000.0);
        PROBE_RECEIVED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(lats)
}

pub(super) async fn topic_reader(
    ctx: wf::Context,
    (topic, n): (String, usize),
) -> Result<usize, wf::Error> {
    let mut got = 0;
    while got < n {
        let batch = ctx.next_messages::<String>(&topic, WAIT).await?;
        if batch.is_empty() {
            break;
        }
        got += batch.len();
    }
    Ok(got)
}

pub(super) async fn wait_recv(ctx: wf::Context, (_,): (u32,)) -> Result<bool, wf::Error> {
    Ok(ctx
        .recv::<u32>(Some("wake"), Duration::from_secs(3600))
        .await?
        .is_some())
}

pub(super) async fn wait_sleep(ctx: wf::Context, (_,): (u32,)) -> Result<(), wf::Error> {
    ctx.sleep(Duration::from_secs(3600)).await
}

fn start_opts(id: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(id.to_owned()),
        ..StartOptions::default()
    }
}

/// Our ping-pong: round trips per second and their latencies.
async fn ours_ping_pong(
    env: &Env,
    bytes: usize,
    batch: usize,
    run: Duration,
) -> Result<(f64, Vec<f64>)> {
    let tag = uuid_tag();
    let pong_id = format!("pong-{tag}");
    let pong = env
        .wf
        .start::<_, u64>(PONG, (0u32,), start_opts(&pong_id))
        .await?;
    let t = Instant::now();
    let lats: Vec<f64> = env
        .wf
        .run(
            PING,
            (pong_id.clone(), bytes, batch, run.as_millis() as u64),
            start_opts(&format!("ping-{tag}")),
        )
        .await?;
    let took = t.elapsed();
    env.wf
        .messages()
        .send(&pong_id, &("", ""), Some("ping"), None)
        .await?;
    pong.result().await?;
    let msgs = (lats.len() * batch) as f64;
    Ok((msgs / took.as_secs_f64(), lats))
}

fn uuid_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A connected stream pair over TCP loopback or a Unix socket.
enum Transport {
    Tcp,
    Unix,
}

async fn pair(t: &Transport) -> Result<(Box<dyn Stream>, Box<dyn Stream>)> {
    match t {
        Transport::Tcp => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
            let (a, b) = (a?, b?.0);
            a.set_nodelay(true)?;
            b.set_nodelay(true)?;
            Ok((Box::new(a), Box::new(b)))
        }
        Transport::Unix => {
            let (a, b) = tokio::net::UnixStream::pair()?;
            Ok((Box::new(a), Box::new(b)))
        }
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Ping-pong over a socket: an echo task answers each `batch` messages of `bytes`.
async fn socket_ping_pong(
    t: &Transport,
    bytes: usize,
    batch: usize,
    run: Duration,
) -> Result<(f64, Vec<f64>)> {
    let (mut a, mut b) = pair(t).await?;
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; bytes];
        while b.read_exact(&mut buf).await.is_ok() {
            if b.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let msg = vec![7u8; bytes];
    let mut buf = vec![0u8; bytes];
    let start = Instant::now();
    let mut lats = Vec::new();
    while start.elapsed() < run {
        let t = Instant::now();
        for _ in 0..batch {
            a.write_all(&msg).await?;
        }
        for _ in 0..batch {
            a.read_exact(&mut buf).await?;
        }
        lats.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let took = start.elapsed();
    drop(a);
    let _ = echo.await;
    Ok(((lats.len() * batch) as f64 / took.as_secs_f64(), lats))
}

/// Broadcast over sockets: one writer sends each message to every receiver's connection.
async fn socket_broadcast(t: &Transport, receivers: usize, messages: usize) -> Result<f64> {
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..receivers {
        let (a, mut b) = pair(t).await?;
        writers.push(a);
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..messages {
                b.read_exact(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let start = Instant::now();
    let msg = [9u8; 64];
    for _ in 0..messages {
        for w in writers.iter_mut() {
            w.write_all(&msg).await?;
        }
    }
    for r in readers {
        r.await??;
    }
    Ok((receivers * messages) as f64 / start.elapsed().as_secs_f64())
}

/// Our broadcast: a publisher (batches of 100 per commit) and `receivers` subscribers.
async fn ours_broadcast(env: &Env, receivers: usize, messages: usize) -> Result<f64> {
    let msg = env.wf.messages().clone();
    let topic = format!("bench-{}", uuid_tag());
    for r in 0..receivers {
        msg.subscribe(&topic, &format!("r{r}"), Start::Next).await?;
    }
    let start = Instant::now();
    let mut subs = Vec::new();
    for r in 0..receivers {
        let (msg, topic) = (msg.clone(), topic.clone());
        subs.push(tokio::spawn(async move {
            let name = format!("r{r}");
            let mut got = 0;
            while got < messages {
                let batch = msg.consume(&topic, &name, WAIT).await?;
                anyhow::ensure!(!batch.is_empty(), "subscriber {name} starved");
                got += batch.len();
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let payload = "x".repeat(62); // 64 bytes of JSON with its quotes
    let batch: Vec<&str> = vec![payload.as_str(); 100];
    for _ in 0..messages.div_ceil(100) {
        msg.publish(&topic, &batch).await?;
    }
    for s in subs {
        s.await??;
    }
    Ok((receivers * messages) as f64 / start.elapsed().as_secs_f64())
}

/// Our broadcast to `receivers` subscriber workflows (each subscribed before the first
/// publish): deliveries per second from the readers' start to the last one's end.
async fn ours_broadcast_to_workflows(env: &Env, receivers: usize, messages: usize) -> Result<f64> {
    let msg = env.wf.messages().clone();
    let tag = uuid_tag();
    let topic = format!("bench-{tag}");
    let ids: Vec<String> = (0..receivers)
        .map(|r| format!("reader-{tag}-{r}"))
        .collect();
    for id in &ids {
        msg.subscribe(&topic, id, Start::Next).await?;
    }
    let start = Instant::now();
    let mut readers = Vec::new();
    for id in &ids {
        readers.push(
            env.wf
                .start::<_, usize>(TOPIC_READER, (topic.clone(), messages), start_opts(id))
                .await?,
        );
    }
    let payload = "x".repeat(62); // 64 bytes of JSON with its quotes
    let batch: Vec<&str> = vec![payload.as_str(); 100];
    for _ in 0..messages.div_ceil(100) {
        msg.publish(&topic, &batch).await?;
    }
    for (id, r) in ids.iter().zip(readers) {
        let got = r.result().await?;
        anyhow::ensure!(
            got == messages,
            "reader {id} took {got} of {messages} messages"
        );
    }
    Ok((receivers * messages) as f64 / start.elapsed().as_secs_f64())
}

/// A broadcast row's baseline, the TCP loop's runs `tcp`, and its size (`messages`, in
/// publishes of 100).
fn beside_tcp_broadcast(row: &mut Row, tcp: &[f64], messages: usize) {
    let tcp_med = summarize(tcp).0;
    row.baseline = Some(tcp_med);
    row.baseline_name = Some("tokio TCP loopback, one write per message".into());
    row.ratio = Some(row.ours / tcp_med);
    row.extra.insert("messages".into(), messages.into());
    row.extra.insert("publish_batch".into(), 100.into());
}

pub(crate) async fn msg(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let sizes = [64usize, 1024, 8192];
    let fanouts = [1usize, 10, 40];
    let cells = sizes.len() + 1 + fanouts.len() + 2;
    let pb = bar((cells * plan.repeats) as u64, "msg: IPC");
    let mut rows = Vec::new();
    for (bytes, batch) in sizes.iter().map(|&b| (b, 1)).chain([(64, 20)]) {
        let (mut ours, mut tcp, mut unix) = (Vec::new(), Vec::new(), Vec::new());
        let mut lats = Vec::new();
        let mut per_op = Vec::new();
        for _ in 0..plan.repeats {
            let before = Counters::read(env, &[]).await?;
            let (rate, l) = ours_ping_pong(env, bytes, batch, plan.run).await?;
            let after = Counters::read(env, &[]).await?;
            // Per round trip (a ping and its pong), the row's unit.
            let round_trips = (l.len() * batch) as u64;
            per_op.push(before.per_op(&after, round_trips, env.pool()).await?);
            ours.push(rate);
            lats.extend(l);
            tcp.push(
                socket_ping_pong(&Transport::Tcp, bytes, batch, plan.run)
                    .await?
                    .0,
            );
            unix.push(
                socket_ping_pong(&Transport::Unix, bytes, batch, plan.run)
                    .await?
                    .0,
            );
            pb.inc(1);
        }
        let name = if batch == 1 {
            format!("ping-pong {}, 1 outstanding", size_name(bytes))
        } else {
            format!("ping{batch}-pong{batch} {}", size_name(bytes))
        };
        let mut row = Row::new("msg", name, &ours, "msgs/s", plan.repeats)
            .at(format!("ping-pong {}", size_name(bytes)), batch as u32);
        let tcp_med = summarize(&tcp).0;
        row.baseline = Some(tcp_med);
        row.baseline_name = Some("tokio TCP loopback".into());
        row.ratio = Some(row.ours / tcp_med);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        row.extra
            .insert("unix_socket_msgs_per_s".into(), summarize(&unix).0.into());
        row.extra.insert(
            "ratio_to_unix_socket".into(),
            (row.ours / summarize(&unix).0).into(),
        );
        let commits = summarize(&per_op.iter().map(|p| p.commits).collect::<Vec<_>>()).0;
        row.extra
            .insert("commits_per_round_trip".into(), commits.into());
        PerOp::budget(&per_op, "round_trip", &mut row.extra);
        row.paper = Some(if batch == 1 {
            "4–9.5× slower than TCP; 0.51–0.76× gRPC (PVLDB §4.3)".into()
        } else {
            "up to 2.7× faster than gRPC (PVLDB §4.3)".into()
        });
        rows.push(row);
    }
    let messages = if plan.quick { 500 } else { 5_000 };
    for &r in &fanouts {
        let (mut ours, mut tcp, mut unix) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.repeats {
            ours.push(ours_broadcast(env, r, messages).await?);
            tcp.push(socket_broadcast(&Transport::Tcp, r, messages).await?);
            unix.push(socket_broadcast(&Transport::Unix, r, messages).await?);
            pb.inc(1);
        }
        let mut row = Row::new(
            "msg",
            format!(
                "broadcast 64 B to {r} subscriber{}",
                if r == 1 { "" } else { "s" }
            ),
            &ours,
            "deliveries/s",
            plan.repeats,
        )
        .at("broadcast 64 B (deliveries/s)", r as u32);
        beside_tcp_broadcast(&mut row, &tcp, messages);
        row.extra.insert(
            "unix_socket_deliveries_per_s".into(),
            summarize(&unix).0.into(),
        );
        if r == 40 {
            row.paper = Some("2.3× gRPC throughput at 40 receivers (PVLDB §4.3)".into());
        }
        rows.push(row);
    }
    let readers = 40;
    let (mut ours, mut tcp, mut per_op) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.repeats {
        let before = Counters::read(env, &[]).await?;
        ours.push(ours_broadcast_to_workflows(env, readers, messages).await?);
        let after = Counters::read(env, &[]).await?;
        // Per message published: each reaches every reader.
        per_op.push(before.per_op(&after, messages as u64, env.pool()).await?);
        tcp.push(socket_broadcast(&Transport::Tcp, readers, messages).await?);
        pb.inc(1);
    }
    let mut row = Row::new(
        "msg",
        format!("broadcast 64 B to {readers} subscriber workflows (next_messages)"),
        &ours,
        "deliveries/s",
        plan.repeats,
    );
    beside_tcp_broadcast(&mut row, &tcp, messages);
    PerOp::budget(&per_op, "message", &mut row.extra);
    rows.push(row);
    // Send to a waiting recv: alone, then among a crowd of waiting workflows.
    let n: u32 = if plan.quick { 30 } else { 300 };
    let mut idle = Vec::new();
    for _ in 0..plan.repeats {
        idle.extend(wake_latencies(env, n, 0).await?);
    }
    // The bound: the send commits, with the receive's record of the message (the receive
    // waits on this node, so the send takes the message to it), on a machine that was idle for
    // the probe's pause; a commit then waits longer than in the ceiling's tight loop (the disk
    // and the CPUs wake from idle). Without that handoff, a delivery is two such commits in
    // turn: `ratio_to_two_idle_commits`.
    let mut commits =
        super::ceiling::idle_commits(env, n * plan.repeats as u32, Duration::from_millis(2))
            .await?;
    let commit_p50 = quantile(&mut commits, 0.5);
    let mut row = delay_row(
        "send to a waiting recv (one way)".into(),
        &mut idle,
        plan.repeats,
        commit_p50,
        "one single-row INSERT commit after the probe's 2 ms pause, same run",
    );
    let idle_p50 = row.ours;
    row.extra
        .insert("idle_commit_p50_ms".into(), round2(commit_p50).into());
    row.extra.insert(
        "ratio_to_two_idle_commits".into(),
        round2(idle_p50 / (2.0 * commit_p50)).into(),
    );
    rows.push(row);
    rows.push(long_mailbox(env, plan, n, idle_p50).await?);
    rows.extend(crowd(env, plan, n, idle_p50).await?);
    pb.finish_and_clear();
    Ok(rows)
}

/// Consumed messages in the probe's mailbox for the row of a long mailbox.
const LONG_MAILBOX: i64 = 10_000;

/// Send to a waiting recv whose mailbox holds [`LONG_MAILBOX`] consumed messages, against the
/// same with an empty one (`idle_p50`). DBOS keeps consumed messages, and its one index of
/// `dbos.notifications`, `(destination_uuid, topic)`, cannot tell them apart: finding the
/// oldest unconsumed message reads every message the mailbox ever had, on every send that
/// hands one over and every receive that looks.
async fn long_mailbox(env: &Env, plan: Plan, n: u32, idle_p50: f64) -> Result<Row> {
    let mut lats = Vec::new();
    for _ in 0..plan.repeats {
        lats.extend(wake_latencies(env, n, LONG_MAILBOX).await?);
    }
    let mut row = delay_row(
        format!("send to a waiting recv, {LONG_MAILBOX} messages consumed before (one way)"),
        &mut lats,
        plan.repeats,
        idle_p50,
        "the same with an empty mailbox, same run",
    );
    row.extra.insert(
        "us_per_consumed_message".into(),
        round2((row.ours - idle_p50) * 1e3 / LONG_MAILBOX as f64).into(),
    );
    Ok(row)
}

/// A row of one-way delays `lats` (ms), by their median, read against `baseline` (ms, p50).
fn delay_row(
    name: String,
    lats: &mut [f64],
    repeats: usize,
    baseline: f64,
    baseline_name: &str,
) -> Row {
    let p50 = quantile(lats, 0.5);
    let mut row = Row::new("msg", name, &[p50], "ms p50", repeats);
    row.p50_ms = Some(p50);
    row.p99_ms = Some(quantile(lats, 0.99));
    row.baseline = Some(baseline);
    row.baseline_name = Some(baseline_name.to_owned());
    row.ratio = Some(p50 / baseline);
    row
}

/// One probe workflow receiving `n` messages, each sent once the probe has taken the last one
/// and waits for the next (its receive registered, and 2 ms more for its first look at the
/// table): their delays in ms. Its mailbox first gets `consumed` messages, stored consumed.
async fn wake_latencies(env: &Env, n: u32, consumed: i64) -> Result<Vec<f64>> {
    let waiters = env.wf.messages().waiters();
    let id = format!("probe-{}", uuid_tag());
    let key = format!("{id}::{PROBE_TOPIC}");
    PROBE_RECEIVED.store(0, std::sync::atomic::Ordering::SeqCst);
    let h = env
        .wf
        .start::<_, Vec<f64>>(PROBE, (n,), start_opts(&id))
        .await?;
    if consumed > 0 {
        sqlx::query(
            "INSERT INTO dbos.notifications
                 (destination_uuid, topic, message, serialization, consumed,
                  consumed_by_function_id)
             SELECT $1, $2, '0', 'portable_json', true, 0 FROM generate_series(1, $3)",
        )
        .bind(&id)
        .bind(PROBE_TOPIC)
        .bind(consumed)
        .execute(env.pool())
        .await?;
    }
    for sent in 0..n {
        // The last message taken, and the next receive registered.
        while PROBE_RECEIVED.load(std::sync::atomic::Ordering::SeqCst) < sent
            || !waiters.is_waiting(dbos_msg::Channel::Notifications, &key)
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        env.wf
            .messages()
            .send(&id, &now_us(), Some(PROBE_TOPIC), None)
            .await?;
    }
    Ok(h.result().await?)
}

/// Resident set size of this process (the node and the load driver), in MB.
fn rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kib * 1024.0 / 1e6)
}

/// Runs `f` on each of `items`, `width` at a time.
async fn each<T, F, Fut>(items: Vec<T>, width: usize, f: F) -> Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        if running.len() >= width {
            running.join_next().await.expect("a task")??;
        }
        running.spawn(f(item));
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

/// The memory of a crowd of waiting workflows on one node, and the wake-up of one more among
/// them: `crowd` workflows in `recv` and as many in `sleep`, all started, then the resident set
/// read once every one has recorded its durable timer (so each is parked in its wait), then
/// the probe of [`wake_latencies`] run among them. The crowd is woken (a message each) and
/// cancelled (the sleepers) at the end.
async fn crowd(env: &Env, plan: Plan, n: u32, idle_p50: f64) -> Result<Vec<Row>> {
    let crowd: usize = if plan.quick { 1_000 } else { 10_000 };
    let tag = uuid_tag();
    let rss_before = rss_mb()?;
    let ids = |kind: &str| -> Vec<String> {
        (0..crowd)
            .map(|i| format!("crowd-{tag}-{kind}-{i}"))
            .collect()
    };
    let started = Instant::now();
    for (name, kind) in [(WAIT_RECV, "r"), (WAIT_SLEEP, "s")] {
        let svc = env.wf.clone();
        each(ids(kind), 64, move |id| {
            let svc = svc.clone();
            async move {
                svc.start::<_, serde_json::Value>(name, (0u32,), start_opts(&id))
                    .await?;
                Ok(())
            }
        })
        .await?;
    }
    let start_s = started.elapsed().as_secs_f64();
    // Parked once its timer is recorded: a sleep records it first, a recv after 100 ms.
    poll_count(
        env,
        "SELECT count(*) FROM dbos.operation_outputs
         WHERE workflow_uuid LIKE $1 AND function_name = 'DBOS.sleep'",
        &tag,
        |parked| parked as usize >= 2 * crowd,
        "the waiting workflows parked",
    )
    .await?;
    let rss_waiting = rss_mb()?;
    let mut crowded = Vec::new();
    for _ in 0..plan.repeats {
        crowded.extend(wake_latencies(env, n, 0).await?);
    }
    let rss_after = rss_mb()?;
    // Wake the receivers, cancel the sleepers, and wait for all of them to end.
    let svc = env.wf.clone();
    each(ids("r"), 32, move |id| {
        let svc = svc.clone();
        async move {
            svc.messages().send(&id, &1u32, Some("wake"), None).await?;
            Ok(())
        }
    })
    .await?;
    let pool = env.pool().clone();
    each(ids("s"), 32, move |id| {
        let pool = pool.clone();
        async move {
            wf::manage::cancel(&pool, &id, false).await?;
            Ok(())
        }
    })
    .await?;
    poll_count(
        env,
        "SELECT count(*) FROM dbos.workflow_status
         WHERE workflow_uuid LIKE $1 AND status = 'PENDING'",
        &tag,
        |left| left == 0,
        "the waiting workflows ended after being woken or cancelled",
    )
    .await?;

    let waiting = 2 * crowd;
    let mut mem = Row::new(
        "msg",
        format!("resident memory of the node with {crowd} workflows in recv and {crowd} in sleep"),
        &[rss_waiting],
        "MB",
        1,
    );
    mem.extra
        .insert("rss_before_mb".into(), round2(rss_before).into());
    mem.extra.insert(
        "kb_per_waiting_workflow".into(),
        round2((rss_waiting - rss_before) * 1e3 / waiting as f64).into(),
    );
    mem.extra
        .insert("rss_after_probe_mb".into(), round2(rss_after).into());
    mem.extra.insert("start_s".into(), round2(start_s).into());
    mem.paper = Some("goal: under 300 MB with 10000 + 10000 waiting".into());
    let wake = delay_row(
        format!("send to a waiting recv among {waiting} waiting workflows (one way)"),
        &mut crowded,
        plan.repeats,
        idle_p50,
        "the same with none waiting, same run",
    );
    Ok(vec![mem, wake])
}

/// Runs `count_sql` (its `$1` bound to the pattern of the crowd `tag`'s IDs) every 100 ms until
/// `done` holds of the count, for at most 300 s; `what` names the awaited state otherwise.
async fn poll_count(
    env: &Env,
    count_sql: &str,
    tag: &str,
    done: impl Fn(i64) -> bool,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (n,): (i64,) = sqlx::query_as(count_sql)
            .bind(format!("crowd-{tag}-%"))
            .fetch_one(env.pool())
            .await?;
        if done(n) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not within 300 s: {what} (count {n})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}
