//! The append-only audit trail.

use crate::exec::{Exec, args};
use crate::sql::AUDIT_INSERT;
pub use crate::sql::NewAuditEvent;
use crate::{Store, StoreError};
use rusqlite::named_params;
use tessera_core::clock::{from_millis, to_millis};
use time::OffsetDateTime;

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

/// Append `ev` ([`AUDIT_INSERT`]).
pub(crate) async fn insert(conn: &mut dyn Exec, ev: &NewAuditEvent) -> Result<(), StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        &AUDIT_INSERT,
        args![
            id.as_str(),
            to_millis(ev.at),
            &ev.subject_id,
            ev.factor_id.as_ref(),
            ev.actor.as_ref(),
            ev.kind.as_str(),
            ev.ip.as_ref(),
            ev.user_agent.as_ref(),
            &ev.detail
        ],
    )
    .await?;
    Ok(())
}

/// Append `ev` on the SQLite writer thread ([`AUDIT_INSERT`], bound by name).
pub(crate) fn insert_sqlite(conn: &rusqlite::Connection, ev: &NewAuditEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(&AUDIT_INSERT)?.execute(named_params! {
        "$1": uuid::Uuid::now_v7().to_string(),
        "$2": to_millis(ev.at),
        "$3": ev.subject_id,
        "$4": ev.factor_id,
        "$5": ev.actor,
        "$6": ev.kind.as_str(),
        "$7": ev.ip,
        "$8": ev.user_agent,
        "$9": ev.detail,
    })?;
    Ok(())
}

impl Store {
    /// Append one event on its own.
    pub async fn append_audit(&self, ev: &NewAuditEvent) -> Result<(), StoreError> {
        if let Some(b) = &self.batcher {
            let ev = ev.clone();
            return b.run(move |c| insert_sqlite(c, &ev).map(Ok)).await;
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
