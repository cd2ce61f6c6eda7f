//! The test's mailbox: the `.eml` files Tessera writes when it has no SMTP relay
//! (`DATA_DIR/mail/`), read back as a mail client would (the plain-text part, its
//! quoted-printable decoded), and the links in them.

use std::path::Path;
use std::time::Duration;

/// A message as its recipient reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The file.
    pub file: std::path::PathBuf,
    /// The `To` header.
    pub to: String,
    /// The `Subject` header.
    pub subject: String,
    /// The plain-text part, decoded.
    pub text: String,
}

impl Mail {
    /// The first link in the text that starts with `prefix` (e.g. `http://localhost:8080/password/reset?`).
    pub fn link(&self, prefix: &str) -> Option<String> {
        self.text.split_whitespace().find(|w| w.starts_with(prefix)).map(str::to_owned)
    }
}

/// Every message in `dir` (none if it does not exist), oldest first by file time.
pub fn read_mailbox(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| parse(&p)).collect()
}

/// Wait (up to 20 s) for a message to `to` whose subject contains `subject`; the newest.
pub async fn wait_for_mail(dir: &Path, to: &str, subject: &str) -> Mail {
    for _ in 0..200 {
        if let Some(m) = read_mailbox(dir).into_iter().rev().find(|m| m.to.contains(to) && m.subject.contains(subject))
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no mail to {to} about {subject:?} in {}", dir.display())
}

fn parse(path: &Path) -> Mail {
    let raw = std::fs::read_to_string(path).unwrap().replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap();
    let header = |h: &str, name: &str| -> String {
        // Unfold continuation lines first.
        let unfolded = h.replace("\n ", " ").replace("\n\t", " ");
        unfolded
            .lines()
            .find_map(|l| {
                l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let (to, subject, content_type) = (header(head, "To"), header(head, "Subject"), header(head, "Content-Type"));
    let text = match content_type.split_once("boundary=") {
        Some((_, b)) => {
            let boundary = format!("--{}", b.trim_matches('"').split(';').next().unwrap().trim_matches('"'));
            body.split(boundary.as_str())
                .filter_map(|part| part.trim_start_matches('\n').split_once("\n\n"))
                .find(|(h, _)| header(h, "Content-Type").starts_with("text/plain"))
                .map(|(h, b)| decode(&header(h, "Content-Transfer-Encoding"), b))
                .unwrap_or_default()
        }
        None => decode(&header(head, "Content-Transfer-Encoding"), body),
    };
    Mail { file: path.to_owned(), to, subject, text }
}

fn decode(encoding: &str, body: &str) -> String {
    if encoding.eq_ignore_ascii_case("quoted-printable") {
        let joined = body.replace("=\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1..i + 3)) {
                (b'=', Some(hex)) if hex.iter().all(u8::is_ascii_hexdigit) => {
                    out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    } else if encoding.eq_ignore_ascii_case("base64") {
        let compact: String = body.split_whitespace().collect();
        String::from_utf8(data_encoding::BASE64.decode(compact.as_bytes()).unwrap()).unwrap()
    } else {
        body.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_and_base64() {
        assert_eq!(
            decode("quoted-printable", "a link: http://x/y?token=3Dabc=\ndef\n"),
            "a link: http://x/y?token=abcdef\n"
        );
        assert_eq!(decode("base64", "aGVs\nbG8="), "hello");
        assert_eq!(decode("7bit", "plain"), "plain");
    }
}
