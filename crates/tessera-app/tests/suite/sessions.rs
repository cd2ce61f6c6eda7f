//! Sessions and the step-up model of issue 11: recent authentication, token rotation, the idle
//! timeout and lifetime, pending devices owned by their session, first-factor confirmation
//! ending password-only sessions.

use crate::{
    PW, accepted, enrol_secret_of, enrol_user, fresh, login_2fa, reauth_needed, req, sess, signed_up, token, user_2fa,
    who, wrong,
};
use tessera_app::{AppError, ConfirmOutcome, LoginOutcome, Proof};
use tessera_core::policy::Assurance;
use tessera_core::roles::Role;
use tessera_core::session::Recency;
use tessera_testkit::{Harness, both, ctx};
use time::Duration;

/// The attack of issue 11, at the use cases: a stale password-only session cannot mint its own
/// authenticator, see another session's setup, or survive the user's first factor.
async fn a_stale_session_cannot_become_a_second_factor(h: &Harness) {
    let c = ctx();
    // Ada signs up (session A, password only) and leaves that browser open.
    let a = signed_up(h, "ada@example.com", &c).await;
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
    let added = notices.iter().find(|n| n.email == "ada@example.com" && n.kind == "factor_added").expect("a notice");
    assert!(
        added.detail.contains("\"sessions_revoked\":2") && added.detail.contains("203.0.113.7"),
        "{}",
        added.detail
    );
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
    let e = h.app.enroll_totp(&req(&bob), &c).await.unwrap();
    assert!(matches!(
        h.app.pending_totp_device(&sess(h, &fresh_b).await, &e.factor_id).await,
        Err(AppError::NotFound(_))
    ));
}
both!(a_stale_session_cannot_become_a_second_factor);

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
    let t = signed_up(h, "bob@example.com", &c).await;
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
    let t1 = signed_up(h, "ada@example.com", &c).await;
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
    let t = signed_up(h, "ada@example.com", &c).await;
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
    h.app.create_user("sam@example.com", PW, &c).await.unwrap();
    assert!(matches!(h.app.create_user("SAM@example.com", PW, &c).await, Err(AppError::FailedPrecondition(_))));
    let s = sess(h, &token(&h.app.begin_login("sam@example.com", PW, &c).await.unwrap())).await;
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

/// A setup expires after exactly 15 minutes, for its own session too; the confirming statement
/// itself checks the owner, the expiry and that the owner session is still live; without recent
/// proof only a setup that is still pending can be removed.
async fn pending_setups_expire_and_the_store_checks_the_owner(h: &Harness) {
    use tessera_store::{Activation, ChangeKind, Done};
    let c = ctx();
    let t = signed_up(h, "ada@example.com", &c).await;
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

    // The store's activating statement, on its own: the wrong session, an expired setup and a
    // revoked owner session all leave the setup pending. (Each change rolls back: the right
    // session's activation, too, leaves it pending.)
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    let now = h.clock_now_dt();
    let base = Activation {
        factor_id: &e.factor_id,
        session_id: Some(s.id()),
        pending_cutoff: now - tessera_app::PENDING_TTL,
        idle_cutoff: now - Duration::minutes(30),
        now,
    };
    let activates = async |a: Activation<'_>| {
        let (fid, sid) = (a.factor_id.to_owned(), a.session_id.map(str::to_owned));
        let (cutoff, idle, now) = (a.pending_cutoff, a.idle_cutoff, a.now);
        h.store
            .change_factors(s.user_id(), ChangeKind::Confirmation, move |change| {
                Box::pin(async move {
                    let a = Activation {
                        factor_id: &fid,
                        session_id: sid.as_deref(),
                        pending_cutoff: cutoff,
                        idle_cutoff: idle,
                        now,
                    };
                    Ok::<_, tessera_store::StoreError>(Done::Rollback(change.activate_pending(&a).await?))
                })
            })
            .await
            .unwrap()
    };
    for (why, a) in [
        ("another session", Activation { session_id: Some("someone-else"), ..base }),
        ("a service, for a page's setup", Activation { session_id: None, ..base }),
        ("expired", Activation { pending_cutoff: now, ..base }),
        ("idle", Activation { idle_cutoff: now, ..base }),
    ] {
        assert!(!activates(a).await, "{why}");
    }
    assert!(activates(base).await, "the owner session, live (rolled back when dropped)");
    assert!(activates(base).await, "still pending: the change above was dropped uncommitted");
    h.app.logout(&t, &c).await.unwrap();
    assert!(!activates(base).await, "a revoked owner session");

    // Without recent proof: a pending setup can be cancelled, an active factor not removed.
    let (uid, secret, _, t) = user_2fa(h, "bob@example.com").await;
    let s = sess(h, &t).await;
    let pending = h.app.add_totp_device(&s, "Spare", &c).await.unwrap();
    h.clock.advance(Duration::minutes(16));
    let s = sess(h, &t).await;
    let active = h.app.list_factors(&uid).await.unwrap().into_iter().find(|f| f.confirmed_at.is_some()).unwrap();
    assert!(reauth_needed(&h.app.remove_device(&s, &active.id, &c).await).is_some());
    h.app.remove_device(&s, &pending.factor_id, &c).await.unwrap();
    let id = active.id.clone();
    let deleted = h
        .store
        .change_factors(&uid, ChangeKind::Other, move |change| {
            Box::pin(async move {
                Ok::<_, tessera_store::StoreError>(Done::Rollback(change.delete_factor(&id, true).await?))
            })
        })
        .await
        .unwrap();
    assert!(!deleted, "the pending-only delete never takes an active factor (a setup confirmed meanwhile)");
    assert!(accepted(&h.app.verify_totp(&uid, &fresh(h, &secret), &c).await.unwrap()));
}
both!(pending_setups_expire_and_the_store_checks_the_owner);
