//! "Trust this browser": after proving a second factor, a user may tick a box so that this
//! browser signs them in with the password alone for [`TRUST_TTL`]. The password is never
//! skipped, and such a session has proven no factor: accounts that require MFA open to it, but
//! sensitive actions still ask for a factor. Every trust of a user ends when a factor is added
//! or removed, the password is changed or reset, or support resets MFA (the store voids them in
//! those transactions); the user lists and revokes them on the security page.
//!
//! Who may do what: a session that proved a second factor within the re-authentication window
//! trusts its own browser (a token minted here, never one the client offers); only the
//! browser's token with the right password for its user signs in; any live session of the user
//! revokes (revoking only takes away).

use crate::identity::{LoginOutcome, new_token, token_hash, well_formed_token};
use crate::{App, AppError, ClientContext, Session};
use serde_json::json;
use tessera_core::factor::AuditKind;
use tessera_core::policy::{self, AccountPolicy};
use tessera_core::session::Recency;
use tessera_store::{NewTrust, TrustRow, UserRow};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long a browser stays trusted.
pub const TRUST_TTL: Duration = Duration::days(30);

impl App {
    /// Trust the browser of session `s` (which must have proven a second factor within the
    /// re-authentication window): the token for its cookie. Audited, and the user is told.
    pub async fn trust_this_browser(&self, s: &Session, ctx: &ClientContext) -> Result<Zeroizing<String>, AppError> {
        let now = self.clock.now();
        if !self.config.sessions.is_recent(s.second_factor_verified_at(), now) {
            return Err(AppError::ReauthRequired(Recency::NeedSecondFactor));
        }
        // The strictest cap of the user's accounts that require MFA bounds the trust (0: none).
        let accounts = self.store.account_policies_of(s.user_id()).await?;
        let days = policy::trust_cap_days(&accounts).map_or(TRUST_TTL, |d| Duration::days(i64::from(d)).min(TRUST_TTL));
        if days.is_zero() {
            return Err(AppError::FailedPrecondition(
                "an account you belong to does not allow trusted browsers".into(),
            ));
        }
        let token = new_token()?;
        let label = ctx.user_agent().unwrap_or_default();
        let t = NewTrust {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: s.user_id().to_owned(),
            token_hash: token_hash(&token),
            label,
            created_at: now,
            expires_at: now + days,
        };
        let mut ev = self.event(now, s.user_id(), None, AuditKind::BrowserTrusted, ctx);
        ev.detail = json!({ "days": days.whole_days() }).to_string();
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let notice = crate::identity::notice_to(&user, "browser_trusted", crate::lifecycle::event_detail(now, ctx));
        self.store.trust_browser(&t, &ev, &notice).await?;
        self.mail_queued();
        Ok(token)
    }

    /// The password was right and the user has a factor: if this browser is trusted by the
    /// user, a session without the second step (at the second-factor level for accounts, with
    /// no factor proven for sensitive actions).
    pub(crate) async fn trusted_sign_in(
        &self,
        user: &UserRow,
        accounts: &[AccountPolicy],
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<Option<LoginOutcome>, AppError> {
        let Some(hash) = ctx.trust.as_deref().filter(|t| well_formed_token(t)).map(token_hash) else {
            return Ok(None);
        };
        // The strictest cap of the user's accounts that require MFA (0: never).
        let days = policy::trust_cap_days(accounts).map_or(TRUST_TTL, |d| Duration::days(i64::from(d)).min(TRUST_TTL));
        let Some(since) = self.store.trusted_since(&user.id, &hash, now).await? else { return Ok(None) };
        if days.is_zero() || since <= now - days {
            return Ok(None);
        }
        let (token, session_hash) = self.fresh_token()?;
        let mut session = self.session_row(&user.id, session_hash, 2, now, None, ctx);
        session.trusted_since = Some(since);
        let mut ev = self.event(now, &user.id, None, AuditKind::TrustedSignIn, ctx);
        ev.detail = json!({ "assurance": "password+trusted_browser" }).to_string();
        if !self.store.open_trusted_session(&session, &user.password_hash, &hash, &ev).await? {
            return Ok(None);
        }
        Ok(Some(self.signed_in_beyond_password(token, &user.id, now, ctx).await?))
    }

    /// The browsers the user of `s` trusts (trust not ended), most recent first.
    pub async fn trusted_browsers(&self, s: &Session) -> Result<Vec<TrustRow>, AppError> {
        Ok(self.store.trusted_browsers(s.user_id(), self.clock.now()).await?)
    }

    /// Cap how long the browsers of this account's members stay trusted (`None`: no cap of its
    /// own, 30 days; 0: never), applied when the account requires MFA. Admins, with recent
    /// authentication, as for the account's policy.
    pub async fn set_account_trust_cap(
        &self,
        s: &Session,
        account_id: &str,
        max_trust_days: Option<u32>,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        if max_trust_days.is_some_and(|d| i64::from(d) > TRUST_TTL.whole_days()) {
            return Err(tessera_core::CoreError::invalid("max_trust_days", "must be 0 to 30 days").into());
        }
        self.require_admin(s, account_id).await?;
        self.require_recent(s).await?;
        if !self.store.set_trust_cap(account_id, max_trust_days).await? {
            return Err(AppError::NotFound("account"));
        }
        let now = self.clock.now();
        let mut ev = self.event(now, s.user_id(), None, AuditKind::AccountPolicyChanged, ctx);
        ev.detail = json!({ "account_id": account_id, "max_trust_days": max_trust_days }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(())
    }

    /// Revoke one trusted browser (`Some(id)`) or all of them (`None`); how many ended.
    pub async fn revoke_trusted_browsers(
        &self,
        s: &Session,
        id: Option<&str>,
        ctx: &ClientContext,
    ) -> Result<u64, AppError> {
        let now = self.clock.now();
        let mut ev = self.event(now, s.user_id(), None, AuditKind::BrowserTrustRevoked, ctx);
        ev.detail = json!({ "scope": if id.is_some() { "one" } else { "all" } }).to_string();
        let n = self.store.revoke_trust(s.user_id(), id, &ev).await?;
        if id.is_some() && n == 0 {
            return Err(AppError::NotFound("trusted browser"));
        }
        Ok(n)
    }
}
