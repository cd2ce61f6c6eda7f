//! Accounts and members: the MFA decision per account, invitations (a mailed code, nothing said
//! about the invited), roles and the last owner, the account policy.

use crate::{PW, challenge, enrol_secret_of, enrol_user, login_2fa, reauth_needed, sess, signed_up, token, user_2fa};
use tessera_app::{AppError, ConfirmOutcome, LoginOutcome, Session};
use tessera_core::CoreError;
use tessera_core::policy::{AccountAccess, Assurance};
use tessera_core::roles::Role;
use tessera_testkit::{Harness, both, ctx};
use time::Duration;

/// The ids of the queued notices.
async fn notice_ids(h: &Harness) -> std::collections::HashSet<String> {
    h.store.unsent_notifications(10_000).await.unwrap().into_iter().map(|n| n.id).collect()
}

/// Invite `email` and return the invitation's id and the code the mail to it carried: the
/// code waits sealed in the outbox row (never in its detail) and is read from the delivered
/// message. Panics when no new mail went out.
pub(crate) async fn invite_mail(h: &Harness, by: &Session, acct: &str, email: &str, role: Role) -> (String, String) {
    let before = notice_ids(h).await;
    let id = h.app.invite_member(by, acct, email, role, &ctx()).await.unwrap();
    let mails = h.store.unsent_notifications(10_000).await.unwrap();
    let m = mails.iter().find(|m| !before.contains(&m.id)).expect("an invitation mail");
    assert_eq!((m.email.as_str(), m.kind.as_str()), (email, "invitation"));
    assert!(m.secret.is_some() && !m.detail.contains("code"), "sealed: {}", m.detail);
    let file = format!("{}.eml", m.id);
    let delivered = crate::reset::mailbox(h).await;
    let mail = delivered.iter().find(|d| d.file.ends_with(&file)).expect("delivered");
    (id, invitation_code(&mail.text))
}

/// The code in an invitation message's text (the indented line).
fn invitation_code(text: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix("    ")).expect("a code line").trim().to_owned()
}

/// Invite and accept (with the mailed code); the inviter's role rechecked at acceptance.
pub(crate) async fn invite(h: &Harness, by: &Session, acct: &str, email: &str, role: Role, accept_with: &str) {
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
    let t3 = signed_up(h, "out@example.com", &c).await;
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
    let mails = crate::reset::mailbox(h).await;
    let words = |code: &str| {
        let m = mails.iter().find(|m| m.text.contains(code)).unwrap();
        (m.subject.clone(), m.text.replace(code, "CODE"))
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
    let squat = signed_up(h, "Unknown@Example.com", &c).await;
    let squat = sess(h, &squat).await;
    assert_eq!(h.app.my_invitations(&squat).await.unwrap().len(), 1, "listed, to be accepted with its code");
    for guess in ["AAAA-AAAA-AAAA-AAAA", code_known.as_str()] {
        assert!(matches!(h.app.accept_invitation(&squat, &inv_unknown, guess, &c).await, Err(AppError::NotFound(_))));
        assert!(matches!(h.app.decline_invitation(&squat, &inv_unknown, guess, &c).await, Err(AppError::NotFound(_))));
    }
    assert!(matches!(h.app.accept_invitation(&squat, &inv_unknown, "not a code", &c).await, Err(AppError::Invalid(_))));
    // Another user with the code but another email cannot either.
    let other = signed_up(h, "other@example.com", &c).await;
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
    let tm = signed_up(h, "admin@example.com", &c).await;
    invite(h, &so, &acct, "admin@example.com", Role::Admin, &tm).await;
    let sm = sess(h, &tm).await;
    assert!(
        matches!(h.app.set_account_policy(&sm, &acct, true, None, &c).await, Err(AppError::FailedPrecondition(_))),
        "an admin without a factor cannot lock themselves out"
    );
    h.app.set_account_policy(&sm, &acct, false, None, &c).await.unwrap();
    let tx = signed_up(h, "x@example.com", &c).await;
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
