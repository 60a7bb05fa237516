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
    quick_purge();
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

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (libmimalloc-sys names no constant
/// for it; the enum only grows at its end). A test checks it is the option mimalloc reads from
/// `MIMALLOC_PURGE_DELAY`.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's purge delay: how long freed memory stays resident before it is given back to
/// the OS. mimalloc 3 waits 1,000 ms; during a pull, memory is freed and taken again so fast
/// that a second's worth of it stayed resident: a 1,000,000-row `xaas plan` peaked at 111-123
/// MiB with it and at 96-100 with 10 ms, for about 0.2 s more (BENCHMARKS.md, issue 21).
/// `MIMALLOC_PURGE_DELAY` (milliseconds; 0 gives back at once, slower still) overrides it.
fn quick_purge() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option, which mimalloc reads atomically.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 10) };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = "XAAS_TEST_PURGE_DELAY_PROBE";

    /// A mimalloc upgrade that renumbered its options would make `quick_purge` set some other
    /// option and silently cost a 1M pull 25 MiB. A child process started with
    /// `MIMALLOC_PURGE_DELAY=777` must read 777 back through `PURGE_DELAY`, and one started
    /// without it must read the 10 `quick_purge` sets.
    #[test]
    fn purge_delay_is_the_option_mimalloc_reads_from_its_environment() {
        if let Ok(expected) = std::env::var(PROBE) {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                quick_purge();
            }
            // SAFETY: reads an integer option.
            let value = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
            assert_eq!(value.to_string(), expected, "mimalloc option {PURGE_DELAY}");
            return;
        }
        let name = "tests::purge_delay_is_the_option_mimalloc_reads_from_its_environment";
        for (env, expected) in [(Some("777"), "777"), (None, "10")] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child.args(["--exact", name, "--test-threads", "1"]).env(PROBE, expected);
            match env {
                Some(v) => child.env("MIMALLOC_PURGE_DELAY", v),
                None => child.env_remove("MIMALLOC_PURGE_DELAY"),
            };
            let out = child.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "MIMALLOC_PURGE_DELAY={env:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
