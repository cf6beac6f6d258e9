//! The worker process of the crash-safety test (`tests/tests/reliability/crash_safety.rs`).
//!
//! It reserves tasks of one queue straight through the Redis adapter's queue port, "runs"
//! each (sleeps for the payload's `work_ms`), then completes or fails it, and appends a record
//! of every step to its own log (see `spool_tests::chaos`): the test kills these processes
//! with `SIGKILL` at random and reads the logs afterwards to count executions and accepted
//! completions.
//!
//! ```text
//! crash_worker --url redis://127.0.0.1:PORT --prefix P --queue Q --log FILE --worker NAME
//!              [--concurrency N] [--lease-ms MS]
//! ```
//!
//! Payloads: `{"n": <u64>, "mode": "ok" | "fail" | "flaky", "work_ms": <u64>}` — `fail`
//! always fails (retried with the task's backoff, dead after `max_attempts`), `flaky` fails
//! its first attempt only. Completions carry the result `{"worker": NAME, "token": TOKEN}`,
//! so the store itself says which lease completed the task.
//!
//! The process exits when its standard input closes (the test holds the other end), so a
//! test that dies never leaves workers behind.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use spool_adapter_redis::{ReconnectSettings, RedisBackend, RedisConfig, RedisQueue};
use spool_domain::names::{KeyPrefix, QueueName, WorkerId};
use spool_domain::task::{Failure, Lease, Retry};
use spool_ports::{PortError, QueueStore, ReserveOptions};
use spool_tests::chaos::{Event, Record, RecordLog};

#[derive(Debug)]
struct Args {
    url: String,
    prefix: KeyPrefix,
    queue: QueueName,
    log: PathBuf,
    worker: WorkerId,
    concurrency: usize,
    lease: Duration,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut url = None;
        let mut prefix = None;
        let mut queue = None;
        let mut log = None;
        let mut worker = None;
        let mut concurrency = 2usize;
        let mut lease_ms = 2000u64;
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--url" => url = Some(value),
                "--prefix" => {
                    prefix = Some(KeyPrefix::parse(value.as_str()).map_err(|e| e.to_string())?)
                }
                "--queue" => queue = Some(QueueName::parse(value).map_err(|e| e.to_string())?),
                "--log" => log = Some(PathBuf::from(value)),
                "--worker" => worker = Some(WorkerId::parse(value).map_err(|e| e.to_string())?),
                "--concurrency" => {
                    concurrency = value.parse().map_err(|_| "bad --concurrency".to_owned())?
                }
                "--lease-ms" => {
                    lease_ms = value.parse().map_err(|_| "bad --lease-ms".to_owned())?
                }
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(Self {
            url: url.ok_or("--url is required")?,
            prefix: prefix.ok_or("--prefix is required")?,
            queue: queue.ok_or("--queue is required")?,
            log: log.ok_or("--log is required")?,
            worker: worker.ok_or("--worker is required")?,
            concurrency: concurrency.max(1),
            lease: Duration::from_millis(lease_ms.max(10)),
        })
    }
}

struct Worker {
    queue: RedisQueue,
    name: QueueName,
    worker: WorkerId,
    lease: Duration,
    log: Mutex<RecordLog>,
}

impl Worker {
    fn record(&self, event: Event, lease: &Lease) {
        let record = Record {
            event,
            task: lease.task.id.to_string(),
            token: lease.token.get(),
            attempt: lease.task.attempts,
        };
        // Each record is one write, so a lane that panicked while holding the lock left the
        // file intact: poisoning is ignored.
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.append(&record) {
            // The test cannot judge a run whose log is incomplete: stop loudly.
            eprintln!("cannot write the record log: {e}");
            std::process::exit(4);
        }
    }

    async fn lane(self: Arc<Self>) {
        let queues = [self.name.clone()];
        loop {
            let opts = ReserveOptions::new(self.lease)
                .wait(Duration::from_millis(500))
                .worker(self.worker.clone());
            match self.queue.reserve(&queues, opts).await {
                Ok(Some(lease)) => self.run(lease).await,
                Ok(None) => {}
                // Redis is down or restarting: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn run(&self, lease: Lease) {
        self.record(Event::Exec, &lease);
        let payload = &lease.task.payload;
        let work = payload["work_ms"].as_u64().unwrap_or(10);
        tokio::time::sleep(Duration::from_millis(work)).await;
        let mode = payload["mode"].as_str().unwrap_or("ok");
        let fails = mode == "fail" || (mode == "flaky" && lease.task.attempts <= 1);
        let task = lease.task.id;
        if fails {
            let failure = Failure {
                error: format!("{mode} task {} failed on purpose", payload["n"]),
                retry: Retry::Backoff,
            };
            match self
                .queue
                .fail(&self.name, task, lease.token, failure)
                .await
            {
                Ok(_) => self.record(Event::Failed, &lease),
                Err(PortError::LeaseLost { .. }) => self.record(Event::Lost, &lease),
                // Unknown outcome; the lease runs out and the task is redelivered if the
                // failure was not recorded.
                Err(_) => {}
            }
            return;
        }
        self.record(Event::Completing, &lease);
        let result = json!({ "worker": self.worker.as_str(), "token": lease.token.get() });
        match self
            .queue
            .complete(&self.name, task, lease.token, Some(result))
            .await
        {
            Ok(_) => self.record(Event::Done, &lease),
            Err(PortError::LeaseLost { .. }) => self.record(Event::Lost, &lease),
            Err(_) => self.record(Event::Unknown, &lease),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crash_worker: {e}");
            return ExitCode::from(2);
        }
    };
    // Exit as soon as the parent's end of stdin closes (the test ended, however it ended).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let log = match RecordLog::open(&args.log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crash_worker: cannot open {}: {e}", args.log.display());
            return ExitCode::from(2);
        }
    };
    let mut config = RedisConfig::new(args.url.clone()).prefix(args.prefix.clone());
    config.pool_size = 2;
    config.connect_timeout = Duration::from_millis(500);
    config.command_timeout = Duration::from_secs(1);
    config.reconnect = ReconnectSettings {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: 0,
    };
    // Redis may be restarting right now: keep trying (the test stops this process).
    let backend = loop {
        match RedisBackend::connect(config.clone()).await {
            Ok(b) => break b,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                eprintln!("crash_worker: {e}");
                return ExitCode::from(3);
            }
        }
    };
    let worker = Arc::new(Worker {
        queue: backend.queue(),
        name: args.queue.clone(),
        worker: args.worker.clone(),
        lease: args.lease,
        log: Mutex::new(log),
    });
    let lanes: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(Arc::clone(&worker).lane()))
        .collect();
    for lane in lanes {
        let _ = lane.await;
    }
    ExitCode::SUCCESS
}
