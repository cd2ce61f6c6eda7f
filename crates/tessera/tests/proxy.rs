//! Forward auth behind real reverse proxies: Debian's nginx (`auth_request`) and Debian's Caddy
//! (`forward_auth`, `tls internal`), each configured from the file in `examples/` (only ports and
//! names substituted), in front of a small app that echoes the request it receives as JSON, with
//! the real `tessera serve` behind. `e2e/proxy.test.mjs` drives headless Chromium through them.
//!
//! Needs what the browser test needs, plus `nginx` and `caddy`; `.ci/run` installs them. Without
//! them the test prints SKIPPED, except under CI=true, where it fails.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_testkit::{MailSink, Serve, loud};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Whether the proxy tests can run here (else SKIPPED, loudly; a failure under CI=true).
fn can_run(proxy: &str) -> bool {
    let mut missing = Vec::new();
    if !ok(proxy, &[if proxy == "nginx" { "-v" } else { "version" }]) {
        missing.push(proxy.to_owned());
    }
    if !ok("node", &["--version"]) || !repo().join("e2e/node_modules/playwright-core").exists() {
        missing.push("node with e2e/node_modules (npm ci --prefix e2e)".into());
    }
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("/usr/bin/chromium".into());
    }
    for (cmd, args) in [("oathtool", &["--version"][..]), ("python3", &["-c", "import zxingcpp, PIL"][..])] {
        if !ok(cmd, args) {
            missing.push(cmd.into());
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "the {proxy} test is mandatory in CI; missing: {}",
        missing.join(", ")
    );
    loud(&format!("SKIPPED ({proxy} forward auth): missing {}", missing.join(", ")));
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The upstream app: answers every request with the request itself as JSON (path, and headers
/// with lower-case names), so the browser test reads what the app received.
fn echo_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || echo(conn));
        }
    });
    port
}

fn echo(conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let mut headers = serde_json::Map::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().into());
        }
    }
    let body = serde_json::json!({ "path": path, "headers": headers }).to_string();
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `examples/<file>`, with each `(from, to)` replaced (each `from` must occur).
fn example(file: &str, subst: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(repo().join("examples").join(file)).unwrap();
    for (from, to) in subst {
        assert!(text.contains(from), "examples/{file} has no {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// Run the scenario in `mode` with `env`; screenshots and steps in `target/tmp/proxy-<mode>`.
/// On failure, the proxy's log `log` is printed.
fn scenario(mode: &str, env: &[(&str, String)], log: &Path) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("proxy-{mode}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("e2e/proxy.test.mjs")).env("MODE", mode).env("OUT_DIR", &out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if !cmd.status().unwrap().success() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "the {mode} scenario failed (screenshots so far in {}); the proxy's log:\n{}",
            out.display(),
            tail.join("\n")
        );
    }
    out
}

fn serve(data: &Path, port: u16, env: &[(&str, &str)]) -> Serve {
    Serve::spawn(env!("CARGO_BIN_EXE_tessera"), data, &["--http-addr", &format!("127.0.0.1:{port}")], env)
}

/// nginx in front of an app, Tessera and the app on one host (`localhost`, two ports): signed
/// out → sign-in → back; the app sees who it is and no Tessera cookie; a forged header changes
/// nothing; a factor removed or a sign-out refuses the next request; an account that requires
/// MFA refuses a password-only member until he enrols.
#[test]
fn nginx_auth_request_in_front_of_an_app() {
    if !can_run("nginx") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let sink = MailSink::start(&data.path().join("smtp-received"));
    let (tessera, app, acct_app, upstream) = (free_port(), free_port(), free_port(), echo_app());
    let base = format!("http://localhost:{tessera}");
    let env = [
        ("TESSERA_SMTP_URL", sink.url.as_str()),
        ("TESSERA_PUBLIC_URL", base.as_str()),
        ("TESSERA_FORWARD_AUTH_DOMAIN", "localhost"),
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_WEB_RATE_LIMIT_PER_MINUTE", "200"),
    ];
    let _tessera = serve(data.path(), tessera, &env);

    let dir = data.path().join("nginx");
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  \
             scgi_temp_path {d}/tmp/scgi;\n  include {d}/conf.d/*.conf;\n}}\n"
        ),
    )
    .unwrap();
    let common = |listen: u16| {
        vec![
            ("listen 80;", format!("listen 127.0.0.1:{listen};")),
            ("server_name app.example.com;", "server_name localhost;".to_owned()),
            ("127.0.0.1:8080", format!("127.0.0.1:{tessera}")),
            ("127.0.0.1:3000", format!("127.0.0.1:{upstream}")),
        ]
    };
    std::fs::write(dir.join("conf.d/app.conf"), example("nginx/app.conf", &common(app))).unwrap();
    // The server for one account: its id goes in once the scenario has made the account.
    let mut acct = common(acct_app);
    acct.push(("?require=second_factor", "?require=password&account=ACCOUNT_ID".to_owned()));
    std::fs::write(dir.join("conf.d/acct.conf.in"), example("nginx/app.conf", &acct)).unwrap();
    let conf = dir.join("nginx.conf").display().to_string();
    let args = ["-p", &d.to_string(), "-c", &conf, "-e", &format!("{d}/error.log")].map(str::to_owned);
    let _nginx = Killed(
        Command::new("nginx").args(&args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("nginx"),
    );
    wait_for_port(app, "nginx");
    let mut reload = args.to_vec();
    reload.extend(["-s".to_owned(), "reload".to_owned()]);

    let out = scenario(
        "nginx",
        &[
            ("BASE_URL", base.clone()),
            ("APP_URL", format!("http://localhost:{app}")),
            ("ACCOUNT_APP_URL", format!("http://localhost:{acct_app}")),
            ("ACCOUNT_CONF", dir.join("conf.d/acct.conf").display().to_string()),
            ("NGINX_BIN", "nginx".to_owned()),
            ("NGINX_RELOAD", serde_json::to_string(&reload).unwrap()),
            ("DATA_DIR", data.path().display().to_string()),
            ("MAIL_DIR", sink.dir.display().to_string()),
        ],
        &dir.join("error.log"),
    );
    let steps = std::fs::read_to_string(out.join("steps-nginx.txt")).unwrap();
    assert_eq!(steps.lines().count(), 5, "{steps}");
    loud(&format!("nginx forward-auth test passed; screenshots in {}", out.display()));
}

/// Caddy with `tls internal` in front of Tessera's pages (https://auth.tessera.test) and an app
/// (https://app.tessera.test), the made-up domain resolved by Chromium: the sign-in's domain-wide
/// cookie is what lets the app's host in.
#[test]
fn caddy_forward_auth_across_subdomains() {
    if !can_run("caddy") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let sink = MailSink::start(&data.path().join("smtp-received"));
    let (tessera, https, http, upstream) = (free_port(), free_port(), free_port(), echo_app());
    let base = format!("https://auth.tessera.test:{https}");
    let env = [
        ("TESSERA_SMTP_URL", sink.url.as_str()),
        ("TESSERA_PUBLIC_URL", base.as_str()),
        ("TESSERA_FORWARD_AUTH_DOMAIN", "tessera.test"),
        ("TESSERA_COOKIE_DOMAIN", "tessera.test"),
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_WEB_RATE_LIMIT_PER_MINUTE", "200"),
    ];
    let _tessera = serve(data.path(), tessera, &env);

    let dir = data.path().join("caddy");
    std::fs::create_dir_all(&dir).unwrap();
    let global = format!(
        "{{\n\tadmin off\n\tskip_install_trust\n\thttp_port {http}\n\thttps_port {https}\n\t\
         auto_https disable_redirects\n\tstorage file_system {{\n\t\troot {}\n\t}}\n}}",
        dir.join("storage").display()
    );
    let caddyfile = example(
        "caddy/Caddyfile",
        &[
            ("{\n\t# (The test adds its own ports, `admin off` and `skip_install_trust` here.)\n}", global),
            ("auth.example.com {", format!("auth.tessera.test:{https} {{")),
            ("app.example.com {", format!("app.tessera.test:{https} {{")),
            ("127.0.0.1:8080", format!("127.0.0.1:{tessera}")),
            ("127.0.0.1:3000", format!("127.0.0.1:{upstream}")),
        ],
    );
    std::fs::write(dir.join("Caddyfile"), caddyfile).unwrap();
    let _caddy = Killed(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
            .spawn()
            .expect("caddy"),
    );
    wait_for_port(https, "caddy");

    let out = scenario(
        "caddy",
        &[
            ("BASE_URL", base.clone()),
            ("APP_URL", format!("https://app.tessera.test:{https}")),
            ("DATA_DIR", data.path().display().to_string()),
            ("MAIL_DIR", sink.dir.display().to_string()),
        ],
        &dir.join("caddy.log"),
    );
    let steps = std::fs::read_to_string(out.join("steps-caddy.txt")).unwrap();
    assert_eq!(steps.lines().count(), 5, "{steps}");
    loud(&format!("caddy forward-auth test passed; screenshots in {}", out.display()));
}
