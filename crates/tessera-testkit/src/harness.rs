//! An `App` over a fresh SQLite file or a fresh PostgreSQL schema, with a manual clock at
//! [`T0`](crate::T0), and [`both!`](crate::both) to run one test body on each store.

use crate::{code_with, pg_url_or_skip, test_clock};
use std::path::Path;
use std::sync::Arc;
use tessera_app::{App, AppConfig, KeyringSource};
use tessera_core::clock::{Clock, ManualClock};
use tessera_core::otp::TotpParams;
use tessera_core::seal::Keyring;
use tessera_store::{Store, StoreOptions};

/// One test's app and everything under it. [`Harness::cleanup`] drops its PostgreSQL schema.
#[derive(Debug)]
pub struct Harness {
    /// The use cases under test.
    pub app: App,
    /// The app's clock: moves only when the test moves it.
    pub clock: ManualClock,
    /// The app's store, for what the use cases do not show (attempt counters, the outbox).
    pub store: Store,
    /// The keyring file's source (in `dir`).
    pub keys: KeyringSource,
    /// The database URL.
    pub url: String,
    /// The test's own PostgreSQL schema (None on SQLite).
    pub schema: Option<String>,
    /// Holds the keyring and, on SQLite, the database file.
    pub dir: tempfile::TempDir,
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
        let clock = test_clock();
        let app = App::new(store.clone(), keys.clone(), Arc::new(clock.clone()), config);
        Self { app, clock, store, keys, url, schema, dir }
    }

    /// An app over a fresh SQLite file.
    pub async fn sqlite(config: AppConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        Self::build(url, None, dir, config).await
    }

    /// An app over a fresh schema of the test PostgreSQL, or None (skipped, loudly) when none
    /// is configured; see [`pg_url`](crate::pg_url).
    pub async fn postgres(config: AppConfig) -> Option<Self> {
        let url = pg_url_or_skip("the PostgreSQL half of the store suite")?;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().unwrap();
        Some(Self::build(url, Some(schema), dir, config).await)
    }

    /// A second replica: another app over the same database (its own connections, write turn
    /// and writer), with the same keyring file, clock and settings. Close its store when done.
    pub async fn replica(&self) -> (App, Store) {
        let opts = StoreOptions { max_connections: 8, pg_schema: self.schema.clone(), ..Default::default() };
        let store = Store::connect(&self.url, opts).await.unwrap();
        let app = App::new(store.clone(), self.keys.clone(), Arc::new(self.clock.clone()), self.app.config().clone());
        (app, store)
    }

    /// Close the store and drop the test's PostgreSQL schema.
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some(s) = &self.schema {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{s}\" CASCADE"))).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Run raw SQL against the test's database (for tampering tests); the rows it touched.
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

    /// As [`Harness::code`], for a device with parameters `p`.
    pub fn code_with(&self, secret: &str, p: TotpParams, steps: i64) -> String {
        code_with(secret, p, self.clock_now() + steps * i64::from(p.period()))
    }

    /// The clock's time.
    pub fn clock_now_dt(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// The clock's time in Unix seconds.
    pub fn clock_now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// The keyring as the app has it now.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keys.get()
    }
}

/// An app over the SQLite database and keyring that `tessera` commands made in `data` (its
/// data directory), reading time from `clock`: to check what the real binary did.
pub async fn app_over(data: &Path, clock: Arc<dyn Clock>) -> App {
    let url = format!("sqlite://{}", data.join("tessera.db").display());
    let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let (keys, _) = KeyringSource::from_file(&data.join("keyring"), false).unwrap();
    App::new(store, keys, clock, AppConfig::default())
}

/// One test body, `async fn NAME(h: &Harness)`, run against SQLite and against PostgreSQL:
/// `both!(NAME)` (default configuration) or `both!(NAME, config)` makes the tests
/// `NAME::sqlite` and `NAME::postgres`. The calling crate needs tokio's `macros` feature.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        $crate::both!($name, ::core::default::Default::default());
    };
    ($name:ident, $config:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let h = $crate::Harness::sqlite($config).await;
                super::$name(&h).await;
                h.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(h) = $crate::Harness::postgres($config).await {
                    super::$name(&h).await;
                    h.cleanup().await;
                }
            }
        }
    };
}
