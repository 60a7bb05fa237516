//! Real-time pushes: the users of a batch that go out through Okta's direct endpoints, one
//! call each, instead of waiting for an import session (`jobs[].realtime`).
//!
//! - `terminations` (default): every deactivation the batch sends (after the safeguards:
//!   a held termination is not sent at all).
//! - `changes`: deactivations, and upserts of users whose group memberships do not change
//!   and whose profile has the `email` and `userName` Okta's direct create and replace
//!   require, up to [`MAX_DIRECT_UPSERTS`] per batch (a larger burst is cheaper as a session).
//! - `off`: none.
//!
//! Ordering: the batch holds the last record of each user in arrival order, and its direct
//! calls go out before its session, so no call overtakes an earlier event of the same user.
//!
//! A direct user's memberships this job gave are not removed here (that needs a session); the
//! next scheduled run removes them (a deactivated user keeps no job group, `sync::delta`).
//!
//! When the org refuses the direct endpoints ([`crate::okta::direct::is_unavailable`]), the
//! users go into the batch's session instead, the refusal is logged once and counted
//! (`xaas_direct_users_total{outcome="fallback"}`, [`crate::sync::direct::mark_unavailable`]),
//! and the direct path is tried again after [`crate::sync::direct::RETRY_DIRECT_AFTER`].

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tracing::info;

use super::{Batch, PushContext};
use crate::okta::direct::is_unavailable;
use crate::settings::{Realtime, Settings};
use crate::state::StateStore;
use crate::state::events::QueuedEvent;
use crate::sync::direct::{DirectError, DirectSent, known_to_okta, resting, send_user};

/// Upserts one batch sends directly under `realtime: changes`, at most.
pub const MAX_DIRECT_UPSERTS: usize = 25;

/// What became of one user of the batch on the direct path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Direct {
    /// It goes in the session (or is not sent).
    No,
    /// Chosen, not sent yet.
    Chosen,
    Sent(DirectSent),
    /// Okta refused this user's call for good.
    Failed(String),
}

/// Choose the batch's direct users: they leave the session (`send` false, `direct` set).
pub(super) fn choose(batch: &mut Batch, settings: &Settings, events: &[QueuedEvent], source: &str) {
    if resting(source) {
        return;
    }
    let mut upserts = Vec::new();
    for i in 0..batch.mapped.len() {
        let m = &batch.mapped[i];
        if !batch.send[i] || m.event >= events.len() {
            continue;
        }
        let Some(job) = settings.jobs.iter().find(|j| j.name == events[m.event].job) else {
            continue;
        };
        let user = &m.user;
        match (job.realtime, user.active) {
            (Realtime::Off, _) => {}
            (_, false) => batch.direct[i] = Direct::Chosen,
            (Realtime::Changes, true)
                if user.groups.is_empty()
                    && batch.lost[i].is_empty()
                    && user.profile.contains_key("email")
                    && user.profile.contains_key("userName") =>
            {
                upserts.push(i);
            }
            _ => {}
        }
    }
    if upserts.len() <= MAX_DIRECT_UPSERTS {
        for i in upserts {
            batch.direct[i] = Direct::Chosen;
        }
    }
    for i in 0..batch.mapped.len() {
        if batch.direct[i] == Direct::Chosen {
            batch.send[i] = false;
        }
    }
}

/// Send the batch's direct users, one call each. `Err` (a failure that may pass: 5xx, network,
/// rate limit, state store) asks for the whole batch to be tried again: users already confirmed
/// are then unchanged, the rest are sent again.
pub(super) async fn send(
    ctx: &PushContext<'_>,
    batch: &mut Batch,
    events: &[QueuedEvent],
    store: &mut dyn StateStore,
    source: &str,
) -> Result<(), String> {
    let keep_profiles = ctx.settings.state.store_profiles;
    // Who Okta may have, per job, read once.
    let mut chosen: HashMap<&str, Vec<&str>> = HashMap::new();
    for i in (0..batch.mapped.len()).filter(|&i| batch.direct[i] == Direct::Chosen) {
        let m = &batch.mapped[i];
        chosen.entry(events[m.event].job.as_str()).or_default().push(m.user.external_id.as_str());
    }
    let mut known: HashMap<String, HashSet<String>> = HashMap::new();
    for (job, ids) in chosen {
        known.insert(job.to_owned(), known_to_okta(store, job, &ids).map_err(|e| e.to_string())?);
    }
    for i in 0..batch.mapped.len() {
        if batch.direct[i] != Direct::Chosen {
            continue;
        }
        let job = events[batch.mapped[i].event].job.clone();
        let user = &batch.mapped[i].user;
        let known = known.get(&job).is_some_and(|k| k.contains(&user.external_id));
        let started = Instant::now();
        match send_user(store, ctx.client, source, &job, user, known, keep_profiles).await {
            Ok(sent) => {
                let outcome = if sent == DirectSent::Upserted { "upserted" } else { "deactivated" };
                crate::telemetry::direct_user(&job, outcome);
                info!(job = %job, external_id = %user.external_id, outcome, elapsed_ms = started.elapsed().as_millis() as u64, "sent directly, no session");
                batch.direct[i] = Direct::Sent(sent);
            }
            Err(DirectError::Okta(e)) if is_unavailable(&e) => {
                // `send_user` recorded the refusal (logged, gauge, `/readyz`).
                fall_back(batch, events);
                return Ok(());
            }
            Err(DirectError::Okta(e)) if !e.is_retryable() => {
                crate::telemetry::direct_user(&job, "failed");
                batch.direct[i] = Direct::Failed(e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Direct users of the events from `events_in` on stay with their events, which a later
/// batch sends (directly then); nothing of theirs goes now.
pub(super) fn defer(batch: &mut Batch, events_in: usize) {
    for i in 0..batch.mapped.len() {
        if batch.direct[i] == Direct::Chosen && batch.mapped[i].event >= events_in {
            batch.direct[i] = Direct::No;
        }
    }
}

/// Every direct user not yet sent goes into the session instead.
fn fall_back(batch: &mut Batch, events: &[QueuedEvent]) {
    for i in 0..batch.mapped.len() {
        if batch.direct[i] == Direct::Chosen {
            crate::telemetry::direct_user(&events[batch.mapped[i].event].job, "fallback");
            batch.direct[i] = Direct::No;
            batch.send[i] = true;
        }
    }
}
