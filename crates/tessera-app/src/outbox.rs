//! Delivering queued notifications (the outbox) by SMTP. Notifications are written in the
//! transaction that causes them (e.g. a support reset), so none is lost if the relay is down;
//! delivery retries on the next pass.

use crate::{App, AppError};
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// An SMTP relay: `smtp://host:port` (plain, for a local relay), `smtp://host:port?tls=required`
/// (STARTTLS) or `smtps://host:port`; credentials may be in the URL.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailer(from {})", self.from)
    }
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
    /// A mailer for `url`, sending as `from`.
    pub fn new(url: &str, from: &str) -> Result<Self, AppError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| AppError::FailedPrecondition(format!("SMTP URL: {e}")))?
            .build();
        let from = from.parse().map_err(|e| AppError::FailedPrecondition(format!("SMTP from address: {e}")))?;
        Ok(Self { transport, from })
    }
}

fn render(kind: &str, detail: &str) -> (String, String) {
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
                d.get("ip").and_then(|v| v.as_str()).unwrap_or("an unknown address"),
                d.get("user_agent").and_then(|v| v.as_str()).unwrap_or("an unknown browser"),
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
                d.get("ip").and_then(|v| v.as_str()).unwrap_or("an unknown address"),
                d.get("user_agent").and_then(|v| v.as_str()).unwrap_or("an unknown browser"),
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
    /// Deliver up to `limit` queued notifications.
    pub async fn deliver_notifications(&self, mailer: &Mailer, limit: u32) -> Result<DeliveryReport, AppError> {
        let mut report = DeliveryReport::default();
        for (id, email, kind, detail) in self.store.unsent_notifications(limit).await? {
            let (subject, body) = render(&kind, &detail);
            let msg = email.parse::<Mailbox>().map_err(|e| e.to_string()).and_then(|to| {
                Message::builder()
                    .from(mailer.from.clone())
                    .to(to)
                    .subject(subject)
                    .body(body)
                    .map_err(|e| e.to_string())
            });
            let sent = match msg {
                Ok(m) => mailer.transport.send(m).await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => {
                    self.store.mark_notification_sent(&id, self.clock.now()).await?;
                    report.sent += 1;
                }
                Err(e) => {
                    tracing::warn!(notification = %id, error = %e, "notification not delivered; will retry");
                    self.store.mark_notification_failed(&id).await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}
