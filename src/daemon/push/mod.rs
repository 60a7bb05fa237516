//! Pushed (webhook) events → Okta: one batch of an identity source's pending events becomes
//! one import session.
//!
//! The webhook stores each event durably before its 202 ([`crate::state::events`]); this module
//! imports them, in arrival order, when the source's queue gets to them:
//!
//! 1. Take the pending events (up to `serve.max_batch_records` records), map every record with
//!    its job's mapping, and keep the last record per `externalId` (arrival order).
//! 2. Skip users Okta already has as pushed (same hash and status in the state, nothing
//!    pending): pushes update the state like a pull does, and the next pull doesn't resend them.
//! 3. Hold terminations over the job's `safeguards.max_deactivations` (per batch): they are not
//!    sent, their events end `held`, and the next scheduled pull (which reads the source of
//!    truth under the same safeguards and approvals) decides.
//! 4. Send what `jobs[].realtime` allows at once through Okta's direct endpoints, one call
//!    per user and no session ([`direct`]: terminations by default), before the session.
//! 5. Send the rest in **one** session (upserts and deletes together, which Okta allows: FACTS
//!    §5). A batch too big for one session is cut down to the events that fit. The session id
//!    is written on the events as soon as it is created, so after a crash the daemon asks Okta
//!    how that session ended instead of guessing: a COMPLETED session is not sent again, an
//!    open one is cancelled and resent. Each event reaches Okta exactly once.
//! 6. On COMPLETED, confirm the users in the state and finish the events `done`, with what
//!    became of each record. An Okta refusal that retrying cannot fix ends them `failed`;
//!    anything else leaves them pending, retried after a pause.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span, warn};

use super::queue::PushProgress;

mod direct;
mod references;
use crate::mapping::{Mapped, MappedUser, Origin, Record, groups_fingerprint};
use crate::okta::OktaClient;
use crate::okta::batch::{self, Limits, SessionMode, SessionPlan};
use crate::okta::model::SessionStatus;
use crate::okta::session::{Importer, PlanHints, SpacingClock};
use crate::settings::{Job, Settings};
use crate::state::events::{EventStatus, EventStore, QueuedEvent};
use crate::state::{self, Confirmed, SentStatus, StateStore};
use crate::sync::SyncError;
use crate::sync::delta::{self, Action};
use crate::sync::direct::DirectSent;
use crate::sync::stage::{self, Stage};
use crate::sync::{safeguards, spill};

/// Pause before retrying a batch that failed for a reason that may pass (Okta 5xx, network,
/// state store busy).
pub const RETRY_AFTER: Duration = Duration::from_secs(15);

/// Try the batch again after [`RETRY_AFTER`].
const RETRY: PushProgress = PushProgress { more: true, retry_after: Some(RETRY_AFTER) };

/// Everything one batch needs.
pub struct PushContext<'a> {
    pub settings: &'a Settings,
    pub client: &'a OktaClient,
    pub events: &'a EventStore,
    pub spacing: &'a SpacingClock,
}

/// What became of one record of an event.
#[derive(Debug, Clone, serde::Serialize)]
struct RecordOutcome {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    /// `upserted`, `deactivated`, `unchanged`, `superseded` (a later record of the batch
    /// replaced it), `held`, `rejected`, `failed`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

struct Mapped1 {
    event: usize,
    index: usize,
    user: MappedUser,
}

/// Import one batch of `source`'s pending events.
pub async fn push_batch(
    ctx: &PushContext<'_>,
    store: &mut dyn StateStore,
    source: &str,
) -> PushProgress {
    let span = info_span!("push", identity_source = %source);
    push_batch_inner(ctx, store, source).instrument(span).await
}

async fn push_batch_inner(
    ctx: &PushContext<'_>,
    store: &mut dyn StateStore,
    source: &str,
) -> PushProgress {
    let settings = ctx.settings;
    let jobs = settings.jobs_of(source);
    let mut events = match ctx.events.pending(&jobs, settings.serve.max_batch_records) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "cannot read the pending events");
            return RETRY;
        }
    };
    if events.is_empty() {
        return PushProgress { more: false, retry_after: None };
    }
    let mut importer =
        Importer::new(ctx.client.clone(), source.to_string(), settings.okta.sessions.clone())
            .with_spacing_clock(ctx.spacing.clone());
    import(ctx, source, &mut events, store, &mut importer).await
}

async fn import(
    ctx: &PushContext<'_>,
    source: &str,
    events: &mut Vec<QueuedEvent>,
    store: &mut dyn StateStore,
    importer: &mut Importer,
) -> PushProgress {
    let settings = ctx.settings;
    // Events a crash left in a session need Okta settled first (below); fresh ones send their
    // direct changes before anything that may wait for a session Okta is still processing.
    let recovering =
        events.iter().any(|e| e.status == EventStatus::Processing && !e.sessions.is_empty());
    if recovering {
        // Okta first: cancel sessions a crash left open, wait for triggered ones.
        if let Err(e) = importer.prepare().await {
            warn!(error = %e, "cannot prepare the identity source");
            return RETRY;
        }
        // Events a crash left in a session: if that session completed, they are done.
        if let Err(progress) = recover(ctx, source, events, store).await {
            return progress;
        }
        if events.is_empty() {
            return more(ctx, settings, source);
        }
    }
    let mut batch = map_events(settings, events);
    if let Err(e) = references::resolve_batch(&mut batch, settings, events, store) {
        warn!(error = %e, "cannot read the state");
        return RETRY;
    }
    if let Err(e) = decide(&mut batch, settings, events, store) {
        warn!(error = %e, "cannot read the state");
        return RETRY;
    }
    direct::choose(&mut batch, settings, events, source);
    if batch.direct.contains(&direct::Direct::Chosen) {
        // A batch too big for one session is cut (below) and its later events come back in
        // another batch: their direct users go then, so that their events say what was sent.
        let (_, events_in) = fit_one_session(&mut batch, events.len());
        direct::defer(&mut batch, events_in);
    }
    if let Err(e) = direct::send(ctx, &mut batch, events, store, source).await {
        warn!(error = %e, "direct changes not sent");
        return RETRY;
    }
    if !recovering
        && batch.send.iter().any(|&s| s)
        && let Err(e) = importer.prepare().await
    {
        warn!(error = %e, "cannot prepare the identity source");
        return RETRY;
    }
    let (plans, events_in) = fit_one_session(&mut batch, events.len());
    let later = events.split_off(events_in);
    let sent = match send(ctx, &batch, events, &plans, store, importer).await {
        Ok(sent) => sent,
        Err(e) => {
            warn!(error = %e, "pushed batch not sent");
            return RETRY;
        }
    };
    if let Some(e) = &sent.failure {
        warn!(error = %e, permanent = !e.is_retryable(), "pushed batch did not complete");
        if e.is_retryable() {
            return RETRY;
        }
    }
    if let Err(e) = finish(ctx, &mut batch, events, &sent) {
        warn!(error = %e, "cannot finish the events; they will be checked again");
        return RETRY;
    }
    if !later.is_empty() {
        return PushProgress { more: true, retry_after: None };
    }
    more(ctx, settings, source)
}

/// The mapped records of a batch, the last per job and externalId, and what becomes of each.
struct Batch {
    /// Per event, what became of its records so far.
    outcomes: Vec<Vec<RecordOutcome>>,
    mapped: Vec<Mapped1>,
    /// Per mapped user: sent in the session.
    send: Vec<bool>,
    /// Per mapped user: held (not sent, the next scheduled run decides), and why.
    held: Vec<Option<String>>,
    /// Per mapped user: the references left out of its profile (`on_missing: omit`).
    notes: Vec<Option<String>>,
    /// Per mapped user: sent through the direct endpoints instead of the session.
    direct: Vec<direct::Direct>,
    /// Per mapped user: the memberships this job gave that it loses (the pull's rule,
    /// `sync::delta`, "memberships").
    lost: Vec<Vec<String>>,
}

/// Map every record with its job's mapping, in arrival order; the last record per job and
/// externalId wins, and the earlier ones are `superseded`.
fn map_events(settings: &Settings, events: &[QueuedEvent]) -> Batch {
    let mut outcomes: Vec<Vec<RecordOutcome>> = vec![Vec::new(); events.len()];
    let mut mapped: Vec<Mapped1> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let now = Utc::now();
    let failed = |reason: String| RecordOutcome {
        index: 0,
        external_id: None,
        outcome: "failed",
        reason: Some(reason),
    };
    for (e, event) in events.iter().enumerate() {
        let Some(job) = settings.jobs.iter().find(|j| j.name == event.job) else {
            outcomes[e].push(failed(format!("job `{}` is no longer configured", event.job)));
            continue;
        };
        let records = match event_records(event) {
            Ok(r) => r,
            Err(err) => {
                outcomes[e].push(failed(format!("the stored records cannot be read: {err}")));
                continue;
            }
        };
        for (index, record) in records.into_iter().enumerate() {
            let rejected = |external_id, reason| RecordOutcome {
                index,
                external_id,
                outcome: "rejected",
                reason: Some(reason),
            };
            match job.mapping.apply_at(&record, now) {
                Ok(Mapped::User(user)) => {
                    let key = format!("{}\u{0}{}", job.name, user.external_id);
                    if let Some(&previous) = by_id.get(&key) {
                        let p = &mapped[previous];
                        outcomes[p.event].push(RecordOutcome {
                            index: p.index,
                            external_id: Some(p.user.external_id.clone()),
                            outcome: "superseded",
                            reason: Some(format!("a later push of {} replaced it", event.id)),
                        });
                        mapped[previous] = Mapped1 { event: e, index, user };
                    } else {
                        by_id.insert(key, mapped.len());
                        mapped.push(Mapped1 { event: e, index, user });
                    }
                }
                Ok(Mapped::NotYet(n)) => outcomes[e].push(rejected(
                    Some(n.external_id.clone()),
                    "the start date is outside the pre-hire window".into(),
                )),
                Err(r) => outcomes[e].push(rejected(r.external_id.clone(), r.reason.clone())),
            }
        }
    }
    let n = mapped.len();
    Batch {
        outcomes,
        mapped,
        send: vec![true; n],
        held: vec![None; n],
        notes: vec![None; n],
        direct: vec![direct::Direct::No; n],
        lost: vec![Vec::new(); n],
    }
}

/// The records an event carries.
fn event_records(event: &QueuedEvent) -> Result<Vec<Record>, serde_json::Error> {
    let records: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&event.records)?;
    Ok(records
        .into_iter()
        .enumerate()
        .map(|(i, fields)| Record { origin: Origin::Index(i as u64), fields })
        .collect())
}

/// The delta against the state (the pull's rule, [`delta::decide`]) and the safeguards, per
/// job: unchanged users are not sent, and deactivations over the job's
/// `safeguards.max_deactivations` are held (a batch is not a whole pull, so only the count
/// applies: [`safeguards::deactivation_count`]).
fn decide(
    batch: &mut Batch,
    settings: &Settings,
    events: &[QueuedEvent],
    store: &dyn StateStore,
) -> Result<(), state::StateError> {
    let mapped = &batch.mapped;
    let mut jobs_in_batch: Vec<&str> =
        mapped.iter().map(|m| events[m.event].job.as_str()).collect();
    jobs_in_batch.sort_unstable();
    jobs_in_batch.dedup();
    for job_name in jobs_in_batch {
        let Some(job) = settings.jobs.iter().find(|j| j.name == job_name) else { continue };
        let slots: Vec<usize> =
            (0..mapped.len()).filter(|&i| events[mapped[i].event].job == job_name).collect();
        let ids: Vec<&str> = slots.iter().map(|&i| mapped[i].user.external_id.as_str()).collect();
        let entries = store.entries(job_name, &ids)?;
        let known: HashMap<&str, &state::Entry> =
            entries.iter().map(|e| (e.external_id.as_str(), e)).collect();
        let mut deactivations = Vec::new();
        let mut owned_deactivations = 0u64;
        for &i in &slots {
            let user = &mapped[i].user;
            // Only an upsert compares hashes.
            let hash = if user.active { user.content_hash_hex() } else { String::new() };
            let entry = known.get(user.external_id.as_str()).copied();
            let mut action = delta::decide_entry(entry, user.active, &hash);
            let confirmed = entry.map(|e| e.groups.as_slice()).unwrap_or_default();
            if user.active {
                let now = user.group_ids();
                if groups_fingerprint(confirmed.iter().map(String::as_str))
                    != groups_fingerprint(now.iter().copied())
                    && action == Action::Unchanged
                {
                    action = Action::Update;
                }
                batch.lost[i] = delta::lost_groups(confirmed, &now);
            } else if job.groups.remove_memberships_on_deactivate {
                batch.lost[i] = confirmed.to_vec();
            }
            if !action.sends() {
                batch.send[i] = false;
            } else if !user.active {
                deactivations.push(i);
                owned_deactivations += u64::from(action == Action::Deactivate);
            }
        }
        let removals: u64 = slots.iter().map(|&i| batch.lost[i].len() as u64).sum();
        if let Some(max) = job.safeguards.max_membership_removals
            && removals > max
        {
            // Not sent from a push: the next scheduled run weighs them with every threshold.
            warn!(job = %job.name, removals, max, "pushed membership removals over safeguards.max_membership_removals: left for the next scheduled run");
            for &i in &slots {
                batch.lost[i].clear();
            }
        }
        if let Some(breach) = safeguards::deactivation_count(&job.safeguards, owned_deactivations) {
            warn!(job = %job.name, deactivations = deactivations.len(), breach = %breach.message, "pushed terminations held by a safeguard");
            for i in deactivations {
                batch.send[i] = false;
                batch.held[i] = Some(
                    "over safeguards.max_deactivations for one batch; the next scheduled run \
                     decides"
                        .to_string(),
                );
            }
        }
    }
    Ok(())
}

/// One session: cut the batch down to the events whose users fit in one. Users too large to
/// send are rejected. Returns the session (none when nothing is to be sent) and how many
/// events it covers.
fn fit_one_session(batch: &mut Batch, events: usize) -> (Vec<SessionPlan>, usize) {
    let mut events_in = events;
    loop {
        let mapped = &batch.mapped;
        let chosen: Vec<usize> =
            (0..mapped.len()).filter(|&i| batch.send[i] && mapped[i].event < events_in).collect();
        let users: Vec<MappedUser> = chosen.iter().map(|&i| mapped[i].user.clone()).collect();
        let lost = |active: bool| -> Vec<(String, Vec<String>)> {
            chosen
                .iter()
                .filter(|&&i| mapped[i].user.active == active && !batch.lost[i].is_empty())
                .map(|&i| (mapped[i].user.external_id.clone(), batch.lost[i].clone()))
                .collect()
        };
        let (movers, leavers) = (lost(true), lost(false));
        let (movers, leavers) = (spill::by_group(&movers), spill::by_group(&leavers));
        let (groups, memberships) = batch::derive_groups(&users);
        let removals = batch::Removals { movers: &movers, leavers: &leavers, groups: &[] };
        let packed = batch::pack_with_groups(
            &users,
            &groups,
            &memberships,
            &removals,
            SessionMode::Combined,
            Limits::default(),
        );
        for o in &packed.oversized {
            if let Some(i) =
                (0..mapped.len()).find(|&i| mapped[i].user.external_id == o.external_id)
            {
                batch.send[i] = false;
                batch.outcomes[mapped[i].event].push(RecordOutcome {
                    index: mapped[i].index,
                    external_id: Some(o.external_id.clone()),
                    outcome: "rejected",
                    reason: Some(o.reason()),
                });
            }
        }
        if packed.sessions.len() <= 1 || events_in == 1 {
            return (packed.sessions, events_in);
        }
        events_in = events_in.div_ceil(2);
    }
}

/// What sending a batch's session came to.
struct BatchSent {
    session_ids: Vec<String>,
    /// Why the session did not complete, if it did not.
    failure: Option<SyncError>,
}

/// Send the batch's session through the send stage ([`crate::sync::stage`]): its users are
/// marked pending first and confirmed once Okta completes it. The session id is written on
/// the events as soon as it is created, before any upload (exactly-once recovery).
async fn send(
    ctx: &PushContext<'_>,
    batch: &Batch,
    events: &[QueuedEvent],
    plans: &[SessionPlan],
    store: &mut dyn StateStore,
    importer: &mut Importer,
) -> Result<BatchSent, SyncError> {
    let in_session: Vec<usize> = (0..batch.mapped.len())
        .filter(|&i| batch.send[i] && batch.mapped[i].event < events.len())
        .collect();
    let job_of = |i: usize| events[batch.mapped[i].event].job.as_str();
    let mut owners: BTreeMap<&str, Vec<(&str, SentStatus)>> = BTreeMap::new();
    for &i in &in_session {
        let u = &batch.mapped[i].user;
        owners
            .entry(job_of(i))
            .or_default()
            .push((u.external_id.as_str(), SentStatus::of(u.active)));
    }
    let owners: Vec<(&str, Vec<(&str, SentStatus)>)> = owners.into_iter().collect();
    let keep_profiles = ctx.settings.state.store_profiles;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let mut sent = BatchSent { session_ids: Vec::new(), failure: None };
    let mut stage = Stage { importer, store, cancel: ctx.client.cancellation() };
    for plan in plans {
        ctx.events.mark_processing(&ids, None).map_err(SyncError::state("mark the events"))?;
        let events_store = ctx.events.clone();
        let hook_ids = ids.clone();
        stage.importer.set_on_created(Some(Box::new(move |session_id| {
            events_store.mark_processing(&hook_ids, Some(session_id)).map_err(|e| e.to_string())
        })));
        let confirmations = || {
            let mut per_job: BTreeMap<&str, Vec<Confirmed>> = BTreeMap::new();
            for &i in &in_session {
                per_job
                    .entry(job_of(i))
                    .or_default()
                    .push(Confirmed::of(&batch.mapped[i].user, keep_profiles));
            }
            Ok(per_job.into_iter().collect())
        };
        let result = stage.send(plan, PlanHints::default(), &owners, confirmations).await;
        stage.importer.set_on_created(None);
        let s = result?;
        sent.session_ids.extend(s.outcome.id.clone());
        match s.result {
            Ok(true) => {}
            // Ended without Okta's word: the events stay pending and are sent again.
            Ok(false) => {
                sent.failure = Some(SyncError::session(&s.outcome, plan.kind, true));
                break;
            }
            Err(e) => {
                sent.failure = Some(e);
                break;
            }
        }
    }
    Ok(sent)
}

/// Finish the batch's events with what became of each record.
fn finish(
    ctx: &PushContext<'_>,
    batch: &mut Batch,
    events: &[QueuedEvent],
    sent: &BatchSent,
) -> Result<(), state::StateError> {
    let mut upserted = 0u64;
    let mut deactivated = 0u64;
    let failure = sent.failure.as_ref().map(|e| e.describe(false));
    for (i, m) in batch.mapped.iter().enumerate().filter(|(_, m)| m.event < events.len()) {
        let (outcome, reason) = if let Some(why) = &batch.held[i] {
            ("held", Some(why.clone()))
        } else if let direct::Direct::Sent(sent) = &batch.direct[i] {
            let how = "sent directly, no session".to_string();
            match sent {
                DirectSent::Upserted => ("upserted", Some(how)),
                DirectSent::Deactivated => ("deactivated", Some(how)),
                DirectSent::UnknownToOkta => {
                    ("deactivated", Some("okta never had this user: nothing to deactivate".into()))
                }
            }
        } else if let direct::Direct::Failed(error) = &batch.direct[i] {
            ("failed", Some(error.clone()))
        } else if !batch.send[i] {
            if batch.outcomes[m.event].iter().any(|o| o.index == m.index) {
                continue;
            }
            ("unchanged", None)
        } else if let Some(error) = &failure {
            ("failed", Some(error.clone()))
        } else if m.user.active {
            upserted += 1;
            ("upserted", batch.notes[i].clone())
        } else {
            deactivated += 1;
            ("deactivated", None)
        };
        batch.outcomes[m.event].push(RecordOutcome {
            index: m.index,
            external_id: Some(m.user.external_id.clone()),
            outcome,
            reason,
        });
    }
    let finished: Vec<(String, EventStatus, Value)> = events
        .iter()
        .zip(batch.outcomes.iter_mut())
        .map(|(event, records)| {
            records.sort_by_key(|r| r.index);
            let status = if records.iter().any(|r| r.outcome == "failed") {
                EventStatus::Failed
            } else if records.iter().any(|r| r.outcome == "held") {
                EventStatus::Held
            } else {
                EventStatus::Done
            };
            (event.id.clone(), status, json!({ "sessions": sent.session_ids, "records": records }))
        })
        .collect();
    ctx.events.finish(&finished, Utc::now())?;
    info!(
        events = events.len(),
        upserted,
        deactivated,
        sessions = sent.session_ids.len(),
        "pushed batch imported"
    );
    Ok(())
}

/// Events already carrying a session (a crash came between its creation and the events'
/// end): finish those whose last session COMPLETED; the rest are sent again.
async fn recover(
    ctx: &PushContext<'_>,
    source: &str,
    events: &mut Vec<QueuedEvent>,
    store: &mut dyn StateStore,
) -> Result<(), PushProgress> {
    let mut by_session: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.status == EventStatus::Processing
            && let Some(s) = e.sessions.last()
        {
            by_session.entry(s.clone()).or_default().push(i);
        }
    }
    if by_session.is_empty() {
        return Ok(());
    }
    let mut done: Vec<usize> = Vec::new();
    let mut finished = Vec::new();
    for (session, idx) in by_session {
        let status = match ctx.client.get_session(source, &session).await {
            Ok(s) => s.status,
            Err(e) if e.status() == Some(404) => continue,
            Err(e) => {
                warn!(error = %e, session_id = %session, "cannot ask okta how a session ended");
                return Err(RETRY);
            }
        };
        if status != SessionStatus::Completed {
            continue;
        }
        info!(session_id = %session, events = idx.len(), "events were imported before a restart: not sent again");
        // Confirm what those events sent, as the batch would have.
        for &i in &idx {
            let event = &events[i];
            let Some(job) = ctx.settings.jobs.iter().find(|j| j.name == event.job) else {
                continue;
            };
            let keep_profiles = ctx.settings.state.store_profiles;
            let confirmations =
                || Ok(vec![(job.name.as_str(), confirmed_of(job, event, keep_profiles))]);
            if let Err(e) = stage::confirm(store, confirmations) {
                warn!(error = %e, "cannot write the state");
                return Err(RETRY);
            }
            finished.push((
                event.id.clone(),
                EventStatus::Done,
                json!({ "sessions": event.sessions, "recovered": true }),
            ));
        }
        done.extend(idx);
    }
    if let Err(e) = ctx.events.finish(&finished, Utc::now()) {
        warn!(error = %e, "cannot finish the events");
        return Err(RETRY);
    }
    done.sort_unstable();
    for i in done.into_iter().rev() {
        events.remove(i);
    }
    Ok(())
}

/// What a recovered event had sent, to confirm: its records mapped again as the batch did.
fn confirmed_of(job: &Job, event: &QueuedEvent, keep_profiles: bool) -> Vec<Confirmed> {
    let now = Utc::now();
    event_records(event)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|record| match job.mapping.apply_at(&record, now) {
            Ok(Mapped::User(u)) => Some(Confirmed::of(&u, keep_profiles)),
            _ => None,
        })
        .collect()
}

fn more(ctx: &PushContext<'_>, settings: &Settings, source: &str) -> PushProgress {
    let jobs = settings.jobs_of(source);
    let more = ctx.events.has_pending(&jobs).map(|(n, _)| n > 0).unwrap_or(true);
    PushProgress { more, retry_after: None }
}
