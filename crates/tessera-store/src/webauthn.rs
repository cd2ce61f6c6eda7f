//! WebAuthn credentials (security keys and passkeys) and the ceremonies in flight.
//!
//! A credential is a factor row (kind `security_key` or `passkey`, active from the start: the
//! registration ceremony proved it) and a `webauthn_credentials` row holding the relying-party
//! library's stored form. Nothing here is secret (a public key, a counter, flags), so nothing is
//! sealed; the signature counter's forward-only rule is a guard in one statement.
//!
//! A ceremony is the library's state between "begin" (the options sent to the browser) and
//! "finish" (its answer). It lives in the database, so any replica can finish a ceremony
//! another began, and is taken by the statement that deletes it: used once, whatever the
//! concurrency, and only within its lifetime and by what began it (`bound_to`).

use crate::audit::{self, NewAuditEvent};
use crate::exec::args;
use crate::factors::FactorChange;
use crate::sql::FactorRow;
use crate::{Store, StoreError};
use tessera_core::clock::to_millis;
use tessera_core::factor::{Factor, FactorKind};
use time::OffsetDateTime;

/// A credential to register (an active factor of `kind`).
#[derive(Debug, Clone)]
pub struct NewWebauthnCredential {
    /// Factor id (UUID).
    pub factor_id: String,
    /// `SecurityKey` or `Passkey`.
    pub kind: FactorKind,
    /// User-chosen name.
    pub label: String,
    /// The credential id the authenticator chose (unique across every subject).
    pub credential_id: Vec<u8>,
    /// The relying-party library's stored form (JSON).
    pub credential: String,
    /// The signature counter at registration.
    pub sign_count: u32,
    /// Transports the browser reported, comma-separated (`usb,nfc`, `internal`…).
    pub transports: String,
    /// Whether the credential may be synchronised (a multi-device passkey).
    pub backup_eligible: bool,
    /// Whether it is backed up now.
    pub backup_state: bool,
    /// The authenticator model's AAGUID, when the authenticator gave one.
    pub aaguid: Option<String>,
    /// Whether the authenticator verified the user (PIN, biometrics) at registration.
    pub user_verified: bool,
    /// When.
    pub created_at: OffsetDateTime,
}

/// What [`FactorChange::insert_webauthn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebauthnInsert {
    /// Registered.
    Inserted,
    /// The subject already has the most credentials allowed: nothing written.
    LimitReached,
    /// This credential is registered already (to this subject or another): nothing written.
    AlreadyRegistered,
    /// The session that began the registration is no longer live (signed out, revoked,
    /// expired or idle): nothing written.
    SessionGone,
}

/// The session registering a credential, which must still be live when the credential is
/// written (see [`FactorChange::insert_webauthn`]).
#[derive(Debug, Clone, Copy)]
pub struct LiveSession<'a> {
    /// The session id.
    pub id: &'a str,
    /// Now.
    pub now: OffsetDateTime,
    /// It must have been seen after this instant (not idle).
    pub idle_cutoff: OffsetDateTime,
}

/// A registered credential of a subject, with its factor.
#[derive(Debug, Clone)]
pub struct WebauthnCredential {
    /// The factor (kind `SecurityKey` or `Passkey`).
    pub factor: Factor,
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The relying-party library's stored form (JSON).
    pub credential: String,
    /// The signature counter last recorded.
    pub sign_count: u32,
    /// Transports, comma-separated.
    pub transports: String,
    /// Whether the credential may be synchronised.
    pub backup_eligible: bool,
    /// AAGUID, if known.
    pub aaguid: Option<String>,
}

/// What recording an accepted assertion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebauthnUse {
    /// Recorded (counter moved forward, or the authenticator keeps none).
    Recorded,
    /// Another assertion recorded a counter at least as high meanwhile: two authenticators
    /// hold this credential (a clone). Nothing written.
    CounterRegressed,
    /// The factor was removed (or taken out of use) meanwhile. Nothing written.
    Gone,
}

/// A ceremony to keep until its answer comes.
#[derive(Debug, Clone)]
pub struct NewCeremony {
    /// Random, unguessable id (the browser sends it back with the answer).
    pub id: String,
    /// `register`, `second_factor`, `reauth`, `passkey_login` or `verify`.
    pub purpose: &'static str,
    /// Whose ceremony (none for a passkey sign-in: the answer says whose).
    pub subject_id: Option<String>,
    /// What began it and alone may finish it: a session id, a login challenge's hash, a
    /// subject; `None` for a passkey sign-in.
    pub bound_to: Option<String>,
    /// The relying-party library's state (JSON).
    pub state: String,
    /// What the finish needs besides the state (JSON): a registration's name and kind.
    pub detail: String,
    /// Now.
    pub created_at: OffsetDateTime,
    /// The answer must come before this.
    pub expires_at: OffsetDateTime,
}

/// A ceremony taken (and so deleted).
#[derive(Debug, Clone)]
pub struct Ceremony {
    /// Whose ceremony.
    pub subject_id: Option<String>,
    /// The relying-party library's state (JSON).
    pub state: String,
    /// See [`NewCeremony::detail`].
    pub detail: String,
}

const CREDENTIAL_SELECT: &str = "SELECT f.id, f.subject_id, f.kind, f.label, f.status, f.created_at, f.confirmed_at, \
    f.last_used_at, f.session_id, f.disabled_at, w.credential_id, w.credential, w.sign_count, w.transports, \
    w.backup_eligible, w.aaguid \
    FROM factors f JOIN webauthn_credentials w ON w.factor_id = f.id";

#[derive(sqlx::FromRow)]
struct CredentialRow {
    #[sqlx(flatten)]
    factor: FactorRow,
    credential_id: Vec<u8>,
    credential: String,
    sign_count: i64,
    transports: String,
    backup_eligible: i64,
    aaguid: Option<String>,
}

impl TryFrom<CredentialRow> for WebauthnCredential {
    type Error = StoreError;
    fn try_from(r: CredentialRow) -> Result<Self, StoreError> {
        Ok(Self {
            factor: Factor::try_from(r.factor)?,
            credential_id: r.credential_id,
            credential: r.credential,
            sign_count: u32::try_from(r.sign_count)
                .map_err(|_| StoreError::Corrupt(format!("sign count {}", r.sign_count)))?,
            transports: r.transports,
            backup_eligible: r.backup_eligible != 0,
            aaguid: r.aaguid,
        })
    }
}

impl FactorChange<'_> {
    /// Register a credential as an active factor of the subject, unless the subject already
    /// has `max` WebAuthn credentials, the credential is registered already, or `session`
    /// (the one registering it, on the pages) is no longer live: a session revoked after its
    /// request was resolved must not finish adding a factor (checked in this transaction, as
    /// an authenticator app's confirmation checks it).
    pub async fn insert_webauthn(
        &mut self,
        c: &NewWebauthnCredential,
        max: u32,
        session: Option<LiveSession<'_>>,
    ) -> Result<WebauthnInsert, StoreError> {
        let subject = self.subject().to_owned();
        if let Some(s) = session {
            let live = self
                .exec()
                .scalar(
                    "SELECT COUNT(*) FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
                     AND expires_at > $3 AND last_seen_at > $4",
                    args![s.id, &subject, to_millis(s.now), to_millis(s.idle_cutoff)],
                )
                .await?
                .unwrap_or(0);
            if live != 1 {
                return Ok(WebauthnInsert::SessionGone);
            }
        }
        let n = self
            .exec()
            .scalar(
                "SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND kind IN ('security_key', 'passkey')",
                args![&subject],
            )
            .await?
            .unwrap_or(0);
        if n >= i64::from(max) {
            return Ok(WebauthnInsert::LimitReached);
        }
        let taken = self
            .exec()
            .scalar("SELECT COUNT(*) FROM webauthn_credentials WHERE credential_id = $1", args![&c.credential_id])
            .await?
            .unwrap_or(0);
        if taken > 0 {
            return Ok(WebauthnInsert::AlreadyRegistered);
        }
        self.exec()
            .execute(
                "INSERT INTO factors (id, subject_id, kind, label, status, created_at, confirmed_at) \
                 VALUES ($1, $2, $3, $4, 'active', $5, $5)",
                args![&c.factor_id, &subject, c.kind.as_str(), &c.label, to_millis(c.created_at)],
            )
            .await?;
        // (Two subjects registering one credential at once: the unique index refuses the second.)
        self.exec()
            .execute(
                "INSERT INTO webauthn_credentials (factor_id, credential_id, credential, sign_count, transports, \
                 backup_eligible, backup_state, aaguid, user_verified) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![
                    &c.factor_id,
                    &c.credential_id,
                    &c.credential,
                    i64::from(c.sign_count),
                    &c.transports,
                    i64::from(c.backup_eligible),
                    i64::from(c.backup_state),
                    c.aaguid.as_ref(),
                    i64::from(c.user_verified)
                ],
            )
            .await?;
        crate::trust::void(self.exec(), &subject).await?;
        Ok(WebauthnInsert::Inserted)
    }
}

impl Store {
    /// Keep a ceremony until its answer comes; ceremonies past their lifetime are deleted.
    pub async fn put_ceremony(&self, c: &NewCeremony) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
            .bind(to_millis(c.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO webauthn_ceremonies (id, purpose, subject_id, bound_to, state, detail, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(c.purpose)
        .bind(&c.subject_id)
        .bind(&c.bound_to)
        .bind(&c.state)
        .bind(&c.detail)
        .bind(to_millis(c.created_at))
        .bind(to_millis(c.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Take (delete and return) the ceremony `id` of `purpose` begun by `bound_to`, if it has
    /// not expired. One statement: of two answers to one ceremony, on any replicas, one gets
    /// it. A ceremony of another purpose or begun by someone else is left alone.
    pub async fn take_ceremony(
        &self,
        id: &str,
        purpose: &str,
        bound_to: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Option<Ceremony>, StoreError> {
        let mut conn = self.write().await?;
        let row: Option<(Option<String>, String, String)> = sqlx::query_as(
            "DELETE FROM webauthn_ceremonies WHERE id = $1 AND purpose = $2 \
             AND COALESCE(bound_to, '') = COALESCE($3, '') AND expires_at > $4 \
             RETURNING subject_id, state, detail",
        )
        .bind(id)
        .bind(purpose)
        .bind(bound_to)
        .bind(to_millis(now))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|(subject_id, state, detail)| Ceremony { subject_id, state, detail }))
    }

    /// The subject's WebAuthn credentials in use (active, not disabled), oldest first.
    pub async fn webauthn_credentials(&self, subject_id: &str) -> Result<Vec<WebauthnCredential>, StoreError> {
        sqlx::query_as::<_, CredentialRow>(sqlx::AssertSqlSafe(format!(
            "{CREDENTIAL_SELECT} WHERE f.subject_id = $1 AND f.status = 'active' AND f.disabled_at IS NULL \
             ORDER BY f.created_at, f.id"
        )))
        .bind(subject_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(WebauthnCredential::try_from)
        .collect()
    }

    /// The credential with this credential id, whoever holds it (in use only).
    pub async fn webauthn_credential(&self, credential_id: &[u8]) -> Result<Option<WebauthnCredential>, StoreError> {
        sqlx::query_as::<_, CredentialRow>(sqlx::AssertSqlSafe(format!(
            "{CREDENTIAL_SELECT} WHERE w.credential_id = $1 AND f.status = 'active' AND f.disabled_at IS NULL"
        )))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await?
        .map(WebauthnCredential::try_from)
        .transpose()
    }

    /// Take a credential out of use (a possible clone), appending `audit`; `false` if it was
    /// not in use.
    pub async fn disable_webauthn(
        &self,
        factor_id: &str,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE factors SET disabled_at = $2 WHERE id = $1 AND kind IN ('security_key', 'passkey') \
             AND disabled_at IS NULL",
        )
        .bind(factor_id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A browser trusted with a copy of this credential must not outlive its discovery.
        let owner: Option<String> = sqlx::query_scalar("SELECT subject_id FROM factors WHERE id = $1")
            .bind(factor_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(owner) = owner {
            crate::trust::void(&mut tx, &owner).await?;
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Record an accepted assertion: the credential's new stored form and counter, the
    /// factor's last use, and `audit`, in one transaction. The counter guard is one
    /// statement: it moves only forward (or stays 0 for an authenticator that keeps none), so
    /// of two assertions with one counter value — a cloned credential — one is refused.
    pub async fn record_webauthn_use(
        &self,
        factor_id: &str,
        credential: &str,
        sign_count: u32,
        backup_state: bool,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<WebauthnUse, StoreError> {
        let mut tx = self.begin().await?;
        let live = sqlx::query(
            "UPDATE factors SET last_used_at = $2 WHERE id = $1 AND status = 'active' AND disabled_at IS NULL",
        )
        .bind(factor_id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if live != 1 {
            return Ok(WebauthnUse::Gone);
        }
        let n = sqlx::query(
            "UPDATE webauthn_credentials SET credential = $2, sign_count = $3, backup_state = $4 \
             WHERE factor_id = $1 AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))",
        )
        .bind(factor_id)
        .bind(credential)
        .bind(i64::from(sign_count))
        .bind(i64::from(backup_state))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(WebauthnUse::CounterRegressed);
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(WebauthnUse::Recorded)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use crate::{Store, StoreOptions};

    fn ceremony(id: &str, now: time::OffsetDateTime) -> crate::NewCeremony {
        crate::NewCeremony {
            id: id.into(),
            purpose: "verify",
            subject_id: Some("s1".into()),
            bound_to: Some("subject:s1".into()),
            state: "{}".into(),
            detail: "{}".into(),
            created_at: now,
            expires_at: now + time::Duration::minutes(5),
        }
    }

    /// Of many concurrent takes of one ceremony, exactly one gets it; a wrong binding or
    /// purpose gets nothing and leaves it; an expired one is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_ceremony_is_taken_once() {
        let (_dir, _path, store) = crate::temp_sqlite().await;
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        store.put_ceremony(&ceremony("c1", now)).await.unwrap();
        assert!(store.take_ceremony("c1", "verify", Some("subject:s2"), now).await.unwrap().is_none());
        assert!(store.take_ceremony("c1", "reauth", Some("subject:s1"), now).await.unwrap().is_none());
        let takes = (0..16).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_ceremony("c1", "verify", Some("subject:s1"), now).await.unwrap() })
        });
        let mut won = 0;
        for t in takes {
            won += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(won, 1);
        store.put_ceremony(&ceremony("c2", now)).await.unwrap();
        let later = now + time::Duration::minutes(5);
        assert!(store.take_ceremony("c2", "verify", Some("subject:s1"), later).await.unwrap().is_none(), "expired");
    }

    /// The counter guard: an authenticator that keeps no counter (0) is accepted again and
    /// again; once a counter was seen, 0 or anything not above it is refused.
    #[tokio::test]
    async fn the_counter_only_moves_forward() {
        use crate::{NewWebauthnCredential, WebauthnInsert, WebauthnUse};
        use tessera_core::factor::{AuditKind, FactorKind};
        let (_dir, _path, store) = crate::temp_sqlite().await;
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let cred = |id: &str, cid: u8| NewWebauthnCredential {
            factor_id: id.into(),
            kind: FactorKind::SecurityKey,
            label: "k".into(),
            credential_id: vec![cid],
            credential: "{}".into(),
            sign_count: 0,
            transports: String::new(),
            backup_eligible: false,
            backup_state: false,
            aaguid: None,
            user_verified: false,
            created_at: now,
        };
        let (c1, c2) = (cred("f1", 1), cred("f2", 1));
        let (first, second) = store
            .change_factors("s1", crate::ChangeKind::Other, move |change| {
                Box::pin(async move {
                    let first = change.insert_webauthn(&c1, 20, None).await?;
                    let second = change.insert_webauthn(&c2, 20, None).await?;
                    Ok::<_, crate::StoreError>(crate::Done::Commit((first, second)))
                })
            })
            .await
            .unwrap();
        assert_eq!((first, second), (WebauthnInsert::Inserted, WebauthnInsert::AlreadyRegistered));
        let ev = crate::NewAuditEvent {
            at: now,
            subject_id: "s1".into(),
            factor_id: None,
            actor: None,
            kind: AuditKind::WebauthnVerified,
            ip: None,
            user_agent: None,
            detail: "{}".into(),
        };
        let used = |n: u32| {
            let store = store.clone();
            let ev = ev.clone();
            async move { store.record_webauthn_use("f1", "{}", n, false, now, &ev).await.unwrap() }
        };
        assert_eq!(used(0).await, WebauthnUse::Recorded);
        assert_eq!(used(0).await, WebauthnUse::Recorded, "no counter: 0 again is fine");
        assert_eq!(used(5).await, WebauthnUse::Recorded);
        assert_eq!(used(5).await, WebauthnUse::CounterRegressed);
        assert_eq!(used(3).await, WebauthnUse::CounterRegressed);
        assert_eq!(used(0).await, WebauthnUse::CounterRegressed, "0 after a counter was seen");
        assert_eq!(used(6).await, WebauthnUse::Recorded);
        assert!(store.disable_webauthn("f1", now, &ev).await.unwrap());
        assert_eq!(used(7).await, WebauthnUse::Gone, "a disabled credential is out of use");
    }

    /// SQLite's migration 0009 rebuilds `factors` and `totp_secrets`: a database from before
    /// keeps every device, its secret and replay guard, and the rebuilt tables keep their rules
    /// (the new kinds, the cascade); the accept trigger went later (0012).
    #[tokio::test]
    async fn the_sqlite_rebuild_keeps_every_device() {
        let dir = tempfile::tempdir().unwrap();
        // The migrations before this change, applied as an older release did.
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().as_ref() < "0009" {
                std::fs::copy(e.path(), old.join(e.file_name())).unwrap();
            }
        }
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
        for sql in [
            "PRAGMA foreign_keys = ON",
            "INSERT INTO factors (id, subject_id, kind, label, status, created_at, confirmed_at, last_used_at, session_id, disabled_at) \
             VALUES ('f1', 's1', 'totp', 'Phone', 'active', 1, 2, 3, NULL, NULL)",
            "INSERT INTO totp_secrets (factor_id, algorithm, digits, period, key_id, nonce, ciphertext, last_used_step, last_used_at) \
             VALUES ('f1', 'SHA1', 6, 30, 'k1', x'01', x'02', 42, 5)",
            "INSERT INTO attempts (subject_id, kind, consecutive_failures, lock_count, total_failures) VALUES ('s1', 'second_factor', 3, 1, 3)",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let devices = store.active_totp_devices("s1").await.unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!((devices[0].last_used_step, devices[0].sealed.key_id.as_str()), (Some(42), "k1"));
        assert_eq!(devices[0].factor.last_used_at.map(|t| t.unix_timestamp_nanos() / 1_000_000), Some(5));
        drop(store);

        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let mut c = pool.acquire().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *c).await.unwrap();
        // The accept trigger is gone (0012): the reset is the writer's own statement now, so a
        // bare use of a step leaves the counters as they were.
        sqlx::query("UPDATE totp_secrets SET last_used_step = 43, last_used_at = 6 WHERE factor_id = 'f1'")
            .execute(&mut *c)
            .await
            .unwrap();
        let failures: i64 = sqlx::query_scalar("SELECT consecutive_failures FROM attempts WHERE subject_id = 's1'")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(failures, 3);
        // The new kinds are allowed, others are not.
        for (kind, ok) in [("security_key", true), ("passkey", true), ("sms", false)] {
            let r = sqlx::query(
                "INSERT INTO factors (id, subject_id, kind, label, status, created_at) VALUES ($1, 's1', $2, 'k', 'active', 1)",
            )
            .bind(format!("id-{kind}"))
            .bind(kind)
            .execute(&mut *c)
            .await;
            assert_eq!(r.is_ok(), ok, "{kind}");
        }
        // The secret still goes with its factor, and so does a credential.
        sqlx::query(
            "INSERT INTO webauthn_credentials (factor_id, credential_id, credential, sign_count, backup_eligible, backup_state, user_verified) \
             VALUES ('id-passkey', x'0102', '{}', 0, 0, 0, 1)",
        )
        .execute(&mut *c)
        .await
        .unwrap();
        sqlx::query("DELETE FROM factors WHERE id IN ('f1', 'id-passkey')").execute(&mut *c).await.unwrap();
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM totp_secrets) + (SELECT COUNT(*) FROM webauthn_credentials)",
        )
        .fetch_one(&mut *c)
        .await
        .unwrap();
        assert_eq!(left, 0);
    }
}
