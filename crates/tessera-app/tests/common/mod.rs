//! Test harness: an App over a fresh SQLite file or a fresh PostgreSQL schema, with a
//! manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::sync::Arc;
use tessera_app::{App, AppConfig, ClientContext, KeyringSource};
use tessera_core::clock::ManualClock;
use tessera_core::otp::{self, Secret, TotpParams};
use tessera_core::seal::Keyring;
use tessera_store::{Store, StoreOptions};

/// The PostgreSQL every CI machine has.
pub const CI_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// 2026-01-01T00:00:10Z: 10 s into a 30 s step.
pub const T0: i64 = 1_767_225_610;

pub struct Harness {
    pub app: App,
    pub clock: ManualClock,
    pub store: Store,
    pub keys: KeyringSource,
    pub url: String,
    pub schema: Option<String>,
    pub dir: tempfile::TempDir,
}

/// Say something the test runner will not swallow (libtest captures print macros only).
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

impl Harness {
    async fn build(url: String, schema: Option<String>, dir: tempfile::TempDir, config: AppConfig) -> Self {
        let store =
            Store::connect(&url, StoreOptions { max_connections: 40, pg_schema: schema.clone(), ..Default::default() })
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        store.migrate().await.unwrap();
        let (keys, created) = KeyringSource::from_file(&dir.path().join("keyring"), true).unwrap();
        assert!(created);
        let clock = ManualClock::at_unix(T0);
        let app = App::new(store.clone(), keys.clone(), Arc::new(clock.clone()), config);
        Self { app, clock, store, keys, url, schema, dir }
    }

    pub async fn sqlite(config: AppConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        Self::build(url, None, dir, config).await
    }

    pub async fn postgres(config: AppConfig) -> Option<Self> {
        let Some(url) = pg_url() else {
            loud(
                "SKIPPED (PostgreSQL): set TESSERA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test to run the PostgreSQL half of the store suite (CI=true makes it mandatory)",
            );
            return None;
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().unwrap();
        Some(Self::build(url, Some(schema.clone()), dir, config).await)
    }

    /// Drop the test's PostgreSQL schema.
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some(s) = &self.schema {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{s}\" CASCADE"))).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Run raw SQL against the test's database (for tampering tests).
    pub async fn raw(&self, sql: String) -> u64 {
        sqlx::any::install_default_drivers();
        let mut opts = sqlx::any::AnyPoolOptions::new().max_connections(1);
        if let Some(s) = self.schema.clone() {
            opts = opts.after_connect(move |c, _| {
                let s = s.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(c, sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO \"{s}\""))))
                        .await
                        .map(|_| ())
                })
            });
        }
        let pool = opts.connect(&self.url).await.unwrap();
        let n = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap().rows_affected();
        pool.close().await;
        n
    }

    /// The code an app shows for `secret` at the clock's time, `steps` steps away.
    pub fn code(&self, secret: &str, steps: i64) -> String {
        self.code_with(secret, TotpParams::default(), steps)
    }

    pub fn code_with(&self, secret: &str, p: TotpParams, steps: i64) -> String {
        let s = Secret::from_base32(secret).unwrap();
        let t = self.clock_now() + steps * i64::from(p.period());
        otp::format_code(otp::totp(&s, &p, t), p.digits())
    }

    pub fn clock_now_dt(&self) -> time::OffsetDateTime {
        use tessera_core::clock::Clock;
        self.clock.now()
    }

    pub fn clock_now(&self) -> i64 {
        use tessera_core::clock::Clock;
        self.clock.now().unix_timestamp()
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.keys.get()
    }
}

pub fn ctx() -> ClientContext {
    ClientContext { ip: Some("203.0.113.7".into()), user_agent: Some("suite/1.0".into()), browser: None }
}

/// One test body, run against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        $crate::both!($name, tessera_app::AppConfig::default());
    };
    ($name:ident, $config:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let h = $crate::common::Harness::sqlite($config).await;
                super::$name(&h).await;
                h.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(h) = $crate::common::Harness::postgres($config).await {
                    super::$name(&h).await;
                    h.cleanup().await;
                }
            }
        }
    };
}
