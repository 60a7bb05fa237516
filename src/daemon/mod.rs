//! `xaas serve`: the long-running daemon.
//!
//! One process serves every job of the config:
//!
//! - [`schedule`]: each job's cron `schedule` (tokio-cron-scheduler) puts a run on the queue.
//! - [`queue`]: one ordered queue per identity source. Scheduled runs, webhook batches and
//!   manual triggers all go through it, so two imports never overlap on one identity source
//!   (Okta allows one active session per source, and 5 minutes between creations).
//! - [`webhook`]: `POST /v1/jobs/{job}/records` (HR systems push records in the job's source
//!   shape), `POST /v1/jobs/{job}/trigger`, `GET /v1/events/{id}`; signed (HMAC-SHA256) or
//!   bearer-authenticated, size- and rate-limited. An event is written durably
//!   ([`crate::state::events`]) before the 202.
//! - [`push`]: coalesces queued events into import sessions; terminations are urgent.
//! - [`health`] and [`metrics`]: `/healthz`, `/readyz`, Prometheus `/metrics`.
//!
//! Shutdown (SIGTERM) stops intake, lets the running import finish or cancels its open session
//! before a deadline, and exits 0. SIGHUP reloads the config and mappings, keeping the old ones
//! when the new ones are invalid.

pub mod auth;
pub mod health;
pub mod metrics;
pub mod webhook;

use std::sync::Arc;

use crate::settings::Job;

/// What the webhook needs from the rest of the daemon: the jobs as currently configured (they
/// change on SIGHUP), and a way to wake the queue of a job's identity source.
pub trait Dispatch: Send + Sync + 'static {
    /// The job named `name`, as currently configured.
    fn job(&self, name: &str) -> Option<Arc<Job>>;

    /// Events for `job` were stored durably; `urgent` when one of them maps to a deactivated
    /// user (a termination), which flushes at once instead of after the batch window.
    fn events_stored(&self, job: &str, urgent: bool);

    /// Ask for a pull of `job` now (`POST /v1/jobs/{job}/trigger`). Returns where it stands.
    fn trigger(&self, job: &str) -> TriggerAck;
}

/// The answer to a manual trigger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TriggerAck {
    /// `queued`, or `already_queued` when a run of this job was already waiting (runs never
    /// pile up).
    pub status: &'static str,
    /// Items ahead of it in the identity source's queue (the running one included).
    pub position: usize,
}
