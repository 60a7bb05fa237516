//! One run of a job: pull → map → de-duplicate → plan → push → report.
//!
//! The whole pull is mapped and de-duplicated before anything is sent, for two reasons: Okta
//! must never see one externalId twice in a session (FACTS §5), and a pull that fails half way
//! must not send half a picture. Records that cannot be read or mapped are rejected with their
//! line and reason; the rest go on.

pub mod plan;
pub mod report;

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use tracing::{Instrument, info, info_span, warn};

use crate::mapping::{Mapped, MappedUser, NotYet, Rejection};
use crate::okta::OktaClient;
use crate::okta::batch::{self, Limits, Packed};
use crate::okta::session::Importer;
use crate::settings::{Job, Settings};
use report::{Counts, Duplicate, JobOutcome, JobReport, SessionReport, Timings};

/// The outcome of pulling and mapping a job's source.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Users to send, de-duplicated (last record wins), in first-seen order.
    pub users: Vec<MappedUser>,
    pub rejected: Vec<Rejection>,
    pub deduplicated: Vec<Duplicate>,
    /// Joiners whose pre-hire window has not opened: not sent this run.
    pub not_yet: Vec<NotYet>,
    /// Items read from the source, including rejected ones.
    pub read: u64,
}

/// Pull every record of `job`'s source and map it. An `Err` means the pull was incomplete.
pub async fn pull_and_map(settings: &Settings, job: &Job) -> Result<Pulled, String> {
    let source = job.source.build(&settings.base_dir);
    let mut stream = source.pull();
    let mut out = Pulled::default();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut dup_index: HashMap<String, usize> = HashMap::new();
    // One instant for the whole pull, so every record is dated against the same day.
    let now = chrono::Utc::now();
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| e.to_string())?;
        out.read += 1;
        let user = match item.and_then(|record| job.mapping.apply_at(&record, now)) {
            Ok(Mapped::User(u)) => u,
            Ok(Mapped::NotYet(n)) => {
                out.not_yet.push(n);
                continue;
            }
            Err(rejection) => {
                out.rejected.push(rejection);
                continue;
            }
        };
        match position.get(&user.external_id) {
            None => {
                position.insert(user.external_id.clone(), out.users.len());
                out.users.push(user);
            }
            Some(&at) => {
                // Last record wins: it replaces the earlier one in place.
                let previous = std::mem::replace(&mut out.users[at], user);
                let kept = out.users[at].origin.clone();
                match dup_index.get(&previous.external_id) {
                    Some(&d) => {
                        let dup = &mut out.deduplicated[d];
                        dup.dropped.push(previous.origin);
                        dup.kept = kept;
                    }
                    None => {
                        dup_index.insert(previous.external_id.clone(), out.deduplicated.len());
                        out.deduplicated.push(Duplicate {
                            external_id: previous.external_id,
                            kept,
                            dropped: vec![previous.origin],
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Plan a job: what would be sent, in which sessions. Sends nothing.
pub fn pack_users(pulled: &mut Pulled, job: &Job) -> Packed {
    let packed = batch::pack(&pulled.users, job.sessions, Limits::default());
    for o in &packed.oversized {
        let origin = pulled
            .users
            .iter()
            .find(|u| u.external_id == o.external_id)
            .map(|u| u.origin.clone())
            .unwrap_or(crate::mapping::Origin::Index(0));
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
    packed
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
        counts: Counts::default(),
        rejected: Vec::new(),
        deduplicated: Vec::new(),
        stale_sessions: Vec::new(),
        sessions: Vec::new(),
        timings: Timings::default(),
    };
    let mut pulled = match pull_and_map(settings, job).await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "pull failed: nothing is sent to okta");
            report.outcome = JobOutcome::Failed;
            report.error = Some(format!("the pull did not complete, so nothing was sent: {e}"));
            report.timings.total_ms = elapsed_ms(started);
            return report;
        }
    };
    let packed = pack_users(&mut pulled, job);
    report.timings.pull_ms = elapsed_ms(started);
    let oversized: std::collections::HashSet<&str> =
        packed.oversized.iter().map(|o| o.external_id.as_str()).collect();
    let c = &mut report.counts;
    c.read = pulled.read;
    c.rejected = pulled.rejected.len() as u64;
    c.deduplicated = pulled.deduplicated.iter().map(|d| d.dropped.len() as u64).sum();
    c.not_yet_started = pulled.not_yet.len() as u64;
    for s in &packed.sessions {
        let (groups, memberships) = s.group_counts();
        c.groups += groups as u64;
        c.memberships += memberships as u64;
    }
    for u in pulled.users.iter().filter(|u| !oversized.contains(u.external_id.as_str())) {
        if u.active {
            c.to_upsert += 1;
        } else {
            c.to_deactivate += 1;
        }
    }
    info!(
        read = c.read,
        rejected = c.rejected,
        deduplicated = c.deduplicated,
        to_upsert = c.to_upsert,
        to_deactivate = c.to_deactivate,
        sessions = packed.sessions.len(),
        "planned"
    );
    report.rejected = std::mem::take(&mut pulled.rejected);
    report.deduplicated = std::mem::take(&mut pulled.deduplicated);
    report.sessions = packed.sessions.iter().map(SessionReport::planned).collect();
    drop(pulled);

    if let Mode::Send(client) = mode {
        let push_started = Instant::now();
        push(settings, job, client, &packed, &mut report).await;
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
    packed: &Packed,
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
    for (plan, session_report) in packed.sessions.iter().zip(report.sessions.iter_mut()) {
        let (up, del) = plan.counts();
        if failed {
            // After a failure we stop: sending deactivations while the run is unhealthy is the
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
