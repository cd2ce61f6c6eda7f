//! The page handlers: parse the form, call the use case, render. Each POST that succeeds
//! redirects (303) unless it must show something once (recovery codes), which it renders.

use crate::guard::{ClientIp, CsrfToken};
use crate::views::{self, Chrome};
use crate::{Web, cookies};
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tessera_app::{AppError, ClientContext, ConfirmOutcome, EnrollRequest, LoginOutcome, Outcome};
use tessera_core::factor::FactorStatus;
use tessera_core::policy::{AccountAccess, Assurance};
use time::{Duration, OffsetDateTime};

pub(crate) fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(home))
        .route("/static/style.css", get(css))
        .route("/static/app.js", get(js))
        .route("/signup", get(signup_form).post(signup))
        .route("/login", get(login_form).post(login))
        .route("/login/code", get(code_form).post(code))
        .route("/login/recovery", get(recovery_form).post(recovery))
        .route("/logout", get(logout_form).post(logout))
        .route("/settings/security", get(security))
        .route("/settings/security/totp", post(enroll))
        .route("/settings/security/totp/{id}", get(setup))
        .route("/settings/security/totp/{id}/confirm", post(confirm))
        .route("/settings/security/recovery-codes", post(regenerate))
        .route("/settings/security/devices/{id}/remove", post(remove_device))
        .route("/settings/security/sessions/revoke-others", post(revoke_others))
        .route("/settings/activity", get(activity))
        .route("/accounts", get(accounts).post(create_account))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/settings", get(account_settings).post(save_policy))
        .route("/accounts/{id}/members", post(add_member))
        .fallback(|| async { StatusCode::NOT_FOUND })
}

// ---- request context ---------------------------------------------------------------------

/// Who is asking, from where, with which cookies.
pub(crate) struct Req {
    csrf: String,
    ctx: ClientContext,
    session: Option<String>,
    challenge: Option<String>,
}

impl FromRequestParts<Web> for Req {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &Web) -> Result<Self, Response> {
        let csrf = parts.extensions.get::<CsrfToken>().map(|t| t.0.clone()).unwrap_or_default();
        let ip = parts.extensions.get::<ClientIp>().map(|i| i.0.clone());
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self {
            csrf,
            ctx: ClientContext { ip, user_agent },
            session: cookies::get(&parts.headers, cookies::SESSION),
            challenge: cookies::get(&parts.headers, cookies::CHALLENGE),
        })
    }
}

impl Req {
    fn chrome(&self, title: &str) -> Chrome {
        Chrome::new(&self.csrf, None, title)
    }
}

/// A signed-in user (else a redirect to the login page).
pub(crate) struct User {
    req: Req,
    token: String,
    id: String,
    email: String,
    assurance: Assurance,
}

impl FromRequestParts<Web> for User {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Response> {
        let req = Req::from_request_parts(parts, web).await?;
        let to_login = || with_cookies(Redirect::to("/login").into_response(), &[cookies::clear(cookies::SESSION)]);
        let Some(token) = req.session.clone() else { return Err(Redirect::to("/login").into_response()) };
        let (id, assurance) = match web.app.session(&token).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(views::app_error(req.chrome("Error"), e)),
        };
        let email = match web.app.user_email(&id).await {
            Ok(Some(e)) => e,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(views::app_error(req.chrome("Error"), e)),
        };
        Ok(Self { req, token, id, email, assurance })
    }
}

impl User {
    fn chrome(&self, title: &str) -> Chrome {
        Chrome::new(&self.req.csrf, Some(&self.email), title)
    }
    fn ctx(&self) -> &ClientContext {
        &self.req.ctx
    }
    fn error(&self, e: AppError) -> Response {
        views::app_error(self.chrome("Error"), e)
    }
}

fn with_cookies(mut r: Response, set: &[String]) -> Response {
    for c in set {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn session_cookie(token: &str) -> String {
    cookies::set(cookies::SESSION, token, Some(tessera_app::SESSION_TTL.whole_seconds()))
}

fn attempts_left(n: u32) -> String {
    did_not_match("code", n)
}

/// "That {what} didn't match. N attempts left." (and the singular and the last).
fn did_not_match(what: &str, n: u32) -> String {
    match n {
        0 => format!(
            "That {what} didn't match. No attempts left: the next wrong code locks two-factor sign-in for a while."
        ),
        1 => format!("That {what} didn't match. 1 attempt left."),
        n => format!("That {what} didn't match. {n} attempts left."),
    }
}

fn locked(until: OffsetDateTime, now: OffsetDateTime) -> String {
    format!("Too many attempts. Try again at {}.", views::clock_time(until, now))
}

/// A code as typed ("123 456") to the form the use cases parse.
fn compact(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CodeForm {
    code: String,
}

// ---- static ------------------------------------------------------------------------------

async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("../static/style.css"))
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("../static/app.js"))
}

fn static_file(ty: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

async fn home(req: Req, State(web): State<Web>) -> Response {
    match &req.session {
        Some(t) if matches!(web.app.session(t).await, Ok(Some(_))) => Redirect::to("/accounts").into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}

// ---- sign-up -----------------------------------------------------------------------------

async fn signup_form(req: Req, State(web): State<Web>) -> Response {
    signup_page(&web, &req, StatusCode::OK, String::new(), None)
}

fn signup_page(web: &Web, req: &Req, status: StatusCode, email: String, error: Option<String>) -> Response {
    let min_chars = web.app.config().min_password_chars;
    views::page(status, &views::Signup { chrome: req.chrome("Create an account"), email, error, min_chars })
}

async fn signup(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<Credentials>) -> Response {
    match web.app.sign_up(&f.email, &f.password, &req.ctx).await {
        Ok((_, token)) => with_cookies(Redirect::to("/settings/security").into_response(), &[session_cookie(&token)]),
        Err(AppError::Invalid(e)) => {
            signup_page(&web, &req, StatusCode::BAD_REQUEST, f.email, Some(sentence(&e.to_string())))
        }
        Err(AppError::FailedPrecondition(m)) => {
            signup_page(&web, &req, StatusCode::CONFLICT, f.email, Some(sentence(&m)))
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

/// A use-case message as a sentence: capitalised, with a full stop.
fn sentence(m: &str) -> String {
    let mut c = m.chars();
    let mut s = c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

// ---- login -------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_form(req: Req, State(web): State<Web>, Query(q): Query<LoginQuery>) -> Response {
    if let Some(t) = &req.session
        && matches!(web.app.session(t).await, Ok(Some(_)))
    {
        return Redirect::to("/accounts").into_response();
    }
    let notice = q.expired.map(|_| "Your sign-in expired or was cancelled. Please sign in again.".to_owned());
    login_page(&req, StatusCode::OK, String::new(), None, notice)
}

fn login_page(req: &Req, status: StatusCode, email: String, error: Option<String>, notice: Option<String>) -> Response {
    views::page(status, &views::Login { chrome: req.chrome("Sign in"), email, error, notice })
}

async fn login(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<Credentials>) -> Response {
    let now = web.app.now();
    match web.app.begin_login(&f.email, &f.password, &req.ctx).await {
        Ok(LoginOutcome::Authenticated { token, .. }) => with_cookies(
            Redirect::to("/accounts").into_response(),
            &[session_cookie(&token), cookies::clear(cookies::CHALLENGE)],
        ),
        Ok(LoginOutcome::SecondFactorRequired { challenge }) => {
            let age = tessera_app::CHALLENGE_TTL.whole_seconds();
            with_cookies(
                Redirect::to("/login/code").into_response(),
                &[cookies::set(cookies::CHALLENGE, &challenge, Some(age))],
            )
        }
        Ok(LoginOutcome::Locked { until }) => {
            login_page(&req, StatusCode::TOO_MANY_REQUESTS, f.email, Some(locked(until, now)), None)
        }
        Ok(_) => login_page(
            &req,
            StatusCode::UNAUTHORIZED,
            f.email,
            Some("That email and password don't match.".into()),
            None,
        ),
        Err(AppError::Invalid(_)) => {
            login_page(&req, StatusCode::BAD_REQUEST, f.email, Some("Enter your email address.".into()), None)
        }
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

async fn code_form(req: Req) -> Response {
    if req.challenge.is_none() {
        return Redirect::to("/login").into_response();
    }
    views::page(StatusCode::OK, &views::LoginCode { chrome: req.chrome("Two-factor authentication"), error: None })
}

async fn recovery_form(req: Req) -> Response {
    if req.challenge.is_none() {
        return Redirect::to("/login").into_response();
    }
    views::page(StatusCode::OK, &views::LoginRecovery { chrome: req.chrome("Use a recovery code"), error: None })
}

#[derive(Clone, Copy, PartialEq)]
enum SecondStep {
    Totp,
    Recovery,
}

async fn code(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    second_step(req, web, SecondStep::Totp, f.code).await
}

async fn recovery(req: Req, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    second_step(req, web, SecondStep::Recovery, f.code).await
}

async fn second_step(req: Req, web: Web, step: SecondStep, code: String) -> Response {
    let Some(challenge) = req.challenge.clone() else {
        return Redirect::to("/login?expired=1").into_response();
    };
    let render = |status: StatusCode, error: String| match step {
        SecondStep::Totp => views::page(
            status,
            &views::LoginCode { chrome: req.chrome("Two-factor authentication"), error: Some(error) },
        ),
        SecondStep::Recovery => {
            views::page(status, &views::LoginRecovery { chrome: req.chrome("Use a recovery code"), error: Some(error) })
        }
    };
    let now = web.app.now();
    let r = match step {
        SecondStep::Totp => web.app.complete_login_totp(&challenge, &compact(&code), &req.ctx).await,
        SecondStep::Recovery => web.app.complete_login_recovery(&challenge, &code, &req.ctx).await,
    };
    match r {
        Ok(LoginOutcome::Authenticated { token, .. }) => with_cookies(
            Redirect::to("/accounts").into_response(),
            &[session_cookie(&token), cookies::clear(cookies::CHALLENGE)],
        ),
        Ok(LoginOutcome::Rejected { attempts_remaining }) => {
            let msg = match step {
                SecondStep::Totp => attempts_left(attempts_remaining),
                SecondStep::Recovery => did_not_match("recovery code", attempts_remaining),
            };
            render(StatusCode::UNAUTHORIZED, msg)
        }
        Ok(LoginOutcome::Locked { until }) => with_cookies(
            views::message_link(
                StatusCode::TOO_MANY_REQUESTS,
                req.chrome("Too many attempts"),
                &format!("{} Your sign-in was cancelled; start again with your password then.", locked(until, now)),
                "/login",
                "Back to sign in",
            ),
            &[cookies::clear(cookies::CHALLENGE)],
        ),
        Ok(_) => with_cookies(Redirect::to("/login?expired=1").into_response(), &[cookies::clear(cookies::CHALLENGE)]),
        Err(AppError::Invalid(_)) => render(
            StatusCode::BAD_REQUEST,
            match step {
                SecondStep::Totp => "Enter the 6-digit code from your authenticator app.".into(),
                SecondStep::Recovery => {
                    "That isn't a recovery code: they have 16 letters and digits, like ABCD-EFGH-JKMN-PQRS.".into()
                }
            },
        ),
        Err(e) => views::app_error(req.chrome("Error"), e),
    }
}

async fn logout_form(req: Req) -> Response {
    views::page(StatusCode::OK, &views::Logout { chrome: req.chrome("Sign out") })
}

async fn logout(req: Req, State(web): State<Web>) -> Response {
    if let Some(t) = &req.session
        && let Err(e) = web.app.logout(t, &req.ctx).await
    {
        return views::app_error(req.chrome("Error"), e);
    }
    with_cookies(
        Redirect::to("/login").into_response(),
        &[cookies::clear(cookies::SESSION), cookies::clear(cookies::CHALLENGE)],
    )
}

// ---- security settings -------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct Done {
    done: Option<String>,
}

async fn security(user: User, State(web): State<Web>, Query(q): Query<Done>) -> Response {
    let notice = match q.done.as_deref() {
        Some("removed") => Some("Device removed."),
        Some("revoked") => Some("All your other sessions are signed out."),
        Some("added") => Some("Authenticator app added."),
        _ => None,
    };
    security_page(&web, &user, StatusCode::OK, notice.map(str::to_owned), None).await
}

async fn security_page(
    web: &Web,
    user: &User,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let factors = match web.app.list_factors(&user.id).await {
        Ok(f) => f,
        Err(e) => return user.error(e),
    };
    let codes_left = match web.app.recovery_codes_remaining(&user.id).await {
        Ok(n) => n,
        Err(e) => return user.error(e),
    };
    let mfa_on = factors.iter().any(|f| f.status == FactorStatus::Active);
    let devices = factors
        .into_iter()
        .map(|f| views::DeviceView {
            pending: f.status == FactorStatus::Pending,
            added: views::timestamp(f.created_at),
            last_used: f.last_used_at.map_or_else(|| "never".to_owned(), views::timestamp),
            id: f.id,
            label: f.label,
        })
        .collect();
    views::page(
        status,
        &views::Security {
            chrome: user.chrome("Security"),
            mfa_on,
            session_mfa: user.assurance == Assurance::PasswordAndSecondFactor,
            devices,
            codes_left,
            notice,
            error,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LabelForm {
    label: String,
}

async fn enroll(user: User, State(web): State<Web>, axum::Form(f): axum::Form<LabelForm>) -> Response {
    let label = if f.label.trim().is_empty() { "Authenticator app".to_owned() } else { f.label };
    let req = EnrollRequest {
        subject_id: user.id.clone(),
        label,
        account_name: user.email.clone(),
        ..EnrollRequest::default()
    };
    match web.app.enroll_totp(&req, user.ctx()).await {
        Ok(e) => Redirect::to(&format!("/settings/security/totp/{}", e.factor_id)).into_response(),
        Err(AppError::Invalid(e)) => {
            security_page(&web, &user, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await
        }
        Err(AppError::FailedPrecondition(m)) => {
            security_page(&web, &user, StatusCode::CONFLICT, None, Some(sentence(&m))).await
        }
        Err(e) => user.error(e),
    }
}

async fn setup(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    setup_page(&web, &user, &id, StatusCode::OK, None).await
}

async fn setup_page(web: &Web, user: &User, id: &str, status: StatusCode, error: Option<String>) -> Response {
    match web.app.pending_enrollment(&user.id, id, &user.email).await {
        Ok(e) => {
            let svg = e.qr_svg.find("<svg").and_then(|i| e.qr_svg.get(i..)).unwrap_or_default().to_owned();
            let secret = e.secret_base32.to_string();
            let groups = secret
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            views::page(
                status,
                &views::Setup {
                    chrome: user.chrome("Set up two-factor authentication"),
                    factor_id: e.factor_id,
                    qr_svg: svg,
                    secret,
                    secret_groups: groups,
                    account: user.email.clone(),
                    issuer: web.app.config().issuer.clone(),
                    error,
                },
            )
        }
        Err(AppError::FailedPrecondition(_)) => Redirect::to("/settings/security").into_response(),
        Err(e) => user.error(e),
    }
}

fn codes_page(user: &User, codes: Vec<zeroize::Zeroizing<String>>, first: bool) -> Response {
    let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    let text = format!(
        "Tessera recovery codes for {}\nEach code works once. Keep them somewhere safe.\n\n{}\n",
        user.email,
        codes.join("\n")
    );
    let download_href = format!(
        "data:text/plain;charset=utf-8,{}",
        percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC)
    );
    views::page(
        StatusCode::OK,
        &views::RecoveryCodes { chrome: user.chrome("Save your recovery codes"), codes, download_href, first },
    )
}

async fn confirm(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CodeForm>,
) -> Response {
    let now = web.app.now();
    match web.app.confirm_totp(&user.id, &id, &compact(&f.code), user.ctx()).await {
        Ok(ConfirmOutcome::Confirmed { recovery_codes, .. }) => {
            // The user just proved the factor in this session.
            if let Err(e) = web.app.step_up_session(&user.token).await {
                return user.error(e);
            }
            if recovery_codes.is_empty() {
                Redirect::to("/settings/security?done=added").into_response()
            } else {
                codes_page(&user, recovery_codes, true)
            }
        }
        Ok(ConfirmOutcome::Rejected { attempts_remaining }) => {
            setup_page(&web, &user, &id, StatusCode::UNAUTHORIZED, Some(attempts_left(attempts_remaining))).await
        }
        Ok(ConfirmOutcome::Locked { until }) => {
            setup_page(&web, &user, &id, StatusCode::TOO_MANY_REQUESTS, Some(locked(until, now))).await
        }
        Err(AppError::Invalid(_)) => {
            let msg = "Enter the 6-digit code from your authenticator app.".to_owned();
            setup_page(&web, &user, &id, StatusCode::BAD_REQUEST, Some(msg)).await
        }
        Err(AppError::FailedPrecondition(_)) => Redirect::to("/settings/security").into_response(),
        Err(e) => user.error(e),
    }
}

/// Check a current code before a sensitive change; `Err(page)` explains a refusal.
async fn require_code(web: &Web, user: &User, code: &str) -> Result<(), Response> {
    let now = web.app.now();
    let msg = match web.app.verify_totp(&user.id, &compact(code), user.ctx()).await {
        Ok(Outcome::Accepted { .. }) => return Ok(()),
        Ok(Outcome::Rejected { attempts_remaining }) => (StatusCode::UNAUTHORIZED, attempts_left(attempts_remaining)),
        Ok(Outcome::Locked { until }) => (StatusCode::TOO_MANY_REQUESTS, locked(until, now)),
        Err(AppError::Invalid(_)) => {
            (StatusCode::BAD_REQUEST, "Enter the current 6-digit code from your authenticator app.".into())
        }
        Err(e) => return Err(user.error(e)),
    };
    Err(security_page(web, user, msg.0, None, Some(msg.1)).await)
}

async fn regenerate(user: User, State(web): State<Web>, axum::Form(f): axum::Form<CodeForm>) -> Response {
    if let Err(r) = require_code(&web, &user, &f.code).await {
        return r;
    }
    match web.app.regenerate_recovery_codes(&user.id, user.ctx()).await {
        Ok(codes) => codes_page(&user, codes, false),
        Err(e) => user.error(e),
    }
}

async fn remove_device(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CodeForm>,
) -> Response {
    let factors = match web.app.list_factors(&user.id).await {
        Ok(f) => f,
        Err(e) => return user.error(e),
    };
    let Some(factor) = factors.iter().find(|x| x.id == id) else {
        return user.error(AppError::NotFound("device"));
    };
    // A pending device is not a factor yet: cancelling its setup needs no code.
    if factor.status == FactorStatus::Active
        && let Err(r) = require_code(&web, &user, &f.code).await
    {
        return r;
    }
    match web.app.remove_factor(&user.id, &id, user.ctx()).await {
        Ok(()) => Redirect::to("/settings/security?done=removed").into_response(),
        Err(e) => user.error(e),
    }
}

async fn revoke_others(user: User, State(web): State<Web>) -> Response {
    match web.app.logout_others(&user.token, user.ctx()).await {
        Ok(_) => Redirect::to("/settings/security?done=revoked").into_response(),
        Err(e) => user.error(e),
    }
}

// ---- activity ----------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct Page {
    before: String,
}

fn describe(kind: &str, detail: &str) -> String {
    let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    match kind {
        "totp_enrolled" => format!("Started setting up an authenticator app ({})", s("label")),
        "totp_confirmed" => "Turned on an authenticator app".into(),
        "totp_confirm_failed" => "Wrong code while setting up an authenticator app".into(),
        "totp_verified" => "Authenticator code accepted".into(),
        "totp_rejected" => "Wrong or already used authenticator code".into(),
        "attempt_while_locked" => "Code refused: locked after too many wrong codes".into(),
        "locked" => "Two-factor sign-in locked after too many wrong codes".into(),
        "recovery_codes_generated" => "New recovery codes issued (the old ones stopped working)".into(),
        "recovery_code_redeemed" => "Recovery code used".into(),
        "recovery_code_rejected" => "Wrong recovery code".into(),
        "factor_removed" => "Device removed".into(),
        "user_created" => "Signed up".into(),
        "login_succeeded" if s("assurance").contains("second_factor") => {
            "Signed in with two-factor authentication".into()
        }
        "login_succeeded" => "Signed in with password".into(),
        "second_factor_challenged" => "Password accepted; code requested".into(),
        "challenges_voided" => "Sign-ins waiting for a code were cancelled".into(),
        "sessions_revoked" if s("scope") == "others" => "Signed out all other sessions".into(),
        "sessions_revoked" if s("scope") == "everywhere" => "Signed out everywhere".into(),
        "sessions_revoked" => "Signed out".into(),
        "account_created" => "Created an account".into(),
        "member_added" => format!("Added to an account as {}", s("role")),
        "account_policy_changed" => "Changed an account's two-factor policy".into(),
        "support_mfa_reset" => format!("Support reset two-factor authentication (ticket {})", s("ticket")),
        other => other.replace('_', " "),
    }
}

async fn activity(user: User, State(web): State<Web>, Query(p): Query<Page>) -> Response {
    let (events, next) = match web.app.list_audit_events(&user.id, 50, &p.before).await {
        Ok(x) => x,
        Err(e) => return user.error(e),
    };
    let events = events
        .into_iter()
        .map(|e| views::EventView {
            at: views::timestamp(e.at()),
            what: describe(&e.kind, &e.detail),
            ip: e.ip.clone().unwrap_or_default(),
            agent: e.user_agent.clone().unwrap_or_default(),
        })
        .collect();
    views::page(
        StatusCode::OK,
        &views::Activity { chrome: user.chrome("Activity"), events, next: (!next.is_empty()).then_some(next) },
    )
}

// ---- accounts ----------------------------------------------------------------------------

async fn accounts(user: User, State(web): State<Web>) -> Response {
    accounts_page(&web, &user, StatusCode::OK, None).await
}

async fn accounts_page(web: &Web, user: &User, status: StatusCode, error: Option<String>) -> Response {
    let accounts = match web.app.memberships(&user.id).await {
        Ok(a) => a,
        Err(e) => return user.error(e),
    };
    let accounts = accounts
        .into_iter()
        .map(|m| views::AccountView {
            id: m.policy.account_id,
            name: m.name,
            role: m.role,
            require_mfa: m.policy.require_mfa,
        })
        .collect();
    views::page(status, &views::Accounts { chrome: user.chrome("Accounts"), accounts, error })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NameForm {
    name: String,
}

async fn create_account(user: User, State(web): State<Web>, axum::Form(f): axum::Form<NameForm>) -> Response {
    match web.app.create_account(&f.name, &user.id, user.ctx()).await {
        Ok(id) => Redirect::to(&format!("/accounts/{id}")).into_response(),
        Err(AppError::Invalid(e)) => {
            accounts_page(&web, &user, StatusCode::BAD_REQUEST, Some(sentence(&e.to_string()))).await
        }
        Err(e) => user.error(e),
    }
}

/// The account as the user sees it: `Err(page)` when it is closed to this session (the
/// enrolment prompt, never the content) or unknown.
async fn open_account(
    web: &Web,
    user: &User,
    id: &str,
) -> Result<(tessera_app::MembershipRow, Option<OffsetDateTime>), Response> {
    let (m, access) = web.app.account_for(&user.id, user.assurance, id).await.map_err(|e| user.error(e))?;
    let closed = |needs_enrolment| {
        views::page(
            StatusCode::FORBIDDEN,
            &views::AccountClosed { chrome: user.chrome(&m.name), name: m.name.clone(), needs_enrolment },
        )
    };
    match access {
        AccountAccess::Open => Ok((m, None)),
        AccountAccess::OpenUntil(t) => Ok((m, Some(t))),
        AccountAccess::EnrolmentRequired => Err(closed(true)),
        AccountAccess::SecondFactorRequired => Err(closed(false)),
    }
}

async fn account(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    let (m, grace) = match open_account(&web, &user, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = web.app.now();
    views::page(
        StatusCode::OK,
        &views::Account {
            chrome: user.chrome(&m.name),
            is_admin: matches!(m.role.as_str(), "owner" | "admin"),
            id,
            name: m.name,
            role: m.role,
            grace_until: grace.map(|t| views::clock_time(t, now)),
        },
    )
}

async fn account_settings(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    let notice = match q.done.as_deref() {
        Some("saved") => Some("Saved.".to_owned()),
        Some("member") => Some("Member added.".to_owned()),
        _ => None,
    };
    settings_page(&web, &user, &id, StatusCode::OK, notice, None).await
}

async fn settings_page(
    web: &Web,
    user: &User,
    id: &str,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let (m, _) = match open_account(web, user, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let members = match web.app.members(id, &user.id).await {
        Ok(m) => m,
        Err(e) => return user.error(e),
    };
    let now = web.app.now();
    let members: Vec<views::MemberView> =
        members.into_iter().map(|m| views::MemberView { email: m.email, role: m.role, has_mfa: m.has_mfa }).collect();
    views::page(
        status,
        &views::AccountSettings {
            chrome: user.chrome(&format!("{} settings", m.name)),
            id: id.to_owned(),
            name: m.name,
            require_mfa: m.policy.require_mfa,
            grace_until: m.policy.grace_until.filter(|t| *t > now).map(|t| views::clock_time(t, now)),
            without_mfa: members.iter().filter(|m| !m.has_mfa).count(),
            members,
            notice,
            error,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PolicyForm {
    require_mfa: Option<String>,
    grace_days: String,
}

async fn save_policy(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<PolicyForm>,
) -> Response {
    if let Err(r) = open_account(&web, &user, &id).await {
        return r;
    }
    let days = match f.grace_days.trim() {
        "" => 0,
        s => match s.parse::<i64>() {
            Ok(d) if (0..=90).contains(&d) => d,
            _ => {
                let msg = "The grace period must be a whole number of days from 0 to 90.".to_owned();
                return settings_page(&web, &user, &id, StatusCode::BAD_REQUEST, None, Some(msg)).await;
            }
        },
    };
    let require = f.require_mfa.is_some();
    let grace = (require && days > 0).then(|| web.app.now() + Duration::days(days));
    match web.app.set_account_policy_as(&id, &user.id, require, grace, user.ctx()).await {
        Ok(()) => Redirect::to(&format!("/accounts/{id}/settings?done=saved")).into_response(),
        Err(AppError::FailedPrecondition(m)) => {
            settings_page(&web, &user, &id, StatusCode::CONFLICT, None, Some(sentence(&m))).await
        }
        Err(e) => user.error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemberForm {
    email: String,
    role: String,
}

async fn add_member(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<MemberForm>,
) -> Response {
    if let Err(r) = open_account(&web, &user, &id).await {
        return r;
    }
    match web.app.add_member_by_email(&id, &user.id, &f.email, &f.role, user.ctx()).await {
        Ok(_) => Redirect::to(&format!("/accounts/{id}/settings?done=member")).into_response(),
        Err(AppError::Invalid(e)) => {
            settings_page(&web, &user, &id, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await
        }
        Err(e) => user.error(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn words() {
        assert_eq!(super::attempts_left(4), "That code didn't match. 4 attempts left.");
        assert_eq!(super::attempts_left(1), "That code didn't match. 1 attempt left.");
        assert_eq!(super::sentence("email is not an email address"), "Email is not an email address.");
        assert_eq!(super::compact(" 123 456 "), "123456");
        assert_eq!(
            super::describe("support_mfa_reset", r#"{"ticket":"T-1"}"#),
            "Support reset two-factor authentication (ticket T-1)"
        );
    }
}
