//! One run of a job: pull → map → de-duplicate → plan → push → report.
//!
//! The whole pull is mapped and de-duplicated before anything is sent, for two reasons: Okta
//! must never see one externalId twice in a session (FACTS §5), and a pull that fails half way
//! must not send half a picture. Records that cannot be read or mapped are rejected with their
//! line and reason; the rest go on.

pub mod plan;
pub mod report;
pub mod spill;

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use tracing::{Instrument, info, info_span, warn};

use crate::mapping::{Mapped, NotYet, Origin, Rejection};
use crate::okta::OktaClient;
use crate::okta::batch::{Limits, Oversized};
use crate::okta::session::Importer;
use crate::settings::{Job, Settings};
use report::{Counts, Duplicate, JobOutcome, JobReport, SessionReport, Timings};
use spill::Spill;

/// The outcome of pulling and mapping a job's source.
#[derive(Debug)]
pub struct Pulled {
    /// Users to send, de-duplicated (last record wins), in first-seen order; on disk, so
    /// memory holds only the externalId index (see [`spill`]).
    pub users: Spill,
    pub rejected: Vec<Rejection>,
    pub deduplicated: Vec<Duplicate>,
    /// Joiners whose pre-hire window has not opened: not sent this run.
    pub not_yet: Vec<NotYet>,
    /// Items read from the source, including rejected ones.
    pub read: u64,
}

/// Why a pull produced nothing to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailureKind {
    /// The source failed part way: what was read is not the whole picture.
    Incomplete,
    /// The source was read, but more records were rejected than `max_rejected` allows.
    TooManyRejected,
}

/// A pull that must not be sent. Carries what was learnt on the way, for the report.
#[derive(Debug)]
pub struct PullFailure {
    pub kind: PullFailureKind,
    pub message: String,
    pub read: u64,
    pub rejected: Vec<Rejection>,
}

impl std::fmt::Display for PullFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Pull every record of `job`'s source and map it.
///
/// An `Err` means nothing may be sent: the pull was incomplete, or the error budget
/// (`max_rejected`) was exceeded. A count budget stops the pull as soon as it is exceeded; a
/// percentage can only be judged at the end.
pub async fn pull_and_map(settings: &Settings, job: &Job) -> Result<Pulled, PullFailure> {
    let source = job.source.build(&settings.base_dir);
    let mut stream = source.pull();
    let mut rejected: Vec<Rejection> = Vec::new();
    let mut read = 0u64;
    let fail =
        |kind, message: String, read, rejected| PullFailure { kind, message, read, rejected };
    let mut users = match Spill::new() {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot create a temporary file for the pulled users: {e}");
            return Err(fail(PullFailureKind::Incomplete, msg, 0, rejected));
        }
    };
    let mut deduplicated: Vec<Duplicate> = Vec::new();
    let mut dup_index: HashMap<String, usize> = HashMap::new();
    let mut not_yet: Vec<NotYet> = Vec::new();
    // One instant for the whole pull, so every record is dated against the same day.
    let now = chrono::Utc::now();
    while let Some(item) = stream.next().await {
        let item = match item {
            Ok(i) => i,
            Err(e) => return Err(fail(PullFailureKind::Incomplete, e.to_string(), read, rejected)),
        };
        read += 1;
        let user = match item.and_then(|record| job.mapping.apply_at(&record, now)) {
            Ok(Mapped::User(u)) => u,
            Ok(Mapped::NotYet(n)) => {
                not_yet.push(n);
                continue;
            }
            Err(rejection) => {
                rejected.push(rejection);
                if let Some(budget) = job.max_rejected
                    && let Some(message) = budget.exceeded_early(rejected.len() as u64)
                {
                    return Err(fail(PullFailureKind::TooManyRejected, message, read, rejected));
                }
                continue;
            }
        };
        let previous = match users.push(&user) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot write the pulled users to a temporary file: {e}");
                return Err(fail(PullFailureKind::Incomplete, msg, read, rejected));
            }
        };
        if let Some(previous) = previous {
            // Last record wins; the report says which records were dropped.
            let kept = user.origin.clone();
            match dup_index.get(&user.external_id) {
                Some(&d) => {
                    let dup = &mut deduplicated[d];
                    dup.dropped.push(previous);
                    dup.kept = kept;
                }
                None => {
                    dup_index.insert(user.external_id.clone(), deduplicated.len());
                    deduplicated.push(Duplicate {
                        external_id: user.external_id,
                        kept,
                        dropped: vec![previous],
                    });
                }
            }
        }
    }
    if let Some(budget) = job.max_rejected
        && let Some(message) = budget.exceeded(rejected.len() as u64, read)
    {
        return Err(fail(PullFailureKind::TooManyRejected, message, read, rejected));
    }
    if let Err(e) = users.finish() {
        let msg = format!("cannot write the pulled users to a temporary file: {e}");
        return Err(fail(PullFailureKind::Incomplete, msg, read, rejected));
    }
    Ok(Pulled { users, rejected, deduplicated, not_yet, read })
}

/// Turn users too large to send into rejections.
pub fn reject_oversized(pulled: &mut Pulled, oversized: Vec<(Oversized, Origin)>) {
    for (o, origin) in oversized {
        pulled.rejected.push(Rejection {
            origin,
            external_id: Some(o.external_id.clone()),
            field: None,
            reason: format!(
                "the profile is {} bytes once encoded, over okta's 200 KB request limit",
                o.bytes
            ),
        });
    }
}

/// What `run_job` should do after planning.
pub enum Mode<'a> {
    /// Plan only.
    DryRun,
    /// Send through this client.
    Send(&'a OktaClient),
}

/// Run one job and report. Never panics on bad input; failures end up in the report.
pub async fn run_job(settings: &Settings, job: &Job, mode: Mode<'_>) -> JobReport {
    let span = info_span!("job", job = %job.name, identity_source = %job.identity_source_id);
    run_job_inner(settings, job, mode).instrument(span).await
}

async fn run_job_inner(settings: &Settings, job: &Job, mode: Mode<'_>) -> JobReport {
    let started = Instant::now();
    let mut report = JobReport {
        job: job.name.clone(),
        identity_source_id: job.identity_source_id.clone(),
        outcome: JobOutcome::Success,
        error: None,
        pull_complete: true,
        counts: Counts::default(),
        rejected: Vec::new(),
        deduplicated: Vec::new(),
        stale_sessions: Vec::new(),
        sessions: Vec::new(),
        timings: Timings::default(),
    };
    let mut pulled = match pull_and_map(settings, job).await {
        Ok(p) => p,
        Err(failure) => {
            warn!(error = %failure, "pull failed: nothing is sent to okta");
            report.outcome = JobOutcome::Failed;
            report.pull_complete = failure.kind != PullFailureKind::Incomplete;
            report.error = Some(match failure.kind {
                PullFailureKind::Incomplete => {
                    format!("the pull did not complete, so nothing was sent: {}", failure.message)
                }
                PullFailureKind::TooManyRejected => {
                    format!("{}, so nothing was sent", failure.message)
                }
            });
            report.counts.read = failure.read;
            report.counts.rejected = failure.rejected.len() as u64;
            report.rejected = failure.rejected;
            report.timings.total_ms = elapsed_ms(started);
            return report;
        }
    };
    // First pass over the spilled users: plan the sessions, keeping only their summaries. The
    // push packs them again, one session at a time (packing is deterministic).
    let mut planned = Vec::new();
    let mut sessions = pulled.users.sessions(job.sessions, Limits::default());
    loop {
        match sessions.next_session() {
            Ok(Some(plan)) => planned.push(SessionReport::planned(&plan)),
            Ok(None) => break,
            Err(e) => {
                report.outcome = JobOutcome::Failed;
                report.error = Some(format!("cannot read back the pulled users: {e}"));
                report.timings.total_ms = elapsed_ms(started);
                return report;
            }
        }
    }
    let oversized = sessions.take_oversized();
    drop(sessions);
    reject_oversized(&mut pulled, oversized);
    report.timings.pull_ms = elapsed_ms(started);
    let c = &mut report.counts;
    c.read = pulled.read;
    c.rejected = pulled.rejected.len() as u64;
    c.deduplicated = pulled.deduplicated.iter().map(|d| d.dropped.len() as u64).sum();
    c.to_upsert = planned.iter().map(|s| s.planned_upserts as u64).sum();
    c.to_deactivate = planned.iter().map(|s| s.planned_deletes as u64).sum();
    c.groups = planned.iter().map(|s| s.planned_groups as u64).sum();
    c.memberships = planned.iter().map(|s| s.planned_memberships as u64).sum();
    c.not_yet_started = pulled.not_yet.len() as u64;
    info!(
        read = c.read,
        rejected = c.rejected,
        deduplicated = c.deduplicated,
        to_upsert = c.to_upsert,
        to_deactivate = c.to_deactivate,
        sessions = planned.len(),
        "planned"
    );
    report.rejected = std::mem::take(&mut pulled.rejected);
    report.deduplicated = std::mem::take(&mut pulled.deduplicated);
    report.sessions = planned;

    if let Mode::Send(client) = mode {
        let push_started = Instant::now();
        push(settings, job, client, &pulled.users, &mut report).await;
        report.timings.push_ms = elapsed_ms(push_started);
    }
    if report.outcome != JobOutcome::Failed && !report.rejected.is_empty() {
        report.outcome = JobOutcome::CompletedWithRejections;
    }
    report.timings.total_ms = elapsed_ms(started);
    report
}

async fn push(
    settings: &Settings,
    job: &Job,
    client: &OktaClient,
    users: &Spill,
    report: &mut JobReport,
) {
    let mut importer = Importer::new(
        client.clone(),
        job.identity_source_id.clone(),
        settings.okta.sessions.clone(),
    );
    match importer.prepare().await {
        Ok(stale) => report.stale_sessions = stale,
        Err(e) => {
            report.outcome = JobOutcome::Failed;
            report.error = Some(format!("cannot prepare the identity source: {e}"));
            report.counts.not_imported = report.counts.to_upsert + report.counts.to_deactivate;
            return;
        }
    }
    let mut failed = false;
    let mut sessions = users.sessions(job.sessions, Limits::default());
    for session_report in report.sessions.iter_mut() {
        let plan = match sessions.next_session() {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) if failed => continue,
            other => {
                // The first pass read the same file: this is a local disk failure.
                failed = true;
                report.counts.not_imported +=
                    (session_report.planned_upserts + session_report.planned_deletes) as u64;
                report.outcome = JobOutcome::Failed;
                report.error = Some(match other {
                    Err(e) => format!("cannot read back the pulled users: {e}"),
                    _ => "the sessions changed between planning and sending".to_string(),
                });
                continue;
            }
        };
        let plan = &plan;
        let (up, del) = plan.counts();
        if !failed && client.cancellation().is_cancelled() {
            failed = true;
            report.outcome = JobOutcome::Failed;
            report.error = Some("shutdown requested: the remaining sessions were not sent".into());
        }
        if failed {
            // After a failure (or a shutdown) we stop: sending deactivations while the run is unhealthy is the
            // wrong way to fail. The next run sends them again.
            report.counts.not_imported += (up + del) as u64;
            continue;
        }
        let outcome = importer.run(plan).await;
        match outcome.final_status {
            Some(crate::okta::model::SessionStatus::Completed) => {
                report.counts.upserted += up as u64;
                report.counts.deactivated += del as u64;
            }
            _ if outcome.error.is_none() => {
                // Cancelled on purpose (Okta kept it in CREATED: nothing to import).
            }
            _ => {
                failed = true;
                report.counts.not_imported += (up + del) as u64;
                report.outcome = JobOutcome::Failed;
                report.error = Some(format!(
                    "session {} ({}) did not complete: {}",
                    outcome.id.as_deref().unwrap_or("(not created)"),
                    plan.kind,
                    outcome.error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        session_report.outcome = Some(outcome);
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
