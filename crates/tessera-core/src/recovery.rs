//! Recovery codes: generation, display, normalisation of what a user types, and the keyed
//! MAC under which they are stored.
//!
//! A code is 80 bits from the OS CSPRNG written as 16 Crockford base32 symbols in four
//! groups (`7KQ2-M9XD-4RTB-0WZC`). Storage keeps only HMAC-SHA-256(keyring MAC key,
//! subject ‖ code): with the database alone nobody can test guesses offline, and a redeem
//! is one indexed lookup (see docs/ARCHITECTURE.md, "Recovery codes").

use crate::seal::{KeyId, Keyring};
use crate::{CoreError, random};
use zeroize::Zeroizing;

/// Codes in a batch.
pub const BATCH_SIZE: usize = 10;
/// Symbols in a code (16 × 5 = 80 bits).
pub const SYMBOLS: usize = 16;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A recovery code in canonical form (16 upper-case Crockford symbols). Zeroized on drop;
/// `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(Zeroizing<String>);

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode([REDACTED])")
    }
}

fn symbol_value(c: char) -> Option<u8> {
    // Crockford decoding: case-insensitive, O→0, I and L→1; U is not a symbol.
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET.iter().position(|&a| char::from(a) == c).and_then(|p| u8::try_from(p).ok())
}

impl RecoveryCode {
    /// A fresh code from the OS CSPRNG.
    pub fn generate() -> Result<Self, CoreError> {
        let bytes = Zeroizing::new(random::bytes::<10>()?);
        let mut n = Zeroizing::new(0u128);
        for b in bytes.iter() {
            *n = (*n << 8) | u128::from(*b);
        }
        let mut s = Zeroizing::new(String::with_capacity(SYMBOLS));
        for i in (0..SYMBOLS).rev() {
            let idx = usize::try_from((*n >> (5 * i)) & 0x1f).unwrap_or(0);
            s.push(char::from(*ALPHABET.get(idx).unwrap_or(&b'0')));
        }
        Ok(Self(s))
    }

    /// A batch of [`BATCH_SIZE`] distinct codes.
    pub fn generate_batch() -> Result<Vec<Self>, CoreError> {
        let mut out: Vec<Self> = Vec::with_capacity(BATCH_SIZE);
        while out.len() < BATCH_SIZE {
            let c = Self::generate()?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Normalise what a user typed: case, spaces and dashes ignored, O→0, I/L→1. Errors say
    /// what is wrong without echoing the input.
    pub fn parse(input: &str) -> Result<Self, CoreError> {
        if input.len() > 64 {
            return Err(CoreError::invalid("recovery_code", "is too long"));
        }
        let mut s = Zeroizing::new(String::with_capacity(SYMBOLS));
        for c in input.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let v = symbol_value(c).ok_or_else(|| {
                CoreError::invalid("recovery_code", "contains a character that is not in a recovery code")
            })?;
            s.push(char::from(*ALPHABET.get(usize::from(v)).unwrap_or(&b'0')));
        }
        if s.len() != SYMBOLS {
            return Err(CoreError::invalid(
                "recovery_code",
                format!("has {} characters; a recovery code has {SYMBOLS} (XXXX-XXXX-XXXX-XXXX)", s.len()),
            ));
        }
        Ok(Self(s))
    }

    /// For display: four groups of four, e.g. `7KQ2-M9XD-4RTB-0WZC`.
    pub fn display(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(SYMBOLS + 3));
        for (i, c) in self.0.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// The stored form: HMAC-SHA-256 under key `key`'s MAC key of `subject_id ‖ 0 ‖ code`,
    /// so one subject's code is worthless for another.
    pub fn mac(&self, keyring: &Keyring, key: &KeyId, subject_id: &str) -> Result<[u8; 32], CoreError> {
        let mut msg = Zeroizing::new(Vec::with_capacity(subject_id.len() + 1 + SYMBOLS));
        msg.extend_from_slice(subject_id.as_bytes());
        msg.push(0);
        msg.extend_from_slice(self.0.as_bytes());
        keyring.mac(key, &msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_distinct_and_well_formed() {
        let b = RecoveryCode::generate_batch().unwrap();
        assert_eq!(b.len(), 10);
        for c in &b {
            let d = c.display();
            assert_eq!(d.len(), 19);
            assert_eq!(d.matches('-').count(), 3);
            assert_eq!(&RecoveryCode::parse(&d).unwrap(), c);
        }
        let mut set: Vec<_> = b.iter().map(|c| c.0.to_string()).collect();
        set.sort();
        set.dedup();
        assert_eq!(set.len(), 10);
    }

    #[test]
    fn all_symbols_appear() {
        // 80 bits fill every symbol position: over many codes every symbol shows up in every
        // position, including the first (no bias from a short integer).
        let mut seen = [[false; 32]; SYMBOLS];
        for _ in 0..2000 {
            let c = RecoveryCode::generate().unwrap();
            for (i, ch) in c.0.chars().enumerate() {
                seen[i][usize::from(symbol_value(ch).unwrap())] = true;
            }
        }
        assert!(seen.iter().all(|p| p.iter().all(|s| *s)));
    }

    #[test]
    fn normalisation() {
        let c = RecoveryCode::parse("7KQ2-M9XD-4RTB-0WZC").unwrap();
        for typed in ["7kq2m9xd4rtb0wzc", " 7KQ2 M9XD 4RTB OWZC ", "7kq2-m9xd-4rtb-owzc"] {
            assert_eq!(RecoveryCode::parse(typed).unwrap(), c, "{typed}");
        }
        let one = RecoveryCode::parse("1111-1111-1111-1111").unwrap();
        assert_eq!(RecoveryCode::parse("IiLl-1111-1111-1111").unwrap(), one);
        for bad in ["", "7KQ2-M9XD-4RTB", "7KQ2-M9XD-4RTB-0WZC-1", "UUUU-UUUU-UUUU-UUUU", "7KQ2-M9XD-4RTB-0WZ!"] {
            assert!(RecoveryCode::parse(bad).is_err(), "{bad}");
        }
        let e = RecoveryCode::parse("7KQ2-M9XD-4RTB-0WZ!").unwrap_err().to_string();
        assert!(!e.contains("7KQ2"), "{e}");
        assert!(!format!("{c:?}").contains("7KQ2"));
    }

    #[test]
    fn macs_bind_subject_and_key() {
        let mut k = Keyring::generate().unwrap();
        let k1 = k.current_id();
        let c = RecoveryCode::parse("7KQ2-M9XD-4RTB-0WZC").unwrap();
        let a = c.mac(&k, &k1, "alice").unwrap();
        assert_eq!(a, RecoveryCode::parse("7kq2 m9xd 4rtb owzc").unwrap().mac(&k, &k1, "alice").unwrap());
        assert_ne!(a, c.mac(&k, &k1, "bob").unwrap());
        let k2 = k.rotate().unwrap();
        assert_ne!(a, c.mac(&k, &k2, "alice").unwrap());
    }
}
