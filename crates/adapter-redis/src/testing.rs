//! The Redis test harness (feature `testing`), shared by this crate's tests and the
//! workspace's end-to-end tests.
//!
//! [`redis_url`] finds a server, in this order:
//!
//! 1. `SPOOL_TEST_REDIS_URL`, when set (the harness never flushes or reconfigures it);
//! 2. a `redis-server` binary on `PATH`, spawned once per test process on a free loopback
//!    port with its own temporary directory and no persistence, stopped when the process
//!    exits (the server runs under a small shell watchdog that stops it when our end of its
//!    stdin closes, even if the test process is killed);
//! 3. otherwise it panics with how to get one (testcontainers is not used).
//!
//! Tests isolate themselves with [`unique_prefix`], so they run in parallel on one server.
//! Tests that need a server of their own (restart, ACL, TLS) use [`RedisServer::spawn_with`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use spool_domain::limits::StoreLimits;
use spool_domain::names::KeyPrefix;

use crate::{RedisBackend, RedisConfig};

/// The environment variable naming an existing server for tests.
pub const URL_VAR: &str = "SPOOL_TEST_REDIS_URL";

const HOW_TO_GET_REDIS: &str =
    "no Redis for the tests: set SPOOL_TEST_REDIS_URL=redis://127.0.0.1:6379 \
     (any server you may write to under random prefixes), or install a redis-server binary \
     on PATH (Debian/Ubuntu: `apt-get install redis-server`) so the tests can spawn their own";

/// A `redis-server` process owned by a test: its own port and directory, no persistence.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Spawns a plain server on a free loopback port.
    ///
    /// # Errors
    /// When no `redis-server` binary is found or it does not answer `PING` in time.
    pub fn spawn() -> Result<Self, String> {
        Self::spawn_with(&[])
    }

    /// Spawns a server with extra arguments (e.g. TLS settings); it always also listens on
    /// a plain loopback port, used to check readiness.
    ///
    /// # Errors
    /// As for [`RedisServer::spawn`].
    pub fn spawn_with(args: &[&str]) -> Result<Self, String> {
        let binary = find_binary().ok_or_else(|| HOW_TO_GET_REDIS.to_owned())?;
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = Self {
                port,
                dir: tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?,
                args: args.iter().map(|s| (*s).to_owned()).collect(),
                child: None,
            };
            match server.start_with(&binary) {
                Ok(()) => return Ok(server),
                Err(e) => last_err = e,
            }
        }
        Err(format!("redis-server did not start: {last_err}"))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (for certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server and waits for it to exit; [`RedisServer::start`] brings it back on
    /// the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take()); // the watchdog stops redis-server
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The port must be free before a restart.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts the server again on its port (after [`RedisServer::stop`]).
    ///
    /// # Errors
    /// When it does not come up.
    pub fn start(&mut self) -> Result<(), String> {
        let binary = find_binary().ok_or_else(|| HOW_TO_GET_REDIS.to_owned())?;
        let mut last = String::new();
        // The port may linger briefly after a stop; retry a few times.
        for _ in 0..20 {
            match self.start_with(&binary) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last)
    }

    fn start_with(&mut self, binary: &Path) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self.dir.path().to_string_lossy().into_owned();
        // `read` returns when our end of stdin closes (drop, or this process dying), then the
        // watchdog stops the server.
        let watchdog = r#"bin="$1"; shift; "$bin" "$@" & rs=$!; read _ignored; kill "$rs" 2>/dev/null; wait "$rs""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(watchdog)
            .arg("sh")
            .arg(binary)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &dir, "--logfile", "redis.log"])
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited ({status}): {log}"));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("redis-server on port {port} did not answer PING"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let steps = within.as_millis() / 20;
    for _ in 0..steps {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Whether a plain server answers `PING` on `port`.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// The server every test of this process shares: `SPOOL_TEST_REDIS_URL` or a spawned one.
///
/// # Panics
/// When there is neither, with instructions.
pub fn redis_url() -> String {
    static SHARED: OnceLock<Result<(String, Option<RedisServer>), String>> = OnceLock::new();
    let found = SHARED.get_or_init(|| {
        if let Ok(url) = std::env::var(URL_VAR) {
            if !url.is_empty() {
                return Ok((url, None));
            }
        }
        let server = RedisServer::spawn()?;
        Ok((server.url(), Some(server)))
    });
    match found {
        Ok((url, _)) => url.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A fresh random key prefix, so concurrent tests never see each other's keys.
pub fn unique_prefix() -> KeyPrefix {
    let name = format!("t{:016x}", rand::random::<u64>());
    KeyPrefix::parse(name).unwrap_or_default()
}

/// A config for the shared test server with a unique prefix, short timeouts and `limits`.
pub fn test_config(limits: StoreLimits) -> RedisConfig {
    let mut config = RedisConfig::new(redis_url())
        .prefix(unique_prefix())
        .limits(limits);
    config.pool_size = 2;
    config.connect_timeout = Duration::from_secs(5);
    config.command_timeout = Duration::from_secs(5);
    config
}

/// A backend on the shared test server with a unique prefix.
///
/// # Panics
/// When no server can be found or connected to.
pub async fn backend(limits: StoreLimits) -> RedisBackend {
    let config = test_config(limits);
    match RedisBackend::connect(config.clone()).await {
        Ok(b) => b,
        Err(e) => panic!(
            "cannot connect to the test redis at {}: {e}",
            config.redacted_url()
        ),
    }
}
