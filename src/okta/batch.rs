//! Packing users into bulk requests and import sessions within Okta's limits (FACTS §6).
//!
//! Limits per request: 200 profiles and 200 KB of body. Per session: 50 requests and 10,000
//! users. Anything beyond spills into further sessions. Bodies are serialized here, once: the
//! byte size we check is the size we send.
//!
//! Active users go out through `bulk-upsert` and deactivated users through `bulk-delete`. By
//! default they travel in separate sessions ([`SessionMode::Separate`]): a failing delete
//! session can then never take the upserts down with it, and Import Monitoring shows joiners
//! and leavers apart. [`SessionMode::Combined`] puts both kinds in the same sessions, which
//! saves a session (and so one 5-minute wait) when both kinds are small.
//!
//! Groups and memberships derived by the mapping ride in the upsert sessions: after the last
//! active user come `bulk-groups-upsert` requests, then `bulk-group-memberships-upsert`. Okta
//! applies a session's loads in order and processes sessions one after another, so by the
//! time a membership is applied its user and group exist. They take whatever request slots
//! the last upsert session has left and spill into further sessions like users do. Group
//! requests do not count against the 10,000 users of a session. Per request: at most 200
//! groups, or 200 membership entries (one group with up to [`MAX_MEMBERS_PER_ENTRY`] of its
//! members each), and 200 KB (FACTS §3, §6).

use serde::{Deserialize, Serialize};

use super::model::{DeleteProfile, UpsertProfile};
use crate::mapping::{GroupRef, MappedUser};

/// Members per membership entry. The spec sets no maximum; a bound keeps each entry well
/// inside the request size limit (1,000 ids of ≤255 characters could exceed 200 KB, so the
/// byte budget below cuts earlier when ids are long).
pub const MAX_MEMBERS_PER_ENTRY: usize = 1_000;
/// Bytes per membership entry: a quarter of a request, so entries pack without waste.
const MAX_ENTRY_BYTES: usize = 50_000;

/// Okta's documented limits. Configurable only so tests can shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Profiles per bulk request (200).
    pub max_profiles_per_request: usize,
    /// Body bytes per bulk request. Okta says "200 KB"; we count 200,000 bytes so that we stay
    /// within the limit whichever way Okta counts a kilobyte.
    pub max_request_bytes: usize,
    /// Bulk requests per session (50).
    pub max_requests_per_session: usize,
    /// Users per session (10,000).
    pub max_users_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_profiles_per_request: 200,
            max_request_bytes: 200_000,
            max_requests_per_session: 50,
            max_users_per_session: 10_000,
        }
    }
}

/// How active and deactivated users share sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Upserts and deletes in separate sessions (the default).
    #[default]
    Separate,
    /// Upserts and deletes may share a session.
    Combined,
}

/// Which bulk endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// `POST …/bulk-upsert`
    Upsert,
    /// `POST …/bulk-delete` (deactivates)
    Delete,
    /// `POST …/bulk-groups-upsert`
    GroupsUpsert,
    /// `POST …/bulk-groups-delete`
    GroupsDelete,
    /// `POST …/bulk-group-memberships-upsert`
    MembershipsUpsert,
    /// `POST …/bulk-group-memberships-delete`
    MembershipsDelete,
}

impl RequestKind {
    /// The endpoint under `…/sessions/{sessionId}/`.
    pub fn endpoint(self) -> &'static str {
        match self {
            RequestKind::Upsert => "bulk-upsert",
            RequestKind::Delete => "bulk-delete",
            RequestKind::GroupsUpsert => "bulk-groups-upsert",
            RequestKind::GroupsDelete => "bulk-groups-delete",
            RequestKind::MembershipsUpsert => "bulk-group-memberships-upsert",
            RequestKind::MembershipsDelete => "bulk-group-memberships-delete",
        }
    }

    /// Whether the request carries users (and so counts against the users of a session).
    pub fn is_users(self) -> bool {
        matches!(self, RequestKind::Upsert | RequestKind::Delete)
    }

    /// A short name for logs and errors.
    pub fn describe(self) -> &'static str {
        match self {
            RequestKind::Upsert => "bulk upsert",
            RequestKind::Delete => "bulk delete",
            RequestKind::GroupsUpsert => "bulk groups upsert",
            RequestKind::GroupsDelete => "bulk groups delete",
            RequestKind::MembershipsUpsert => "bulk group memberships upsert",
            RequestKind::MembershipsDelete => "bulk group memberships delete",
        }
    }
}

/// What a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    Upsert,
    Delete,
    Combined,
}

impl SessionKind {
    /// `upsert`, `delete` or `combined`: in reports, logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            SessionKind::Upsert => "upsert",
            SessionKind::Delete => "delete",
            SessionKind::Combined => "combined",
        }
    }
}

impl std::fmt::Display for SessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One bulk request, already serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub kind: RequestKind,
    /// The externalIds in this request, in order: users for user requests, groups for group
    /// requests, and the member (user) ids for membership requests (one per membership).
    pub external_ids: Vec<String>,
    /// The exact JSON body to send.
    pub body: Vec<u8>,
}

impl PlannedRequest {
    /// The (group, member) pairs of a membership request, read from the body that is sent:
    /// what a completed session confirms is exactly what it carried. Empty for other kinds.
    pub fn memberships(&self) -> Vec<(String, String)> {
        if !matches!(self.kind, RequestKind::MembershipsUpsert | RequestKind::MembershipsDelete) {
            return Vec::new();
        }
        let body: MembershipBody = match serde_json::from_slice(&self.body) {
            Ok(b) => b,
            // The packer wrote the body; an unreadable one confirms nothing (resent later).
            Err(_) => return Vec::new(),
        };
        body.memberships
            .into_iter()
            .flat_map(|m| {
                let g = m.group_external_id;
                m.member_external_ids.into_iter().map(move |u| (g.clone(), u))
            })
            .collect()
    }
}

/// What one session does to groups, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCounts {
    pub groups_upserted: usize,
    pub groups_deleted: usize,
    pub memberships_added: usize,
    pub memberships_removed: usize,
}

/// One import session's worth of requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    pub kind: SessionKind,
    pub requests: Vec<PlannedRequest>,
}

impl SessionPlan {
    /// Users in this session (upserts and deletes; not groups or memberships).
    pub fn users(&self) -> usize {
        self.requests.iter().filter(|r| r.kind.is_users()).map(|r| r.external_ids.len()).sum()
    }

    /// Groups upserted and memberships (group, user pairs) upserted in this session.
    pub fn group_counts(&self) -> (usize, usize) {
        let mut groups = 0;
        let mut memberships = 0;
        for r in &self.requests {
            match r.kind {
                RequestKind::GroupsUpsert => groups += r.external_ids.len(),
                RequestKind::MembershipsUpsert => memberships += r.external_ids.len(),
                _ => {}
            }
        }
        (groups, memberships)
    }

    /// Every group and membership change in this session.
    pub fn group_changes(&self) -> GroupCounts {
        let mut c = GroupCounts::default();
        for r in &self.requests {
            let n = r.external_ids.len();
            match r.kind {
                RequestKind::GroupsUpsert => c.groups_upserted += n,
                RequestKind::GroupsDelete => c.groups_deleted += n,
                RequestKind::MembershipsUpsert => c.memberships_added += n,
                RequestKind::MembershipsDelete => c.memberships_removed += n,
                _ => {}
            }
        }
        c
    }

    /// Users to upsert and to delete in this session.
    pub fn counts(&self) -> (usize, usize) {
        let mut up = 0;
        let mut del = 0;
        for r in &self.requests {
            match r.kind {
                RequestKind::Upsert => up += r.external_ids.len(),
                RequestKind::Delete => del += r.external_ids.len(),
                // Groups and memberships are not users.
                _ => {}
            }
        }
        (up, del)
    }
}

/// A user that cannot be sent at all because its own entry exceeds the request size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    pub external_id: String,
    pub bytes: usize,
}

impl Oversized {
    /// Why the user is rejected, for every path that packs users.
    pub fn reason(&self) -> String {
        format!(
            "the profile is {} bytes once encoded, over okta's 200 KB request limit",
            self.bytes
        )
    }
}

/// The result of packing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    pub sessions: Vec<SessionPlan>,
    pub oversized: Vec<Oversized>,
}

const ENTITY_USERS_PREFIX: &[u8] = br#"{"entityType":"USERS","profiles":["#;
const GROUPS_PREFIX: &[u8] = br#"{"profiles":["#;
const GROUP_IDS_PREFIX: &[u8] = br#"{"externalIds":["#;
const MEMBERSHIPS_PREFIX: &[u8] = br#"{"memberships":["#;
const BODY_SUFFIX: &[u8] = b"]}";

fn prefix(kind: RequestKind) -> &'static [u8] {
    match kind {
        RequestKind::GroupsUpsert => GROUPS_PREFIX,
        RequestKind::GroupsDelete => GROUP_IDS_PREFIX,
        RequestKind::MembershipsUpsert | RequestKind::MembershipsDelete => MEMBERSHIPS_PREFIX,
        _ => ENTITY_USERS_PREFIX,
    }
}

#[derive(Serialize)]
struct GroupEntry<'a> {
    #[serde(rename = "externalId")]
    external_id: &'a str,
    profile: GroupProfile<'a>,
}

#[derive(Serialize)]
struct GroupProfile<'a> {
    #[serde(rename = "displayName")]
    display_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

#[derive(Serialize)]
struct MembershipEntry<'a> {
    #[serde(rename = "groupExternalId")]
    group_external_id: &'a str,
    #[serde(rename = "memberExternalIds")]
    member_external_ids: &'a [&'a str],
}

/// A membership body read back (what [`PlannedRequest::memberships`] returns).
#[derive(Deserialize)]
struct MembershipBody {
    memberships: Vec<MembershipOwned>,
}

#[derive(Deserialize)]
struct MembershipOwned {
    #[serde(rename = "groupExternalId")]
    group_external_id: String,
    #[serde(rename = "memberExternalIds")]
    member_external_ids: Vec<String>,
}

/// The groups of the active users (first definition of each externalId wins) and, per group,
/// its members, both in first-seen order.
pub fn derive_groups(users: &[MappedUser]) -> (Vec<&GroupRef>, Vec<(&str, Vec<&str>)>) {
    let mut groups: Vec<&GroupRef> = Vec::new();
    let mut members: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = Default::default();
    for u in users.iter().filter(|u| u.active) {
        for g in &u.groups {
            let i = *at.entry(g.external_id.as_str()).or_insert_with(|| {
                groups.push(g);
                members.push((g.external_id.as_str(), Vec::new()));
                members.len() - 1
            });
            members[i].1.push(u.external_id.as_str());
        }
    }
    (groups, members)
}

/// Pack users (already de-duplicated by externalId) into sessions.
///
/// Upserts come first, then the groups and memberships of the active users, then deletes.
/// Users keep their input order, so a plan is reproducible.
pub fn pack(users: &[MappedUser], mode: SessionMode, limits: Limits) -> Packed {
    let (groups, memberships) = derive_groups(users);
    pack_with_groups(users, &groups, &memberships, &Removals::default(), mode, limits)
}

/// What a run takes away besides deactivations: memberships this job gave that the source no
/// longer implies, and groups it created that no active user derives any more. Each list is
/// (group, members) in a stable order.
#[derive(Debug, Default, Clone, Copy)]
pub struct Removals<'a> {
    /// Memberships of users upserted in these sessions (movers): sent right after the
    /// memberships upsert, in the session of the user's upsert where the limits allow.
    pub movers: &'a [(&'a str, Vec<&'a str>)],
    /// Memberships of deactivated users: sent after the user deletes.
    pub leavers: &'a [(&'a str, Vec<&'a str>)],
    /// Groups to delete: sent last (Okta drops a deleted group's memberships).
    pub groups: &'a [&'a str],
}

impl Removals<'_> {
    /// Whether there is anything to send after the deletes.
    fn has_delete_part(&self) -> bool {
        !self.leavers.is_empty()
    }
}

/// [`pack`], with the groups and memberships given rather than derived from `users`, and what
/// to remove. The chunked packer (`sync::spill`) derives them over the whole pull, since a
/// chunk holds only part of each group's members.
///
/// Order, as Okta's own client sends them (FACTS §8): user upserts, groups upsert,
/// memberships upsert, the movers' membership removals; then user deletes, the leavers'
/// membership removals and the group deletes. With [`SessionMode::Separate`] the second part
/// starts a session of its own when it has users or membership removals; group deletes alone
/// stay with the first part.
pub fn pack_with_groups(
    users: &[MappedUser],
    groups: &[&GroupRef],
    memberships: &[(&str, Vec<&str>)],
    removals: &Removals<'_>,
    mode: SessionMode,
    limits: Limits,
) -> Packed {
    let mut packer = Packer::new(limits);
    let mut oversized = Vec::new();
    let active = users.iter().filter(|u| u.active);
    let inactive: Vec<&MappedUser> = users.iter().filter(|u| !u.active).collect();
    oversized.extend(active.filter_map(|u| packer.push_user(u)));
    packer.end_upserts(groups, memberships, removals.movers);
    if mode == SessionMode::Separate && (!inactive.is_empty() || removals.has_delete_part()) {
        packer.close_session();
    }
    oversized.extend(inactive.into_iter().filter_map(|u| packer.push_user(u)));
    packer.end_deletes(removals.leavers, removals.groups);
    let mut packed = packer.finish();
    packed.oversized = oversized;
    packed
}

/// One user's entry of a users request, serialized: the costly part of packing, so
/// `sync::spill` makes entries on several threads and the [`Packer`] only places them.
pub struct UserEntry {
    kind: RequestKind,
    external_id: String,
    entry: Vec<u8>,
}

impl UserEntry {
    /// An upsert when the user is active, a deactivation (bulk-delete) otherwise.
    pub fn of(user: &MappedUser) -> Self {
        let (kind, entry) = if user.active {
            let entry = serde_json::to_vec(&UpsertProfile {
                external_id: &user.external_id,
                profile: &user.profile,
            });
            (RequestKind::Upsert, entry)
        } else {
            (
                RequestKind::Delete,
                serde_json::to_vec(&DeleteProfile { external_id: &user.external_id }),
            )
        };
        let entry = entry.expect("serializing strings into JSON cannot fail");
        Self { kind, external_id: user.external_id.clone(), entry }
    }
}

/// Packs entries one at a time, greedily and in order, into requests and sessions within
/// [`Limits`]: what [`pack_with_groups`] does over a list, and `sync::spill` over users read
/// back from disk one by one, so only the open session's bodies are in memory. Sessions are
/// taken as they close ([`Self::take_sessions`]).
pub struct Packer {
    limits: Limits,
    out: Packed,
    session: Vec<PlannedRequest>,
    session_users: usize,
    request: Option<PlannedRequest>,
    /// Entries in the open request (a membership entry holds several ids).
    entries: usize,
}

impl Packer {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            out: Packed::default(),
            session: Vec::new(),
            session_users: 0,
            request: None,
            entries: 0,
        }
    }

    /// Add one user: an upsert when active, a deactivation (bulk-delete) otherwise. A user
    /// too large for any request is not packed: it is handed back as [`Oversized`].
    pub fn push_user(&mut self, user: &MappedUser) -> Option<Oversized> {
        self.push_user_entry(UserEntry::of(user))
    }

    /// [`Self::push_user`] with the entry already serialized (see [`UserEntry`]).
    pub fn push_user_entry(&mut self, user: UserEntry) -> Option<Oversized> {
        let frame = ENTITY_USERS_PREFIX.len() + BODY_SUFFIX.len();
        if frame + user.entry.len() > self.limits.max_request_bytes {
            return Some(Oversized {
                external_id: user.external_id,
                bytes: frame + user.entry.len(),
            });
        }
        self.push_entry(user.kind, vec![user.external_id], user.entry);
        None
    }

    /// After the upserts: the groups upsert, the memberships upsert and the movers'
    /// membership removals.
    pub fn end_upserts(
        &mut self,
        groups: &[&GroupRef],
        memberships: &[(&str, Vec<&str>)],
        movers: &[(&str, Vec<&str>)],
    ) {
        for g in groups {
            let entry = serde_json::to_vec(&GroupEntry {
                external_id: &g.external_id,
                profile: GroupProfile {
                    display_name: &g.display_name,
                    description: g.description.as_deref(),
                },
            })
            .expect("serializing strings into JSON cannot fail");
            self.push_entry(RequestKind::GroupsUpsert, vec![g.external_id.clone()], entry);
        }
        self.push_memberships(RequestKind::MembershipsUpsert, memberships);
        self.push_memberships(RequestKind::MembershipsDelete, movers);
    }

    /// After the deletes: the leavers' membership removals, then the group deletes.
    pub fn end_deletes(&mut self, leavers: &[(&str, Vec<&str>)], groups: &[&str]) {
        self.push_memberships(RequestKind::MembershipsDelete, leavers);
        self.push_group_deletes(groups);
    }

    /// Group deletes (sent last: Okta drops a deleted group's memberships).
    pub fn push_group_deletes(&mut self, groups: &[&str]) {
        for g in groups {
            let entry = serde_json::to_vec(g).expect("serializing strings into JSON cannot fail");
            self.push_entry(RequestKind::GroupsDelete, vec![g.to_string()], entry);
        }
    }

    /// The sessions closed so far, in order.
    pub fn take_sessions(&mut self) -> Vec<SessionPlan> {
        std::mem::take(&mut self.out.sessions)
    }

    /// Whether a closed session is waiting to be taken.
    pub fn has_sessions(&self) -> bool {
        !self.out.sessions.is_empty()
    }

    /// Add membership entries (group, members) to requests of `kind`, a group's members split
    /// into as many entries as the entry bounds need.
    fn push_memberships(&mut self, kind: RequestKind, memberships: &[(&str, Vec<&str>)]) {
        for (group, members) in memberships {
            let mut rest: &[&str] = members;
            while !rest.is_empty() {
                // As many members as fit the entry bounds (at least one).
                let mut n = 0;
                let mut bytes = group.len() + 64;
                while n < rest.len() && n < MAX_MEMBERS_PER_ENTRY {
                    let more = rest[n].len() * 6 + 3; // worst-case JSON escaping
                    if n > 0 && bytes + more > MAX_ENTRY_BYTES {
                        break;
                    }
                    bytes += more;
                    n += 1;
                }
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let entry = serde_json::to_vec(&MembershipEntry {
                    group_external_id: group,
                    member_external_ids: chunk,
                })
                .expect("serializing strings into JSON cannot fail");
                let ids = chunk.iter().map(|s| s.to_string()).collect();
                self.push_entry(kind, ids, entry);
            }
        }
    }

    /// Add one serialized entry (which fits a request on its own) to a request of `kind`.
    fn push_entry(&mut self, kind: RequestKind, ids: Vec<String>, entry: Vec<u8>) {
        let users = if kind.is_users() { ids.len() } else { 0 };
        // Close the open request if this entry does not fit in it.
        if let Some(req) = &self.request {
            let open_users = if req.kind.is_users() { req.external_ids.len() } else { 0 };
            let full = req.kind != kind
                || self.entries >= self.limits.max_profiles_per_request
                || req.body.len() + 1 + entry.len() + BODY_SUFFIX.len()
                    > self.limits.max_request_bytes
                || (users > 0
                    && self.session_users + open_users + users > self.limits.max_users_per_session);
            if full {
                self.close_request();
            }
        }
        let req = self.request.get_or_insert_with(|| PlannedRequest {
            kind,
            external_ids: Vec::new(),
            body: prefix(kind).to_vec(),
        });
        if self.entries > 0 {
            req.body.push(b',');
        }
        req.body.extend_from_slice(&entry);
        req.external_ids.extend(ids);
        self.entries += 1;
    }

    fn close_request(&mut self) {
        if let Some(mut req) = self.request.take() {
            req.body.extend_from_slice(BODY_SUFFIX);
            self.entries = 0;
            if req.kind.is_users() {
                self.session_users += req.external_ids.len();
            }
            self.session.push(req);
            if self.session.len() >= self.limits.max_requests_per_session
                || self.session_users >= self.limits.max_users_per_session
            {
                self.close_session();
            }
        }
    }

    /// Close the open session (the next entry starts a new one).
    pub fn close_session(&mut self) {
        self.close_request();
        if self.session.is_empty() {
            return;
        }
        let requests = std::mem::take(&mut self.session);
        self.session_users = 0;
        let has_up = requests.iter().any(|r| r.kind == RequestKind::Upsert);
        let has_del = requests.iter().any(|r| r.kind == RequestKind::Delete);
        let kind = match (has_up, has_del) {
            (true, true) => SessionKind::Combined,
            (false, true) => SessionKind::Delete,
            _ => SessionKind::Upsert,
        };
        self.out.sessions.push(SessionPlan { kind, requests });
    }

    /// Close the open session; every session not taken yet.
    pub fn finish(mut self) -> Packed {
        self.close_session();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Origin;
    use std::collections::BTreeMap;

    fn user(i: usize, active: bool, pad: usize) -> MappedUser {
        let mut profile = BTreeMap::new();
        profile.insert("userName".to_string(), format!("user{i}@example.com"));
        if pad > 0 {
            profile.insert("title".to_string(), "x".repeat(pad));
        }
        MappedUser {
            origin: Origin::Line(i as u64),
            external_id: format!("id{i}"),
            active,
            profile,
            groups: Vec::new(),
            links: BTreeMap::new(),
        }
    }

    fn check_limits(p: &Packed, l: Limits) {
        for s in &p.sessions {
            assert!(s.requests.len() <= l.max_requests_per_session);
            assert!(s.users() <= l.max_users_per_session);
            for r in &s.requests {
                assert!(!r.external_ids.is_empty());
                assert!(r.external_ids.len() <= l.max_profiles_per_request);
                assert!(r.body.len() <= l.max_request_bytes, "{} bytes", r.body.len());
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["entityType"], "USERS");
                assert_eq!(v["profiles"].as_array().unwrap().len(), r.external_ids.len());
            }
        }
    }

    #[test]
    fn spills_25k_active_into_three_sessions() {
        let users: Vec<_> = (0..25_000).map(|i| user(i, true, 0)).collect();
        let p = pack(&users, SessionMode::Separate, Limits::default());
        check_limits(&p, Limits::default());
        let sizes: Vec<_> = p.sessions.iter().map(SessionPlan::users).collect();
        assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
        assert_eq!(p.sessions[0].requests.len(), 50);
    }

    #[test]
    fn separate_mode_never_mixes_kinds() {
        let users: Vec<_> = (0..450).map(|i| user(i, i % 3 != 0, 0)).collect();
        let p = pack(&users, SessionMode::Separate, Limits::default());
        check_limits(&p, Limits::default());
        let kinds: Vec<_> = p.sessions.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![SessionKind::Upsert, SessionKind::Delete]);
        assert_eq!(p.sessions[0].counts(), (300, 0));
        assert_eq!(p.sessions[1].counts(), (0, 150));
    }

    #[test]
    fn combined_mode_shares_a_session() {
        let users: Vec<_> = (0..450).map(|i| user(i, i % 3 != 0, 0)).collect();
        let p = pack(&users, SessionMode::Combined, Limits::default());
        assert_eq!(p.sessions.len(), 1);
        assert_eq!(p.sessions[0].kind, SessionKind::Combined);
        assert_eq!(p.sessions[0].counts(), (300, 150));
        // A request never mixes upserts and deletes.
        for r in &p.sessions[0].requests {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let has_profile = v["profiles"][0].get("profile").is_some();
            assert_eq!(has_profile, r.kind == RequestKind::Upsert);
        }
    }

    #[test]
    fn byte_limit_cuts_requests_before_200() {
        // ~2 KB per profile: about 97 fit in 200,000 bytes.
        let users: Vec<_> = (0..1_000).map(|i| user(i, true, 2_000)).collect();
        let p = pack(&users, SessionMode::Separate, Limits::default());
        check_limits(&p, Limits::default());
        let first = &p.sessions[0].requests[0];
        assert!(first.external_ids.len() < 200 && first.external_ids.len() > 90);
        assert_eq!(p.sessions.iter().map(SessionPlan::users).sum::<usize>(), 1_000);
    }

    #[test]
    fn session_user_cap_cuts_a_request_short() {
        let l = Limits { max_users_per_session: 250, ..Limits::default() };
        let users: Vec<_> = (0..600).map(|i| user(i, true, 0)).collect();
        let p = pack(&users, SessionMode::Separate, l);
        check_limits(&p, l);
        let sizes: Vec<_> = p.sessions.iter().map(SessionPlan::users).collect();
        assert_eq!(sizes, vec![250, 250, 100]);
    }

    #[test]
    fn oversized_profile_is_reported_not_sent() {
        let users = vec![user(0, true, 0), user(1, true, 250_000), user(2, true, 0)];
        let p = pack(&users, SessionMode::Separate, Limits::default());
        assert_eq!(p.oversized.len(), 1);
        assert_eq!(p.oversized[0].external_id, "id1");
        assert_eq!(p.sessions[0].users(), 2);
    }

    fn with_groups(mut u: MappedUser, groups: &[String]) -> MappedUser {
        u.groups = groups
            .iter()
            .map(|g| GroupRef {
                external_id: g.clone(),
                display_name: format!("Group {g}"),
                description: None,
            })
            .collect();
        u
    }

    #[test]
    fn groups_and_memberships_follow_the_users_within_limits() {
        // 1,000 users in 450 groups each, 2 groups per user: more than 200 groups and more
        // than 200 membership entries, so both kinds need several requests.
        let users: Vec<_> = (0..1_000)
            .map(|i| {
                let gs = [format!("g{}", i % 450), "all".to_string()];
                with_groups(user(i, i % 10 != 0, 0), &gs)
            })
            .collect();
        let p = pack(&users, SessionMode::Separate, Limits::default());
        check_group_limits(&p, Limits::default());
        let kinds: Vec<_> = p.sessions.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![SessionKind::Upsert, SessionKind::Delete]);
        let s = &p.sessions[0];
        // Users first, then groups, then memberships.
        let order: Vec<RequestKind> = s.requests.iter().map(|r| r.kind).collect();
        let first_group = order.iter().position(|k| *k == RequestKind::GroupsUpsert).unwrap();
        let first_member = order.iter().position(|k| *k == RequestKind::MembershipsUpsert).unwrap();
        assert!(order[..first_group].iter().all(|k| *k == RequestKind::Upsert));
        assert!(order[first_group..first_member].iter().all(|k| *k == RequestKind::GroupsUpsert));
        assert!(order[first_member..].iter().all(|k| *k == RequestKind::MembershipsUpsert));
        // Leavers (every tenth user) gain no membership, and groups come from active users
        // only: g0, g10, … hold only leavers, so 405 + `all` remain.
        assert_eq!(s.group_counts(), (406, 900 * 2));
        assert_eq!(s.users(), 900);
        assert_eq!(p.sessions[1].group_counts(), (0, 0));
    }

    #[test]
    fn a_full_user_session_spills_groups_into_the_next() {
        let users: Vec<_> =
            (0..10_000).map(|i| with_groups(user(i, true, 0), &[format!("g{}", i % 7)])).collect();
        let p = pack(&users, SessionMode::Separate, Limits::default());
        check_group_limits(&p, Limits::default());
        assert_eq!(p.sessions.len(), 2);
        assert_eq!(p.sessions[0].users(), 10_000);
        assert_eq!(p.sessions[0].group_counts(), (0, 0));
        assert_eq!(p.sessions[1].users(), 0);
        assert_eq!(p.sessions[1].group_counts(), (7, 10_000));
    }

    #[test]
    fn removals_follow_their_users_and_group_deletes_come_last() {
        let new = ["g-new".to_string()];
        let users: Vec<MappedUser> = (0..6)
            .map(|i| with_groups(user(i, i < 4, 0), if i < 4 { &new } else { &[] }))
            .collect();
        let (groups, memberships) = derive_groups(&users);
        let movers = [("g-old", vec!["id0", "id1"])];
        let leavers = [("g-old", vec!["id4"]), ("g-other", vec!["id5"])];
        let kinds = |p: &Packed| -> Vec<Vec<RequestKind>> {
            p.sessions.iter().map(|s| s.requests.iter().map(|r| r.kind).collect()).collect()
        };
        let r = Removals { movers: &movers, leavers: &leavers, groups: &["g-old"] };
        let p = pack_with_groups(
            &users,
            &groups,
            &memberships,
            &r,
            SessionMode::Separate,
            Limits::default(),
        );
        use RequestKind::*;
        assert_eq!(
            kinds(&p),
            [
                vec![Upsert, GroupsUpsert, MembershipsUpsert, MembershipsDelete],
                vec![Delete, MembershipsDelete, GroupsDelete],
            ]
        );
        assert_eq!(p.sessions[0].group_changes().memberships_removed, 2);
        assert_eq!(
            p.sessions[1].group_changes(),
            GroupCounts { memberships_removed: 2, groups_deleted: 1, ..GroupCounts::default() }
        );
        // What is confirmed is read back from the bodies sent.
        assert_eq!(
            p.sessions[1].requests[1].memberships(),
            [("g-old".to_string(), "id4".to_string()), ("g-other".to_string(), "id5".to_string())]
        );
        assert_eq!(p.sessions[1].requests[2].body, br#"{"externalIds":["g-old"]}"#);
        // With nobody to deactivate, group deletes stay with the upserts: no session of their own.
        let active: Vec<MappedUser> = users[..4].to_vec();
        let r = Removals { movers: &movers, leavers: &[], groups: &["g-old"] };
        let p = pack_with_groups(
            &active,
            &groups,
            &memberships,
            &r,
            SessionMode::Separate,
            Limits::default(),
        );
        assert_eq!(
            kinds(&p),
            [vec![Upsert, GroupsUpsert, MembershipsUpsert, MembershipsDelete, GroupsDelete]]
        );
    }

    #[test]
    fn a_huge_group_is_split_into_entries() {
        let users: Vec<_> = (0..2_500)
            .map(|i| {
                let mut u = with_groups(user(i, true, 0), &["everyone".to_string()]);
                u.external_id = format!("{i:0>250}");
                u
            })
            .collect();
        let p = pack(&users, SessionMode::Separate, Limits::default());
        check_group_limits(&p, Limits::default());
        let members: usize = p.sessions.iter().map(|s| s.group_counts().1).sum();
        assert_eq!(members, 2_500);
    }

    /// Every request within 200 entries and 200 KB; memberships reference declared groups.
    fn check_group_limits(p: &Packed, l: Limits) {
        let mut declared = std::collections::HashSet::new();
        for s in &p.sessions {
            assert!(s.requests.len() <= l.max_requests_per_session);
            assert!(s.users() <= l.max_users_per_session);
            for r in &s.requests {
                assert!(r.body.len() <= l.max_request_bytes, "{} bytes", r.body.len());
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                match r.kind {
                    RequestKind::GroupsUpsert => {
                        let items = v["profiles"].as_array().unwrap();
                        assert!(!items.is_empty() && items.len() <= 200);
                        for g in items {
                            declared.insert(g["externalId"].as_str().unwrap().to_string());
                            assert!(g["profile"]["displayName"].is_string());
                        }
                    }
                    RequestKind::MembershipsUpsert => {
                        let items = v["memberships"].as_array().unwrap();
                        assert!(!items.is_empty() && items.len() <= 200);
                        for m in items {
                            let g = m["groupExternalId"].as_str().unwrap();
                            assert!(declared.contains(g), "membership before its group {g}");
                        }
                    }
                    _ => assert!(r.external_ids.len() <= l.max_profiles_per_request),
                }
            }
        }
    }

    #[test]
    fn nothing_to_send_makes_no_session() {
        let p = pack(&[], SessionMode::Separate, Limits::default());
        assert!(p.sessions.is_empty());
    }
}
