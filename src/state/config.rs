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
    /// How much run history and how many finished webhook events are kept.
    pub history: HistoryPolicy,
}

/// `state.history:`: what is pruned. The current state of each user (hashes, confirmed
/// profiles, missing counters), the jobs' facts and the session records are never pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Runs (with their reports, per-record decisions and approvals) finished longer ago
    /// than this are pruned...; `None`: runs are kept forever; zero: only `keep_runs` count.
    pub keep_runs_for: Option<Duration>,
    /// ...except the last `keep_runs` of each job, and held runs not released yet (no
    /// approval used, and no later run of the job succeeded).
    pub keep_runs: u32,
    /// Finished webhook events (and their idempotency keys) older than this are pruned;
    /// `None`: kept forever.
    pub keep_events_for: Option<Duration>,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self {
            keep_runs_for: Some(Duration::from_secs(30 * 86_400)),
            keep_runs: 50,
            keep_events_for: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub decisions: u64,
    pub events: u64,
    /// Seen webhook signatures past their replay window.
    pub signatures: u64,
    /// Nothing left to prune under the policy (a pass may stop at its row budget first).
    pub done: bool,
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
