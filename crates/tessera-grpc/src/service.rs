//! `FactorService` handlers.

use crate::{convert, edge};
use tessera_app::{App, AppError, ConfirmOutcome, EnrollRequest, KeyOutcome, KeyRefusal};
use tessera_core::factor::FactorKind;
use tessera_proto::v1 as pb;
use tessera_proto::v1::factor_service_server::FactorService;
use tonic::{Request, Response, Status};

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
/// caller a generic message carrying the call's request id (also in the response's
/// `x-request-id`), and are logged under the call's span, which carries the same id.
pub fn status(e: AppError) -> Status {
    match e {
        AppError::Invalid(e) => Status::invalid_argument(e.to_string()),
        AppError::NotFound(what) => Status::not_found(format!("{what} not found for this subject")),
        AppError::FailedPrecondition(m) => Status::failed_precondition(m),
        AppError::Forbidden(m) => Status::permission_denied(m),
        e @ AppError::ReauthRequired(_) => {
            Status::permission_denied(format!("{e} (IdentityService/Reauthenticate, then retry with the new token)"))
        }
        AppError::Keys(e) => {
            tracing::error!(error = %e, "keyring or sealed-secret failure");
            Status::internal(format!("internal error (request id {})", edge::current_request_id()))
        }
        AppError::Store(e) => {
            tracing::error!(error = %e, "database failure");
            Status::unavailable(format!("storage unavailable (request id {})", edge::current_request_id()))
        }
    }
}

#[tonic::async_trait]
impl FactorService for FactorSvc {
    async fn enroll_totp(
        &self,
        req: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let r = req.into_inner();
        let er = EnrollRequest {
            subject_id: r.subject_id,
            label: r.label,
            account_name: r.account_name,
            algorithm: convert::algorithm(r.algorithm)?,
            digits: r.digits,
            period: r.period,
            omit_qr: r.omit_qr,
        };
        let e = self.app.enroll_totp(&er, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::EnrollTotpResponse {
            factor_id: e.factor_id.clone(),
            otpauth_uri: e.otpauth_uri.to_string(),
            secret_base32: e.secret_base32.to_string(),
            qr_png: e.qr_png.clone(),
            qr_svg: e.qr_svg.clone(),
        }))
    }

    async fn confirm_totp(
        &self,
        req: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let r = req.into_inner();
        let fid = convert::factor_id(&r.factor_id)?;
        let out =
            self.app.confirm_totp(&r.subject_id, &fid, &r.code, &convert::ctx(r.context)).await.map_err(status)?;
        match out {
            ConfirmOutcome::Confirmed { factor, recovery_codes, .. } => Ok(Response::new(pb::ConfirmTotpResponse {
                factor: Some(convert::factor(*factor)),
                recovery_codes: recovery_codes.iter().map(|c| c.to_string()).collect(),
            })),
            ConfirmOutcome::Rejected { attempts_remaining } => Err(Status::permission_denied(format!(
                "the code did not match; {attempts_remaining} attempts remain before a lock"
            ))),
            ConfirmOutcome::Locked { until } => Err(Status::permission_denied(format!(
                "too many failed attempts; locked until {} (Unix time)",
                until.unix_timestamp()
            ))),
        }
    }

    async fn verify_totp(&self, req: Request<pb::VerifyTotpRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = req.into_inner();
        let o = self.app.verify_totp(&r.subject_id, &r.code, &convert::ctx(r.context)).await.map_err(status)?;
        metrics::counter!("tessera_verifications_total", "kind" => "totp", "outcome" => convert::outcome_label(&o))
            .increment(1);
        Ok(Response::new(convert::verify_response(o, 0)))
    }

    async fn redeem_recovery_code(
        &self,
        req: Request<pb::RedeemRecoveryCodeRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = req.into_inner();
        let (o, left) =
            self.app.redeem_recovery_code(&r.subject_id, &r.code, &convert::ctx(r.context)).await.map_err(status)?;
        metrics::counter!("tessera_verifications_total", "kind" => "recovery", "outcome" => convert::outcome_label(&o))
            .increment(1);
        Ok(Response::new(convert::verify_response(o, left)))
    }

    async fn regenerate_recovery_codes(
        &self,
        req: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<pb::RegenerateRecoveryCodesResponse>, Status> {
        let r = req.into_inner();
        let codes =
            self.app.regenerate_recovery_codes(&r.subject_id, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::RegenerateRecoveryCodesResponse { codes: codes.iter().map(|c| c.to_string()).collect() }))
    }

    async fn list_factors(
        &self,
        req: Request<pb::ListFactorsRequest>,
    ) -> Result<Response<pb::ListFactorsResponse>, Status> {
        let r = req.into_inner();
        let f = self.app.list_factors(&r.subject_id).await.map_err(status)?;
        Ok(Response::new(pb::ListFactorsResponse { factors: f.into_iter().map(convert::factor).collect() }))
    }

    async fn remove_factor(
        &self,
        req: Request<pb::RemoveFactorRequest>,
    ) -> Result<Response<pb::RemoveFactorResponse>, Status> {
        let r = req.into_inner();
        let fid = convert::factor_id(&r.factor_id)?;
        self.app.remove_factor(&r.subject_id, &fid, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::RemoveFactorResponse {}))
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let r = req.into_inner();
        let (events, next) =
            self.app.list_audit_events(&r.subject_id, r.page_size, &r.page_token).await.map_err(status)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
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
        }))
    }

    async fn begin_webauthn_registration(
        &self,
        req: Request<pb::BeginWebauthnRegistrationRequest>,
    ) -> Result<Response<pb::BeginWebauthnRegistrationResponse>, Status> {
        let r = req.into_inner();
        let kind = match pb::WebauthnKind::try_from(r.kind) {
            Ok(pb::WebauthnKind::SecurityKey) => FactorKind::SecurityKey,
            Ok(pb::WebauthnKind::Passkey) => FactorKind::Passkey,
            _ => return Err(Status::invalid_argument("kind: WEBAUTHN_KIND_SECURITY_KEY or WEBAUTHN_KIND_PASSKEY")),
        };
        let c =
            self.app.begin_webauthn_registration(&r.subject_id, &r.label, kind, &r.user_name).await.map_err(status)?;
        Ok(Response::new(pb::BeginWebauthnRegistrationResponse { ceremony_id: c.id, options_json: c.options }))
    }

    async fn finish_webauthn_registration(
        &self,
        req: Request<pb::FinishWebauthnRegistrationRequest>,
    ) -> Result<Response<pb::FinishWebauthnRegistrationResponse>, Status> {
        let r = req.into_inner();
        let out = self
            .app
            .finish_webauthn_registration(&r.subject_id, &r.ceremony_id, &r.response_json, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        match out {
            ConfirmOutcome::Confirmed { factor, recovery_codes, .. } => {
                Ok(Response::new(pb::FinishWebauthnRegistrationResponse {
                    factor: Some(convert::factor(*factor)),
                    recovery_codes: recovery_codes.iter().map(|c| c.to_string()).collect(),
                }))
            }
            // (A registration never counts as a failed attempt.)
            _ => Err(Status::internal("unexpected registration outcome")),
        }
    }

    async fn begin_webauthn_assertion(
        &self,
        req: Request<pb::BeginWebauthnAssertionRequest>,
    ) -> Result<Response<pb::BeginWebauthnAssertionResponse>, Status> {
        let r = req.into_inner();
        let c = self.app.begin_webauthn_assertion(&r.subject_id).await.map_err(status)?;
        Ok(Response::new(pb::BeginWebauthnAssertionResponse { ceremony_id: c.id, options_json: c.options }))
    }

    async fn finish_webauthn_assertion(
        &self,
        req: Request<pb::FinishWebauthnAssertionRequest>,
    ) -> Result<Response<pb::FinishWebauthnAssertionResponse>, Status> {
        let r = req.into_inner();
        let o = self
            .app
            .finish_webauthn_assertion(&r.subject_id, &r.ceremony_id, &r.response_json, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        Ok(Response::new(match o {
            KeyOutcome::Accepted { factor_id } => pb::FinishWebauthnAssertionResponse {
                outcome: pb::Outcome::Accepted as i32,
                factor_id,
                refusal: pb::WebauthnRefusal::Unspecified as i32,
            },
            KeyOutcome::Refused(why) => pb::FinishWebauthnAssertionResponse {
                outcome: pb::Outcome::Rejected as i32,
                factor_id: String::new(),
                refusal: match why {
                    KeyRefusal::CeremonyInvalid => pb::WebauthnRefusal::CeremonyInvalid,
                    KeyRefusal::UnknownCredential => pb::WebauthnRefusal::UnknownCredential,
                    KeyRefusal::NotVerified => pb::WebauthnRefusal::NotVerified,
                    KeyRefusal::PossibleClone => pb::WebauthnRefusal::PossibleClone,
                } as i32,
            },
        }))
    }
}
