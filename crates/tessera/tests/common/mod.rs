//! Shared by the end-to-end tests of the real binary: start `tessera serve` on ports chosen by
//! the OS and read its addresses from what it prints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `tessera serve` child process and where it listens.
pub struct Serve {
    pub child: Child,
    /// gRPC `host:port`.
    pub grpc: String,
    /// HTTP base URL (`http://host:port`).
    pub http: String,
    /// Admin HTTP base URL (`http://host:port`: metrics, health).
    pub admin: String,
}

/// Start `tessera serve` with its data in `data`, the breached-password check off, and `env`
/// (which may override those).
pub fn spawn(data: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(extra)
        .env("TESSERA_DATA_DIR", data)
        .env("TESSERA_PWNED_MODE", "off")
        .env("TESSERA_LOG", "warn")
        .env_remove("TESSERA_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut grpc, mut http, mut admin) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let first = |rest: &str| rest.split_whitespace().next().unwrap().to_owned();
        if let Some(rest) = line.trim().strip_prefix("gRPC: ") {
            grpc = Some(first(rest));
        }
        if let Some(rest) = line.trim().strip_prefix("HTTP: ") {
            http = Some(first(rest));
        }
        if let Some(rest) = line.trim().strip_prefix("admin: ") {
            admin = Some(first(rest));
        }
        if line.trim().starts_with("service token:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        grpc: grpc.expect("serve printed no gRPC address"),
        http: http.expect("serve printed no HTTP address"),
        admin: admin.expect("serve printed no admin address"),
    }
}
