//! Factor use cases: enrol and confirm a TOTP device, verify codes, recovery codes, list,
//! remove, and the audit trail.

use crate::{App, AppError, ClientContext, KeyringSource};
use serde_json::json;
use tessera_core::factor::{AuditKind, Factor, FactorStatus};
use tessera_core::otp::{self, Algorithm, Code, Secret, TotpParams};
use tessera_core::recovery::RecoveryCode;
use tessera_core::seal::{Aad, KeyId, Keyring, Sealed};
use tessera_core::throttle::Gate;
use tessera_core::{CoreError, otpauth, qr, validate};
use tessera_store::{
    Acceptance, Activation, AuditEvent, ChangeKind, Done, GateAccept, GateResult, NewAuditEvent, NewRecoveryCode,
    NewTotpFactor, Rotation, SECOND_FACTOR, SealedSecret, TotpDevice,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Purpose bound into a TOTP secret's associated data.
pub(crate) const TOTP_PURPOSE: &str = "totp-secret";
/// Format version of a sealed TOTP secret (raw secret bytes).
pub(crate) const TOTP_FORMAT: u8 = 1;

/// The result of a code check. Malformed input is an [`AppError`], never an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The code was good and is now used up.
    Accepted {
        /// The factor that matched (for a recovery code: none).
        factor_id: Option<String>,
    },
    /// The code was wrong (or already used); this many attempts remain before a lock.
    Rejected {
        /// Attempts left.
        attempts_remaining: u32,
    },
    /// Too many failures: no code is checked until then.
    Locked {
        /// End of the lock.
        until: OffsetDateTime,
    },
}

/// What to enrol.
#[derive(Debug, Clone, Default)]
pub struct EnrollRequest {
    /// Owner.
    pub subject_id: String,
    /// Device label, e.g. "Work phone".
    pub label: String,
    /// Account name shown in the app, e.g. the user's email.
    pub account_name: String,
    /// Algorithm (default SHA1: what every app supports).
    pub algorithm: Option<Algorithm>,
    /// 6 (default) or 8.
    pub digits: Option<u32>,
    /// 30 (default) or 60.
    pub period: Option<u32>,
    /// Leave [`Enrollment::qr_png`] and [`Enrollment::qr_svg`] empty (a caller that draws its
    /// own QR code from the URI): rendering them is most of an enrolment's CPU time.
    pub omit_qr: bool,
}

/// A pending device and what the user needs to add it to their app. Holds the secret:
/// show it once, never log it.
pub struct Enrollment {
    /// The new factor's id.
    pub factor_id: String,
    /// `otpauth://totp/…`.
    pub otpauth_uri: Zeroizing<String>,
    /// The secret in base32, for manual entry.
    pub secret_base32: Zeroizing<String>,
    /// QR code of the URI, PNG.
    pub qr_png: Vec<u8>,
    /// QR code of the URI, SVG.
    pub qr_svg: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment").field("factor_id", &self.factor_id).finish_non_exhaustive()
    }
}

/// How long a pending device waits for its first code.
pub const PENDING_TTL: time::Duration = time::Duration::minutes(15);

/// The result of confirming a pending device.
#[derive(Debug)]
pub enum ConfirmOutcome {
    /// Active now. `recovery_codes` is filled (for display, once) when this is the
    /// subject's first active factor; then every other session of the subject was signed out
    /// (`sessions_revoked`), and a confirming session was raised to the second-factor level
    /// under the new `session_token`.
    Confirmed {
        /// The factor, now active.
        factor: Box<Factor>,
        /// New recovery codes (`XXXX-XXXX-XXXX-XXXX`), or empty.
        recovery_codes: Vec<Zeroizing<String>>,
        /// Other sessions signed out (first factor only).
        sessions_revoked: u64,
        /// The confirming session's new token (first factor, confirmed in a session).
        session_token: Option<Zeroizing<String>>,
    },
    /// The code did not match (counts as a failed attempt).
    Rejected {
        /// Attempts left.
        attempts_remaining: u32,
    },
    /// Too many failures.
    Locked {
        /// End of the lock.
        until: OffsetDateTime,
    },
}

fn aad<'a>(factor_id: &'a str, subject_id: &'a str) -> Aad<'a> {
    Aad { purpose: TOTP_PURPOSE, version: TOTP_FORMAT, factor_id, subject_id }
}

pub(crate) fn to_sealed(s: Sealed) -> SealedSecret {
    SealedSecret { key_id: s.key_id.to_string(), nonce: s.nonce, ciphertext: s.ciphertext }
}

/// What the rule of the first factor needs (see [`first_factor_rule`]).
pub(crate) struct FirstFactor<'a> {
    /// The recovery codes it brings.
    pub(crate) codes: &'a [NewRecoveryCode],
    /// Their audit event.
    pub(crate) audit: &'a NewAuditEvent,
    /// The session that added the factor (pages), if any: it stays, raised.
    pub(crate) session_id: Option<&'a str>,
    /// That session's new token's hash.
    pub(crate) new_token_hash: &'a [u8],
}

/// The rule of the first factor, in `change` after the new factor is in it: when it is the
/// subject's first active factor, it brings the recovery codes and every other session ends
/// (they were opened with the password alone); the session that added it is raised under a new
/// token. Returns (first, sessions revoked, raised). An authenticator app's confirmation and a
/// security key's registration both apply it.
pub(crate) async fn first_factor_rule(
    change: &mut tessera_store::FactorChange<'_>,
    subject: &str,
    f: &FirstFactor<'_>,
    now: OffsetDateTime,
    idle_cutoff: OffsetDateTime,
) -> Result<(bool, u64, bool), AppError> {
    if change.active_factors().await? != 1 {
        return Ok((false, 0, false));
    }
    change.replace_recovery_codes(f.codes, now).await?;
    change.audit(f.audit).await?;
    let revoked = change.revoke_other_sessions(f.session_id, now).await?;
    let mut raised = false;
    if let Some(session_id) = f.session_id {
        let r = Rotation {
            session_id,
            user_id: subject,
            new_token_hash: f.new_token_hash,
            aal: 2,
            password_verified_at: None,
            mfa_verified_at: Some(now),
        };
        raised = change.rotate_session(&r, now, idle_cutoff).await?;
    }
    Ok((true, revoked, raised))
}

/// How a confirmation's change ended.
enum Confirmed {
    /// Confirmed: (first factor, sessions revoked, session raised).
    Yes((bool, u64, bool)),
    /// The device is no longer a pending setup this session may finish.
    NotPending,
    /// The code's step was used already.
    Replayed,
}

/// What a failed or refused attempt becomes.
enum Failure {
    Rejected(u32),
    Locked(OffsetDateTime),
}

impl App {
    pub(crate) fn event(
        &self,
        now: OffsetDateTime,
        subject: &str,
        factor: Option<&str>,
        kind: AuditKind,
        ctx: &ClientContext,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: now,
            subject_id: subject.to_owned(),
            factor_id: factor.map(str::to_owned),
            actor: None,
            kind,
            ip: ctx.ip(),
            user_agent: ctx.user_agent(),
            detail: "{}".into(),
        }
    }

    /// Open a sealed secret (see [`open_sealed`]).
    pub(crate) fn open_secret(
        &self,
        subject: &str,
        factor_id: &str,
        sealed: &SealedSecret,
    ) -> Result<Secret, AppError> {
        open_sealed(&self.keys, subject, factor_id, sealed)
    }

    /// Reserve an attempt; `Err(failure)` when the subject may not try now.
    async fn gate(
        &self,
        subject: &str,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<Result<u32, Failure>, AppError> {
        match self.store.gate_attempt(subject, SECOND_FACTOR, now, &self.config.throttle).await? {
            GateResult::Reserved(n) if self.config.throttle.gate(n) == Gate::Proceed => Ok(Ok(n)),
            refused => Ok(Err(self.refuse(subject, refused, now, ctx).await?)),
        }
    }

    /// Record an attempt the gate refused — locked, or holding a slot beyond the budget — and
    /// say why.
    async fn refuse(
        &self,
        subject: &str,
        r: GateResult,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<Failure, AppError> {
        if let GateResult::Locked(until) = r {
            let ev = self.event(now, subject, None, AuditKind::AttemptWhileLocked, ctx);
            self.store.append_audit(&ev).await?;
            return Ok(Failure::Locked(until));
        }
        // More attempts in flight than the budget: refuse unchecked, and make sure the lock is
        // in force even if the attempt that should have set it never finished.
        let ev = self.event(now, subject, None, AuditKind::Locked, ctx);
        let until = self.store.lock_if_due(subject, SECOND_FACTOR, &self.config.throttle, now, &ev).await?;
        let ev = self.event(now, subject, None, AuditKind::AttemptWhileLocked, ctx);
        self.store.append_audit(&ev).await?;
        Ok(until.map_or(Failure::Rejected(0), Failure::Locked))
    }

    /// Record a failed attempt that held failure slot `reserved`: audit it, and lock if it
    /// used up the budget.
    async fn fail(
        &self,
        subject: &str,
        reserved: u32,
        now: OffsetDateTime,
        mut ev: NewAuditEvent,
        reason: &str,
        ctx: &ClientContext,
    ) -> Result<Failure, AppError> {
        let policy = &self.config.throttle;
        let remaining = policy.remaining(reserved);
        ev.detail = json!({ "reason": reason, "attempts_remaining": remaining }).to_string();
        tracing::debug!(subject, kind = ev.kind.as_str(), remaining, "second factor refused");
        self.store.append_audit(&ev).await?;
        let total = self.store.attempt_state(subject, SECOND_FACTOR).await?.total_failures;
        if policy.suspends_after(total) {
            self.disable_totp(subject, total, now, ctx).await?;
        }
        if policy.locks_after(reserved) {
            let mut lock_ev = self.event(now, subject, None, AuditKind::Locked, ctx);
            lock_ev.detail = json!({ "failures": reserved }).to_string();
            let until = self.store.lock_if_due(subject, SECOND_FACTOR, policy, now, &lock_ev).await?;
            if let Some(until) = until {
                metrics::counter!("tessera_lockouts_total").increment(1);
                tracing::info!(subject, until = until.unix_timestamp(), "second factor locked");
                return Ok(Failure::Locked(until));
            }
        }
        Ok(Failure::Rejected(remaining))
    }

    /// `total` consecutive second-factor failures: take the subject's authenticator apps out of
    /// use (recovery codes still work) and tell the user, once.
    async fn disable_totp(
        &self,
        subject: &str,
        total: u32,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let mut ev = self.event(now, subject, None, AuditKind::TotpDisabled, ctx);
        ev.detail = json!({ "failures": total }).to_string();
        if self.store.disable_totp(subject, now, &ev).await? == 0 {
            return Ok(());
        }
        tracing::warn!(subject, total, "authenticator apps disabled after too many consecutive wrong codes");
        if let Some(user) = self.store.user_by_id(subject).await? {
            self.notify(&user, "totp_disabled", json!({ "at": now.unix_timestamp(), "failures": total }), now).await?;
        }
        Ok(())
    }

    /// Tell a user (a subject that is one) that a factor was added to their account.
    pub(crate) async fn factor_added_notice(
        &self,
        subject: &str,
        label: &str,
        sessions_revoked: u64,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let detail = json!({ "label": label, "at": now.unix_timestamp(), "sessions_revoked": sessions_revoked,
                             "ip": ctx.ip(), "user_agent": ctx.user_agent() });
        self.notify_user(subject, "factor_added", detail, now).await
    }

    /// Tell a user (a subject that is one) that a factor of theirs was removed.
    pub(crate) async fn factor_removed_notice(
        &self,
        subject: &str,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        self.notify_user(subject, "factor_removed", crate::lifecycle::event_detail(now, ctx), now).await
    }

    /// Queue a notice to the user whose id is `subject`, if it is one (services' subjects over
    /// gRPC need not be Tessera users).
    pub(crate) async fn notify_user(
        &self,
        subject: &str,
        kind: &str,
        detail: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), AppError> {
        match self.store.user_by_id(subject).await? {
            Some(user) => self.notify(&user, kind, detail, now).await,
            None => Ok(()),
        }
    }

    pub(crate) fn recovery_batch(
        &self,
        keyring: &Keyring,
        subject: &str,
    ) -> Result<(Vec<Zeroizing<String>>, Vec<NewRecoveryCode>), AppError> {
        let key = keyring.current_id();
        let batch_id = uuid::Uuid::new_v4().to_string();
        let mut shown = Vec::with_capacity(10);
        let mut rows = Vec::with_capacity(10);
        for code in RecoveryCode::generate_batch()? {
            rows.push(NewRecoveryCode {
                id: uuid::Uuid::new_v4().to_string(),
                batch_id: batch_id.clone(),
                key_id: key.to_string(),
                code_mac: code.mac(keyring, &key, subject)?.to_vec(),
            });
            shown.push(code.display());
        }
        Ok((shown, rows))
    }

    /// Enrol a TOTP device for a subject (a service's call over gRPC): a pending factor with a
    /// fresh sealed secret, and the URI and QR codes that carry it to the user's app. It
    /// belongs to no session: only a service may confirm it, within [`PENDING_TTL`].
    pub async fn enroll_totp(&self, req: &EnrollRequest, ctx: &ClientContext) -> Result<Enrollment, AppError> {
        self.enroll(req, None, ctx).await
    }

    pub(crate) async fn enroll(
        &self,
        req: &EnrollRequest,
        session_id: Option<&str>,
        ctx: &ClientContext,
    ) -> Result<Enrollment, AppError> {
        let subject = validate::subject_id(&req.subject_id)?;
        let label = validate::display_name("label", &req.label, validate::MAX_LABEL_CHARS)?;
        let account = validate::display_name("account_name", &req.account_name, validate::MAX_ACCOUNT_NAME_CHARS)?;
        let params =
            TotpParams::new(req.algorithm.unwrap_or_default(), req.digits.unwrap_or(6), req.period.unwrap_or(30))?;
        let now = self.clock.now();
        let secret = Secret::generate(params.algorithm())?;
        let factor_id = uuid::Uuid::new_v4().to_string();
        let sealed = self.keys.get().seal(&aad(&factor_id, subject), secret.expose())?;
        let uri = otpauth::build_uri(&self.config.issuer, account, &secret, &params);
        let (qr_svg, qr_png) = if req.omit_qr { (String::new(), Vec::new()) } else { qr::svg_and_png(&uri)? };
        let row = NewTotpFactor {
            id: factor_id.clone(),
            subject_id: subject.to_owned(),
            label: label.to_owned(),
            params,
            sealed: to_sealed(sealed),
            created_at: now,
            session_id: session_id.map(str::to_owned),
        };
        let mut ev = self.event(now, subject, Some(&factor_id), AuditKind::TotpEnrolled, ctx);
        ev.detail = json!({ "label": label, "algorithm": params.algorithm().as_str(),
                            "digits": params.digits(), "period": params.period() })
        .to_string();
        if !self.store.insert_totp_factor(&row, self.config.max_factors_per_subject, now - PENDING_TTL, &ev).await? {
            return Err(AppError::FailedPrecondition(format!(
                "subject already has {} factors; remove one first",
                self.config.max_factors_per_subject
            )));
        }
        metrics::counter!("tessera_enrolments_total", "stage" => "enrolled").increment(1);
        Ok(Enrollment { factor_id, otpauth_uri: uri, secret_base32: secret.to_base32(), qr_png, qr_svg })
    }

    /// Confirm a pending device a service enrolled (gRPC) with its first code (which counts as
    /// used). The subject's first active factor also gets a fresh batch of recovery codes, and
    /// then every session of the subject ends (they were opened with the password alone).
    pub async fn confirm_totp(
        &self,
        subject_id: &str,
        factor_id: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<ConfirmOutcome, AppError> {
        self.confirm(subject_id, factor_id, code, None, ctx).await
    }

    /// A pending device of `subject` that `session_id` may use: started by that session (or by
    /// no session, for a service), and not expired.
    pub(crate) async fn pending_device(
        &self,
        subject: &str,
        factor_id: &str,
        session_id: Option<&str>,
    ) -> Result<TotpDevice, AppError> {
        let device = self.store.totp_device(subject, factor_id).await?.ok_or(AppError::NotFound("factor"))?;
        if device.factor.status != FactorStatus::Pending {
            return Err(AppError::FailedPrecondition(
                "this device is already set up; its key is not shown again".into(),
            ));
        }
        // Another session's setup is not this one's to see or finish (it may only cancel it).
        if device.factor.started_in.as_deref() != session_id {
            return Err(AppError::NotFound("factor"));
        }
        if device.factor.created_at <= self.clock.now() - PENDING_TTL {
            return Err(AppError::FailedPrecondition("this setup expired after 15 minutes; start again".into()));
        }
        Ok(device)
    }

    pub(crate) async fn confirm(
        &self,
        subject_id: &str,
        factor_id: &str,
        code: &str,
        session: Option<&crate::Session>,
        ctx: &ClientContext,
    ) -> Result<ConfirmOutcome, AppError> {
        let subject = validate::subject_id(subject_id)?;
        let code = Code::parse(code)?;
        let session_id = session.map(crate::Session::id);
        let device = self.pending_device(subject, factor_id, session_id).await?;
        let now = self.clock.now();
        let reserved = match self.gate(subject, now, ctx).await? {
            Ok(n) => n,
            Err(f) => return Ok(f.into_confirm()),
        };
        let secret = self.open_secret(subject, factor_id, &device.sealed)?;
        let matched = otp::verify(&secret, &device.params, &code, now.unix_timestamp(), self.config.window);
        let Some(step) = matched else {
            let ev = self.event(now, subject, Some(factor_id), AuditKind::TotpConfirmFailed, ctx);
            return Ok(self.fail(subject, reserved, now, ev, "mismatch", ctx).await?.into_confirm());
        };
        let keyring = self.keys.get();
        let (shown, rows) = self.recovery_batch(&keyring, subject)?;
        let ev_confirm = self.event(now, subject, Some(factor_id), AuditKind::TotpConfirmed, ctx);
        let mut ev_codes = self.event(now, subject, None, AuditKind::RecoveryCodesGenerated, ctx);
        ev_codes.detail = json!({ "count": rows.len(), "reason": "first factor" }).to_string();
        let (token, hash) = self.fresh_token()?;
        let idle_cutoff = self.config.sessions.idle_cutoff(now);
        // The steps, in one change (on SQLite, one job of the writer thread).
        let (fid, sid, owner) = (factor_id.to_owned(), session_id.map(str::to_owned), subject.to_owned());
        let confirmed = self
            .store
            .change_factors(subject, ChangeKind::Confirmation, move |change| {
                Box::pin(async move {
                    let activation = Activation {
                        factor_id: &fid,
                        session_id: sid.as_deref(),
                        pending_cutoff: now - PENDING_TTL,
                        idle_cutoff,
                        now,
                    };
                    if !change.activate_pending(&activation).await? {
                        return Ok(Done::Rollback(Confirmed::NotPending));
                    }
                    if !change.use_step(&fid, step, now).await? {
                        return Ok(Done::Rollback(Confirmed::Replayed));
                    }
                    change.audit(&ev_confirm).await?;
                    let added = FirstFactor {
                        codes: &rows,
                        audit: &ev_codes,
                        session_id: sid.as_deref(),
                        new_token_hash: &hash,
                    };
                    let rule = first_factor_rule(change, &owner, &added, now, idle_cutoff).await?;
                    Ok::<_, AppError>(Done::Commit(Confirmed::Yes(rule)))
                })
            })
            .await?;
        let (first, sessions_revoked, raised) = match confirmed {
            Confirmed::Yes(rule) => rule,
            Confirmed::NotPending => {
                return Err(AppError::FailedPrecondition(
                    "this setup is no longer pending (finished, cancelled or expired)".into(),
                ));
            }
            Confirmed::Replayed => {
                let ev = self.event(now, subject, Some(factor_id), AuditKind::TotpConfirmFailed, ctx);
                return Ok(self.fail(subject, reserved, now, ev, "replay", ctx).await?.into_confirm());
            }
        };
        metrics::counter!("tessera_enrolments_total", "stage" => "confirmed").increment(1);
        let factor =
            self.store.totp_device(subject, factor_id).await?.map(|d| d.factor).ok_or(AppError::NotFound("factor"))?;
        if first && sessions_revoked > 0 {
            tracing::info!(subject, sessions_revoked, "first factor confirmed: other sessions signed out");
        }
        self.factor_added_notice(subject, &factor.label, sessions_revoked, now, ctx).await?;
        Ok(ConfirmOutcome::Confirmed {
            factor: Box::new(factor),
            recovery_codes: if first { shown } else { Vec::new() },
            sessions_revoked,
            session_token: raised.then_some(token),
        })
    }

    /// Delete a factor of `subject` (`pending_only`: only while it is a pending setup), with
    /// the rule of the last factor: when no active factor remains, the recovery codes go too
    /// (they are a backup for factors, not a factor of their own). `false` if there was no
    /// such factor.
    pub(crate) async fn delete_factor(
        &self,
        subject: &str,
        factor_id: &str,
        pending_only: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, AppError> {
        let (fid, audit) = (factor_id.to_owned(), audit.clone());
        self.store
            .change_factors(subject, ChangeKind::Other, move |change| {
                Box::pin(async move {
                    if !change.delete_factor(&fid, pending_only).await? {
                        return Ok(Done::Rollback(false));
                    }
                    if change.active_factors().await? == 0 {
                        change.void_recovery_codes().await?;
                    }
                    change.audit(&audit).await?;
                    Ok::<_, AppError>(Done::Commit(true))
                })
            })
            .await
    }

    /// Check a TOTP code against every active device of the subject. A code is accepted at
    /// most once, whatever the concurrency, and only when the subject is not locked.
    ///
    /// The code is checked first (a check has no effect) and the attempt gate and the accept
    /// then run as one write: the check's result counts only if the gate admits the attempt
    /// (not locked, within the budget), so the bound on guesses is the gate's, as when gating
    /// first, and an accepted code costs one write instead of two.
    pub async fn verify_totp(&self, subject_id: &str, code: &str, ctx: &ClientContext) -> Result<Outcome, AppError> {
        let subject = validate::subject_id(subject_id)?;
        let code = Code::parse(code)?;
        let now = self.clock.now();
        // The check runs where the store reads the devices (on SQLite, on its writer thread
        // inside the write transaction): it only unseals and computes.
        let keys = self.keys.clone();
        let owner = subject.to_owned();
        let verified = self.event(now, subject, None, AuditKind::TotpVerified, ctx);
        let window = self.config.window;
        let check = move |devices: &[TotpDevice]| -> Result<Option<Acceptance>, AppError> {
            let mut matched: Option<(&TotpDevice, u64)> = None;
            for d in devices {
                let secret = open_sealed(&keys, &owner, &d.factor.id, &d.sealed)?;
                // Every device is checked, match or not, so timing does not reveal which one.
                if let Some(step) = otp::verify(&secret, &d.params, &code, now.unix_timestamp(), window) {
                    matched = matched.or(Some((d, step)));
                }
            }
            Ok(matched.map(|(d, step)| {
                let mut audit = verified.clone();
                audit.factor_id = Some(d.factor.id.clone());
                audit.detail = json!({ "step": step }).to_string();
                Acceptance { factor_id: d.factor.id.clone(), step, audit }
            }))
        };
        let (result, matched) = self.store.check_gate_accept(subject, now, &self.config.throttle, check).await??;
        match result {
            GateAccept::Accepted => Ok(Outcome::Accepted { factor_id: matched }),
            GateAccept::Refused(r) => Ok(self.refuse(subject, r, now, ctx).await?.into_outcome()),
            GateAccept::Replayed(n) => {
                let ev = self.event(now, subject, matched.as_deref(), AuditKind::TotpRejected, ctx);
                Ok(self.fail(subject, n, now, ev, "replay", ctx).await?.into_outcome())
            }
            GateAccept::Mismatch(n) => {
                let ev = self.event(now, subject, None, AuditKind::TotpRejected, ctx);
                Ok(self.fail(subject, n, now, ev, "mismatch", ctx).await?.into_outcome())
            }
        }
    }

    /// Redeem a recovery code (once). Returns the outcome and the codes left.
    pub async fn redeem_recovery_code(
        &self,
        subject_id: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<(Outcome, u32), AppError> {
        let subject = validate::subject_id(subject_id)?;
        let code = RecoveryCode::parse(code)?;
        let now = self.clock.now();
        let reserved = match self.gate(subject, now, ctx).await? {
            Ok(n) => n,
            Err(f) => {
                let left = self.store.recovery_codes_remaining(subject).await?;
                return Ok((f.into_outcome(), left));
            }
        };
        let keyring = self.keys.get();
        let candidates = keyring
            .ids()
            .iter()
            .map(|k| Ok((k.to_string(), code.mac(&keyring, k, subject)?.to_vec())))
            .collect::<Result<Vec<_>, CoreError>>()?;
        let ev = self.event(now, subject, None, AuditKind::RecoveryCodeRedeemed, ctx);
        if let Some(left) = self.store.redeem_recovery_code(subject, &candidates, now, &ev).await? {
            let detail = json!({ "at": now.unix_timestamp(), "ip": ctx.ip(), "user_agent": ctx.user_agent(),
                                 "left": left });
            self.notify_user(subject, "recovery_code_used", detail, now).await?;
            return Ok((Outcome::Accepted { factor_id: None }, left));
        }
        let ev = self.event(now, subject, None, AuditKind::RecoveryCodeRejected, ctx);
        let outcome = self.fail(subject, reserved, now, ev, "mismatch", ctx).await?.into_outcome();
        Ok((outcome, self.store.recovery_codes_remaining(subject).await?))
    }

    /// Replace the subject's recovery codes with a new batch (the old ones stop working).
    /// Requires an active factor: recovery codes back one up.
    pub async fn regenerate_recovery_codes(
        &self,
        subject_id: &str,
        ctx: &ClientContext,
    ) -> Result<Vec<Zeroizing<String>>, AppError> {
        let subject = validate::subject_id(subject_id)?;
        if !self.store.has_active_factor(subject).await? {
            return Err(AppError::FailedPrecondition("subject has no active factor to back up".into()));
        }
        let now = self.clock.now();
        let keyring = self.keys.get();
        let (shown, rows) = self.recovery_batch(&keyring, subject)?;
        let mut ev = self.event(now, subject, None, AuditKind::RecoveryCodesGenerated, ctx);
        ev.detail = json!({ "count": rows.len(), "reason": "regenerated" }).to_string();
        self.store.replace_recovery_codes(subject, &rows, now, &ev).await?;
        self.notify_user(subject, "recovery_codes_regenerated", crate::lifecycle::event_detail(now, ctx), now).await?;
        Ok(shown)
    }

    /// Unused recovery codes left.
    pub async fn recovery_codes_remaining(&self, subject_id: &str) -> Result<u32, AppError> {
        Ok(self.store.recovery_codes_remaining(validate::subject_id(subject_id)?).await?)
    }

    /// The subject's factors, oldest first.
    pub async fn list_factors(&self, subject_id: &str) -> Result<Vec<Factor>, AppError> {
        Ok(self.store.list_factors(validate::subject_id(subject_id)?, self.clock.now() - PENDING_TTL).await?)
    }

    /// Remove a factor (its secret goes with it; the recovery codes go with the last one).
    pub async fn remove_factor(&self, subject_id: &str, factor_id: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let subject = validate::subject_id(subject_id)?;
        let now = self.clock.now();
        let ev = self.event(now, subject, Some(factor_id), AuditKind::FactorRemoved, ctx);
        if self.delete_factor(subject, factor_id, false, &ev).await? {
            self.factor_removed_notice(subject, now, ctx).await
        } else {
            Err(AppError::NotFound("factor"))
        }
    }

    /// A page of the subject's audit events, newest first: `page_size` 1..=100 (0 means 50);
    /// `page_token` is the `next_page_token` of the previous page (empty for the first).
    pub async fn list_audit_events(
        &self,
        subject_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditEvent>, String), AppError> {
        let subject = validate::subject_id(subject_id)?;
        let size = match page_size {
            0 => 50,
            1..=100 => page_size,
            n => return Err(CoreError::invalid("page_size", format!("{n} is over the limit of 100")).into()),
        };
        if page_token.len() > 64 || !page_token.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(CoreError::invalid("page_token", "is not a token this service issued").into());
        }
        let before = (!page_token.is_empty()).then_some(page_token);
        let mut events = self.store.list_audit(subject, size + 1, before).await?;
        let next = if events.len() > size as usize {
            events.truncate(size as usize);
            events.last().map(|e| e.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((events, next))
    }
}

impl Failure {
    fn into_outcome(self) -> Outcome {
        match self {
            Self::Rejected(n) => Outcome::Rejected { attempts_remaining: n },
            Self::Locked(until) => Outcome::Locked { until },
        }
    }
    fn into_confirm(self) -> ConfirmOutcome {
        match self {
            Self::Rejected(n) => ConfirmOutcome::Rejected { attempts_remaining: n },
            Self::Locked(until) => ConfirmOutcome::Locked { until },
        }
    }
}

/// Open a sealed secret; if its key is unknown, reload the keyring once (another replica or
/// `tessera keys rotate` may have added it) and retry.
fn open_sealed(
    keys: &KeyringSource,
    subject: &str,
    factor_id: &str,
    sealed: &SealedSecret,
) -> Result<Secret, AppError> {
    let s = Sealed {
        key_id: KeyId::new(&sealed.key_id)?,
        nonce: sealed.nonce.clone(),
        ciphertext: sealed.ciphertext.clone(),
    };
    let bytes = keys.open(&aad(factor_id, subject), &s).inspect_err(|e| {
        tracing::error!(factor_id, error = %e, "a sealed TOTP secret could not be opened");
    })?;
    Ok(Secret::from_bytes(bytes.to_vec()))
}
