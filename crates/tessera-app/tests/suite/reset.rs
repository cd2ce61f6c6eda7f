//! A forgotten password: the reset link's rules (single use, 30 minutes, voided by a newer
//! link, a sign-in or the reset itself, three an hour), what it changes (the password, every
//! session, the password counters) and what it never touches (factors, recovery codes), and
//! its token sealed in the outbox until delivery. The mailbox is a directory of `.eml` files.

use crate::{PW, challenge, fresh, token, user_2fa};
use tessera_app::{AppError, LinkState, LoginOutcome, Mailer, RESET_TTL};
use tessera_testkit::{Harness, Mail, both, ctx, ctx_from, read_mailbox};
use time::Duration;

const NEW_PW: &str = "a brand new passphrase for ada";

/// Deliver what is queued to the test's mailbox; every message delivered so far.
pub(crate) async fn mailbox(h: &Harness) -> Vec<Mail> {
    let dir = h.dir.path().join("mail");
    let mailer = Mailer::to_dir(dir.clone(), "Tessera <no-reply@localhost>").unwrap();
    h.app.deliver_notifications(&mailer, 100).await.unwrap();
    read_mailbox(&dir)
}

/// The token of the newest reset link mailed to `email`.
pub(crate) async fn reset_token(h: &Harness, email: &str) -> String {
    let mail = mailbox(h).await.into_iter().rev().find(|m| m.to.contains(email) && m.subject == "Reset your password");
    let link = mail.expect("a reset mail").link("http://localhost:8080/password/reset?token=").expect("a link");
    link.rsplit_once("token=").unwrap().1.to_owned()
}

fn expired(r: Result<(), AppError>) -> bool {
    matches!(r, Err(AppError::FailedPrecondition(ref m)) if m.contains("expired or was already used"))
}

async fn a_reset_sets_the_password_and_nothing_else(h: &Harness) {
    let email = "ada@example.com";
    let (uid, secret, codes, t) = user_2fa(h, email).await;
    // A stranger's wrong passwords lock their address (and count toward the email's total).
    let stranger = ctx_from("198.51.100.66");
    for _ in 0..5 {
        h.app.begin_login(email, "not the password at all", &stranger).await.unwrap();
    }
    assert!(matches!(h.app.begin_login(email, PW, &stranger).await.unwrap(), LoginOutcome::Locked { .. }));

    // Whoever had the password asked to move the account to their own mailbox.
    let s = h.app.session(&t).await.unwrap().unwrap();
    h.app.request_email_change(&s, "mallory@example.com", &ctx()).await.unwrap();
    let change = loop {
        let m = mailbox(h).await.into_iter().rev().find(|m| m.to.contains("mallory@example.com"));
        if let Some(m) = m {
            let link = m.link("http://localhost:8080/settings/email/confirm?token=").expect("a link");
            break link.rsplit_once("token=").unwrap().1.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    h.app.request_password_reset(" ADA@example.com ", &ctx()).await.unwrap();
    let tok = reset_token(h, email).await;
    assert_eq!(h.app.password_reset_link(&tok).await.unwrap(), LinkState::Live);
    // The rules of sign-up apply to the new password; a refused one leaves the link live.
    assert!(matches!(h.app.complete_password_reset(&tok, "short", &ctx()).await, Err(AppError::Invalid(_))));
    assert!(matches!(
        h.app.complete_password_reset(&tok, "my Tessera passphrase again", &ctx()).await,
        Err(AppError::Invalid(_))
    ));
    h.app.complete_password_reset(&tok, NEW_PW, &ctx()).await.unwrap();

    assert!(h.app.session(&t).await.unwrap().is_none(), "every session ended");
    assert_eq!(h.app.email_change_link(&change).await.unwrap(), LinkState::Invalid, "the email change is void");
    assert_eq!(h.app.begin_login(email, PW, &ctx()).await.unwrap(), LoginOutcome::Failed, "the old password");
    // The address the stranger locked is unlocked; the new password is only the first factor.
    let ch = challenge(&h.app.begin_login(email, NEW_PW, &stranger).await.unwrap());
    let t = token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &ctx()).await.unwrap());
    assert_eq!(h.app.session(&t).await.unwrap().unwrap().user_id(), uid);
    assert_eq!(h.app.list_factors(&uid).await.unwrap().len(), 1, "the factor stays");
    assert_eq!(h.app.recovery_codes_remaining(&uid).await.unwrap(), codes.len() as u32, "so do the codes");
    // Used once.
    assert!(expired(h.app.complete_password_reset(&tok, "yet another passphrase", &ctx()).await));
    // A sign-in with the second factor voids an outstanding link too.
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let later = reset_token(h, email).await;
    assert_eq!(h.app.password_reset_link(&later).await.unwrap(), LinkState::Live);
    let ch = challenge(&h.app.begin_login(email, NEW_PW, &ctx()).await.unwrap());
    token(&h.app.complete_login_totp(&ch, &fresh(h, &secret), &ctx()).await.unwrap());
    assert_eq!(h.app.password_reset_link(&later).await.unwrap(), LinkState::Invalid);
    assert_eq!(h.app.password_reset_link(&tok).await.unwrap(), LinkState::Invalid);

    let kinds: Vec<String> =
        h.app.list_audit_events(&uid, 100, "").await.unwrap().0.into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"password_reset_requested".to_owned()) && kinds.contains(&"password_reset".to_owned()));
    let done: Vec<Mail> = mailbox(h).await.into_iter().filter(|m| m.subject == "Your password was changed").collect();
    assert_eq!(done.len(), 1, "one notice of the change");
    assert!(done[0].text.contains("203.0.113.7") && !done[0].text.contains(&tok));
}
both!(a_reset_sets_the_password_and_nothing_else);

async fn links_expire_and_are_voided(h: &Harness) {
    let email = "bea@example.com";
    h.app.create_user(email, PW, &ctx()).await.unwrap();
    // 30 minutes: a second before, live; at the minute, not.
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let tok = reset_token(h, email).await;
    h.clock.advance(RESET_TTL - Duration::seconds(1));
    assert_eq!(h.app.password_reset_link(&tok).await.unwrap(), LinkState::Live);
    h.clock.advance(Duration::seconds(1));
    assert_eq!(h.app.password_reset_link(&tok).await.unwrap(), LinkState::Invalid);
    assert!(expired(h.app.complete_password_reset(&tok, NEW_PW, &ctx()).await));
    // A newer link voids the older.
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let older = reset_token(h, email).await;
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let newer = reset_token(h, email).await;
    assert_ne!(older, newer);
    assert_eq!(h.app.password_reset_link(&older).await.unwrap(), LinkState::Invalid);
    assert_eq!(h.app.password_reset_link(&newer).await.unwrap(), LinkState::Live);
    // A sign-in voids it: the user remembers the password.
    token(&h.app.begin_login(email, PW, &ctx()).await.unwrap());
    assert_eq!(h.app.password_reset_link(&newer).await.unwrap(), LinkState::Invalid);
    // Forged and truncated tokens.
    for bad in ["", "x", &newer[..42], &"A".repeat(43)] {
        assert!(expired(h.app.complete_password_reset(bad, NEW_PW, &ctx()).await), "{bad:?}");
    }
    assert_eq!(h.app.begin_login(email, NEW_PW, &ctx()).await.unwrap(), LoginOutcome::Failed, "nothing changed");
}
both!(links_expire_and_are_voided);

async fn three_links_an_hour_and_one_answer_for_everyone(h: &Harness) {
    let email = "cai@example.com";
    h.app.create_user(email, PW, &ctx()).await.unwrap();
    for _ in 0..5 {
        h.app.request_password_reset(email, &ctx()).await.unwrap();
    }
    let resets = |m: &Vec<Mail>| m.iter().filter(|m| m.subject == "Reset your password").count();
    assert_eq!(resets(&mailbox(h).await), 3, "three links an hour");
    h.clock.advance(Duration::minutes(61));
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    assert_eq!(resets(&mailbox(h).await), 4, "and more after the hour");
    // Unknown addresses: the same Ok, no mail, nothing queued.
    h.app.request_password_reset("nobody@example.com", &ctx()).await.unwrap();
    assert!(mailbox(h).await.iter().all(|m| !m.to.contains("nobody")));
    // A malformed address is an input error, not an answer about accounts.
    assert!(matches!(h.app.request_password_reset("not an email", &ctx()).await, Err(AppError::Invalid(_))));
}
both!(three_links_an_hour_and_one_answer_for_everyone);

/// The token is in the database only as a SHA-256 and, until delivery, sealed in its outbox
/// row; the delivered row keeps neither. A sealed token moved to another row does not open.
async fn the_token_is_sealed_until_delivered(h: &Harness) {
    let email = "dee@example.com";
    h.app.create_user(email, PW, &ctx()).await.unwrap();
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let sealed = "SELECT COUNT(*) FROM outbox WHERE kind = 'password_reset' AND secret_ciphertext IS NOT NULL \
                  AND detail NOT LIKE '%token%'";
    assert_eq!(
        h.raw(format!("UPDATE outbox SET attempts = attempts WHERE id IN ({})", sealed.replace("COUNT(*)", "id")))
            .await,
        1
    );
    let usage = h.app.key_status().await.unwrap();
    assert_eq!(usage.iter().map(|k| k.usage.queued_mail).sum::<u64>(), 1, "the queued link ties its key");
    reset_token(h, email).await;
    assert_eq!(
        h.raw(format!("UPDATE outbox SET attempts = attempts WHERE id IN ({})", sealed.replace("COUNT(*)", "id")))
            .await,
        0
    );
    assert_eq!(
        h.raw(
            "UPDATE outbox SET attempts = attempts WHERE kind = 'password_reset' AND secret_key_id IS NULL \
               AND secret_nonce IS NULL AND secret_ciphertext IS NULL"
                .into()
        )
        .await,
        1,
        "blanked once delivered"
    );
    assert_eq!(h.app.key_status().await.unwrap().iter().map(|k| k.usage.queued_mail).sum::<u64>(), 0);
    // A second request's sealed token copied onto a third's row: that one does not open, and
    // its message is dropped rather than sent without its link; the other goes out.
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    h.clock.advance(Duration::seconds(1));
    h.app.request_password_reset(email, &ctx()).await.unwrap();
    let copied = h
        .raw(
            "UPDATE outbox SET \
             secret_nonce = (SELECT o2.secret_nonce FROM outbox o2 WHERE o2.sent_at IS NULL \
               AND o2.kind = 'password_reset' AND o2.id <> outbox.id), \
             secret_ciphertext = (SELECT o2.secret_ciphertext FROM outbox o2 WHERE o2.sent_at IS NULL \
               AND o2.kind = 'password_reset' AND o2.id <> outbox.id) \
             WHERE id = (SELECT id FROM outbox WHERE sent_at IS NULL AND kind = 'password_reset' \
               ORDER BY created_at DESC LIMIT 1)"
                .into(),
        )
        .await;
    assert_eq!(copied, 1);
    let before = read_mailbox(&h.dir.path().join("mail")).len();
    assert_eq!(mailbox(h).await.len(), before + 1, "only the untouched message went out");
    assert_eq!(
        h.raw("UPDATE outbox SET attempts = attempts WHERE sent_at IS NULL AND failed_at IS NULL".into()).await,
        0,
        "none left queued"
    );
    assert_eq!(
        h.raw(
            "UPDATE outbox SET attempts = attempts WHERE failed_at IS NOT NULL AND secret_key_id IS NULL \
             AND secret_ciphertext IS NULL"
                .into()
        )
        .await,
        1,
        "the one that could not open was given up, its token blanked"
    );
}
both!(the_token_is_sealed_until_delivered);
