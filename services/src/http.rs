//! The node's HTTP face (`dbos boot --http ADDR`, `dbos ui`): `/metrics` in the Prometheus text
//! format, and a dashboard of server-side HTML. Every page is a few SQL queries over the `os`
//! views, run in read-only transactions, and shows the SQL it ran.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Form, FromRef, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{Stream, StreamExt};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool, Row};

use crate::observe::{Snapshot, SucceededCount};

/// Serves `/metrics` and the dashboard on `addr` until `stop` is cancelled.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    pool: PgPool,
    stop: dbos_kernel::CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(pool);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP server stopped");
        }
    });
    Ok(bound)
}

/// What the handlers share: the pool, and the count of succeeded workflows `/metrics` last
/// read from its database.
#[derive(Clone)]
struct App {
    pool: PgPool,
    succeeded: std::sync::Arc<SucceededCount>,
}

impl FromRef<App> for PgPool {
    fn from_ref(app: &App) -> PgPool {
        app.pool.clone()
    }
}

impl FromRef<App> for std::sync::Arc<SucceededCount> {
    fn from_ref(app: &App) -> std::sync::Arc<SucceededCount> {
        app.succeeded.clone()
    }
}

/// The routes.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/metrics", get(metrics))
        .route("/workflows", get(workflows))
        .route("/workflows/{id}", get(workflow))
        .route("/workflows/{id}/cancel", post(cancel))
        .route("/workflows/{id}/resume", post(resume))
        .route("/workflows/{id}/fork", post(fork))
        .route("/queues/{name}/pause", post(pause))
        .route("/queues/{name}/resume", post(unpause))
        .route("/tasks", post(submit))
        .route("/tasks/{id}/output", get(output))
        .route("/files", get(files))
        .layer(axum::middleware::from_fn(same_site_actions))
        .with_state(App {
            pool,
            succeeded: std::sync::Arc::default(),
        })
}

/// Refuses an action (any request but GET and HEAD) that a browser sent on behalf of another
/// site: its `Origin` names another host than the one it was sent to (`Host`, or behind a proxy
/// `X-Forwarded-Host`), or, from a browser that
/// sends no `Origin`, its `Sec-Fetch-Site` says cross-site. Without this any page open in the
/// operator's browser could post a form here and run a command. Clients that are no browser
/// (curl, scripts) send neither header and are served.
async fn same_site_actions(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let h = req.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    // Behind a proxy, the host the browser used may come as X-Forwarded-Host.
    let hosts = [text("host"), text("x-forwarded-host")];
    let refused = match text("origin") {
        Some(origin) => {
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin_host.is_none_or(|o| !hosts.contains(&Some(o)))
        }
        None => matches!(text("sec-fetch-site"), Some("cross-site" | "same-site")),
    };
    if refused {
        return Failure(
            StatusCode::FORBIDDEN,
            "refused: the request came from another site's page".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// A failure shown as a page with its status code.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            page("error", &format!("<p class=err>{}</p>", esc(&self.1))),
        )
            .into_response()
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// A refused workflow action: 404 for a workflow that does not exist, 400 for the rest.
fn wf_refused(e: crate::workflow::Error) -> Failure {
    let code = match e {
        crate::workflow::Error::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    Failure(code, e.to_string())
}

/// A refused scheduler action: 404 for a queue, task or schedule that does not exist, 400 for
/// the rest.
fn sched_refused(e: dbos_scheduler::Error) -> Failure {
    use dbos_scheduler::Error as E;
    let code = match e {
        E::NoSuchQueue(_) | E::NoSuchTask(_) | E::NoSuchSchedule(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    Failure(code, e.to_string())
}

type Page = Result<Html<String>, Failure>;

/// HTML-escapes `s`.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{t} · dbos</title>
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}} a{{color:#0645ad}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}} pre.sql{{background:#f7f7f0;padding:6px;font-size:12px;white-space:pre-wrap}}
nav a{{margin-right:1em}} .err{{color:#b00}} .bar{{background:#4a90d9;height:10px;display:inline-block}}
</style></head><body><nav><b>dbos</b> <a href=/>overview</a><a href=/workflows>workflows</a><a href=/files?path=/>files</a><a href=/metrics>metrics</a></nav>
<h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

/// A read-only transaction for one page: its queries see one snapshot, in one transaction.
async fn read_only(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Runs `sql` (every column cast to text) with text parameters on the page's transaction;
/// returns its column names and rows.
async fn rows(
    conn: &mut PgConnection,
    sql: &str,
    binds: &[&str],
) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), sqlx::Error> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let fetched = q.fetch_all(&mut *conn).await?;
    let cols = fetched.first().map_or_else(Vec::new, |r| {
        r.columns()
            .iter()
            .map(|c| sqlx::Column::name(c).to_owned())
            .collect()
    });
    let mut out = Vec::with_capacity(fetched.len());
    for r in &fetched {
        let mut row = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            row.push(r.try_get::<Option<String>, _>(i)?);
        }
        out.push(row);
    }
    Ok((cols, out))
}

/// A section: a heading, the rows as a table (a cell of column `link` links to `href` + value),
/// and the SQL behind it.
async fn section(
    conn: &mut PgConnection,
    title: &str,
    sql: &str,
    binds: &[&str],
    link: Option<(&str, &str)>,
) -> Result<String, sqlx::Error> {
    let (cols, data) = rows(conn, sql, binds).await?;
    let mut h = format!("<h2>{}</h2>", esc(title));
    if data.is_empty() {
        h.push_str("<p>none</p>");
    } else {
        h.push_str("<table><tr>");
        for c in &cols {
            let _ = write!(h, "<th>{}</th>", esc(c));
        }
        h.push_str("</tr>");
        for r in &data {
            h.push_str("<tr>");
            for (c, v) in cols.iter().zip(r) {
                let v = v.as_deref().unwrap_or("");
                match link {
                    Some((col, href)) if col == c && !v.is_empty() => {
                        let _ = write!(
                            h,
                            "<td><a href=\"{}{}\">{}</a></td>",
                            href,
                            esc(&urlencode(v)),
                            esc(v)
                        );
                    }
                    _ => {
                        let _ = write!(h, "<td>{}</td>", esc(v));
                    }
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<details><summary>SQL</summary><pre class=sql>{}</pre></details>",
        esc(sql)
    );
    Ok(h)
}

/// Percent-encodes `s` as one path segment or one query value: a `/` in a workflow ID or a
/// queue name stays inside its segment.
fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The pages' SQL.
pub mod sql {
    /// Nodes.
    pub const NODES: &str =
        "SELECT node_id, hostname, state, alive::text, (running || '/' || slots) AS load,
       labels::text, to_char(silent_for, 'HH24:MI:SS.MS') AS since_heartbeat
FROM os.nodes WHERE alive OR heartbeat_at > now() - interval '10 minutes'
ORDER BY alive DESC, node_id";
    /// Queues.
    pub const QUEUES: &str =
        "SELECT queue, paused::text, depth::text, running::text, delayed::text,
       started_last_minute::text AS started_last_min, concurrency::text,
       worker_concurrency::text, (rate_limit_max || ' per ' || rate_limit_period_sec || ' s') AS rate_limit,
       partition_concurrency::text
FROM os.queues ORDER BY queue";
    /// Queue throughput and wait, per minute of the last ten.
    /// The view's times are computed from DBOS's epoch milliseconds, which no index orders, so
    /// the starts are found as a range of `idx_workflow_status_started_at` first. Minutes in
    /// time order, across midnight too.
    pub const QUEUE_MINUTES: &str = "SELECT queue, to_char(date_trunc('minute', started_at), 'HH24:MI') AS minute,
       count(*)::text AS started, (percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_ms))::int8::text AS wait_p50_ms
FROM os.workflows
WHERE workflow_id IN (
    SELECT workflow_uuid FROM dbos.workflow_status
    WHERE started_at_epoch_ms > (extract(epoch FROM now() - interval '10 minutes') * 1000)::int8
      AND queue_name IS NOT NULL)
GROUP BY 1, 2 ORDER BY 1, min(started_at)";
    /// Running workflows.
    pub const RUNNING: &str = "SELECT workflow_id, name, queue, node,
       to_char(now() - started_at, 'HH24:MI:SS') AS running_for
FROM os.workflows WHERE status = 'PENDING' ORDER BY started_at LIMIT 100";
    /// Latest failures: the same as `dbos top`'s.
    pub const FAILURES: &str = crate::observe::sql::FAILURES;
    /// Workflows, filtered: $1 status, $2 name, $3 queue, $4 node, $5 created at or after
    /// (empty: any). The newest 200 that match are read backwards along
    /// `workflow_status_created_at_index` first, down to `$5` at most: the view's times are
    /// computed, and no index orders them.
    pub const WORKFLOWS: &str = "SELECT workflow_id, status, name, queue, node, created_at::text,
       duration_ms::text, wait_ms::text, error
FROM os.workflows
WHERE workflow_id IN (
    SELECT workflow_uuid FROM dbos.workflow_status
    WHERE ($1 = '' OR status = $1) AND ($2 = '' OR name = $2) AND ($3 = '' OR queue_name = $3)
      AND ($4 = '' OR executor_id = $4)
      AND created_at >= CASE WHEN $5 = '' THEN 0
                             ELSE (extract(epoch FROM $5::timestamptz) * 1000)::int8 END
    ORDER BY created_at DESC LIMIT 200)
ORDER BY created_at DESC";
    /// One workflow.
    pub const WORKFLOW: &str =
        "SELECT w.workflow_id, w.status, w.name, w.queue, w.node, w.app_version, w.parent,
       w.recovery_attempts::text, w.created_at::text, w.started_at::text, w.completed_at::text,
       w.duration_ms::text, COALESCE(i.inputs, s.inputs) AS inputs,
       COALESCE(o.output, s.output) AS output,
       COALESCE(o.error, s.error) AS error
FROM os.workflows w
JOIN dbos.workflow_status s ON s.workflow_uuid = w.workflow_id
LEFT JOIN dbos.workflow_input i ON i.workflow_uuid = w.workflow_id
LEFT JOIN dbos.workflow_output o ON o.workflow_uuid = w.workflow_id
WHERE w.workflow_id = $1";
    /// Its steps.
    pub const STEPS: &str = "SELECT function_id::text, step, child, failed::text, error,
       started_at::text, duration_ms::text
FROM os.steps WHERE workflow_id = $1 ORDER BY function_id";
    /// Its children.
    pub const CHILDREN: &str = "SELECT workflow_id, status, name, created_at::text
FROM os.workflows WHERE parent = $1 ORDER BY created_at";
    /// Its events.
    pub const EVENTS: &str =
        "SELECT key, value, versions::text FROM os.events WHERE workflow_id = $1 ORDER BY key";
    /// The messages sent to it.
    pub const MESSAGES: &str =
        "SELECT message_id, topic, left(message, 200) AS message, consumed::text,
       consumed_by_function_id::text AS consumed_by_step, sent_at::text
FROM os.messages WHERE destination = $1 ORDER BY sent_at LIMIT 100";
    /// What it touched.
    pub const TOUCHED: &str =
        "SELECT function_id::text, step, kind, object, bytes::text, detail::text
FROM os.touched($1)";
    /// A directory's entries.
    pub const DIR: &str =
        "SELECT f.path, f.kind, f.size::text, f.owner, to_char(f.mode, 'FM0000') AS mode,
       f.mtime::text
FROM os.files f JOIN os.files d ON d.path = $1 AND d.kind = 'dir'
WHERE f.ancestors[array_length(f.ancestors, 1)] = d.ino AND f.path <> d.path
ORDER BY f.path LIMIT 1000";
    /// Its usage.
    pub const DU: &str =
        "SELECT path, bytes::text, files::text, dirs::text FROM os.du WHERE path = $1";
}

async fn overview(State(pool): State<PgPool>) -> Page {
    let mut c = read_only(&pool).await?;
    let mut body = String::new();
    body.push_str(&section(&mut c, "Nodes", sql::NODES, &[], None).await?);
    body.push_str(
        &section(
            &mut c,
            "Queues",
            sql::QUEUES,
            &[],
            Some(("queue", "/workflows?queue=")),
        )
        .await?,
    );
    let (_, queues) = rows(&mut c, sql::QUEUES, &[]).await?;
    for q in &queues {
        let name = q[0].as_deref().unwrap_or("");
        let action = if q[1].as_deref() == Some("true") {
            "resume"
        } else {
            "pause"
        };
        let _ = write!(
            body,
            "<form method=post action=\"/queues/{}/{action}\" style=display:inline><button class=\"{action}-queue\">{action} {}</button></form> ",
            esc(&urlencode(name)),
            esc(name)
        );
    }
    body.push_str(&chart(&mut c).await?);
    body.push_str(
        &section(
            &mut c,
            "Running",
            sql::RUNNING,
            &[],
            Some(("workflow_id", "/workflows/")),
        )
        .await?,
    );
    body.push_str(
        &section(
            &mut c,
            "Recent failures",
            sql::FAILURES,
            &[],
            Some(("workflow_id", "/workflows/")),
        )
        .await?,
    );
    body.push_str(
        "<h2>Submit a command task</h2><form method=post action=/tasks>
<input name=command size=60 placeholder=\"echo hello (run by sh -c)\"> queue <input name=queue value=default size=12>
<button>submit</button></form>",
    );
    Ok(page("overview", &body))
}

/// Starts per minute of each queue over the last ten minutes as bars, with the median wait.
async fn chart(c: &mut PgConnection) -> Result<String, sqlx::Error> {
    let (_, data) = rows(c, sql::QUEUE_MINUTES, &[]).await?;
    let mut h = String::from("<h2>Queues, minute by minute</h2>");
    if data.is_empty() {
        h.push_str("<p>no starts in the last ten minutes</p>");
    } else {
        let most = data
            .iter()
            .filter_map(|r| r[2].as_deref().and_then(|n| n.parse::<f64>().ok()))
            .fold(1.0_f64, f64::max);
        h.push_str(
            "<table><tr><th>queue</th><th>minute</th><th>started</th><th>median wait</th></tr>",
        );
        for r in &data {
            let n: f64 = r[2].as_deref().and_then(|n| n.parse().ok()).unwrap_or(0.0);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><span class=bar style=\"width:{:.0}px\"></span> {n}</td><td>{} ms</td></tr>",
                esc(r[0].as_deref().unwrap_or("")),
                esc(r[1].as_deref().unwrap_or("")),
                (n / most * 300.0).max(1.0),
                esc(r[3].as_deref().unwrap_or("-"))
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<details><summary>SQL</summary><pre class=sql>{}</pre></details>",
        esc(sql::QUEUE_MINUTES)
    );
    Ok(h)
}

async fn pause(State(pool): State<PgPool>, Path(name): Path<String>) -> Result<Redirect, Failure> {
    set_paused(&pool, &name, true).await
}

async fn unpause(
    State(pool): State<PgPool>,
    Path(name): Path<String>,
) -> Result<Redirect, Failure> {
    set_paused(&pool, &name, false).await
}

async fn set_paused(pool: &PgPool, name: &str, paused: bool) -> Result<Redirect, Failure> {
    let mut c = pool.acquire().await?;
    // Already paused (or running) is no error: a second click lands where the first did.
    dbos_scheduler::queues::set_paused(&mut c, name, paused)
        .await
        .map_err(sched_refused)?;
    Ok(Redirect::to("/"))
}

#[derive(Deserialize)]
struct ForkForm {
    step: i32,
}

/// Forks a workflow from a step, as `dbos wf fork` does; shows the fork.
async fn fork(
    State(pool): State<PgPool>,
    Path(id): Path<String>,
    Form(f): Form<ForkForm>,
) -> Result<Redirect, Failure> {
    let new = crate::workflow::manage::fork(&pool, &id, f.step, None, None)
        .await
        .map_err(wf_refused)?;
    Ok(Redirect::to(&format!("/workflows/{}", urlencode(&new))))
}

#[derive(Deserialize, Default)]
struct Filter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    since: String,
}

async fn workflows(State(pool): State<PgPool>, Query(mut f): Query<Filter>) -> Page {
    // A status in any case, as the CLI takes it; an unknown one is said, not shown as no rows.
    if !f.status.is_empty() {
        let st: dbos_store::Status =
            f.status
                .trim()
                .parse()
                .map_err(|e: dbos_store::UnknownStatus| {
                    Failure(StatusCode::BAD_REQUEST, e.to_string())
                })?;
        f.status = st.as_str().to_owned();
    }
    let mut c = read_only(&pool).await?;
    let mut body = format!(
        "<form>status <input name=status value=\"{}\" size=10> name <input name=name value=\"{}\">
queue <input name=queue value=\"{}\" size=12> node <input name=node value=\"{}\">
since <input name=since value=\"{}\" placeholder=\"2026-12-01 10:00\"> <button>filter</button></form>",
        esc(&f.status),
        esc(&f.name),
        esc(&f.queue),
        esc(&f.node),
        esc(&f.since)
    );
    body.push_str(
        &section(
            &mut c,
            "Workflows (newest 200)",
            sql::WORKFLOWS,
            &[&f.status, &f.name, &f.queue, &f.node, &f.since],
            Some(("workflow_id", "/workflows/")),
        )
        .await?,
    );
    Ok(page("workflows", &body))
}

async fn workflow(State(pool): State<PgPool>, Path(id): Path<String>) -> Page {
    let mut c = read_only(&pool).await?;
    let (cols, data) = rows(&mut c, sql::WORKFLOW, &[&id]).await?;
    let Some(row) = data.first() else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no workflow has ID {id:?}"),
        ));
    };
    let mut body = String::from("<table>");
    for (k, v) in cols.iter().zip(row) {
        let _ = write!(
            body,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(k),
            esc(v.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</table>");
    let enc = esc(&urlencode(&id));
    let _ = write!(
        body,
        "<form method=post action=\"/workflows/{enc}/cancel\" style=display:inline><button class=cancel>cancel</button></form>
<form method=post action=\"/workflows/{enc}/resume\" style=display:inline><button class=resume>resume</button></form>
<form method=post action=\"/workflows/{enc}/fork\" style=display:inline>fork from step <input name=step value=1 size=3><button class=fork>fork</button></form>"
    );
    let name = cols
        .iter()
        .position(|c| c == "name")
        .and_then(|i| row[i].as_deref())
        .unwrap_or("");
    if name.starts_with(dbos_scheduler::tasks::COMMAND) {
        // A command task's output, followed as it is produced (server-sent events).
        let _ = write!(
            body,
            "<h2>Output</h2><pre id=live></pre>
<script>
const live = document.getElementById('live');
const es = new EventSource('/tasks/{enc}/output');
for (const k of ['stdout', 'stderr']) es.addEventListener(k, e => {{ live.textContent += e.data; }});
es.addEventListener('end', () => es.close());
</script>"
        );
    }
    // The steps as a timeline: one bar per step, its length its duration.
    let (_, steps) = rows(&mut c, sql::STEPS, &[&id]).await?;
    let longest = steps
        .iter()
        .filter_map(|s| s[6].as_deref().and_then(|d| d.parse::<f64>().ok()))
        .fold(1.0_f64, f64::max);
    body.push_str("<h2>Timeline</h2><table>");
    for s in &steps {
        let ms = s[6]
            .as_deref()
            .and_then(|d| d.parse::<f64>().ok())
            .unwrap_or(0.0);
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><span class=bar style=\"width:{:.0}px\"></span> {} ms</td></tr>",
            esc(s[0].as_deref().unwrap_or("")),
            esc(s[1].as_deref().unwrap_or("")),
            (ms / longest * 400.0).max(1.0),
            ms
        );
    }
    body.push_str("</table>");
    body.push_str(
        &section(
            &mut c,
            "Steps",
            sql::STEPS,
            &[&id],
            Some(("child", "/workflows/")),
        )
        .await?,
    );
    body.push_str(
        &section(
            &mut c,
            "Children",
            sql::CHILDREN,
            &[&id],
            Some(("workflow_id", "/workflows/")),
        )
        .await?,
    );
    body.push_str(&section(&mut c, "Events", sql::EVENTS, &[&id], None).await?);
    body.push_str(&section(&mut c, "Messages to it", sql::MESSAGES, &[&id], None).await?);
    body.push_str(&section(&mut c, "What it touched", sql::TOUCHED, &[&id], None).await?);
    Ok(page(&format!("workflow {id}"), &body))
}

async fn cancel(State(pool): State<PgPool>, Path(id): Path<String>) -> Result<Redirect, Failure> {
    crate::workflow::manage::cancel(&pool, &id, false)
        .await
        .map_err(wf_refused)?;
    Ok(Redirect::to(&format!("/workflows/{}", urlencode(&id))))
}

async fn resume(State(pool): State<PgPool>, Path(id): Path<String>) -> Result<Redirect, Failure> {
    crate::workflow::manage::resume(&pool, &id)
        .await
        .map_err(wf_refused)?;
    Ok(Redirect::to(&format!("/workflows/{}", urlencode(&id))))
}

#[derive(Deserialize)]
struct SubmitForm {
    command: String,
    #[serde(default)]
    queue: String,
}

/// Submits `sh -c COMMAND` as a command task, as `dbos task submit` does.
async fn submit(
    State(pool): State<PgPool>,
    Form(f): Form<SubmitForm>,
) -> Result<Redirect, Failure> {
    if f.command.trim().is_empty() {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "the command is empty".into(),
        ));
    }
    let s = dbos_scheduler::tasks::Submit {
        spec: dbos_scheduler::command::CommandSpec {
            argv: vec!["sh".into(), "-c".into(), f.command],
            ..Default::default()
        },
        queue: if f.queue.is_empty() {
            "default".into()
        } else {
            f.queue
        },
        ..Default::default()
    };
    let id = dbos_scheduler::tasks::submit(&pool, &s)
        .await
        .map_err(sched_refused)?;
    Ok(Redirect::to(&format!("/workflows/{}", urlencode(&id))))
}

/// A task's output as server-sent events: one `stdout` (or `stderr`) event per chunk as it is
/// written, then `end`.
async fn output(
    State(pool): State<PgPool>,
    Path(id): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = async_stream(pool, id);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn async_stream(
    pool: PgPool,
    id: String,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures_util::stream::unfold(
        (pool, id, [0i32, 0i32], false),
        |(pool, id, mut offsets, done)| async move {
            if done {
                return None;
            }
            loop {
                let mut ended = true;
                let mut events = Vec::new();
                for (i, key) in ["stdout", "stderr"].into_iter().enumerate() {
                    let chunk = match pool.acquire().await {
                        Ok(mut c) => {
                            dbos_msg::sql::read_stream(&mut c, &id, key, offsets[i], 100).await
                        }
                        Err(e) => Err(e.into()),
                    };
                    match chunk {
                        Ok(Some(ch)) => {
                            let closed = ch
                                .values
                                .last()
                                .is_some_and(|v| v == dbos_msg::sql::STREAM_CLOSED);
                            for v in &ch.values {
                                offsets[i] += 1;
                                if v != dbos_msg::sql::STREAM_CLOSED {
                                    let text: String =
                                        serde_json::from_str(v).unwrap_or_else(|_| v.clone());
                                    events.push(Event::default().event(key).data(text));
                                }
                            }
                            let writer_done =
                                !matches!(ch.status.as_str(), "PENDING" | "ENQUEUED" | "DELAYED");
                            ended &= closed || writer_done;
                        }
                        Ok(None) => {
                            events.push(
                                Event::default()
                                    .event("error")
                                    .data(format!("no workflow has ID {id}")),
                            );
                        }
                        Err(e) => {
                            events.push(Event::default().event("error").data(e.to_string()));
                        }
                    }
                }
                if !events.is_empty() || ended {
                    if ended {
                        events.push(Event::default().event("end").data(""));
                    }
                    let s = futures_util::stream::iter(events.into_iter().map(Ok));
                    return Some((s, (pool, id, offsets, ended)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .flat_map(|s| s)
}

#[derive(Deserialize)]
struct FilesQuery {
    #[serde(default)]
    path: String,
}

async fn files(State(pool): State<PgPool>, Query(q): Query<FilesQuery>) -> Page {
    let path = if q.path.is_empty() {
        "/".to_owned()
    } else {
        q.path
    };
    let mut c = read_only(&pool).await?;
    let mut body = String::new();
    body.push_str(&section(&mut c, "Usage", sql::DU, &[&path], None).await?);
    body.push_str(
        &section(
            &mut c,
            "Entries",
            sql::DIR,
            &[&path],
            Some(("path", "/files?path=")),
        )
        .await?,
    );
    Ok(page(&format!("files {path}"), &body))
}

async fn metrics(
    State(pool): State<PgPool>,
    State(succeeded): State<std::sync::Arc<SucceededCount>>,
) -> Result<Response, Failure> {
    let mut c = pool.acquire().await?;
    let snap = Snapshot::read(&mut c, &succeeded).await?;
    let mut out = String::new();
    render_snapshot(&snap, &mut out);
    crate::metrics::METRICS.render(&mut out);
    let pool_size = pool.size();
    let idle = pool.num_idle() as u32;
    let _ = writeln!(
        out,
        "# HELP dbos_pool_connections Connections of this process's pool, by state.\n\
         # TYPE dbos_pool_connections gauge\n\
         dbos_pool_connections{{state=\"busy\"}} {}\n\
         dbos_pool_connections{{state=\"idle\"}} {idle}",
        pool_size.saturating_sub(idle)
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The tables' figures as Prometheus gauges.
fn render_snapshot(s: &Snapshot, out: &mut String) {
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    gauge(
        "dbos_nodes_alive",
        "Nodes whose lease holds.",
        vec![(
            String::new(),
            s.nodes.iter().filter(|n| n.alive).count() as f64,
        )],
    );
    let node = |n: &crate::observe::Node| format!("node=\"{}\"", label(&n.node_id));
    gauge(
        "dbos_node_running",
        "Workflows each live node runs now.",
        s.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| (node(n), n.running as f64))
            .collect(),
    );
    gauge(
        "dbos_node_slots",
        "Task slots of each live node.",
        s.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| (node(n), f64::from(n.slots)))
            .collect(),
    );
    gauge(
        "dbos_node_heartbeat_age_seconds",
        "Time since each node's last heartbeat.",
        s.nodes
            .iter()
            .map(|n| (node(n), n.heartbeat_age_ms / 1000.0))
            .collect(),
    );
    let queue = |q: &crate::observe::Queue| format!("queue=\"{}\"", label(&q.queue));
    for (name, help, f) in [
        (
            "dbos_queue_depth",
            "Workflows waiting in each queue.",
            (|q: &crate::observe::Queue| q.depth) as fn(&crate::observe::Queue) -> i64,
        ),
        (
            "dbos_queue_running",
            "Workflows of each queue running now.",
            |q| q.running,
        ),
        (
            "dbos_queue_delayed",
            "Delayed workflows of each queue.",
            |q| q.delayed,
        ),
        (
            "dbos_queue_started_last_minute",
            "Starts of each queue in the last minute.",
            |q| q.started_last_minute,
        ),
    ] {
        gauge(
            name,
            help,
            s.queues.iter().map(|q| (queue(q), f(q) as f64)).collect(),
        );
    }
    gauge(
        "dbos_workflows",
        "Workflows in the database, by status.",
        s.by_status
            .iter()
            .map(|(st, n)| (format!("status=\"{}\"", label(st)), *n as f64))
            .collect(),
    );
}

/// Reads the address of `--http`: `PORT`, `HOST:PORT`, or `:PORT` (loopback).
///
/// # Errors
/// A message naming the bad value.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if s.chars().all(|c| c.is_ascii_digit()) {
        format!("127.0.0.1:{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:8080 or :8080"))
}
