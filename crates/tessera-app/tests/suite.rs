//! The store-backed suite of the use cases: every test runs on SQLite and on PostgreSQL.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use tessera_app::{AppError, ConfirmOutcome, EnrollRequest, Enrollment, Outcome};
use tessera_core::CoreError;
use tessera_core::factor::FactorStatus;
use tessera_core::otp::{Algorithm, TotpParams};
use tessera_testkit::{Harness, both, ctx};
use time::Duration;

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

fn accepted(o: &Outcome) -> bool {
    matches!(o, Outcome::Accepted { .. })
}

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

async fn concurrent_redeems_accept_one(h: &Harness) {
    let (_, codes) = active_device(h, "dave").await;
    let code = codes[3].clone();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let app = h.app.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move { app.redeem_recovery_code("dave", &code, &ctx()).await }));
    }
    let mut wins = 0;
    for t in tasks {
        let (o, _) = t.await.unwrap().unwrap();
        wins += usize::from(accepted(&o));
    }
    assert_eq!(wins, 1, "exactly one of 16 concurrent redeems of one code is accepted");
    assert_eq!(h.app.recovery_codes_remaining("dave").await.unwrap(), 9);
}
both!(
    concurrent_redeems_accept_one,
    tessera_app::AppConfig {
        throttle: tessera_core::throttle::ThrottlePolicy { max_failures: 100, ..Default::default() },
        ..Default::default()
    }
);

async fn recovery_codes_work_once_and_regenerate(h: &Harness) {
    let (_, codes) = active_device(h, "erin").await;
    assert_eq!(codes.len(), 10);
    // typed sloppily: lower case, spaces, O for 0
    let sloppy = codes[0].to_lowercase().replace('-', " ").replace('0', "o");
    let (o, left) = h.app.redeem_recovery_code("erin", &sloppy, &ctx()).await.unwrap();
    assert!(accepted(&o));
    assert_eq!(left, 9);
    let (o, left) = h.app.redeem_recovery_code("erin", &codes[0], &ctx()).await.unwrap();
    assert!(matches!(o, Outcome::Rejected { .. }), "used once");
    assert_eq!(left, 9);
    // another subject's code is worthless here
    let (_, other) = active_device(h, "frank").await;
    assert!(!accepted(&h.app.redeem_recovery_code("erin", &other[1], &ctx()).await.unwrap().0));
    // regenerating voids the old batch
    let fresh = h.app.regenerate_recovery_codes("erin", &ctx()).await.unwrap();
    assert_eq!(fresh.len(), 10);
    assert!(!accepted(&h.app.redeem_recovery_code("erin", &codes[1], &ctx()).await.unwrap().0));
    let (o, left) = h.app.redeem_recovery_code("erin", &fresh[9], &ctx()).await.unwrap();
    assert!(accepted(&o));
    assert_eq!(left, 9);
    // malformed codes are errors, not outcomes
    assert!(matches!(
        h.app.redeem_recovery_code("erin", "short", &ctx()).await,
        Err(AppError::Invalid(CoreError::Invalid { field: "recovery_code", .. }))
    ));
    // no active factor: nothing to back up
    assert!(matches!(h.app.regenerate_recovery_codes("nobody", &ctx()).await, Err(AppError::FailedPrecondition(_))));
}
both!(recovery_codes_work_once_and_regenerate);

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

async fn sealing_tamper_move_unknown_key(h: &Harness) {
    let (a, _) = active_device(h, "judy").await;
    let (b, _) = active_device(h, "kate").await;
    // flip a ciphertext byte of judy's secret
    let flip = match h.store.backend() {
        tessera_store::Backend::Sqlite => format!(
            "UPDATE totp_secrets SET ciphertext = CAST((CASE WHEN substr(ciphertext, 1, 1) = X'00' THEN X'01' ELSE X'00' END) || substr(ciphertext, 2) AS BLOB) WHERE factor_id = '{}'",
            a.factor_id
        ),
        tessera_store::Backend::Postgres => format!(
            "UPDATE totp_secrets SET ciphertext = set_byte(ciphertext, 0, (get_byte(ciphertext, 0) # 1)) WHERE factor_id = '{}'",
            a.factor_id
        ),
    };
    assert_eq!(h.raw(flip).await, 1);
    let code = h.code(&a.secret_base32, 0);
    let err = h.app.verify_totp("judy", &code, &ctx()).await.unwrap_err();
    assert!(matches!(err, AppError::Keys(CoreError::OpenFailed)), "{err:?}");
    assert!(err.to_string().contains("could not be opened"), "{err}");

    // move kate's (intact) ciphertext into judy's row: it must not open there
    assert_eq!(
        h.raw(format!(
            "UPDATE totp_secrets SET nonce = (SELECT nonce FROM totp_secrets WHERE factor_id = '{b}'), \
             ciphertext = (SELECT ciphertext FROM totp_secrets WHERE factor_id = '{b}') WHERE factor_id = '{a}'",
            a = a.factor_id,
            b = b.factor_id
        ))
        .await,
        1
    );
    let code_b = h.code(&b.secret_base32, 0);
    let err = h.app.verify_totp("judy", &code_b, &ctx()).await.unwrap_err();
    assert!(matches!(err, AppError::Keys(CoreError::OpenFailed)), "{err:?}");

    // an unknown key id
    assert_eq!(
        h.raw(format!("UPDATE totp_secrets SET key_id = 'k-gone' WHERE factor_id = '{}'", b.factor_id)).await,
        1
    );
    let err = h.app.verify_totp("kate", &code_b, &ctx()).await.unwrap_err();
    assert!(matches!(&err, AppError::Keys(CoreError::UnknownKey(k)) if k == "k-gone"), "{err:?}");
}
both!(sealing_tamper_move_unknown_key);

async fn rotate_and_reencrypt(h: &Harness) {
    let mut devices = Vec::new();
    for s in ["u1", "u2", "u3"] {
        devices.push((s, active_device(h, s).await.0));
    }
    let old = h.keyring().current_id().to_string();
    // rotate in the file, as `tessera keys rotate` does; the running app learns of it lazily
    let path = h.dir.path().join("keyring");
    let mut k = tessera_app::keyfile::read_file(&path).unwrap();
    let new = k.rotate().unwrap().to_string();
    tessera_app::keyfile::write_file(&path, &k).unwrap();

    let report = h.app.reencrypt(2).await.unwrap();
    assert_eq!(report.rewritten, 3);
    let status = h.app.key_status().await.unwrap();
    let old_s = status.iter().find(|s| s.key_id == old).unwrap();
    let new_s = status.iter().find(|s| s.key_id == new).unwrap();
    assert_eq!(old_s.usage.totp_secrets, 0, "no TOTP row uses the old key");
    assert_eq!(new_s.usage.totp_secrets, 3);
    assert!(new_s.current && !old_s.current);
    // recovery codes MACed under the old key still tie it down until regenerated
    assert_eq!(old_s.usage.recovery_codes, 30);
    assert!(h.app.key_in_use(&old).await.unwrap());
    for (s, e) in &devices {
        h.clock.advance(Duration::seconds(30));
        assert!(accepted(&h.app.verify_totp(s, &h.code(&e.secret_base32, 0), &ctx()).await.unwrap()), "{s}");
        // old recovery codes still redeem (their key is still in the keyring)
        h.app.regenerate_recovery_codes(s, &ctx()).await.unwrap();
    }
    assert!(!h.app.key_in_use(&old).await.unwrap(), "now the old key can retire");
    // a second pass has nothing to do
    assert_eq!(h.app.reencrypt(100).await.unwrap().rewritten, 0);
}
both!(rotate_and_reencrypt);

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

/// SQLite only: the database file holds no secret in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_file_holds_no_secret() {
    let h = Harness::sqlite(Default::default()).await;
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for s in ["p1", "p2", "p3"] {
        let (e, codes) = active_device(&h, s).await;
        let raw = tessera_core::otp::Secret::from_base32(&e.secret_base32).unwrap();
        secrets.push(e.secret_base32.as_bytes().to_vec());
        secrets.push(e.secret_base32.to_lowercase().into_bytes());
        secrets.push(raw.expose().to_vec());
        for c in codes {
            secrets.push(c.as_bytes().to_vec());
            secrets.push(c.replace('-', "").into_bytes());
        }
    }
    h.store.close().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("tessera.db") {
            bytes.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(bytes.len() > 4096);
    for s in &secrets {
        assert!(!bytes.windows(s.len()).any(|w| w == s.as_slice()), "a secret is in the database file");
    }
    // and the keyring is not in it either
    let text = std::fs::read_to_string(h.dir.path().join("keyring")).unwrap();
    let key_b64 = text.lines().find(|l| l.starts_with("key ")).unwrap().split(" = ").nth(1).unwrap();
    assert!(!bytes.windows(key_b64.len()).any(|w| w == key_b64.as_bytes()));
}

mod identity;
use identity::{PW, enrol_user};
use tessera_app::LoginOutcome;

// ---- the breached-password check against a real range server on 127.0.0.1 ----

use std::sync::{Arc, Mutex};
use tessera_app::{AppConfig, FailureMode, PwnedConfig, PwnedSource};

fn sha1_hex(s: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(s.as_bytes()).iter().map(|b| format!("{b:02X}")).collect()
}

/// A range server: answers `GET /range/PREFIX` with the suffixes of `breached` under that
/// prefix plus zero-count padding lines, and records every request it receives verbatim.
async fn range_server(
    breached: Vec<(&'static str, u64)>,
    padding_for: Vec<&'static str>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf).into_owned();
            log.lock().unwrap().push(req.clone());
            let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
            let prefix = path.strip_prefix("/range/").unwrap_or("").to_owned();
            let mut body = String::new();
            for (pw, n) in &breached {
                let h = sha1_hex(pw);
                if h.starts_with(&prefix) {
                    body.push_str(&format!("{}:{n}\r\n", &h[5..]));
                }
            }
            for pw in &padding_for {
                let h = sha1_hex(pw);
                if h.starts_with(&prefix) {
                    body.push_str(&format!("{}:0\r\n", &h[5..]));
                }
            }
            body.push_str("00000000000000000000000000000000000:0\r\n");
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    (format!("http://{addr}"), seen)
}

fn online(base_url: &str, failure: FailureMode, threshold: u64) -> AppConfig {
    AppConfig {
        pwned: PwnedConfig {
            source: PwnedSource::Online { base_url: base_url.to_owned(), timeout: std::time::Duration::from_secs(2) },
            threshold,
            failure,
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breached_passwords_are_refused_and_only_the_prefix_leaves() {
    let breached = "Tr0ub4dor&3 is famous";
    let rare = "a rarely breached phrase";
    let padded = "this one only shows up as padding";
    let (url, seen) = range_server(vec![(breached, 42), (rare, 2)], vec![padded]).await;
    let h = Harness::sqlite(online(&url, FailureMode::Closed, 3)).await;
    let err = h.app.create_user("a@example.com", breached, &ctx()).await.unwrap_err();
    assert!(
        matches!(&err, AppError::Invalid(CoreError::Invalid { field: "password", reason }) if reason.contains("42 known data breaches")),
        "{err:?}"
    );
    h.app.create_user("b@example.com", rare, &ctx()).await.unwrap(); // under the threshold of 3
    h.app.create_user("c@example.com", padded, &ctx()).await.unwrap(); // a zero-count padding line
    h.app.create_user("d@example.com", "nobody has ever used this one", &ctx()).await.unwrap();
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    for (req, pw) in requests.iter().zip([breached, rare, padded, "nobody has ever used this one"]) {
        let line = req.lines().next().unwrap();
        let path = line.split_whitespace().nth(1).unwrap();
        let prefix = path.strip_prefix("/range/").expect(line);
        assert!(prefix.len() == 5 && prefix.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
        assert_eq!(prefix, &sha1_hex(pw)[..5]);
        // nothing more of the hash (nor the password) is in the request
        let hash = sha1_hex(pw);
        for window in 6..=40 {
            assert!(!req.to_uppercase().contains(&hash[..window]), "more than 5 hex characters sent: {req}");
        }
        assert!(!req.to_uppercase().contains(&hash[5..]), "the suffix was sent: {req}");
        assert!(!req.contains(pw));
        assert!(req.to_lowercase().contains("add-padding: true"), "{req}");
    }
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_range_api_follows_the_failure_mode() {
    // a port nothing listens on
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let h = Harness::sqlite(online(&dead, FailureMode::Open, 1)).await;
    h.app.create_user("open@example.com", "a fine long password", &ctx()).await.unwrap();
    h.cleanup().await;
    let h = Harness::sqlite(online(&dead, FailureMode::Closed, 1)).await;
    let err = h.app.create_user("closed@example.com", "a fine long password", &ctx()).await.unwrap_err();
    assert!(matches!(&err, AppError::FailedPrecondition(m) if m.contains("unavailable")), "{err:?}");
    assert!(matches!(
        h.app.begin_login("closed@example.com", "a fine long password", &ctx()).await.unwrap(),
        LoginOutcome::Failed
    ));
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_range_directory() {
    let dir = tempfile::tempdir().unwrap();
    let breached = "an offline breached password";
    let h = sha1_hex(breached);
    std::fs::write(dir.path().join(&h[..5]), format!("{}:7\r\n", &h[5..])).unwrap();
    let cfg = |failure| AppConfig {
        pwned: PwnedConfig { source: PwnedSource::Offline { dir: dir.path().to_owned() }, threshold: 1, failure },
        ..Default::default()
    };
    let hs = Harness::sqlite(cfg(FailureMode::Closed)).await;
    assert!(matches!(hs.app.create_user("x@example.com", breached, &ctx()).await, Err(AppError::Invalid(_))));
    // a prefix with no range file: the failure mode decides (closed here)
    assert!(matches!(
        hs.app.create_user("y@example.com", "no range file for this one", &ctx()).await,
        Err(AppError::FailedPrecondition(_))
    ));
    hs.cleanup().await;
    let ho = Harness::sqlite(cfg(FailureMode::Open)).await;
    ho.app.create_user("y@example.com", "no range file for this one", &ctx()).await.unwrap();
    ho.cleanup().await;
}

// ---- notification delivery against a real SMTP sink on 127.0.0.1 ----

/// A minimal SMTP server that accepts every message and records what it received.
async fn smtp_sink() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut transcript = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    transcript.push_str(&line);
                    transcript.push('\n');
                    let upper = line.to_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = w.write_all(b"354 go ahead\r\n").await;
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            transcript.push_str(&l);
                            transcript.push('\n');
                        }
                        log.lock().unwrap().push(transcript.clone());
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (format!("smtp://{addr}"), got)
}

async fn support_reset_notifies_by_smtp(h: &Harness) {
    let (url, got) = smtp_sink().await;
    let mailer = tessera_app::Mailer::new(&url, "Tessera <security@example.com>").unwrap();
    let uid = h.app.create_user("fay@example.com", PW, &ctx()).await.unwrap();
    enrol_user(h, &uid).await;
    // (the notice of the added authenticator goes first)
    assert_eq!(h.app.deliver_notifications(&mailer, 10).await.unwrap().sent, 1);
    assert!(got.lock().unwrap()[0].contains("Subject: An authenticator was added to your account"));
    got.lock().unwrap().clear();
    h.app.support_reset_mfa("fay@example.com", "lost phone", "SUP-9", "sam", &ctx()).await.unwrap();
    let r = h.app.deliver_notifications(&mailer, 10).await.unwrap();
    assert_eq!((r.sent, r.failed), (1, 0));
    let mails = got.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("RCPT TO:<fay@example.com>"), "{}", mails[0]);
    assert!(mails[0].contains("Subject: Your two-factor authentication was reset"), "{}", mails[0]);
    assert!(mails[0].contains("SUP-9"), "{}", mails[0]);
    // delivered once: nothing left
    assert_eq!(h.app.deliver_notifications(&mailer, 10).await.unwrap(), Default::default());
    // a dead relay leaves the notice queued for the next pass
    h.app.support_reset_mfa("fay@example.com", "again", "SUP-10", "sam", &ctx()).await.unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("smtp://{}", l.local_addr().unwrap())
    };
    let down = tessera_app::Mailer::new(&dead, "security@example.com").unwrap();
    assert_eq!(h.app.deliver_notifications(&down, 10).await.unwrap().failed, 1);
    assert_eq!(h.store.unsent_notifications(10).await.unwrap().len(), 1);
    assert_eq!(h.app.deliver_notifications(&mailer, 10).await.unwrap().sent, 1);
}
both!(support_reset_notifies_by_smtp);

/// The store half of the verify hot path: a code that matched counts only when the gate admits
/// its attempt. Beyond the budget, or while locked, it is refused and its step stays unused.
async fn a_matched_code_counts_only_when_the_gate_admits_it(h: &Harness) {
    use tessera_core::factor::AuditKind;
    use tessera_core::throttle::ThrottlePolicy;
    use tessera_store::{Acceptance, DeviceCheck, GateAccept, GateResult, NewAuditEvent, SECOND_FACTOR};
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
        let check: DeviceCheck = Box::new(move |_| Ok(Some(a)));
        async move {
            Ok::<_, tessera_store::StoreError>(
                h.store.check_gate_accept("nina", SECOND_FACTOR, now, &policy, check).await?.0,
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

// ---- sign-up: context-specific words in passwords, emails that cannot be account names ----

fn is_context_word_refusal(r: &Result<String, AppError>) -> bool {
    matches!(r, Err(AppError::Invalid(CoreError::Invalid { field: "password", reason }))
        if reason == "must not contain your email's name or the service's name")
}

/// NIST 800-63B context-specific words: a new password may not contain a word of 4 or more
/// characters from the email's local part or from the service's name (the issuer, "Tessera" by
/// default), in any case; shorter words do not count. A refused sign-up creates nothing.
async fn sign_up_refuses_the_emails_and_the_services_name_in_passwords(h: &Harness) {
    let email = "ada.lovelace+x@example.com";
    for pw in ["Lovelace forever 1815", "I am ADA LOVELACE", "my tessera password", "tEsSeRa-tEsSeRa"] {
        assert!(is_context_word_refusal(&h.app.create_user(email, pw, &ctx()).await), "{pw}");
    }
    // sign-up through the pages runs the same rule
    assert!(matches!(
        h.app.sign_up(email, "lovelace's own password", &ctx()).await,
        Err(AppError::Invalid(CoreError::Invalid { field: "password", .. }))
    ));
    // nothing was created: the email is still free; "ada" and "x" are too short to count
    let pw = "ada x marks the spot";
    let uid = h.app.create_user(email, pw, &ctx()).await.unwrap();
    assert!(matches!(
        h.app.begin_login(email, pw, &ctx()).await.unwrap(),
        LoginOutcome::Authenticated { user_id, .. } if user_id == uid
    ));
}
both!(sign_up_refuses_the_emails_and_the_services_name_in_passwords);

/// The service's name is the configured issuer, each of its words, not a fixed "Tessera".
async fn sign_up_refuses_the_configured_issuers_name_in_passwords(h: &Harness) {
    for pw in ["cloud nine is my home", "ACME rockets for ever"] {
        assert!(is_context_word_refusal(&h.app.create_user("zoe@example.com", pw, &ctx()).await), "{pw}");
    }
    h.app.create_user("zoe@example.com", "tessera is just a word here", &ctx()).await.unwrap();
}
both!(
    sign_up_refuses_the_configured_issuers_name_in_passwords,
    tessera_app::AppConfig { issuer: "Acme Cloud".into(), ..Default::default() }
);

/// The email becomes the account name authenticator apps show, so sign-up refuses an email
/// that enrolment would refuse as one: longer than 128 characters, or holding invisible or
/// text-direction characters (which would also let "ada\u{200B}@example.com" pass for
/// "ada@example.com"). The error names `email`; nothing is created.
async fn sign_up_refuses_emails_that_cannot_be_account_names(h: &Harness) {
    let invalid_email = |r: &Result<String, AppError>, why: &str| matches!(r, Err(AppError::Invalid(CoreError::Invalid { field: "email", reason })) if reason == why);
    let at_limit = format!("{}@example.com", "a".repeat(128 - "@example.com".len()));
    assert_eq!(at_limit.chars().count(), tessera_core::validate::MAX_ACCOUNT_NAME_CHARS);
    let over = format!("b{at_limit}");
    let r = h.app.create_user(&over, PW, &ctx()).await;
    assert!(invalid_email(&r, "is 129 characters; at most 128 are allowed"), "{r:?}");
    assert!(matches!(h.app.begin_login(&over, PW, &ctx()).await.unwrap(), LoginOutcome::Failed), "not created");
    for spoof in ["ada\u{200B}@example.com", "\u{202E}moc.elpmaxe@ada", "ada@exam\u{2066}ple.com"] {
        let r = h.app.create_user(spoof, PW, &ctx()).await;
        assert!(invalid_email(&r, "must not contain invisible or text-direction characters"), "{spoof:?}: {r:?}");
    }
    // 128 characters sign up, and that email enrols as the account name
    let uid = h.app.create_user(&at_limit, PW, &ctx()).await.unwrap();
    let enrol =
        EnrollRequest { subject_id: uid, label: "Phone".into(), account_name: at_limit.clone(), ..Default::default() };
    let e = h.app.enroll_totp(&enrol, &ctx()).await.unwrap();
    assert!(e.otpauth_uri.contains(&"a".repeat(116)), "{}", e.otpauth_uri.as_str());
}
both!(sign_up_refuses_emails_that_cannot_be_account_names);

/// The context rule runs before the breached-password check: a password it refuses is never
/// sent, not even as a 5-character prefix of its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_word_password_is_refused_before_the_range_api_is_asked() {
    let (url, seen) = range_server(vec![], vec![]).await;
    let h = Harness::sqlite(online(&url, FailureMode::Closed, 1)).await;
    let r = h.app.create_user("ada.lovelace@example.com", "lovelace and lace", &ctx()).await;
    assert!(is_context_word_refusal(&r), "{r:?}");
    assert!(seen.lock().unwrap().is_empty(), "the range API was asked");
    h.app.create_user("ada.lovelace@example.com", PW, &ctx()).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1, "an acceptable password is checked as before");
    h.cleanup().await;
}
