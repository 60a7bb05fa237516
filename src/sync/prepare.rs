//! Plan a run: pull, diff against the state, apply the safeguards, and pack the sessions.
//! Nothing here talks to Okta; `xaas plan` stops after it.

use std::collections::HashSet;
use std::time::Instant;

use tracing::{info, warn};

use super::delta::{self, Action, Delta};
use super::pull::{Pulled, pull_and_map, reject_oversized};
use super::report::{self, JobReport, SessionReport};
use super::safeguards::{self, BreachKind};
use super::spill::GroupRemovals;
use super::spill::Spill;
use super::{RunContext, RunOptions, SyncError, elapsed_ms};
use crate::okta::batch::{Limits, RequestKind};
use crate::settings::{Job, OnHold};
use crate::state::{JobState, StateStore};

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
    /// The memberships and groups this run takes away (what the hold lets through).
    pub removals: GroupRemovals,
    /// Per spill slot of an update: what it changes (a run's; a plan has none).
    pub changes: std::collections::HashMap<usize, Vec<report::AttributeChange>>,
}

/// Pull, diff, check safeguards and plan sessions, filling `report`. An `Err` means nothing
/// can be sent; the report already holds what was learnt on the way (counts, rejections).
pub async fn prepare(
    ctx: &mut RunContext<'_>,
    job: &Job,
    options: &RunOptions,
    report: &mut JobReport,
) -> Result<Prepared, SyncError> {
    let started = Instant::now();
    let mut pulled = match pull_and_map(ctx.base_dir, job, &ctx.cancel).await {
        Ok(p) => p,
        Err(failure) => {
            warn!(error = %failure, "pull failed: nothing is sent to okta");
            // An incomplete pull sends nothing, so nobody missing from it is deactivated.
            report.pull_complete = failure.complete();
            report.counts.read = failure.read;
            report.counts.rejected = failure.rejected.len() as u64;
            report.rejected = failure.rejected;
            return Err(failure.error);
        }
    };
    let store = &mut *ctx.store;
    let job_state = store.job_state(&job.name).map_err(SyncError::state("read the state"))?;
    report.mode = sync_mode(job, &job_state, options.full);
    let delta = diff(&pulled, store, job)?;
    report.absence_detection_off = delta.absence_off.clone();
    report.changes = delta.changes.clone();

    let hold = hold(store, job, &job_state, &delta, pulled.users.len() as u64, options, report)?;
    // Who is sent. Every deactivation below is either a user the source marks inactive, or a
    // leaver this job owns that was missing from a complete pull (delta::compute), and none
    // is sent while a safeguard holds the run.
    let full = report.mode.full;
    let send: Vec<bool> = delta
        .actions
        .iter()
        .map(|a| {
            let wanted = full || a.sends();
            match hold {
                Hold::No => wanted,
                Hold::UpsertsOnly => wanted && a.is_upsert(),
                Hold::Everything => false,
            }
        })
        .collect();
    let extra_deletes = if hold == Hold::No { delta.leavers.clone() } else { Vec::new() };
    // Removals go with what the hold lets through: the movers' with their upserts, the
    // leavers' and the group deletions only when nothing is held.
    let removals = match hold {
        Hold::No => delta.removals.clone(),
        Hold::UpsertsOnly => {
            GroupRemovals { movers: delta.removals.movers.clone(), ..GroupRemovals::default() }
        }
        Hold::Everything => GroupRemovals::default(),
    };
    // A run records what every update changes (read once, used by the details too); a plan
    // reads it for the users it shows only.
    let changes = match ctx.okta {
        Some(_) => Some(super::record::update_changes(store, job, &pulled.users, &delta.actions)),
        None => None,
    };
    report.details =
        details(store, job, &pulled.users, &delta, options.detail_limit, changes.as_ref());
    let changes = changes.unwrap_or_default();

    let (planned, upserted_groups) =
        plan_sessions(job, &mut pulled, &send, &extra_deletes, &removals)?;
    report.details.groups_created =
        created_groups(store, job, upserted_groups, options.detail_limit);
    report.timings.pull_ms = elapsed_ms(started);
    let c = &mut report.counts;
    c.read = pulled.read;
    c.rejected = pulled.rejected.len() as u64;
    c.deduplicated = pulled.deduplicated.iter().map(|d| d.dropped.len() as u64).sum();
    c.to_upsert = planned.iter().map(|s| s.planned_upserts as u64).sum();
    c.to_deactivate = planned.iter().map(|s| s.planned_deletes as u64).sum();
    c.groups = planned.iter().map(|s| s.planned_groups as u64).sum();
    c.memberships = planned.iter().map(|s| s.planned_memberships as u64).sum();
    c.memberships_removed = planned.iter().map(|s| s.planned_membership_removals as u64).sum();
    c.groups_deleted = planned.iter().map(|s| s.planned_group_deletions as u64).sum();
    c.not_yet_started = pulled.not_yet.len() as u64;
    c.references_resolved = pulled.references.resolved;
    c.references_dangling = pulled.references.dangling.len() as u64;
    info!(
        read = c.read,
        rejected = c.rejected,
        deduplicated = c.deduplicated,
        to_upsert = c.to_upsert,
        to_deactivate = c.to_deactivate,
        unchanged = delta.changes.unchanged,
        full,
        held = hold != Hold::No,
        sessions = planned.len(),
        "planned"
    );
    report.rejected = std::mem::take(&mut pulled.rejected);
    report.deduplicated = std::mem::take(&mut pulled.deduplicated);
    report.dangling = std::mem::take(&mut pulled.references.dangling);
    report.sessions = planned;
    Ok(Prepared {
        pulled,
        send,
        extra_deletes,
        held: hold == Hold::Everything,
        count_missing: delta.absence_off.is_none() && hold == Hold::No,
        actions: delta.actions,
        leavers: delta.leavers,
        removals,
        changes,
    })
}

/// Full or delta, and why.
fn sync_mode(job: &Job, job_state: &JobState, forced: bool) -> report::SyncMode {
    let now = chrono::Utc::now();
    let reason = if forced {
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
    report::SyncMode { full: reason.is_some(), reason }
}

/// Diff the pull against the state. Ids that were read but not mapped are present: never
/// "missing".
fn diff(pulled: &Pulled, store: &dyn StateStore, job: &Job) -> Result<Delta, SyncError> {
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
    delta::compute(&pulled.users, store, job, &present, absence_off)
        .map_err(SyncError::state("read the state"))
}

/// What a safeguard holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    No,
    /// `on_hold: upserts` and only deactivation thresholds were crossed.
    UpsertsOnly,
    Everything,
}

/// Check the safeguards, apply a release (`--allow-deactivations`, a stored approval), and
/// say in the report why the run is held and how to release it.
fn hold(
    store: &mut dyn StateStore,
    job: &Job,
    job_state: &JobState,
    delta: &Delta,
    pulled_users: u64,
    options: &RunOptions,
    report: &mut JobReport,
) -> Result<Hold, SyncError> {
    let mut breaches = safeguards::check(&job.safeguards, &delta.changes, job_state, pulled_users);
    let deactivations = delta.changes.counted_deactivations();
    if let Some(n) = options.allow_deactivations
        && deactivations <= n
        && breaches
            .iter()
            .any(|b| matches!(b.kind, BreachKind::Deactivations | BreachKind::SourceShrink))
    {
        // It releases deactivations only: creations and group removals stay held.
        breaches.retain(|b| {
            matches!(
                b.kind,
                BreachKind::Creations | BreachKind::MembershipRemovals | BreachKind::GroupDeletions
            )
        });
        report.released_by = Some(format!("--allow-deactivations {n}"));
    }
    if !breaches.is_empty()
        && let Some(run_id) = report.run_id
        && let Some(approved) = store
            .take_approval(&job.name, deactivations, delta.changes.creates, run_id)
            .map_err(SyncError::state("read the approvals"))?
    {
        breaches.clear();
        report.released_by = Some(format!("the approval of run {approved}"));
    }
    if breaches.is_empty() {
        return Ok(Hold::No);
    }
    let upserts_only = job.safeguards.on_hold == OnHold::Upserts
        && breaches.iter().all(|b| b.kind == BreachKind::Deactivations);
    warn!(breaches = breaches.len(), "a safeguard held the run");
    report.outcome = report::JobOutcome::Held;
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
    Ok(if upserts_only { Hold::UpsertsOnly } else { Hold::Everything })
}

/// Plan the sessions, keeping only their summaries (the push packs them again, one session at
/// a time: packing is deterministic). Users too large to send become rejections.
fn plan_sessions(
    job: &Job,
    pulled: &mut Pulled,
    send: &[bool],
    extra_deletes: &[String],
    removals: &GroupRemovals,
) -> Result<(Vec<SessionReport>, Vec<String>), SyncError> {
    let mut planned = Vec::new();
    let mut groups = Vec::new();
    let mut sessions = pulled.users.sessions_selected(
        job.sessions,
        Limits::default(),
        Some(send),
        extra_deletes,
        removals,
    );
    while let Some(plan) = sessions.next_session().map_err(SyncError::spill("read back"))? {
        planned.push(SessionReport::planned(&plan));
        groups.extend(
            plan.requests
                .iter()
                .filter(|r| r.kind == RequestKind::GroupsUpsert)
                .flat_map(|r| r.external_ids.iter().cloned()),
        );
    }
    let oversized = sessions.take_oversized();
    drop(sessions);
    reject_oversized(pulled, oversized);
    Ok((planned, groups))
}

/// The groups a plan upserts that this job did not create before (at most `limit`).
fn created_groups(
    store: &dyn StateStore,
    job: &Job,
    mut upserted: Vec<String>,
    limit: usize,
) -> Vec<String> {
    let owned: HashSet<String> = match store.owned_groups(&job.name) {
        Ok(o) => o.into_iter().map(|g| g.external_id).collect(),
        Err(_) => return Vec::new(),
    };
    upserted.retain(|g| !owned.contains(g));
    upserted.sort_unstable();
    upserted.truncate(limit);
    upserted
}

/// The users behind each part of the plan, at most `limit` per part; updates come with their
/// attribute-level diff against the last confirmed profile (`known`, when already read).
fn details(
    store: &dyn StateStore,
    job: &Job,
    users: &Spill,
    delta: &delta::Delta,
    limit: usize,
    known: Option<&std::collections::HashMap<usize, Vec<report::AttributeChange>>>,
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
    let read_users: Vec<(String, Vec<String>)> = read
        .iter()
        .filter(|u| u.active && !u.groups.is_empty())
        .map(|u| (u.external_id.clone(), u.group_ids().into_iter().map(str::to_string).collect()))
        .collect();
    for (slot, user) in wanted.into_iter().zip(read) {
        match delta.actions[slot] {
            Action::Create => d.creates.push(user.external_id),
            Action::Reactivate => d.reactivations.push(user.external_id),
            Action::Update => {
                let changes = match known {
                    Some(known) => known.get(&slot).cloned().unwrap_or_default(),
                    None => store
                        .confirmed_profile(&job.name, &user.external_id)
                        .ok()
                        .flatten()
                        .map(|b| attribute_diff(&b, &user.profile))
                        .unwrap_or_default(),
                };
                d.updates.push(report::UpdateDetail { external_id: user.external_id, changes });
            }
            a => d.deactivations.push(report::DeactivationDetail {
                external_id: user.external_id,
                reason: if a == Action::Deactivate {
                    report::DeactivationReason::InactiveInSource
                } else {
                    report::DeactivationReason::InactiveNotSentBefore
                },
            }),
        }
    }
    membership_details(store, job, &read_users, delta, limit, &mut d);
    for id in delta.leavers.iter() {
        if d.deactivations.len() >= limit.saturating_mul(2) {
            d.truncated = true;
            break;
        }
        d.deactivations.push(report::DeactivationDetail {
            external_id: id.clone(),
            reason: report::DeactivationReason::MissingFromSource,
        });
    }
    d
}

/// Who gains and loses which group: the detailed users' added groups (against what the state
/// confirmed), then every removal, at most `limit` users; and the groups the run deletes.
fn membership_details(
    store: &dyn StateStore,
    job: &Job,
    users: &[(String, Vec<String>)],
    delta: &delta::Delta,
    limit: usize,
    d: &mut report::Details,
) {
    let removed: std::collections::HashMap<&str, &Vec<String>> = delta
        .removals
        .movers
        .iter()
        .chain(&delta.removals.leavers)
        .map(|(u, g)| (u.as_str(), g))
        .collect();
    let ids: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    let confirmed: std::collections::HashMap<String, Vec<String>> = store
        .entries(&job.name, &ids)
        .map(|es| es.into_iter().map(|e| (e.external_id, e.groups)).collect())
        .unwrap_or_default();
    let mut shown: HashSet<&str> = HashSet::new();
    for (id, groups) in users {
        let before = confirmed.get(id);
        let added: Vec<String> =
            groups.iter().filter(|g| before.is_none_or(|b| !b.contains(g))).cloned().collect();
        let lost = removed.get(id.as_str()).map(|g| (*g).clone()).unwrap_or_default();
        if !added.is_empty() || !lost.is_empty() {
            shown.insert(id);
            d.memberships.push(report::MembershipDetail {
                external_id: id.clone(),
                added,
                removed: lost,
            });
        }
    }
    for (id, lost) in delta.removals.movers.iter().chain(&delta.removals.leavers) {
        if d.memberships.len() >= limit.saturating_mul(2) {
            d.truncated = true;
            break;
        }
        if !shown.contains(id.as_str()) {
            d.memberships.push(report::MembershipDetail {
                external_id: id.clone(),
                added: Vec::new(),
                removed: lost.clone(),
            });
        }
    }
    d.groups_deleted = delta.removals.groups.iter().take(limit).cloned().collect();
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
