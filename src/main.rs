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
    no_huge_pages();
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

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP=1`: mimalloc asks
/// the kernel for them on its arenas, and then a touched byte costs a 2 MiB page, which made a
/// 1,000,000-row `xaas plan` peak at 210 MiB instead of 140 (BENCHMARKS.md, issue 21). The
/// flag is the process's (every thread's mappings), set before the pull allocates anything
/// large; a kernel without it leaves things as they were.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none_or(|v| v != "1") {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}
