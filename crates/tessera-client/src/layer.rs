//! The auth-middleware use of Tessera: a `tower` layer for any HTTP service (axum, hyper,
//! tonic) that lets a request through only when Tessera accepts the one-time code it
//! carries for its subject. The subject that passed is put in the request's extensions as
//! [`VerifiedSubject`].

use crate::{Client, Verification};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Header naming the subject (the user id the caller already authenticated by password).
pub const SUBJECT_HEADER: &str = "x-tessera-subject";
/// Header carrying the one-time code.
pub const CODE_HEADER: &str = "x-tessera-otp";

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

/// The middleware: 401 without headers or with a wrong code, 429 while the subject is
/// locked, 503 when Tessera cannot answer; otherwise the inner service runs.
#[derive(Debug, Clone)]
pub struct RequireTotp<S> {
    inner: S,
    client: Client,
}

fn refuse<R: Default>(status: http::StatusCode, why: &'static str) -> http::Response<R> {
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
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (subject, code) = (header(SUBJECT_HEADER), header(CODE_HEADER));
        Box::pin(async move {
            let (Some(subject), Some(code)) = (subject, code) else {
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
