//! Prometheus metrics: the names, their help texts and buckets, the global recorder, and one
//! small helper per thing we measure.
//!
//! Emission goes through the [`metrics`] facade, so call sites anywhere in the crate are one
//! line and nothing is threaded through: until [`install`] runs (the `serve` daemon and the
//! tests call it; `run` and `plan` do not), every helper is a no-op costing a few
//! nanoseconds. `GET /metrics` (`daemon::health`) renders the handle [`install`] returns.
//!
//! This module sits at the bottom of the layers (like Quickwit's common metrics): it imports
//! nothing of the crate, so `okta`, `sync` and `daemon` all record metrics without importing
//! each other. Helpers take plain labels and numbers; each caller turns its own types into them.
//!
//! Labels are **bounded** by construction: job names and identity source ids come from the
//! config, outcomes and kinds are closed sets (`&'static str` or an enum here), Okta endpoints
//! are fixed route templates (`sessions.get`, `bulk-upsert`), never a raw path. No label ever
//! holds a user id, an externalId, a session id or a URL. Counters move per run, per session,
//! per HTTP request (one request carries up to a few hundred users), never per record.

use std::sync::Mutex;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Finished runs of a job, by outcome (`success`, `completed_with_rejections`, `failed`,
/// `held`). Labels: `job`, `outcome`.
pub const RUNS_TOTAL: &str = "xaas_runs_total";
/// Wall-clock time of a run, pull to report. Labels: `job`.
pub const RUN_DURATION_SECONDS: &str = "xaas_run_duration_seconds";
/// Records (users) a run read, rejected, upserted, deactivated... added once per run from its
/// report. Labels: `job`, `outcome` (see [`records`]).
pub const RECORDS_TOTAL: &str = "xaas_records_total";
/// Group changes Okta completed, added once per run from its report. Labels: `job`, `action`
/// (`group_upserted`, `group_deleted`, `membership_added`, `membership_removed`).
pub const GROUP_CHANGES_TOTAL: &str = "xaas_group_changes_total";
/// Users sent through Okta's direct endpoints (no session). Labels: `job`, `outcome`
/// (`deactivated`, `upserted`, `failed`, `fallback`: the org refused the direct endpoints and
/// the user went into a session instead).
pub const DIRECT_USERS_TOTAL: &str = "xaas_direct_users_total";
/// 1 while the org refuses the direct endpoints for an identity source and xaas sends that
/// source's changes in sessions instead; 0 once a direct call went through again. Labels:
/// `identity_source`.
pub const DIRECT_UNAVAILABLE: &str = "xaas_direct_endpoints_unavailable";
/// Okta import sessions that ended, by final Okta status (`COMPLETED`, `ERROR`, `CLOSED`...,
/// or `NOT_CREATED`). Labels: `kind` (`upsert`, `delete`, `combined`), `status`.
pub const SESSIONS_TOTAL: &str = "xaas_sessions_total";
/// Time from a session's first call to its final status, without the 5-minute spacing wait.
/// Labels: `kind`.
pub const SESSION_DURATION_SECONDS: &str = "xaas_session_duration_seconds";
/// HTTP attempts to Okta (retries count one each). Labels: `endpoint` (see [`endpoint`]),
/// `status` (the HTTP status code, or `error` when no answer came back).
pub const OKTA_REQUESTS_TOTAL: &str = "xaas_okta_requests_total";
/// Time of one HTTP attempt to Okta, waits for the rate budget excluded. Labels: `endpoint`.
pub const OKTA_REQUEST_DURATION_SECONDS: &str = "xaas_okta_request_duration_seconds";
/// `X-Rate-Limit-Remaining` of Okta's last answer. Labels: `endpoint`.
pub const OKTA_RATE_LIMIT_REMAINING: &str = "xaas_okta_rate_limit_remaining";
/// Webhook requests, by what became of them (see [`WebhookOutcome`]). Labels: `job`,
/// `outcome`.
pub const WEBHOOK_EVENTS_TOTAL: &str = "xaas_webhook_events_total";
/// Time from a webhook request's arrival to its answer (the 202 comes after the durable write).
pub const WEBHOOK_ACK_DURATION_SECONDS: &str = "xaas_webhook_ack_duration_seconds";
/// Items waiting in an identity source's queue, the running one included. Labels:
/// `identity_source`.
pub const QUEUE_DEPTH: &str = "xaas_queue_depth";
/// Webhook events stored durably and not yet imported.
pub const EVENTS_PENDING: &str = "xaas_events_pending";
/// Always 1; the label says which version runs. Labels: `version`.
pub const BUILD_INFO: &str = "xaas_build_info";
/// 1 for the outcome of a job's last finished run, 0 for the other outcomes (a state set).
/// Labels: `job`, `outcome`.
pub const JOB_LAST_RUN: &str = "xaas_job_last_run";
/// Finished runs of a job that failed in a row, since its last run that did not. Labels: `job`.
pub const JOB_CONSECUTIVE_FAILURES: &str = "xaas_job_consecutive_failures";
/// Unix time of a job's last successful run (`success` or `completed_with_rejections`), in
/// this process. Labels: `job`.
pub const JOB_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "xaas_job_last_success_timestamp_seconds";
/// Unix time since which a job's runs have been held by a safeguard (awaiting approval); 0
/// when its last run was not held. Labels: `job`.
pub const JOB_HELD_SINCE_TIMESTAMP_SECONDS: &str = "xaas_job_held_since_timestamp_seconds";
/// The time between two scheduled runs of a job (the next two after now), for "no successful
/// run in twice the schedule"; absent for a job without a schedule. Labels: `job`.
pub const JOB_SCHEDULE_INTERVAL_SECONDS: &str = "xaas_job_schedule_interval_seconds";
/// 1 while the last configuration reload failed (the previous configuration is in force).
pub const CONFIG_RELOAD_FAILED: &str = "xaas_config_reload_failed";
/// Gauge: the state store's size on disk, in bytes (SQLite: the file; `kind="free"`: the
/// part of it that is free pages, reused before the file grows).
pub const STATE_SIZE_BYTES: &str = "xaas_state_size_bytes";
/// Counter, labelled `kind` (`runs`, `decisions`, `events`, `signatures`): history rows pruned.
pub const STATE_PRUNED_TOTAL: &str = "xaas_state_pruned_total";
/// Gauge, labelled `job`: 1 while the job is quarantined (its schedule backs off).
pub const JOB_QUARANTINED: &str = "xaas_job_quarantined";
/// Counter, labelled `kind` (held, failing, recovered, quarantined) and `result`
/// (`delivered`, `failed`): notifications per target.
pub const NOTIFICATIONS_TOTAL: &str = "xaas_notifications_total";

/// Every metric name, for tests and docs.
pub const ALL: &[&str] = &[
    RUNS_TOTAL,
    RUN_DURATION_SECONDS,
    RECORDS_TOTAL,
    GROUP_CHANGES_TOTAL,
    DIRECT_USERS_TOTAL,
    DIRECT_UNAVAILABLE,
    SESSIONS_TOTAL,
    SESSION_DURATION_SECONDS,
    OKTA_REQUESTS_TOTAL,
    OKTA_REQUEST_DURATION_SECONDS,
    OKTA_RATE_LIMIT_REMAINING,
    WEBHOOK_EVENTS_TOTAL,
    WEBHOOK_ACK_DURATION_SECONDS,
    QUEUE_DEPTH,
    EVENTS_PENDING,
    BUILD_INFO,
    JOB_LAST_RUN,
    JOB_CONSECUTIVE_FAILURES,
    JOB_LAST_SUCCESS_TIMESTAMP_SECONDS,
    JOB_HELD_SINCE_TIMESTAMP_SECONDS,
    JOB_SCHEDULE_INTERVAL_SECONDS,
    CONFIG_RELOAD_FAILED,
    JOB_QUARANTINED,
    NOTIFICATIONS_TOTAL,
    STATE_SIZE_BYTES,
    STATE_PRUNED_TOTAL,
];

/// The outcomes of a run, as [`JOB_LAST_RUN`] labels them.
pub const RUN_OUTCOMES: &[&str] = &["success", "completed_with_rejections", "failed", "held"];

/// The `job` label of a webhook request whose job is not (or not yet) known: an unknown name
/// in the path, or a request refused before routing. Never the raw path segment.
pub const UNKNOWN_JOB: &str = "_unknown";

/// Fixed `endpoint` labels of the Okta calls. Bulk loads use `RequestKind::endpoint`
/// (`bulk-upsert`, `bulk-delete`, `bulk-groups-upsert`...), already a fixed template.
pub mod endpoint {
    /// `GET …/sessions`
    pub const SESSIONS_LIST: &str = "sessions.list";
    /// `POST …/sessions`
    pub const SESSIONS_CREATE: &str = "sessions.create";
    /// `GET …/sessions/{id}`
    pub const SESSIONS_GET: &str = "sessions.get";
    /// `DELETE …/sessions/{id}`
    pub const SESSIONS_CANCEL: &str = "sessions.cancel";
    /// `POST …/sessions/{id}/start-import`
    pub const SESSIONS_START_IMPORT: &str = "sessions.start-import";
    /// `POST …/users` (direct, no session)
    pub const USERS_CREATE: &str = "users.create";
    /// `GET …/users/{externalId}`
    pub const USERS_GET: &str = "users.get";
    /// `PUT …/users/{externalId}`
    pub const USERS_REPLACE: &str = "users.replace";
    /// `PATCH …/users/{externalId}`
    pub const USERS_UPDATE: &str = "users.update";
    /// `DELETE …/users/{externalId}`
    pub const USERS_DELETE: &str = "users.delete";
}

/// What became of a webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Stored durably and answered 202.
    Accepted,
    /// Already stored (same idempotency key): answered without storing it again.
    Duplicate,
    /// Missing or wrong signature or bearer token.
    RejectedAuth,
    /// Unreadable, too large, or not in the job's source shape.
    RejectedBody,
    /// Every record of it failed the job's mapping.
    RejectedMapping,
    /// Over the webhook's rate limit (429).
    RateLimited,
    /// Not stored: the daemon could not map or store it (5xx); the sender retries.
    Failed,
}

impl WebhookOutcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::RejectedAuth => "rejected_auth",
            WebhookOutcome::RejectedBody => "rejected_body",
            WebhookOutcome::RejectedMapping => "rejected_mapping",
            WebhookOutcome::RateLimited => "rate_limited",
            WebhookOutcome::Failed => "failed",
        }
    }
}

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the prometheus recorder: {0}")]
    Install(#[from] BuildError),
}

/// Bucket upper bounds, in seconds. Runs and sessions take seconds to hours (Okta processes
/// big sessions slowly, and the 5-minute rule spaces them); HTTP calls and webhook acks take
/// milliseconds to seconds.
const RUN_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0];
const SESSION_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0];
const REQUEST_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ACK_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How often histogram samples are folded into their buckets when nobody scrapes (a scrape
/// does it too). Without it, samples would pile up in memory between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The installed recorder's handle. A mutex rather than a `OnceLock`, because installing can
/// fail and a failure must be returned, not cached.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Install the global Prometheus recorder (once per process) and return its handle. Later
/// calls return the same handle, so tests and the daemon may all call it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let mut slot = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (RUN_DURATION_SECONDS, RUN_BUCKETS),
        (SESSION_DURATION_SECONDS, SESSION_BUCKETS),
        (OKTA_REQUEST_DURATION_SECONDS, REQUEST_BUCKETS),
        (WEBHOOK_ACK_DURATION_SECONDS, ACK_BUCKETS),
    ] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)?;
    }
    let handle = builder.install_recorder()?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(EVENTS_PENDING).set(0.0);
    let upkeep = handle.clone();
    // A plain thread, not a task: the recorder lives as long as the process, whatever
    // runtime (or none) the caller has. If it cannot be spawned, scrapes still do the work.
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Register the help text and unit of every metric with the installed recorder.
pub fn describe() {
    use metrics::Unit;
    describe_counter!(RUNS_TOTAL, Unit::Count, "Finished runs of a job, by outcome");
    describe_histogram!(RUN_DURATION_SECONDS, Unit::Seconds, "Wall-clock time of a run");
    describe_counter!(RECORDS_TOTAL, Unit::Count, "Records of finished runs, by outcome");
    describe_counter!(
        GROUP_CHANGES_TOTAL,
        Unit::Count,
        "Groups and memberships changed in completed sessions, by action"
    );
    describe_counter!(
        DIRECT_USERS_TOTAL,
        Unit::Count,
        "Users sent through Okta's direct endpoints (no session), by outcome"
    );
    describe_gauge!(
        DIRECT_UNAVAILABLE,
        Unit::Count,
        "1 while the org refuses Okta's direct identity-source endpoints (sessions are used)"
    );
    describe_counter!(SESSIONS_TOTAL, Unit::Count, "Okta import sessions, by final status");
    describe_histogram!(
        SESSION_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a session's first call to its final status, spacing wait excluded"
    );
    describe_counter!(OKTA_REQUESTS_TOTAL, Unit::Count, "HTTP attempts to Okta, by status");
    describe_histogram!(
        OKTA_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one HTTP attempt to Okta"
    );
    describe_gauge!(
        OKTA_RATE_LIMIT_REMAINING,
        Unit::Count,
        "X-Rate-Limit-Remaining of Okta's last answer"
    );
    describe_counter!(WEBHOOK_EVENTS_TOTAL, Unit::Count, "Webhook requests, by outcome");
    describe_histogram!(
        WEBHOOK_ACK_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a webhook request's arrival to its answer"
    );
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Items in an identity source's queue");
    describe_gauge!(EVENTS_PENDING, Unit::Count, "Webhook events stored and not yet imported");
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which build runs");
    describe_gauge!(JOB_LAST_RUN, "1 for the outcome of the job's last finished run");
    describe_gauge!(
        JOB_CONSECUTIVE_FAILURES,
        Unit::Count,
        "Finished runs of the job that failed in a row"
    );
    describe_gauge!(
        JOB_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the job's last successful run"
    );
    describe_gauge!(
        JOB_HELD_SINCE_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time since which the job's runs are held by a safeguard; 0 when not held"
    );
    describe_gauge!(
        JOB_SCHEDULE_INTERVAL_SECONDS,
        Unit::Seconds,
        "Time between two scheduled runs of the job"
    );
    describe_gauge!(CONFIG_RELOAD_FAILED, "1 while the last configuration reload failed");
    describe_gauge!(
        STATE_SIZE_BYTES,
        Unit::Bytes,
        "The state store's size on disk (kind: total, free)"
    );
    describe_counter!(
        STATE_PRUNED_TOTAL,
        Unit::Count,
        "History rows pruned (kind: runs, decisions, events)"
    );
    describe_gauge!(JOB_QUARANTINED, "1 while the job is quarantined: its schedule backs off");
    describe_counter!(
        NOTIFICATIONS_TOTAL,
        Unit::Count,
        "Notifications per target, by kind and result (delivered, failed)"
    );
}

/// The state store's size and its free part, in bytes.
pub fn state_size(bytes: u64, free: u64) {
    gauge!(STATE_SIZE_BYTES, "kind" => "total").set(bytes as f64);
    gauge!(STATE_SIZE_BYTES, "kind" => "free").set(free as f64);
}

/// History rows one pruning pass removed.
pub fn pruned(runs: u64, decisions: u64, events: u64, signatures: u64) {
    let kinds =
        [("runs", runs), ("decisions", decisions), ("events", events), ("signatures", signatures)];
    for (kind, n) in kinds {
        if n > 0 {
            counter!(STATE_PRUNED_TOTAL, "kind" => kind).increment(n);
        }
    }
}

/// Whether `job` is quarantined.
pub fn set_quarantined(job: &str, quarantined: bool) {
    gauge!(JOB_QUARANTINED, "job" => job.to_owned()).set(if quarantined { 1.0 } else { 0.0 });
}

/// One notification to one target ended `result` (`delivered` or `failed`).
pub fn notification(kind: &'static str, result: &'static str) {
    counter!(NOTIFICATIONS_TOTAL, "kind" => kind, "result" => result).increment(1);
}

/// Where a job stands after a finished run: its `outcome` (one of [`RUN_OUTCOMES`]), its
/// failures in a row, and the Unix times of its last success and of the hold it waits in.
pub fn job_health(
    job: &str,
    outcome: &str,
    consecutive_failures: u32,
    last_success: Option<i64>,
    held_since: Option<i64>,
) {
    for o in RUN_OUTCOMES {
        let v = if *o == outcome { 1.0 } else { 0.0 };
        gauge!(JOB_LAST_RUN, "job" => job.to_owned(), "outcome" => *o).set(v);
    }
    gauge!(JOB_CONSECUTIVE_FAILURES, "job" => job.to_owned()).set(f64::from(consecutive_failures));
    if let Some(at) = last_success {
        gauge!(JOB_LAST_SUCCESS_TIMESTAMP_SECONDS, "job" => job.to_owned()).set(at as f64);
    }
    gauge!(JOB_HELD_SINCE_TIMESTAMP_SECONDS, "job" => job.to_owned())
        .set(held_since.unwrap_or(0) as f64);
}

/// The time between two scheduled runs of `job`.
pub fn set_schedule_interval(job: &str, interval: Duration) {
    gauge!(JOB_SCHEDULE_INTERVAL_SECONDS, "job" => job.to_owned()).set(interval.as_secs_f64());
}

/// Whether the last configuration reload failed.
pub fn set_config_reload_failed(failed: bool) {
    gauge!(CONFIG_RELOAD_FAILED).set(if failed { 1.0 } else { 0.0 });
}

/// A finished run of `job` that took `elapsed`, with its `outcome` label and its record counts
/// (`(outcome label, n)`, see [`RECORDS_TOTAL`]). Dry runs (`plan`) are not runs and are not
/// counted.
pub fn run_finished(
    job: &str,
    outcome: &'static str,
    elapsed: Duration,
    counts: &[(&'static str, u64)],
) {
    counter!(RUNS_TOTAL, "job" => job.to_owned(), "outcome" => outcome).increment(1);
    histogram!(RUN_DURATION_SECONDS, "job" => job.to_owned()).record(elapsed.as_secs_f64());
    for &(label, n) in counts {
        records(job, label, n);
    }
}

/// Add `n` records of `job` with this `outcome` (a fixed word: `read`, `rejected`,
/// `upserted`...). Registers the series even when `n` is 0, so dashboards see it.
pub fn records(job: &str, outcome: &'static str, n: u64) {
    counter!(RECORDS_TOTAL, "job" => job.to_owned(), "outcome" => outcome).increment(n);
}

/// One user of `job` sent, or not, through the direct endpoints (see [`DIRECT_USERS_TOTAL`]).
pub fn direct_user(job: &str, outcome: &'static str) {
    counter!(DIRECT_USERS_TOTAL, "job" => job.to_owned(), "outcome" => outcome).increment(1);
}

/// Whether the direct endpoints of `identity_source` are refused (see [`DIRECT_UNAVAILABLE`]).
pub fn direct_unavailable(identity_source: &str, unavailable: bool) {
    gauge!(DIRECT_UNAVAILABLE, "identity_source" => identity_source.to_owned())
        .set(if unavailable { 1.0 } else { 0.0 });
}

/// Add `n` group changes of `job` with this `action` (see [`GROUP_CHANGES_TOTAL`]).
pub fn group_changes(job: &str, action: &'static str, n: u64) {
    counter!(GROUP_CHANGES_TOTAL, "job" => job.to_owned(), "action" => action).increment(n);
}

/// An import session of `kind` (`upsert`, `delete`, `combined`) that ended in `status` (an
/// Okta status, or `NOT_CREATED`) after `elapsed` (planned sessions with nothing to send are
/// not sessions).
pub fn session_finished(kind: &'static str, status: &'static str, elapsed: Duration) {
    counter!(SESSIONS_TOTAL, "kind" => kind, "status" => status).increment(1);
    histogram!(SESSION_DURATION_SECONDS, "kind" => kind).record(elapsed.as_secs_f64());
}

/// One HTTP attempt to Okta on a fixed `endpoint` label: the HTTP status, or `None` when no
/// answer came back (refused, timed out, reset).
pub fn okta_request(endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
    let status = match status {
        Some(code) => metrics::SharedString::from(code.to_string()),
        None => metrics::SharedString::const_str("error"),
    };
    counter!(OKTA_REQUESTS_TOTAL, "endpoint" => endpoint, "status" => status).increment(1);
    histogram!(OKTA_REQUEST_DURATION_SECONDS, "endpoint" => endpoint).record(elapsed.as_secs_f64());
}

/// `X-Rate-Limit-Remaining` of an answer from `endpoint`.
pub fn okta_rate_limit_remaining(endpoint: &'static str, remaining: u32) {
    gauge!(OKTA_RATE_LIMIT_REMAINING, "endpoint" => endpoint).set(f64::from(remaining));
}

/// A webhook request for `job` (a configured job name, or [`UNKNOWN_JOB`]; never the raw path
/// segment, which anyone can choose).
pub fn webhook_event(job: &str, outcome: WebhookOutcome) {
    counter!(WEBHOOK_EVENTS_TOTAL, "job" => job.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// How long a webhook request took to answer.
pub fn webhook_ack(elapsed: Duration) {
    histogram!(WEBHOOK_ACK_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// Items in the queue of `identity_source` (a configured id), the running one included.
pub fn set_queue_depth(identity_source: &str, depth: usize) {
    gauge!(QUEUE_DEPTH, "identity_source" => identity_source.to_owned()).set(depth as f64);
}

/// Webhook events stored and not yet imported, across jobs.
pub fn set_events_pending(n: u64) {
    gauge!(EVENTS_PENDING).set(n as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_twice_returns_the_same_recorder() {
        let first = install().expect("install");
        let second = install().expect("install again");
        webhook_event(UNKNOWN_JOB, WebhookOutcome::RateLimited);
        // Both handles render the one recorder the event went to.
        for text in [first.render(), second.render()] {
            assert!(text.contains(BUILD_INFO), "{text}");
            assert!(text.contains(r#"job="_unknown",outcome="rate_limited""#), "{text}");
        }
    }

    #[test]
    fn names_are_prometheus_names_with_the_xaas_prefix() {
        for name in ALL {
            assert!(name.starts_with("xaas_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
        }
    }

    #[test]
    fn histograms_render_with_our_buckets() {
        let handle = install().expect("install");
        okta_request(endpoint::SESSIONS_GET, Some(200), Duration::from_millis(120));
        okta_request(endpoint::SESSIONS_GET, None, Duration::from_millis(5));
        let text = handle.render();
        assert!(
            text.contains(
                r#"xaas_okta_request_duration_seconds_bucket{endpoint="sessions.get",le="0.25"}"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"endpoint="sessions.get",status="error""#), "{text}");
        assert!(text.contains("# HELP xaas_okta_requests_total"), "{text}");
    }
}
