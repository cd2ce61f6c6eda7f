//! `IdentityService` handlers: sign-up, the two-step login, sessions, accounts and their MFA
//! policy, and the support reset (support-scoped tokens only).

use crate::auth::Scope;
use crate::convert;
use crate::service::status;
use tessera_app::{App, LoginOutcome, PasswordChangeOutcome, Proof, Session, VerifyOutcome};
use tessera_core::policy::{AccountAccess, Assurance};
use tessera_core::roles::Role;
use tessera_proto::v1 as pb;
use tessera_proto::v1::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

/// The service over the app's identity use cases.
#[derive(Debug, Clone)]
pub struct IdentitySvc {
    app: App,
}

impl IdentitySvc {
    /// Serve `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

fn assurance(a: Assurance) -> i32 {
    match a {
        Assurance::Password => pb::Assurance::Password as i32,
        Assurance::PasswordAndSecondFactor => pb::Assurance::PasswordAndSecondFactor as i32,
    }
}

fn login_response(o: LoginOutcome) -> pb::LoginResponse {
    let mut r = pb::LoginResponse::default();
    match o {
        LoginOutcome::Authenticated { token, user_id, assurance: a, enrolment_required, grace, browser_token } => {
            r.status = pb::LoginStatus::Authenticated as i32;
            r.session_token = token.to_string();
            r.browser_token = browser_token.map(|t| t.to_string()).unwrap_or_default();
            r.user_id = user_id;
            r.assurance = assurance(a);
            r.enrolment_required_account_ids = enrolment_required;
            r.grace = grace
                .into_iter()
                .map(|(account_id, until)| pb::GraceAccount { account_id, until: Some(convert::ts(until)) })
                .collect();
        }
        LoginOutcome::SecondFactorRequired { challenge } => {
            r.status = pb::LoginStatus::SecondFactorRequired as i32;
            r.challenge = challenge.to_string();
        }
        LoginOutcome::Failed => r.status = pb::LoginStatus::Failed as i32,
        LoginOutcome::Rejected { attempts_remaining } => {
            r.status = pb::LoginStatus::Rejected as i32;
            r.attempts_remaining = attempts_remaining;
        }
        LoginOutcome::Locked { until } => {
            r.status = pb::LoginStatus::Locked as i32;
            r.locked_until = Some(convert::ts(until));
        }
        LoginOutcome::ChallengeInvalid => r.status = pb::LoginStatus::ChallengeInvalid as i32,
        LoginOutcome::Suspended => r.status = pb::LoginStatus::Suspended as i32,
        LoginOutcome::TotpDisabled => r.status = pb::LoginStatus::TotpDisabled as i32,
        LoginOutcome::KeyRefused(_) => r.status = pb::LoginStatus::KeyRefused as i32,
    }
    r
}

/// Password checks need the end user's address: failures lock per (email, address).
fn require_ip(c: &Option<pb::ClientContext>) -> Result<(), Status> {
    match c {
        Some(c) if c.ip.trim().parse::<std::net::IpAddr>().is_ok() => Ok(()),
        _ => Err(Status::invalid_argument(
            "context.ip: the end user's IP address is required for a password check (failures are counted per email and address)",
        )),
    }
}

fn role(s: &str) -> Result<Role, Status> {
    Role::parse(s).ok_or_else(|| Status::invalid_argument("role: must be owner, admin or member"))
}

fn invitation(i: tessera_app::InvitationRow) -> pb::Invitation {
    pb::Invitation {
        id: i.id,
        account_id: i.account_id,
        account_name: i.account_name,
        email: i.email,
        role: i.role.as_str().to_owned(),
        expires_at: Some(convert::ts(i.expires_at)),
    }
}

impl IdentitySvc {
    /// The live session of a request's `session_token` (UNAUTHENTICATED otherwise).
    async fn session(&self, token: &str) -> Result<Session, Status> {
        if token.is_empty() {
            return Err(Status::invalid_argument("session_token: required"));
        }
        self.app
            .session(token)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::unauthenticated("session_token: unknown, expired or revoked session"))
    }
}

fn from_ts(t: Option<prost_types::Timestamp>, field: &str) -> Result<Option<time::OffsetDateTime>, Status> {
    t.map(|t| {
        time::OffsetDateTime::from_unix_timestamp(t.seconds)
            .map_err(|_| Status::invalid_argument(format!("{field}: timestamp out of range")))
    })
    .transpose()
}

#[tonic::async_trait]
impl IdentityService for IdentitySvc {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let r = req.into_inner();
        let user_id = self
            .app
            .register(&r.email, &r.password, r.email_verified, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateUserResponse { user_id }))
    }

    async fn begin_login(&self, req: Request<pb::BeginLoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let r = req.into_inner();
        require_ip(&r.context)?;
        let o = self.app.begin_login(&r.email, &r.password, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(login_response(o)))
    }

    async fn complete_login_totp(
        &self,
        req: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = req.into_inner();
        let o = self.app.complete_login_totp(&r.challenge, &r.code, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(login_response(o)))
    }

    async fn complete_login_recovery(
        &self,
        req: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = req.into_inner();
        let o =
            self.app.complete_login_recovery(&r.challenge, &r.code, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(login_response(o)))
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        let recently_authenticated = match self.app.require_recent(&s).await {
            Ok(()) => true,
            Err(tessera_app::AppError::ReauthRequired(_)) => false,
            Err(e) => return Err(status(e)),
        };
        let mut resp = pb::GetSessionResponse {
            user_id: s.user_id().to_owned(),
            assurance: assurance(s.assurance()),
            session_id: s.id().to_owned(),
            password_verified_at: s.password_verified_at().map(convert::ts),
            second_factor_verified_at: s.second_factor_verified_at().map(convert::ts),
            expires_at: Some(convert::ts(s.expires_at())),
            idle_expires_at: Some(convert::ts(self.app.session_ends_at(&s))),
            recently_authenticated,
            ..Default::default()
        };
        if !r.account_id.is_empty() {
            let (_, access) = self.app.account_for(&s, &r.account_id).await.map_err(status)?;
            resp.account_access = match access {
                AccountAccess::Open => pb::AccountAccess::Open,
                AccountAccess::OpenUntil(until) => {
                    resp.grace_until = Some(convert::ts(until));
                    pb::AccountAccess::OpenUntilGraceDeadline
                }
                AccountAccess::EnrolmentRequired => pb::AccountAccess::EnrolmentRequired,
                AccountAccess::SecondFactorRequired => pb::AccountAccess::SecondFactorRequired,
            } as i32;
        }
        Ok(Response::new(resp))
    }

    async fn authorize(&self, req: Request<pb::AuthorizeRequest>) -> Result<Response<pb::AuthorizeResponse>, Status> {
        use tessera_app::{Credential, Decision, Required};
        let r = req.into_inner();
        let require = match pb::Requirement::try_from(r.require) {
            Ok(pb::Requirement::Password) => Required::Password,
            Ok(pb::Requirement::SecondFactor) => Required::SecondFactor,
            _ => {
                return Err(Status::invalid_argument(
                    "require: say what the session must have proven (PASSWORD or SECOND_FACTOR)",
                ));
            }
        };
        let account = Some(r.account_id.as_str()).filter(|a| !a.is_empty());
        let a = self.app.authorize(Credential::Session(&r.session_token), account, require).await.map_err(status)?;
        let mut resp = pb::AuthorizeResponse {
            status: match a.decision {
                Decision::Allow => pb::AuthorizeStatus::Allow,
                Decision::LoginRequired => pb::AuthorizeStatus::LoginRequired,
                Decision::SessionRevoked => pb::AuthorizeStatus::SessionRevoked,
                Decision::EmailUnverified => pb::AuthorizeStatus::EmailUnverified,
                Decision::NotAMember => pb::AuthorizeStatus::NotAMember,
                Decision::SecondFactorRequired => pb::AuthorizeStatus::SecondFactorRequired,
                Decision::EnrolmentRequired => pb::AuthorizeStatus::EnrolmentRequired,
            } as i32,
            grace_until: a.grace_until.map(convert::ts),
            ..Default::default()
        };
        if let Some(p) = a.principal {
            resp.user_id = p.user_id;
            resp.email = p.email;
            resp.level = assurance(p.level);
            resp.session_id = p.session_id;
            resp.session_created_at = Some(convert::ts(p.session_created_at));
            resp.second_factor_verified_at = p.second_factor_verified_at.map(convert::ts);
        }
        Ok(Response::new(resp))
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let r = req.into_inner();
        let revoked = self.app.logout(&r.session_token, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::LogoutResponse { sessions_revoked: u64::from(revoked) }))
    }

    async fn logout_everywhere(
        &self,
        req: Request<pb::LogoutEverywhereRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let r = req.into_inner();
        let n = self.app.logout_everywhere(&r.user_id, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::LogoutResponse { sessions_revoked: n }))
    }

    async fn create_account(
        &self,
        req: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        let account_id = self.app.create_account(&s, &r.name, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::CreateAccountResponse { account_id }))
    }

    async fn set_account_policy(
        &self,
        req: Request<pb::SetAccountPolicyRequest>,
    ) -> Result<Response<pb::SetAccountPolicyResponse>, Status> {
        let r = req.into_inner();
        let grace = from_ts(r.grace_until, "grace_until")?;
        if r.max_trust_days.is_some_and(|d| d > 30) {
            // (Checked before anything is written: the request changes all or nothing.)
            return Err(Status::invalid_argument("max_trust_days: must be 0 to 30 days"));
        }
        let s = self.session(&r.session_token).await?;
        let ctx = convert::ctx(r.context);
        self.app.set_account_policy(&s, &r.account_id, r.require_mfa, grace, &ctx).await.map_err(status)?;
        if let Some(days) = r.max_trust_days {
            self.app.set_account_trust_cap(&s, &r.account_id, Some(days), &ctx).await.map_err(status)?;
        }
        Ok(Response::new(pb::SetAccountPolicyResponse {}))
    }

    async fn reauthenticate(
        &self,
        req: Request<pb::ReauthenticateRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        let proof = match &r.proof {
            Some(pb::reauthenticate_request::Proof::TotpCode(c)) => Proof::Totp(c),
            Some(pb::reauthenticate_request::Proof::RecoveryCode(c)) => Proof::RecoveryCode(c),
            Some(pb::reauthenticate_request::Proof::Password(p)) => {
                require_ip(&r.context)?;
                Proof::Password(p)
            }
            None => return Err(Status::invalid_argument("proof: give totp_code, recovery_code or password")),
        };
        let o = self.app.reauthenticate(&s, proof, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(login_response(o)))
    }

    async fn add_member(&self, _req: Request<pb::AddMemberRequest>) -> Result<Response<pb::AddMemberResponse>, Status> {
        Err(Status::unimplemented(
            "AddMember was removed: invite the person with InviteMember; they join by accepting (AcceptInvitation)",
        ))
    }

    async fn invite_member(
        &self,
        req: Request<pb::InviteMemberRequest>,
    ) -> Result<Response<pb::InviteMemberResponse>, Status> {
        let r = req.into_inner();
        let role = role(&r.role)?;
        let s = self.session(&r.session_token).await?;
        let invitation_id = self
            .app
            .invite_member(&s, &r.account_id, &r.email, role, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::InviteMemberResponse { invitation_id }))
    }

    async fn list_invitations(
        &self,
        req: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        let list = self.app.my_invitations(&s).await.map_err(status)?;
        Ok(Response::new(pb::ListInvitationsResponse { invitations: list.into_iter().map(invitation).collect() }))
    }

    async fn accept_invitation(
        &self,
        req: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        let account_id = self
            .app
            .accept_invitation(&s, &r.invitation_id, &r.code, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AcceptInvitationResponse { account_id }))
    }

    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        let members = self.app.members(&s, &r.account_id).await.map_err(status)?;
        let invitations = self.app.account_invitations(&s, &r.account_id).await.map_err(status)?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members
                .into_iter()
                .map(|m| pb::Member {
                    user_id: m.user_id,
                    email: m.email,
                    role: m.role.as_str().to_owned(),
                    has_mfa: m.has_mfa,
                })
                .collect(),
            invitations: invitations.into_iter().map(invitation).collect(),
        }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        self.app.remove_member(&s, &r.account_id, &r.user_id, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn change_member_role(
        &self,
        req: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::ChangeMemberRoleResponse>, Status> {
        let r = req.into_inner();
        let role = role(&r.role)?;
        let s = self.session(&r.session_token).await?;
        self.app
            .change_member_role(&s, &r.account_id, &r.user_id, role, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ChangeMemberRoleResponse {}))
    }

    async fn support_reset_mfa(
        &self,
        req: Request<pb::SupportResetMfaRequest>,
    ) -> Result<Response<pb::SupportResetMfaResponse>, Status> {
        if req.extensions().get::<Scope>() != Some(&Scope::Support) {
            return Err(Status::permission_denied("SupportResetMfa needs a support-scoped service token"));
        }
        let r = req.into_inner();
        let rep = self
            .app
            .support_reset_mfa(&r.email, &r.reason, &r.ticket, &r.actor, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SupportResetMfaResponse {
            factors_removed: rep.factors,
            recovery_codes_removed: rep.recovery_codes,
            sessions_revoked: rep.sessions,
        }))
    }

    async fn request_password_reset(
        &self,
        req: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let r = req.into_inner();
        self.app.request_password_reset_in_background(&r.email, &convert::ctx(r.context)).map_err(status)?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn complete_password_reset(
        &self,
        req: Request<pb::CompletePasswordResetRequest>,
    ) -> Result<Response<pb::CompletePasswordResetResponse>, Status> {
        let r = req.into_inner();
        if r.token.is_empty() {
            return Err(Status::invalid_argument("token: required (the `token` of the reset link)"));
        }
        self.app.complete_password_reset(&r.token, &r.new_password, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::CompletePasswordResetResponse {}))
    }

    async fn sign_up(&self, req: Request<pb::SignUpRequest>) -> Result<Response<pb::SignUpResponse>, Status> {
        let r = req.into_inner();
        self.app.sign_up_in_background(&r.email, &r.password, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::SignUpResponse {}))
    }

    async fn send_email_verification(
        &self,
        req: Request<pb::SendEmailVerificationRequest>,
    ) -> Result<Response<pb::SendEmailVerificationResponse>, Status> {
        let r = req.into_inner();
        self.app.send_email_verification_in_background(&r.email, &convert::ctx(r.context)).map_err(status)?;
        Ok(Response::new(pb::SendEmailVerificationResponse {}))
    }

    async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let r = req.into_inner();
        link_token(&r.token)?;
        require_ip(&r.context)?;
        let o = self.app.verify_email(&r.token, &r.password, &convert::ctx(r.context)).await.map_err(status)?;
        let mut out = pb::VerifyEmailResponse::default();
        match o {
            VerifyOutcome::Verified => out.status = pb::VerifyEmailStatus::Verified as i32,
            VerifyOutcome::WrongPassword => out.status = pb::VerifyEmailStatus::WrongPassword as i32,
            VerifyOutcome::Locked { until } => {
                out.status = pb::VerifyEmailStatus::Locked as i32;
                out.locked_until = Some(convert::ts(until));
            }
            VerifyOutcome::Suspended => out.status = pb::VerifyEmailStatus::Suspended as i32,
        }
        Ok(Response::new(out))
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        require_ip(&r.context)?;
        let o = self
            .app
            .change_password(&s, &r.current_password, &r.new_password, &convert::ctx(r.context))
            .await
            .map_err(status)?;
        let mut out = pb::ChangePasswordResponse::default();
        match o {
            PasswordChangeOutcome::Changed { sessions_revoked } => {
                out.status = pb::ChangePasswordStatus::Changed as i32;
                out.sessions_revoked = sessions_revoked;
            }
            PasswordChangeOutcome::WrongPassword => out.status = pb::ChangePasswordStatus::WrongPassword as i32,
            PasswordChangeOutcome::Locked { until } => {
                out.status = pb::ChangePasswordStatus::Locked as i32;
                out.locked_until = Some(convert::ts(until));
            }
            PasswordChangeOutcome::Suspended => out.status = pb::ChangePasswordStatus::Suspended as i32,
        }
        Ok(Response::new(out))
    }

    async fn request_email_change(
        &self,
        req: Request<pb::RequestEmailChangeRequest>,
    ) -> Result<Response<pb::RequestEmailChangeResponse>, Status> {
        let r = req.into_inner();
        let s = self.session(&r.session_token).await?;
        self.app.request_email_change(&s, &r.new_email, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::RequestEmailChangeResponse {}))
    }

    async fn confirm_email_change(
        &self,
        req: Request<pb::ConfirmEmailChangeRequest>,
    ) -> Result<Response<pb::ConfirmEmailChangeResponse>, Status> {
        let r = req.into_inner();
        link_token(&r.token)?;
        let s = self.session(&r.session_token).await?;
        self.app.confirm_email_change(&s, &r.token, &convert::ctx(r.context)).await.map_err(status)?;
        Ok(Response::new(pb::ConfirmEmailChangeResponse {}))
    }
}

/// A mailed link's token as a client passed it: INVALID_ARGUMENT unless it has the shape of one.
fn link_token(t: &str) -> Result<(), Status> {
    if tessera_app::well_formed_token(t) {
        Ok(())
    } else {
        Err(Status::invalid_argument("token: required, the 43-character `token` of the mailed link"))
    }
}
