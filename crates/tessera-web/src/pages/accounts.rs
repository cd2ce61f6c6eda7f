//! Accounts: the list (with invitations addressed to the user), one account (behind its MFA
//! policy, checked on every request), and its settings — the policy, invitations, members and
//! their roles.
//!
//! Who may do what (decided in the app): members see an account when its policy lets their
//! session in; owners and admins see its settings; every change there needs recent
//! authentication; only the invited user accepts or declines an invitation.

use super::{Page, User, flatten, sentence};
use crate::Web;
use crate::views;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_app::AppError;
use tessera_core::policy::AccountAccess;
use tessera_core::roles::Role;
use time::{Duration, OffsetDateTime};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Done {
    done: Option<String>,
}

pub(crate) async fn list(user: User, State(web): State<Web>, Query(q): Query<Done>) -> Response {
    let notice = match q.done.as_deref() {
        Some("declined") => Some("Invitation declined.".to_owned()),
        _ => None,
    };
    flatten(list_page(&web, &user, StatusCode::OK, notice, None).await)
}

async fn list_page(web: &Web, user: &User, status: StatusCode, notice: Option<String>, error: Option<String>) -> Page {
    let fail = |e| user.fail(e, "/accounts");
    let accounts = web.app.memberships(user.id()).await.map_err(fail)?;
    let invitations = web.app.my_invitations(&user.session).await.map_err(fail)?;
    let now = web.app.now();
    let accounts = accounts
        .into_iter()
        .map(|m| views::AccountView {
            id: m.policy.account_id,
            name: m.name,
            role: m.role.as_str().to_owned(),
            require_mfa: m.policy.require_mfa,
        })
        .collect();
    let invitations = invitations
        .into_iter()
        .map(|i| views::InvitationView {
            id: i.id,
            account_name: i.account_name,
            email: i.email,
            role: i.role.as_str().to_owned(),
            expires: views::clock_time(i.expires_at, now),
        })
        .collect();
    Ok(views::page(status, &views::Accounts { chrome: user.chrome("Accounts"), accounts, invitations, notice, error }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NameForm {
    name: String,
}

pub(crate) async fn create(user: User, State(web): State<Web>, axum::Form(f): axum::Form<NameForm>) -> Response {
    match web.app.create_account(&user.session, &f.name, user.ctx()).await {
        Ok(id) => Redirect::to(&format!("/accounts/{id}")).into_response(),
        Err(AppError::Invalid(e)) => {
            flatten(list_page(&web, &user, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await)
        }
        Err(e) => user.fail(e, "/accounts"),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
}

/// An invitation's answer in words: a wrong or stale code and an invitation that is not this
/// user's read the same.
async fn invitation_refused(web: &Web, user: &User, e: AppError) -> Response {
    let (status, msg) = match e {
        AppError::Invalid(e) => (StatusCode::BAD_REQUEST, sentence(&e.to_string())),
        AppError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "That code doesn't match an open invitation for your email. Check the email we sent, or ask for a new invitation."
                .to_owned(),
        ),
        AppError::FailedPrecondition(m) => (StatusCode::CONFLICT, sentence(&m)),
        e => return user.fail(e, "/accounts"),
    };
    flatten(list_page(web, user, status, None, Some(msg)).await)
}

pub(crate) async fn accept(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CodeForm>,
) -> Response {
    match web.app.accept_invitation(&user.session, &id, &f.code, user.ctx()).await {
        Ok(account) => Redirect::to(&format!("/accounts/{account}")).into_response(),
        Err(e) => invitation_refused(&web, &user, e).await,
    }
}

pub(crate) async fn decline(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CodeForm>,
) -> Response {
    match web.app.decline_invitation(&user.session, &id, &f.code, user.ctx()).await {
        Ok(()) => Redirect::to("/accounts?done=declined").into_response(),
        Err(e) => invitation_refused(&web, &user, e).await,
    }
}

/// The account as the user sees it: `Err(page)` when it is closed to this session (the
/// enrolment prompt, never the content) or unknown.
async fn open_account(
    web: &Web,
    user: &User,
    id: &str,
) -> Result<(tessera_app::MembershipRow, Option<OffsetDateTime>), Response> {
    let (m, access) = web.app.account_for(&user.session, id).await.map_err(|e| user.fail(e, "/accounts"))?;
    let closed = |needs_enrolment| {
        views::page(
            StatusCode::FORBIDDEN,
            &views::AccountClosed { chrome: user.chrome(&m.name), name: m.name.clone(), needs_enrolment },
        )
    };
    match access {
        AccountAccess::Open => Ok((m, None)),
        AccountAccess::OpenUntil(t) => Ok((m, Some(t))),
        AccountAccess::EnrolmentRequired => Err(closed(true)),
        AccountAccess::SecondFactorRequired => Err(closed(false)),
    }
}

pub(crate) async fn show(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    let (m, grace) = match open_account(&web, &user, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = web.app.now();
    views::page(
        StatusCode::OK,
        &views::Account {
            chrome: user.chrome(&m.name),
            is_admin: m.role.manages(),
            id,
            name: m.name,
            role: m.role.as_str().to_owned(),
            grace_until: grace.map(|t| views::clock_time(t, now)),
        },
    )
}

pub(crate) async fn settings(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    let notice = match q.done.as_deref() {
        Some("saved") => Some("Saved.".to_owned()),
        Some("invited") => {
            Some("Invitation sent. They join when they accept it, signed in with that email.".to_owned())
        }
        Some("cancelled") => Some("Invitation cancelled.".to_owned()),
        Some("role") => Some("Role changed.".to_owned()),
        Some("removed") => Some("Member removed.".to_owned()),
        _ => None,
    };
    flatten(settings_page(&web, &user, &id, StatusCode::OK, notice, None).await)
}

async fn settings_page(
    web: &Web,
    user: &User,
    id: &str,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Page {
    let (m, _) = open_account(web, user, id).await?;
    let back = format!("/accounts/{id}/settings");
    let members = web.app.members(&user.session, id).await.map_err(|e| user.fail(e, &back))?;
    let invited = web.app.account_invitations(&user.session, id).await.map_err(|e| user.fail(e, &back))?;
    let now = web.app.now();
    let members: Vec<views::MemberView> = members
        .into_iter()
        .map(|x| views::MemberView {
            is_me: x.user_id == user.id(),
            user_id: x.user_id,
            email: x.email,
            role: x.role.as_str().to_owned(),
            has_mfa: x.has_mfa,
        })
        .collect();
    let invited = invited
        .into_iter()
        .map(|i| views::InvitationView {
            id: i.id,
            account_name: i.account_name,
            email: i.email,
            role: i.role.as_str().to_owned(),
            expires: views::clock_time(i.expires_at, now),
        })
        .collect();
    Ok(views::page(
        status,
        &views::AccountSettings {
            chrome: user.chrome(&format!("{} settings", m.name)),
            id: id.to_owned(),
            name: m.name,
            is_owner: m.role == Role::Owner,
            require_mfa: m.policy.require_mfa,
            grace_until: m.policy.grace_until.filter(|t| *t > now).map(|t| views::clock_time(t, now)),
            max_trust_days: m.policy.max_trust_days.map(|d| d.to_string()).unwrap_or_default(),
            without_mfa: members.iter().filter(|m| !m.has_mfa).count(),
            members,
            invited,
            notice,
            error,
        },
    ))
}

/// After a change on the settings page: back to it with a notice, or the page with the error.
async fn after_change(web: &Web, user: &User, id: &str, r: Result<(), AppError>, done: &str) -> Response {
    let back = format!("/accounts/{id}/settings");
    match r {
        Ok(()) => Redirect::to(&format!("{back}?done={done}")).into_response(),
        Err(AppError::Invalid(e)) => {
            flatten(settings_page(web, user, id, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await)
        }
        Err(AppError::FailedPrecondition(m)) => {
            flatten(settings_page(web, user, id, StatusCode::CONFLICT, None, Some(sentence(&m))).await)
        }
        Err(AppError::Forbidden(m)) => {
            flatten(settings_page(web, user, id, StatusCode::FORBIDDEN, None, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, &back),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PolicyForm {
    require_mfa: Option<String>,
    grace_days: String,
    /// Empty: no cap of the account's own (30 days).
    max_trust_days: String,
}

pub(crate) async fn save_policy(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<PolicyForm>,
) -> Response {
    if let Err(r) = open_account(&web, &user, &id).await {
        return r;
    }
    let days = match f.grace_days.trim() {
        "" => Some(0),
        s => s.parse::<i64>().ok().filter(|d| (0..=90).contains(d)),
    };
    let Some(days) = days else {
        let msg = "The grace period must be a whole number of days from 0 to 90.".to_owned();
        return flatten(settings_page(&web, &user, &id, StatusCode::BAD_REQUEST, None, Some(msg)).await);
    };
    let cap = match f.max_trust_days.trim() {
        "" => Some(None),
        s => s.parse::<u32>().ok().filter(|d| *d <= 30).map(Some),
    };
    let Some(cap) = cap else {
        let msg = "Trusted browsers: a whole number of days from 0 to 30, or empty for 30.".to_owned();
        return flatten(settings_page(&web, &user, &id, StatusCode::BAD_REQUEST, None, Some(msg)).await);
    };
    let require = f.require_mfa.is_some();
    let grace = (require && days > 0).then(|| web.app.now() + Duration::days(days));
    let r = async {
        web.app.set_account_policy(&user.session, &id, require, grace, user.ctx()).await?;
        web.app.set_account_trust_cap(&user.session, &id, cap, user.ctx()).await
    }
    .await;
    after_change(&web, &user, &id, r, "saved").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct InviteForm {
    email: String,
    role: String,
}

fn role(s: &str) -> Result<Role, AppError> {
    Role::parse(s).ok_or_else(|| tessera_core::CoreError::invalid("role", "must be owner, admin or member").into())
}

pub(crate) async fn invite(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<InviteForm>,
) -> Response {
    let r = async { web.app.invite_member(&user.session, &id, &f.email, role(&f.role)?, user.ctx()).await }.await;
    let r = r.map(|_| ());
    after_change(&web, &user, &id, r, "invited").await
}

pub(crate) async fn cancel_invitation(
    user: User,
    State(web): State<Web>,
    Path((id, inv)): Path<(String, String)>,
) -> Response {
    let r = web.app.cancel_invitation(&user.session, &id, &inv, user.ctx()).await;
    after_change(&web, &user, &id, r, "cancelled").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RoleForm {
    role: String,
}

pub(crate) async fn change_role(
    user: User,
    State(web): State<Web>,
    Path((id, member)): Path<(String, String)>,
    axum::Form(f): axum::Form<RoleForm>,
) -> Response {
    let r = async { web.app.change_member_role(&user.session, &id, &member, role(&f.role)?, user.ctx()).await }.await;
    after_change(&web, &user, &id, r, "role").await
}

pub(crate) async fn remove_member(
    user: User,
    State(web): State<Web>,
    Path((id, member)): Path<(String, String)>,
) -> Response {
    let r = web.app.remove_member(&user.session, &id, &member, user.ctx()).await;
    after_change(&web, &user, &id, r, "removed").await
}
