//! The web pages in a real browser: starts the real `tessera serve` on 127.0.0.1 and runs
//! `e2e/web.test.mjs` (headless Debian Chromium driven by playwright-core, codes from oathtool,
//! the QR code decoded by zxing-cpp, axe-core for accessibility) and `e2e/webauthn.test.mjs`
//! (security keys and passkeys with Chromium's virtual authenticators, on `http://localhost:PORT`).
//! Screenshots of the key pages land in `target/tmp/web-e2e/` and `target/tmp/webauthn-e2e/`.
//!
//! Needs node with `e2e/node_modules` (`npm ci --prefix e2e`), `/usr/bin/chromium`, `oathtool`
//! and Python's `zxingcpp` + `PIL`; `.ci/run` installs them. Without them the test prints
//! SKIPPED, except under CI=true, where it fails.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tessera_testkit::{Serve, loud};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// What the browser test needs and is missing here.
fn missing() -> Vec<&'static str> {
    let mut m = Vec::new();
    if !ok("node", &["--version"]) {
        m.push("node");
    }
    if !repo().join("e2e/node_modules/playwright-core").exists() || !repo().join("e2e/node_modules/axe-core").exists() {
        m.push("e2e/node_modules (npm ci --prefix e2e)");
    }
    if !Path::new("/usr/bin/chromium").exists() {
        m.push("/usr/bin/chromium (apt-get install chromium)");
    }
    if !ok("oathtool", &["--version"]) {
        m.push("oathtool");
    }
    if !ok("python3", &["-c", "import zxingcpp, PIL"]) {
        m.push("python3 zxing-cpp and pillow (pip install zxing-cpp pillow)");
    }
    m
}

/// Whether the browser tests can run here (else SKIPPED, loudly; a failure under CI=true).
fn can_run() -> bool {
    let missing = missing();
    if !missing.is_empty() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the browser test is mandatory in CI; missing: {}",
            missing.join(", ")
        );
        loud(&format!("SKIPPED (browser): missing {}", missing.join(", ")));
        return false;
    }
    true
}

/// Run a scenario script against `base`; screenshots in `target/tmp/<out>`.
fn scenario(script: &str, base: &str, out: &str, data: &Path, mail: &Path) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new("node")
        .arg(repo().join("e2e").join(script))
        .env("BASE_URL", base)
        .env("OUT_DIR", &out)
        .env("DATA_DIR", data)
        .env("MAIL_DIR", mail)
        .status()
        .unwrap();
    assert!(status.success(), "the browser scenario {script} failed (screenshots so far in {})", out.display());
    out
}

/// Security keys and passkeys: the relying party is `--public-url`, which must be a name, so
/// this server is reached at `http://localhost:PORT` on a port chosen here.
#[test]
fn security_keys_and_passkeys_in_headless_chromium() {
    if !can_run() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let sink = tessera_testkit::MailSink::start(&data.path().join("smtp-received"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://localhost:{port}");
    let env = [
        ("TESSERA_SMTP_URL", sink.url.as_str()),
        ("TESSERA_PUBLIC_URL", base.as_str()),
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_WEB_RATE_LIMIT_PER_MINUTE", "200"),
    ];
    let serve = Serve::spawn(env!("CARGO_BIN_EXE_tessera"), data.path(), &["--http-addr", &addr], &env);
    let out = scenario("webauthn.test.mjs", &base, "webauthn-e2e", data.path(), &sink.dir);
    drop(serve);
    for page in ["20-key-register", "21-login-key", "22-passkey-login", "23-clone-refused", "24-trusted-browsers"] {
        assert!(out.join(format!("{page}.png")).exists(), "screenshot {page}");
    }
    loud(&format!("webauthn browser test passed; screenshots in {}", out.display()));
}

#[test]
fn web_pages_in_headless_chromium() {
    if !can_run() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    // An offline breached-password range directory listing the one password the scenario
    // tries first (SHA-1 6B3E2…, seen 42 times): the sign-up page must refuse it in words.
    let ranges = data.path().join("ranges");
    std::fs::create_dir_all(&ranges).unwrap();
    std::fs::write(
        ranges.join("6B3E2"),
        "0000000000000000000000000000000000A:0\r\n3D8395C806F1BDD0537A4F33F719CEE5283:42\r\n",
    )
    .unwrap();
    // The scenario plays several people at several addresses through one loopback socket: the
    // server trusts the loopback proxy's X-Forwarded-For (each browser context sets its own).
    // Mail goes over SMTP to a real server on 127.0.0.1, as in production; the scenario reads
    // the messages it received and follows their links.
    let sink = tessera_testkit::MailSink::start(&data.path().join("smtp-received"));
    let env = [
        ("TESSERA_SMTP_URL", sink.url.as_str()),
        ("TESSERA_PWNED_MODE", "offline"),
        ("TESSERA_PWNED_DIR", ranges.to_str().unwrap()),
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_WEB_RATE_LIMIT_PER_MINUTE", "200"),
        // A short re-authentication window, so the scenario can show a session going stale.
        ("TESSERA_REAUTH_WINDOW", "1m"),
    ];
    let serve = Serve::spawn(env!("CARGO_BIN_EXE_tessera"), data.path(), &[], &env);
    let base = serve.http.clone();
    let out = scenario("web.test.mjs", &base, "web-e2e", data.path(), &sink.dir);
    drop(serve); // stops the server
    for page in [
        "01-signup",
        "03-setup-qr",
        "04-recovery-codes",
        "06-login-code",
        "07-login-code-wrong",
        "10-account-requires-mfa",
        "11-other-session-setup",
        "12-first-factor-signs-out-others",
        "13-reauth",
        "15-stranger-locked",
        "16-password-reset",
        "01c-unverified",
        "17-password-change",
        "18-email-change",
    ] {
        assert!(out.join(format!("{page}.png")).exists(), "screenshot {page}");
    }
    loud(&format!("browser test passed; screenshots in {}", out.display()));
}
