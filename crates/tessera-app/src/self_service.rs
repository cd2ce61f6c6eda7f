//! What a signed-in user does for themselves and for the accounts they run: see a pending
//! device again, raise their session after proving a factor, sign out other sessions, list
//! their accounts, and (owners and admins) manage an account's members and MFA policy.
//! The web pages call these; every account operation checks the caller's role here, not in
//! the transport.

use crate::identity::token_hash;
use crate::{App, AppError, ClientContext, Enrollment};
use serde_json::json;
use tessera_core::factor::{AuditKind, FactorStatus};
use tessera_core::policy::{self, AccountAccess, Assurance};
use tessera_core::{CoreError, otpauth, qr, validate};
use tessera_store::{MemberRow, MembershipRow};
use time::OffsetDateTime;

impl App {
    /// The user's email, if the user exists.
    pub async fn user_email(&self, user_id: &str) -> Result<Option<String>, AppError> {
        Ok(self.store.user_by_id(user_id).await?.map(|u| u.email))
    }

    /// A device that is still pending, with its URI, QR codes and secret, so the user can
    /// (re)scan it until they confirm. Once the device is active its secret is never shown
    /// again: this returns `FailedPrecondition`.
    pub async fn pending_enrollment(
        &self,
        subject_id: &str,
        factor_id: &str,
        account_name: &str,
    ) -> Result<Enrollment, AppError> {
        let subject = validate::subject_id(subject_id)?;
        let account = validate::display_name("account_name", account_name, validate::MAX_ACCOUNT_NAME_CHARS)?;
        let device = self.store.totp_device(subject, factor_id).await?.ok_or(AppError::NotFound("factor"))?;
        if device.factor.status != FactorStatus::Pending {
            return Err(AppError::FailedPrecondition(
                "this device is already set up; its key is not shown again".into(),
            ));
        }
        let secret = self.open_secret(subject, factor_id, &device.sealed)?;
        let uri = otpauth::build_uri(&self.config.issuer, account, &secret, &device.params);
        let (qr_svg, qr_png) = qr::svg_and_png(&uri)?;
        Ok(Enrollment {
            factor_id: factor_id.to_owned(),
            otpauth_uri: uri,
            secret_base32: secret.to_base32(),
            qr_png,
            qr_svg,
        })
    }

    /// Raise a live session to "password and a second factor" after the user proved a factor
    /// in it (confirmed a device, or gave a current code); `false` if the session is not live.
    pub async fn step_up_session(&self, token: &str) -> Result<bool, AppError> {
        Ok(self.store.step_up_session(&token_hash(token), self.clock.now()).await?)
    }

    /// Sign out every other session of the user of `token`; returns how many were live.
    pub async fn logout_others(&self, token: &str, ctx: &ClientContext) -> Result<u64, AppError> {
        let now = self.clock.now();
        let hash = token_hash(token);
        let s = self.store.session(&hash, now).await?.ok_or(AppError::NotFound("session"))?;
        let n = self.store.revoke_other_sessions(&s.user_id, &hash, now).await?;
        let mut ev = self.event(now, &s.user_id, None, AuditKind::SessionsRevoked, ctx);
        ev.detail = json!({ "count": n, "scope": "others" }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(n)
    }

    /// The accounts the user belongs to, with their policy and the user's role.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<MembershipRow>, AppError> {
        Ok(self.store.memberships_of(user_id).await?)
    }

    /// One of the user's accounts (name, role, current policy) and whether a session of the
    /// user with `assurance` (as [`App::session`] reports it) may use it now — the same rule as
    /// [`App::account_access`], for a caller that has already resolved the session.
    /// `NotFound` when the user is not a member.
    pub async fn account_for(
        &self,
        user_id: &str,
        assurance: Assurance,
        account_id: &str,
    ) -> Result<(MembershipRow, AccountAccess), AppError> {
        let m = self
            .store
            .memberships_of(user_id)
            .await?
            .into_iter()
            .find(|m| m.policy.account_id == account_id)
            .ok_or(AppError::NotFound("account"))?;
        let has_factor = self.store.has_active_factor(user_id).await?;
        let access = policy::account_access(assurance, has_factor, &m.policy, self.clock.now());
        Ok((m, access))
    }

    /// The user's role in an account; `NotFound` if they are not a member (so a stranger
    /// learns nothing about which accounts exist).
    pub async fn role_in(&self, account_id: &str, user_id: &str) -> Result<String, AppError> {
        self.store.member_role(account_id, user_id).await?.ok_or(AppError::NotFound("account"))
    }

    async fn require_admin(&self, account_id: &str, user_id: &str) -> Result<(), AppError> {
        match self.role_in(account_id, user_id).await?.as_str() {
            "owner" | "admin" => Ok(()),
            _ => Err(AppError::Forbidden("only the account's owners and admins can do this".into())),
        }
    }

    /// An account's members and whether each has MFA (owners and admins only).
    pub async fn members(&self, account_id: &str, actor: &str) -> Result<Vec<MemberRow>, AppError> {
        self.require_admin(account_id, actor).await?;
        Ok(self.store.members_of(account_id).await?)
    }

    /// Add a signed-up user to an account by email, or change their role (owners and admins
    /// only; only an owner may make an owner).
    pub async fn add_member_by_email(
        &self,
        account_id: &str,
        actor: &str,
        email: &str,
        role: &str,
        ctx: &ClientContext,
    ) -> Result<String, AppError> {
        self.require_admin(account_id, actor).await?;
        if role == "owner" && self.role_in(account_id, actor).await? != "owner" {
            return Err(AppError::Forbidden("only an owner can add another owner".into()));
        }
        let email_norm = crate::normalise_email(email)?;
        let user = self.store.user_by_email(&email_norm).await?.ok_or_else(|| {
            AppError::Invalid(CoreError::invalid("email", "no one has signed up with this address yet"))
        })?;
        self.add_member(account_id, &user.id, role, ctx).await?;
        Ok(user.id)
    }

    /// Change an account's MFA policy as `actor` (owners and admins only). Turning the
    /// requirement on needs the actor to have a factor first, so they cannot lock themselves
    /// out of the account they administer.
    pub async fn set_account_policy_as(
        &self,
        account_id: &str,
        actor: &str,
        require_mfa: bool,
        grace_until: Option<OffsetDateTime>,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        self.require_admin(account_id, actor).await?;
        if require_mfa && !self.store.has_active_factor(actor).await? {
            return Err(AppError::FailedPrecondition(
                "set up two-factor authentication for yourself first, so you are not locked out of this account".into(),
            ));
        }
        self.set_account_policy(account_id, require_mfa, grace_until, actor, ctx).await
    }

    /// The clock's now (pages show times relative to it).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
