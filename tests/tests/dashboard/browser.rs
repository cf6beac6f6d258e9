//! A real headless Chromium driven through `chromedriver` (WebDriver), for the dashboard
//! tests.
//!
//! Each [`Browser`] starts its own `chromedriver --port=<free port>` on 127.0.0.1 in a process
//! group of its own, and Chromium (`/usr/bin/chromium`, or `SPOOL_TEST_CHROMIUM`) with
//! `--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage`. [`Browser::close`]
//! ends the WebDriver session (Chromium exits); dropping the browser kills the driver's whole
//! process group, so a failed test leaves no Chromium behind.
//!
//! A missing `chromedriver` is a test failure saying how to install it, never a skip.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// How long any one wait for the page may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

const INSTALL_HINT: &str = "install Debian's Chromium and its driver: \
     `apt-get install -y chromium chromium-driver` (./scripts/test does this when they are missing)";

fn chromium_binary() -> String {
    if let Ok(path) = std::env::var("SPOOL_TEST_CHROMIUM") {
        return path;
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("no Chromium at /usr/bin/chromium (set SPOOL_TEST_CHROMIUM to another path); {INSTALL_HINT}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// `chromedriver`, killed with its process group on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn spawn() -> Self {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `chromedriver` ({e}): the dashboard tests need it; {INSTALL_HINT}")
            });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits (bounded) until the driver answers `GET /status` with `ready: true`.
    async fn ready(&mut self) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited at start with {status}; {INSTALL_HINT}");
            }
            if let Ok(res) = http.get(format!("{}/status", self.url)).send().await {
                if let Ok(body) = res.json::<serde_json::Value>().await {
                    if body["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
pub(crate) struct Browser {
    client: Client,
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub(crate) async fn start() -> Self {
        let binary = chromium_binary();
        let mut driver = Driver::spawn();
        driver.ready().await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,1100",
                    "--no-first-run",
                    "--no-proxy-server",
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"));
        Self {
            client,
            _driver: driver,
        }
    }

    /// Opens `url`.
    pub(crate) async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Waits (up to [`WAIT`]) until an element matches `css`; fails the test naming it.
    pub(crate) async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let body = self.text("body").await;
                panic!("no element matches {css} within {WAIT:?} ({e}); the page says:\n{body}")
            }
        }
    }

    /// The visible text of the first element matching `css` (empty when none does).
    pub(crate) async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// How many elements match `css`.
    pub(crate) async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Runs `script` in the page and returns its value.
    pub(crate) async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// A PNG of the viewport.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        self.client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("no screenshot: {e}"))
    }

    /// Ends the session (Chromium exits), then the driver.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}
