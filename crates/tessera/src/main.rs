//! `tessera`: the command line. Thin: it parses flags, builds the pieces and calls the app.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tessera_app::{App, KeyringSource, keyfile};
use tessera_core::seal::{KeyId, Keyring};
use tessera_server::{ConfigFile, Listeners, ServerConfig, redact};
use tessera_store::Store;

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
    /// TOML configuration file (flags and TESSERA_* variables override its keys).
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text (as --log-format json).
    #[arg(long, env = "TESSERA_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    settings: ConfigFile,
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
        /// Refuse while the keyring file changed less than this long ago: every replica must
        /// have swapped the rotated keyring in (longer than any replica's
        /// --keyring-check-interval; `tessera_keyring_current` on /metrics shows each one's key).
        #[arg(long, default_value = "60s")]
        grace: String,
    },
}

impl Cli {
    /// The settings the offline commands share with `serve` (the data directory, database and
    /// keyring flags over the defaults).
    fn config(&self) -> Result<ServerConfig> {
        let given = ConfigFile {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            keyring_file: self.keyring.clone(),
            ..ConfigFile::default()
        };
        Ok(ServerConfig::resolve(given, None)?)
    }
    async fn store(&self) -> Result<Store> {
        let cfg = self.config()?;
        tessera_server::open_store(&cfg)
            .await
            .with_context(|| format!("cannot open the database ({})", redact(&cfg.database_url)))
    }
    async fn app(&self) -> Result<App> {
        Ok(tessera_server::open_app(&self.config()?).await?)
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
    let mut given = ConfigFile {
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
        keyring_file: cli.keyring.clone(),
        ..args.settings.clone()
    };
    if args.log_json {
        given.log_format = Some("json".into());
    }
    let file = match &args.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let token = std::env::var("TESSERA_SERVICE_TOKEN").ok();
    let support = std::env::var("TESSERA_SUPPORT_TOKEN").ok();
    let cfg = ServerConfig::resolve_with_support(given.or(file)?, token, support)?;
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
            println!("migrations applied to {}", redact(&cli.config()?.database_url));
        }
        Command::Keys(k) => keys(&cli, k).await?,
        Command::Support(SupportCommand::ResetMfa { user, reason, ticket, actor }) => {
            let app = cli.app().await?;
            let ctx = tessera_app::ClientContext {
                ip: None,
                user_agent: Some("tessera-cli".into()),
                browser: None,
                trust: None,
            };
            let r = app.support_reset_mfa(user, reason, ticket, actor, &ctx).await?;
            println!(
                "reset MFA of {user}: removed {} factors and {} recovery codes, revoked {} sessions; the user is notified",
                r.factors, r.recovery_codes, r.sessions
            );
        }
        Command::Support(SupportCommand::Unlock { user, reason, actor }) => {
            let app = cli.app().await?;
            let ctx = tessera_app::ClientContext {
                ip: None,
                user_agent: Some("tessera-cli".into()),
                browser: None,
                trust: None,
            };
            app.support_unlock(user, reason, actor, &ctx).await?;
            println!("password sign-in for {user} is no longer suspended");
        }
        Command::Support(SupportCommand::SignOut { user, all: _, reason, actor }) => {
            let app = cli.app().await?;
            let ctx = tessera_app::ClientContext {
                ip: None,
                user_agent: Some("tessera-cli".into()),
                browser: None,
                trust: None,
            };
            let n = app.support_sign_out(user.as_deref(), reason, actor, &ctx).await?;
            let whom = user.as_deref().unwrap_or("every user");
            println!("signed out {whom}: {n} sessions revoked");
        }
    }
    Ok(())
}

async fn keys(cli: &Cli, cmd: &KeysCommand) -> Result<()> {
    let path = cli.config()?.keyring_file;
    match cmd {
        KeysCommand::Generate => {
            let k = Keyring::generate()?;
            // Never over a keyring a starting server may have just created.
            if !keyfile::create_file(&path, &k)? {
                bail!("{} already exists; use `tessera keys rotate` to add a key", path.display());
            }
            println!("created keyring {} with key {}", path.display(), k.current_id());
            eprintln!("BACK UP {} now: without it no enrolled authenticator can be verified.", path.display());
        }
        KeysCommand::Rotate => {
            let (old, new) = KeyringSource::from_file(&path, false)?.0.rotate()?;
            println!("added key {new} and made it current (was {old})");
            println!(
                "running services swap it in within seconds (or at once on SIGHUP); then run `tessera keys reencrypt`"
            );
        }
        KeysCommand::Status => {
            let app = cli.app().await?;
            println!(
                "{:<16} {:>8} {:>13} {:>15} {:>12}  note",
                "key", "current", "totp_secrets", "recovery_codes", "queued_mail"
            );
            for s in app.key_status().await? {
                let used = s.usage.totp_secrets + s.usage.recovery_codes + s.usage.queued_mail;
                let note = match (s.in_keyring, s.current, used) {
                    (false, _, _) => "MISSING from the keyring: these rows cannot be opened",
                    (true, true, _) => "",
                    (true, false, 0) => "unused: can retire",
                    (true, false, _) => "still used",
                };
                println!(
                    "{:<16} {:>8} {:>13} {:>15} {:>12}  {note}",
                    s.key_id,
                    if s.current { "yes" } else { "" },
                    s.usage.totp_secrets,
                    s.usage.recovery_codes,
                    s.usage.queued_mail
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
        KeysCommand::Retire { key_id, grace } => {
            let id = KeyId::new(key_id)?;
            let grace = tessera_server::parse_duration(grace, "--grace")?;
            cli.app().await?.retire_key(&id, grace).await?;
            println!("retired key {id}");
        }
    }
    Ok(())
}
