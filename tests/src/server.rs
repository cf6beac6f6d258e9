//! [`TestServer`]: `spool serve`'s router on a real socket, in process.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, RequestBuilder};
use spool_adapter_memory::TokioClock;
use spool_adapter_redis::testing;
use spool_app::config::{Config, EnvLayer};
use spool_app::http::{serve, AppState, HttpOptions};
use spool_app::telemetry::Metrics;
use spool_app::{memory_backends, Backends, Spool};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which adapter backs a [`TestServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In process memory.
    Memory,
    /// A real Redis from the harness, under a fresh key prefix.
    Redis,
}

/// How to configure a [`TestServer`]: a TOML configuration (as `spool serve --config`
/// reads it) plus the HTTP options that have no configuration setting.
#[derive(Debug, Clone, Default)]
pub struct TestSetup {
    toml: String,
    sse_per_ip: Option<usize>,
    sse_keep_alive: Option<Duration>,
}

impl TestSetup {
    /// Defaults: no rate limits, no API keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// The configuration file's text.
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    /// The per-IP SSE cap.
    pub fn sse_per_ip(mut self, n: usize) -> Self {
        self.sse_per_ip = Some(n);
        self
    }

    /// The SSE keep-alive interval.
    pub fn sse_keep_alive(mut self, d: Duration) -> Self {
        self.sse_keep_alive = Some(d);
        self
    }
}

/// The HTTP server on `127.0.0.1:<free port>`, serving with connect info like `spool serve`.
/// Stopped (gracefully) when dropped.
pub struct TestServer {
    base: String,
    client: Client,
    spool: Spool,
    metrics: Metrics,
    backend: Backend,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("base", &self.base)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, TestSetup::new()).await
    }

    /// A server configured by `setup`.
    ///
    /// # Panics
    /// When the configuration is bad or no Redis can be found (with instructions).
    pub async fn start_with(backend: Backend, setup: TestSetup) -> Self {
        let config = Config::from_toml_str(&setup.toml, &EnvLayer::default())
            .unwrap_or_else(|e| panic!("bad test configuration: {e}"));
        let settings = config
            .validate()
            .unwrap_or_else(|e| panic!("bad test configuration: {e}"));
        let backends = match backend {
            Backend::Memory => memory_backends(&settings.limits, Arc::new(TokioClock::new())),
            Backend::Redis => {
                let b = testing::backend(settings.limits.clone()).await;
                Backends {
                    name: "redis",
                    cache: Arc::new(b.cache()),
                    limiter: Arc::new(b.rate_limiter()),
                    queue: Arc::new(b.queue()),
                    progress: Arc::new(b.progress()),
                    health: Arc::new(b.health()),
                }
            }
        };
        let spool = Spool::from_backends(backends, &config)
            .unwrap_or_else(|e| panic!("cannot build the services: {e}"));
        let mut options = HttpOptions::from_config(&config.http)
            .unwrap_or_else(|e| panic!("bad http options: {e}"));
        if let Some(n) = setup.sse_per_ip {
            options.max_sse_streams_per_ip = n;
        }
        if let Some(d) = setup.sse_keep_alive {
            options.sse_keep_alive = d;
        }
        let metrics = Metrics::new();
        let state = AppState::new(spool.clone(), metrics.clone(), options);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async move {
            let _ = rx.await;
        }));
        let client = Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"));
        Self {
            base: format!("http://{addr}"),
            client,
            spool,
            metrics,
            backend,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The HTTP client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> RequestBuilder {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// `POST /v1/queues/{queue}/tasks` with `body` (and `key` as the bearer key, if any);
    /// the created task.
    ///
    /// # Panics
    /// When the answer is not 201 with a JSON task.
    pub async fn enqueue(
        &self,
        key: Option<&str>,
        queue: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let mut req = self.post_json(&format!("/v1/queues/{queue}/tasks"), body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let (status, task) = answer(req).await;
        assert_eq!(status, 201, "enqueue: {task}");
        task
    }

    /// Reserves the next task of `queue` and fails it for good with `error`; the dead task.
    ///
    /// # Panics
    /// When nothing is ready or a call does not answer as the contract says.
    pub async fn kill_next(&self, queue: &str, error: &str) -> serde_json::Value {
        let (status, lease) =
            answer(self.post(&format!("/v1/queues/{queue}/reserve?lease_ms=60000"))).await;
        assert_eq!(status, 200, "reserve: {lease}");
        let id = lease["task"]["id"].as_str().unwrap_or_default().to_owned();
        let (status, task) = answer(self.post_json(
            &format!("/v1/queues/{queue}/tasks/{id}/fail"),
            &serde_json::json!({"lease_token": lease["lease_token"], "error": error, "retry": false}),
        ))
        .await;
        assert_eq!(status, 200, "fail: {task}");
        assert_eq!(task["status"], "dead", "{task}");
        task
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.client.put(self.url(path))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }

    /// The services behind the server (to check that a refused request changed nothing).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stops the server gracefully and waits for it.
    ///
    /// # Panics
    /// When the server failed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("server failed: {e}"),
                Err(e) => panic!("server task failed: {e}"),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Sends `req`; the status and the JSON body.
///
/// # Panics
/// When the request fails or the body is not JSON.
async fn answer(req: RequestBuilder) -> (u16, serde_json::Value) {
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, body)
}
