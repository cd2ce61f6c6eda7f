//! Sealing and the keyring: tampered, moved or unknown-key secrets refuse to open; rotation and
//! re-encryption; no secret in clear in the database file.

use crate::{accepted, active_device};
use tessera_app::AppError;
use tessera_core::CoreError;
use tessera_testkit::{Harness, both, ctx};
use time::Duration;

async fn sealing_tamper_move_unknown_key(h: &Harness) {
    let (a, _) = active_device(h, "judy").await;
    let (b, _) = active_device(h, "kate").await;
    // flip a ciphertext byte of judy's secret
    let flip = match h.store.backend() {
        tessera_store::Backend::Sqlite => format!(
            "UPDATE totp_secrets SET ciphertext = CAST((CASE WHEN substr(ciphertext, 1, 1) = X'00' THEN X'01' ELSE X'00' END) || substr(ciphertext, 2) AS BLOB) WHERE factor_id = '{}'",
            a.factor_id
        ),
        tessera_store::Backend::Postgres => format!(
            "UPDATE totp_secrets SET ciphertext = set_byte(ciphertext, 0, (get_byte(ciphertext, 0) # 1)) WHERE factor_id = '{}'",
            a.factor_id
        ),
    };
    assert_eq!(h.raw(flip).await, 1);
    let code = h.code(&a.secret_base32, 0);
    let err = h.app.verify_totp("judy", &code, &ctx()).await.unwrap_err();
    assert!(matches!(err, AppError::Keys(CoreError::OpenFailed)), "{err:?}");
    assert!(err.to_string().contains("could not be opened"), "{err}");

    // move kate's (intact) ciphertext into judy's row: it must not open there
    assert_eq!(
        h.raw(format!(
            "UPDATE totp_secrets SET nonce = (SELECT nonce FROM totp_secrets WHERE factor_id = '{b}'), \
             ciphertext = (SELECT ciphertext FROM totp_secrets WHERE factor_id = '{b}') WHERE factor_id = '{a}'",
            a = a.factor_id,
            b = b.factor_id
        ))
        .await,
        1
    );
    let code_b = h.code(&b.secret_base32, 0);
    let err = h.app.verify_totp("judy", &code_b, &ctx()).await.unwrap_err();
    assert!(matches!(err, AppError::Keys(CoreError::OpenFailed)), "{err:?}");

    // an unknown key id
    assert_eq!(
        h.raw(format!("UPDATE totp_secrets SET key_id = 'k-gone' WHERE factor_id = '{}'", b.factor_id)).await,
        1
    );
    let err = h.app.verify_totp("kate", &code_b, &ctx()).await.unwrap_err();
    assert!(matches!(&err, AppError::Keys(CoreError::UnknownKey(k)) if k == "k-gone"), "{err:?}");
}
both!(sealing_tamper_move_unknown_key);

async fn rotate_and_reencrypt(h: &Harness) {
    let mut devices = Vec::new();
    for s in ["u1", "u2", "u3"] {
        devices.push((s, active_device(h, s).await.0));
    }
    let old_id = h.keyring().current_id();
    let old = old_id.to_string();
    // A replica verifies a code of each: its device cache (PostgreSQL) holds the old seals.
    let (replica, _) = h.replica().await;
    for (s, e) in &devices {
        assert!(accepted(&replica.verify_totp(s, &h.code(&e.secret_base32, 1), &ctx()).await.unwrap()), "{s}");
    }
    h.clock.advance(Duration::seconds(60));
    // rotate in the file, as `tessera keys rotate` does; the running app learns of it lazily
    let path = h.dir.path().join("keyring");
    let mut k = tessera_app::keyfile::read_file(&path).unwrap();
    let new = k.rotate().unwrap().to_string();
    tessera_app::keyfile::write_file(&path, &k).unwrap();

    let report = h.app.reencrypt(2).await.unwrap();
    assert_eq!(report.rewritten, 3);
    let status = h.app.key_status().await.unwrap();
    let old_s = status.iter().find(|s| s.key_id == old).unwrap();
    let new_s = status.iter().find(|s| s.key_id == new).unwrap();
    assert_eq!(old_s.usage.totp_secrets, 0, "no TOTP row uses the old key");
    assert_eq!(new_s.usage.totp_secrets, 3);
    assert!(new_s.current && !old_s.current);
    // recovery codes MACed under the old key still tie it down until regenerated
    assert_eq!(old_s.usage.recovery_codes, 30);
    assert!(h.app.key_in_use(&old).await.unwrap());
    for (s, e) in &devices {
        h.clock.advance(Duration::seconds(30));
        assert!(accepted(&h.app.verify_totp(s, &h.code(&e.secret_base32, 0), &ctx()).await.unwrap()), "{s}");
        // old recovery codes still redeem (their key is still in the keyring)
        h.app.regenerate_recovery_codes(s, &ctx()).await.unwrap();
    }
    assert!(!h.app.key_in_use(&old).await.unwrap(), "now the old key can retire");
    // a second pass has nothing to do
    assert_eq!(h.app.reencrypt(100).await.unwrap().rewritten, 0);
    // The old key retires and the keyring reloads: the replica's cached seals are under a key it
    // no longer has; it reads the devices again instead of failing.
    let mut k = tessera_app::keyfile::read_file(&path).unwrap();
    k.retire(&old_id).unwrap();
    tessera_app::keyfile::write_file(&path, &k).unwrap();
    h.keys.reload().unwrap();
    assert!(!h.keyring().ids().contains(&old_id), "the old key is gone");
    for (s, e) in &devices {
        h.clock.advance(Duration::seconds(30));
        assert!(accepted(&replica.verify_totp(s, &h.code(&e.secret_base32, 0), &ctx()).await.unwrap()), "{s}");
    }
}
both!(rotate_and_reencrypt);

/// SQLite only: the database file holds no secret in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_file_holds_no_secret() {
    let h = Harness::sqlite(Default::default()).await;
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for s in ["p1", "p2", "p3"] {
        let (e, codes) = active_device(&h, s).await;
        let raw = tessera_core::otp::Secret::from_base32(&e.secret_base32).unwrap();
        secrets.push(e.secret_base32.as_bytes().to_vec());
        secrets.push(e.secret_base32.to_lowercase().into_bytes());
        secrets.push(raw.expose().to_vec());
        for c in codes {
            secrets.push(c.as_bytes().to_vec());
            secrets.push(c.replace('-', "").into_bytes());
        }
    }
    h.store.close().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("tessera.db") {
            bytes.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(bytes.len() > 4096);
    for s in &secrets {
        assert!(!bytes.windows(s.len()).any(|w| w == s.as_slice()), "a secret is in the database file");
    }
    // and the keyring is not in it either
    let text = std::fs::read_to_string(h.dir.path().join("keyring")).unwrap();
    let key_b64 = text.lines().find(|l| l.starts_with("key ")).unwrap().split(" = ").nth(1).unwrap();
    assert!(!bytes.windows(key_b64.len()).any(|w| w == key_b64.as_bytes()));
}
