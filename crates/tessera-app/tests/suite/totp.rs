//! TOTP devices: enrolment, confirmation, verification and replay, parameters, removal, limits and the audit trail.

use crate::{accepted, active_device, req};
use tessera_app::{AppError, ConfirmOutcome, EnrollRequest, Enrollment, Outcome};
use tessera_core::CoreError;
use tessera_core::factor::FactorStatus;
use tessera_core::otp::{Algorithm, TotpParams};
use tessera_testkit::{Harness, both, ctx};
use time::Duration;

async fn enrol_confirm_verify(h: &Harness) {
    let e = h.app.enroll_totp(&req("alice"), &ctx()).await.unwrap();
    assert!(e.otpauth_uri.starts_with("otpauth://totp/Tessera:alice%40example.com?secret="));
    assert!(e.otpauth_uri.contains(e.secret_base32.as_str()));
    assert_eq!(e.secret_base32.len(), 32, "160-bit secret");
    assert!(e.qr_svg.contains("<svg") && e.qr_png.starts_with(b"\x89PNG"));
    let f = h.app.list_factors("alice").await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].status, FactorStatus::Pending);

    // a pending device does not verify
    let code = h.code(&e.secret_base32, 0);
    assert!(!accepted(&h.app.verify_totp("alice", &code, &ctx()).await.unwrap()));

    // a wrong confirmation code is a failed attempt
    let wrong = if code == "000000" { "111111" } else { "000000" };
    match h.app.confirm_totp("alice", &e.factor_id, wrong, &ctx()).await.unwrap() {
        ConfirmOutcome::Rejected { attempts_remaining } => assert_eq!(attempts_remaining, 3, "two failures so far"),
        other => panic!("{other:?}"),
    }
    let ConfirmOutcome::Confirmed { factor, recovery_codes, .. } =
        h.app.confirm_totp("alice", &e.factor_id, &code, &ctx()).await.unwrap()
    else {
        panic!("not confirmed")
    };
    assert_eq!(factor.status, FactorStatus::Active);
    assert!(factor.confirmed_at.is_some());
    assert_eq!(recovery_codes.len(), 10, "first factor gets recovery codes");
    assert_eq!(h.app.recovery_codes_remaining("alice").await.unwrap(), 10);
    // confirming again is a precondition failure
    assert!(matches!(
        h.app.confirm_totp("alice", &e.factor_id, &code, &ctx()).await,
        Err(AppError::FailedPrecondition(_))
    ));

    // until a code is accepted, the device's last use is its confirmation
    assert_eq!(
        h.app.list_factors("alice").await.unwrap()[0].last_used_at,
        Some(tessera_core::clock::Clock::now(&h.clock))
    );
    // the confirmation code was used: the same code is refused
    assert!(!accepted(&h.app.verify_totp("alice", &code, &ctx()).await.unwrap()));
    // next step's code (clock 10 s into the step, so t+1 is in the window) is accepted
    let next = h.code(&e.secret_base32, 1);
    assert_eq!(
        h.app.verify_totp("alice", &next, &ctx()).await.unwrap(),
        Outcome::Accepted { factor_id: Some(e.factor_id.clone()) }
    );
    // replay of the same code: refused
    assert!(matches!(h.app.verify_totp("alice", &next, &ctx()).await.unwrap(), Outcome::Rejected { .. }));
    // two steps later, a fresh code is accepted again
    h.clock.advance(Duration::seconds(60));
    let now_code = h.code(&e.secret_base32, 0);
    assert!(accepted(&h.app.verify_totp("alice", &now_code, &ctx()).await.unwrap()));
    let f = h.app.list_factors("alice").await.unwrap();
    assert_eq!(
        f[0].last_used_at,
        Some(tessera_core::clock::Clock::now(&h.clock)),
        "the accepted code marks the device used, at that time"
    );
}
both!(enrol_confirm_verify);

async fn older_step_after_newer_is_refused(h: &Harness) {
    let (e, _) = active_device(h, "bob").await;
    let ahead = h.code(&e.secret_base32, 1);
    let now = h.code(&e.secret_base32, 0);
    let behind = h.code(&e.secret_base32, -1);
    assert!(accepted(&h.app.verify_totp("bob", &ahead, &ctx()).await.unwrap()));
    assert!(!accepted(&h.app.verify_totp("bob", &now, &ctx()).await.unwrap()));
    assert!(!accepted(&h.app.verify_totp("bob", &behind, &ctx()).await.unwrap()));
}
both!(older_step_after_newer_is_refused);

async fn concurrent_verifications_accept_one(h: &Harness) {
    let (e, _) = active_device(h, "carol").await;
    let code = h.code(&e.secret_base32, 0);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let app = h.app.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move { app.verify_totp("carol", &code, &ctx()).await }));
    }
    let mut wins = 0;
    for t in tasks {
        if accepted(&t.await.unwrap().unwrap()) {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one of 32 concurrent verifications of one code is accepted");
}
both!(
    concurrent_verifications_accept_one,
    tessera_app::AppConfig {
        // a generous budget, so the gate does not refuse the 32 before the replay guard decides
        throttle: tessera_core::throttle::ThrottlePolicy { max_failures: 100, ..Default::default() },
        ..Default::default()
    }
);

async fn second_device_gets_no_new_codes(h: &Harness) {
    let (_, codes) = active_device(h, "gina").await;
    let e2 = h.app.enroll_totp(&EnrollRequest { label: "Tablet".into(), ..req("gina") }, &ctx()).await.unwrap();
    let code = h.code(&e2.secret_base32, 0);
    let ConfirmOutcome::Confirmed { recovery_codes, .. } =
        h.app.confirm_totp("gina", &e2.factor_id, &code, &ctx()).await.unwrap()
    else {
        panic!()
    };
    assert!(recovery_codes.is_empty());
    // the old codes still work
    assert!(accepted(&h.app.redeem_recovery_code("gina", &codes[0], &ctx()).await.unwrap().0));
    // both devices verify
    h.clock.advance(Duration::seconds(30));
    let (e1, _) = (h.app.list_factors("gina").await.unwrap(), ());
    assert_eq!(e1.len(), 2);
    assert!(accepted(&h.app.verify_totp("gina", &h.code(&e2.secret_base32, 0), &ctx()).await.unwrap()));
}
both!(second_device_gets_no_new_codes);

async fn bad_input_is_typed(h: &Harness) {
    let field = |r: Result<Enrollment, AppError>| match r {
        Err(AppError::Invalid(CoreError::Invalid { field, .. })) => field,
        other => panic!("expected invalid input, got {:?}", other.map(|e| e.factor_id)),
    };
    assert_eq!(field(h.app.enroll_totp(&req(""), &ctx()).await), "subject_id");
    assert_eq!(field(h.app.enroll_totp(&req(&"s".repeat(129)), &ctx()).await), "subject_id");
    assert_eq!(field(h.app.enroll_totp(&EnrollRequest { label: "x".repeat(65), ..req("a") }, &ctx()).await), "label");
    assert_eq!(field(h.app.enroll_totp(&EnrollRequest { label: " ".into(), ..req("a") }, &ctx()).await), "label");
    assert_eq!(
        field(h.app.enroll_totp(&EnrollRequest { account_name: String::new(), ..req("a") }, &ctx()).await),
        "account_name"
    );
    assert_eq!(field(h.app.enroll_totp(&EnrollRequest { digits: Some(7), ..req("a") }, &ctx()).await), "digits");
    assert_eq!(field(h.app.enroll_totp(&EnrollRequest { period: Some(15), ..req("a") }, &ctx()).await), "period");
    for code in ["12345", "1234567", "abcdef", "", "123456789"] {
        assert!(
            matches!(
                h.app.verify_totp("a", code, &ctx()).await,
                Err(AppError::Invalid(CoreError::Invalid { field: "code", .. }))
            ),
            "{code:?}"
        );
    }
    assert!(matches!(
        h.app.confirm_totp("a", "no-such-factor", "123456", &ctx()).await,
        Err(AppError::NotFound("factor"))
    ));
    assert!(matches!(h.app.remove_factor("a", "no-such-factor", &ctx()).await, Err(AppError::NotFound("factor"))));
    assert!(matches!(h.app.list_audit_events("a", 101, "").await, Err(AppError::Invalid(_))));
    assert!(matches!(h.app.list_audit_events("a", 10, "'; DROP TABLE x").await, Err(AppError::Invalid(_))));
    // malformed input wrote nothing and counted no attempt
    assert!(h.app.list_factors("a").await.unwrap().is_empty());
    let st = h.store.attempt_state("a", tessera_store::SECOND_FACTOR).await.unwrap();
    assert_eq!(st.consecutive_failures, 0);
}
both!(bad_input_is_typed);

async fn sha256_eight_digit_sixty_second_devices(h: &Harness) {
    let e = h
        .app
        .enroll_totp(
            &EnrollRequest { algorithm: Some(Algorithm::Sha512), digits: Some(8), period: Some(60), ..req("lena") },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(e.secret_base32.len(), 103, "512-bit secret");
    assert!(e.otpauth_uri.contains("algorithm=SHA512&digits=8&period=60"));
    let p = TotpParams::new(Algorithm::Sha512, 8, 60).unwrap();
    let code = h.code_with(&e.secret_base32, p, 0);
    assert!(matches!(
        h.app.confirm_totp("lena", &e.factor_id, &code, &ctx()).await.unwrap(),
        ConfirmOutcome::Confirmed { .. }
    ));
    h.clock.advance(Duration::seconds(60));
    assert!(accepted(&h.app.verify_totp("lena", &h.code_with(&e.secret_base32, p, 0), &ctx()).await.unwrap()));
}
both!(sha256_eight_digit_sixty_second_devices);

async fn remove_and_limits(h: &Harness) {
    let (e, codes) = active_device(h, "mia").await;
    let e2 = h.app.enroll_totp(&req("mia"), &ctx()).await.unwrap(); // pending second device
    h.app.remove_factor("mia", &e.factor_id, &ctx()).await.unwrap();
    // the last active factor went, so did the recovery codes
    assert_eq!(h.app.recovery_codes_remaining("mia").await.unwrap(), 0);
    assert!(!accepted(&h.app.redeem_recovery_code("mia", &codes[0], &ctx()).await.unwrap().0));
    assert!(!accepted(&h.app.verify_totp("mia", &h.code(&e.secret_base32, 0), &ctx()).await.unwrap()));
    // someone else cannot remove mia's factor
    assert!(matches!(h.app.remove_factor("other", &e2.factor_id, &ctx()).await, Err(AppError::NotFound(_))));
    h.app.remove_factor("mia", &e2.factor_id, &ctx()).await.unwrap();
    assert!(h.app.list_factors("mia").await.unwrap().is_empty());
    // at most 10 factors per subject
    for _ in 0..10 {
        h.app.enroll_totp(&req("nina"), &ctx()).await.unwrap();
    }
    assert!(matches!(h.app.enroll_totp(&req("nina"), &ctx()).await, Err(AppError::FailedPrecondition(_))));
}
both!(remove_and_limits);

async fn audit_trail_and_pages(h: &Harness) {
    let (e, codes) = active_device(h, "olga").await;
    h.app.verify_totp("olga", &h.code(&e.secret_base32, 0), &ctx()).await.unwrap();
    h.app.verify_totp("olga", "000000", &ctx()).await.unwrap();
    h.app.redeem_recovery_code("olga", &codes[0], &ctx()).await.unwrap();
    h.app.regenerate_recovery_codes("olga", &ctx()).await.unwrap();
    h.app.remove_factor("olga", &e.factor_id, &ctx()).await.unwrap();
    let (all, next) = h.app.list_audit_events("olga", 100, "").await.unwrap();
    assert!(next.is_empty());
    let kinds: Vec<&str> = all.iter().rev().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "totp_enrolled",
            "totp_confirmed",
            "recovery_codes_generated",
            "totp_verified",
            "totp_rejected",
            "recovery_code_redeemed",
            "recovery_codes_generated",
            "factor_removed"
        ]
    );
    assert!(all.iter().all(|e| e.ip.as_deref() == Some("203.0.113.7") && e.user_agent.as_deref() == Some("suite/1.0")));
    assert!(
        all.iter().filter(|e| e.kind.starts_with("totp_")).all(|e| e.factor_id.is_some() || e.kind == "totp_rejected")
    );
    // no secret or code in any detail
    for ev in &all {
        assert!(!ev.detail.contains(e.secret_base32.as_str()));
        assert!(!codes.iter().any(|c| ev.detail.contains(c.as_str())));
    }
    // pages of 3 walk the same list
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let (page, next) = h.app.list_audit_events("olga", 3, &token).await.unwrap();
        assert!(page.len() <= 3);
        paged.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(paged, all);
    // other subjects see nothing of olga's
    assert!(h.app.list_audit_events("someone", 100, "").await.unwrap().0.is_empty());
}
both!(audit_trail_and_pages);

/// Replicas keep the subjects' devices in memory (PostgreSQL): a device removed through one
/// replica is refused by another whose cache still holds it, and a device added through one is
/// accepted by another at once. (On SQLite the same holds, without a cache.)
async fn a_device_changed_on_another_replica_is_seen_at_once(h: &Harness) {
    let (e, _) = active_device(h, "rita").await;
    // Replica A verifies a code: its cache now holds the device.
    assert!(accepted(&h.app.verify_totp("rita", &h.code(&e.secret_base32, 1), &ctx()).await.unwrap()));
    // Replica B adds a second device and removes the first.
    let (b, _) = h.replica().await;
    let e2 = b.enroll_totp(&req("rita"), &ctx()).await.unwrap();
    h.clock.advance(Duration::seconds(60));
    let ConfirmOutcome::Confirmed { .. } =
        b.confirm_totp("rita", &e2.factor_id, &h.code(&e2.secret_base32, 0), &ctx()).await.unwrap()
    else {
        panic!("not confirmed")
    };
    b.remove_factor("rita", &e.factor_id, &ctx()).await.unwrap();
    // A refuses a valid code of the removed device, and its step stays a failure...
    let removed = h.code(&e.secret_base32, 1);
    match h.app.verify_totp("rita", &removed, &ctx()).await.unwrap() {
        Outcome::Rejected { attempts_remaining } => assert_eq!(attempts_remaining, 4),
        other => panic!("a removed device's code was not refused: {other:?}"),
    }
    // ...and accepts the new device's code, checked against the devices as they are now.
    assert_eq!(
        h.app.verify_totp("rita", &h.code(&e2.secret_base32, 1), &ctx()).await.unwrap(),
        Outcome::Accepted { factor_id: Some(e2.factor_id.clone()) }
    );
}
both!(a_device_changed_on_another_replica_is_seen_at_once);

/// The limit of 10 devices holds under concurrency: each enrolment counts and inserts inside a
/// factor change (the subject's counters row locked first), so two cannot both take the tenth.
async fn concurrent_enrolments_keep_the_limit(h: &Harness) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let app = h.app.clone();
            tokio::spawn(async move { app.enroll_totp(&req("olga"), &ctx()).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(AppError::FailedPrecondition(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10, "exactly the limit");
    assert_eq!(h.app.list_factors("olga").await.unwrap().len(), 10);
}
both!(concurrent_enrolments_keep_the_limit);
