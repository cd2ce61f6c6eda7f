//! The security page: authenticator apps (add, finish setting up, remove), security keys and
//! passkeys (add, remove), recovery codes, and the user's sessions.
//!
//! Who may do what (decided in the app; the page only routes): viewing needs a live session;
//! adding or removing an authenticator, new recovery codes and signing out other sessions need
//! recent authentication (else a redirect to `/settings/reauth`); a pending setup is shown and
//! finished only in the session that started it; any session may cancel one or sign itself out.
//! Adding a security key or passkey is a ceremony the app binds to this session: it begins and
//! finishes only with recent authentication, in the session that began it.

use super::{
    CeremonyPage, KeyAnswer, Page, User, attempts_left, ceremony_page, compact, flatten, locked, sentence,
    session_cookies, with_cookies,
};
use crate::views;
use crate::{Web, views::DeviceView};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_app::{AppError, ConfirmOutcome};
use tessera_core::factor::{FactorKind, FactorStatus};
use tessera_core::policy::Assurance;

const BACK: &str = "/settings/security";

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Done {
    done: Option<String>,
}

pub(crate) async fn page(user: User, State(web): State<Web>, Query(q): Query<Done>) -> Response {
    let notice = match q.done.as_deref() {
        Some("removed") => Some("Device removed."),
        Some("cancelled") => Some("Setup cancelled."),
        Some("revoked") => Some("All your other sessions are signed out."),
        Some("signed-out") => Some("That session is signed out."),
        Some("added") => Some("Authenticator app added."),
        Some("key-added") => Some("Security key added."),
        Some("trust-revoked") => Some("That browser is no longer trusted: it asks for your second factor again."),
        Some("trust-revoked-all") => Some("No browser is trusted any more: each asks for your second factor again."),
        Some("last-code") => Some(
            "You signed in with your last recovery code. Generate new ones below now, and keep them somewhere safe.",
        ),
        Some("codes-low") => Some("You signed in with a recovery code, and few are left. Generate new ones below."),
        Some("password") => Some("Your password is changed. Your other sessions are signed out."),
        _ => None,
    };
    flatten(security_page(&web, &user, StatusCode::OK, notice.map(str::to_owned), None).await)
}

async fn security_page(
    web: &Web,
    user: &User,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Page {
    let fail = |e| user.fail(e, BACK);
    let factors = web.app.devices(&user.session).await.map_err(fail)?;
    let codes_left = web.app.recovery_codes_remaining(user.id()).await.map_err(fail)?;
    let sessions = web.app.sessions_of(&user.session).await.map_err(fail)?;
    let trusted = web.app.trusted_browsers(&user.session).await.map_err(fail)?;
    let mfa_on = factors.iter().any(|f| f.status == FactorStatus::Active);
    let now = web.app.now();
    let devices = factors
        .into_iter()
        .map(|f| DeviceView {
            pending: f.status == FactorStatus::Pending,
            mine: f.started_in.as_deref() == Some(user.session.id()),
            disabled: f.disabled_at.is_some(),
            kind: match f.kind {
                FactorKind::Totp => "Authenticator app",
                FactorKind::SecurityKey => "Security key",
                FactorKind::Passkey => "Passkey",
            },
            added: views::timestamp(f.created_at),
            last_used: f.last_used_at.map_or_else(|| "never".to_owned(), views::timestamp),
            id: f.id,
            label: f.label,
        })
        .collect();
    let sessions = sessions
        .into_iter()
        .map(|(s, current)| views::SessionView {
            id: s.id().to_owned(),
            current,
            browser: views::describe_agent(s.user_agent()),
            ip: s.ip().unwrap_or("unknown").to_owned(),
            signed_in: views::clock_time(s.created_at(), now),
            last_seen: views::clock_time(s.last_seen_at(), now),
            two_factor: s.assurance() == Assurance::PasswordAndSecondFactor && s.trusted_since().is_none(),
        })
        .collect();
    Ok(views::page(
        status,
        &views::Security {
            chrome: user.chrome("Security"),
            mfa_on,
            session_mfa: user.session.assurance() == Assurance::PasswordAndSecondFactor,
            devices,
            sessions,
            codes_left,
            notice,
            error,
            webauthn: web.app.webauthn_enabled(),
            session_trusted: user.session.trusted_since().is_some()
                && user.session.second_factor_verified_at().is_none(),
            trusted: trusted
                .into_iter()
                .map(|t| views::TrustedView {
                    browser: views::describe_agent(Some(&t.label)),
                    added: views::clock_time(t.created_at, now),
                    last_used: t.last_used_at.map_or_else(|| "never".to_owned(), |u| views::clock_time(u, now)),
                    until: views::clock_time(t.expires_at, now),
                    id: t.id,
                })
                .collect(),
        },
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LabelForm {
    label: String,
}

pub(crate) async fn enroll(user: User, State(web): State<Web>, axum::Form(f): axum::Form<LabelForm>) -> Response {
    let label = if f.label.trim().is_empty() { "Authenticator app".to_owned() } else { f.label };
    match web.app.add_totp_device(&user.session, &label, user.ctx()).await {
        Ok(e) => Redirect::to(&format!("/settings/security/totp/{}", e.factor_id)).into_response(),
        Err(AppError::Invalid(e)) => {
            flatten(security_page(&web, &user, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await)
        }
        Err(AppError::FailedPrecondition(m)) => {
            flatten(security_page(&web, &user, StatusCode::CONFLICT, None, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, BACK),
    }
}

pub(crate) async fn setup(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    setup_page(&web, &user, &id, StatusCode::OK, None).await
}

async fn setup_page(web: &Web, user: &User, id: &str, status: StatusCode, error: Option<String>) -> Response {
    match web.app.pending_totp_device(&user.session, id).await {
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
        Err(AppError::FailedPrecondition(m)) => {
            flatten(security_page(web, user, StatusCode::CONFLICT, None, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, BACK),
    }
}

fn codes_page(user: &User, codes: Vec<zeroize::Zeroizing<String>>, first: bool, signed_out: u64) -> Response {
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
        &views::RecoveryCodes {
            chrome: user.chrome("Save your recovery codes"),
            codes,
            download_href,
            first,
            signed_out,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
}

pub(crate) async fn confirm(
    user: User,
    State(web): State<Web>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CodeForm>,
) -> Response {
    let now = web.app.now();
    let back = format!("/settings/security/totp/{id}");
    match web.app.confirm_totp_device(&user.session, &id, &compact(&f.code), user.ctx()).await {
        Ok(ConfirmOutcome::Confirmed { recovery_codes, sessions_revoked, session_token, .. }) => {
            // A first factor raised this session under a new token: the browser takes it.
            let cookies = match &session_token {
                Some(t) => session_cookies(&web, t).await,
                None => Vec::new(),
            };
            let page = if recovery_codes.is_empty() {
                Redirect::to("/settings/security?done=added").into_response()
            } else {
                codes_page(&user, recovery_codes, true, sessions_revoked)
            };
            with_cookies(page, &cookies)
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
        Err(AppError::FailedPrecondition(m)) => {
            flatten(security_page(&web, &user, StatusCode::CONFLICT, None, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, &back),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct KeyForm {
    label: String,
    kind: String,
}

/// "Add a security key": a registration ceremony bound to this session (recent authentication
/// needed, as for an authenticator app).
pub(crate) async fn add_key(user: User, State(web): State<Web>, axum::Form(f): axum::Form<KeyForm>) -> Response {
    let kind = match f.kind.as_str() {
        "passkey" => FactorKind::Passkey,
        _ => FactorKind::SecurityKey,
    };
    let default = if kind == FactorKind::Passkey { "Passkey" } else { "Security key" };
    let label = if f.label.trim().is_empty() { default.to_owned() } else { f.label };
    match web.app.begin_key_registration(&user.session, &label, kind).await {
        Ok(c) => ceremony_page(
            user.chrome("Add a security key"),
            CeremonyPage {
                heading: if kind == FactorKind::Passkey { "Add a passkey" } else { "Add a security key" },
                intro: if kind == FactorKind::Passkey {
                    "Your browser will ask where to keep the passkey (this device, your phone, or a security key) \
                     and to confirm with your fingerprint, face or PIN."
                } else {
                    "Insert your security key and touch it when your browser asks."
                },
                mode: "create",
                action: "/settings/security/keys/finish",
                extra: Vec::new(),
                button: if kind == FactorKind::Passkey { "Create passkey" } else { "Register security key" },
                back: BACK,
            },
            c,
        ),
        Err(AppError::Invalid(e)) => {
            flatten(security_page(&web, &user, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await)
        }
        Err(AppError::FailedPrecondition(m)) => {
            flatten(security_page(&web, &user, StatusCode::CONFLICT, None, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, BACK),
    }
}

/// The key's answer to the registration: an active factor at once (a first factor brings
/// recovery codes, as an authenticator app's confirmation does).
pub(crate) async fn finish_key(user: User, State(web): State<Web>, axum::Form(f): axum::Form<KeyAnswer>) -> Response {
    match web.app.finish_key_registration(&user.session, &f.ceremony, &f.response, user.ctx()).await {
        Ok(ConfirmOutcome::Confirmed { recovery_codes, sessions_revoked, session_token, .. }) => {
            let cookies = match &session_token {
                Some(t) => session_cookies(&web, t).await,
                None => Vec::new(),
            };
            let page = if recovery_codes.is_empty() {
                Redirect::to("/settings/security?done=key-added").into_response()
            } else {
                codes_page(&user, recovery_codes, true, sessions_revoked)
            };
            with_cookies(page, &cookies)
        }
        Ok(_) => Redirect::to(BACK).into_response(),
        Err(AppError::Invalid(e)) => {
            flatten(security_page(&web, &user, StatusCode::BAD_REQUEST, None, Some(sentence(&e.to_string()))).await)
        }
        Err(AppError::FailedPrecondition(m)) => {
            flatten(security_page(&web, &user, StatusCode::CONFLICT, None, Some(sentence(&m))).await)
        }
        Err(e) => user.fail(e, BACK),
    }
}

pub(crate) async fn regenerate(user: User, State(web): State<Web>) -> Response {
    match web.app.new_recovery_codes(&user.session, user.ctx()).await {
        Ok(codes) => codes_page(&user, codes, false, 0),
        Err(e) => user.fail(e, BACK),
    }
}

pub(crate) async fn remove_device(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    let pending = web
        .app
        .devices(&user.session)
        .await
        .map(|d| d.iter().any(|f| f.id == id && f.status == FactorStatus::Pending))
        .unwrap_or(false);
    match web.app.remove_device(&user.session, &id, user.ctx()).await {
        Ok(()) if pending => Redirect::to("/settings/security?done=cancelled").into_response(),
        Ok(()) => Redirect::to("/settings/security?done=removed").into_response(),
        Err(e) => user.fail(e, BACK),
    }
}

/// Revoke one trusted browser (any live session of the user may: it only takes away).
pub(crate) async fn revoke_trusted(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    match web.app.revoke_trusted_browsers(&user.session, Some(&id), user.ctx()).await {
        Ok(_) => Redirect::to("/settings/security?done=trust-revoked").into_response(),
        Err(e) => user.fail(e, BACK),
    }
}

/// Revoke every trusted browser.
pub(crate) async fn revoke_all_trusted(user: User, State(web): State<Web>) -> Response {
    match web.app.revoke_trusted_browsers(&user.session, None, user.ctx()).await {
        Ok(_) => Redirect::to("/settings/security?done=trust-revoked-all").into_response(),
        Err(e) => user.fail(e, BACK),
    }
}

pub(crate) async fn revoke_others(user: User, State(web): State<Web>) -> Response {
    match web.app.logout_others(&user.session, user.ctx()).await {
        Ok(_) => Redirect::to("/settings/security?done=revoked").into_response(),
        Err(e) => user.fail(e, BACK),
    }
}

pub(crate) async fn revoke_session(user: User, State(web): State<Web>, Path(id): Path<String>) -> Response {
    let own = id == user.session.id();
    match web.app.revoke_session(&user.session, &id, user.ctx()).await {
        Ok(()) if own => {
            let mut clear = vec![crate::cookies::clear(crate::cookies::SESSION)];
            if let Some(domain) = &web.config.cookie_domain {
                clear.push(crate::cookies::clear_forward(domain));
            }
            with_cookies(Redirect::to("/login").into_response(), &clear)
        }
        Ok(()) => Redirect::to("/settings/security?done=signed-out").into_response(),
        Err(e) => user.fail(e, BACK),
    }
}
