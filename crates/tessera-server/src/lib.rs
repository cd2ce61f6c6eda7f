//! The composition root: resolve configuration, open the store and keyring, and run the gRPC
//! and HTTP servers until shutdown. `tessera serve` and the end-to-end tests start Tessera
//! the same way: [`prepare`] then [`run`].
//!
//! Architecture invariant: this is the only crate that knows every other crate.

mod config;
mod http;
mod listen;
mod run_to_end;

use config::redact as redact_url;
pub use config::{ConfigFile, GrpcTls, ServerConfig, TokenSource, parse_duration, redact};
pub use listen::HttpLimits;

use std::future::Future;
use std::sync::Arc;
use tessera_app::{App, AppConfig, KeyringSource};
use tessera_core::clock::{Clock, SystemClock};
use tessera_grpc::{FactorServiceServer, FactorSvc, IdentityServiceServer, IdentitySvc, TokenAuth};
use tessera_store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The keyring or a use case refused.
    #[error(transparent)]
    App(#[from] tessera_app::AppError),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] tessera_store::StoreError),
    /// A listener or the filesystem failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Everything `run` needs, opened and checked.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The use cases.
    pub app: App,
    /// Accepted service tokens.
    pub auth: TokenAuth,
    /// What to print at start.
    pub summary: Vec<String>,
    /// Delivers queued notifications, when a relay is configured.
    pub mailer: tessera_app::Mailer,
    /// The web pages' settings.
    pub web: tessera_web::WebConfig,
    /// gRPC TLS (and mTLS), when configured.
    pub grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    /// The HTTP listener's limits.
    pub http: HttpLimits,
    /// How often the keyring file is checked for a rotation.
    pub keyring_check_interval: std::time::Duration,
}

/// Open the database (running migrations), the keyring (created on first start, 0600) and
/// the service tokens (a token file created on first start when none is configured).
pub async fn prepare(cfg: &ServerConfig, clock: Option<Arc<dyn Clock>>) -> Result<Prepared, ServerError> {
    let mut summary = Vec::new();
    let store = open_store(cfg).await?;
    summary.push(format!("database: {}", config::redact(&cfg.database_url)));
    let (keys, created) = KeyringSource::from_file(&cfg.keyring_file, true)?;
    if created {
        tracing::warn!(
            path = %cfg.keyring_file.display(),
            "created a new keyring: BACK IT UP (and keep it out of database backups); without it no enrolled device can be verified"
        );
    }
    summary.push(format!("keyring: {} (current key {})", cfg.keyring_file.display(), keys.get().current_id()));

    let (hashes, token_summary) = config::service_tokens(cfg)?;
    summary.push(token_summary);
    if !cfg.support_tokens.is_empty() {
        summary.push(format!("support tokens: {}", cfg.support_tokens.len()));
    }
    if !cfg.web.trusted_proxies.nets().is_empty() {
        let nets: Vec<String> = cfg.web.trusted_proxies.nets().iter().map(ToString::to_string).collect();
        summary.push(format!("trusted proxies (X-Forwarded-For believed from): {}", nets.join(", ")));
    }
    if !cfg.web.forward_domains.is_empty() {
        summary.push(format!(
            "forward auth: sign-ins may return to {} and their subdomains",
            cfg.web.forward_domains.names().join(", ")
        ));
    }
    if let Some(d) = &cfg.web.cookie_domain {
        summary.push(format!("forward auth: domain-wide cookie for {d} (accepted by /auth/check only)"));
    }
    summary.push(format!(
        "sessions: idle timeout {}, lifetime {}, re-authentication window {}",
        cfg.sessions.idle_timeout, cfg.sessions.lifetime, cfg.sessions.reauth_window
    ));
    summary
        .push(format!("breached-password check: {:?}, fail-{:?}", cfg.pwned.source, cfg.pwned.failure).to_lowercase());
    let app = App::new(store, keys, clock.unwrap_or_else(|| Arc::new(SystemClock)), app_cfg(cfg));
    let mailer = match &cfg.smtp {
        Some((url, from)) => {
            summary.push(format!("mail: SMTP {}", redact_url(url)));
            tessera_app::Mailer::new(url, from)?
        }
        None => {
            let dir = cfg.data_dir.join("mail");
            summary.push(format!("mail: written to {} as .eml files (no SMTP relay configured)", dir.display()));
            if !config::is_loopback_url(&cfg.public_url) {
                // Files hold live reset links in clear on this disk, and nobody reads them.
                let warning = format!(
                    "WARNING: users reach this service at {}, but there is no SMTP relay: their mail, reset \
                     links included, is only written to {} (set --smtp-url)",
                    cfg.public_url,
                    dir.display()
                );
                tracing::warn!("{warning}");
                summary.push(warning);
            }
            tessera_app::Mailer::to_dir(dir, &cfg.mail_from)?
        }
    };
    summary.push(format!("public URL (links in mail): {}", cfg.public_url));
    match app.webauthn_problem() {
        None => summary.push(format!("security keys and passkeys: on, for origin {}", cfg.public_url)),
        Some(why) => {
            tracing::warn!("{why}");
            summary.push(format!("security keys and passkeys: off ({why})"));
        }
    }
    summary.push(format!("sign-up: {}", if cfg.signup_open { "open" } else { "closed (invitation only)" }));
    let grpc_tls = match &cfg.grpc_tls {
        Some(t) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| ServerError::Config(format!("cannot read {}: {e}", p.display())))
            };
            let mut tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(read(&t.cert)?, read(&t.key)?));
            if let Some(ca) = &t.client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
                summary.push(format!("gRPC: TLS, client certificates required (mTLS, CA {})", ca.display()));
            } else {
                summary.push("gRPC: TLS".into());
            }
            Some(tls)
        }
        None => None,
    };
    Ok(Prepared {
        grpc_tls,
        app,
        auth: TokenAuth::with_support(hashes, cfg.support_tokens.clone()),
        summary,
        mailer,
        web: cfg.web.clone(),
        http: cfg.http,
        keyring_check_interval: cfg.keyring_check_interval,
    })
}

/// Open the database `serve` and every command start from: the SQLite data directory created
/// readable by its owner only, migrations applied.
pub async fn open_store(cfg: &ServerConfig) -> Result<Store, ServerError> {
    if cfg.database_url.starts_with("sqlite:") {
        create_private_dir(&cfg.data_dir)?;
    }
    let store = Store::connect(
        &cfg.database_url,
        StoreOptions { max_connections: cfg.db_max_connections, device_cache: cfg.device_cache, ..Default::default() },
    )
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// The use cases over `open_store` and the existing keyring, for the command line's offline
/// commands (`keys`, `support`): the same settings as `serve`, no listener.
pub async fn open_app(cfg: &ServerConfig) -> Result<App, ServerError> {
    let store = open_store(cfg).await?;
    let (keys, _) = KeyringSource::from_file(&cfg.keyring_file, false)?;
    Ok(App::new(store, keys, Arc::new(SystemClock), app_cfg(cfg)))
}

fn app_cfg(cfg: &ServerConfig) -> AppConfig {
    AppConfig {
        issuer: cfg.issuer.clone(),
        pwned: cfg.pwned.clone(),
        sessions: cfg.sessions,
        public_url: cfg.public_url.clone(),
        signup_open: cfg.signup_open,
        ..AppConfig::default()
    }
}

/// Create the data directory readable by its owner only (it holds the database).
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Open connections at most on the admin listener (a scraper and a health checker need few).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The sockets to serve on (bound by the caller, so tests can use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP: the web pages, health, readiness.
    pub http: TcpListener,
    /// Admin HTTP: metrics, health, readiness (keep it off the public network).
    pub admin: TcpListener,
}

/// Serve until `shutdown` resolves; then stop accepting, let in-flight calls finish, and
/// close the pool.
pub async fn run(
    listeners: Listeners,
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let Prepared { app, auth, mailer, web, grpc_tls, http: http_limits, keyring_check_interval, .. } = prepared;
    let stop = CancellationToken::new();

    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<FactorServiceServer<FactorSvc>>().await;
    health.set_serving::<IdentityServiceServer<IdentitySvc>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tessera_grpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tessera_grpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
    let factor = FactorServiceServer::with_interceptor(FactorSvc::new(app.clone()), auth.clone());
    let identity = IdentityServiceServer::with_interceptor(IdentitySvc::new(app.clone()), auth);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = grpc_tls {
        builder = builder.tls_config(tls)?;
    }
    let grpc = builder
        .layer(run_to_end::RunToEndLayer)
        .layer(tessera_grpc::edge::layer())
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(factor)
        .add_service(identity)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc),
            stop.clone().cancelled_owned(),
        );
    let router = http::health(app.clone()).merge(tessera_web::router(app.clone(), web));
    let http = listen::serve(listeners.http, router, http_limits, stop.clone().cancelled_owned());
    // Its own permits, so a flood of the public listener cannot starve the metrics scrape.
    let admin_limits = HttpLimits { max_connections: ADMIN_MAX_CONNECTIONS, ..http_limits };
    let admin = listen::serve(listeners.admin, http::admin(app.clone()), admin_limits, stop.clone().cancelled_owned());

    let outbox = {
        let app = app.clone();
        let stop = stop.clone();
        let wakeup = app.outbox_wakeup();
        tokio::spawn(async move {
            loop {
                if let Err(e) = app.deliver_notifications(&mailer, 100).await {
                    tracing::warn!(error = %e, "outbox pass failed");
                }
                // A pass when a use case queues mail, and every 5 s for retries.
                tokio::select! {
                    _ = wakeup.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    let keyring = tokio::spawn(watch_keyring(app.keys().clone(), keyring_check_interval, stop.clone()));
    let grpc = tokio::spawn(grpc);
    let http = tokio::spawn(http);
    let admin = tokio::spawn(admin);
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing in-flight calls");
    health.set_not_serving::<FactorServiceServer<FactorSvc>>().await;
    health.set_not_serving::<IdentityServiceServer<IdentitySvc>>().await;
    stop.cancel();
    let g = grpc.await.map_err(|e| ServerError::Config(format!("gRPC task: {e}")))?;
    http.await.map_err(|e| ServerError::Config(format!("HTTP task: {e}")))?;
    admin.await.map_err(|e| ServerError::Config(format!("admin HTTP task: {e}")))?;
    let _ = outbox.await;
    let _ = keyring.await;
    app.store().close().await;
    g?;
    tracing::info!("stopped");
    Ok(())
}

/// Swap in the keyring when its file changes (checked every `every`) or at once on SIGHUP,
/// until `stop`: a `tessera keys rotate` reaches this replica without a restart, and from then
/// on new secrets are sealed, and new recovery codes MACed, under the new key. A file that
/// cannot be read or parsed is logged and the keys in use are kept.
async fn watch_keyring(keys: KeyringSource, every: std::time::Duration, stop: CancellationToken) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keys.publish_metrics();
    // Log a failure once, not at every check, until the file reads again.
    let mut failing = false;
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = hangup => true,
        };
        match if forced { keys.reload().map(Some) } else { keys.reload_if_changed() } {
            Err(e) if !failing || forced => {
                failing = true;
                tracing::error!(error = %e, path = %keys.path().display(), "keyring reload failed: keeping the keys in use");
            }
            Err(_) => {}
            Ok(_) => failing = false,
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
