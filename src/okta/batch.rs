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

use serde::{Deserialize, Serialize};

use super::model::{DeleteProfile, UpsertProfile};
use crate::mapping::MappedUser;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    Upsert,
    Delete,
    Combined,
}

impl std::fmt::Display for SessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionKind::Upsert => "upsert",
            SessionKind::Delete => "delete",
            SessionKind::Combined => "combined",
        })
    }
}

/// One bulk request, already serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub kind: RequestKind,
    /// The externalIds in this request, in order.
    pub external_ids: Vec<String>,
    /// The exact JSON body to send.
    pub body: Vec<u8>,
}

/// One import session's worth of requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    pub kind: SessionKind,
    pub requests: Vec<PlannedRequest>,
}

impl SessionPlan {
    /// Users in this session.
    pub fn users(&self) -> usize {
        self.requests.iter().map(|r| r.external_ids.len()).sum()
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

/// The result of packing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    pub sessions: Vec<SessionPlan>,
    pub oversized: Vec<Oversized>,
}

const ENTITY_USERS_PREFIX: &[u8] = br#"{"entityType":"USERS","profiles":["#;
const BODY_SUFFIX: &[u8] = b"]}";

/// Pack users (already de-duplicated by externalId) into sessions.
///
/// Upserts come first, then deletes. Users keep their input order, so a plan is reproducible.
pub fn pack(users: &[MappedUser], mode: SessionMode, limits: Limits) -> Packed {
    let mut packer = Packer::new(limits);
    let active = users.iter().filter(|u| u.active);
    let inactive = users.iter().filter(|u| !u.active);
    for u in active {
        packer.push(true, u);
    }
    if mode == SessionMode::Separate {
        packer.close_session();
    }
    for u in inactive {
        packer.push(false, u);
    }
    packer.finish()
}

struct Packer {
    limits: Limits,
    out: Packed,
    session: Vec<PlannedRequest>,
    session_users: usize,
    request: Option<PlannedRequest>,
}

impl Packer {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            out: Packed::default(),
            session: Vec::new(),
            session_users: 0,
            request: None,
        }
    }

    /// Add one user: an upsert when `active`, a deactivation (bulk-delete) otherwise.
    fn push(&mut self, active: bool, user: &MappedUser) {
        let (kind, entry) = if active {
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
        let frame = ENTITY_USERS_PREFIX.len() + BODY_SUFFIX.len();
        if frame + entry.len() > self.limits.max_request_bytes {
            self.out.oversized.push(Oversized {
                external_id: user.external_id.clone(),
                bytes: frame + entry.len(),
            });
            return;
        }
        // Close the open request if this entry does not fit in it.
        if let Some(req) = &self.request {
            let full = req.kind != kind
                || req.external_ids.len() >= self.limits.max_profiles_per_request
                || req.body.len() + 1 + entry.len() + BODY_SUFFIX.len()
                    > self.limits.max_request_bytes
                || self.session_users + req.external_ids.len() >= self.limits.max_users_per_session;
            if full {
                self.close_request();
            }
        }
        let req = self.request.get_or_insert_with(|| PlannedRequest {
            kind,
            external_ids: Vec::new(),
            body: ENTITY_USERS_PREFIX.to_vec(),
        });
        if !req.external_ids.is_empty() {
            req.body.push(b',');
        }
        req.body.extend_from_slice(&entry);
        req.external_ids.push(user.external_id.clone());
    }

    fn close_request(&mut self) {
        if let Some(mut req) = self.request.take() {
            req.body.extend_from_slice(BODY_SUFFIX);
            self.session_users += req.external_ids.len();
            self.session.push(req);
            if self.session.len() >= self.limits.max_requests_per_session
                || self.session_users >= self.limits.max_users_per_session
            {
                self.close_session();
            }
        }
    }

    fn close_session(&mut self) {
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

    fn finish(mut self) -> Packed {
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

    #[test]
    fn nothing_to_send_makes_no_session() {
        let p = pack(&[], SessionMode::Separate, Limits::default());
        assert!(p.sessions.is_empty());
    }
}
