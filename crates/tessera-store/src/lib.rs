//! Persistence for Tessera: one set of repositories over SQLite (the embedded default) and
//! PostgreSQL (production), through sqlx's `Any` driver, with per-backend migrations.
//!
//! Architecture invariants:
//! - every atomic guard is one statement: the replay guard (`last_used_step < $step`), the
//!   recovery-code redeem (`used_at IS NULL`), and the attempt gate (an upsert that refuses
//!   while locked), so two connections — or two replicas — can never both win;
//! - every multi-step change runs in one transaction (`BEGIN IMMEDIATE` on SQLite, so a
//!   read-then-write transaction never fails on a stale snapshot);
//! - this crate stores sealed bytes and MACs only; it never sees a key or a plaintext secret.
//!
//! Timestamps are stored as Unix milliseconds (`BIGINT`), ids as text, blobs as
//! `BLOB`/`BYTEA`: the types both backends share through `Any`.

mod attempts;
mod audit;
mod batch;
mod error;
mod factors;
mod identity;
mod keys;
mod recovery;

pub use attempts::{Acceptance, GateAccept, GateResult, PASSWORD, SECOND_FACTOR};
pub use audit::{AuditEvent, NewAuditEvent};
pub use error::StoreError;
pub use factors::{ConfirmOutcome, NewTotpFactor, SealedSecret, TotpDevice};
pub use identity::{MemberRow, MembershipRow, NewNotification, ResetReport, SessionRow, UserRow};
pub use keys::{KeyUsage, SealedRow};
pub use recovery::NewRecoveryCode;

use sqlx::{AnyConnection, AssertSqlSafe, Executor};
use sqlx::{AnyPool, any::AnyPoolOptions};
use std::time::Duration;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (WAL mode).
    Sqlite,
    /// PostgreSQL (or a compatible engine).
    Postgres,
}

impl Backend {
    /// Pick the backend from a database URL (`sqlite:` or `postgres://`).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Config("database URL must start with sqlite: or postgres://".into()))
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size.
    pub max_connections: u32,
    /// PostgreSQL only: use this schema (created if missing) instead of `public`. Tests give
    /// each test its own.
    pub pg_schema: Option<String>,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_connections: 16, pg_schema: None, acquire_timeout: Duration::from_secs(10) }
    }
}

/// The repositories. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads (and, on PostgreSQL, everything).
    pool: AnyPool,
    /// Writes. On SQLite, which admits one writer at a time, this is a pool of one
    /// connection: writers queue here asynchronously instead of sleeping in SQLite's busy
    /// handler (which backs off in milliseconds and ruins tail latency). On PostgreSQL it is
    /// the same pool as `pool`.
    writer: AnyPool,
    backend: Backend,
    /// SQLite: the group-commit task for the hot path's writes (see `batch`).
    batcher: Option<batch::Batcher>,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn valid_schema(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Store {
    /// Connect to `url` (a SQLite file is created if missing).
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if let Some(s) = opts.pg_schema.as_ref().filter(|s| !valid_schema(s)) {
            return Err(StoreError::Config(format!("schema name {s:?} must be a-z, 0-9, _")));
        }
        if let (Backend::Postgres, Some(s)) = (backend, &opts.pg_schema) {
            // Create the schema on one plain connection before the pool sets search_path to it.
            let mut c = <AnyConnection as sqlx::Connection>::connect(url).await?;
            c.execute(sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"")))).await?;
            sqlx::Connection::close(c).await?;
        }
        let url = sqlite_create_url(url);
        let pool = pool_options(backend, &opts, opts.max_connections).connect(&url).await?;
        let writer = match backend {
            Backend::Sqlite => pool_options(backend, &opts, 1).connect(&url).await?,
            Backend::Postgres => pool.clone(),
        };
        let batcher = (backend == Backend::Sqlite).then(|| batch::Batcher::spawn(writer.clone()));
        Ok(Self { pool, writer, backend, batcher })
    }

    /// Apply pending migrations (safe to run from several replicas at once on PostgreSQL,
    /// which takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&self.writer).await?,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Open and idle connections of the pool (for metrics).
    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Close the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Run one write in SQLite's next group-committed batch (see `batch`).
    async fn batch(&self, op: batch::Op) -> Result<batch::Done, StoreError> {
        match &self.batcher {
            Some(b) => b.submit(op).await,
            None => Err(StoreError::Config("no write batcher on this backend".into())),
        }
    }

    /// Begin a write transaction: `BEGIN IMMEDIATE` on SQLite (take the write lock up front,
    /// waiting under busy_timeout), `BEGIN` on PostgreSQL.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        })
    }
}

/// Pool settings, with the per-connection set-up of each backend.
fn pool_options(backend: Backend, opts: &StoreOptions, size: u32) -> AnyPoolOptions {
    let schema = opts.pg_schema.clone();
    AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(opts.acquire_timeout)
        // A ping before every acquire would double the round trips of every statement; a broken
        // connection surfaces as an error on use and is then discarded by the pool.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            let schema = schema.clone();
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        conn.execute(sqlx::raw_sql(
                            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                        ))
                        .await?;
                    }
                    Backend::Postgres => {
                        if let Some(s) = schema {
                            conn.execute(sqlx::query(AssertSqlSafe(format!("SET search_path TO \"{s}\"")))).await?;
                        }
                    }
                }
                Ok(())
            })
        })
}

/// SQLite URLs get `mode=rwc` so a missing file is created.
fn sqlite_create_url(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}
