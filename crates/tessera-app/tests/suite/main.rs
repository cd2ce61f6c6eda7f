//! The store-backed suite of the use cases, one module per area; every `both!` test runs on a
//! fresh SQLite file and on a fresh PostgreSQL schema (tessera-testkit), with the manual clock.
//! One test binary, so linking stays fast. This file holds the vocabulary the areas share.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod accounts;
mod authorize;
mod keys;
mod lifecycle;
mod login;
mod outbox;
mod recovery;
mod reset;
mod sessions;
mod signup;
mod throttle;
mod totp;
mod trust;
mod webauthn;

use tessera_app::{AppError, ConfirmOutcome, EnrollRequest, Enrollment, LoginOutcome, Outcome, Session};
use tessera_core::policy::Assurance;
use tessera_core::session::Recency;
use tessera_testkit::{Harness, ctx};
use time::Duration;

/// A service's enrolment of `subject`'s phone.
fn req(subject: &str) -> EnrollRequest {
    EnrollRequest {
        subject_id: subject.into(),
        label: "Phone".into(),
        account_name: format!("{subject}@example.com"),
        ..Default::default()
    }
}

/// Enrol and confirm a device; returns its enrolment and the recovery codes shown.
async fn active_device(h: &Harness, subject: &str) -> (Enrollment, Vec<String>) {
    let e = h.app.enroll_totp(&req(subject), &ctx()).await.unwrap();
    let code = h.code(&e.secret_base32, 0);
    match h.app.confirm_totp(subject, &e.factor_id, &code, &ctx()).await.unwrap() {
        ConfirmOutcome::Confirmed { recovery_codes, .. } => {
            let codes = recovery_codes.iter().map(|c| c.to_string()).collect();
            // the confirmation code counts as used: move to the next step
            h.clock.advance(Duration::seconds(30));
            (e, codes)
        }
        other => panic!("confirm failed: {other:?}"),
    }
}

/// Whether a code was accepted.
fn accepted(o: &Outcome) -> bool {
    matches!(o, Outcome::Accepted { .. })
}

/// Every test user's password.
const PW: &str = "correct horse battery staple";

fn token(o: &LoginOutcome) -> String {
    match o {
        LoginOutcome::Authenticated { token, .. } => token.to_string(),
        other => panic!("not authenticated: {other:?}"),
    }
}

fn challenge(o: &LoginOutcome) -> String {
    match o {
        LoginOutcome::SecondFactorRequired { challenge } => challenge.to_string(),
        other => panic!("no challenge: {other:?}"),
    }
}

/// A new user (address vouched for), signed in with the password: the session's token. (The
/// public sign-up signs nobody in: see `signup.rs`.)
async fn signed_up(h: &Harness, email: &str, c: &tessera_app::ClientContext) -> String {
    h.app.create_user(email, PW, c).await.unwrap();
    token(&h.app.begin_login(email, PW, c).await.unwrap())
}

/// Enrol and confirm a device for a user id (a service's enrolment); returns its secret and
/// the recovery codes.
async fn enrol_user(h: &Harness, user: &str) -> (String, Vec<String>) {
    let (e, codes) = active_device(h, user).await;
    (e.secret_base32.to_string(), codes)
}

/// The live session of a token.
async fn sess(h: &Harness, t: &str) -> Session {
    h.app.session(t).await.unwrap().expect("a live session")
}

async fn who(h: &Harness, t: &str) -> Option<(String, Assurance)> {
    h.app.session(t).await.unwrap().map(|s| (s.user_id().to_owned(), s.assurance()))
}

/// A fresh code for `secret`: the clock moves to the next step first, so no code is replayed.
fn fresh(h: &Harness, secret: &str) -> String {
    h.clock.advance(Duration::seconds(30));
    h.code(secret, 0)
}

/// A wrong code for `secret` now (not the current one nor a neighbour).
fn wrong(h: &Harness, secret: &str) -> String {
    let near: Vec<String> = (-1..=1).map(|s| h.code(secret, s)).collect();
    (0..).map(|i| format!("{:06}", 123_456 + i)).find(|c| !near.contains(c)).unwrap()
}

/// Sign in with the password and a fresh code; the session's token.
async fn login_2fa(h: &Harness, email: &str, secret: &str) -> String {
    let ch = challenge(&h.app.begin_login(email, PW, &ctx()).await.unwrap());
    token(&h.app.complete_login_totp(&ch, &fresh(h, secret), &ctx()).await.unwrap())
}

/// A user with an active authenticator (enrolled by a service), signed in with it.
async fn user_2fa(h: &Harness, email: &str) -> (String, String, Vec<String>, String) {
    let uid = h.app.create_user(email, PW, &ctx()).await.unwrap();
    let (secret, codes) = enrol_user(h, &uid).await;
    let t = login_2fa(h, email, &secret).await;
    (uid, secret, codes, t)
}

fn reauth_needed(r: &Result<impl std::fmt::Debug, AppError>) -> Option<Recency> {
    match r {
        Err(AppError::ReauthRequired(n)) => Some(*n),
        _ => None,
    }
}

/// The secret of a user's only active device, read back through a service enrolment is not
/// possible (secrets are never shown again): this helper re-enrols bob deterministically by
/// remembering the secret in the test's own map instead.
async fn enrol_secret_of(h: &Harness, user: &str) -> String {
    // Replace bob's device with one whose secret we know.
    for f in h.app.list_factors(user).await.unwrap() {
        h.app.remove_factor(user, &f.id, &ctx()).await.unwrap();
    }
    enrol_user(h, user).await.0
}
