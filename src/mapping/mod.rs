//! Mapping: turns a source record into an Okta identity-source profile.
//!
//! PURE: no I/O and no tokio. Ops write one YAML mapping file per job; it is parsed into raw
//! serde structs ([`spec`]), compiled once into a [`Mapping`] that collects *every* error with
//! its line and key ([`compile`]), and applied to each record ([`eval`]).
//!
//! The record model is JSON-shaped ([`Record`]) so that CSV rows, HTTP JSON objects and
//! DynamoDB items all map the same way.

pub mod compile;
pub mod eval;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use compile::Mapping;

/// Where a record came from, so a rejection can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// A record that could not be read or mapped, with the reason. The run goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
