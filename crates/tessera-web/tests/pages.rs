//! The pages' security rules, in process (the router driven by `oneshot`, a temp SQLite store
//! and a manual clock): CSRF, headers and cookies, words for every refusal, the per-IP rate
//! limit, the secret shown only while pending, and account roles. The browser test
//! (crates/tessera/tests/browser.rs) drives the same pages through Chromium.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use std::collections::HashMap;
use std::net::SocketAddr;
use tessera_app::{AppConfig, ClientContext, EnrollRequest, PwnedConfig, PwnedSource};
use tessera_testkit::{Harness, T0, code_at};
use tessera_web::WebConfig;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

/// The pages over a testkit app (SQLite, the manual clock at `T0`): `h.app`, `h.clock` and the
/// rest of the harness through `Deref`.
struct H {
    kit: Harness,
    router: axum::Router,
}

impl std::ops::Deref for H {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.kit
    }
}

async fn harness(web: WebConfig) -> H {
    let config =
        AppConfig { pwned: PwnedConfig { source: PwnedSource::Off, ..Default::default() }, ..Default::default() };
    let kit = Harness::sqlite(config).await;
    let router = tessera_web::router(kit.app.clone(), web);
    H { kit, router }
}

/// A browser: a cookie jar and an address.
struct Browser {
    jar: HashMap<String, String>,
    ip: SocketAddr,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

impl Browser {
    fn new(ip: &str) -> Self {
        Self { jar: HashMap::new(), ip: format!("{ip}:40000").parse().unwrap() }
    }
    fn csrf(&self) -> String {
        self.jar.get("__Host-tessera_csrf").cloned().unwrap_or_default()
    }
    async fn send(&mut self, h: &H, method: Method, path: &str, form: &[(&str, &str)], extra: &[(&str, &str)]) -> Resp {
        let cookie = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let body = form
            .iter()
            .map(|(k, v)| {
                format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC))
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, cookie)
            .header(header::USER_AGENT, "pages-test");
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Body::from(body)).unwrap();
        req.extensions_mut().insert(ConnectInfo(self.ip));
        let r = h.router.clone().oneshot(req).await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let body = String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_owned(), v.to_owned());
            }
        }
        Resp { status, headers, body }
    }
    /// The known-browser cookie this browser holds.
    fn set_browser_cookie(&self) -> String {
        self.jar.get("__Host-tessera_browser").cloned().expect("a known-browser cookie")
    }
    async fn get(&mut self, h: &H, path: &str) -> Resp {
        self.send(h, Method::GET, path, &[], &[]).await
    }
    /// POST with this browser's CSRF token added.
    async fn post(&mut self, h: &H, path: &str, form: &[(&str, &str)]) -> Resp {
        if !self.jar.contains_key("__Host-tessera_csrf") {
            self.get(h, "/login").await;
        }
        let token = self.csrf();
        let mut f = form.to_vec();
        f.push(("csrf", &token));
        self.send(h, Method::POST, path, &f, &[]).await
    }
}

/// A new user (created by a service, so verified) signed in through the login page in `b`.
async fn signed_up(h: &H, b: &mut Browser, email: &str) {
    h.app.create_user(email, PASSWORD, &ClientContext::default()).await.unwrap();
    let r = b.post(h, "/login", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/accounts", "{}", r.body);
}

/// A user with an active authenticator; returns (user id, secret).
async fn user_with_totp(h: &H, email: &str) -> (String, String) {
    let ctx = ClientContext::default();
    let id = h.app.create_user(email, PASSWORD, &ctx).await.unwrap();
    let req = EnrollRequest {
        subject_id: id.clone(),
        label: "Phone".into(),
        account_name: email.into(),
        ..Default::default()
    };
    let e = h.app.enroll_totp(&req, &ctx).await.unwrap();
    let secret = e.secret_base32.to_string();
    let code = code_at(&secret, T0);
    h.app.confirm_totp(&id, &e.factor_id, &code, &ctx).await.unwrap();
    (id, secret)
}

#[tokio::test]
async fn every_post_needs_the_csrf_token_and_every_page_the_headers() {
    let h = harness(WebConfig::default()).await;
    let mut b = Browser::new("10.0.0.1");
    let r = b.get(&h, "/signup").await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'")
    );
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    assert_eq!(r.headers["cache-control"], "no-store");
    let csrf_cookie = r.set_cookies().into_iter().find(|c| c.starts_with("__Host-tessera_csrf=")).unwrap();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(csrf_cookie.contains(attr), "{csrf_cookie}");
    }
    let token = b.csrf();
    assert!(r.body.contains(&format!("name=\"csrf\" value=\"{token}\"")), "the form carries the token");
    // Password fields are masked and left to password managers (ASVS 6.2.6, 6.2.7).
    assert!(r.body.contains("type=\"password\" autocomplete=\"new-password\""), "{}", r.body);
    let login = b.get(&h, "/login").await.body;
    assert!(login.contains("type=\"password\" autocomplete=\"current-password\""), "{login}");
    assert!(!login.contains("onpaste"), "pasting is never blocked");

    let form = [("email", "ada@example.com"), ("password", PASSWORD)];
    // No token, a wrong token, the right token from another site: all 403, nothing created.
    let r = b.send(&h, Method::POST, "/signup", &form, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("security token was missing or out of date"));
    // The refusal carries the security headers too (they are layers around every page).
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert!(r.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let wrong = "A".repeat(43);
    let mut f = form.to_vec();
    f.push(("csrf", &wrong));
    assert_eq!(b.send(&h, Method::POST, "/signup", &f, &[]).await.status, StatusCode::FORBIDDEN);
    let mut f = form.to_vec();
    f.push(("csrf", &token));
    let r = b.send(&h, Method::POST, "/signup", &f, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A token without its cookie (another browser's) is refused too.
    let mut other = Browser::new("10.0.0.2");
    assert_eq!(other.send(&h, Method::POST, "/signup", &f, &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.app.begin_login("ada@example.com", PASSWORD, &ClientContext::default()).await.unwrap(),
        tessera_app::LoginOutcome::Failed
    );

    // Sign-up signs nobody in: the address is confirmed from the mail first.
    let r = b.post(&h, "/signup", &form).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Check your email"), "{}", r.body);
    assert!(!r.set_cookies().iter().any(|c| c.starts_with("__Host-tessera_session=")));
    let token = mailed_token(&h, "ada@example.com", "Confirm your email address", "/verify-email").await;
    b.post(&h, "/verify-email", &[("token", &token), ("password", PASSWORD)]).await;
    let r = b.post(&h, "/login", &form).await;
    assert_eq!(r.location(), "/accounts");
    let session = r.set_cookies().into_iter().find(|c| c.starts_with("__Host-tessera_session=")).unwrap();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=43200"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Domain"));
    let known = r.set_cookies().into_iter().find(|c| c.starts_with("__Host-tessera_browser=")).unwrap();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=34560000"] {
        assert!(known.contains(attr), "{known}");
    }
    let r = b.get(&h, "/settings/security").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("ada@example.com") && r.body.contains("is <strong>off</strong>"));
    // Static files may be cached; pages may not.
    let css = b.get(&h, "/static/style.css").await;
    assert!(css.headers["cache-control"].to_str().unwrap().starts_with("public"));
    assert_eq!(css.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn framework_refusals_are_pages_too() {
    let h = harness(WebConfig::default()).await;
    let mut b = Browser::new("10.0.0.1");
    let r = b.get(&h, "/no/such/page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("There is no page at this address.") && r.body.contains("<html"));
    assert_eq!(r.headers["x-frame-options"], "DENY");
    let r = b.get(&h, "/settings/security/totp").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.contains("This page can"), "{}", r.body);
    let token = b.csrf();
    let r = b.send(&h, Method::POST, "/login", &[("csrf", &token)], &[("content-type", "text/plain")]).await;
    assert!(r.status.is_client_error());
    assert!(r.body.contains("<html"), "{}", r.body);
}

#[tokio::test]
async fn signed_out_visitors_are_sent_to_login() {
    let h = harness(WebConfig::default()).await;
    let mut b = Browser::new("10.0.0.1");
    for path in ["/settings/security", "/settings/activity", "/accounts", "/accounts/x", "/settings/security/totp/x"] {
        let r = b.get(&h, path).await;
        assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"), "{path}");
    }
    b.jar.insert("__Host-tessera_session".into(), "forged".into());
    let r = b.get(&h, "/settings/security").await;
    assert_eq!(r.location(), "/login");
    assert!(!b.jar.contains_key("__Host-tessera_session"), "a dead session cookie is cleared");
    // The code page needs a password step first.
    assert_eq!(b.get(&h, "/login/code").await.location(), "/login");
    let r = b.post(&h, "/login/code", &[("code", "123456")]).await;
    assert_eq!(r.location(), "/login?expired=1");
}

#[tokio::test]
async fn refusals_are_in_words_and_lockout_names_the_time() {
    let h = harness(WebConfig { rate_limit_per_minute: 0, ..Default::default() }).await;
    let (_, secret) = user_with_totp(&h, "ada@example.com").await;
    let mut b = Browser::new("10.0.0.1");

    // A wrong password and an unknown email read the same.
    let wrong = b.post(&h, "/login", &[("email", "ada@example.com"), ("password", "not the password")]).await;
    let unknown = b.post(&h, "/login", &[("email", "zed@example.com"), ("password", "not the password")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("That email and password don&#x27;t match.")
            || wrong.body.contains("That email and password don&#39;t match."),
        "{}",
        wrong.body
    );
    assert_eq!(wrong.body.replace("ada@", "x@"), unknown.body.replace("zed@", "x@"));

    let r = b.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login/code"));
    assert!(b.jar.contains_key("__Host-tessera_login"));
    let r = b.get(&h, "/login/code").await;
    assert!(r.body.contains("autocomplete=\"one-time-code\"") && r.body.contains("inputmode=\"numeric\""));

    let r = b.post(&h, "/login/code", &[("code", "12")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Enter the 6-digit code from your authenticator app."));
    let good = code_at(&secret, T0 + 30);
    let bad = if good == "000000" { "111111" } else { "000000" };
    for left in [4, 3, 2, 1] {
        let r = b.post(&h, "/login/code", &[("code", bad)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let want = if left == 1 { "1 attempt left.".to_owned() } else { format!("{left} attempts left.") };
        assert!(r.body.contains(&want), "{}", r.body);
    }
    let r = b.post(&h, "/login/code", &[("code", bad)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Locked for 60 s from T0 = 00:00:10 → 00:01:10, shown to the minute on the same day.
    assert!(r.body.contains("Too many attempts. Try again at 00:01 UTC."), "{}", r.body);
    assert!(!b.jar.contains_key("__Host-tessera_login"), "the voided challenge's cookie is cleared");
    // Even the right code cannot finish that sign-in now.
    let r = b.send(&h, Method::POST, "/login/code", &[("code", &good), ("csrf", &b.csrf())], &[]).await;
    assert_eq!(r.location(), "/login?expired=1");
}

#[tokio::test]
async fn login_forms_are_rate_limited_per_address() {
    let h = harness(WebConfig { rate_limit_per_minute: 3, ..Default::default() }).await;
    let mut a = Browser::new("10.0.0.1");
    let form = [("email", "nobody@example.com"), ("password", "not the password")];
    for _ in 0..3 {
        assert_eq!(a.post(&h, "/login", &form).await.status, StatusCode::UNAUTHORIZED);
    }
    let r = a.post(&h, "/login", &form).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers[header::RETRY_AFTER], "20");
    assert!(r.body.contains("Too many attempts from your network. Try again in 20 seconds."));
    // The code form shares the address's budget; another address has its own.
    assert_eq!(a.post(&h, "/login/code", &[("code", "123456")]).await.status, StatusCode::TOO_MANY_REQUESTS);
    let mut b = Browser::new("10.0.0.2");
    assert_eq!(b.post(&h, "/login", &form).await.status, StatusCode::UNAUTHORIZED);
    // Pages that are not login forms are not limited.
    assert_eq!(a.get(&h, "/login").await.status, StatusCode::OK);
    h.clock.advance(time::Duration::seconds(20));
    // (Another email: this one's own password counter is near its lock, which is a 429 too.)
    let r = a.post(&h, "/login", &[("email", "other@example.com"), ("password", "not the password")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("don&#"), "the form answered, not the limiter");
}

#[tokio::test]
async fn the_secret_is_shown_only_while_the_device_is_pending() {
    let h = harness(WebConfig::default()).await;
    let mut b = Browser::new("10.0.0.1");
    signed_up(&h, &mut b, "ada@example.com").await;
    let r = b.post(&h, "/settings/security/totp", &[("label", "Phone")]).await;
    let setup = r.location().to_owned();
    assert!(setup.starts_with("/settings/security/totp/"), "{setup}");
    let page = b.get(&h, &setup).await;
    assert_eq!(page.headers["cache-control"], "no-store");
    let secret = page.body.split("data-secret=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert_eq!(secret.len(), 32);
    assert!(page.body.contains("<svg"), "the QR code is inline");
    // Reloading while pending shows the same key.
    assert!(b.get(&h, &setup).await.body.contains(&secret));
    // Another user cannot see it.
    let mut eve = Browser::new("10.0.0.9");
    signed_up(&h, &mut eve, "eve@example.com").await;
    let r = eve.get(&h, &setup).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains(&secret));

    let old_session = b.jar["__Host-tessera_session"].clone();
    let confirm = format!("{setup}/confirm");
    let r = b.post(&h, &confirm, &[("code", &code_at(&secret, T0))]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.body.matches("<li><code>").count(), 10, "ten recovery codes, once");
    assert_ne!(b.jar["__Host-tessera_session"], old_session, "a new session token at the level change");
    let r = b.get(&h, &setup).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(!r.body.contains(&secret));
    let r = b.get(&h, "/settings/security").await;
    assert!(!r.body.contains(&secret));
    assert!(
        r.body.contains("This session was verified with a second factor."),
        "confirming the first factor raises it"
    );

    // Within the re-authentication window, new recovery codes come at once; they replace the old.
    let r = b.post(&h, "/settings/security/recovery-codes", &[]).await;
    assert_eq!((r.status, r.body.matches("<li><code>").count()), (StatusCode::OK, 10));
    assert!(r.body.contains("download=\"tessera-recovery-codes.txt\""));

    // Sign out other sessions: another browser's session ends, this one stays.
    let mut phone = Browser::new("10.0.0.7");
    let r = phone.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/login/code");
    h.clock.advance(time::Duration::seconds(30));
    let r = phone.post(&h, "/login/code", &[("code", &code_at(&secret, T0 + 30))]).await;
    assert_eq!(r.location(), "/accounts");
    assert_eq!(phone.get(&h, "/settings/security").await.status, StatusCode::OK);
    let r = b.post(&h, "/settings/security/sessions/revoke-others", &[]).await;
    assert_eq!(r.location(), "/settings/security?done=revoked");
    assert_eq!(phone.get(&h, "/settings/security").await.location(), "/login", "the other session is over");
    assert_eq!(b.get(&h, "/settings/security").await.status, StatusCode::OK, "this one is not");

    // Removing the active device (within the window) takes one click.
    let id = setup.rsplit('/').next().unwrap();
    let r = b.post(&h, &format!("/settings/security/devices/{id}/remove"), &[]).await;
    assert_eq!(r.location(), "/settings/security?done=removed");
    let r = b.get(&h, "/settings/security?done=removed").await;
    assert!(r.body.contains("Device removed.") && r.body.contains("No devices yet."));
}

/// The code of the newest invitation mail to `email` (sealed in the outbox until delivered).
async fn mailed_code(h: &H, email: &str) -> String {
    let m = mailed(h, email, "You are invited to an account on Tessera").await.expect("an invitation mail");
    m.text.lines().find_map(|l| l.strip_prefix("    ")).expect("a code line").trim().to_owned()
}

/// Sign a browser in with the password and a code at `unix` (the clock must be there).
async fn login_2fa(h: &H, b: &mut Browser, email: &str, secret: &str, unix: i64) {
    let r = b.post(h, "/login", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/login/code");
    let r = b.post(h, "/login/code", &[("code", &code_at(secret, unix))]).await;
    assert_eq!(r.location(), "/accounts", "{}", r.body);
}

/// The session token a browser's signed-in cookie holds, resolved in the app.
async fn session_of(h: &H, b: &Browser) -> tessera_app::Session {
    h.app.session(&b.jar["__Host-tessera_session"]).await.unwrap().expect("signed in")
}

#[tokio::test]
async fn account_pages_follow_roles_and_policy() {
    let h = harness(WebConfig::default()).await;
    let ctx = ClientContext::default();
    let (_, secret) = user_with_totp(&h, "owner@example.com").await;
    h.app.create_user("member@example.com", PASSWORD, &ctx).await.unwrap();
    h.app.create_user("stranger@example.com", PASSWORD, &ctx).await.unwrap();
    let mut o = Browser::new("10.0.0.1");
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut o, "owner@example.com", &secret, T0 + 30).await;
    let r = o.post(&h, "/accounts", &[("name", "Acme")]).await;
    let acme = r.location().trim_start_matches("/accounts/").to_owned();

    // The owner invites the member; the member accepts on the accounts page.
    let r = o
        .post(&h, &format!("/accounts/{acme}/invitations"), &[("email", "member@example.com"), ("role", "member")])
        .await;
    assert_eq!(r.location(), format!("/accounts/{acme}/settings?done=invited"));
    let mut m = Browser::new("10.0.0.2");
    m.post(&h, "/login", &[("email", "member@example.com"), ("password", PASSWORD)]).await;
    let r = m.get(&h, "/accounts").await;
    assert!(r.body.contains("Invitations for you") && r.body.contains("Acme"), "{}", r.body);
    let inv = r.body.split("/accounts/invitations/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    // Accepting takes the code from the mail (the test's mailbox is the outbox).
    let r = m.post(&h, &format!("/accounts/invitations/{inv}/accept"), &[("code", "AAAA-AAAA-AAAA-AAAA")]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body.contains("doesn&#x27;t match an open invitation") || r.body.contains("doesn&#39;t match"),
        "{}",
        r.body
    );
    let code = mailed_code(&h, "member@example.com").await;
    let r = m.post(&h, &format!("/accounts/invitations/{inv}/accept"), &[("code", &code)]).await;
    assert_eq!(r.location(), format!("/accounts/{acme}"));
    let r = m.get(&h, &format!("/accounts/{acme}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("id=\"account-content\""));
    let r = m.get(&h, &format!("/accounts/{acme}/settings")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body.contains("only the account&#x27;s owners and admins")
            || r.body.contains("only the account&#39;s owners and admins"),
        "{}",
        r.body
    );
    let r = m.post(&h, &format!("/accounts/{acme}/settings"), &[("require_mfa", "on"), ("grace_days", "0")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let member = session_of(&h, &m).await;
    assert!(!h.app.memberships(member.user_id()).await.unwrap()[0].policy.require_mfa);

    let mut s = Browser::new("10.0.0.3");
    s.post(&h, "/login", &[("email", "stranger@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(s.get(&h, &format!("/accounts/{acme}")).await.status, StatusCode::NOT_FOUND);

    // The owner requires MFA with a 7-day grace: the member is warned; without grace, shut out.
    let r = o.post(&h, &format!("/accounts/{acme}/settings"), &[("require_mfa", "on"), ("grace_days", "7")]).await;
    assert_eq!(r.location(), format!("/accounts/{acme}/settings?done=saved"));
    let r = m.get(&h, &format!("/accounts/{acme}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("will require two-factor authentication from 2026-01-08 00:00 UTC"), "{}", r.body);
    let r = o.post(&h, &format!("/accounts/{acme}/settings"), &[("require_mfa", "on"), ("grace_days", "91")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    o.post(&h, &format!("/accounts/{acme}/settings"), &[("require_mfa", "on"), ("grace_days", "0")]).await;
    let r = m.get(&h, &format!("/accounts/{acme}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("This account requires two-factor authentication."));
    assert!(r.body.contains("href=\"/settings/security\""));
    assert!(!r.body.contains("account-content"), "never the account's content");

    // Roles: the owner makes the member an admin; nobody can demote the last owner.
    let r = o.post(&h, &format!("/accounts/{acme}/members/{}/role", member.user_id()), &[("role", "admin")]).await;
    assert_eq!(r.location(), format!("/accounts/{acme}/settings?done=role"));
    let owner = session_of(&h, &o).await;
    let r = o.post(&h, &format!("/accounts/{acme}/members/{}/role", owner.user_id()), &[("role", "admin")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("make someone else an owner first"), "{}", r.body);
    let r = o.post(&h, &format!("/accounts/{acme}/members/{}/remove", member.user_id()), &[]).await;
    assert_eq!(r.location(), format!("/accounts/{acme}/settings?done=removed"));
    assert_eq!(m.get(&h, &format!("/accounts/{acme}")).await.status, StatusCode::NOT_FOUND);
}

/// Inviting answers the same whether or not the email belongs to someone, and shows no one's
/// MFA state before they accept.
#[tokio::test]
async fn invitations_say_nothing_about_the_invited() {
    let h = harness(WebConfig::default()).await;
    let (_, secret) = user_with_totp(&h, "owner@example.com").await;
    user_with_totp(&h, "known@example.com").await;
    let mut o = Browser::new("10.0.0.1");
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut o, "owner@example.com", &secret, T0 + 30).await;
    let acme =
        o.post(&h, "/accounts", &[("name", "Acme")]).await.location().trim_start_matches("/accounts/").to_owned();
    let invite = |email: &'static str| [("email", email), ("role", "member")];
    let known = o.post(&h, &format!("/accounts/{acme}/invitations"), &invite("known@example.com")).await;
    let unknown = o.post(&h, &format!("/accounts/{acme}/invitations"), &invite("unknown@example.com")).await;
    assert_eq!((known.status, known.location()), (unknown.status, unknown.location()));
    let page = o.get(&h, &format!("/accounts/{acme}/settings?done=invited")).await.body;
    let row = |email: &str| {
        let start = page.find(&format!("<td>{email}</td>")).unwrap();
        let end = start + page[start..].find("</tr>").unwrap();
        page[start..end].replace(email, "EMAIL").split("/invitations/").next().unwrap().to_owned()
    };
    assert_eq!(row("known@example.com"), row("unknown@example.com"), "identical rows");
    assert!(row("known@example.com").contains("invited") && !row("known@example.com").contains(">on<"));
}

/// A session that has not proven a factor recently is sent to re-authenticate, and back; the
/// return address is local only; re-authenticating issues a new token.
#[tokio::test]
async fn sensitive_actions_need_recent_authentication() {
    let h = harness(WebConfig { rate_limit_per_minute: 0, ..Default::default() }).await;
    let (_, secret) = user_with_totp(&h, "ada@example.com").await;
    let mut b = Browser::new("10.0.0.1");
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut b, "ada@example.com", &secret, T0 + 30).await;
    h.clock.advance(time::Duration::minutes(15));
    let r = b.post(&h, "/settings/security/totp", &[("label", "Spare")]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fsecurity");
    for path in ["/settings/security/recovery-codes", "/settings/security/sessions/revoke-others"] {
        let r = b.post(&h, path, &[]).await;
        assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fsecurity", "{path}");
    }
    let r = b.get(&h, "/settings/reauth?next=%2Fsettings%2Fsecurity").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Confirm it") && r.body.contains("name=\"method\" value=\"totp\""), "{}", r.body);
    assert!(!r.body.contains("type=\"password\""), "a user with a factor confirms with it");
    let form =
        |code: &str, next: &str| [("method", "totp".to_owned()), ("code", code.to_owned()), ("next", next.to_owned())];
    let f = form("000000", "/settings/security");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.post(&h, "/settings/reauth", &f).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("4 attempts left."), "{}", r.body);
    let old = b.jar["__Host-tessera_session"].clone();
    h.clock.advance(time::Duration::seconds(30));
    let code = code_at(&secret, T0 + 30 + 15 * 60 + 30);
    let f = form(&code, "//evil.example/");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.post(&h, "/settings/reauth", &f).await;
    assert_eq!(r.location(), "/settings/security", "never another origin");
    assert_ne!(b.jar["__Host-tessera_session"], old, "a new token");
    let mut thief = Browser::new("10.0.0.66");
    thief.jar.insert("__Host-tessera_session".into(), old);
    assert_eq!(thief.get(&h, "/settings/security").await.location(), "/login", "the old token is dead");
    let r = b.post(&h, "/settings/security/totp", &[("label", "Spare")]).await;
    assert!(r.location().starts_with("/settings/security/totp/"), "{}", r.location());

    // Without a factor the password confirms.
    let mut c = Browser::new("10.0.0.2");
    signed_up(&h, &mut c, "bob@example.com").await;
    h.clock.advance(time::Duration::minutes(15));
    let r = c.post(&h, "/settings/security/totp", &[("label", "Phone")]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fsecurity");
    let r = c.get(&h, "/settings/reauth?next=%2Fsettings%2Fsecurity").await;
    assert!(r.body.contains("type=\"password\"") && r.body.contains("autocomplete=\"current-password\""));
    let r = c
        .post(
            &h,
            "/settings/reauth",
            &[("method", "password"), ("password", "not it at all"), ("next", "/settings/security")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = c
        .post(&h, "/settings/reauth", &[("method", "password"), ("password", PASSWORD), ("next", "/settings/security")])
        .await;
    assert_eq!(r.location(), "/settings/security");
}

/// The attack of issue 11 through the pages: a stale password-only browser gets no key and is
/// signed out when the first factor is confirmed elsewhere; one browser's setup is not
/// another's to see or finish.
#[tokio::test]
async fn setups_belong_to_their_session_and_a_first_factor_ends_the_others() {
    let h = harness(WebConfig::default()).await;
    let mut a = Browser::new("10.0.0.1");
    signed_up(&h, &mut a, "ada@example.com").await;
    h.clock.advance(time::Duration::minutes(20));
    // The stale browser cannot start a setup of its own.
    let r = a.post(&h, "/settings/security/totp", &[("label", "Mine now")]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fsecurity");
    let mut b = Browser::new("10.0.0.2");
    b.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    let setup = b.post(&h, "/settings/security/totp", &[("label", "Phone")]).await.location().to_owned();
    let page = b.get(&h, &setup).await.body;
    let secret = page.split("data-secret=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // Browser A sees that a setup exists elsewhere, never its key, and cannot finish it.
    let r = a.get(&h, "/settings/security").await;
    assert!(r.body.contains("setup started in another session") && !r.body.contains(&secret), "{}", r.body);
    assert!(!r.body.contains(&format!("href=\"{setup}\"")));
    let r = a.get(&h, &setup).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains(&secret));
    let r = a.post(&h, &format!("{setup}/confirm"), &[("code", &code_at(&secret, T0 + 1200))]).await;
    let back = percent_encoding::utf8_percent_encode(&setup, percent_encoding::NON_ALPHANUMERIC).to_string();
    assert_eq!(r.location(), format!("/settings/reauth?next={back}"), "a stale session must prove it is her first");
    // A fresh session of hers cannot see or finish it either: it is not that session's.
    let mut fresh = Browser::new("10.0.0.4");
    fresh.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    let r = fresh.get(&h, &setup).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains(&secret));
    let r = fresh.post(&h, &format!("{setup}/confirm"), &[("code", &code_at(&secret, T0 + 1200))]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // B finishes it: the page says the other session was signed out, and A is.
    let r = b.post(&h, &format!("{setup}/confirm"), &[("code", &code_at(&secret, T0 + 1200))]).await;
    assert!(r.body.contains("We signed you out of your 2 other sessions"), "{}", r.body);
    assert_eq!(a.get(&h, "/settings/security").await.location(), "/login");
    assert_eq!(a.get(&h, "/settings/security/totp/x").await.location(), "/login");
    // A setup another session started may be cancelled from here, never continued.
    let mut c = Browser::new("10.0.0.3");
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut c, "ada@example.com", &secret, T0 + 1230).await;
    let other = b.post(&h, "/settings/security/totp", &[("label", "Tablet")]).await.location().to_owned();
    let id = other.rsplit('/').next().unwrap();
    let r = c.post(&h, &format!("/settings/security/devices/{id}/remove"), &[]).await;
    assert_eq!(r.location(), "/settings/security?done=cancelled");
    assert_eq!(b.get(&h, &other).await.status, StatusCode::NOT_FOUND);
}

/// Sessions are listed with their browser and address; one can be signed out; signing in
/// again in a browser ends the session it held; an idle session ends.
#[tokio::test]
async fn sessions_are_listed_rotated_and_time_out() {
    let h = harness(WebConfig::default()).await;
    let (_, secret) = user_with_totp(&h, "ada@example.com").await;
    let mut a = Browser::new("10.0.0.1");
    let mut b = Browser::new("10.0.0.2");
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut a, "ada@example.com", &secret, T0 + 30).await;
    let known = a.set_browser_cookie();
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut b, "ada@example.com", &secret, T0 + 60).await;
    let r = a.get(&h, "/settings/security").await;
    assert_eq!(r.body.matches("/revoke\"").count(), 2, "two sessions listed");
    assert!(r.body.contains("this session") && r.body.contains("10.0.0.2"), "{}", r.body);
    let b_id = session_of(&h, &b).await.id().to_owned();
    let r = a.post(&h, &format!("/settings/security/sessions/{b_id}/revoke"), &[]).await;
    assert_eq!(r.location(), "/settings/security?done=signed-out");
    assert_eq!(b.get(&h, "/settings/security").await.location(), "/login");
    // Signing in again in a browser ends its previous session.
    let before = a.jar["__Host-tessera_session"].clone();
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut a, "ada@example.com", &secret, T0 + 90).await;
    assert!(h.app.session(&before).await.unwrap().is_none());
    assert_ne!(known, a.set_browser_cookie(), "a fresh known-browser token at every sign-in");
    // An idle session ends.
    h.clock.advance(time::Duration::minutes(30));
    assert_eq!(a.get(&h, "/settings/security").await.location(), "/login");
}

/// A sign-in POST (carrying `X-Forwarded-For: xff` if given), with a fresh email each time (so
/// no password counter locks); true when the per-address limit refused it.
async fn limited_login_via(b: &mut Browser, h: &H, xff: Option<&str>) -> bool {
    if !b.jar.contains_key("__Host-tessera_csrf") {
        b.get(h, "/login").await;
    }
    let (token, email) = (b.csrf(), fresh_email());
    let form = [("email", email.as_str()), ("password", "not the password"), ("csrf", &token)];
    let extra: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
    let r = b.send(h, Method::POST, "/login", &form, &extra).await;
    match r.status {
        StatusCode::UNAUTHORIZED => false,
        StatusCode::TOO_MANY_REQUESTS if r.body.contains("from your network") => true,
        s => panic!("{s}: {}", r.body),
    }
}

fn fresh_email() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("someone-{}@example.com", N.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let trusted = tessera_web::TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
    let h = harness(WebConfig { rate_limit_per_minute: 1, trusted_proxies: trusted, ..Default::default() }).await;
    // Behind our proxy, each client has its own budget, whatever it forged on the left.
    let mut proxy = Browser::new("10.0.0.1");
    assert!(!limited_login_via(&mut proxy, &h, Some("203.0.113.1")).await);
    assert!(limited_login_via(&mut proxy, &h, Some("203.0.113.1")).await);
    assert!(limited_login_via(&mut proxy, &h, Some("198.18.0.1, 203.0.113.1")).await, "a forged entry changes nothing");
    assert!(!limited_login_via(&mut proxy, &h, Some("203.0.113.2")).await, "another client behind the proxy");
    assert!(limited_login_via(&mut proxy, &h, Some("203.0.113.2, 10.0.0.7")).await, "through a second proxy of ours");
    // A peer that is not a proxy of ours is the client, whatever it sends.
    let mut direct = Browser::new("198.51.100.1");
    assert!(!limited_login_via(&mut direct, &h, Some("203.0.113.3")).await);
    assert!(limited_login_via(&mut direct, &h, Some("203.0.113.4")).await, "its X-Forwarded-For is not read");
}

#[tokio::test]
async fn ipv6_clients_are_limited_per_64() {
    let h = harness(WebConfig { rate_limit_per_minute: 1, ..Default::default() }).await;
    let mut a = Browser::new("[2001:db8:1:2::1]");
    assert!(!limited_login_via(&mut a, &h, None).await);
    let mut b = Browser::new("[2001:db8:1:2:dead:beef:0:2]");
    assert!(limited_login_via(&mut b, &h, None).await, "another address of the same /64");
    let mut c = Browser::new("[2001:db8:1:3::1]");
    assert!(!limited_login_via(&mut c, &h, None).await, "the next /64");
}

/// A refusal by the per-address rate limit (not by a form or the lockout).
fn rate_limited(r: &Resp) -> bool {
    r.status == StatusCode::TOO_MANY_REQUESTS && r.body.contains("Too many attempts from your network")
}

const REVOKE: &str = "/settings/security/sessions/revoke-others";

#[tokio::test]
async fn forged_posts_do_not_spend_the_victims_budget() {
    let h = harness(WebConfig { rate_limit_per_minute: 2, post_rate_limit_per_minute: 2, ..Default::default() }).await;
    h.app.create_user("ada@example.com", PASSWORD, &ClientContext::default()).await.unwrap();
    let mut victim = Browser::new("10.0.0.5");
    victim.get(&h, "/login").await;
    let token = victim.csrf();
    let wrong = "A".repeat(43);
    let creds = [("email", "ada@example.com"), ("password", PASSWORD)];
    // A hostile page makes the victim's browser post to both classes, over and over, with the
    // victim's cookies: cross-site, or without the token it cannot read.
    for path in ["/login", "/login/code", REVOKE] {
        for _ in 0..10 {
            let cross = [("sec-fetch-site", "cross-site")];
            for (form, extra) in [
                (&[("csrf", token.as_str())][..], &cross[..]),
                (&[][..], &cross[..]),
                (&[("csrf", wrong.as_str())][..], &[][..]),
                (&[][..], &[][..]),
            ] {
                let r = victim.send(&h, Method::POST, path, form, extra).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
            }
        }
    }
    // The victim's own forms still have their whole budgets…
    let r = victim.post(&h, "/login", &creds).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(!rate_limited(&victim.post(&h, "/login", &creds).await));
    for _ in 0..2 {
        assert_eq!(victim.post(&h, REVOKE, &[]).await.status, StatusCode::SEE_OTHER);
    }
    // …which are the ones the forged POSTs would have spent.
    assert!(rate_limited(&victim.post(&h, "/login", &creds).await));
    assert!(rate_limited(&victim.post(&h, REVOKE, &[]).await));
}

#[tokio::test]
async fn every_post_is_rate_limited_in_two_classes() {
    let h = harness(WebConfig { rate_limit_per_minute: 2, post_rate_limit_per_minute: 3, ..Default::default() }).await;
    h.app.create_user("ada@example.com", PASSWORD, &ClientContext::default()).await.unwrap();
    let creds = [("email", "ada@example.com"), ("password", PASSWORD)];
    let mut b = Browser::new("10.0.0.8");
    assert_eq!(b.post(&h, "/login", &creds).await.status, StatusCode::SEE_OTHER, "sign-in class: 1 of 2");
    for _ in 0..3 {
        assert_eq!(b.post(&h, REVOKE, &[]).await.location(), "/settings/security?done=revoked");
    }
    let r = b.post(&h, REVOKE, &[]).await;
    assert!(rate_limited(&r), "{}: {}", r.status, r.body);
    assert_eq!(r.headers[header::RETRY_AFTER], "20");
    assert!(rate_limited(&b.post(&h, "/accounts", &[("name", "Acme")]).await), "every other POST shares it");
    // The sign-in forms have a budget of their own (one left), re-authentication included.
    assert!(!rate_limited(&b.post(&h, "/login/recovery", &[("code", "x")]).await));
    assert!(rate_limited(&b.post(&h, "/settings/reauth", &[("password", PASSWORD)]).await));
    assert!(rate_limited(&b.post(&h, "/signup", &creds).await));
    assert!(rate_limited(&b.post(&h, "/login/code", &[("code", "123456")]).await));
    assert!(rate_limited(&b.post(&h, "/password/forgot", &[("email", "ada@example.com")]).await));
    assert!(rate_limited(&b.post(&h, "/password/reset", &[("token", &"A".repeat(43)), ("password", "x")]).await));
    // Another address has its own budgets.
    let mut c = Browser::new("10.0.0.9");
    assert!(!rate_limited(&c.post(&h, "/accounts", &[("name", "Acme")]).await));
    assert!(!rate_limited(&c.post(&h, "/login", &creds).await));
    // One POST every 20 s comes back.
    h.clock.advance(time::Duration::seconds(20));
    assert!(!rate_limited(&b.post(&h, REVOKE, &[]).await));
    assert!(rate_limited(&b.post(&h, REVOKE, &[]).await));
}

#[tokio::test]
async fn zero_turns_a_post_class_off() {
    let h = harness(WebConfig { rate_limit_per_minute: 1, post_rate_limit_per_minute: 0, ..Default::default() }).await;
    let mut b = Browser::new("10.0.0.8");
    for _ in 0..100 {
        assert!(!rate_limited(&b.post(&h, REVOKE, &[]).await));
    }
    let wrong = [("email", "nobody@example.com"), ("password", "not the password")];
    assert!(!rate_limited(&b.post(&h, "/login", &wrong).await));
    assert!(rate_limited(&b.post(&h, "/login", &wrong).await), "the sign-in class is still on");
}

/// A POST runs to its end on its own task: a browser that hangs up while the use case waits
/// (here, on the breached-password range from a local server that holds its answer) does not
/// cancel it halfway; the account is created once the range comes. Without the guard's spawn,
/// dropping the request would drop the sign-up with it.
#[tokio::test]
async fn a_post_finishes_when_the_browser_hangs_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let range = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", range.local_addr().unwrap());
    let (asked_tx, asked) = tokio::sync::oneshot::channel::<()>();
    let answer = std::sync::Arc::new(tokio::sync::Notify::new());
    let server = tokio::spawn({
        let answer = answer.clone();
        async move {
            let (mut conn, _) = range.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await.unwrap();
            asked_tx.send(()).unwrap();
            answer.notified().await;
            // An empty range: the password is in no breach.
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.unwrap();
        }
    });
    let pwned = PwnedConfig {
        source: PwnedSource::Online { base_url, timeout: std::time::Duration::from_secs(30) },
        ..Default::default()
    };
    let kit = Harness::sqlite(AppConfig { pwned, ..Default::default() }).await;
    let h = H { router: tessera_web::router(kit.app.clone(), WebConfig::default()), kit };
    let mut b = Browser::new("198.51.100.40");
    b.get(&h, "/signup").await;
    let email = "hangs-up@example.com";
    let form = [("email", email), ("password", PASSWORD)];
    tokio::select! {
        r = b.post(&h, "/signup", &form) => {
            panic!("answered before the range came: {}", r.status)
        }
        asked = asked => asked.unwrap(),
    }
    // The browser has gone (its request future is dropped); now the range comes.
    answer.notify_one();
    server.await.unwrap();
    // Wait for the use case to finish (a touch of the row, which counts it, changes nothing).
    let probe = format!("UPDATE users SET email = email WHERE email_norm = '{email}'");
    let mut signed_up = false;
    for _ in 0..200 {
        if h.raw(probe.clone()).await == 1 {
            signed_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(signed_up, "the sign-up finished after the browser hung up");
}

/// Deliver the app's queued mail to a mailbox directory; the token of the newest reset link
/// to `email`.
async fn mailed_reset_token(h: &H, email: &str) -> String {
    mailed_token(h, email, "Reset your password", "/password/reset").await
}

/// Deliver the app's queued mail to a mailbox directory (waiting for it: requests run on
/// their own task); the token of the newest link to `path` in a mail to `email` whose subject
/// is `subject`.
async fn mailed_token(h: &H, email: &str, subject: &str, path: &str) -> String {
    let mail = mailed(h, email, subject).await.expect("a mail");
    let link = mail.link(&format!("http://localhost:8080{path}?token=")).expect("a link");
    link.rsplit_once("token=").unwrap().1.to_owned()
}

/// The newest mail to `email` with `subject`, delivered from the queue (waiting up to 4 s).
async fn mailed(h: &H, email: &str, subject: &str) -> Option<tessera_testkit::Mail> {
    let dir = h.dir.path().join("mail");
    let mailer = tessera_app::Mailer::to_dir(dir.clone(), "Tessera <no-reply@localhost>").unwrap();
    // The request runs on its own task: wait for its mail.
    let mut found = None;
    for _ in 0..200 {
        h.app.deliver_notifications(&mailer, 100).await.unwrap();
        found = tessera_testkit::read_mailbox(&dir)
            .into_iter()
            .rev()
            .find(|m| m.to.contains(email) && m.subject == subject);
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    found
}

/// "Forgot your password?" answers a registered and an unknown address byte for byte alike.
#[tokio::test]
async fn forgot_password_says_the_same_for_every_address() {
    let h = harness(WebConfig::default()).await;
    h.app.create_user("known@example.com", PASSWORD, &ClientContext::default()).await.unwrap();
    let mut b = Browser::new("10.0.9.1");
    assert!(b.get(&h, "/login").await.body.contains("href=\"/password/forgot\""));
    let form = b.get(&h, "/password/forgot").await;
    assert_eq!(form.status, StatusCode::OK);
    let known = b.post(&h, "/password/forgot", &[("email", "known@example.com")]).await;
    let unknown = b.post(&h, "/password/forgot", &[("email", "unknown@example.com")]).await;
    assert_eq!(known.status, StatusCode::OK);
    assert!(known.body.contains("If an account uses that address"), "{}", known.body);
    assert_eq!((known.status, &known.headers, &known.body), (unknown.status, &unknown.headers, &unknown.body));
    // A malformed address is an input error, in words.
    let bad = b.post(&h, "/password/forgot", &[("email", "not an address")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not an email address."), "{}", bad.body);
}

/// The link sets a new password and signs nobody in; it works once; a browser that holds
/// another user's session keeps it; bad links get words.
#[tokio::test]
async fn a_reset_link_sets_the_password_once_and_signs_nobody_in() {
    let h = harness(WebConfig::default()).await;
    let (_, secret) = user_with_totp(&h, "ada@example.com").await;
    let mut ada = Browser::new("10.0.9.2");
    h.clock.advance(time::Duration::seconds(30));
    login_2fa(&h, &mut ada, "ada@example.com", &secret, T0 + 30).await;
    // Someone else's browser, signed in as bob, opens ada's link.
    h.app.create_user("bob@example.com", PASSWORD, &ClientContext::default()).await.unwrap();
    let mut bob = Browser::new("10.0.9.3");
    assert_eq!(
        bob.post(&h, "/login", &[("email", "bob@example.com"), ("password", PASSWORD)]).await.location(),
        "/accounts"
    );
    let bobs = session_of(&h, &bob).await;

    ada.post(&h, "/password/forgot", &[("email", "ada@example.com")]).await;
    let token = mailed_reset_token(&h, "ada@example.com").await;
    let page = bob.get(&h, &format!("/password/reset?token={token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&format!("name=\"token\" value=\"{token}\"")));
    // Without the CSRF token (a cross-site form posting a stolen link), refused; the link
    // stays live.
    let forged = [("token", token.as_str()), ("password", "an attacker's passphrase")];
    assert_eq!(bob.send(&h, Method::POST, "/password/reset", &forged, &[]).await.status, StatusCode::FORBIDDEN);
    let weak = bob.post(&h, "/password/reset", &[("token", &token), ("password", "short")]).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("role=\"alert\""), "{}", weak.body);
    let new_pw = "a completely new passphrase";
    let done = bob.post(&h, "/password/reset", &[("token", &token), ("password", new_pw)]).await;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, "/login?reset=1"));
    assert!(done.set_cookies().is_empty(), "no cookie set or cleared: {:?}", done.set_cookies());
    assert!(h.app.session(&bob.jar["__Host-tessera_session"]).await.unwrap().is_some(), "bob's session stays");
    assert_eq!(session_of(&h, &bob).await.id(), bobs.id());
    assert!(h.app.session(&ada.jar["__Host-tessera_session"]).await.unwrap().is_none(), "ada's sessions ended");

    // Used once; then words, and a way on.
    let again = bob.get(&h, &format!("/password/reset?token={token}")).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.body.contains("This link has expired or was already used. Request a new one."), "{}", again.body);
    assert!(again.body.contains("href=\"/password/forgot\""));
    let reuse = bob.post(&h, "/password/reset", &[("token", &token), ("password", "another passphrase here")]).await;
    assert_eq!(reuse.status, StatusCode::GONE);
    for bad in [&token[..20], "", "%00"] {
        let r = bob.get(&h, &format!("/password/reset?token={bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(r.body.contains("This link is incomplete."), "{}", r.body);
    }

    // The new password is only the first factor.
    let mut fresh = Browser::new("10.0.9.4");
    let notice = fresh.get(&h, "/login?reset=1").await;
    assert!(notice.body.contains("Your new password is set"), "{}", notice.body);
    let r = fresh.post(&h, "/login", &[("email", "ada@example.com"), ("password", new_pw)]).await;
    assert_eq!(r.location(), "/login/code", "a code is still asked for");
    let r = fresh.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the old password: {}", r.body);
}

/// The headers of a response but its CSRF cookie (which a first visit sets).
fn headers_but_csrf(r: &Resp) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, v)| !(*k == header::SET_COOKIE && v.to_str().unwrap().starts_with("__Host-tessera_csrf=")))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

/// Sign-up answers a registered and a new address byte for byte alike (status, headers but
/// the CSRF cookie, body), signs nobody in, and says what happens in the mail only.
#[tokio::test]
async fn sign_up_says_the_same_for_every_address() {
    let h = harness(WebConfig::default()).await;
    h.app.create_user("known@example.com", PASSWORD, &ClientContext::default()).await.unwrap();
    let mut b = Browser::new("10.0.8.1");
    b.get(&h, "/signup").await;
    let known = b.post(&h, "/signup", &[("email", "known@example.com"), ("password", PASSWORD)]).await;
    let new = b.post(&h, "/signup", &[("email", "new@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(known.status, StatusCode::OK);
    assert!(known.body.contains("Check your email"), "{}", known.body);
    assert_eq!((known.status, headers_but_csrf(&known), &known.body), (new.status, headers_but_csrf(&new), &new.body));
    assert!(!b.jar.contains_key("__Host-tessera_session"), "nobody is signed in");
    assert!(mailed(&h, "known@example.com", "Someone tried to create an account with your address").await.is_some());
    assert!(mailed(&h, "new@example.com", "Confirm your email address").await.is_some());
    // Input errors are said in words, whatever the address.
    let bad = b.post(&h, "/signup", &[("email", "known@example.com"), ("password", "short")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("role=\"alert\""));
}

/// The verification link: its page changes nothing (a button posts it), it works once, it signs
/// nobody in and leaves another user's session in the browser alone; until it is used, the right
/// password is answered with a way to get a new link.
#[tokio::test]
async fn a_verification_link_confirms_once_and_signs_nobody_in() {
    let h = harness(WebConfig::default()).await;
    let mut ada = Browser::new("10.0.8.2");
    let creds = [("email", "ada@example.com"), ("password", PASSWORD)];
    ada.post(&h, "/signup", &creds).await;
    // (The sign-up finishes on its own task: its mail says it has.)
    let token = mailed_token(&h, "ada@example.com", "Confirm your email address", "/verify-email").await;
    // Until the link is used, the right password gets the answer a wrong one gets (else "sign
    // up, then sign in" would tell whether the address was free), with a way to a new link.
    let r = ada.post(&h, "/login", &creds).await;
    let wrong = ada.post(&h, "/login", &[("email", "ada@example.com"), ("password", "not the password")]).await;
    assert_eq!((r.status, &r.body), (wrong.status, &wrong.body));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body.contains("Just signed up? Confirm your address first.")
            && r.body.contains("href=\"/verify-email/send\"")
    );
    // "Send again" answers every address alike.
    let again = ada.post(&h, "/verify-email/send", &[("email", "ada@example.com")]).await;
    let unknown = ada.post(&h, "/verify-email/send", &[("email", "nobody@example.com")]).await;
    assert_eq!((again.status, &again.body), (unknown.status, &unknown.body));
    // The link just asked for (sent on its own task) voids the first.
    let first = token;
    let mut token = first.clone();
    for _ in 0..200 {
        token = mailed_token(&h, "ada@example.com", "Confirm your email address", "/verify-email").await;
        if token != first {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_ne!(token, first, "a new link");
    assert_eq!(h.app.email_verification_link(&first).await.unwrap(), tessera_app::LinkState::Invalid);

    let mut bob = Browser::new("10.0.8.3");
    signed_up(&h, &mut bob, "bob@example.com").await;
    let bobs = session_of(&h, &bob).await;
    let page = bob.get(&h, &format!("/verify-email?token={token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&format!("name=\"token\" value=\"{token}\"")) && page.body.contains("<button"));
    assert!(page.body.contains("autocomplete=\"current-password\""), "the password is asked for");
    assert_eq!(ada.post(&h, "/login", &creds).await.status, StatusCode::UNAUTHORIZED, "a GET changed nothing");
    let forged = [("token", token.as_str()), ("password", PASSWORD)];
    assert_eq!(bob.send(&h, Method::POST, "/verify-email", &forged, &[]).await.status, StatusCode::FORBIDDEN);
    // Bob's password (or anyone's but the account's) does not confirm it.
    let wrong = bob.post(&h, "/verify-email", &[("token", &token), ("password", "bob's own long password")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("That password isn"), "{}", wrong.body);
    let done = bob.post(&h, "/verify-email", &[("token", &token), ("password", PASSWORD)]).await;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, "/login?verified=1"));
    assert!(done.set_cookies().is_empty(), "no cookie set or cleared: {:?}", done.set_cookies());
    assert_eq!(session_of(&h, &bob).await.id(), bobs.id(), "bob's session stays");
    let used = bob.post(&h, "/verify-email", &[("token", &token), ("password", PASSWORD)]).await;
    assert_eq!(used.status, StatusCode::GONE);
    assert!(used.body.contains("This link has expired or was already used."));
    for bad in [&token[..20], ""] {
        assert_eq!(bob.get(&h, &format!("/verify-email?token={bad}")).await.status, StatusCode::BAD_REQUEST);
    }
    assert!(ada.get(&h, "/login?verified=1").await.body.contains("Your email address is confirmed"));
    assert_eq!(ada.post(&h, "/login", &creds).await.location(), "/accounts");
}

/// Password and address changes from the pages: recent proof first, the current password, the
/// other sessions end; an email change waits for the new mailbox's link.
#[tokio::test]
async fn password_and_email_changes() {
    let h = harness(WebConfig::default()).await;
    let mut a = Browser::new("10.0.8.4");
    signed_up(&h, &mut a, "ada@example.com").await;
    let mut other = Browser::new("10.0.8.5");
    other.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    let page = a.get(&h, "/settings/password").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("autocomplete=\"current-password\"") && page.body.contains("autocomplete=\"new-password\"")
    );
    let new_pw = "a completely new passphrase";
    let r = a.post(&h, "/settings/password", &[("current_password", "not it"), ("new_password", new_pw)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("current password isn"), "{}", r.body);
    let r = a.post(&h, "/settings/password", &[("current_password", PASSWORD), ("new_password", "short")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a.post(&h, "/settings/password", &[("current_password", PASSWORD), ("new_password", new_pw)]).await;
    assert_eq!(r.location(), "/settings/security?done=password");
    assert!(a.get(&h, "/settings/security?done=password").await.body.contains("Your password is changed"));
    assert_eq!(other.get(&h, "/settings/security").await.location(), "/login", "the other session ended");
    assert!(mailed(&h, "ada@example.com", "Your password was changed").await.is_some());

    let r = a.post(&h, "/settings/email", &[("new_email", "ada.new@example.com")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Check your email"), "{}", r.body);
    let token =
        mailed_token(&h, "ada.new@example.com", "Confirm your new email address", "/settings/email/confirm").await;
    // Signed out, or signed in as someone else, the link moves nothing.
    let mut stranger = Browser::new("10.0.8.7");
    let page = stranger.get(&h, &format!("/settings/email/confirm?token={token}")).await;
    assert!(page.body.contains("Sign in first") && !page.body.contains(&token), "{}", page.body);
    let r = stranger.post(&h, "/settings/email/confirm", &[("token", &token)]).await;
    assert_eq!(r.location(), "/login");
    signed_up(&h, &mut stranger, "eve@example.com").await;
    let r = stranger.post(&h, "/settings/email/confirm", &[("token", &token)]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("this link is for another account") || r.body.contains("This link is for another account"));
    let confirm = a.get(&h, &format!("/settings/email/confirm?token={token}")).await;
    assert!(confirm.body.contains("<button") && confirm.body.contains(&token));
    assert!(a.get(&h, "/settings/security").await.body.contains(">ada@example.com<"), "not before the POST");
    let r = a.post(&h, "/settings/email/confirm", &[("token", &token)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Email address changed"));
    assert!(a.get(&h, "/settings/security").await.body.contains(">ada.new@example.com<"));
    assert!(mailed(&h, "ada@example.com", "Your account's email address was changed").await.is_some());

    // A stale session is sent to prove itself first.
    h.clock.advance(time::Duration::minutes(16));
    let r = a.post(&h, "/settings/password", &[("current_password", new_pw), ("new_password", PASSWORD)]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fpassword");
    let r = a.post(&h, "/settings/email", &[("new_email", "ada3@example.com")]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Femail");
}

/// A sign-in with a recovery code that leaves few lands on the security page, which offers new
/// ones; the last one says so.
#[tokio::test]
async fn the_last_recovery_codes_lead_to_new_ones() {
    let h = harness(WebConfig::default()).await;
    let ctx = ClientContext::default();
    let id = h.app.create_user("ada@example.com", PASSWORD, &ctx).await.unwrap();
    let req = EnrollRequest {
        subject_id: id.clone(),
        label: "Phone".into(),
        account_name: "ada".into(),
        ..Default::default()
    };
    let e = h.app.enroll_totp(&req, &ctx).await.unwrap();
    let codes = match h.app.confirm_totp(&id, &e.factor_id, &code_at(&e.secret_base32, T0), &ctx).await.unwrap() {
        tessera_app::ConfirmOutcome::Confirmed { recovery_codes, .. } => recovery_codes,
        other => panic!("{other:?}"),
    };
    for (i, code) in codes.iter().enumerate() {
        let mut b = Browser::new(&format!("10.0.8.{}", 10 + i));
        b.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
        let r = b.post(&h, "/login/recovery", &[("code", code)]).await;
        let left = codes.len() - i - 1;
        let want = match left {
            0 => "/settings/security?done=last-code",
            1..=3 => "/settings/security?done=codes-low",
            _ => "/accounts",
        };
        assert_eq!(r.location(), want, "{left} left");
        if left == 0 {
            let page = b.get(&h, want).await.body;
            assert!(page.contains("your last recovery code") && page.contains("id=\"codes-low\""), "{page}");
            assert!(page.contains("action=\"/settings/security/recovery-codes\""));
        }
    }
}

/// Every form this issue added refuses a POST without the browser's CSRF token (a hostile page
/// cannot change a password, an address, or confirm a link in a victim's browser), and counts
/// against the tight sign-in budget (they try a password or a mailed token, or send mail).
#[tokio::test]
async fn the_account_forms_need_the_csrf_token_and_share_the_sign_in_budget() {
    let h =
        harness(WebConfig { rate_limit_per_minute: 2, post_rate_limit_per_minute: 100, ..Default::default() }).await;
    let mut b = Browser::new("10.0.8.30");
    signed_up(&h, &mut b, "ada@example.com").await; // (1 of 2 sign-in POSTs)
    let token = "A".repeat(43);
    let forms: [(&str, Vec<(&str, &str)>); 10] = [
        ("/settings/password", vec![("current_password", PASSWORD), ("new_password", "a brand new passphrase")]),
        ("/settings/email", vec![("new_email", "mallory@example.com")]),
        ("/settings/email/confirm", vec![("token", &token)]),
        ("/verify-email", vec![("token", &token), ("password", PASSWORD)]),
        ("/verify-email/send", vec![("email", "ada@example.com")]),
        ("/login/key", vec![]),
        ("/login/key/finish", vec![("ceremony", &token), ("response", "{}")]),
        ("/login/passkey", vec![]),
        ("/login/passkey/finish", vec![("ceremony", &token), ("response", "{}")]),
        ("/settings/reauth/key", vec![("next", "/settings/security")]),
    ];
    for (path, form) in &forms {
        let r = b.send(&h, Method::POST, path, form, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} without the token");
    }
    assert!(
        matches!(
            h.app.begin_login("ada@example.com", PASSWORD, &ClientContext::default()).await.unwrap(),
            tessera_app::LoginOutcome::Authenticated { .. }
        ),
        "the password is unchanged"
    );
    // One sign-in POST is left: the first of these takes it, the rest are refused.
    let (first, rest) = forms.split_first().unwrap();
    assert!(!rate_limited(&b.post(&h, first.0, &first.1).await));
    for (path, form) in rest {
        assert!(rate_limited(&b.post(&h, path, form).await), "{path} shares the sign-in budget");
    }
}

/// The ceremony a WebAuthn page carries: (ceremony id, options JSON), unescaped from the HTML.
fn ceremony(r: &Resp) -> (String, String) {
    let attr = |name: &str| {
        let start = r.body.find(name).unwrap_or_else(|| panic!("no {name} in {}", r.body)) + name.len();
        let rest = &r.body[start..];
        let value = &rest[..rest.find('"').unwrap()];
        value
            .replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&#60;", "<")
            .replace("&#62;", ">")
            .replace("&#38;", "&")
            .replace("&amp;", "&")
    };
    (attr("name=\"ceremony\" value=\""), attr("data-options=\""))
}

/// Security keys through the pages: added in a fresh session (the first factor brings codes and
/// rotates the session), offered after the password, accepted for re-authentication; a stale
/// session is sent to re-authenticate first; the ceremony pages load their script from /static
/// and nothing inline.
#[tokio::test]
async fn security_keys_through_the_pages() {
    let h = harness(WebConfig { rate_limit_per_minute: 0, ..Default::default() }).await;
    let mut b = Browser::new("10.0.0.7");
    signed_up(&h, &mut b, "kay@example.com").await;
    let mut key = tessera_testkit::SoftKey::new("http://localhost:8080");
    let page = b.post(&h, "/settings/security/keys", &[("label", "Blue key"), ("kind", "security_key")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<script src=\"/static/webauthn.js\" defer></script>"), "{}", page.body);
    assert!(!page.body.contains("<script>"), "no inline script");
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let (id, options) = ceremony(&page);
    let answer = key.register(&options);
    let old = b.jar["__Host-tessera_session"].clone();
    let r = b.post(&h, "/settings/security/keys/finish", &[("ceremony", &id), ("response", &answer)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("recovery codes") || r.body.contains("Recovery codes"), "{}", r.body);
    assert_ne!(b.jar["__Host-tessera_session"], old, "the first factor raises the session under a new token");
    // The same answer again: the ceremony is gone.
    let r = b.post(&h, "/settings/security/keys/finish", &[("ceremony", &id), ("response", &answer)]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = b.get(&h, "/settings/security").await;
    assert!(r.body.contains("Blue key") && r.body.contains("Security key"), "{}", r.body);
    assert_eq!(b.get(&h, "/static/webauthn.js").await.status, StatusCode::OK);

    // Sign in again: password, then the key (the code page offers no code field: no app).
    let mut c = Browser::new("10.0.0.8");
    let r = c.post(&h, "/login", &[("email", "kay@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/login/code");
    let r = c.get(&h, "/login/code").await;
    assert!(r.body.contains("Use your security key") && !r.body.contains("name=\"code\""), "{}", r.body);
    // Without the challenge cookie there is nothing to begin.
    let mut stranger = Browser::new("10.0.0.9");
    assert_eq!(stranger.post(&h, "/login/key", &[]).await.location(), "/login?expired=1");
    let page = c.post(&h, "/login/key", &[]).await;
    let (id, options) = ceremony(&page);
    // A garbage answer is refused in words, and the sign-in can go on.
    let r = c.post(&h, "/login/key/finish", &[("ceremony", &id), ("response", "nonsense")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("no answer from a key"), "{}", r.body);
    let r = c.post(&h, "/login/key/finish", &[("ceremony", &id), ("response", &key.assert(&options))]).await;
    assert_eq!(r.location(), "/accounts", "{}", r.body);

    // A stale session re-authenticates with the key before adding another.
    h.clock.advance(time::Duration::minutes(15));
    let r = c.post(&h, "/settings/security/keys", &[("label", "Spare"), ("kind", "passkey")]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fsecurity");
    let r = c.get(&h, "/settings/reauth?next=%2Fsettings%2Fsecurity").await;
    assert!(r.body.contains("Confirm with your security key") && !r.body.contains("value=\"totp\""), "{}", r.body);
    let page = c.post(&h, "/settings/reauth/key", &[("next", "/settings/security")]).await;
    let (id, options) = ceremony(&page);
    assert!(page.body.contains("name=\"method\" value=\"key\""), "{}", page.body);
    let r = c
        .post(
            &h,
            "/settings/reauth",
            &[
                ("method", "key"),
                ("next", "/settings/security"),
                ("ceremony", &id),
                ("response", &key.assert(&options)),
            ],
        )
        .await;
    assert_eq!(r.location(), "/settings/security", "{}", r.body);
    let r = c.post(&h, "/settings/security/keys", &[("label", "Spare"), ("kind", "passkey")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The passkey button is on the login page, and its ceremony page needs no session.
    let r = stranger.get(&h, "/login").await;
    assert!(r.body.contains("Sign in with a passkey"), "{}", r.body);
    let page = stranger.post(&h, "/login/passkey", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let (id, options) = ceremony(&page);
    // kay's security key is not a passkey: it never signs in alone.
    let r = stranger.post(&h, "/login/passkey/finish", &[("ceremony", &id), ("response", &key.assert(&options))]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!stranger.jar.contains_key("__Host-tessera_session"));
}

/// "Trust this browser" through the pages: the box on the code page sets a `__Host-` cookie for
/// 30 days; the next sign-in in that browser asks for the password only (a wrong one still
/// fails); the security page lists the browser and revokes it, after which the code is asked
/// for again, from this browser and from any that copied its (revoked) cookie.
#[tokio::test]
async fn trust_this_browser_through_the_pages() {
    let h = harness(WebConfig { rate_limit_per_minute: 0, ..Default::default() }).await;
    let (_, secret) = user_with_totp(&h, "tom@example.com").await;
    let mut b = Browser::new("10.0.0.21");
    h.clock.advance(time::Duration::seconds(30));
    let r = b.post(&h, "/login", &[("email", "tom@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/login/code");
    let page = b.get(&h, "/login/code").await;
    assert!(
        page.body.contains("Trust this browser for 30 days")
            && !page.body.contains("name=\"trust\" type=\"checkbox\" value=\"on\" checked")
    );
    let r = b.post(&h, "/login/code", &[("code", &code_at(&secret, T0 + 30)), ("trust", "on")]).await;
    assert_eq!(r.location(), "/accounts", "{}", r.body);
    let cookie = r.set_cookies().into_iter().find(|c| c.starts_with("__Host-tessera_trust=")).expect("a trust cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let trust = b.jar["__Host-tessera_trust"].clone();
    b.post(&h, "/logout", &[]).await;
    // Password only, from this browser; a wrong password still fails.
    let r = b.post(&h, "/login", &[("email", "tom@example.com"), ("password", "not the password!")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = b.post(&h, "/login", &[("email", "tom@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/accounts", "a trusted browser skips the code");
    let r = b.get(&h, "/settings/security").await;
    assert!(
        r.body.contains("id=\"trusted\"") && r.body.contains("signed in with your password from a trusted browser"),
        "{}",
        r.body
    );
    // Sensitive actions still ask for the factor.
    let r = b.post(&h, "/settings/security/recovery-codes", &[]).await;
    assert_eq!(r.location(), "/settings/reauth?next=%2Fsettings%2Fsecurity");
    // Revoke it from the list: the code is asked for again.
    let id = {
        let start = r#"action="/settings/security/trusted/"#;
        let rest = &b.get(&h, "/settings/security").await.body;
        let i = rest.find(start).unwrap() + start.len();
        rest[i..i + 36].to_owned()
    };
    let r = b.post(&h, &format!("/settings/security/trusted/{id}/revoke"), &[]).await;
    assert_eq!(r.location(), "/settings/security?done=trust-revoked");
    b.post(&h, "/logout", &[]).await;
    let r = b.post(&h, "/login", &[("email", "tom@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/login/code");
    // A copy of the revoked cookie elsewhere: the code, as ever. (A live copy works from anywhere,
    // like the password it goes with: the cookie is HttpOnly, Secure and revocable.)
    let mut thief = Browser::new("10.0.0.66");
    thief.jar.insert("__Host-tessera_trust".into(), trust);
    let r = thief.post(&h, "/login", &[("email", "tom@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(r.location(), "/login/code");
}

// ---- forward auth ------------------------------------------------------------------------

/// The pages with forward auth on: `example.com` listed, the proxy at 10.0.0.9 trusted.
async fn forward_harness(cookie_domain: Option<&str>) -> H {
    harness(WebConfig {
        trusted_proxies: tessera_web::TrustedProxies::parse(&["10.0.0.9"]).unwrap(),
        forward_domains: tessera_core::redirect::ForwardDomains::parse(&["example.com"]).unwrap(),
        cookie_domain: cookie_domain.map(str::to_owned),
        ..Default::default()
    })
    .await
}

/// The proxy's `X-Forwarded-*` for `https://app.example.com/private?x=1`.
const FORWARDED: [(&str, &str); 3] =
    [("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.com"), ("x-forwarded-uri", "/private?x=1")];

/// `/auth/check?{query}` as the proxy at `ip` asks it, with the browser's cookies.
async fn check(h: &H, b: &mut Browser, query: &str, extra: &[(&str, &str)]) -> Resp {
    b.send(h, Method::GET, &format!("/auth/check?{query}"), &[], extra).await
}

#[tokio::test]
async fn auth_check_needs_require_and_says_who() {
    let h = forward_harness(None).await;
    let mut b = Browser::new("10.0.0.9");
    // What is required is the operator's URL: no default.
    for q in ["", "require=", "require=admin", "require=password&redirect=yes", "account=x"] {
        let r = check(&h, &mut b, q, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.body);
        assert!(r.body.contains("require") || r.body.contains("redirect"), "{}", r.body);
    }
    assert_eq!(check(&h, &mut b, "require=password&account=not%20an%20id", &[]).await.status, StatusCode::BAD_REQUEST);
    // Signed out: 401 with the sign-in page (returning to the original URL) for nginx, or a 302
    // there with redirect=1; the CSRF cookie of the pages is not set on the app's host.
    let r = check(&h, &mut b, "require=password", &FORWARDED).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["x-tessera-reason"], "login_required");
    assert_eq!(r.location(), "http://localhost:8080/login?rd=https%3A%2F%2Fapp.example.com%2Fprivate%3Fx%3D1");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    let r = check(&h, &mut b, "require=password&redirect=1", &FORWARDED).await;
    assert_eq!(
        (r.status, r.location().ends_with("rd=https%3A%2F%2Fapp.example.com%2Fprivate%3Fx%3D1")),
        (StatusCode::FOUND, true)
    );
    // The original URL is believed only from a trusted proxy, and only on a listed host.
    let mut stranger = Browser::new("198.51.100.7");
    assert_eq!(
        check(&h, &mut stranger, "require=password", &FORWARDED).await.location(),
        "http://localhost:8080/login"
    );
    let evil = [("x-forwarded-proto", "https"), ("x-forwarded-host", "evil.example"), ("x-forwarded-uri", "/")];
    assert_eq!(check(&h, &mut b, "require=password", &evil).await.location(), "http://localhost:8080/login");
    let at = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com@evil.example"),
        ("x-forwarded-uri", "/"),
    ];
    assert_eq!(check(&h, &mut b, "require=password", &at).await.location(), "http://localhost:8080/login");
    // A comma in the URI's query is just a comma; a second host (two proxies wrote it) is
    // believed from neither.
    let comma =
        [("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.com"), ("x-forwarded-uri", "/a?b=1,2")];
    let r = check(&h, &mut b, "require=password", &comma).await;
    assert!(r.location().ends_with("rd=https%3A%2F%2Fapp.example.com%2Fa%3Fb%3D1%2C2"), "{}", r.location());
    let two = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", "/"),
    ];
    assert_eq!(check(&h, &mut b, "require=password", &two).await.location(), "http://localhost:8080/login");

    // Signed in with the password only (no factor): password level passes, with who it is; a
    // header the client forged is not what the proxy reads.
    signed_up(&h, &mut b, "ada@example.com").await;
    let forged = [("x-tessera-user", "someone-else")];
    let r = check(&h, &mut b, "require=password", &forged).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let uid = session_of(&h, &b).await.user_id().to_owned();
    assert_eq!(r.headers["x-tessera-user"].to_str().unwrap(), uid);
    assert_eq!(r.headers["x-tessera-email"], "ada@example.com");
    assert_eq!(r.headers["x-tessera-level"], "password");
    assert_eq!(r.headers["x-tessera-session-age"], "0");
    assert_eq!(r.headers["x-tessera-grace-until"], "", "sent, empty: no grace period");
    let r = check(&h, &mut b, "require=second_factor", &FORWARDED).await;
    assert_eq!(
        (r.status, r.headers["x-tessera-reason"].to_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "enrolment_required")
    );
    // Not a member of an account: 403 (signing in again would not help), never a redirect.
    let r = check(&h, &mut b, "require=password&redirect=1&account=00000000-0000-4000-8000-000000000000", &[]).await;
    assert_eq!((r.status, r.headers["x-tessera-reason"].to_str().unwrap()), (StatusCode::FORBIDDEN, "not_a_member"));
    // Signed out: the very next check is refused.
    b.post(&h, "/logout", &[]).await;
    b.jar.insert("__Host-tessera_session".into(), "A".repeat(43));
    assert_eq!(check(&h, &mut b, "require=password", &[]).await.headers["x-tessera-reason"], "login_required");
}

#[tokio::test]
async fn a_sign_in_returns_to_the_app_only_on_a_listed_host() {
    let h = forward_harness(None).await;
    let (_, secret) = user_with_totp(&h, "bob@example.com").await;
    let rd = "https://app.example.com/private?x=1";
    let mut b = Browser::new("10.0.0.1");
    // The login page keeps rd in its forms (checked first).
    let page = b.get(&h, "/login?rd=https%3A%2F%2Fapp.example.com%2Fprivate%3Fx%3D1").await.body;
    assert!(page.contains("name=\"rd\" value=\"https://app.example.com/private?x=1\""), "{page}");
    let page = b.get(&h, "/login?rd=https%3A%2F%2Fevil.example%2F").await.body;
    assert!(!page.contains("name=\"rd\""), "{page}");
    // password → code page → back to the app: rd rode in the login challenge.
    let r = b.post(&h, "/login", &[("email", "bob@example.com"), ("password", PASSWORD), ("rd", rd)]).await;
    assert_eq!(r.location(), "/login/code");
    h.clock.advance(time::Duration::seconds(30));
    let r = b.post(&h, "/login/code", &[("code", &code_at(&secret, T0 + 30))]).await;
    assert_eq!(r.location(), rd, "{}", r.body);

    // Every open-redirect form is refused: the sign-in lands on Tessera's own page.
    for (step, bad) in (2..).zip([
        "//evil.example",
        "https://evil.example/",
        "https://example.com.evil.example/",
        "https://example.com@evil.example/",
        "https://ex\u{0430}mple.com/",
        "https://xn--exmple-4nf.com/",
        "javascript:alert(1)",
        "https:\\\\evil.example",
        "/\\evil.example",
        "https%3A%2F%2Fevil.example",
        "/%2F%2Fevil.example",
        "http://app.example.com/",
    ]) {
        let mut b = Browser::new("10.0.0.2");
        let r = b.post(&h, "/login", &[("email", "bob@example.com"), ("password", PASSWORD), ("rd", bad)]).await;
        assert_eq!(r.location(), "/login/code", "{bad}");
        h.clock.advance(time::Duration::seconds(30));
        let r = b.post(&h, "/login/code", &[("code", &code_at(&secret, T0 + 30 * step))]).await;
        assert_eq!(r.location(), "/accounts", "{bad:?} was followed");
    }
    // A password-only user goes straight back.
    h.app.create_user("ada@example.com", PASSWORD, &ClientContext::default()).await.unwrap();
    let mut a = Browser::new("10.0.0.3");
    let r = a.post(&h, "/login", &[("email", "ada@example.com"), ("password", PASSWORD), ("rd", rd)]).await;
    assert_eq!(r.location(), rd);
    // Sent back by the proxy while signed in (the app wants more): the page says so and keeps rd.
    let page = a.get(&h, "/login?rd=https%3A%2F%2Fapp.example.com%2F").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("You are signed in, but the app you came from") && page.body.contains("name=\"rd\""));
    assert!(page.body.contains("href=\"https://app.example.com/\" id=\"back-to-app\""), "{}", page.body);
}

#[tokio::test]
async fn the_domain_wide_cookie_is_for_auth_check_only() {
    let h = forward_harness(Some("example.com")).await;
    let mut b = Browser::new("10.0.0.1");
    signed_up(&h, &mut b, "ada@example.com").await;
    let r_cookie = b.jar.get("__Secure-tessera_fwd").cloned().expect("the domain-wide cookie");
    assert_ne!(r_cookie, b.jar["__Host-tessera_session"], "a token of its own");
    // It alone passes /auth/check (an app on another host of the domain sends only it)…
    let mut app_host = Browser::new("10.0.0.1");
    app_host.jar.insert("__Secure-tessera_fwd".into(), r_cookie.clone());
    assert_eq!(check(&h, &mut app_host, "require=password", &[]).await.status, StatusCode::OK);
    // …and nothing else: the pages do not take it, nor does it work as a session cookie.
    assert_eq!(app_host.get(&h, "/settings/security").await.location(), "/login");
    let mut as_session = Browser::new("10.0.0.1");
    as_session.jar.insert("__Host-tessera_session".into(), r_cookie.clone());
    assert_eq!(as_session.get(&h, "/settings/security").await.location(), "/login");
    // A rotation (re-authentication) gives the session a new forward token: the old one is void.
    let r = b.post(&h, "/settings/reauth", &[("method", "password"), ("password", PASSWORD), ("next", "/")]).await;
    assert_eq!(r.location(), "/", "{}", r.body);
    let rotated = b.jar["__Secure-tessera_fwd"].clone();
    assert_ne!(rotated, r_cookie, "a new forward token with the new session token");
    assert_eq!(check(&h, &mut app_host, "require=password", &[]).await.status, StatusCode::UNAUTHORIZED);
    app_host.jar.insert("__Secure-tessera_fwd".into(), rotated);
    assert_eq!(check(&h, &mut app_host, "require=password", &[]).await.status, StatusCode::OK);
    // Signing out clears it (Domain set) and ends it.
    let r = b.post(&h, "/logout", &[]).await;
    let cleared = r.set_cookies().into_iter().find(|c| c.starts_with("__Secure-tessera_fwd=")).expect("cleared");
    assert!(cleared.contains("Domain=example.com") && cleared.contains("Max-Age=0"), "{cleared}");
    let r = check(&h, &mut app_host, "require=password", &[]).await;
    assert_eq!(
        (r.status, r.headers["x-tessera-reason"].to_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "session_revoked")
    );
}
