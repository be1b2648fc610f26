//! Migrations: every service supplies ordered SQL; the kernel applies them in one place.
//!
//! Applied migrations are recorded in `kernel.migrations(service, version, checksum,
//! applied_at)`. Boot refuses a database whose recorded migrations are newer than this binary
//! or whose checksums differ from this binary's SQL.

use sha2::{Digest, Sha256};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Acquire, Executor, PgExecutor, PgPool};

use crate::error::{Error, Result};

/// One migration of one service.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Position in the service's order, from 1.
    pub version: i32,
    /// Short name, for messages.
    pub name: &'static str,
    /// The SQL, run in one transaction together with its record.
    pub sql: &'static str,
    /// Checksums of earlier texts of this migration, revised after release to do the same on
    /// every database it can run on: a database that recorded one of them is up to date.
    pub earlier: &'static [&'static str],
}

impl Migration {
    /// SHA-256 of the SQL, hex.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// A service's migrations in version order.
#[derive(Clone, Copy, Debug)]
pub struct ServiceMigrations {
    /// The service's name, e.g. `kernel`, `dbos`, `fs`.
    pub service: &'static str,
    /// Its migrations, versions 1, 2, ...
    pub migrations: &'static [Migration],
}

/// The kernel's own migrations.
pub const KERNEL: ServiceMigrations = ServiceMigrations {
    service: "kernel",
    migrations: &[
        Migration {
            version: 1,
            name: "nodes",
            sql: include_str!("../migrations/0001_nodes.sql"),
            earlier: &[],
        },
        Migration {
            version: 2,
            name: "os views",
            sql: include_str!("../migrations/0002_os_views.sql"),
            earlier: &[],
        },
        Migration {
            version: 3,
            name: "now_ms",
            sql: include_str!("../migrations/0003_now_ms.sql"),
            earlier: &[],
        },
        Migration {
            version: 4,
            name: "node identity",
            sql: include_str!("../migrations/0004_node_identity.sql"),
            earlier: &[],
        },
        Migration {
            version: 5,
            name: "lease after restart",
            sql: include_str!("../migrations/0005_lease_after_restart.sql"),
            earlier: &[],
        },
        Migration {
            version: 6,
            name: "reader role",
            sql: include_str!("../migrations/0006_reader_role.sql"),
            // It created the role unconditionally, which a node role may not do.
            earlier: &["7049f60f29f62e5c3c2247192cf5654f02ae6e539aa61d1ca1c28478af5fbb51"],
        },
        Migration {
            version: 7,
            name: "failover",
            sql: include_str!("../migrations/0007_failover.sql"),
            earlier: &[],
        },
    ],
};

/// Advisory-lock key serialising migrations across nodes ("dbos" "migr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6462_6f73_6d69_6772;

const BOOTSTRAP: &str = "
SET client_min_messages TO warning;
CREATE SCHEMA IF NOT EXISTS kernel;
CREATE TABLE IF NOT EXISTS kernel.migrations (
    service    text        NOT NULL,
    version    integer     NOT NULL CHECK (version > 0),
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
);
";

/// A migration applied by [`apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The service.
    pub service: String,
    /// The version.
    pub version: i32,
}

/// The migrations one service has applied, as `dbos status` shows them.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct Summary {
    /// The service.
    pub service: String,
    /// Its newest applied version.
    pub version: i32,
    /// How many of its migrations are applied.
    pub applied: i64,
    /// When the newest was applied.
    pub last_applied_at: DateTime<Utc>,
}

/// The applied migrations per service, by service name (`os.migrations`).
///
/// 1 round trip (served by the primary key of `kernel.migrations`; a few rows per service).
///
/// # Errors
/// Database errors; an undefined table (SQLSTATE 42P01) when no node ever booted on this
/// database.
pub async fn summary<'c>(db: impl PgExecutor<'c>) -> Result<Vec<Summary>> {
    Ok(sqlx::query_as(
        "SELECT service, max(version) AS version, count(*) AS applied,
                max(applied_at) AS last_applied_at
         FROM os.migrations GROUP BY service ORDER BY service",
    )
    .fetch_all(db)
    .await?)
}

/// Applies every missing migration of `services` (the kernel's first) under an advisory lock,
/// so nodes booting at once apply each migration exactly once.
///
/// # Errors
/// [`Error::NewerDatabase`], [`Error::ChecksumMismatch`], or [`Error::Migration`] naming the
/// migration that failed; a failed migration leaves nothing of itself behind.
pub async fn apply(pool: &PgPool, services: &[ServiceMigrations]) -> Result<Vec<Applied>> {
    for s in services {
        for (i, m) in s.migrations.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i32 + 1,
                "migrations of {} must be numbered 1, 2, ... in order",
                s.service
            );
        }
    }
    // A detached connection: closing it on any error path releases the session lock.
    let mut conn = pool.acquire().await?.detach();
    conn.execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK_KEY))
        .await?;
    conn.execute(sqlx::raw_sql(BOOTSTRAP)).await?;
    let recorded: Vec<(String, i32, String)> =
        sqlx::query_as("SELECT service, version, checksum FROM kernel.migrations")
            .fetch_all(&mut conn)
            .await?;
    check(services, &recorded)?;
    let mut applied = Vec::new();
    for s in services {
        for m in s.migrations {
            if recorded
                .iter()
                .any(|(svc, v, _)| svc == s.service && *v == m.version)
            {
                continue;
            }
            let fail = |source| Error::Migration {
                service: s.service.into(),
                version: m.version,
                name: m.name.into(),
                source,
            };
            let mut tx = conn.begin().await?;
            tx.execute(sqlx::raw_sql(m.sql)).await.map_err(fail)?;
            sqlx::query(
                "INSERT INTO kernel.migrations (service, version, name, checksum) VALUES ($1, $2, $3, $4)",
            )
            .bind(s.service)
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            tracing::info!(
                service = s.service,
                version = m.version,
                name = m.name,
                "applied migration"
            );
            applied.push(Applied {
                service: s.service.into(),
                version: m.version,
            });
        }
    }
    conn.execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK_KEY))
        .await?;
    Ok(applied)
}

fn check(services: &[ServiceMigrations], recorded: &[(String, i32, String)]) -> Result<()> {
    for s in services {
        let known = s.migrations.len() as i32;
        for (service, version, checksum) in recorded.iter().filter(|r| r.0 == s.service) {
            if *version > known {
                return Err(Error::NewerDatabase {
                    service: service.clone(),
                    recorded: *version,
                    known,
                });
            }
            let m = &s.migrations[(*version - 1) as usize];
            let expected = m.checksum();
            if *checksum != expected && !m.earlier.contains(&checksum.as_str()) {
                return Err(Error::ChecksumMismatch {
                    service: service.clone(),
                    version: *version,
                    recorded: checksum.clone(),
                    expected,
                });
            }
        }
    }
    Ok(())
}
