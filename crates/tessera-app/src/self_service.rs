//! What a signed-in user does for their own factors, in a [`Session`]: add an authenticator
//! app, see and finish its setup, new recovery codes, remove a device.
//!
//! Who may do what (the rules of issue 11; each has a test in the suite):
//! - adding a factor, new recovery codes, removing an active factor: a session that proved a
//!   factor (or, for a user without one, the password) within the re-authentication window;
//! - a pending device belongs to the session that started it: only that session sees its key
//!   and confirms it, within 15 minutes; any session of the user may cancel it;
//! - confirming raises the session only when the device is the user's *first* factor, and then
//!   every other session of the user ends (they were opened with the password alone).

use crate::{App, AppError, ClientContext, ConfirmOutcome, EnrollRequest, Enrollment, Session};
use tessera_core::factor::Factor;
use tessera_core::{otpauth, qr};
use time::OffsetDateTime;
use zeroize::Zeroizing;

impl App {
    /// The user's email, if the user exists.
    pub async fn user_email(&self, user_id: &str) -> Result<Option<String>, AppError> {
        Ok(self.store.user_by_id(user_id).await?.map(|u| u.email))
    }

    /// Start setting up an authenticator app labelled `label` in session `s` (needs recent
    /// authentication). The pending device belongs to `s`.
    pub async fn add_totp_device(&self, s: &Session, label: &str, ctx: &ClientContext) -> Result<Enrollment, AppError> {
        self.require_recent(s).await?;
        let email = self.user_email(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let req = EnrollRequest {
            subject_id: s.user_id().to_owned(),
            label: label.to_owned(),
            account_name: email,
            ..EnrollRequest::default()
        };
        self.enroll(&req, Some(s.id()), ctx).await
    }

    /// A device that `s` started and has not finished, with its URI, QR codes and secret, so
    /// the user can (re)scan it until they confirm. Another session's setup is `NotFound`; a
    /// finished one `FailedPrecondition` (its secret is never shown again); so is an expired one.
    pub async fn pending_totp_device(&self, s: &Session, factor_id: &str) -> Result<Enrollment, AppError> {
        let device = self.pending_device(s.user_id(), factor_id, Some(s.id())).await?;
        let account = self.user_email(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let secret = self.open_secret(s.user_id(), factor_id, &device.sealed)?;
        let uri = otpauth::build_uri(&self.config.issuer, &account, &secret, &device.params);
        let (qr_svg, qr_png) = qr::svg_and_png(&uri)?;
        Ok(Enrollment {
            factor_id: factor_id.to_owned(),
            otpauth_uri: uri,
            secret_base32: secret.to_base32(),
            qr_png,
            qr_svg,
        })
    }

    /// Finish the setup `s` started, with the app's first code (needs recent authentication).
    /// See [`ConfirmOutcome::Confirmed`] for what a first factor does to the sessions.
    pub async fn confirm_totp_device(
        &self,
        s: &Session,
        factor_id: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<ConfirmOutcome, AppError> {
        self.require_recent(s).await?;
        self.confirm(s.user_id(), factor_id, code, Some(s), ctx).await
    }

    /// Replace the user's recovery codes (needs recent authentication).
    pub async fn new_recovery_codes(
        &self,
        s: &Session,
        ctx: &ClientContext,
    ) -> Result<Vec<Zeroizing<String>>, AppError> {
        self.require_recent(s).await?;
        self.regenerate_recovery_codes(s.user_id(), ctx).await
    }

    /// Remove one of the user's devices: an active one needs recent authentication; a pending
    /// one (not a factor yet) any session of the user may cancel. Without recent
    /// authentication the store deletes the device only if it is still pending at that moment
    /// (a setup confirmed meanwhile is not removed).
    pub async fn remove_device(&self, s: &Session, factor_id: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let recent = match self.require_recent(s).await {
            Ok(()) => Ok(()),
            Err(AppError::ReauthRequired(r)) => Err(r),
            Err(e) => return Err(e),
        };
        let now = self.clock.now();
        let was_active = self
            .list_factors(s.user_id())
            .await?
            .iter()
            .any(|f| f.id == factor_id && f.status == tessera_core::factor::FactorStatus::Active);
        let ev = self.event(now, s.user_id(), Some(factor_id), tessera_core::factor::AuditKind::FactorRemoved, ctx);
        if self.delete_factor(s.user_id(), factor_id, recent.is_err(), &ev).await? {
            // Cancelling a setup removes no factor: only a removed factor is worth a notice.
            if was_active {
                return self.factor_removed_notice(s.user_id(), now, ctx).await;
            }
            return Ok(());
        }
        match recent {
            // Not a pending setup (or none at all): removing a factor needs recent proof.
            Err(r) if self.list_factors(s.user_id()).await?.iter().any(|f| f.id == factor_id) => {
                Err(AppError::ReauthRequired(r))
            }
            _ => Err(AppError::NotFound("device")),
        }
    }

    /// The user's devices (pending ones not yet expired), oldest first.
    pub async fn devices(&self, s: &Session) -> Result<Vec<Factor>, AppError> {
        self.list_factors(s.user_id()).await
    }

    /// The clock's now (pages show times relative to it).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
