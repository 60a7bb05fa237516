//! `GET /healthz`, `GET /readyz` and `GET /metrics`: what an orchestrator and Prometheus ask.
//!
//! - **`/healthz`** (liveness) answers 200 `{"status":"ok"}` as long as the process serves
//!   HTTP. It never looks at Okta, the source or the state: a failing dependency is not cured
//!   by a restart, so it must not get the container killed. `xaas healthcheck` (the image's
//!   `HEALTHCHECK`; the image has no curl) asks this one.
//! - **`/readyz`** (readiness) means "can take traffic": it answers 200 `{"status":"ready"}`
//!   while the daemon can accept and store events, and 503 with every reason it cannot (the
//!   state store is not open, or it is draining for shutdown). A failed run or a failed config
//!   reload does **not** make it unready: in Kubernetes that would take the webhook out of the
//!   Service while the HR source is down, and pushed terminations would fail at the ingress.
//!   Those are alerts instead: listed as `warnings` in the 200 body, in `/v1/jobs`, the log
//!   and the gauges ([`crate::telemetry::job_health`], `deploy/prometheus/xaas-alerts.yaml`).
//!   The daemon feeds it through [`Readiness`]; the checks are pure and tested without sockets.
//!   An org that refuses Okta's direct endpoints is a detail too (`direct_endpoints`, from
//!   [`crate::sync::direct::unavailable`]): changes then go in sessions.
//! - **`/metrics`** renders the Prometheus recorder ([`crate::telemetry::install`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::sync::report::JobOutcome;

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
    /// Per job, where its finished runs stand.
    jobs: BTreeMap<String, JobHealth>,
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

    /// A run of `job` finished with this outcome at `at`. `Failed` counts a failure in a row;
    /// `Held` (a safeguard doing its job) is not a failure, and starts the time it has been
    /// waiting for an approval. The gauges follow.
    pub fn record_run(&self, job: &str, outcome: JobOutcome, at: chrono::DateTime<chrono::Utc>) {
        let mut inner = self.lock();
        let h = inner.jobs.entry(job.to_owned()).or_default();
        h.last_outcome = Some(outcome);
        if outcome == JobOutcome::Failed {
            h.consecutive_failures += 1;
        } else {
            h.consecutive_failures = 0;
        }
        if outcome == JobOutcome::Held {
            h.held_since.get_or_insert(at);
        } else {
            h.held_since = None;
        }
        if matches!(outcome, JobOutcome::Success | JobOutcome::CompletedWithRejections) {
            h.last_success = Some(at);
        }
        crate::telemetry::job_health(
            job,
            outcome.as_str(),
            h.consecutive_failures,
            h.last_success.map(|t| t.timestamp()),
            h.held_since.map(|t| t.timestamp()),
        );
    }

    /// Where `job`'s finished runs stand (default: no run yet).
    pub fn job(&self, job: &str) -> JobHealth {
        self.lock().jobs.get(job).cloned().unwrap_or_default()
    }

    /// Forget runs of jobs that are no longer configured (after a SIGHUP reload).
    pub fn retain_jobs<'a>(&self, jobs: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::BTreeSet<&str> = jobs.into_iter().collect();
        self.lock().jobs.retain(|j, _| keep.contains(j.as_str()));
    }

    /// The last (re)load of the config failed with this error (`None`: it loaded).
    pub fn set_config_error(&self, error: Option<String>) {
        crate::telemetry::set_config_reload_failed(error.is_some());
        self.lock().config_error = error;
    }

    /// Shutting down: `/readyz` answers 503 `draining` from now on.
    pub fn set_draining(&self, draining: bool) {
        self.lock().draining = draining;
    }

    /// `Ok` when the daemon can take traffic, otherwise every reason it cannot, in a stable
    /// order.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let inner = self.lock();
        let mut reasons = Vec::new();
        if inner.draining {
            reasons.push("draining: shutting down".to_string());
        }
        if !inner.state_store_ok {
            reasons.push("state store not open".to_string());
        }
        if reasons.is_empty() { Ok(()) } else { Err(reasons) }
    }

    /// What needs attention but does not stop the daemon taking traffic: a failed reload and
    /// the jobs whose last run failed.
    pub fn warnings(&self) -> Vec<String> {
        let inner = self.lock();
        let mut out = Vec::new();
        if let Some(error) = &inner.config_error {
            out.push(format!("config reload failed (the previous config is in use): {error}"));
        }
        for (job, h) in &inner.jobs {
            if h.consecutive_failures > 0 {
                out.push(format!(
                    "job {job}: last run failed ({} in a row)",
                    h.consecutive_failures
                ));
            }
        }
        out
    }
}

/// Where a job's finished runs stand in this process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobHealth {
    /// The last finished run's outcome.
    pub last_outcome: Option<JobOutcome>,
    /// Failed runs in a row.
    pub consecutive_failures: u32,
    /// The last run that succeeded (`success` or `completed_with_rejections`).
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    /// Since when its runs are held by a safeguard, waiting for an approval.
    pub held_since: Option<chrono::DateTime<chrono::Utc>>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    /// Identity sources whose org refuses the direct endpoints: a detail, never unready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    direct_endpoints: Vec<DirectEndpoints>,
}

#[derive(Serialize)]
struct DirectEndpoints {
    identity_source: String,
    status: &'static str,
    refused_at: chrono::DateTime<chrono::Utc>,
    retry_at: chrono::DateTime<chrono::Utc>,
    error: String,
}

async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok",
        reasons: Vec::new(),
        warnings: Vec::new(),
        direct_endpoints: Vec::new(),
    })
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let mut warnings = state.readiness.warnings();
    let direct_endpoints: Vec<DirectEndpoints> = crate::sync::direct::unavailable()
        .into_iter()
        .map(|r| DirectEndpoints {
            status: "unavailable",
            retry_at: r.retry_at(),
            refused_at: r.at,
            error: r.error,
            identity_source: r.identity_source,
        })
        .collect();
    for d in &direct_endpoints {
        warnings.push(format!(
            "identity source {}: okta refuses the direct endpoints (enable IDENTITY_SOURCE_MANAGE_INDIVIDUAL_ENTITIES); changes go in import sessions, direct tried again at {}",
            d.identity_source,
            d.retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    let (code, status, reasons) = match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready", Vec::new()),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", reasons),
    };
    (code, Json(Status { status, reasons, warnings, direct_endpoints })).into_response()
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

    fn at(minute: u32) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone;
        chrono::Utc.with_ymd_and_hms(2026, 12, 1, 2, minute, 0).unwrap()
    }

    #[test]
    fn a_failed_run_is_a_warning_not_unreadiness_and_failures_are_counted_in_a_row() {
        let r = ready();
        r.record_run("hr", JobOutcome::Success, at(0));
        r.record_run("contractors", JobOutcome::Failed, at(1));
        r.record_run("contractors", JobOutcome::Failed, at(2));
        assert_eq!(r.check(), Ok(()), "a failed job must not take the webhook out of service");
        assert_eq!(r.warnings(), vec!["job contractors: last run failed (2 in a row)".to_string()]);
        assert_eq!(r.job("contractors").consecutive_failures, 2);
        assert_eq!(r.job("hr").last_success, Some(at(0)));
        // A held run is not a failure; it waits for an approval from its first held run.
        r.record_run("contractors", JobOutcome::Held, at(3));
        r.record_run("contractors", JobOutcome::Held, at(4));
        let c = r.job("contractors");
        assert_eq!((c.consecutive_failures, c.held_since), (0, Some(at(3))));
        assert!(r.warnings().is_empty());
        r.record_run("contractors", JobOutcome::CompletedWithRejections, at(5));
        let c = r.job("contractors");
        assert_eq!((c.held_since, c.last_success), (None, Some(at(5))));
    }

    #[test]
    fn jobs_removed_from_the_config_are_forgotten() {
        let r = ready();
        r.record_run("old", JobOutcome::Failed, at(0));
        r.record_run("hr", JobOutcome::Failed, at(0));
        r.retain_jobs(["hr"]);
        assert_eq!(r.warnings(), vec!["job hr: last run failed (1 in a row)".to_string()]);
    }

    #[test]
    fn only_draining_and_the_state_store_make_it_unready() {
        let r = Readiness::new();
        r.record_run("hr", JobOutcome::Failed, at(0));
        r.set_config_error(Some("xaas.yaml:3: unknown key `jobz`".into()));
        r.set_draining(true);
        let reasons = r.check().expect_err("not ready");
        assert_eq!(reasons, vec!["draining: shutting down", "state store not open"]);
        let warnings = r.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("unknown key `jobz`"), "{warnings:?}");
        r.set_draining(false);
        r.set_state_store_ok(true);
        assert_eq!(r.check(), Ok(()), "a failed reload and a failed job are warnings");
        r.set_config_error(None);
        r.record_run("hr", JobOutcome::Success, at(1));
        assert!(r.warnings().is_empty());
    }
}
