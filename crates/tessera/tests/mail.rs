//! Mail without an SMTP relay, through the real binary: each message is an `.eml` file (0600)
//! under `DATA_DIR/mail/` (0700), its links built on `--public-url` (never on the request's
//! `Host`). The test follows a password-reset link from the file to a new password.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use tessera_client::{Client, pb};
use tessera_testkit::{Serve, wait_for_mail};

const TOKEN: &str = "test-service-token-0123456789";
const PASSWORD: &str = "correct horse battery staple";

/// One HTTP/1.1 request; (status, head, body).
fn http(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_owned(), body.to_owned())
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_link_from_an_eml_file_sets_the_password() {
    let data = tempfile::tempdir().unwrap();
    let srv = Serve::spawn(
        env!("CARGO_BIN_EXE_tessera"),
        data.path(),
        &["--public-url", "https://mfa.example.test/"],
        &[("TESSERA_SERVICE_TOKEN", TOKEN)],
    );
    let c = Client::connect(&format!("http://{}", srv.grpc), TOKEN, Default::default()).await.unwrap();
    let mut id = c.identity();
    let email = "eve@example.com";
    id.create_user(pb::CreateUserRequest {
        email: email.into(),
        password: PASSWORD.into(),
        context: None,
        email_verified: true,
    })
    .await
    .unwrap();

    // A browser: the CSRF cookie from a page, then the form (sent with a forged Host).
    let (_, head, _) = http(&srv.http, "GET", "/password/forgot", &[], "");
    let csrf = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: __Host-tessera_csrf="))
        .and_then(|v| v.split(';').next())
        .expect("a CSRF cookie")
        .to_owned();
    let cookie = format!("__Host-tessera_csrf={csrf}");
    let headers = [("Cookie", cookie.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
    let (st, _, body) =
        http(&srv.http, "POST", "/password/forgot", &headers, &form(&[("csrf", &csrf), ("email", email)]));
    assert_eq!(st, 200, "{body}");

    let dir = data.path().join("mail");
    let mail = wait_for_mail(&dir, email, "Reset your password").await;
    assert_eq!(std::fs::metadata(&mail.file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let link = mail.link("https://mfa.example.test/password/reset?token=").expect("a link on --public-url");
    assert!(!mail.text.contains("evil.example"), "never built from Host");
    let raw = std::fs::read_to_string(&mail.file).unwrap();
    assert!(raw.contains("multipart/alternative") && raw.contains("text/html"), "plain text and HTML");
    let token = link.rsplit_once("token=").unwrap().1.to_owned();

    let (st, _, page) = http(&srv.http, "GET", &format!("/password/reset?token={token}"), &[], "");
    assert_eq!(st, 200, "{page}");
    let new_pw = "a fresh passphrase from the mail";
    let (st, head, _) = http(
        &srv.http,
        "POST",
        "/password/reset",
        &headers,
        &form(&[("csrf", &csrf), ("token", &token), ("password", new_pw)]),
    );
    assert_eq!(st, 303);
    assert!(head.contains("location: /login?reset=1"), "{head}");
    let (st, _, _) = http(
        &srv.http,
        "POST",
        "/password/reset",
        &headers,
        &form(&[("csrf", &csrf), ("token", &token), ("password", "yet another passphrase")]),
    );
    assert_eq!(st, 410, "the link works once");

    let login = |password: &str| pb::BeginLoginRequest {
        email: email.into(),
        password: password.into(),
        context: Some(pb::ClientContext { ip: "192.0.2.1".into(), ..Default::default() }),
    };
    let ok = id.begin_login(login(new_pw)).await.unwrap().into_inner();
    assert_eq!(ok.status, pb::LoginStatus::Authenticated as i32);
    let old = id.begin_login(login(PASSWORD)).await.unwrap().into_inner();
    assert_eq!(old.status, pb::LoginStatus::Failed as i32);
    let notice = wait_for_mail(&dir, email, "Your password was changed").await;
    assert!(!notice.text.contains(&token));
}
