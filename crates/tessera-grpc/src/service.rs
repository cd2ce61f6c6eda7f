//! `FactorService` handlers.

use crate::convert;
use std::future::Future;
use std::time::Instant;
use tessera_app::{App, AppError, ConfirmOutcome, EnrollRequest};
use tessera_proto::v1 as pb;
use tessera_proto::v1::factor_service_server::FactorService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The service over the app's use cases.
#[derive(Debug, Clone)]
pub struct FactorSvc {
    app: App,
}

impl FactorSvc {
    /// Serve `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

/// Map a use-case error to a status, once for the whole service. Internal errors give the
/// caller a generic message carrying the request id, and are logged with it.
pub fn status(e: AppError, request_id: &str) -> Status {
    match e {
        AppError::Invalid(e) => Status::invalid_argument(e.to_string()),
        AppError::NotFound(what) => Status::not_found(format!("{what} not found for this subject")),
        AppError::FailedPrecondition(m) => Status::failed_precondition(m),
        AppError::Forbidden(m) => Status::permission_denied(m),
        e @ AppError::ReauthRequired(_) => {
            Status::permission_denied(format!("{e} (IdentityService/Reauthenticate, then retry with the new token)"))
        }
        AppError::Keys(e) => {
            tracing::error!(request_id, error = %e, "keyring or sealed-secret failure");
            Status::internal(format!("internal error (request id {request_id})"))
        }
        AppError::Store(e) => {
            tracing::error!(request_id, error = %e, "database failure");
            Status::unavailable(format!("storage unavailable (request id {request_id})"))
        }
    }
}

pub(crate) fn request_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Run one handler body: a span with the request id, a latency histogram, error mapping,
/// and the request id echoed in the response metadata.
pub(crate) async fn call<T, F>(method: &'static str, rid: String, body: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    let started = Instant::now();
    let span = tracing::info_span!("rpc", method, request_id = %rid);
    let result = body.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    metrics::histogram!("tessera_grpc_request_seconds", "method" => method).record(started.elapsed().as_secs_f64());
    metrics::counter!("tessera_grpc_requests_total", "method" => method, "code" => format!("{code:?}")).increment(1);
    span.in_scope(|| tracing::debug!(?code, elapsed_us = started.elapsed().as_micros() as u64, "done"));
    let mut resp = Response::new(result?);
    if let Ok(v) = rid.parse() {
        resp.metadata_mut().insert("x-request-id", v);
    }
    Ok(resp)
}

#[tonic::async_trait]
impl FactorService for FactorSvc {
    async fn enroll_totp(
        &self,
        req: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("EnrollTotp", rid.clone(), async {
            let er = EnrollRequest {
                subject_id: r.subject_id,
                label: r.label,
                account_name: r.account_name,
                algorithm: convert::algorithm(r.algorithm)?,
                digits: r.digits,
                period: r.period,
            };
            let e = self.app.enroll_totp(&er, &convert::ctx(r.context)).await.map_err(|e| status(e, &rid))?;
            Ok(pb::EnrollTotpResponse {
                factor_id: e.factor_id.clone(),
                otpauth_uri: e.otpauth_uri.to_string(),
                secret_base32: e.secret_base32.to_string(),
                qr_png: e.qr_png.clone(),
                qr_svg: e.qr_svg.clone(),
            })
        })
        .await
    }

    async fn confirm_totp(
        &self,
        req: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("ConfirmTotp", rid.clone(), async {
            let fid = convert::factor_id(&r.factor_id)?;
            let out = self
                .app
                .confirm_totp(&r.subject_id, &fid, &r.code, &convert::ctx(r.context))
                .await
                .map_err(|e| status(e, &rid))?;
            match out {
                ConfirmOutcome::Confirmed { factor, recovery_codes, .. } => Ok(pb::ConfirmTotpResponse {
                    factor: Some(convert::factor(*factor)),
                    recovery_codes: recovery_codes.iter().map(|c| c.to_string()).collect(),
                }),
                ConfirmOutcome::Rejected { attempts_remaining } => Err(Status::permission_denied(format!(
                    "the code did not match; {attempts_remaining} attempts remain before a lock"
                ))),
                ConfirmOutcome::Locked { until } => Err(Status::permission_denied(format!(
                    "too many failed attempts; locked until {} (Unix time)",
                    until.unix_timestamp()
                ))),
            }
        })
        .await
    }

    async fn verify_totp(&self, req: Request<pb::VerifyTotpRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("VerifyTotp", rid.clone(), async {
            let o = self
                .app
                .verify_totp(&r.subject_id, &r.code, &convert::ctx(r.context))
                .await
                .map_err(|e| status(e, &rid))?;
            metrics::counter!("tessera_verifications_total", "kind" => "totp", "outcome" => convert::outcome_label(&o))
                .increment(1);
            Ok(convert::verify_response(o, 0))
        })
        .await
    }

    async fn redeem_recovery_code(
        &self,
        req: Request<pb::RedeemRecoveryCodeRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("RedeemRecoveryCode", rid.clone(), async {
            let (o, left) = self
                .app
                .redeem_recovery_code(&r.subject_id, &r.code, &convert::ctx(r.context))
                .await
                .map_err(|e| status(e, &rid))?;
            metrics::counter!("tessera_verifications_total", "kind" => "recovery", "outcome" => convert::outcome_label(&o))
                .increment(1);
            Ok(convert::verify_response(o, left))
        })
        .await
    }

    async fn regenerate_recovery_codes(
        &self,
        req: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<pb::RegenerateRecoveryCodesResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("RegenerateRecoveryCodes", rid.clone(), async {
            let codes = self
                .app
                .regenerate_recovery_codes(&r.subject_id, &convert::ctx(r.context))
                .await
                .map_err(|e| status(e, &rid))?;
            Ok(pb::RegenerateRecoveryCodesResponse { codes: codes.iter().map(|c| c.to_string()).collect() })
        })
        .await
    }

    async fn list_factors(
        &self,
        req: Request<pb::ListFactorsRequest>,
    ) -> Result<Response<pb::ListFactorsResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("ListFactors", rid.clone(), async {
            let f = self.app.list_factors(&r.subject_id).await.map_err(|e| status(e, &rid))?;
            Ok(pb::ListFactorsResponse { factors: f.into_iter().map(convert::factor).collect() })
        })
        .await
    }

    async fn remove_factor(
        &self,
        req: Request<pb::RemoveFactorRequest>,
    ) -> Result<Response<pb::RemoveFactorResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("RemoveFactor", rid.clone(), async {
            let fid = convert::factor_id(&r.factor_id)?;
            self.app.remove_factor(&r.subject_id, &fid, &convert::ctx(r.context)).await.map_err(|e| status(e, &rid))?;
            Ok(pb::RemoveFactorResponse {})
        })
        .await
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let rid = request_id(&req);
        let r = req.into_inner();
        call("ListAuditEvents", rid.clone(), async {
            let (events, next) = self
                .app
                .list_audit_events(&r.subject_id, r.page_size, &r.page_token)
                .await
                .map_err(|e| status(e, &rid))?;
            Ok(pb::ListAuditEventsResponse {
                events: events
                    .into_iter()
                    .map(|e| pb::AuditEvent {
                        at: Some(convert::ts(e.at())),
                        id: e.id,
                        subject_id: e.subject_id,
                        factor_id: e.factor_id.unwrap_or_default(),
                        actor: e.actor.unwrap_or_default(),
                        kind: e.kind,
                        ip: e.ip.unwrap_or_default(),
                        user_agent: e.user_agent.unwrap_or_default(),
                        detail_json: e.detail,
                    })
                    .collect(),
                next_page_token: next,
            })
        })
        .await
    }
}
