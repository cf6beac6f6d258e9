//! The `spool` binary: see [`spool_app::cli`].

use std::process::ExitCode;

use clap::Parser;
use spool_app::cli::{run, Cli};

/// jemalloc, not the system allocator: under glibc's malloc the RSS of a long-running
/// `spool serve` kept creeping (+18 % over 1M cache requests at a fixed key count, +14 % even
/// with one malloc arena) from fragmentation; with jemalloc it stays flat and the same load
/// runs faster (docs/PERFORMANCE.md, "`spool serve` memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spool: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spool: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
