//! Factors and their sealed TOTP secrets; the replay guard.

use crate::audit;
use crate::exec::{Exec, Lite, args};
use crate::recovery::{self, NewRecoveryCode};
use crate::sql::{
    self, DEVICE_COLUMNS, DEVICE_FROM, DeviceRow, FactorRow, NewAuditEvent, SECOND_FACTOR, SealedSecret, TotpDevice,
};
use crate::{Store, StoreError, attempts, sessions};
use std::future::Future;
use std::pin::Pin;
use tessera_core::clock::to_millis;
use tessera_core::factor::Factor;
use tessera_core::otp::TotpParams;
use time::OffsetDateTime;

/// A TOTP factor to insert, pending.
#[derive(Debug, Clone)]
pub struct NewTotpFactor {
    /// Factor id (UUID), also bound into the sealed secret's associated data.
    pub id: String,
    /// Owner.
    pub subject_id: String,
    /// Label.
    pub label: String,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// The sealed secret.
    pub sealed: SealedSecret,
    /// When.
    pub created_at: OffsetDateTime,
    /// The session that started it (pages); `None` for a service's enrolment over gRPC.
    pub session_id: Option<String>,
}

/// A pending device to activate (see [`FactorChange::activate_pending`]).
#[derive(Debug, Clone, Copy)]
pub struct Activation<'a> {
    /// The pending device.
    pub factor_id: &'a str,
    /// The session confirming it: it must be the one that started the device (`None`: a
    /// service over gRPC, which may confirm only what it enrolled).
    pub session_id: Option<&'a str>,
    /// Devices started at or before this instant have expired.
    pub pending_cutoff: OffsetDateTime,
    /// The owner session must have been seen after this instant (it is not idle).
    pub idle_cutoff: OffsetDateTime,
    /// Now.
    pub now: OffsetDateTime,
}

/// A change to one subject's factors, in one write transaction: rolled back if dropped
/// uncommitted. The store provides the steps, each one statement; the app decides which to
/// take, so the rules about factors ("the first active factor gets recovery codes", "without
/// an active factor the recovery codes are void") are written once, in `tessera-app`.
///
/// Begun with the subject's second-factor counters row locked (created if the subject has none:
/// a gRPC subject need not be a user), then the user row if there is one (PostgreSQL; SQLite has
/// one writer), so two changes to one subject's factors are serialised and each counts the
/// factors the other left. Counters, then user, then factor, then secret: the order every
/// transaction that touches them takes (the verification path takes counters, then secret).
pub struct FactorChange<'x> {
    exec: &'x mut dyn Exec,
    subject_id: String,
}

impl std::fmt::Debug for FactorChange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorChange").field("subject_id", &self.subject_id).finish_non_exhaustive()
    }
}

/// How a change ends: its result, and whether its steps are kept.
#[derive(Debug)]
pub enum Done<R> {
    /// Commit the steps.
    Commit(R),
    /// Undo every step (the change found it could not go on).
    Rollback(R),
}

/// What a change's closure returns (see [`Store::change_factors`]).
pub type ChangeFuture<'c, R, E> = Pin<Box<dyn Future<Output = Result<Done<R>, E>> + Send + 'c>>;

/// Which change: a confirmation also clears the subject's second-factor failures (kept only if
/// it commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A device's first code confirms it.
    Confirmation,
    /// Any other change.
    Other,
}

impl Store {
    /// Change `subject_id`'s factors: `f` takes the steps it decides on (each one statement,
    /// see [`FactorChange`]) and says whether to keep them. Its `Err` (or a store error it
    /// passes on) undoes them too.
    ///
    /// On SQLite the whole change is one job of the writer thread (inside a savepoint of its
    /// batch): `f`'s future is polled there once and every step is done at once, without a
    /// round trip per statement. So `f` must await nothing but its steps (a future that is not
    /// done after one poll is undone and fails) and must not use the store otherwise (a write
    /// queued from the writer thread fails). On PostgreSQL it is a transaction.
    pub async fn change_factors<R, E, F>(&self, subject_id: &str, kind: ChangeKind, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c, 'x> FnOnce(&'c mut FactorChange<'x>) -> ChangeFuture<'c, R, E> + Send + 'static,
    {
        let subject = subject_id.to_owned();
        if let Some(b) = &self.batcher {
            return b.run(move |conn| change_on_writer(conn, subject, kind, f)).await?;
        }
        let mut tx = self.begin().await?;
        let mut change = FactorChange { exec: &mut *tx, subject_id: subject };
        change.lock(kind).await?;
        crate::users::lock_user(change.exec, self.backend, subject_id).await?;
        match f(&mut change).await? {
            Done::Commit(r) => {
                tx.commit().await?;
                Ok(r)
            }
            Done::Rollback(r) => Ok(r),
        }
    }
}

/// SQLite: a factor change as one job of the writer thread, in a savepoint of its batch.
fn change_on_writer<R, E, F>(
    conn: &mut rusqlite::Connection,
    subject_id: String,
    kind: ChangeKind,
    f: F,
) -> crate::batch::Outcome<Result<R, E>>
where
    E: From<StoreError>,
    F: for<'c, 'x> FnOnce(&'c mut FactorChange<'x>) -> ChangeFuture<'c, R, E>,
{
    conn.execute_batch("SAVEPOINT factor_change")?;
    let result = {
        let mut lite = Lite(&mut *conn);
        let mut change = FactorChange { exec: &mut lite, subject_id };
        let mut fut = std::pin::pin!(async {
            change.lock(kind).await?;
            f(&mut change).await
        });
        match fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => {
                Err(E::from(StoreError::Batch("a factor change waited on something other than its steps".into())))
            }
        }
    };
    match result {
        Ok(Done::Commit(r)) => {
            conn.execute_batch("RELEASE factor_change")?;
            Ok(Ok(Ok(r)))
        }
        Ok(Done::Rollback(r)) => {
            conn.execute_batch("ROLLBACK TO factor_change; RELEASE factor_change")?;
            Ok(Ok(Ok(r)))
        }
        Err(e) => {
            // (If SQLite rolled the whole transaction back, this fails and so does the batch.)
            conn.execute_batch("ROLLBACK TO factor_change; RELEASE factor_change")?;
            Ok(Ok(Err(e)))
        }
    }
}

impl FactorChange<'_> {
    /// The first step: lock the subject's counters row (and clear it for a confirmation).
    async fn lock(&mut self, kind: ChangeKind) -> Result<(), StoreError> {
        match kind {
            ChangeKind::Confirmation => {
                self.exec.execute(&sql::LOCK_AND_CLEAR, args![self.subject_id.as_str(), SECOND_FACTOR]).await?;
                Ok(())
            }
            ChangeKind::Other => attempts::lock_row(self.exec, &self.subject_id, SECOND_FACTOR).await,
        }
    }

    /// Mark a pending device active — only if it is still pending, unexpired and started by
    /// the confirming session, which must still be live and not idle (a session revoked after
    /// the page was resolved must not finish its setup). `false` (nothing changed) otherwise.
    pub async fn activate_pending(&mut self, a: &Activation<'_>) -> Result<bool, StoreError> {
        let n = self
            .exec
            .execute(
                "UPDATE factors SET status = 'active', confirmed_at = $3, last_used_at = $3, session_id = NULL \
                 WHERE id = $1 AND subject_id = $2 AND status = 'pending' AND created_at > $4 \
                 AND COALESCE(session_id, '') = COALESCE($5, '') \
                 AND ($5 IS NULL OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = $5 AND s.user_id = $2 \
                      AND s.revoked_at IS NULL AND s.expires_at > $3 AND s.last_seen_at > $6))",
                args![
                    a.factor_id,
                    self.subject_id.as_str(),
                    to_millis(a.now),
                    to_millis(a.pending_cutoff),
                    a.session_id,
                    to_millis(a.idle_cutoff)
                ],
            )
            .await?;
        if n == 1 {
            // A factor added: every trusted browser of the subject must prove it again.
            crate::trust::void(self.exec, &self.subject_id).await?;
        }
        Ok(n == 1)
    }

    /// Record `step` as the last used time step of one of the subject's devices (used `now`);
    /// `false` if it (or a later one) was already used: the code is a replay (or the device is
    /// not the subject's).
    pub async fn use_step(&mut self, factor_id: &str, step: u64, now: OffsetDateTime) -> Result<bool, StoreError> {
        let n = self
            .exec
            .execute(
                &sql::OWNED_REPLAY_GUARD,
                args![factor_id, sql::step_i64(step), to_millis(now), self.subject_id.as_str()],
            )
            .await?;
        Ok(n == 1)
    }

    /// How many active factors the subject has, as this change sees them.
    pub async fn active_factors(&mut self) -> Result<u64, StoreError> {
        let n = self.exec.scalar(ACTIVE_COUNT, args![self.subject_id.as_str()]).await?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Delete a factor and its secret (`pending_only`: only if it is still a pending setup —
    /// decided in the deleting statement, so a setup confirmed meanwhile is not removed).
    /// `false` if there was no such factor.
    pub async fn delete_factor(&mut self, factor_id: &str, pending_only: bool) -> Result<bool, StoreError> {
        // The factor row first, then its secret: the order confirming locks them in.
        let n = self
            .exec
            .execute(
                "DELETE FROM factors WHERE id = $1 AND subject_id = $2 AND ($3 = 0 OR status = 'pending')",
                args![factor_id, self.subject_id.as_str(), i64::from(pending_only)],
            )
            .await?;
        if n != 1 {
            return Ok(false);
        }
        crate::trust::void(self.exec, &self.subject_id).await?;
        // (The foreign key's cascade has removed the secret with its row; this is a no-op then.)
        self.exec.execute("DELETE FROM totp_secrets WHERE factor_id = $1", args![factor_id]).await?;
        Ok(true)
    }

    /// Replace every recovery code of the subject by `codes`.
    pub async fn replace_recovery_codes(
        &mut self,
        codes: &[NewRecoveryCode],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        recovery::replace(self.exec, &self.subject_id, codes, now).await
    }

    /// Delete every recovery code of the subject.
    pub async fn void_recovery_codes(&mut self) -> Result<(), StoreError> {
        self.exec.execute("DELETE FROM recovery_codes WHERE subject_id = $1", args![self.subject_id.as_str()]).await?;
        Ok(())
    }

    /// Revoke every live session of the subject except `keep`; returns how many.
    pub async fn revoke_other_sessions(&mut self, keep: Option<&str>, now: OffsetDateTime) -> Result<u64, StoreError> {
        sessions::revoke_others(self.exec, &self.subject_id, keep, now).await
    }

    /// Give a live, not idle session of the subject a new token and level (see [`Rotation`]);
    /// `false` if it is no longer live.
    ///
    /// [`Rotation`]: crate::Rotation
    pub async fn rotate_session(
        &mut self,
        r: &sessions::Rotation<'_>,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if r.user_id != self.subject_id {
            return Ok(false);
        }
        sessions::rotate(self.exec, r, now, idle_cutoff).await
    }

    /// Insert a pending TOTP device with its sealed secret, unless the subject has
    /// `max_factors` TOTP devices already (`false`, nothing inserted). The subject's pending
    /// devices started at or before `pending_cutoff` (expired) are deleted first.
    pub(crate) async fn insert_pending_totp(
        &mut self,
        f: &NewTotpFactor,
        max_factors: u32,
        pending_cutoff: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (who, cutoff) = (f.subject_id.as_str(), to_millis(pending_cutoff));
        self.exec.execute(sql::PURGE_PENDING_SECRETS, args![who, cutoff]).await?;
        self.exec.execute(sql::PURGE_PENDING_FACTORS, args![who, cutoff]).await?;
        let n = self.exec.scalar(sql::COUNT_TOTP, args![who]).await?.unwrap_or(0);
        if n >= i64::from(max_factors) {
            return Ok(false);
        }
        self.exec
            .execute(
                sql::INSERT_PENDING_TOTP,
                args![&f.id, who, &f.label, to_millis(f.created_at), f.session_id.as_ref()],
            )
            .await?;
        self.exec
            .execute(
                sql::INSERT_TOTP_SECRET,
                args![
                    &f.id,
                    f.params.algorithm().as_str(),
                    i64::from(f.params.digits()),
                    i64::from(f.params.period()),
                    &f.sealed.key_id,
                    &f.sealed.nonce,
                    &f.sealed.ciphertext
                ],
            )
            .await?;
        Ok(true)
    }

    /// Append an audit event.
    pub async fn audit(&mut self, ev: &NewAuditEvent) -> Result<(), StoreError> {
        audit::insert(self.exec, ev).await
    }

    /// The change's executor (for the steps other modules add: `webauthn`).
    pub(crate) fn exec(&mut self) -> &mut dyn Exec {
        self.exec
    }

    /// The subject this change is about.
    pub(crate) fn subject(&self) -> &str {
        &self.subject_id
    }
}

/// How many active factors a subject has (`$1`).
const ACTIVE_COUNT: &str = "SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND status = 'active'";

impl Store {
    /// Insert a pending TOTP factor with its sealed secret, unless the subject already has
    /// `max_factors` factors (then `false`, nothing written). The subject's pending devices
    /// started at or before `pending_cutoff` (expired) are deleted first.
    pub async fn insert_totp_factor(
        &self,
        f: &NewTotpFactor,
        max_factors: u32,
        pending_cutoff: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        // A factor change (the counters row locked first), so two enrolments of one subject
        // cannot both pass the limit; on SQLite one job of the writer thread.
        let (f, audit) = (f.clone(), audit.clone());
        self.change_factors(&f.subject_id.clone(), ChangeKind::Other, move |c| {
            Box::pin(async move {
                if !c.insert_pending_totp(&f, max_factors, pending_cutoff).await? {
                    // (The purge of expired setups goes too: it is redone next time.)
                    return Ok(Done::Rollback(false));
                }
                c.audit(&audit).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// A subject's factors, oldest first, without pending devices started at or before
    /// `pending_cutoff` (expired).
    pub async fn list_factors(
        &self,
        subject_id: &str,
        pending_cutoff: OffsetDateTime,
    ) -> Result<Vec<Factor>, StoreError> {
        sqlx::query_as::<_, FactorRow>(
            "SELECT f.id, f.subject_id, f.kind, f.label, f.status, f.created_at, f.confirmed_at, \
             COALESCE(s.last_used_at, f.last_used_at) AS last_used_at, f.session_id, f.disabled_at \
             FROM factors f LEFT JOIN totp_secrets s ON s.factor_id = f.id WHERE f.subject_id = $1 \
             AND (f.status <> 'pending' OR f.created_at > $2) ORDER BY f.created_at, f.id",
        )
        .bind(subject_id)
        .bind(to_millis(pending_cutoff))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Factor::try_from)
        .collect()
    }

    /// One TOTP device of a subject (any status).
    pub async fn totp_device(&self, subject_id: &str, factor_id: &str) -> Result<Option<TotpDevice>, StoreError> {
        sqlx::query_as::<_, DeviceRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} {DEVICE_FROM} WHERE f.subject_id = $1 AND f.id = $2"
        )))
        .bind(subject_id)
        .bind(factor_id)
        .fetch_optional(&self.pool)
        .await?
        .map(TotpDevice::try_from)
        .transpose()
    }

    /// A subject's active TOTP devices.
    pub async fn active_totp_devices(&self, subject_id: &str) -> Result<Vec<TotpDevice>, StoreError> {
        sqlx::query_as::<_, DeviceRow>(sqlx::AssertSqlSafe(sql::ACTIVE_DEVICES.as_str()))
            .bind(subject_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(TotpDevice::try_from)
            .collect()
    }

    /// Take the subject's TOTP devices out of use (too many consecutive failures); returns how
    /// many were still in use. `audit` is appended only when some were.
    pub async fn disable_totp(
        &self,
        subject_id: &str,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        // The counters row first: the lock order of every change to a subject's devices (see
        // `verify`), whose version the change bumps (migration postgres 0011).
        attempts::lock_row(&mut tx, subject_id, SECOND_FACTOR).await?;
        let n = sqlx::query(
            "UPDATE factors SET disabled_at = $2 \
             WHERE subject_id = $1 AND kind = 'totp' AND status = 'active' AND disabled_at IS NULL",
        )
        .bind(subject_id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            // Someone may be guessing codes with the password: no browser stays trusted.
            crate::trust::void(&mut tx, subject_id).await?;
            audit::insert(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(n)
    }
}

impl Store {
    /// Whether the subject has at least one active factor.
    pub async fn has_active_factor(&self, subject_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND status = 'active'")
            .bind(subject_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tessera_core::factor::AuditKind;

    fn event(subject: &str) -> NewAuditEvent {
        NewAuditEvent {
            at: OffsetDateTime::UNIX_EPOCH,
            subject_id: subject.into(),
            factor_id: None,
            actor: None,
            kind: AuditKind::TotpEnrolled,
            ip: None,
            user_agent: None,
            detail: "{}".into(),
        }
    }

    async fn audit_rows(store: &Store, subject: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE subject_id = $1")
            .bind(subject)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    /// On SQLite a factor change is one job of the writer thread, in a savepoint of its batch:
    /// a change that ends in a rollback, an error (its own or an SQL error) or a wait on
    /// anything but its steps leaves nothing, and never takes the other jobs of its batch with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_factor_change_is_all_or_nothing_on_the_writer_thread() {
        let (_dir, _path, store) = crate::temp_sqlite().await;
        let change = |subject: &'static str, end: u8| {
            let s = store.clone();
            let s2 = store.clone();
            async move {
                s.change_factors(subject, ChangeKind::Other, move |c| {
                    Box::pin(async move {
                        c.audit(&event(subject)).await?;
                        match end {
                            0 => Ok(Done::Commit(())),
                            1 => Ok(Done::Rollback(())),
                            2 => Err(StoreError::Corrupt("the app said no".into())),
                            3 => {
                                // An SQL error after a step: the step goes too.
                                c.exec.execute("INSERT INTO no_such_table VALUES (1)", Vec::new()).await?;
                                Ok(Done::Commit(()))
                            }
                            4 => {
                                // Awaiting anything but a step (a future not ready at once)
                                // is refused.
                                let mut polled = false;
                                std::future::poll_fn(|_| {
                                    if polled {
                                        return std::task::Poll::Ready(());
                                    }
                                    polled = true;
                                    std::task::Poll::Pending
                                })
                                .await;
                                Ok(Done::Commit(()))
                            }
                            5 => {
                                // Using the store otherwise from inside the change is refused.
                                s2.append_audit(&event(subject)).await?;
                                Ok(Done::Commit(()))
                            }
                            _ => panic!("a bug in a change"),
                        }
                    })
                })
                .await
            }
        };
        // Many at once, so they share batches with the committing ones.
        let ends =
            [(0, "kept"), (1, "rolled"), (2, "refused"), (3, "broken"), (4, "waited"), (5, "queued"), (6, "panicked")];
        let mut tasks = Vec::new();
        for round in 0..20 {
            for (end, subject) in ends {
                let t = change(subject, end);
                tasks.push((round, end, tokio::spawn(t)));
            }
        }
        let mut kept = 0;
        for (_, end, t) in tasks {
            let r = t.await.unwrap();
            match end {
                // A panicking job fails its whole batch (a bug), so a change that shared it may
                // fail too; the writer lives on.
                0 => kept += i64::from(r.is_ok()),
                1 => assert!(r.is_ok() || matches!(r, Err(StoreError::Batch(_)))),
                2 => assert!(matches!(r, Err(StoreError::Corrupt(_)) | Err(StoreError::Batch(_)))),
                _ => assert!(r.is_err(), "end {end}"),
            }
        }
        assert_eq!(audit_rows(&store, "kept").await, kept, "every change answered as committed was kept");
        change("kept", 0).await.unwrap();
        assert_eq!(audit_rows(&store, "kept").await, kept + 1, "the writer survived the panics");
        for subject in ["rolled", "refused", "broken", "waited", "queued", "panicked"] {
            assert_eq!(audit_rows(&store, subject).await, 0, "{subject}: nothing left");
        }
        // Each change locked (created) the subject's counters row first; the undone ones did not.
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts").fetch_one(&store.pool).await.unwrap();
        assert_eq!(rows, 1);
    }
}
