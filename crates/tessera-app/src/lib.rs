//! Tessera's use cases — enrol, confirm, verify, redeem, regenerate, list, remove, audit,
//! key rotation. Transports (gRPC, web, CLI) call only these; this is the only place a use
//! case is written. Each one validates its input, orchestrates core rules and store
//! operations, and writes an audit event.
//!
//! Architecture invariant: no transport type (protobuf, HTTP) appears here, and no SQL.

mod accounts;
mod authorize;
mod error;
mod factors;
mod hashing;
mod identity;
pub mod keyfile;
mod keys;
mod lifecycle;
mod mail;
mod outbox;
mod pwned;
mod self_service;
mod sessions;
mod trust;
mod webauthn;

pub use accounts::{
    INVITATION_MAILS_PER_ADDRESS_PER_DAY, INVITATION_MAILS_PER_DAY, INVITATION_MAILS_PER_INVITER_PER_DAY,
    INVITATION_TTL, MAX_GRACE,
};
pub use authorize::{Authorization, Credential, Decision, Principal, Required};
pub use error::AppError;
pub use factors::{ConfirmOutcome, EnrollRequest, Enrollment, Outcome, PENDING_TTL};
pub use identity::{CHALLENGE_TTL, LoginOutcome, normalise_email, well_formed_token};
pub use keyfile::KeyringSource;
pub use keys::{KeyStatus, ReencryptReport};
pub use lifecycle::{
    LINKS_PER_HOUR, LinkState, PasswordChangeOutcome, RESET_TTL, RESETS_PER_HOUR, SIGNUP_NOTICES_PER_DAY,
    VERIFICATIONS_PER_ADDRESS_PER_WEEK, VERIFY_TTL, VerifyOutcome,
};
pub use outbox::{DeliveryReport, MAX_DELIVERY_ATTEMPTS, Mailer};
pub use pwned::{FailureMode, PwnedChecker, PwnedConfig, PwnedSource};
pub use sessions::{Proof, Session};
pub use tessera_store::TrustRow;
pub use tessera_store::{AuditEvent, InvitationRow, MemberRow, MembershipRow};
pub use trust::TRUST_TTL;
pub use webauthn::{CEREMONY_TTL, CeremonyStart, KeyOutcome, KeyRefusal, MAX_WEBAUTHN_CREDENTIALS, SecondSteps};

use std::sync::Arc;
use tessera_core::clock::Clock;
use tessera_core::otp::Window;
use tessera_core::session::SessionPolicy;
use tessera_core::throttle::ThrottlePolicy;
use tessera_store::Store;

/// Settings of the use cases.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Issuer shown in authenticator apps (the `issuer` of the otpauth URI).
    pub issuer: String,
    /// Steps accepted around the current one.
    pub window: Window,
    /// Lockout rule for second-factor attempts.
    pub throttle: ThrottlePolicy,
    /// Most factors (pending or active) one subject may have.
    pub max_factors_per_subject: u32,
    /// Shortest new password, in characters.
    pub min_password_chars: usize,
    /// Lockout rule for password attempts (a counter of its own).
    pub password_throttle: ThrottlePolicy,
    /// The breached-password check for new passwords.
    pub pwned: PwnedConfig,
    /// Session lifetime, idle timeout and the re-authentication window.
    pub sessions: SessionPolicy,
    /// The base of every absolute URL Tessera writes (links in mail), e.g.
    /// `https://mfa.example.com`; never taken from a request's `Host`.
    pub public_url: String,
    /// Whether anyone may sign up (`true`), or only addresses with an open invitation.
    pub signup_open: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            issuer: "Tessera".into(),
            window: Window::default(),
            throttle: ThrottlePolicy::default(),
            max_factors_per_subject: 10,
            min_password_chars: tessera_core::password::DEFAULT_MIN_CHARS,
            password_throttle: ThrottlePolicy::default(),
            pwned: PwnedConfig::default(),
            sessions: SessionPolicy::default(),
            public_url: "http://localhost:8080".into(),
            signup_open: true,
        }
    }
}

/// Where a request came from, for the audit trail and the throttles. Every field is optional;
/// the address and agent are truncated.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientContext {
    /// Client IP address as the transport saw it (password failures are counted per address).
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// The client's known-browser token (a long-lived cookie the pages keep), if it has one: a
    /// browser that completed a sign-in of a user may still sign that user in while password
    /// sign-in is suspended for too many failures elsewhere.
    pub browser: Option<String>,
    /// The client's "trust this browser" token (a cookie the pages keep for 30 days), if it
    /// has one: with it, a sign-in of the user who trusted this browser asks for the password
    /// only.
    pub trust: Option<String>,
}

impl std::fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientContext")
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field("browser", &self.browser.as_ref().map(|_| "[REDACTED]"))
            .field("trust", &self.trust.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl ClientContext {
    fn clean(v: &Option<String>, max: usize) -> Option<String> {
        v.as_deref()
            .map(|s| s.chars().filter(|c| !c.is_control()).take(max).collect::<String>())
            .filter(|s| !s.is_empty())
    }
    pub(crate) fn ip(&self) -> Option<String> {
        Self::clean(&self.ip, 64)
    }
    pub(crate) fn user_agent(&self) -> Option<String> {
        Self::clean(&self.user_agent, 256)
    }
}

/// The use cases, over a store, a keyring and a clock. Cheap to clone.
#[derive(Debug, Clone)]
pub struct App {
    store: Store,
    keys: KeyringSource,
    clock: Arc<dyn Clock>,
    config: Arc<AppConfig>,
    /// The argon2id threads (one per core; see `hashing`).
    hashers: hashing::Hashers,
    password_verifications: Arc<std::sync::atomic::AtomicU64>,
    pwned: PwnedChecker,
    /// Woken when a use case has queued mail, so delivery need not wait for its next pass.
    outbox: Arc<tokio::sync::Notify>,
    /// The WebAuthn relying party of `config.public_url`.
    webauthn: Arc<webauthn::RelyingParty>,
}

impl App {
    /// Assemble the use cases.
    pub fn new(store: Store, keys: KeyringSource, clock: Arc<dyn Clock>, config: AppConfig) -> Self {
        // If the HTTP client cannot be built, the check cannot answer and its failure mode
        // decides (never silently off).
        let pwned = PwnedChecker::new(config.pwned.clone()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "breached-password client unavailable");
            PwnedChecker::without_client(config.pwned.clone())
        });
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let webauthn = Arc::new(webauthn::RelyingParty::new(&config.public_url, &config.issuer));
        Self {
            webauthn,
            store,
            keys,
            clock,
            config: Arc::new(config),
            hashers: hashing::Hashers::new(cores),
            password_verifications: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            pwned,
            outbox: Arc::new(tokio::sync::Notify::new()),
        }
    }
    /// The store (for health checks and the composition root).
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// The keyring source (the composition root watches its file).
    pub fn keys(&self) -> &KeyringSource {
        &self.keys
    }
    /// The settings.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }
}

impl App {
    /// Woken (a permit stored if nobody waits) each time a use case has queued mail: the
    /// delivery loop waits on it between passes.
    pub fn outbox_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    pub(crate) fn mail_queued(&self) {
        self.outbox.notify_one();
    }
}
