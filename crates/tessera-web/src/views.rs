//! The pages' templates (askama, checked at compile time) and how a page becomes a response.
//! Every error a user can meet is rendered here in words; none is a stack trace or a bare
//! status.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_app::AppError;
use time::OffsetDateTime;

/// What every page's frame needs: the CSRF token for its forms and who is signed in.
pub(crate) struct Chrome {
    pub(crate) csrf: String,
    pub(crate) email: Option<String>,
    pub(crate) title: String,
    /// The page runs a WebAuthn ceremony: load `/static/webauthn.js`.
    pub(crate) webauthn: bool,
}

impl Chrome {
    pub(crate) fn new(csrf: &str, email: Option<&str>, title: &str) -> Self {
        Self { csrf: csrf.to_owned(), email: email.map(str::to_owned), title: title.to_owned(), webauthn: false }
    }
}

/// Render a template with a status; a template that fails to render is logged and becomes a
/// plain 500.
pub(crate) fn page<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => internal(&format!("template: {e}")),
    }
}

/// "14:05 UTC" today, or "2026-11-24 14:05 UTC" another day.
pub(crate) fn clock_time(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let fmt = if t.date() == now.date() {
        time::macros::format_description!("[hour]:[minute] UTC")
    } else {
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")
    };
    t.format(&fmt).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// "2026-11-24 14:05:09 UTC".
pub(crate) fn timestamp(t: OffsetDateTime) -> String {
    t.format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC"))
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[derive(Template)]
#[template(path = "password_forgot.html")]
pub(crate) struct PasswordForgot {
    pub(crate) chrome: Chrome,
    pub(crate) email: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "password_reset.html")]
pub(crate) struct PasswordReset {
    pub(crate) chrome: Chrome,
    pub(crate) token: String,
    pub(crate) min_chars: usize,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "confirm_link.html")]
pub(crate) struct ConfirmLink {
    pub(crate) chrome: Chrome,
    pub(crate) text: String,
    pub(crate) action: String,
    pub(crate) token: String,
    pub(crate) button: String,
    /// Ask for the account's password too.
    pub(crate) ask_password: bool,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "verify_send.html")]
pub(crate) struct VerifySend {
    pub(crate) chrome: Chrome,
    pub(crate) email: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "password_change.html")]
pub(crate) struct PasswordChange {
    pub(crate) chrome: Chrome,
    pub(crate) email: String,
    pub(crate) min_chars: usize,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "email_change.html")]
pub(crate) struct EmailChange {
    pub(crate) chrome: Chrome,
    pub(crate) email: String,
    pub(crate) new_email: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct Message {
    pub(crate) chrome: Chrome,
    pub(crate) heading: String,
    pub(crate) text: String,
    pub(crate) link: Option<(String, String)>,
}

/// A page that says one thing.
pub(crate) fn message_page(status: StatusCode, csrf: &str, heading: &str, text: &str) -> Response {
    page(
        status,
        &Message { chrome: Chrome::new(csrf, None, heading), heading: heading.into(), text: text.into(), link: None },
    )
}

/// A page that says one thing and links on.
pub(crate) fn message_link(status: StatusCode, chrome: Chrome, text: &str, href: &str, label: &str) -> Response {
    let heading = chrome.title.clone();
    page(status, &Message { chrome, heading, text: text.into(), link: Some((href.into(), label.into())) })
}

/// 403 for a POST without the right CSRF token.
pub(crate) fn forbidden_csrf(csrf: &str) -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        csrf,
        "Request refused",
        "This form could not be verified (its security token was missing or out of date). Go back, reload the page and try again.",
    )
}

/// 429 from the per-address rate limit.
pub(crate) fn too_many_requests(csrf: &str, wait_s: u64) -> Response {
    message_page(
        StatusCode::TOO_MANY_REQUESTS,
        csrf,
        "Too many attempts",
        &format!("Too many attempts from your network. Try again in {wait_s} seconds."),
    )
}

/// 500 with a reference the logs carry.
pub(crate) fn internal(what: &str) -> Response {
    let id = uuid_like();
    tracing::error!(error_id = %id, what, "page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Something went wrong on our side. Please try again. (reference {id})\n"),
    )
        .into_response()
}

fn uuid_like() -> String {
    tessera_core::random::bytes::<6>().map(|b| data_encoding::HEXLOWER.encode(&b)).unwrap_or_default()
}

/// A use-case error as a page: the user's input problems in words, internal ones generic.
pub(crate) fn app_error(chrome: Chrome, e: AppError) -> Response {
    let (status, text) = match &e {
        AppError::Invalid(e) => (StatusCode::BAD_REQUEST, e.to_string()),
        AppError::NotFound(what) => (StatusCode::NOT_FOUND, format!("That {what} was not found.")),
        AppError::FailedPrecondition(m) => (StatusCode::CONFLICT, m.clone()),
        AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
        AppError::ReauthRequired(_) => (StatusCode::FORBIDDEN, e.to_string()),
        AppError::Keys(_) | AppError::Store(_) => {
            let id = uuid_like();
            tracing::error!(error_id = %id, error = %e, "page failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Something went wrong on our side. Please try again. (reference {id})"),
            )
        }
    };
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::SERVICE_UNAVAILABLE => "Something went wrong",
        _ => "That didn't work",
    };
    let chrome = Chrome { title: heading.into(), ..chrome };
    page(status, &Message { chrome, heading: heading.into(), text, link: None })
}

// ---- sign-up and login -------------------------------------------------------------------

#[derive(Template)]
#[template(path = "signup.html")]
pub(crate) struct Signup {
    pub(crate) chrome: Chrome,
    pub(crate) email: String,
    pub(crate) error: Option<String>,
    pub(crate) min_chars: usize,
    pub(crate) open: bool,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct Login {
    pub(crate) chrome: Chrome,
    pub(crate) email: String,
    pub(crate) error: Option<String>,
    pub(crate) notice: Option<String>,
    /// Offer "Sign in with a passkey" (WebAuthn is configured).
    pub(crate) passkeys: bool,
    /// Where to return once signed in (checked; empty: nowhere in particular).
    pub(crate) rd: String,
    /// Sent back by an app's proxy while signed in: this session is not enough for that app.
    pub(crate) needs_more: bool,
}

#[derive(Template)]
#[template(path = "login_code.html")]
pub(crate) struct LoginCode {
    pub(crate) chrome: Chrome,
    pub(crate) error: Option<String>,
    /// The user has an authenticator app in use: ask for its code.
    pub(crate) totp: bool,
    /// The user has a security key or passkey: offer it.
    pub(crate) keys: bool,
}

/// A WebAuthn ceremony: the options for the browser, and where its answer goes.
#[derive(Template)]
#[template(path = "webauthn.html")]
pub(crate) struct Webauthn {
    pub(crate) chrome: Chrome,
    pub(crate) heading: String,
    pub(crate) intro: String,
    /// `create` (registration) or `get` (assertion).
    pub(crate) mode: &'static str,
    pub(crate) options: String,
    pub(crate) ceremony: String,
    pub(crate) action: String,
    /// More hidden fields of the answer's form.
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) button: String,
    pub(crate) back: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "login_recovery.html")]
pub(crate) struct LoginRecovery {
    pub(crate) chrome: Chrome,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub(crate) struct Logout {
    pub(crate) chrome: Chrome,
}

// ---- security settings -------------------------------------------------------------------

/// One device as the security page lists it.
pub(crate) struct DeviceView {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) pending: bool,
    /// A pending setup this session started (only it may continue it).
    pub(crate) mine: bool,
    /// Taken out of use after too many wrong codes.
    pub(crate) disabled: bool,
    /// "Authenticator app", "Security key" or "Passkey".
    pub(crate) kind: &'static str,
    pub(crate) added: String,
    pub(crate) last_used: String,
}

/// One session as the security page lists it.
pub(crate) struct SessionView {
    pub(crate) id: String,
    pub(crate) current: bool,
    pub(crate) browser: String,
    pub(crate) ip: String,
    pub(crate) signed_in: String,
    pub(crate) last_seen: String,
    pub(crate) two_factor: bool,
}

#[derive(Template)]
#[template(path = "security.html")]
pub(crate) struct Security {
    pub(crate) chrome: Chrome,
    pub(crate) mfa_on: bool,
    pub(crate) session_mfa: bool,
    pub(crate) devices: Vec<DeviceView>,
    pub(crate) sessions: Vec<SessionView>,
    pub(crate) codes_left: u32,
    pub(crate) notice: Option<String>,
    pub(crate) error: Option<String>,
    /// Offer "Add a security key" (WebAuthn is configured).
    pub(crate) webauthn: bool,
    /// This session was opened by a trusted browser with the password alone.
    pub(crate) session_trusted: bool,
    pub(crate) trusted: Vec<TrustedView>,
}

/// One trusted browser as the security page lists it.
pub(crate) struct TrustedView {
    pub(crate) id: String,
    pub(crate) browser: String,
    pub(crate) added: String,
    pub(crate) last_used: String,
    pub(crate) until: String,
}

#[derive(Template)]
#[template(path = "reauth.html")]
pub(crate) struct Reauth {
    pub(crate) chrome: Chrome,
    /// Where to return (a local path).
    pub(crate) next: String,
    /// The user has no factor: ask for the password.
    pub(crate) password: bool,
    /// The user has an authenticator app in use.
    pub(crate) totp: bool,
    /// The user has a security key or passkey.
    pub(crate) keys: bool,
    pub(crate) minutes: i64,
    pub(crate) error: Option<String>,
}

/// "Firefox on Linux" from a User-Agent header, for the sessions list (a hint, not a fact: the
/// header is the client's to choose).
pub(crate) fn describe_agent(ua: Option<&str>) -> String {
    let Some(ua) = ua.filter(|u| !u.is_empty()) else { return "Unknown browser".into() };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(k, _)| ua.contains(k))
    .map(|(_, v)| *v);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(k, _)| ua.contains(k))
    .map(|(_, v)| *v);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => format!("A browser on {o}"),
        (None, None) => ua.chars().take(40).collect(),
    }
}

#[derive(Template)]
#[template(path = "setup.html")]
pub(crate) struct Setup {
    pub(crate) chrome: Chrome,
    pub(crate) factor_id: String,
    pub(crate) qr_svg: String,
    pub(crate) secret: String,
    pub(crate) secret_groups: String,
    pub(crate) account: String,
    pub(crate) issuer: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub(crate) struct RecoveryCodes {
    pub(crate) chrome: Chrome,
    pub(crate) codes: Vec<String>,
    pub(crate) download_href: String,
    pub(crate) first: bool,
    /// Other sessions signed out when this first factor was confirmed.
    pub(crate) signed_out: u64,
}

/// One event as the activity page lists it.
pub(crate) struct EventView {
    pub(crate) at: String,
    pub(crate) what: String,
    pub(crate) ip: String,
    pub(crate) agent: String,
}

#[derive(Template)]
#[template(path = "activity.html")]
pub(crate) struct Activity {
    pub(crate) chrome: Chrome,
    pub(crate) events: Vec<EventView>,
    pub(crate) next: Option<String>,
}

// ---- accounts ----------------------------------------------------------------------------

/// One account as the accounts page lists it.
pub(crate) struct AccountView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) require_mfa: bool,
}

/// An open invitation (to the user, or of an account).
pub(crate) struct InvitationView {
    pub(crate) id: String,
    pub(crate) account_name: String,
    pub(crate) email: String,
    pub(crate) role: String,
    pub(crate) expires: String,
}

#[derive(Template)]
#[template(path = "accounts.html")]
pub(crate) struct Accounts {
    pub(crate) chrome: Chrome,
    pub(crate) accounts: Vec<AccountView>,
    pub(crate) invitations: Vec<InvitationView>,
    pub(crate) notice: Option<String>,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
pub(crate) struct Account {
    pub(crate) chrome: Chrome,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) is_admin: bool,
    pub(crate) grace_until: Option<String>,
}

#[derive(Template)]
#[template(path = "account_closed.html")]
pub(crate) struct AccountClosed {
    pub(crate) chrome: Chrome,
    pub(crate) name: String,
    pub(crate) needs_enrolment: bool,
}

/// One member as the account settings page lists them.
pub(crate) struct MemberView {
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) role: String,
    pub(crate) has_mfa: bool,
    pub(crate) is_me: bool,
}

#[derive(Template)]
#[template(path = "account_settings.html")]
pub(crate) struct AccountSettings {
    pub(crate) chrome: Chrome,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) is_owner: bool,
    pub(crate) require_mfa: bool,
    pub(crate) grace_until: Option<String>,
    /// "Trust this browser" cap in days, as the form shows it (empty: no cap of its own).
    pub(crate) max_trust_days: String,
    pub(crate) members: Vec<MemberView>,
    pub(crate) invited: Vec<InvitationView>,
    pub(crate) without_mfa: usize,
    pub(crate) notice: Option<String>,
    pub(crate) error: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn agents() {
        let ff = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        assert_eq!(super::describe_agent(Some(ff)), "Firefox on Linux");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(super::describe_agent(Some(chrome)), "Chrome on Windows");
        assert_eq!(super::describe_agent(None), "Unknown browser");
        assert_eq!(super::describe_agent(Some("pages-test")), "pages-test");
    }
}
