//! The real `tessera serve`, started on ports the OS chooses; its addresses are read from what
//! it prints.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `tessera serve` child process and where it listens. Dropping it kills the process if it
/// is still running, so a failed test leaves no server behind.
#[derive(Debug)]
pub struct Serve {
    /// The process.
    pub child: Child,
    /// gRPC `host:port`.
    pub grpc: String,
    /// HTTP base URL (`http://host:port`).
    pub http: String,
    /// Admin HTTP base URL (`http://host:port`: metrics, health).
    pub admin: String,
}

impl Serve {
    /// Start `bin serve` (pass `env!("CARGO_BIN_EXE_tessera")`) with its data in `data`, the
    /// breached-password check off, the arguments `extra` and the environment `env` (which may
    /// override those). Returns once it has printed its addresses.
    pub fn spawn(bin: impl AsRef<OsStr>, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]);
        // A test that needs a known HTTP port (a WebAuthn origin) passes its own --http-addr.
        if !extra.contains(&"--http-addr") {
            cmd.args(["--http-addr", "127.0.0.1:0"]);
        }
        cmd.args(extra)
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
        // Keep reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            grpc: grpc.expect("serve printed no gRPC address"),
            http: http.expect("serve printed no HTTP address"),
            admin: admin.expect("serve printed no admin address"),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
