//! Return addresses: the one parser for every "come back here afterwards" the product follows
//! (`/settings/reauth?next=…` today; the login's return address later). Only a path on this
//! site is accepted, so no parameter can send a user to another origin (an open redirect).

/// Longest return path accepted.
pub const MAX_RETURN_PATH: usize = 2048;

/// `next` if it is a path on this site, else `None`.
///
/// Accepted: starts with exactly one `/`, printable ASCII only (a browser would
/// percent-encode anything else), no backslash, no `//` at the start, and the same after
/// percent-decoding (so `/%2F%2Fevil.example` or `/%5Cevil.example` cannot become a
/// scheme-relative URL in a lenient client). Refused: `//host`, `/\host`, `https://…`,
/// `javascript:…`, control characters, over-long paths.
pub fn local_path(next: &str) -> Option<&str> {
    fn shape_ok(p: &str) -> bool {
        p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.bytes().all(|b| b.is_ascii_graphic())
    }
    if next.len() > MAX_RETURN_PATH || !shape_ok(next) {
        return None;
    }
    let decoded = percent_decode(next)?;
    if !decoded.starts_with('/') || decoded.starts_with("//") || decoded.contains('\\') {
        return None;
    }
    if decoded.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(next)
}

/// Percent-decode (repeatedly, so double encoding cannot hide a character); `None` if the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut cur = s.to_owned();
    for _ in 0..4 {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(&cur).collect();
        let next = String::from_utf8(bytes).ok()?;
        if next == cur {
            return Some(next);
        }
        cur = next;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths() {
        for ok in ["/", "/settings/security", "/accounts/abc/settings?done=saved", "/a%20b", "/x#frag"] {
            assert_eq!(local_path(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "settings",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "http:/evil.example",
            "javascript:alert(1)",
            "/%2F%2Fevil.example",
            "/%2fevil.example/..",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%255C%255Cevil.example",
            "/a\nb",
            "/a\tb",
            "/é",
            "/a%0d%0aSet-Cookie:x=1",
            " /settings",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(3000))), None);
    }
}
