//! Mapping: turns a source record into an Okta identity-source profile.
//!
//! PURE: no I/O and no tokio. Ops write one YAML mapping file per job; it is parsed into raw
//! serde structs ([`spec`]), compiled once into a [`Mapping`] that collects *every* error with
//! its line and key ([`compile`]), and applied to each record ([`eval`]).
//!
//! The record model is JSON-shaped ([`Record`]) so that CSV rows, HTTP JSON objects and
//! DynamoDB items all map the same way.
//!
//! Time is an input, never read here: [`Mapping::apply_at`] takes the instant "now" so that
//! effective dating (pre-hire windows, termination dates) is testable with a fixed clock.
//! [`Mapping::apply`] is the convenience that passes the system clock.

pub mod compile;
pub mod dates;
pub mod eval;
pub mod filters;
pub mod references;
pub mod spec;
pub mod testing;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use compile::Mapping;

/// Where a record came from, so a rejection can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// 1-based line in a file (CSV): the line the record starts on.
    Line(u64),
    /// 0-based position in a stream of records (HTTP, DynamoDB, webhook).
    Index(u64),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(l) => write!(f, "line {l}"),
            Origin::Index(i) => write!(f, "record #{i}"),
        }
    }
}

/// One record from a source: field name to JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub origin: Origin,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A record after mapping: what would be sent to Okta for this person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedUser {
    pub origin: Origin,
    /// The immutable HR key; 1 to 512 characters.
    pub external_id: String,
    /// `true`: upsert (active). `false`: bulk-delete (deactivate).
    pub active: bool,
    /// Profile attributes. Every value is a non-empty string; empty values are omitted.
    pub profile: BTreeMap<String, String>,
    /// The groups this user is a member of (mapping v2 `groups:`), de-duplicated, in rule
    /// order. Always empty for a deactivated user: leavers gain no memberships.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub groups: Vec<GroupRef>,
    /// Unresolved `references`: attribute → the externalId of the person it copies from.
    /// [`references::resolve`] moves them into `profile`; hash and send only after that.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub links: BTreeMap<String, String>,
}

/// Bytes of a user's content hash (128 bits of SHA-256: collisions are not a concern at any
/// HR size, and the pull's in-memory index stays small).
pub const HASH_BYTES: usize = 16;

impl MappedUser {
    /// The hash of what an upsert sends for this user: its profile and its groups. Stable
    /// across runs and versions (a `BTreeMap` serializes in key order). The state keeps it (as
    /// [`Self::content_hash_hex`]) for every user Okta confirmed; equal hashes mean unchanged.
    pub fn content_hash(&self) -> [u8; HASH_BYTES] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        // serde_json cannot fail on string maps; an empty encoding would only mean "changed".
        h.update(serde_json::to_vec(&self.profile).unwrap_or_default());
        if !self.groups.is_empty() {
            h.update(b"\0groups");
            h.update(serde_json::to_vec(&self.groups).unwrap_or_default());
        }
        let digest = h.finalize();
        let mut out = [0u8; HASH_BYTES];
        out.copy_from_slice(&digest[..HASH_BYTES]);
        out
    }

    /// [`Self::content_hash`] in lowercase hex, as the state stores it.
    pub fn content_hash_hex(&self) -> String {
        hex::encode(self.content_hash())
    }

    /// The externalIds of this user's groups, sorted: the memberships an upsert gives it.
    pub fn group_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.groups.iter().map(|g| g.external_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A fingerprint of a set of group externalIds, whatever their order: what the pull keeps per
/// user (8 bytes) to tell, against the memberships the state holds, whether a user's groups
/// changed. Only compared within one process, never stored.
pub fn groups_fingerprint<'a>(ids: impl IntoIterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h = std::hash::DefaultHasher::new();
    ids.hash(&mut h);
    h.finish()
}

/// An Okta group derived from a record, as sent with `bulk-groups-upsert` (FACTS §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct GroupRef {
    /// 1 to 255 characters.
    pub external_id: String,
    /// `displayName`: 1 to 255 characters.
    pub display_name: String,
    /// `description`: at most 1024 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What mapping a record gives when time matters: a user to send, or a joiner whose pre-hire
/// window has not opened yet (not sent, not an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mapped {
    User(MappedUser),
    NotYet(NotYet),
}

/// A future joiner, held back until `import_from` (their start date minus the pre-hire days,
/// in their time zone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotYet {
    pub origin: Origin,
    pub external_id: String,
    pub start_date: chrono::NaiveDate,
    pub import_from: chrono::NaiveDate,
}

/// A record that could not be read or mapped, with the reason. The run goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rejection {
    pub origin: Origin,
    /// The record's externalId, when it could be determined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The field or attribute at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why it was rejected, lowercase, no trailing period.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(id) = &self.external_id {
            write!(f, " (externalId {id})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}
