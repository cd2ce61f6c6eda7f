//! Sign-up, sign-in (password, then a code or a recovery code on pages of their own), sign-out,
//! and re-authentication.
//!
//! Who may do what: anyone may sign up and sign in (rate-limited per address; password
//! failures lock per email and address, so a stranger elsewhere cannot lock the owner out);
//! the code pages need the login challenge cookie the password step set; `/settings/reauth`
//! needs a live session and proves a factor the user already has (or, without one, the
//! password) again, then returns to a local path only.

use super::{
    Page, Req, TOTP_DISABLED, User, attempts_left, compact, did_not_match, flatten, locked, sentence, session_cookie,
    with_cookies,
};
use crate::views;
use crate::{Web, cookies};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_app::{AppError, LoginOutcome, Proof};
use tessera_core::session::Recency;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
}

pub(crate) async fn home(req: Req, State(web): State<Web>) -> Response {
    match &req.session {
        Some(t) if matches!(web.app.session(t).await, Ok(Some(_))) => Redirect::to("/accounts").into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}

/// The cookies of a completed sign-in: the session, the known-browser token when a new one was
/// minted, and the login challenge cleared.
fn signed_in(web: &Web, token: &str, browser: Option<&str>, to: &str) -> Response {
    let mut set = vec![session_cookie(web, token), cookies::clear(cookies::CHALLENGE)];
    if let Some(b) = browser {
        set.push(cookies::set(cookies::BROWSER, b, Some(cookies::BROWSER_MAX_AGE)));
    }
    with_cookies(Redirect::to(to).into_response(), &set)
}

/// A browser that signs in again ends the session it held (ASVS 7.2.4: a new token at every
/// authentication; the old one must not live on beside it).
async fn end_previous(web: &Web, req: &Req) {
    if let Some(old) = &req.session
        && let Err(e) = web.app.logout(old, &req.ctx).await
    {
        tracing::warn!(error = %e, "could not end the session this browser held before signing in again");
    }
}

// ---- sign-up -----------------------------------------------------------------------------

pub(crate) async fn signup_form(req: Req, State(web): State<Web>) -> Response {
    signup_page(&web, &req, StatusCode::OK, String::new(), None)
}

fn signup_page(web: &Web, req: &Req, status: StatusCode, email: String, error: Option<String>) -> Response {
    let min_chars = web.app.config().min_password_chars;
    let open = web.app.config().signup_open;
    views::page(status, &views::Signup { chrome: req.chrome("Create an account"), email, error, min_chars, open })
}

/// One answer for every acceptable sign-up, whether the address is new, registered, or (with
/// sign-up closed) not invited: what happens next is said only in the mail. No session.
pub(crate) async fn signup(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<Credentials>) -> Response {
    match web.app.sign_up_in_background(&f.email, &f.password, &req.ctx).await {
        Ok(()) => views::message_link(
            StatusCode::OK,
            req.chrome("Check your email"),
            "We have emailed the address you gave. To finish, open the link in that message: it works once, \
             for 24 hours. Nothing there? Look in the spam folder, or ask for a new link.",
            "/verify-email/send",
            "Email me a new link",
        ),
        Err(AppError::Invalid(e)) => {
            signup_page(&web, &req, StatusCode::BAD_REQUEST, f.email, Some(sentence(&e.to_string())))
        }
        Err(AppError::FailedPrecondition(m)) => {
            signup_page(&web, &req, StatusCode::CONFLICT, f.email, Some(sentence(&m)))
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

// ---- sign-in -----------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LoginQuery {
    expired: Option<String>,
    reset: Option<String>,
    verified: Option<String>,
}

pub(crate) async fn login_form(req: Req, State(web): State<Web>, Query(q): Query<LoginQuery>) -> Response {
    if let Some(t) = &req.session
        && matches!(web.app.session(t).await, Ok(Some(_)))
    {
        return Redirect::to("/accounts").into_response();
    }
    let notice = match (q.expired, q.reset) {
        _ if q.verified.is_some() => Some("Your email address is confirmed. Sign in with your password.".to_owned()),
        (_, Some(_)) => Some(
            "Your new password is set and every session was signed out. Sign in with it (and your \
             authenticator, if you have one)."
                .to_owned(),
        ),
        (Some(_), None) => Some("Your sign-in expired or was cancelled. Please sign in again.".to_owned()),
        (None, None) => None,
    };
    login_page(&req, StatusCode::OK, String::new(), None, notice)
}

fn login_page(req: &Req, status: StatusCode, email: String, error: Option<String>, notice: Option<String>) -> Response {
    views::page(status, &views::Login { chrome: req.chrome("Sign in"), email, error, notice })
}

pub(crate) async fn login(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<Credentials>) -> Response {
    let now = web.app.now();
    match web.app.begin_login(&f.email, &f.password, &req.ctx).await {
        Ok(LoginOutcome::Authenticated { token, browser_token, .. }) => {
            end_previous(&web, &req).await;
            signed_in(&web, &token, browser_token.as_deref().map(String::as_str), "/accounts")
        }
        Ok(LoginOutcome::SecondFactorRequired { challenge }) => {
            let age = tessera_app::CHALLENGE_TTL.whole_seconds();
            with_cookies(
                Redirect::to("/login/code").into_response(),
                &[cookies::set(cookies::CHALLENGE, &challenge, Some(age))],
            )
        }
        Ok(LoginOutcome::Locked { until }) => {
            login_page(&req, StatusCode::TOO_MANY_REQUESTS, f.email, Some(locked(until, now)), None)
        }
        Ok(LoginOutcome::Suspended) => login_page(
            &req,
            StatusCode::TOO_MANY_REQUESTS,
            f.email,
            Some(
                "Signing in with a password is paused for this email after too many failed attempts. \
                 Sign in from a browser you have used before, or contact support."
                    .into(),
            ),
            None,
        ),
        Ok(_) => login_page(
            &req,
            StatusCode::UNAUTHORIZED,
            f.email,
            // (An unconfirmed address gets this answer too: anything else would tell whoever
            // signed up with an address, then signed in, whether it was already registered.)
            Some("That email and password don't match. Just signed up? Confirm your address first.".into()),
            None,
        ),
        Err(AppError::Invalid(_)) => {
            login_page(&req, StatusCode::BAD_REQUEST, f.email, Some("Enter your email address.".into()), None)
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

pub(crate) async fn code_form(req: Req) -> Response {
    if req.challenge.is_none() {
        return Redirect::to("/login").into_response();
    }
    views::page(StatusCode::OK, &views::LoginCode { chrome: req.chrome("Two-factor authentication"), error: None })
}

pub(crate) async fn recovery_form(req: Req) -> Response {
    if req.challenge.is_none() {
        return Redirect::to("/login").into_response();
    }
    views::page(StatusCode::OK, &views::LoginRecovery { chrome: req.chrome("Use a recovery code"), error: None })
}

#[derive(Clone, Copy, PartialEq)]
enum SecondStep {
    Totp,
    Recovery,
}

pub(crate) async fn code(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    second_step(req, web, SecondStep::Totp, f.code).await
}

pub(crate) async fn recovery(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    second_step(req, web, SecondStep::Recovery, f.code).await
}

async fn second_step(req: Req, web: Web, step: SecondStep, code: String) -> Response {
    let Some(challenge) = req.challenge.clone() else {
        return Redirect::to("/login?expired=1").into_response();
    };
    let render = |status: StatusCode, error: String| match step {
        SecondStep::Totp => views::page(
            status,
            &views::LoginCode { chrome: req.chrome("Two-factor authentication"), error: Some(error) },
        ),
        SecondStep::Recovery => {
            views::page(status, &views::LoginRecovery { chrome: req.chrome("Use a recovery code"), error: Some(error) })
        }
    };
    let now = web.app.now();
    let r = match step {
        SecondStep::Totp => web.app.complete_login_totp(&challenge, &compact(&code), &req.ctx).await,
        SecondStep::Recovery => web.app.complete_login_recovery(&challenge, &code, &req.ctx).await,
    };
    match r {
        Ok(LoginOutcome::Authenticated { token, browser_token, user_id, .. }) => {
            end_previous(&web, &req).await;
            // After a recovery code, a user running out of them lands where new ones are made.
            let to = match step {
                SecondStep::Recovery => match web.app.recovery_codes_remaining(&user_id).await {
                    Ok(0) => "/settings/security?done=last-code",
                    Ok(n) if n <= 3 => "/settings/security?done=codes-low",
                    _ => "/accounts",
                },
                SecondStep::Totp => "/accounts",
            };
            signed_in(&web, &token, browser_token.as_deref().map(String::as_str), to)
        }
        Ok(LoginOutcome::Rejected { attempts_remaining }) => {
            let msg = match step {
                SecondStep::Totp => attempts_left(attempts_remaining),
                SecondStep::Recovery => did_not_match("recovery code", attempts_remaining),
            };
            render(StatusCode::UNAUTHORIZED, msg)
        }
        Ok(LoginOutcome::TotpDisabled) => render(StatusCode::FORBIDDEN, TOTP_DISABLED.into()),
        Ok(LoginOutcome::Locked { until }) => with_cookies(
            views::message_link(
                StatusCode::TOO_MANY_REQUESTS,
                req.chrome("Too many attempts"),
                &format!("{} Your sign-in was cancelled; start again with your password then.", locked(until, now)),
                "/login",
                "Back to sign in",
            ),
            &[cookies::clear(cookies::CHALLENGE)],
        ),
        Ok(_) => with_cookies(Redirect::to("/login?expired=1").into_response(), &[cookies::clear(cookies::CHALLENGE)]),
        Err(AppError::Invalid(_)) => render(
            StatusCode::BAD_REQUEST,
            match step {
                SecondStep::Totp => "Enter the 6-digit code from your authenticator app.".into(),
                SecondStep::Recovery => {
                    "That isn't a recovery code: they have 16 letters and digits, like ABCD-EFGH-JKMN-PQRS.".into()
                }
            },
        ),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

pub(crate) async fn logout_form(req: Req) -> Response {
    views::page(StatusCode::OK, &views::Logout { chrome: req.chrome("Sign out") })
}

pub(crate) async fn logout(req: Req, State(web): State<Web>) -> Response {
    if let Some(t) = &req.session
        && let Err(e) = web.app.logout(t, &req.ctx).await
    {
        return views::app_error(req.chrome("Error"), e);
    }
    with_cookies(
        Redirect::to("/login").into_response(),
        &[cookies::clear(cookies::SESSION), cookies::clear(cookies::CHALLENGE)],
    )
}

// ---- re-authentication ("sudo mode") -----------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Next {
    next: String,
}

/// Where to go after re-authenticating: `next` if it is a local path, else the security page.
fn return_to(next: &str) -> String {
    tessera_core::redirect::local_path(next).unwrap_or("/settings/security").to_owned()
}

async fn reauth_page(web: &Web, user: &User, next: &str, status: StatusCode, error: Option<String>) -> Page {
    let needs = web.app.reauth_needs(&user.session).await.map_err(|e| user.fail(e, "/settings/security"))?;
    let minutes = web.app.config().sessions.reauth_window.whole_minutes();
    Ok(views::page(
        status,
        &views::Reauth {
            chrome: user.chrome("Confirm it's you"),
            next: return_to(next),
            password: needs == Recency::NeedPassword,
            minutes,
            error,
        },
    ))
}

pub(crate) async fn reauth_form(user: User, State(web): State<Web>, Query(q): Query<Next>) -> Response {
    flatten(reauth_page(&web, &user, &q.next, StatusCode::OK, None).await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ReauthForm {
    method: String,
    code: String,
    password: String,
    next: String,
}

pub(crate) async fn reauth(user: User, State(web): State<Web>, axum::Form(f): axum::Form<ReauthForm>) -> Response {
    let compacted = compact(&f.code);
    let proof = match f.method.as_str() {
        "totp" => Proof::Totp(&compacted),
        "recovery" => Proof::RecoveryCode(&f.code),
        "password" => Proof::Password(&f.password),
        _ => {
            let msg = "Choose how to confirm: a code, a recovery code or your password.".to_owned();
            return flatten(reauth_page(&web, &user, &f.next, StatusCode::BAD_REQUEST, Some(msg)).await);
        }
    };
    let now = web.app.now();
    let (status, msg) = match web.app.reauthenticate(&user.session, proof, user.ctx()).await {
        Ok(LoginOutcome::Authenticated { token, .. }) => {
            return with_cookies(Redirect::to(&return_to(&f.next)).into_response(), &[session_cookie(&web, &token)]);
        }
        Ok(LoginOutcome::Rejected { attempts_remaining }) => (
            StatusCode::UNAUTHORIZED,
            if f.method == "recovery" {
                did_not_match("recovery code", attempts_remaining)
            } else {
                attempts_left(attempts_remaining)
            },
        ),
        Ok(LoginOutcome::Locked { until }) => (StatusCode::TOO_MANY_REQUESTS, locked(until, now)),
        Ok(LoginOutcome::TotpDisabled) => (StatusCode::FORBIDDEN, TOTP_DISABLED.into()),
        Ok(LoginOutcome::Failed) => (StatusCode::UNAUTHORIZED, "That password isn't right.".into()),
        Ok(LoginOutcome::Suspended) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Password checks for your email are paused after too many failed attempts. Sign in again from a \
             browser you have used before, or contact support."
                .into(),
        ),
        Ok(_) => return Redirect::to("/login?expired=1").into_response(),
        Err(AppError::Invalid(e)) => (StatusCode::BAD_REQUEST, sentence(&e.to_string())),
        Err(e) => return user.fail(e, "/settings/security"),
    };
    flatten(reauth_page(&web, &user, &f.next, status, Some(msg)).await)
}

#[cfg(test)]
mod tests {
    #[test]
    fn return_addresses_are_local() {
        assert_eq!(super::return_to("/accounts/x/settings"), "/accounts/x/settings");
        for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", ""] {
            assert_eq!(super::return_to(bad), "/settings/security", "{bad}");
        }
    }
}
