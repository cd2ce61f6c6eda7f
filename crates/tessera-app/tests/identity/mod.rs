//! Identity, sessions and accounts: the login flow, the step-up model of issue 11 (recent
//! authentication, token rotation, the idle timeout, pending devices owned by their session,
//! first-factor confirmation ending password-only sessions), throttling without a lockout
//! lever for strangers (per address, and the 100-failure ceilings), invitations and roles.
//! Every test runs on SQLite and PostgreSQL with the manual clock.

use crate::{accepted, active_device};
use tessera_app::{AppError, ClientContext, ConfirmOutcome, LoginOutcome, Proof, Session};
use tessera_core::CoreError;
use tessera_core::policy::{AccountAccess, Assurance};
use tessera_core::roles::Role;
use tessera_core::session::Recency;
use tessera_testkit::{Harness, both, ctx, ctx_from};
use time::Duration;

pub(crate) const PW: &str = "correct horse battery staple";

pub(crate) fn token(o: &LoginOutcome) -> String {
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

/// Enrol and confirm a device for a user id (a service's enrolment); returns its secret and
/// the recovery codes.
pub(crate) async fn enrol_user(h: &Harness, user: &str) -> (String, Vec<String>) {
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

// ---- the login flow ----------------------------------------------------------------------

async fn signup_and_login_flow(h: &Harness) {
    let uid = h.app.create_user("Ada@Example.com", PW, &ctx()).await.unwrap();
    // emails are unique case-insensitively; passwords follow the length rule
    assert!(matches!(h.app.create_user(" ada@example.COM", PW, &ctx()).await, Err(AppError::FailedPrecondition(_))));
    assert!(matches!(
        h.app.create_user("bob@example.com", "short", &ctx()).await,
        Err(AppError::Invalid(CoreError::Invalid { field: "password", .. }))
    ));
    assert!(matches!(h.app.create_user("not-an-email", PW, &ctx()).await, Err(AppError::Invalid(_))));

    // no factor, no account requires one: the password is enough
    let o = h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap();
    let LoginOutcome::Authenticated { ref user_id, assurance, ref enrolment_required, ref browser_token, .. } = o
    else {
        panic!("{o:?}")
    };
    assert_eq!((user_id.as_str(), assurance, enrolment_required.len()), (uid.as_str(), Assurance::Password, 0));
    assert!(browser_token.is_some(), "a browser without a known-browser token gets one");
    let t1 = token(&o);
    assert_eq!(who(h, &t1).await, Some((uid.clone(), Assurance::Password)));

    // enrol: now the login needs a code
    let (secret, codes) = enrol_user(h, &uid).await;
    assert_eq!(who(h, &t1).await, None, "a first factor ends the password-only sessions");
    let ch = challenge(&h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap());
    // wrong codes: rejected, then locked, and the challenge is void
    let bad = wrong(h, &secret);
    for left in [4, 3, 2, 1] {
        assert_eq!(
            h.app.complete_login_totp(&ch, &bad, &ctx()).await.unwrap(),
            LoginOutcome::Rejected { attempts_remaining: left }
        );
    }
    assert!(matches!(h.app.complete_login_totp(&ch, &bad, &ctx()).await.unwrap(), LoginOutcome::Locked { .. }));
    h.clock.advance(Duration::minutes(2));
    assert_eq!(
        h.app.complete_login_totp(&ch, &h.code(&secret, 0), &ctx()).await.unwrap(),
        LoginOutcome::ChallengeInvalid,
        "a locked login's challenge is void"
    );
    // a recovery code completes a fresh login, once
    let ch = challenge(&h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap());
    let o = h.app.complete_login_recovery(&ch, &codes[0], &ctx()).await.unwrap();
    let t2 = token(&o);
    assert_eq!(who(h, &t2).await, Some((uid.clone(), Assurance::PasswordAndSecondFactor)));
    // the challenge is single-use
    assert_eq!(h.app.complete_login_recovery(&ch, &codes[1], &ctx()).await.unwrap(), LoginOutcome::ChallengeInvalid);
    let ch = challenge(&h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap());
    assert!(matches!(
        h.app.complete_login_recovery(&ch, &codes[0], &ctx()).await.unwrap(),
        LoginOutcome::Rejected { .. }
    ));
    // TOTP completes a login too; challenges expire after 5 minutes
    let o = h.app.complete_login_totp(&ch, &fresh(h, &secret), &ctx()).await.unwrap();
    assert!(matches!(o, LoginOutcome::Authenticated { assurance: Assurance::PasswordAndSecondFactor, .. }));
    let ch = challenge(&h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap());
    h.clock.advance(Duration::minutes(5));
    assert_eq!(
        h.app.complete_login_totp(&ch, &h.code(&secret, 0), &ctx()).await.unwrap(),
        LoginOutcome::ChallengeInvalid
    );

    // logout, and sign out everywhere (a service's call: an unknown user is NOT_FOUND)
    let t3 = token(&o);
    assert!(h.app.logout(&t3, &ctx()).await.unwrap());
    assert!(!h.app.logout(&t3, &ctx()).await.unwrap(), "a revoked session cannot be revoked again");
    assert_eq!(who(h, &t3).await, None);
    assert_eq!(h.app.logout_everywhere(&uid, &ctx()).await.unwrap(), 1);
    assert_eq!(who(h, &t2).await, None);
    assert!(matches!(h.app.logout_everywhere("no-such-user", &ctx()).await, Err(AppError::NotFound("user"))));

    let (events, _) = h.app.list_audit_events(&uid, 100, "").await.unwrap();
    for kind in ["user_created", "login_succeeded", "second_factor_challenged", "challenges_voided", "sessions_revoked"]
    {
        assert!(events.iter().any(|e| e.kind == kind), "no {kind} event");
    }
}
both!(signup_and_login_flow);

async fn passwords_and_codes_have_separate_counters(h: &Harness) {
    let uid = h.app.create_user("cy@example.com", PW, &ctx()).await.unwrap();
    let (secret, _) = enrol_user(h, &uid).await;
    for _ in 0..4 {
        assert_eq!(
            h.app.begin_login("cy@example.com", "wrong password!!", &ctx()).await.unwrap(),
            LoginOutcome::Failed
        );
    }
    assert!(matches!(
        h.app.begin_login("cy@example.com", "wrong password!!", &ctx()).await.unwrap(),
        LoginOutcome::Locked { .. }
    ));
    // the password lock does not touch the authenticator
    let st = h.store.attempt_state(&uid, tessera_store::SECOND_FACTOR).await.unwrap();
    assert_eq!(st, Default::default());
    assert!(accepted(&h.app.verify_totp(&uid, &h.code(&secret, 0), &ctx()).await.unwrap()));
    // once the password lock ends, the right password works
    h.clock.advance(Duration::minutes(1));
    assert!(matches!(
        h.app.begin_login("cy@example.com", PW, &ctx()).await.unwrap(),
        LoginOutcome::SecondFactorRequired { .. }
    ));
}
both!(passwords_and_codes_have_separate_counters);

async fn unknown_email_costs_one_hash_and_answers_the_same(h: &Harness) {
    h.app.create_user("dee@example.com", PW, &ctx()).await.unwrap();
    let before = h.app.password_verifications();
    let wrong = h.app.begin_login("dee@example.com", "not the password", &ctx()).await.unwrap();
    let after_wrong = h.app.password_verifications();
    let unknown = h.app.begin_login("nobody@example.com", "not the password", &ctx()).await.unwrap();
    let after_unknown = h.app.password_verifications();
    assert_eq!(after_wrong - before, 1, "a wrong password costs one verification");
    assert_eq!(after_unknown - after_wrong, 1, "an unknown email costs one verification too");
    assert_eq!(wrong, LoginOutcome::Failed);
    assert_eq!(format!("{wrong:?}"), format!("{unknown:?}"), "byte-identical answers");
    // and unknown emails lock like known ones (lockouts reveal nothing)
    for _ in 0..4 {
        h.app.begin_login("nobody@example.com", "x", &ctx()).await.unwrap();
    }
    assert!(matches!(h.app.begin_login("nobody@example.com", "x", &ctx()).await.unwrap(), LoginOutcome::Locked { .. }));
}
both!(unknown_email_costs_one_hash_and_answers_the_same);

// ---- throttling without a lockout lever ---------------------------------------------------

/// A stranger's wrong passwords lock their address, not the owner's: the correct password
/// still works from elsewhere. IPv6 addresses count per /64.
async fn password_failures_lock_per_address(h: &Harness) {
    h.app.create_user("ada@example.com", PW, &ctx()).await.unwrap();
    let stranger = ctx_from("198.51.100.7");
    for _ in 0..4 {
        assert_eq!(
            h.app.begin_login("ada@example.com", "guess guess guess", &stranger).await.unwrap(),
            LoginOutcome::Failed
        );
    }
    assert!(matches!(
        h.app.begin_login("ada@example.com", "guess guess guess", &stranger).await.unwrap(),
        LoginOutcome::Locked { .. }
    ));
    assert!(
        matches!(h.app.begin_login("ada@example.com", PW, &stranger).await.unwrap(), LoginOutcome::Locked { .. }),
        "the guesser's address stays locked even with the right password"
    );
    let o = h.app.begin_login("ada@example.com", PW, &ctx_from("203.0.113.9")).await.unwrap();
    assert!(matches!(o, LoginOutcome::Authenticated { .. }), "the owner elsewhere is not locked out: {o:?}");

    // one IPv6 /64 is one address
    for i in 1..=5 {
        h.app
            .begin_login("ada@example.com", "guess guess guess", &ctx_from(&format!("2001:db8:0:7::{i}")))
            .await
            .unwrap();
    }
    assert!(matches!(
        h.app.begin_login("ada@example.com", PW, &ctx_from("2001:db8:0:7::99")).await.unwrap(),
        LoginOutcome::Locked { .. }
    ));
    assert!(matches!(
        h.app.begin_login("ada@example.com", PW, &ctx_from("2001:db8:0:8::1")).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
}
both!(password_failures_lock_per_address);

/// At 100 consecutive failures for an email, from any mix of addresses, password sign-in is
/// refused except from a browser that signed the user in before; the user is told once; a
/// success resets it. Unknown emails get the same answer.
async fn hundred_password_failures_suspend_sign_in(h: &Harness) {
    let uid = h.app.create_user("ada@example.com", PW, &ctx()).await.unwrap();
    let o = h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap();
    let LoginOutcome::Authenticated { browser_token: Some(known), .. } = o else { panic!("{o:?}") };
    let limit = h.app.config().password_throttle.suspend_after;
    assert_eq!(limit, 100, "NIST 800-63B's ceiling is the default");
    let guess_all = |email: &'static str| async move {
        // 5 failures lock an address: spread the guesses over enough addresses.
        for i in 0..limit {
            let o = h
                .app
                .begin_login(email, "guess guess guess", &ctx_from(&format!("10.1.{}.{}", i / 5, 1)))
                .await
                .unwrap();
            assert!(matches!(o, LoginOutcome::Failed | LoginOutcome::Locked { .. }), "{o:?}");
        }
    };
    guess_all("ada@example.com").await;
    let notices = h.store.unsent_notifications(100).await.unwrap();
    assert_eq!(
        notices.iter().filter(|n| n.1 == "ada@example.com" && n.2 == "password_suspended").count(),
        1,
        "the user is told, once"
    );
    let (events, _) = h.app.list_audit_events(&uid, 100, "").await.unwrap();
    assert!(events.iter().any(|e| e.kind == "password_sign_in_suspended"));

    // The right password from a new address, a new browser, or a made-up browser token: refused.
    let before = h.app.password_verifications();
    assert_eq!(
        h.app.begin_login("ada@example.com", PW, &ctx_from("192.0.2.1")).await.unwrap(),
        LoginOutcome::Suspended
    );
    let forged = ClientContext { browser: Some("A".repeat(43)), ..ctx_from("192.0.2.2") };
    assert_eq!(h.app.begin_login("ada@example.com", PW, &forged).await.unwrap(), LoginOutcome::Suspended);
    assert_eq!(h.app.password_verifications(), before, "a suspended attempt is not even checked");
    // An unknown email answers the same once it has had as many failures.
    guess_all("nobody@example.com").await;
    assert_eq!(
        h.app.begin_login("nobody@example.com", PW, &ctx_from("192.0.2.3")).await.unwrap(),
        LoginOutcome::Suspended
    );

    // The browser that signed Ada in before may still sign her in, and that success lifts it.
    let browser = ClientContext { browser: Some(known.to_string()), ..ctx_from("192.0.2.4") };
    assert!(matches!(
        h.app.begin_login("ada@example.com", PW, &browser).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
    assert!(matches!(
        h.app.begin_login("ada@example.com", PW, &ctx_from("192.0.2.5")).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
}
both!(hundred_password_failures_suspend_sign_in);

/// Second-factor failures no longer reset at each lock: at 100 consecutive ones the TOTP
/// devices are taken out of use (recovery codes still work), the user is told, and a new
/// device can be set up after signing in with a recovery code.
async fn hundred_code_failures_disable_totp(h: &Harness) {
    let uid = h.app.create_user("ada@example.com", PW, &ctx()).await.unwrap();
    let (secret, codes) = enrol_user(h, &uid).await;
    let bad = wrong(h, &secret);
    for _ in 0..100 {
        // Wait out each lock: only attempts the gate admits count.
        let st = h.store.attempt_state(&uid, tessera_store::SECOND_FACTOR).await.unwrap();
        if let Some(until) = st.locked_until.filter(|u| *u > h.clock_now_dt()) {
            h.clock.set(until);
        }
        let o = h.app.verify_totp(&uid, &bad, &ctx()).await.unwrap();
        assert!(matches!(o, tessera_app::Outcome::Rejected { .. } | tessera_app::Outcome::Locked { .. }), "{o:?}");
    }
    let st = h.store.attempt_state(&uid, tessera_store::SECOND_FACTOR).await.unwrap();
    assert_eq!(st.total_failures, 100, "the total survives the locks");
    let factors = h.app.list_factors(&uid).await.unwrap();
    assert!(factors[0].disabled_at.is_some(), "the device is out of use");
    assert_eq!(factors[0].status, tessera_core::factor::FactorStatus::Active, "but still the user's factor");
    let notices = h.store.unsent_notifications(10).await.unwrap();
    assert_eq!(notices.iter().filter(|n| n.2 == "totp_disabled").count(), 1);

    // Signing in still needs a second factor; the app's code does not work; a recovery code does.
    h.clock.advance(Duration::hours(2));
    assert!(
        !accepted(&h.app.verify_totp(&uid, &h.code(&secret, 0), &ctx()).await.unwrap()),
        "a disabled device's right code is refused"
    );
    h.clock.advance(Duration::hours(2));
    let ch = challenge(&h.app.begin_login("ada@example.com", PW, &ctx()).await.unwrap());
    assert_eq!(h.app.complete_login_totp(&ch, &fresh(h, &secret), &ctx()).await.unwrap(), LoginOutcome::TotpDisabled);
    let t = token(&h.app.complete_login_recovery(&ch, &codes[0], &ctx()).await.unwrap());
    assert_eq!(h.store.attempt_state(&uid, tessera_store::SECOND_FACTOR).await.unwrap().total_failures, 0);
    // Re-enrol after signing in with another factor: remove the old device, add a new one.
    let s = sess(h, &t).await;
    h.app.remove_device(&s, &factors[0].id, &ctx()).await.unwrap();
    let e = h.app.add_totp_device(&s, "New phone", &ctx()).await.unwrap();
    let code = h.code(&e.secret_base32, 0);
    assert!(matches!(
        h.app.confirm_totp_device(&s, &e.factor_id, &code, &ctx()).await.unwrap(),
        ConfirmOutcome::Confirmed { .. }
    ));
    assert!(accepted(&h.app.verify_totp(&uid, &fresh(h, &e.secret_base32), &ctx()).await.unwrap()));
}
both!(hundred_code_failures_disable_totp);

// ---- sessions: recent authentication, rotation, idle timeout -----------------------------

/// The attack of issue 11, at the use cases: a stale password-only session cannot mint its own
/// authenticator, see another session's setup, or survive the user's first factor.
async fn a_stale_session_cannot_become_a_second_factor(h: &Harness) {
    let c = ctx();
    // Ada signs up (session A, password only) and leaves that browser open.
    let a = token(&h.app.sign_up("ada@example.com", PW, &c).await.unwrap());
    h.clock.advance(Duration::minutes(20));
    let sa = sess(h, &a).await;
    // A is too old to add a factor: it must prove the password again first.
    assert_eq!(reauth_needed(&h.app.add_totp_device(&sa, "Attacker", &c).await), Some(Recency::NeedPassword));
    // Later, in another browser (B), she signs in and starts setting up an authenticator.
    let b = token(&h.app.begin_login("ada@example.com", PW, &c).await.unwrap());
    let c_tok = token(&h.app.begin_login("ada@example.com", PW, &c).await.unwrap());
    let sb = sess(h, &b).await;
    let e = h.app.add_totp_device(&sb, "Phone", &c).await.unwrap();
    // No other session sees its key or can finish it, even a fresh one; they may only cancel it.
    let sc = sess(h, &c_tok).await;
    for s in [&sa, &sc] {
        assert!(matches!(h.app.pending_totp_device(s, &e.factor_id).await, Err(AppError::NotFound(_))));
    }
    let code = h.code(&e.secret_base32, 0);
    assert!(matches!(h.app.confirm_totp_device(&sc, &e.factor_id, &code, &c).await, Err(AppError::NotFound(_))));
    assert_eq!(
        reauth_needed(&h.app.confirm_totp_device(&sa, &e.factor_id, &code, &c).await),
        Some(Recency::NeedPassword)
    );
    let devices = h.app.devices(&sc).await.unwrap();
    assert_eq!(devices[0].started_in.as_deref(), Some(sb.id()), "listed as another session's setup");
    // B sees it again and confirms it: her first factor. B is raised under a new token; every
    // other session — opened with the password alone — ends.
    assert_eq!(h.app.pending_totp_device(&sb, &e.factor_id).await.unwrap().secret_base32, e.secret_base32);
    let ConfirmOutcome::Confirmed { recovery_codes, sessions_revoked, session_token: Some(b2), .. } =
        h.app.confirm_totp_device(&sb, &e.factor_id, &code, &c).await.unwrap()
    else {
        panic!("not confirmed")
    };
    assert_eq!((recovery_codes.len(), sessions_revoked), (10, 2));
    assert_eq!(who(h, &a).await, None, "the stale session is signed out");
    assert_eq!(who(h, &c_tok).await, None);
    assert_eq!(who(h, &b).await, None, "B's old token stopped working");
    let sb2 = sess(h, &b2).await;
    assert_eq!((sb2.id(), sb2.assurance()), (sb.id(), Assurance::PasswordAndSecondFactor), "same session, new token");
    // Ada is told, from where, and that her other sessions were signed out.
    let notices = h.store.unsent_notifications(100).await.unwrap();
    let added = notices.iter().find(|n| n.1 == "ada@example.com" && n.2 == "factor_added").expect("a notice");
    assert!(added.3.contains("\"sessions_revoked\":2") && added.3.contains("203.0.113.7"), "{}", added.3);
    // A stale session's requests keep failing: nothing resolves from its token any more, so it
    // gets no key, no recovery codes and no account content.
    assert!(h.app.session(&a).await.unwrap().is_none());

    // A service's first-factor confirmation ends password-only sessions too.
    let bob = h.app.create_user("bob@example.com", PW, &c).await.unwrap();
    let tb = token(&h.app.begin_login("bob@example.com", PW, &c).await.unwrap());
    enrol_user(h, &bob).await;
    assert_eq!(who(h, &tb).await, None);
    // And a setup a service started is not a page session's to see.
    let fresh_b = login_2fa(h, "bob@example.com", &enrol_secret_of(h, &bob).await).await;
    let e = h.app.enroll_totp(&crate::req(&bob), &c).await.unwrap();
    assert!(matches!(
        h.app.pending_totp_device(&sess(h, &fresh_b).await, &e.factor_id).await,
        Err(AppError::NotFound(_))
    ));
}
both!(a_stale_session_cannot_become_a_second_factor);

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

/// Sensitive actions need a second factor proven within the window (15 minutes by default);
/// re-authentication proves one again under a new token. A user without a factor re-enters
/// the password instead.
async fn reauth_window_edges(h: &Harness) {
    let c = ctx();
    let (uid, secret, codes, t) = user_2fa(h, "ada@example.com").await;
    let window = h.app.config().sessions.reauth_window;
    assert_eq!(window, Duration::minutes(15));
    h.clock.advance(window - Duration::seconds(1));
    // Idle timeout: keep the session alive as a user would.
    let s = sess(h, &t).await;
    let e = h.app.add_totp_device(&s, "Spare", &c).await.unwrap();
    h.app.remove_device(&s, &e.factor_id, &c).await.unwrap();
    h.clock.advance(Duration::seconds(1));
    let s = sess(h, &t).await;
    // Exactly the window later: every sensitive action asks for a second factor again.
    assert_eq!(reauth_needed(&h.app.add_totp_device(&s, "x", &c).await), Some(Recency::NeedSecondFactor));
    assert_eq!(reauth_needed(&h.app.new_recovery_codes(&s, &c).await), Some(Recency::NeedSecondFactor));
    let device = h.app.list_factors(&uid).await.unwrap().remove(0);
    assert_eq!(reauth_needed(&h.app.remove_device(&s, &device.id, &c).await), Some(Recency::NeedSecondFactor));
    assert_eq!(reauth_needed(&h.app.logout_others(&s, &c).await), Some(Recency::NeedSecondFactor));
    let acct = h.app.create_account(&s, "Acme", &c).await.unwrap();
    assert_eq!(
        reauth_needed(&h.app.set_account_policy(&s, &acct, true, None, &c).await),
        Some(Recency::NeedSecondFactor)
    );
    assert_eq!(
        reauth_needed(&h.app.invite_member(&s, &acct, "bob@example.com", Role::Member, &c).await),
        Some(Recency::NeedSecondFactor)
    );
    // The password is not a second factor.
    assert!(matches!(h.app.reauthenticate(&s, Proof::Password(PW), &c).await, Err(AppError::Invalid(_))));
    // A wrong code counts like any other; a right one rotates the token.
    assert_eq!(
        h.app.reauthenticate(&s, Proof::Totp(&wrong(h, &secret)), &c).await.unwrap(),
        LoginOutcome::Rejected { attempts_remaining: 4 }
    );
    let t2 = token(&h.app.reauthenticate(&s, Proof::Totp(&fresh(h, &secret)), &c).await.unwrap());
    assert_eq!(who(h, &t).await, None, "the old token stopped working");
    let s2 = sess(h, &t2).await;
    assert_eq!(s2.id(), s.id());
    assert_eq!(s2.second_factor_verified_at(), Some(h.clock_now_dt()));
    h.app.new_recovery_codes(&s2, &c).await.unwrap();
    // A recovery code re-authenticates too (and is used up).
    h.clock.advance(window);
    let s2 = sess(h, &t2).await;
    assert!(reauth_needed(&h.app.new_recovery_codes(&s2, &c).await).is_some());
    assert!(
        matches!(
            h.app.reauthenticate(&s2, Proof::RecoveryCode(&codes[0]), &c).await.unwrap(),
            LoginOutcome::Rejected { .. }
        ),
        "the old batch was replaced above"
    );
    let new_codes = h.app.regenerate_recovery_codes(&uid, &c).await.unwrap();
    let t3 = token(&h.app.reauthenticate(&s2, Proof::RecoveryCode(&new_codes[0]), &c).await.unwrap());
    h.app.new_recovery_codes(&sess(h, &t3).await, &c).await.unwrap();

    // A user without a factor confirms with the password.
    let t = token(&h.app.sign_up("bob@example.com", PW, &c).await.unwrap());
    h.clock.advance(window - Duration::seconds(1));
    let s = sess(h, &t).await;
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    h.app.remove_device(&s, &e.factor_id, &c).await.unwrap();
    h.clock.advance(Duration::seconds(1));
    let s = sess(h, &t).await;
    assert_eq!(reauth_needed(&h.app.add_totp_device(&s, "Phone", &c).await), Some(Recency::NeedPassword));
    assert!(matches!(h.app.reauthenticate(&s, Proof::Totp("123456"), &c).await, Err(AppError::Invalid(_))));
    assert_eq!(h.app.reauthenticate(&s, Proof::Password("not my password"), &c).await.unwrap(), LoginOutcome::Failed);
    let t2 = token(&h.app.reauthenticate(&s, Proof::Password(PW), &c).await.unwrap());
    assert_eq!(who(h, &t).await, None);
    h.app.add_totp_device(&sess(h, &t2).await, "Phone", &c).await.unwrap();
}
both!(reauth_window_edges);

/// A new token at every level change and re-authentication; the session's id stays.
async fn tokens_rotate_at_every_level_change(h: &Harness) {
    let c = ctx();
    let t1 = token(&h.app.sign_up("ada@example.com", PW, &c).await.unwrap());
    let s1 = sess(h, &t1).await;
    assert_eq!(s1.assurance(), Assurance::Password);
    let e = h.app.add_totp_device(&s1, "Phone", &c).await.unwrap();
    let ConfirmOutcome::Confirmed { session_token: Some(t2), .. } =
        h.app.confirm_totp_device(&s1, &e.factor_id, &h.code(&e.secret_base32, 0), &c).await.unwrap()
    else {
        panic!("no new token")
    };
    assert_ne!(t1, *t2);
    assert_eq!(who(h, &t1).await, None);
    let s2 = sess(h, &t2).await;
    assert_eq!((s2.id(), s2.assurance()), (s1.id(), Assurance::PasswordAndSecondFactor));
    // A second device confirmed in a raised session changes no level: no new token.
    let e2 = h.app.add_totp_device(&s2, "Tablet", &c).await.unwrap();
    let ConfirmOutcome::Confirmed { session_token, sessions_revoked, recovery_codes, .. } =
        h.app.confirm_totp_device(&s2, &e2.factor_id, &h.code(&e2.secret_base32, 0), &c).await.unwrap()
    else {
        panic!("not confirmed")
    };
    assert!(session_token.is_none() && recovery_codes.is_empty());
    assert_eq!(sessions_revoked, 0);
    assert!(who(h, &t2).await.is_some());
    // Re-authentication rotates (covered in reauth_window_edges) and so does every sign-in.
    let t3 = token(&h.app.reauthenticate(&s2, Proof::Totp(&fresh(h, &e.secret_base32)), &c).await.unwrap());
    assert_ne!(*t2, t3);
    assert_eq!(who(h, &t2).await, None);
}
both!(tokens_rotate_at_every_level_change);

/// A session unused for the idle timeout ends; one in use ends at its absolute lifetime; the
/// last-seen time is written at most once a minute.
async fn idle_timeout_and_lifetime(h: &Harness) {
    let c = ctx();
    let t = token(&h.app.sign_up("ada@example.com", PW, &c).await.unwrap());
    let p = h.app.config().sessions;
    assert_eq!((p.idle_timeout, p.lifetime), (Duration::minutes(30), Duration::hours(12)));
    let opened = sess(h, &t).await.last_seen_at();
    h.clock.advance(Duration::seconds(59));
    assert_eq!(sess(h, &t).await.last_seen_at(), opened, "not written again within the minute");
    h.clock.advance(Duration::seconds(1));
    sess(h, &t).await; // written now
    assert_eq!(sess(h, &t).await.last_seen_at(), h.clock_now_dt());
    h.clock.advance(p.idle_timeout - Duration::seconds(1));
    assert!(who(h, &t).await.is_some(), "one second before the idle timeout");
    h.clock.advance(p.idle_timeout);
    assert_eq!(who(h, &t).await, None, "idle for the whole timeout");
    assert!(!h.app.logout(&t, &c).await.unwrap());

    // In use every 20 minutes, it still ends at its absolute lifetime.
    let t = token(&h.app.begin_login("ada@example.com", PW, &c).await.unwrap());
    let start = h.clock_now_dt();
    while h.clock_now_dt() + Duration::minutes(20) < start + p.lifetime {
        h.clock.advance(Duration::minutes(20));
        assert!(who(h, &t).await.is_some());
    }
    h.clock.set(start + p.lifetime);
    assert_eq!(who(h, &t).await, None);
}
both!(idle_timeout_and_lifetime);

/// The user's sessions are listed; each can be signed out (another one only recently
/// authenticated; never another user's).
async fn sessions_list_and_sign_out(h: &Harness) {
    let c = ctx();
    let (_, secret, _, t1) = user_2fa(h, "ada@example.com").await;
    let t2 = login_2fa(h, "ada@example.com", &secret).await;
    let (_, _, _, other) = user_2fa(h, "bob@example.com").await;
    let s1 = sess(h, &t1).await;
    let list = h.app.sessions_of(&s1).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|(_, current)| *current).count(), 1);
    let (s2, _) = list.iter().find(|(s, _)| s.id() != s1.id()).unwrap();
    assert_eq!((s2.ip(), s2.user_agent()), (Some("203.0.113.7"), Some("suite/1.0")));
    let bob = sess(h, &other).await;
    assert!(matches!(h.app.revoke_session(&s1, bob.id(), &c).await, Err(AppError::NotFound(_))), "not Ada's");
    assert!(who(h, &other).await.is_some());
    h.clock.advance(Duration::minutes(16));
    let s1 = sess(h, &t1).await;
    let s2_id = s2.id().to_owned();
    assert!(reauth_needed(&h.app.revoke_session(&s1, &s2_id, &c).await).is_some());
    let t1 = token(&h.app.reauthenticate(&s1, Proof::Totp(&fresh(h, &secret)), &c).await.unwrap());
    let s1 = sess(h, &t1).await;
    h.app.revoke_session(&s1, &s2_id, &c).await.unwrap();
    assert_eq!(who(h, &t2).await, None);
    // Signing itself out needs nothing recent.
    h.clock.advance(Duration::minutes(16));
    let s1 = sess(h, &t1).await;
    h.app.revoke_session(&s1, s1.id(), &c).await.unwrap();
    assert_eq!(who(h, &t1).await, None);
}
both!(sessions_list_and_sign_out);

/// A pending device expires after 15 minutes; the page's own setup is shown again with the
/// same key, a finished one never.
async fn pending_devices_belong_to_their_session_and_expire(h: &Harness) {
    let c = ctx();
    let before = h.app.password_verifications();
    let o = h.app.sign_up("sam@example.com", PW, &c).await.unwrap();
    assert_eq!(h.app.password_verifications(), before, "sign-up runs no password verification");
    assert!(matches!(h.app.sign_up("SAM@example.com", PW, &c).await, Err(AppError::FailedPrecondition(_))));
    let s = sess(h, &token(&o)).await;
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    let again = h.app.pending_totp_device(&s, &e.factor_id).await.unwrap();
    assert_eq!((again.secret_base32, again.otpauth_uri), (e.secret_base32.clone(), e.otpauth_uri.clone()));
    h.clock.advance(tessera_app::PENDING_TTL);
    let s = sess(h, &token(&h.app.begin_login("sam@example.com", PW, &c).await.unwrap())).await;
    // (a new session: the old one idled out) — and the setup has expired for everyone
    assert!(h.app.devices(&s).await.unwrap().is_empty(), "an expired setup is not listed");
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    h.clock.advance(tessera_app::PENDING_TTL - Duration::seconds(1));
    let s = sess(h, &token(&h.app.begin_login("sam@example.com", PW, &c).await.unwrap())).await;
    let e2 = h.app.add_totp_device(&s, "Phone 2", &c).await.unwrap();
    h.clock.advance(Duration::seconds(1));
    assert!(matches!(
        h.app.confirm_totp_device(&s, &e.factor_id, &h.code(&e.secret_base32, 0), &c).await,
        Err(AppError::NotFound(_) | AppError::FailedPrecondition(_))
    ));
    let ConfirmOutcome::Confirmed { .. } =
        h.app.confirm_totp_device(&s, &e2.factor_id, &h.code(&e2.secret_base32, 0), &c).await.unwrap()
    else {
        panic!()
    };
    assert!(matches!(h.app.pending_totp_device(&s, &e2.factor_id).await, Err(AppError::FailedPrecondition(_))));
}
both!(pending_devices_belong_to_their_session_and_expire);

// ---- accounts: access, invitations, roles ------------------------------------------------

/// The ids of the queued notices.
async fn notice_ids(h: &Harness) -> std::collections::HashSet<String> {
    h.store.unsent_notifications(10_000).await.unwrap().into_iter().map(|n| n.0).collect()
}

/// Invite `email` and return the invitation's id and the code the mail to it carried (the
/// test's mailbox: the outbox). Panics when no new mail went out.
async fn invite_mail(h: &Harness, by: &Session, acct: &str, email: &str, role: Role) -> (String, String) {
    let before = notice_ids(h).await;
    let id = h.app.invite_member(by, acct, email, role, &ctx()).await.unwrap();
    let mails = h.store.unsent_notifications(10_000).await.unwrap();
    let m = mails.iter().find(|m| !before.contains(&m.0)).expect("an invitation mail");
    assert_eq!((m.1.as_str(), m.2.as_str()), (email, "invitation"));
    let detail: serde_json::Value = serde_json::from_str(&m.3).unwrap();
    (id, detail["code"].as_str().unwrap().to_owned())
}

/// Invite and accept (with the mailed code); the inviter's role rechecked at acceptance.
async fn invite(h: &Harness, by: &Session, acct: &str, email: &str, role: Role, accept_with: &str) {
    let (id, code) = invite_mail(h, by, acct, email, role).await;
    let s = sess(h, accept_with).await;
    assert_eq!(h.app.accept_invitation(&s, &id, &code, &ctx()).await.unwrap(), acct);
}

async fn accounts_and_the_mfa_decision(h: &Harness) {
    let c = ctx();
    let (_, _, _, to) = user_2fa(h, "owner@example.com").await;
    let so = sess(h, &to).await;
    let member = h.app.create_user("member@example.com", PW, &c).await.unwrap();
    let t = token(&h.app.begin_login("member@example.com", PW, &c).await.unwrap());
    let a1 = h.app.create_account(&so, "Acme", &c).await.unwrap();
    let a2 = h.app.create_account(&so, "Beta", &c).await.unwrap();
    let a3 = h.app.create_account(&so, "Gamma", &c).await.unwrap();
    for a in [&a1, &a2, &a3] {
        invite(h, &so, a, "member@example.com", Role::Member, &t).await;
    }

    // policy turned on mid-session closes the account at once
    assert_eq!(h.app.account_access(&t, &a2).await.unwrap(), AccountAccess::Open);
    h.app.set_account_policy(&so, &a2, true, None, &c).await.unwrap();
    assert_eq!(h.app.account_access(&t, &a2).await.unwrap(), AccountAccess::EnrolmentRequired);
    assert_eq!(h.app.account_access(&t, &a1).await.unwrap(), AccountAccess::Open);

    // no factor + 1 of 3 accounts requires: the login completes, that account is closed
    let o = h.app.begin_login("member@example.com", PW, &c).await.unwrap();
    let LoginOutcome::Authenticated { ref enrolment_required, .. } = o else { panic!("{o:?}") };
    assert_eq!(enrolment_required, &vec![a2.clone()]);

    // a grace period keeps it open until the deadline
    let deadline = h.clock_now_dt() + Duration::days(7);
    h.app.set_account_policy(&so, &a2, true, Some(deadline), &c).await.unwrap();
    assert_eq!(h.app.account_access(&t, &a2).await.unwrap(), AccountAccess::OpenUntil(deadline));
    h.clock.advance(Duration::days(8));
    let t = token(&h.app.begin_login("member@example.com", PW, &c).await.unwrap());
    assert_eq!(h.app.account_access(&t, &a2).await.unwrap(), AccountAccess::EnrolmentRequired);

    // the member enrols in this session: it is raised (new token), the account opens
    let s = sess(h, &t).await;
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    let ConfirmOutcome::Confirmed { session_token: Some(t2), .. } =
        h.app.confirm_totp_device(&s, &e.factor_id, &h.code(&e.secret_base32, 0), &c).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(h.app.account_access(&t2, &a2).await.unwrap(), AccountAccess::Open);

    // removing the last factor ends the session's second-factor claim
    let s2 = sess(h, &t2).await;
    h.app.remove_device(&s2, &e.factor_id, &c).await.unwrap();
    assert_eq!(sess(h, &t2).await.assurance(), Assurance::Password);
    assert_eq!(h.app.account_access(&t2, &a2).await.unwrap(), AccountAccess::EnrolmentRequired);

    // not a member, or no such session
    let t3 = token(&h.app.sign_up("out@example.com", PW, &c).await.unwrap());
    assert!(matches!(h.app.account_access(&t3, &a1).await, Err(AppError::NotFound(_))));
    assert!(matches!(h.app.account_access("no-such-token", &a1).await, Err(AppError::NotFound(_))));
    let _ = member;
}
both!(accounts_and_the_mfa_decision);

/// Inviting answers the same for registered and unknown emails and says nothing about MFA;
/// only the invited mailbox accepts (the mailed code, signed in with that email); the
/// inviter's role counts at acceptance; invitations expire after 7 days; mail is capped.
async fn invitations(h: &Harness) {
    let c = ctx();
    let (_, _, _, to) = user_2fa(h, "owner@example.com").await;
    let so = sess(h, &to).await;
    let acct = h.app.create_account(&so, "Acme", &c).await.unwrap();
    let known = h.app.create_user("known@example.com", PW, &c).await.unwrap();
    enrol_user(h, &known).await; // has MFA: nobody should learn it from an invitation

    let (inv_known, code_known) = invite_mail(h, &so, &acct, "known@example.com", Role::Member).await;
    let (inv_unknown, code_unknown) = invite_mail(h, &so, &acct, "unknown@example.com", Role::Member).await;
    let mails = h.store.unsent_notifications(1000).await.unwrap();
    let words = |code: &str| {
        let m = mails.iter().find(|m| m.3.contains(code)).unwrap();
        (m.2.clone(), m.3.replace(code, "CODE"))
    };
    assert_eq!(words(&code_known), words(&code_unknown), "the same message to a user and to a stranger");
    let invited = h.app.account_invitations(&so, &acct).await.unwrap();
    assert_eq!(invited.len(), 2);
    // An invitation row carries no user id and no MFA state: the two differ only in address.
    assert_eq!((invited[0].role, &invited[0].account_name), (invited[1].role, &invited[1].account_name));
    assert_eq!(h.app.members(&so, &acct).await.unwrap().len(), 1, "invited is not a member yet");

    // Inviting again refreshes the open invitation; no second mail today, the code stays.
    let before = notice_ids(h).await.len();
    assert_eq!(h.app.invite_member(&so, &acct, "unknown@example.com", Role::Admin, &c).await.unwrap(), inv_unknown);
    assert_eq!(notice_ids(h).await.len(), before);

    // Someone who signs up with the invited address first cannot take the invitation: it needs
    // the code from the mailbox. Nor can they decline it for its owner.
    let squat = token(&h.app.sign_up("Unknown@Example.com", PW, &c).await.unwrap());
    let squat = sess(h, &squat).await;
    assert_eq!(h.app.my_invitations(&squat).await.unwrap().len(), 1, "listed, to be accepted with its code");
    for guess in ["AAAA-AAAA-AAAA-AAAA", code_known.as_str()] {
        assert!(matches!(h.app.accept_invitation(&squat, &inv_unknown, guess, &c).await, Err(AppError::NotFound(_))));
        assert!(matches!(h.app.decline_invitation(&squat, &inv_unknown, guess, &c).await, Err(AppError::NotFound(_))));
    }
    assert!(matches!(h.app.accept_invitation(&squat, &inv_unknown, "not a code", &c).await, Err(AppError::Invalid(_))));
    // Another user with the code but another email cannot either.
    let other = token(&h.app.sign_up("other@example.com", PW, &c).await.unwrap());
    let so_other = sess(h, &other).await;
    assert!(matches!(
        h.app.accept_invitation(&so_other, &inv_known, &code_known, &c).await,
        Err(AppError::NotFound(_))
    ));
    // The invited person, signed in with that email, with the code: in.
    let tk = token(
        &h.app
            .complete_login_recovery(
                &challenge(&h.app.begin_login("known@example.com", PW, &c).await.unwrap()),
                &enrol_codes_of(h, &known).await,
                &c,
            )
            .await
            .unwrap(),
    );
    let sk = sess(h, &tk).await;
    let mine = h.app.my_invitations(&sk).await.unwrap();
    assert_eq!((mine.len(), mine[0].account_name.as_str(), mine[0].role), (1, "Acme", Role::Member));
    assert_eq!(h.app.accept_invitation(&sk, &inv_known, &code_known, &c).await.unwrap(), acct);
    assert!(
        matches!(h.app.accept_invitation(&sk, &inv_known, &code_known, &c).await, Err(AppError::NotFound(_))),
        "once"
    );
    let members = h.app.members(&so, &acct).await.unwrap();
    assert!(members.iter().any(|m| m.user_id == known && m.role == Role::Member && m.has_mfa));

    // Members and admins: a member may not invite or cancel; an admin may not invite an owner.
    assert!(matches!(
        h.app.invite_member(&sk, &acct, "x@example.com", Role::Member, &c).await,
        Err(AppError::Forbidden(_))
    ));
    assert!(matches!(h.app.cancel_invitation(&sk, &acct, &inv_unknown, &c).await, Err(AppError::Forbidden(_))));
    assert!(matches!(
        h.app.invite_member(&so_other, &acct, "x@example.com", Role::Member, &c).await,
        Err(AppError::NotFound(_))
    ));
    h.app.change_member_role(&so, &acct, &known, Role::Admin, &c).await.unwrap();
    assert!(matches!(
        h.app.invite_member(&sk, &acct, "x@example.com", Role::Owner, &c).await,
        Err(AppError::Forbidden(_))
    ));
    // The inviter's role is checked again at acceptance.
    let (inv, code) = invite_mail(h, &sk, &acct, "other@example.com", Role::Admin).await;
    h.app.change_member_role(&so, &acct, &known, Role::Member, &c).await.unwrap();
    assert!(matches!(h.app.accept_invitation(&so_other, &inv, &code, &c).await, Err(AppError::FailedPrecondition(_))));
    // The invitee may decline with the code; an admin may cancel (recently authenticated).
    h.app.decline_invitation(&so_other, &inv, &code, &c).await.unwrap();
    assert!(matches!(h.app.accept_invitation(&so_other, &inv, &code, &c).await, Err(AppError::NotFound(_))));
    h.clock.advance(Duration::minutes(16));
    let so = sess(h, &to).await;
    assert!(reauth_needed(&h.app.cancel_invitation(&so, &acct, &inv_unknown, &c).await).is_some());
    let so = sess(h, &login_2fa_known(h, "owner@example.com").await).await;
    h.app.cancel_invitation(&so, &acct, &inv_unknown, &c).await.unwrap();
    assert!(matches!(
        h.app.accept_invitation(&squat, &inv_unknown, &code_unknown, &c).await,
        Err(AppError::NotFound(_))
    ));
    // Invitations expire after 7 days.
    let (inv, code) = invite_mail(h, &so, &acct, "other@example.com", Role::Member).await;
    h.clock.advance(tessera_app::INVITATION_TTL);
    let so_other = sess(h, &token(&h.app.begin_login("other@example.com", PW, &c).await.unwrap())).await;
    assert!(matches!(h.app.accept_invitation(&so_other, &inv, &code, &c).await, Err(AppError::NotFound(_))));
    // At most INVITATION_MAILS_PER_DAY a day per account: beyond it, the invitation is refused.
    let so = sess(h, &login_2fa_known(h, "owner@example.com").await).await;
    for i in 0..tessera_app::INVITATION_MAILS_PER_DAY {
        invite_mail(h, &so, &acct, &format!("p{i}@example.com"), Role::Member).await;
    }
    assert!(matches!(
        h.app.invite_member(&so, &acct, "one-more@example.com", Role::Member, &c).await,
        Err(AppError::FailedPrecondition(_))
    ));
    // … and per inviter over all their accounts (creating accounts is no way around it).
    let mut sent = tessera_app::INVITATION_MAILS_PER_DAY;
    while sent < tessera_app::INVITATION_MAILS_PER_INVITER_PER_DAY {
        let a = h.app.create_account(&so, "More", &c).await.unwrap();
        for i in 0..tessera_app::INVITATION_MAILS_PER_DAY.min(tessera_app::INVITATION_MAILS_PER_INVITER_PER_DAY - sent)
        {
            invite_mail(h, &so, &a, &format!("q{sent}-{i}@example.com"), Role::Member).await;
        }
        sent += tessera_app::INVITATION_MAILS_PER_DAY.min(tessera_app::INVITATION_MAILS_PER_INVITER_PER_DAY - sent);
    }
    let fresh_acct = h.app.create_account(&so, "Fresh", &c).await.unwrap();
    assert!(matches!(
        h.app.invite_member(&so, &fresh_acct, "r@example.com", Role::Member, &c).await,
        Err(AppError::FailedPrecondition(_))
    ));
}
both!(invitations);

/// A recovery code of a user enrolled by `enrol_user` (regenerated through the service API).
async fn enrol_codes_of(h: &Harness, user: &str) -> String {
    h.app.regenerate_recovery_codes(user, &ctx()).await.unwrap()[0].to_string()
}

/// Sign an owner in again with a fresh device (their old secret is not kept by the tests).
async fn login_2fa_known(h: &Harness, email: &str) -> String {
    let user = h.store.user_by_email(email).await.unwrap().unwrap().id;
    let secret = enrol_secret_of(h, &user).await;
    login_2fa(h, email, &secret).await
}

/// Owners and admins manage members; only an owner touches an owner; an account keeps an
/// owner; a role change is its own action.
async fn roles_and_the_last_owner(h: &Harness) {
    let c = ctx();
    let (owner, _, _, to) = user_2fa(h, "owner@example.com").await;
    let so = sess(h, &to).await;
    let acct = h.app.create_account(&so, "Acme", &c).await.unwrap();
    let (admin, _, _, ta) = user_2fa(h, "admin@example.com").await;
    let (member, _, _, tm) = user_2fa(h, "member@example.com").await;
    invite(h, &so, &acct, "admin@example.com", Role::Admin, &ta).await;
    invite(h, &so, &acct, "member@example.com", Role::Member, &tm).await;
    let sa = sess(h, &ta).await;
    let forbidden = |r: Result<(), AppError>| matches!(r, Err(AppError::Forbidden(_)));
    assert!(forbidden(h.app.change_member_role(&so, &acct, &owner, Role::Admin, &c).await), "last owner");
    assert!(forbidden(h.app.remove_member(&so, &acct, &owner, &c).await), "last owner");
    assert!(forbidden(h.app.change_member_role(&sa, &acct, &owner, Role::Member, &c).await), "owner only");
    assert!(forbidden(h.app.remove_member(&sa, &acct, &owner, &c).await), "owner only");
    assert!(forbidden(h.app.change_member_role(&sa, &acct, &member, Role::Owner, &c).await), "owner only");
    let sm = sess(h, &tm).await;
    assert!(forbidden(h.app.remove_member(&sm, &acct, &admin, &c).await), "members manage nothing");
    // Two owners: one may step down, then the other is the last.
    h.app.change_member_role(&so, &acct, &admin, Role::Owner, &c).await.unwrap();
    h.app.change_member_role(&sa, &acct, &owner, Role::Admin, &c).await.unwrap();
    assert!(forbidden(h.app.change_member_role(&sa, &acct, &admin, Role::Member, &c).await));
    assert!(forbidden(h.app.change_member_role(&so, &acct, &admin, Role::Member, &c).await), "an admin now");
    // Removing, and re-inviting someone who is already a member does not change their role.
    h.app.remove_member(&so, &acct, &member, &c).await.unwrap();
    assert!(matches!(h.app.remove_member(&so, &acct, &member, &c).await, Err(AppError::NotFound(_))));
    assert!(h.app.memberships(&member).await.unwrap().is_empty());
    invite(h, &sa, &acct, "member@example.com", Role::Member, &tm).await;
    invite(h, &sa, &acct, "member@example.com", Role::Admin, &tm).await;
    assert_eq!(h.app.role_in(&acct, &member).await.unwrap(), Role::Member, "a role change is its own action");
    // Concurrently, two owners demoting each other cannot leave the account without one.
    h.app.change_member_role(&sa, &acct, &owner, Role::Owner, &c).await.unwrap();
    let (r1, r2) = tokio::join!(
        h.app.change_member_role(&so, &acct, &admin, Role::Member, &c),
        h.app.change_member_role(&sa, &acct, &owner, Role::Member, &c),
    );
    assert!(r1.is_ok() != r2.is_ok(), "exactly one demotion: {r1:?} {r2:?}");
    let owners = h.app.members(if r1.is_ok() { &so } else { &sa }, &acct).await.unwrap();
    assert_eq!(owners.iter().filter(|m| m.role == Role::Owner).count(), 1);
}
both!(roles_and_the_last_owner);

/// The grace period is bounded (0–90 days) and the policy is an admin's, recently
/// authenticated, with a factor of their own to turn it on.
async fn account_policy_rules(h: &Harness) {
    let c = ctx();
    let (_, _, _, to) = user_2fa(h, "owner@example.com").await;
    let so = sess(h, &to).await;
    let acct = h.app.create_account(&so, "Acme", &c).await.unwrap();
    let now = h.clock_now_dt();
    for bad in [now, now - Duration::days(1), now + tessera_app::MAX_GRACE + Duration::seconds(1)] {
        assert!(matches!(
            h.app.set_account_policy(&so, &acct, true, Some(bad), &c).await,
            Err(AppError::Invalid(CoreError::Invalid { field: "grace_until", .. }))
        ));
    }
    h.app.set_account_policy(&so, &acct, true, Some(now + tessera_app::MAX_GRACE), &c).await.unwrap();
    let tm = token(&h.app.sign_up("admin@example.com", PW, &c).await.unwrap());
    invite(h, &so, &acct, "admin@example.com", Role::Admin, &tm).await;
    let sm = sess(h, &tm).await;
    assert!(
        matches!(h.app.set_account_policy(&sm, &acct, true, None, &c).await, Err(AppError::FailedPrecondition(_))),
        "an admin without a factor cannot lock themselves out"
    );
    h.app.set_account_policy(&sm, &acct, false, None, &c).await.unwrap();
    let tx = token(&h.app.sign_up("x@example.com", PW, &c).await.unwrap());
    assert!(matches!(
        h.app.set_account_policy(&sess(h, &tx).await, &acct, false, None, &c).await,
        Err(AppError::NotFound(_))
    ));
    // Once the account requires MFA without grace, an admin's password alone manages nothing
    // there — least of all switching the requirement off.
    h.app.set_account_policy(&so, &acct, true, None, &c).await.unwrap();
    let sm = sess(h, &tm).await;
    let forbidden = |r: &Result<(), AppError>| matches!(r, Err(AppError::Forbidden(m)) if m.contains("two-factor"));
    assert!(forbidden(&h.app.set_account_policy(&sm, &acct, false, None, &c).await));
    assert!(forbidden(&h.app.invite_member(&sm, &acct, "y@example.com", Role::Member, &c).await.map(|_| ())));
    assert!(forbidden(&h.app.members(&sm, &acct).await.map(|_| ())));
    assert!(h.app.memberships(sm.user_id()).await.unwrap()[0].policy.require_mfa, "still required");
}
both!(account_policy_rules);

async fn support_reset(h: &Harness) {
    let uid = h.app.create_user("eve@example.com", PW, &ctx()).await.unwrap();
    let (_, codes) = enrol_user(h, &uid).await;
    let ch = challenge(&h.app.begin_login("eve@example.com", PW, &ctx()).await.unwrap());
    let t = token(&h.app.complete_login_recovery(&ch, &codes[0], &ctx()).await.unwrap());
    let open_ch = challenge(&h.app.begin_login("eve@example.com", PW, &ctx()).await.unwrap());

    for (reason, ticket, actor) in [("", "T-1", "sam"), ("lost phone", "", "sam"), ("lost phone", "T-1", " ")] {
        assert!(matches!(
            h.app.support_reset_mfa("eve@example.com", reason, ticket, actor, &ctx()).await,
            Err(AppError::Invalid(_))
        ));
    }
    assert!(matches!(
        h.app.support_reset_mfa("nobody@example.com", "lost phone", "T-1", "sam", &ctx()).await,
        Err(AppError::NotFound("user"))
    ));
    let r = h
        .app
        .support_reset_mfa("EVE@example.com", "lost phone, ID checked on call", "SUP-4711", "sam", &ctx())
        .await
        .unwrap();
    assert_eq!((r.factors, r.recovery_codes, r.sessions), (1, 10, 1));
    assert!(h.app.list_factors(&uid).await.unwrap().is_empty());
    assert_eq!(h.app.recovery_codes_remaining(&uid).await.unwrap(), 0);
    assert_eq!(who(h, &t).await, None, "sessions revoked");
    assert_eq!(
        h.app.complete_login_recovery(&open_ch, &codes[1], &ctx()).await.unwrap(),
        LoginOutcome::ChallengeInvalid,
        "open challenges voided"
    );
    // the user is notified (queued in the outbox, after the notice of the factor they added)
    let queued = h.store.unsent_notifications(10).await.unwrap();
    let kinds: Vec<_> = queued.iter().map(|n| (n.1.as_str(), n.2.as_str())).collect();
    assert_eq!(kinds, [("eve@example.com", "factor_added"), ("eve@example.com", "mfa_reset")]);
    // the audit trail says who, why and the ticket
    let (events, _) = h.app.list_audit_events(&uid, 100, "").await.unwrap();
    let ev = events.iter().find(|e| e.kind == "support_mfa_reset").unwrap();
    assert_eq!(ev.actor.as_deref(), Some("sam"));
    assert!(ev.detail.contains("SUP-4711") && ev.detail.contains("lost phone"), "{}", ev.detail);
    // and the password alone signs in again
    assert!(matches!(
        h.app.begin_login("eve@example.com", PW, &ctx()).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
}
both!(support_reset);

// ---- what the review of the first cut found (each a test that fails without its fix) -----

/// Re-authenticating with the password respects the 100-failure ceiling: a stolen session of a
/// factorless user is no way around it. A support reset lifts the suspension.
async fn reauthentication_respects_the_suspension(h: &Harness) {
    let c = ctx();
    let t = token(&h.app.sign_up("ada@example.com", PW, &c).await.unwrap());
    h.clock.advance(Duration::minutes(16));
    let s = sess(h, &t).await;
    for i in 0..h.app.config().password_throttle.suspend_after {
        let o = h
            .app
            .reauthenticate(&s, Proof::Password("guess guess guess"), &ctx_from(&format!("10.2.{}.1", i / 5)))
            .await
            .unwrap();
        assert!(matches!(o, LoginOutcome::Failed | LoginOutcome::Locked { .. }), "{o:?}");
    }
    let o = h.app.reauthenticate(&s, Proof::Password(PW), &ctx_from("192.0.2.9")).await.unwrap();
    assert_eq!(o, LoginOutcome::Suspended, "no more password checks in a session either");
    assert_eq!(
        h.app.begin_login("ada@example.com", PW, &ctx_from("192.0.2.9")).await.unwrap(),
        LoginOutcome::Suspended
    );
    // Support lifts it without touching anything else (a reset-mfa would lift it too).
    assert!(matches!(
        h.app.support_unlock("nobody@example.com", "asked by phone", "sam", &c).await,
        Err(AppError::NotFound("user"))
    ));
    h.app.support_unlock("ADA@example.com", "guessing from a botnet; ID checked", "sam", &c).await.unwrap();
    assert!(matches!(
        h.app.begin_login("ada@example.com", PW, &ctx_from("192.0.2.9")).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
    let (events, _) = h.app.list_audit_events(s.user_id(), 100, "").await.unwrap();
    assert!(events.iter().any(|e| e.kind == "password_sign_in_suspended" && e.actor.as_deref() == Some("sam")));
}
both!(reauthentication_respects_the_suspension);

/// A concurrent burst of wrong passwords from many addresses gets at most the ceiling checked:
/// each attempt takes its place in the email's total before its hash runs.
async fn a_burst_of_wrong_passwords_is_checked_at_most_a_hundred_times(h: &Harness) {
    h.app.create_user("ada@example.com", PW, &ctx()).await.unwrap();
    let limit = h.app.config().password_throttle.suspend_after;
    let before = h.app.password_verifications();
    let tasks: Vec<_> = (0..limit + 40)
        .map(|i| {
            let app = h.app.clone();
            tokio::spawn(async move {
                let c = ctx_from(&format!("10.3.{}.{}", i / 4, i % 4 + 1));
                app.begin_login("ada@example.com", "guess guess guess", &c).await.unwrap()
            })
        })
        .collect();
    let mut suspended = 0;
    for t in tasks {
        match t.await.unwrap() {
            LoginOutcome::Suspended => suspended += 1,
            LoginOutcome::Failed | LoginOutcome::Locked { .. } => {}
            o => panic!("{o:?}"),
        }
    }
    let checked = h.app.password_verifications() - before;
    assert!(checked <= u64::from(limit), "{checked} passwords checked; the ceiling is {limit}");
    assert!(suspended >= 40, "the rest were refused unchecked ({suspended})");
}
both!(a_burst_of_wrong_passwords_is_checked_at_most_a_hundred_times);

/// A burst of wrong codes refused unchecked (beyond the budget) does not spend the subject's
/// 100: only checked attempts count towards disabling the authenticator.
async fn a_burst_of_wrong_codes_counts_only_what_was_checked(h: &Harness) {
    let (e, _) = active_device(h, "burst").await;
    let bad = wrong(h, &e.secret_base32);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (app, bad) = (h.app.clone(), bad.clone());
            tokio::spawn(async move { app.verify_totp("burst", &bad, &ctx()).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let st = h.store.attempt_state("burst", tessera_store::SECOND_FACTOR).await.unwrap();
    let budget = h.app.config().throttle.budget();
    assert!(st.total_failures <= budget, "{} counted of 40, at most {budget} were checked", st.total_failures);
    assert!(st.locked_until.is_some());
}
both!(a_burst_of_wrong_codes_counts_only_what_was_checked);

/// A setup expires after exactly 15 minutes, for its own session too; the confirming statement
/// itself checks the owner, the expiry and that the owner session is still live; without recent
/// proof only a setup that is still pending can be removed.
async fn pending_setups_expire_and_the_store_checks_the_owner(h: &Harness) {
    use tessera_store::{ConfirmOutcome as StoreConfirm, Confirmation, NewAuditEvent};
    let c = ctx();
    let t = token(&h.app.sign_up("ada@example.com", PW, &c).await.unwrap());
    let s = sess(h, &t).await;
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    h.clock.advance(tessera_app::PENDING_TTL - Duration::seconds(1));
    let s = sess(h, &t).await;
    assert!(h.app.pending_totp_device(&s, &e.factor_id).await.is_ok(), "one second before it expires");
    h.clock.advance(Duration::seconds(1));
    assert!(matches!(h.app.pending_totp_device(&s, &e.factor_id).await, Err(AppError::FailedPrecondition(_))));
    let t = token(&h.app.reauthenticate(&s, Proof::Password(PW), &c).await.unwrap());
    let s = sess(h, &t).await;
    let code = h.code(&e.secret_base32, 0);
    assert!(matches!(
        h.app.confirm_totp_device(&s, &e.factor_id, &code, &c).await,
        Err(AppError::FailedPrecondition(_))
    ));
    assert!(h.app.devices(&s).await.unwrap().is_empty(), "an expired setup is not listed");

    // The store's confirming statement, on its own: the wrong session, an expired setup and a
    // revoked owner session all leave the setup pending.
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    let now = h.clock_now_dt();
    let ev = NewAuditEvent {
        at: now,
        subject_id: s.user_id().into(),
        factor_id: None,
        actor: None,
        kind: tessera_core::factor::AuditKind::TotpConfirmed,
        ip: None,
        user_agent: None,
        detail: "{}".into(),
    };
    let base = Confirmation {
        subject_id: s.user_id(),
        factor_id: &e.factor_id,
        session_id: Some(s.id()),
        pending_cutoff: now - tessera_app::PENDING_TTL,
        step: 1,
        now,
        first_codes: &[],
        audit_confirm: &ev,
        audit_codes: &ev,
        raise: None,
        idle_cutoff: now - Duration::minutes(30),
    };
    for (why, c2) in [
        ("another session", Confirmation { session_id: Some("someone-else"), ..base.clone() }),
        ("a service, for a page's setup", Confirmation { session_id: None, ..base.clone() }),
        ("expired", Confirmation { pending_cutoff: now, ..base.clone() }),
    ] {
        assert_eq!(h.store.confirm_totp(&c2).await.unwrap(), StoreConfirm::NotPending, "{why}");
    }
    h.app.logout(&t, &c).await.unwrap();
    assert_eq!(h.store.confirm_totp(&base).await.unwrap(), StoreConfirm::NotPending, "a revoked owner session");

    // Without recent proof: a pending setup can be cancelled, an active factor not removed.
    let (uid, secret, _, t) = user_2fa(h, "bob@example.com").await;
    let s = sess(h, &t).await;
    let pending = h.app.add_totp_device(&s, "Spare", &c).await.unwrap();
    h.clock.advance(Duration::minutes(16));
    let s = sess(h, &t).await;
    let active = h.app.list_factors(&uid).await.unwrap().into_iter().find(|f| f.confirmed_at.is_some()).unwrap();
    assert!(reauth_needed(&h.app.remove_device(&s, &active.id, &c).await).is_some());
    h.app.remove_device(&s, &pending.factor_id, &c).await.unwrap();
    assert!(
        !h.store.remove_factor(&uid, &active.id, true, &ev).await.unwrap(),
        "the pending-only delete never takes an active factor (a setup confirmed meanwhile)"
    );
    assert!(accepted(&h.app.verify_totp(&uid, &fresh(h, &secret), &c).await.unwrap()));
}
both!(pending_setups_expire_and_the_store_checks_the_owner);

/// A password-level session is never opened for a user who has a factor by then (a sign-in
/// racing the first factor's confirmation gets a challenge instead).
async fn no_password_session_for_a_user_with_a_factor(h: &Harness) {
    let uid = h.app.create_user("ada@example.com", PW, &ctx()).await.unwrap();
    enrol_user(h, &uid).await;
    let now = h.clock_now_dt();
    let ev = tessera_store::NewAuditEvent {
        at: now,
        subject_id: uid.clone(),
        factor_id: None,
        actor: None,
        kind: tessera_core::factor::AuditKind::LoginSucceeded,
        ip: None,
        user_agent: None,
        detail: "{}".into(),
    };
    let row = tessera_store::NewSession {
        id: "racer".into(),
        token_hash: vec![7; 32],
        user_id: uid.clone(),
        aal: 1,
        password_verified_at: Some(now),
        mfa_verified_at: None,
        created_at: now,
        expires_at: now + Duration::hours(1),
        ip: None,
        user_agent: None,
    };
    assert!(!h.store.create_password_session(&row, &ev).await.unwrap());
}
both!(no_password_session_for_a_user_with_a_factor);

/// Known-browser tokens are minted by the server and replaced at every sign-in: one presented
/// but never minted (planted) is not recorded, and the one replaced stops counting.
async fn known_browser_tokens_are_minted_and_rotated(h: &Harness) {
    use sha2::Digest;
    let hash = |t: &str| sha2::Sha256::digest(t.as_bytes()).to_vec();
    let uid = h.app.create_user("ada@example.com", PW, &ctx()).await.unwrap();
    let since = h.clock_now_dt() - Duration::days(1);
    let planted = "P".repeat(43);
    let with = |b: &str| ClientContext { browser: Some(b.to_owned()), ..ctx() };
    let o = h.app.begin_login("ada@example.com", PW, &with(&planted)).await.unwrap();
    let LoginOutcome::Authenticated { browser_token: Some(k1), .. } = o else { panic!("{o:?}") };
    assert_ne!(*k1, planted);
    assert!(!h.store.is_known_browser(&uid, &hash(&planted), since).await.unwrap(), "never minted, never known");
    assert!(h.store.is_known_browser(&uid, &hash(&k1), since).await.unwrap());
    let o = h.app.begin_login("ada@example.com", PW, &with(&k1)).await.unwrap();
    let LoginOutcome::Authenticated { browser_token: Some(k2), .. } = o else { panic!("{o:?}") };
    assert_ne!(k1, k2);
    assert!(!h.store.is_known_browser(&uid, &hash(&k1), since).await.unwrap(), "replaced");
    assert!(h.store.is_known_browser(&uid, &hash(&k2), since).await.unwrap());
}
both!(known_browser_tokens_are_minted_and_rotated);
