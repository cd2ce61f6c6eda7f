//! Delivering queued notifications (the outbox): by SMTP when a relay is configured, else as
//! `.eml` files (mode 0600) in a directory, so a laptop's `tessera serve` can follow a link.
//! Notifications are written in the transaction that causes them, so none is lost if the
//! relay is down; delivery retries on the next pass. A message that carries a link has its
//! token sealed in its row; it is opened only here, put in the link, and blanked once sent.

use crate::lifecycle::mail_aad;
use crate::{App, AppError};
use lettre::message::{Mailbox, Message, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use tessera_core::seal::{KeyId, Sealed};

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(PathBuf),
}

/// Where mail goes: an SMTP relay, or a directory of `.eml` files.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Smtp(_) => write!(f, "Mailer(SMTP, from {})", self.from),
            Transport::Dir(d) => write!(f, "Mailer({}, from {})", d.display(), self.from),
        }
    }
}

/// Delivery attempts before a message is given up (with the back-off, about a day).
pub const MAX_DELIVERY_ATTEMPTS: u32 = 30;

/// The wait before attempt `attempts + 1`: 30 s doubling, at most an hour.
fn retry_delay(attempts: u32) -> time::Duration {
    let secs = 30_i64.saturating_mul(1_i64 << attempts.saturating_sub(1).min(7));
    time::Duration::seconds(secs.min(3600))
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Delivered.
    pub sent: u32,
    /// Failed (still queued).
    pub failed: u32,
}

impl Mailer {
    /// An SMTP relay: `smtp://host:port` (plain, for a local relay), `smtp://host:port?tls=required`
    /// (STARTTLS) or `smtps://host:port`; credentials may be in the URL. Sending as `from`.
    pub fn new(url: &str, from: &str) -> Result<Self, AppError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| AppError::FailedPrecondition(format!("SMTP URL: {e}")))?
            .build();
        Ok(Self { transport: Transport::Smtp(transport), from: from_address(from)? })
    }

    /// No relay: each message becomes `DIR/<id>.eml` (mode 0600; the directory is created
    /// 0700), and its path is logged.
    pub fn to_dir(dir: PathBuf, from: &str) -> Result<Self, AppError> {
        Ok(Self { transport: Transport::Dir(dir), from: from_address(from)? })
    }

    async fn send(&self, id: &str, msg: Message) -> Result<(), String> {
        match &self.transport {
            Transport::Smtp(t) => t.send(msg).await.map(|_| ()).map_err(|e| e.to_string()),
            Transport::Dir(dir) => {
                let path = dir.join(format!("{id}.eml"));
                let bytes = msg.formatted();
                let p = path.clone();
                tokio::task::spawn_blocking(move || write_private(&p, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                tracing::info!(path = %path.display(), "mail written (no SMTP relay configured)");
                Ok(())
            }
        }
    }
}

fn from_address(from: &str) -> Result<Mailbox, AppError> {
    from.parse().map_err(|e| AppError::FailedPrecondition(format!("mail from address: {e}")))
}

/// Write a new file readable by its owner only (a message may carry a link that resets a
/// password); never over an existing one.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A message's text with its link (if any) as the HTML part's one anchor.
fn html(text: &str, link: Option<&str>) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut out = String::from("<!doctype html><html><body style=\"font-family: sans-serif; line-height: 1.5\">");
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        match link {
            Some(l) if para == l => out.push_str(&format!("<p><a href=\"{}\">{}</a></p>", esc(l), esc(l))),
            _ => out.push_str(&format!("<p>{}</p>", esc(para).replace('\n', "<br>"))),
        }
    }
    out.push_str("</body></html>");
    out
}

/// Where a request came from, as a message may quote it: an IP address, else "an unknown
/// address". Never the caller's free text.
fn quoted_ip(d: &serde_json::Value) -> String {
    d.get("ip")
        .and_then(|v| v.as_str())
        .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
        .map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string())
}

/// The browser a request came from, as a message may quote it. A user agent is the caller's
/// own text inside a real message of ours: it is kept only when it looks like one (letters,
/// digits, spaces and `/.;:,()_-`, no link, at most 120 characters), else "an unknown
/// browser", so nobody can plant a sentence or a URL in someone else's mail.
fn quoted_agent(d: &serde_json::Value) -> String {
    let ua = d.get("user_agent").and_then(|v| v.as_str()).unwrap_or_default().trim();
    let lower = ua.to_ascii_lowercase();
    let plain = !ua.is_empty()
        && ua.chars().count() <= 120
        && ua.chars().all(|c| c.is_ascii_alphanumeric() || " /.;:,()_-".contains(c))
        && !lower.contains("://")
        && !lower.contains("www.")
        && !lower.contains("http");
    if plain { ua.to_owned() } else { "an unknown browser".to_owned() }
}

fn render(kind: &str, detail: &str, link: Option<&str>) -> (String, String) {
    let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
    match kind {
        "mfa_reset" => (
            "Your two-factor authentication was reset".to_owned(),
            format!(
                "Our support team removed the two-factor authentication of your account \
                 (ticket {}) after verifying your identity.\n\nYou can sign in with your password \
                 and set up an authenticator again. If you did not ask for this, contact support \
                 immediately.\n",
                d.get("ticket").and_then(|v| v.as_str()).unwrap_or("unknown")
            ),
        ),
        "totp_disabled" => (
            "Your authenticator app was turned off".to_owned(),
            "There were 100 wrong codes in a row for your account, so we turned off the authenticator \
             app(s) on it: someone may be guessing your codes, which means they may have your password.\n\n\
             Sign in with a recovery code, change your password, then remove the old authenticator and set up \
             a new one. No recovery codes left? Contact support.\n"
                .to_owned(),
        ),
        "password_suspended" => (
            "Signing in to your account with a password is paused".to_owned(),
            "There were 100 failed sign-in attempts in a row for your account, from places we cannot tell \
             apart from an attacker's. Until you sign in successfully, password sign-in works only from \
             browsers you have signed in with before.\n\nIf this was not you, someone is trying to guess \
             your password: choose a stronger one once you are in. If you cannot sign in, contact support.\n"
                .to_owned(),
        ),
        "factor_added" => (
            "An authenticator was added to your account".to_owned(),
            format!(
                "An authenticator app (\"{}\") was added to your account from {} ({}).{}\n\n\
                 If this was not you, someone has your password: contact support at once.\n",
                d.get("label").and_then(|v| v.as_str()).unwrap_or("authenticator app"),
                quoted_ip(&d),
                quoted_agent(&d),
                if d.get("sessions_revoked").and_then(serde_json::Value::as_u64).unwrap_or(0) > 0 {
                    " Your other sessions were signed out."
                } else {
                    ""
                },
            ),
        ),
        "factor_removed" => (
            "An authenticator was removed from your account".to_owned(),
            format!(
                "An authenticator was removed from your account from {} ({}).\n\n\
                 If this was not you, sign in and check your security settings, or contact support.\n",
                quoted_ip(&d),
                quoted_agent(&d),
            ),
        ),
        "password_reset" => (
            "Reset your password".to_owned(),
            format!(
                "Someone asked to reset the password of your account from {} ({}). To choose a new \
                 password, open this link within {} minutes:\n\n{}\n\n\
                 The link works once. It does not sign you in: after the new password, sign in as usual, \
                 with your authenticator if you have one.\n\n\
                 If this was not you, ignore this message: your password stays as it is.\n",
                quoted_ip(&d),
                quoted_agent(&d),
                d.get("minutes").and_then(serde_json::Value::as_i64).unwrap_or(30),
                link.unwrap_or("(the link is missing: request a new one)"),
            ),
        ),
        "password_reset_done" => (
            "Your password was changed".to_owned(),
            format!(
                "The password of your account was set with a reset link from {} ({}). Every session \
                 was signed out; your authenticators and recovery codes are unchanged.\n\n\
                 If this was not you, someone can read your email: reset your password again at once and \
                 contact support.\n",
                quoted_ip(&d),
                quoted_agent(&d),
            ),
        ),
        "invitation" => (
            // The account's name is the inviter's to choose: it stays out of the subject line.
            "You are invited to an account on Tessera".to_owned(),
            format!(
                "Someone invited this email address to the account \"{}\" as {}.\n\n\
                 To accept, sign in (or create an account) with this address, open the Accounts page \
                 and enter this code within 7 days:\n\n    {}\n\n\
                 If you did not expect this, ignore this message: nothing happens without the code.\n",
                d.get("account").and_then(|v| v.as_str()).unwrap_or("an account"),
                d.get("role").and_then(|v| v.as_str()).unwrap_or("member"),
                d.get("code").and_then(|v| v.as_str()).unwrap_or("(missing)"),
            ),
        ),
        other => (format!("Account notice: {other}"), "There was a change to your account.\n".to_owned()),
    }
}

impl App {
    /// Deliver up to `limit` queued notifications that are due. A failed attempt is retried
    /// after 30 s, doubling to at most an hour, and given up after [`MAX_DELIVERY_ATTEMPTS`];
    /// a message that can never go (an address the mail library refuses, a link whose key is
    /// gone) is given up at once. Given-up messages leave the queue, so none can hold up the
    /// rest.
    pub async fn deliver_notifications(&self, mailer: &Mailer, limit: u32) -> Result<DeliveryReport, AppError> {
        let mut report = DeliveryReport::default();
        for m in self.store.due_notifications(limit, self.clock.now()).await? {
            let outcome = match self.mail_link(&m) {
                Err(e) => Err((format!("its link cannot be opened: {e}"), false)),
                Ok(link) => {
                    let (subject, text) = render(&m.kind, &m.detail, link.as_deref().map(String::as_str));
                    let body = html(&text, link.as_deref().map(String::as_str));
                    let msg = m.email.parse::<Mailbox>().map_err(|e| e.to_string()).and_then(|to| {
                        Message::builder()
                            .from(mailer.from.clone())
                            .to(to)
                            .subject(subject)
                            .multipart(MultiPart::alternative_plain_html(text, body))
                            .map_err(|e| e.to_string())
                    });
                    match msg {
                        Ok(msg) => mailer.send(&m.id, msg).await.map_err(|e| (e, true)),
                        Err(e) => Err((format!("the message cannot be built: {e}"), false)),
                    }
                }
            };
            let now = self.clock.now();
            match outcome {
                Ok(()) => {
                    self.store.mark_notification_sent(&m.id, now).await?;
                    report.sent += 1;
                }
                Err((e, retry)) => {
                    let attempts = m.attempts + 1;
                    let retry_at = (retry && attempts < MAX_DELIVERY_ATTEMPTS).then(|| now + retry_delay(attempts));
                    match retry_at {
                        Some(at) => tracing::warn!(notification = %m.id, error = %e, attempts,
                            retry_at = at.unix_timestamp(), "notification not delivered; will retry"),
                        None => tracing::error!(notification = %m.id, error = %e, attempts,
                            "notification not delivered; given up"),
                    }
                    self.store.mark_notification_failed(&m.id, now, retry_at).await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// The link a queued message carries, its token opened from the row (`None`: no link).
    fn mail_link(&self, m: &tessera_store::QueuedMail) -> Result<Option<zeroize::Zeroizing<String>>, AppError> {
        let Some(s) = &m.secret else { return Ok(None) };
        let sealed =
            Sealed { key_id: KeyId::new(&s.key_id)?, nonce: s.nonce.clone(), ciphertext: s.ciphertext.clone() };
        let token = self.keys.open(&mail_aad(&m.id, &m.user_id), &sealed)?;
        let token = std::str::from_utf8(&token).map_err(|_| AppError::Keys(tessera_core::CoreError::OpenFailed))?;
        let path = match m.kind.as_str() {
            "password_reset" => "/password/reset",
            other => return Err(AppError::FailedPrecondition(format!("no link for a {other} message"))),
        };
        let base = self.config.public_url.trim_end_matches('/');
        Ok(Some(zeroize::Zeroizing::new(format!("{base}{path}?token={token}"))))
    }
}

#[cfg(test)]
mod quoting_tests {
    use super::*;

    #[test]
    fn only_plain_agents_and_real_addresses_are_quoted() {
        let q = |ip: &str, ua: &str| {
            let d = serde_json::json!({ "ip": ip, "user_agent": ua });
            (quoted_ip(&d), quoted_agent(&d))
        };
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        assert_eq!(q("203.0.113.7", firefox), ("203.0.113.7".into(), firefox.into()));
        for ua in ["Urgent: cancel at https://evil.example", "see www.evil.example", "a <b>", "x\ny", ""] {
            assert_eq!(q("203.0.113.7", ua).1, "an unknown browser", "{ua:?}");
        }
        assert_eq!(q("call +1 555 0100 now", firefox).0, "an unknown address");
    }
}
