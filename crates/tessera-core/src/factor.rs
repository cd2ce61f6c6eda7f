//! Factors ("an additional factor" of a subject) and the audit vocabulary: the domain forms
//! that the store persists and the transports convert.

use time::OffsetDateTime;

/// What kind of factor. TOTP is the first; the store is generic over kinds. Its storage name
/// is the snake_case variant name (`strum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum FactorKind {
    /// An RFC 6238 authenticator app.
    Totp,
    /// A WebAuthn credential used after the password (user presence; verification preferred).
    SecurityKey,
    /// A discoverable WebAuthn credential with user verification: signs in on its own, and
    /// serves as a second factor too.
    Passkey,
}

impl FactorKind {
    /// Whether this kind is a WebAuthn credential.
    pub fn is_webauthn(self) -> bool {
        matches!(self, Self::SecurityKey | Self::Passkey)
    }
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// Parse the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// Pending until confirmed with a first code; only active factors verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum FactorStatus {
    /// Enrolled but not yet confirmed.
    Pending,
    /// Confirmed; used at login.
    Active,
}

impl FactorStatus {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// Parse the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A factor as the domain sees it (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    /// Factor id (UUID).
    pub id: String,
    /// Owner.
    pub subject_id: String,
    /// Kind.
    pub kind: FactorKind,
    /// User-chosen label, e.g. "Work phone".
    pub label: String,
    /// Pending or active.
    pub status: FactorStatus,
    /// When enrolled.
    pub created_at: OffsetDateTime,
    /// When confirmed.
    pub confirmed_at: Option<OffsetDateTime>,
    /// When last used to verify.
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was taken out of use after too many consecutive failures (it still counts as
    /// the subject's factor; only removing it, or a support reset, clears it).
    pub disabled_at: Option<OffsetDateTime>,
    /// A pending device: the id of the session that started it (only that session may see its
    /// key or confirm it); `None` when a service enrolled it over gRPC.
    pub started_in: Option<String>,
}

/// Kinds of audit event. The storage name is the snake_case variant name (`strum`); stored
/// names are never renamed (old rows keep them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum AuditKind {
    /// A TOTP device was enrolled (pending).
    TotpEnrolled,
    /// A TOTP device was confirmed (active).
    TotpConfirmed,
    /// A confirmation code did not match.
    TotpConfirmFailed,
    /// A TOTP code was accepted.
    TotpVerified,
    /// A TOTP code was refused (wrong, or replayed).
    TotpRejected,
    /// An attempt was refused because the subject is locked.
    AttemptWhileLocked,
    /// The subject was locked after too many failures.
    Locked,
    /// A new batch of recovery codes was issued.
    RecoveryCodesGenerated,
    /// A recovery code was redeemed.
    RecoveryCodeRedeemed,
    /// A recovery code was refused.
    RecoveryCodeRejected,
    /// A factor was removed.
    FactorRemoved,
    /// A user signed up.
    UserCreated,
    /// A password was wrong (or the email unknown: recorded against the user when known).
    PasswordRejected,
    /// A login completed (detail says with which assurance).
    LoginSucceeded,
    /// A login passed the password and now waits for the second factor.
    SecondFactorChallenged,
    /// Open login challenges were voided (the second factor got locked).
    ChallengesVoided,
    /// A session was revoked (logout), or all of them.
    SessionsRevoked,
    /// An account was created.
    AccountCreated,
    /// A member was added to an account.
    MemberAdded,
    /// An account's MFA policy changed.
    AccountPolicyChanged,
    /// Support removed every factor of a user after verifying them out of band.
    SupportMfaReset,
    /// A session proved a factor (or the password) again and got a new token.
    Reauthenticated,
    /// TOTP devices were taken out of use after too many consecutive failures.
    TotpDisabled,
    /// Password sign-in for an email was suspended (except from known browsers) after too many
    /// consecutive failures.
    PasswordSignInSuspended,
    /// Someone was invited to an account.
    MemberInvited,
    /// An invitation was accepted.
    InvitationAccepted,
    /// An invitation was declined by the invitee or cancelled by an admin.
    InvitationClosed,
    /// A member was removed from an account.
    MemberRemoved,
    /// A member's role changed.
    MemberRoleChanged,
    /// A password-reset link was mailed.
    PasswordResetRequested,
    /// The password was set with a reset link.
    PasswordReset,
    /// An email-verification link was mailed.
    EmailVerificationSent,
    /// The user's address was verified with a mailed link.
    EmailVerified,
    /// The password was changed in a session.
    PasswordChanged,
    /// An email change was asked for (a link mailed to the new address).
    EmailChangeRequested,
    /// The user's address changed (the link to the new one was followed).
    EmailChanged,
    /// A security key or passkey was registered (active at once: the ceremony proved it).
    WebauthnRegistered,
    /// A registration ceremony's answer was refused.
    WebauthnRegistrationFailed,
    /// A security key or passkey assertion was accepted.
    WebauthnVerified,
    /// A security key or passkey assertion was refused (bad signature, origin, ceremony…).
    WebauthnRejected,
    /// An assertion's signature counter did not go forward: the credential may have been
    /// cloned. Refused.
    WebauthnCounterRegressed,
    /// A browser was trusted for password-only sign-in ("trust this browser").
    BrowserTrusted,
    /// Trusted browsers were revoked by the user.
    BrowserTrustRevoked,
    /// A trusted browser signed the user in with the password alone.
    TrustedSignIn,
}

impl AuditKind {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// Parse a storage name (`None` for a kind this version does not know).
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use strum::VariantArray;

    /// Stored names are data: renaming a variant must not change one. Written out verbatim.
    #[test]
    fn storage_names_are_fixed_and_round_trip() {
        let names: Vec<&str> = AuditKind::VARIANTS.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "totp_enrolled",
                "totp_confirmed",
                "totp_confirm_failed",
                "totp_verified",
                "totp_rejected",
                "attempt_while_locked",
                "locked",
                "recovery_codes_generated",
                "recovery_code_redeemed",
                "recovery_code_rejected",
                "factor_removed",
                "user_created",
                "password_rejected",
                "login_succeeded",
                "second_factor_challenged",
                "challenges_voided",
                "sessions_revoked",
                "account_created",
                "member_added",
                "account_policy_changed",
                "support_mfa_reset",
                "reauthenticated",
                "totp_disabled",
                "password_sign_in_suspended",
                "member_invited",
                "invitation_accepted",
                "invitation_closed",
                "member_removed",
                "member_role_changed",
                "password_reset_requested",
                "password_reset",
                "email_verification_sent",
                "email_verified",
                "password_changed",
                "email_change_requested",
                "email_changed",
                "webauthn_registered",
                "webauthn_registration_failed",
                "webauthn_verified",
                "webauthn_rejected",
                "webauthn_counter_regressed",
                "browser_trusted",
                "browser_trust_revoked",
                "trusted_sign_in",
            ]
        );
        for k in AuditKind::VARIANTS {
            assert_eq!(AuditKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(AuditKind::parse("Locked"), None, "names are case-sensitive");
        assert_eq!(AuditKind::parse("no_such_kind"), None);
        assert_eq!((FactorKind::Totp.as_str(), FactorKind::parse("totp")), ("totp", Some(FactorKind::Totp)));
        assert_eq!(FactorKind::parse("security_key"), Some(FactorKind::SecurityKey));
        assert_eq!(FactorKind::Passkey.as_str(), "passkey");
        assert!(FactorKind::Passkey.is_webauthn() && !FactorKind::Totp.is_webauthn());
        assert_eq!(FactorStatus::parse(FactorStatus::Pending.as_str()), Some(FactorStatus::Pending));
        assert_eq!(FactorStatus::Active.as_str(), "active");
        assert_eq!(FactorStatus::parse("Active"), None);
    }
}
