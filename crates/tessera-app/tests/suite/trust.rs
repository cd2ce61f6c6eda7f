//! "Trust this browser": after a second factor, a ticked box lets the password alone sign the
//! user in from that browser for 30 days. Who may do what, each with the test that fails if
//! more is allowed: only a session that just proved a factor mints a trust; the token works
//! only for its user and only with the right password; a trusted session opens accounts but
//! proves no factor; adding or removing a factor, a password change or reset, a support reset,
//! a revocation or 30 days end it.

use super::*;
use tessera_app::ClientContext;
use tessera_testkit::{Harness, both};

fn from(trust: &str) -> ClientContext {
    ClientContext { trust: Some(trust.to_owned()), ..ctx() }
}

/// Sign in with a code and trust this browser: (session token, trust token).
async fn trusted(h: &Harness, email: &str, secret: &str) -> (String, String) {
    let t = login_2fa(h, email, secret).await;
    let trust = h.app.trust_this_browser(&sess(h, &t).await, &ctx()).await.unwrap();
    (t, trust.to_string())
}

fn asks_for_the_factor(o: &LoginOutcome) -> bool {
    matches!(o, LoginOutcome::SecondFactorRequired { .. })
}

async fn a_trusted_browser_asks_for_the_password_only(h: &Harness) {
    let (uid, secret, _, _) = user_2fa(h, "tia@example.com").await;
    let (t, trust) = trusted(h, "tia@example.com", &secret).await;
    let o = h.app.begin_login("tia@example.com", PW, &from(&trust)).await.unwrap();
    let s2 = sess(h, &token(&o)).await;
    assert_eq!(s2.assurance(), Assurance::PasswordAndSecondFactor, "accounts that require MFA open");
    assert_eq!(reauth_needed(&h.app.require_recent(&s2).await), Some(Recency::NeedSecondFactor), "no factor proven");
    assert!(matches!(h.app.trust_this_browser(&s2, &ctx()).await, Err(AppError::ReauthRequired(_))), "no chain");
    // The password is never skipped.
    assert_eq!(
        h.app.begin_login("tia@example.com", "wrong password!!", &from(&trust)).await.unwrap(),
        LoginOutcome::Failed
    );
    // Another user's trust does nothing for tia's neighbour.
    let (_, other_secret, _, _) = user_2fa(h, "ugo@example.com").await;
    assert!(asks_for_the_factor(&h.app.begin_login("ugo@example.com", PW, &from(&trust)).await.unwrap()));
    // A made-up token does nothing either.
    assert!(asks_for_the_factor(&h.app.begin_login("tia@example.com", PW, &from(&"A".repeat(43))).await.unwrap()));
    // Listed, and revoked from the list; another user cannot revoke it.
    let s = sess(h, &t).await;
    let list = h.app.trusted_browsers(&s).await.unwrap();
    assert_eq!(list.len(), 1);
    let ugo_session = sess(h, &login_2fa(h, "ugo@example.com", &other_secret).await).await;
    let r = h.app.revoke_trusted_browsers(&ugo_session, Some(&list[0].id), &ctx()).await;
    assert!(matches!(r, Err(AppError::NotFound(_))), "{r:?}");
    assert_eq!(h.app.revoke_trusted_browsers(&ugo_session, None, &ctx()).await.unwrap(), 0, "ugo has none");
    assert_eq!(h.app.trusted_browsers(&s).await.unwrap().len(), 1, "tia's is still there");
    h.app.revoke_trusted_browsers(&s, Some(&list[0].id), &ctx()).await.unwrap();
    assert!(asks_for_the_factor(&h.app.begin_login("tia@example.com", PW, &from(&trust)).await.unwrap()));
    let (_, again) = trusted(h, "tia@example.com", &secret).await;
    assert_eq!(h.app.revoke_trusted_browsers(&s, None, &ctx()).await.unwrap(), 1);
    assert!(asks_for_the_factor(&h.app.begin_login("tia@example.com", PW, &from(&again)).await.unwrap()));
    // A stale session cannot trust its browser.
    h.clock.advance(h.app.config().sessions.reauth_window + Duration::seconds(1));
    let ugo = login_2fa(h, "ugo@example.com", &other_secret).await;
    h.clock.advance(h.app.config().sessions.reauth_window + Duration::seconds(1));
    let stale = sess(h, &ugo).await;
    assert!(matches!(h.app.trust_this_browser(&stale, &ctx()).await, Err(AppError::ReauthRequired(_))));
    // 30 days.
    let (_, trust) = trusted(h, "tia@example.com", &secret).await;
    h.clock.advance(tessera_app::TRUST_TTL - Duration::hours(1));
    assert!(matches!(
        h.app.begin_login("tia@example.com", PW, &from(&trust)).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
    h.clock.advance(Duration::hours(2));
    assert!(asks_for_the_factor(&h.app.begin_login("tia@example.com", PW, &from(&trust)).await.unwrap()));
    let kinds: Vec<String> =
        h.app.list_audit_events(&uid, 100, "").await.unwrap().0.into_iter().map(|e| e.kind).collect();
    for k in ["browser_trusted", "trusted_sign_in", "browser_trust_revoked"] {
        assert!(kinds.iter().any(|x| x == k), "{k}: {kinds:?}");
    }
    let told = crate::reset::mailbox(h).await;
    assert!(
        told.iter().any(
            |m| m.to.contains("tia@example.com") && m.subject == "A browser was trusted to sign in to your account"
        )
    );
}
both!(a_trusted_browser_asks_for_the_password_only);

async fn factor_and_password_changes_end_every_trust(h: &Harness) {
    let (uid, secret, _, _) = user_2fa(h, "vic@example.com").await;
    // A factor added.
    let (t, trust) = trusted(h, "vic@example.com", &secret).await;
    let s = sess(h, &t).await;
    let e = h.app.add_totp_device(&s, "Spare", &ctx()).await.unwrap();
    let code = h.code(&e.secret_base32, 0);
    h.app.confirm_totp_device(&s, &e.factor_id, &code, &ctx()).await.unwrap();
    assert!(asks_for_the_factor(&h.app.begin_login("vic@example.com", PW, &from(&trust)).await.unwrap()));
    // A factor removed.
    let (t, trust) = trusted(h, "vic@example.com", &secret).await;
    h.app.remove_device(&sess(h, &t).await, &e.factor_id, &ctx()).await.unwrap();
    assert!(asks_for_the_factor(&h.app.begin_login("vic@example.com", PW, &from(&trust)).await.unwrap()));
    // The password changed.
    let (t, trust) = trusted(h, "vic@example.com", &secret).await;
    let new_pw = "another long passphrase for vic";
    h.app.change_password(&sess(h, &t).await, PW, new_pw, &ctx()).await.unwrap();
    assert!(matches!(
        h.app.begin_login("vic@example.com", new_pw, &from(&trust)).await.unwrap(),
        LoginOutcome::SecondFactorRequired { .. }
    ));
    // A support reset (which removes the factors: the password alone signs in then, but not
    // through the trust, which is gone: nothing is listed).
    let ch = challenge(&h.app.begin_login("vic@example.com", new_pw, &ctx()).await.unwrap());
    let t = token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &ctx()).await.unwrap());
    h.app.trust_this_browser(&sess(h, &t).await, &ctx()).await.unwrap();
    h.app.support_reset_mfa("vic@example.com", "lost phone", "T-2", "agent@example.com", &ctx()).await.unwrap();
    let t = token(&h.app.begin_login("vic@example.com", new_pw, &ctx()).await.unwrap());
    assert!(h.app.trusted_browsers(&sess(h, &t).await).await.unwrap().is_empty());
    let _ = uid;
}
both!(factor_and_password_changes_end_every_trust);

async fn an_account_that_requires_mfa_caps_the_trust(h: &Harness) {
    let (_, secret, _, _) = user_2fa(h, "wyn@example.com").await;
    let (t, trust) = trusted(h, "wyn@example.com", &secret).await;
    let s = sess(h, &t).await;
    let acct = h.app.create_account(&s, "Acme", &ctx()).await.unwrap();
    h.app.set_account_policy(&s, &acct, true, None, &ctx()).await.unwrap();
    // No cap of its own: the 30 days stand.
    let by_trust = token(&h.app.begin_login("wyn@example.com", PW, &from(&trust)).await.unwrap());
    assert_eq!(h.app.account_access(&by_trust, &acct).await.unwrap(), tessera_core::policy::AccountAccess::Open);
    // 0: never — and a session the trust opened before the cap loses the account at once.
    h.app.set_account_trust_cap(&s, &acct, Some(0), &ctx()).await.unwrap();
    assert_eq!(
        h.app.account_access(&by_trust, &acct).await.unwrap(),
        tessera_core::policy::AccountAccess::SecondFactorRequired
    );
    let fresh_2fa = sess(h, &login_2fa(h, "wyn@example.com", &secret).await).await;
    let r = h.app.trust_this_browser(&fresh_2fa, &ctx()).await;
    assert!(matches!(r, Err(AppError::FailedPrecondition(_))), "no trust is minted under a cap of 0");
    assert!(asks_for_the_factor(&h.app.begin_login("wyn@example.com", PW, &from(&trust)).await.unwrap()));
    // 2 days: a trust 3 days old asks again; a fresh one does not.
    h.app.set_account_trust_cap(&s, &acct, Some(2), &ctx()).await.unwrap();
    h.clock.advance(Duration::days(3));
    assert!(asks_for_the_factor(&h.app.begin_login("wyn@example.com", PW, &from(&trust)).await.unwrap()));
    let (_, fresh_trust) = trusted(h, "wyn@example.com", &secret).await;
    assert!(matches!(
        h.app.begin_login("wyn@example.com", PW, &from(&fresh_trust)).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
    // Only an admin, with recent proof, sets it; and only 0 to 30.
    let t2 = login_2fa(h, "wyn@example.com", &secret).await;
    let s2 = sess(h, &t2).await;
    assert!(matches!(h.app.set_account_trust_cap(&s2, &acct, Some(31), &ctx()).await, Err(AppError::Invalid(_))));
    h.clock.advance(h.app.config().sessions.reauth_window + Duration::seconds(1));
    assert!(reauth_needed(&h.app.set_account_trust_cap(&s2, &acct, Some(5), &ctx()).await).is_some());
    let member = signed_up(h, "xia@example.com", &ctx()).await;
    let sm = sess(h, &member).await;
    assert!(h.app.set_account_trust_cap(&sm, &acct, Some(30), &ctx()).await.is_err(), "not a member, not an admin");
}
both!(an_account_that_requires_mfa_caps_the_trust);
