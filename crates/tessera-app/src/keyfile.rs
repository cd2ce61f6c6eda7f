//! Where the keyring comes from: a file (mode 0600, created on first use, refused if group or
//! others may read it). The keyring in use is swapped atomically (`arc-swap`) when the file
//! changes: the server checks the file every few seconds and on SIGHUP
//! ([`KeyringSource::reload_if_changed`]), and a row naming a key this process has not seen
//! forces a reload. So `tessera keys rotate` reaches every running replica without a restart,
//! and new secrets are sealed (and new recovery codes MACed) under the new key within one check.

use crate::AppError;
use arc_swap::ArcSwap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tessera_core::CoreError;
use tessera_core::seal::{KeyId, Keyring};

/// The keyring in use and the file it is reloaded from.
#[derive(Debug, Clone)]
pub struct KeyringSource {
    current: Arc<ArcSwap<Keyring>>,
    /// What the file looked like when `current` was read from it.
    stamp: Arc<Mutex<Option<Stamp>>>,
    path: PathBuf,
}

/// Enough of a file's metadata to tell that it was replaced or rewritten: the keyring is
/// always replaced by rename (a new inode), and the rest catches an editor writing in place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
        };
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode,
        })
    }
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

/// Write keyring text to a fresh temp file beside `path` (`tempfile` creates it 0600 and
/// removes it if we fail before persisting).
fn write_temp(path: &Path, keyring: &Keyring) -> Result<tempfile::NamedTempFile, AppError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| kerr(format!("cannot create {}: {e}", dir.display())))?;
    let mut f = tempfile::Builder::new()
        .prefix(".keyring.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| kerr(format!("cannot write in {}: {e}", dir.display())))?;
    same_owner(path, f.as_file())?;
    let text = zeroize::Zeroizing::new(keyring.to_text());
    f.write_all(text.as_bytes())
        .and_then(|_| f.as_file().sync_all())
        .map_err(|e| kerr(format!("cannot write beside {}: {e}", path.display())))?;
    Ok(f)
}

/// Refuse to replace a keyring owned by another user (say, `sudo tessera keys rotate` on the
/// service's file): the servers could not read the new file and would keep the old keys, while
/// `keys reencrypt` moved secrets to a key they never load.
#[cfg(unix)]
fn same_owner(path: &Path, ours: &std::fs::File) -> Result<(), AppError> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(existing), Ok(mine)) = (std::fs::metadata(path), ours.metadata()) else { return Ok(()) };
    if existing.uid() != mine.uid() {
        return Err(kerr(format!(
            "{} belongs to uid {}, and this command runs as uid {}: run it as the keyring's owner",
            path.display(),
            existing.uid(),
            mine.uid()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn same_owner(_path: &Path, _ours: &std::fs::File) -> Result<(), AppError> {
    Ok(())
}

/// Replace the keyring file at `path` atomically (temp file, 0600, rename).
pub fn write_file(path: &Path, keyring: &Keyring) -> Result<(), AppError> {
    write_temp(path, keyring)?
        .persist(path)
        .map(drop)
        .map_err(|e| kerr(format!("cannot replace {}: {}", path.display(), e.error)))
}

/// Create the keyring file at `path` only if none exists, atomically: of several replicas
/// starting at once on a shared keyring path, one creates it and the others read it.
/// Returns whether this call created it.
pub fn create_file(path: &Path, keyring: &Keyring) -> Result<bool, AppError> {
    match write_temp(path, keyring)?.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(kerr(format!("cannot create {}: {}", path.display(), e.error))),
    }
}

/// Hold an exclusive lock on `<path>.lock` while changing the keyring file, so two
/// `tessera keys` commands cannot lose each other's change (read, modify, write). The lock file
/// is opened without following a symlink and must be a regular file (someone who may write in
/// the keyring's directory cannot point it elsewhere, or hang us on a FIFO).
pub fn lock(path: &Path) -> Result<std::fs::File, AppError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let shown = Path::new(&name).display().to_string();
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let f = opts.open(&name).map_err(|e| kerr(format!("cannot open {shown}: {e}")))?;
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(kerr(format!("{shown} is not a regular file")));
    }
    f.lock().map_err(|e| kerr(format!("cannot lock {shown}: {e}")))?;
    Ok(f)
}

/// Read and parse a keyring file, refusing one whose mode lets others read it.
pub fn read_file(path: &Path) -> Result<Keyring, AppError> {
    check_mode(path)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| kerr(format!("cannot read {}: {e}", path.display())))?,
    );
    Keyring::parse(&text).map_err(|e| kerr(format!("{}: {e}", path.display())))
}

/// Tell the metrics which key seals new secrets here (`tessera_keyring_current{key_id}` is 1
/// for it, 0 for the one it replaced), so an operator sees every replica take a rotation.
/// Key ids are public labels, not secrets.
fn publish(old: Option<&Keyring>, new: &Keyring) {
    if let Some(old) = old.filter(|o| o.current_id() != new.current_id()) {
        metrics::gauge!("tessera_keyring_current", "key_id" => old.current_id().to_string()).set(0.0);
    }
    metrics::gauge!("tessera_keyring_current", "key_id" => new.current_id().to_string()).set(1.0);
    metrics::gauge!("tessera_keyring_keys").set(new.ids().len() as f64);
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
        let stamp = Stamp::of(path);
        let k = read_file(path)?;
        let src = Self {
            current: Arc::new(ArcSwap::from_pointee(k)),
            stamp: Arc::new(Mutex::new(stamp)),
            path: path.to_owned(),
        };
        publish(None, &src.get());
        Ok((src, created))
    }

    /// The keyring now (a lock-free load).
    pub fn get(&self) -> Arc<Keyring> {
        self.current.load_full()
    }

    /// Open a sealed value: with the keyring now, and, if it names a key this process does
    /// not know yet (another replica rotated), once more after reloading the file.
    pub fn open(
        &self,
        aad: &tessera_core::seal::Aad<'_>,
        sealed: &tessera_core::seal::Sealed,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, AppError> {
        match self.get().open(aad, sealed) {
            Err(tessera_core::CoreError::UnknownKey(_)) => self.reload()?.open(aad, sealed),
            r => r,
        }
        .map_err(AppError::Keys)
    }

    /// Re-read the file and swap it in. Keeps the old keyring on failure (a half-edited or
    /// unreadable file never leaves the service without keys).
    pub fn reload(&self) -> Result<Arc<Keyring>, AppError> {
        let mut stamp = self.stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The stamp is read before the file: a write between the two is seen at the next check.
        let seen = Stamp::of(&self.path);
        let k = Arc::new(read_file(&self.path)?);
        let old = self.current.swap(k.clone());
        *stamp = seen;
        metrics::counter!("tessera_keyring_reloads_total").increment(1);
        publish(Some(&old), &k);
        if old.current_id() != k.current_id() || old.ids() != k.ids() {
            tracing::info!(
                path = %self.path.display(),
                current = %k.current_id(),
                previous = %old.current_id(),
                keys = k.ids().len(),
                "keyring reloaded: new secrets are sealed under key {}",
                k.current_id()
            );
        }
        Ok(k)
    }

    /// Reload if the file changed since it was last read (cheap: one `stat`). Returns the new
    /// keyring when it reloaded.
    pub fn reload_if_changed(&self) -> Result<Option<Arc<Keyring>>, AppError> {
        let now = Stamp::of(&self.path);
        let changed = {
            let last = self.stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *last != now
        };
        if changed { self.reload().map(Some) } else { Ok(None) }
    }

    /// Add a fresh key to the keyring file and make it current; this process swaps it in at
    /// once, running services at their next check of the file (seconds) or on SIGHUP. Returns
    /// (previous current key, new current key).
    pub fn rotate(&self) -> Result<(KeyId, KeyId), AppError> {
        let _lock = lock(&self.path)?;
        let mut k = read_file(&self.path)?;
        let old = k.current_id();
        let new = k.rotate()?;
        write_file(&self.path, &k)?;
        self.reload()?;
        Ok((old, new))
    }

    /// Publish which key seals new secrets (`tessera_keyring_current{key_id}`) to the metrics
    /// recorder, once it is installed.
    pub fn publish_metrics(&self) {
        publish(None, &self.get());
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
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

    #[test]
    fn reload_if_changed_swaps_only_on_change_and_keeps_keys_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        let (src, _) = KeyringSource::from_file(&p, true).unwrap();
        let first = src.get().current_id();
        assert!(src.reload_if_changed().unwrap().is_none(), "unchanged file: no reload");
        let mut k = read_file(&p).unwrap();
        let new = k.rotate().unwrap();
        write_file(&p, &k).unwrap();
        let swapped = src.reload_if_changed().unwrap().expect("a rotated file is reloaded");
        assert_eq!(swapped.current_id(), new);
        assert_eq!(src.get().current_id(), new);
        assert!(src.get().ids().contains(&first), "the old key stays readable");
        assert!(src.reload_if_changed().unwrap().is_none());
        // A file others may read, or one that does not parse, is refused: the keys stay.
        std::fs::write(&p, "not a keyring").unwrap();
        assert!(src.reload_if_changed().is_err());
        assert_eq!(src.get().current_id(), new);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left");
    }

    #[test]
    fn the_lock_file_is_never_followed_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        let (src, _) = KeyringSource::from_file(&p, true).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("keyring.lock")).unwrap();
        assert!(src.rotate().is_err(), "a symlinked lock file is refused");
        assert!(!elsewhere.exists(), "and nothing was created where it points");
    }

    #[test]
    fn another_users_keyring_is_not_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        let (src, _) = KeyringSource::from_file(&p, true).unwrap();
        let me = std::fs::metadata(&p).unwrap().uid();
        if std::os::unix::fs::chown(&p, Some(me + 4242), None).is_err() {
            eprintln!("SKIPPED (keyring owner check): needs root to give the file to another uid");
            return;
        }
        let before = std::fs::read(&p).unwrap();
        let e = src.rotate().unwrap_err().to_string();
        assert!(e.contains("run it as the keyring's owner"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before, "the file is untouched");
    }
}
