//! Sign-up, sign-in (password, then a code or a recovery code on pages of their own), sign-out,
//! and re-authentication.
//!
//! Who may do what: anyone may sign up and sign in (rate-limited per address; password
//! failures lock per email and address, so a stranger elsewhere cannot lock the owner out);
//! the code pages need the login challenge cookie the password step set; `/settings/reauth`
//! needs a live session and proves a factor the user already has (or, without one, the
//! password) again, then returns to a local path only.
//!
//! Security keys and passkeys (`/login/key`, `/login/passkey`, `/settings/reauth/key`): each
//! POST begins a ceremony the app binds to what began it (the login challenge cookie, nothing,
//! the session) and renders a page whose script asks the browser; the answer comes back by
//! form POST (CSRF-checked, rate-limited like a code). A key after the password needs the
//! challenge cookie; a passkey needs no password, and only a passkey (never a security key)
//! signs in on its own.

use super::{
    CeremonyPage, KeyAnswer, Page, Req, TOTP_DISABLED, User, attempts_left, ceremony_page, compact, did_not_match,
    flatten, key_refused, locked, sentence, session_cookies, with_cookies,
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
    /// Where to return once signed in (forward auth's `rd`), checked before it is kept.
    rd: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
    /// "Trust this browser for 30 days" ticked (`on`).
    trust: String,
}

pub(crate) async fn home(req: Req, State(web): State<Web>) -> Response {
    match &req.session {
        Some(t) if matches!(web.app.session(t).await, Ok(Some(_))) => Redirect::to("/accounts").into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}

/// The cookies of a completed sign-in: the session, the known-browser token when a new one was
/// minted, the domain-wide forward-auth cookie with `--cookie-domain`, and the login challenge
/// cleared.
async fn signed_in(web: &Web, token: &str, browser: Option<&str>, to: &str) -> Response {
    let mut set = session_cookies(web, token).await;
    set.push(cookies::clear(cookies::CHALLENGE));
    if let Some(b) = browser {
        set.push(cookies::set(cookies::BROWSER, b, Some(cookies::BROWSER_MAX_AGE)));
    }
    with_cookies(Redirect::to(to).into_response(), &set)
}

/// Where a sign-in returns: `rd` if the return-address parser accepts it (a local path, or a
/// URL on a host of `--forward-auth-domain`), else `fallback`.
fn return_address(web: &Web, rd: Option<&str>, fallback: &str) -> String {
    rd.and_then(|rd| checked_rd(web, rd)).unwrap_or_else(|| fallback.to_owned())
}

/// `rd` as the sign-in keeps it: checked now (and again when followed), or nothing.
fn checked_rd(web: &Web, rd: &str) -> Option<String> {
    tessera_core::redirect::return_address(rd, &web.config.forward_domains)
}

/// Where the sign-in of the browser's login challenge returns (kept in the challenge).
async fn challenge_return(web: &Web, req: &Req, fallback: &str) -> String {
    let rd = match req.challenge.as_deref() {
        Some(c) => web.app.challenge_return_to(c).await.ok().flatten(),
        None => None,
    };
    return_address(web, rd.as_deref(), fallback)
}

/// "Trust this browser": the cookie of a trust minted for the session just opened (`None`, and
/// logged, if it could not be: the sign-in stands either way).
async fn trust_cookie(web: &Web, token: &str, ctx: &tessera_app::ClientContext) -> Option<String> {
    let s = web.app.session(token).await.ok().flatten()?;
    match web.app.trust_this_browser(&s, ctx).await {
        Ok(t) => Some(cookies::set(cookies::TRUST, &t, Some(tessera_app::TRUST_TTL.whole_seconds()))),
        Err(e) => {
            tracing::warn!(error = %e, "could not trust this browser");
            None
        }
    }
}

/// [`signed_in`], and with `trust` the cookie of a trust minted for the new session.
async fn signed_in_trusting(
    web: &Web,
    req: &Req,
    token: &str,
    browser: Option<&str>,
    to: &str,
    trust: bool,
) -> Response {
    let page = signed_in(web, token, browser, to).await;
    match if trust { trust_cookie(web, token, &req.ctx).await } else { None } {
        Some(c) => with_cookies(page, &[c]),
        None => page,
    }
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
    /// Forward auth: the app to return to once signed in.
    rd: Option<String>,
}

pub(crate) async fn login_form(req: Req, State(web): State<Web>, Query(q): Query<LoginQuery>) -> Response {
    let rd = q.rd.as_deref().and_then(|rd| checked_rd(&web, rd)).unwrap_or_default();
    if let Some(t) = &req.session
        && matches!(web.app.session(t).await, Ok(Some(_)))
    {
        if rd.is_empty() {
            return Redirect::to("/accounts").into_response();
        }
        // Sent back by an app's proxy while signed in: this session is not enough for that app
        // (it asks for a second factor this session has not proven, or one the user has yet to
        // set up). Signing in again with the second factor, or setting one up, is the way on.
        let passkeys = web.app.webauthn_enabled();
        let chrome = req.chrome("Sign in");
        let (email, error, notice) = (String::new(), None, None);
        let page = views::Login { chrome, email, error, notice, passkeys, rd, needs_more: true };
        return views::page(StatusCode::OK, &page);
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
    login_page(&web, &req, StatusCode::OK, String::new(), None, notice, rd)
}

fn login_page(
    web: &Web,
    req: &Req,
    status: StatusCode,
    email: String,
    error: Option<String>,
    notice: Option<String>,
    rd: String,
) -> Response {
    let passkeys = web.app.webauthn_enabled();
    views::page(
        status,
        &views::Login { chrome: req.chrome("Sign in"), email, error, notice, passkeys, rd, needs_more: false },
    )
}

pub(crate) async fn login(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<Credentials>) -> Response {
    let now = web.app.now();
    let rd = checked_rd(&web, &f.rd);
    let login_page = |web: &Web, req: &Req, status, email, error, notice| {
        login_page(web, req, status, email, error, notice, rd.clone().unwrap_or_default())
    };
    match web.app.begin_login_returning(&f.email, &f.password, &req.ctx, rd.as_deref()).await {
        Ok(LoginOutcome::Authenticated { token, browser_token, .. }) => {
            end_previous(&web, &req).await;
            let to = return_address(&web, rd.as_deref(), "/accounts");
            signed_in(&web, &token, browser_token.as_deref().map(String::as_str), &to).await
        }
        Ok(LoginOutcome::SecondFactorRequired { challenge }) => {
            let age = tessera_app::CHALLENGE_TTL.whole_seconds();
            with_cookies(
                Redirect::to("/login/code").into_response(),
                &[cookies::set(cookies::CHALLENGE, &challenge, Some(age))],
            )
        }
        Ok(LoginOutcome::Locked { until }) => {
            login_page(&web, &req, StatusCode::TOO_MANY_REQUESTS, f.email, Some(locked(until, now)), None)
        }
        Ok(LoginOutcome::Suspended) => login_page(
            &web,
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
            &web,
            &req,
            StatusCode::UNAUTHORIZED,
            f.email,
            // (An unconfirmed address gets this answer too: anything else would tell whoever
            // signed up with an address, then signed in, whether it was already registered.)
            Some("That email and password don't match. Just signed up? Confirm your address first.".into()),
            None,
        ),
        Err(AppError::Invalid(_)) => {
            login_page(&web, &req, StatusCode::BAD_REQUEST, f.email, Some("Enter your email address.".into()), None)
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

/// The code page: a code field if the user has an authenticator app in use, "Use your security
/// key" if they have one (the user has proven the password: this tells them nothing new).
fn code_page(req: &Req, steps: tessera_app::SecondSteps, status: StatusCode, error: Option<String>) -> Response {
    // (No factor in use at all — apps turned off — still shows the code field: its answer explains.)
    let totp = steps.totp || !steps.keys;
    views::page(
        status,
        &views::LoginCode { chrome: req.chrome("Two-factor authentication"), error, totp, keys: steps.keys },
    )
}

async fn second_steps(web: &Web, req: &Req) -> Option<tessera_app::SecondSteps> {
    let challenge = req.challenge.as_deref()?;
    web.app.second_steps(challenge).await.ok().flatten()
}

/// The code page again, with a refusal in words.
async fn code_error(web: &Web, req: &Req, status: StatusCode, error: String) -> Response {
    code_page(req, second_steps(web, req).await.unwrap_or_default(), status, Some(error))
}

pub(crate) async fn code_form(req: Req, State(web): State<Web>) -> Response {
    if req.challenge.is_none() {
        return Redirect::to("/login").into_response();
    }
    match second_steps(&web, &req).await {
        Some(steps) => code_page(&req, steps, StatusCode::OK, None),
        None => with_cookies(Redirect::to("/login?expired=1").into_response(), &[cookies::clear(cookies::CHALLENGE)]),
    }
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
    second_step(req, web, SecondStep::Totp, f.code, f.trust == "on").await
}

pub(crate) async fn recovery(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    second_step(req, web, SecondStep::Recovery, f.code, false).await
}

async fn second_step(req: Req, web: Web, step: SecondStep, code: String, trust: bool) -> Response {
    let Some(challenge) = req.challenge.clone() else {
        return Redirect::to("/login?expired=1").into_response();
    };
    // (The code page's refusals look the user's steps up only when they are shown: a code that
    // is accepted costs no more than before.)
    let render = |status: StatusCode, error: String| {
        let (web, req) = (&web, &req);
        async move {
            match step {
                SecondStep::Totp => code_error(web, req, status, error).await,
                SecondStep::Recovery => views::page(
                    status,
                    &views::LoginRecovery { chrome: req.chrome("Use a recovery code"), error: Some(error) },
                ),
            }
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
                    Ok(0) => "/settings/security?done=last-code".to_owned(),
                    Ok(n) if n <= 3 => "/settings/security?done=codes-low".to_owned(),
                    _ => challenge_return(&web, &req, "/accounts").await,
                },
                SecondStep::Totp => challenge_return(&web, &req, "/accounts").await,
            };
            signed_in_trusting(&web, &req, &token, browser_token.as_deref().map(String::as_str), &to, trust).await
        }
        Ok(LoginOutcome::Rejected { attempts_remaining }) => {
            let msg = match step {
                SecondStep::Totp => attempts_left(attempts_remaining),
                SecondStep::Recovery => did_not_match("recovery code", attempts_remaining),
            };
            render(StatusCode::UNAUTHORIZED, msg).await
        }
        Ok(LoginOutcome::TotpDisabled) => render(StatusCode::FORBIDDEN, TOTP_DISABLED.into()).await,
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
        Err(AppError::Invalid(_)) => {
            render(
                StatusCode::BAD_REQUEST,
                match step {
                    SecondStep::Totp => "Enter the 6-digit code from your authenticator app.".into(),
                    SecondStep::Recovery => {
                        "That isn't a recovery code: they have 16 letters and digits, like ABCD-EFGH-JKMN-PQRS.".into()
                    }
                },
            )
            .await
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

// ---- security keys and passkeys at sign-in ---------------------------------------------------

/// "Use your security key" on the code page: a ceremony bound to the login challenge (the
/// "trust this browser" box rides along to the answer's form).
pub(crate) async fn key_begin(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    let expired =
        || with_cookies(Redirect::to("/login?expired=1").into_response(), &[cookies::clear(cookies::CHALLENGE)]);
    let Some(challenge) = req.challenge.clone() else { return expired() };
    match web.app.begin_login_key(&challenge).await {
        Ok(Some(c)) => ceremony_page(
            req.chrome("Use your security key"),
            CeremonyPage {
                heading: "Use your security key",
                intro: "Insert or touch your security key, or use the passkey on this device, when your browser asks.",
                mode: "get",
                action: "/login/key/finish",
                extra: if f.trust == "on" { vec![("trust".into(), "on".into())] } else { Vec::new() },
                button: "Use security key",
                back: "/login/code",
            },
            c,
        ),
        Ok(None) => expired(),
        Err(AppError::FailedPrecondition(m)) => code_error(&web, &req, StatusCode::CONFLICT, sentence(&m)).await,
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

/// The key's answer: signed in at the second-factor level, or back to the code page.
pub(crate) async fn key_finish(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<KeyAnswer>) -> Response {
    let Some(challenge) = req.challenge.clone() else {
        return Redirect::to("/login?expired=1").into_response();
    };
    match web.app.complete_login_key(&challenge, &f.ceremony, &f.response, &req.ctx).await {
        Ok(LoginOutcome::Authenticated { token, browser_token, .. }) => {
            end_previous(&web, &req).await;
            let browser = browser_token.as_deref().map(String::as_str);
            let to = challenge_return(&web, &req, "/accounts").await;
            signed_in_trusting(&web, &req, &token, browser, &to, f.trust == "on").await
        }
        Ok(LoginOutcome::KeyRefused(r)) => code_error(&web, &req, StatusCode::UNAUTHORIZED, key_refused(r)).await,
        Ok(_) => with_cookies(Redirect::to("/login?expired=1").into_response(), &[cookies::clear(cookies::CHALLENGE)]),
        Err(AppError::Invalid(_)) => {
            let msg = "Your browser sent no answer from a key. Try again.".to_owned();
            code_error(&web, &req, StatusCode::BAD_REQUEST, msg).await
        }
        Err(AppError::FailedPrecondition(m)) => code_error(&web, &req, StatusCode::CONFLICT, sentence(&m)).await,
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

/// The return address a form carries along (the passkey sign-in's).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Rd {
    rd: String,
}

/// "Sign in with a passkey" on `/login`: a ceremony that names no user.
pub(crate) async fn passkey_begin(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<Rd>) -> Response {
    let rd = checked_rd(&web, &f.rd);
    match web.app.begin_passkey_login().await {
        Ok(c) => ceremony_page(
            req.chrome("Sign in with a passkey"),
            CeremonyPage {
                heading: "Sign in with a passkey",
                intro: "Choose your passkey when your browser asks, and confirm with your fingerprint, face or PIN.",
                mode: "get",
                action: "/login/passkey/finish",
                extra: rd.iter().map(|rd| ("rd".to_owned(), rd.clone())).collect(),
                button: "Use passkey",
                back: "/login",
            },
            c,
        ),
        Err(AppError::FailedPrecondition(m)) => login_page(
            &web,
            &req,
            StatusCode::CONFLICT,
            String::new(),
            Some(sentence(&m)),
            None,
            rd.unwrap_or_default(),
        ),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

/// The passkey's answer: signed in (at the second-factor level), or back to `/login`.
pub(crate) async fn passkey_finish(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<KeyAnswer>) -> Response {
    let rd = checked_rd(&web, &f.rd);
    let fail = |status, msg: String| {
        login_page(&web, &req, status, String::new(), Some(msg), None, rd.clone().unwrap_or_default())
    };
    match web.app.complete_passkey_login(&f.ceremony, &f.response, &req.ctx).await {
        Ok(LoginOutcome::Authenticated { token, browser_token, .. }) => {
            end_previous(&web, &req).await;
            let to = rd.clone().unwrap_or_else(|| "/accounts".to_owned());
            signed_in(&web, &token, browser_token.as_deref().map(String::as_str), &to).await
        }
        Ok(LoginOutcome::KeyRefused(tessera_app::KeyRefusal::UnknownCredential)) => fail(
            StatusCode::UNAUTHORIZED,
            "That passkey isn't one that can sign in here (or it was removed). Sign in with your password.".into(),
        ),
        Ok(LoginOutcome::KeyRefused(r)) => fail(StatusCode::UNAUTHORIZED, key_refused(r)),
        Ok(_) => fail(StatusCode::UNAUTHORIZED, key_refused(tessera_app::KeyRefusal::CeremonyInvalid)),
        Err(AppError::Invalid(_)) => {
            fail(StatusCode::BAD_REQUEST, "Your browser sent no answer from a passkey. Try again.".into())
        }
        Err(AppError::FailedPrecondition(m)) => fail(StatusCode::CONFLICT, sentence(&m)),
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
    let mut clear = vec![cookies::clear(cookies::SESSION), cookies::clear(cookies::CHALLENGE)];
    if let Some(domain) = &web.config.cookie_domain {
        clear.push(cookies::clear_forward(domain));
    }
    with_cookies(Redirect::to("/login").into_response(), &clear)
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
    let fail = |e| user.fail(e, "/settings/security");
    let needs = web.app.reauth_needs(&user.session).await.map_err(fail)?;
    let factors = web.app.devices(&user.session).await.map_err(fail)?;
    let live = |f: &&tessera_core::factor::Factor| {
        f.status == tessera_core::factor::FactorStatus::Active && f.disabled_at.is_none()
    };
    let keys = factors.iter().filter(live).any(|f| f.kind.is_webauthn());
    let totp = factors.iter().filter(live).any(|f| f.kind == tessera_core::factor::FactorKind::Totp) || !keys;
    let minutes = web.app.config().sessions.reauth_window.whole_minutes();
    Ok(views::page(
        status,
        &views::Reauth {
            chrome: user.chrome("Confirm it's you"),
            next: return_to(next),
            password: needs == Recency::NeedPassword,
            totp,
            keys,
            minutes,
            error,
        },
    ))
}

/// "Confirm with your security key": a ceremony bound to this session; its answer goes to
/// `/settings/reauth` with `method=key`.
pub(crate) async fn reauth_key(user: User, State(web): State<Web>, axum::Form(f): axum::Form<Next>) -> Response {
    match web.app.begin_reauth_key(&user.session).await {
        Ok(c) => ceremony_page(
            user.chrome("Confirm it's you"),
            CeremonyPage {
                heading: "Confirm it's you",
                intro: "Use your security key or passkey when your browser asks.",
                mode: "get",
                action: "/settings/reauth",
                extra: vec![("method".into(), "key".into()), ("next".into(), return_to(&f.next))],
                button: "Use security key",
                back: "/settings/security",
            },
            c,
        ),
        Err(AppError::FailedPrecondition(m)) => {
            flatten(reauth_page(&web, &user, &f.next, StatusCode::CONFLICT, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, "/settings/security"),
    }
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
    ceremony: String,
    response: String,
}

pub(crate) async fn reauth(user: User, State(web): State<Web>, axum::Form(f): axum::Form<ReauthForm>) -> Response {
    let compacted = compact(&f.code);
    let proof = match f.method.as_str() {
        "totp" => Proof::Totp(&compacted),
        "recovery" => Proof::RecoveryCode(&f.code),
        "password" => Proof::Password(&f.password),
        "key" => Proof::Key { ceremony: &f.ceremony, response: &f.response },
        _ => {
            let msg = "Choose how to confirm: a code, a security key, a recovery code or your password.".to_owned();
            return flatten(reauth_page(&web, &user, &f.next, StatusCode::BAD_REQUEST, Some(msg)).await);
        }
    };
    let now = web.app.now();
    let (status, msg) = match web.app.reauthenticate(&user.session, proof, user.ctx()).await {
        Ok(LoginOutcome::Authenticated { token, .. }) => {
            let set = session_cookies(&web, &token).await;
            return with_cookies(Redirect::to(&return_to(&f.next)).into_response(), &set);
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
        Ok(LoginOutcome::KeyRefused(r)) => (StatusCode::UNAUTHORIZED, key_refused(r)),
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
