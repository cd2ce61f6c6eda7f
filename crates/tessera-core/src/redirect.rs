//! Return addresses: the one parser for every "come back here afterwards" the product follows.
//!
//! - [`local_path`]: a path on this site (`/settings/reauth?next=…`).
//! - [`return_address`]: the sign-in's `rd` (forward auth: the app a reverse proxy sent the
//!   user from), a local path or an absolute URL on a host the operator listed
//!   (`--forward-auth-domain`, [`ForwardDomains`]).
//!
//! Nothing else is followed, so no parameter can send a user to an origin the operator did not
//! name (an open redirect). An absolute URL is parsed by the WHATWG parser browsers use, then
//! judged on what that parser found (the host it will connect to), and the redirect goes to the
//! parser's own serialisation, never to the raw input.

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

/// Hosts whose URLs a sign-in may return to (`--forward-auth-domain`): each name matches
/// itself and its subdomains, on a dot boundary (`example.com` matches `app.example.com`, never
/// `badexample.com` or `example.com.evil.example`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardDomains(Vec<String>);

impl ForwardDomains {
    /// Parse domain names (`example.com`, `localhost`): lower-cased, without a leading dot.
    /// Refused: an empty list entry, anything but ASCII letters, digits, `-` and `.`, a label
    /// that is empty, and a public suffix on its own (a name without a dot, `localhost` aside).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in items {
            let d = item.as_ref().trim().trim_start_matches('.').to_ascii_lowercase();
            if d.is_empty() {
                continue;
            }
            let labels_ok = d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
            if !labels_ok || d.len() > 253 {
                return Err(format!("{:?} is not a domain name (like example.com)", item.as_ref()));
            }
            if !d.contains('.') && d != "localhost" {
                return Err(format!(
                    "{:?} is a top-level domain: name the domain your apps are under (like example.com)",
                    item.as_ref()
                ));
            }
            out.push(d);
        }
        Ok(Self(out))
    }

    /// The names.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Whether no domain is listed (then only local paths are followed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `host` (a parsed URL's host, lower case) is one of the names or under one.
    pub fn covers(&self, host: &str) -> bool {
        self.0.iter().any(|d| host == d || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.')))
    }
}

/// Whether a host is this machine (where plain http is as private as https).
fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => *d == "localhost" || d.ends_with(".localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Where a sign-in may return to: `rd` if it is a local path ([`local_path`]), or an absolute
/// `https` URL (`http` only on loopback) whose host is covered by `domains`; `None` otherwise.
/// The absolute form returned is the WHATWG parser's serialisation of `rd`.
///
/// Refused, besides what [`local_path`] refuses: another scheme (`javascript:`, `data:`), user
/// information (`https://example.com@evil.example`), a host outside the list (`//evil.example`,
/// `https://example.com.evil.example`), anything but printable ASCII (an IDN look-alike must
/// come as the `xn--` name it is, which then has to be listed), backslashes, and a URL that
/// changes under percent-decoding into one of these.
pub fn return_address(rd: &str, domains: &ForwardDomains) -> Option<String> {
    if let Some(p) = local_path(rd) {
        return Some(p.to_owned());
    }
    if domains.is_empty() || rd.len() > MAX_RETURN_PATH || !rd.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if rd.contains('\\') || percent_decode(rd).is_none_or(|d| d.contains('\\') || d.chars().any(char::is_control)) {
        return None;
    }
    // Only `scheme://host…` as written: the parser would otherwise "fix" `https:evil.example`
    // or `https:/evil.example` into a URL on a host nobody wrote.
    let lower = rd.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    let url = url::Url::parse(rd).ok()?;
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let host = url.host()?;
    let secure = match url.scheme() {
        "https" => true,
        "http" => is_loopback(&host),
        _ => return None,
    };
    let covered = match &host {
        url::Host::Domain(d) => domains.covers(d),
        // An address is followed only when it is listed as it is (`127.0.0.1`).
        url::Host::Ipv4(ip) => domains.names().iter().any(|n| *n == ip.to_string()),
        url::Host::Ipv6(_) => false,
    };
    (secure && covered).then(|| url.to_string())
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
    use super::{ForwardDomains, local_path, return_address};

    #[test]
    fn return_addresses_on_listed_hosts_only() {
        let d = ForwardDomains::parse(&["example.com", "localhost"]).unwrap();
        for (ok, want) in [
            ("https://example.com/", "https://example.com/"),
            ("https://app.example.com/x?y=1&z=%20#f", "https://app.example.com/x?y=1&z=%20#f"),
            ("HTTPS://APP.Example.COM:8443/a", "https://app.example.com:8443/a"),
            ("http://localhost:8080/app", "http://localhost:8080/app"),
            ("http://app.localhost/", "http://app.localhost/"),
            ("/accounts", "/accounts"),
        ] {
            assert_eq!(return_address(ok, &d).as_deref(), Some(want), "{ok}");
        }
        for bad in [
            "",
            "//evil.example",
            "///evil.example",
            "https://evil.example/",
            "https://example.com.evil.example/",
            "https://badexample.com/",
            "https://example.com@evil.example/",
            "https://user:pw@app.example.com/",
            "https://evil.example\\@example.com/",
            "https:\\\\evil.example",
            "https:/evil.example",
            "https:evil.example",
            "http://app.example.com/",
            "javascript:alert(1)//example.com",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "https://ex\u{0430}mple.com/",
            "https://xn--exmple-4nf.com/",
            "https://example.com%2eevil.example/",
            "https%3A%2F%2Fevil.example",
            "https://evil.example%2F@example.com/",
            "https://evil.example%5C@example.com/",
            "https://app.example.com/%0d%0aSet-Cookie:x=1",
            "https://app.example.com/\x0b",
            " https://example.com/",
            "https://[::1]/",
            "https://127.0.0.1/",
            "ftp://example.com/",
        ] {
            assert_eq!(return_address(bad, &d), None, "{bad:?}");
        }
        // Without any domain listed, only local paths.
        assert_eq!(return_address("https://example.com/", &ForwardDomains::default()), None);
        assert_eq!(return_address("/x", &ForwardDomains::default()).as_deref(), Some("/x"));
        // An address only as listed.
        let ip = ForwardDomains::parse(&["127.0.0.1"]).unwrap();
        assert_eq!(return_address("http://127.0.0.1:81/", &ip).as_deref(), Some("http://127.0.0.1:81/"));
        assert_eq!(return_address("http://127.0.0.2:81/", &ip), None);
    }

    #[test]
    fn forward_domains_parse() {
        let d = ForwardDomains::parse(&[" .Example.COM ", "", "localhost"]).unwrap();
        assert_eq!(d.names(), ["example.com", "localhost"]);
        assert!(d.covers("a.b.example.com") && d.covers("example.com") && !d.covers("xexample.com"));
        for bad in ["com", "exa mple.com", "example..com", "-x.example.com", "ex\u{e4}mple.com", "a/b.com"] {
            assert!(ForwardDomains::parse(&[bad]).is_err(), "{bad}");
        }
    }

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
