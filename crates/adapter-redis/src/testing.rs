//! The Redis test harness (feature `testing`), shared by this crate's tests and the
//! workspace's end-to-end tests.
//!
//! [`redis_url`] finds a server, in this order:
//!
//! 1. `SPOOL_TEST_REDIS_URL`, when set (the harness never flushes or reconfigures it);
//! 2. a `redis-server` binary on `PATH`, spawned once per test process on a free loopback
//!    port with its own temporary directory and no persistence, stopped when the process
//!    exits (the server runs under a small shell watchdog that stops it — and removes its
//!    directory — when our end of its stdin closes, even if the test process is killed);
//! 3. otherwise it panics with how to get one (testcontainers is not used).
//!
//! Tests isolate themselves with [`unique_prefix`], so they run in parallel on one server.
//! Tests that need a server of their own (restart, ACL, TLS) use [`RedisServer::spawn_with`];
//! tests of a production configuration file (`deploy/redis.conf`) use
//! [`RedisServer::spawn_with_config`].
//!
//! ## Redis Cluster
//!
//! [`cluster_seeds`] finds a cluster the same way:
//!
//! 1. `SPOOL_TEST_REDIS_CLUSTER` (`host:port,host:port`), when set — never flushed or
//!    reconfigured;
//! 2. otherwise one [`RedisCluster`] per test process: six `redis-server --cluster-enabled yes`
//!    nodes on free loopback ports (client and bus port), each in its own temporary directory
//!    without persistence, joined by `redis-cli --cluster create --cluster-replicas 1` into
//!    3 primaries + 3 replicas, and ready once every node reports `cluster_state:ok` and every
//!    primary has a replica that acknowledges writes (`WAIT`; bounded polling). The nodes run
//!    under the same watchdog as [`RedisServer`], so they stop when the test process ends,
//!    however it ends.
//!
//! Tests that kill or restart nodes spawn a cluster of their own with
//! [`RedisCluster::spawn_with`].

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

/// The environment variable naming an existing Redis Cluster for tests (comma-separated seeds).
pub const CLUSTER_VAR: &str = "SPOOL_TEST_REDIS_CLUSTER";

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
    config_file: Option<PathBuf>,
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
        Self::spawn_from(None, args)
    }

    /// Spawns `redis-server <config> --port <free> --bind 127.0.0.1 --dir <temp dir>
    /// --logfile redis.log <args>`: the file's settings (persistence included) apply, except
    /// where the harness or `args` override them. Readiness counts a `NOAUTH` answer as up,
    /// so the file may disable the `default` user.
    ///
    /// # Errors
    /// As for [`RedisServer::spawn`], or when the server refuses the file.
    pub fn spawn_with_config(config: &Path, args: &[&str]) -> Result<Self, String> {
        Self::spawn_from(Some(config.to_path_buf()), args)
    }

    fn spawn_from(config_file: Option<PathBuf>, args: &[&str]) -> Result<Self, String> {
        let binary = find_binary().ok_or_else(|| HOW_TO_GET_REDIS.to_owned())?;
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = Self {
                port,
                dir: tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?,
                args: args.iter().map(|s| (*s).to_owned()).collect(),
                config_file: config_file.clone(),
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
            stop_watchdog(&mut child); // the watchdog stops redis-server, keeps the directory
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
        // `read` returns when a line arrives ([`stop_watchdog`]) or our end of stdin closes
        // (this process dying or exiting with the server still in a static); either way the
        // watchdog stops the server. Only in the second case does it also remove the
        // directory, which no `Drop` will remove then.
        let watchdog = r#"dir="$1"; bin="$2"; shift 2; "$bin" "$@" & rs=$!; read _line; kept=$?; kill "$rs" 2>/dev/null; wait "$rs"; [ "$kept" = 0 ] || rm -rf "$dir""#;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(watchdog)
            .arg("sh")
            .arg(&dir)
            .arg(binary);
        match &self.config_file {
            // The file must come first; its persistence settings stay in force.
            Some(file) => command.arg(file),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        let mut child = command
            .args(["--port", &port, "--bind", "127.0.0.1"])
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
        stop_watchdog(&mut child);
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

/// Tells the watchdog to stop the server and keep its directory (for a restart, or for the
/// `TempDir` to remove).
fn stop_watchdog(child: &mut Child) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
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
    find_program("redis-server")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Whether a plain server answers `PING` on `port` (`NOAUTH` counts: the server is up, its
/// `default` user is off).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
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
    for_tests(RedisConfig::new(redis_url()), limits)
}

/// `config` with a unique prefix, `limits`, a small pool and short timeouts.
fn for_tests(config: RedisConfig, limits: StoreLimits) -> RedisConfig {
    let mut config = config.prefix(unique_prefix()).limits(limits);
    config.pool_size = 2;
    config.connect_timeout = Duration::from_secs(5);
    config.command_timeout = Duration::from_secs(5);
    config
}

/// Connects, or panics naming `what` and where.
async fn connect_for_tests(config: RedisConfig, what: &str) -> RedisBackend {
    match RedisBackend::connect(config.clone()).await {
        Ok(b) => b,
        Err(e) => panic!(
            "cannot connect to the test {what} at {}: {e}",
            config.redacted_url()
        ),
    }
}

/// A backend on the shared test server with a unique prefix.
///
/// # Panics
/// When no server can be found or connected to.
pub async fn backend(limits: StoreLimits) -> RedisBackend {
    connect_for_tests(test_config(limits), "redis").await
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------------

const HOW_TO_GET_A_CLUSTER: &str =
    "no Redis Cluster for the tests: set SPOOL_TEST_REDIS_CLUSTER=host:port,host:port \
     (a cluster you may write to under random prefixes), or install redis-server and redis-cli \
     (Redis 7 or later; Debian/Ubuntu: `apt-get install redis-server`) so the tests can spawn \
     their own";

/// Settings of a spawned cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `cluster-node-timeout`: how long a silent node takes to count as failed (so, roughly,
    /// how fast a replica is promoted).
    pub node_timeout: Duration,
    /// Longest wait for the cluster to become ready.
    pub ready_within: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_secs(5),
            ready_within: Duration::from_secs(60),
        }
    }
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node ID.
    pub id: String,
    /// Client port.
    pub port: u16,
    /// Whether the node is a primary (`master` flag).
    pub primary: bool,
    /// Whether the node is flagged `fail` or `fail?`.
    pub failing: bool,
    /// The primary's ID, for a replica.
    pub primary_id: Option<String>,
    /// Slot ranges served (primaries).
    pub slots: Vec<(u16, u16)>,
}

/// A local Redis Cluster of 3 primaries and 3 replicas owned by a test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    options: ClusterOptions,
}

impl RedisCluster {
    /// Spawns a cluster with the default options.
    ///
    /// # Errors
    /// When `redis-server` / `redis-cli` are missing or the cluster does not become ready.
    pub fn spawn() -> Result<Self, String> {
        Self::spawn_with(&ClusterOptions::default())
    }

    /// Spawns a cluster: six nodes, `redis-cli --cluster create --cluster-replicas 1`, then
    /// waits until it is ready (see [`RedisCluster::wait_ready`]).
    ///
    /// # Errors
    /// As for [`RedisCluster::spawn`].
    pub fn spawn_with(options: &ClusterOptions) -> Result<Self, String> {
        let cli = find_program("redis-cli").ok_or_else(|| HOW_TO_GET_A_CLUSTER.to_owned())?;
        if find_binary().is_none() {
            return Err(HOW_TO_GET_A_CLUSTER.to_owned());
        }
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(spawn_cluster_node(options)?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = Self {
            nodes,
            options: options.clone(),
        };
        cluster.wait_ready(options.ready_within)?;
        Ok(cluster)
    }

    /// The seed list of every node, `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client ports of all nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The options the cluster was spawned with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// A plain connection to the node on `port`.
    ///
    /// # Errors
    /// When the node does not accept it.
    pub fn connection(&self, port: u16) -> Result<redis::Connection, String> {
        node_connection(port)
    }

    /// `CLUSTER NODES` as seen by the node on `port`.
    ///
    /// # Errors
    /// When the node does not answer.
    pub fn nodes_seen_by(&self, port: u16) -> Result<Vec<NodeInfo>, String> {
        let mut con = node_connection(port)?;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut con)
            .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
        Ok(parse_cluster_nodes(&text))
    }

    /// The port of the primary serving `slot`, as the live node `ask` sees it, with the ports
    /// of the replicas whose link to it is up and in sync (from the primary's own
    /// `INFO replication`, which does not lag behind like the gossiped view).
    ///
    /// # Errors
    /// When `ask` or the primary does not answer or no healthy primary serves the slot.
    pub fn primary_of_slot(&self, ask: u16, slot: u16) -> Result<(u16, Vec<u16>), String> {
        let nodes = self.nodes_seen_by(ask)?;
        let primary = slot_owner(&nodes, slot)
            .ok_or_else(|| format!("node {ask} knows no healthy primary for slot {slot}"))?;
        let mut con = node_connection(primary)?;
        let replication: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut con)
            .map_err(|e| format!("INFO replication on {primary}: {e}"))?;
        let replicas = replication
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .filter_map(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix("port="))
                    .and_then(|p| p.parse().ok())
            })
            .collect();
        Ok((primary, replicas))
    }

    /// The PID of the `redis-server` on `port` (from `INFO server`).
    ///
    /// # Errors
    /// When the node does not answer.
    pub fn pid(&self, port: u16) -> Result<u32, String> {
        let mut con = node_connection(port)?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut con)
            .map_err(|e| format!("INFO on {port}: {e}"))?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no process_id in INFO of {port}"))
    }

    /// Kills the node on `port` with SIGKILL (no shutdown, no goodbye to the cluster) and
    /// waits until its port refuses connections.
    ///
    /// # Errors
    /// When the node cannot be found or does not die.
    pub fn kill(&mut self, port: u16) -> Result<(), String> {
        let pid = self.pid(port)?;
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -KILL {pid} failed: {status}"));
        }
        poll(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
                .ok_or_else(|| format!("node {port} still accepts connections"))
        })
    }

    /// Starts the node on `port` again (same directory, so same node ID and `nodes.conf`),
    /// after [`RedisCluster::kill`]. It rejoins the cluster by itself.
    ///
    /// # Errors
    /// When there is no such node or it does not come up.
    pub fn restart(&mut self, port: u16) -> Result<(), String> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .ok_or_else(|| format!("no node on port {port}"))?;
        node.stop();
        node.start()
    }

    /// Waits until every node answers and reports `cluster_state:ok` with all 16384 slots
    /// served, there are three primaries, and every primary has a replica whose link is up
    /// and in sync (`state=online`) and that acknowledges a probe write (`SET` with a 1 s TTL
    /// on a harness key outside any test prefix, then `WAIT 1`). Polls every 50 ms, at most
    /// `within`.
    ///
    /// # Errors
    /// With the last thing that was not ready.
    pub fn wait_ready(&self, within: Duration) -> Result<(), String> {
        poll(within, || self.ready())
    }

    fn ready(&self) -> Result<(), String> {
        let mut primaries = 0;
        for port in self.ports() {
            let mut con = node_connection(port)?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut con)
                .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
            for expected in [
                "cluster_state:ok",
                "cluster_slots_ok:16384",
                "cluster_known_nodes:6",
            ] {
                if !info.lines().any(|l| l.trim() == expected) {
                    return Err(format!("node {port}: not yet {expected}"));
                }
            }
            let replication: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .map_err(|e| format!("INFO replication on {port}: {e}"))?;
            if replication.lines().any(|l| l.trim() == "role:master") {
                primaries += 1;
                let links: Vec<&str> = replication
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("ip="))
                    .collect();
                if links.is_empty() || links.iter().any(|l| !l.contains("state=online")) {
                    return Err(format!("primary {port}: replica not in sync: {links:?}"));
                }
                self.replica_acknowledges(port, &mut con)?;
            } else if !replication
                .lines()
                .any(|l| l.trim() == "master_link_status:up")
            {
                return Err(format!("replica {port}: link to its primary is not up"));
            }
        }
        if primaries != 3 {
            return Err(format!("{primaries} primaries instead of 3"));
        }
        Ok(())
    }
}

impl RedisCluster {
    /// A write on `primary` that `WAIT 1` sees acknowledged: right after a replica (re)syncs,
    /// `INFO` already says `state=online` while the first `WAIT` can still time out.
    fn replica_acknowledges(
        &self,
        primary: u16,
        con: &mut redis::Connection,
    ) -> Result<(), String> {
        let nodes = self.nodes_seen_by(primary)?;
        let own = nodes
            .iter()
            .find(|n| n.port == primary && n.primary)
            .map(|n| n.slots.clone())
            .unwrap_or_default();
        let key = (0..1_000_000)
            .map(|i| format!("spool-harness:ack-probe:{i}"))
            .find(|k| {
                let slot = key_slot(k);
                own.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .ok_or_else(|| format!("primary {primary} serves no slot"))?;
        redis::cmd("SET")
            .arg(&key)
            .arg("1")
            .arg("PX")
            .arg(1000)
            .exec(con)
            .map_err(|e| format!("probe write on {primary}: {e}"))?;
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(200)
            .query(con)
            .map_err(|e| format!("WAIT on {primary}: {e}"))?;
        if acked < 1 {
            return Err(format!(
                "primary {primary}: the replica does not acknowledge writes yet"
            ));
        }
        Ok(())
    }
}

/// Repeats `check` every 50 ms until it succeeds or `within` has passed.
fn poll<T>(within: Duration, mut check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!("not ready after {within:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn node_connection(port: u16) -> Result<redis::Connection, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .map_err(|e| format!("node {port}: {e}"))?;
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("node {port}: {e}"))
}

/// One cluster node: a [`RedisServer`] with cluster mode on and its bus on a free port.
fn spawn_cluster_node(options: &ClusterOptions) -> Result<RedisServer, String> {
    let timeout = options.node_timeout.as_millis().to_string();
    let mut last = String::new();
    for _ in 0..5 {
        let bus = free_port()?.to_string();
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
            "--cluster-port",
            &bus,
            // Any replica may take over, however long its link was down.
            "--cluster-replica-validity-factor",
            "0",
            // Replicas sync at once (the default waits 5 s for more replicas to join).
            "--repl-diskless-sync-delay",
            "0",
        ];
        match RedisServer::spawn_with(&args) {
            Ok(node) => return Ok(node),
            Err(e) => last = e,
        }
    }
    Err(format!("a cluster node did not start: {last}"))
}

/// Parses `CLUSTER NODES`.
fn parse_cluster_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?;
            let port = addr.rsplit_once(':')?.1.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|one| (one, one)),
                })
                .collect();
            Some(NodeInfo {
                id: f[0].to_owned(),
                port,
                primary: flags.contains(&"master"),
                failing: flags.iter().any(|fl| *fl == "fail" || *fl == "fail?"),
                primary_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// The port of the healthy primary serving `slot` in `nodes`.
pub fn slot_owner(nodes: &[NodeInfo], slot: u16) -> Option<u16> {
    nodes
        .iter()
        .find(|n| n.primary && !n.failing && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|n| n.port)
}

/// `CLUSTER NODES` from the first seed of `seeds` (`host:port,...`) that answers, with that
/// seed's host (the nodes' ports are on it for a local cluster).
///
/// # Errors
/// When no seed answers.
pub fn cluster_nodes(seeds: &str) -> Result<(String, Vec<NodeInfo>), String> {
    let mut last = format!("no seed in {seeds:?}");
    for seed in seeds.split(',') {
        let seed = seed
            .trim()
            .trim_start_matches("redis://")
            .trim_end_matches('/');
        let Some((host, _port)) = seed.rsplit_once(':') else {
            continue;
        };
        let attempt = redis::Client::open(format!("redis://{seed}/"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut con| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut con));
        match attempt {
            Ok(text) => {
                return Ok((
                    host.trim_matches(['[', ']']).to_owned(),
                    parse_cluster_nodes(&text),
                ));
            }
            Err(e) => last = format!("{seed}: {e}"),
        }
    }
    Err(last)
}

/// The Redis Cluster hash slot of `key` (CRC16 of its hash tag, modulo 16384).
pub fn key_slot(key: &str) -> u16 {
    crate::keys::slot(key.as_bytes())
}

/// The seeds of the cluster every cluster test of this process shares:
/// `SPOOL_TEST_REDIS_CLUSTER` or one spawned cluster.
///
/// # Panics
/// When there is neither, with instructions.
pub fn cluster_seeds() -> String {
    static SHARED: OnceLock<Result<(String, Option<RedisCluster>), String>> = OnceLock::new();
    let found = SHARED.get_or_init(|| {
        if let Ok(seeds) = std::env::var(CLUSTER_VAR) {
            if !seeds.trim().is_empty() {
                return Ok((seeds, None));
            }
        }
        let cluster = RedisCluster::spawn()?;
        Ok((cluster.seeds(), Some(cluster)))
    });
    match found {
        Ok((seeds, _)) => seeds.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A config for the shared test cluster with a unique prefix, short timeouts and `limits`.
///
/// # Panics
/// When the seed list does not parse.
pub fn cluster_test_config(limits: StoreLimits) -> RedisConfig {
    let seeds = cluster_seeds();
    match RedisConfig::cluster(&seeds) {
        Ok(c) => for_tests(c, limits),
        Err(e) => panic!("{CLUSTER_VAR}={seeds:?}: {e}"),
    }
}

/// A backend on the shared test cluster with a unique prefix.
///
/// # Panics
/// When no cluster can be found or connected to.
pub async fn cluster_backend(limits: StoreLimits) -> RedisBackend {
    connect_for_tests(cluster_test_config(limits), "cluster").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_parse() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,hostname2 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,hostname1 myself,master - 0 0 1 connected 0-5460 16000 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 1426238316232 1426238315226 5 disconnected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert!(!nodes[0].primary);
        assert_eq!(nodes[0].port, 30004);
        assert_eq!(
            nodes[0].primary_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert!(nodes[2].primary && !nodes[2].failing);
        assert_eq!(nodes[2].slots, vec![(0, 5460), (16000, 16000)]);
        assert!(nodes[3].primary && nodes[3].failing);
        assert!(nodes[3].slots.is_empty());
    }
}
