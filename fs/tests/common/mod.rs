//! Shared fixtures of the file-system tests: a fresh database with schema `fs`.

#![allow(dead_code)]

use dbos_fs::{Error, Fs, Identity, Options};
use dbos_kernel::db::{self, PoolLimits};
use dbos_kernel::migrate;
use sqlx::{PgPool, Postgres, Transaction};

/// A test's file system on its own database.
pub struct T {
    pub pool: PgPool,
    pub fs: Fs,
    pub root: Identity,
    pub url: String,
    /// The same database as the superuser.
    pub admin_url: String,
}

impl T {
    pub async fn new() -> T {
        T::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> T {
        let tdb = dbos_kernel::testing::database().await;
        let pool = db::connect(
            &tdb.url,
            &PoolLimits {
                size_max: 8,
                ..PoolLimits::default()
            },
        )
        .await
        .expect("the test database is reachable");
        migrate::apply(&pool, &[migrate::KERNEL, dbos_fs::MIGRATIONS])
            .await
            .expect("migrations apply");
        T {
            pool,
            fs: Fs::new(opts),
            root: Identity::root(),
            url: tdb.url,
            admin_url: tdb.admin_url,
        }
    }

    pub async fn tx(&self) -> Transaction<'static, Postgres> {
        self.pool.begin().await.expect("a transaction begins")
    }

    /// fsck must find nothing.
    pub async fn assert_consistent(&self) {
        let mut c = self.pool.acquire().await.unwrap();
        let problems = self.fs.fsck(&mut c).await.unwrap();
        assert!(problems.is_empty(), "inconsistent tables: {problems:#?}");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// The POSIX error number of a result that must be an error.
pub fn errno<T: std::fmt::Debug>(r: Result<T, Error>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno(),
    }
}

/// Deterministic bytes that differ per position.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}
