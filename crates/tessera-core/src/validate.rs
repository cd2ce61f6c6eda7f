//! Limits on caller-supplied identifiers and labels, checked before anything is stored.

use crate::CoreError;

/// Longest subject id we accept, in bytes.
pub const MAX_SUBJECT_LEN: usize = 128;
/// Longest device label we accept, in characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// Longest account name (shown in the authenticator app), in characters.
pub const MAX_ACCOUNT_NAME_CHARS: usize = 128;

/// A subject id is 1..=128 bytes of printable ASCII without spaces.
pub fn subject_id(s: &str) -> Result<&str, CoreError> {
    if s.is_empty() {
        return Err(CoreError::invalid("subject_id", "must not be empty"));
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(CoreError::invalid(
            "subject_id",
            format!("is {} bytes; at most {MAX_SUBJECT_LEN} are allowed", s.len()),
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CoreError::invalid("subject_id", "may hold only printable ASCII without spaces"));
    }
    Ok(s)
}

/// A human-facing name (device label, account name): trimmed, non-empty, no control
/// characters, at most `max` characters.
pub fn display_name<'a>(field: &'static str, s: &'a str, max: usize) -> Result<&'a str, CoreError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    let n = t.chars().count();
    if n > max {
        return Err(CoreError::invalid(field, format!("is {n} characters; at most {max} are allowed")));
    }
    if t.chars().any(char::is_control) {
        return Err(CoreError::invalid(field, "must not contain control characters"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_ids() {
        assert!(subject_id("user-42").is_ok());
        assert!(subject_id("").is_err());
        assert!(subject_id(&"a".repeat(129)).is_err());
        assert!(subject_id(&"a".repeat(128)).is_ok());
        assert!(subject_id("has space").is_err());
        assert!(subject_id("é").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(display_name("label", "  Phone ", 64).unwrap(), "Phone");
        assert!(display_name("label", "   ", 64).is_err());
        assert!(display_name("label", "a\nb", 64).is_err());
        assert!(display_name("label", &"é".repeat(64), 64).is_ok());
        let e = display_name("label", &"é".repeat(65), 64).unwrap_err();
        assert!(e.to_string().contains("label"), "{e}");
    }
}
