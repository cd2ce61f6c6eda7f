//! Which PostgreSQL the tests use. `TESSERA_TEST_DATABASE_URL` names it; under `CI=true` the
//! CI machine's database is assumed, so a missing server fails the tests there; otherwise the
//! PostgreSQL half is skipped with a message the test runner does not swallow.

use std::io::Write;

/// The PostgreSQL every CI machine has.
pub const CI_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Say something the test runner will not swallow (libtest captures the print macros only).
pub fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// The PostgreSQL URL to test against, or None (skip) when none is configured outside CI.
pub fn pg_url() -> Option<String> {
    if let Ok(u) = std::env::var("TESSERA_TEST_DATABASE_URL") {
        return Some(u);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return Some(CI_PG_URL.to_owned());
    }
    None
}

/// As [`pg_url`], saying loudly that `what` is skipped when there is none.
pub fn pg_url_or_skip(what: &str) -> Option<String> {
    let url = pg_url();
    if url.is_none() {
        loud(&format!(
            "SKIPPED (PostgreSQL): {what}; set TESSERA_TEST_DATABASE_URL={CI_PG_URL} to run it (CI=true makes it mandatory)"
        ));
    }
    url
}

/// A fresh PostgreSQL database for one test of a whole server (which owns its `public` schema
/// and runs its own migrations); [`PgDatabase::cleanup`] drops it.
#[derive(Debug)]
pub struct PgDatabase {
    /// The new database's URL, for the server under test.
    pub url: String,
    base: String,
    name: String,
}

impl PgDatabase {
    /// Create one, or None (after saying that `what` is skipped) when no PostgreSQL is configured.
    pub async fn create(what: &str) -> Option<Self> {
        let base = pg_url_or_skip(what)?;
        let name = format!("tessera_t_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| panic!("cannot connect to {base}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.unwrap();
        pool.close().await;
        let (prefix, _) = base.rsplit_once('/').expect("a database URL ends in /DATABASE");
        Some(Self { url: format!("{prefix}/{name}"), base, name })
    }

    /// Drop the database, even if a server still holds connections to it.
    pub async fn cleanup(self) {
        let pool = sqlx::PgPool::connect(&self.base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}
