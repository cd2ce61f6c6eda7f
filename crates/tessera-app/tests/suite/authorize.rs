//! `App::authorize`, the one access decision behind gRPC `Authorize` and `/auth/check`: every
//! outcome, and each change of state refused at the very next call (no cache), on a second
//! replica too.

use super::*;
use tessera_app::{Credential, Decision, Required};
use tessera_core::roles::Role;
use tessera_testkit::both;

async fn decide(h: &Harness, t: &str, account: Option<&str>, r: Required) -> Decision {
    h.app.authorize(Credential::Session(t), account, r).await.unwrap().decision
}

async fn authorize_every_outcome(h: &Harness) {
    let c = ctx();
    let (owner, _, _, to) = user_2fa(h, "owner@example.com").await;
    let so = sess(h, &to).await;
    let acct = h.app.create_account(&so, "Acme", &c).await.unwrap();
    let other = h.app.create_account(&so, "Other", &c).await.unwrap();
    use Decision::*;
    use Required::{Password as Pw, SecondFactor as Sf};

    // No session, a malformed or made-up token: LOGIN_REQUIRED, and whose is unknown.
    for t in ["", "x", &"A".repeat(43)] {
        let a = h.app.authorize(Credential::Session(t), None, Pw).await.unwrap();
        assert_eq!((a.decision, a.principal), (LoginRequired, None), "{t:?}");
    }
    // A malformed account id is the caller's mistake.
    assert!(matches!(
        h.app.authorize(Credential::Session(&to), Some("not an id!"), Pw).await,
        Err(AppError::Invalid(_))
    ));

    // The owner's two-factor session: ALLOW at both levels, with who it is.
    let a = h.app.authorize(Credential::Session(&to), Some(&acct), Sf).await.unwrap();
    assert_eq!(a.decision, Allow);
    let p = a.principal.unwrap();
    assert_eq!(
        (p.user_id.as_str(), p.email.as_str(), p.level),
        (owner.as_str(), "owner@example.com", Assurance::PasswordAndSecondFactor)
    );
    assert!(p.second_factor_verified_at.is_some());
    assert_eq!(a.grace_until, None);

    // A member without a factor: password level only.
    let tm = signed_up(h, "member@example.com", &c).await;
    super::accounts::invite(h, &so, &acct, "member@example.com", Role::Member, &tm).await;
    assert_eq!(decide(h, &tm, Some(&acct), Pw).await, Allow);
    assert_eq!(decide(h, &tm, None, Sf).await, EnrolmentRequired, "no factor: only enrolling helps");
    let a = h.app.authorize(Credential::Session(&tm), None, Sf).await.unwrap();
    assert_eq!(a.principal.unwrap().level, Assurance::Password, "a refusal still says whose session");
    // Not a member of the other account.
    assert_eq!(decide(h, &tm, Some(&other), Pw).await, NotAMember);
    assert_eq!(decide(h, &tm, Some(&uuid_like()), Pw).await, NotAMember, "no such account: the same answer");

    // The account turns MFA on: the member is refused at the next call (on another replica
    // too: nothing is cached), ENROLMENT_REQUIRED; within a grace period, ALLOW until then.
    h.app.set_account_policy(&so, &acct, true, None, &c).await.unwrap();
    assert_eq!(decide(h, &tm, Some(&acct), Pw).await, EnrolmentRequired);
    let (replica, _) = h.replica().await;
    let on_replica = replica.authorize(Credential::Session(&tm), Some(&acct), Pw).await.unwrap();
    assert_eq!(on_replica.decision, EnrolmentRequired);
    let deadline = h.clock_now_dt() + Duration::days(3);
    h.app.set_account_policy(&so, &acct, true, Some(deadline), &c).await.unwrap();
    let a = h.app.authorize(Credential::Session(&tm), Some(&acct), Pw).await.unwrap();
    assert_eq!((a.decision, a.grace_until), (Allow, Some(deadline)));
    h.app.set_account_policy(&so, &acct, true, None, &c).await.unwrap();

    // The member enrols in this session (raised, new token): in. Removing the factor: refused.
    let s = sess(h, &tm).await;
    let e = h.app.add_totp_device(&s, "Phone", &c).await.unwrap();
    let ConfirmOutcome::Confirmed { session_token: Some(tm2), .. } =
        h.app.confirm_totp_device(&s, &e.factor_id, &h.code(&e.secret_base32, 0), &c).await.unwrap()
    else {
        panic!("no raised session")
    };
    assert_eq!(decide(h, &tm2, Some(&acct), Sf).await, Allow);
    assert_eq!(decide(h, &tm, Some(&acct), Pw).await, LoginRequired, "the token before the raise is gone");
    h.app.remove_device(&sess(h, &tm2).await, &e.factor_id, &c).await.unwrap();
    assert_eq!(decide(h, &tm2, Some(&acct), Pw).await, EnrolmentRequired);

    // A member with a factor whose session has not proven it: SECOND_FACTOR_REQUIRED. (A
    // trusted browser's session, once the account caps trust at 0 days.)
    let (_, bob_secret, _, tb) = user_2fa(h, "bob@example.com").await;
    super::accounts::invite(h, &so, &acct, "bob@example.com", Role::Member, &tb).await;
    h.app.set_account_policy(&so, &acct, true, None, &c).await.unwrap();
    let tb = login_2fa(h, "bob@example.com", &bob_secret).await;
    let trust = h.app.trust_this_browser(&sess(h, &tb).await, &c).await.unwrap();
    let from_trusted = tessera_app::ClientContext { trust: Some(trust.to_string()), ..ctx() };
    let tt = token(&h.app.begin_login("bob@example.com", PW, &from_trusted).await.unwrap());
    assert_eq!(decide(h, &tt, Some(&acct), Sf).await, Allow, "a trusted browser, within the cap");
    h.app.set_account_trust_cap(&so, &acct, Some(0), &c).await.unwrap();
    assert_eq!(decide(h, &tt, Some(&acct), Pw).await, SecondFactorRequired);
    assert_eq!(decide(h, &tt, None, Sf).await, SecondFactorRequired, "the cap holds without an account too");
    let a = h.app.authorize(Credential::Session(&tt), None, Pw).await.unwrap();
    assert_eq!(a.principal.unwrap().level, Assurance::Password, "reported at the password level");
    assert_eq!(decide(h, &tb, Some(&acct), Sf).await, Allow, "the session that proved the code");
    assert_eq!(decide(h, &tt, None, Pw).await, Allow, "no account, password level: in");

    // Sign out, revocation, idle timeout: SESSION_REVOKED at the next call.
    let t1 = login_2fa(h, "owner@example.com", &enrol_secret_of(h, &owner).await).await;
    assert_eq!(decide(h, &t1, Some(&acct), Sf).await, Allow);
    h.app.logout(&t1, &c).await.unwrap();
    assert_eq!(decide(h, &t1, Some(&acct), Sf).await, SessionRevoked);
    let t2 = signed_up(h, "idle@example.com", &c).await;
    h.clock.advance(h.app.config().sessions.idle_timeout + Duration::seconds(1));
    assert_eq!(decide(h, &t2, None, Pw).await, SessionRevoked);
    let t3 = signed_up(h, "everywhere@example.com", &c).await;
    let u3 = sess(h, &t3).await.user_id().to_owned();
    h.app.logout_everywhere(&u3, &c).await.unwrap();
    assert_eq!(decide(h, &t3, None, Pw).await, SessionRevoked);

    // An address no longer confirmed: EMAIL_UNVERIFIED (whatever else holds).
    let t4 = signed_up(h, "unverified@example.com", &c).await;
    let u4 = sess(h, &t4).await.user_id().to_owned();
    h.raw(format!("UPDATE users SET email_verified_at = NULL WHERE id = '{u4}'")).await;
    let a = h.app.authorize(Credential::Session(&t4), None, Pw).await.unwrap();
    assert_eq!(a.decision, EmailUnverified);
    assert_eq!(a.principal.unwrap().email, "unverified@example.com");

    // A forward token (the domain-wide cookie) stands for its session, and ends with it; a
    // session token is no forward token and the other way round.
    let t5 = signed_up(h, "forward@example.com", &c).await;
    let f5 = h.app.forward_token(&t5).await.unwrap().expect("a live session");
    let fwd = |f: &str| {
        let app = h.app.clone();
        let f = f.to_owned();
        async move { app.authorize(Credential::Forward(&f), None, Pw).await.unwrap().decision }
    };
    assert_eq!(fwd(&f5).await, Allow);
    assert_eq!(fwd(&t5).await, LoginRequired, "a session token is no forward token");
    assert_eq!(decide(h, &f5, None, Pw).await, LoginRequired, "a forward token is no session token");
    h.app.logout(&t5, &c).await.unwrap();
    assert_eq!(fwd(&f5).await, SessionRevoked);
    assert!(h.app.forward_token(&t5).await.unwrap().is_none(), "none for a session that ended");
}
both!(authorize_every_outcome);

/// A syntactically valid id of no account.
fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_owned()
}

/// The return address of a sign-in is kept in its challenge across the second step.
async fn the_return_address_rides_in_the_challenge(h: &Harness) {
    let (_, secret, _, _) = user_2fa(h, "rd@example.com").await;
    let rd = "https://app.example.com/page?x=1";
    let ch = challenge(&h.app.begin_login_returning("rd@example.com", PW, &ctx(), Some(rd)).await.unwrap());
    assert_eq!(h.app.challenge_return_to(&ch).await.unwrap().as_deref(), Some(rd));
    token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &ctx()).await.unwrap());
    assert_eq!(h.app.challenge_return_to(&ch).await.unwrap().as_deref(), Some(rd), "readable after the step");
    let plain = challenge(&h.app.begin_login("rd@example.com", PW, &ctx()).await.unwrap());
    assert_eq!(h.app.challenge_return_to(&plain).await.unwrap(), None);
    assert_eq!(h.app.challenge_return_to("not-a-challenge").await.unwrap(), None);
}
both!(the_return_address_rides_in_the_challenge);
