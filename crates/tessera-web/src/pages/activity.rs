//! The user's own activity: their audit trail, newest first, in words.
//!
//! Who may do what: a live session sees its own user's events only.

use super::User;
use crate::{Web, views};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PageQuery {
    before: String,
}

/// An event in words. The match is exhaustive over `AuditKind`, so a new kind does not build
/// without its words; a stored kind this version does not know shows as its name.
fn describe(kind: &str, detail: &str) -> String {
    use tessera_core::factor::AuditKind as K;
    let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    match K::parse(kind) {
        Some(K::TotpEnrolled) => format!("Started setting up an authenticator app ({})", s("label")),
        Some(K::TotpConfirmed) => "Turned on an authenticator app".into(),
        Some(K::TotpConfirmFailed) => "Wrong code while setting up an authenticator app".into(),
        Some(K::TotpVerified) => "Authenticator code accepted".into(),
        Some(K::TotpRejected) => "Wrong or already used authenticator code".into(),
        Some(K::AttemptWhileLocked) => "Code refused: locked after too many wrong codes".into(),
        Some(K::Locked) => "Two-factor sign-in locked after too many wrong codes".into(),
        Some(K::RecoveryCodesGenerated) => "New recovery codes issued (the old ones stopped working)".into(),
        Some(K::RecoveryCodeRedeemed) => "Recovery code used".into(),
        Some(K::RecoveryCodeRejected) => "Wrong recovery code".into(),
        Some(K::FactorRemoved) => "Device removed".into(),
        Some(K::UserCreated) => "Signed up".into(),
        Some(K::PasswordRejected) => "Wrong password".into(),
        Some(K::LoginSucceeded) if s("assurance") == "passkey" => "Signed in with a passkey".into(),
        Some(K::LoginSucceeded) if s("assurance").contains("second_factor") => {
            "Signed in with two-factor authentication".into()
        }
        Some(K::LoginSucceeded) => "Signed in with password".into(),
        Some(K::SecondFactorChallenged) => "Password accepted; code requested".into(),
        Some(K::ChallengesVoided) => "Sign-ins waiting for a code were cancelled".into(),
        Some(K::SessionsRevoked) if s("scope") == "others" => "Signed out all other sessions".into(),
        Some(K::SessionsRevoked) if s("scope") == "one" => "Signed out another session".into(),
        Some(K::SessionsRevoked) if s("scope") == "everywhere" => "Signed out everywhere".into(),
        Some(K::SessionsRevoked) => "Signed out".into(),
        Some(K::AccountCreated) => "Created an account".into(),
        Some(K::MemberAdded) => format!("Added to an account as {}", s("role")),
        Some(K::AccountPolicyChanged) => "Changed an account's two-factor policy".into(),
        Some(K::SupportMfaReset) => format!("Support reset two-factor authentication (ticket {})", s("ticket")),
        Some(K::Reauthenticated) if s("with") == "password" => "Confirmed it was you with your password".into(),
        Some(K::Reauthenticated) => "Confirmed it was you with a second factor".into(),
        Some(K::TotpDisabled) => "Authenticator app turned off after 100 wrong codes in a row".into(),
        Some(K::PasswordSignInSuspended) => {
            "Password sign-in paused after 100 failed attempts (browsers you used before still work)".into()
        }
        Some(K::MemberInvited) => format!("Invited {} to an account as {}", s("email"), s("role")),
        Some(K::InvitationAccepted) => format!("Joined an account as {}", s("role")),
        Some(K::InvitationClosed) if s("by") == "invitee" => "Declined an invitation".into(),
        Some(K::InvitationClosed) => "Cancelled an invitation".into(),
        Some(K::MemberRemoved) => "Removed from an account".into(),
        Some(K::MemberRoleChanged) => format!("Role in an account changed to {}", s("role")),
        Some(K::PasswordResetRequested) => "A password-reset link was emailed".into(),
        Some(K::PasswordReset) => "Password set with a reset link; every session signed out".into(),
        Some(K::EmailVerificationSent) => "A link to confirm your email address was emailed".into(),
        Some(K::EmailVerified) => "Email address confirmed".into(),
        Some(K::PasswordChanged) => "Password changed; other sessions signed out".into(),
        Some(K::EmailChangeRequested) => "A link to confirm a new email address was emailed".into(),
        Some(K::EmailChanged) => "Email address changed".into(),
        Some(K::WebauthnRegistered) if s("kind") == "passkey" => format!("Added a passkey ({})", s("label")),
        Some(K::WebauthnRegistered) => format!("Added a security key ({})", s("label")),
        Some(K::WebauthnRegistrationFailed) => "A security key's registration was refused".into(),
        Some(K::WebauthnVerified) => "Security key or passkey accepted".into(),
        Some(K::WebauthnRejected) => "Security key or passkey refused".into(),
        Some(K::BrowserTrusted) => "Trusted a browser: the password alone signs in there for 30 days".into(),
        Some(K::BrowserTrustRevoked) if s("scope") == "all" => "Revoked every trusted browser".into(),
        Some(K::BrowserTrustRevoked) => "Revoked a trusted browser".into(),
        Some(K::TrustedSignIn) => "Signed in with password from a trusted browser".into(),
        Some(K::WebauthnCounterRegressed) => {
            "Security key refused: its signature counter went backwards (it may have been copied)".into()
        }
        None => kind.replace('_', " "),
    }
}

pub(crate) async fn page(user: User, State(web): State<Web>, Query(p): Query<PageQuery>) -> Response {
    let (events, next) = match web.app.list_audit_events(user.id(), 50, &p.before).await {
        Ok(x) => x,
        Err(e) => return user.fail(e, "/settings/activity"),
    };
    let events = events
        .into_iter()
        .map(|e| views::EventView {
            at: views::timestamp(e.at()),
            what: describe(&e.kind, &e.detail),
            ip: e.ip.clone().unwrap_or_default(),
            agent: e.user_agent.clone().unwrap_or_default(),
        })
        .collect();
    views::page(
        StatusCode::OK,
        &views::Activity { chrome: user.chrome("Activity"), events, next: (!next.is_empty()).then_some(next) },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn words() {
        assert_eq!(
            super::describe("support_mfa_reset", r#"{"ticket":"T-1"}"#),
            "Support reset two-factor authentication (ticket T-1)"
        );
        assert_eq!(
            super::describe("member_role_changed", r#"{"role":"admin"}"#),
            "Role in an account changed to admin"
        );
    }
}
