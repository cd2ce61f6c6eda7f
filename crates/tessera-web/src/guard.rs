//! The one middleware every page passes through: client address, CSRF, rate limits and the
//! security headers. Keeping them here means no handler can forget one.

use crate::{Web, cookies, views};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// Largest form body accepted (the biggest form is a few hundred bytes).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Forms whose POSTs are rate-limited per client address.
const LIMITED: [&str; 4] = ["/signup", "/login", "/login/code", "/login/recovery"];

/// The client's address, as the audit trail and the rate limit see it.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp(pub(crate) String);

/// This browser's CSRF token, to render into every form.
#[derive(Debug, Clone)]
pub(crate) struct CsrfToken(pub(crate) String);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn client_ip(req: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(last) = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|s| !s.is_empty())
    {
        return last.chars().take(64).collect();
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".into(), |c| c.0.ip().to_string())
}

fn fresh_token() -> Option<String> {
    tessera_core::random::bytes::<32>().ok().map(|b| data_encoding::BASE64URL_NOPAD.encode(&b))
}

/// The `csrf` field of an urlencoded form body.
fn form_csrf(body: &[u8]) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let s = std::str::from_utf8(pair).ok()?;
        let (k, v) = s.split_once('=')?;
        (k == "csrf").then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

fn security_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "permissions-policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()");
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show secrets, recovery codes and personal activity: never cache them.
        set(h, "cache-control", "no-store");
    }
}

/// Client address, CSRF check on every POST, rate limit on the login forms, and security
/// headers on every response.
pub(crate) async fn guard(State(web): State<Web>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req, web.config.trust_forwarded_for);
    req.extensions_mut().insert(ClientIp(ip.clone()));
    let cookie_token = cookies::get(req.headers(), cookies::CSRF).filter(|t| t.len() == 43);
    let (token, is_new) = match cookie_token.clone().or_else(fresh_token) {
        Some(t) => (t, cookie_token.is_none()),
        None => return finish(views::internal("no randomness for a CSRF token"), None),
    };
    req.extensions_mut().insert(CsrfToken(token.clone()));
    let set_cookie = is_new.then(|| cookies::set(cookies::CSRF, &token, None));

    if req.method() != Method::POST {
        return finish(in_words(next.run(req).await, &token), set_cookie);
    }
    if LIMITED.contains(&req.uri().path())
        && let Err(wait) = web.limiter.check(&ip, web.app.now())
    {
        tracing::info!(ip, path = req.uri().path(), "rate limit reached");
        let mut r = views::too_many_requests(&token, wait);
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return finish(r, set_cookie);
    }
    if req.headers().get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        return finish(views::forbidden_csrf(&token), set_cookie);
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return finish(
                views::message_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &token,
                    "Form too large",
                    "That form was larger than any of ours. Please go back and try again.",
                ),
                set_cookie,
            );
        }
    };
    let ok = match (&cookie_token, form_csrf(&bytes)) {
        (Some(c), Some(f)) => bool::from(c.as_bytes().ct_eq(f.as_bytes())),
        _ => false,
    };
    if !ok {
        tracing::info!(ip, path = parts.uri.path(), "POST without a valid CSRF token refused");
        return finish(views::forbidden_csrf(&token), set_cookie);
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    finish(in_words(next.run(req).await, &token), set_cookie)
}

/// A bare 4xx from the framework (unknown path, wrong method, unreadable form) becomes a page
/// that says what happened, in words.
fn in_words(r: Response, csrf: &str) -> Response {
    let html = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !r.status().is_client_error() || html {
        return r;
    }
    let (heading, text) = match r.status() {
        StatusCode::NOT_FOUND => ("Page not found", "There is no page at this address."),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("Not available", "This page can't be used that way. Go back and use the form.")
        }
        _ => ("That didn't work", "That request could not be read. Go back, reload the page and try again."),
    };
    views::message_page(r.status(), csrf, heading, text)
}

fn finish(mut r: Response, set_cookie: Option<String>) -> Response {
    security_headers(r.headers_mut());
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_csrf_field() {
        assert_eq!(super::form_csrf(b"a=1&csrf=abc%2Dd&b=2").as_deref(), Some("abc-d"));
        assert_eq!(super::form_csrf(b"a=1&csrfx=abc"), None);
        assert_eq!(super::form_csrf(b""), None);
    }
}
