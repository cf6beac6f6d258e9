//! The `spool` command line: `serve`, `worker`, `bench`.
//!
//! ```text
//! spool serve  [--config FILE]   the HTTP service (memory backend on 127.0.0.1:8080 by default)
//! spool worker [--config FILE]   the worker runtime with the built-in example handlers
//! spool bench  [--backend memory|redis] [--redis-url URL] [--duration T | --ops N]
//!              [--concurrency 1,64] [--json]   every operation next to the raw client
//! spool --version
//! ```
//!
//! Every setting also comes from `SPOOL_*` environment variables (see [`crate::config`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, HttpConfig};
use crate::http::{serve, AppState, HttpOptions};
use crate::telemetry::{self, Telemetry, TelemetryError};
use crate::worker::register_examples;
use crate::{Spool, WiringError};

/// `spool`: cache, rate limiter, task queues and progress tracking over HTTP.
#[derive(Debug, Parser)]
#[command(name = "spool", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (memory backend on 127.0.0.1:8080 without configuration).
    Serve(ConfigArgs),
    /// Run the worker runtime with the built-in example handlers until Ctrl-C / SIGTERM.
    Worker(ConfigArgs),
    /// Measure every operation on the configured backend.
    Bench(BenchArgs),
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// A TOML configuration file; `SPOOL_*` environment variables override it.
    #[arg(long, short, value_name = "FILE", env = "SPOOL_CONFIG")]
    pub config: Option<PathBuf>,
}

pub use crate::bench::BenchArgs;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A setting is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Telemetry could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The services could not be built.
    #[error(transparent)]
    Wiring(#[from] WiringError),
    /// Binding a public address without authentication.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and no API key is configured. \
         Add [[http.api_keys]] (id, sha256 of the key, projects) to the configuration, or listen \
         on 127.0.0.1 (SPOOL_HTTP_ADDR=127.0.0.1:8080)"
    )]
    InsecureBind {
        /// The address.
        addr: SocketAddr,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// The signal handlers cannot be installed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
    /// `spool bench` could not run or finish.
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
}

impl CliError {
    /// 2 for configuration mistakes, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::InsecureBind { .. } => 2,
            CliError::Wiring(WiringError::Config(_)) => 2,
            CliError::Bench(crate::bench::BenchError::Invalid(_)) => 2,
            _ => 1,
        }
    }
}

/// Refuses a non-loopback listen address while no API key is configured.
///
/// # Errors
/// [`CliError::InsecureBind`].
pub fn check_bind(http: &HttpConfig) -> Result<(), CliError> {
    if http.api_keys.is_empty() && !http.addr.ip().is_loopback() {
        return Err(CliError::InsecureBind { addr: http.addr });
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed by this call, before the
/// process announces that it is ready, so a signal sent right after that is never lost.
///
/// # Errors
/// [`CliError::Signal`] when a handler cannot be installed.
pub fn shutdown_trigger() -> Result<impl Future<Output = ()> + Send + 'static, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(CliError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(CliError::Signal)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("Ctrl-C received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(crate::worker::shutdown_signal())
    }
}

fn load(path: Option<&Path>) -> Result<(Config, Telemetry), CliError> {
    let config = Config::load(path)?;
    let telemetry = telemetry::init(&config.telemetry)?;
    Ok((config, telemetry))
}

/// Runs `cli`.
///
/// # Errors
/// What stopped the command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => run_serve(args.config.as_deref()).await,
        Command::Worker(args) => run_worker(args.config.as_deref()).await,
        Command::Bench(args) => run_bench(&args).await,
    }
}

/// Measures, then prints the table (or with `--json` exactly one JSON object) on stdout;
/// progress goes to stderr. No tracing subscriber is installed, so nothing but the
/// operations themselves is measured.
async fn run_bench(args: &BenchArgs) -> Result<(), CliError> {
    let options = args.options()?;
    let report = crate::bench::run(&options).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

async fn run_serve(path: Option<&Path>) -> Result<(), CliError> {
    let (config, telemetry) = load(path)?;
    check_bind(&config.http)?;
    let options = HttpOptions::from_config(&config.http)?;
    let spool = Spool::from_config(&config).await?;
    let addr = config.http.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let shutdown = shutdown_trigger()?;
    tracing::info!(
        addr = %local,
        backend = spool.backend(),
        auth = !options.api_keys.is_empty(),
        "spool serve listening on http://{local}"
    );
    let state = AppState::new(spool, telemetry.metrics().clone(), options);
    let served = serve(listener, state, shutdown).await;
    tracing::info!("spool serve stopped");
    telemetry.shutdown();
    served.map_err(CliError::Serve)
}

async fn run_worker(path: Option<&Path>) -> Result<(), CliError> {
    let (config, telemetry) = load(path)?;
    let spool = Spool::from_config(&config).await?;
    let runtime = register_examples(spool.worker()).build();
    let shutdown = shutdown_trigger()?;
    tracing::info!(
        backend = spool.backend(),
        worker_id = %runtime.worker_id(),
        "spool worker running the example handlers; Ctrl-C or SIGTERM drains and stops"
    );
    let report = runtime.run_until(shutdown).await;
    tracing::info!(?report, "spool worker stopped");
    telemetry.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::CommandFactory;

    use super::*;
    use crate::config::ApiKeyConfig;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["spool", "serve", "--config", "x.toml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Serve(ConfigArgs { config: Some(ref p) }) if p == Path::new("x.toml"))
        );
        let cli = Cli::try_parse_from(["spool", "bench", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Bench(BenchArgs { json: true, .. })
        ));
        let e = Cli::try_parse_from(["spool", "--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(Cli::try_parse_from(["spool", "nope"]).is_err());
    }

    #[test]
    fn public_addresses_need_a_key() {
        let mut http = HttpConfig::default();
        assert!(check_bind(&http).is_ok(), "127.0.0.1 is fine");
        http.addr = "[::1]:8080".parse().unwrap();
        assert!(check_bind(&http).is_ok());
        http.addr = "0.0.0.0:8080".parse().unwrap();
        let e = check_bind(&http).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("0.0.0.0:8080"), "{e}");
        assert!(e.to_string().contains("api_keys"), "{e}");
        http.api_keys.push(ApiKeyConfig {
            id: "ci".into(),
            sha256: "ab".repeat(32),
            projects: vec![spool_domain::names::ProjectId::parse("p").unwrap()],
        });
        assert!(check_bind(&http).is_ok());
    }

    #[tokio::test]
    async fn bench_measures_the_memory_backend_and_refuses_bad_arguments() {
        let cli = Cli::try_parse_from([
            "spool",
            "bench",
            "--ops",
            "40",
            "--concurrency",
            "1,3",
            "--e2e-tasks",
            "25",
            "--only",
            "cache.get,queue.reserve_complete,queue.e2e",
            "--json",
        ])
        .unwrap();
        run(cli).await.unwrap();
        let e = run(Cli::try_parse_from(["spool", "bench", "--ops", "0"]).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("--ops"), "{e}");
    }
}
