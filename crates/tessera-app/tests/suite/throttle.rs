//! Throttling: code lockouts and their doubling, the gate that admits a matched code, password
//! locks per address, and the 100-failure ceilings (no lockout lever for strangers).

use crate::{PW, accepted, active_device, challenge, enrol_user, fresh, sess, signed_up, token, wrong};
use tessera_app::{AppError, ClientContext, ConfirmOutcome, LoginOutcome, Outcome, Proof};
use tessera_core::otp::TotpParams;
use tessera_testkit::{Harness, both, ctx, ctx_from};
use time::Duration;

async fn lockout(h: &Harness) {
    let (e, _) = active_device(h, "hank").await;
    let good = h.code(&e.secret_base32, 0);
    let bad = if good == "123456" { "654321" } else { "123456" };
    for remaining in [4, 3, 2, 1] {
        assert_eq!(
            h.app.verify_totp("hank", bad, &ctx()).await.unwrap(),
            Outcome::Rejected { attempts_remaining: remaining }
        );
    }
    let t = h.clock_now();
    let lock_end = time::OffsetDateTime::from_unix_timestamp(t + 60).unwrap();
    assert_eq!(h.app.verify_totp("hank", bad, &ctx()).await.unwrap(), Outcome::Locked { until: lock_end });
    // a valid code while locked is Locked, not accepted (and not used up)
    assert_eq!(h.app.verify_totp("hank", &good, &ctx()).await.unwrap(), Outcome::Locked { until: lock_end });
    // recovery codes are locked too (one counter for the second factor)
    assert!(matches!(
        h.app.redeem_recovery_code("hank", "0000-0000-0000-0000", &ctx()).await.unwrap().0,
        Outcome::Locked { .. }
    ));
    h.clock.advance(Duration::seconds(59));
    let good = h.code(&e.secret_base32, 0);
    assert!(matches!(h.app.verify_totp("hank", &good, &ctx()).await.unwrap(), Outcome::Locked { .. }));
    h.clock.advance(Duration::seconds(1));
    // the lock ends at exactly 60 s
    let good = h.code(&e.secret_base32, 0);
    assert!(accepted(&h.app.verify_totp("hank", &good, &ctx()).await.unwrap()));
    // success reset everything: the next lock is 1 minute again, not 2
    h.clock.advance(Duration::seconds(30));
    for _ in 0..4 {
        assert!(matches!(h.app.verify_totp("hank", bad, &ctx()).await.unwrap(), Outcome::Rejected { .. }));
    }
    let t = h.clock_now();
    assert_eq!(
        h.app.verify_totp("hank", bad, &ctx()).await.unwrap(),
        Outcome::Locked { until: time::OffsetDateTime::from_unix_timestamp(t + 60).unwrap() }
    );
    // without a success in between, each further lock doubles
    for minutes in [2, 4, 8] {
        h.clock.advance(Duration::minutes(minutes / 2));
        let t = h.clock_now();
        for _ in 0..4 {
            assert!(matches!(h.app.verify_totp("hank", bad, &ctx()).await.unwrap(), Outcome::Rejected { .. }));
        }
        assert_eq!(
            h.app.verify_totp("hank", bad, &ctx()).await.unwrap(),
            Outcome::Locked { until: time::OffsetDateTime::from_unix_timestamp(t + 60 * minutes).unwrap() },
            "lock of {minutes} min"
        );
    }
    // the trail shows the locks and the refused attempts
    let (events, _) = h.app.list_audit_events("hank", 100, "").await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "locked").count(), 5);
    assert!(events.iter().any(|e| e.kind == "attempt_while_locked"));
}
both!(lockout);

async fn concurrent_guesses_are_bounded(h: &Harness) {
    let (e, _) = active_device(h, "ivan").await;
    let good = h.code(&e.secret_base32, 0);
    let bad = if good == "123456" { "654321" } else { "123456" };
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let app = h.app.clone();
        tasks.push(tokio::spawn(async move { app.verify_totp("ivan", bad, &ctx()).await.unwrap() }));
    }
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Rejected { .. } => rejected += 1,
            Outcome::Locked { .. } => {}
            Outcome::Accepted { .. } => panic!("a wrong code was accepted"),
        }
    }
    assert!(rejected <= 4, "at most 4 of 24 concurrent guesses were checked and rejected; got {rejected}");
    assert!(matches!(h.app.verify_totp("ivan", &good, &ctx()).await.unwrap(), Outcome::Locked { .. }));
}
both!(concurrent_guesses_are_bounded);

/// The store half of the verify hot path: a code that matched counts only when the gate admits
/// its attempt. Beyond the budget, or while locked, it is refused and its step stays unused.
async fn a_matched_code_counts_only_when_the_gate_admits_it(h: &Harness) {
    use tessera_core::factor::AuditKind;
    use tessera_core::throttle::ThrottlePolicy;
    use tessera_store::{Acceptance, GateAccept, GateResult, NewAuditEvent, SECOND_FACTOR};
    let (e, _) = active_device(h, "nina").await;
    let now = tessera_core::clock::Clock::now(&h.clock);
    let policy = ThrottlePolicy::default();
    let step = TotpParams::default().step_at(now.unix_timestamp());
    let acceptance = |step| Acceptance {
        factor_id: e.factor_id.clone(),
        step,
        audit: NewAuditEvent {
            at: now,
            subject_id: "nina".into(),
            factor_id: Some(e.factor_id.clone()),
            actor: None,
            kind: AuditKind::TotpVerified,
            ip: None,
            user_agent: None,
            detail: "{}".into(),
        },
    };
    let try_accept = |step| {
        let a = acceptance(step);
        let check = move |_: &[tessera_store::TotpDevice]| Ok::<_, std::convert::Infallible>(Some(a.clone()));
        async move {
            Ok::<_, tessera_store::StoreError>(
                h.store.check_gate_accept("nina", now, &policy, check).await?.unwrap_or_else(|e| match e {}).0,
            )
        }
    };
    for n in 1..=5 {
        assert_eq!(h.store.gate_attempt("nina", SECOND_FACTOR, now, &policy).await.unwrap(), GateResult::Reserved(n));
    }
    // Slot 6 is beyond the budget: the matched code is not accepted...
    assert_eq!(try_accept(step).await.unwrap(), GateAccept::Refused(GateResult::Reserved(6)));
    // ...and not used up: once the counters are clear it is accepted, once.
    h.store.reset_attempts("nina", SECOND_FACTOR).await.unwrap();
    assert_eq!(try_accept(step).await.unwrap(), GateAccept::Accepted);
    assert_eq!(try_accept(step).await.unwrap(), GateAccept::Replayed(1));
    // Locked: refused with the lock's end, and the next step stays unused too.
    for n in 2..=5 {
        assert_eq!(h.store.gate_attempt("nina", SECOND_FACTOR, now, &policy).await.unwrap(), GateResult::Reserved(n));
    }
    let lock = NewAuditEvent { kind: AuditKind::Locked, ..acceptance(step).audit };
    let until = h.store.lock_if_due("nina", SECOND_FACTOR, &policy, now, &lock).await.unwrap().unwrap();
    assert_eq!(try_accept(step + 1).await.unwrap(), GateAccept::Refused(GateResult::Locked(until)));
    h.store.reset_attempts("nina", SECOND_FACTOR).await.unwrap();
    assert_eq!(try_accept(step + 1).await.unwrap(), GateAccept::Accepted);
}
both!(a_matched_code_counts_only_when_the_gate_admits_it);

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
        notices.iter().filter(|n| n.email == "ada@example.com" && n.kind == "password_suspended").count(),
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
    assert_eq!(notices.iter().filter(|n| n.kind == "totp_disabled").count(), 1);

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

/// Re-authenticating with the password respects the 100-failure ceiling: a stolen session of a
/// factorless user is no way around it. A support reset lifts the suspension.
async fn reauthentication_respects_the_suspension(h: &Harness) {
    let c = ctx();
    let t = signed_up(h, "ada@example.com", &c).await;
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
