//! Session lifecycle (STUB: owned by the client work).

use std::time::Duration;

use serde::Serialize;

use super::batch::{SessionKind, SessionPlan};
use super::client::OktaClient;
use super::error::OktaError;
use super::model::SessionStatus;

/// Lifecycle settings.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Minimum time between two session creations for one identity source (Okta: 5 minutes).
    pub spacing: Duration,
    /// First poll interval while following a triggered session.
    pub poll_initial: Duration,
    /// Longest poll interval (the backoff's ceiling).
    pub poll_max: Duration,
    /// Give up following one session after this long.
    pub session_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            spacing: Duration::from_secs(300),
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(30),
            session_timeout: Duration::from_secs(3 * 3600),
        }
    }
}

/// What happened to a session found open at the start of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StaleSession {
    pub id: String,
    /// The status it was found in.
    pub found: SessionStatus,
    /// What we did: `cancelled` or `waited`.
    pub action: String,
    /// Its status afterwards.
    pub final_status: SessionStatus,
}

/// The outcome of one planned session.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Okta's session id, once created.
    pub id: Option<String>,
    pub kind: SessionKind,
    /// Bulk requests Okta accepted.
    pub requests: usize,
    /// Profiles in the accepted requests.
    pub profiles: usize,
    /// The last status seen (`COMPLETED`, `ERROR`, `CLOSED` when cancelled...).
    pub final_status: Option<SessionStatus>,
    /// Why the session did not complete, if it did not.
    pub error: Option<String>,
    /// Something worth knowing that is not an error (e.g. a session cancelled because Okta
    /// kept it in CREATED: nothing to import).
    pub note: Option<String>,
    /// Time spent waiting for Okta's 5-minute rule before creating it.
    pub spacing_wait_ms: u64,
    /// Time from the first call for this session to its final status.
    pub duration_ms: u64,
}

/// Drives import sessions for one identity source.
pub struct Importer {
    _client: OktaClient,
    _source_id: String,
    _options: SessionOptions,
}

impl Importer {
    pub fn new(client: OktaClient, source_id: impl Into<String>, options: SessionOptions) -> Self {
        Self { _client: client, _source_id: source_id.into(), _options: options }
    }

    /// Start of a run: list sessions, cancel open ones we left behind, wait for triggered ones.
    pub async fn prepare(&mut self) -> Result<Vec<StaleSession>, OktaError> {
        Ok(Vec::new())
    }

    /// Create, load, trigger (or cancel) and follow one session.
    pub async fn run(&mut self, plan: &SessionPlan) -> SessionOutcome {
        SessionOutcome {
            id: None,
            kind: plan.kind,
            requests: 0,
            profiles: 0,
            final_status: None,
            error: Some("stub".into()),
            note: None,
            spacing_wait_ms: 0,
            duration_ms: 0,
        }
    }
}
