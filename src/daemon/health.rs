//! `GET /healthz`, `GET /readyz` and `GET /metrics`: what an orchestrator and Prometheus ask.
//!
//! - **`/healthz`** (liveness) answers 200 `{"status":"ok"}` as long as the process serves
//!   HTTP. It never looks at Okta, the source or the state: a failing dependency is not cured
//!   by a restart, so it must not get the container killed. `xaas healthcheck` (the image's
//!   `HEALTHCHECK`; the image has no curl) asks this one.
//! - **`/readyz`** (readiness) answers 200 `{"status":"ready"}`, or 503 with every reason it is
//!   not: the config on disk failed to (re)load, the state store is not open, a job's last
//!   finished run failed, or the daemon is draining for shutdown. The daemon feeds it through
//!   [`Readiness`]; the checks are pure and tested without sockets.
//! - **`/metrics`** renders the Prometheus recorder ([`crate::telemetry::install`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the health endpoints need: the readiness the daemon updates, and the metrics handle.
#[derive(Clone)]
pub struct HealthState {
    pub readiness: Arc<Readiness>,
    pub metrics: PrometheusHandle,
}

impl HealthState {
    pub fn new(readiness: Arc<Readiness>, metrics: PrometheusHandle) -> Self {
        Self { readiness, metrics }
    }
}

/// The daemon's readiness, updated as things happen. Cheap to update from anywhere (a short
/// `std` mutex, never held across an `.await`).
///
/// It starts **not ready** (state store not open yet): the daemon calls
/// [`Readiness::set_state_store_ok`] once the store is open.
#[derive(Debug, Default)]
pub struct Readiness {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Why the config on disk could not be (re)loaded; the daemon keeps the old one.
    config_error: Option<String>,
    state_store_ok: bool,
    /// Jobs whose last finished run failed.
    failed_jobs: BTreeSet<String>,
    /// Shutting down: no new work should be routed here.
    draining: bool,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the flags inconsistent: each update is
        // a single assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state store is open (`true`) or was lost (`false`).
    pub fn set_state_store_ok(&self, ok: bool) {
        self.lock().state_store_ok = ok;
    }

    /// A run of `job` finished with this outcome ([`JobOutcome::as_str`]). Only `failed`
    /// makes the daemon unready; `held` is a safeguard doing its job, not a failure. The next
    /// run that does not fail makes it ready again.
    ///
    /// [`JobOutcome::as_str`]: crate::sync::report::JobOutcome::as_str
    pub fn record_run(&self, job: &str, outcome: &str) {
        let mut inner = self.lock();
        if outcome == crate::sync::report::JobOutcome::Failed.as_str() {
            inner.failed_jobs.insert(job.to_owned());
        } else {
            inner.failed_jobs.remove(job);
        }
    }

    /// Forget runs of jobs that are no longer configured (after a SIGHUP reload).
    pub fn retain_jobs<'a>(&self, jobs: impl IntoIterator<Item = &'a str>) {
        let keep: BTreeSet<&str> = jobs.into_iter().collect();
        self.lock().failed_jobs.retain(|j| keep.contains(j.as_str()));
    }

    /// The last (re)load of the config failed with this error (`None`: it loaded).
    pub fn set_config_error(&self, error: Option<String>) {
        self.lock().config_error = error;
    }

    /// Shutting down: `/readyz` answers 503 `draining` from now on.
    pub fn set_draining(&self, draining: bool) {
        self.lock().draining = draining;
    }

    /// `Ok` when ready, otherwise every reason it is not, in a stable order.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let inner = self.lock();
        let mut reasons = Vec::new();
        if inner.draining {
            reasons.push("draining: shutting down".to_string());
        }
        if let Some(error) = &inner.config_error {
            reasons.push(format!("config reload failed (the previous config is in use): {error}"));
        }
        if !inner.state_store_ok {
            reasons.push("state store not open".to_string());
        }
        for job in &inner.failed_jobs {
            reasons.push(format!("job {job}: last run failed"));
        }
        if reasons.is_empty() { Ok(()) } else { Err(reasons) }
    }
}

/// The router serving `/healthz`, `/readyz` and `/metrics`. Merge it into the daemon's router.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok", reasons: Vec::new() })
}

async fn readyz(State(state): State<HealthState>) -> Response {
    match state.readiness.check() {
        Ok(()) => Json(Status { status: "ready", reasons: Vec::new() }).into_response(),
        Err(reasons) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: "not_ready", reasons }))
                .into_response()
        }
    }
}

async fn metrics(State(state): State<HealthState>) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Readiness {
        let r = Readiness::new();
        r.set_state_store_ok(true);
        r
    }

    #[test]
    fn starts_unready_until_the_state_store_is_open() {
        let r = Readiness::new();
        assert_eq!(r.check(), Err(vec!["state store not open".to_string()]));
        r.set_state_store_ok(true);
        assert_eq!(r.check(), Ok(()));
    }

    #[test]
    fn a_failed_run_makes_it_unready_until_the_next_run_of_that_job_does_not_fail() {
        let r = ready();
        r.record_run("hr", "success");
        r.record_run("contractors", "failed");
        assert_eq!(r.check(), Err(vec!["job contractors: last run failed".to_string()]));
        // Another job succeeding does not clear it.
        r.record_run("hr", "success");
        assert!(r.check().is_err());
        // A held run is not a failure.
        r.record_run("contractors", "held");
        assert_eq!(r.check(), Ok(()));
        r.record_run("contractors", "failed");
        r.record_run("contractors", "completed_with_rejections");
        assert_eq!(r.check(), Ok(()));
    }

    #[test]
    fn jobs_removed_from_the_config_are_forgotten() {
        let r = ready();
        r.record_run("old", "failed");
        r.record_run("hr", "failed");
        r.retain_jobs(["hr"]);
        assert_eq!(r.check(), Err(vec!["job hr: last run failed".to_string()]));
    }

    #[test]
    fn every_reason_is_listed_and_draining_comes_first() {
        let r = Readiness::new();
        r.record_run("hr", "failed");
        r.set_config_error(Some("xaas.yaml:3: unknown key `jobz`".into()));
        r.set_draining(true);
        let reasons = r.check().expect_err("not ready");
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(reasons[0], "draining: shutting down");
        assert!(reasons[1].contains("unknown key `jobz`"), "{reasons:?}");
        r.set_draining(false);
        r.set_config_error(None);
        r.set_state_store_ok(true);
        r.record_run("hr", "success");
        assert_eq!(r.check(), Ok(()));
    }
}
