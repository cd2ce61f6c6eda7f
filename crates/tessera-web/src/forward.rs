//! Forward auth: `GET /auth/check`, asked by a reverse proxy (nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`) before each request to an app it protects. The answer
//! is [`tessera_app::App::authorize`]'s, computed afresh every time.
//!
//! Who may do what:
//! - what is required comes from the URL the operator configured in the proxy:
//!   `?require=password|second_factor` (no default: missing or unknown → 400), and optionally
//!   `&account=<id>` (membership, under the account's MFA policy and grace period). No header
//!   a client could send changes it;
//! - the credential is the browser's own cookie: the pages' `__Host-` session cookie (Tessera
//!   and the app on one host), or the domain-wide `__Secure-tessera_fwd` of `--cookie-domain`
//!   (apps on other hosts of the domain), whose token nothing but this route accepts;
//! - the original URL (`X-Forwarded-Proto`, `-Host`, `-Uri`) is read only from a peer in
//!   `--trusted-proxies`, and becomes the sign-in's `rd` only on a host of
//!   `--forward-auth-domain` ([`tessera_core::redirect::return_address`]).
//!
//! Answers: 200 with `X-Tessera-User`, `-Email`, `-Level`, `-Session-Age` (seconds),
//! `-Grace-Until` (RFC 3339 while an account's grace period lasts, else empty), and `X-Tessera-Cookie`: the request's
//! cookies without Tessera's own, for a proxy that cannot filter them itself (nginx) to pass
//! upstream instead of the browser's `Cookie` (an app never sees a Tessera token). A refusal a sign-in can cure is
//! 401 with `Location:` the sign-in page (nginx, whose `auth_request` turns anything but
//! 2xx/401/403 into a 500, redirects with it), or with `&redirect=1` a 302 there (Traefik,
//! Caddy). One no sign-in cures (not a member, address unconfirmed) is 403. Every answer says
//! why in `X-Tessera-Reason` and is `Cache-Control: no-store`.

use crate::{Web, cookies};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::net::SocketAddr;
use tessera_app::{Authorization, Credential, Decision, Required};
use tessera_core::policy::Assurance;
use tessera_core::redirect::return_address;

pub(crate) fn routes() -> Router<Web> {
    Router::new().route("/auth/check", any(check))
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CheckQuery {
    require: Option<String>,
    account: Option<String>,
    redirect: Option<String>,
}

fn answer(status: StatusCode, reason: &'static str, text: &str) -> Response {
    let mut r = (status, format!("{text}\n")).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(HeaderName::from_static("x-tessera-reason"), HeaderValue::from_static(reason));
    r
}

fn bad_request(text: &str) -> Response {
    answer(StatusCode::BAD_REQUEST, "bad_request", text)
}

/// The URL the proxy was asked for, from its `X-Forwarded-*` headers: only from a trusted
/// proxy, and only if it is a return address the sign-in may follow.
fn original_url(web: &Web, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
    let peer = peer?;
    if !web.config.trusted_proxies.contains(peer.ip()) {
        return None;
    }
    // One value each: several (or, for the scheme and host, a comma list) mean several proxies
    // wrote it, and which one to believe is unknowable: believe none. (A comma in a URI's query
    // is just a comma.)
    let one = |name: &str, list_ok: bool| {
        let mut all = headers.get_all(name).iter();
        let v = all.next()?.to_str().ok()?;
        (all.next().is_none() && (list_ok || !v.contains(','))).then(|| v.trim().to_owned())
    };
    let proto = one("x-forwarded-proto", false)?.to_ascii_lowercase();
    let host = one("x-forwarded-host", false)?;
    let uri = one("x-forwarded-uri", true).unwrap_or_else(|| "/".to_owned());
    if !(proto == "https" || proto == "http") || !uri.starts_with('/') || host.contains(['/', '@', '\\', '?', '#']) {
        return None;
    }
    let url = format!("{proto}://{host}{uri}");
    return_address(&url, &web.config.forward_domains).filter(|u| !u.starts_with('/'))
}

/// The request's cookies without Tessera's (`__Host-tessera_*`, `__Secure-tessera_*`), as one
/// `Cookie` value for the upstream app.
fn app_cookies(headers: &HeaderMap) -> String {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let name = c.split('=').next().unwrap_or_default().trim();
            !(name.starts_with("__Host-tessera_") || name.starts_with("__Secure-tessera_"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The sign-in page, returning to `rd`.
fn login_url(web: &Web, rd: Option<&str>) -> String {
    let base = web.app.config().public_url.trim_end_matches('/');
    match rd.and_then(|rd| serde_urlencoded::to_string([("rd", rd)]).ok()) {
        Some(q) => format!("{base}/login?{q}"),
        None => format!("{base}/login"),
    }
}

fn level(a: Assurance) -> &'static str {
    match a {
        Assurance::Password => "password",
        Assurance::PasswordAndSecondFactor => "second_factor",
    }
}

async fn decide(
    web: &Web,
    headers: &HeaderMap,
    account: Option<&str>,
    require: Required,
) -> Result<Authorization, tessera_app::AppError> {
    let session = cookies::get(headers, cookies::SESSION);
    let forward = web.config.cookie_domain.as_ref().and_then(|_| cookies::get(headers, cookies::FORWARD));
    let mut last = None;
    // The host's own session cookie first; then the domain-wide one. The first that names a
    // live session decides.
    for credential in
        [session.as_deref().map(Credential::Session), forward.as_deref().map(Credential::Forward)].into_iter().flatten()
    {
        let a = web.app.authorize(credential, account, require).await?;
        if a.principal.is_some() {
            return Ok(a);
        }
        last = Some(a);
    }
    Ok(last.unwrap_or(Authorization { decision: Decision::LoginRequired, principal: None, grace_until: None }))
}

async fn check(State(web): State<Web>, req: Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let q: CheckQuery = match serde_urlencoded::from_str(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(_) => {
            return bad_request(
                "the query could not be read: use ?require=password|second_factor[&account=ID][&redirect=1]",
            );
        }
    };
    let Some(require) = q.require.as_deref().and_then(Required::parse) else {
        return bad_request(
            "require is missing or unknown: configure the proxy with /auth/check?require=password or ?require=second_factor",
        );
    };
    let redirect = match q.redirect.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return bad_request("redirect must be 1 (a 302 to the sign-in page) or 0 (a 401)"),
    };
    let account = q.account.as_deref().filter(|a| !a.is_empty());
    if account.is_some_and(|a| tessera_core::validate::subject_id(a).is_err()) {
        return bad_request("account is not an account id");
    }
    let a = match decide(&web, req.headers(), account, require).await {
        Ok(a) => a,
        Err(tessera_app::AppError::Invalid(_)) => return bad_request("account is not an account id"),
        Err(e) => {
            tracing::error!(error = %e, "forward auth could not decide");
            return answer(StatusCode::INTERNAL_SERVER_ERROR, "error", "Tessera could not decide; refused");
        }
    };
    let reason = a.decision.as_str();
    match a.decision {
        Decision::Allow => {
            let Some(p) = a.principal else {
                return answer(StatusCode::INTERNAL_SERVER_ERROR, "error", "Tessera could not decide; refused");
            };
            let mut r = answer(StatusCode::OK, reason, "ok");
            let cookies_for_app = app_cookies(req.headers());
            let h = r.headers_mut();
            let mut put = |name: &'static str, v: &str| {
                if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                    h.insert(HeaderName::from_static(name), v);
                }
            };
            put("x-tessera-user", &p.user_id);
            put("x-tessera-email", &p.email);
            put("x-tessera-level", level(p.level));
            put("x-tessera-session-age", &p.session_age.whole_seconds().to_string());
            put("x-tessera-cookie", &cookies_for_app);
            // Always sent, empty outside a grace period: a proxy that copies a header the answer
            // lacks may pass the client's own, or (Caddy 2.6) a placeholder's text, upstream.
            let grace = a.grace_until.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            put("x-tessera-grace-until", grace.as_deref().unwrap_or_default());
            r
        }
        Decision::NotAMember | Decision::EmailUnverified => answer(
            StatusCode::FORBIDDEN,
            reason,
            if a.decision == Decision::NotAMember {
                "you are signed in, but not a member of this account"
            } else {
                "confirm your email address first"
            },
        ),
        Decision::LoginRequired
        | Decision::SessionRevoked
        | Decision::SecondFactorRequired
        | Decision::EnrolmentRequired => {
            let to = login_url(&web, original_url(&web, peer, req.headers()).as_deref());
            let mut r = if redirect {
                answer(StatusCode::FOUND, reason, "sign in")
            } else {
                answer(StatusCode::UNAUTHORIZED, reason, "sign in")
            };
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn the_app_gets_its_own_cookies_only() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-tessera_session=s; app=1; __Secure-tessera_fwd=f; x=\"2\""),
        );
        h.append(header::COOKIE, HeaderValue::from_static("__Host-tessera_csrf=c;theme=dark"));
        assert_eq!(super::app_cookies(&h), "app=1; x=\"2\"; theme=dark");
        assert_eq!(super::app_cookies(&HeaderMap::new()), "");
    }
}
