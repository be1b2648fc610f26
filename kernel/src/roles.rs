//! Database roles: nodes work as `dbos_node`, which owns the OS schemas but is not a superuser;
//! `dbos_reader` reads the `os` views. People keep the superuser (`dbos sql`, `dbos url`).
//!
//! An embedded cluster is prepared by its superuser at every boot ([`prepare`]): the roles are
//! created if missing, the node role's password is set from the data directory's
//! `node-password` file, and the system database with every object in the OS schemas is handed
//! to the node role (databases made before nodes had a role of their own were the
//! superuser's). A node given `--database-url` connects as that URL's role; give it one made
//! the same way (see the README, "Roles").

use sqlx::{Connection, Executor, PgConnection};

use crate::error::Result;

/// The role nodes connect as: owner of the system database and of the OS schemas.
pub const NODE_ROLE: &str = "dbos_node";
/// The read-only role for dashboards and analytics.
pub const READER_ROLE: &str = "dbos_reader";
/// The schemas the node role owns.
pub const OS_SCHEMAS: &[&str] = &["kernel", "sched", "msg", "fs", "dbos", "prov", "os"];

/// Advisory-lock key serialising role preparation across processes ("dbos" "role").
const ROLES_LOCK_KEY: i64 = 0x6462_6f73_726f_6c65;

/// Creates the roles if missing, sets the node role's password, and sets the calling
/// superuser's search path to `public`. Roles belong to the whole cluster; run as a superuser.
///
/// # Errors
/// The statements fail (not a superuser, the server went away).
pub async fn ensure_roles(conn: &mut PgConnection, node_password: &str) -> Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLES_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    // Several databases of one server may create a role at the same moment (the advisory lock
    // is per database): whichever comes first wins, the others find it.
    tx.execute(
        format!(
            "DO $$
             BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{NODE_ROLE}') THEN
                     CREATE ROLE {NODE_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
                 END IF;
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                     CREATE ROLE {READER_ROLE} NOLOGIN;
                 END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN
                 NULL;
             END
             $$"
        )
        .as_str(),
    )
    .await?;
    tx.execute(
        format!(
            "ALTER ROLE {NODE_ROLE} LOGIN NOSUPERUSER PASSWORD {}",
            quote_literal(node_password)
        )
        .as_str(),
    )
    .await?;
    // The embedded superuser is named like schema `dbos`: by the default search path ("$user",
    // public) what people create without a schema would land among DBOS's tables. (Under the
    // lock: concurrent changes of one role's settings fail with "tuple concurrently updated".)
    tx.execute("ALTER ROLE CURRENT_USER SET search_path = public")
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Hands the connection's database and every object of the OS schemas in it to the node role,
/// and lets the reader role read the `os` views the node role creates. Idempotent; run as a
/// superuser after [`ensure_roles`].
///
/// # Errors
/// The statements fail.
pub async fn adopt_database(conn: &mut PgConnection) -> Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLES_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let schemas = OS_SCHEMAS
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute(
        format!(
            "DO $$
             DECLARE
                 node oid := '{NODE_ROLE}'::regrole;
                 r record;
             BEGIN
                 EXECUTE format('ALTER DATABASE %I OWNER TO {NODE_ROLE}', current_database());
                 FOR r IN SELECT nspname FROM pg_namespace
                          WHERE nspname IN ({schemas}) AND nspowner <> node LOOP
                     EXECUTE format('ALTER SCHEMA %I OWNER TO {NODE_ROLE}', r.nspname);
                 END LOOP;
                 -- Tables, views and free-standing sequences; a sequence owned by a column
                 -- follows its table.
                 FOR r IN SELECT c.oid::regclass AS name,
                                 CASE c.relkind WHEN 'v' THEN 'VIEW'
                                                WHEN 'm' THEN 'MATERIALIZED VIEW'
                                                WHEN 'S' THEN 'SEQUENCE'
                                                ELSE 'TABLE' END AS kind
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname IN ({schemas}) AND c.relowner <> node
                            AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                            AND NOT EXISTS (SELECT FROM pg_depend d
                                            WHERE d.classid = 'pg_class'::regclass
                                              AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
                 LOOP
                     EXECUTE format('ALTER %s %s OWNER TO {NODE_ROLE}', r.kind, r.name);
                 END LOOP;
                 FOR r IN SELECT p.oid::regprocedure AS name
                          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                          WHERE n.nspname IN ({schemas}) AND p.proowner <> node LOOP
                     EXECUTE format('ALTER ROUTINE %s OWNER TO {NODE_ROLE}', r.name);
                 END LOOP;
                 -- Free-standing types (a table's row type follows its table).
                 FOR r IN SELECT t.oid::regtype AS name,
                                 CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind
                          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                          WHERE n.nspname IN ({schemas}) AND t.typowner <> node
                            AND t.typtype IN ('c', 'e', 'd', 'r') AND t.typrelid = 0
                 LOOP
                     EXECUTE format('ALTER %s %s OWNER TO {NODE_ROLE}', r.kind, r.name);
                 END LOOP;
                 IF EXISTS (SELECT FROM pg_namespace WHERE nspname = 'os') THEN
                     ALTER DEFAULT PRIVILEGES FOR ROLE {NODE_ROLE} IN SCHEMA os
                         GRANT SELECT ON TABLES TO {READER_ROLE};
                 END IF;
             END
             $$"
        )
        .as_str(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Prepares the database at `superuser_url` for nodes: [`ensure_roles`] then
/// [`adopt_database`].
///
/// # Errors
/// The server cannot be reached or a statement fails.
pub async fn prepare(superuser_url: &str, node_password: &str) -> Result<()> {
    let mut conn = PgConnection::connect(superuser_url).await?;
    ensure_roles(&mut conn, node_password).await?;
    adopt_database(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// A SQL string literal (standard-conforming strings, the default since Postgres 9.1).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
