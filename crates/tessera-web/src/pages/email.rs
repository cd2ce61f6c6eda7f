//! The address: confirming it after sign-up (`/verify-email`), asking for a new confirmation
//! link (`/verify-email/send`), and moving the account to another address (`/settings/email`,
//! confirmed at `/settings/email/confirm` from the link mailed to the new one).
//!
//! Who may do what: anyone may ask for a confirmation link (the same answer for every
//! address; three links per user an hour, and the sign-in forms' per-address budget); only a
//! signed-in user with recent authentication may ask to change their address; only the holder
//! of a live link may use it, once. A link's page shows a button: the POST uses the token, so
//! a mail scanner that fetches the link changes nothing. No link signs anyone in, and none
//! touches the session of the browser that opens it (it may hold another user's).

use super::{Req, User, sentence};
use crate::{Web, views};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_app::{AppError, LinkState, VerifyOutcome, well_formed_token};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct TokenForm {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct VerifyForm {
    token: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct EmailForm {
    email: String,
}

/// A link that cannot be used, in words, with where to get a new one.
fn link_refused(req: &Req, incomplete: bool, again: (&str, &str)) -> Response {
    let (status, text) = if incomplete {
        (
            StatusCode::BAD_REQUEST,
            "This link is incomplete. Open it again from the email (the whole link), or request a new one.",
        )
    } else {
        (StatusCode::GONE, "This link has expired or was already used. Request a new one.")
    };
    views::message_link(status, req.chrome("Link not valid"), text, again.0, again.1)
}

const VERIFY_AGAIN: (&str, &str) = ("/verify-email/send", "Request a new link");
const CHANGE_AGAIN: (&str, &str) = ("/settings/email", "Change your email again");

/// A link's page: what it does, and a button (with the password field when `ask_password`).
struct LinkPage<'a> {
    title: &'a str,
    text: &'a str,
    action: &'a str,
    button: &'a str,
    ask_password: bool,
}

const VERIFY_PAGE: LinkPage<'static> = LinkPage {
    title: "Confirm your email address",
    text: "Confirm that this address is yours with the password you chose. Then sign in.",
    action: "/verify-email",
    button: "Confirm my email address",
    ask_password: true,
};

const CHANGE_PAGE: LinkPage<'static> = LinkPage {
    title: "Confirm your new email address",
    text: "Use this address for your account from now on. Your old address is told, and can no longer be used \
           to sign in.",
    action: "/settings/email/confirm",
    button: "Use this address",
    ask_password: false,
};

fn confirm_page(req: &Req, p: &LinkPage<'_>, status: StatusCode, token: String, error: Option<String>) -> Response {
    views::page(
        status,
        &views::ConfirmLink {
            chrome: req.chrome(p.title),
            text: p.text.into(),
            action: p.action.into(),
            token,
            button: p.button.into(),
            ask_password: p.ask_password,
            error,
        },
    )
}

pub(crate) async fn verify_form(req: Req, State(web): State<Web>, Query(q): Query<TokenForm>) -> Response {
    if !well_formed_token(&q.token) {
        return link_refused(&req, true, VERIFY_AGAIN);
    }
    match web.app.email_verification_link(&q.token).await {
        Ok(LinkState::Live) => confirm_page(&req, &VERIFY_PAGE, StatusCode::OK, q.token, None),
        Ok(LinkState::Invalid) => link_refused(&req, false, VERIFY_AGAIN),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

pub(crate) async fn verify(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<VerifyForm>) -> Response {
    if !well_formed_token(&f.token) {
        return link_refused(&req, true, VERIFY_AGAIN);
    }
    let now = web.app.now();
    let again = |status, error: String| confirm_page(&req, &VERIFY_PAGE, status, f.token.clone(), Some(error));
    match web.app.verify_email(&f.token, &f.password, &req.ctx).await {
        Ok(VerifyOutcome::Verified) => Redirect::to("/login?verified=1").into_response(),
        Ok(VerifyOutcome::WrongPassword) => again(StatusCode::UNAUTHORIZED, "That password isn't right.".into()),
        Ok(VerifyOutcome::Locked { until }) => again(StatusCode::TOO_MANY_REQUESTS, super::locked(until, now)),
        Ok(VerifyOutcome::Suspended) => again(
            StatusCode::TOO_MANY_REQUESTS,
            "Signing in with a password is paused for this address after too many failed attempts.".into(),
        ),
        Err(AppError::Invalid(_)) => again(StatusCode::BAD_REQUEST, "Enter your password.".into()),
        Err(AppError::FailedPrecondition(_)) => link_refused(&req, false, VERIFY_AGAIN),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

pub(crate) async fn send_form(req: Req) -> Response {
    views::page(
        StatusCode::OK,
        &views::VerifySend { chrome: req.chrome("Confirm your email address"), email: String::new(), error: None },
    )
}

pub(crate) async fn send(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<EmailForm>) -> Response {
    match web.app.send_email_verification_in_background(&f.email, &req.ctx) {
        // One answer for every well-formed address: whether it is a user's, whether it is
        // confirmed already, and whether a mail went out, stay unknown here.
        Ok(()) => views::message_link(
            StatusCode::OK,
            req.chrome("Check your email"),
            "If an account with that address is waiting to be confirmed, we have emailed it a new link. The link \
             works once, for 24 hours. Nothing there? Look in the spam folder, or ask again in a few minutes.",
            "/login",
            "Back to sign in",
        ),
        Err(AppError::Invalid(e)) => views::page(
            StatusCode::BAD_REQUEST,
            &views::VerifySend {
                chrome: req.chrome("Confirm your email address"),
                email: f.email,
                error: Some(sentence(&e.to_string())),
            },
        ),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

// ---- email change ------------------------------------------------------------------------

const CHANGE: &str = "/settings/email";

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ChangeForm {
    new_email: String,
}

fn change_page(user: &User, status: StatusCode, new_email: String, error: Option<String>) -> Response {
    views::page(
        status,
        &views::EmailChange {
            chrome: user.chrome("Change your email address"),
            email: user.email.clone(),
            new_email,
            error,
        },
    )
}

pub(crate) async fn change_form(user: User) -> Response {
    change_page(&user, StatusCode::OK, String::new(), None)
}

pub(crate) async fn change(user: User, State(web): State<Web>, axum::Form(f): axum::Form<ChangeForm>) -> Response {
    match web.app.request_email_change(&user.session, &f.new_email, user.ctx()).await {
        Ok(()) => views::message_link(
            StatusCode::OK,
            user.chrome("Check your email"),
            "If no other account uses that address, we have emailed it a link. Open it within 24 hours to make \
             the change; until then, your address stays as it is.",
            "/settings/security",
            "Back to security",
        ),
        Err(AppError::Invalid(e)) => {
            change_page(&user, StatusCode::BAD_REQUEST, f.new_email, Some(sentence(&e.to_string())))
        }
        Err(e) => user.fail(e, CHANGE),
    }
}

pub(crate) async fn confirm_form(req: Req, State(web): State<Web>, Query(q): Query<TokenForm>) -> Response {
    if !well_formed_token(&q.token) {
        return link_refused(&req, true, CHANGE_AGAIN);
    }
    let signed_in = match &req.session {
        Some(t) => matches!(web.app.session(t).await, Ok(Some(_))),
        None => false,
    };
    if !signed_in {
        return views::message_link(
            StatusCode::OK,
            req.chrome("Sign in first"),
            "To use this address for your account, sign in to the account that asked for it (in this browser), \
             then open the link from the email again.",
            "/login",
            "Sign in",
        );
    }
    match web.app.email_change_link(&q.token).await {
        Ok(LinkState::Live) => confirm_page(&req, &CHANGE_PAGE, StatusCode::OK, q.token, None),
        Ok(LinkState::Invalid) => link_refused(&req, false, CHANGE_AGAIN),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

/// The change is made in a session of the user who asked (see
/// [`tessera_app::App::confirm_email_change`]); signed out, the `User` extractor sends the
/// browser to sign in first.
pub(crate) async fn confirm(user: User, State(web): State<Web>, axum::Form(f): axum::Form<TokenForm>) -> Response {
    let req = &user.req;
    if !well_formed_token(&f.token) {
        return link_refused(req, true, CHANGE_AGAIN);
    }
    match web.app.confirm_email_change(&user.session, &f.token, user.ctx()).await {
        Ok(()) => views::message_link(
            StatusCode::OK,
            user.chrome("Email address changed"),
            "Your account uses the new address from now on. Sign in with it next time.",
            "/",
            "Continue",
        ),
        Err(AppError::FailedPrecondition(m)) if m.contains("another account") => views::message_link(
            StatusCode::CONFLICT,
            user.chrome("Address not changed"),
            &sentence(&m),
            CHANGE_AGAIN.0,
            CHANGE_AGAIN.1,
        ),
        Err(AppError::FailedPrecondition(_)) => link_refused(req, false, CHANGE_AGAIN),
        Err(e) => user.fail(e, CHANGE),
    }
}
