//! Identity and the login flow: sign-up, password then code, challenges, logout, unknown emails,
//! known-browser tokens, and the support reset.

use crate::{PW, challenge, enrol_user, fresh, token, who, wrong};
use tessera_app::{AppError, ClientContext, LoginOutcome};
use tessera_core::CoreError;
use tessera_core::policy::Assurance;
use tessera_testkit::{Harness, both, ctx};
use time::Duration;

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
        trusted_since: None,
    };
    let phc = h.store.user_by_id(&uid).await.unwrap().unwrap().password_hash;
    use tessera_store::PasswordSession;
    assert_eq!(h.store.create_password_session(&row, &phc, &ev).await.unwrap(), PasswordSession::HasFactor);
    // A sign-in in flight that checked a password since reset (or changed) opens nothing: no
    // session, no challenge.
    let stale = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA";
    assert_eq!(h.store.create_password_session(&row, stale, &ev).await.unwrap(), PasswordSession::PasswordChanged);
    assert!(!h.store.create_challenge(&[9; 32], &uid, stale, now, now + Duration::minutes(5)).await.unwrap());
    assert!(h.store.challenge_user(&[9; 32], now).await.unwrap().is_none());
    assert!(h.store.create_challenge(&[9; 32], &uid, &phc, now, now + Duration::minutes(5)).await.unwrap());
    // A rehash over a hash that is no longer the user's changes nothing.
    assert!(!h.store.rehash_password(&uid, stale, "$argon2id$v=19$other").await.unwrap());
    assert_eq!(h.store.user_by_id(&uid).await.unwrap().unwrap().password_hash, phc);
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
    // (The recovery code and the reset happen at the same instant of the manual clock.)
    let mut kinds: Vec<_> = queued.iter().map(|n| (n.email.as_str(), n.kind.as_str())).collect();
    kinds.sort_unstable();
    let want = [
        ("eve@example.com", "factor_added"),
        ("eve@example.com", "mfa_reset"),
        ("eve@example.com", "recovery_code_used"),
    ];
    assert_eq!(kinds, want);
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
