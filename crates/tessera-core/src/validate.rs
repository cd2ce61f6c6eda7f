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

/// Characters that change how the text around them is shown while showing nothing
/// themselves, sorted ranges: Unicode's general category Cf (format) as of Unicode 18 — among
/// them the bidirectional embeddings and overrides U+202A–U+202E, isolates U+2066–U+2069 and
/// marks U+200E, U+200F, U+061C; the zero-width space and joiners U+200B–U+200D, the word
/// joiner U+2060, the byte-order mark U+FEFF, the soft hyphen and the tag characters — and
/// the Hangul fillers (letters that render as blank space). In a device label or an account
/// name they make one text look like another (U+202E turns "moc.elpmaxe" into "example.com"
/// on screen) or make two different names look the same.
///
/// The Cf ranges were generated from `unicode-properties` 0.1.5 (Unicode 18.0) and checked
/// against it code point by code point; a later Unicode version may add a few.
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{115F}', '\u{1160}'), // Hangul choseong and jungseong fillers (Lo)
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'), // Hangul filler (Lo)
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'), // halfwidth Hangul filler (Lo)
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is an invisible or text-direction character (see [`INVISIBLE`]).
fn is_invisible(c: char) -> bool {
    INVISIBLE.iter().any(|&(first, last)| (first..=last).contains(&c))
}

/// A human-facing name (device label, account name): trimmed, non-empty, at most `max`
/// characters, no control characters and no invisible or text-direction characters (Unicode
/// format characters such as bidirectional overrides and zero-width spaces, and the Hangul
/// fillers), so what an authenticator app or a device list shows is what was stored.
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
    if t.chars().any(is_invisible) {
        return Err(CoreError::invalid(field, "must not contain invisible or text-direction characters"));
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

    #[test]
    fn names_refuse_invisible_and_text_direction_characters() {
        let refused = [
            // bidirectional embeddings and overrides, isolates, marks
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200E}',
            '\u{200F}',
            '\u{061C}',
            // zero-width space, non-joiner, joiner; word joiner; byte-order mark
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            // more of category Cf: soft hyphen, invisible times, interlinear annotation, a tag
            '\u{00AD}',
            '\u{2062}',
            '\u{FFF9}',
            '\u{E0041}',
            // Hangul fillers render as blank space
            '\u{115F}',
            '\u{1160}',
            '\u{3164}',
            '\u{FFA0}',
        ];
        for c in refused {
            for name in [format!("Pho{c}ne"), format!("{c}Phone"), format!("Phone{c}"), c.to_string()] {
                let e = display_name("label", &name, 64).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    "invalid label: must not contain invisible or text-direction characters",
                    "U+{:04X}",
                    u32::from(c)
                );
            }
        }
        // the classic spoof: "ada@example.com" shown from text that reads otherwise
        let e = display_name("account_name", "\u{202E}moc.elpmaxe@ada", 128).unwrap_err();
        assert!(e.to_string().contains("account_name"), "{e}");
        // the table is sorted and its ranges do not overlap
        assert!(INVISIBLE.windows(2).all(|w| w[0].0 <= w[0].1 && w[0].1 < w[1].0));
        // right-to-left scripts, accents, CJK and a plain emoji are names like any other
        for ok in ["هاتف علي", "הטלפון של דנה", "Zoë's iPhone", "手机", "김민수", "📱 Phone", "ada@example.com"]
        {
            assert_eq!(display_name("label", ok, 64).unwrap(), ok);
        }
    }
}
