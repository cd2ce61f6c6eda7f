//! The append-only audit trail.

use crate::{Store, StoreError};
use sqlx::AnyConnection;
use tessera_core::clock::{from_millis, to_millis};
use tessera_core::factor::AuditKind;
use time::OffsetDateTime;

/// An event to append. `detail` is a JSON object (the app builds it; never a secret).
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// When.
    pub at: OffsetDateTime,
    /// Whose factors.
    pub subject_id: String,
    /// Which factor, if one.
    pub factor_id: Option<String>,
    /// Who acted, when not the subject (a support agent, an operator's CLI).
    pub actor: Option<String>,
    /// What happened.
    pub kind: AuditKind,
    /// Client IP, when the caller passed it.
    pub ip: Option<String>,
    /// Client user agent, when the caller passed it.
    pub user_agent: Option<String>,
    /// JSON object with details.
    pub detail: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    /// UUIDv7: time-ordered; also the page cursor.
    pub id: String,
    /// Unix milliseconds (see [`AuditEvent::at`]).
    pub at_ms: i64,
    /// Whose factors.
    pub subject_id: String,
    /// Which factor.
    pub factor_id: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// Kind name (see `AuditKind::as_str`).
    pub kind: String,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// JSON object.
    pub detail: String,
}

impl AuditEvent {
    /// When it happened.
    pub fn at(&self) -> OffsetDateTime {
        from_millis(self.at_ms)
    }
}

/// The insert (`$1`… in column order); also run by the SQLite writer thread (`batch`).
pub(crate) const INSERT: &str = "INSERT INTO audit_events (id, at, subject_id, factor_id, actor, kind, ip, user_agent, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

pub(crate) async fn insert(conn: &mut AnyConnection, ev: &NewAuditEvent) -> Result<(), StoreError> {
    sqlx::query(INSERT)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(to_millis(ev.at))
        .bind(&ev.subject_id)
        .bind(&ev.factor_id)
        .bind(&ev.actor)
        .bind(ev.kind.as_str())
        .bind(&ev.ip)
        .bind(&ev.user_agent)
        .bind(&ev.detail)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Append one event on its own.
    pub async fn append_audit(&self, ev: &NewAuditEvent) -> Result<(), StoreError> {
        if self.backend == crate::Backend::Sqlite {
            self.batch(crate::batch::Op::Audit(ev.clone())).await?;
            return Ok(());
        }
        let mut c = self.write().await?;
        insert(&mut c, ev).await
    }

    /// A subject's events, newest first, `limit` at most, strictly older than the event
    /// `before` (the page cursor) when given.
    pub async fn list_audit(
        &self,
        subject_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(sqlx::query_as::<_, AuditEvent>(
            "SELECT id, at AS at_ms, subject_id, factor_id, actor, kind, ip, user_agent, detail \
             FROM audit_events WHERE subject_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(subject_id)
        .bind(before.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}
