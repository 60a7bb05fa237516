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
//! 4. Send the rest in **one** session (upserts and deletes together, which Okta allows: FACTS
//!    §5). A batch too big for one session is cut down to the events that fit. The session id
//!    is written on the events as soon as it is created, so after a crash the daemon asks Okta
//!    how that session ended instead of guessing: a COMPLETED session is not sent again, an
//!    open one is cancelled and resent. Each event reaches Okta exactly once.
//! 5. On COMPLETED, confirm the users in the state and finish the events `done`, with what
//!    became of each record. An Okta refusal that retrying cannot fix ends them `failed`;
//!    anything else leaves them pending, retried after a pause.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span, warn};

use super::queue::PushProgress;
use crate::mapping::{Mapped, MappedUser, Origin, Record};
use crate::okta::OktaClient;
use crate::okta::batch::{self, Limits, SessionMode};
use crate::okta::model::SessionStatus;
use crate::okta::session::{Importer, SpacingClock};
use crate::settings::{Job, Settings};
use crate::state::events::{EventStatus, EventStore, QueuedEvent};
use crate::state::{self, Confirmed, SentStatus, StateStore};
use crate::sync::spill;

/// Pause before retrying a batch that failed for a reason that may pass (Okta 5xx, network,
/// state store busy).
pub const RETRY_AFTER: Duration = Duration::from_secs(15);

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
pub async fn push_batch(ctx: &PushContext<'_>, source: &str) -> PushProgress {
    let span = info_span!("push", identity_source = %source);
    push_batch_inner(ctx, source).instrument(span).await
}

async fn push_batch_inner(ctx: &PushContext<'_>, source: &str) -> PushProgress {
    let retry = PushProgress { more: true, retry_after: Some(RETRY_AFTER) };
    let settings = ctx.settings;
    let jobs = settings.jobs_of(source);
    let mut events = match ctx.events.pending(&jobs, settings.serve.max_batch_records) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "cannot read the pending events");
            return retry;
        }
    };
    if events.is_empty() {
        return PushProgress { more: false, retry_after: None };
    }
    let mut store = match state::open(&settings.state) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot open the state store");
            return retry;
        }
    };
    let mut importer =
        Importer::new(ctx.client.clone(), source.to_string(), settings.okta.sessions.clone())
            .with_spacing_clock(ctx.spacing.clone());
    import(ctx, source, &mut events, store.as_mut(), &mut importer).await
}

async fn import(
    ctx: &PushContext<'_>,
    source: &str,
    events: &mut Vec<QueuedEvent>,
    store: &mut dyn StateStore,
    importer: &mut Importer,
) -> PushProgress {
    let retry = PushProgress { more: true, retry_after: Some(RETRY_AFTER) };
    let settings = ctx.settings;
    // Okta first: cancel sessions a crash left open, wait for triggered ones.
    if let Err(e) = importer.prepare().await {
        warn!(error = %e, "cannot prepare the identity source");
        return retry;
    }
    // Events a crash left in a session: if that session completed, they are done.
    if let Err(progress) = recover(ctx, source, events, store).await {
        return progress;
    }
    if events.is_empty() {
        return more(ctx, settings, source);
    }

    // Map, in arrival order; the last record per externalId wins.
    let mut outcomes: Vec<Vec<RecordOutcome>> = vec![Vec::new(); events.len()];
    let mut mapped: Vec<Mapped1> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let now = Utc::now();
    for (e, event) in events.iter().enumerate() {
        let Some(job) = settings.jobs.iter().find(|j| j.name == event.job) else {
            outcomes[e].push(RecordOutcome {
                index: 0,
                external_id: None,
                outcome: "failed",
                reason: Some(format!("job `{}` is no longer configured", event.job)),
            });
            continue;
        };
        let records: Vec<serde_json::Map<String, Value>> =
            match serde_json::from_str(&event.records) {
                Ok(r) => r,
                Err(err) => {
                    outcomes[e].push(RecordOutcome {
                        index: 0,
                        external_id: None,
                        outcome: "failed",
                        reason: Some(format!("the stored records cannot be read: {err}")),
                    });
                    continue;
                }
            };
        for (index, fields) in records.into_iter().enumerate() {
            let record = Record { origin: Origin::Index(index as u64), fields };
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
                Ok(Mapped::NotYet(n)) => outcomes[e].push(RecordOutcome {
                    index,
                    external_id: Some(n.external_id.clone()),
                    outcome: "rejected",
                    reason: Some("the start date is outside the pre-hire window".into()),
                }),
                Err(r) => outcomes[e].push(RecordOutcome {
                    index,
                    external_id: r.external_id.clone(),
                    outcome: "rejected",
                    reason: Some(r.reason.clone()),
                }),
            }
        }
    }

    // Delta against the state, and the per-batch termination threshold, per job.
    let mut send: Vec<bool> = vec![true; mapped.len()];
    let mut held: Vec<bool> = vec![false; mapped.len()];
    let mut jobs_in_batch: Vec<&str> =
        mapped.iter().map(|m| events[m.event].job.as_str()).collect();
    jobs_in_batch.sort_unstable();
    jobs_in_batch.dedup();
    for job_name in jobs_in_batch {
        let Some(job) = settings.jobs.iter().find(|j| j.name == job_name) else { continue };
        let slots: Vec<usize> =
            (0..mapped.len()).filter(|&i| events[mapped[i].event].job == job_name).collect();
        let ids: Vec<&str> = slots.iter().map(|&i| mapped[i].user.external_id.as_str()).collect();
        let entries = match store.entries(job_name, &ids) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "cannot read the state");
                return retry;
            }
        };
        let known: HashMap<&str, &state::Entry> =
            entries.iter().map(|e| (e.external_id.as_str(), e)).collect();
        let mut deactivations = Vec::new();
        for &i in &slots {
            let user = &mapped[i].user;
            let status = if user.active { SentStatus::Active } else { SentStatus::Inactive };
            if let Some(entry) = known.get(user.external_id.as_str())
                && entry.pending.is_none()
                && entry.status == Some(status)
                && (!user.active
                    || entry.hash.as_deref() == Some(&spill::hex(&spill::profile_hash(user))))
            {
                send[i] = false;
                continue;
            }
            if !user.active {
                deactivations.push(i);
            }
        }
        if let Some(max) = job.safeguards.max_deactivations
            && deactivations.len() as u64 > max
        {
            warn!(job = %job.name, deactivations = deactivations.len(), max, "pushed terminations over safeguards.max_deactivations: held");
            for i in deactivations {
                send[i] = false;
                held[i] = true;
            }
        }
    }

    // One session: cut the batch down to the events whose users fit in one.
    let mut events_in = events.len();
    let plan = loop {
        let users: Vec<MappedUser> = (0..mapped.len())
            .filter(|&i| send[i] && mapped[i].event < events_in)
            .map(|i| mapped[i].user.clone())
            .collect();
        let packed = batch::pack(&users, SessionMode::Combined, Limits::default());
        for o in &packed.oversized {
            if let Some(i) =
                (0..mapped.len()).find(|&i| mapped[i].user.external_id == o.external_id)
            {
                send[i] = false;
                outcomes[mapped[i].event].push(RecordOutcome {
                    index: mapped[i].index,
                    external_id: Some(o.external_id.clone()),
                    outcome: "rejected",
                    reason: Some(format!(
                        "the profile is {} bytes once encoded, over okta's 200 KB request limit",
                        o.bytes
                    )),
                });
            }
        }
        if packed.sessions.len() <= 1 || events_in == 1 {
            break packed.sessions;
        }
        events_in = events_in.div_ceil(2);
    };
    let later = events.split_off(events_in);
    let in_batch = |i: usize| mapped[i].event < events_in;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();

    let mut failed: Option<(String, bool)> = None;
    let mut confirmed = true;
    let mut session_ids = Vec::new();
    for plan in &plan {
        // Pending before Okta sees them (see crate::state): a crash resends them.
        for job_name in
            events.iter().map(|e| e.job.as_str()).collect::<std::collections::BTreeSet<_>>()
        {
            let users: Vec<(&str, SentStatus)> = (0..mapped.len())
                .filter(|&i| in_batch(i) && send[i] && events[mapped[i].event].job == job_name)
                .map(|i| {
                    let u = &mapped[i].user;
                    (
                        u.external_id.as_str(),
                        if u.active { SentStatus::Active } else { SentStatus::Inactive },
                    )
                })
                .collect();
            if let Err(e) = store.mark_pending(job_name, &users, Utc::now()) {
                warn!(error = %e, "cannot write the state");
                return retry;
            }
        }
        if let Err(e) = ctx.events.mark_processing(&ids, None) {
            warn!(error = %e, "cannot mark the events");
            return retry;
        }
        let events_store = ctx.events.clone();
        let hook_ids = ids.clone();
        importer.set_on_created(Some(Box::new(move |session_id| {
            events_store.mark_processing(&hook_ids, Some(session_id)).map_err(|e| e.to_string())
        })));
        let outcome = importer.run(plan).await;
        importer.set_on_created(None);
        session_ids.extend(outcome.id.clone());
        let ok = outcome.final_status == Some(SessionStatus::Completed)
            || (outcome.error.is_none() && outcome.cancelled_untriggerable && plan.counts().0 == 0);
        if !ok {
            confirmed = false;
            // Okta refused the content (a 4xx other than rate limiting) or processed it into
            // ERROR: sending the same again would fail the same way. Anything else (network,
            // 5xx, shutdown) may pass, so the events stay pending.
            let refused = outcome
                .okta_error
                .as_ref()
                .and_then(|d| d.status)
                .is_some_and(|s| (400..500).contains(&s) && s != 429);
            let permanent = (refused || outcome.final_status == Some(SessionStatus::Error))
                && !ctx.client.cancellation().is_cancelled();
            failed = Some((
                outcome.error.clone().unwrap_or_else(|| {
                    format!(
                        "session ended {}",
                        outcome.final_status.map(SessionStatus::as_str).unwrap_or("unknown")
                    )
                }),
                permanent,
            ));
        }
    }

    if let Some((error, permanent)) = &failed {
        warn!(error = %error, permanent, "pushed batch did not complete");
        if !permanent {
            let mut p = retry;
            p.more = true;
            return p;
        }
    }
    // Confirm in the state, then finish the events.
    if confirmed {
        let mut per_job: HashMap<&str, Vec<Confirmed>> = HashMap::new();
        for i in (0..mapped.len()).filter(|&i| in_batch(i) && send[i]) {
            let u = &mapped[i].user;
            per_job.entry(events[mapped[i].event].job.as_str()).or_default().push(Confirmed {
                external_id: u.external_id.clone(),
                status: if u.active { SentStatus::Active } else { SentStatus::Inactive },
                hash: u.active.then(|| spill::hex(&spill::profile_hash(u))),
                profile: (u.active && settings.state.store_profiles).then(|| u.profile.clone()),
            });
        }
        for (job, users) in per_job {
            if let Err(e) = store.confirm(job, &users, Utc::now()) {
                warn!(error = %e, "okta completed the session but the state cannot be written; the events are retried");
                return retry;
            }
        }
    }
    let mut upserted = 0u64;
    let mut deactivated = 0u64;
    for i in (0..mapped.len()).filter(|&i| in_batch(i)) {
        let m = &mapped[i];
        let (outcome, reason) = if held[i] {
            ("held", Some("over safeguards.max_deactivations for one batch; the next scheduled run decides".to_string()))
        } else if !send[i] {
            if outcomes[m.event].iter().any(|o| o.index == m.index) {
                continue;
            }
            ("unchanged", None)
        } else if let Some((error, _)) = &failed {
            ("failed", Some(error.clone()))
        } else if m.user.active {
            upserted += 1;
            ("upserted", None)
        } else {
            deactivated += 1;
            ("deactivated", None)
        };
        outcomes[m.event].push(RecordOutcome {
            index: m.index,
            external_id: Some(m.user.external_id.clone()),
            outcome,
            reason,
        });
    }
    let finished: Vec<(String, EventStatus, Value)> = events
        .iter()
        .zip(outcomes.iter_mut())
        .map(|(event, records)| {
            records.sort_by_key(|r| r.index);
            let status = if records.iter().any(|r| r.outcome == "failed") {
                EventStatus::Failed
            } else if records.iter().any(|r| r.outcome == "held") {
                EventStatus::Held
            } else {
                EventStatus::Done
            };
            (event.id.clone(), status, json!({ "sessions": session_ids, "records": records }))
        })
        .collect();
    if let Err(e) = ctx.events.finish(&finished, Utc::now()) {
        warn!(error = %e, "cannot finish the events; they will be checked again");
        return retry;
    }
    info!(
        events = events.len(),
        upserted,
        deactivated,
        sessions = session_ids.len(),
        "pushed batch imported"
    );
    if !later.is_empty() {
        return PushProgress { more: true, retry_after: None };
    }
    more(ctx, settings, source)
}

/// Events already carrying a session (a crash came between its creation and the events'
/// end): finish those whose last session COMPLETED; the rest are sent again.
async fn recover(
    ctx: &PushContext<'_>,
    source: &str,
    events: &mut Vec<QueuedEvent>,
    store: &mut dyn StateStore,
) -> Result<(), PushProgress> {
    let retry = PushProgress { more: true, retry_after: Some(RETRY_AFTER) };
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
                return Err(retry);
            }
        };
        if status != SessionStatus::Completed {
            continue;
        }
        info!(session_id = %session, events = idx.len(), "events were imported before a restart: not sent again");
        // Confirm what those events sent, as the batch would have.
        let now = Utc::now();
        for &i in &idx {
            let event = &events[i];
            let Some(job) = ctx.settings.jobs.iter().find(|j| j.name == event.job) else {
                continue;
            };
            let users = confirmed_of(job, event, ctx.settings.state.store_profiles);
            if let Err(e) = store.confirm(&job.name, &users, now) {
                warn!(error = %e, "cannot write the state");
                return Err(retry);
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
        return Err(retry);
    }
    done.sort_unstable();
    for i in done.into_iter().rev() {
        events.remove(i);
    }
    Ok(())
}

fn confirmed_of(job: &Job, event: &QueuedEvent, keep_profiles: bool) -> Vec<Confirmed> {
    let records: Vec<serde_json::Map<String, Value>> =
        serde_json::from_str(&event.records).unwrap_or_default();
    let now = Utc::now();
    records
        .into_iter()
        .enumerate()
        .filter_map(|(i, fields)| {
            match job.mapping.apply_at(&Record { origin: Origin::Index(i as u64), fields }, now) {
                Ok(Mapped::User(u)) => Some(Confirmed {
                    external_id: u.external_id.clone(),
                    status: if u.active { SentStatus::Active } else { SentStatus::Inactive },
                    hash: u.active.then(|| spill::hex(&spill::profile_hash(&u))),
                    profile: (u.active && keep_profiles).then(|| u.profile.clone()),
                }),
                _ => None,
            }
        })
        .collect()
}

fn more(ctx: &PushContext<'_>, settings: &Settings, source: &str) -> PushProgress {
    let jobs = settings.jobs_of(source);
    let more = ctx.events.has_pending(&jobs).map(|(n, _)| n > 0).unwrap_or(true);
    PushProgress { more, retry_after: None }
}
