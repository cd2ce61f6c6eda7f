//! The auth middleware of a service that signs its users in with Tessera: a `tower` layer for
//! any HTTP service (axum, hyper, tonic) that asks `IdentityService/Authorize`, on every
//! request, whether this session may enter (this account) at the required level, and lets the
//! request through only on `ALLOW`, with [`AuthorizedUser`] in its extensions.
//!
//! # Whose session
//!
//! The session token is the end user's own: the `__Host-tessera_session` cookie Tessera's pages
//! set (a service on Tessera's host), or the `x-tessera-session` header a front end sends. It
//! names one session, which Tessera resolves; no user id is ever read from the request, so a
//! forged header can name no one.
//!
//! # What is required
//!
//! The layer's own configuration: the level ([`RequireSessionLayer::new`]) and, optionally,
//! the account ([`RequireSessionLayer::account`], or per request an [`AccountScope`] that an
//! earlier layer of the service put in the extensions, e.g. from its route). Never the client's.
//!
//! Answers: 401 for a refusal a sign-in cures (`x-tessera-reason`: `login_required`,
//! `session_revoked`, `second_factor_required`, `enrolment_required`), 403 for `not_a_member` and
//! `email_unverified`, 503 when Tessera cannot answer (closed, never open).

use crate::layer::refuse;
use crate::{Client, pb};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// The cookie the layer reads the session token from.
pub const SESSION_COOKIE: &str = "__Host-tessera_session";
/// The header the layer reads the session token from when there is no cookie.
pub const SESSION_HEADER: &str = "x-tessera-session";

/// Put in the request's extensions when Tessera allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedUser {
    /// The user.
    pub user_id: String,
    /// Their address.
    pub email: String,
    /// Whether the session proved a second factor (or a trusted browser opened it).
    pub second_factor: bool,
    /// The session's stable id.
    pub session_id: String,
    /// Allowed only until then (the account's grace period for members without a factor).
    pub grace_until: Option<SystemTime>,
}

/// The account a request is for, put in its extensions by an earlier layer of the service
/// (from its route, say): checked instead of the layer's own [`RequireSessionLayer::account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountScope(pub String);

/// Wraps services in [`RequireSession`].
#[derive(Debug, Clone)]
pub struct RequireSessionLayer {
    client: Client,
    require: pb::Requirement,
    account: Option<String>,
}

impl RequireSessionLayer {
    /// Require a live session at `require` (`Password` or `SecondFactor`).
    pub fn new(client: Client, require: pb::Requirement) -> Self {
        Self { client, require, account: None }
    }

    /// Also require membership of this account, under its MFA policy.
    #[must_use]
    pub fn account(mut self, account_id: impl Into<String>) -> Self {
        self.account = Some(account_id.into());
        self
    }
}

impl<S> tower::Layer<S> for RequireSessionLayer {
    type Service = RequireSession<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireSession { inner, layer: self.clone() }
    }
}

/// The middleware (see the module documentation).
#[derive(Debug, Clone)]
pub struct RequireSession<S> {
    inner: S,
    layer: RequireSessionLayer,
}

/// The session token of a request: the session cookie, else the session header.
fn session_token(headers: &http::HeaderMap) -> Option<String> {
    let from_cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned());
    from_cookie.or_else(|| headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned()))
}

fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.seconds.max(0).unsigned_abs())
}

impl<S, B, R> tower::Service<http::Request<B>> for RequireSession<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let layer = self.layer.clone();
        let token = session_token(req.headers());
        let account = req.extensions().get::<AccountScope>().map(|a| a.0.clone()).or(layer.account.clone());
        Box::pin(async move {
            use pb::AuthorizeStatus as St;
            let Some(token) = token else {
                return Ok(refuse(http::StatusCode::UNAUTHORIZED, "login_required"));
            };
            let r = match layer.client.authorize(&token, account.as_deref(), layer.require).await {
                Ok(r) => r,
                Err(crate::ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument => {
                    return Ok(refuse(http::StatusCode::BAD_REQUEST, "bad_request"));
                }
                Err(_) => return Ok(refuse(http::StatusCode::SERVICE_UNAVAILABLE, "unavailable")),
            };
            let (status, why) = match St::try_from(r.status) {
                Ok(St::Allow) => {
                    req.extensions_mut().insert(AuthorizedUser {
                        second_factor: r.level == pb::Assurance::PasswordAndSecondFactor as i32,
                        grace_until: r.grace_until.as_ref().map(system_time),
                        user_id: r.user_id,
                        email: r.email,
                        session_id: r.session_id,
                    });
                    return inner.call(req).await;
                }
                Ok(St::LoginRequired) => (http::StatusCode::UNAUTHORIZED, "login_required"),
                Ok(St::SessionRevoked) => (http::StatusCode::UNAUTHORIZED, "session_revoked"),
                Ok(St::SecondFactorRequired) => (http::StatusCode::UNAUTHORIZED, "second_factor_required"),
                Ok(St::EnrolmentRequired) => (http::StatusCode::UNAUTHORIZED, "enrolment_required"),
                Ok(St::NotAMember) => (http::StatusCode::FORBIDDEN, "not_a_member"),
                Ok(St::EmailUnverified) => (http::StatusCode::FORBIDDEN, "email_unverified"),
                _ => (http::StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            };
            Ok(refuse(status, why))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_token_comes_from_the_cookie_then_the_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(super::session_token(&h), None);
        h.insert(super::SESSION_HEADER, http::HeaderValue::from_static("from-header"));
        assert_eq!(super::session_token(&h).as_deref(), Some("from-header"));
        h.insert(http::header::COOKIE, http::HeaderValue::from_static("a=1; __Host-tessera_session=abc; b=2"));
        assert_eq!(super::session_token(&h).as_deref(), Some("abc"));
    }
}
