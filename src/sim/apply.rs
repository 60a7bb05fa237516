//! What processing a session does to the emulator's users and groups, and the checks on the
//! groups and memberships a load names.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::state::{GroupRec, SessionRec, State, UserRec, Violation, random_id};
use super::validate::LoadData;

/// Groups and memberships this load names that the session already named (or that it names
/// twice itself); remembers the rest.
pub(super) fn named_twice(
    session: &mut SessionRec,
    data: &LoadData,
) -> Vec<(&'static str, String)> {
    let mut groups = Vec::new();
    let mut pairs = 0usize;
    let mut sample = None;
    match data {
        LoadData::UpsertGroups(list) => {
            for g in list {
                if !session.group_ids.insert(g.external_id.clone()) {
                    groups.push(g.external_id.clone());
                }
            }
        }
        LoadData::DeleteGroups(ids) => {
            for g in ids {
                if !session.group_ids.insert(g.clone()) {
                    groups.push(g.clone());
                }
            }
        }
        LoadData::UpsertMemberships(list) | LoadData::DeleteMemberships(list) => {
            for (g, members) in list {
                for m in members {
                    if !session.memberships.insert((g.clone(), m.clone())) {
                        pairs += 1;
                        sample.get_or_insert_with(|| format!("{m} in {g}"));
                    }
                }
            }
        }
        _ => {}
    }
    let mut out = Vec::new();
    if !groups.is_empty() {
        out.push((
            "duplicate_group_in_session",
            format!(
                "{} group(s) named more than once in this session, e.g. {}",
                groups.len(),
                groups[0]
            ),
        ));
    }
    if let Some(sample) = sample {
        out.push((
            "duplicate_membership_in_session",
            format!("{pairs} membership(s) named more than once in this session, e.g. {sample}"),
        ));
    }
    out
}

/// Upsert one user (bulk or direct): create it active, or replace its profile and reactivate
/// it; `lastUpdated` moves only when something changed. Returns the user.
pub(super) fn upsert_user(
    st: &mut State,
    key: (String, String),
    profile: BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> &UserRec {
    let new = !st.users.contains_key(&key);
    let user = st.users.entry(key).or_insert_with(|| UserRec {
        id: random_id("0ua", 17),
        active: true,
        profile: BTreeMap::new(),
        created: now,
        last_updated: now,
        imports: 0,
        deactivations: 0,
    });
    user.imports += 1;
    if new || !user.active || user.profile != profile {
        user.active = true;
        user.profile = profile;
        user.last_updated = now;
    }
    user
}

/// Deactivate one user (bulk or direct delete): Okta deactivates, never deletes.
pub(super) fn deactivate_user(user: &mut UserRec, now: DateTime<Utc>) {
    user.imports += 1;
    if user.active {
        user.active = false;
        user.deactivations += 1;
        user.last_updated = now;
    }
}

pub(super) fn apply(st: &mut State, source: &str, load: LoadData, now: DateTime<Utc>) {
    let key = |ext: &str| (source.to_string(), ext.to_string());
    match load {
        LoadData::UpsertUsers(users) => {
            for (ext, profile) in users {
                upsert_user(st, key(&ext), profile, now);
            }
        }
        LoadData::DeleteUsers(ids) => {
            // Okta deactivates, never deletes, and silently ignores unknown ids (FACTS §5).
            for ext in ids {
                if let Some(user) = st.users.get_mut(&key(&ext)) {
                    deactivate_user(user, now);
                }
            }
        }
        LoadData::UpsertGroups(groups) => {
            for g in groups {
                let group = st.groups.entry(key(&g.external_id)).or_insert_with(|| GroupRec {
                    id: random_id("00g", 17),
                    display_name: None,
                    description: None,
                    members: BTreeSet::new(),
                });
                group.display_name = g.display_name;
                group.description = g.description;
            }
        }
        LoadData::DeleteGroups(ids) => {
            // A deleted group takes its memberships with it.
            for ext in ids {
                if st.groups.remove(&key(&ext)).is_none() {
                    st.groups_skipped += 1;
                }
            }
        }
        LoadData::UpsertMemberships(list) => {
            for (group, members) in list {
                // Memberships are applied after the session's users (FACTS §5): one naming a
                // user the identity source does not have is the client's ordering mistake,
                // and is not applied [INF].
                let unknown: Vec<&String> =
                    members.iter().filter(|m| !st.users.contains_key(&key(m))).collect();
                if let Some(first) = unknown.first() {
                    let message = format!(
                        "{} membership(s) of group {group} name users the identity source does not have, e.g. {first}",
                        unknown.len()
                    );
                    st.violations.push(Violation {
                        rule: "membership_unknown_member".into(),
                        message,
                        method: "POST".into(),
                        path: "(import processing)".into(),
                        session_id: None,
                        held: false,
                    });
                }
                // [INF] a membership for a group not (yet) known creates a bare group record.
                let known: Vec<String> =
                    members.into_iter().filter(|m| st.users.contains_key(&key(m))).collect();
                let g = st.groups.entry(key(&group)).or_insert_with(|| GroupRec {
                    id: random_id("00g", 17),
                    display_name: None,
                    description: None,
                    members: BTreeSet::new(),
                });
                g.members.extend(known);
            }
        }
        LoadData::DeleteMemberships(list) => {
            let mut skipped = 0u64;
            for (group, members) in list {
                let known: Vec<bool> =
                    members.iter().map(|m| st.users.contains_key(&key(m))).collect();
                match st.groups.get_mut(&key(&group)) {
                    Some(g) => {
                        for (m, known) in members.iter().zip(known) {
                            if !known || !g.members.remove(m) {
                                skipped += 1;
                            }
                        }
                    }
                    None => skipped += members.len() as u64,
                }
            }
            st.memberships_skipped += skipped;
        }
    }
}
