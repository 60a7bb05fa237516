//! The command line: `run`, `plan`, `approve`, `validate`, `check`, `serve`, `healthcheck`,
//! `mapping test|preview`, `demo` and `sim`.
//!
//! Every command is a function returning the process exit code, so tests can call them
//! without spawning the binary. See the README for the exit-code table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::{self, Settings};
use crate::sync::RunOptions;

/// The exit codes of a run belong to its report.
pub use crate::sync::report::{EXIT_FAILURE, EXIT_HELD, EXIT_OK, EXIT_REJECTED};
/// The command line itself was wrong (clap's code).
pub const EXIT_USAGE: i32 = 2;
/// The config or a mapping file is invalid; nothing was run.
pub const EXIT_CONFIG: i32 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "xaas",
    version,
    about = "Import any HR system of record into Okta (Anything-as-a-Source)"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "XAAS_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run each job once: pull, map, import into Okta, report.
    Run {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
        /// Run only this job.
        #[arg(long)]
        job: Option<String>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Send every user, not only what changed since Okta last confirmed it.
        #[arg(long)]
        full: bool,
        /// Release a run held by the deactivation or source-shrink safeguards, if it
        /// deactivates at most N users. Applies to this run only.
        #[arg(long, value_name = "N")]
        allow_deactivations: Option<u64>,
    },
    /// Approve a run a safeguard held: the job's next run that needs no more deactivations
    /// and creations than it did is released (once). `--resume` lifts a quarantine: the
    /// job's schedule runs it again.
    Approve {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        job: String,
        /// The held run's id (printed in its report).
        #[arg(long, required_unless_present = "resume")]
        run: Option<i64>,
        /// Lift the job's quarantine (after fixing what made it fail).
        #[arg(long)]
        resume: bool,
    },
    /// Show what `run` would send, sending nothing.
    Plan {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        job: Option<String>,
        /// `json` prints the full plan, every user included.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Plan a full resync.
        #[arg(long)]
        full: bool,
    },
    /// Check the config and every mapping it names. No network; reports every error.
    Validate {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
    },
    /// Check that every job's source can be reached and read (credentials, table, file, URL),
    /// and that Okta accepts the credentials and has each job's identity source (its open
    /// sessions and rate limit too). Reads at most a record or a page per source and one
    /// list of sessions per identity source; writes nothing anywhere.
    Check {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        job: Option<String>,
        /// Check the sources only, not Okta.
        #[arg(long)]
        skip_okta: bool,
    },
    /// Run as a daemon: each job on its cron schedule, the webhook HR systems push to,
    /// health and metrics. SIGTERM stops it cleanly; SIGHUP reloads the config.
    Serve {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
    },
    /// Ask a running daemon's `/healthz`: exits 0 when it answers 200, 1 otherwise (with the
    /// reason on stderr). For the container's `HEALTHCHECK`; the image has no curl.
    Healthcheck {
        #[arg(long, env = "XAAS_HEALTHCHECK_URL", default_value = DEFAULT_HEALTHCHECK_URL)]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Work on mapping files: run their tests, preview them on real records.
    Mapping {
        #[command(subcommand)]
        command: MappingCommand,
    },
    /// Start the Okta emulator in-process, import the sample users into it, print the report.
    Demo {
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Start the Okta emulator alone (for tests, benchmarks and trying things out).
    Sim {
        /// Address to listen on. Keep it on loopback.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Simulated seconds per real second (the 5-minute rule and 24 h expiry run this much faster).
        #[arg(long, default_value_t = 1.0)]
        clock_scale: f64,
        /// Latency added to every API call, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// API requests per minute before 429.
        #[arg(long, default_value_t = 600)]
        rate_limit: u32,
        /// How long a triggered session takes to process, in milliseconds.
        #[arg(long, default_value_t = 100)]
        processing_ms: u64,
        /// A valid SSWS token (repeatable).
        #[arg(long = "token", default_values_t = vec!["sim-token".to_string()])]
        tokens: Vec<String>,
        /// An identity source id that exists (repeatable).
        #[arg(long = "identity-source", default_values_t = vec!["0oasim0000000000000".to_string()])]
        identity_sources: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MappingCommand {
    /// Run the `tests:` of each mapping file; exits 1 when one fails, 4 when a file is invalid.
    Test {
        /// Mapping files (default: every `*.yaml` in `./mappings`).
        files: Vec<PathBuf>,
    },
    /// Map the first records of a job's real source and print them as JSON lines. Sends nothing.
    Preview {
        #[arg(long, short, env = "XAAS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        job: String,
        /// How many records to map.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

/// Run the parsed command line; returns the exit code.
pub async fn execute(cli: Cli) -> i32 {
    match cli.command {
        Command::Run { config, job, report, full, allow_deactivations } => {
            let options =
                RunOptions { full, allow_deactivations, announce: true, ..RunOptions::default() };
            run(&config, job.as_deref(), report.as_deref(), &options).await
        }
        Command::Approve { config, job, run, resume } => approve(&config, &job, run, resume),
        Command::Plan { config, job, format, full } => {
            let options = RunOptions { full, ..RunOptions::default() };
            plan(&config, job.as_deref(), format, &options).await
        }
        Command::Validate { config } => validate(&config),
        Command::Serve { config } => serve(&config).await,
        Command::Check { config, job, skip_okta } => {
            check(&config, job.as_deref(), skip_okta).await
        }
        Command::Healthcheck { url, timeout_secs } => {
            healthcheck(&url, std::time::Duration::from_secs(timeout_secs)).await
        }
        Command::Mapping { command: MappingCommand::Test { files } } => mapping_test(&files),
        Command::Mapping { command: MappingCommand::Preview { config, job, limit } } => {
            mapping_preview(&config, &job, limit).await
        }
        Command::Demo { report } => crate::demo::run(report.as_deref()).await,
        Command::Sim {
            listen,
            clock_scale,
            latency_ms,
            rate_limit,
            processing_ms,
            tokens,
            identity_sources,
        } => {
            let config = crate::sim::SimConfig {
                identity_sources,
                api_tokens: tokens,
                clock_scale,
                latency: std::time::Duration::from_millis(latency_ms),
                rate_limit_per_minute: rate_limit,
                processing_delay: std::time::Duration::from_millis(processing_ms),
                ..crate::sim::SimConfig::default()
            };
            sim(&listen, config).await
        }
    }
}

fn load_settings(config: &Path) -> Result<Settings, i32> {
    settings::load(config).map_err(|diags| {
        eprintln!("{}", diags.render_with_sources());
        eprintln!("{} problem(s) in the configuration; nothing was run", diags.0.len());
        EXIT_CONFIG
    })
}

fn select<'a>(settings: &'a Settings, job: Option<&str>) -> Result<Vec<&'a settings::Job>, i32> {
    settings.select_jobs(job).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

pub use crate::sync::jobs::{run_jobs, run_jobs_with, write_report};

async fn run(
    config: &Path,
    job: Option<&str>,
    report_path: Option<&Path>,
    options: &RunOptions,
) -> i32 {
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let jobs = match select(&settings, job) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let report = match run_jobs_with(&settings, &jobs, false, options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILURE;
        }
    };
    watch_runs(&settings, &report).await;
    prune_history(&settings).await;
    println!();
    print!("{}", report.render_text());
    if let Some(path) = report_path
        && let Err(e) = write_report(path, &report)
    {
        eprintln!("error: {e}");
        return EXIT_FAILURE;
    }
    report.exit_code()
}

/// A one-shot run counts toward its jobs' watch like a daemon's run (failing, quarantine,
/// recovery, held) and notifies; the deliveries get a bounded moment before the process
/// exits. It is a manual run: a quarantine does not stop it, and its success lifts one.
async fn watch_runs(settings: &Settings, report: &crate::sync::report::RunReport) {
    let mut store = match crate::state::open(&settings.state) {
        Ok(s) => s,
        Err(_) => return, // the run reported it already
    };
    let notifier = crate::daemon::notify::Notifier::new();
    for r in report.jobs.iter().filter(|r| r.run_id.is_some()) {
        let Some(job) = settings.jobs.iter().find(|j| j.name == r.job) else { continue };
        let notices =
            crate::daemon::watch::record_run(store.as_mut(), job, settings.notify.as_ref(), r);
        notifier.send(settings.notify.as_ref(), notices);
    }
    if let Some(n) = &settings.notify {
        let within = (n.timeout * n.attempts + Duration::from_secs(7)).min(Duration::from_secs(60));
        notifier.flush(within).await;
    }
}

/// A one-shot run applies `state.history` too, so a scheduled container keeps its state
/// bounded like the daemon does.
async fn prune_history(settings: &Settings) {
    let state = settings.state.clone();
    let pruned = tokio::task::spawn_blocking(move || {
        let mut store = crate::state::open(&state)?;
        crate::state::prune(store.as_mut(), &state.history, Duration::from_millis(5))
    })
    .await;
    match pruned {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the history"),
        Err(e) => tracing::warn!(error = %e, "the pruning task failed"),
    }
}

/// `xaas serve`: the daemon, until SIGTERM.
async fn serve(config: &Path) -> i32 {
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let control = crate::daemon::Control {
        shutdown: Box::pin(crate::daemon::shutdown_signal()),
        reload: crate::daemon::reload_signal(),
        bound: None,
    };
    match crate::daemon::serve(config, settings, control).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

/// `xaas approve`: mark a held run approved in the state store, and/or lift a quarantine.
fn approve(config: &Path, job: &str, run: Option<i64>, resume: bool) -> i32 {
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = select(&settings, Some(job)) {
        return code;
    }
    let mut store = match crate::state::open(&settings.state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the state store: {e}");
            return EXIT_FAILURE;
        }
    };
    if resume {
        match crate::daemon::watch::resume_job(store.as_mut(), job) {
            Ok(Some(q)) => println!(
                "resumed job {job}: quarantined since {} ({}); its schedule runs it again",
                q.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                q.reason
            ),
            Ok(None) => println!("job {job} was not quarantined: nothing to resume"),
            Err(e) => {
                eprintln!("error: cannot resume job {job}: {e}");
                return EXIT_FAILURE;
            }
        }
    }
    match run {
        Some(run) => approve_run(store.as_mut(), job, run),
        None => EXIT_OK,
    }
}

fn approve_run(store: &mut dyn crate::state::StateStore, job: &str, run: i64) -> i32 {
    let record = match store.run(job, run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILURE;
        }
    };
    let now = chrono::Utc::now();
    match store.approve(job, run, now) {
        Ok(()) => {
            let audit = crate::state::ApprovalRecord {
                job: job.to_string(),
                run,
                approved_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                approved_by: "cli".into(),
                remote_addr: None,
                approver: None,
            };
            if let Err(e) = store.record_approval(&audit) {
                eprintln!("warning: the approval is not in the audit trail: {e}");
            }
            if let Some(hold) = record.and_then(|r| r.hold) {
                println!(
                    "approved run {run} of job {job}: the next run may deactivate up to {} and create up to {} user(s)",
                    hold.deactivations, hold.creations
                );
                for r in hold.reasons {
                    println!("  it was held because: {r}");
                }
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

async fn plan(config: &Path, job: Option<&str>, format: OutputFormat, options: &RunOptions) -> i32 {
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let jobs = match select(&settings, job) {
        Ok(j) => j,
        Err(code) => return code,
    };
    match format {
        OutputFormat::Text => {
            let report = match run_jobs_with(&settings, &jobs, true, options).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_FAILURE;
                }
            };
            print!("{}", report.render_text());
            report.exit_code()
        }
        OutputFormat::Json => {
            let mut plans = Vec::new();
            let mut code = EXIT_OK;
            for job in jobs {
                let p = match crate::state::open_read_only(&settings.state) {
                    Ok(mut store) => {
                        let mut ctx = crate::sync::RunContext {
                            store: store.as_mut(),
                            okta: None,
                            spacing: None,
                            cancel: Default::default(),
                            base_dir: &settings.base_dir,
                        };
                        crate::sync::plan::build(&mut ctx, job, options).await
                    }
                    Err(e) => crate::sync::plan::PlanDocument::failed(
                        job,
                        &crate::sync::SyncError::state("open the state store")(e),
                    ),
                };
                code = code.max(p.exit_code());
                plans.push(p);
            }
            match serde_json::to_string_pretty(&plans) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("error: cannot encode the plan: {e}");
                    return EXIT_FAILURE;
                }
            }
            code
        }
    }
}

async fn check(config: &Path, job: Option<&str>, skip_okta: bool) -> i32 {
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let jobs = match select(&settings, job) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let mut code = EXIT_OK;
    for job in &jobs {
        let source = job.source.build(&settings.base_dir);
        match source.check().await {
            Ok(what) => println!("job {}: ok: {what}", job.name),
            Err(e) => {
                eprintln!("job {}: source check failed: {e}", job.name);
                code = EXIT_FAILURE;
            }
        }
    }
    if !skip_okta && !check_okta(&settings, &jobs).await {
        code = EXIT_FAILURE;
    }
    code
}

/// `xaas check`'s Okta part ([`crate::okta::check`]): one line per job, each failure with
/// what to fix. `false` when something failed.
async fn check_okta(settings: &Settings, jobs: &[&settings::Job]) -> bool {
    use crate::okta::check::{check_source, describe_open, is_credentials};
    let org = settings.okta.org_url.origin().ascii_serialization();
    let client = match settings.okta.build_client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("okta {org}: cannot check: {e}");
            return false;
        }
    };
    let how = match &settings.okta.auth {
        settings::Auth::ApiToken(_) => "the api token".to_string(),
        settings::Auth::OAuth { client_id, .. } => {
            format!("oauth app {client_id} (a token with the identity-source scopes was issued)")
        }
    };
    let mut ok = true;
    // Read-only, Okta cannot say whether the token may write; an OAuth token can only carry
    // the scopes asked for, so a configured list without the manage scope is caught here.
    if let settings::Auth::OAuth { scopes, .. } = &settings.okta.auth {
        let manage = crate::okta::auth::DEFAULT_SCOPES[0];
        if !scopes.is_empty() && !scopes.iter().any(|s| s == manage) {
            eprintln!(
                "okta {org}: okta.auth.scopes lacks {manage}, which every run needs to create sessions: add it, or leave scopes out for both defaults"
            );
            ok = false;
        }
    }
    let mut accepted = false;
    for job in jobs {
        let source = &job.identity_source_id;
        match check_source(&client, source).await {
            Ok(found) => {
                if !accepted {
                    println!("okta {org}: ok: credentials accepted: {how}");
                    accepted = true;
                }
                let open = if found.open.is_empty() {
                    "none".to_string()
                } else {
                    let now = chrono::Utc::now();
                    found.open.iter().map(|s| describe_open(s, now)).collect::<Vec<_>>().join(", ")
                };
                let rate = found.rate_limit.map_or(String::new(), |(limit, left)| {
                    format!("; rate limit {limit} per window, {left} left")
                });
                println!(
                    "job {}: ok: identity source {source} exists and may be read; open sessions: {open}{rate}",
                    job.name
                );
            }
            Err(e) => {
                ok = false;
                eprintln!("job {}: okta check of identity source {source} failed: {e}", job.name);
                if is_credentials(&e) {
                    // Every identity source would answer the same.
                    break;
                }
            }
        }
    }
    ok
}

/// Where `xaas healthcheck` asks by default: the daemon's default port, on loopback.
pub const DEFAULT_HEALTHCHECK_URL: &str = "http://127.0.0.1:8080/healthz";

/// `xaas healthcheck`: GET `url`; [`EXIT_OK`] when it answers 200, otherwise [`EXIT_FAILURE`]
/// and one line on stderr saying why. Never 2: Docker reserves that code.
pub async fn healthcheck(url: &str, timeout: std::time::Duration) -> i32 {
    let unhealthy = |why: String| {
        eprintln!("unhealthy: {why}");
        EXIT_FAILURE
    };
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => return unhealthy(format!("`{url}` is not an http(s) url")),
    };
    // No proxy: the daemon is local, and a proxy from the environment would answer for it.
    let client = match reqwest::Client::builder().timeout(timeout).no_proxy().build() {
        Ok(c) => c,
        Err(e) => return unhealthy(format!("cannot build the http client: {e}")),
    };
    match client.get(parsed).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => EXIT_OK,
        Ok(r) => unhealthy(format!("{url} answered {}", r.status())),
        Err(e) if e.is_timeout() => {
            unhealthy(format!("{url} did not answer within {}s", timeout.as_secs_f64()))
        }
        Err(e) => {
            // The useful part ("connection refused") sits deep in the error's chain.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            unhealthy(format!("cannot reach {url}: {why}"))
        }
    }
}

fn validate(config: &Path) -> i32 {
    match settings::load(config) {
        Ok(s) => {
            println!(
                "{}: valid ({} job(s): {})",
                config.display(),
                s.jobs.len(),
                s.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            for notice in s.notices() {
                println!("note: {notice}");
            }
            EXIT_OK
        }
        Err(diags) => {
            eprintln!("{}", diags.render_with_sources());
            eprintln!("{} problem(s) found", diags.0.len());
            EXIT_CONFIG
        }
    }
}

/// `xaas mapping test`: load each file, run its tests, print a diff for each failure.
fn mapping_test(files: &[PathBuf]) -> i32 {
    let files: Vec<PathBuf> = if files.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("mappings")
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        if found.is_empty() {
            eprintln!("error: no mapping files given, and none in ./mappings");
            return EXIT_USAGE;
        }
        found
    } else {
        files.to_vec()
    };
    let now = chrono::Utc::now();
    let (mut passed, mut failed, mut invalid) = (0usize, 0usize, 0usize);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                invalid += 1;
                continue;
            }
        };
        let mapping = match crate::mapping::Mapping::from_yaml(file, &text) {
            Ok(m) => m,
            Err(diags) => {
                for d in &diags.0 {
                    eprintln!("{}", d.render(Some(&text)));
                }
                eprintln!("{}: invalid mapping, {} problem(s)", file.display(), diags.0.len());
                invalid += 1;
                continue;
            }
        };
        let results = crate::mapping::testing::run(&mapping, now);
        if results.is_empty() {
            println!("{}: no tests", file.display());
        }
        for r in results {
            let at = r.line.map(|l| format!(":{l}")).unwrap_or_default();
            if r.passed() {
                passed += 1;
                println!("ok   {}{at} {}", file.display(), r.name);
            } else {
                failed += 1;
                println!("FAIL {}{at} {}", file.display(), r.name);
                for d in &r.diff {
                    println!("  {d}");
                }
            }
        }
    }
    println!(
        "{passed} passed, {failed} failed{}",
        if invalid > 0 { format!(", {invalid} invalid file(s)") } else { String::new() }
    );
    if invalid > 0 {
        EXIT_CONFIG
    } else if failed > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

/// `xaas mapping preview`: the first `limit` records of a job's source, mapped, as JSON lines.
async fn mapping_preview(config: &Path, job: &str, limit: usize) -> i32 {
    use futures::StreamExt;
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let jobs = match select(&settings, Some(job)) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let Some(job) = jobs.first() else { return EXIT_USAGE };
    let now = chrono::Utc::now();
    let source = job.source.build(&settings.base_dir);
    let mut stream = source.pull();
    let mut seen = 0;
    while seen < limit {
        let Some(item) = stream.next().await else { break };
        seen += 1;
        let line = match item {
            Err(e) => {
                eprintln!("error: the source failed: {e}");
                return EXIT_FAILURE;
            }
            Ok(Err(rejection)) => serde_json::json!({ "kind": "rejected", "rejection": rejection }),
            Ok(Ok(record)) => match job.mapping.apply_at(&record, now) {
                Ok(mapped) => serde_json::to_value(&mapped).unwrap_or_default(),
                Err(rejection) => serde_json::json!({ "kind": "rejected", "rejection": rejection }),
            },
        };
        println!("{line}");
    }
    EXIT_OK
}

async fn sim(listen: &str, config: crate::sim::SimConfig) -> i32 {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return EXIT_FAILURE;
        }
    };
    let handle = match crate::sim::spawn(config, listener).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start the emulator: {e}");
            return EXIT_FAILURE;
        }
    };
    println!(
        "okta emulator listening on {} (state: {}/__sim/state); ctrl-c to stop",
        handle.base_url(),
        handle.base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    EXIT_OK
}
