//! Webhook events: records pushed to `POST /v1/jobs/{job}/records`, kept durably until an
//! import session has carried them to Okta.
//!
//! The webhook answers 202 only once the event is committed, so a crash after the 202 loses
//! nothing: on restart the queue finds it with [`EventStore::pending`]. [`EventStore`] is the
//! backend-neutral log: with SQLite the events live in the state's file (migration 2 of
//! [`super::sqlite`]), next to the users they update, written as below; with DynamoDB they live
//! in the shared tables of [`super::dynamodb`], where every replica appends.
//!
//! # Group commit (SQLite)
//!
//! A durable commit costs one fsync of the WAL (`synchronous = FULL`), a millisecond or more
//! on ordinary disks; one commit per request would cap the webhook at a few hundred requests
//! per second. Instead one writer thread owns a connection and loops: wait for an append,
//! take every other append already waiting, write them all in one transaction, commit (one
//! fsync), then answer each caller through its oneshot. Under load the batches grow by
//! themselves, so throughput scales with concurrency while each caller still returns only
//! after its own event is on disk.
//!
//! Reads and the queue's status updates go through a second connection (WAL lets readers run
//! beside the writer; the two writers take turns on SQLite's lock, with a busy timeout).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StateError;

mod seen;
mod sqlite;

pub use seen::{Claim, SeenSignature};
pub use sqlite::SqliteEventStore;

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub job: String,
    /// The sender's `Idempotency-Key`: a second event with the same key for the same job is
    /// not stored.
    pub idempotency_key: Option<String>,
    /// The records, as a JSON array of objects in the job's source shape.
    pub records: String,
    pub record_count: u32,
    /// One of the records maps to a deactivation: import it without waiting for a batch.
    pub urgent: bool,
    /// The externalIds the records map to.
    pub external_ids: Vec<String>,
    /// The signed request's fingerprints: a message seen before is not stored again.
    pub signature: Option<SeenSignature>,
}

/// Where an appended event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `evt_<uuid v7>` (time-ordered).
    pub id: String,
    /// The idempotency key or the signed message was seen before: `id` is the first event's,
    /// nothing was stored.
    pub duplicate: bool,
    /// The signed message was accepted before on this other route, under a signature that
    /// does not cover the path: nothing was stored, and `id` is empty.
    pub other_route: Option<String>,
}

impl Stored {
    /// A new event.
    pub fn new(id: String) -> Self {
        Self { id, duplicate: false, other_route: None }
    }

    /// A repeat of the event `id`.
    pub fn duplicate_of(id: String) -> Self {
        Self { id, duplicate: true, other_route: None }
    }

    /// What a signed message already claimed answers (`None` when it is new).
    pub fn from_claim(claim: Claim) -> Option<Self> {
        match claim {
            Claim::New => None,
            Claim::Duplicate { event_id } => Some(Self::duplicate_of(event_id.unwrap_or_default())),
            Claim::OtherRoute { route } => {
                Some(Self { id: String::new(), duplicate: true, other_route: Some(route) })
            }
        }
    }
}

/// Where an event stands.
#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, waiting for an import.
    Queued,
    /// In an import session that has not finished.
    Processing,
    /// Imported (Okta completed the session).
    Done,
    /// The import failed.
    Failed,
    /// Held by a safeguard, waiting for approval.
    Held,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Queued => "queued",
            EventStatus::Processing => "processing",
            EventStatus::Done => "done",
            EventStatus::Failed => "failed",
            EventStatus::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => EventStatus::Queued,
            "processing" => EventStatus::Processing,
            "done" => EventStatus::Done,
            "failed" => EventStatus::Failed,
            "held" => EventStatus::Held,
            _ => return None,
        })
    }
}

/// An event as `GET /v1/events/{id}` shows it (never its records: they are personal data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub id: String,
    pub job: String,
    pub status: EventStatus,
    pub received_at: String,
    pub finished_at: Option<String>,
    pub record_count: u32,
    /// The import sessions that carried it (more than one after a replay).
    pub sessions: Vec<String>,
    /// What the import reported, once finished.
    pub outcome: Option<serde_json::Value>,
}

/// An event waiting for (or in) an import, with its records.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    pub id: String,
    /// Store order: events of a job are imported in this order.
    pub seq: i64,
    pub job: String,
    pub records: String,
    pub urgent: bool,
    pub status: EventStatus,
    pub sessions: Vec<String>,
}

/// The webhook event log, on the configured backend. Cheap to clone.
///
/// SQLite (the embedded default, group-committed) or DynamoDB (shared by every replica, see
/// [`super::dynamodb`]). Both keep the same contract, checked by `tests/state_contract.rs`.
#[derive(Clone, Debug)]
pub enum EventStore {
    Sqlite(SqliteEventStore),
    Dynamo(super::dynamodb::DynamoEventStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            EventStore::Sqlite($s) => $e,
            EventStore::Dynamo($s) => $e,
        }
    };
}

impl EventStore {
    /// Open the SQLite event log in the state file at `path` (see [`SqliteEventStore::open`]).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        SqliteEventStore::open(path).map(EventStore::Sqlite)
    }

    /// The 5-minute clock of the identity source `source`, read from and written through to
    /// the state: a process started right after one that was killed still waits out the
    /// spacing of the sessions created before it, instead of being refused.
    pub fn spacing_clock(&self, source: &str) -> crate::okta::session::SpacingClock {
        let last = self.session_activity(source).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the last session time: assuming none");
            None
        });
        let (events, id) = (self.clone(), source.to_string());
        let clock = crate::okta::session::SpacingClock::persisted(last, move |at| {
            if let Err(e) = events.record_session_activity(&id, at) {
                tracing::warn!(error = %e, "cannot record the session time");
            }
        });
        let (events, id) = (self.clone(), source.to_string());
        clock.with_ledger(move || events.session_ledger(&id))
    }

    /// The ledger of `identity_source`'s sessions ([`crate::okta::ledger`]) as stored, writing
    /// each change back. An unreadable one starts empty, with a warning: its sessions are then
    /// foreign, left alone (never cancelled by mistake).
    pub fn session_ledger(&self, identity_source: &str) -> crate::okta::ledger::SessionLedger {
        let stored = self.session_ledger_text(identity_source);
        let ledger = match stored {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(identity_source, error = %e, "unreadable session ledger: starting afresh");
                Default::default()
            }),
            Ok(None) => Default::default(),
            Err(e) => {
                tracing::warn!(identity_source, error = %e, "cannot read the session ledger: starting afresh");
                Default::default()
            }
        };
        let events = self.clone();
        let source = identity_source.to_string();
        crate::okta::ledger::SessionLedger::persisted(ledger, move |l| {
            let text = serde_json::to_string(l).unwrap_or_default();
            if let Err(e) = events.record_session_ledger(&source, &text) {
                tracing::warn!(error = %e, "cannot record the session ledger");
            }
        })
    }

    /// Store `e` durably. Returns once it is committed (or is a duplicate of a committed one).
    pub async fn append(&self, e: NewEvent) -> Result<Stored, StateError> {
        each!(self, s => s.append(e).await)
    }

    /// One event, by id.
    pub fn get(&self, id: &str) -> Result<Option<EventView>, StateError> {
        each!(self, s => s.get(id))
    }

    /// Remember a signed request that stores no event (a trigger): [`Claim::New`] the first
    /// time, a duplicate or a conflict after (see [`seen`]).
    pub async fn claim_signature(&self, sig: SeenSignature) -> Result<Claim, StateError> {
        each!(self, s => s.claim_signature(sig).await)
    }

    /// The most recent events, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<EventView>, StateError> {
        each!(self, s => s.recent(limit))
    }

    /// Events of `jobs` still to import (queued, or processing when a session was
    /// interrupted), oldest first, up to about `max_records` records: it stops after the event
    /// that reaches `max_records`, and always returns at least one event when there is one.
    ///
    /// When an open event is urgent (a termination), only the urgent events are returned,
    /// together with the events already processing and every earlier open event that touches
    /// one of their users (transitively), so no user's events are imported out of order.
    pub fn pending(
        &self,
        jobs: &[String],
        max_records: usize,
    ) -> Result<Vec<QueuedEvent>, StateError> {
        each!(self, s => s.pending(jobs, max_records))
    }

    /// How many events of `jobs` are still to import, and whether any of them is urgent.
    pub fn has_pending(&self, jobs: &[String]) -> Result<(usize, bool), StateError> {
        each!(self, s => s.has_pending(jobs))
    }

    /// The events `ids` are in an import session (`session_id`, once Okta gave one).
    pub fn mark_processing(
        &self,
        ids: &[String],
        session_id: Option<&str>,
    ) -> Result<(), StateError> {
        each!(self, s => s.mark_processing(ids, session_id))
    }

    /// Record how the events ended: their status and the import's outcome (JSON).
    pub fn finish(
        &self,
        outcomes: &[(String, EventStatus, serde_json::Value)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        each!(self, s => s.finish(outcomes, at))
    }

    /// Events not finished yet (queued or processing), across every job: the queue depth.
    pub fn queued_total(&self) -> Result<u64, StateError> {
        each!(self, s => s.queued_total())
    }

    /// Record that xaas created or triggered a session of `identity_source` at `at`.
    pub fn record_session_activity(
        &self,
        identity_source: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        each!(self, s => s.record_session_activity(identity_source, at))
    }

    /// When xaas last created or triggered a session of `identity_source`, if ever.
    pub fn session_activity(
        &self,
        identity_source: &str,
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        each!(self, s => s.session_activity(identity_source))
    }
    /// The stored session ledger of `identity_source` (JSON), if any.
    pub fn session_ledger_text(&self, identity_source: &str) -> Result<Option<String>, StateError> {
        each!(self, s => s.session_ledger_text(identity_source))
    }

    /// Replace the stored session ledger of `identity_source`.
    pub fn record_session_ledger(
        &self,
        identity_source: &str,
        ledger: &str,
    ) -> Result<(), StateError> {
        each!(self, s => s.record_session_ledger(identity_source, ledger))
    }

    /// Store the sign-in record `key` (a pending login or a session of the monitoring page,
    /// keyed by a digest of its secret) until `expires_at`, replacing one with that key.
    /// Kept with the state, so a login started on one replica finishes on another and a
    /// session survives a restart.
    pub fn put_signin(
        &self,
        key: &str,
        data: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        each!(self, s => s.put_signin(key, data, expires_at))
    }

    /// The sign-in record `key`, unless it expired before `now`.
    pub fn signin(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>, StateError> {
        each!(self, s => s.signin(key, now))
    }

    /// Remove the sign-in record `key` and return it unless it had expired. Atomic: of two
    /// callers with the same key, only one gets it (a login's state is used once).
    pub fn take_signin(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>, StateError> {
        each!(self, s => s.take_signin(key, now))
    }

    /// Remove the sign-in record `key` (a logout).
    pub fn delete_signin(&self, key: &str) -> Result<(), StateError> {
        each!(self, s => s.delete_signin(key))
    }
}
