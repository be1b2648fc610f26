//! The group-commit statement: starts of top-level workflows, enqueues, step checkpoints and
//! final outcomes of many workflows, written in one statement and one commit.
//!
//! A [`Batch`] collects requests as column arrays; [`Batch::write`] sends them and says, per
//! request, what was written. Checkpoints and outcomes are fenced on `(status = 'PENDING',
//! owner_xid)`; a start or an enqueue leaves an existing ID alone and reports its recorded
//! function.

use std::sync::OnceLock;

use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgExecutor, Postgres};

use crate::limits;
use crate::status::Status;
use crate::workflows::Created;
pub use crate::workflows::Enqueue;

/// One operation checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The workflow.
    pub workflow_id: String,
    /// The execution's ownership token.
    pub owner_xid: String,
    /// Position, from 1.
    pub function_id: i32,
    /// Operation name.
    pub name: String,
    /// Output, portable JSON text.
    pub output: Option<String>,
    /// Error, portable JSON text.
    pub error: Option<String>,
    /// Child workflow started or awaited.
    pub child_workflow_id: Option<String>,
    /// Start, epoch ms.
    pub started_at_ms: i64,
    /// End, epoch ms.
    pub completed_at_ms: i64,
    /// What the step touched, as a JSON array of provenance events
    /// ([`dbos_kernel::prov::to_json`]); written with the checkpoint.
    pub prov: Option<String>,
}

impl Checkpoint {
    /// Checks every field against [`crate::limits`] before the checkpoint joins a batch.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`].
    pub fn validate(&self) -> crate::Result<()> {
        limits::check_id("workflow ID", &self.workflow_id)?;
        limits::check_name("step name", &self.name)?;
        check_payloads(&self.output, &self.error)?;
        if let Some(child) = &self.child_workflow_id {
            limits::check_id("child workflow ID", child)?;
        }
        Ok(())
    }
}

fn check_payloads(output: &Option<String>, error: &Option<String>) -> crate::Result<()> {
    if let Some(o) = output {
        limits::check_payload("output", o)?;
    }
    if let Some(e) = error {
        limits::check_payload("error", e)?;
    }
    Ok(())
}

/// A workflow's final outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The workflow.
    pub workflow_id: String,
    /// The execution's ownership token.
    pub owner_xid: String,
    /// [`Status::Success`] or [`Status::Error`].
    pub status: Status,
    /// Output, portable JSON text.
    pub output: Option<String>,
    /// Error, portable JSON text.
    pub error: Option<String>,
}

impl Outcome {
    /// Checks every field against [`crate::limits`] before the outcome joins a batch.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`].
    pub fn validate(&self) -> crate::Result<()> {
        limits::check_id("workflow ID", &self.workflow_id)?;
        check_payloads(&self.output, &self.error)
    }
}

/// A direct start of a top-level workflow, PENDING under its first execution on this node.
#[derive(Clone, Debug)]
pub struct Start {
    /// Its ID.
    pub workflow_id: String,
    /// Its function.
    pub name: String,
    /// The execution's ownership token (also its creator token).
    pub xid: String,
    /// Start-to-close timeout.
    pub timeout_ms: Option<i64>,
    /// Absolute deadline, epoch ms.
    pub deadline_ms: Option<i64>,
    /// Priority.
    pub priority: i32,
    /// Inputs, portable JSON text.
    pub inputs: String,
}

impl Start {
    /// Checks every field against [`crate::limits`] before the start joins a batch.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`].
    pub fn validate(&self) -> crate::Result<()> {
        limits::check_id("workflow ID", &self.workflow_id)?;
        limits::check_name("workflow name", &self.name)?;
        limits::check_payload("inputs", &self.inputs)
    }
}

/// The group-commit statement for a batch holding the given kinds of request.
///
/// Every shape binds the same parameters: starts (`$15`..`$21`, executor `$22`, version
/// `$23`), checkpoints of owned PENDING workflows (`$1`..`$9`, with what each step touched in
/// `$25`, written to `prov.events`), outcomes with their output (`$10`..`$14`) and enqueues
/// with their inputs (`$26`..`$37`, whether the enqueuing node may run each and its
/// deadline then, `$39`..`$40`, and the channel they notify at commit, if any, `$38`; a
/// queue's partitioning decides whether a partition key is required or refused, and a refused
/// one returns no row). Only
/// the parts a batch needs are in its statement: Postgres prepares every table a statement
/// names, its indexes and expressions, each time it runs it, so a lone workflow's checkpoint
/// does not pay for the outcome and start parts it leaves empty (with all parts, a checkpoint
/// of one workflow took 0.11 ms of execution). A batch whose parts hold one request each (a
/// lone workflow's) takes each part's row from its arrays' first elements rather than
/// `unnest` ([`Shape::one_each`]). Served by the primary keys of workflow_status,
/// workflow_output and operation_outputs.
///
/// Inputs and outcomes go into the status row's own columns (`inputs`, `output`, `error`),
/// not into rows of `workflow_input` and `workflow_output` as DBOS 3.x writes them: DBOS reads
/// each as COALESCE(the table's, the status row's), as every reader here does, and DBOS 2.x
/// reads only the status row's. The row that a start, enqueue, claim and outcome write anyway
/// carries them, instead of two more rows with two index entries each (see the README).
///
/// `$24` is `PENDING`, a parameter rather than a literal on purpose: the statement runs its
/// generic plan (nodes' sessions force generic plans, see `dbos_kernel::db::connect_options`),
/// and with a literal the planner may scan the partial index
/// `idx_workflow_status_pending` (every PENDING row and the dead entries of rows that were, so
/// a cost that grows with concurrency and churn) instead of looking each workflow up by its
/// primary key. A parameter cannot prove that index's predicate.
pub fn statement(shape: Shape) -> &'static str {
    static SHAPES: OnceLock<Vec<String>> = OnceLock::new();
    &SHAPES.get_or_init(|| (0..Shape::COUNT).map(|i| compose(Shape(i))).collect())[shape.0]
}

/// Which parts a batch needs: checkpoints, provenance of checkpoints, outcomes, starts,
/// enqueues, and enqueues their node may claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape(usize);

impl Shape {
    const CHECKPOINTS: usize = 1;
    const PROVENANCE: usize = 2;
    const OUTCOMES: usize = 4;
    const STARTS: usize = 8;
    const ENQUEUES: usize = 16;
    /// Enqueues the enqueuing node may claim ([`crate::workflows::Here`]): this part reads the
    /// scheduler's tables (paused queues, queue rules), so only a node with the scheduler's
    /// schema sends it.
    const CLAIMS: usize = 32;
    /// Each part present holds one request.
    const ONE_EACH: usize = 64;
    const COUNT: usize = 128;

    /// The shape of a batch with these kinds of request. Provenance counts only with
    /// checkpoints, claims only with enqueues.
    pub fn new(
        checkpoints: bool,
        provenance: bool,
        outcomes: bool,
        starts: bool,
        enqueues: bool,
        claims: bool,
    ) -> Shape {
        Shape(
            usize::from(checkpoints) * Self::CHECKPOINTS
                + usize::from(checkpoints && provenance) * Self::PROVENANCE
                + usize::from(outcomes) * Self::OUTCOMES
                + usize::from(starts) * Self::STARTS
                + usize::from(enqueues) * Self::ENQUEUES
                + usize::from(enqueues && claims) * Self::CLAIMS,
        )
    }

    /// The same shape, for a batch whose parts hold one request each (`one`), as a lone
    /// workflow's do.
    pub fn one_each(self, one: bool) -> Shape {
        Shape((self.0 & !Self::ONE_EACH) | (usize::from(one) * Self::ONE_EACH))
    }

    fn has(self, part: usize) -> bool {
        self.0 & part != 0
    }
}

const CHECKPOINTS: &str = "owned AS (
             SELECT c.*, w.executor_id AS node, w.application_version AS version,
                    w.name AS wf_name, w.queue_name AS wf_queue
             FROM c JOIN dbos.workflow_status w
                 ON w.workflow_uuid = c.wf AND w.owner_xid = c.owner AND w.status = $24
             FOR NO KEY UPDATE OF w
         ), ck AS (
             INSERT INTO dbos.operation_outputs
                 (workflow_uuid, function_id, function_name, output, error, child_workflow_id,
                  started_at_epoch_ms, completed_at_epoch_ms, serialization)
             SELECT wf, fid, name, output, error, child, started, completed, 'portable_json' FROM owned
             ON CONFLICT DO NOTHING
             RETURNING workflow_uuid, function_id
         )";

const PROVENANCE: &str = "pv AS (
             INSERT INTO prov.events
                 (workflow_uuid, function_id, kind, object, inode, bytes, detail, node_id,
                  app_version)
             SELECT owned.wf, owned.fid, p.kind, p.object, p.inode, p.bytes, p.detail,
                    owned.node, owned.version
             FROM owned
             JOIN ck ON ck.workflow_uuid = owned.wf AND ck.function_id = owned.fid
             CROSS JOIN LATERAL jsonb_to_recordset(owned.prov::jsonb)
                 AS p(kind text, object text, inode int8, bytes int8, detail jsonb)
             WHERE owned.prov IS NOT NULL AND prov.capture(owned.wf_name, owned.wf_queue)
         )";

const OUTCOMES: &str = "done AS (
             UPDATE dbos.workflow_status w
             SET status = o.status, owner_xid = NULL, deduplication_id = NULL,
                 updated_at = kernel.now_ms(), completed_at = kernel.now_ms(),
                 output = o.output, error = o.error
             FROM o
             WHERE w.workflow_uuid = o.wf AND w.status = $24 AND w.owner_xid = o.owner
             -- Its waiters may be on other nodes when it came through a queue, unless its
             -- enqueue claimed it for the enqueuing node (which kept the creator's token as the
             -- owner's): that one ran where it was enqueued, as a direct start does.
             RETURNING w.workflow_uuid,
                       w.queue_name IS NOT NULL AND w.creator_xid IS DISTINCT FROM o.owner
                           AS announce,
                       -- A queue whose limit is shared by every node: the end may let a
                       -- workflow of it start on another node, which is told.
                       (SELECT q.name FROM dbos.queues q
                        WHERE q.name = w.queue_name
                          AND (q.concurrency IS NOT NULL OR q.partition_concurrency IS NOT NULL))
                           AS freed
         ), stale AS (
             -- The outcome is in the status row; readers take a `workflow_output` row first,
             -- so one left by an earlier outcome (DBOS's, before a resume) must go.
             DELETE FROM dbos.workflow_output x USING done
             WHERE x.workflow_uuid = done.workflow_uuid
         )";

const STARTS: &str = "st AS (
             INSERT INTO dbos.workflow_status AS w
                 (workflow_uuid, status, name, executor_id, application_version, recovery_attempts,
                  owner_xid, creator_xid, serialization, workflow_timeout_ms,
                  workflow_deadline_epoch_ms, priority, inputs)
             SELECT id, 'PENDING', name, $22, $23, 1, xid, xid, 'portable_json', timeout, deadline,
                    priority, inputs
             FROM s
             ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
             RETURNING workflow_uuid, name, creator_xid
         )";

/// A part's requests as rows, from the column arrays bound for it: `(parameter, element type,
/// column)`.
type Columns = [(&'static str, &'static str, &'static str)];

const CHECKPOINT_COLUMNS: &Columns = &[
    ("$1", "text", "wf"),
    ("$2", "text", "owner"),
    ("$3", "int4", "fid"),
    ("$4", "text", "name"),
    ("$5", "text", "output"),
    ("$6", "text", "error"),
    ("$7", "text", "child"),
    ("$8", "int8", "started"),
    ("$9", "int8", "completed"),
    ("$25", "text", "prov"),
];

const OUTCOME_COLUMNS: &Columns = &[
    ("$10", "text", "wf"),
    ("$11", "text", "owner"),
    ("$12", "text", "status"),
    ("$13", "text", "output"),
    ("$14", "text", "error"),
];

const START_COLUMNS: &Columns = &[
    ("$15", "text", "id"),
    ("$16", "text", "name"),
    ("$17", "text", "xid"),
    ("$18", "int8", "timeout"),
    ("$19", "int8", "deadline"),
    ("$20", "int4", "priority"),
    ("$21", "text", "inputs"),
];

const ENQUEUE_COLUMNS: &Columns = &[
    ("$26", "text", "id"),
    ("$27", "text", "name"),
    ("$28", "text", "queue"),
    ("$29", "text", "xid"),
    ("$30", "int8", "timeout"),
    ("$31", "int8", "deadline"),
    ("$32", "int4", "priority"),
    ("$33", "text", "dedup"),
    ("$34", "int8", "delay"),
    ("$35", "text", "pkey"),
    ("$36", "text", "attrs"),
    ("$37", "text", "inputs"),
    ("$39", "bool", "here"),
    ("$40", "int8", "here_deadline"),
];

/// The CTE `name` of a part's rows. Of a part with one request ([`Shape::one_each`]), its
/// row is the arrays' first elements: `unnest` would build and scan a set for it, and a part
/// whose arrays are empty still has no row.
fn requests(name: &str, cols: &Columns, one: bool) -> String {
    if one {
        let items: Vec<String> = cols
            .iter()
            .map(|(p, t, c)| format!("({p}::{t}[])[1] AS {c}"))
            .collect();
        format!(
            "{name} AS (SELECT {} WHERE cardinality({}::{}[]) = 1)",
            items.join(", "),
            cols[0].0,
            cols[0].1
        )
    } else {
        let arrays: Vec<String> = cols.iter().map(|(p, t, _)| format!("{p}::{t}[]")).collect();
        let names: Vec<&str> = cols.iter().map(|(_, _, c)| *c).collect();
        format!(
            "{name} AS (SELECT * FROM unnest({}) AS {name}({}))",
            arrays.join(", "),
            names.join(", ")
        )
    }
}

/// The insert of the enqueues, after their rows and one of [`NO_CLAIMS`] and [`CLAIMS`].
const ENQUEUE_INSERT: &str = "eq AS (
             INSERT INTO dbos.workflow_status AS w
                 (workflow_uuid, status, name, queue_name, recovery_attempts, creator_xid,
                  serialization, workflow_timeout_ms, workflow_deadline_epoch_ms, priority,
                  deduplication_id, delay_until_epoch_ms, queue_partition_key, attributes,
                  executor_id, application_version, owner_xid, started_at_epoch_ms, inputs)
             SELECT e.id,
                    CASE WHEN e.claim THEN 'PENDING' WHEN e.delay IS NULL THEN 'ENQUEUED'
                         ELSE 'DELAYED' END,
                    e.name, e.queue, CASE WHEN e.claim THEN 1 ELSE 0 END, e.xid, 'portable_json',
                    e.timeout, CASE WHEN e.claim THEN e.here_deadline ELSE e.deadline END,
                    e.priority, e.dedup, e.delay, e.pkey, e.attrs::jsonb,
                    CASE WHEN e.claim THEN $22 END, CASE WHEN e.claim THEN $23 END,
                    CASE WHEN e.claim THEN e.xid END,
                    CASE WHEN e.claim THEN kernel.now_ms() END, e.inputs
             FROM eh e
             WHERE COALESCE(e.partition_queue, false) = (e.pkey IS NOT NULL)
             ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
             RETURNING workflow_uuid, name, creator_xid, queue_name, status
         )";

/// Whether each enqueue is claimed as it is enqueued: never, without [`Shape::CLAIMS`].
const NO_CLAIMS: &str = "eh AS (SELECT e.*, q.partition_queue, false AS claim
             FROM e LEFT JOIN dbos.queues q ON q.name = e.queue)";

const CLAIMS: &str = "eh AS MATERIALIZED (
             -- Claimed by the enqueuing node as it is enqueued when the queue would let any node
             -- take it now. Each probe is a CASE branch, so it runs only when those before it
             -- passed, and a few index lookups at most. Materialized, so the CASE runs once per
             -- enqueue: inlined, it ran again for each of the seven uses of `claim` in the
             -- insert.
             SELECT e.*, q.partition_queue,
                    CASE WHEN NOT e.here OR e.delay IS NOT NULL OR e.pkey IS NOT NULL THEN false
                         WHEN q.name IS NOT NULL
                              AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                                   OR q.rate_limit_max IS NOT NULL
                                   OR COALESCE(q.partition_queue, false)
                                   OR q.partition_concurrency IS NOT NULL
                                   OR q.partition_worker_concurrency IS NOT NULL
                                   OR q.partition_rate_limit_max IS NOT NULL) THEN false
                         -- Takes the pause lock and reads the pause, the rule and the
                         -- limits again after it: see `sched.enqueue_may_claim`.
                         WHEN NOT sched.enqueue_may_claim(e.queue) THEN false
                         WHEN (SELECT true FROM dbos.workflow_status o
                               WHERE o.queue_name = e.queue AND o.status = 'ENQUEUED'
                               LIMIT 1) THEN false
                         ELSE true END AS claim
             FROM e LEFT JOIN dbos.queues q ON q.name = e.queue
         )";

/// The statement of one shape: its parts' CTEs, and the rows each part returns.
fn compose(shape: Shape) -> String {
    let one = shape.has(Shape::ONE_EACH);
    let mut ctes: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    if shape.has(Shape::CHECKPOINTS) {
        ctes.push(requests("c", CHECKPOINT_COLUMNS, one));
        ctes.push(CHECKPOINTS.to_owned());
        rows.push("SELECT 'c'::text, workflow_uuid, function_id, NULL::text, NULL::text FROM ck");
    }
    // Provenance is part of checkpoints: `Shape::new` never sets it alone.
    if shape.has(Shape::PROVENANCE) && shape.has(Shape::CHECKPOINTS) {
        ctes.push(PROVENANCE.to_owned());
    }
    if shape.has(Shape::OUTCOMES) {
        ctes.push(requests("o", OUTCOME_COLUMNS, one));
        ctes.push(OUTCOMES.to_owned());
        rows.push("SELECT 'o'::text, workflow_uuid, 0, NULL::text, NULL::text FROM done");
        // Outcomes of workflows that came through a queue, to announce to their waiters.
        rows.push(
            "SELECT 'n'::text, workflow_uuid, 0, NULL::text, NULL::text FROM done WHERE announce",
        );
        // Queues of a shared concurrency limit that these ends freed a place in.
        rows.push(
            "SELECT DISTINCT 'f'::text, ''::text, 0, freed, NULL::text FROM done
             WHERE freed IS NOT NULL",
        );
    }
    if shape.has(Shape::STARTS) {
        ctes.push(requests("s", START_COLUMNS, one));
        ctes.push(STARTS.to_owned());
        rows.push("SELECT 's'::text, workflow_uuid, 0, name, creator_xid FROM st");
    }
    if shape.has(Shape::ENQUEUES) {
        ctes.push(requests("e", ENQUEUE_COLUMNS, one));
        ctes.push(
            if shape.has(Shape::CLAIMS) {
                CLAIMS
            } else {
                NO_CLAIMS
            }
            .to_owned(),
        );
        ctes.push(ENQUEUE_INSERT.to_owned());
        // With a channel in `$38`, each enqueue wakes idle nodes at commit.
        // Its third column is 1 for a row PENDING (claimed as it was enqueued, when created
        // by this request).
        rows.push(
            "SELECT 'e'::text, workflow_uuid, (status = 'PENDING')::int4, name, creator_xid
             FROM eq LEFT JOIN LATERAL (SELECT pg_notify($38, eq.queue_name) WHERE $38 IS NOT NULL) n
                 ON true",
        );
    }
    if rows.is_empty() {
        return "SELECT NULL::text, NULL::text, NULL::int4, NULL::text, NULL::text WHERE false"
            .to_owned();
    }
    format!("WITH {} {}", ctes.join(", "), rows.join(" UNION ALL "))
}

/// One row the statement returns: kind ('c', 'o' or 's'), workflow, function id, and for
/// starts the recorded name and creator.
type Row = (String, String, i32, Option<String>, Option<String>);

/// Requests of one group commit, as the statement's column arrays. Requests of each kind are
/// numbered from 0 in the order they were pushed.
#[derive(Debug, Default)]
pub struct Batch {
    ck: CheckpointColumns,
    oc: OutcomeColumns,
    st: StartColumns,
    eq: EnqueueColumns,
    announce: Option<&'static str>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds a checkpoint.
    pub fn push_checkpoint(&mut self, c: Checkpoint) {
        self.ck.push(c);
    }

    /// Adds an outcome.
    pub fn push_outcome(&mut self, o: Outcome) {
        debug_assert!(matches!(o.status, Status::Success | Status::Error));
        self.oc.push(o);
    }

    /// Adds a start. One statement cannot insert the same ID twice, nor both start a workflow
    /// and write to it (it would touch its row twice): send such a request in a later batch.
    pub fn push_start(&mut self, s: Start) {
        debug_assert!(!self.has_insert(&s.workflow_id));
        self.st.push(s);
    }

    /// Adds an enqueue. Like a start, one statement cannot insert the same ID twice.
    pub fn push_enqueue(&mut self, e: Enqueue) {
        debug_assert!(!self.has_insert(&e.workflow_id));
        self.eq.push(e);
    }

    /// Makes each enqueue of the batch notify `channel` with its queue at commit. A node
    /// announces its enqueues itself instead, many at once (see the committer): a notifying
    /// transaction holds Postgres's notification lock through its commit, so notifying commits
    /// of all clients take turns.
    pub fn announce_enqueues(&mut self, channel: &'static str) {
        self.announce = Some(channel);
    }

    /// Whether a start or an enqueue of `id` is in the batch.
    pub fn has_insert(&self, id: &str) -> bool {
        self.st.id.iter().chain(&self.eq.id).any(|i| i == id)
    }

    /// Requests in the batch.
    pub fn len(&self) -> usize {
        self.ck.wf.len() + self.oc.wf.len() + self.st.id.len() + self.eq.id.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which parts of the statement the batch needs.
    pub fn shape(&self) -> Shape {
        Shape::new(
            !self.ck.wf.is_empty(),
            self.ck.prov.iter().any(Option::is_some),
            !self.oc.wf.is_empty(),
            !self.st.id.is_empty(),
            !self.eq.id.is_empty(),
            self.eq.here.iter().any(|h| *h),
        )
        .one_each(
            [
                self.ck.wf.len(),
                self.oc.wf.len(),
                self.st.id.len(),
                self.eq.id.len(),
            ]
            .iter()
            .all(|n| *n <= 1),
        )
    }

    /// The statement with every column bound, ready to send.
    pub fn query<'q>(
        &'q self,
        executor_id: &'q str,
        app_version: &'q str,
    ) -> QueryAs<'q, Postgres, Row, PgArguments> {
        self.query_shaped(self.shape(), executor_id, app_version)
    }

    fn query_shaped<'q>(
        &'q self,
        shape: Shape,
        executor_id: &'q str,
        app_version: &'q str,
    ) -> QueryAs<'q, Postgres, Row, PgArguments> {
        let (ck, oc, st, eq) = (&self.ck, &self.oc, &self.st, &self.eq);
        sqlx::query_as::<_, Row>(statement(shape))
            .bind(&ck.wf)
            .bind(&ck.owner)
            .bind(&ck.fid)
            .bind(&ck.name)
            .bind(&ck.output)
            .bind(&ck.error)
            .bind(&ck.child)
            .bind(&ck.started)
            .bind(&ck.completed)
            .bind(&oc.wf)
            .bind(&oc.owner)
            .bind(&oc.status)
            .bind(&oc.output)
            .bind(&oc.error)
            .bind(&st.id)
            .bind(&st.name)
            .bind(&st.xid)
            .bind(&st.timeout)
            .bind(&st.deadline)
            .bind(&st.priority)
            .bind(&st.inputs)
            .bind(executor_id)
            .bind(app_version)
            .bind(Status::Pending.as_str())
            .bind(&ck.prov)
            .bind(&eq.id)
            .bind(&eq.name)
            .bind(&eq.queue)
            .bind(&eq.xid)
            .bind(&eq.timeout)
            .bind(&eq.deadline)
            .bind(&eq.priority)
            .bind(&eq.dedup)
            .bind(&eq.delay)
            .bind(&eq.pkey)
            .bind(&eq.attrs)
            .bind(&eq.inputs)
            .bind(self.announce)
            .bind(&eq.here)
            .bind(&eq.here_deadline)
    }

    /// Writes the batch in one statement; starts run on `executor_id` at `app_version`.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// The statement failed: nothing of the batch was written.
    pub async fn write<'c>(
        &self,
        db: impl PgExecutor<'c>,
        executor_id: &str,
        app_version: &str,
    ) -> Result<Written, sqlx::Error> {
        let rows = self.query(executor_id, app_version).fetch_all(db).await?;
        let mut w = Written {
            checkpoints: vec![false; self.ck.wf.len()],
            outcomes: vec![false; self.oc.wf.len()],
            starts: vec![None; self.st.id.len()],
            enqueues: vec![None; self.eq.id.len()],
            queued_outcomes: Vec::new(),
            freed_queues: Vec::new(),
        };
        for (kind, wf, fid, name, creator) in rows {
            match kind.as_str() {
                "c" => mark(&mut w.checkpoints, &self.ck.wf, &wf, |i| {
                    self.ck.fid[i] == fid
                }),
                "o" => mark(&mut w.outcomes, &self.oc.wf, &wf, |_| true),
                "n" => w.queued_outcomes.push(wf),
                "f" => w.freed_queues.extend(name),
                "e" => created(
                    &mut w.enqueues,
                    &self.eq.id,
                    &self.eq.xid,
                    &wf,
                    (name, creator),
                    fid == 1,
                ),
                _ => created(
                    &mut w.starts,
                    &self.st.id,
                    &self.st.xid,
                    &wf,
                    (name, creator),
                    false,
                ),
            }
        }
        Ok(w)
    }
}

/// Records what the statement returned for the start or enqueue of `wf`: created by this
/// request when the row's creator token is the request's own, and then claimed for the node
/// when the row is PENDING (`pending`).
fn created(
    found: &mut [Option<Created>],
    ids: &[String],
    xids: &[String],
    wf: &str,
    (name, creator): (Option<String>, Option<String>),
    pending: bool,
) {
    if let Some(i) = ids.iter().position(|id| id == wf) {
        let created = creator.as_deref() == Some(xids[i].as_str());
        found[i] = Some(Created {
            name,
            created,
            claimed: created && pending,
        });
    }
}

fn mark(flags: &mut [bool], ids: &[String], wf: &str, also: impl Fn(usize) -> bool) {
    for (i, id) in ids.iter().enumerate() {
        if id == wf && also(i) {
            flags[i] = true;
        }
    }
}

/// What a batch wrote, per request in push order.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// Whether each checkpoint was written (`false`: not owned any more, or already recorded).
    pub checkpoints: Vec<bool>,
    /// Whether each outcome was written (`false`: not owned any more).
    pub outcomes: Vec<bool>,
    /// What each start found; `None` when the statement returned no row for it.
    pub starts: Vec<Option<Created>>,
    /// What each enqueue found; `None` when its queue's partitioning refused it (a partition
    /// key given to a queue without partitions, or none given to one with them).
    pub enqueues: Vec<Option<Created>>,
    /// Workflows that came through a queue whose outcome was written (except those their
    /// enqueue claimed for the enqueuing node): their waiters elsewhere are told
    /// ([`crate::OUTCOME_CHANNEL`]).
    pub queued_outcomes: Vec<String>,
    /// Queues with a concurrency limit shared by every node (global or per partition) that
    /// an outcome of the batch freed a place in: dispatchers elsewhere are told
    /// ([`crate::ENQUEUE_CHANNEL`]), since a workflow waiting on one may start now.
    pub freed_queues: Vec<String>,
}

#[derive(Debug, Default)]
struct StartColumns {
    id: Vec<String>,
    name: Vec<String>,
    xid: Vec<String>,
    timeout: Vec<Option<i64>>,
    deadline: Vec<Option<i64>>,
    priority: Vec<i32>,
    inputs: Vec<String>,
}

impl StartColumns {
    fn push(&mut self, s: Start) {
        self.id.push(s.workflow_id);
        self.name.push(s.name);
        self.xid.push(s.xid);
        self.timeout.push(s.timeout_ms);
        self.deadline.push(s.deadline_ms);
        self.priority.push(s.priority);
        self.inputs.push(s.inputs);
    }
}

#[derive(Debug, Default)]
struct EnqueueColumns {
    id: Vec<String>,
    name: Vec<String>,
    queue: Vec<String>,
    xid: Vec<String>,
    timeout: Vec<Option<i64>>,
    deadline: Vec<Option<i64>>,
    priority: Vec<i32>,
    dedup: Vec<Option<String>>,
    delay: Vec<Option<i64>>,
    pkey: Vec<Option<String>>,
    attrs: Vec<Option<String>>,
    inputs: Vec<String>,
    here: Vec<bool>,
    here_deadline: Vec<Option<i64>>,
}

impl EnqueueColumns {
    fn push(&mut self, e: Enqueue) {
        self.xid.push(e.xid().to_owned());
        self.id.push(e.workflow_id);
        self.name.push(e.name);
        self.queue.push(e.queue);
        self.timeout.push(e.timeout_ms);
        self.deadline.push(e.deadline_ms);
        self.priority.push(e.priority);
        self.dedup.push(e.deduplication_id);
        self.delay.push(e.delay_until_ms);
        self.pkey.push(e.partition_key);
        self.attrs.push(e.attributes.map(|a| a.to_string()));
        self.here.push(e.here.is_some());
        self.here_deadline.push(e.here.and_then(|h| h.deadline_ms));
        self.inputs.push(e.inputs);
    }
}

#[derive(Debug, Default)]
struct CheckpointColumns {
    wf: Vec<String>,
    owner: Vec<String>,
    fid: Vec<i32>,
    name: Vec<String>,
    output: Vec<Option<String>>,
    error: Vec<Option<String>>,
    child: Vec<Option<String>>,
    started: Vec<i64>,
    completed: Vec<i64>,
    prov: Vec<Option<String>>,
}

impl CheckpointColumns {
    fn push(&mut self, c: Checkpoint) {
        self.wf.push(c.workflow_id);
        self.owner.push(c.owner_xid);
        self.fid.push(c.function_id);
        self.name.push(c.name);
        self.output.push(c.output);
        self.error.push(c.error);
        self.child.push(c.child_workflow_id);
        self.started.push(c.started_at_ms);
        self.completed.push(c.completed_at_ms);
        self.prov.push(c.prov);
    }
}

#[derive(Debug, Default)]
struct OutcomeColumns {
    wf: Vec<String>,
    owner: Vec<String>,
    status: Vec<&'static str>,
    output: Vec<Option<String>>,
    error: Vec<Option<String>>,
}

impl OutcomeColumns {
    fn push(&mut self, o: Outcome) {
        self.wf.push(o.workflow_id);
        self.owner.push(o.owner_xid);
        self.status.push(o.status.as_str());
        self.output.push(o.output);
        self.error.push(o.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbos_kernel::{testing, Kernel};

    #[tokio::test]
    async fn every_shape_of_the_statement_runs() {
        let db = testing::database().await;
        let k = Kernel::boot(db.config(), &[crate::MIGRATIONS])
            .await
            .expect("boot");
        let empty = Batch::new();
        // Claims name the scheduler's tables; the services' tests run those shapes.
        for i in 0..Shape::CLAIMS {
            for one in [false, true] {
                let bit = |b: usize| i & b != 0;
                let shape = Shape::new(
                    bit(Shape::CHECKPOINTS),
                    bit(Shape::PROVENANCE),
                    bit(Shape::OUTCOMES),
                    bit(Shape::STARTS),
                    bit(Shape::ENQUEUES),
                    false,
                )
                .one_each(one);
                let rows = empty
                    .query_shaped(shape, "node", "v1")
                    .fetch_all(k.pool())
                    .await
                    .unwrap_or_else(|e| panic!("shape {i:05b} (one each: {one}): {e}"));
                assert!(
                    rows.is_empty(),
                    "shape {i:05b} (one each: {one}) wrote nothing"
                );
            }
        }
        k.shutdown().await.expect("shutdown");
    }
}
