//! One run of a job: pull → map → de-duplicate → diff against state → safeguards → pack →
//! push → confirm state per COMPLETED session → report.
//!
//! The whole pull is mapped and de-duplicated before anything is sent, for two reasons: Okta
//! must never see one externalId twice in a session (FACTS §5), and a pull that fails half way
//! must not send half a picture. Records that cannot be read or mapped are rejected with their
//! line and reason; the rest go on.

pub mod delta;
pub mod plan;
pub mod report;
pub mod safeguards;
pub mod spill;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use futures::StreamExt;
use tracing::{Instrument, info, info_span, warn};

use crate::mapping::{Mapped, NotYet, Origin, Rejection};
use crate::okta::OktaClient;
use crate::okta::batch::{Limits, Oversized, RequestKind, SessionPlan};
use crate::okta::session::{Importer, PlanHints};
use crate::settings::{Job, OnHold, Settings};
use crate::state::{self, Confirmed, SentStatus, StateStore};
use delta::Action;
use report::{Duplicate, JobOutcome, JobReport, SessionReport};
use safeguards::BreachKind;
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
    /// The identity source's 5-minute clock, shared across runs (the daemon).
    pub spacing: Option<crate::okta::session::SpacingClock>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            full: false,
            allow_deactivations: None,
            announce: false,
            detail_limit: 1_000,
            spacing: None,
        }
    }
}

/// Run one job and report. Never panics on bad input; failures end up in the report.
pub async fn run_job(settings: &Settings, job: &Job, mode: Mode<'_>) -> JobReport {
    run_job_with(settings, job, mode, &RunOptions::default()).await
}

/// [`run_job`] with options.
pub async fn run_job_with(
    settings: &Settings,
    job: &Job,
    mode: Mode<'_>,
    options: &RunOptions,
) -> JobReport {
    let span = info_span!("job", job = %job.name, identity_source = %job.identity_source_id);
    let dry_run = matches!(mode, Mode::DryRun);
    let started = Instant::now();
    let report = run_job_inner(settings, job, mode, options).instrument(span).await;
    // Here rather than at the end of the run, so runs that fail early are counted too.
    if !dry_run {
        crate::daemon::metrics::job_report(&report, started.elapsed());
    }
    report
}

/// A pull diffed against the state, safeguards applied, sessions planned: ready to push.
pub struct Prepared {
    pub pulled: Pulled,
    /// Per spill slot: sent this run.
    pub send: Vec<bool>,
    /// Leavers missing from the pull, deactivated this run.
    pub extra_deletes: Vec<String>,
    /// Held with nothing to send.
    pub held: bool,
    /// Missing-run counters may advance (absence detection was on).
    pub count_missing: bool,
    /// Per spill slot: what the diff decided (recorded per run for the UI).
    pub actions: Vec<Action>,
    /// Owned users missing from the pull, due for deactivation (sent only when not held).
    pub leavers: Vec<String>,
}

/// Pull, diff, check safeguards and plan sessions; fills `report`. `Err(())` means the report
/// already says why nothing can be sent.
pub async fn prepare(
    settings: &Settings,
    job: &Job,
    store: &mut dyn StateStore,
    options: &RunOptions,
    report: &mut JobReport,
) -> Result<Prepared, ()> {
    let started = Instant::now();
    let mut pulled = match pull_and_map(settings, job).await {
        Ok(p) => p,
        Err(failure) => {
            warn!(error = %failure, "pull failed: nothing is sent to okta");
            report.outcome = JobOutcome::Failed;
            // An incomplete pull sends nothing, so nobody missing from it is deactivated.
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
            return Err(());
        }
    };
    let fail = |report: &mut JobReport, e: String| {
        report.outcome = JobOutcome::Failed;
        report.error = Some(e);
    };
    let job_state = match store.job_state(&job.name) {
        Ok(s) => s,
        Err(e) => {
            fail(report, format!("cannot read the state: {e}"));
            return Err(());
        }
    };
    // Full or delta.
    let now = chrono::Utc::now();
    let reason = if options.full {
        Some("--full".to_string())
    } else if !job.delta {
        Some("delta: false".to_string())
    } else {
        match (job.full_resync_every, job_state.last_full_resync_at) {
            (Some(_), None) => Some("no full resync recorded yet".to_string()),
            (Some(every), Some(last))
                if chrono::Duration::from_std(every).is_ok_and(|every| now - last >= every) =>
            {
                Some(format!("full_resync_every {}", humantime::format_duration(every)))
            }
            _ => None,
        }
    };
    report.mode = report::SyncMode { full: reason.is_some(), reason };

    // Ids that were read but not mapped are present: never "missing".
    let mut present: HashSet<String> = HashSet::new();
    let mut without_id = 0usize;
    for r in &pulled.rejected {
        match &r.external_id {
            Some(id) => {
                present.insert(id.clone());
            }
            None => without_id += 1,
        }
    }
    present.extend(pulled.not_yet.iter().map(|n| n.external_id.clone()));
    let absence_off = (without_id > 0).then(|| {
        format!(
            "{without_id} rejected record(s) have no externalId, so who is missing cannot be told"
        )
    });
    let delta = match delta::compute(&pulled.users, store, job, &present, absence_off) {
        Ok(d) => d,
        Err(e) => {
            fail(report, format!("cannot read the state: {e}"));
            return Err(());
        }
    };
    report.absence_detection_off = delta.absence_off.clone();
    report.changes = delta.changes.clone();

    // Safeguards, before anything is sent.
    let mut breaches =
        safeguards::check(&job.safeguards, &delta.changes, &job_state, pulled.users.len() as u64);
    let deactivations = delta.changes.counted_deactivations();
    if let Some(n) = options.allow_deactivations
        && deactivations <= n
        && breaches.iter().any(|b| b.kind != BreachKind::Creations)
    {
        breaches.retain(|b| b.kind == BreachKind::Creations);
        report.released_by = Some(format!("--allow-deactivations {n}"));
    }
    if !breaches.is_empty()
        && let Some(run_id) = report.run_id
    {
        match store.take_approval(&job.name, deactivations, delta.changes.creates, run_id) {
            Ok(Some(approved)) => {
                breaches.clear();
                report.released_by = Some(format!("the approval of run {approved}"));
            }
            Ok(None) => {}
            Err(e) => {
                fail(report, format!("cannot read the approvals: {e}"));
                return Err(());
            }
        }
    }
    let upserts_only = !breaches.is_empty()
        && job.safeguards.on_hold == OnHold::Upserts
        && breaches.iter().all(|b| b.kind == BreachKind::Deactivations);
    let held = !breaches.is_empty();
    if held {
        warn!(breaches = breaches.len(), "a safeguard held the run");
        report.outcome = JobOutcome::Held;
        report.hold = Some(report::HoldReport {
            breaches,
            sent: if upserts_only { "upserts".into() } else { "nothing".into() },
            release: report.run_id.map(|r| {
                format!(
                    "xaas approve --job {} --run {r}   (or: xaas run --job {} --allow-deactivations {deactivations})",
                    job.name, job.name
                )
            }),
        });
    }

    // Who is sent. Every deactivation below is either a user the source marks inactive, or a
    // leaver this job owns that was missing from a complete pull (delta::compute), and none
    // is sent while a safeguard holds the run.
    let full = report.mode.full;
    let send: Vec<bool> = delta
        .actions
        .iter()
        .map(|a| {
            let wanted = full || a.sends();
            match (held, upserts_only) {
                (false, _) => wanted,
                (true, true) => wanted && a.is_upsert(),
                (true, false) => false,
            }
        })
        .collect();
    let extra_deletes = if held { Vec::new() } else { delta.leavers.clone() };

    report.details = details(store, job, &pulled.users, &delta, options.detail_limit);

    // Plan the sessions, keeping only their summaries. The push packs them again, one session
    // at a time (packing is deterministic).
    let mut planned = Vec::new();
    let mut sessions = pulled.users.sessions_selected(
        job.sessions,
        Limits::default(),
        Some(&send),
        &extra_deletes,
    );
    loop {
        match sessions.next_session() {
            Ok(Some(plan)) => planned.push(SessionReport::planned(&plan)),
            Ok(None) => break,
            Err(e) => {
                drop(sessions);
                fail(report, format!("cannot read back the pulled users: {e}"));
                return Err(());
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
        unchanged = delta.changes.unchanged,
        full,
        held,
        sessions = planned.len(),
        "planned"
    );
    report.rejected = std::mem::take(&mut pulled.rejected);
    report.deduplicated = std::mem::take(&mut pulled.deduplicated);
    report.sessions = planned;
    Ok(Prepared {
        pulled,
        send,
        extra_deletes,
        held: held && !upserts_only,
        count_missing: delta.absence_off.is_none() && !held,
        actions: delta.actions,
        leavers: delta.leavers,
    })
}

/// The users behind each part of the plan, at most `limit` per part; updates come with their
/// attribute-level diff against the last confirmed profile.
fn details(
    store: &dyn StateStore,
    job: &Job,
    users: &Spill,
    delta: &delta::Delta,
    limit: usize,
) -> report::Details {
    let mut d = report::Details::default();
    let mut wanted: Vec<usize> = Vec::new();
    let mut per = [0usize; 4];
    for (slot, a) in delta.actions.iter().enumerate() {
        let part = match a {
            Action::Create => 0,
            Action::Update => 1,
            Action::Reactivate => 2,
            Action::Deactivate | Action::DeactivateUnowned => 3,
            _ => continue,
        };
        if per[part] < limit {
            per[part] += 1;
            wanted.push(slot);
        } else {
            d.truncated = true;
        }
    }
    let read = match users.read_slots(&wanted) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot read back users for the plan's details");
            return d;
        }
    };
    for (slot, user) in wanted.into_iter().zip(read) {
        match delta.actions[slot] {
            Action::Create => d.creates.push(user.external_id),
            Action::Reactivate => d.reactivations.push(user.external_id),
            Action::Update => {
                let before = store.confirmed_profile(&job.name, &user.external_id).ok().flatten();
                let changes = before.map(|b| attribute_diff(&b, &user.profile)).unwrap_or_default();
                d.updates.push(report::UpdateDetail { external_id: user.external_id, changes });
            }
            a => d.deactivations.push(report::DeactivationDetail {
                external_id: user.external_id,
                reason: if a == Action::Deactivate {
                    "inactive_in_source"
                } else {
                    "inactive_not_sent_before"
                },
            }),
        }
    }
    for id in delta.leavers.iter() {
        if d.deactivations.len() >= limit.saturating_mul(2) {
            d.truncated = true;
            break;
        }
        d.deactivations.push(report::DeactivationDetail {
            external_id: id.clone(),
            reason: "missing_from_source",
        });
    }
    d
}

/// The attributes that differ between two profiles.
pub fn attribute_diff(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Vec<report::AttributeChange> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| report::AttributeChange {
            attribute: k.clone(),
            from: before.get(k).cloned(),
            to: after.get(k).cloned(),
        })
        .collect()
}

async fn run_job_inner(
    settings: &Settings,
    job: &Job,
    mode: Mode<'_>,
    options: &RunOptions,
) -> JobReport {
    let started = Instant::now();
    let mut report = JobReport::new(job);
    let dry_run = matches!(mode, Mode::DryRun);
    // A plan never writes the state (nor creates it); a run records itself in the history.
    let opened =
        if dry_run { state::open_read_only(&settings.state) } else { state::open(&settings.state) };
    let mut store = match opened {
        Ok(s) => s,
        Err(e) => {
            report.outcome = JobOutcome::Failed;
            report.error = Some(format!("cannot open the state store: {e}"));
            return report;
        }
    };
    if !dry_run {
        match store.begin_run(&job.name, chrono::Utc::now()) {
            Ok(id) => report.run_id = Some(id),
            Err(e) => {
                report.outcome = JobOutcome::Failed;
                report.error = Some(format!("cannot write the state store: {e}"));
                return report;
            }
        }
    }
    let prepared = prepare(settings, job, store.as_mut(), options, &mut report).await;
    if let Ok(prepared) = &prepared {
        if options.announce {
            let mut text = String::new();
            report.render_plan(&mut text);
            print!("{text}");
        }
        if let Mode::Send(client) = mode {
            let push_started = Instant::now();
            if !prepared.held && !report.sessions.is_empty() {
                push(settings, job, client, prepared, store.as_mut(), &mut report, options).await;
            }
            report.timings.push_ms = elapsed_ms(push_started);
            finish_state(job, prepared, store.as_mut(), &mut report);
        }
    }
    if !matches!(report.outcome, JobOutcome::Failed | JobOutcome::Held)
        && !report.rejected.is_empty()
    {
        report.outcome = JobOutcome::CompletedWithRejections;
    }
    report.timings.total_ms = elapsed_ms(started);
    if let Some(run) = report.run_id {
        let hold = report.hold.as_ref().map(|h| state::Hold {
            deactivations: report.changes.counted_deactivations(),
            creations: report.changes.creates,
            reasons: h.breaches.iter().map(|b| b.message.clone()).collect(),
        });
        let json = serde_json::to_string(&report).unwrap_or_default();
        if let Err(e) =
            store.finish_run(run, report.outcome.as_str(), &json, hold.as_ref(), chrono::Utc::now())
        {
            warn!(error = %e, "cannot record the run in the state's history");
        }
        let show_profiles = settings.serve.ui.as_ref().is_some_and(|u| u.show_profiles);
        let prepared = prepared.as_ref().ok();
        match record_decisions(store.as_mut(), run, prepared, &report, show_profiles) {
            Ok(_) => {}
            // A backend without the run history of the UI: nothing to record.
            Err(state::StateError::Unsupported(_)) => {}
            Err(e) => warn!(error = %e, "cannot record the run's per-record decisions"),
        }
    }
    report
}

/// Record what the run decided for every record (the UI's run page), in one transaction.
///
/// Planned decisions: a held run records what it would have done, and a failed session's
/// users keep theirs (the run's outcome and sessions say what reached Okta). Rejections are
/// written first, so a user rejected as too large to send reads as rejected, not created.
/// `report.details` is capped per part, so this reads the full diff from `prepared`.
fn record_decisions(
    store: &mut dyn StateStore,
    run: state::RunId,
    prepared: Option<&Prepared>,
    report: &JobReport,
    show_profiles: bool,
) -> Result<u64, state::StateError> {
    use state::{Decision, DecisionRecord};
    let record = |external_id: String, decision, reason: Option<&str>| DecisionRecord {
        external_id,
        decision,
        reason: reason.map(str::to_string),
        line: None,
        profile: None,
    };
    let rejected = report.rejected.iter().map(|r| DecisionRecord {
        // Records without an externalId are keyed by where they were.
        external_id: r.external_id.clone().unwrap_or_else(|| format!("({})", r.origin)),
        decision: Decision::Rejected,
        reason: Some(match &r.field {
            Some(f) => format!("{f}: {}", r.reason),
            None => r.reason.clone(),
        }),
        line: Some(r.origin.to_string()),
        profile: None,
    });
    let Some(p) = prepared else {
        return store.record_decisions(run, &mut rejected.into_iter());
    };
    let users = &p.pulled.users;
    // The externalId (and profile, when shown) of each spill slot.
    let mut by_slot: Vec<(String, Option<serde_json::Value>)> =
        vec![Default::default(); users.len()];
    if show_profiles {
        for (slot, user) in users.iter().enumerate() {
            let user = user.map_err(|e| state::StateError::Backend {
                location: "the pulled users' temporary file".into(),
                message: format!("cannot read them back: {e}"),
            })?;
            let profile = serde_json::to_value(&user.profile).ok();
            by_slot[slot] = (user.external_id, profile);
        }
    } else {
        for id in users.ids() {
            if let Some(slot) = users.slot_of(id) {
                by_slot[slot].0 = id.to_string();
            }
        }
    }
    let planned = p.actions.iter().zip(by_slot).map(|(action, (id, profile))| {
        let (decision, reason) = match action {
            Action::Create => (Decision::Created, None),
            Action::Update => (Decision::Updated, None),
            Action::Reactivate => (Decision::Reactivated, None),
            Action::Unchanged => (Decision::Unchanged, None),
            Action::AlreadyInactive => (Decision::Unchanged, Some("already_inactive")),
            Action::Deactivate => (Decision::Deactivated, Some("inactive_in_source")),
            Action::DeactivateUnowned => (Decision::Deactivated, Some("inactive_not_sent_before")),
        };
        DecisionRecord { profile, ..record(id, decision, reason) }
    });
    let leavers = p
        .leavers
        .iter()
        .map(|id| record(id.clone(), Decision::Deactivated, Some("missing_from_source")));
    let not_yet = p.pulled.not_yet.iter().map(|n| {
        let reason = format!("starts {}, imported from {}", n.start_date, n.import_from);
        DecisionRecord {
            line: Some(n.origin.to_string()),
            ..record(n.external_id.clone(), Decision::NotYet, Some(&reason))
        }
    });
    let mut all = rejected.chain(planned).chain(leavers).chain(not_yet);
    store.record_decisions(run, &mut all)
}

/// After the push: record the pull (a complete one that was not held) and a completed full
/// resync.
fn finish_state(
    job: &Job,
    prepared: &Prepared,
    store: &mut dyn StateStore,
    report: &mut JobReport,
) {
    let now = chrono::Utc::now();
    if report.hold.is_none() {
        // Rejected and pre-hire ids count as seen: they are in the source.
        let mut present = prepared
            .pulled
            .users
            .ids()
            .chain(report.rejected.iter().filter_map(|r| r.external_id.as_deref()))
            .chain(prepared.pulled.not_yet.iter().map(|n| n.external_id.as_str()));
        if let Err(e) = store.record_pull(
            &job.name,
            &mut present,
            prepared.count_missing,
            prepared.pulled.users.len() as u64,
            now,
        ) {
            report.outcome = JobOutcome::Failed;
            report.error.get_or_insert(format!("cannot record the pull in the state: {e}"));
        }
    }
    if report.mode.full
        && report.hold.is_none()
        && report.outcome != JobOutcome::Failed
        && let Err(e) = store.record_full_resync(&job.name, now)
    {
        warn!(error = %e, "cannot record the full resync");
    }
}

async fn push(
    settings: &Settings,
    job: &Job,
    client: &OktaClient,
    prepared: &Prepared,
    store: &mut dyn StateStore,
    report: &mut JobReport,
    options: &RunOptions,
) {
    let mut importer = Importer::new(
        client.clone(),
        job.identity_source_id.clone(),
        settings.okta.sessions.clone(),
    );
    if let Some(clock) = &options.spacing {
        importer = importer.with_spacing_clock(clock.clone());
    }
    push_sessions(settings, job, client, prepared, store, report, &mut importer).await;
}

/// Whether a user this plan deactivates is one Okta confirmed active: then its bulk delete
/// takes the session to IN_PROGRESS. A state read failure only costs the status read it saves.
fn plan_hints(store: &dyn StateStore, job: &str, plan: &SessionPlan) -> PlanHints {
    let deleted: Vec<&str> = plan
        .requests
        .iter()
        .filter(|r| r.kind == RequestKind::Delete)
        .flat_map(|r| r.external_ids.iter().map(String::as_str))
        .collect();
    let deletes_known_users = !deleted.is_empty()
        && store
            .entries(job, &deleted)
            .is_ok_and(|entries| entries.iter().any(|e| e.status == Some(SentStatus::Active)));
    PlanHints { deletes_known_users }
}

async fn push_sessions(
    settings: &Settings,
    job: &Job,
    client: &OktaClient,
    prepared: &Prepared,
    store: &mut dyn StateStore,
    report: &mut JobReport,
    importer: &mut Importer,
) {
    let users = &prepared.pulled.users;
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
    let mut sessions = users.sessions_selected(
        job.sessions,
        Limits::default(),
        Some(&prepared.send),
        &prepared.extra_deletes,
    );
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
        // Mark the session's users pending before Okta can see them: if we die before
        // learning the outcome, the next run resends them whatever the state said.
        if !failed
            && let Err(e) = store.mark_pending(&job.name, &session_users(plan), chrono::Utc::now())
        {
            failed = true;
            report.outcome = JobOutcome::Failed;
            report.error = Some(format!("cannot write the state, so nothing more was sent: {e}"));
        }
        if failed {
            // After a failure (or a shutdown) we stop: sending deactivations while the run is
            // unhealthy is the wrong way to fail. The next run sends them again.
            report.counts.not_imported += (up + del) as u64;
            continue;
        }
        let outcome = importer.run_with(plan, plan_hints(store, &job.name, plan)).await;
        let confirmed = match outcome.final_status {
            Some(crate::okta::model::SessionStatus::Completed) => {
                report.counts.upserted += up as u64;
                report.counts.deactivated += del as u64;
                true
            }
            // Okta kept a delete-only session CREATED: every id in it was unknown to Okta,
            // which is what a deactivation asks for. Confirm them, or every run would resend.
            _ if outcome.error.is_none() && outcome.cancelled_untriggerable && up == 0 => true,
            _ if outcome.error.is_none() => false,
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
                false
            }
        };
        // State changes only for sessions Okta confirmed; an ERROR leaves it untouched (the
        // users stay pending and are resent).
        if confirmed {
            let result = confirmed_users(users, plan, settings.state.store_profiles)
                .map_err(|e| format!("cannot read back the pulled users: {e}"))
                .and_then(|c| {
                    store
                        .confirm(&job.name, &c, chrono::Utc::now())
                        .map_err(|e| format!("cannot write the state: {e}"))
                });
            if let Err(e) = result {
                failed = true;
                report.outcome = JobOutcome::Failed;
                report.error = Some(format!("{e}; okta has the session, the next run resends it"));
            }
        }
        session_report.outcome = Some(outcome);
    }
}

/// The users of a session, with the status it sends them.
fn session_users(plan: &SessionPlan) -> Vec<(&str, SentStatus)> {
    plan.requests
        .iter()
        .filter_map(|r| match r.kind {
            RequestKind::Upsert => Some((r, SentStatus::Active)),
            RequestKind::Delete => Some((r, SentStatus::Inactive)),
            _ => None,
        })
        .flat_map(|(r, s)| r.external_ids.iter().map(move |id| (id.as_str(), s)))
        .collect()
}

/// What Okta confirmed in a completed session: the hash (and profile) of each upsert, and the
/// deactivations (a leaver, missing from the spill, keeps its stored hash).
fn confirmed_users(
    users: &Spill,
    plan: &SessionPlan,
    keep_profiles: bool,
) -> std::io::Result<Vec<Confirmed>> {
    let mut out = Vec::new();
    let mut upsert_slots = Vec::new();
    for (id, status) in session_users(plan) {
        let slot = users.slot_of(id);
        if status == SentStatus::Active
            && keep_profiles
            && let Some(s) = slot
        {
            upsert_slots.push((out.len(), s));
        }
        out.push(Confirmed {
            external_id: id.to_string(),
            status,
            hash: slot.map(|s| users.slot_info(s).1),
            profile: None,
        });
    }
    upsert_slots.sort_by_key(|(_, s)| *s);
    let slots: Vec<usize> = upsert_slots.iter().map(|(_, s)| *s).collect();
    for ((i, _), user) in upsert_slots.iter().zip(users.read_slots(&slots)?) {
        out[*i].profile = Some(user.profile);
    }
    Ok(out)
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::batch::{PlannedRequest, SessionKind};
    use crate::state::sqlite::SqliteStore;

    fn plan(kind: RequestKind, ids: &[&str]) -> SessionPlan {
        let session =
            if kind == RequestKind::Delete { SessionKind::Delete } else { SessionKind::Upsert };
        SessionPlan {
            kind: session,
            requests: vec![PlannedRequest {
                kind,
                external_ids: ids.iter().map(|s| s.to_string()).collect(),
                body: Vec::new(),
            }],
        }
    }

    fn confirmed(id: &str, status: SentStatus) -> Confirmed {
        Confirmed { external_id: id.into(), status, hash: Some("h".into()), profile: None }
    }

    #[test]
    fn only_a_deactivation_of_a_user_okta_confirmed_active_skips_the_status_read() {
        let mut store = SqliteStore::in_memory(false).unwrap();
        let at = chrono::Utc::now();
        store
            .confirm(
                "hr",
                &[confirmed("known", SentStatus::Active), confirmed("gone", SentStatus::Inactive)],
                at,
            )
            .unwrap();
        store.mark_pending("hr", &[("sent-once", SentStatus::Active)], at).unwrap();
        let hints = |kind, ids: &[&str]| plan_hints(&store, "hr", &plan(kind, ids));
        assert!(hints(RequestKind::Delete, &["never-seen", "known"]).deletes_known_users);
        // Unknown to Okta, only pending (the session may have failed), or already inactive:
        // Okta may keep the session CREATED, so it is read before any trigger.
        assert!(!hints(RequestKind::Delete, &["never-seen"]).deletes_known_users);
        assert!(!hints(RequestKind::Delete, &["sent-once"]).deletes_known_users);
        assert!(!hints(RequestKind::Delete, &["gone"]).deletes_known_users);
        assert!(!hints(RequestKind::Upsert, &["known"]).deletes_known_users);
        let other_job = plan_hints(&store, "contractors", &plan(RequestKind::Delete, &["known"]));
        assert!(!other_job.deletes_known_users, "known to another job's state only");
    }
}
