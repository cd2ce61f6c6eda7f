//! Passwords: NIST SP 800-63B rules (length only, Unicode NFKC, no composition rules) and
//! argon2id hashing with OWASP parameters (m = 19 MiB, t = 2, p = 1), as PHC strings.
//!
//! Hashing is pure CPU work and lives here; callers run it off their async threads with
//! bounded concurrency, each hashing thread with its own [`Workspace`]: argon2's 19 MiB of
//! working memory, allocated once per thread and reused, so the process's memory under a
//! burst of logins is bounded by the number of hashing threads (an allocation per hash would
//! leave each thread's freed 19 MiB in the allocator). Every login performs exactly one hash verification, also for an
//! unknown email ([`dummy_hash`]), so the time taken says nothing of whether an account exists.

use crate::CoreError;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Default shortest password, in characters (NIST's floor is 8; we default higher).
pub const DEFAULT_MIN_CHARS: usize = 10;
/// Longest password accepted, in characters (NIST: allow at least 64).
pub const MAX_CHARS: usize = 256;

/// A password after NFKC normalisation. Zeroized on drop; `Debug` hides it.
pub struct Password(Zeroizing<String>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

impl Password {
    /// Normalise what was typed (NFKC), without judging it: for logins, where the stored
    /// hash decides.
    pub fn normalise(typed: &str) -> Self {
        Self(Zeroizing::new(typed.nfkc().collect()))
    }

    /// Normalise and apply the rules for a new password: at least `min_chars` and at most
    /// [`MAX_CHARS`] characters after normalisation; nothing else (no composition rules).
    /// The breached-password check is separate (it needs the network).
    pub fn new_checked(typed: &str, min_chars: usize) -> Result<Self, CoreError> {
        let p = Self::normalise(typed);
        let n = p.0.chars().count();
        if n < min_chars {
            return Err(CoreError::invalid("password", format!("must be at least {min_chars} characters")));
        }
        if n > MAX_CHARS {
            return Err(CoreError::invalid("password", format!("must be at most {MAX_CHARS} characters")));
        }
        Ok(p)
    }

    /// The normalised bytes (for hashing and the breached-password check).
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Shortest word of the context ([`check_context_words`]) a password may not contain, in
/// characters: shorter ones ("ada", "bob") are in too many good passwords.
pub const MIN_CONTEXT_WORD_CHARS: usize = 4;

/// Text as the context rule compares it: NFKC (as passwords are normalised), then case folded
/// (each character upper-cased, then lower-cased, without context: "ß" and "SS" both give
/// "ss", "Σ" and "ς" both "σ"), then NFKC again. Zeroized, as it may be a password.
fn fold(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len()));
    out.extend(s.nfkc().flat_map(char::to_uppercase).flat_map(char::to_lowercase).nfkc());
    out
}

/// NIST SP 800-63B's context-specific words: refuse a new password that contains (or is),
/// case folded, a word of at least [`MIN_CONTEXT_WORD_CHARS`] characters from the local part
/// of the user's `email` or from the `service`'s name (the issuer shown in authenticator
/// apps). Words are the runs of letters and digits: "ada.lovelace+x@example.com" gives
/// "lovelace" ("ada" and "x" are too short), "Tessera" gives "tessera". The message names the
/// field and never the word (it would echo part of the password).
pub fn check_context_words(p: &Password, email: &str, service: &str) -> Result<(), CoreError> {
    let local = email.rsplit_once('@').map_or(email, |(local, _)| local);
    let password = fold(&p.0);
    for source in [fold(local), fold(service)] {
        let mut words = source.split(|c: char| !c.is_alphanumeric());
        if words.any(|w| w.chars().count() >= MIN_CONTEXT_WORD_CHARS && password.contains(w)) {
            return Err(CoreError::invalid("password", "must not contain your email's name or the service's name"));
        }
    }
    Ok(())
}

/// The argon2id parameters new hashes use.
pub fn current_params() -> Params {
    Params::default() // m = 19456 KiB, t = 2, p = 1: OWASP's first recommendation
}

fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Argon2's working memory, reused from one hash to the next by the thread that owns it, and
/// zeroized after each use (it is derived from a password).
pub struct Workspace {
    blocks: Vec<Block>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("blocks", &self.blocks.len()).finish()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    /// An empty workspace: its memory is allocated by the first hash, at the size the current
    /// parameters need.
    pub fn new() -> Self {
        Self { blocks: Vec::new() }
    }

    /// Run argon2 with this workspace's memory (grown to `params`' size if it is smaller:
    /// the current parameters; a stored hash with more memory gets a temporary allocation,
    /// not kept), then zeroize what was used.
    fn run(&mut self, argon: &Argon2<'_>, params: &Params, pwd: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
        use zeroize::Zeroize;
        let need = params.block_count();
        if self.blocks.len() < need && need <= current_params().block_count() {
            self.blocks.resize(need, Block::default());
        }
        let mut temp;
        let blocks = match self.blocks.get_mut(..need) {
            Some(b) => b,
            None => {
                temp = vec![Block::default(); need];
                temp.as_mut_slice()
            }
        };
        let ok = argon.hash_password_into_with_memory(pwd, salt, out, &mut *blocks).is_ok();
        blocks.iter_mut().for_each(Zeroize::zeroize);
        ok
    }
}

/// Hash a password with a fresh random salt; returns the PHC string.
pub fn hash(p: &Password) -> Result<String, CoreError> {
    hash_with(&mut Workspace::new(), p)
}

/// [`hash`] in `ws`'s memory.
pub fn hash_with(ws: &mut Workspace, p: &Password) -> Result<String, CoreError> {
    let fail = |e: &dyn std::fmt::Display| CoreError::invalid("password", format!("could not be hashed: {e}"));
    let params = current_params();
    let salt = Salt::new(&crate::random::bytes::<16>()?).map_err(|e| fail(&e))?;
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    if !ws.run(&hasher(params.clone()), &params, p.expose(), &salt, &mut out[..]) {
        return Err(fail(&"argon2 refused its input"));
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(salt),
        hash: Some(Output::new(&out[..]).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matched.
    pub ok: bool,
    /// The hash uses other parameters than [`current_params`]: rehash on this login.
    pub needs_rehash: bool,
}

/// Check `p` against a stored PHC string (its own parameters are used). A malformed stored
/// hash is a mismatch, never a panic.
pub fn verify(p: &Password, phc: &str) -> Verified {
    verify_with(&mut Workspace::new(), p, phc)
}

/// [`verify`] in `ws`'s memory. The output is compared in constant time (`Output`'s equality).
pub fn verify_with(ws: &mut Workspace, p: &Password, phc: &str) -> Verified {
    let mismatch = Verified { ok: false, needs_rehash: false };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return mismatch;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return mismatch;
    };
    let (Ok(alg), Ok(params)) = (Algorithm::try_from(parsed.algorithm.as_str()), Params::try_from(&parsed)) else {
        return mismatch;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return mismatch,
    };
    // A stored hash is ours, but a tampered row must not make one login allocate terabytes or
    // run for hours: at most 8 times the current costs (old, weaker parameters verify).
    let cur = current_params();
    if params.m_cost() > 8 * cur.m_cost() || params.t_cost() > 8 * cur.t_cost() || params.p_cost() > 8 * cur.p_cost() {
        return mismatch;
    }
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let ok = ws.run(&Argon2::new(alg, version, params.clone()), &params, p.expose(), salt, &mut out)
        && Output::new(&out).is_ok_and(|o| &o == expected);
    let needs_rehash = params.m_cost() != cur.m_cost()
        || params.t_cost() != cur.t_cost()
        || params.p_cost() != cur.p_cost()
        || alg != Algorithm::Argon2id;
    Verified { ok, needs_rehash }
}

/// A valid hash of a random password, with the current parameters, made once per process:
/// a login for an unknown email verifies against it, so it costs exactly what a wrong
/// password costs.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = crate::random::bytes::<24>().map(|b| data_encoding::BASE64.encode(&b)).unwrap_or_default();
        hash(&Password::normalise(&random)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nist_length_rules_only() {
        assert!(Password::new_checked("short", 10).is_err());
        assert!(Password::new_checked("exactly 10", 10).is_ok());
        assert!(Password::new_checked("alllowercaseletters", 10).is_ok(), "no composition rules");
        assert!(Password::new_checked(&"x".repeat(256), 10).is_ok());
        assert!(Password::new_checked(&"x".repeat(257), 10).is_err());
        // characters, not bytes: 10 emoji are 10 characters
        assert!(Password::new_checked(&"🔑".repeat(10), 10).is_ok());
        let e = Password::new_checked("secret", 10).unwrap_err().to_string();
        assert!(e.contains("password") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn nfkc_makes_equivalent_spellings_equal() {
        // "ﬁ" ligature and full-width letters normalise to plain ASCII; é precomposed and
        // decomposed are one password.
        assert_eq!(Password::normalise("ﬁle ＡＢＣ").expose(), b"file ABC");
        assert_eq!(Password::normalise("caf\u{e9}").expose(), Password::normalise("cafe\u{301}").expose());
    }

    #[test]
    fn hash_verify_rehash() {
        let p = Password::new_checked("correct horse battery", 10).unwrap();
        let h = hash(&p).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify(&p, &h), Verified { ok: true, needs_rehash: false });
        assert!(!verify(&Password::normalise("wrong horse battery"), &h).ok);
        // verified exactly as typed: no case folding, no trimming, no truncation (ASVS 6.2.8)
        for near in ["Correct horse battery", "CORRECT HORSE BATTERY", "correct horse battery ", "correct horse batter"]
        {
            assert!(!verify(&Password::normalise(near), &h).ok, "{near:?}");
        }
        assert_ne!(hash(&p).unwrap(), h, "fresh salt each time");
        // the decomposed spelling of the same password verifies
        let accented = hash(&Password::normalise("caf\u{e9} au lait")).unwrap();
        assert!(verify(&Password::normalise("cafe\u{301} au lait"), &accented).ok);
        // the crate's own verifier accepts our hashes, and ours the crate's: the same PHC strings
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        assert!(Argon2::default().verify_password(p.expose(), &PasswordHash::new(&h).unwrap()).is_ok());
        let theirs = Argon2::default().hash_password(p.expose()).unwrap().to_string();
        assert_eq!(verify(&p, &theirs), Verified { ok: true, needs_rehash: false });
        // a hash with weaker (or stronger: a temporary allocation) parameters verifies and asks
        // for a rehash; a reused workspace gives the same answers
        let mut ws = Workspace::new();
        for m in [8192, 32768] {
            let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(m, 1, 1, None).unwrap())
                .hash_password(p.expose())
                .unwrap()
                .to_string();
            assert_eq!(verify_with(&mut ws, &p, &other), Verified { ok: true, needs_rehash: true });
            assert!(!verify_with(&mut ws, &Password::normalise("wrong horse battery"), &other).ok);
            assert!(verify_with(&mut ws, &p, &h).ok);
        }
        assert_eq!(ws.blocks.len(), current_params().block_count(), "only the current size is kept");
        assert!(ws.blocks.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)), "zeroized after use");
        // a (tampered) hash asking for 4 TiB of memory is a mismatch, not an allocation
        let huge = h.replace("m=19456", "m=4294967295");
        assert!(huge.contains("m=4294967295") && !verify(&p, &huge).ok);
        // garbage never panics
        assert!(!verify(&p, "not a phc string").ok);
        assert!(!verify(&p, "").ok);
        assert!(verify(&p, dummy_hash()) == Verified { ok: false, needs_rehash: false });
    }

    #[test]
    fn context_words_are_refused() {
        let refused = |pw: &str, email: &str, service: &str| {
            let p = Password::new_checked(pw, 1).unwrap();
            match check_context_words(&p, email, service) {
                Err(e) => {
                    let e = e.to_string();
                    assert_eq!(e, "invalid password: must not contain your email's name or the service's name");
                    true
                }
                Ok(()) => false,
            }
        };
        let ada = "ada.lovelace+x@example.com";
        // a word of the email's local part, equal or contained, in any case
        assert!(refused("lovelace", ada, "Tessera"));
        assert!(refused("I am LoveLace, 1815!", ada, "Tessera"));
        assert!(refused("xlovelacex", ada, "Tessera"));
        // the service's name, and each word of a longer one
        assert!(refused("my tessera password", ada, "Tessera"));
        assert!(refused("TESSERA2026!", ada, "Tessera"));
        assert!(refused("the cloud is mine", ada, "Acme Cloud"));
        assert!(refused("acme-acme-acme", ada, "Acme Cloud"));
        // words shorter than 4 characters, and the domain, do not count
        assert!(!refused("ada is my name, x marks it", ada, "Tessera"));
        assert!(!refused("example passwords are long", ada, "Tessera"));
        assert!(!refused("correct horse battery staple", ada, "Tessera"));
        assert!(!refused("my app is great", ada, "My App"));
        // digits are word characters; an email without '@' is all local part
        assert!(refused("bob1984 forever", "bob1984@example.com", "Tessera"));
        assert!(!refused("bob forever and ever", "bob1984@example.com", "Tessera"));
        assert!(refused("grace hopper", "grace", "Tessera"));
        // NFKC and case folding as for the password itself: full-width letters, ß and SS,
        // final and medial sigma, a ligature
        assert!(refused("ｌｏｖｅｌａｃｅ ｒｕｌｅｓ", ada, "Tessera"));
        assert!(refused("STRAUSS waltzes", "johann.strauß@example.at", "Tessera"));
        assert!(refused("strauß waltzes", "JOHANN.STRAUSS@example.at", "Tessera"));
        assert!(refused("ΣΟΦΙΑΣ κωδικός", "σοφιας@example.gr", "Tessera"));
        assert!(refused("σοφιαςxyz", "ΣΟΦΙΑΣ@example.gr", "Tessera"));
        assert!(refused("my ﬂute password", "flute.player@example.com", "Tessera"));
        assert!(refused("caf\u{e9} lover", "cafe\u{301}@example.com", "Tessera"));
    }
}
