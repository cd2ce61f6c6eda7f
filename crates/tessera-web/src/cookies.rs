//! The pages' cookies. Every one is `__Host-` prefixed (so only this origin, over a secure
//! channel, with `Path=/` and no `Domain`, can set it), Secure, HttpOnly and SameSite=Lax.
//! Browsers treat http://127.0.0.1 and http://localhost as secure, so local use works too.
//!
//! One exception, only with `--cookie-domain`: [`FORWARD`], `__Secure-` and domain-wide so the
//! apps on the domain's other hosts send it to their reverse proxy, which passes it to
//! `/auth/check`. It holds a token of its own (not the session's), which nothing but
//! `/auth/check` accepts.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use cookie::{Cookie, SameSite};

/// The session token (only its hash is stored).
pub(crate) const SESSION: &str = "__Host-tessera_session";
/// A login waiting for its second factor (the challenge token, 5 minutes).
pub(crate) const CHALLENGE: &str = "__Host-tessera_login";
/// The CSRF token that every form must echo.
pub(crate) const CSRF: &str = "__Host-tessera_csrf";
/// This browser's known-browser token (only its hash is stored, per user it signed in): lets
/// it sign its users in while password sign-in is suspended for failures from elsewhere.
pub(crate) const BROWSER: &str = "__Host-tessera_browser";
/// How long the known-browser cookie lives (400 days: the longest browsers keep a cookie).
pub(crate) const BROWSER_MAX_AGE: i64 = 400 * 24 * 3600;
/// "Trust this browser": a random token (its SHA-256 stored) that lets the password alone sign
/// its user in, for as long as the trust lasts.
pub(crate) const TRUST: &str = "__Host-tessera_trust";

/// Forward auth's domain-wide cookie (`--cookie-domain`): the session's forward token, good
/// for `/auth/check` only.
pub(crate) const FORWARD: &str = "__Secure-tessera_fwd";

/// The domain-wide [`FORWARD`] cookie for `domain`, lasting `max_age` seconds.
pub(crate) fn set_forward(domain: &str, value: &str, max_age: i64) -> String {
    ours(FORWARD, value).domain(domain.to_owned()).max_age(time::Duration::seconds(max_age)).build().to_string()
}

/// Delete the domain-wide [`FORWARD`] cookie.
pub(crate) fn clear_forward(domain: &str) -> String {
    ours(FORWARD, "").domain(domain.to_owned()).max_age(time::Duration::ZERO).build().to_string()
}

/// The value of cookie `name` in the request (every `Cookie` header, parsed by the `cookie`
/// crate), if present, non-empty and of a sane length (our tokens are 43 characters).
pub(crate) fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

fn ours(name: &str, value: &str) -> cookie::CookieBuilder<'static> {
    Cookie::build((name.to_owned(), value.to_owned())).path("/").secure(true).http_only(true).same_site(SameSite::Lax)
}

/// A `Set-Cookie` value. `max_age` in seconds; `None` makes a browser-session cookie.
pub(crate) fn set(name: &str, value: &str, max_age: Option<i64>) -> String {
    let c = ours(name, value);
    match max_age {
        Some(s) => c.max_age(time::Duration::seconds(s)),
        None => c,
    }
    .build()
    .to_string()
}

/// A `Set-Cookie` value that deletes the cookie.
pub(crate) fn clear(name: &str) -> String {
    ours(name, "").max_age(time::Duration::ZERO).build().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reads_and_writes() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; __Host-tessera_session=abc ; b=\"2\""));
        h.append(COOKIE, HeaderValue::from_static("__Host-tessera_csrf=xyz"));
        assert_eq!(get(&h, SESSION).as_deref(), Some("abc"));
        assert_eq!(get(&h, CSRF).as_deref(), Some("xyz"));
        assert_eq!(get(&h, "b").as_deref(), Some("2"));
        assert_eq!(get(&h, CHALLENGE), None);
        let c = set(SESSION, "t", Some(60));
        for part in ["__Host-tessera_session=t", "Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=60"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Domain"));
        assert!(clear(CSRF).contains("Max-Age=0"));
        let f = set_forward("example.com", "t", 60);
        for part in ["__Secure-tessera_fwd=t", "Domain=example.com", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
            assert!(f.contains(part), "{f}");
        }
        assert!(clear_forward("example.com").contains("Max-Age=0"));
    }
}
