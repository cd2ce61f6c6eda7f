//! The account around the factor: sign-up with a verified address, a forgotten password, a
//! password change, an email change.
//!
//! Two rules hold for every mailed link: it proves a mailbox, never a factor; and it signs no
//! one in. A reset link sets a new password and nothing else: factors and recovery codes stay,
//! every session ends, and the user signs in as usual (password, then a factor if they have
//! one). A verification link marks the address proven; an email-change link moves the account
//! to the address it was mailed to. A token lives in the database only as a SHA-256, and in
//! the queued message sealed under the keyring until delivery.
//!
//! Who may do what:
//! - anyone may sign up, ask for a reset link or for a verification link again: the answer is
//!   the same for every address, known or not (sign-up closed: the same, and only invited
//!   addresses get a link);
//! - only the holder of a live link may use it, once, and only while the address it was mailed
//!   to is still the user's (an email change voids the older links);
//! - changing the password needs the current one and, from a session, the recent
//!   authentication of sensitive actions (a second factor where the user has one);
//! - changing the address needs recent authentication, and the new address's mailbox.

use crate::identity::{PasswordCheck, Suspension, new_token, normalise_email, password_subject, token_hash};
use crate::{App, AppError, ClientContext, Session};
use serde_json::json;
use tessera_core::factor::AuditKind;
use tessera_core::password::{self, Password};
use tessera_core::seal::Aad;
use tessera_store::{
    EMAIL_CHANGE, EMAIL_VERIFICATION, EmailChange, NewMailToken, NewNotification, NewUser, PASSWORD_RESET,
    PasswordChange, PasswordReset,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long a reset link works.
pub const RESET_TTL: Duration = Duration::minutes(30);
/// Reset links mailed to one user per hour at most; beyond, the same answer and no mail.
pub const RESETS_PER_HOUR: u32 = 3;
/// How long a verification or email-change link works.
pub const VERIFY_TTL: Duration = Duration::hours(24);
/// Verification links (sign-up's included) or email-change links mailed to one user per hour
/// at most; beyond, the same answer and no mail.
pub const LINKS_PER_HOUR: u32 = 3;
/// Verification mails to one address per week at most, whoever signed up with it (a stranger
/// can cause them).
pub const VERIFICATIONS_PER_ADDRESS_PER_WEEK: u32 = 6;
/// "Someone tried to create an account with your address" notices per user per day at most (a
/// stranger can cause them).
pub const SIGNUP_NOTICES_PER_DAY: u32 = 2;

/// Purpose bound into a mailed token's associated data (with the outbox row's id).
pub(crate) const MAIL_TOKEN_PURPOSE: &str = "mail-token";
/// Format version of a sealed mailed token (its characters).
pub(crate) const MAIL_TOKEN_FORMAT: u8 = 1;

/// The associated data of the token a queued message carries.
pub(crate) fn mail_aad<'a>(outbox_id: &'a str, user_id: &'a str) -> Aad<'a> {
    Aad { purpose: MAIL_TOKEN_PURPOSE, version: MAIL_TOKEN_FORMAT, factor_id: outbox_id, subject_id: user_id }
}

/// What a link's page may show before it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Live: the form (or the button) may be shown.
    Live,
    /// Unknown, used, voided or expired (one answer for all).
    Invalid,
}

/// What a password change led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordChangeOutcome {
    /// Changed; this many other sessions were signed out.
    Changed {
        /// Other sessions ended.
        sessions_revoked: u64,
    },
    /// The current password was wrong (it counts as a failed sign-in).
    WrongPassword,
    /// Too many wrong passwords from here: try again then.
    Locked {
        /// End of the lock.
        until: OffsetDateTime,
    },
    /// Password sign-in of this address is suspended after 100 failures: reset it by email.
    Suspended,
}

/// What confirming an address led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Confirmed: the user may sign in.
    Verified,
    /// The password was wrong (it counts as a failed sign-in); the link stays usable.
    WrongPassword,
    /// Too many wrong passwords from here: try again then.
    Locked {
        /// End of the lock.
        until: OffsetDateTime,
    },
    /// Password sign-in of this address is suspended after 100 failures.
    Suspended,
}

/// A message with a link, ready to queue: the token (for the store, as its hash) and the
/// message that carries it sealed.
struct LinkMail {
    hash: Vec<u8>,
    notice: NewNotification,
}

/// Whether mail may go to this user: a verified one, or one who signed up within
/// [`VERIFY_TTL`] (after that an unconfirmed sign-up gets nothing more, and its address is free
/// for the next sign-up once its links have expired).
fn pending_or_verified(u: &tessera_store::UserRow, now: OffsetDateTime) -> bool {
    u.email_verified || u.created_at > now - VERIFY_TTL
}

/// When and from where something happened, as a notice's detail.
pub(crate) fn event_detail(now: OffsetDateTime, ctx: &ClientContext) -> serde_json::Value {
    json!({ "at": now.unix_timestamp(), "ip": ctx.ip(), "user_agent": ctx.user_agent() })
}

fn link_invalid() -> AppError {
    AppError::FailedPrecondition("this link has expired or was already used; request a new one".into())
}

/// An address shown in a message to another address: its first character and its domain.
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}…@{domain}", local.chars().next().unwrap_or('?')),
        None => "another address".to_owned(),
    }
}

impl App {
    /// Mail a password-reset link to `email` if it is a user's. The answer is the same for
    /// every well-formed address, known or not, and whether or not a mail went out (at most
    /// [`RESETS_PER_HOUR`] per user). A newer link voids the older.
    pub async fn request_password_reset(&self, email: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let email_norm = normalise_email(email)?;
        let now = self.clock.now();
        let Some(user) = self.store.user_by_email(&email_norm).await?.filter(|u| pending_or_verified(u, now)) else {
            return Ok(());
        };
        let detail = json!({ "minutes": RESET_TTL.whole_minutes() });
        let mail = self.link_mail(&user.id, &user.email, "password_reset", detail, now, ctx)?;
        let t = NewMailToken {
            token_hash: &mail.hash,
            user_id: &user.id,
            purpose: PASSWORD_RESET,
            email: &user.email,
            expires_at: now + RESET_TTL,
        };
        if self.store.issue_mail_token(&t, &mail.notice, now - Duration::hours(1), RESETS_PER_HOUR, now).await? {
            self.mail_queued();
            self.store.append_audit(&self.event(now, &user.id, None, AuditKind::PasswordResetRequested, ctx)).await?;
        } else {
            tracing::info!(user_id = %user.id, "password reset not mailed: {RESETS_PER_HOUR} links in the last hour");
        }
        Ok(())
    }

    /// A message of `kind` to `to` carrying a fresh link token, sealed under the keyring with
    /// the message's id and the user bound in; `detail` gains when and from where.
    fn link_mail(
        &self,
        user_id: &str,
        to: &str,
        kind: &str,
        mut detail: serde_json::Value,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<LinkMail, AppError> {
        let token = new_token()?;
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = self.keys.get().seal(&mail_aad(&id, user_id), token.as_bytes())?;
        if let Some(d) = detail.as_object_mut() {
            d.insert("at".into(), now.unix_timestamp().into());
            d.insert("ip".into(), ctx.ip().into());
            d.insert("user_agent".into(), ctx.user_agent().into());
        }
        let notice = NewNotification {
            id,
            user_id: user_id.to_owned(),
            email: to.to_owned(),
            kind: kind.to_owned(),
            detail: detail.to_string(),
            secret: Some(crate::factors::to_sealed(sealed)),
        };
        Ok(LinkMail { hash: token_hash(&token), notice })
    }

    /// As [`App::request_password_reset`], answered at once: the address is checked for shape
    /// here, and the rest (the lookup, and for a user the token, the sealed mail and the audit
    /// row) runs on its own task, so a known address takes no longer to answer than an unknown
    /// one. What transports call.
    pub fn request_password_reset_in_background(&self, email: &str, ctx: &ClientContext) -> Result<(), AppError> {
        normalise_email(email)?;
        let (email, ctx) = (email.to_owned(), ctx.clone());
        self.in_background("password reset request", move |app| async move {
            app.request_password_reset(&email, &ctx).await
        });
        Ok(())
    }

    /// Whether a reset link's token is live (for its page; using it is
    /// [`App::complete_password_reset`]).
    pub async fn password_reset_link(&self, token: &str) -> Result<LinkState, AppError> {
        self.link_state(token, PASSWORD_RESET).await
    }

    async fn link_state(&self, token: &str, purpose: &str) -> Result<LinkState, AppError> {
        Ok(match self.store.mail_token_user(&token_hash(token), purpose, self.clock.now()).await? {
            Some(_) => LinkState::Live,
            None => LinkState::Invalid,
        })
    }

    /// Set a new password with a reset link's token. The password meets the rules of sign-up
    /// (length, context words, the breached-password check). On success: the link is used,
    /// the user's other links and open login challenges are void, every session ends, the
    /// password failures of the email are cleared (which lifts a suspension), an audit event
    /// and a notice are written; factors and recovery codes are untouched, and nobody is
    /// signed in. `FailedPrecondition` for a token that is unknown, used, voided or expired.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let invalid = link_invalid;
        let hash = token_hash(token);
        let user_id = self.store.mail_token_user(&hash, PASSWORD_RESET, self.clock.now()).await?.ok_or_else(invalid)?;
        let user = self.store.user_by_id(&user_id).await?.ok_or_else(invalid)?;
        let p = Password::new_checked(new_password, self.config.min_password_chars)?;
        password::check_context_words(&p, &user.email, &self.config.issuer)?;
        self.pwned.check(&p).await?;
        let phc = Zeroizing::new(self.hash_password(p).await?);
        let now = self.clock.now();
        let audit = self.event(now, &user.id, None, AuditKind::PasswordReset, ctx);
        let passkeys = self.store.webauthn_credentials(&user.id).await?;
        let passkeys = passkeys.iter().filter(|c| c.factor.kind == tessera_core::factor::FactorKind::Passkey).count();
        let mut detail = event_detail(now, ctx);
        if let Some(d) = detail.as_object_mut() {
            d.insert("passkeys".into(), serde_json::json!(passkeys));
        }
        let notice = crate::identity::notice_to(&user, "password_reset_done", detail);
        let r = PasswordReset {
            token_hash: &hash,
            user_id: &user.id,
            password_hash: &phc,
            password_attempts: &password_subject(&normalise_email(&user.email)?),
            audit: &audit,
            notice: &notice,
            now,
        };
        if !self.store.reset_password(&r).await? {
            return Err(invalid());
        }
        self.mail_queued();
        tracing::info!(user_id = %user.id, "password set with a reset link; sessions revoked");
        Ok(())
    }
}

impl App {
    /// Run `work` on its own task, after the caller has answered: for work whose duration
    /// would tell a known address from an unknown one. A failure is logged (`what` names it).
    fn in_background<F, Fut>(&self, what: &'static str, work: F)
    where
        F: FnOnce(App) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), AppError>> + Send + 'static,
    {
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(e) = work(app).await {
                tracing::warn!(error = %e, "{what} failed");
            }
        });
    }

    /// Check `user`'s password as a sign-in would (the locks; `suspension` says how a suspended
    /// address is treated): the user as checked (a rehash may have changed its hash), or why not.
    async fn prove_password(
        &self,
        user: &tessera_store::UserRow,
        password: &str,
        ctx: &ClientContext,
        suspension: Suspension,
        accept_unverified: bool,
    ) -> Result<Result<Box<tessera_store::UserRow>, PasswordRefusal>, AppError> {
        Ok(match self.check_password(&user.email, password, ctx, suspension, accept_unverified).await? {
            PasswordCheck::Ok(u) if u.id == user.id => Ok(u),
            PasswordCheck::Ok(_) | PasswordCheck::Failed => Err(PasswordRefusal::Wrong),
            PasswordCheck::Locked(until) => Err(PasswordRefusal::Locked(until)),
            PasswordCheck::Suspended => Err(PasswordRefusal::Suspended),
        })
    }
}

/// Why a password was not accepted in a session's or a link's form.
enum PasswordRefusal {
    Wrong,
    Locked(OffsetDateTime),
    Suspended,
}

/// A sign-up's input, checked: what every answer to it waits for (so a known and an unknown
/// address take the same time to answer).
struct CheckedSignUp {
    email: String,
    email_norm: String,
    password: Password,
}

impl App {
    /// Check a sign-up's input: the address (usable as the account name authenticator apps
    /// show, deliverable) and the password (length after NFKC; none of the email's or the
    /// service's name; not breached). Independent of whether the address is a user's.
    async fn check_sign_up(&self, email: &str, password: &str) -> Result<CheckedSignUp, AppError> {
        // The email becomes the account name at enrolment: refuse here what enrolment would.
        tessera_core::validate::display_name("email", email, tessera_core::validate::MAX_ACCOUNT_NAME_CHARS)?;
        let email_norm = normalise_email(email)?;
        let p = Password::new_checked(password, self.config.min_password_chars)?;
        password::check_context_words(&p, email, &self.config.issuer)?;
        self.pwned.check(&p).await?;
        Ok(CheckedSignUp { email: email.trim().to_owned(), email_norm, password: p })
    }

    /// Insert the user (verified, or with a verification link in the same transaction); `None`
    /// when the address is taken.
    async fn insert_user(
        &self,
        c: CheckedSignUp,
        verified: bool,
        self_registered: bool,
        ctx: &ClientContext,
    ) -> Result<Option<String>, AppError> {
        let hash = Zeroizing::new(self.hash_password(c.password).await?);
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        let u = NewUser {
            id: &id,
            email: &c.email,
            email_norm: &c.email_norm,
            password_hash: &hash,
            verified,
            pending_until: now - VERIFY_TTL,
            self_registered,
        };
        let created = if verified {
            self.store.create_user(&u, None, now).await?
        } else {
            let detail = json!({ "hours": VERIFY_TTL.whole_hours() });
            let mail = self.link_mail(&id, &c.email, "verify_email", detail, now, ctx)?;
            let t = NewMailToken {
                token_hash: &mail.hash,
                user_id: &id,
                purpose: EMAIL_VERIFICATION,
                email: &c.email,
                expires_at: now + VERIFY_TTL,
            };
            self.store.create_user(&u, Some((&t, &mail.notice)), now).await?
        };
        if !created {
            return Ok(None);
        }
        self.store.append_audit(&self.event(now, &id, None, AuditKind::UserCreated, ctx)).await?;
        if !verified {
            self.mail_queued();
            self.store.append_audit(&self.event(now, &id, None, AuditKind::EmailVerificationSent, ctx)).await?;
        }
        Ok(Some(id))
    }

    /// Create a user whose address the caller vouches for (an operator, or a service that
    /// verified it itself): they may sign in at once. `FailedPrecondition` when the address is
    /// taken (this is a service's call, not the public sign-up: see [`App::sign_up`]). Returns
    /// the user id.
    pub async fn create_user(&self, email: &str, password: &str, ctx: &ClientContext) -> Result<String, AppError> {
        self.register(email, password, true, ctx).await
    }

    /// Create a user for a service, verified or not; an unverified one is mailed a link and
    /// cannot sign in until they follow it. `FailedPrecondition` when the address is taken.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        verified: bool,
        ctx: &ClientContext,
    ) -> Result<String, AppError> {
        let c = self.check_sign_up(email, password).await?;
        self.insert_user(c, verified, false, ctx)
            .await?
            .ok_or_else(|| AppError::FailedPrecondition("an account with this email already exists".into()))
    }

    /// The public sign-up: one answer for every address. A new address gets an unverified
    /// user and a verification link; a registered one a notice ("someone tried to create an
    /// account with your address"; at most [`SIGNUP_NOTICES_PER_DAY`]); with sign-up closed,
    /// only an address with an open invitation gets anything. Nobody is signed in.
    pub async fn sign_up(&self, email: &str, password: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let c = self.check_sign_up(email, password).await?;
        self.finish_sign_up(c, ctx).await
    }

    /// As [`App::sign_up`], answered once the input is checked: the rest (the hash, the insert
    /// or the notice) runs on its own task, so a registered address takes no longer to answer
    /// than a new one. What transports call.
    pub async fn sign_up_in_background(
        &self,
        email: &str,
        password: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let c = self.check_sign_up(email, password).await?;
        let ctx = ctx.clone();
        self.in_background("sign-up", move |app| async move { app.finish_sign_up(c, &ctx).await });
        Ok(())
    }

    async fn finish_sign_up(&self, c: CheckedSignUp, ctx: &ClientContext) -> Result<(), AppError> {
        let now = self.clock.now();
        if !self.config.signup_open && !self.store.is_invited(&c.email_norm, now).await? {
            tracing::info!("sign-up refused: sign-up is by invitation only");
            return Ok(());
        }
        let email_norm = c.email_norm.clone();
        if self.verification_mails_capped(&email_norm, now).await? {
            return Ok(());
        }
        if self.insert_user(c, false, true, ctx).await?.is_some() {
            return Ok(());
        }
        let Some(user) = self.store.user_by_email(&email_norm).await? else { return Ok(()) };
        if !user.email_verified {
            // Someone signed up with this address and has not confirmed it: a new link (within
            // the limits) is what its owner can use; "you already have an account" is not true.
            if pending_or_verified(&user, now) {
                self.send_email_verification(&user.email, ctx).await?;
            }
            return Ok(());
        }
        self.notify_limited(
            &user,
            "signup_existing",
            event_detail(now, ctx),
            SIGNUP_NOTICES_PER_DAY,
            Duration::days(1),
            now,
        )
        .await?;
        Ok(())
    }

    /// Whether an address has had [`VERIFICATIONS_PER_ADDRESS_PER_WEEK`] verification mails in
    /// the last week (counted by address, so replacing an expired sign-up does not start the
    /// count again): then no more go to it.
    async fn verification_mails_capped(&self, email_norm: &str, now: OffsetDateTime) -> Result<bool, AppError> {
        let sent = self.store.mails_to_address(email_norm, "verify_email", now - Duration::days(7)).await?;
        if sent >= VERIFICATIONS_PER_ADDRESS_PER_WEEK {
            tracing::info!("no verification mail: {VERIFICATIONS_PER_ADDRESS_PER_WEEK} to this address this week");
            return Ok(true);
        }
        Ok(false)
    }

    /// Mail a new verification link to `email` if it is an unverified user's (at most
    /// [`LINKS_PER_HOUR`], sign-up's included; a newer link voids the older). The same answer
    /// for every well-formed address.
    pub async fn send_email_verification(&self, email: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let email_norm = normalise_email(email)?;
        let now = self.clock.now();
        let Some(user) =
            self.store.user_by_email(&email_norm).await?.filter(|u| !u.email_verified && pending_or_verified(u, now))
        else {
            return Ok(());
        };
        if self.verification_mails_capped(&email_norm, now).await? {
            return Ok(());
        }
        let mail = self.link_mail(&user.id, &user.email, "verify_email", json!({ "hours": 24 }), now, ctx)?;
        let t = NewMailToken {
            token_hash: &mail.hash,
            user_id: &user.id,
            purpose: EMAIL_VERIFICATION,
            email: &user.email,
            expires_at: now + VERIFY_TTL,
        };
        if self.store.issue_mail_token(&t, &mail.notice, now - Duration::hours(1), LINKS_PER_HOUR, now).await? {
            self.mail_queued();
            self.store.append_audit(&self.event(now, &user.id, None, AuditKind::EmailVerificationSent, ctx)).await?;
        }
        Ok(())
    }

    /// As [`App::send_email_verification`], answered at once (the rest on its own task).
    pub fn send_email_verification_in_background(&self, email: &str, ctx: &ClientContext) -> Result<(), AppError> {
        normalise_email(email)?;
        let (email, ctx) = (email.to_owned(), ctx.clone());
        self.in_background(
            "verification mail",
            move |app| async move { app.send_email_verification(&email, &ctx).await },
        );
        Ok(())
    }

    /// Whether a verification link's token is live (for its page, which shows a button: mail
    /// scanners fetch links, and a GET must change nothing).
    pub async fn email_verification_link(&self, token: &str) -> Result<LinkState, AppError> {
        self.link_state(token, EMAIL_VERIFICATION).await
    }

    /// Verify an address with a link's token and the account's password: single use, 24
    /// hours, only while the address it was mailed to is still the user's. The password (checked
    /// and throttled as a sign-in's) makes sure the one who confirms is the one who signed up:
    /// someone who opened an account with another person's address cannot have that person
    /// confirm it for them by clicking the link (account pre-hijacking). Signs nobody in.
    /// `FailedPrecondition` for a token that is unknown, used, voided or expired; a wrong
    /// password leaves the link usable.
    pub async fn verify_email(
        &self,
        token: &str,
        password: &str,
        ctx: &ClientContext,
    ) -> Result<VerifyOutcome, AppError> {
        let hash = token_hash(token);
        let now = self.clock.now();
        let user_id = self.store.mail_token_user(&hash, EMAIL_VERIFICATION, now).await?.ok_or_else(link_invalid)?;
        let user = self.store.user_by_id(&user_id).await?.ok_or_else(link_invalid)?;
        match self.prove_password(&user, password, ctx, Suspension::KnownBrowsersOnly, true).await? {
            Ok(_) => {}
            Err(PasswordRefusal::Wrong) => return Ok(VerifyOutcome::WrongPassword),
            Err(PasswordRefusal::Locked(until)) => return Ok(VerifyOutcome::Locked { until }),
            Err(PasswordRefusal::Suspended) => return Ok(VerifyOutcome::Suspended),
        }
        let now = self.clock.now();
        let audit = self.event(now, &user_id, None, AuditKind::EmailVerified, ctx);
        if !self.store.verify_email(&hash, &user_id, &audit, now).await? {
            return Err(link_invalid());
        }
        tracing::info!(user_id = %user_id, "email address verified");
        Ok(VerifyOutcome::Verified)
    }

    /// Change the password in session `s`: the current password (throttled like a sign-in,
    /// never past a suspension), the recent authentication of sensitive actions, and a new
    /// password that meets the rules of sign-up. Every other session ends, every mailed link
    /// and login challenge is void, every other known browser is forgotten (known browsers may
    /// pass a password suspension); an audit event and a notice are written.
    pub async fn change_password(
        &self,
        s: &Session,
        current: &str,
        new_password: &str,
        ctx: &ClientContext,
    ) -> Result<PasswordChangeOutcome, AppError> {
        self.require_recent(s).await?;
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let p = Password::new_checked(new_password, self.config.min_password_chars)?;
        password::check_context_words(&p, &user.email, &self.config.issuer)?;
        self.pwned.check(&p).await?;
        let user = match self.prove_password(&user, current, ctx, Suspension::Refuse, false).await? {
            Ok(u) => u,
            Err(PasswordRefusal::Wrong) => return Ok(PasswordChangeOutcome::WrongPassword),
            Err(PasswordRefusal::Locked(until)) => return Ok(PasswordChangeOutcome::Locked { until }),
            Err(PasswordRefusal::Suspended) => return Ok(PasswordChangeOutcome::Suspended),
        };
        let new_hash = Zeroizing::new(self.hash_password(p).await?);
        let now = self.clock.now();
        let audit = self.event(now, &user.id, None, AuditKind::PasswordChanged, ctx);
        let keep_browser = ctx.browser.as_deref().filter(|t| crate::well_formed_token(t)).map(token_hash);
        let notice = crate::identity::notice_to(&user, "password_changed", event_detail(now, ctx));
        let c = PasswordChange {
            user_id: &user.id,
            old_hash: &user.password_hash,
            new_hash: &new_hash,
            keep_session: s.id(),
            keep_browser: keep_browser.as_deref(),
            audit: &audit,
            notice: &notice,
            now,
        };
        // `None`: changed by someone else between the check and the write — the one checked
        // is no longer the password.
        let Some(sessions_revoked) = self.store.change_password(&c).await? else {
            return Ok(PasswordChangeOutcome::WrongPassword);
        };
        self.mail_queued();
        tracing::info!(user_id = %user.id, sessions_revoked, "password changed");
        Ok(PasswordChangeOutcome::Changed { sessions_revoked })
    }

    /// Ask to move the account of session `s` to `new_email` (needs recent authentication): a
    /// link goes to the new address (at most [`LINKS_PER_HOUR`]); following it, signed in as
    /// this user, makes the change. The same answer, audit row and timing when the address is
    /// another user's (and then no mail): the lookup and the mail run on their own task, so a
    /// session cannot probe which addresses have accounts.
    pub async fn request_email_change(
        &self,
        s: &Session,
        new_email: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        self.require_recent(s).await?;
        tessera_core::validate::display_name("email", new_email, tessera_core::validate::MAX_ACCOUNT_NAME_CHARS)?;
        let email_norm = normalise_email(new_email)?;
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        if normalise_email(&user.email)? == email_norm {
            return Err(AppError::Invalid(tessera_core::CoreError::invalid("email", "is already your address")));
        }
        let now = self.clock.now();
        self.store.append_audit(&self.event(now, &user.id, None, AuditKind::EmailChangeRequested, ctx)).await?;
        let (new_email, ctx) = (new_email.trim().to_owned(), ctx.clone());
        self.in_background("email change mail", move |app| async move {
            app.mail_email_change(&user, &new_email, &email_norm, &ctx).await
        });
        Ok(())
    }

    async fn mail_email_change(
        &self,
        user: &tessera_store::UserRow,
        new_email: &str,
        email_norm: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let now = self.clock.now();
        if self.store.user_by_email(email_norm).await?.is_some_and(|u| pending_or_verified(&u, now)) {
            tracing::info!(user_id = %user.id, "email change not mailed: the address is another user's");
            return Ok(());
        }
        let detail = json!({ "hours": VERIFY_TTL.whole_hours() });
        let mail = self.link_mail(&user.id, new_email, "email_change", detail, now, ctx)?;
        let t = NewMailToken {
            token_hash: &mail.hash,
            user_id: &user.id,
            purpose: EMAIL_CHANGE,
            email: new_email,
            expires_at: now + VERIFY_TTL,
        };
        if self.store.issue_mail_token(&t, &mail.notice, now - Duration::hours(1), LINKS_PER_HOUR, now).await? {
            self.mail_queued();
        }
        Ok(())
    }

    /// Whether an email-change link's token is live (for its page).
    pub async fn email_change_link(&self, token: &str) -> Result<LinkState, AppError> {
        self.link_state(token, EMAIL_CHANGE).await
    }

    /// Move the account to the address an email-change link was mailed to (which it proves),
    /// in a session of the user who asked: the mailbox alone must not move someone's account to
    /// it (whoever asked to move *their* account to a victim's address could otherwise have the
    /// victim confirm it, and hold a verified account under the victim's address). Single use,
    /// 24 hours. The old address is told (when, from where, and the new address masked); every
    /// outstanding link is void; sessions stay. `FailedPrecondition` for a token that is
    /// unknown, used, voided, expired or another user's, or when another account has taken the
    /// address since.
    pub async fn confirm_email_change(&self, s: &Session, token: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let hash = token_hash(token);
        let now = self.clock.now();
        let (user_id, new_email) = self.store.mail_token(&hash, EMAIL_CHANGE, now).await?.ok_or_else(link_invalid)?;
        if user_id != s.user_id() {
            return Err(AppError::FailedPrecondition(
                "this link is for another account: sign in as the account that asked for the change, then open it \
                 again"
                    .into(),
            ));
        }
        let user = self.store.user_by_id(&user_id).await?.ok_or_else(link_invalid)?;
        let new_norm = normalise_email(&new_email)?;
        let audit = self.event(now, &user.id, None, AuditKind::EmailChanged, ctx);
        let mut detail = event_detail(now, ctx);
        if let Some(d) = detail.as_object_mut() {
            d.insert("new".into(), masked(&new_email).into());
        }
        let notice = crate::identity::notice_to(&user, "email_changed", detail);
        match self.store.change_email(&hash, &user.id, &new_norm, now - VERIFY_TTL, &audit, &notice, now).await? {
            EmailChange::Changed => {}
            EmailChange::Invalid => return Err(link_invalid()),
            EmailChange::Taken => {
                return Err(AppError::FailedPrecondition(
                    "another account uses this address now; nothing was changed".into(),
                ));
            }
        }
        self.mail_queued();
        tracing::info!(user_id = %user.id, "email address changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masked_addresses() {
        assert_eq!(super::masked("ada@example.com"), "a…@example.com");
        assert_eq!(super::masked("nonsense"), "another address");
    }
}
