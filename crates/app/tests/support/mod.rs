//! Running the `spool` binary as a process in tests: a clean environment, `spool serve` on a
//! free loopback port (its address read from its log), and a graceful stop with SIGTERM.

#![allow(dead_code)] // each test binary uses a part of it

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The `spool` binary with no inherited `SPOOL_*`, `OTEL_*` or `RUST_LOG` variable, so
/// nothing from the caller's environment can change the outcome.
pub(crate) fn spool() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spool"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("SPOOL_") || k.starts_with("OTEL_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// A running `spool serve`: the process, its address, and the rest of its log. Killed
/// (SIGKILL) when dropped unless [`Served::terminate`] stopped it first.
pub(crate) struct Served {
    /// The process.
    pub(crate) child: Child,
    /// `host:port` it listens on.
    pub(crate) addr: String,
    /// The log lines after the "listening on" line.
    pub(crate) log: Option<Lines<BufReader<ChildStderr>>>,
}

/// Starts `spool serve` on `127.0.0.1:0` with `env` and waits for the line that names its
/// address.
pub(crate) fn serve(env: &[(&str, &str)]) -> Served {
    let mut child = spool()
        .arg("serve")
        .env("SPOOL_HTTP_ADDR", "127.0.0.1:0")
        .env("SPOOL_TELEMETRY__LOG_FILTER", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spool serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("spool serve logs its address before anything else ends")
            .expect("readable log");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    Served {
        child,
        addr,
        log: Some(lines),
    }
}

impl Served {
    /// Keeps reading the log in the background so the server never blocks on a full pipe.
    pub(crate) fn drain_log(&mut self) {
        if let Some(lines) = self.log.take() {
            std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the remaining log.
    pub(crate) fn terminate(&mut self) -> (ExitStatus, Vec<String>) {
        terminate(&mut self.child);
        let rest = self
            .log
            .take()
            .map(|l| l.map_while(Result::ok).collect())
            .unwrap_or_default();
        (self.child.wait().expect("exits"), rest)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child`.
pub(crate) fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// One `GET` with `Connection: close`; the whole raw response.
pub(crate) fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reads");
    out
}
