//! Key rotation use cases: status, re-encryption in batches while the service runs, and
//! retirement of a key no row uses.

use crate::factors::{TOTP_FORMAT, TOTP_PURPOSE};
use crate::{App, AppError};
use tessera_core::seal::{Aad, KeyId, Sealed};
use tessera_store::{KeyUsage, SealedSecret};

/// A key and what depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// Key id.
    pub key_id: String,
    /// Whether new seals use it.
    pub current: bool,
    /// Whether the keyring holds it (false: rows use a key this keyring lacks).
    pub in_keyring: bool,
    /// Rows depending on it.
    pub usage: KeyUsage,
}

/// What a re-encryption pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReencryptReport {
    /// Rows rewritten under the current key.
    pub rewritten: u64,
    /// Rows skipped because they changed meanwhile (left for the next pass).
    pub skipped: u64,
}

impl App {
    /// Every key of the keyring or of any row, with its row counts.
    pub async fn key_status(&self) -> Result<Vec<KeyStatus>, AppError> {
        let keyring = self.keys.reload()?;
        let usage = self.store.key_usage().await?;
        let current = keyring.current_id().to_string();
        let mut out: Vec<KeyStatus> = keyring
            .ids()
            .iter()
            .map(|id| {
                let id = id.to_string();
                let usage = usage.iter().find(|u| u.key_id == id).cloned().unwrap_or(KeyUsage {
                    key_id: id.clone(),
                    totp_secrets: 0,
                    recovery_codes: 0,
                    queued_mail: 0,
                });
                KeyStatus { current: id == current, in_keyring: true, key_id: id, usage }
            })
            .collect();
        for u in usage {
            if !out.iter().any(|s| s.key_id == u.key_id) {
                out.push(KeyStatus { key_id: u.key_id.clone(), current: false, in_keyring: false, usage: u });
            }
        }
        Ok(out)
    }

    /// Re-seal every TOTP secret that is not under the current key, `batch` rows per
    /// transaction, while the service runs. Each row is rewritten only if it still holds the
    /// ciphertext that was read, so a concurrent change is never overwritten.
    pub async fn reencrypt(&self, batch: u32) -> Result<ReencryptReport, AppError> {
        let keyring = self.keys.reload()?;
        let current = keyring.current_id();
        let mut report = ReencryptReport::default();
        let batch = batch.clamp(1, 10_000);
        loop {
            let rows = self.store.sealed_not_under(current.as_str(), batch).await?;
            if rows.is_empty() {
                return Ok(report);
            }
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let aad = Aad {
                    purpose: TOTP_PURPOSE,
                    version: TOTP_FORMAT,
                    factor_id: &row.factor_id,
                    subject_id: &row.subject_id,
                };
                let old = Sealed {
                    key_id: KeyId::new(&row.sealed.key_id)?,
                    nonce: row.sealed.nonce.clone(),
                    ciphertext: row.sealed.ciphertext.clone(),
                };
                let plain = keyring.open(&aad, &old)?;
                let new = keyring.seal(&aad, &plain)?;
                out.push((
                    row,
                    SealedSecret { key_id: new.key_id.to_string(), nonce: new.nonce, ciphertext: new.ciphertext },
                ));
            }
            let n = out.len() as u64;
            let done = self.store.replace_sealed(&out).await?;
            report.rewritten += done;
            report.skipped += n - done;
            tracing::info!(rewritten = report.rewritten, "re-encryption batch committed");
            if done == 0 {
                // Every row of the batch changed under us; stop rather than spin.
                return Ok(report);
            }
        }
    }

    /// Whether any row still depends on key `id` (then it must not be retired).
    pub async fn key_in_use(&self, id: &str) -> Result<bool, AppError> {
        Ok(self
            .store
            .key_usage()
            .await?
            .iter()
            .any(|u| u.key_id == id && (u.totp_secrets > 0 || u.recovery_codes > 0 || u.queued_mail > 0)))
    }

    /// Remove key `id` from the keyring file, only if it is not current, no row uses it
    /// (`reencrypt` moves the TOTP secrets; recovery codes under it go when their owners use or
    /// regenerate them), and the file has not changed for `grace`: a replica that has not yet
    /// swapped a rotation in still seals under the old key, and rows it wrote after this check
    /// would never open again. `grace` must exceed every replica's keyring check interval.
    pub async fn retire_key(&self, id: &KeyId, grace: time::Duration) -> Result<(), AppError> {
        let _lock = crate::keyfile::lock(self.keys.path())?;
        // Read once: the lock keeps other `keys` commands from changing it meanwhile.
        let mut k = crate::keyfile::read_file(self.keys.path())?;
        if k.current_id() == *id {
            return Err(AppError::FailedPrecondition(format!("key {id} is the current key; rotate first")));
        }
        let changed = std::fs::metadata(self.keys.path())
            .and_then(|m| m.modified())
            .map(time::OffsetDateTime::from)
            .map_err(|e| AppError::FailedPrecondition(format!("cannot read the keyring's change time: {e}")))?;
        let age = self.clock.now() - changed;
        if age < grace {
            return Err(AppError::FailedPrecondition(format!(
                "the keyring changed {}s ago: replicas may still seal under key {id}; retry in {}s, once every \
                 replica shows the current key in tessera_keyring_current (or lower --grace)",
                age.whole_seconds().max(0),
                (grace - age).whole_seconds().max(1)
            )));
        }
        if self.key_in_use(id.as_str()).await? {
            return Err(AppError::FailedPrecondition(format!(
                "key {id} is still used by some rows (see `tessera keys status`): run `tessera keys reencrypt`; \
                 recovery codes under it go when users regenerate or use them"
            )));
        }
        k.retire(id)?;
        crate::keyfile::write_file(self.keys.path(), &k)?;
        self.keys.reload()?;
        Ok(())
    }
}
