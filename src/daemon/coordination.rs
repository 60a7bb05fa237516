//! How replicas share the identity sources: the one interface the daemon talks to, so that it
//! never matches on the state backend.
//!
//! - [`Coordination::Single`] (SQLite): one replica, which owns every identity source; every
//!   call is a no-op or "yes".
//! - [`Coordination::Leased`] (DynamoDB): leases give each source one owner at a time
//!   ([`super::lease`]); triggers are stored for the owner, whichever replica received them;
//!   state writes are fenced with the lease's token ([`crate::state::dynamodb`]).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lease::{Leases, Tick};
use crate::settings::Settings;
use crate::state::StateError;
use crate::state::dynamodb::DynamoEventStore;
use crate::state::events::EventStore;

/// How this replica coordinates with the others.
pub enum Coordination {
    /// The only replica: it owns every identity source.
    Single,
    /// One of several replicas sharing DynamoDB tables.
    Leased { leases: Arc<Leases>, events: DynamoEventStore },
}

/// What waits for an identity source this replica owns.
pub struct OwnedWork {
    pub source: String,
    /// Pending events of its jobs, and whether one is urgent (any replica may have stored
    /// them); `None` when they could not be read.
    pub pending: Option<(usize, bool)>,
    /// Its jobs whose stored trigger this replica claimed: run them.
    pub triggered: Vec<String>,
}

/// Whether, and for how long, this replica works an identity source.
pub enum Term {
    /// Always (one replica): the client's own cancellation applies.
    Always,
    /// For the current lease term: cancelled when the lease is lost.
    Lease(CancellationToken),
    /// Another replica owns it.
    NotOwned,
}

impl Coordination {
    /// The coordination the event store's backend calls for. `parent` ends every lease term
    /// (the shutdown deadline). Give it the settings with [`Self::configure`] before any run.
    pub fn for_store(events: &EventStore, parent: CancellationToken) -> Self {
        match events {
            EventStore::Sqlite(_) => Coordination::Single,
            EventStore::Dynamo(d) => {
                let dynamo = d.dynamo();
                info!(replica = %dynamo.replica(), lease_secs = dynamo.lease_duration().as_secs(), "distributed state: identity sources are worked by their lease owner");
                Coordination::Leased {
                    leases: Arc::new(Leases::new(dynamo.clone(), parent)),
                    events: d.clone(),
                }
            }
        }
    }

    /// Whether several replicas share the work (then pending events and missed runs are the
    /// lease owner's, found by its poll).
    pub fn is_shared(&self) -> bool {
        matches!(self, Coordination::Leased { .. })
    }

    /// Whether this replica works `source` now.
    pub fn owns(&self, source: &str) -> bool {
        match self {
            Coordination::Single => true,
            Coordination::Leased { leases, .. } => leases.holds(source),
        }
    }

    /// This replica's term on `source`.
    pub fn term(&self, source: &str) -> Term {
        match self {
            Coordination::Single => Term::Always,
            Coordination::Leased { leases, .. } => {
                leases.term(source).map_or(Term::NotOwned, Term::Lease)
            }
        }
    }

    /// Take in the settings in force: which job belongs to which source, for fenced writes.
    pub fn configure(&self, settings: &Settings) {
        if let Coordination::Leased { events, .. } = self {
            let job_sources: HashMap<String, String> = settings
                .jobs
                .iter()
                .map(|j| (j.name.clone(), j.identity_source_id.clone()))
                .collect();
            events.dynamo().enable_fencing(job_sources);
        }
    }

    /// Store a trigger of `job` for the owner of its source, whichever replica that is; `None`
    /// when there is nothing to coordinate (run it here).
    pub fn store_trigger(&self, job: &str) -> Option<Result<(), StateError>> {
        match self {
            Coordination::Single => None,
            Coordination::Leased { events, .. } => Some(events.dynamo().store_trigger(job)),
        }
    }

    /// The run of `job` on `source` is over: its stored trigger, if any, is done.
    pub fn finish_trigger(&self, job: &str, source: &str) {
        if let Coordination::Leased { leases, events } = self
            && let Some(token) = leases.token(source)
            && let Err(e) = events.dynamo().finish_trigger(job, token)
        {
            warn!(job = %job, error = %e, "cannot clear the stored trigger");
        }
    }

    /// One poll of the leases (see [`super::lease`]); `None` with one replica.
    pub async fn tick(&self, sources: &[String]) -> Option<Tick> {
        match self {
            Coordination::Single => None,
            Coordination::Leased { leases, .. } => Some(leases.tick(sources).await),
        }
    }

    /// What is waiting for each source this replica owns (`jobs_of`: its jobs per source).
    pub async fn owned_work(&self, jobs_of: &HashMap<String, Vec<String>>) -> Vec<OwnedWork> {
        let Coordination::Leased { leases, events } = self else { return Vec::new() };
        let mut out = Vec::new();
        for source in leases.owned() {
            let Some(jobs) = jobs_of.get(&source) else { continue };
            let pending = match events.has_pending_async(jobs).await {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(identity_source = %source, error = %e, "cannot poll the pending events");
                    None
                }
            };
            let mut triggered = Vec::new();
            if let Some(token) = leases.token(&source) {
                for job in jobs {
                    match events.dynamo().claim_trigger(job, token).await {
                        Ok(true) => triggered.push(job.clone()),
                        Ok(false) => {}
                        Err(e) => warn!(job = %job, error = %e, "cannot read stored triggers"),
                    }
                }
            }
            out.push(OwnedWork { source, pending, triggered });
        }
        out
    }

    /// Give every lease up (shutdown), so another replica takes over at once.
    pub async fn release_all(&self) {
        if let Coordination::Leased { leases, .. } = self {
            leases.release_all().await;
        }
    }
}
