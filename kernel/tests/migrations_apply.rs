//! Migrations are applied once, under a lock, and a database ahead of the binary is refused.

use dbos_kernel::migrate::{self, Migration, ServiceMigrations};
use dbos_kernel::{db, testing, Error, Kernel};
use sqlx::PgPool;

const DEMO: ServiceMigrations = ServiceMigrations {
    service: "demo",
    migrations: &[
        Migration {
            version: 1,
            name: "items",
            sql: "CREATE SCHEMA demo; CREATE TABLE demo.items (id bigint PRIMARY KEY);",
            earlier: &[],
        },
        Migration {
            version: 2,
            name: "item names",
            sql: "ALTER TABLE demo.items ADD COLUMN name text;",
            earlier: &[],
        },
    ],
};

async fn pool(db: &testing::TestDb) -> PgPool {
    db::connect(&db.url, &db::PoolLimits::default())
        .await
        .expect("the test database is reachable")
}

async fn recorded(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT service, version FROM kernel.migrations ORDER BY service, version")
        .fetch_all(pool)
        .await
        .expect("kernel.migrations is readable")
}

#[tokio::test]
async fn boot_applies_kernel_and_service_migrations_once() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[DEMO]).await.expect("boot");
    k.shutdown().await.expect("shutdown");
    let k = Kernel::boot(db.config(), &[DEMO])
        .await
        .expect("second boot");
    let rows = recorded(k.pool()).await;
    let mut expected: Vec<(String, i32)> = vec![("demo".into(), 1), ("demo".into(), 2)];
    expected.extend(
        dbos_kernel::migrate::KERNEL
            .migrations
            .iter()
            .map(|m| ("kernel".to_owned(), m.version)),
    );
    assert_eq!(rows, expected);
    sqlx::query("INSERT INTO demo.items (id, name) VALUES (1, 'x')")
        .execute(k.pool())
        .await
        .expect("the service's tables exist");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrent_boots_apply_each_migration_exactly_once() {
    let db = testing::database().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // Each boot runs on its own task so they really overlap.
        set.spawn(Kernel::boot(db.config(), &[DEMO]));
    }
    let mut kernels = Vec::new();
    while let Some(k) = set.join_next().await {
        kernels.push(k.expect("boot task").expect("boot"));
    }
    assert_eq!(
        recorded(kernels[0].pool()).await.len(),
        2 + dbos_kernel::migrate::KERNEL.migrations.len()
    );
    let ids: std::collections::HashSet<String> =
        kernels.iter().map(|k| k.node_id().to_owned()).collect();
    assert_eq!(ids.len(), 4, "every boot gets a fresh node id");
    for k in kernels {
        k.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_binary_is_refused() {
    let db = testing::database().await;
    let p = pool(&db).await;
    migrate::apply(&p, &[migrate::KERNEL])
        .await
        .expect("migrate");
    sqlx::query("INSERT INTO kernel.migrations (service, version, name, checksum) VALUES ('kernel', 99, 'future', 'x')")
        .execute(&p)
        .await
        .expect("insert");
    let err = Kernel::boot(db.config(), &[]).await.expect_err("refused");
    match &err {
        Error::NewerDatabase {
            service,
            recorded,
            known,
        } => {
            assert_eq!(service, "kernel");
            assert_eq!(*recorded, 99);
            assert_eq!(*known, migrate::KERNEL.migrations.len() as i32);
        }
        other => panic!("expected NewerDatabase, got {other}"),
    }
    assert!(err.to_string().contains("upgrade the binary"), "{err}");
}

#[tokio::test]
async fn an_edited_migration_is_refused_by_checksum() {
    let db = testing::database().await;
    let p = pool(&db).await;
    migrate::apply(&p, &[migrate::KERNEL, DEMO])
        .await
        .expect("migrate");
    const EDITED: ServiceMigrations = ServiceMigrations {
        service: "demo",
        migrations: &[Migration {
            version: 1,
            name: "items",
            sql: "CREATE SCHEMA demo; CREATE TABLE demo.items (id int PRIMARY KEY);",
            earlier: &[],
        }],
    };
    let err = migrate::apply(&p, &[migrate::KERNEL, EDITED])
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::ChecksumMismatch { service, version: 1, .. } if service == "demo"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_behind() {
    let db = testing::database().await;
    let p = pool(&db).await;
    const BROKEN: ServiceMigrations = ServiceMigrations {
        service: "broken",
        migrations: &[Migration {
            version: 1,
            name: "half",
            sql: "CREATE TABLE public.half_done (id int); SELECT * FROM no_such_table;",
            earlier: &[],
        }],
    };
    let err = migrate::apply(&p, &[migrate::KERNEL, BROKEN])
        .await
        .expect_err("fails");
    assert!(
        matches!(&err, Error::Migration { service, version: 1, .. } if service == "broken"),
        "{err}"
    );
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('public.half_done')::text")
        .fetch_one(&p)
        .await
        .expect("query");
    assert_eq!(exists, None, "the failed migration's table was rolled back");
    assert!(recorded(&p).await.iter().all(|(s, _)| s != "broken"));
    // The advisory lock was released: migrating again works.
    migrate::apply(&p, &[migrate::KERNEL])
        .await
        .expect("migrate again");
}
