//! One run of a job: pull → map → de-duplicate → diff against state → safeguards → pack →
//! push → confirm state per COMPLETED session → report.
//!
//! The stages, in data-flow order, one file each:
//!
//! - [`pull`]: read and map the whole source into a [`spill::Spill`] (the whole pull is mapped
//!   before anything is sent: Okta must never see one externalId twice in a session, and a
//!   pull that fails half way must not send half a picture);
//! - [`mod@prepare`]: diff against the state ([`delta`]), apply the [`safeguards`], plan the
//!   sessions; `xaas plan` ([`plan`]) stops here;
//! - [`stage`]: send the sessions and confirm the state: **the** send stage, which pushed
//!   webhook batches (`daemon::push`) go through as well;
//! - [`record`]: record the pull, the run and its per-record decisions;
//! - [`jobs`]: several jobs in one process run (`xaas run`, the demo).
//!
//! A run is given what it talks to ([`RunContext`]): the state store, the Okta client (none
//! for a plan), the identity source's 5-minute clock and the cancellation, the way Vector
//! hands a component its context. Failures are [`SyncError`]s, rendered into the report.

pub mod delta;
pub mod direct;
pub mod error;
pub mod jobs;
pub mod memory;
pub mod plan;
pub mod prepare;
pub mod pull;
pub mod record;
pub mod references;
pub mod report;
pub mod safeguards;
pub mod spill;
pub mod stage;

use std::path::Path;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

pub use error::{FailureKind, SyncError};
pub use prepare::{Prepared, attribute_diff, prepare};
pub use pull::{PullFailure, Pulled, pull_and_map, reject_oversized};
use report::{JobOutcome, JobReport};

use crate::okta::OktaClient;
use crate::okta::session::{Importer, SpacingClock};
use crate::settings::{Job, Settings};
use crate::state::StateStore;

/// What a run is given by its caller.
pub struct RunContext<'a> {
    /// The state: read-write for a run, read-only for a plan (which writes nothing).
    pub store: &'a mut dyn StateStore,
    /// Where users are sent; `None`: plan only.
    pub okta: Option<&'a OktaClient>,
    /// The identity source's 5-minute clock, shared across runs (the daemon, the state).
    pub spacing: Option<SpacingClock>,
    /// Cancels the pull between records and the push between requests; no session starts
    /// once it is cancelled, and the open one is cancelled in Okta.
    pub cancel: CancellationToken,
    /// Relative paths in the job's source are resolved against it (the config's directory).
    pub base_dir: &'a Path,
}

/// Per-invocation choices (the CLI's flags).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Send every user (`--full`).
    pub full: bool,
    /// Release deactivation and source-shrink holds when the run deactivates at most this many
    /// users (`--allow-deactivations N`).
    pub allow_deactivations: Option<u64>,
    /// Print the plan summary on stdout before sending (`xaas run`).
    pub announce: bool,
    /// The most users listed per part of the plan in the report.
    pub detail_limit: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { full: false, allow_deactivations: None, announce: false, detail_limit: 1_000 }
    }
}

/// Run one job and report. Never panics on bad input; failures end up in the report.
pub async fn run_job(
    ctx: &mut RunContext<'_>,
    settings: &Settings,
    job: &Job,
    options: &RunOptions,
) -> JobReport {
    let span = info_span!("job", job = %job.name, identity_source = %job.identity_source_id);
    let started = Instant::now();
    let report = run_job_inner(ctx, settings, job, options).instrument(span).await;
    // Here rather than at the end of the run, so runs that fail early are counted too.
    if ctx.okta.is_some() {
        report.record_metrics(started.elapsed());
    }
    report
}

/// The report of a run of `job` that could not start (its state store would not open): it
/// failed with `e`, and a run (not a plan) is counted in the metrics like any other.
pub fn not_started(job: &Job, e: &SyncError, dry_run: bool) -> JobReport {
    let mut report = JobReport::new(job);
    report.fail(e, dry_run);
    if !dry_run {
        report.record_metrics(std::time::Duration::ZERO);
    }
    report
}

async fn run_job_inner(
    ctx: &mut RunContext<'_>,
    settings: &Settings,
    job: &Job,
    options: &RunOptions,
) -> JobReport {
    let started = Instant::now();
    let mut report = JobReport::new(job);
    let dry_run = ctx.okta.is_none();
    // A plan never writes the state; a run records itself in the history.
    if !dry_run {
        match ctx.store.begin_run(&job.name, chrono::Utc::now()) {
            Ok(id) => report.run_id = Some(id),
            Err(e) => {
                report.fail(&SyncError::state("write the state store")(e), dry_run);
                return report;
            }
        }
    }
    let prepared = prepare(ctx, job, options, &mut report).await;
    match &prepared {
        Err(e) => report.fail(e, dry_run),
        Ok(prepared) => {
            report.direct = direct::run_qualifies(job, &report, prepared.held);
            if options.announce {
                let mut text = String::new();
                report.render_plan(&mut text);
                print!("{text}");
            }
            if let Some(client) = ctx.okta {
                let push_started = Instant::now();
                if !prepared.held && !report.sessions.is_empty() {
                    push(ctx, client, settings, job, prepared, &mut report).await;
                }
                report.timings.push_ms = elapsed_ms(push_started);
                record::finish_state(job, prepared, ctx.store, &mut report);
            }
        }
    }
    if !matches!(report.outcome, JobOutcome::Failed | JobOutcome::Held)
        && !report.rejected.is_empty()
    {
        report.outcome = JobOutcome::CompletedWithRejections;
    }
    report.timings.total_ms = elapsed_ms(started);
    if let Some(run) = report.run_id {
        let show_profiles = settings.serve.ui.as_ref().is_some_and(|u| u.show_profiles);
        record::finish_run(ctx.store, run, prepared.as_ref().ok(), &report, show_profiles);
    }
    report
}

/// Send the prepared sessions through the one send stage.
async fn push(
    ctx: &mut RunContext<'_>,
    client: &OktaClient,
    settings: &Settings,
    job: &Job,
    prepared: &Prepared,
    report: &mut JobReport,
) {
    let mut importer = Importer::new(
        client.clone(),
        job.identity_source_id.clone(),
        settings.okta.sessions.clone(),
    );
    if let Some(clock) = &ctx.spacing {
        importer = importer.with_spacing_clock(clock.clone());
    }
    // Okta first, for direct calls too: nothing else would cancel a session a crashed run left
    // open.
    if !stage::prepare(&mut importer, report).await {
        return;
    }
    if report.direct && send_directly(ctx, client, settings, job, prepared, report).await {
        return;
    }
    let mut stage =
        stage::Stage { importer: &mut importer, store: &mut *ctx.store, cancel: &ctx.cancel };
    let planned = stage::Planned {
        job,
        users: &prepared.pulled.users,
        send: &prepared.send,
        extra_deletes: &prepared.extra_deletes,
        keep_profiles: settings.state.store_profiles,
        removals: &prepared.removals,
    };
    stage::send_planned(&mut stage, &planned, report).await;
}

/// A small delta through the direct endpoints ([`direct::send_run`]); `false` when the
/// sessions must go instead (nothing was sent).
async fn send_directly(
    ctx: &mut RunContext<'_>,
    client: &OktaClient,
    settings: &Settings,
    job: &Job,
    prepared: &Prepared,
    report: &mut JobReport,
) -> bool {
    let spill = &prepared.pulled.users;
    let slots: Vec<usize> = (0..spill.len()).filter(|&i| prepared.send[i]).collect();
    let mut users = match spill.read_slots(&slots) {
        Ok(u) => u,
        Err(e) => {
            report.fail(&SyncError::spill("read back")(e), false);
            return true;
        }
    };
    users.extend(prepared.extra_deletes.iter().map(|id| crate::mapping::MappedUser {
        origin: crate::mapping::Origin::Index(0),
        external_id: id.clone(),
        active: false,
        profile: Default::default(),
        groups: Vec::new(),
        links: Default::default(),
    }));
    let keep = settings.state.store_profiles;
    let total = users.len() as u64;
    let (upserted, deactivated, error) =
        match direct::send_run(&mut *ctx.store, client, job, &users, keep).await {
            direct::RunDirect::UseSessions(why) => {
                tracing::info!(reason = %why, "a small delta, but sent in sessions");
                return false;
            }
            direct::RunDirect::Sent { upserted, deactivated } => (upserted, deactivated, None),
            direct::RunDirect::Failed { upserted, deactivated, error } => {
                (upserted, deactivated, Some(error))
            }
        };
    tracing::info!(upserted, deactivated, "sent directly, no session");
    report.sessions.clear();
    let c = &mut report.counts;
    c.upserted += upserted;
    c.deactivated += deactivated;
    c.sent_directly = upserted + deactivated;
    if let Some(e) = error {
        c.not_imported = total - upserted - deactivated;
        report.fail(&SyncError::Direct(e.to_string()), false);
    }
    true
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
