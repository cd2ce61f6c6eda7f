//! The breached-password check by k-anonymity (the "range" protocol of Pwned Passwords):
//! only the first five hex characters of the password's SHA-1 ever leave the machine; the
//! service answers with every suffix under that prefix and the match happens here.
//!
//! This module is the pure part: the split, and reading a range response (online or from an
//! offline range directory, same `SUFFIX:COUNT` lines). Fetching lives in the app.

use crate::CoreError;
use crate::password::Password;
use sha1::{Digest, Sha1};

/// The five hex characters sent, and the thirty-five kept.
#[derive(Clone, PartialEq, Eq)]
pub struct RangeQuery {
    prefix: String,
    suffix: String,
}

impl std::fmt::Debug for RangeQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The suffix narrows the password to one hash: keep it out of logs.
        write!(f, "RangeQuery {{ prefix: {:?}, suffix: [REDACTED] }}", self.prefix)
    }
}

impl RangeQuery {
    /// Split the upper-case hex SHA-1 of the (normalised) password.
    pub fn new(p: &Password) -> Self {
        let hex = data_encoding::HEXUPPER.encode(&Sha1::digest(p.expose()));
        let (prefix, suffix) = hex.split_at(5);
        Self { prefix: prefix.to_owned(), suffix: suffix.to_owned() }
    }

    /// The only thing that may be sent: 5 upper-case hex characters.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many breaches the range response lists for this password (0 if absent). Lines are
    /// `SUFFIX:COUNT`; padding lines (count 0) and blank lines are ignored; a malformed line
    /// is an error (the response is not what we asked for).
    pub fn count_in(&self, response: &str) -> Result<u64, CoreError> {
        let mut found = 0;
        for line in response.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (suffix, count) = line
                .split_once(':')
                .ok_or_else(|| CoreError::invalid("range response", "a line is not SUFFIX:COUNT"))?;
            let count: u64 =
                count.trim().parse().map_err(|_| CoreError::invalid("range response", "a count is not a number"))?;
            if suffix.len() != 35 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CoreError::invalid("range response", "a suffix is not 35 hex characters"));
            }
            if count > 0 && suffix.eq_ignore_ascii_case(&self.suffix) {
                found = count;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sha1_into_prefix_and_suffix() {
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        let q = RangeQuery::new(&Password::normalise("password"));
        assert_eq!(q.prefix(), "5BAA6");
        assert_eq!(q.suffix, "1E4C9B93F3F0682250B6CF8331B7EE68FD8");
        assert!(!format!("{q:?}").contains("1E4C9B93"));
    }

    #[test]
    fn reads_range_responses() {
        let q = RangeQuery::new(&Password::normalise("password"));
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n\
                    1E4C9B93F3F0682250B6CF8331B7EE68FD8:10437277\r\n\
                    011053FD0102E94D6AE2F8B83D76FAF94F6:0\r\n";
        assert_eq!(q.count_in(body).unwrap(), 10_437_277);
        assert_eq!(q.count_in(&body.to_lowercase()).unwrap(), 10_437_277, "case-insensitive");
        // padding: a zero-count line for our own suffix means "not breached"
        assert_eq!(q.count_in("1E4C9B93F3F0682250B6CF8331B7EE68FD8:0\n").unwrap(), 0);
        assert_eq!(q.count_in("").unwrap(), 0);
        assert!(q.count_in("<html>rate limited</html>").is_err());
        assert!(q.count_in("1E4C9B93:12").is_err());
    }
}
