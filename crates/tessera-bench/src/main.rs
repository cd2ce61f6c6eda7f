//! `tessera-bench`: a load generator for the gRPC service. It starts a real Tessera server
//! in this process on 127.0.0.1 (SQLite in a temp directory, or a fresh PostgreSQL
//! database), enrols subjects over gRPC, then drives `VerifyTotp` from many concurrent
//! clients with valid codes (never a replay: each subject's codes go to strictly increasing
//! time steps) and a share of wrong codes, and prints requests/s and latency percentiles.
//!
//! The server's clock runs fast (one 30 s step every 100 ms by default) so that a few
//! thousand subjects can each present a fresh valid code many times a second; every verify
//! does the full work (attempt gate, device read, unseal, windowed check, replay guard,
//! counter reset and audit in one transaction).
//!
//! Closed loop by default (each client sends its next request when the last is answered: the
//! server's saturation throughput); `--rate N` is an open loop, N requests/s offered on a
//! fixed schedule, for the latency at a given load (timed from when each request was due).
//!
//! `cargo run --release -p tessera-bench -- verify --concurrency 64 --duration 20s --database sqlite`
//!
//! `check` drives forward auth instead: `GET /auth/check?require=password&account=…` on the HTTP
//! listener, over keep-alive HTTP/1.1 connections (one per client, as a reverse proxy keeps
//! them), each with the session cookie of a user of its own who is a member of the account: the
//! full decision (session, user, membership and policy) every time, on a real clock.
//!
//! `cargo run --release -p tessera-bench -- check --concurrency 64 --duration 20s --database sqlite`
//!
//! `enrol` drives EnrollTotp + ConfirmTotp pairs for new subjects (with `omit_qr` unless
//! `--with-qr`) and reports the SQLite WAL's size on disk; `login` drives BeginLogin (argon2id)
//! and reports the process's memory before, during and after; `floor` runs pgbench's
//! one-`UPDATE`-by-key floor on PostgreSQL, which `verify --floor` also runs after its load.
#![allow(clippy::indexing_slicing)]

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_app::Outcome as tessera_app_outcome;
use tessera_client::{Client, ClientOptions, Verification, pb};
use tessera_core::clock::{Clock, from_millis};
use tessera_core::otp::{self, Secret, TotpParams};
use tessera_server::{ConfigFile, Listeners, ServerConfig};
use time::OffsetDateTime;

mod check;
mod modes;

const TOKEN: &str = "bench-service-token-0123456789";

#[derive(Parser, Debug)]
#[command(name = "tessera-bench", about = "Load generator for Tessera's gRPC service")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Drive VerifyTotp.
    Verify(VerifyArgs),
    /// Drive /auth/check (forward auth).
    Check(CheckArgs),
    /// Drive EnrollTotp + ConfirmTotp pairs (new subjects, back to back).
    Enrol(modes::EnrolArgs),
    /// Drive BeginLogin (argon2id) and report the process's memory before, during and after.
    Login(modes::LoginArgs),
    /// Run pgbench's one-UPDATE-by-key floor on PostgreSQL.
    Floor(modes::FloorArgs),
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Concurrent clients, each on its own keep-alive connection with its own user's session.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to drive load, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    #[command(flatten)]
    db: DbArgs,
    /// Server database pool size.
    #[arg(long, default_value_t = 16)]
    pool: u32,
}

/// The database the server under load uses.
#[derive(clap::Args, Debug)]
struct DbArgs {
    /// Which database the server uses.
    #[arg(long, value_enum, default_value_t = Db::Sqlite)]
    database: Db,
    /// PostgreSQL server (a fresh database is created on it and dropped afterwards).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the clients share (round robin), as services sharing a channel do.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to drive load, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    #[command(flatten)]
    db: DbArgs,
    /// Subjects per client.
    #[arg(long, default_value_t = 32)]
    subjects_per_client: usize,
    /// Share of requests that send a wrong code (to subjects kept apart from the valid ones).
    #[arg(long, default_value_t = 0.0)]
    wrong_ratio: f64,
    /// Server database pool size.
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Diagnosis only: create the PostgreSQL database with `synchronous_commit = off`, to see
    /// how much of the cost is waiting for WAL flushes. Never a production setting for Tessera
    /// (a crash could forget a used step).
    #[arg(long)]
    pg_async_commit: bool,
    /// Diagnosis: call the use case in-process instead of over gRPC (measures the store path).
    #[arg(long)]
    direct: bool,
    /// Milliseconds of real time per 30 s TOTP step on the server's clock.
    #[arg(long, default_value_t = 100)]
    step_ms: u64,
    /// Open loop: send this many requests per second in all, each client on a fixed
    /// schedule (rate / concurrency per second, phases spread evenly), instead of each
    /// client sending its next request as soon as the last one is answered (closed loop,
    /// the default: the server's saturation throughput). A request that has to wait because
    /// its client is behind schedule is timed from when it should have been sent, so a slow
    /// server's queueing is counted (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// PostgreSQL: after the load, run the pgbench floor (`floor`) on the same server at the
    /// same concurrency, and print verify's share of it.
    #[arg(long)]
    floor: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 20s"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: use s, ms or m")),
    }
}

/// A clock that runs `speed` times faster than real time from a fixed start.
#[derive(Debug)]
struct FastClock {
    start: Instant,
    start_ms: i64,
    speed: u64,
}

impl Clock for FastClock {
    fn now(&self) -> OffsetDateTime {
        let fast = self.start.elapsed().as_micros() as u64 * self.speed / 1000;
        from_millis(self.start_ms + fast as i64)
    }
}

struct Subject {
    id: String,
    secret: Secret,
    last_step: u64,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    accepted: u64,
    rejected: u64,
    locked: u64,
    errors: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let cmd = Cli::parse().cmd;
    let (database, pg_url, pg_async_commit) = match &cmd {
        Cmd::Verify(a) => {
            if a.concurrency == 0 || a.subjects_per_client == 0 {
                bail!("--concurrency and --subjects-per-client must be at least 1");
            }
            (a.db.database, a.db.pg_url.clone(), a.pg_async_commit)
        }
        Cmd::Check(a) => {
            if a.concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            (a.db.database, a.db.pg_url.clone(), false)
        }
        Cmd::Enrol(a) => (a.db.database, a.db.pg_url.clone(), false),
        Cmd::Login(a) => (a.db.database, a.db.pg_url.clone(), false),
        Cmd::Floor(a) => (Db::Postgres, a.pg_url.clone(), false),
    };
    let dir = tempfile::tempdir()?;
    let (database_url, pg_db) = match database {
        Db::Sqlite => (None, None),
        Db::Postgres => {
            let (url, name) = scratch_database(&pg_url, pg_async_commit).await?;
            (Some(url), Some(name))
        }
    };
    let result = match &cmd {
        Cmd::Verify(a) => run(a, dir.path(), database_url).await.map(|rate| (rate, a.floor)),
        Cmd::Check(a) => check::run(a, dir.path(), database_url).await.map(|()| (0.0, false)),
        Cmd::Enrol(a) => modes::enrol(a, dir.path(), database_url).await.map(|()| (0.0, false)),
        Cmd::Login(a) => modes::login(a, dir.path(), database_url).await.map(|()| (0.0, false)),
        Cmd::Floor(a) => {
            let url = database_url.clone().context("floor needs PostgreSQL")?;
            modes::floor(a, &url).await.map(|_| (0.0, false))
        }
    };
    if let Some(name) = &pg_db {
        drop_database(&pg_url, name).await?;
    }
    let (rate, floor) = result?;
    if let (Cmd::Verify(a), true, Some(_)) = (&cmd, floor, &pg_db) {
        let (url, name) = scratch_database(&pg_url, false).await?;
        let args = modes::FloorArgs::new(&pg_url, a.concurrency, a.duration.as_secs().max(5));
        let f = modes::floor(&args, &url).await;
        drop_database(&pg_url, &name).await?;
        let f = f?;
        println!("verify / floor = {:.0} %", 100.0 * rate / f);
    }
    Ok(())
}

/// A fresh database on the PostgreSQL server of `pg_url`: its URL and name.
async fn scratch_database(pg_url: &str, async_commit: bool) -> Result<(String, String)> {
    let name = format!("tessera_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(pg_url).await.context("cannot reach PostgreSQL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await?;
    if async_commit {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} SET synchronous_commit = off")))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    let (url, query) = pg_url.split_once('?').map_or((pg_url, String::new()), |(u, q)| (u, format!("?{q}")));
    let (prefix, _) = url.rsplit_once('/').context("--pg-url needs a /database")?;
    Ok((format!("{prefix}/{name}{query}"), name))
}

async fn drop_database(pg_url: &str, name: &str) -> Result<()> {
    let pool = sqlx::PgPool::connect(pg_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&pool).await?;
    Ok(())
}

/// Latency percentiles (ms) of sorted microsecond samples.
fn percentile(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() { 0.0 } else { f64::from(sorted_us[((sorted_us.len() - 1) as f64 * q) as usize]) / 1000.0 }
}

/// The server's settings: its data in `dir`, the database, the pool, no breached-password check.
fn server_config(dir: &std::path::Path, database_url: Option<String>, pool: u32) -> Result<ServerConfig> {
    let given = ConfigFile {
        data_dir: Some(dir.to_owned()),
        database_url,
        db_max_connections: Some(pool),
        pwned_mode: Some("off".into()),
        ..Default::default()
    };
    Ok(ServerConfig::resolve(given, Some(TOKEN.into()))?)
}

async fn run(args: &VerifyArgs, dir: &std::path::Path, database_url: Option<String>) -> Result<f64> {
    let cfg = server_config(dir, database_url, args.pool)?;
    let clock =
        Arc::new(FastClock { start: Instant::now(), start_ms: 1_767_225_600_000, speed: 30_000 / args.step_ms.max(1) });
    let prepared = tessera_server::prepare(&cfg, Some(clock.clone())).await?;
    let app = prepared.app.clone();
    let direct = args.direct;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", grpc.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tessera_server::run(Listeners { grpc, http, admin }, prepared, async {
        let _ = stop_rx.await;
    }));

    let opts = ClientOptions { timeout: Duration::from_secs(10), ..Default::default() };
    let mut conns = Vec::new();
    for _ in 0..args.connections.clamp(1, args.concurrency) {
        conns.push(Client::connect(&endpoint, TOKEN, opts.clone()).await?);
    }
    let clients: Vec<Client> = (0..args.concurrency).map(|i| conns[i % conns.len()].clone()).collect();

    // Enrol: each client gets its own subjects (and one more for wrong codes).
    let enrol_start = Instant::now();
    let mut sets = Vec::new();
    let mut handles = Vec::new();
    for (w, c) in clients.iter().enumerate() {
        let c = c.clone();
        let clock = clock.clone();
        let n = args.subjects_per_client;
        handles.push(tokio::spawn(async move {
            let mut subjects = Vec::with_capacity(n);
            for i in 0..=n {
                let id = format!("bench-{w}-{i}");
                let e = c
                    .enroll_totp(pb::EnrollTotpRequest {
                        subject_id: id.clone(),
                        label: "bench".into(),
                        account_name: id.clone(),
                        ..Default::default()
                    })
                    .await?;
                let secret = Secret::from_base32(&e.secret_base32)?;
                let p = TotpParams::default();
                // The server's clock runs fast (a step every `step_ms`): a confirmation slower
                // than the drift window is refused as a wrong code, so try again with a fresh one.
                let mut tries = 0;
                let step = loop {
                    let t = clock.now().unix_timestamp();
                    match c.confirm_totp(&id, &e.factor_id, &otp::format_code(otp::totp(&secret, &p, t), 6)).await {
                        Ok(_) => break p.step_at(t),
                        Err(err) if tries < 3 => {
                            tries += 1;
                            eprintln!("confirming {id} again (the code went stale in flight: {err})");
                        }
                        Err(err) => return Err(err.into()),
                    }
                };
                subjects.push(Subject { id, secret, last_step: step });
            }
            anyhow::Ok(subjects)
        }));
    }
    for h in handles {
        sets.push(h.await??);
    }
    let enrolled = args.concurrency * (args.subjects_per_client + 1);
    println!(
        "enrolled {enrolled} subjects in {:.1} s ({:.0} enrol+confirm pairs/s)",
        enrol_start.elapsed().as_secs_f64(),
        enrolled as f64 / enrol_start.elapsed().as_secs_f64()
    );

    // Drive load.
    let rss = modes::RssSampler::start();
    let deadline = Instant::now() + args.duration;
    let interval = match args.rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(Duration::from_secs_f64(args.concurrency as f64 / r)),
        Some(r) => bail!("--rate must be a positive number of requests per second, not {r}"),
        None => None,
    };
    let wrong_every = if args.wrong_ratio > 0.0 { (1.0 / args.wrong_ratio).round().max(1.0) as u64 } else { 0 };
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    let concurrency = args.concurrency;
    for (w, (c, mut subjects)) in clients.into_iter().zip(sets).enumerate() {
        let clock = clock.clone();
        let counter = counter.clone();
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let mut t = Tally::default();
            // Open loop: this client's next scheduled send (phases spread over one interval).
            let mut next = interval.map(|i| Instant::now() + i.mul_f64(w as f64 / concurrency as f64));
            let wrong_subject = subjects.pop().map(|s| s.id).unwrap_or_default();
            let p = TotpParams::default();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (subject, code) = if wrong_every > 0 && n.is_multiple_of(wrong_every) {
                    (wrong_subject.clone(), "000000".to_owned())
                } else {
                    // the next subject whose last used step is behind the current one
                    let now = clock.now().unix_timestamp();
                    let step = p.step_at(now);
                    let mut chosen = None;
                    for _ in 0..subjects.len() {
                        i = (i + 1) % subjects.len();
                        if subjects[i].last_step < step {
                            chosen = Some(i);
                            break;
                        }
                    }
                    let Some(k) = chosen else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    };
                    subjects[k].last_step = step;
                    let code = otp::format_code(otp::totp(&subjects[k].secret, &p, now), 6);
                    (subjects[k].id.clone(), code)
                };
                let t0 = match (next.as_mut(), interval) {
                    (Some(at), Some(every)) => {
                        let due = *at;
                        *at += every;
                        if Instant::now() < due {
                            tokio::time::sleep_until(due.into()).await;
                            // On time: timed from the send (the timer's own lateness is ours).
                            Instant::now()
                        } else {
                            // Behind schedule (the server was slow): timed from when it was due.
                            due
                        }
                    }
                    _ => Instant::now(),
                };
                let r = if direct {
                    app.verify_totp(&subject, &code, &Default::default()).await.map_err(|e| e.to_string()).map(|o| {
                        match o {
                            tessera_app_outcome::Accepted { .. } => Verification::Accepted { factor_id: String::new() },
                            tessera_app_outcome::Rejected { attempts_remaining } => {
                                Verification::Rejected { attempts_remaining }
                            }
                            tessera_app_outcome::Locked { .. } => {
                                Verification::Locked { until: std::time::SystemTime::UNIX_EPOCH }
                            }
                        }
                    })
                } else {
                    c.verify_totp(&subject, &code, None).await.map_err(|e| e.to_string())
                };
                t.latencies_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                match r {
                    Ok(Verification::Accepted { .. }) => t.accepted += 1,
                    Ok(Verification::Rejected { .. }) => t.rejected += 1,
                    Ok(Verification::Locked { .. }) => t.locked += 1,
                    Err(_) => t.errors += 1,
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for h in handles {
        let t = h.await?;
        all.latencies_us.extend(t.latencies_us);
        all.accepted += t.accepted;
        all.rejected += t.rejected;
        all.locked += t.locked;
        all.errors += t.errors;
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_max = rss.stop().await;
    all.latencies_us.sort_unstable();
    let pct = |q: f64| percentile(&all.latencies_us, q);
    let total = all.latencies_us.len();
    let mode = match args.rate {
        Some(r) => format!("open loop, {r:.0}/s offered"),
        None => "closed loop".to_owned(),
    };
    println!(
        "database={:?} concurrency={} duration={:.1}s pool={} ({mode})",
        args.db.database, args.concurrency, secs, args.pool
    );
    println!(
        "requests={total} ({:.0}/s)  accepted={} rejected={} locked={} errors={}",
        total as f64 / secs,
        all.accepted,
        all.rejected,
        all.locked,
        all.errors
    );
    println!(
        "latency ms: p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!("RSS MB (server and load generator): max under load {rss_max:.0}");
    let _ = stop_tx.send(());
    server.await??;
    if all.errors > 0 {
        bail!("{} requests failed", all.errors);
    }
    Ok(total as f64 / secs)
}
