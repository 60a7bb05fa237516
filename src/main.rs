//! The `xaas` binary: parse the command line, start logging, run. Everything else is in the
//! library so tests can drive it.

use std::io::IsTerminal;

use clap::Parser;

// mimalloc instead of glibc malloc: a pull allocates and frees millions of small strings,
// often on different threads (the CSV reader, the tokio workers), where glibc's allocator
// spent a third of `xaas plan`'s time (perf, bench/plan_memory.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;
use xaas::cli::{Cli, LogFormat};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // XAAS_LOG (or RUST_LOG) sets the filter, e.g. `XAAS_LOG=xaas=debug`.
    let filter = std::env::var("XAAS_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "xaas=info".to_string());
    // Colour only for a person at a terminal: logs written to a file or collected from a
    // container carry no escape codes. NO_COLOR (https://no-color.org) turns it off as well.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let code = xaas::cli::execute(cli).await;
    std::process::exit(code);
}
