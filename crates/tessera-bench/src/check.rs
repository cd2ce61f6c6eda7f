//! `tessera-bench check`: forward auth under load (see the crate docs).

use crate::{CheckArgs, percentile};
use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};
use tessera_server::Listeners;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One `GET /auth/check` on a keep-alive connection: the status.
async fn one(conn: &mut BufReader<tokio::net::TcpStream>, request: &[u8]) -> Result<u16> {
    conn.get_mut().write_all(request).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status: u16 = line.split_whitespace().nth(1).context("no status line")?.parse()?;
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(status)
}

pub(crate) async fn run(args: &CheckArgs, dir: &std::path::Path, database_url: Option<String>) -> Result<()> {
    let cfg = crate::server_config(dir, database_url, args.pool)?;
    let prepared = tessera_server::prepare(&cfg, None).await?;
    let app = prepared.app.clone();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tessera_server::run(Listeners { grpc, http, admin }, prepared, async {
        let _ = stop_rx.await;
    }));

    // One user per client, signed in with the password, a member (owner) of an account of its own.
    let setup = Instant::now();
    let ctx = tessera_app::ClientContext { ip: Some("127.0.0.1".into()), ..Default::default() };
    let mut requests = Vec::new();
    for i in 0..args.concurrency {
        let email = format!("bench-{i}@example.com");
        app.create_user(&email, "correct horse battery staple", &ctx).await?;
        let token = match app.begin_login(&email, "correct horse battery staple", &ctx).await? {
            tessera_app::LoginOutcome::Authenticated { token, .. } => token.to_string(),
            other => bail!("sign-in: {other:?}"),
        };
        let s = app.session(&token).await?.context("a live session")?;
        let account = app.create_account(&s, "Bench", &ctx).await?;
        requests.push(
            format!(
                "GET /auth/check?require=password&account={account} HTTP/1.1\r\nHost: app.example.com\r\n\
                 Cookie: __Host-tessera_session={token}\r\n\r\n"
            )
            .into_bytes(),
        );
    }
    println!("signed in {} users in {:.1} s", args.concurrency, setup.elapsed().as_secs_f64());

    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut handles = Vec::new();
    for request in requests {
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut allowed, mut other) = (0u64, 0u64);
            let mut conn = BufReader::new(tokio::net::TcpStream::connect(http_addr).await?);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let status = one(&mut conn, &request).await?;
                latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if status == 200 { allowed += 1 } else { other += 1 }
            }
            anyhow::Ok((latencies, allowed, other))
        }));
    }
    let (mut all, mut allowed, mut other) = (Vec::new(), 0, 0);
    for h in handles {
        let (l, a, o) = h.await??;
        all.extend(l);
        allowed += a;
        other += o;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "/auth/check database={:?} concurrency={} duration={secs:.1}s pool={}",
        args.db.database, args.concurrency, args.pool
    );
    println!("requests={} ({:.0}/s)  allowed={allowed} refused={other}", all.len(), all.len() as f64 / secs);
    println!(
        "latency ms: p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2}",
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        percentile(&all, 1.0)
    );
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    if other > 0 {
        bail!("{other} checks were refused");
    }
    Ok(())
}
