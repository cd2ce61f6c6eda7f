//! A forgotten password: `/password/forgot` mails a link (the same answer for every address,
//! known or not), `/password/reset?token=…` sets a new password with it.
//!
//! Who may do what: anyone may ask (the sign-in forms' per-address budget, and three links per
//! user an hour in the use case); only the holder of a live link may set a password, once.
//! Nothing here signs anyone in, and nothing touches the session of the browser that opens the
//! link (it may hold another user's): the new password is only the first factor, and the user
//! signs in at `/login` as usual.

use super::{Req, User, sentence};
use crate::{Web, views};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_app::{AppError, LinkState, PasswordChangeOutcome, well_formed_token};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ForgotForm {
    email: String,
}

pub(crate) async fn forgot_form(req: Req) -> Response {
    forgot_page(&req, StatusCode::OK, String::new(), None)
}

fn forgot_page(req: &Req, status: StatusCode, email: String, error: Option<String>) -> Response {
    views::page(status, &views::PasswordForgot { chrome: req.chrome("Forgot your password?"), email, error })
}

pub(crate) async fn forgot(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<ForgotForm>) -> Response {
    match web.app.request_password_reset_in_background(&f.email, &req.ctx) {
        // One answer for every well-formed address: whether it is a user's, and whether a
        // mail went out, stay unknown here.
        Ok(()) => views::message_link(
            StatusCode::OK,
            req.chrome("Check your email"),
            "If an account uses that address, we have emailed it a link to set a new password. The link \
             works once, for 30 minutes. Nothing there? Look in the spam folder, or ask again in a few minutes.",
            "/login",
            "Back to sign in",
        ),
        Err(AppError::Invalid(e)) => {
            forgot_page(&req, StatusCode::BAD_REQUEST, f.email, Some(sentence(&e.to_string())))
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ResetQuery {
    token: String,
}

fn link_refused(req: &Req, incomplete: bool) -> Response {
    let (status, text) = if incomplete {
        (
            StatusCode::BAD_REQUEST,
            "This link is incomplete. Open it again from the email (the whole link), or request a new one.",
        )
    } else {
        (StatusCode::GONE, "This link has expired or was already used. Request a new one.")
    };
    views::message_link(status, req.chrome("Link not valid"), text, "/password/forgot", "Request a new link")
}

fn reset_page(web: &Web, req: &Req, status: StatusCode, token: String, error: Option<String>) -> Response {
    let min_chars = web.app.config().min_password_chars;
    views::page(status, &views::PasswordReset { chrome: req.chrome("Choose a new password"), token, min_chars, error })
}

pub(crate) async fn reset_form(req: Req, State(web): State<Web>, Query(q): Query<ResetQuery>) -> Response {
    if !well_formed_token(&q.token) {
        return link_refused(&req, true);
    }
    match web.app.password_reset_link(&q.token).await {
        Ok(LinkState::Live) => reset_page(&web, &req, StatusCode::OK, q.token, None),
        Ok(LinkState::Invalid) => link_refused(&req, false),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ResetForm {
    token: String,
    password: String,
}

pub(crate) async fn reset(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<ResetForm>) -> Response {
    if !well_formed_token(&f.token) {
        return link_refused(&req, true);
    }
    match web.app.complete_password_reset(&f.token, &f.password, &req.ctx).await {
        Ok(()) => Redirect::to("/login?reset=1").into_response(),
        Err(AppError::Invalid(e)) => {
            reset_page(&web, &req, StatusCode::BAD_REQUEST, f.token, Some(sentence(&e.to_string())))
        }
        Err(AppError::FailedPrecondition(_)) => link_refused(&req, false),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

// ---- password change ---------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ChangeForm {
    current_password: String,
    new_password: String,
}

fn change_page(web: &Web, user: &User, status: StatusCode, error: Option<String>) -> Response {
    views::page(
        status,
        &views::PasswordChange {
            chrome: user.chrome("Change your password"),
            email: user.email.clone(),
            min_chars: web.app.config().min_password_chars,
            error,
        },
    )
}

/// `/settings/password`: a live session; the change needs recent authentication (else the
/// re-authentication page first) and the current password.
pub(crate) async fn change_form(user: User, State(web): State<Web>) -> Response {
    change_page(&web, &user, StatusCode::OK, None)
}

pub(crate) async fn change(user: User, State(web): State<Web>, axum::Form(f): axum::Form<ChangeForm>) -> Response {
    let now = web.app.now();
    match web.app.change_password(&user.session, &f.current_password, &f.new_password, user.ctx()).await {
        Ok(PasswordChangeOutcome::Changed { .. }) => Redirect::to("/settings/security?done=password").into_response(),
        Ok(PasswordChangeOutcome::WrongPassword) => {
            change_page(&web, &user, StatusCode::UNAUTHORIZED, Some("Your current password isn't right.".into()))
        }
        Ok(PasswordChangeOutcome::Locked { until }) => {
            change_page(&web, &user, StatusCode::TOO_MANY_REQUESTS, Some(super::locked(until, now)))
        }
        Ok(PasswordChangeOutcome::Suspended) => change_page(
            &web,
            &user,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Password sign-in is paused for your address after too many failed attempts: reset your password by email instead.".into()),
        ),
        Err(AppError::Invalid(e)) => change_page(&web, &user, StatusCode::BAD_REQUEST, Some(sentence(&e.to_string()))),
        Err(e) => user.fail(e, "/settings/password"),
    }
}
