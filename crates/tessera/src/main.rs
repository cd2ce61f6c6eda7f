//! `tessera`: the command line. Thin: it parses flags, builds the pieces and calls the app.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use tessera_app::{App, AppConfig, KeyringSource, keyfile};
use tessera_core::clock::SystemClock;
use tessera_core::seal::{KeyId, Keyring};
use tessera_server::{ConfigFile, Listeners, ServerConfig, redact};
use tessera_store::{Store, StoreOptions};

/// Tessera: multi-factor authentication as a service.
#[derive(Parser, Debug)]
#[command(name = "tessera", version, about)]
struct Cli {
    /// Data directory: holds the SQLite database, the keyring and the service token by
    /// default [default: ./tessera-data].
    #[arg(long, global = true, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: `sqlite://PATH` or `postgres://…` (default: sqlite in the data directory).
    #[arg(long, global = true, env = "TESSERA_DATABASE_URL")]
    database_url: Option<String>,
    /// Keyring file (default: DATA_DIR/keyring). Point several replicas at one keyring.
    #[arg(long, global = true, env = "TESSERA_KEYRING_FILE")]
    keyring: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the web pages, the gRPC services and the admin endpoints (metrics, health, readiness).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage the keyring that seals TOTP secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Support actions (audited).
    #[command(subcommand)]
    Support(SupportCommand),
}

#[derive(Subcommand, Debug)]
enum SupportCommand {
    /// Remove every factor and recovery code of a user who lost them (after verifying their
    /// identity out of band); revokes their sessions and notifies them.
    ResetMfa {
        /// The user's email.
        #[arg(long)]
        user: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
        /// Support ticket reference.
        #[arg(long)]
        ticket: String,
        /// Who is doing it.
        #[arg(long)]
        actor: String,
    },
    /// Lift the suspension of password sign-in for a user (after 100 failed attempts from
    /// everywhere), after checking who is asking; audited. Factors and sessions are untouched.
    Unlock {
        /// The user's email.
        #[arg(long)]
        user: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
        /// Who is doing it.
        #[arg(long)]
        actor: String,
    },
    /// Sign a user out everywhere (`--user`), or every user (`--all`), e.g. after a leak;
    /// audited. Their factors and passwords are untouched.
    SignOut {
        /// The user's email.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        user: Option<String>,
        /// Every session of every user.
        #[arg(long)]
        all: bool,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
        /// Who is doing it.
        #[arg(long)]
        actor: String,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// HTTP address for the web pages, /healthz, /readyz [default: 127.0.0.1:8080].
    #[arg(long, env = "TESSERA_HTTP_ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Open HTTP connections at most; more wait to be accepted until one closes [default: 1024].
    #[arg(long, env = "TESSERA_HTTP_MAX_CONNECTIONS")]
    http_max_connections: Option<u32>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, env = "TESSERA_GRPC_ADDR")]
    grpc_addr: Option<std::net::SocketAddr>,
    /// Admin HTTP address for /metrics, /healthz, /readyz; keep it off the public network
    /// [default: 127.0.0.1:9090].
    #[arg(long, env = "TESSERA_ADMIN_ADDR")]
    admin_addr: Option<std::net::SocketAddr>,
    /// TOML configuration file (flags and TESSERA_* variables override its keys).
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "TESSERA_LOG_JSON")]
    log_json: bool,
    /// Issuer shown in authenticator apps [default: Tessera].
    #[arg(long, env = "TESSERA_ISSUER")]
    issuer: Option<String>,
    /// Database pool size [default: 16].
    #[arg(long, env = "TESSERA_DB_MAX_CONNECTIONS")]
    db_max_connections: Option<u32>,
    /// Breached-password check: online, offline or off [default: online].
    #[arg(long, env = "TESSERA_PWNED_MODE")]
    pwned_mode: Option<String>,
    /// Range API base URL [default: <https://api.pwnedpasswords.com>].
    #[arg(long, env = "TESSERA_PWNED_URL")]
    pwned_url: Option<String>,
    /// Range directory for --pwned-mode offline.
    #[arg(long, env = "TESSERA_PWNED_DIR")]
    pwned_dir: Option<PathBuf>,
    /// When the check cannot answer: open (allow, log) or closed (refuse) [default: open].
    #[arg(long, env = "TESSERA_PWNED_FAILURE")]
    pwned_failure: Option<String>,
    /// SMTP relay for notifications, e.g. smtp://127.0.0.1:25 or smtps://user:pass@host:465.
    #[arg(long, env = "TESSERA_SMTP_URL")]
    smtp_url: Option<String>,
    /// Sender of notifications.
    #[arg(long, env = "TESSERA_SMTP_FROM")]
    smtp_from: Option<String>,
    /// POSTs to the sign-up, login, code and re-authentication pages per client per minute;
    /// 0 turns it off [default: 20].
    #[arg(long, env = "TESSERA_WEB_RATE_LIMIT_PER_MINUTE")]
    web_rate_limit_per_minute: Option<u32>,
    /// Every other POST of the pages per client per minute, a budget of its own; 0 turns it
    /// off [default: 60].
    #[arg(long, env = "TESSERA_WEB_POST_RATE_LIMIT_PER_MINUTE")]
    web_post_rate_limit_per_minute: Option<u32>,
    /// Reverse proxies in front of the pages, as CIDRs or addresses (comma-separated): a request
    /// from one has its client address taken from X-Forwarded-For, walked from the right past
    /// trusted proxies [default: none; the client address is the socket's peer].
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Serve gRPC over TLS with this PEM certificate chain (with --grpc-tls-key).
    #[arg(long, env = "TESSERA_GRPC_TLS_CERT")]
    grpc_tls_cert: Option<PathBuf>,
    /// The PEM private key of --grpc-tls-cert.
    #[arg(long, env = "TESSERA_GRPC_TLS_KEY")]
    grpc_tls_key: Option<PathBuf>,
    /// Require gRPC clients to present a certificate signed by this PEM CA (mTLS).
    #[arg(long, env = "TESSERA_GRPC_CLIENT_CA")]
    grpc_client_ca: Option<PathBuf>,
    /// Sensitive actions (factors, recovery codes, other sessions, account changes) need a
    /// factor (or, without one, the password) proven this recently [default: 15m].
    #[arg(long, env = "TESSERA_REAUTH_WINDOW")]
    reauth_window: Option<String>,
    /// A session unused this long ends [default: 30m].
    #[arg(long, env = "TESSERA_SESSION_IDLE_TIMEOUT")]
    session_idle_timeout: Option<String>,
    /// A session ends this long after sign-in at the latest [default: 12h].
    #[arg(long, env = "TESSERA_SESSION_LIFETIME")]
    session_lifetime: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a keyring file with one fresh key (refuses to overwrite one).
    Generate,
    /// Add a fresh key and make it current; existing rows keep opening with their old key.
    Rotate,
    /// List keys, which is current, and how many rows use each.
    Status,
    /// Re-seal every TOTP secret under the current key, in batches, while the service runs.
    Reencrypt {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
    /// Remove a key from the keyring; refused while any row uses it.
    Retire {
        /// The key id (see `keys status`).
        key_id: String,
    },
}

impl Cli {
    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("./tessera-data"))
    }
    fn keyring_path(&self) -> PathBuf {
        self.keyring.clone().unwrap_or_else(|| self.data_dir().join("keyring"))
    }
    fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("tessera.db").display()))
    }
    async fn store(&self) -> Result<Store> {
        if self.database_url.is_none() {
            let dir = self.data_dir();
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        let url = self.database_url();
        let store = Store::connect(&url, StoreOptions::default())
            .await
            .with_context(|| format!("cannot open the database ({})", redact(&url)))?;
        store.migrate().await.context("migrations failed")?;
        Ok(store)
    }
    async fn app(&self) -> Result<App> {
        let (keys, _) = KeyringSource::from_file(&self.keyring_path(), false)?;
        Ok(App::new(self.store().await?, keys, Arc::new(SystemClock), AppConfig::default()))
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

async fn serve(cli: &Cli, args: &ServeArgs) -> Result<()> {
    if std::env::var_os("TESSERA_TRUST_FORWARDED_FOR").is_some() {
        bail!(
            "TESSERA_TRUST_FORWARDED_FOR was removed: name the proxies whose X-Forwarded-For to believe \
             with --trusted-proxies / TESSERA_TRUSTED_PROXIES (CIDRs, comma-separated)"
        );
    }
    let given = ConfigFile {
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
        keyring_file: cli.keyring.clone(),
        http_addr: args.http_addr,
        http_max_connections: args.http_max_connections,
        grpc_addr: args.grpc_addr,
        admin_addr: args.admin_addr,
        issuer: args.issuer.clone(),
        service_token_hashes: None,
        support_token_hashes: None,
        db_max_connections: args.db_max_connections,
        log_format: args.log_json.then(|| "json".to_owned()),
        pwned_mode: args.pwned_mode.clone(),
        pwned_url: args.pwned_url.clone(),
        pwned_dir: args.pwned_dir.clone(),
        pwned_failure: args.pwned_failure.clone(),
        pwned_threshold: None,
        smtp_url: args.smtp_url.clone(),
        smtp_from: args.smtp_from.clone(),
        web_rate_limit_per_minute: args.web_rate_limit_per_minute,
        web_post_rate_limit_per_minute: args.web_post_rate_limit_per_minute,
        trusted_proxies: (!args.trusted_proxies.is_empty()).then(|| args.trusted_proxies.clone()),
        grpc_tls_cert: args.grpc_tls_cert.clone(),
        grpc_tls_key: args.grpc_tls_key.clone(),
        grpc_client_ca: args.grpc_client_ca.clone(),
        reauth_window: args.reauth_window.clone(),
        session_idle_timeout: args.session_idle_timeout.clone(),
        session_lifetime: args.session_lifetime.clone(),
    };
    let file = match &args.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let token = std::env::var("TESSERA_SERVICE_TOKEN").ok();
    let support = std::env::var("TESSERA_SUPPORT_TOKEN").ok();
    let cfg = ServerConfig::resolve_with_support(given.or(file), token, support)?;
    init_logs(cfg.log_json);
    let prepared = tessera_server::prepare(&cfg, None).await?;
    let grpc = tokio::net::TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (gRPC)", cfg.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (HTTP)", cfg.http_addr))?;
    let admin = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (admin HTTP)", cfg.admin_addr))?;
    println!("tessera {} serving", env!("CARGO_PKG_VERSION"));
    println!("  gRPC: {} (tessera.v1.FactorService, grpc.health.v1, reflection)", grpc.local_addr()?);
    println!("  HTTP: http://{} (web pages, /healthz, /readyz)", http.local_addr()?);
    println!("  admin: http://{} (/metrics, /healthz, /readyz)", admin.local_addr()?);
    for line in &prepared.summary {
        println!("  {line}");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    tessera_server::run(Listeners { grpc, http, admin }, prepared, tessera_server::shutdown_signal()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Serve(args) = &cli.command {
        return serve(&cli, args).await;
    }
    init_logs(false);
    match &cli.command {
        Command::Serve(_) => {}
        Command::Migrate => {
            cli.store().await?;
            println!("migrations applied to {}", redact(&cli.database_url()));
        }
        Command::Keys(k) => keys(&cli, k).await?,
        Command::Support(SupportCommand::ResetMfa { user, reason, ticket, actor }) => {
            let app = cli.app().await?;
            let ctx = tessera_app::ClientContext { ip: None, user_agent: Some("tessera-cli".into()), browser: None };
            let r = app.support_reset_mfa(user, reason, ticket, actor, &ctx).await?;
            println!(
                "reset MFA of {user}: removed {} factors and {} recovery codes, revoked {} sessions; the user is notified",
                r.factors, r.recovery_codes, r.sessions
            );
        }
        Command::Support(SupportCommand::Unlock { user, reason, actor }) => {
            let app = cli.app().await?;
            let ctx = tessera_app::ClientContext { ip: None, user_agent: Some("tessera-cli".into()), browser: None };
            app.support_unlock(user, reason, actor, &ctx).await?;
            println!("password sign-in for {user} is no longer suspended");
        }
        Command::Support(SupportCommand::SignOut { user, all: _, reason, actor }) => {
            let app = cli.app().await?;
            let ctx = tessera_app::ClientContext { ip: None, user_agent: Some("tessera-cli".into()), browser: None };
            let n = app.support_sign_out(user.as_deref(), reason, actor, &ctx).await?;
            let whom = user.as_deref().unwrap_or("every user");
            println!("signed out {whom}: {n} sessions revoked");
        }
    }
    Ok(())
}

async fn keys(cli: &Cli, cmd: &KeysCommand) -> Result<()> {
    let path = cli.keyring_path();
    match cmd {
        KeysCommand::Generate => {
            if path.exists() {
                bail!("{} already exists; use `tessera keys rotate` to add a key", path.display());
            }
            let k = Keyring::generate()?;
            keyfile::write_file(&path, &k)?;
            println!("created keyring {} with key {}", path.display(), k.current_id());
            eprintln!("BACK UP {} now: without it no enrolled authenticator can be verified.", path.display());
        }
        KeysCommand::Rotate => {
            let mut k = keyfile::read_file(&path)?;
            let old = k.current_id();
            let new = k.rotate()?;
            keyfile::write_file(&path, &k)?;
            println!("added key {new} and made it current (was {old})");
            println!("running services pick it up on their own; then run `tessera keys reencrypt`");
        }
        KeysCommand::Status => {
            let app = cli.app().await?;
            println!("{:<16} {:>8} {:>13} {:>15}  note", "key", "current", "totp_secrets", "recovery_codes");
            for s in app.key_status().await? {
                let note = match (s.in_keyring, s.current, s.usage.totp_secrets + s.usage.recovery_codes) {
                    (false, _, _) => "MISSING from the keyring: these rows cannot be opened",
                    (true, true, _) => "",
                    (true, false, 0) => "unused: can retire",
                    (true, false, _) => "still used",
                };
                println!(
                    "{:<16} {:>8} {:>13} {:>15}  {note}",
                    s.key_id,
                    if s.current { "yes" } else { "" },
                    s.usage.totp_secrets,
                    s.usage.recovery_codes
                );
            }
        }
        KeysCommand::Reencrypt { batch } => {
            let app = cli.app().await?;
            let r = app.reencrypt(*batch).await?;
            println!(
                "re-encrypted {} TOTP secrets under the current key ({} changed meanwhile and were left)",
                r.rewritten, r.skipped
            );
        }
        KeysCommand::Retire { key_id } => {
            let id = KeyId::new(key_id)?;
            if keyfile::read_file(&path)?.current_id() == id {
                bail!("key {id} is the current key; rotate first");
            }
            let app = cli.app().await?;
            if app.key_in_use(id.as_str()).await? {
                bail!(
                    "key {id} is still used by some rows (see `tessera keys status`): run `tessera keys reencrypt`; \
                     recovery codes under it go when users regenerate or use them"
                );
            }
            let mut k = keyfile::read_file(&path)?;
            k.retire(&id)?;
            keyfile::write_file(&path, &k)?;
            println!("retired key {id}");
        }
    }
    Ok(())
}
