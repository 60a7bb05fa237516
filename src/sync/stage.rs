//! The send stage: from decided users to sessions sent and state confirmed.
//!
//! Scheduled pulls ([`send_planned`]) and pushed webhook batches (`daemon::push`) both end
//! here, so the rules that make a crash harmless are written once:
//!
//! 1. Before Okta can see a session's users they are marked *pending* in the state: if the
//!    process dies before learning the outcome, the next run resends them whatever the state
//!    said ([`crate::state`], "the write rules").
//! 2. The session's outcome is classified by [`SessionOutcome::verdict`]: applied, unconfirmed,
//!    or failed (retryable or refused).
//! 3. Only an applied session confirms its users (hash, status, profile), one transaction per
//!    job. An `ERROR` session, a failure or a shutdown leaves them pending.
//!
//! After a failure the caller sends no further session: deactivations never go out from an
//! unhealthy run.

use tokio_util::sync::CancellationToken;

use super::SyncError;
use super::report::JobReport;
use super::spill::{GroupRemovals, Spill};
use crate::okta::batch::{Limits, RequestKind, SessionPlan};
use crate::okta::model::SessionStatus;
use crate::okta::session::{Importer, PlanHints, SessionOutcome, SessionVerdict};
use crate::state::{Confirmed, SentStatus, StateStore};

/// What the stage is given: the identity source's importer, the state, and the run's
/// cancellation.
pub struct Stage<'a> {
    pub importer: &'a mut Importer,
    pub store: &'a mut dyn StateStore,
    pub cancel: &'a CancellationToken,
}

/// One session through the stage: its outcome (for the report) and what it means.
pub struct Sent {
    pub outcome: SessionOutcome,
    /// `Ok(true)`: applied and confirmed; `Ok(false)`: ended without Okta's word, nothing
    /// confirmed, no failure; `Err`: the session failed or its state could not be written.
    pub result: Result<bool, SyncError>,
}

impl Stage<'_> {
    /// Send one session. `owners` lists the plan's users per job, with the status each is sent
    /// (see [`session_users`]); `confirmations` is called only once Okta applied the session,
    /// and gives what to confirm per job.
    ///
    /// `Err` means nothing reached Okta (cancelled, or the pending mark could not be written).
    pub async fn send<'j>(
        &mut self,
        plan: &SessionPlan,
        hints: PlanHints,
        owners: &[(&'j str, Vec<(&str, SentStatus)>)],
        confirmations: impl FnOnce() -> Result<Vec<(&'j str, Vec<Confirmed>)>, SyncError>,
    ) -> Result<Sent, SyncError> {
        if self.cancel.is_cancelled() {
            return Err(SyncError::Shutdown);
        }
        let now = chrono::Utc::now();
        for (job, users) in owners {
            self.store.mark_pending(job, users, now).map_err(SyncError::MarkPending)?;
        }
        let outcome = self.importer.run_with(plan, hints).await;
        let (upserts, _) = plan.counts();
        let result = match outcome.verdict(upserts, self.cancel.is_cancelled()) {
            SessionVerdict::Applied => confirm(self.store, confirmations)
                .and_then(|()| confirm_group_loads(self.store, plan, owners))
                .map(|()| true),
            SessionVerdict::Unconfirmed => Ok(false),
            verdict => {
                Err(SyncError::session(&outcome, plan.kind, verdict == SessionVerdict::Retryable))
            }
        };
        Ok(Sent { outcome, result })
    }
}

/// Confirm what Okta applied, per job (also used when a restart finds that a session it had
/// lost track of COMPLETED).
pub fn confirm<'j>(
    store: &mut dyn StateStore,
    confirmations: impl FnOnce() -> Result<Vec<(&'j str, Vec<Confirmed>)>, SyncError>,
) -> Result<(), SyncError> {
    let per_job = confirmations().map_err(|e| SyncError::ConfirmFailed(Box::new(e)))?;
    let now = chrono::Utc::now();
    for (job, users) in per_job {
        store.confirm(job, &users, now).map_err(|e| {
            SyncError::ConfirmFailed(Box::new(SyncError::state("write the state")(e)))
        })?;
    }
    Ok(())
}

/// Confirm what a completed session did to groups: each member's memberships (the state's
/// set, plus what the session added, minus what it removed), and the groups it upserted
/// (now owned) and deleted. Read from the bodies sent. A membership load names users that
/// may not be in the session's user loads (memberships spill into later sessions); they
/// belong to the job that owns them in `owners`, or to its first job.
pub fn confirm_group_loads(
    store: &mut dyn StateStore,
    plan: &SessionPlan,
    owners: &[(&str, Vec<(&str, SentStatus)>)],
) -> Result<(), SyncError> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let Some((first, _)) = owners.first() else { return Ok(()) };
    let job_of: HashMap<&str, &str> =
        owners.iter().flat_map(|(j, users)| users.iter().map(move |(u, _)| (*u, *j))).collect();
    // Per job, per user: groups added and removed.
    type Change = (BTreeSet<String>, BTreeSet<String>);
    let mut per_job: BTreeMap<&str, BTreeMap<String, Change>> = BTreeMap::new();
    let mut groups: BTreeMap<&str, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    let mut group_jobs: HashMap<String, BTreeSet<&str>> = HashMap::new();
    for r in &plan.requests {
        let adds = r.kind == RequestKind::MembershipsUpsert;
        for (group, user) in r.memberships() {
            let job = job_of.get(user.as_str()).copied().unwrap_or(first);
            group_jobs.entry(group.clone()).or_default().insert(job);
            let change = per_job.entry(job).or_default().entry(user).or_default();
            if adds {
                change.1.remove(&group);
                change.0.insert(group);
            } else {
                change.0.remove(&group);
                change.1.insert(group);
            }
        }
    }
    for r in &plan.requests {
        for g in &r.external_ids {
            match r.kind {
                RequestKind::GroupsUpsert => {
                    let jobs = group_jobs.get(g).cloned().unwrap_or_else(|| [*first].into());
                    for job in jobs {
                        groups.entry(job).or_default().0.insert(g.clone());
                    }
                }
                RequestKind::GroupsDelete => groups.entry(first).or_default().1.push(g.clone()),
                _ => {}
            }
        }
    }
    let write = |e| SyncError::ConfirmFailed(Box::new(SyncError::state("write the state")(e)));
    let now = chrono::Utc::now();
    for (job, users) in per_job {
        let ids: Vec<&str> = users.keys().map(String::as_str).collect();
        let before: HashMap<String, Vec<String>> = store
            .entries(job, &ids)
            .map_err(write)?
            .into_iter()
            .map(|e| (e.external_id, e.groups))
            .collect();
        let after: Vec<(String, Vec<String>)> = users
            .into_iter()
            .map(|(user, (added, removed))| {
                let mut set: BTreeSet<String> =
                    before.get(&user).cloned().unwrap_or_default().into_iter().collect();
                set.extend(added);
                set.retain(|g| !removed.contains(g));
                (user, set.into_iter().collect())
            })
            .collect();
        store.set_memberships(job, &after, now).map_err(write)?;
    }
    for (job, (upserted, deleted)) in groups {
        let upserted: Vec<String> = upserted.into_iter().collect();
        store.confirm_groups(job, &upserted, &deleted, now).map_err(write)?;
    }
    Ok(())
}

/// The users of a session, with the status it sends them.
pub fn session_users(plan: &SessionPlan) -> Vec<(&str, SentStatus)> {
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

/// Whether a user this plan deactivates is one Okta confirmed active: then its bulk delete
/// takes the session to IN_PROGRESS. A state read failure only costs the status read it saves.
pub fn plan_hints(store: &dyn StateStore, job: &str, plan: &SessionPlan) -> PlanHints {
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

/// What a pull's planned sessions send: the spill, which of its users, and the leavers.
pub struct Planned<'a> {
    pub job: &'a crate::settings::Job,
    pub users: &'a Spill,
    /// Per spill slot: sent this run.
    pub send: &'a [bool],
    /// Leavers missing from the pull, deactivated this run.
    pub extra_deletes: &'a [String],
    /// Keep each confirmed user's profile in the state.
    pub keep_profiles: bool,
    /// The memberships and groups the run takes away.
    pub removals: &'a GroupRemovals,
}

/// Okta first, before a run sends anything (sessions or direct calls): cancel the sessions a
/// crashed run left open, wait for triggered ones. `false` (the report failed, nothing is
/// imported) when Okta cannot be prepared.
pub async fn prepare(importer: &mut Importer, report: &mut JobReport) -> bool {
    match importer.prepare().await {
        Ok(stale) => {
            report.stale_sessions = stale;
            true
        }
        Err(e) => {
            report.fail(&SyncError::Prepare(Box::new(e)), false);
            report.counts.not_imported = report.counts.to_upsert + report.counts.to_deactivate;
            false
        }
    }
}

/// Send a pull's planned sessions, one after another, filling each `report.sessions` entry
/// with its outcome; Okta was [`prepare`]d. The sessions are packed again here, one at a time
/// (packing is deterministic, so they are the ones planned). After the first failure no
/// further session is sent; what was not sent is counted as `not_imported`.
pub async fn send_planned(stage: &mut Stage<'_>, planned: &Planned<'_>, report: &mut JobReport) {
    let job = planned.job;
    let mut failed = false;
    let mut sessions = planned.users.sessions_selected(
        job.sessions,
        Limits::default(),
        Some(planned.send),
        planned.extra_deletes,
        planned.removals,
    );
    for i in 0..report.sessions.len() {
        let (planned_up, planned_del) =
            (report.sessions[i].planned_upserts, report.sessions[i].planned_deletes);
        let plan = match sessions.next_session() {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) if failed => continue,
            other => {
                failed = true;
                report.counts.not_imported += (planned_up + planned_del) as u64;
                // The first pass read the same file: this is a local disk failure.
                let e = match other {
                    Err(e) => SyncError::spill("read back")(e),
                    _ => SyncError::PlanChanged,
                };
                report.fail(&e, false);
                continue;
            }
        };
        let (up, del) = plan.counts();
        if failed {
            report.counts.not_imported += (up + del) as u64;
            continue;
        }
        let owners = [(job.name.as_str(), session_users(&plan))];
        let hints = plan_hints(stage.store, &job.name, &plan);
        let confirmations = || {
            confirmed_users(planned.users, &plan, planned.keep_profiles)
                .map(|c| vec![(job.name.as_str(), c)])
                .map_err(SyncError::spill("read back"))
        };
        let sent = match stage.send(&plan, hints, &owners, confirmations).await {
            Ok(sent) => sent,
            Err(e) => {
                // Nothing of this session reached Okta; the next run sends it again.
                failed = true;
                report.counts.not_imported += (up + del) as u64;
                report.fail(&e, false);
                continue;
            }
        };
        // Counted as imported only when Okta processed the session (a delete-only session of
        // ids Okta never knew is confirmed, but nothing in it was imported).
        if sent.outcome.final_status == Some(SessionStatus::Completed) {
            report.counts.upserted += up as u64;
            report.counts.deactivated += del as u64;
        }
        if let Err(e) = &sent.result {
            failed = true;
            // A session Okta completed was imported, even if its state could not be written.
            if !matches!(e, SyncError::ConfirmFailed(_)) {
                report.counts.not_imported += (up + del) as u64;
            }
            report.fail(e, false);
        }
        report.sessions[i].outcome = Some(sent.outcome);
    }
}

/// What Okta confirmed in a completed session: the hash (and profile) of each upsert, and the
/// deactivations (a leaver, missing from the spill, keeps its stored hash).
fn confirmed_users(
    users: &Spill,
    plan: &SessionPlan,
    keep_profiles: bool,
) -> std::io::Result<Vec<Confirmed>> {
    let mut out = Vec::new();
    // (place in `out`, slot) of every user in the spill, and of the upserts whose profile
    // is kept; both read back in slot order.
    let mut hashed = Vec::new();
    let mut upsert_slots = Vec::new();
    for (id, status) in session_users(plan) {
        let slot = users.slot_of(id);
        if let Some(s) = slot {
            hashed.push((out.len(), s));
            if status == SentStatus::Active && keep_profiles {
                upsert_slots.push((out.len(), s));
            }
        }
        out.push(Confirmed { external_id: id.to_string(), status, hash: None, profile: None });
    }
    hashed.sort_by_key(|(_, s)| *s);
    let slots: Vec<usize> = hashed.iter().map(|(_, s)| *s).collect();
    for ((i, _), hash) in hashed.iter().zip(users.content_hashes(&slots)?) {
        out[*i].hash = Some(hash);
    }
    upsert_slots.sort_by_key(|(_, s)| *s);
    let slots: Vec<usize> = upsert_slots.iter().map(|(_, s)| *s).collect();
    for ((i, _), user) in upsert_slots.iter().zip(users.read_slots(&slots)?) {
        out[*i].profile = Some(user.profile);
    }
    Ok(out)
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
