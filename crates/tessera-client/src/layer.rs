//! The auth-middleware use of Tessera: a `tower` layer for any HTTP service (axum, hyper,
//! tonic) that lets a request through only when Tessera accepts the one-time code it
//! carries for the subject the service has already signed in. The subject that passed is
//! put in the request's extensions as [`VerifiedSubject`].
//!
//! # Whose code
//!
//! The subject is never read from what the client sent: whoever sends a request could name
//! any user, spend that user's attempts with wrong codes and lock them out. It comes from
//! [`AuthenticatedSubject`], which the protected service's own password or session layer,
//! placed before this one, puts in the request's extensions once it has checked who is
//! calling. Without it the request is refused (401, `x-tessera-reason: not signed in`) and
//! Tessera is not asked, so no one's attempts are spent.

use crate::{Client, Verification};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Header carrying the one-time code (the user's own input; the subject never comes from a
/// header: see [`AuthenticatedSubject`]).
pub const CODE_HEADER: &str = "x-tessera-otp";

/// The subject (user id) the protected service has authenticated by its own first factor
/// (a password, a session cookie), for [`RequireTotpLayer`] to check the code against.
///
/// The service's password or session layer, which must run before [`RequireTotpLayer`],
/// inserts it into the request's extensions (`req.extensions_mut().insert(..)`) after it
/// has verified the caller; it must never be built from a value the client sent unverified
/// (a header, a query parameter, a form field), or anyone could spend another user's
/// attempts and lock them out.
///
/// ```
/// use tessera_client::AuthenticatedSubject;
/// // in the service's own password/session middleware, once the session is checked:
/// let mut req = http::Request::new(());
/// let user_id_from_the_session = "user-42".to_owned();
/// req.extensions_mut().insert(AuthenticatedSubject(user_id_from_the_session));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedSubject(pub String);

/// Put in the request's extensions when the code was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSubject(pub String);

/// Wraps services in [`RequireTotp`].
#[derive(Debug, Clone)]
pub struct RequireTotpLayer {
    client: Client,
}

impl RequireTotpLayer {
    /// Check codes with `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<S> tower::Layer<S> for RequireTotpLayer {
    type Service = RequireTotp<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireTotp { inner, client: self.client.clone() }
    }
}

/// The middleware: 401 without an [`AuthenticatedSubject`] (`not signed in`, and Tessera is
/// not asked), without a code or with a wrong one; 429 while the subject is locked; 400 for
/// a malformed code; 503 when Tessera cannot answer. Otherwise the inner service runs, with
/// [`VerifiedSubject`] in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequireTotp<S> {
    inner: S,
    client: Client,
}

/// A refusal: `status`, and why in `x-tessera-reason` (both layers answer this way).
pub(crate) fn refuse<R: Default>(status: http::StatusCode, why: &'static str) -> http::Response<R> {
    let mut r = http::Response::new(R::default());
    *r.status_mut() = status;
    r.headers_mut().insert("x-tessera-reason", http::HeaderValue::from_static(why));
    r
}

impl<S, B, R> tower::Service<http::Request<B>> for RequireTotp<S>
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
        // The ready service is the one we were handed; leave a fresh clone in its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let client = self.client.clone();
        // The subject is what the service's own first-factor layer authenticated, never
        // something the client sent: see `AuthenticatedSubject`.
        let subject = req.extensions().get::<AuthenticatedSubject>().map(|s| s.0.clone());
        let code = req.headers().get(CODE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Box::pin(async move {
            let Some(subject) = subject else {
                return Ok(refuse(http::StatusCode::UNAUTHORIZED, "not signed in"));
            };
            let Some(code) = code else {
                return Ok(refuse(http::StatusCode::UNAUTHORIZED, "second factor required"));
            };
            match client.verify_totp(&subject, &code, None).await {
                Ok(Verification::Accepted { .. }) => {
                    req.extensions_mut().insert(VerifiedSubject(subject));
                    inner.call(req).await
                }
                Ok(Verification::Rejected { .. }) => Ok(refuse(http::StatusCode::UNAUTHORIZED, "code rejected")),
                Ok(Verification::Locked { .. }) => Ok(refuse(http::StatusCode::TOO_MANY_REQUESTS, "locked")),
                Err(crate::ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument => {
                    Ok(refuse(http::StatusCode::BAD_REQUEST, "malformed code or subject"))
                }
                Err(_) => Ok(refuse(http::StatusCode::SERVICE_UNAVAILABLE, "second factor service unavailable")),
            }
        })
    }
}
