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

mod accounts;
mod attempts;
mod audit;
mod batch;
mod checkpoint;
mod error;
mod exec;
mod factors;
mod keys;
mod mail_tokens;
mod outbox;
mod recovery;
mod sessions;
mod sql;
mod trust;
mod users;
mod verify;
mod webauthn;

pub use accounts::{
    Acceptance as InvitationAcceptance, InvitationMails, InvitationRow, MemberChangeError, MemberRow, MembershipRow,
    NewInvitation,
};
pub use attempts::GateResult;
pub use audit::AuditEvent;
pub use error::StoreError;
pub use factors::{Activation, ChangeFuture, ChangeKind, Done, FactorChange, NewTotpFactor};
pub use keys::{KeyUsage, SealedRow};
pub use mail_tokens::{
    EMAIL_CHANGE, EMAIL_VERIFICATION, EmailChange, NewMailToken, PASSWORD_RESET, PasswordChange, PasswordReset,
};
pub use outbox::{NewNotification, QueuedMail};
pub use recovery::NewRecoveryCode;
pub use sessions::{BrowserSeen, NewSession, PasswordSession, Rotation, SessionRow};
pub use sql::{Acceptance, NewAuditEvent, PASSWORD, SECOND_FACTOR, SealedSecret, TotpDevice};
pub use trust::{NewTrust, TrustRow};
pub use users::{NewUser, ResetReport, UserRow};
pub use verify::{GateAccept, Verified};
pub use webauthn::{
    Ceremony, LiveSession, NewCeremony, NewWebauthnCredential, WebauthnCredential, WebauthnInsert, WebauthnUse,
};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Executor};
use sqlx::{AnyPool, any::AnyPoolOptions};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

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
    /// PostgreSQL only: how many subjects' sealed TOTP devices a replica keeps in memory for
    /// verifications (see `verify`); 0 keeps none.
    pub device_cache: usize,
}

/// The default of [`StoreOptions::device_cache`]: a few MB at most.
pub const DEFAULT_DEVICE_CACHE: usize = 10_000;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            pg_schema: None,
            acquire_timeout: Duration::from_secs(10),
            device_cache: DEFAULT_DEVICE_CACHE,
        }
    }
}

/// The repositories. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads (and, on PostgreSQL, everything).
    pool: AnyPool,
    /// Writes. On SQLite, which admits one writer at a time, this is a pool of one
    /// connection, used only while holding `turn`. On PostgreSQL it is the same pool as
    /// `pool`.
    writer: AnyPool,
    backend: Backend,
    /// SQLite: the group-commit thread for the hot path's writes (see `batch`).
    batcher: Option<batch::Batcher>,
    /// SQLite: the one write turn, shared by `writer` and the batch thread (its own
    /// connection). Writers queue here, fairly and asynchronously, instead of sleeping in
    /// SQLite's busy handler (which backs off in milliseconds, ruins tail latency and can
    /// starve a writer that keeps losing the race).
    turn: Option<Arc<Mutex<()>>>,
    /// PostgreSQL: the subjects' sealed devices (see `verify`); empty on SQLite.
    devices: Arc<verify::DeviceCache>,
}

/// A writer connection or transaction, held with the write turn (SQLite); it derefs to the
/// connection.
pub(crate) struct Turned<C> {
    conn: C,
    _turn: Option<OwnedMutexGuard<()>>,
}

/// A connection of the writer pool, for one autocommitted write.
pub(crate) type Writing = Turned<PoolConnection<Any>>;
/// A write transaction; rolled back if dropped uncommitted.
pub(crate) type WriteTx = Turned<sqlx::Transaction<'static, Any>>;

impl WriteTx {
    /// Commit, then give up the turn.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.conn.commit().await?;
        Ok(())
    }
}

impl<C: Deref<Target = AnyConnection>> Deref for Turned<C> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl<C: DerefMut<Target = AnyConnection>> DerefMut for Turned<C> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
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
        let (writer, batcher, turn) = match backend {
            Backend::Sqlite => {
                let writer = pool_options(backend, &opts, 1).connect(&url).await?;
                // The batch thread opens the same file: ask SQLite which one the URL named.
                let file: String = sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .fetch_one(&writer)
                    .await?;
                if file.is_empty() {
                    return Err(StoreError::Config("SQLite needs a database file (in-memory is not supported)".into()));
                }
                let turn = Arc::new(Mutex::new(()));
                let batcher = batch::Batcher::spawn(std::path::Path::new(&file), turn.clone())?;
                (writer, Some(batcher), Some(turn))
            }
            Backend::Postgres => (pool.clone(), None, None),
        };
        let cached = if backend == Backend::Postgres { opts.device_cache } else { 0 };
        Ok(Self { pool, writer, backend, batcher, turn, devices: Arc::new(verify::DeviceCache::new(cached)) })
    }

    /// Apply pending migrations (safe to run from several replicas at once on PostgreSQL,
    /// which takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&mut *self.write().await?).await?,
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
        // SQLite: the writer thread finishes what it was given, then it and the checkpoint
        // thread close their connections; the last connection to close checkpoints the WAL
        // and deletes it, so a restart does not replay it.
        if let Some(b) = &self.batcher {
            b.stop().await;
        }
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Wait for the write turn (SQLite; PostgreSQL has none).
    async fn take_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.turn {
            Some(t) => Some(t.clone().lock_owned().await),
            None => None,
        }
    }

    /// A writer connection, for one autocommitted write (with the write turn on SQLite).
    pub(crate) async fn write(&self) -> Result<Writing, StoreError> {
        let turn = self.take_turn().await;
        Ok(Turned { conn: self.writer.acquire().await?, _turn: turn })
    }

    /// Begin a write transaction: on SQLite, take the write turn, then `BEGIN IMMEDIATE`
    /// (take the write lock up front, so a read-then-write transaction never fails on a stale
    /// snapshot); `BEGIN` on PostgreSQL.
    pub(crate) async fn begin(&self) -> Result<WriteTx, StoreError> {
        let turn = self.take_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        };
        Ok(Turned { conn: tx, _turn: turn })
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
                        // No connection checkpoints on commit: the checkpoint thread does
                        // (see `checkpoint`).
                        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {};",
                            checkpoint::WAL_SIZE_LIMIT
                        ))))
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

/// A store on a fresh SQLite file (tests of this crate): the directory, the file, the store.
#[cfg(test)]
pub(crate) async fn temp_sqlite() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()), StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    (dir, path, store)
}
