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

impl App {
    /// Deliver up to `limit` queued notifications that are due. A failed attempt is retried
    /// after 30 s, doubling to at most an hour, and given up after [`MAX_DELIVERY_ATTEMPTS`];
    /// a message that can never go (an address the mail library refuses, a link whose key is
    /// gone) is given up at once. Given-up messages leave the queue, so none can hold up the
    /// rest.
    pub async fn deliver_notifications(&self, mailer: &Mailer, limit: u32) -> Result<DeliveryReport, AppError> {
        let mut report = DeliveryReport::default();
        for m in self.store.due_notifications(limit, self.clock.now()).await? {
            let outcome = match self.mail_secret(&m) {
                Err(e) => Err((format!("its link cannot be opened: {e}"), false)),
                Ok(secret) => {
                    let (link, code) = match &secret {
                        Some(MailSecret::Link(l)) => (Some(l.as_str()), None),
                        Some(MailSecret::Code(c)) => (None, Some(c.as_str())),
                        None => (None, None),
                    };
                    let (subject, text) = crate::mail::render(&m.kind, &m.detail, link.or(code));
                    let body = crate::mail::html(&text, link, code);
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

    /// What a queued message carries sealed, opened from its row: a link (its token put in the
    /// URL on `--public-url`) or an invitation's code; `None`: nothing.
    fn mail_secret(&self, m: &tessera_store::QueuedMail) -> Result<Option<MailSecret>, AppError> {
        let Some(s) = &m.secret else { return Ok(None) };
        let sealed =
            Sealed { key_id: KeyId::new(&s.key_id)?, nonce: s.nonce.clone(), ciphertext: s.ciphertext.clone() };
        let opened = self.keys.open(&mail_aad(&m.id, &m.user_id), &sealed)?;
        let opened = std::str::from_utf8(&opened).map_err(|_| AppError::Keys(tessera_core::CoreError::OpenFailed))?;
        let path = match m.kind.as_str() {
            "password_reset" => "/password/reset",
            "verify_email" => "/verify-email",
            "email_change" => "/settings/email/confirm",
            "invitation" => return Ok(Some(MailSecret::Code(zeroize::Zeroizing::new(opened.to_owned())))),
            other => return Err(AppError::FailedPrecondition(format!("no link for a {other} message"))),
        };
        let base = self.config.public_url.trim_end_matches('/');
        Ok(Some(MailSecret::Link(zeroize::Zeroizing::new(format!("{base}{path}?token={opened}")))))
    }
}

/// What a message carries that only its recipient may read.
enum MailSecret {
    /// A link with a token.
    Link(zeroize::Zeroizing<String>),
    /// A code to type (an invitation's).
    Code(zeroize::Zeroizing<String>),
}
