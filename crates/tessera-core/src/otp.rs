//! TOTP (RFC 6238) over HOTP (RFC 4226): secrets, codes and the windowed, constant-time check.
//!
//! The HMAC and hash functions are RustCrypto's (`hmac`, `sha1`, `sha2`); this module only
//! does what the RFCs put around them: the counter, dynamic truncation and the window.

use crate::{CoreError, random};
use hmac::{Hmac, KeyInit, Mac};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

/// The HMAC hash function of a TOTP device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA-1, what almost every authenticator app supports (the default).
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in otpauth URIs and in storage (`SHA1`, `SHA256`, `SHA512`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    /// Parse the otpauth/storage name (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            _ => Err(CoreError::invalid("algorithm", format!("{s:?} is not SHA1, SHA256 or SHA512"))),
        }
    }

    /// Length in bytes of a newly generated secret: the hash's output size (160, 256 or 512
    /// bits), as RFC 4226 §4 recommends; never under NIST's 112-bit floor.
    pub fn secret_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// Parameters of a TOTP device. Invariant: digits ∈ {6, 8}, period ∈ {30, 60}.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotpParams {
    algorithm: Algorithm,
    digits: u8,
    period: u32,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self { algorithm: Algorithm::Sha1, digits: 6, period: 30 }
    }
}

impl TotpParams {
    /// Checked constructor: 6 or 8 digits, 30 or 60 second steps.
    pub fn new(algorithm: Algorithm, digits: u32, period: u32) -> Result<Self, CoreError> {
        let digits = match digits {
            6 => 6,
            8 => 8,
            d => return Err(CoreError::invalid("digits", format!("{d} is not 6 or 8"))),
        };
        if period != 30 && period != 60 {
            return Err(CoreError::invalid("period", format!("{period} is not 30 or 60 seconds")));
        }
        Ok(Self { algorithm, digits, period })
    }
    /// The HMAC hash function.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Digits per code (6 or 8).
    pub fn digits(&self) -> u32 {
        u32::from(self.digits)
    }
    /// Seconds per time step (30 or 60).
    pub fn period(&self) -> u32 {
        self.period
    }
    /// The time step (RFC 6238's T) that contains `unix_secs`. Times before the epoch are step 0.
    pub fn step_at(&self, unix_secs: i64) -> u64 {
        u64::try_from(unix_secs.max(0)).unwrap_or(0) / u64::from(self.period)
    }
}

/// A TOTP/HOTP shared secret. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret([REDACTED; {} bytes])", self.0.len())
    }
}

/// Shortest secret we accept from outside (128 bits; RFC 4226 §4 requires at least 128).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret we accept from outside.
pub const MAX_SECRET_LEN: usize = 128;

impl Secret {
    /// A new secret from the OS CSPRNG, as long as `algorithm`'s output.
    pub fn generate(algorithm: Algorithm) -> Result<Self, CoreError> {
        let mut b = Zeroizing::new(vec![0u8; algorithm.secret_len()]);
        random::fill(&mut b)?;
        Ok(Self(b))
    }

    /// Wrap raw secret bytes (e.g. opened from storage). Any length is accepted here: the RFC
    /// test vectors use 20/32/64-byte keys and stored secrets were checked when created.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Decode an RFC 4648 base32 secret (case-insensitive, spaces and `=` padding ignored),
    /// requiring 128..=1024 bits.
    pub fn from_base32(s: &str) -> Result<Self, CoreError> {
        let clean: Zeroizing<String> =
            Zeroizing::new(s.chars().filter(|c| *c != ' ' && *c != '=').map(|c| c.to_ascii_uppercase()).collect());
        let bytes = data_encoding::BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|_| CoreError::invalid("secret", "is not valid base32 (RFC 4648: A-Z and 2-7)"))?;
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_SECRET_LEN || bytes.len() > MAX_SECRET_LEN {
            return Err(CoreError::invalid(
                "secret",
                format!("is {} bits; between 128 and 1024 bits are required", bytes.len() * 8),
            ));
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// The secret as unpadded RFC 4648 base32, as authenticator apps expect it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(data_encoding::BASE32_NOPAD.encode(&self.0))
    }

    /// The raw bytes (for sealing).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// A one-time code as typed: 6 or 8 ASCII digits (spaces and a middle dash are ignored).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Code {
    value: u32,
    digits: u8,
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Code([REDACTED; {} digits])", self.digits)
    }
}

impl Code {
    /// Parse a typed code. Errors say what is wrong; they never echo the input.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if s.len() > 32 {
            return Err(CoreError::invalid("code", "is too long; a code has 6 or 8 digits"));
        }
        let mut value: u32 = 0;
        let mut digits: u8 = 0;
        for c in s.trim().chars() {
            match c {
                ' ' | '-' => {}
                '0'..='9' => {
                    digits = digits.saturating_add(1);
                    if digits > 8 {
                        return Err(CoreError::invalid("code", "must have 6 or 8 digits"));
                    }
                    value = value * 10 + (c as u32 - '0' as u32);
                }
                _ => return Err(CoreError::invalid("code", "must contain only digits")),
            }
        }
        if digits != 6 && digits != 8 {
            return Err(CoreError::invalid("code", format!("has {digits} digits; it must have 6 or 8")));
        }
        Ok(Self { value, digits })
    }

    /// Number of digits typed.
    pub fn digits(&self) -> u32 {
        u32::from(self.digits)
    }
}

/// RFC 4226 dynamic truncation of an HMAC output to a `digits`-digit code.
fn truncate(mac: &[u8], digits: u32) -> u32 {
    let offset = mac.last().map_or(0, |b| usize::from(b & 0x0f));
    let word = mac
        .get(offset..offset + 4)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .map_or(0, |w| u32::from_be_bytes(w) & 0x7fff_ffff);
    // Constant divisors compile to multiplications; digits is 6 or 8 for every device.
    match digits {
        6 => word % 1_000_000,
        8 => word % 100_000_000,
        d => word % 10u32.pow(d.min(9)),
    }
}

/// Calls `f(counter, code)` for each counter, computing every code from one precomputed
/// keyed HMAC state (the key schedule runs once per call, not once per counter).
fn each_code<M: Mac + Clone>(
    keyed: &M,
    counters: impl Iterator<Item = u64>,
    digits: u32,
    f: &mut impl FnMut(u64, u32),
) {
    for c in counters {
        let mut m = keyed.clone();
        m.update(&c.to_be_bytes());
        f(c, truncate(&m.finalize().into_bytes(), digits));
    }
}

/// Key the HMAC of `alg` with `secret` once and run [`each_code`]. HMAC accepts keys of any
/// length, so keying cannot fail; if it ever did, no code is produced (which matches nothing).
fn codes(secret: &[u8], alg: Algorithm, counters: impl Iterator<Item = u64>, digits: u32, mut f: impl FnMut(u64, u32)) {
    match alg {
        Algorithm::Sha1 => {
            if let Ok(k) = Hmac::<sha1::Sha1>::new_from_slice(secret) {
                each_code(&k, counters, digits, &mut f);
            }
        }
        Algorithm::Sha256 => {
            if let Ok(k) = Hmac::<sha2::Sha256>::new_from_slice(secret) {
                each_code(&k, counters, digits, &mut f);
            }
        }
        Algorithm::Sha512 => {
            if let Ok(k) = Hmac::<sha2::Sha512>::new_from_slice(secret) {
                each_code(&k, counters, digits, &mut f);
            }
        }
    }
}

/// HOTP value (RFC 4226) of `counter`.
pub fn hotp(secret: &Secret, alg: Algorithm, counter: u64, digits: u32) -> u32 {
    let mut out = 0;
    codes(secret.expose(), alg, std::iter::once(counter), digits, |_, v| out = v);
    out
}

/// TOTP value (RFC 6238) at `unix_secs`.
pub fn totp(secret: &Secret, params: &TotpParams, unix_secs: i64) -> u32 {
    hotp(secret, params.algorithm, params.step_at(unix_secs), params.digits())
}

/// The code zero-padded to its digit count, as an app shows it.
pub fn format_code(value: u32, digits: u32) -> String {
    format!("{value:0width$}", width = digits as usize)
}

/// How many steps before and after the current one a code may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Steps accepted before the current one (clock behind, or a code typed slowly).
    pub before: u8,
    /// Steps accepted after the current one (clock ahead).
    pub after: u8,
}

impl Default for Window {
    /// t-1, t, t+1.
    fn default() -> Self {
        Self { before: 1, after: 1 }
    }
}

/// Check `code` against every step of the window around `unix_secs`.
///
/// Every code in the window is computed and compared in constant time, whatever matches, so
/// the time taken says nothing of which step (if any) matched. Returns the matched time step,
/// which the caller must record as used (the replay guard) before accepting the code.
pub fn verify(secret: &Secret, params: &TotpParams, code: &Code, unix_secs: i64, window: Window) -> Option<u64> {
    let now = params.step_at(unix_secs);
    let first = now.saturating_sub(u64::from(window.before));
    let last = now.saturating_add(u64::from(window.after));
    let mut found = subtle::Choice::from(0u8);
    let mut step = 0u64;
    codes(secret.expose(), params.algorithm, first..=last, params.digits(), |s, v| {
        let eq = v.ct_eq(&code.value);
        step.conditional_assign(&s, eq);
        found |= eq;
    });
    // A code of the wrong length never matches; the length is public (the user typed it).
    let right_len = code.digits() == params.digits();
    (bool::from(found) && right_len).then_some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 4226 Appendix D, verbatim: HOTP values for counters 0..9.
    #[test]
    fn rfc4226_appendix_d() {
        let expected = [755224u32, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        let s = Secret::from_bytes(SEED20.to_vec());
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(&s, Algorithm::Sha1, counter as u64, 6), *want, "counter {counter}");
        }
    }

    /// RFC 6238 Appendix B, verbatim: all 18 vectors (8 digits, 30 s).
    #[test]
    fn rfc6238_appendix_b() {
        let table: [(i64, &str, Algorithm); 18] = [
            (59, "94287082", Algorithm::Sha1),
            (59, "46119246", Algorithm::Sha256),
            (59, "90693936", Algorithm::Sha512),
            (1111111109, "07081804", Algorithm::Sha1),
            (1111111109, "68084774", Algorithm::Sha256),
            (1111111109, "25091201", Algorithm::Sha512),
            (1111111111, "14050471", Algorithm::Sha1),
            (1111111111, "67062674", Algorithm::Sha256),
            (1111111111, "99943326", Algorithm::Sha512),
            (1234567890, "89005924", Algorithm::Sha1),
            (1234567890, "91819424", Algorithm::Sha256),
            (1234567890, "93441116", Algorithm::Sha512),
            (2000000000, "69279037", Algorithm::Sha1),
            (2000000000, "90698825", Algorithm::Sha256),
            (2000000000, "38618901", Algorithm::Sha512),
            (20000000000, "65353130", Algorithm::Sha1),
            (20000000000, "77737706", Algorithm::Sha256),
            (20000000000, "47863826", Algorithm::Sha512),
        ];
        for (t, want, alg) in table {
            let seed = match alg {
                Algorithm::Sha1 => SEED20,
                Algorithm::Sha256 => SEED32,
                Algorithm::Sha512 => SEED64,
            };
            let s = Secret::from_bytes(seed.to_vec());
            let p = TotpParams::new(alg, 8, 30).unwrap();
            assert_eq!(format_code(totp(&s, &p, t), 8), want, "{alg:?} at {t}");
            // and the verifier accepts it at exactly that time, reporting the RFC's step
            let code = Code::parse(want).unwrap();
            assert_eq!(verify(&s, &p, &code, t, Window::default()), Some(p.step_at(t)));
        }
    }

    #[test]
    fn window_edges() {
        let s = Secret::from_bytes(SEED20.to_vec());
        let p = TotpParams::default();
        let t = 1_700_000_000i64;
        let step = p.step_at(t);
        let code_at = |st: u64| Code::parse(&format_code(hotp(&s, Algorithm::Sha1, st, 6), 6)).unwrap();
        let w = Window::default();
        assert_eq!(verify(&s, &p, &code_at(step - 1), t, w), Some(step - 1));
        assert_eq!(verify(&s, &p, &code_at(step), t, w), Some(step));
        assert_eq!(verify(&s, &p, &code_at(step + 1), t, w), Some(step + 1));
        assert_eq!(verify(&s, &p, &code_at(step - 2), t, w), None);
        assert_eq!(verify(&s, &p, &code_at(step + 2), t, w), None);
        let narrow = Window { before: 0, after: 0 };
        assert_eq!(verify(&s, &p, &code_at(step - 1), t, narrow), None);
        let wide = Window { before: 2, after: 0 };
        assert_eq!(verify(&s, &p, &code_at(step - 2), t, wide), Some(step - 2));
    }

    #[test]
    fn wrong_length_never_matches() {
        let s = Secret::from_bytes(SEED20.to_vec());
        let p8 = TotpParams::new(Algorithm::Sha1, 8, 30).unwrap();
        let t = 59;
        let eight = format_code(totp(&s, &p8, t), 8); // 94287082
        let six = Code::parse(&eight[2..]).unwrap(); // same low six digits
        let p6 = TotpParams::default();
        assert_eq!(format_code(totp(&s, &p6, t), 6), &eight[2..]);
        assert_eq!(verify(&s, &p8, &six, t, Window::default()), None);
    }

    #[test]
    fn code_parsing() {
        assert_eq!(Code::parse("123456").unwrap().digits(), 6);
        assert_eq!(Code::parse(" 123 456 ").unwrap().digits(), 6);
        assert_eq!(Code::parse("1234-5678").unwrap().digits(), 8);
        assert_eq!(Code::parse("000000").unwrap().value, 0);
        for bad in ["", "12345", "1234567", "123456789", "12a456", "１２３４５６", &"1".repeat(40)] {
            assert!(matches!(Code::parse(bad), Err(CoreError::Invalid { field: "code", .. })), "{bad:?}");
        }
        // errors never echo the input
        let e = Code::parse("98765x").unwrap_err().to_string();
        assert!(!e.contains("98765"), "{e}");
    }

    #[test]
    fn params_checked() {
        assert!(TotpParams::new(Algorithm::Sha1, 7, 30).is_err());
        assert!(TotpParams::new(Algorithm::Sha1, 6, 45).is_err());
        assert!(TotpParams::new(Algorithm::Sha512, 8, 60).is_ok());
    }

    #[test]
    fn secrets() {
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            let a = Secret::generate(alg).unwrap();
            let b = Secret::generate(alg).unwrap();
            assert_eq!(a.expose().len() * 8, [160, 256, 512][alg as usize]);
            assert_ne!(a.expose(), b.expose());
            let back = Secret::from_base32(&a.to_base32()).unwrap();
            assert_eq!(back.expose(), a.expose());
        }
        let s = Secret::generate(Algorithm::Sha1).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(&*s.to_base32()));
        assert!(Secret::from_base32("AAAA").is_err(), "too short");
        assert!(Secret::from_base32("not base32 1!").is_err());
        assert!(Secret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").is_ok(), "spaces, lower case");
    }
}
