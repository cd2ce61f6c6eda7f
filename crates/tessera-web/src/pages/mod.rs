//! The page handlers: parse the form, call the use case, render. Each POST that succeeds
//! redirects (303) unless it must show something once (recovery codes), which it renders.
//!
//! # Layout
//! - `auth`: sign-up, sign-in (password, then a code or a recovery code), sign-out, and
//!   re-authentication ("sudo mode") with its return address;
//! - `security`: the security page — authenticator apps, recovery codes, sessions;
//! - `activity`: the user's own audit trail;
//! - `accounts`: accounts, invitations, members and roles, the MFA policy.
//!
//! Every sensitive action is decided in the app; a page that gets
//! [`AppError::ReauthRequired`] sends the browser to `/settings/reauth?next=<where it was>`.

mod accounts;
mod activity;
mod auth;
mod email;
mod password;
mod security;

use crate::guard::{ClientIp, CsrfToken};
use crate::views::{self, Chrome};
use crate::{Web, cookies};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tessera_app::{AppError, ClientContext, Session};
use time::OffsetDateTime;

pub(crate) fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(auth::home))
        .route("/static/style.css", get(css))
        .route("/static/app.js", get(js))
        .route("/static/webauthn.js", get(webauthn_js))
        .route("/signup", get(auth::signup_form).post(auth::signup))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/login/code", get(auth::code_form).post(auth::code))
        .route("/login/recovery", get(auth::recovery_form).post(auth::recovery))
        .route("/login/key", post(auth::key_begin))
        .route("/login/key/finish", post(auth::key_finish))
        .route("/login/passkey", post(auth::passkey_begin))
        .route("/login/passkey/finish", post(auth::passkey_finish))
        .route("/settings/reauth/key", post(auth::reauth_key))
        .route("/logout", get(auth::logout_form).post(auth::logout))
        .route("/settings/reauth", get(auth::reauth_form).post(auth::reauth))
        .route("/password/forgot", get(password::forgot_form).post(password::forgot))
        .route("/password/reset", get(password::reset_form).post(password::reset))
        .route("/verify-email", get(email::verify_form).post(email::verify))
        .route("/verify-email/send", get(email::send_form).post(email::send))
        .route("/settings/password", get(password::change_form).post(password::change))
        .route("/settings/email", get(email::change_form).post(email::change))
        .route("/settings/email/confirm", get(email::confirm_form).post(email::confirm))
        .route("/settings/security", get(security::page))
        .route("/settings/security/totp", post(security::enroll))
        .route("/settings/security/totp/{id}", get(security::setup))
        .route("/settings/security/totp/{id}/confirm", post(security::confirm))
        .route("/settings/security/recovery-codes", post(security::regenerate))
        .route("/settings/security/keys", post(security::add_key))
        .route("/settings/security/keys/finish", post(security::finish_key))
        .route("/settings/security/devices/{id}/remove", post(security::remove_device))
        .route("/settings/security/sessions/revoke-others", post(security::revoke_others))
        .route("/settings/security/trusted/revoke-all", post(security::revoke_all_trusted))
        .route("/settings/security/trusted/{id}/revoke", post(security::revoke_trusted))
        .route("/settings/security/sessions/{id}/revoke", post(security::revoke_session))
        .route("/settings/activity", get(activity::page))
        .route("/accounts", get(accounts::list).post(accounts::create))
        .route("/accounts/invitations/{id}/accept", post(accounts::accept))
        .route("/accounts/invitations/{id}/decline", post(accounts::decline))
        .route("/accounts/{id}", get(accounts::show))
        .route("/accounts/{id}/settings", get(accounts::settings).post(accounts::save_policy))
        .route("/accounts/{id}/invitations", post(accounts::invite))
        .route("/accounts/{id}/invitations/{inv}/cancel", post(accounts::cancel_invitation))
        .route("/accounts/{id}/members/{user}/role", post(accounts::change_role))
        .route("/accounts/{id}/members/{user}/remove", post(accounts::remove_member))
        .fallback(|| async { StatusCode::NOT_FOUND })
}

// ---- request context ---------------------------------------------------------------------

/// Who is asking, from where, with which cookies.
pub(crate) struct Req {
    csrf: String,
    ctx: ClientContext,
    session: Option<String>,
    challenge: Option<String>,
}

impl FromRequestParts<Web> for Req {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &Web) -> Result<Self, Response> {
        let csrf = parts.extensions.get::<CsrfToken>().map(|t| t.0.clone()).unwrap_or_default();
        let ip = parts.extensions.get::<ClientIp>().map(|i| i.0.clone());
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self {
            csrf,
            ctx: ClientContext {
                ip,
                user_agent,
                browser: cookies::get(&parts.headers, cookies::BROWSER),
                trust: cookies::get(&parts.headers, cookies::TRUST),
            },
            session: cookies::get(&parts.headers, cookies::SESSION),
            challenge: cookies::get(&parts.headers, cookies::CHALLENGE),
        })
    }
}

impl Req {
    fn chrome(&self, title: &str) -> Chrome {
        Chrome::new(&self.csrf, None, title)
    }
}

/// A WebAuthn ceremony's answer, as the page's script posts it.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(crate) struct KeyAnswer {
    ceremony: String,
    response: String,
    /// "Trust this browser for 30 days" ticked before the key's ceremony (`on`).
    trust: String,
    /// Where a passkey sign-in returns (forward auth's `rd`, checked again).
    rd: String,
}

/// What a WebAuthn ceremony page says and where its answer goes.
pub(crate) struct CeremonyPage<'a> {
    heading: &'a str,
    intro: &'a str,
    /// `create` or `get`.
    mode: &'static str,
    action: &'a str,
    extra: Vec<(String, String)>,
    button: &'a str,
    back: &'a str,
}

/// Render a ceremony the app began: its options go into the page, the script asks the browser
/// and posts the answer to `p.action`.
fn ceremony_page(mut chrome: Chrome, p: CeremonyPage<'_>, c: tessera_app::CeremonyStart) -> Response {
    chrome.webauthn = true;
    views::page(
        StatusCode::OK,
        &views::Webauthn {
            chrome,
            heading: p.heading.to_owned(),
            intro: p.intro.to_owned(),
            mode: p.mode,
            options: c.options,
            ceremony: c.id,
            action: p.action.to_owned(),
            extra: p.extra,
            button: p.button.to_owned(),
            back: p.back.to_owned(),
            error: None,
        },
    )
}

/// What a refused key answer tells the user.
fn key_refused(r: tessera_app::KeyRefusal) -> String {
    match r {
        tessera_app::KeyRefusal::CeremonyInvalid => "That took too long, or the request was already used. Try again.",
        tessera_app::KeyRefusal::UnknownCredential => {
            "That key or passkey isn't registered to this account (or it was removed). Try another one."
        }
        tessera_app::KeyRefusal::NotVerified => "Your key's answer could not be verified. Try again.",
        tessera_app::KeyRefusal::PossibleClone => {
            "This key was refused: its signature counter went backwards, which can mean it was copied. \
             Use another factor, and check your security page."
        }
    }
    .to_owned()
}

/// A signed-in user: a live session (else a redirect to the login page).
pub(crate) struct User {
    req: Req,
    session: Session,
    email: String,
}

impl FromRequestParts<Web> for User {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Response> {
        let req = Req::from_request_parts(parts, web).await?;
        let to_login = || with_cookies(Redirect::to("/login").into_response(), &[cookies::clear(cookies::SESSION)]);
        let Some(token) = req.session.clone() else { return Err(Redirect::to("/login").into_response()) };
        let session = match web.app.session(&token).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(views::app_error(req.chrome("Error"), e)),
        };
        let email = match web.app.user_email(session.user_id()).await {
            Ok(Some(e)) => e,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(views::app_error(req.chrome("Error"), e)),
        };
        Ok(Self { req, session, email })
    }
}

impl User {
    fn chrome(&self, title: &str) -> Chrome {
        Chrome::new(&self.req.csrf, Some(&self.email), title)
    }
    fn ctx(&self) -> &ClientContext {
        &self.req.ctx
    }
    fn id(&self) -> &str {
        self.session.user_id()
    }
    /// A use-case error as a page; "re-authenticate first" as a redirect to the
    /// re-authentication page that returns to `back`.
    fn fail(&self, e: AppError, back: &str) -> Response {
        match e {
            AppError::ReauthRequired(_) => reauth_redirect(back),
            e => views::app_error(self.chrome("Error"), e),
        }
    }
}

/// A page handler's result: the page, or the page that explains why not.
pub(crate) type Page = Result<Response, Response>;

fn flatten(p: Page) -> Response {
    p.unwrap_or_else(|r| r)
}

/// 303 to `/settings/reauth`, returning to `back` (a local path) afterwards.
fn reauth_redirect(back: &str) -> Response {
    let next = tessera_core::redirect::local_path(back).unwrap_or("/settings/security");
    let q = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
    Redirect::to(&format!("/settings/reauth?next={q}")).into_response()
}

fn with_cookies(mut r: Response, set: &[String]) -> Response {
    for c in set {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn session_cookie(web: &Web, token: &str) -> String {
    cookies::set(cookies::SESSION, token, Some(web.app.config().sessions.lifetime.whole_seconds()))
}

/// The cookies of a session's new token: the session cookie and, with `--cookie-domain`, the
/// domain-wide forward-auth cookie with a forward token minted for it (a new token, from a
/// sign-in or a rotation, always comes with a new forward token: a rotation voids the old one).
async fn session_cookies(web: &Web, token: &str) -> Vec<String> {
    let mut set = vec![session_cookie(web, token)];
    if let Some(domain) = &web.config.cookie_domain {
        match web.app.forward_token(token).await {
            Ok(Some(f)) => {
                set.push(cookies::set_forward(domain, &f, web.app.config().sessions.lifetime.whole_seconds()));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not mint the forward-auth cookie"),
        }
    }
    set
}

/// "That {what} didn't match. N attempts left." (and the singular and the last).
fn did_not_match(what: &str, n: u32) -> String {
    match n {
        0 => format!(
            "That {what} didn't match. No attempts left: the next wrong code locks two-factor sign-in for a while."
        ),
        1 => format!("That {what} didn't match. 1 attempt left."),
        n => format!("That {what} didn't match. {n} attempts left."),
    }
}

fn attempts_left(n: u32) -> String {
    did_not_match("code", n)
}

fn locked(until: OffsetDateTime, now: OffsetDateTime) -> String {
    format!("Too many attempts. Try again at {}.", views::clock_time(until, now))
}

const TOTP_DISABLED: &str = "Your authenticator app was turned off after 100 wrong codes in a row, and we emailed you \
     about it. Use a recovery code; then remove that device and set up a new one. No codes left? Contact support.";

/// A code as typed ("123 456") to the form the use cases parse.
fn compact(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A use-case message as a sentence: capitalised, with a full stop.
fn sentence(m: &str) -> String {
    let mut c = m.chars();
    let mut s = c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

// ---- static ------------------------------------------------------------------------------

async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("../../static/style.css"))
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("../../static/app.js"))
}

async fn webauthn_js() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("../../static/webauthn.js"))
}

fn static_file(ty: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn words() {
        assert_eq!(super::attempts_left(4), "That code didn't match. 4 attempts left.");
        assert_eq!(super::attempts_left(1), "That code didn't match. 1 attempt left.");
        assert_eq!(super::sentence("email is not an email address"), "Email is not an email address.");
        assert_eq!(super::compact(" 123 456 "), "123456");
    }

    #[test]
    fn reauth_returns_only_to_local_paths() {
        let loc = |back: &str| super::reauth_redirect(back).headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(loc("/accounts/a/settings"), "/settings/reauth?next=%2Faccounts%2Fa%2Fsettings");
        assert_eq!(loc("//evil.example"), "/settings/reauth?next=%2Fsettings%2Fsecurity");
    }
}
