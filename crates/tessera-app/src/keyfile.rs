//! Where the keyring comes from: a file (mode 0600, created on first use, refused if group or
//! others may read it), reloaded when a row names a key this process has not seen (another
//! replica or `tessera keys rotate` added it), so rotation needs no restart.

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

/// Write keyring text to a fresh 0600 temp file beside `path`; returns the temp path.
fn write_temp(path: &Path, keyring: &Keyring) -> Result<PathBuf, AppError> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| kerr(format!("cannot create {}: {e}", dir.display())))?;
    let name = path.file_name().map_or("keyring".into(), |n| n.to_string_lossy().into_owned());
    let unique = u64::from_le_bytes(tessera_core::random::bytes::<8>()?);
    let tmp = dir.join(format!(".{name}.{unique:016x}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| kerr(format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(keyring.to_text().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| kerr(format!("cannot write {}: {e}", tmp.display())))?;
    Ok(tmp)
}

/// Replace the keyring file at `path` atomically (temp file, 0600, rename).
pub fn write_file(path: &Path, keyring: &Keyring) -> Result<(), AppError> {
    let tmp = write_temp(path, keyring)?;
    std::fs::rename(&tmp, path).map_err(|e| kerr(format!("cannot replace {}: {e}", path.display())))
}

/// Create the keyring file at `path` only if none exists, atomically: of several replicas
/// starting at once on a shared keyring path, one creates it and the others read it.
/// Returns whether this call created it.
pub fn create_file(path: &Path, keyring: &Keyring) -> Result<bool, AppError> {
    let tmp = write_temp(path, keyring)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(kerr(format!("cannot create {}: {e}", path.display()))),
    }
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
            create_file(path, &Keyring::generate()?)?
        } else {
            return Err(kerr(format!("{} does not exist; run `tessera keys generate`", path.display())));
        };
        let k = read_file(path)?;
        Ok((Self { current: Arc::new(RwLock::new(Arc::new(k))), path: Some(path.to_owned()) }, created))
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
    fn concurrent_creation_agrees_on_one_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || KeyringSource::from_file(&p, true).unwrap())
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        let first = results[0].0.get().current_id();
        assert!(results.iter().all(|(s, _)| s.get().current_id() == first));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left");
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
