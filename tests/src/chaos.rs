//! Crash-safety support: the record log each worker process of the crash-safety test writes
//! (`tests/src/bin/crash_worker.rs`), and signalling processes (`SIGKILL`, `SIGSTOP`,
//! `SIGCONT`).
//!
//! ## The record log
//!
//! One file per worker process, one line per event, appended with a single `write` call
//! each, unbuffered, so everything a worker wrote before a `SIGKILL` is in the file (the
//! kernel keeps it; the process only loses what it had not written yet):
//!
//! ```text
//! <event> <task id> <lease token> <attempt>
//! ```
//!
//! | event | written |
//! |---|---|
//! | `exec` | before the handler runs (one execution) |
//! | `completing` | just before `complete` is sent |
//! | `done` | after `complete` returned `Ok`: the store accepted this completion |
//! | `lost` | `complete` or `fail` returned `LeaseLost` (fenced off) |
//! | `unknown` | `complete` failed otherwise (e.g. Redis went down): the outcome is unknown |
//! | `failed` | `fail` returned `Ok` (a designed failure: retried or dead) |
//!
//! A line cut short by a kill is ignored by [`parse_log`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

/// What a worker did (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The handler started.
    Exec,
    /// `complete` is about to be sent.
    Completing,
    /// `complete` returned `Ok`.
    Done,
    /// `complete` or `fail` returned `LeaseLost`.
    Lost,
    /// `complete` failed with another error: outcome unknown.
    Unknown,
    /// `fail` returned `Ok`.
    Failed,
}

impl Event {
    /// The word in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Exec => "exec",
            Event::Completing => "completing",
            Event::Done => "done",
            Event::Lost => "lost",
            Event::Unknown => "unknown",
            Event::Failed => "failed",
        }
    }
}

impl FromStr for Event {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "exec" => Event::Exec,
            "completing" => Event::Completing,
            "done" => Event::Done,
            "lost" => Event::Lost,
            "unknown" => Event::Unknown,
            "failed" => Event::Failed,
            _ => return Err(()),
        })
    }
}

/// One line of a worker's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub event: Event,
    /// The task ID (text form).
    pub task: String,
    /// The lease token the worker held.
    pub token: u64,
    /// The attempt number the lease carried.
    pub attempt: u32,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.event.as_str(),
            self.task,
            self.token,
            self.attempt
        )
    }
}

/// An append-only record log, one `write` per record.
#[derive(Debug)]
pub struct RecordLog {
    file: File,
}

impl RecordLog {
    /// Opens (creating) `path` for appending.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file })
    }

    /// Appends one record as one line with a single `write_all` on the unbuffered file.
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let line = format!("{record}\n");
        self.file.write_all(line.as_bytes())
    }
}

/// Parses a log; lines that do not parse (a line cut short by a kill) are skipped.
pub fn parse_log(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let event = f.next()?.parse().ok()?;
            let task = f.next()?.to_owned();
            let token = f.next()?.parse().ok()?;
            let attempt = f.next()?.parse().ok()?;
            if f.next().is_some() || task.len() != 26 {
                return None;
            }
            Some(Record {
                event,
                task,
                token,
                attempt,
            })
        })
        .collect()
}

/// Sends `SIGKILL` to `pid` (no clean-up, no goodbye).
///
/// # Errors
/// When `kill` cannot be run or refuses.
pub fn sigkill(pid: u32) -> Result<(), String> {
    signal(pid, "KILL")
}

/// Sends the signal `name` (`KILL`, `STOP`, `CONT`, ...) to `pid` with `kill(1)`.
///
/// # Errors
/// When `kill` cannot be run or refuses (e.g. the process is gone).
pub fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid} failed: {status}"))
    }
}

/// The PID of the plain (no password) `redis-server` on `127.0.0.1:port`, from
/// `INFO server`.
///
/// # Errors
/// When the server does not answer.
pub fn redis_pid(port: u16) -> Result<u32, String> {
    let info = redis_command(port, &["INFO", "server"])?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no process_id in INFO of port {port}"))
}

/// Sends one command over a fresh plain connection and returns a bulk or simple string
/// reply as text (enough for `INFO`, `PING`).
///
/// # Errors
/// When the server does not answer or replies with an error.
pub fn redis_command(port: u16, args: &[&str]) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the reply".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(reply) = complete_reply(&buf)? {
            return Ok(reply);
        }
    }
}

/// The reply in `buf` when it is complete.
fn complete_reply(buf: &[u8]) -> Result<Option<String>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..eol]).into_owned();
    match head.as_bytes().first() {
        Some(b'+') => Ok(Some(head[1..].to_owned())),
        Some(b'-') => Err(head[1..].to_owned()),
        Some(b'$') => {
            let len: usize = head[1..]
                .parse()
                .map_err(|_| format!("bad bulk length {head:?}"))?;
            let body = eol + 2;
            if buf.len() < body + len + 2 {
                return Ok(None);
            }
            Ok(Some(
                String::from_utf8_lossy(&buf[body..body + len]).into_owned(),
            ))
        }
        _ => Err(format!("unexpected reply {head:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_lines_are_skipped() {
        let r = Record {
            event: Event::Completing,
            task: "01JABCDEFGHJKMNPQRSTVWXYZ0".to_owned(),
            token: 7,
            attempt: 2,
        };
        let text = format!("{r}\n{r}\ndone 01JABCDEFGHJKMNPQR");
        assert_eq!(parse_log(&text), vec![r.clone(), r]);
    }

    #[test]
    fn replies_parse() {
        assert_eq!(complete_reply(b"+PONG\r\n"), Ok(Some("PONG".to_owned())));
        assert_eq!(complete_reply(b"$3\r\nab"), Ok(None));
        assert_eq!(complete_reply(b"$3\r\nabc\r\n"), Ok(Some("abc".to_owned())));
        assert!(complete_reply(b"-ERR x\r\n").is_err());
    }
}
