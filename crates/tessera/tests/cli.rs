//! End-to-end tests of the real `tessera` binary: keyring files and key rotation.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use tessera_app::{ClientContext, ConfirmOutcome, EnrollRequest, Outcome};
use tessera_core::clock::{Clock, SystemClock};
use tessera_testkit::{app_over, code_at};

fn tessera(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_KEYRING_FILE")
        .env("TESSERA_DATA_DIR", data)
        .env("TESSERA_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "expected failure; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// The code an app shows now (by the system clock), `steps` steps away.
fn code_now(secret: &str, steps: i64) -> String {
    code_at(secret, SystemClock.now().unix_timestamp() + 30 * steps)
}

fn current_key(status: &str) -> String {
    status.lines().find(|l| l.contains(" yes ")).unwrap().split_whitespace().next().unwrap().to_owned()
}

#[tokio::test]
async fn keys_generate_rotate_reencrypt_retire() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(ok(tessera(&data, &["migrate"])).contains("migrations applied"));
    // The commands open the store as `serve` does: the data directory is the owner's alone.
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let out = tessera(&data, &["keys", "generate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("BACK UP"));
    ok(out);
    let keyring = data.join("keyring");
    assert_eq!(std::fs::metadata(&keyring).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(fails(tessera(&data, &["keys", "generate"])).contains("already exists"));
    let old = current_key(&ok(tessera(&data, &["keys", "status"])));

    // two active devices sealed under the first key
    let a = app_over(&data, Arc::new(SystemClock)).await;
    let ctx = ClientContext::default();
    let mut secrets = Vec::new();
    for s in ["alice", "bob"] {
        let e = a
            .enroll_totp(
                &EnrollRequest {
                    subject_id: s.into(),
                    label: "phone".into(),
                    account_name: s.into(),
                    ..Default::default()
                },
                &ctx,
            )
            .await
            .unwrap();
        let c = a.confirm_totp(s, &e.factor_id, &code_now(&e.secret_base32, 0), &ctx).await.unwrap();
        assert!(matches!(c, ConfirmOutcome::Confirmed { .. }));
        secrets.push((s, e.secret_base32.to_string()));
    }

    let out = ok(tessera(&data, &["keys", "rotate"]));
    assert!(out.contains(&format!("was {old}")), "{out}");
    let status = ok(tessera(&data, &["keys", "status"]));
    let new = current_key(&status);
    assert_ne!(new, old);
    assert!(ok(tessera(&data, &["keys", "reencrypt", "--batch", "1"])).contains("re-encrypted 2 TOTP secrets"));
    let status = ok(tessera(&data, &["keys", "status"]));
    let old_line = status.lines().find(|l| l.starts_with(&old)).unwrap().to_owned();
    let cols: Vec<&str> = old_line.split_whitespace().collect();
    assert_eq!(cols[1], "0", "no TOTP secret under the old key: {status}");
    assert_eq!(cols[2], "20", "recovery codes still MACed under it: {status}");

    // the old key cannot retire while recovery codes use it
    // nor while replicas may not have swapped the rotation in yet (the grace, 60 s by default)
    assert!(fails(tessera(&data, &["keys", "retire", &old])).contains("the keyring changed"));
    assert!(fails(tessera(&data, &["keys", "retire", &old, "--grace", "0s"])).contains("still used"));
    assert!(fails(tessera(&data, &["keys", "retire", &new])).contains("current key"));

    // the running app (which loaded the keyring before rotation) still verifies every device
    for (s, secret) in &secrets {
        let o = a.verify_totp(s, &code_now(secret, 1), &ctx).await.unwrap();
        assert!(matches!(o, Outcome::Accepted { .. }), "{s}: {o:?}");
        a.regenerate_recovery_codes(s, &ctx).await.unwrap();
    }
    assert!(ok(tessera(&data, &["keys", "retire", &old, "--grace", "0s"])).contains("retired"));
    let status = ok(tessera(&data, &["keys", "status"]));
    assert!(!status.contains(&old), "{status}");
    // and after retirement, a fresh process opens every device with the new key alone
    let fresh = app_over(&data, Arc::new(SystemClock)).await;
    for (s, _) in &secrets {
        assert_eq!(fresh.list_factors(s).await.unwrap().len(), 1);
    }
    assert!(matches!(fresh.verify_totp("alice", "000000", &ctx).await.unwrap(), Outcome::Rejected { .. }));
}

#[test]
fn refuses_a_keyring_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    ok(tessera(dir.path(), &["keys", "generate"]));
    std::fs::set_permissions(dir.path().join("keyring"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(tessera(dir.path(), &["keys", "status"]));
    assert!(err.contains("chmod 600"), "{err}");
    assert!(fails(tessera(dir.path(), &["keys", "rotate"])).contains("chmod 600"));
}

#[test]
fn keyring_flag_and_missing_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(tessera(dir.path(), &["keys", "status"]));
    assert!(err.contains("tessera keys generate"), "{err}");
    let elsewhere = dir.path().join("shared/keyring");
    ok(tessera(dir.path(), &["--keyring", elsewhere.to_str().unwrap(), "keys", "generate"]));
    assert!(elsewhere.exists());
    ok(tessera(dir.path(), &["--keyring", elsewhere.to_str().unwrap(), "keys", "status"]));
}

#[tokio::test]
async fn support_reset_mfa_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    ok(tessera(&data, &["keys", "generate"]));
    let a = app_over(&data, Arc::new(SystemClock)).await;
    let ctx = ClientContext::default();
    let uid = a.create_user("zoe@example.com", "a long enough password", &ctx).await.unwrap();
    let e = a
        .enroll_totp(
            &EnrollRequest {
                subject_id: uid.clone(),
                label: "phone".into(),
                account_name: "zoe".into(),
                ..Default::default()
            },
            &ctx,
        )
        .await
        .unwrap();
    a.confirm_totp(&uid, &e.factor_id, &code_now(&e.secret_base32, 0), &ctx).await.unwrap();
    let err = fails(tessera(
        &data,
        &["support", "reset-mfa", "--user", "zoe@example.com", "--reason", "", "--ticket", "T", "--actor", "sam"],
    ));
    assert!(err.contains("reason"), "{err}");
    let out = ok(tessera(
        &data,
        &[
            "support",
            "reset-mfa",
            "--user",
            "zoe@example.com",
            "--reason",
            "lost phone",
            "--ticket",
            "SUP-1",
            "--actor",
            "sam",
        ],
    ));
    assert!(out.contains("removed 1 factors and 10 recovery codes"), "{out}");
    assert!(a.list_factors(&uid).await.unwrap().is_empty());
    let (events, _) = a.list_audit_events(&uid, 10, "").await.unwrap();
    assert!(events.iter().any(|e| e.kind == "support_mfa_reset" && e.actor.as_deref() == Some("sam")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_signs_users_out_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    ok(tessera(&data, &["keys", "generate"]));
    let a = app_over(&data, Arc::new(SystemClock)).await;
    let ctx = ClientContext::default();
    let mut tokens = Vec::new();
    for email in ["zoe@example.com", "yan@example.com"] {
        a.create_user(email, "a long enough password", &ctx).await.unwrap();
        for _ in 0..2 {
            match a.begin_login(email, "a long enough password", &ctx).await.unwrap() {
                tessera_app::LoginOutcome::Authenticated { token, .. } => tokens.push(token.to_string()),
                o => panic!("{o:?}"),
            }
        }
    }
    let err = fails(tessera(&data, &["support", "sign-out", "--reason", "leak", "--actor", "sam"]));
    assert!(err.contains("--user") || err.contains("--all"), "{err}");
    let out = ok(tessera(
        &data,
        &["support", "sign-out", "--user", "ZOE@example.com", "--reason", "laptop stolen", "--actor", "sam"],
    ));
    assert!(out.contains("signed out ZOE@example.com: 2 sessions revoked"), "{out}");
    assert!(a.session(&tokens[0]).await.unwrap().is_none() && a.session(&tokens[1]).await.unwrap().is_none());
    assert!(a.session(&tokens[2]).await.unwrap().is_some(), "another user's sessions stay");
    let out = ok(tessera(&data, &["support", "sign-out", "--all", "--reason", "key leak", "--actor", "sam"]));
    assert!(out.contains("signed out every user: 2 sessions revoked"), "{out}");
    assert!(a.session(&tokens[3]).await.unwrap().is_none());
    let zoe = a.store().user_by_email("zoe@example.com").await.unwrap().unwrap().id;
    let (events, _) = a.list_audit_events(&zoe, 10, "").await.unwrap();
    let ev = events.iter().find(|e| e.kind == "sessions_revoked").unwrap();
    assert_eq!(ev.actor.as_deref(), Some("sam"));
    assert!(ev.detail.contains("laptop stolen"), "{}", ev.detail);
}

/// docs/SECURITY.md names the test behind each requirement (`file.rs::function`): every one
/// must exist, so a renamed or deleted test cannot leave the mapping silently false.
#[test]
fn security_md_names_only_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/SECURITY.md")).unwrap();
    let mut sources = String::new();
    let mut stack = vec![root.join("crates"), root.join("e2e")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() && name != "target" && name != "node_modules" {
                stack.push(p);
            } else if name.ends_with(".rs") {
                sources.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut named = 0;
    for (i, _) in doc.match_indices(".rs::") {
        let start = doc[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |j| j + 1);
        let file = &doc[start..i];
        let rest = &doc[i + 5..];
        let func: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if file.is_empty() || func.is_empty() {
            continue;
        }
        named += 1;
        assert!(
            sources.contains(&format!("fn {func}(")),
            "docs/SECURITY.md names {file}.rs::{func}, which no test defines"
        );
    }
    assert!(named > 30, "the mapping names its tests ({named} found)");
}

/// `serve --help` shows where each setting's environment variable is, never its value: the
/// SMTP URL may carry the relay's password.
#[test]
fn help_never_prints_the_smtp_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env("TESSERA_SMTP_URL", "smtps://mailer:hunter2-secret@relay.example:465")
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = ok(out);
    assert!(help.contains("TESSERA_SMTP_URL"), "{help}");
    assert!(!help.contains("hunter2-secret"), "{help}");
}
