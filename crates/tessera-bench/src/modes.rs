//! `tessera-bench enrol`, `login` and `floor`: enrolment throughput, login memory, and the
//! PostgreSQL floor that verification is measured against (see the crate docs).

use crate::{Db, DbArgs, TOKEN, percentile, server_config};
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_client::{Client, ClientOptions, pb};
use tessera_core::otp::{self, Secret, TotpParams};
use tessera_server::Listeners;

/// The process's resident memory now and at its peak, in MB (Linux `/proc/self/status`). The
/// server runs in this process, so this is the server's plus the load generator's.
pub(crate) fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// Samples the resident memory every 50 ms until stopped; the largest seen, in MB.
pub(crate) struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    pub(crate) fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let mut max: f64 = 0.0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(rss_mb().0);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        });
        Self { stop, handle }
    }

    pub(crate) async fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.await.unwrap_or(0.0)
    }
}

/// A server started in this process, and how to stop it.
pub(crate) struct Running {
    pub(crate) endpoint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tessera_server::ServerError>>,
}

impl Running {
    pub(crate) async fn start(cfg: &tessera_server::ServerConfig) -> Result<Self> {
        let prepared = tessera_server::prepare(cfg, None).await?;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", grpc.local_addr()?);
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tessera_server::run(Listeners { grpc, http, admin }, prepared, async {
            let _ = rx.await;
        }));
        Ok(Self { endpoint, stop, server })
    }

    pub(crate) async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct EnrolArgs {
    /// Concurrent clients, each enrolling and confirming new subjects back to back.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to drive load, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    duration: Duration,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// Server database pool size.
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Ask for the QR images too (as a caller that shows the server's PNG or SVG does);
    /// by default `omit_qr` is set, as a caller that draws its own QR code from the URI.
    #[arg(long)]
    with_qr: bool,
}

/// Enrol + confirm pairs over gRPC, back to back from every client, on a real clock.
pub(crate) async fn enrol(args: &EnrolArgs, dir: &std::path::Path, database_url: Option<String>) -> Result<()> {
    let cfg = server_config(dir, database_url, args.pool)?;
    let srv = Running::start(&cfg).await?;
    let client = Client::connect(&srv.endpoint, TOKEN, ClientOptions::default()).await?;
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let rss = RssSampler::start();
    let wal = dir.join("tessera.db-wal");
    let wal_max = {
        let wal = wal.clone();
        tokio::spawn(async move {
            let mut max = 0u64;
            while Instant::now() < deadline {
                max = max.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        })
    };
    let omit_qr = !args.with_qr;
    let mut handles = Vec::new();
    for w in 0..args.concurrency {
        let c = client.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let id = format!("enrol-{w}-{i}");
                i += 1;
                let e = c
                    .enroll_totp(pb::EnrollTotpRequest {
                        subject_id: id.clone(),
                        label: "bench".into(),
                        account_name: id.clone(),
                        omit_qr,
                        ..Default::default()
                    })
                    .await?;
                let secret = Secret::from_base32(&e.secret_base32)?;
                let now = tessera_core::clock::Clock::now(&tessera_core::clock::SystemClock).unix_timestamp();
                let code = otp::format_code(otp::totp(&secret, &TotpParams::default(), now), 6);
                c.confirm_totp(&id, &e.factor_id, &code).await?;
                lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = rss.stop().await;
    all.sort_unstable();
    println!(
        "database={:?} concurrency={} duration={secs:.1}s pool={} qr={}",
        args.db.database,
        args.concurrency,
        args.pool,
        if omit_qr { "omitted" } else { "rendered" }
    );
    println!(
        "enrol+confirm pairs={} ({:.0}/s)  latency ms per pair: p50={:.2} p99={:.2}  RSS max={peak:.0} MB",
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    let wal_max = wal_max.await.unwrap_or(0) as f64 / 1e6;
    if args.db.database == Db::Sqlite {
        // The server still runs: what a live deployment keeps on disk once writes pause.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1e6);
        println!(
            "SQLite on disk: WAL max {wal_max:.1} MB under load; 1 s after: database {:.1} MB, WAL {:.1} MB",
            size(&dir.join("tessera.db")),
            size(&wal)
        );
    }
    srv.stop().await?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct LoginArgs {
    /// Concurrent callers of BeginLogin (each with a user of its own).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to drive load, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    duration: Duration,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// How long to stay idle after the load before the last memory reading.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    idle: Duration,
}

/// BeginLogin with the right password (one argon2id verification each) from every caller,
/// and the process's memory before, during and after.
pub(crate) async fn login(args: &LoginArgs, dir: &std::path::Path, database_url: Option<String>) -> Result<()> {
    const PW: &str = "correct horse battery staple";
    let cfg = server_config(dir, database_url, 16)?;
    let srv = Running::start(&cfg).await?;
    let client = Client::connect(&srv.endpoint, TOKEN, ClientOptions::default()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Before any password is hashed (creating the users below hashes theirs).
    let (idle_before, _) = rss_mb();
    for i in 0..args.concurrency {
        client
            .identity()
            .create_user(pb::CreateUserRequest {
                email: format!("login-{i}@example.com"),
                password: PW.into(),
                email_verified: true,
                ..Default::default()
            })
            .await?;
    }
    let rss = RssSampler::start();
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..args.concurrency {
        let mut c = client.identity();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = c
                    .begin_login(pb::BeginLoginRequest {
                        email: format!("login-{i}@example.com"),
                        password: PW.into(),
                        context: Some(pb::ClientContext {
                            ip: format!("198.51.100.{}", i % 250),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner();
                if r.session_token.is_empty() {
                    bail!("login {i} was not authenticated: {r:?}");
                }
                lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let during = rss.stop().await;
    tokio::time::sleep(args.idle).await;
    let (after, _) = rss_mb();
    all.sort_unstable();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("database={:?} concurrency={} duration={secs:.1}s cores={cores}", args.db.database, args.concurrency);
    println!(
        "logins={} ({:.1}/s)  latency ms: p50={:.0} p99={:.0}",
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    let bound = idle_before + cores as f64 * 19.0 + 20.0;
    println!(
        "RSS MB: idle {idle_before:.0}, max under load {during:.0}, after {:.0} s idle {after:.0} \
         (bound: idle + cores x 19 + 20 = {bound:.0})",
        args.idle.as_secs_f64()
    );
    srv.stop().await?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct FloorArgs {
    /// PostgreSQL server (a scratch table is created in a fresh database and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub(crate) pg_url: String,
    /// pgbench clients (and threads: at most the cores).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Rows to spread the updates over (one per subject).
    #[arg(long, default_value_t = 2048)]
    rows: u32,
}

impl FloorArgs {
    /// The floor of a `verify --floor` run: its concurrency and duration.
    pub(crate) fn new(pg_url: &str, concurrency: usize, seconds: u64) -> Self {
        Self { pg_url: pg_url.to_owned(), concurrency, seconds, rows: 2048 }
    }
}

/// The floor on this PostgreSQL: pgbench running one autocommitted `UPDATE` by key per
/// transaction (what the least a verification can write costs: one row changed and one commit,
/// nothing read), at the same concurrency. Needs `pgbench` on the PATH.
pub(crate) async fn floor(args: &FloorArgs, database_url: &str) -> Result<f64> {
    let pool = sqlx::PgPool::connect(database_url).await.context("cannot reach PostgreSQL")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE floor (id INT PRIMARY KEY, n BIGINT NOT NULL DEFAULT 0); \
         INSERT INTO floor (id) SELECT g FROM generate_series(1, {}) g",
        args.rows
    )))
    .execute(&pool)
    .await?;
    pool.close().await;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        format!("\\set id random(1, {})\nUPDATE floor SET n = n + 1 WHERE id = :id;\n", args.rows),
    )?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(args.concurrency);
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-r"])
        .arg(format!("-c{}", args.concurrency))
        .arg(format!("-j{threads}"))
        .arg(format!("-T{}", args.seconds))
        .arg("-f")
        .arg(script.path())
        .arg(database_url)
        .output()
        .context("running pgbench (is it on the PATH? Debian: postgresql-client)")?;
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .context("no tps in pgbench's output")?;
    let latency = text.lines().find(|l| l.starts_with("latency average")).unwrap_or("");
    println!("floor: pgbench, one UPDATE by key per transaction, {} clients, {} s", args.concurrency, args.seconds);
    println!("floor={tps:.0}/s  {latency}");
    Ok(tps)
}
