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

fn describe(kind: &str, detail: &str) -> String {
    let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    match kind {
        "totp_enrolled" => format!("Started setting up an authenticator app ({})", s("label")),
        "totp_confirmed" => "Turned on an authenticator app".into(),
        "totp_confirm_failed" => "Wrong code while setting up an authenticator app".into(),
        "totp_verified" => "Authenticator code accepted".into(),
        "totp_rejected" => "Wrong or already used authenticator code".into(),
        "attempt_while_locked" => "Code refused: locked after too many wrong codes".into(),
        "locked" => "Two-factor sign-in locked after too many wrong codes".into(),
        "recovery_codes_generated" => "New recovery codes issued (the old ones stopped working)".into(),
        "recovery_code_redeemed" => "Recovery code used".into(),
        "recovery_code_rejected" => "Wrong recovery code".into(),
        "factor_removed" => "Device removed".into(),
        "user_created" => "Signed up".into(),
        "login_succeeded" if s("assurance").contains("second_factor") => {
            "Signed in with two-factor authentication".into()
        }
        "login_succeeded" => "Signed in with password".into(),
        "second_factor_challenged" => "Password accepted; code requested".into(),
        "challenges_voided" => "Sign-ins waiting for a code were cancelled".into(),
        "sessions_revoked" if s("scope") == "others" => "Signed out all other sessions".into(),
        "sessions_revoked" if s("scope") == "one" => "Signed out another session".into(),
        "sessions_revoked" if s("scope") == "everywhere" => "Signed out everywhere".into(),
        "sessions_revoked" => "Signed out".into(),
        "account_created" => "Created an account".into(),
        "member_added" => format!("Added to an account as {}", s("role")),
        "account_policy_changed" => "Changed an account's two-factor policy".into(),
        "support_mfa_reset" => format!("Support reset two-factor authentication (ticket {})", s("ticket")),
        "reauthenticated" if s("with") == "password" => "Confirmed it was you with your password".into(),
        "reauthenticated" => "Confirmed it was you with a second factor".into(),
        "totp_disabled" => "Authenticator app turned off after 100 wrong codes in a row".into(),
        "password_sign_in_suspended" => {
            "Password sign-in paused after 100 failed attempts (browsers you used before still work)".into()
        }
        "member_invited" => format!("Invited {} to an account as {}", s("email"), s("role")),
        "invitation_accepted" => format!("Joined an account as {}", s("role")),
        "invitation_closed" if s("by") == "invitee" => "Declined an invitation".into(),
        "invitation_closed" => "Cancelled an invitation".into(),
        "member_removed" => "Removed from an account".into(),
        "member_role_changed" => format!("Role in an account changed to {}", s("role")),
        other => other.replace('_', " "),
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
