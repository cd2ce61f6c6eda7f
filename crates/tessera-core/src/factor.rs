//! Factors ("an additional factor" of a subject) and the audit vocabulary: the domain forms
//! that the store persists and the transports convert.

use time::OffsetDateTime;

/// What kind of factor. TOTP is the first; the store is generic over kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactorKind {
    /// An RFC 6238 authenticator app.
    Totp,
}

impl FactorKind {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
        }
    }
    /// Parse the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        (s == "totp").then_some(Self::Totp)
    }
}

/// Pending until confirmed with a first code; only active factors verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactorStatus {
    /// Enrolled but not yet confirmed.
    Pending,
    /// Confirmed; used at login.
    Active,
}

impl FactorStatus {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
        }
    }
    /// Parse the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            _ => None,
        }
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

/// Kinds of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl AuditKind {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TotpEnrolled => "totp_enrolled",
            Self::TotpConfirmed => "totp_confirmed",
            Self::TotpConfirmFailed => "totp_confirm_failed",
            Self::TotpVerified => "totp_verified",
            Self::TotpRejected => "totp_rejected",
            Self::AttemptWhileLocked => "attempt_while_locked",
            Self::Locked => "locked",
            Self::RecoveryCodesGenerated => "recovery_codes_generated",
            Self::RecoveryCodeRedeemed => "recovery_code_redeemed",
            Self::RecoveryCodeRejected => "recovery_code_rejected",
            Self::FactorRemoved => "factor_removed",
            Self::UserCreated => "user_created",
            Self::PasswordRejected => "password_rejected",
            Self::LoginSucceeded => "login_succeeded",
            Self::SecondFactorChallenged => "second_factor_challenged",
            Self::ChallengesVoided => "challenges_voided",
            Self::SessionsRevoked => "sessions_revoked",
            Self::AccountCreated => "account_created",
            Self::MemberAdded => "member_added",
            Self::AccountPolicyChanged => "account_policy_changed",
            Self::SupportMfaReset => "support_mfa_reset",
            Self::Reauthenticated => "reauthenticated",
            Self::TotpDisabled => "totp_disabled",
            Self::PasswordSignInSuspended => "password_sign_in_suspended",
            Self::MemberInvited => "member_invited",
            Self::InvitationAccepted => "invitation_accepted",
            Self::InvitationClosed => "invitation_closed",
            Self::MemberRemoved => "member_removed",
            Self::MemberRoleChanged => "member_role_changed",
        }
    }
}
