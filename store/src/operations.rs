//! Statements on `dbos.operation_outputs` outside the group commit: the checkpoint a
//! transaction step writes inside the user's own transaction, and the fragments other services
//! embed to write an effect and its checkpoint in one statement.

use sqlx::PgConnection;

/// A CTE named `own` that locks the workflow's status row when the caller owns it: `$1`
/// workflow, `$2` owner. An effect joined to `own` happens only for the owning execution, and
/// the lock orders it against a concurrent cancel.
/// Its columns (the node and version running it, its name and queue) feed [`prov_cte`].
///
/// The row is found by its key. `(status = 'PENDING') IS TRUE` means `status = 'PENDING'`, but
/// the planner cannot match it to the predicate of the partial index
/// `idx_workflow_status_pending`: a node's generic plan made while few workflows were pending
/// would otherwise read that whole index, a heap fetch per entry to compare the key, and keep
/// doing so once thousands wait (`store/tests/plans.rs`).
pub const OWN_CTE: &str = "own AS (
    SELECT executor_id, application_version, name, queue_name FROM dbos.workflow_status
    WHERE workflow_uuid = $1 AND owner_xid = $2 AND (status = 'PENDING') IS TRUE
    FOR NO KEY UPDATE)";

/// [`OWN_CTE`] (found by key in the same way) for a probe that may find nothing to take: the
/// row is locked only when `cond` holds (there is something to take, or an empty result is to
/// be recorded). A probe that finds nothing then writes nothing, not even the lock, so its
/// commit waits for no WAL flush. Whether the caller owns the workflow is then [`OWNED`], not
/// the existence of `own`.
pub fn own_cte_if(cond: &str) -> String {
    own_cte_for(&OP, &format!(" AND ({cond})"))
}

/// Where the fragments find the operation they record: the SQL of its workflow, owner, function
/// ID, start time (epoch ms) and name (parameters, usually), and the names of the CTEs they
/// make. A statement that records operations of two workflows names the second's apart.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    /// The workflow.
    pub wf: &'a str,
    /// The execution's ownership token.
    pub owner: &'a str,
    /// The function ID.
    pub fid: &'a str,
    /// When the operation started.
    pub started: &'a str,
    /// The operation's name.
    pub name: &'a str,
    /// The CTE that locks the owned workflow row.
    pub own: &'a str,
    /// The CTE that writes the checkpoint.
    pub rec: &'a str,
    /// The CTE that writes the provenance rows.
    pub pv: &'a str,
}

/// The parameters [`bind_op`] binds, and the CTE names `own`, `rec` and `pv`.
pub const OP: Params<'static> = Params {
    wf: "$1",
    owner: "$2",
    fid: "$3",
    started: "$4",
    name: "$5",
    own: "own",
    rec: "rec",
    pv: "pv",
};

/// [`OWN_CTE`] for the operation `p`, with `and` (` AND ...`, or empty) added to its condition.
pub fn own_cte_for(p: &Params<'_>, and: &str) -> String {
    let Params { wf, owner, own, .. } = p;
    format!(
        "{own} AS (
    SELECT executor_id, application_version, name, queue_name FROM dbos.workflow_status
    WHERE workflow_uuid = {wf} AND owner_xid = {owner} AND (status = 'PENDING') IS TRUE{and}
    FOR NO KEY UPDATE)"
    )
}

/// Whether the caller owns the workflow, beside an `own` of [`own_cte_if`]: the lock taken, or
/// else the row as the statement's snapshot sees it.
pub const OWNED: &str = "(EXISTS (SELECT 1 FROM own) OR EXISTS (
    SELECT 1 FROM dbos.workflow_status
    WHERE workflow_uuid = $1 AND owner_xid = $2 AND (status = 'PENDING') IS TRUE))";

/// The columns of a provenance row, as `rows` of [`prov_cte`] and the JSON of
/// [`dbos_kernel::prov::to_json`] give them.
pub const PROV_COLUMNS: &str = "kind text, object text, inode int8, bytes int8, detail jsonb";

/// A CTE named `pv` that writes the provenance rows `rows` (a query with the columns
/// [`PROV_COLUMNS`]) for the operation `rec` recorded, when it recorded it and the workflow's
/// capture is on (`prov.capture`); the node and version come from `own`.
pub fn prov_cte(rows: &str) -> String {
    prov_cte_for(&OP, rows)
}

/// [`prov_cte`] for the operation `p`.
pub fn prov_cte_for(p: &Params<'_>, rows: &str) -> String {
    let Params {
        wf,
        fid,
        own,
        rec,
        pv,
        ..
    } = p;
    format!(
        "{pv} AS (
    INSERT INTO prov.events
        (workflow_uuid, function_id, kind, object, inode, bytes, detail, node_id, app_version)
    SELECT {wf}, {fid}, p.kind, p.object, p.inode, p.bytes, p.detail,
           {own}.executor_id, {own}.application_version
    FROM {own}, ({rows}) AS p(kind, object, inode, bytes, detail)
    WHERE EXISTS (SELECT 1 FROM {rec}) AND prov.capture({own}.name, {own}.queue_name))"
    )
}

/// [`prov_cte`] over events given as a JSON array in parameter `param`.
pub fn prov_json_cte(param: &str) -> String {
    prov_cte(&format!(
        "SELECT * FROM jsonb_to_recordset({param}::jsonb) AS j({PROV_COLUMNS})"
    ))
}

/// A CTE named `rec` that writes the checkpoint row when `own` found the workflow owned: `$3`
/// function ID, `$4` started at (epoch ms), `$5` name; `output` is the SQL of the recorded
/// output and `cond` an optional `WHERE` clause over `own`. It returns a row when it wrote.
pub fn record_cte(output: &str, cond: &str) -> String {
    record_cte_for(&OP, output, cond, "1")
}

/// [`record_cte`] for the operation `p`, returning `returning` (SQL over the written row).
pub fn record_cte_for(p: &Params<'_>, output: &str, cond: &str, returning: &str) -> String {
    let Params {
        wf,
        fid,
        started,
        name,
        own,
        rec,
        ..
    } = p;
    format!(
        "{rec} AS (
    INSERT INTO dbos.operation_outputs
        (workflow_uuid, function_id, function_name, output, started_at_epoch_ms,
         completed_at_epoch_ms, serialization)
    SELECT {wf}, {fid}, {name}, {output}, {started}, kernel.now_ms(), 'portable_json'
    FROM {own} {cond}
    ON CONFLICT DO NOTHING
    RETURNING {returning})"
    )
}

/// [`record_cte`] for the operations of several workflows in one statement: a CTE named `rec`
/// that writes a checkpoint for each row of `rows`, a query with the columns `wf`, `fid`,
/// `name`, `output`, `started` (each of a workflow whose row the statement locked as its
/// owner's), and returns the `workflow_uuid` and `function_id` of each it wrote.
pub fn record_many_cte(rows: &str) -> String {
    format!(
        "rec AS (
    INSERT INTO dbos.operation_outputs
        (workflow_uuid, function_id, function_name, output, started_at_epoch_ms,
         completed_at_epoch_ms, serialization)
    SELECT o.wf, o.fid, o.name, o.output, o.started, kernel.now_ms(), 'portable_json'
    FROM ({rows}) AS o(wf, fid, name, output, started)
    ON CONFLICT DO NOTHING
    RETURNING workflow_uuid, function_id)"
    )
}

/// [`prov_cte`] beside a [`record_many_cte`]: a CTE named `pv` that writes the rows of `rows`,
/// a query with the columns `wf`, `fid`, [`PROV_COLUMNS`], then the node and version that ran
/// the operation and its workflow's name and queue, for each operation `rec` wrote whose
/// workflow's capture is on (`prov.capture`).
pub fn prov_many_cte(rows: &str) -> String {
    format!(
        "pv AS (
    INSERT INTO prov.events
        (workflow_uuid, function_id, kind, object, inode, bytes, detail, node_id, app_version)
    SELECT p.wf, p.fid, p.kind, p.object, p.inode, p.bytes, p.detail, p.node, p.version
    FROM ({rows}) AS p(wf, fid, kind, object, inode, bytes, detail, node, version, wf_name, queue)
    JOIN rec ON rec.workflow_uuid = p.wf AND rec.function_id = p.fid
    WHERE prov.capture(p.wf_name, p.queue))"
    )
}

/// The checkpoint an operation inside a workflow writes with its effect: which execution, at
/// which position, under which name. The fragments above bind it as `$1`..`$5` ([`bind_op`]).
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    /// The workflow.
    pub workflow_id: &'a str,
    /// The execution's ownership token.
    pub owner_xid: &'a str,
    /// The operation's function ID (1-based, in call order).
    pub function_id: i32,
    /// The operation's name (`DBOS.send`, a step's name, ...).
    pub name: &'a str,
    /// When the operation started, epoch ms.
    pub started_at_ms: i64,
}

/// Binds `op` as `$1` workflow, `$2` owner, `$3` function ID, `$4` started at, `$5` name: the
/// parameters of [`OWN_CTE`] and [`record_cte`].
pub fn bind_op<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    op: &Op<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(op.workflow_id)
        .bind(op.owner_xid)
        .bind(op.function_id)
        .bind(op.started_at_ms)
        .bind(op.name)
}

/// Records a transaction step's output inside the step's own transaction, so the user's writes
/// and the checkpoint commit together; locks the workflow row against a concurrent cancel.
/// Returns `false` when the caller no longer owns the workflow (or the step is recorded).
///
/// 1 round trip (primary keys).
///
/// # Errors
/// Database errors (a serialization failure or deadlock may be retried with the transaction).
///
/// `prov` is what the step touched (a JSON array, [`dbos_kernel::prov::to_json`]), written
/// with the checkpoint.
pub async fn record_in_transaction(
    tx: &mut PgConnection,
    op: &Op<'_>,
    output: &str,
    prov: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "WITH {OWN_CTE}, {}, {} SELECT count(*)::int8 FROM rec",
        record_cte("$6", ""),
        prov_json_cte("$7")
    );
    let row = bind_op(sqlx::query(&sql), op)
        .bind(output)
        .bind(prov)
        .fetch_one(tx)
        .await?;
    Ok(sqlx::Row::try_get::<i64, _>(&row, 0)? == 1)
}

/// The operation recorded at `op`'s position while `op`'s execution still owns the workflow:
/// then no other execution can have written it, so it is the commit of this execution whose
/// answer was lost (the connection failed during `COMMIT`). `None` when nothing is recorded
/// there or the workflow is owned elsewhere.
///
/// 1 round trip (primary keys).
///
/// # Errors
/// Database errors.
pub async fn recorded_by_owner(
    conn: &mut PgConnection,
    op: &Op<'_>,
) -> Result<Option<Recorded>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.function_id, o.function_name, o.output, o.error, o.child_workflow_id
         FROM dbos.operation_outputs o
         JOIN dbos.workflow_status s ON s.workflow_uuid = o.workflow_uuid
         WHERE o.workflow_uuid = $1 AND o.function_id = $3
           AND s.owner_xid = $2 AND (s.status = 'PENDING') IS TRUE",
    )
    .bind(op.workflow_id)
    .bind(op.owner_xid)
    .bind(op.function_id)
    .fetch_optional(conn)
    .await
}

/// An operation recorded by an earlier execution, as a claim or a start returns them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, sqlx::FromRow)]
pub struct Recorded {
    /// Position, from 1.
    pub function_id: i32,
    /// Operation name.
    pub function_name: String,
    /// Output, portable JSON text.
    pub output: Option<String>,
    /// Error, portable JSON text.
    pub error: Option<String>,
    /// Child workflow started or awaited.
    pub child_workflow_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragments_of_op_are_those_of_the_first_five_parameters() {
        assert_eq!(own_cte_for(&OP, ""), OWN_CTE);
        assert!(record_cte("NULL", "").contains("SELECT $1, $3, $5, NULL, $4"));
        assert!(prov_cte("SELECT 1").contains("SELECT $1, $3, p.kind"));
    }
}
