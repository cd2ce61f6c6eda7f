//! Security keys and passkeys: the ceremonies through a software authenticator, on SQLite and
//! PostgreSQL. Who may do what, each with the test that fails if more is allowed:
//! - registering needs recent authentication and finishes only in the session (or, over gRPC,
//!   for the subject) that began it, once, within 5 minutes — on any replica;
//! - a security key proves the second factor after the password, never signs in alone; a
//!   passkey signs in alone (user verification required) at the second-factor level;
//! - an answer is good for its own ceremony only (no replay), from our origin only;
//! - a signature counter that does not move forward is refused and audited (a clone);
//! - a removed key, or one removed by a support reset, no longer works.

use super::*;
use tessera_app::{KeyOutcome, KeyRefusal, Proof};
use tessera_core::factor::{AuditKind, FactorKind, FactorStatus};
use tessera_core::policy::AccountAccess;
use tessera_testkit::{Harness, SoftKey, both};

const ORIGIN: &str = "http://localhost:8080";

/// Register a key of `kind` in the session `t`; the outcome (the raised session's token, if
/// any, is the first factor's).
async fn add_key(h: &Harness, t: &str, key: &mut SoftKey, kind: FactorKind) -> ConfirmOutcome {
    let s = sess(h, t).await;
    let c = h.app.begin_key_registration(&s, "Blue key", kind).await.unwrap();
    let answer = key.register(&c.options);
    h.app.finish_key_registration(&s, &c.id, &answer, &ctx()).await.unwrap()
}

/// A new user with a key of `kind` as their first factor; (user id, the raised session's token).
async fn user_with_key(h: &Harness, email: &str, key: &mut SoftKey, kind: FactorKind) -> (String, String) {
    let t = signed_up(h, email, &ctx()).await;
    let uid = sess(h, &t).await.user_id().to_owned();
    match add_key(h, &t, key, kind).await {
        ConfirmOutcome::Confirmed { recovery_codes, session_token: Some(raised), .. } => {
            assert_eq!(recovery_codes.len(), 10, "a first factor brings recovery codes");
            (uid, raised.to_string())
        }
        other => panic!("not registered as a first factor: {other:?}"),
    }
}

async fn kinds(h: &Harness, uid: &str) -> Vec<AuditKind> {
    let events = h.app.list_audit_events(uid, 100, "").await.unwrap().0;
    events.into_iter().filter_map(|e| AuditKind::parse(&e.kind)).collect()
}

/// Password, then "use your security key".
async fn login_with_key(h: &Harness, email: &str, key: &mut SoftKey) -> LoginOutcome {
    let ch = challenge(&h.app.begin_login(email, PW, &ctx()).await.unwrap());
    let c = h.app.begin_login_key(&ch).await.unwrap().expect("a live challenge");
    let answer = key.assert(&c.options);
    h.app.complete_login_key(&ch, &c.id, &answer, &ctx()).await.unwrap()
}

async fn security_key_is_a_second_factor(h: &Harness) {
    let mut key = SoftKey::new(ORIGIN);
    let (uid, raised) = user_with_key(h, "ann@example.com", &mut key, FactorKind::SecurityKey).await;
    assert_eq!(
        who(h, &raised).await.unwrap().1,
        Assurance::PasswordAndSecondFactor,
        "the registering session is raised"
    );
    let f = h.app.list_factors(&uid).await.unwrap();
    assert_eq!((f.len(), f[0].kind, f[0].status), (1, FactorKind::SecurityKey, FactorStatus::Active));

    // Sign-in asks for the second factor, and offers the key (no code field: no app).
    let ch = challenge(&h.app.begin_login("ann@example.com", PW, &ctx()).await.unwrap());
    let steps = h.app.second_steps(&ch).await.unwrap().unwrap();
    assert!(steps.keys && !steps.totp);
    let c = h.app.begin_login_key(&ch).await.unwrap().unwrap();
    let answer = key.assert(&c.options);
    let o = h.app.complete_login_key(&ch, &c.id, &answer, &ctx()).await.unwrap();
    assert_eq!(who(h, &token(&o)).await.unwrap(), (uid.clone(), Assurance::PasswordAndSecondFactor));

    // The same answer again: the ceremony is used up (and so is the challenge).
    let again = h.app.complete_login_key(&ch, &c.id, &answer, &ctx()).await.unwrap();
    assert_eq!(again, LoginOutcome::ChallengeInvalid);
    // The old answer to a new login's ceremony: its challenge is not the one signed.
    let ch2 = challenge(&h.app.begin_login("ann@example.com", PW, &ctx()).await.unwrap());
    let c2 = h.app.begin_login_key(&ch2).await.unwrap().unwrap();
    let replayed = h.app.complete_login_key(&ch2, &c2.id, &answer, &ctx()).await.unwrap();
    assert_eq!(replayed, LoginOutcome::KeyRefused(KeyRefusal::NotVerified));
    // …and that login can still finish with a fresh answer to a fresh ceremony.
    let c3 = h.app.begin_login_key(&ch2).await.unwrap().unwrap();
    let fresh_answer = key.assert(&c3.options);
    assert!(matches!(
        h.app.complete_login_key(&ch2, &c3.id, &fresh_answer, &ctx()).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
    // A ceremony of one login cannot finish another login.
    let ch4 = challenge(&h.app.begin_login("ann@example.com", PW, &ctx()).await.unwrap());
    let ch5 = challenge(&h.app.begin_login("ann@example.com", PW, &ctx()).await.unwrap());
    let c4 = h.app.begin_login_key(&ch4).await.unwrap().unwrap();
    let a4 = key.assert(&c4.options);
    let crossed = h.app.complete_login_key(&ch5, &c4.id, &a4, &ctx()).await.unwrap();
    assert_eq!(crossed, LoginOutcome::KeyRefused(KeyRefusal::CeremonyInvalid));

    // A security key alone never signs in: the passkey sign-in refuses it.
    let p = h.app.begin_passkey_login().await.unwrap();
    let alone = key.assert(&p.options);
    let o = h.app.complete_passkey_login(&p.id, &alone, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));

    // From another origin (a phishing page relaying our options): refused.
    let mut phished = SoftKey::new(ORIGIN);
    let (_, _) = user_with_key(h, "bob@example.com", &mut phished, FactorKind::SecurityKey).await;
    let mut phished = phished.at("http://localhost:9999");
    let o = login_with_key(h, "bob@example.com", &mut phished).await;
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::NotVerified));

    // Another user's key does not answer for ann.
    let mut other = SoftKey::new(ORIGIN);
    user_with_key(h, "cat@example.com", &mut other, FactorKind::SecurityKey).await;
    let ch = challenge(&h.app.begin_login("ann@example.com", PW, &ctx()).await.unwrap());
    let c = h.app.begin_login_key(&ch).await.unwrap().unwrap();
    assert!(other.try_assert(&c.options).is_err(), "cat's key is not among ann's allowed credentials");
    // …and if it answers anyway, the server refuses it.
    let unasked = other.assert_unasked(&c.options);
    let o = h.app.complete_login_key(&ch, &c.id, &unasked, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));

    let k = kinds(h, &uid).await;
    for want in [AuditKind::WebauthnRegistered, AuditKind::WebauthnVerified, AuditKind::WebauthnRejected] {
        assert!(k.contains(&want), "{want:?} audited: {k:?}");
    }
}
both!(security_key_is_a_second_factor);

async fn passkey_signs_in_alone_into_an_account_that_requires_mfa(h: &Harness) {
    let mut key = SoftKey::new(ORIGIN);
    let (uid, raised) = user_with_key(h, "dee@example.com", &mut key, FactorKind::Passkey).await;
    let s = sess(h, &raised).await;
    let acct = h.app.create_account(&s, "Acme", &ctx()).await.unwrap();
    h.app.set_account_policy(&s, &acct, true, None, &ctx()).await.unwrap();

    let p = h.app.begin_passkey_login().await.unwrap();
    assert!(!p.options.contains("allowCredentials\":[{"), "a passkey sign-in names no credential: {}", p.options);
    let answer = key.assert(&p.options);
    let o = h.app.complete_passkey_login(&p.id, &answer, &ctx()).await.unwrap();
    let t = token(&o);
    assert_eq!(who(h, &t).await.unwrap(), (uid.clone(), Assurance::PasswordAndSecondFactor));
    assert_eq!(h.app.account_access(&t, &acct).await.unwrap(), AccountAccess::Open);
    // Used once.
    assert_eq!(h.app.complete_passkey_login(&p.id, &answer, &ctx()).await.unwrap(), LoginOutcome::ChallengeInvalid);
    // A passkey serves as the second factor after a password too.
    assert!(matches!(login_with_key(h, "dee@example.com", &mut key).await, LoginOutcome::Authenticated { .. }));
    // Someone else's user handle on dee's credential: refused.
    let p = h.app.begin_passkey_login().await.unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&key.assert(&p.options)).unwrap();
    forged["response"]["userHandle"] = serde_json::json!("AAAAAAAAAAAAAAAAAAAAAA");
    let o = h.app.complete_passkey_login(&p.id, &forged.to_string(), &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
    let k = kinds(h, &uid).await;
    assert!(k.contains(&AuditKind::LoginSucceeded) && k.contains(&AuditKind::WebauthnRejected), "{k:?}");
}
both!(passkey_signs_in_alone_into_an_account_that_requires_mfa);

async fn a_ceremony_finishes_on_another_replica_once(h: &Harness) {
    let (other, other_store) = h.replica().await;
    let t = signed_up(h, "eve@example.com", &ctx()).await;
    let s = sess(h, &t).await;
    let mut key = SoftKey::new(ORIGIN);
    // Begun here, finished there.
    let c = h.app.begin_key_registration(&s, "Key", FactorKind::SecurityKey).await.unwrap();
    let answer = key.register(&c.options);
    let s_there = other.session(&t).await.unwrap().unwrap();
    assert!(matches!(
        other.finish_key_registration(&s_there, &c.id, &answer, &ctx()).await.unwrap(),
        ConfirmOutcome::Confirmed { .. }
    ));
    // Once: neither replica finishes it again.
    for app in [&h.app, &other] {
        let s = app.session(&t).await.unwrap();
        // (The first factor rotated the session's token: the old one is gone; use a fresh one.)
        assert!(s.is_none());
    }
    let t2 = login_with_key(h, "eve@example.com", &mut key).await;
    let s2 = sess(h, &token(&t2)).await;
    let r = h.app.finish_key_registration(&s2, &c.id, &answer, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))), "{r:?}");

    // An assertion begun there, finished here; twice at once on both: one wins.
    let ch = challenge(&other.begin_login("eve@example.com", PW, &ctx()).await.unwrap());
    let c = other.begin_login_key(&ch).await.unwrap().unwrap();
    let a = key.assert(&c.options);
    let cx = ctx();
    let (x, y) =
        tokio::join!(h.app.complete_login_key(&ch, &c.id, &a, &cx), other.complete_login_key(&ch, &c.id, &a, &cx));
    let wins = [x.unwrap(), y.unwrap()].iter().filter(|o| matches!(o, LoginOutcome::Authenticated { .. })).count();
    assert_eq!(wins, 1, "one answer, one session");

    // Expired after 5 minutes.
    let s3 = sess(h, &token(&login_with_key(h, "eve@example.com", &mut key).await)).await;
    let c = h.app.begin_key_registration(&s3, "Second", FactorKind::SecurityKey).await.unwrap();
    let mut second = SoftKey::new(ORIGIN);
    let answer = second.register(&c.options);
    h.clock.advance(tessera_app::CEREMONY_TTL + Duration::seconds(1));
    let s3 = sess(h, &token(&login_with_key(h, "eve@example.com", &mut key).await)).await;
    let r = h.app.finish_key_registration(&s3, &c.id, &answer, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))), "an expired ceremony: {r:?}");
    other_store.close().await;
}
both!(a_ceremony_finishes_on_another_replica_once);

/// Move a credential's stored counter (the library's stored form and the column) to `n`.
async fn set_counter(h: &Harness, uid: &str, n: u32, json_too: bool) {
    let json = if !json_too {
        String::new()
    } else if h.schema.is_some() {
        format!(", credential = jsonb_set(credential::jsonb, '{{counter}}', '{n}')::text")
    } else {
        format!(", credential = json_set(credential, '$.counter', {n})")
    };
    let sql = format!(
        "UPDATE webauthn_credentials SET sign_count = {n}{json} \
         WHERE factor_id IN (SELECT id FROM factors WHERE subject_id = '{uid}')"
    );
    assert_eq!(h.raw(sql).await, 1);
}

async fn a_cloned_credential_is_refused(h: &Harness) {
    let mut key = SoftKey::new(ORIGIN);
    let (uid, _) = user_with_key(h, "fay@example.com", &mut key, FactorKind::SecurityKey).await;
    assert!(matches!(login_with_key(h, "fay@example.com", &mut key).await, LoginOutcome::Authenticated { .. }));
    // Another authenticator holding the same credential has signed more often than this one:
    // the stored counter is ahead of what this one now sends.
    set_counter(h, &uid, 100, true).await;
    let o = login_with_key(h, "fay@example.com", &mut key).await;
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::PossibleClone));
    // The credential is out of use now (whichever copy is the genuine one).
    assert!(h.app.list_factors(&uid).await.unwrap()[0].disabled_at.is_some());
    // The same caught by the store's guard when two answers race (the library checked an older
    // counter; the row moved on meanwhile). (Back in use for this part.)
    assert_eq!(h.raw(format!("UPDATE factors SET disabled_at = NULL WHERE subject_id = '{uid}'")).await, 1);
    set_counter(h, &uid, 0, true).await;
    let ch = challenge(&h.app.begin_login("fay@example.com", PW, &ctx()).await.unwrap());
    let c = h.app.begin_login_key(&ch).await.unwrap().unwrap();
    let a = key.assert(&c.options);
    set_counter(h, &uid, 1000, false).await;
    let o = h.app.complete_login_key(&ch, &c.id, &a, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::PossibleClone));
    let k = kinds(h, &uid).await;
    assert_eq!(k.iter().filter(|k| **k == AuditKind::WebauthnCounterRegressed).count(), 2, "{k:?}");
    // The credential is out of use: whichever copy answers next, with any counter, is refused,
    // the user was told, and the security page shows it turned off.
    let f = h.app.list_factors(&uid).await.unwrap();
    assert!(f[0].disabled_at.is_some(), "{f:?}");
    let ch = challenge(&h.app.begin_login("fay@example.com", PW, &ctx()).await.unwrap());
    assert!(matches!(h.app.begin_login_key(&ch).await, Err(AppError::FailedPrecondition(_))));
    let told = crate::reset::mailbox(h).await;
    assert!(told.iter().any(|m| m.to.contains("fay@example.com") && m.subject.contains("may have been copied")));
}
both!(a_cloned_credential_is_refused);

async fn a_removed_key_no_longer_works(h: &Harness) {
    let mut key = SoftKey::new(ORIGIN);
    let (uid, raised) = user_with_key(h, "gil@example.com", &mut key, FactorKind::Passkey).await;
    // A TOTP device too, so removing the key leaves the account with a factor.
    let s = sess(h, &raised).await;
    let e = h.app.add_totp_device(&s, "Phone", &ctx()).await.unwrap();
    let code = h.code(&e.secret_base32, 0);
    h.app.confirm_totp_device(&s, &e.factor_id, &code, &ctx()).await.unwrap();
    // Ceremonies begun while the key was there…
    let ch = challenge(&h.app.begin_login("gil@example.com", PW, &ctx()).await.unwrap());
    let c = h.app.begin_login_key(&ch).await.unwrap().unwrap();
    let p = h.app.begin_passkey_login().await.unwrap();
    let key_id =
        h.app.list_factors(&uid).await.unwrap().into_iter().find(|f| f.kind == FactorKind::Passkey).unwrap().id;
    h.app.remove_device(&s, &key_id, &ctx()).await.unwrap();
    // …finish without it.
    let a = key.assert(&c.options);
    let o = h.app.complete_login_key(&ch, &c.id, &a, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
    let a = key.assert(&p.options);
    let o = h.app.complete_passkey_login(&p.id, &a, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
    // And no new ceremony offers it.
    assert!(!h.app.second_steps(&ch).await.unwrap().unwrap().keys);
    assert!(matches!(h.app.begin_login_key(&ch).await, Err(AppError::FailedPrecondition(_))));

    // A support reset removes keys with every other factor.
    let mut key2 = SoftKey::new(ORIGIN);
    let (uid2, _) = user_with_key(h, "hal@example.com", &mut key2, FactorKind::Passkey).await;
    h.app.support_reset_mfa("hal@example.com", "lost everything", "T-1", "agent@example.com", &ctx()).await.unwrap();
    assert!(h.app.list_factors(&uid2).await.unwrap().is_empty());
    let p = h.app.begin_passkey_login().await.unwrap();
    let a = key2.assert(&p.options);
    assert_eq!(
        h.app.complete_passkey_login(&p.id, &a, &ctx()).await.unwrap(),
        LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential)
    );
}
both!(a_removed_key_no_longer_works);

async fn adding_a_key_needs_recent_authentication_in_the_session_that_began_it(h: &Harness) {
    // A stale session (the re-authentication window passed) cannot begin a registration: the
    // outside review's takeover (a stale password-only session minting its own factor).
    let t = signed_up(h, "ivy@example.com", &ctx()).await;
    let s = sess(h, &t).await;
    let c = h.app.begin_key_registration(&s, "Key", FactorKind::Passkey).await.unwrap();
    let mut key = SoftKey::new(ORIGIN);
    let answer = key.register(&c.options);
    h.clock.advance(h.app.config().sessions.reauth_window + Duration::seconds(1));
    let s = sess(h, &t).await;
    assert_eq!(
        reauth_needed(&h.app.begin_key_registration(&s, "Key", FactorKind::Passkey).await),
        Some(Recency::NeedPassword)
    );
    // …nor finish one it began while it was fresh.
    assert!(reauth_needed(&h.app.finish_key_registration(&s, &c.id, &answer, &ctx()).await).is_some());

    // Another session of the same user (fresh) cannot finish this session's ceremony.
    let t2 = token(&h.app.begin_login("ivy@example.com", PW, &ctx()).await.unwrap());
    let s2 = sess(h, &t2).await;
    let r = h.app.finish_key_registration(&s2, &c.id, &answer, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))), "{r:?}");
    // Nor another user's, with their own fresh session.
    let tm = signed_up(h, "mallory@example.com", &ctx()).await;
    let sm = sess(h, &tm).await;
    let r = h.app.finish_key_registration(&sm, &c.id, &answer, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))), "{r:?}");
    let ivy = s2.user_id().to_owned();
    assert!(h.app.list_factors(&ivy).await.unwrap().is_empty(), "nothing registered");

    // A user with an authenticator app, in a session that proved only... a stale second factor:
    // needs the second factor again.
    let (_, secret, _, t3) = user_2fa(h, "jay@example.com").await;
    h.clock.advance(h.app.config().sessions.reauth_window + Duration::seconds(1));
    let s3 = sess(h, &t3).await;
    assert_eq!(
        reauth_needed(&h.app.begin_key_registration(&s3, "Key", FactorKind::SecurityKey).await),
        Some(Recency::NeedSecondFactor)
    );
    // Adding a key beside an app is not a first factor: no codes, no rotation.
    let t3 = login_2fa(h, "jay@example.com", &secret).await;
    let mut k3 = SoftKey::new(ORIGIN);
    match add_key(h, &t3, &mut k3, FactorKind::SecurityKey).await {
        ConfirmOutcome::Confirmed { recovery_codes, session_token, sessions_revoked, .. } => {
            assert!(recovery_codes.is_empty() && session_token.is_none() && sessions_revoked == 0);
        }
        other => panic!("{other:?}"),
    }
    // The same authenticator twice: refused by the browser (excluded), and by us.
    let s3 = sess(h, &t3).await;
    let c = h.app.begin_key_registration(&s3, "Again", FactorKind::SecurityKey).await.unwrap();
    assert!(c.options.contains("excludeCredentials"), "{}", c.options);
    // A garbage answer is a clear error, and nothing is registered.
    let c = h.app.begin_key_registration(&s3, "Junk", FactorKind::SecurityKey).await.unwrap();
    let r = h.app.finish_key_registration(&s3, &c.id, "{\"not\": \"a credential\"}", &ctx()).await;
    assert!(matches!(r, Err(AppError::Invalid(_))), "{r:?}");
    // Bad names and kinds are clear errors too.
    assert!(matches!(
        h.app.begin_key_registration(&s3, "   ", FactorKind::SecurityKey).await,
        Err(AppError::Invalid(_))
    ));
    assert!(matches!(h.app.begin_key_registration(&s3, "App", FactorKind::Totp).await, Err(AppError::Invalid(_))));
}
both!(adding_a_key_needs_recent_authentication_in_the_session_that_began_it);

async fn reauthentication_accepts_a_key(h: &Harness) {
    let mut key = SoftKey::new(ORIGIN);
    let (_, raised) = user_with_key(h, "kim@example.com", &mut key, FactorKind::SecurityKey).await;
    h.clock.advance(h.app.config().sessions.reauth_window + Duration::seconds(1));
    let s = sess(h, &raised).await;
    assert_eq!(reauth_needed(&h.app.require_recent(&s).await), Some(Recency::NeedSecondFactor));
    let c = h.app.begin_reauth_key(&s).await.unwrap();
    let a = key.assert(&c.options);
    let o = h.app.reauthenticate(&s, Proof::Key { ceremony: &c.id, response: &a }, &ctx()).await.unwrap();
    let fresh = sess(h, &token(&o)).await;
    h.app.require_recent(&fresh).await.unwrap();
    // The same answer again, in the new session: its ceremony is gone.
    let o = h.app.reauthenticate(&fresh, Proof::Key { ceremony: &c.id, response: &a }, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::CeremonyInvalid));
    assert!(h.app.session(&raised).await.unwrap().is_none(), "the old token stops working");
    // The ceremony is this session's: another session cannot use its answer.
    let other = sess(h, &token(&login_with_key(h, "kim@example.com", &mut key).await)).await;
    let c = h.app.begin_reauth_key(&fresh).await.unwrap();
    let a = key.assert(&c.options);
    let o = h.app.reauthenticate(&other, Proof::Key { ceremony: &c.id, response: &a }, &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::CeremonyInvalid));
}
both!(reauthentication_accepts_a_key);

async fn a_service_registers_and_verifies_keys(h: &Harness) {
    let subject = uuid::Uuid::new_v4().to_string();
    let mut key = SoftKey::new(ORIGIN);
    let c =
        h.app.begin_webauthn_registration(&subject, "Key", FactorKind::SecurityKey, "sam@example.com").await.unwrap();
    let answer = key.register(&c.options);
    // Bound to the subject: another subject cannot finish it.
    let r = h.app.finish_webauthn_registration(&uuid::Uuid::new_v4().to_string(), &c.id, &answer, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))));
    match h.app.finish_webauthn_registration(&subject, &c.id, &answer, &ctx()).await.unwrap() {
        ConfirmOutcome::Confirmed { recovery_codes, .. } => assert_eq!(recovery_codes.len(), 10),
        other => panic!("{other:?}"),
    }
    let c = h.app.begin_webauthn_assertion(&subject).await.unwrap();
    let a = key.assert(&c.options);
    assert!(matches!(
        h.app.finish_webauthn_assertion(&subject, &c.id, &a, &ctx()).await.unwrap(),
        KeyOutcome::Accepted { .. }
    ));
    assert_eq!(
        h.app.finish_webauthn_assertion(&subject, &c.id, &a, &ctx()).await.unwrap(),
        KeyOutcome::Refused(KeyRefusal::CeremonyInvalid)
    );
    // A subject that is not a UUID cannot have a key (its id is the user handle).
    assert!(matches!(
        h.app.begin_webauthn_registration("not-a-uuid", "Key", FactorKind::SecurityKey, "x").await,
        Err(AppError::Invalid(_))
    ));
}
both!(a_service_registers_and_verifies_keys);

async fn a_registration_does_not_outlive_its_session(h: &Harness) {
    // The session is signed out (here by its user; a password change, "sign out everywhere" or
    // a support reset alike) between the browser's answer and its arrival.
    let t = signed_up(h, "lou@example.com", &ctx()).await;
    let s = sess(h, &t).await;
    let mut key = SoftKey::new(ORIGIN);
    let c = h.app.begin_key_registration(&s, "Key", FactorKind::Passkey).await.unwrap();
    let answer = key.register(&c.options);
    h.app.logout(&t, &ctx()).await.unwrap();
    let r = h.app.finish_key_registration(&s, &c.id, &answer, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))), "{r:?}");
    assert!(h.app.list_factors(s.user_id()).await.unwrap().is_empty(), "nothing registered");
    assert_eq!(h.app.recovery_codes_remaining(s.user_id()).await.unwrap(), 0, "no recovery codes");
}
both!(a_registration_does_not_outlive_its_session);

async fn a_password_reset_ends_passkey_sign_in(h: &Harness) {
    // Whoever had the password added a passkey; the owner resets the password by mail: the
    // passkey no longer signs in on its own (it is a security key now, after the password).
    let mut key = SoftKey::new(ORIGIN);
    let (uid, _) = user_with_key(h, "max@example.com", &mut key, FactorKind::Passkey).await;
    h.app.request_password_reset("max@example.com", &ctx()).await.unwrap();
    let link = crate::reset::reset_token(h, "max@example.com").await;
    h.app.complete_password_reset(&link, "a brand new passphrase for max", &ctx()).await.unwrap();
    let p = h.app.begin_passkey_login().await.unwrap();
    let a = key.assert(&p.options);
    assert_eq!(
        h.app.complete_passkey_login(&p.id, &a, &ctx()).await.unwrap(),
        LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential)
    );
    let f = h.app.list_factors(&uid).await.unwrap();
    assert_eq!(f.iter().map(|f| f.kind).collect::<Vec<_>>(), [FactorKind::SecurityKey]);
    let told = crate::reset::mailbox(h).await;
    let done = told
        .iter()
        .rev()
        .find(|m| m.to.contains("max@example.com") && m.subject == "Your password was changed")
        .unwrap();
    assert!(done.text.contains("passkeys now work only after your password"), "{}", done.text);
}
both!(a_password_reset_ends_passkey_sign_in);

async fn removing_the_last_key_voids_the_recovery_codes(h: &Harness) {
    let mut key = SoftKey::new(ORIGIN);
    let (uid, raised) = user_with_key(h, "ned@example.com", &mut key, FactorKind::SecurityKey).await;
    assert_eq!(h.app.recovery_codes_remaining(&uid).await.unwrap(), 10);
    let s = sess(h, &raised).await;
    let id = h.app.list_factors(&uid).await.unwrap()[0].id.clone();
    h.app.remove_device(&s, &id, &ctx()).await.unwrap();
    assert_eq!(h.app.recovery_codes_remaining(&uid).await.unwrap(), 0);
    // …and a forged passkey answer naming a known credential writes nothing to its owner's
    // trail (its signature does not verify).
    let mut key2 = SoftKey::new(ORIGIN);
    let (uid2, _) = user_with_key(h, "oli@example.com", &mut key2, FactorKind::Passkey).await;
    let before = h.app.list_audit_events(&uid2, 100, "").await.unwrap().0.len();
    let p = h.app.begin_passkey_login().await.unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&key2.assert(&p.options)).unwrap();
    forged["response"]["signature"] = serde_json::json!(
        "MEUCIQDmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZgIgZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY"
    );
    let o = h.app.complete_passkey_login(&p.id, &forged.to_string(), &ctx()).await.unwrap();
    assert_eq!(o, LoginOutcome::KeyRefused(KeyRefusal::NotVerified));
    assert_eq!(h.app.list_audit_events(&uid2, 100, "").await.unwrap().0.len(), before);
}
both!(removing_the_last_key_voids_the_recovery_codes);
