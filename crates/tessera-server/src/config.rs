//! Configuration: one declaration, [`ConfigFile`], read from flags and `TESSERA_*` environment
//! variables (clap) and from a TOML file (serde), merged key by key (flags and environment win),
//! then resolved over secure defaults into [`ServerConfig`].

use crate::ServerError;
use crate::listen::HttpLimits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every setting of `tessera serve`, each optional: the TOML file's keys, and (through clap) the
/// flags and `TESSERA_*` variables. The doc comments are the `--help` text.
#[derive(Debug, Clone, Default, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Data directory (SQLite database, keyring, service token) [default: ./tessera-data].
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…` [default: SQLite in the data directory].
    #[arg(skip)]
    pub database_url: Option<String>,
    /// Keyring file [default: DATA_DIR/keyring].
    #[arg(skip)]
    pub keyring_file: Option<PathBuf>,
    /// HTTP address for the web pages, /healthz, /readyz [default: 127.0.0.1:8080].
    #[arg(long, env = "TESSERA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Open HTTP connections at most; more wait to be accepted until one closes [default: 1024].
    #[arg(long, env = "TESSERA_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<u32>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, env = "TESSERA_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Admin HTTP address for /metrics, /healthz, /readyz; keep it off the public network
    /// [default: 127.0.0.1:9090].
    #[arg(long, env = "TESSERA_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Issuer shown in authenticator apps [default: Tessera].
    #[arg(long, env = "TESSERA_ISSUER")]
    pub issuer: Option<String>,
    /// SHA-256 (hex) of each accepted service token (file only; `TESSERA_SERVICE_TOKEN` wins).
    #[arg(skip)]
    pub service_token_hashes: Option<Vec<String>>,
    /// SHA-256 (hex) of each support-scoped token, which may call SupportResetMfa (file only;
    /// `TESSERA_SUPPORT_TOKEN` wins).
    #[arg(skip)]
    pub support_token_hashes: Option<Vec<String>>,
    /// Database pool size [default: 16].
    #[arg(long, env = "TESSERA_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// PostgreSQL: subjects whose sealed TOTP devices each replica keeps in memory for
    /// verifications; 0 keeps none [default: 10000].
    #[arg(long, env = "TESSERA_DEVICE_CACHE")]
    pub device_cache: Option<usize>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "TESSERA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Breached-password check: online, offline or off [default: online].
    #[arg(long, env = "TESSERA_PWNED_MODE")]
    pub pwned_mode: Option<String>,
    /// Range API base URL [default: <https://api.pwnedpasswords.com>].
    #[arg(long, env = "TESSERA_PWNED_URL")]
    pub pwned_url: Option<String>,
    /// Range directory for --pwned-mode offline.
    #[arg(long, env = "TESSERA_PWNED_DIR")]
    pub pwned_dir: Option<PathBuf>,
    /// When the check cannot answer: open (allow, log) or closed (refuse) [default: open].
    #[arg(long, env = "TESSERA_PWNED_FAILURE")]
    pub pwned_failure: Option<String>,
    /// Refuse passwords seen in at least this many breaches [default: 1].
    #[arg(long, env = "TESSERA_PWNED_THRESHOLD")]
    pub pwned_threshold: Option<u64>,
    /// The base of every absolute URL Tessera writes (links in mail), e.g.
    /// `https://mfa.example.com`; never taken from a request's Host [default:
    /// `http://localhost:PORT`, the port of --http-addr].
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Who may create an account: `open` (anyone, with a confirmed address) or `closed` (only
    /// an address with an open invitation) [default: open].
    #[arg(long, env = "TESSERA_SIGNUP")]
    pub signup: Option<String>,
    /// SMTP relay for mail, e.g. smtp://127.0.0.1:25 or smtps://user:pass@host:465 [default:
    /// none; each message is written to DATA_DIR/mail/ as an .eml file].
    #[arg(long, env = "TESSERA_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of notifications (default: `Tessera <no-reply@localhost>`).
    #[arg(long, env = "TESSERA_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// POSTs to the sign-up, login, code and re-authentication pages per client per minute;
    /// 0 turns it off [default: 20].
    #[arg(long, env = "TESSERA_WEB_RATE_LIMIT_PER_MINUTE")]
    pub web_rate_limit_per_minute: Option<u32>,
    /// Every other POST of the pages per client per minute, a budget of its own; 0 turns it
    /// off [default: 60].
    #[arg(long, env = "TESSERA_WEB_POST_RATE_LIMIT_PER_MINUTE")]
    pub web_post_rate_limit_per_minute: Option<u32>,
    /// Reverse proxies in front of the pages, as CIDRs or addresses (comma-separated): a request
    /// from one has its client address taken from X-Forwarded-For, walked from the right past
    /// trusted proxies [default: none; the client address is the socket's peer].
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Forward auth: the domains whose apps a sign-in may return to (the `rd` of `/login`, from
    /// a reverse proxy's `/auth/check`), comma-separated; each covers its subdomains. https only,
    /// but on loopback [default: none; sign-ins return to Tessera's own pages only].
    #[arg(long, env = "TESSERA_FORWARD_AUTH_DOMAIN", value_delimiter = ',')]
    pub forward_auth_domain: Option<Vec<String>>,
    /// Forward auth across subdomains: also set a domain-wide cookie for this domain
    /// (`__Secure-tessera_fwd`, accepted by `/auth/check` only), so apps on its other hosts
    /// share the sign-in. Needs an https --public-url on a host of this domain [default: none].
    #[arg(long, env = "TESSERA_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,
    /// Serve gRPC over TLS with this PEM certificate chain (with --grpc-tls-key).
    #[arg(long, env = "TESSERA_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// The PEM private key of --grpc-tls-cert.
    #[arg(long, env = "TESSERA_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// Require gRPC clients to present a certificate signed by this PEM CA (mTLS), in addition
    /// to their service token.
    #[arg(long, env = "TESSERA_GRPC_CLIENT_CA")]
    pub grpc_client_ca: Option<PathBuf>,
    /// Sensitive actions (factors, recovery codes, other sessions, account changes) need a
    /// factor (or, without one, the password) proven this recently; units s, m, h, d
    /// [default: 15m].
    #[arg(long, env = "TESSERA_REAUTH_WINDOW")]
    pub reauth_window: Option<String>,
    /// A session unused this long ends [default: 30m].
    #[arg(long, env = "TESSERA_SESSION_IDLE_TIMEOUT")]
    pub session_idle_timeout: Option<String>,
    /// A session ends this long after sign-in at the latest [default: 12h].
    #[arg(long, env = "TESSERA_SESSION_LIFETIME")]
    pub session_lifetime: Option<String>,
    /// How often to check the keyring file for a rotation (SIGHUP checks at once) [default: 5s].
    #[arg(long, env = "TESSERA_KEYRING_CHECK_INTERVAL")]
    pub keyring_check_interval: Option<String>,
}

impl ConfigFile {
    /// Read a TOML file (unknown keys are refused, so a typo is not silently ignored).
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    }

    /// Keys set here win over `other`'s: merged key by key through their serde form, so a new
    /// setting needs no merge code.
    pub fn or(self, other: Self) -> Result<Self, ServerError> {
        let bad = |e: serde_json::Error| ServerError::Config(format!("settings: {e}"));
        let serde_json::Value::Object(mut merged) = serde_json::to_value(other).map_err(bad)? else {
            return Err(ServerError::Config("settings: not a table".into()));
        };
        if let serde_json::Value::Object(mine) = serde_json::to_value(self).map_err(bad)? {
            merged.extend(mine.into_iter().filter(|(_, v)| !v.is_null()));
        }
        serde_json::from_value(serde_json::Value::Object(merged)).map_err(bad)
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
    /// PostgreSQL's device cache, in subjects.
    pub device_cache: usize,
    /// JSON logs.
    pub log_json: bool,
    /// The breached-password check.
    pub pwned: tessera_app::PwnedConfig,
    /// SMTP relay URL and sender, when notifications are delivered.
    pub smtp: Option<(String, String)>,
    /// Sender of mail.
    pub mail_from: String,
    /// The base of absolute URLs (links in mail), without a trailing slash.
    pub public_url: String,
    /// Anyone may sign up (`true`), or only invited addresses.
    pub signup_open: bool,
    /// The web pages' settings.
    pub web: tessera_web::WebConfig,
    /// gRPC over TLS, with client certificates when a client CA is set.
    pub grpc_tls: Option<GrpcTls>,
    /// Session lifetime, idle timeout and the re-authentication window.
    pub sessions: tessera_core::session::SessionPolicy,
    /// How often the keyring file is checked for a rotation.
    pub keyring_check_interval: std::time::Duration,
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
        let mail_from = given.smtp_from.clone().unwrap_or_else(|| "Tessera <no-reply@localhost>".into());
        let smtp = given.smtp_url.clone().map(|u| (u, mail_from.clone()));
        let http_addr = given.http_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let public_url = match &given.public_url {
            Some(u) => public_url(u)?,
            None => format!("http://localhost:{}", http_addr.port()),
        };
        let signup_open = match given.signup.as_deref().map(str::trim) {
            None | Some("open") => true,
            Some("closed") => false,
            Some(other) => {
                return Err(ServerError::Config(format!("signup {other:?}: must be \"open\" or \"closed\"")));
            }
        };
        let forward_domains =
            tessera_core::redirect::ForwardDomains::parse(given.forward_auth_domain.as_deref().unwrap_or_default())
                .map_err(|e| ServerError::Config(format!("forward_auth_domain: {e}")))?;
        let cookie_domain = match given.cookie_domain.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => Some(cookie_domain(d, &public_url)?),
            None => None,
        };
        let web = tessera_web::WebConfig {
            rate_limit_per_minute: given.web_rate_limit_per_minute.unwrap_or(20),
            post_rate_limit_per_minute: given.web_post_rate_limit_per_minute.unwrap_or(60),
            trusted_proxies: tessera_web::TrustedProxies::parse(given.trusted_proxies.as_deref().unwrap_or_default())
                .map_err(|e| ServerError::Config(format!("trusted_proxies: {e}")))?,
            forward_domains,
            cookie_domain,
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
        let keyring_check_interval = match &given.keyring_check_interval {
            None => std::time::Duration::from_secs(5),
            Some(v) => {
                let d = parse_duration(v, "keyring_check_interval")?;
                if d < time::Duration::seconds(1) || d > time::Duration::hours(1) {
                    return Err(ServerError::Config("keyring_check_interval must be between 1s and 1h".into()));
                }
                std::time::Duration::from_secs(d.whole_seconds().unsigned_abs())
            }
        };
        let http = HttpLimits {
            max_connections: match given.http_max_connections {
                None => HttpLimits::default().max_connections,
                Some(0) => return Err(ServerError::Config("http_max_connections must be at least 1".into())),
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            },
            ..HttpLimits::default()
        };
        Ok(Self {
            keyring_check_interval,
            sessions,
            http,
            grpc_tls,
            web,
            smtp,
            mail_from,
            public_url,
            signup_open,
            pwned,
            database_url: given
                .database_url
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("tessera.db").display())),
            keyring_file: given.keyring_file.unwrap_or_else(|| data_dir.join("keyring")),
            http_addr,
            grpc_addr: given.grpc_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
            admin_addr: given.admin_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
            issuer: given.issuer.unwrap_or_else(|| "Tessera".into()),
            db_max_connections: given.db_max_connections.unwrap_or(16).clamp(1, 1000),
            device_cache: given.device_cache.unwrap_or(tessera_store::DEFAULT_DEVICE_CACHE).min(10_000_000),
            tokens,
            support_tokens,
            log_json,
            data_dir,
        })
    }
}

/// A public URL: `http://` or `https://`, a host, maybe a port and a path prefix; no query,
/// fragment, credentials or whitespace. Returned without a trailing slash.
pub fn public_url(v: &str) -> Result<String, ServerError> {
    let bad = |why: &str| ServerError::Config(format!("public_url {v:?}: {why}"));
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("needs a host"));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\' | '"' | '<' | '>')) {
        return Err(bad("no query, fragment, credentials, quotes or spaces"));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

/// `--cookie-domain`: a domain name that the (https) public URL's host is, or is under (a
/// browser refuses a cookie for a domain its page is not on). Returned lower-cased.
pub fn cookie_domain(d: &str, public_url: &str) -> Result<String, ServerError> {
    let bad = |why: &str| ServerError::Config(format!("cookie_domain {d:?}: {why}"));
    let domains = tessera_core::redirect::ForwardDomains::parse(&[d]).map_err(|e| bad(&e))?;
    let Some(name) = domains.names().first().cloned() else { return Err(bad("is empty")) };
    let Some(rest) = public_url.strip_prefix("https://") else {
        return Err(bad("needs an https public_url (the cookie is __Secure-)"));
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default().to_ascii_lowercase();
    if !domains.covers(&host) {
        return Err(bad(&format!("the public URL's host {host:?} is not on this domain")));
    }
    Ok(name)
}

/// Whether a public URL names this machine (`localhost`, `127.x`, `[::1]`): a laptop's
/// deployment, where mail written to files is what its user reads.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split(']').next().map_or(host, |h| &h[1..])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

    #[test]
    fn cookie_domains() {
        assert_eq!(cookie_domain("Example.com", "https://auth.example.com").unwrap(), "example.com");
        assert_eq!(cookie_domain(".example.com", "https://example.com:8443/x").unwrap(), "example.com");
        for (d, url, why) in [
            ("example.com", "http://auth.example.com", "https"),
            ("example.com", "https://auth.example.org", "not on this domain"),
            ("example.com", "https://badexample.com", "not on this domain"),
            ("com", "https://auth.example.com", "top-level"),
        ] {
            let e = cookie_domain(d, url).unwrap_err().to_string();
            assert!(e.contains(why), "{d} {url}: {e}");
        }
    }

    #[test]
    fn public_urls() {
        assert_eq!(public_url("https://mfa.example.com/").unwrap(), "https://mfa.example.com");
        assert_eq!(public_url("http://localhost:8080/auth").unwrap(), "http://localhost:8080/auth");
        for bad in [
            "mfa.example.com",
            "ftp://x",
            "https://",
            "https://:80",
            "https://evil@host",
            "https://h/?a",
            "https://h/#f",
            "javascript:alert(1)",
            "https://h/a b",
            "https://h/\nX-Injected: 1",
        ] {
            assert!(public_url(bad).is_err(), "{bad:?}");
        }
        for (url, local) in [
            ("http://localhost:8080", true),
            ("http://127.0.0.1:1", true),
            ("http://[::1]:8080/x", true),
            ("https://mfa.example.com", false),
            ("http://localhost.example.com", false),
            ("http://10.0.0.1", false),
        ] {
            assert_eq!(is_loopback_url(url), local, "{url}");
        }
    }

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

    /// One declaration: the same struct is the flags (with their `TESSERA_*` names) and the
    /// file's keys, and flags win key by key.
    #[test]
    fn flags_and_file_are_one_declaration() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: ConfigFile,
        }
        let flags = Cli::try_parse_from([
            "tessera",
            "--issuer",
            "Flag",
            "--trusted-proxies",
            "10.0.0.0/8,::1",
            "--keyring-check-interval",
            "2s",
        ])
        .unwrap()
        .c;
        assert_eq!(flags.trusted_proxies.as_deref(), Some(&["10.0.0.0/8".to_owned(), "::1".to_owned()][..]));
        assert!(Cli::try_parse_from(["tessera", "--data-dir", "x"]).is_err(), "global flags live on the CLI");
        let file: ConfigFile =
            toml::from_str("issuer = \"File\"\nhttp_addr = \"127.0.0.1:9000\"\nkeyring_check_interval = \"9s\"")
                .unwrap();
        let merged = flags.or(file).unwrap();
        assert_eq!(merged.issuer.as_deref(), Some("Flag"));
        assert_eq!(merged.http_addr.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9000"));
        let c = ServerConfig::resolve(merged, None).unwrap();
        assert_eq!(c.keyring_check_interval, std::time::Duration::from_secs(2));
        assert!(toml::from_str::<ConfigFile>("isuer = \"typo\"").is_err(), "unknown keys are refused");
        for bad in ["0s", "2h", "soon"] {
            let given = ConfigFile { keyring_check_interval: Some(bad.into()), ..Default::default() };
            let e = ServerConfig::resolve(given, None).unwrap_err().to_string();
            assert!(e.contains("keyring_check_interval"), "{bad}: {e}");
        }
        assert_eq!(
            ServerConfig::resolve(ConfigFile::default(), None).unwrap().keyring_check_interval,
            std::time::Duration::from_secs(5)
        );
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
        let c = ServerConfig::resolve(flags.or(file).unwrap(), None).unwrap();
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
