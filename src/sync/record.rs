//! After the push: record the pull, the run and its per-record decisions in the state.

use std::collections::{HashMap, HashSet};

use tracing::warn;

use super::SyncError;
use super::delta::Action;
use super::prepare::{Prepared, attribute_diff};
use super::report::{JobOutcome, JobReport};
use super::spill::Spill;
use crate::settings::Job;
use crate::state::{self, AttributeChange, StateStore};

/// Write the finished run to the history: its report, its hold (what an approval must cover)
/// and what it decided for every record. Failures are logged: the run itself is over.
pub fn finish_run(
    store: &mut dyn StateStore,
    run: state::RunId,
    prepared: Option<&Prepared>,
    report: &JobReport,
    show_profiles: bool,
) {
    let hold = report.state_hold();
    let json = serde_json::to_string(report).unwrap_or_default();
    if let Err(e) =
        store.finish_run(run, report.outcome.as_str(), &json, hold.as_ref(), chrono::Utc::now())
    {
        warn!(error = %e, "cannot record the run in the state's history");
    }
    match record_decisions(store, run, prepared, report, show_profiles) {
        Ok(_) => {}
        // A backend without the run history of the UI: nothing to record.
        Err(state::StateError::Unsupported(_)) => {}
        Err(e) => warn!(error = %e, "cannot record the run's per-record decisions"),
    }
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
        changes: Vec::new(),
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
        changes: Vec::new(),
    });
    let Some(p) = prepared else {
        return store.record_decisions(run, &mut rejected.into_iter());
    };
    let users = &p.pulled.users;
    // The profile of each spill slot, when shown (an opt-in that holds every profile); the
    // ids come from the spill's index, so nothing per person is copied otherwise.
    let mut profiles: Vec<Option<serde_json::Value>> = Vec::new();
    if show_profiles {
        profiles.reserve(users.len());
        for user in users.iter() {
            let user = user.map_err(|e| state::StateError::Backend {
                location: "the pulled users' temporary file".into(),
                message: format!("cannot read them back: {e}"),
            })?;
            profiles.push(serde_json::to_value(&user.profile).ok());
        }
    }
    // The ids are read back from the spill in slot order; a read error ends the list and is
    // returned once the rest is written.
    let unreadable: std::cell::Cell<Option<std::io::Error>> = Default::default();
    let ids = users.ids().map_while(|id| id.map_err(|e| unreadable.set(Some(e))).ok());
    let planned = p.actions.iter().zip(ids).enumerate().map(|(slot, (action, id))| {
        let profile = profiles.get_mut(slot).and_then(Option::take);
        let (decision, reason) = match action {
            Action::Create => (Decision::Created, None),
            Action::Update => (Decision::Updated, None),
            Action::Reactivate => (Decision::Reactivated, None),
            Action::Unchanged => (Decision::Unchanged, None),
            Action::AlreadyInactive => (Decision::Unchanged, Some("already_inactive")),
            Action::Deactivate => (Decision::Deactivated, Some("inactive_in_source")),
            Action::DeactivateUnowned => (Decision::Deactivated, Some("inactive_not_sent_before")),
        };
        let mut changes = p.changes.get(&slot).cloned().unwrap_or_default();
        if !show_profiles {
            // Which attributes changed, not their values (personal data).
            changes.iter_mut().for_each(|c| (c.from, c.to) = (None, None));
        }
        DecisionRecord { profile, changes, ..record(id, decision, reason) }
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
    let written = store.record_decisions(run, &mut all)?;
    match unreadable.take() {
        Some(e) => Err(state::StateError::Backend {
            location: "the pulled users' temporary file".into(),
            message: format!("cannot read their ids back, so some decisions are missing: {e}"),
        }),
        None => Ok(written),
    }
}

/// What each update changes, old → new, read before the push confirms the new profiles (the
/// run page shows it). Empty when the state keeps no profiles (`store_profiles: false`): the
/// page then says "changed". Reads the updated users back from the spill, a chunk at a time.
pub fn update_changes(
    store: &dyn StateStore,
    job: &Job,
    users: &Spill,
    actions: &[Action],
) -> HashMap<usize, Vec<AttributeChange>> {
    let updates: Vec<usize> =
        actions.iter().enumerate().filter(|(_, a)| **a == Action::Update).map(|(i, _)| i).collect();
    let mut out = HashMap::new();
    for chunk in updates.chunks(1_000) {
        let read = match users.read_slots(chunk) {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, "cannot read back the updated users: the run page shows no diffs");
                break;
            }
        };
        for (slot, user) in chunk.iter().zip(read) {
            let before = store.confirmed_profile(&job.name, &user.external_id).ok().flatten();
            let changes = before.map(|b| attribute_diff(&b, &user.profile)).unwrap_or_default();
            if !changes.is_empty() {
                out.insert(*slot, changes);
            }
        }
    }
    out
}

/// After the push: record the pull (a complete one that was not held) and a completed full
/// resync.
pub fn finish_state(
    job: &Job,
    prepared: &Prepared,
    store: &mut dyn StateStore,
    report: &mut JobReport,
) {
    let now = chrono::Utc::now();
    if report.hold.is_none() {
        // Rejected and pre-hire ids count as seen: they are in the source.
        let users = &prepared.pulled.users;
        let read: HashSet<&str> = report
            .rejected
            .iter()
            .filter_map(|r| r.external_id.as_deref())
            .chain(prepared.pulled.not_yet.iter().map(|n| n.external_id.as_str()))
            .collect();
        let present = |id: &str| users.slot_of(id).is_some() || read.contains(id);
        if let Err(e) = store.record_pull(
            &job.name,
            &present,
            prepared.count_missing,
            prepared.pulled.users.len() as u64,
            now,
        ) {
            // An earlier failure keeps its place as the run's error.
            let e = SyncError::state("record the pull in the state")(e);
            report.outcome = JobOutcome::Failed;
            report.error.get_or_insert_with(|| e.describe(false));
            report.failure.get_or_insert(e.kind());
        }
        // One more complete pull for each owned group no active user derived (retirement).
        if prepared.count_missing
            && let Err(e) = store.record_groups(&job.name, &|g| users.derives(g), now)
        {
            let e = SyncError::state("record the groups in the state")(e);
            report.outcome = JobOutcome::Failed;
            report.error.get_or_insert_with(|| e.describe(false));
            report.failure.get_or_insert(e.kind());
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
