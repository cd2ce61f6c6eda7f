//! The one middleware every page passes through: client address, CSRF, then rate limits; and
//! the security headers and the request timeout, as `tower-http` layers around it
//! ([`layers`]). Keeping them here means no handler can forget one.

use crate::{Web, cookies, views};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use subtle::ConstantTimeEq;

/// Largest form body accepted (the biggest form, a WebAuthn registration's answer, is a few KB).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Forms that try a password, a code or a mailed token, or that send mail: their POSTs share
/// the tight per-client budget (`WebConfig::rate_limit_per_minute`); every other POST draws on
/// the generous one (`WebConfig::post_rate_limit_per_minute`).
const SIGN_IN: [&str; 17] = [
    "/signup",
    "/login",
    "/login/code",
    "/login/recovery",
    "/login/key",
    "/login/key/finish",
    "/login/passkey",
    "/login/passkey/finish",
    "/settings/reauth/key",
    "/settings/reauth",
    "/password/forgot",
    "/password/reset",
    "/verify-email",
    "/verify-email/send",
    "/settings/password",
    "/settings/email",
    "/settings/email/confirm",
];

/// The client's address, as the audit trail and the rate limit see it.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp(pub(crate) String);

/// This browser's CSRF token, to render into every form.
#[derive(Debug, Clone)]
pub(crate) struct CsrfToken(pub(crate) String);

/// The pages' Content-Security-Policy. `form-action` also allows the hosts a sign-in may return
/// to (`--forward-auth-domain`): browsers apply it to the redirect that answers a form, so the
/// sign-in's 303 back to the app would be blocked otherwise.
pub(crate) fn csp(forward: &tessera_core::redirect::ForwardDomains) -> String {
    let mut form_action = vec!["'self'".to_owned()];
    for d in forward.names() {
        form_action.push(format!("https://{d}:* https://*.{d}:*"));
        if d == "localhost" || d.ends_with(".localhost") || d.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            form_action.push(format!("http://{d}:* http://*.{d}:*"));
        }
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         form-action {}; frame-ancestors 'none'; base-uri 'none'",
        form_action.join(" ")
    )
}

/// Proxies whose `X-Forwarded-For` is believed: the pages' reverse proxies and load balancers.
/// IPv4-mapped IPv6 addresses are matched as the IPv4 address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// These networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets.into_iter().map(|n| n.trunc()).collect())
    }

    /// Parse CIDRs (`10.0.0.0/8`, `::1/128`) or single addresses (`192.0.2.7`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let net = |s: &str| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR (like 10.0.0.0/8) or an IP address"))
        };
        items
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
            .map(net)
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    /// The networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// The client's address, as the audit trail and the rate limits see it: the socket's peer,
/// unless the peer is a trusted proxy. Then `X-Forwarded-For` (every instance, in order, each
/// a comma-separated list that each proxy appended its own peer to) is walked from the right,
/// past the entries that are trusted proxies too: the first untrusted entry is the client.
/// Entries further left were written by the client or by proxies we do not know, so they are
/// never believed. An entry that is not an address stops the walk at the last trusted hop
/// seen; if every entry is trusted, the leftmost is the client. An untrusted peer's header
/// is never read.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut hop = peer.to_canonical();
    if !trusted.contains(hop) {
        return hop;
    }
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for value in values.into_iter().rev() {
        // Entry by entry, as bytes: a proxy appends the real client to the line the client sent,
        // so a bad byte the client put further left must not hide the entries on its right.
        for entry in value.as_bytes().rsplit(|b| *b == b',') {
            let Some(ip) = std::str::from_utf8(entry).ok().and_then(|e| forwarded_entry(e.trim())) else { return hop };
            hop = ip;
            if !trusted.contains(ip) {
                return ip;
            }
        }
    }
    hop
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (some proxies add it).
fn forwarded_entry(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip())).ok().map(|ip| ip.to_canonical())
}

fn fresh_token() -> Option<String> {
    tessera_core::random::bytes::<32>().ok().map(|b| data_encoding::BASE64URL_NOPAD.encode(&b))
}

/// The `csrf` field of an urlencoded form body (the other fields are the handler's).
fn form_csrf(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Csrf {
        csrf: Option<String>,
    }
    serde_urlencoded::from_bytes::<Csrf>(body).ok()?.csrf
}

/// A whole request, body included, must be answered within this (a client trickling its
/// form in byte by byte holds a connection slot no longer).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Apply the layers that wrap every page: the request timeout (408) and the security headers
/// on every response, the framework's and the timeout's included.
pub(crate) fn layers<S: Clone + Send + Sync + 'static>(r: axum::Router<S>, hsts: bool, csp: &str) -> axum::Router<S> {
    use tower_http::set_header::SetResponseHeaderLayer as Set;
    let h = HeaderValue::from_static;
    let r = if hsts { r.layer(Set::overriding(header::STRICT_TRANSPORT_SECURITY, h("max-age=31536000"))) } else { r };
    r.layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        // Pages show secrets, recovery codes and personal activity: never cache them (the
        // static files say otherwise for themselves).
        .layer(Set::if_not_present(header::CACHE_CONTROL, h("no-store")))
        .layer(Set::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(csp).unwrap_or_else(|_| h("default-src 'none'; form-action 'self'")),
        ))
        .layer(Set::overriding(header::X_FRAME_OPTIONS, h("DENY")))
        .layer(Set::overriding(header::X_CONTENT_TYPE_OPTIONS, h("nosniff")))
        .layer(Set::overriding(header::REFERRER_POLICY, h("no-referrer")))
        .layer(Set::overriding(header::HeaderName::from_static("cross-origin-opener-policy"), h("same-origin")))
        .layer(Set::overriding(
            header::HeaderName::from_static("permissions-policy"),
            h("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
        ))
}

/// Client address, CSRF check and then the rate limit on every POST, and security headers on
/// every response.
pub(crate) async fn guard(State(web): State<Web>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = peer.map(|p| client_ip(p, req.headers(), &web.config.trusted_proxies));
    let ip_text = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    req.extensions_mut().insert(ClientIp(ip_text.clone()));
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
        tracing::info!(ip = ip_text, path = parts.uri.path(), "POST without a valid CSRF token refused");
        return finish(views::forbidden_csrf(&token), set_cookie);
    }
    // Charged only now: a forged POST (cross-site, or without this browser's token) was refused
    // above without spending the budget of the address it came from, often the victim's own.
    let limiter = if SIGN_IN.contains(&parts.uri.path()) { &web.sign_in_limit } else { &web.post_limit };
    // Without a peer address (never when served by tessera-server) all share one bucket.
    if let Err(wait) = limiter.check(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), web.app.now()) {
        tracing::info!(ip = ip_text, path = parts.uri.path(), "rate limit reached");
        let mut r = views::too_many_requests(&token, wait);
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return finish(r, set_cookie);
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    // A POST changes state: run it to its end on its own task, so neither the request timeout
    // nor a client that hangs up cancels a use case between two of its writes (say, after a
    // failure was counted and before its audit row and notice).
    match tokio::spawn(next.run(req)).await {
        Ok(r) => finish(in_words(r, &token), set_cookie),
        Err(e) => {
            tracing::error!(error = %e, "page handler failed");
            finish(views::internal("the request could not be completed"), set_cookie)
        }
    }
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
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{TrustedProxies, client_ip};
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    #[test]
    fn form_action_allows_the_forward_auth_hosts() {
        use tessera_core::redirect::ForwardDomains;
        assert!(super::csp(&ForwardDomains::default()).contains("form-action 'self';"));
        let c = super::csp(&ForwardDomains::parse(&["example.com", "localhost"]).unwrap());
        assert!(
            c.contains(
                "form-action 'self' https://example.com:* https://*.example.com:* https://localhost:* \
                 https://*.localhost:* http://localhost:* http://*.localhost:*;"
            ),
            "{c}"
        );
        assert!(!c.contains("http://example.com"), "plain http only on loopback: {c}");
    }

    #[test]
    fn finds_the_csrf_field() {
        assert_eq!(super::form_csrf(b"a=1&csrf=abc%2Dd&b=2").as_deref(), Some("abc-d"));
        assert_eq!(super::form_csrf(b"a=1&csrfx=abc"), None);
        assert_eq!(super::form_csrf(b""), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client address for a request from `peer` carrying these `X-Forwarded-For` lines.
    fn walk(trusted: &[&str], peer: &str, xff: &[&[u8]]) -> IpAddr {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        client_ip(ip(peer), &h, &TrustedProxies::parse(trusted).unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(walk(&[], "198.51.100.7", &[b"203.0.113.1"]), ip("198.51.100.7"));
        assert_eq!(walk(&["10.0.0.0/8"], "198.51.100.7", &[b"10.0.0.5, 203.0.113.1"]), ip("198.51.100.7"));
        assert_eq!(walk(&["10.0.0.0/8"], "10.1.2.3", &[]), ip("10.1.2.3"), "a trusted peer that forwards nothing");
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_entry_from_the_right() {
        let t = ["10.0.0.0/8"];
        // The client forged the leftmost entries; our proxy appended the real peer.
        assert_eq!(walk(&t, "10.0.0.1", &[b"1.1.1.1, 2.2.2.2, 203.0.113.9"]), ip("203.0.113.9"));
        // Several trusted hops (an edge proxy, then an internal load balancer).
        assert_eq!(walk(&t, "10.0.0.1", &[b"1.1.1.1, 203.0.113.9, 10.9.9.9, 10.0.0.2"]), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        assert_eq!(walk(&t, "10.0.0.1", &[b"1.1.1.1", b"203.0.113.9, 10.0.0.2"]), ip("203.0.113.9"));
        assert_eq!(walk(&t, "10.0.0.1", &[b"1.1.1.1, 203.0.113.9", b"10.0.0.2"]), ip("203.0.113.9"));
        // A byte that is not text, left of the client on the same line, hides nothing.
        assert_eq!(walk(&t, "10.0.0.1", &[b"\xff, 203.0.113.9"]), ip("203.0.113.9"));
        // A forged trusted-looking entry left of the client is never reached.
        assert_eq!(walk(&t, "10.0.0.1", &[b"10.6.6.6, 203.0.113.9"]), ip("203.0.113.9"));
        // Every entry trusted: the leftmost.
        assert_eq!(walk(&t, "10.0.0.1", &[b"10.0.0.3, 10.0.0.2"]), ip("10.0.0.3"));
        // A single trusted address, and entries with ports.
        assert_eq!(walk(&["192.0.2.10"], "192.0.2.10", &[b"203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(walk(&["192.0.2.10"], "192.0.2.11", &[b"203.0.113.9"]), ip("192.0.2.11"));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let t = ["::1/128", "2001:db8:aa::/48", "10.0.0.0/8"];
        assert_eq!(walk(&t, "::1", &[b"2001:db8:1::7"]), ip("2001:db8:1::7"));
        assert_eq!(walk(&t, "2001:db8:aa::1", &[b"2001:db8:1::7, 2001:db8:aa:1::2"]), ip("2001:db8:1::7"));
        assert_eq!(walk(&t, "::1", &[b"[2001:db8:1::7]:443"]), ip("2001:db8:1::7"));
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: matched as IPv4.
        assert_eq!(walk(&t, "::ffff:10.0.0.1", &[b"203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(walk(&t, "::ffff:198.51.100.7", &[b"203.0.113.9"]), ip("198.51.100.7"));
        assert_eq!(walk(&t, "10.0.0.1", &[b"::ffff:203.0.113.9"]), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let t = ["10.0.0.0/8"];
        assert_eq!(walk(&t, "10.0.0.1", &[b"203.0.113.9, garbage"]), ip("10.0.0.1"));
        assert_eq!(walk(&t, "10.0.0.1", &[b"203.0.113.9, unknown, 10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(walk(&t, "10.0.0.1", &[b"203.0.113.9,,10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(walk(&t, "10.0.0.1", &[b""]), ip("10.0.0.1"));
        assert_eq!(walk(&t, "10.0.0.1", &[b"203.0.113.9", b"\xff\xfe"]), ip("10.0.0.1"), "not text");
    }

    #[test]
    fn trusted_proxies_parse() {
        let p = TrustedProxies::parse(&["10.1.2.3/8", " ::1/128 ", "192.0.2.7", ""]).unwrap();
        let nets: Vec<String> = p.nets().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal"]).unwrap_err().contains("proxy.internal"));
    }
}
