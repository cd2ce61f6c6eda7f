//! A real SMTP server on 127.0.0.1 for tests that run the real binary: it accepts every
//! message and writes each one, as received, to `DIR/<n>.eml` (renamed into place when whole,
//! so a reader never sees half a message). `read_mailbox` and `wait_for_mail` read them back.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running sink (it stops with the test process).
pub struct MailSink {
    /// `smtp://127.0.0.1:PORT`, for `--smtp-url`.
    pub url: String,
    /// Where the messages land.
    pub dir: PathBuf,
}

impl MailSink {
    /// Listen on a free port of 127.0.0.1, writing messages to `dir` (created).
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("the sink's directory");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the sink");
        let url = format!("smtp://{}", listener.local_addr().expect("its address"));
        let count = Arc::new(AtomicU64::new(0));
        let out = dir.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (out, count) = (out.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = session(conn, &out, &count);
                });
            }
        });
        Self { url, dir: dir.to_path_buf() }
    }
}

/// One SMTP conversation: every command is accepted; DATA is saved (dot-unstuffed).
fn session(conn: std::net::TcpStream, out: &Path, count: &AtomicU64) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    w.write_all(b"220 tessera-testkit sink ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-sink\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n")?;
            let mut message = Vec::new();
            loop {
                line.clear();
                if lines.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l == "." {
                    break;
                }
                message.extend_from_slice(l.strip_prefix('.').filter(|_| l.starts_with("..")).unwrap_or(l).as_bytes());
                message.extend_from_slice(b"\r\n");
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            let tmp = out.join(format!("{n:06}.part"));
            std::fs::write(&tmp, &message)?;
            std::fs::rename(&tmp, out.join(format!("{n:06}.eml")))?;
            w.write_all(b"250 queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}
