//! Where the keyring comes from: a file (mode 0600, created on first use) or an environment
//! value; reloaded when a row names a key this process has not seen (another replica or
//! `tessera keys rotate` added it), so rotation needs no restart.

use crate::AppError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tessera_core::CoreError;
use tessera_core::seal::Keyring;

/// The keyring in use and where to reload it from.
#[derive(Debug, Clone)]
pub struct KeyringSource {
    current: Arc<RwLock<Arc<Keyring>>>,
    path: Option<PathBuf>,
}

fn kerr(msg: String) -> AppError {
    AppError::Keys(CoreError::Keyring(msg))
}

/// Refuse a keyring file that others may read (or write).
#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(path).map_err(|e| kerr(format!("cannot read {}: {e}", path.display())))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(kerr(format!(
            "{} has mode {:o}: group and others must have no access; run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<(), AppError> {
    Ok(())
}

/// Write keyring text to `path` atomically (temp file, 0600, rename).
pub fn write_file(path: &Path, keyring: &Keyring) -> Result<(), AppError> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| kerr(format!("cannot create {}: {e}", dir.display())))?;
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().map_or("keyring".into(), |n| n.to_string_lossy().into_owned())));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| kerr(format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(keyring.to_text().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| kerr(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| kerr(format!("cannot replace {}: {e}", path.display())))?;
    Ok(())
}

/// Read and parse a keyring file, refusing one whose mode lets others read it.
pub fn read_file(path: &Path) -> Result<Keyring, AppError> {
    check_mode(path)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| kerr(format!("cannot read {}: {e}", path.display())))?,
    );
    Keyring::parse(&text).map_err(|e| kerr(format!("{}: {e}", path.display())))
}

impl KeyringSource {
    /// Load the keyring file at `path`; if it does not exist and `create` is set, generate a
    /// new keyring and write it (mode 0600). Returns whether it was created.
    pub fn from_file(path: &Path, create: bool) -> Result<(Self, bool), AppError> {
        let created = if path.exists() {
            false
        } else if create {
            write_file(path, &Keyring::generate()?)?;
            true
        } else {
            return Err(kerr(format!("{} does not exist; run `tessera keys generate`", path.display())));
        };
        let k = read_file(path)?;
        Ok((Self { current: Arc::new(RwLock::new(Arc::new(k))), path: Some(path.to_owned()) }, created))
    }

    /// A keyring given as a value (e.g. `TESSERA_KEYRING`), or built in memory for tests.
    pub fn fixed(keyring: Keyring) -> Self {
        Self { current: Arc::new(RwLock::new(Arc::new(keyring))), path: None }
    }

    /// The keyring now.
    pub fn get(&self) -> Arc<Keyring> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-read the file (no-op for a fixed keyring). Keeps the old keyring on failure.
    pub fn reload(&self) -> Result<Arc<Keyring>, AppError> {
        let Some(path) = &self.path else { return Ok(self.get()) };
        let k = Arc::new(read_file(path)?);
        match self.current.write() {
            Ok(mut g) => *g = k.clone(),
            Err(p) => *p.into_inner() = k.clone(),
        }
        tracing::info!(path = %path.display(), current = %k.current_id(), "keyring reloaded");
        Ok(k)
    }

    /// The file it came from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_refuses_loose_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/keyring");
        assert!(KeyringSource::from_file(&p, false).is_err(), "missing and not creating");
        let (src, created) = KeyringSource::from_file(&p, true).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = KeyringSource::from_file(&p, true).unwrap();
        assert!(!created);
        assert_eq!(again.get().current_id(), src.get().current_id());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyringSource::from_file(&p, true).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn reload_sees_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        let (src, _) = KeyringSource::from_file(&p, true).unwrap();
        let mut k = read_file(&p).unwrap();
        let new = k.rotate().unwrap();
        write_file(&p, &k).unwrap();
        assert_ne!(src.get().current_id(), new);
        src.reload().unwrap();
        assert_eq!(src.get().current_id(), new);
    }
}
