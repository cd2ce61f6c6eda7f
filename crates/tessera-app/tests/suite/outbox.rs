//! Notification delivery from the outbox to a real SMTP sink on 127.0.0.1.

use crate::{PW, enrol_user};
use std::sync::{Arc, Mutex};
use tessera_testkit::{Harness, both, ctx};

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
    assert_eq!(h.app.deliver_notifications(&mailer, 10).await.unwrap().sent, 0, "not due for 30 s");
    h.clock.advance(time::Duration::seconds(30));
    assert_eq!(h.app.deliver_notifications(&mailer, 10).await.unwrap().sent, 1);
}
both!(support_reset_notifies_by_smtp);

/// A message that can never be delivered (an address the mail library refuses, written before
/// sign-up refused such addresses) is given up at once and leaves the queue: it cannot hold up
/// the mail behind it. A relay that keeps failing backs off, and the message is given up after
/// `MAX_DELIVERY_ATTEMPTS`.
async fn undeliverable_mail_leaves_the_queue(h: &Harness) {
    assert!(h.app.create_user("a(b@example.com", "correct horse battery staple", &ctx()).await.is_err());
    let uid = h.app.create_user("gil@example.com", "correct horse battery staple", &ctx()).await.unwrap();
    for (id, email, at) in [("bad", "a(b@example.com", 1), ("good", "gil@example.com", 2)] {
        h.raw(format!(
            "INSERT INTO outbox (id, user_id, email, kind, detail, created_at) \
             VALUES ('{id}', '{uid}', '{email}', 'factor_removed', '{{}}', {at})"
        ))
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mailer = tessera_app::Mailer::to_dir(dir.path().to_owned(), "Tessera <no-reply@localhost>").unwrap();
    let r = h.app.deliver_notifications(&mailer, 1).await.unwrap();
    assert_eq!((r.sent, r.failed), (0, 1), "the bad one first, given up");
    let r = h.app.deliver_notifications(&mailer, 1).await.unwrap();
    assert_eq!((r.sent, r.failed), (1, 0), "then the good one goes");
    assert!(h.store.unsent_notifications(10).await.unwrap().is_empty());

    // A relay that is down: retried after 30 s, 60 s, …, then given up.
    h.app.support_reset_mfa("gil@example.com", "lost phone", "SUP-1", "sam", &ctx()).await.unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("smtp://{}", l.local_addr().unwrap())
    };
    let down = tessera_app::Mailer::new(&dead, "security@example.com").unwrap();
    let mut tries = 0;
    while !h.store.unsent_notifications(10).await.unwrap().is_empty() {
        tries += h.app.deliver_notifications(&down, 10).await.unwrap().failed;
        h.clock.advance(time::Duration::hours(1));
        assert!(tries <= tessera_app::MAX_DELIVERY_ATTEMPTS);
    }
    assert_eq!(tries, tessera_app::MAX_DELIVERY_ATTEMPTS);
}
both!(undeliverable_mail_leaves_the_queue);
