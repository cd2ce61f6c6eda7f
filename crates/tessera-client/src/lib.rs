//! A typed async client for `tessera.v1.FactorService`: the service token is injected into
//! every call, every call has a deadline, and only idempotent calls (`ListFactors`,
//! `ListAuditEvents`) are retried, on `UNAVAILABLE`, with backoff.
//!
//! [`RequireSessionLayer`] is the auth middleware of a service behind Tessera's sign-in: every
//! request's session is decided by `IdentityService/Authorize` (level, account, MFA policy,
//! grace period), and the user it names is put in the request's extensions.
//!
//! [`RequireTotpLayer`] is the older "auth middleware" use: a `tower` layer that lets a request
//! through only when Tessera accepts the one-time code it carries (`x-tessera-otp`) for the
//! subject the service's own password or session layer authenticated and put in the
//! request's extensions as [`AuthenticatedSubject`] (never a subject named by the client).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera_client::ClientError> {
//! let client = tessera_client::Client::connect("http://127.0.0.1:50051", "tsk_…", Default::default()).await?;
//! match client.verify_totp("user-42", "123456", None).await? {
//!     tessera_client::Verification::Accepted { .. } => { /* let them in */ }
//!     tessera_client::Verification::Rejected { attempts_remaining } => { let _ = attempts_remaining; }
//!     tessera_client::Verification::Locked { until } => { let _ = until; }
//! }
//! # Ok(()) }
//! ```

mod layer;
mod session_layer;

pub use layer::{AuthenticatedSubject, CODE_HEADER, RequireTotp, RequireTotpLayer, VerifiedSubject};
pub use session_layer::{
    AccountScope, AuthorizedUser, RequireSession, RequireSessionLayer, SESSION_COOKIE, SESSION_HEADER,
};
pub use tessera_proto::v1 as pb;

use std::time::{Duration, SystemTime};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of each call.
    pub timeout: Duration,
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// Extra attempts for idempotent calls that fail with `UNAVAILABLE`.
    pub retries: u32,
    /// TLS for an `https://` endpoint (rustls): the CA that signed the server's certificate,
    /// and this client's certificate when the server requires one (mTLS).
    pub tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(5), retries: 2, tls: None }
    }
}

/// TLS settings of a client, as PEM.
#[derive(Clone)]
pub struct ClientTls {
    /// The CA certificate(s) to trust for the server.
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain and private key, for servers that require mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server's certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Why a call failed (wrong codes are not failures: see [`Verification`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad endpoint or token.
    #[error("client configuration: {0}")]
    Config(String),
    /// Could not connect.
    #[error("cannot connect to Tessera: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The server answered with an error status.
    #[error("Tessera refused: {}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

/// The answer to a code check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Good code, now used up.
    Accepted {
        /// The device that matched (empty for a recovery code).
        factor_id: String,
    },
    /// Wrong (or replayed) code.
    Rejected {
        /// Attempts left before a lock.
        attempts_remaining: u32,
    },
    /// Too many failures.
    Locked {
        /// End of the lock.
        until: SystemTime,
    },
}

impl Verification {
    fn from_pb(r: &pb::VerifyResponse) -> Result<Self, Status> {
        match pb::Outcome::try_from(r.outcome) {
            Ok(pb::Outcome::Accepted) => Ok(Self::Accepted { factor_id: r.factor_id.clone() }),
            Ok(pb::Outcome::Rejected) => Ok(Self::Rejected { attempts_remaining: r.attempts_remaining }),
            Ok(pb::Outcome::Locked) => {
                let secs = r.locked_until.as_ref().map_or(0, |t| t.seconds.max(0));
                Ok(Self::Locked { until: SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) })
            }
            _ => Err(Status::internal("server sent an unknown outcome")),
        }
    }
    /// Whether the code was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([REDACTED])")
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Inner = pb::factor_service_client::FactorServiceClient<InterceptedService<Channel, Bearer>>;

/// The generated IdentityService client with the token injected.
pub type IdentityClient = pb::identity_service_client::IdentityServiceClient<InterceptedService<Channel, Bearer>>;

/// The client. Cheap to clone (one HTTP/2 connection, multiplexed).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Inner,
    identity: IdentityClient,
    opts: ClientOptions,
}

fn ctx(c: Option<(&str, &str)>) -> Option<pb::ClientContext> {
    c.map(|(ip, ua)| pb::ClientContext { ip: ip.to_owned(), user_agent: ua.to_owned(), ..Default::default() })
}

impl Client {
    /// Connect to `endpoint` (e.g. `http://127.0.0.1:50051`) with a service token.
    pub async fn connect(endpoint: &str, token: &str, opts: ClientOptions) -> Result<Self, ClientError> {
        let header: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Config("the token must be printable ASCII".into()))?;
        let mut ep = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| ClientError::Config(e.to_string()))?
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &opts.tls {
            let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &tls.domain {
                cfg = cfg.domain_name(d.clone());
            }
            ep = ep.tls_config(cfg)?;
        }
        let channel = ep.connect().await?;
        Ok(Self::from_channel(channel, header, opts))
    }

    fn from_channel(channel: Channel, header: MetadataValue<Ascii>, opts: ClientOptions) -> Self {
        Self {
            inner: pb::factor_service_client::FactorServiceClient::with_interceptor(
                channel.clone(),
                Bearer(header.clone()),
            ),
            identity: pb::identity_service_client::IdentityServiceClient::with_interceptor(channel, Bearer(header)),
            opts,
        }
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> Inner {
        self.inner.clone()
    }

    /// The IdentityService (sign-up, login, sessions, accounts), on the same connection.
    pub fn identity(&self) -> IdentityClient {
        self.identity.clone()
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.opts.timeout);
        r
    }

    /// Retry an idempotent call on UNAVAILABLE.
    async fn idempotent<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Inner) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            match f(self.inner.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable && attempt < self.opts.retries => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// The whole access decision for a request (`IdentityService/Authorize`): may the holder of
    /// `session_token` enter (as a member of `account_id`) at level `require`, now? A "no" is
    /// the response's status, not an error. Retried on UNAVAILABLE (it changes nothing).
    pub async fn authorize(
        &self,
        session_token: &str,
        account_id: Option<&str>,
        require: pb::Requirement,
    ) -> Result<pb::AuthorizeResponse, ClientError> {
        let m = pb::AuthorizeRequest {
            session_token: session_token.to_owned(),
            account_id: account_id.unwrap_or_default().to_owned(),
            require: require as i32,
        };
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            match self.identity.clone().authorize(self.req(m.clone())).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable && attempt < self.opts.retries => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Enrol a TOTP device (pending until confirmed).
    pub async fn enroll_totp(&self, req: pb::EnrollTotpRequest) -> Result<pb::EnrollTotpResponse, ClientError> {
        Ok(self.inner.clone().enroll_totp(self.req(req)).await?.into_inner())
    }

    /// Confirm a pending device with its first code; returns recovery codes for a first factor.
    pub async fn confirm_totp(
        &self,
        subject_id: &str,
        factor_id: &str,
        code: &str,
    ) -> Result<pb::ConfirmTotpResponse, ClientError> {
        let m = pb::ConfirmTotpRequest {
            subject_id: subject_id.into(),
            factor_id: factor_id.into(),
            code: code.into(),
            context: None,
        };
        Ok(self.inner.clone().confirm_totp(self.req(m)).await?.into_inner())
    }

    /// Check a TOTP code. `context` is the end user's (ip, user agent), for the audit trail.
    pub async fn verify_totp(
        &self,
        subject_id: &str,
        code: &str,
        context: Option<(&str, &str)>,
    ) -> Result<Verification, ClientError> {
        let m = pb::VerifyTotpRequest { subject_id: subject_id.into(), code: code.into(), context: ctx(context) };
        let r = self.inner.clone().verify_totp(self.req(m)).await?.into_inner();
        Ok(Verification::from_pb(&r)?)
    }

    /// Redeem a recovery code; also returns the codes left.
    pub async fn redeem_recovery_code(
        &self,
        subject_id: &str,
        code: &str,
        context: Option<(&str, &str)>,
    ) -> Result<(Verification, u32), ClientError> {
        let m =
            pb::RedeemRecoveryCodeRequest { subject_id: subject_id.into(), code: code.into(), context: ctx(context) };
        let r = self.inner.clone().redeem_recovery_code(self.req(m)).await?.into_inner();
        Ok((Verification::from_pb(&r)?, r.recovery_codes_remaining))
    }

    /// Replace the subject's recovery codes.
    pub async fn regenerate_recovery_codes(&self, subject_id: &str) -> Result<Vec<String>, ClientError> {
        let m = pb::RegenerateRecoveryCodesRequest { subject_id: subject_id.into(), context: None };
        Ok(self.inner.clone().regenerate_recovery_codes(self.req(m)).await?.into_inner().codes)
    }

    /// The subject's factors (retried on UNAVAILABLE).
    pub async fn list_factors(&self, subject_id: &str) -> Result<Vec<pb::Factor>, ClientError> {
        let m = pb::ListFactorsRequest { subject_id: subject_id.into() };
        Ok(self
            .idempotent(|mut c| {
                let r = self.req(m.clone());
                async move { c.list_factors(r).await }
            })
            .await?
            .factors)
    }

    /// Remove a factor.
    pub async fn remove_factor(&self, subject_id: &str, factor_id: &str) -> Result<(), ClientError> {
        let m = pb::RemoveFactorRequest { subject_id: subject_id.into(), factor_id: factor_id.into(), context: None };
        self.inner.clone().remove_factor(self.req(m)).await?;
        Ok(())
    }

    /// One page of the subject's audit trail (retried on UNAVAILABLE).
    pub async fn list_audit_events(
        &self,
        subject_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListAuditEventsResponse, ClientError> {
        let m = pb::ListAuditEventsRequest { subject_id: subject_id.into(), page_size, page_token: page_token.into() };
        self.idempotent(|mut c| {
            let r = self.req(m.clone());
            async move { c.list_audit_events(r).await }
        })
        .await
    }
}
