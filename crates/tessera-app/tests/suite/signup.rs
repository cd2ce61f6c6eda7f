//! Sign-up's password and email rules: the breached-password check against a real range server
//! on 127.0.0.1 (only a 5-character prefix leaves), context-specific words, emails that cannot be
//! account names.

use crate::PW;
use std::sync::{Arc, Mutex};
use tessera_app::{AppConfig, AppError, EnrollRequest, FailureMode, LoginOutcome, PwnedConfig, PwnedSource};
use tessera_core::CoreError;
use tessera_testkit::{Harness, both, ctx};

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
    // (A long domain: the local part of a deliverable address has at most 64 characters.)
    let at_limit = format!("ada@{}.{}.com", "x".repeat(60), "y".repeat(128 - "ada@".len() - 61 - ".com".len()));
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
    assert!(e.otpauth_uri.contains(&"x".repeat(60)), "{}", e.otpauth_uri.as_str());
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
