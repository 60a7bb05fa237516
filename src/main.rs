//! The `xaas` binary: parse the command line, start logging, run. Everything else is in the
//! library so tests can drive it.

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let code = xaas::cli::execute(cli).await;
    std::process::exit(code);
}
