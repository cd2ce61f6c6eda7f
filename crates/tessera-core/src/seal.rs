//! Sealing secrets at rest: a keyring of named 256-bit keys, XChaCha20-Poly1305, and
//! associated data that binds each ciphertext to its row.
//!
//! Invariants:
//! - every seal uses a fresh 192-bit random nonce (XChaCha's nonce is long enough for that);
//! - a ciphertext opens only with the same key id *and* the same associated data (purpose,
//!   format version, factor id, subject id), so a ciphertext copied to another row fails;
//! - key material is zeroized on drop, never shown by `Debug`, and never leaves the keyring
//!   except through [`Keyring::to_text`] (which writes the keyring file);
//! - the AEAD key and the recovery-code MAC key are different keys, both derived from the
//!   keyring key by HKDF-SHA-256 with distinct labels.

use crate::{CoreError, random};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
const SEAL_INFO: &[u8] = b"tessera/v1 seal xchacha20poly1305";
const MAC_INFO: &[u8] = b"tessera/v1 recovery-code hmac-sha256";

/// A key's name: 1..=32 characters of `a-z 0-9 -`. Stored beside each sealed row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Check a key id.
    pub fn new(s: &str) -> Result<Self, CoreError> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            // A long value is not echoed: in a hand-edited keyring it may be a key.
            let shown = if s.len() <= 32 { format!("{s:?}") } else { format!("of {} characters", s.len()) };
            return Err(CoreError::Keyring(format!("key id {shown} must be 1-32 characters of a-z, 0-9 and -")));
        }
        Ok(Self(s.to_owned()))
    }
    /// A fresh random id, `k-` and 8 hex digits.
    pub fn random() -> Result<Self, CoreError> {
        let b = random::bytes::<4>()?;
        Ok(Self(format!("k-{}", data_encoding::HEXLOWER.encode(&b))))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Key {
    id: KeyId,
    raw: Zeroizing<[u8; 32]>,
    aead: XChaCha20Poly1305,
    mac: Hmac<sha2::Sha256>,
}

impl Key {
    fn new(id: KeyId, raw: Zeroizing<[u8; 32]>) -> Result<Self, CoreError> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, raw.as_slice());
        let mut seal_key = Zeroizing::new([0u8; 32]);
        let mut mac_key = Zeroizing::new([0u8; 32]);
        hk.expand(SEAL_INFO, seal_key.as_mut_slice()).map_err(|_| CoreError::Keyring("HKDF failed".into()))?;
        hk.expand(MAC_INFO, mac_key.as_mut_slice()).map_err(|_| CoreError::Keyring("HKDF failed".into()))?;
        let aead = XChaCha20Poly1305::new_from_slice(seal_key.as_slice())
            .map_err(|_| CoreError::Keyring("bad key length".into()))?;
        let mac = <Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(mac_key.as_slice())
            .map_err(|_| CoreError::Keyring("bad key length".into()))?;
        Ok(Self { id, raw, aead, mac })
    }
}

/// Named keys, one of them current (the one new seals use).
pub struct Keyring {
    keys: Vec<Key>,
    current: usize,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
            .field("current", &self.current_id().as_str())
            .finish()
    }
}

/// What [`Keyring::seal`] produces: store all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which key sealed it.
    pub key_id: KeyId,
    /// The random nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

/// Associated data: what a sealed value is for and which row it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    /// What the plaintext is (e.g. `totp-secret`).
    pub purpose: &'static str,
    /// Format version of the plaintext.
    pub version: u8,
    /// The factor row's id.
    pub factor_id: &'a str,
    /// The subject who owns the factor.
    pub subject_id: &'a str,
}

impl Aad<'_> {
    fn encode(&self) -> Vec<u8> {
        // Length-prefixed fields: no two different tuples encode alike.
        let mut out = b"tessera-aad/1".to_vec();
        for f in [self.purpose.as_bytes(), &[self.version], self.factor_id.as_bytes(), self.subject_id.as_bytes()] {
            out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

impl Keyring {
    /// A keyring holding one fresh random key.
    pub fn generate() -> Result<Self, CoreError> {
        let key = Key::new(KeyId::random()?, Zeroizing::new(random::bytes::<32>()?))?;
        Ok(Self { keys: vec![key], current: 0 })
    }

    /// Add a fresh random key and make it current. Returns its id.
    pub fn rotate(&mut self) -> Result<KeyId, CoreError> {
        let mut id = KeyId::random()?;
        while self.find(&id).is_some() {
            id = KeyId::random()?;
        }
        self.keys.push(Key::new(id.clone(), Zeroizing::new(random::bytes::<32>()?))?);
        self.current = self.keys.len() - 1;
        Ok(id)
    }

    /// Remove a key that is not current. The caller must first make sure no row uses it.
    pub fn retire(&mut self, id: &KeyId) -> Result<(), CoreError> {
        let i = self.find(id).ok_or_else(|| CoreError::UnknownKey(id.to_string()))?;
        if i == self.current {
            return Err(CoreError::Keyring(format!("{id} is the current key; rotate first")));
        }
        self.keys.remove(i);
        if self.current > i {
            self.current -= 1;
        }
        Ok(())
    }

    fn find(&self, id: &KeyId) -> Option<usize> {
        self.keys.iter().position(|k| &k.id == id)
    }

    fn key(&self, id: &KeyId) -> Result<&Key, CoreError> {
        self.find(id).and_then(|i| self.keys.get(i)).ok_or_else(|| CoreError::UnknownKey(id.to_string()))
    }

    fn current_key(&self) -> Result<&Key, CoreError> {
        self.keys.get(self.current).ok_or_else(|| CoreError::Keyring("no current key".into()))
    }

    /// The id of the key new seals use.
    pub fn current_id(&self) -> KeyId {
        self.keys.get(self.current).map(|k| k.id.clone()).unwrap_or_else(|| KeyId(String::new()))
    }

    /// Every key id, oldest first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Seal `plaintext` under the current key with a fresh nonce, bound to `aad`.
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Sealed, CoreError> {
        let key = self.current_key()?;
        let nonce_bytes = random::bytes::<NONCE_LEN>()?;
        let nonce = XNonce::from(nonce_bytes);
        let aad = aad.encode();
        let ciphertext = key
            .aead
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .map_err(|_| CoreError::Keyring("encryption failed".into()))?;
        Ok(Sealed { key_id: key.id.clone(), nonce: nonce_bytes.to_vec(), ciphertext })
    }

    /// Open a sealed value. Fails (never panics) on an unknown key id, a tampered nonce or
    /// ciphertext, or associated data that is not the row's it was sealed for.
    pub fn open(&self, aad: &Aad<'_>, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        let key = self.key(&sealed.key_id)?;
        let nonce_bytes: [u8; NONCE_LEN] = sealed.nonce.as_slice().try_into().map_err(|_| CoreError::OpenFailed)?;
        let aad = aad.encode();
        key.aead
            .decrypt(&XNonce::from(nonce_bytes), Payload { msg: &sealed.ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| CoreError::OpenFailed)
    }

    /// HMAC-SHA-256 of `message` under the MAC key derived from key `id`.
    pub fn mac(&self, id: &KeyId, message: &[u8]) -> Result<[u8; 32], CoreError> {
        let mut m = self.key(id)?.mac.clone();
        m.update(message);
        Ok(m.finalize().into_bytes().into())
    }

    /// Parse keyring text (the keyring file):
    ///
    /// ```text
    /// # comments and blank lines are ignored
    /// current = k-1a2b3c4d
    /// key k-1a2b3c4d = <base64 of 32 bytes>
    /// ```
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let mut keys: Vec<Key> = Vec::new();
        let mut current = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |m: &str| CoreError::Keyring(format!("line {}: {m}", n + 1));
            let (lhs, rhs) = line.split_once('=').ok_or_else(|| err("expected `current = ID` or `key ID = BASE64`"))?;
            let (lhs, rhs) = (lhs.trim(), rhs.trim());
            if lhs == "current" {
                current = Some(KeyId::new(rhs)?);
            } else if let Some(id) = lhs.strip_prefix("key ") {
                let id = KeyId::new(id.trim())?;
                if keys.iter().any(|k| k.id == id) {
                    return Err(err(&format!("key {id} appears twice")));
                }
                let raw = Zeroizing::new(
                    data_encoding::BASE64.decode(rhs.as_bytes()).map_err(|_| err("key is not valid base64"))?,
                );
                let arr: [u8; 32] = raw.as_slice().try_into().map_err(|_| err("a key must be exactly 32 bytes"))?;
                keys.push(Key::new(id, Zeroizing::new(arr))?);
            } else {
                return Err(err("expected `current = ID` or `key ID = BASE64`"));
            }
        }
        let current = current.ok_or_else(|| CoreError::Keyring("no `current = ID` line".into()))?;
        let current = keys
            .iter()
            .position(|k| k.id == current)
            .ok_or_else(|| CoreError::Keyring(format!("current key {current} is not in the keyring")))?;
        Ok(Self { keys, current })
    }

    /// The keyring as text, for the keyring file. Holds every key: treat it as a secret.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut s = String::from(
            "# Tessera keyring: the keys that seal every enrolled device.\n\
             # BACK THIS FILE UP and keep it out of the database's backups. Losing it makes\n\
             # every enrolled authenticator unusable; leaking it with the database leaks them.\n",
        );
        s.push_str(&format!("current = {}\n", self.current_id()));
        for k in &self.keys {
            s.push_str(&format!("key {} = {}\n", k.id, data_encoding::BASE64.encode(k.raw.as_slice())));
        }
        Zeroizing::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad<'a>(f: &'a str, s: &'a str) -> Aad<'a> {
        Aad { purpose: "totp-secret", version: 1, factor_id: f, subject_id: s }
    }

    #[test]
    fn seal_open_round_trip_and_fresh_nonces() {
        let k = Keyring::generate().unwrap();
        let a = k.seal(&aad("f1", "u1"), b"secret bytes").unwrap();
        let b = k.seal(&aad("f1", "u1"), b"secret bytes").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(k.open(&aad("f1", "u1"), &a).unwrap().as_slice(), b"secret bytes");
        assert!(!a.ciphertext.windows(12).any(|w| w == b"secret bytes"));
    }

    #[test]
    fn tampering_fails_cleanly() {
        let k = Keyring::generate().unwrap();
        let s = k.seal(&aad("f1", "u1"), b"0123456789abcdefghij").unwrap();
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 0x01;
            assert_eq!(k.open(&aad("f1", "u1"), &t).unwrap_err(), CoreError::OpenFailed, "byte {i}");
        }
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert_eq!(k.open(&aad("f1", "u1"), &t).unwrap_err(), CoreError::OpenFailed);
        let mut t = s.clone();
        t.nonce.pop();
        assert_eq!(k.open(&aad("f1", "u1"), &t).unwrap_err(), CoreError::OpenFailed);
        // moved to another row, another subject, another purpose or version
        assert!(k.open(&aad("f2", "u1"), &s).is_err());
        assert!(k.open(&aad("f1", "u2"), &s).is_err());
        assert!(k.open(&Aad { purpose: "other", ..aad("f1", "u1") }, &s).is_err());
        assert!(k.open(&Aad { version: 2, ..aad("f1", "u1") }, &s).is_err());
        // field boundaries matter: ("f1u", "1") is not ("f1", "u1")
        assert!(k.open(&aad("f1u", "1"), &s).is_err());
        // unknown key id
        let mut t = s.clone();
        t.key_id = KeyId::new("k-nope").unwrap();
        assert_eq!(k.open(&aad("f1", "u1"), &t).unwrap_err(), CoreError::UnknownKey("k-nope".into()));
        // another keyring's key of the same name
        let other = Keyring::parse(&k.to_text().replace(
            &data_encoding::BASE64.encode(k.keys[0].raw.as_slice()),
            &data_encoding::BASE64.encode(&[7u8; 32]),
        ))
        .unwrap();
        assert_eq!(other.open(&aad("f1", "u1"), &s).unwrap_err(), CoreError::OpenFailed);
    }

    #[test]
    fn rotation_keeps_old_keys_openable() {
        let mut k = Keyring::generate().unwrap();
        let old = k.current_id();
        let s = k.seal(&aad("f", "u"), b"x").unwrap();
        let new = k.rotate().unwrap();
        assert_ne!(old, new);
        assert_eq!(k.current_id(), new);
        assert_eq!(k.seal(&aad("f", "u"), b"x").unwrap().key_id, new);
        assert_eq!(k.open(&aad("f", "u"), &s).unwrap().as_slice(), b"x");
        assert!(k.retire(&new).is_err(), "current key cannot retire");
        k.retire(&old).unwrap();
        assert_eq!(k.ids(), vec![new]);
        assert!(matches!(k.open(&aad("f", "u"), &s), Err(CoreError::UnknownKey(_))));
    }

    #[test]
    fn text_round_trip_and_errors() {
        let mut k = Keyring::generate().unwrap();
        k.rotate().unwrap();
        let back = Keyring::parse(&k.to_text()).unwrap();
        assert_eq!(back.ids(), k.ids());
        assert_eq!(back.current_id(), k.current_id());
        let s = k.seal(&aad("f", "u"), b"x").unwrap();
        assert_eq!(back.open(&aad("f", "u"), &s).unwrap().as_slice(), b"x");
        let id = k.current_id();
        assert_eq!(back.mac(&id, b"m").unwrap(), k.mac(&id, b"m").unwrap());
        for bad in ["", "current = k-a", "key k-a = AAAA\ncurrent = k-a", "nonsense", "key K_A = x\ncurrent = K_A"] {
            assert!(Keyring::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_keys() {
        let k = Keyring::generate().unwrap();
        let text = k.to_text();
        let b64 = text.lines().last().unwrap().split(" = ").nth(1).unwrap().to_owned();
        assert!(!format!("{k:?}").contains(&b64));
    }

    #[test]
    fn mac_and_seal_keys_differ() {
        let k = Keyring::generate().unwrap();
        let id = k.current_id();
        assert_ne!(k.mac(&id, b"a").unwrap(), k.mac(&id, b"b").unwrap());
        assert!(k.mac(&KeyId::new("k-none").unwrap(), b"a").is_err());
    }

    #[test]
    fn a_malformed_line_never_echoes_key_material() {
        // `key k-1 <base64>` with the `=` missing: the whole key would be taken as the id.
        let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8M=";
        let e = Keyring::parse(&format!("current = k-1\nkey k-1 {key}\n")).unwrap_err().to_string();
        assert!(!e.contains("q83vEjRW"), "{e}");
        let e = KeyId::new(&format!("k-1 {key}")).unwrap_err().to_string();
        assert!(!e.contains("q83vEjRW") && e.contains("of 48 characters"), "{e}");
        assert!(KeyId::new("Bad").unwrap_err().to_string().contains("\"Bad\""), "short ids are shown");
    }
}
