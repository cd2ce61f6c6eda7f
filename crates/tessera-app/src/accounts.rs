//! Accounts (organisations), for the pages and gRPC alike: creating one, the per-account access
//! check, invitations, members and roles, and the MFA policy.
//!
//! Who may do what:
//! - any member: see the account (subject to its MFA policy, checked on every request);
//! - owners and admins: see members and invitations, invite (an owner only as owner), remove
//!   members and change roles (only an owner touches an owner; the last owner stays), change
//!   the MFA policy (turning it on only once they have a factor themselves); every such change
//!   needs recent authentication;
//! - the invited person: accept or decline, signed in with the invited email; the inviter's
//!   role is checked again at acceptance. Inviting answers the same whether or not the email
//!   belongs to a user, and tells nothing about that user's factors.

use crate::{App, AppError, ClientContext, Session};
use serde_json::json;
use sha2::Digest;
use tessera_core::factor::AuditKind;
use tessera_core::policy::{self, AccountAccess};
use tessera_core::recovery::RecoveryCode;
use tessera_core::roles::{self, Role};
use tessera_core::{CoreError, validate};
use tessera_store::{
    InvitationAcceptance, InvitationRow, MemberChangeError, MemberRow, MembershipRow, NewInvitation, NewNotification,
};
use time::{Duration, OffsetDateTime};

/// How long an invitation can be accepted.
pub const INVITATION_TTL: Duration = Duration::days(7);
/// Longest grace period an account may give its members to set up a factor.
pub const MAX_GRACE: Duration = Duration::days(90);
/// Invitation mails one account may send a day.
pub const INVITATION_MAILS_PER_DAY: u32 = 20;
/// Invitation mails one user may send a day, over all their accounts (so creating accounts is
/// no way around the per-account cap: Tessera is no mail relay).
pub const INVITATION_MAILS_PER_INVITER_PER_DAY: u32 = 50;

/// Invitation mails one address may receive a day, over all accounts.
pub const INVITATION_MAILS_PER_ADDRESS_PER_DAY: u32 = 5;

/// The stored form of an invitation code (80 random bits; SHA-256 is enough at that entropy).
fn code_hash(code: &RecoveryCode) -> Vec<u8> {
    sha2::Sha256::digest(code.display().as_bytes()).to_vec()
}

fn parse_code(code: &str) -> Result<RecoveryCode, AppError> {
    RecoveryCode::parse(code).map_err(|_| {
        CoreError::invalid("code", "is not an invitation code (XXXX-XXXX-XXXX-XXXX, from the email)").into()
    })
}

fn member_error(e: MemberChangeError) -> AppError {
    match e {
        MemberChangeError::NoAccount => AppError::NotFound("account"),
        MemberChangeError::NotAMember => AppError::NotFound("member"),
        MemberChangeError::Refused(r) => AppError::Forbidden(r.to_string()),
    }
}

impl App {
    /// Create an account (organisation) owned by `s`'s user.
    pub async fn create_account(&self, s: &Session, name: &str, ctx: &ClientContext) -> Result<String, AppError> {
        let name = validate::display_name("name", name, validate::MAX_ACCOUNT_NAME_CHARS)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        self.store.create_account(&id, name, s.user_id(), now).await?;
        let mut ev = self.event(now, s.user_id(), None, AuditKind::AccountCreated, ctx);
        ev.detail = json!({ "account_id": id }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(id)
    }

    /// The accounts the user belongs to, with their policy and the user's role.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<MembershipRow>, AppError> {
        Ok(self.store.memberships_of(user_id).await?)
    }

    /// One of `s`'s accounts (name, role, current policy) and whether `s` may use it now,
    /// against the account's current policy and the user's current factors. `NotFound` when
    /// the user is not a member (a stranger learns nothing about which accounts exist).
    pub async fn account_for(&self, s: &Session, account_id: &str) -> Result<(MembershipRow, AccountAccess), AppError> {
        let m = self
            .store
            .memberships_of(s.user_id())
            .await?
            .into_iter()
            .find(|m| m.policy.account_id == account_id)
            .ok_or(AppError::NotFound("account"))?;
        let has_factor = self.store.has_active_factor(s.user_id()).await?;
        let now = self.clock.now();
        let mut access = policy::account_access(s.assurance(), has_factor, &m.policy, now);
        // A session a trusted browser opened has proven no factor: an account that requires MFA
        // opens to it only within the account's own cap, checked at every request (a cap set,
        // lowered or met after the sign-in — joining a capped account included — applies).
        if let (Some(since), None) = (s.trusted_since(), s.second_factor_verified_at())
            && m.policy.require_mfa
            && !policy::trust_allowed(since, m.policy.max_trust_days, now)
        {
            access = AccountAccess::SecondFactorRequired;
        }
        Ok((m, access))
    }

    /// The user's role in an account; `NotFound` if they are not a member.
    pub async fn role_in(&self, account_id: &str, user_id: &str) -> Result<Role, AppError> {
        self.store.member_role(account_id, user_id).await?.ok_or(AppError::NotFound("account"))
    }

    /// `NotFound` unless `s`'s user is a member; `Forbidden` unless an owner or admin whose
    /// session the account's MFA policy lets in now (an admin's password alone must not manage
    /// an account that requires a second factor — or switch that requirement off).
    pub(crate) async fn require_admin(&self, s: &Session, account_id: &str) -> Result<Role, AppError> {
        let (m, access) = self.account_for(s, account_id).await?;
        roles::may_manage(Some(m.role)).map_err(|r| AppError::Forbidden(r.to_string()))?;
        match access {
            AccountAccess::Open | AccountAccess::OpenUntil(_) => Ok(m.role),
            AccountAccess::SecondFactorRequired | AccountAccess::EnrolmentRequired => Err(AppError::Forbidden(
                "this account requires two-factor authentication: sign in with it to manage the account".into(),
            )),
        }
    }

    /// An account's members and whether each has MFA (owners and admins only).
    pub async fn members(&self, s: &Session, account_id: &str) -> Result<Vec<MemberRow>, AppError> {
        self.require_admin(s, account_id).await?;
        Ok(self.store.members_of(account_id).await?)
    }

    /// An account's open invitations (owners and admins only).
    pub async fn account_invitations(&self, s: &Session, account_id: &str) -> Result<Vec<InvitationRow>, AppError> {
        self.require_admin(s, account_id).await?;
        Ok(self.store.invitations_of(account_id, self.clock.now()).await?)
    }

    /// Invite `email` to an account as `role` (owners and admins; only an owner invites an
    /// owner; needs recent authentication). The mail carries a code that proves the mailbox:
    /// accepting needs it and a sign-in with that email. Answers the same for every email:
    /// whether it belongs to a user, and whether they have MFA, stays unknown. Inviting an email
    /// again refreshes the open invitation (a new code only with a new mail: at most one a day
    /// per address); mail is capped per account ([`INVITATION_MAILS_PER_DAY`]), per inviter
    /// ([`INVITATION_MAILS_PER_INVITER_PER_DAY`]) and per address
    /// ([`INVITATION_MAILS_PER_ADDRESS_PER_DAY`]): beyond a cap the invitation is refused
    /// (`FailedPrecondition`). Returns the invitation's id.
    pub async fn invite_member(
        &self,
        s: &Session,
        account_id: &str,
        email: &str,
        role: Role,
        ctx: &ClientContext,
    ) -> Result<String, AppError> {
        let email_norm = crate::normalise_email(email)?;
        let email = validate::display_name("email", email, validate::MAX_ACCOUNT_NAME_CHARS)?;
        self.require_admin(s, account_id).await?;
        self.require_recent(s).await?;
        let now = self.clock.now();
        let sent =
            self.store.invitation_mails(account_id, s.user_id(), &email_norm, now - Duration::days(1), now).await?;
        let mail_now = !sent.to_this_address;
        if mail_now
            && (sent.account >= INVITATION_MAILS_PER_DAY || sent.by_inviter >= INVITATION_MAILS_PER_INVITER_PER_DAY)
        {
            return Err(AppError::FailedPrecondition("too many invitations sent today; try again tomorrow".into()));
        }
        let code = RecoveryCode::generate()?;
        let account = self.account_name(s, account_id).await?;
        let mail = if mail_now {
            let id = uuid::Uuid::new_v4().to_string();
            // The code waits for delivery sealed in the outbox row, as a link's token does.
            let sealed = self.keys.get().seal(&crate::lifecycle::mail_aad(&id, ""), code.display().as_bytes())?;
            Some(NewNotification {
                id,
                // The mail goes to an address, not a user: which users exist stays unknown here.
                user_id: String::new(),
                email: email.to_owned(),
                kind: "invitation".into(),
                detail: json!({ "account": account, "role": role.as_str(),
                                "expires": (now + INVITATION_TTL).unix_timestamp() })
                .to_string(),
                secret: Some(crate::factors::to_sealed(sealed)),
            })
        } else {
            None
        };
        let inv = NewInvitation {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: account_id.to_owned(),
            email: email.to_owned(),
            email_norm,
            role,
            invited_by: s.user_id().to_owned(),
            code_hash: code_hash(&code),
            now,
            expires_at: now + INVITATION_TTL,
        };
        let mut ev = self.event(now, s.user_id(), None, AuditKind::MemberInvited, ctx);
        ev.detail = json!({ "account_id": account_id, "role": role.as_str(), "email": inv.email,
                            "mailed": mail.is_some() })
        .to_string();
        let r = self.store.invite(&inv, mail.as_ref(), &ev).await?.map_err(member_error);
        if r.is_ok() && mail.is_some() {
            self.mail_queued();
        }
        r
    }

    async fn account_name(&self, s: &Session, account_id: &str) -> Result<String, AppError> {
        Ok(self
            .store
            .memberships_of(s.user_id())
            .await?
            .into_iter()
            .find(|m| m.policy.account_id == account_id)
            .map(|m| m.name)
            .unwrap_or_default())
    }

    /// The open invitations addressed to `s`'s user's email.
    pub async fn my_invitations(&self, s: &Session) -> Result<Vec<InvitationRow>, AppError> {
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let email_norm = crate::normalise_email(&user.email)?;
        Ok(self.store.invitations_for(&email_norm, self.clock.now()).await?)
    }

    /// Accept an invitation addressed to `s`'s user's email, with the code its mail carried
    /// (which proves the mailbox: signing up with someone's address first is not enough);
    /// returns the account's id. `NotFound` for an invitation that is not theirs, a wrong code,
    /// or one no longer open; `FailedPrecondition` when the inviter no longer holds a role that
    /// may grant it.
    pub async fn accept_invitation(
        &self,
        s: &Session,
        id: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<String, AppError> {
        let code = parse_code(code)?;
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let email_norm = crate::normalise_email(&user.email)?;
        let now = self.clock.now();
        let ev = self.event(now, s.user_id(), None, AuditKind::InvitationAccepted, ctx);
        match self.store.accept_invitation(id, &code_hash(&code), s.user_id(), &email_norm, now, &ev).await? {
            InvitationAcceptance::Joined(account) => Ok(account),
            InvitationAcceptance::NotFound => Err(AppError::NotFound("invitation")),
            InvitationAcceptance::InviterLacksRole(_) => Err(AppError::FailedPrecondition(
                "this invitation is no longer valid: whoever sent it can no longer grant that role".into(),
            )),
        }
    }

    /// Decline an invitation addressed to `s`'s user's email, with its code (so nobody who
    /// merely signed up with that address can decline it for its owner).
    pub async fn decline_invitation(
        &self,
        s: &Session,
        id: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let code = parse_code(code)?;
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let email_norm = crate::normalise_email(&user.email)?;
        let now = self.clock.now();
        let mut ev = self.event(now, s.user_id(), None, AuditKind::InvitationClosed, ctx);
        ev.detail = json!({ "invitation_id": id, "by": "invitee" }).to_string();
        if self.store.close_invitation(id, None, Some((&email_norm, &code_hash(&code))), now, &ev).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("invitation"))
        }
    }

    /// Cancel an open invitation of an account (owners and admins; needs recent authentication).
    pub async fn cancel_invitation(
        &self,
        s: &Session,
        account_id: &str,
        id: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        self.require_admin(s, account_id).await?;
        self.require_recent(s).await?;
        let now = self.clock.now();
        let mut ev = self.event(now, s.user_id(), None, AuditKind::InvitationClosed, ctx);
        ev.detail = json!({ "invitation_id": id, "account_id": account_id, "by": "admin" }).to_string();
        if self.store.close_invitation(id, Some(account_id), None, now, &ev).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("invitation"))
        }
    }

    /// Remove a member from an account (see [`roles::may_change`]; needs recent authentication).
    pub async fn remove_member(
        &self,
        s: &Session,
        account_id: &str,
        user_id: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        self.change_member(s, account_id, user_id, None, ctx).await
    }

    /// Change a member's role (see [`roles::may_change`]; needs recent authentication).
    pub async fn change_member_role(
        &self,
        s: &Session,
        account_id: &str,
        user_id: &str,
        role: Role,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        self.change_member(s, account_id, user_id, Some(role), ctx).await
    }

    async fn change_member(
        &self,
        s: &Session,
        account_id: &str,
        user_id: &str,
        new: Option<Role>,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let target = validate::subject_id(user_id)?;
        self.require_admin(s, account_id).await?;
        self.require_recent(s).await?;
        let now = self.clock.now();
        let kind = if new.is_some() { AuditKind::MemberRoleChanged } else { AuditKind::MemberRemoved };
        let mut ev = self.event(now, target, None, kind, ctx);
        ev.actor = Some(s.user_id().to_owned());
        ev.detail = json!({ "account_id": account_id, "role": new.map(Role::as_str) }).to_string();
        self.store.change_member(account_id, s.user_id(), target, new, &ev).await?.map_err(member_error)
    }

    /// Require MFA of an account's members (or stop), with an optional grace deadline at most
    /// [`MAX_GRACE`] away (owners and admins; needs recent authentication). Turning the
    /// requirement on needs the actor to have a factor first, so they cannot lock themselves
    /// out of the account they administer.
    pub async fn set_account_policy(
        &self,
        s: &Session,
        account_id: &str,
        require_mfa: bool,
        grace_until: Option<OffsetDateTime>,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let now = self.clock.now();
        if let Some(g) = grace_until
            && (g <= now || g > now + MAX_GRACE)
        {
            return Err(CoreError::invalid("grace_until", "must be in the future and at most 90 days away").into());
        }
        self.require_admin(s, account_id).await?;
        self.require_recent(s).await?;
        if require_mfa && !self.store.has_active_factor(s.user_id()).await? {
            return Err(AppError::FailedPrecondition(
                "set up two-factor authentication for yourself first, so you are not locked out of this account".into(),
            ));
        }
        let grace_until = grace_until.filter(|_| require_mfa);
        let was_required = self.store.account_policy(account_id).await?.is_some_and(|p| p.require_mfa);
        if !self.store.set_account_policy(account_id, require_mfa, grace_until).await? {
            return Err(AppError::NotFound("account"));
        }
        if require_mfa && !was_required {
            self.mfa_required_notices(s, account_id, grace_until, now).await?;
        }
        let mut ev = self.event(now, s.user_id(), None, AuditKind::AccountPolicyChanged, ctx);
        ev.detail = json!({ "account_id": account_id, "require_mfa": require_mfa,
                            "grace_until": grace_until.map(|t| t.unix_timestamp()) })
        .to_string();
        self.store.append_audit(&ev).await?;
        Ok(())
    }

    /// An account starts to require MFA: tell each member who has no factor yet, with the
    /// grace deadline (if any) after which the account is closed to them until they set one up.
    async fn mfa_required_notices(
        &self,
        s: &Session,
        account_id: &str,
        grace_until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), AppError> {
        let name = self.account_name(s, account_id).await?;
        for m in self.store.members_of(account_id).await?.into_iter().filter(|m| !m.has_mfa) {
            let detail = json!({ "at": now.unix_timestamp(), "account": name,
                                 "grace_until": grace_until.map(|t| t.unix_timestamp()) });
            // A policy switched off and on again does not mail every member each time.
            if let Some(user) = self.store.user_by_id(&m.user_id).await? {
                self.notify_limited(&user, "mfa_required", detail, 3, time::Duration::days(1), now).await?;
            }
        }
        Ok(())
    }
}
