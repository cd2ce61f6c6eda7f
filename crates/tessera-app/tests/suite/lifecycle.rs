//! The account around the factor: sign-up with one answer for every address and a verified
//! address before any sign-in; the verification link's rules (single use, 24 hours, the newest
//! wins, three an hour); a password change (the current password, recent proof, the other
//! sessions end); an email change (recent proof, the new mailbox proves it, the old address is
//! told); and the notices of security events. The mailbox is a directory of `.eml` files.

use crate::accounts::invite;
use crate::reset::{mailbox, reset_token};
use crate::{PW, challenge, fresh, login_2fa, reauth_needed, sess, signed_up, token, user_2fa};
use tessera_app::{AppError, LinkState, LoginOutcome, PasswordChangeOutcome, VERIFY_TTL, VerifyOutcome};
use tessera_core::roles::Role;
use tessera_testkit::{Harness, Mail, both, ctx};
use time::Duration;

const NEW_PW: &str = "a brand new passphrase for this one";

/// Messages to `to` whose subject starts with `subject`, oldest first.
async fn mails(h: &Harness, to: &str, subject: &str) -> Vec<Mail> {
    mailbox(h).await.into_iter().filter(|m| m.to.contains(to) && m.subject.starts_with(subject)).collect()
}

/// The newest message to `to` whose subject starts with `subject`, waiting for it (some
/// requests send on their own task).
async fn wait_mail(h: &Harness, to: &str, subject: &str) -> Mail {
    for _ in 0..250 {
        if let Some(m) = mails(h, to, subject).await.pop() {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no mail to {to}: {subject}")
}

/// The token of the newest link to `path` mailed to `to`.
async fn link_token(h: &Harness, to: &str, subject: &str, path: &str) -> String {
    let m = wait_mail(h, to, subject).await;
    let link = m.link(&format!("http://localhost:8080{path}?token=")).expect("a link");
    link.rsplit_once("token=").unwrap().1.to_owned()
}

fn invalid_link(r: &Result<(), AppError>) -> bool {
    matches!(r, Err(AppError::FailedPrecondition(m)) if m.contains("expired or was already used"))
}

async fn kinds(h: &Harness, uid: &str) -> Vec<String> {
    h.app.list_audit_events(uid, 100, "").await.unwrap().0.into_iter().map(|e| e.kind).collect()
}

/// Sign-up never signs in and answers a new and a registered address alike; what differs is
/// the mail: a verification link to the new, a "someone tried" notice to the registered (at
/// most two a day). An unverified user cannot sign in until the link is used, once.
async fn sign_up_answers_every_address_alike_and_verifies_before_any_sign_in(h: &Harness) {
    let c = ctx();
    h.app.sign_up("New@example.com", PW, &c).await.unwrap();
    // Until the link is used, the right password is answered as a wrong one: "sign up, then
    // sign in with the password just chosen" must not tell a stranger the address was free.
    assert_eq!(h.app.begin_login("new@example.com", PW, &c).await.unwrap(), LoginOutcome::Failed);
    let tok = link_token(h, "New@example.com", "Confirm your email address", "/verify-email").await;
    let m = mails(h, "New@example.com", "Confirm your email address").await.pop().unwrap();
    assert!(
        m.text.contains("203.0.113.7") && m.text.contains("suite/1.0") && m.text.contains("24 hours"),
        "{}",
        m.text
    );
    assert_eq!(h.app.email_verification_link(&tok).await.unwrap(), LinkState::Live);
    // A GET of the link (its page) changed nothing: still unverified.
    assert_eq!(h.app.begin_login("new@example.com", PW, &c).await.unwrap(), LoginOutcome::Failed);
    // Only with the password chosen at sign-up: whoever opened an account with someone else's
    // address cannot have its owner confirm it by clicking the link.
    assert_eq!(h.app.verify_email(&tok, "someone else's password", &c).await.unwrap(), VerifyOutcome::WrongPassword);
    assert_eq!(h.app.email_verification_link(&tok).await.unwrap(), LinkState::Live, "the link stays");
    assert_eq!(h.app.verify_email(&tok, PW, &c).await.unwrap(), VerifyOutcome::Verified);
    assert!(matches!(h.app.verify_email(&tok, PW, &c).await, Err(AppError::FailedPrecondition(_))), "single use");
    let uid = match h.app.begin_login("new@example.com", PW, &c).await.unwrap() {
        LoginOutcome::Authenticated { user_id, .. } => user_id,
        other => panic!("{other:?}"),
    };
    let k = kinds(h, &uid).await;
    for want in ["user_created", "email_verification_sent", "email_verified"] {
        assert!(k.contains(&want.to_owned()), "{want}: {k:?}");
    }

    // A registered address: the same answer, no second user, a notice instead of a link.
    let old = h.app.create_user("old@example.com", PW, &c).await.unwrap();
    for _ in 0..3 {
        h.app.sign_up("OLD@example.com", "another long password", &c).await.unwrap();
    }
    assert!(mails(h, "old@example.com", "Confirm your email address").await.is_empty(), "no link to a registered one");
    let tried = mails(h, "old@example.com", "Someone tried to create an account").await;
    assert_eq!(tried.len(), tessera_app::SIGNUP_NOTICES_PER_DAY as usize, "at most two a day");
    assert!(tried[0].text.contains("203.0.113.7"));
    assert!(
        matches!(h.app.begin_login("old@example.com", PW, &c).await.unwrap(), LoginOutcome::Authenticated { user_id, .. } if user_id == old)
    );
    // The rules of the password apply either way, and say nothing of the address.
    for email in ["new@example.com", "nobody@example.com"] {
        assert!(matches!(h.app.sign_up(email, "short", &c).await, Err(AppError::Invalid(_))));
    }
    // A day later, a notice again.
    h.clock.advance(Duration::hours(25));
    h.app.sign_up("old@example.com", "another long password", &c).await.unwrap();
    assert_eq!(mails(h, "old@example.com", "Someone tried").await.len(), 3);
}
both!(sign_up_answers_every_address_alike_and_verifies_before_any_sign_in);

/// A verification link works for 24 hours; a newer one voids it; three go out an hour (sign-up's
/// included); a verified user is sent none; a password reset proves the mailbox too.
async fn verification_links_expire_and_the_newest_wins(h: &Harness) {
    let c = ctx();
    h.app.sign_up("ver@example.com", PW, &c).await.unwrap();
    let first = link_token(h, "ver@example.com", "Confirm your email", "/verify-email").await;
    h.app.send_email_verification(" VER@example.com ", &c).await.unwrap();
    let second = link_token(h, "ver@example.com", "Confirm your email", "/verify-email").await;
    assert_ne!(first, second);
    assert_eq!(h.app.email_verification_link(&first).await.unwrap(), LinkState::Invalid, "voided by the newer");
    assert!(matches!(h.app.verify_email(&first, PW, &c).await, Err(AppError::FailedPrecondition(_))));
    h.app.send_email_verification("ver@example.com", &c).await.unwrap();
    h.app.send_email_verification("ver@example.com", &c).await.unwrap();
    assert_eq!(mails(h, "ver@example.com", "Confirm your email").await.len(), 3, "three an hour");
    let third = link_token(h, "ver@example.com", "Confirm your email", "/verify-email").await;
    h.clock.advance(VERIFY_TTL);
    assert_eq!(h.app.email_verification_link(&third).await.unwrap(), LinkState::Invalid, "24 hours");
    assert!(matches!(h.app.verify_email(&third, PW, &c).await, Err(AppError::FailedPrecondition(_))));
    // Unknown addresses and verified users get the same answer, and no mail.
    h.app.send_email_verification("nobody@example.com", &c).await.unwrap();
    h.app.create_user("done@example.com", PW, &c).await.unwrap();
    h.app.send_email_verification("done@example.com", &c).await.unwrap();
    assert!(mails(h, "nobody@example.com", "").await.is_empty() && mails(h, "done@example.com", "").await.is_empty());
    // An unconfirmed sign-up gets no more mail after 24 hours, and once its links have expired
    // its address is free for the next sign-up (which gets a link, not "you already have one").
    h.app.sign_up("stale@example.com", PW, &c).await.unwrap();
    link_token(h, "stale@example.com", "Confirm your email", "/verify-email").await;
    h.clock.advance(VERIFY_TTL + Duration::minutes(1));
    h.app.request_password_reset("stale@example.com", &c).await.unwrap();
    h.app.send_email_verification("stale@example.com", &c).await.unwrap();
    assert!(mails(h, "stale@example.com", "Reset your password").await.is_empty());
    assert_eq!(mails(h, "stale@example.com", "Confirm your email").await.len(), 1);
    h.app.sign_up("stale@example.com", NEW_PW, &c).await.unwrap();
    assert_eq!(mails(h, "stale@example.com", "Confirm your email").await.len(), 2, "a new sign-up");
    assert!(mails(h, "stale@example.com", "Someone tried").await.is_empty());
    let tok = link_token(h, "stale@example.com", "Confirm your email", "/verify-email").await;
    assert_eq!(h.app.verify_email(&tok, PW, &c).await.unwrap(), VerifyOutcome::WrongPassword, "the old one's");
    assert_eq!(h.app.verify_email(&tok, NEW_PW, &c).await.unwrap(), VerifyOutcome::Verified);

    // A reset link proves the mailbox as well (within the 24 hours): after it, the user may
    // sign in.
    h.app.sign_up("ver@example.com", PW, &c).await.unwrap();
    h.app.request_password_reset("ver@example.com", &c).await.unwrap();
    let tok = reset_token(h, "ver@example.com").await;
    h.app.complete_password_reset(&tok, NEW_PW, &c).await.unwrap();
    assert!(matches!(
        h.app.begin_login("ver@example.com", NEW_PW, &c).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
}
both!(verification_links_expire_and_the_newest_wins);

/// A stranger who signs up with someone's address, again and again as each sign-up expires,
/// gets at most six verification mails a week to it: the count is by address, not by the row
/// that a new sign-up replaces. A second sign-up while the first waits sends its link again
/// (not "you already have an account").
async fn verification_mail_to_an_address_is_capped(h: &Harness) {
    let c = ctx();
    let to = "victim@example.com";
    for day in 0..4 {
        h.app.sign_up(to, PW, &c).await.unwrap();
        h.app.sign_up(to, PW, &c).await.unwrap();
        h.app.send_email_verification(to, &c).await.unwrap();
        h.app.send_email_verification(to, &c).await.unwrap();
        let sent = mails(h, to, "Confirm your email address").await.len();
        assert_eq!(sent, [3, 6, 6, 6][day], "day {day}");
        h.clock.advance(VERIFY_TTL + Duration::hours(1));
    }
    assert!(mails(h, to, "Someone tried").await.is_empty(), "nobody has an account there");
    // A week on, the owner can sign up.
    h.clock.advance(Duration::days(7));
    h.app.sign_up(to, PW, &c).await.unwrap();
    assert_eq!(mails(h, to, "Confirm your email address").await.len(), 7);
}
both!(verification_mail_to_an_address_is_capped);

/// With sign-up closed, only an address with an open invitation gets an account; every other
/// address gets the same answer and nothing else.
async fn closed_sign_up_admits_invited_addresses_only(h: &Harness) {
    let c = ctx();
    h.app.sign_up("stranger@example.com", PW, &c).await.unwrap();
    assert_eq!(h.app.begin_login("stranger@example.com", PW, &c).await.unwrap(), LoginOutcome::Failed, "no user");
    assert!(mails(h, "stranger@example.com", "").await.is_empty());
    // An owner (created by a service) invites someone; they may sign up.
    let t = signed_up(h, "owner@example.com", &c).await;
    let s = sess(h, &t).await;
    let acct = h.app.create_account(&s, "Acme", &c).await.unwrap();
    h.app.invite_member(&s, &acct, "guest@example.com", Role::Member, &c).await.unwrap();
    h.app.sign_up("guest@example.com", PW, &c).await.unwrap();
    let tok = link_token(h, "guest@example.com", "Confirm your email address", "/verify-email").await;
    assert_eq!(h.app.verify_email(&tok, PW, &c).await.unwrap(), VerifyOutcome::Verified);
    assert!(matches!(
        h.app.begin_login("guest@example.com", PW, &c).await.unwrap(),
        LoginOutcome::Authenticated { .. }
    ));
}
both!(
    closed_sign_up_admits_invited_addresses_only,
    tessera_app::AppConfig { signup_open: false, ..Default::default() }
);

/// A password change needs the current password and recent proof of the factor; it ends every
/// other session, voids reset links, and tells the user. A wrong current password counts
/// toward the sign-in lock.
async fn a_password_change_needs_the_current_password_and_recent_proof(h: &Harness) {
    let c = ctx();
    let email = "ada@example.com";
    let (uid, secret, _, t) = user_2fa(h, email).await;
    let other = login_2fa(h, email, &secret).await;
    h.app.request_password_reset(email, &c).await.unwrap();
    let reset = reset_token(h, email).await;
    let s = sess(h, &t).await;
    h.app.request_email_change(&s, "mallory@example.com", &c).await.unwrap();
    let change = link_token(h, "mallory@example.com", "Confirm your new email", "/settings/email/confirm").await;
    assert_eq!(
        h.app.change_password(&s, "not my password", NEW_PW, &c).await.unwrap(),
        PasswordChangeOutcome::WrongPassword
    );
    assert!(matches!(h.app.change_password(&s, PW, "short", &c).await, Err(AppError::Invalid(_))));
    assert!(matches!(h.app.change_password(&s, PW, "ada's tessera password", &c).await, Err(AppError::Invalid(_))));
    assert_eq!(
        h.app.change_password(&s, PW, NEW_PW, &c).await.unwrap(),
        PasswordChangeOutcome::Changed { sessions_revoked: 1 }
    );
    assert!(h.app.session(&t).await.unwrap().is_some(), "this session stays");
    assert!(h.app.session(&other).await.unwrap().is_none(), "the other ended");
    assert_eq!(h.app.password_reset_link(&reset).await.unwrap(), LinkState::Invalid, "reset links are void");
    assert_eq!(h.app.email_change_link(&change).await.unwrap(), LinkState::Invalid, "so are email changes");
    assert_eq!(h.app.begin_login(email, PW, &c).await.unwrap(), LoginOutcome::Failed, "the old password");
    let ch = challenge(&h.app.begin_login(email, NEW_PW, &c).await.unwrap());
    token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &c).await.unwrap());
    assert!(kinds(h, &uid).await.contains(&"password_changed".to_owned()));
    let notice = mails(h, email, "Your password was changed").await;
    assert_eq!(notice.len(), 1);
    assert!(notice[0].text.contains("203.0.113.7") && notice[0].text.contains("other sessions were signed out"));

    // A stale session must prove the factor again first.
    h.clock.advance(Duration::minutes(16));
    let ch = challenge(&h.app.begin_login(email, NEW_PW, &c).await.unwrap());
    let t = token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &c).await.unwrap());
    h.clock.advance(Duration::minutes(16));
    let s = sess(h, &t).await;
    assert!(reauth_needed(&h.app.change_password(&s, NEW_PW, "yet another long passphrase", &c).await).is_some());
}
both!(a_password_change_needs_the_current_password_and_recent_proof);

/// Known browsers (which may sign in past a password suspension) are vouched for by the
/// password: a change forgets every other browser, a reset forgets them all.
async fn a_new_password_forgets_known_browsers(h: &Harness) {
    let email = "kim@example.com";
    let (uid, secret, _, _) = user_2fa(h, email).await;
    let (ta, a) = sign_in_from(h, email, &secret, None).await;
    let (_, b) = sign_in_from(h, email, &secret, None).await;
    assert!(known(h, &uid, &a).await && known(h, &uid, &b).await);
    let s = sess(h, &ta).await;
    let from_a = tessera_app::ClientContext { browser: Some(a.clone()), ..ctx() };
    assert!(matches!(
        h.app.change_password(&s, PW, NEW_PW, &from_a).await.unwrap(),
        PasswordChangeOutcome::Changed { .. }
    ));
    assert!(known(h, &uid, &a).await, "the browser that changed it stays known");
    assert!(!known(h, &uid, &b).await, "the other is forgotten");
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let tok = reset_token(h, email).await;
    h.app.complete_password_reset(&tok, "yet another new passphrase", &ctx()).await.unwrap();
    assert!(!known(h, &uid, &a).await, "a reset forgets them all");
}

/// Sign in with PW and a fresh code from a browser holding `browser` (a known-browser token);
/// the session's token and the browser's new known-browser token.
async fn sign_in_from(h: &Harness, email: &str, secret: &str, browser: Option<String>) -> (String, String) {
    let c = tessera_app::ClientContext { browser, ..ctx() };
    let ch = challenge(&h.app.begin_login(email, PW, &c).await.unwrap());
    match h.app.complete_login_totp(&ch, &fresh(h, secret), &c).await.unwrap() {
        LoginOutcome::Authenticated { token, browser_token, .. } => {
            (token.to_string(), browser_token.unwrap().to_string())
        }
        other => panic!("{other:?}"),
    }
}

async fn known(h: &Harness, uid: &str, browser: &str) -> bool {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(browser.as_bytes()).to_vec();
    h.store.is_known_browser(uid, &hash, h.clock_now_dt() - Duration::days(1)).await.unwrap()
}
both!(a_new_password_forgets_known_browsers);

/// An email change needs recent proof; the link goes to the new address and makes the change;
/// the old address is told and can no longer sign in; outstanding reset links are void. An
/// address that is another user's gets no mail (and the same answer); one taken meanwhile is
/// refused at confirmation.
async fn an_email_change_moves_the_account_with_the_new_mailbox(h: &Harness) {
    let c = ctx();
    let (uid, secret, _, t) = user_2fa(h, "ada@example.com").await;
    let s = sess(h, &t).await;
    assert!(matches!(h.app.request_email_change(&s, "ADA@example.com", &c).await, Err(AppError::Invalid(_))));
    assert!(matches!(h.app.request_email_change(&s, "not an address", &c).await, Err(AppError::Invalid(_))));
    h.app.create_user("bob@example.com", PW, &c).await.unwrap();
    h.app.request_email_change(&s, "bob@example.com", &c).await.unwrap();

    h.app.request_password_reset("ada@example.com", &c).await.unwrap();
    let reset = reset_token(h, "ada@example.com").await;
    h.app.request_email_change(&s, "Ada.New@example.com", &c).await.unwrap();
    let tok = link_token(h, "Ada.New@example.com", "Confirm your new email", "/settings/email/confirm").await;
    // (Its request went before this one's, on a task of its own.)
    assert!(mails(h, "bob@example.com", "").await.is_empty(), "no mail to another user's address");
    assert_eq!(h.app.email_change_link(&tok).await.unwrap(), LinkState::Live);
    assert_eq!(h.app.user_email(&uid).await.unwrap().unwrap(), "ada@example.com", "nothing changes before the link");
    // Only in a session of the user who asked: the new mailbox alone does not move an account.
    let bob = sess(h, &token(&h.app.begin_login("bob@example.com", PW, &c).await.unwrap())).await;
    assert!(
        matches!(h.app.confirm_email_change(&bob, &tok, &c).await, Err(AppError::FailedPrecondition(m)) if m.contains("another account"))
    );
    h.app.confirm_email_change(&s, &tok, &c).await.unwrap();
    assert!(invalid_link(&h.app.confirm_email_change(&s, &tok, &c).await), "single use");
    assert_eq!(h.app.user_email(&uid).await.unwrap().unwrap(), "Ada.New@example.com");
    assert_eq!(h.app.password_reset_link(&reset).await.unwrap(), LinkState::Invalid, "reset links are void");
    assert!(h.app.session(&t).await.unwrap().is_some(), "sessions stay");
    assert_eq!(h.app.begin_login("ada@example.com", PW, &c).await.unwrap(), LoginOutcome::Failed);
    let ch = challenge(&h.app.begin_login("ada.new@example.com", PW, &c).await.unwrap());
    token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &c).await.unwrap());
    let told = mails(h, "ada@example.com", "Your account's email address was changed").await;
    assert_eq!(told.len(), 1, "the old address is told");
    assert!(told[0].text.contains("A…@example.com") && told[0].text.contains("203.0.113.7"), "{}", told[0].text);
    let k = kinds(h, &uid).await;
    assert!(k.contains(&"email_change_requested".to_owned()) && k.contains(&"email_changed".to_owned()));

    // Taken between the request and the link: refused, nothing changes.
    let s = sess(h, &t).await;
    h.app.request_email_change(&s, "carol@example.com", &c).await.unwrap();
    let tok = link_token(h, "carol@example.com", "Confirm your new email", "/settings/email/confirm").await;
    h.app.create_user("carol@example.com", PW, &c).await.unwrap();
    assert!(
        matches!(h.app.confirm_email_change(&s, &tok, &c).await, Err(AppError::FailedPrecondition(m)) if m.contains("another account uses"))
    );
    assert_eq!(h.app.user_email(&uid).await.unwrap().unwrap(), "Ada.New@example.com");

    // A link an intruder asked for dies when the owner signs out everywhere else.
    h.app.request_email_change(&s, "mallory@example.com", &c).await.unwrap();
    let tok = link_token(h, "mallory@example.com", "Confirm your new email", "/settings/email/confirm").await;
    h.app.logout_others(&s, &c).await.unwrap();
    assert_eq!(h.app.email_change_link(&tok).await.unwrap(), LinkState::Invalid);

    // A stale session must prove the factor again first.
    h.clock.advance(Duration::minutes(16));
    let t = login_2fa(h, "ada.new@example.com", &secret).await;
    h.clock.advance(Duration::minutes(16));
    let s = sess(h, &t).await;
    assert!(reauth_needed(&h.app.request_email_change(&s, "ada3@example.com", &c).await).is_some());
}
both!(an_email_change_moves_the_account_with_the_new_mailbox);

/// Each security event sends its notice once: a sign-in from a browser not seen before (not
/// the first one ever), a recovery code used (with how many are left, and "low" from 3), new
/// recovery codes, and an account starting to require MFA (to members without a factor).
async fn notices_of_security_events(h: &Harness) {
    let c = ctx();
    let email = "ada@example.com";
    let (uid, secret, codes, _) = user_2fa(h, email).await;
    assert!(mails(h, email, "A new sign-in").await.is_empty(), "the first browser is no news");
    // Another sign-in without the known-browser token: a new browser.
    let ch = challenge(&h.app.begin_login(email, PW, &c).await.unwrap());
    let browser = match h.app.complete_login_totp(&ch, &fresh(h, &secret), &c).await.unwrap() {
        LoginOutcome::Authenticated { browser_token, .. } => browser_token.unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    let new = mails(h, email, "A new sign-in to your account").await;
    assert_eq!(new.len(), 1);
    assert!(new[0].text.contains("suite/1.0") && new[0].text.contains("203.0.113.7"));
    // The same browser again: no news.
    let known = tessera_app::ClientContext { browser: Some(browser), ..ctx() };
    let ch = challenge(&h.app.begin_login(email, PW, &known).await.unwrap());
    token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &known).await.unwrap());
    assert_eq!(mails(h, email, "A new sign-in").await.len(), 1);

    // Recovery codes used: one notice each, with what is left.
    for code in &codes[..7] {
        let ch = challenge(&h.app.begin_login(email, PW, &known).await.unwrap());
        token(&h.app.complete_login_recovery(&ch, code, &known).await.unwrap());
    }
    let used = mails(h, email, "A recovery code was used").await;
    assert_eq!(used.len(), 7);
    // (Delivered in one pass: their files' order is not the order they were written.)
    for left in 3..=9 {
        let want = if left > 3 {
            format!("You have {left} recovery codes left.")
        } else {
            "You have 3 recovery codes left: create new ones".to_owned()
        };
        assert_eq!(used.iter().filter(|m| m.text.contains(&want)).count(), 1, "{want}");
    }
    let t = login_2fa(h, email, &secret).await;
    let s = sess(h, &t).await;
    h.app.new_recovery_codes(&s, &c).await.unwrap();
    assert_eq!(mails(h, email, "New recovery codes were created").await.len(), 1);

    // An account starts to require MFA: its member without a factor is told, with the deadline.
    let acct = h.app.create_account(&s, "Acme", &c).await.unwrap();
    let member_token = signed_up(h, "member@example.com", &c).await;
    invite(h, &s, &acct, "member@example.com", Role::Member, &member_token).await;
    let grace = h.clock_now_dt() + Duration::days(7);
    h.app.set_account_policy(&s, &acct, true, Some(grace), &c).await.unwrap();
    h.app.set_account_policy(&s, &acct, true, Some(grace), &c).await.unwrap();
    let required = mails(h, "member@example.com", "An account you belong to now requires").await;
    assert_eq!(required.len(), 1, "once, when the policy turns on");
    assert!(required[0].text.contains("Acme") && required[0].text.contains("Until "), "{}", required[0].text);
    assert!(mails(h, email, "An account you belong to").await.is_empty(), "not to a member with a factor");
    let _ = uid;
}
both!(notices_of_security_events);
