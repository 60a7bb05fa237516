//! Several jobs in one process run (`xaas run`, `xaas plan --format text`, the demo): build
//! what the runs need once (the Okta client, the state, each identity source's 5-minute
//! clock), run the jobs one after another, and report.

use std::path::Path;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::report::{EXIT_FAILURE, JobReport, RunReport};
use super::{RunContext, RunOptions, SyncError, run_job};
use crate::okta::config::BuildError;
use crate::settings::{Job, Settings};
use crate::state::{self, StateStore};

/// How long a shutdown may take to cancel the open session before the process exits anyway.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Run jobs and report.
pub async fn run_jobs(
    settings: &Settings,
    jobs: &[&Job],
    dry_run: bool,
) -> Result<RunReport, BuildError> {
    run_jobs_with(settings, jobs, dry_run, &RunOptions::default()).await
}

/// [`run_jobs`] with options (`--full`, `--allow-deactivations`, printing the plan first).
/// `Err` only when the Okta client cannot be built (a secret that cannot be read).
pub async fn run_jobs_with(
    settings: &Settings,
    jobs: &[&Job],
    dry_run: bool,
    options: &RunOptions,
) -> Result<RunReport, BuildError> {
    let started_at = chrono::Utc::now();
    let started = std::time::Instant::now();
    let client = if dry_run { None } else { Some(settings.okta.build_client()?) };
    let cancel = client.as_ref().map(|c| c.cancellation().clone()).unwrap_or_default();
    let shutdown = client.is_some().then(|| cancel_on_ctrl_c(cancel.clone()));
    // A plan never writes the state (nor creates it); a run records itself in the history.
    let opened =
        if dry_run { state::open_read_only(&settings.state) } else { state::open(&settings.state) };
    let mut store: Box<dyn StateStore> = match opened {
        Ok(s) => s,
        Err(e) => {
            let e = SyncError::state("open the state store")(e);
            let reports = jobs.iter().map(|j| super::not_started(j, &e, dry_run)).collect();
            return Ok(report(started_at, started, dry_run, reports));
        }
    };
    // Okta's 5-minute clock per identity source, kept in the state (file or tables): a run
    // started right after one that was killed still waits out the spacing instead of being
    // refused.
    let events = match &client {
        Some(_) => state::open_events(&settings.state)
            .map_err(|e| warn!(error = %e, "cannot open the state for the session clock"))
            .ok(),
        None => None,
    };
    let mut reports: Vec<JobReport> = Vec::new();
    for job in jobs {
        let mut ctx = RunContext {
            store: store.as_mut(),
            okta: client.as_ref(),
            spacing: events.as_ref().map(|e| e.spacing_clock(&job.identity_source_id)),
            cancel: cancel.clone(),
            base_dir: &settings.base_dir,
        };
        reports.push(run_job(&mut ctx, settings, job, options).await);
    }
    if let Some(task) = shutdown {
        task.abort();
    }
    Ok(report(started_at, started, dry_run, reports))
}

/// Ctrl-C (or SIGINT from the orchestrator) cancels `token`: the session being uploaded is
/// cancelled in Okta and no further session starts. A second Ctrl-C, or the deadline, ends the
/// process without waiting.
fn cancel_on_ctrl_c(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        warn!(
            deadline_secs = SHUTDOWN_DEADLINE.as_secs(),
            "shutdown requested: cancelling the open okta session"
        );
        token.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = tokio::time::sleep(SHUTDOWN_DEADLINE) => {}
        }
        eprintln!("error: shutdown did not finish in time; exiting");
        std::process::exit(EXIT_FAILURE);
    })
}

fn report(
    started_at: chrono::DateTime<chrono::Utc>,
    started: std::time::Instant,
    dry_run: bool,
    jobs: Vec<JobReport>,
) -> RunReport {
    RunReport {
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
        dry_run,
        jobs,
    }
}

/// Why the JSON report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot write the report to {path}: {source}")]
    Write { path: std::path::PathBuf, source: std::io::Error },
}

/// Write the JSON report to `path`.
pub fn write_report(path: &Path, report: &RunReport) -> Result<(), ReportError> {
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, json)
        .map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}
