//! Configuration: flags and `TESSERA_*` environment variables (read by the binary) over a
//! TOML file over secure defaults.

use crate::ServerError;
use crate::listen::HttpLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The TOML file, and also the shape of what flags and environment give (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Data directory (SQLite database, keyring, service token).
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: Option<String>,
    /// Keyring file.
    pub keyring_file: Option<PathBuf>,
    /// HTTP listen address.
    pub http_addr: Option<SocketAddr>,
    /// Open HTTP connections at most (default 1024); more wait until one closes.
    pub http_max_connections: Option<u32>,
    /// gRPC listen address.
    pub grpc_addr: Option<SocketAddr>,
    /// Admin HTTP listen address (`/metrics`, `/healthz`, `/readyz`).
    pub admin_addr: Option<SocketAddr>,
    /// Issuer shown in authenticator apps.
    pub issuer: Option<String>,
    /// SHA-256 (hex) of each accepted service token.
    pub service_token_hashes: Option<Vec<String>>,
    /// SHA-256 (hex) of each support-scoped token (may call SupportResetMfa).
    pub support_token_hashes: Option<Vec<String>>,
    /// Database pool size.
    pub db_max_connections: Option<u32>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// Breached-password check: `online` (default), `offline` or `off`.
    pub pwned_mode: Option<String>,
    /// Range API base URL (default `https://api.pwnedpasswords.com`).
    pub pwned_url: Option<String>,
    /// Range directory for `offline`.
    pub pwned_dir: Option<PathBuf>,
    /// `open` (default: allow and log when the check cannot answer) or `closed` (refuse).
    pub pwned_failure: Option<String>,
    /// Refuse passwords seen in at least this many breaches (default 1).
    pub pwned_threshold: Option<u64>,
    /// SMTP relay for notifications (`smtp://host:port`, `smtps://…`); none: notices stay queued.
    pub smtp_url: Option<String>,
    /// Sender address of notifications.
    pub smtp_from: Option<String>,
    /// POSTs to the sign-up, login, code and re-authentication pages per client per minute
    /// (default 20; 0: off).
    pub web_rate_limit_per_minute: Option<u32>,
    /// Every other POST of the pages, per client per minute (default 60; 0: off).
    pub web_post_rate_limit_per_minute: Option<u32>,
    /// Reverse proxies (CIDRs or addresses) whose `X-Forwarded-For` is believed; default none:
    /// the client address is the socket's peer.
    pub trusted_proxies: Option<Vec<String>>,
    /// PEM certificate chain for gRPC over TLS (with `grpc_tls_key`).
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for gRPC over TLS.
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): when set, every gRPC client must present a certificate signed by
    /// one of them (mTLS), in addition to its service token.
    pub grpc_client_ca: Option<PathBuf>,
    /// Sensitive actions need a factor proven this recently (`15m`; units s, m, h, d).
    pub reauth_window: Option<String>,
    /// A session unused this long ends (`30m`).
    pub session_idle_timeout: Option<String>,
    /// A session ends this long after sign-in at the latest (`12h`).
    pub session_lifetime: Option<String>,
}

impl ConfigFile {
    /// Read a TOML file.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    }

    /// Keys set here win over `other`'s.
    pub fn or(self, other: Self) -> Self {
        Self {
            data_dir: self.data_dir.or(other.data_dir),
            database_url: self.database_url.or(other.database_url),
            keyring_file: self.keyring_file.or(other.keyring_file),
            http_addr: self.http_addr.or(other.http_addr),
            http_max_connections: self.http_max_connections.or(other.http_max_connections),
            grpc_addr: self.grpc_addr.or(other.grpc_addr),
            admin_addr: self.admin_addr.or(other.admin_addr),
            issuer: self.issuer.or(other.issuer),
            service_token_hashes: self.service_token_hashes.or(other.service_token_hashes),
            support_token_hashes: self.support_token_hashes.or(other.support_token_hashes),
            db_max_connections: self.db_max_connections.or(other.db_max_connections),
            log_format: self.log_format.or(other.log_format),
            pwned_mode: self.pwned_mode.or(other.pwned_mode),
            pwned_url: self.pwned_url.or(other.pwned_url),
            pwned_dir: self.pwned_dir.or(other.pwned_dir),
            pwned_failure: self.pwned_failure.or(other.pwned_failure),
            pwned_threshold: self.pwned_threshold.or(other.pwned_threshold),
            smtp_url: self.smtp_url.or(other.smtp_url),
            smtp_from: self.smtp_from.or(other.smtp_from),
            web_rate_limit_per_minute: self.web_rate_limit_per_minute.or(other.web_rate_limit_per_minute),
            web_post_rate_limit_per_minute: self
                .web_post_rate_limit_per_minute
                .or(other.web_post_rate_limit_per_minute),
            trusted_proxies: self.trusted_proxies.or(other.trusted_proxies),
            grpc_tls_cert: self.grpc_tls_cert.or(other.grpc_tls_cert),
            grpc_tls_key: self.grpc_tls_key.or(other.grpc_tls_key),
            grpc_client_ca: self.grpc_client_ca.or(other.grpc_client_ca),
            reauth_window: self.reauth_window.or(other.reauth_window),
            session_idle_timeout: self.session_idle_timeout.or(other.session_idle_timeout),
            session_lifetime: self.session_lifetime.or(other.session_lifetime),
        }
    }
}

/// Where accepted service tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// One token given directly (`TESSERA_SERVICE_TOKEN`).
    Token(String),
    /// SHA-256 hashes from the config file.
    Hashes(Vec<[u8; 32]>),
    /// A token file, created (0600) on first start.
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token([REDACTED])"),
            Self::Hashes(h) => write!(f, "Hashes({} hashes)", h.len()),
            Self::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Keyring file.
    pub keyring_file: PathBuf,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// The HTTP listener's connection cap and header-read timeout (10 s; tests shorten it).
    pub http: HttpLimits,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP listen address.
    pub admin_addr: SocketAddr,
    /// Issuer in otpauth URIs.
    pub issuer: String,
    /// Service tokens.
    pub tokens: TokenSource,
    /// Support-scoped token hashes (none by default: support resets then run from the CLI).
    pub support_tokens: Vec<[u8; 32]>,
    /// Pool size.
    pub db_max_connections: u32,
    /// JSON logs.
    pub log_json: bool,
    /// The breached-password check.
    pub pwned: tessera_app::PwnedConfig,
    /// SMTP relay URL and sender, when notifications are delivered.
    pub smtp: Option<(String, String)>,
    /// The web pages' settings.
    pub web: tessera_web::WebConfig,
    /// gRPC over TLS, with client certificates when a client CA is set.
    pub grpc_tls: Option<GrpcTls>,
    /// Session lifetime, idle timeout and the re-authentication window.
    pub sessions: tessera_core::session::SessionPolicy,
}

/// Files of the gRPC listener's TLS.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to (mTLS), if any.
    pub client_ca: Option<PathBuf>,
}

impl ServerConfig {
    /// Resolve: `given` (flags and environment, already merged over the file) over defaults.
    /// `service_token` is `TESSERA_SERVICE_TOKEN`, which wins over configured hashes.
    pub fn resolve(given: ConfigFile, service_token: Option<String>) -> Result<Self, ServerError> {
        Self::resolve_with_support(given, service_token, None)
    }

    /// As [`ServerConfig::resolve`], with `TESSERA_SUPPORT_TOKEN` (which wins over configured
    /// support hashes).
    pub fn resolve_with_support(
        given: ConfigFile,
        service_token: Option<String>,
        support_token: Option<String>,
    ) -> Result<Self, ServerError> {
        let support_tokens = match (support_token.filter(|t| !t.is_empty()), &given.support_token_hashes) {
            (Some(t), _) if t.len() < 16 => {
                return Err(ServerError::Config("TESSERA_SUPPORT_TOKEN must be at least 16 characters".into()));
            }
            (Some(t), _) => vec![tessera_grpc::hash_token(&t)],
            (None, Some(h)) => parse_hashes(h, "support_token_hashes")?,
            (None, None) => Vec::new(),
        };
        let data_dir = given.data_dir.unwrap_or_else(|| PathBuf::from("./tessera-data"));
        let tokens = match (service_token.filter(|t| !t.is_empty()), given.service_token_hashes) {
            (Some(t), _) => {
                if t.len() < 16 {
                    return Err(ServerError::Config("TESSERA_SERVICE_TOKEN must be at least 16 characters".into()));
                }
                TokenSource::Token(t)
            }
            (None, Some(h)) if !h.is_empty() => TokenSource::Hashes(parse_hashes(&h, "service_token_hashes")?),
            _ => TokenSource::File(data_dir.join("service-token")),
        };
        let log_json = match given.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(ServerError::Config(format!("log_format {other:?} must be text or json"))),
        };
        let pwned_source = match given.pwned_mode.as_deref().unwrap_or("online") {
            "online" => tessera_app::PwnedSource::Online {
                base_url: given.pwned_url.clone().unwrap_or_else(|| "https://api.pwnedpasswords.com".into()),
                timeout: std::time::Duration::from_secs(3),
            },
            "offline" => tessera_app::PwnedSource::Offline {
                dir: given
                    .pwned_dir
                    .clone()
                    .ok_or_else(|| ServerError::Config("pwned_mode = offline needs pwned_dir".into()))?,
            },
            "off" => tessera_app::PwnedSource::Off,
            other => return Err(ServerError::Config(format!("pwned_mode {other:?} must be online, offline or off"))),
        };
        let pwned_failure = match given.pwned_failure.as_deref().unwrap_or("open") {
            "open" => tessera_app::FailureMode::Open,
            "closed" => tessera_app::FailureMode::Closed,
            other => return Err(ServerError::Config(format!("pwned_failure {other:?} must be open or closed"))),
        };
        let pwned = tessera_app::PwnedConfig {
            source: pwned_source,
            threshold: given.pwned_threshold.unwrap_or(1).max(1),
            failure: pwned_failure,
        };
        let smtp = given
            .smtp_url
            .clone()
            .map(|u| (u, given.smtp_from.clone().unwrap_or_else(|| "Tessera <no-reply@localhost>".into())));
        let web = tessera_web::WebConfig {
            rate_limit_per_minute: given.web_rate_limit_per_minute.unwrap_or(20),
            post_rate_limit_per_minute: given.web_post_rate_limit_per_minute.unwrap_or(60),
            trusted_proxies: tessera_web::TrustedProxies::parse(given.trusted_proxies.as_deref().unwrap_or_default())
                .map_err(|e| ServerError::Config(format!("trusted_proxies: {e}")))?,
        };
        let grpc_tls = match (given.grpc_tls_cert.clone(), given.grpc_tls_key.clone(), given.grpc_client_ca.clone()) {
            (Some(cert), Some(key), client_ca) => Some(GrpcTls { cert, key, client_ca }),
            (None, None, None) => None,
            (None, None, Some(_)) => {
                return Err(ServerError::Config(
                    "grpc_client_ca (mTLS) needs grpc_tls_cert and grpc_tls_key for the server's own certificate"
                        .into(),
                ));
            }
            _ => return Err(ServerError::Config("grpc_tls_cert and grpc_tls_key go together".into())),
        };
        let defaults = tessera_core::session::SessionPolicy::default();
        let dur = |v: &Option<String>, key: &str, default: time::Duration| {
            v.as_deref().map_or(Ok(default), |v| parse_duration(v, key))
        };
        let sessions = tessera_core::session::SessionPolicy {
            reauth_window: dur(&given.reauth_window, "reauth_window", defaults.reauth_window)?,
            idle_timeout: dur(&given.session_idle_timeout, "session_idle_timeout", defaults.idle_timeout)?,
            lifetime: dur(&given.session_lifetime, "session_lifetime", defaults.lifetime)?,
            ..defaults
        };
        if sessions.idle_timeout < time::Duration::minutes(2) || sessions.lifetime < sessions.idle_timeout {
            return Err(ServerError::Config(
                "session_idle_timeout must be at least 2m, and session_lifetime at least the idle timeout".into(),
            ));
        }
        if sessions.reauth_window < time::Duration::minutes(1) || sessions.reauth_window > time::Duration::hours(12) {
            return Err(ServerError::Config("reauth_window must be between 1m and 12h".into()));
        }
        let http = HttpLimits {
            max_connections: match given.http_max_connections {
                None => HttpLimits::default().max_connections,
                Some(0) => return Err(ServerError::Config("http_max_connections must be at least 1".into())),
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            },
            ..HttpLimits::default()
        };
        Ok(Self {
            sessions,
            http,
            grpc_tls,
            web,
            smtp,
            pwned,
            database_url: given
                .database_url
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("tessera.db").display())),
            keyring_file: given.keyring_file.unwrap_or_else(|| data_dir.join("keyring")),
            http_addr: given.http_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            grpc_addr: given.grpc_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
            admin_addr: given.admin_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
            issuer: given.issuer.unwrap_or_else(|| "Tessera".into()),
            db_max_connections: given.db_max_connections.unwrap_or(16).clamp(1, 1000),
            tokens,
            support_tokens,
            log_json,
            data_dir,
        })
    }
}

/// A duration like `90s`, `15m`, `12h` or `7d` (a bare number is seconds).
pub fn parse_duration(v: &str, key: &str) -> Result<time::Duration, ServerError> {
    let v = v.trim();
    let (n, unit) = v.find(|c: char| !c.is_ascii_digit()).map_or((v, "s"), |i| v.split_at(i));
    let bad = || ServerError::Config(format!("{key}: {v:?} is not a duration like 90s, 15m, 12h or 7d"));
    let n: i64 = n.parse().map_err(|_| bad())?;
    match unit {
        "s" => Ok(time::Duration::seconds(n)),
        "m" => Ok(time::Duration::minutes(n)),
        "h" => Ok(time::Duration::hours(n)),
        "d" => Ok(time::Duration::days(n)),
        _ => Err(bad()),
    }
}

fn parse_hashes(h: &[String], key: &str) -> Result<Vec<[u8; 32]>, ServerError> {
    h.iter()
        .map(|x| {
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(x.trim().as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| ServerError::Config(format!("{key}: each must be 64 hex digits (SHA-256)")))
        })
        .collect()
}

/// A database URL with any password removed, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = url.get(s + 3..at).unwrap_or("");
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", url.get(..s + 3).unwrap_or(""), url.get(at..).unwrap_or(""))
        }
        _ => url.to_owned(),
    }
}

#[cfg(unix)]
fn private_file_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true).mode(0o600);
    o
}

#[cfg(not(unix))]
fn private_file_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    o
}

/// The accepted token hashes, and a line for the start-up summary (never a token).
pub(crate) fn service_tokens(cfg: &ServerConfig) -> Result<(Vec<[u8; 32]>, String), ServerError> {
    match &cfg.tokens {
        TokenSource::Token(t) => {
            Ok((vec![tessera_grpc::hash_token(t)], "service token: from TESSERA_SERVICE_TOKEN".into()))
        }
        TokenSource::Hashes(h) => Ok((h.clone(), format!("service tokens: {} hashes from the config file", h.len()))),
        TokenSource::File(path) => {
            let created = if path.exists() {
                false
            } else {
                use std::io::Write;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let raw = tessera_core::random::bytes::<32>().map_err(|e| ServerError::Config(e.to_string()))?;
                let token = format!("tsk_{}", data_encoding::BASE64URL_NOPAD.encode(&raw));
                let mut f = private_file_options().open(path)?;
                f.write_all(format!("{token}\n").as_bytes())?;
                f.sync_all()?;
                true
            };
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(ServerError::Config(format!(
                        "{} has mode {:o}: group and others must have no access; run `chmod 600 {}`",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    )));
                }
            }
            let token = std::fs::read_to_string(path)?;
            let token = token.trim();
            if token.len() < 16 {
                return Err(ServerError::Config(format!("{} holds no usable token", path.display())));
            }
            if created {
                tracing::warn!(path = %path.display(), "created a service token; callers send it as `authorization: Bearer <token>`");
            }
            Ok((
                vec![tessera_grpc::hash_token(token)],
                format!("service token: {}{}", path.display(), if created { " (created)" } else { "" }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_tls_settings_go_together() {
        let p = |s: &str| Some(PathBuf::from(s));
        let ok = ConfigFile { grpc_tls_cert: p("c.pem"), grpc_tls_key: p("k.pem"), ..Default::default() };
        let t = ServerConfig::resolve(ok, None).unwrap().grpc_tls.unwrap();
        assert_eq!((t.cert, t.key, t.client_ca), (PathBuf::from("c.pem"), PathBuf::from("k.pem"), None));
        assert!(ServerConfig::resolve(ConfigFile::default(), None).unwrap().grpc_tls.is_none());
        for bad in [
            ConfigFile { grpc_tls_cert: p("c.pem"), ..Default::default() },
            ConfigFile { grpc_tls_key: p("k.pem"), ..Default::default() },
            ConfigFile { grpc_client_ca: p("ca.pem"), ..Default::default() },
        ] {
            let e = ServerConfig::resolve(bad, None).unwrap_err().to_string();
            assert!(e.contains("grpc_tls_cert"), "{e}");
        }
    }

    #[test]
    fn defaults_and_precedence() {
        let c = ServerConfig::resolve(ConfigFile::default(), None).unwrap();
        assert_eq!(c.database_url, "sqlite://./tessera-data/tessera.db");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.admin_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.http.max_connections, 1024);
        assert_eq!(c.http.header_read_timeout, std::time::Duration::from_secs(10));
        assert!(matches!(c.tokens, TokenSource::File(ref p) if p.ends_with("service-token")));
        let file: ConfigFile = toml::from_str(
            "http_addr = \"127.0.0.1:9000\"\nissuer = \"ACME\"\nservice_token_hashes = [\"8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92\"]",
        )
        .unwrap();
        let flags = ConfigFile { issuer: Some("Flag".into()), ..Default::default() };
        let c = ServerConfig::resolve(flags.or(file), None).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(c.issuer, "Flag");
        assert!(matches!(c.tokens, TokenSource::Hashes(ref h) if h.len() == 1));
        let c = ServerConfig::resolve(ConfigFile::default(), Some("a-long-enough-token".into())).unwrap();
        assert!(matches!(c.tokens, TokenSource::Token(_)));
        assert!(!format!("{c:?}").contains("a-long-enough-token"));
        assert!(ServerConfig::resolve(ConfigFile::default(), Some("short".into())).is_err());
        assert!(toml::from_str::<ConfigFile>("unknown_key = 1").is_err());
        let file: ConfigFile = toml::from_str("http_max_connections = 2").unwrap();
        assert_eq!(ServerConfig::resolve(file, None).unwrap().http.max_connections, 2);
        let zero = ConfigFile { http_max_connections: Some(0), ..Default::default() };
        assert!(ServerConfig::resolve(zero, None).is_err());
        assert!(c.web.trusted_proxies.nets().is_empty(), "no proxy is trusted by default");
        assert_eq!((c.web.rate_limit_per_minute, c.web.post_rate_limit_per_minute), (20, 60));
        let file: ConfigFile = toml::from_str("trusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]").unwrap();
        let nets = ServerConfig::resolve(file, None).unwrap().web.trusted_proxies.nets().len();
        assert_eq!(nets, 2);
        let bad = ConfigFile { trusted_proxies: Some(vec!["10.0.0.0/40".into()]), ..Default::default() };
        assert!(ServerConfig::resolve(bad, None).unwrap_err().to_string().contains("trusted_proxies"));
        assert!(toml::from_str::<ConfigFile>("trust_forwarded_for = true").is_err(), "the old key is gone");
        let bad = ConfigFile { service_token_hashes: Some(vec!["xyz".into()]), ..Default::default() };
        assert!(ServerConfig::resolve(bad, None).is_err());
    }

    #[test]
    fn service_token_file_is_private_and_refused_when_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tessera-token-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let given = ConfigFile { data_dir: Some(dir.clone()), ..Default::default() };
        let cfg = ServerConfig::resolve(given, None).unwrap();
        let (first, summary) = service_tokens(&cfg).unwrap();
        assert!(summary.contains("(created)"));
        let path = dir.join("service-token");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(!summary.contains(token.trim()), "the token itself is never in the summary");
        let (again, _) = service_tokens(&cfg).unwrap();
        assert_eq!(first, again, "the same token on the next start");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = service_tokens(&cfg).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn session_durations() {
        assert_eq!(parse_duration("15m", "k").unwrap(), time::Duration::minutes(15));
        assert_eq!(parse_duration("90", "k").unwrap(), time::Duration::seconds(90));
        assert_eq!(parse_duration("12h", "k").unwrap(), time::Duration::hours(12));
        assert!(parse_duration("15 minutes", "k").is_err());
        assert!(parse_duration("m", "k").is_err());
        let c = ServerConfig::resolve(ConfigFile::default(), None).unwrap();
        assert_eq!(c.sessions.reauth_window, time::Duration::minutes(15));
        assert_eq!(c.sessions.idle_timeout, time::Duration::minutes(30));
        assert_eq!(c.sessions.lifetime, time::Duration::hours(12));
        let given = ConfigFile { reauth_window: Some("5m".into()), ..Default::default() };
        assert_eq!(ServerConfig::resolve(given, None).unwrap().sessions.reauth_window, time::Duration::minutes(5));
        let bad = ConfigFile { session_idle_timeout: Some("13h".into()), ..Default::default() };
        assert!(ServerConfig::resolve(bad, None).is_err(), "idle longer than the lifetime");
    }

    #[test]
    fn redacts() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }
}
