//! The store's error type.

/// What can go wrong in the store. `Database` messages may name tables but never hold a
/// secret: no secret is ever bound as text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds a value the domain does not know (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Bad connection settings.
    #[error("store configuration: {0}")]
    Config(String),
    /// A batch of writes (SQLite group commit) failed and was rolled back as a whole.
    #[error("database error (batched write): {0}")]
    Batch(String),
    /// A write kept meeting concurrent changes and gave up; nothing was written. Retrying
    /// later is safe.
    #[error("busy: {0}")]
    Busy(String),
}
