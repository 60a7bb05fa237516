//! The diff of a pull against the state: what each user needs, and who left.
//!
//! Memory stays bounded: the pulled users are on disk ([`Spill`]) with only their id index and
//! a 16-byte profile hash in memory, and the state is streamed row by row
//! ([`StateStore::for_each_entry`]); each row is looked up in the spill's index. What is kept
//! is one action byte per pulled user and the ids of users missing from the pull.
//!
//! # Who may be deactivated
//!
//! - A user the source marks inactive is deactivated when the state knows it as active (a
//!   status change), or when the state does not know it at all ([`Action::DeactivateUnowned`]):
//!   Okta ignores unknown ids, and an id it does know was explicitly named by the source.
//! - A user *missing* from the pull is deactivated only if this job sent it as active (it
//!   owns it), only after a complete pull, and only once it has been missing from
//!   `leavers.missing_runs` consecutive complete pulls. Records that were rejected or are
//!   not yet due (pre-hire) are present, not missing. If any rejected record has no
//!   externalId, nobody can be told to be missing, and absence detection is off for the run.
//!
//! # Memberships and groups (the mover)
//!
//! The state holds, per user, the memberships this job gave and Okta confirmed
//! ([`Entry::groups`]); nothing else is ever removed, so a membership an admin added by hand
//! stays.
//!
//! - An active user whose derived groups differ from its confirmed ones is sent (an
//!   [`Action::Update`] even when its profile is unchanged), and loses the confirmed groups
//!   it no longer derives (a mover).
//! - A user deactivated this run (inactive in the source, or a leaver missing from a complete
//!   pull), or already inactive with memberships left, loses every membership this job gave,
//!   unless `groups.remove_memberships_on_deactivate: false`.
//! - A group this job created ([`crate::state::OwnedGroup`]) is deleted once no active user
//!   of a complete pull has derived it for `groups.retire_after_runs` consecutive pulls, no
//!   user still waiting out `leavers.missing_runs` (or rejected this run) holds it, and no
//!   other job of the same identity source created it too.
//!
//! The pull keeps 8 bytes per user for this (a fingerprint of its groups); what is removed is
//! kept as ids, so it grows with the changes, not with the pull.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::spill::{GroupRemovals, Spill};
use crate::mapping::groups_fingerprint;
use crate::settings::Job;
use crate::state::{Entry, SentStatus, StateError, StateStore};

/// What a pulled user needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Active in the source, never confirmed by Okta for this job.
    Create,
    /// Active, confirmed active, but the profile (or groups) changed, or a send is unconfirmed.
    Update,
    /// Active in the source, confirmed inactive.
    Reactivate,
    /// Active and identical to what Okta confirmed.
    Unchanged,
    /// Inactive in the source, and this job sent it as active: a leaver.
    Deactivate,
    /// Inactive in the source, never sent as active by this job (sent anyway: Okta ignores
    /// unknown ids; not counted by the deactivation safeguards).
    DeactivateUnowned,
    /// Inactive, and Okta confirmed it inactive.
    AlreadyInactive,
}

impl Action {
    /// Whether a delta run sends it.
    pub fn sends(self) -> bool {
        !matches!(self, Action::Unchanged | Action::AlreadyInactive)
    }

    /// Whether it is an upsert.
    pub fn is_upsert(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Reactivate | Action::Unchanged)
    }
}

/// Counts of a delta, for the report and the safeguards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Changes {
    pub creates: u64,
    pub updates: u64,
    pub reactivations: u64,
    /// Inactive in the source, owned (sent as active before).
    pub deactivations: u64,
    /// Missing from a complete pull for `missing_runs` pulls, owned.
    pub leavers_missing: u64,
    /// Inactive in the source, not owned: sent, but not counted by safeguards.
    pub deactivations_unowned: u64,
    /// Unchanged active users (skipped in a delta run, resent in a full one).
    pub unchanged: u64,
    /// Inactive and already confirmed inactive.
    pub already_inactive: u64,
    /// Owned users missing from this pull but not for `missing_runs` pulls yet.
    pub missing_waiting: u64,
    /// Users whose last send was never confirmed, sent again.
    pub unconfirmed_resent: u64,
    /// Users sent only because their memberships differ from those Okta confirmed.
    pub membership_changes: u64,
    /// Memberships this job gave that this run removes (movers and leavers).
    pub membership_removals: u64,
    /// Memberships this job gave and Okta confirmed, before this run.
    pub memberships_known: u64,
    /// Groups this job created that this run deletes.
    pub group_deletions: u64,
    /// Groups this job created, before this run.
    pub groups_owned: u64,
}

impl Changes {
    /// Deactivations the safeguards count: only users this job owns.
    pub fn counted_deactivations(&self) -> u64 {
        self.deactivations + self.leavers_missing
    }
}

/// The diff of one pull.
#[derive(Debug)]
pub struct Delta {
    /// Per spill slot.
    pub actions: Vec<Action>,
    /// Owned users missing from the pull, due for deactivation.
    pub leavers: Vec<String>,
    pub changes: Changes,
    /// Why absence detection was off for this run, if it was.
    pub absence_off: Option<String>,
    /// Memberships and groups this run takes away.
    pub removals: GroupRemovals,
}

/// Diff `spill` against `store`. `present` holds ids that were read but not mapped (rejected,
/// or before their pre-hire window): never missing.
pub fn compute(
    spill: &Spill,
    store: &dyn StateStore,
    job: &Job,
    present: &HashSet<String>,
    absence_off: Option<String>,
) -> Result<Delta, StateError> {
    // Without a state entry: active → create; inactive → unowned deactivation.
    let mut actions: Vec<Action> =
        (0..spill.len()).map(|i| decide_new(spill.slot_active(i))).collect();
    let mut unconfirmed = 0u64;
    let mut leavers = Vec::new();
    let mut missing_waiting = 0u64;
    let detect_missing = job.leavers.deactivate_missing && absence_off.is_none();
    let mut m = Memberships::default();
    let strip = job.groups.remove_memberships_on_deactivate;
    // The first failure to read the spill back; the rest of the stream is skipped.
    let mut unreadable: Option<std::io::Error> = None;
    store.for_each_entry(&job.name, &mut |e: Entry| {
        if unreadable.is_some() {
            return;
        }
        m.known += e.groups.len() as u64;
        match spill.slot_of(&e.external_id) {
            Some(slot) => {
                let active = spill.slot_active(slot);
                if e.pending.is_some() {
                    unconfirmed += 1;
                }
                // Only an active user's hash and groups are compared.
                let confirmed_groups = groups_fingerprint(e.groups.iter().map(String::as_str));
                let (hash, groups) = if active {
                    match spill.content_against(slot, e.hash.as_deref(), confirmed_groups) {
                        Ok(found) => found,
                        Err(err) => {
                            unreadable = Some(err);
                            return;
                        }
                    }
                } else {
                    (String::new(), confirmed_groups)
                };
                let mut action = decide(&e, active, &hash);
                if active && confirmed_groups != groups {
                    if action == Action::Unchanged {
                        action = Action::Update;
                        m.changed += 1;
                    }
                    if !e.groups.is_empty() {
                        m.movers.push((slot, e.groups));
                    }
                } else if !active && !e.groups.is_empty() {
                    m.strip_or_hold(strip, e.external_id, e.groups);
                }
                actions[slot] = action;
            }
            None if present.contains(&e.external_id) => m.hold(e.groups),
            None if e.owned_active() => {
                if !detect_missing {
                    m.hold(e.groups);
                    return;
                }
                // This pull is one more consecutive complete pull without the user.
                if e.missing_runs + 1 >= job.leavers.missing_runs {
                    if !e.groups.is_empty() {
                        m.strip_or_hold(strip, e.external_id.clone(), e.groups);
                    }
                    leavers.push(e.external_id);
                } else {
                    missing_waiting += 1;
                    m.hold(e.groups);
                }
            }
            // Inactive and missing: what it still holds was given before it left.
            None if !e.groups.is_empty() => m.strip_or_hold(strip, e.external_id, e.groups),
            None => {}
        }
    })?;
    if let Some(e) = unreadable {
        return Err(StateError::Backend {
            location: "the pull's spill file".into(),
            message: e.to_string(),
        });
    }
    let removals = m.removals(spill, store, job, absence_off.is_none())?;
    let mut changes = Changes {
        leavers_missing: leavers.len() as u64,
        missing_waiting,
        unconfirmed_resent: unconfirmed,
        membership_changes: m.changed,
        membership_removals: removals.memberships(),
        memberships_known: m.known,
        group_deletions: removals.groups.len() as u64,
        groups_owned: m.owned,
        ..Changes::default()
    };
    for a in &actions {
        match a {
            Action::Create => changes.creates += 1,
            Action::Update => changes.updates += 1,
            Action::Reactivate => changes.reactivations += 1,
            Action::Unchanged => changes.unchanged += 1,
            Action::Deactivate => changes.deactivations += 1,
            Action::DeactivateUnowned => changes.deactivations_unowned += 1,
            Action::AlreadyInactive => changes.already_inactive += 1,
        }
    }
    // Deterministic order for the report and the sessions.
    leavers.sort_unstable();
    Ok(Delta { actions, leavers, changes, absence_off, removals })
}

/// The confirmed memberships a user no longer derives (`now` sorted, as
/// [`crate::mapping::MappedUser::group_ids`] gives it): what a mover loses, for pulls and
/// pushed batches alike.
pub fn lost_groups(confirmed: &[String], now: &[&str]) -> Vec<String> {
    confirmed.iter().filter(|g| now.binary_search(&g.as_str()).is_err()).cloned().collect()
}

/// What the state stream finds about memberships (see the module doc).
#[derive(Default)]
struct Memberships {
    /// Active users in the pull whose groups changed, with their confirmed groups.
    movers: Vec<(usize, Vec<String>)>,
    /// Users who lose every membership this job gave.
    leavers: Vec<(String, Vec<String>)>,
    /// Groups still held by users who are neither in the pull nor leaving: never retired.
    held: HashSet<String>,
    known: u64,
    changed: u64,
    owned: u64,
}

impl Memberships {
    fn hold(&mut self, groups: Vec<String>) {
        self.held.extend(groups);
    }

    /// A user leaving (or gone): it loses its memberships, or keeps them (and so its groups)
    /// under `remove_memberships_on_deactivate: false`.
    fn strip_or_hold(&mut self, strip: bool, user: String, groups: Vec<String>) {
        if strip {
            self.leavers.push((user, groups));
        } else {
            self.hold(groups);
        }
    }

    /// The removals: each mover's confirmed groups it no longer derives (read back from the
    /// spill, movers only), the leavers', and the owned groups due for deletion.
    fn removals(
        &mut self,
        spill: &Spill,
        store: &dyn StateStore,
        job: &Job,
        complete: bool,
    ) -> Result<GroupRemovals, StateError> {
        let mut out = GroupRemovals::default();
        self.movers.sort_unstable_by_key(|(slot, _)| *slot);
        let slots: Vec<usize> = self.movers.iter().map(|(s, _)| *s).collect();
        let users = spill.read_slots(&slots).map_err(|e| StateError::Backend {
            location: "the pull's spill file".into(),
            message: e.to_string(),
        })?;
        for ((_, confirmed), user) in std::mem::take(&mut self.movers).into_iter().zip(users) {
            let lost = lost_groups(&confirmed, &user.group_ids());
            if !lost.is_empty() {
                out.movers.push((user.external_id, lost));
            }
        }
        out.leavers = std::mem::take(&mut self.leavers);
        out.leavers.sort_unstable();
        let owned = store.owned_groups(&job.name)?;
        self.owned = owned.len() as u64;
        let Some(after) = job.groups.retire_after_runs else { return Ok(out) };
        if !complete || owned.is_empty() {
            return Ok(out);
        }
        let mut shared: HashSet<String> = HashSet::new();
        for peer in &job.peers {
            shared.extend(store.owned_groups(peer)?.into_iter().map(|g| g.external_id));
        }
        out.groups = owned
            .into_iter()
            .filter(|g| {
                !spill.derives(&g.external_id)
                    && !self.held.contains(&g.external_id)
                    && !shared.contains(&g.external_id)
                    && g.empty_runs + 1 >= after
            })
            .map(|g| g.external_id)
            .collect();
        Ok(out)
    }
}

/// What a user the state has no entry for needs: a creation, or a deactivation of an id this
/// job never sent (Okta ignores unknown ids).
pub fn decide_new(active: bool) -> Action {
    if active { Action::Create } else { Action::DeactivateUnowned }
}

/// One user (active or not, with this content hash) against its state entry, if it has one:
/// the one "is this user unchanged" rule, for pulls and pushed batches alike.
pub fn decide_entry(entry: Option<&Entry>, active: bool, hash: &str) -> Action {
    entry.map_or_else(|| decide_new(active), |e| decide(e, active, hash))
}

/// One user against its state entry (see [`decide_entry`]).
pub fn decide(e: &Entry, active: bool, hash: &str) -> Action {
    // A pending user was sent in a session whose outcome we never learnt: Okta may hold either
    // version, so it is sent again whatever the hash says.
    let pending = e.pending.is_some();
    match (active, e.status) {
        (true, None) => Action::Create,
        (true, Some(SentStatus::Inactive)) => Action::Reactivate,
        (true, Some(SentStatus::Active)) if !pending && e.hash.as_deref() == Some(hash) => {
            Action::Unchanged
        }
        (true, Some(SentStatus::Active)) => Action::Update,
        (false, _) if e.owned_active() => Action::Deactivate,
        (false, Some(SentStatus::Inactive)) if !pending => Action::AlreadyInactive,
        (false, _) => Action::DeactivateUnowned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: Option<SentStatus>, pending: Option<SentStatus>, hash: &str) -> Entry {
        Entry {
            external_id: "x".into(),
            hash: Some(hash.into()),
            status,
            pending,
            missing_runs: 0,
            groups: Vec::new(),
        }
    }

    #[test]
    fn decisions() {
        use SentStatus::*;
        assert_eq!(decide(&entry(Some(Active), None, "h"), true, "h"), Action::Unchanged);
        assert_eq!(decide(&entry(Some(Active), None, "h"), true, "g"), Action::Update);
        // An unconfirmed send is resent even when the hash matches (Okta may hold another).
        assert_eq!(decide(&entry(Some(Active), Some(Active), "h"), true, "h"), Action::Update);
        assert_eq!(decide(&entry(Some(Inactive), None, "h"), true, "h"), Action::Reactivate);
        assert_eq!(decide(&entry(None, Some(Active), "h"), true, "h"), Action::Create);
        assert_eq!(decide(&entry(Some(Active), None, "h"), false, "h"), Action::Deactivate);
        assert_eq!(decide(&entry(None, Some(Active), "h"), false, "h"), Action::Deactivate);
        assert_eq!(decide(&entry(Some(Inactive), None, "h"), false, "g"), Action::AlreadyInactive);
        // A deactivation that was never confirmed is sent again.
        assert_eq!(
            decide(&entry(Some(Inactive), Some(Inactive), "h"), false, "h"),
            Action::DeactivateUnowned
        );
        assert_eq!(
            decide(&entry(None, Some(Inactive), "h"), false, "h"),
            Action::DeactivateUnowned
        );
    }
}
