//! The words of Tessera's mail: one askama template per kind of message
//! (`templates/mail/<kind>.txt`, plain text, one paragraph per line), and the HTML part made
//! from that text by `templates/mail/message.html` (escaped; the message's link its one
//! anchor). What a message quotes comes from its outbox row's detail, and what a caller could
//! have typed (a user agent, an address) is quoted only when it is what it claims to be.

use askama::Template;

/// What a message may say: its row's facts, quoted safely, and the link or code it carries.
struct Facts<'a> {
    when: String,
    ip: String,
    agent: String,
    secret: &'a str,
    label: String,
    ticket: String,
    account: String,
    role: String,
    minutes: i64,
    hours: i64,
    new_email: String,
    left: u64,
    grace: Option<String>,
    signed_out: bool,
    passkeys: u64,
}

impl<'a> Facts<'a> {
    fn new(d: &serde_json::Value, secret: Option<&'a str>) -> Self {
        let text = |k: &str, or: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or(or).to_owned();
        let int = |k: &str, or: i64| d.get(k).and_then(serde_json::Value::as_i64).unwrap_or(or);
        Self {
            when: quoted_when(d),
            ip: quoted_ip(d),
            agent: quoted_agent(d),
            secret: secret.unwrap_or("(missing: request a new one)"),
            label: quoted_name(d, "label", "authenticator app"),
            ticket: text("ticket", "unknown"),
            account: quoted_name(d, "account", "an account"),
            role: text("role", "member"),
            minutes: int("minutes", 30),
            hours: int("hours", 24),
            new_email: text("new", "another address"),
            left: d.get("left").and_then(serde_json::Value::as_u64).unwrap_or(0),
            grace: d.get("grace_until").and_then(serde_json::Value::as_i64).and_then(date_time),
            signed_out: d.get("sessions_revoked").and_then(serde_json::Value::as_u64).unwrap_or(0) > 0,
            passkeys: d.get("passkeys").and_then(serde_json::Value::as_u64).unwrap_or(0),
        }
    }
}

/// One template struct per kind of message, each over the same facts.
macro_rules! mail_templates {
    ($($name:ident => $path:literal),* $(,)?) => {
        $(
            #[derive(Template)]
            #[template(path = $path)]
            struct $name<'a> {
                f: &'a Facts<'a>,
            }
        )*
    };
}

mail_templates! {
    MfaReset => "mail/mfa_reset.txt",
    TotpDisabled => "mail/totp_disabled.txt",
    PasswordSuspended => "mail/password_suspended.txt",
    FactorAdded => "mail/factor_added.txt",
    FactorRemoved => "mail/factor_removed.txt",
    PasswordResetMail => "mail/password_reset.txt",
    PasswordResetDone => "mail/password_reset_done.txt",
    Invitation => "mail/invitation.txt",
    VerifyEmail => "mail/verify_email.txt",
    SignupExisting => "mail/signup_existing.txt",
    EmailChangeMail => "mail/email_change.txt",
    EmailChanged => "mail/email_changed.txt",
    PasswordChanged => "mail/password_changed.txt",
    RecoveryCodesRegenerated => "mail/recovery_codes_regenerated.txt",
    RecoveryCodeUsed => "mail/recovery_code_used.txt",
    NewBrowser => "mail/new_browser.txt",
    MfaRequired => "mail/mfa_required.txt",
    KeyPossiblyCloned => "mail/key_possibly_cloned.txt",
    BrowserTrusted => "mail/browser_trusted.txt",
    Other => "mail/other.txt",
}

/// A message's subject and plain text; `secret` is the link or the code it carries.
pub(crate) fn render(kind: &str, detail: &str, secret: Option<&str>) -> (String, String) {
    let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
    // An invitation queued before codes were sealed has its code in the detail.
    let legacy_code = d.get("code").and_then(|v| v.as_str());
    let f = Facts::new(&d, secret.or(legacy_code));
    let f = &f;
    let (subject, text) = match kind {
        "mfa_reset" => ("Your two-factor authentication was reset", MfaReset { f }.render()),
        "totp_disabled" => ("Your authenticator app was turned off", TotpDisabled { f }.render()),
        "password_suspended" => {
            ("Signing in to your account with a password is paused", PasswordSuspended { f }.render())
        }
        "factor_added" => ("An authenticator was added to your account", FactorAdded { f }.render()),
        "factor_removed" => ("An authenticator was removed from your account", FactorRemoved { f }.render()),
        "password_reset" => ("Reset your password", PasswordResetMail { f }.render()),
        "password_reset_done" => ("Your password was changed", PasswordResetDone { f }.render()),
        // The account's name is the inviter's to choose: it stays out of the subject line.
        "invitation" => ("You are invited to an account on Tessera", Invitation { f }.render()),
        "verify_email" => ("Confirm your email address", VerifyEmail { f }.render()),
        "signup_existing" => ("Someone tried to create an account with your address", SignupExisting { f }.render()),
        "email_change" => ("Confirm your new email address", EmailChangeMail { f }.render()),
        "email_changed" => ("Your account's email address was changed", EmailChanged { f }.render()),
        "password_changed" => ("Your password was changed", PasswordChanged { f }.render()),
        "recovery_codes_regenerated" => {
            ("New recovery codes were created for your account", RecoveryCodesRegenerated { f }.render())
        }
        "recovery_code_used" => {
            ("A recovery code was used to sign in to your account", RecoveryCodeUsed { f }.render())
        }
        "new_browser" => ("A new sign-in to your account", NewBrowser { f }.render()),
        "browser_trusted" => ("A browser was trusted to sign in to your account", BrowserTrusted { f }.render()),
        "key_possibly_cloned" => {
            ("A security key of yours was turned off: it may have been copied", KeyPossiblyCloned { f }.render())
        }
        "mfa_required" => {
            ("An account you belong to now requires two-factor authentication", MfaRequired { f }.render())
        }
        _ => ("A change to your account", Other { f }.render()),
    };
    let text = text.unwrap_or_else(|e| {
        tracing::error!(kind, error = %e, "mail template failed");
        "There was a change to your account. Sign in to see it.".to_owned()
    });
    (subject.to_owned(), text)
}

/// A paragraph of the HTML part.
struct Para<'a> {
    text: &'a str,
    link: bool,
    code: bool,
}

#[derive(Template)]
#[template(path = "mail/message.html")]
struct Html<'a> {
    paragraphs: Vec<Para<'a>>,
}

/// The HTML part of a message: its text's paragraphs, escaped, with its link (if any) as the
/// one anchor and its code (if any) set apart.
pub(crate) fn html(text: &str, link: Option<&str>, code: Option<&str>) -> String {
    let paragraphs = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| Para { text: p, link: link == Some(p), code: code == Some(p) })
        .collect();
    Html { paragraphs }.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "mail HTML template failed");
        String::new()
    })
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

/// A name someone chose (an account's, a device's) as a message may quote it: kept only when it
/// looks like a name (letters, digits, spaces and `.,'&()_-`, at most 64 characters, no link or
/// address), else `fallback`, so nobody can plant a link or a sentence in a real message of ours
/// to someone else.
fn quoted_name(d: &serde_json::Value, key: &str, fallback: &str) -> String {
    let name = d.get(key).and_then(|v| v.as_str()).unwrap_or_default().trim();
    let lower = name.to_lowercase();
    let plain = !name.is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| c.is_alphanumeric() || " .,'&()_-".contains(c))
        && !lower.contains("www.")
        && !lower.contains("http");
    if plain { name.to_owned() } else { fallback.to_owned() }
}

/// When something happened, as a message says it: "on 2 December 2026 at 14:05 UTC".
fn quoted_when(d: &serde_json::Value) -> String {
    d.get("at")
        .and_then(serde_json::Value::as_i64)
        .and_then(date_time)
        .map_or_else(|| "recently".to_owned(), |t| format!("on {t}"))
}

/// "2 December 2026 at 14:05 UTC".
fn date_time(unix: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).ok()?;
    Some(format!("{} {} {} at {:02}:{:02} UTC", t.day(), t.month(), t.year(), t.hour(), t.minute()))
}

#[cfg(test)]
mod tests {
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

#[cfg(test)]
mod rendering {
    use super::*;

    #[test]
    fn every_kind_renders_its_facts_and_the_html_escapes_them() {
        let d = serde_json::json!({ "at": 1_796_083_200, "ip": "203.0.113.7", "user_agent": "suite/1.0",
                                    "left": 2, "account": "Acme & Co", "grace_until": 1_796_688_000 });
        let (subject, text) = render("recovery_code_used", &d.to_string(), None);
        assert_eq!(subject, "A recovery code was used to sign in to your account");
        assert!(text.contains("on 1 December 2026 at 00:00 UTC from 203.0.113.7 (suite/1.0)"), "{text}");
        assert!(text.contains("You have 2 recovery codes left: create new ones"), "{text}");
        let (_, text) = render("mfa_required", &d.to_string(), None);
        assert!(text.contains("\"Acme & Co\"") && text.contains("Until 8 December 2026 at 00:00 UTC"), "{text}");
        let page = html(&text, None, None);
        assert!(page.contains("Acme &#38; Co") && !page.contains("Acme & Co"), "{page}");
        // A name that is a link, an address or markup is not quoted.
        for name in ["Pay at https://evil.example", "www.evil.example", "<b>Acme</b>", "help@evil.example"] {
            let d = serde_json::json!({ "account": name });
            assert!(render("mfa_required", &d.to_string(), None).1.contains("\"an account\""), "{name}");
        }
        let link = "http://localhost:8080/verify-email?token=abc";
        let (_, text) = render("verify_email", &d.to_string(), Some(link));
        assert!(html(&text, Some(link), None).contains(&format!("<a href=\"{link}\">")));
        let (_, text) = render("invitation", &d.to_string(), Some("ABCD-EFGH-JKMN-PQRS"));
        assert!(text.contains("\n    ABCD-EFGH-JKMN-PQRS\n"), "{text}");
        // A kind this version does not know still says something, and nothing it was not given.
        assert_eq!(render("from_the_future", "{}", None).0, "A change to your account");
    }
}
