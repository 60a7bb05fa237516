//! `state:`, resolved: which backend keeps the state and how to reach it. The store is opened
//! from these settings by [`super::open`].

use std::path::PathBuf;
use std::time::Duration;

/// `state:`, resolved.
#[derive(Debug, Clone)]
pub struct StateSettings {
    pub backend: StateBackend,
    /// Keep each user's last confirmed profile (for the plan's attribute diff).
    pub store_profiles: bool,
}

/// A state backend and its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// A SQLite file, resolved against the config file's directory.
    Sqlite { path: PathBuf },
    /// DynamoDB tables, shared by every replica (see `crate::state::dynamodb`).
    Dynamodb(DynamoStateSettings),
}

/// `state:` with `backend: dynamodb`, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynamoStateSettings {
    /// Prefix of every table name.
    pub table_prefix: String,
    /// The AWS region; `None`: the default chain's.
    pub region: Option<String>,
    /// Another endpoint than the regional one (dynalite in tests).
    pub endpoint_url: Option<String>,
    /// How long a lease on an identity source lasts without renewal.
    pub lease: Duration,
}

/// The default DynamoDB table prefix.
pub const DEFAULT_TABLE_PREFIX: &str = "xaas_";

/// The default lease on an identity source, in seconds.
pub const DEFAULT_LEASE_SECS: u64 = 15;

/// The default state file, next to the config file.
pub const DEFAULT_STATE_FILE: &str = "xaas-state.db";
