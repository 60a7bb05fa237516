//! `/healthz`, `/readyz`, `/metrics` and `xaas healthcheck`, over real HTTP on 127.0.0.1:0,
//! with real runs against the emulator.
//!
//! The metrics recorder is global to this test binary, so tests compare values before and
//! after what they do rather than absolute values.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use xaas::daemon::health::{self, HealthState, Readiness};
use xaas::sync::report::JobOutcome;
use xaas::telemetry as metrics;

/// Serve `health::router` on 127.0.0.1:0.
async fn serve(state: HealthState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, health::router(state)).await.unwrap() });
    addr
}

fn state() -> (Arc<Readiness>, HealthState) {
    let readiness = Arc::new(Readiness::new());
    let handle = metrics::install().unwrap();
    (readiness.clone(), HealthState::new(readiness, handle))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

/// One sample of the Prometheus text: name and labels.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the exposition format (enough of it for these tests: no escaped quotes in values).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push(Sample { name: name.to_string(), labels, value: value.parse().unwrap() });
    }
    out
}

/// Sum of the samples named `name` that carry every label in `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, _, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    parse(&text)
}

#[tokio::test]
async fn healthz_is_ok_and_readyz_follows_the_readiness_over_http() {
    let (readiness, state) = state();
    let addr = serve(state).await;

    let (status, content_type, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert!(content_type.starts_with("application/json"), "{content_type}");

    // Not ready until the state store is open.
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("state store not open"), "{body}");

    readiness.set_state_store_ok(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    // A failed run is a warning, never unreadiness: the webhook must stay in service.
    readiness.record_run("hr", JobOutcome::Failed, chrono::Utc::now());
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ready");
    assert_eq!(json["warnings"], serde_json::json!(["job hr: last run failed (1 in a row)"]));

    readiness.record_run("hr", JobOutcome::Success, chrono::Utc::now());
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));

    // Shutting down: not ready, still alive.
    readiness.set_draining(true);
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);

    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(body.contains(r#"xaas_build_info{version=""#), "{body}");
}

/// Run the real binary's `healthcheck` on a blocking thread (the server runs in this process).
async fn healthcheck(url: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
            .args(["healthcheck", "--url", &url, "--timeout-secs", "3"])
            .env_remove("XAAS_HEALTHCHECK_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn healthcheck_exits_0_on_200_and_1_with_a_reason_otherwise() {
    let (_readiness, state) = state();
    let addr = serve(state).await;

    let ok = healthcheck(format!("http://{addr}/healthz")).await;
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));

    // Answered, but not 200 (the readiness is not ready: no state store).
    let not_ready = healthcheck(format!("http://{addr}/readyz")).await;
    let stderr = String::from_utf8_lossy(&not_ready.stderr);
    assert_eq!(not_ready.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("answered 503"), "{stderr}");

    // Nobody listening: a port that was just free.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let refused = healthcheck(format!("http://{closed}/healthz")).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("unhealthy: cannot reach"), "{stderr}");
    assert!(stderr.to_lowercase().contains("connection refused"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");

    let bad = healthcheck("localhost:8080".into()).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an http(s) url"));
}

/// Load the one-job config `write_config` wrote, the token read from a file instead of the
/// environment (setting a variable in a multi-threaded test process is unsound).
fn load(config: &std::path::Path) -> xaas::settings::Settings {
    let token = config.with_file_name("token");
    std::fs::write(&token, TOKEN).unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let text =
        text.replace("token_env: XAAS_TEST_TOKEN", &format!("token_file: {}", token.display()));
    std::fs::write(config, text).unwrap();
    xaas::settings::load(config).unwrap()
}

/// Tests whose runs move unlabelled series (sessions, Okta requests) take turns.
static RUNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_real_run_shows_up_in_metrics_with_bounded_labels_and_in_readiness() {
    let _turn = RUNS.lock().await;
    let (readiness, state) = state();
    readiness.set_state_store_ok(true);
    let addr = serve(state).await;
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let people: Vec<Person> = (0..6).map(|i| Person::generate(i, i != 5)).collect();
    let csv = dir.path().join("people.csv");
    write_csv(&csv, &people);
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, "");
    let settings = load(&config);
    let jobs = settings.select_jobs(None).unwrap();

    let before = scrape(addr).await;

    // 1. A run whose session Okta fails: the run fails; the daemon stays ready, and the
    //    job's gauges say it failed.
    sim.fail_next_session(SOURCE);
    let report = xaas::cli::run_jobs(&settings, &jobs, false).await.unwrap();
    let job = &report.jobs[0];
    assert_eq!(job.outcome.as_str(), "failed", "{:?}", job.error);
    readiness.record_run(&job.job, job.outcome, chrono::Utc::now());
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let failed = scrape(addr).await;
    assert_eq!(sum(&failed, "xaas_job_consecutive_failures", &[("job", "hr")]), 1.0);
    assert_eq!(sum(&failed, "xaas_job_last_run", &[("job", "hr"), ("outcome", "failed")]), 1.0);
    assert_eq!(sum(&failed, "xaas_job_last_run", &[("job", "hr"), ("outcome", "success")]), 0.0);
    let delta = |after: &[Sample], name: &str, with: &[(&str, &str)]| {
        sum(after, name, with) - sum(&before, name, with)
    };
    assert_eq!(delta(&failed, "xaas_runs_total", &[("job", "hr"), ("outcome", "failed")]), 1.0);
    assert_eq!(delta(&failed, "xaas_sessions_total", &[("status", "ERROR")]), 1.0);

    // 2. The next run succeeds: ready again, and every part of the run is counted.
    let report = xaas::cli::run_jobs(&settings, &jobs, false).await.unwrap();
    let job = &report.jobs[0];
    assert_eq!(job.outcome.as_str(), "success", "{:?}", job.error);
    readiness.record_run(&job.job, job.outcome, chrono::Utc::now());
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let succeeded = scrape(addr).await;
    assert_eq!(sum(&succeeded, "xaas_job_consecutive_failures", &[("job", "hr")]), 0.0);
    assert!(sum(&succeeded, "xaas_job_last_success_timestamp_seconds", &[("job", "hr")]) > 1.7e9);

    let after = scrape(addr).await;
    let d = |name: &str, with: &[(&str, &str)]| delta(&after, name, with);
    assert_eq!(d("xaas_runs_total", &[("job", "hr"), ("outcome", "success")]), 1.0);
    assert_eq!(d("xaas_run_duration_seconds_count", &[("job", "hr")]), 2.0);
    assert_eq!(d("xaas_records_total", &[("job", "hr"), ("outcome", "read")]), 12.0);
    assert_eq!(d("xaas_records_total", &[("job", "hr"), ("outcome", "upserted")]), 5.0);
    assert_eq!(
        d("xaas_records_total", &[("job", "hr"), ("outcome", "deactivated")]),
        job.counts.deactivated as f64,
        "{:?}",
        job.counts
    );
    // Every session of the report is counted under its final status (the failed run had one).
    let outcomes: Vec<_> = job.sessions.iter().filter_map(|s| s.outcome.as_ref()).collect();
    let completed =
        outcomes.iter().filter(|o| o.final_status.map(|s| s.as_str()) == Some("COMPLETED")).count();
    assert!(completed >= 1, "{outcomes:?}");
    assert_eq!(d("xaas_sessions_total", &[("status", "COMPLETED")]), completed as f64);
    assert_eq!(d("xaas_sessions_total", &[]), 1.0 + outcomes.len() as f64);
    assert_eq!(d("xaas_session_duration_seconds_count", &[]), 1.0 + outcomes.len() as f64);
    assert!(d("xaas_okta_requests_total", &[("endpoint", "sessions.create")]) >= 2.0);
    assert!(d("xaas_okta_requests_total", &[("endpoint", "sessions.list")]) >= 2.0);
    assert!(d("xaas_okta_requests_total", &[("endpoint", "sessions.start-import")]) >= 2.0);
    assert!(d("xaas_okta_requests_total", &[("endpoint", "sessions.get")]) >= 2.0);
    assert!(d("xaas_okta_requests_total", &[("endpoint", "bulk-upsert")]) >= 2.0);
    assert!(d("xaas_okta_request_duration_seconds_count", &[("endpoint", "bulk-upsert")]) >= 2.0);
    assert!(
        after.iter().any(|s| s.name == "xaas_okta_rate_limit_remaining"
            && s.labels.get("endpoint").is_some_and(|e| e == "sessions.get")),
        "the rate-limit gauge follows the emulator's headers"
    );

    // Bounded labels: a fixed set of label names, and no value that names a user, a session
    // or a path.
    let session_ids: Vec<String> =
        report.jobs[0].sessions.iter().filter_map(|s| s.outcome.as_ref()?.id.clone()).collect();
    assert!(!session_ids.is_empty());
    let allowed =
        ["job", "outcome", "kind", "status", "endpoint", "identity_source", "version", "action"];
    for s in after.iter().filter(|s| s.name.starts_with("xaas_")) {
        for (k, v) in &s.labels {
            if k == "le" {
                continue;
            }
            assert!(allowed.contains(&k.as_str()), "unexpected label {k} in {s:?}");
            assert!(!v.contains('/') && !v.contains('@'), "unbounded label value in {s:?}");
            for p in &people {
                assert!(!v.contains(&p.id), "externalId {} in {s:?}", p.id);
            }
            for id in &session_ids {
                assert!(!v.contains(id.as_str()), "session id in {s:?}");
            }
        }
        if let Some(status) = s.labels.get("status").filter(|_| s.name.contains("okta")) {
            assert!(
                status == "error" || (status.len() == 3 && status.parse::<u16>().is_ok()),
                "{s:?}"
            );
        }
    }
    for name in [
        "xaas_runs_total",
        "xaas_run_duration_seconds",
        "xaas_records_total",
        "xaas_group_changes_total",
        "xaas_sessions_total",
        "xaas_session_duration_seconds",
        "xaas_okta_requests_total",
        "xaas_okta_request_duration_seconds",
        "xaas_okta_rate_limit_remaining",
        "xaas_build_info",
        "xaas_events_pending",
    ] {
        assert!(
            after.iter().any(|s| s.name == name || s.name.starts_with(&format!("{name}_"))),
            "{name} missing from /metrics"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn daemon_side_helpers_render_with_their_labels() {
    let (_readiness, state) = state();
    let addr = serve(state).await;
    metrics::webhook_event("hr-webhook", metrics::WebhookOutcome::Accepted);
    metrics::webhook_event(metrics::UNKNOWN_JOB, metrics::WebhookOutcome::RejectedAuth);
    metrics::webhook_ack(std::time::Duration::from_millis(12));
    metrics::set_queue_depth("0oaqueue000000000000", 3);
    let after = scrape(addr).await;
    assert!(
        sum(&after, "xaas_webhook_events_total", &[("job", "hr-webhook"), ("outcome", "accepted")])
            >= 1.0
    );
    assert!(
        sum(
            &after,
            "xaas_webhook_events_total",
            &[("job", "_unknown"), ("outcome", "rejected_auth")]
        ) >= 1.0
    );
    assert!(sum(&after, "xaas_webhook_ack_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        sum(&after, "xaas_queue_depth", &[("identity_source", "0oaqueue000000000000")]),
        3.0
    );
}

#[tokio::test]
async fn a_run_that_fails_before_the_push_is_counted_too() {
    let (_readiness, state) = state();
    let addr = serve(state).await;
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    write_csv(&csv, &[Person::generate(1, true)]);
    // The state store cannot be opened: its directory is a file.
    let state = format!("state:\n  path: {}\n", csv.join("state.db").display());
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, &state);
    let mut settings = load(&config);
    // A job name of its own: the other tests' runs share this binary's recorder.
    settings.jobs[0].name = "early".into();
    let jobs = settings.select_jobs(None).unwrap();

    let before = scrape(addr).await;
    let report = xaas::cli::run_jobs(&settings, &jobs, false).await.unwrap();
    let job = &report.jobs[0];
    assert_eq!(job.outcome.as_str(), "failed");
    assert!(job.error.as_deref().unwrap_or("").contains("state store"), "{:?}", job.error);
    let after = scrape(addr).await;
    let with = [("job", "early"), ("outcome", "failed")];
    assert_eq!(sum(&after, "xaas_runs_total", &with) - sum(&before, "xaas_runs_total", &with), 1.0);
    // A plan is not a run.
    xaas::cli::run_jobs(&settings, &jobs, true).await.unwrap();
    let planned = scrape(addr).await;
    assert_eq!(sum(&planned, "xaas_runs_total", &[("job", "early")]), 1.0);
    sim.shutdown().await;
}

/// `xaas_group_changes_total` counts, by action, what completed sessions applied: a first run
/// creates the groups and adds every membership; a mover and a leaver then remove two, add one,
/// and retire the group nobody derives any more.
#[tokio::test]
async fn group_changes_are_counted_by_action() {
    let _turn = RUNS.lock().await;
    let (_readiness, state) = state();
    let addr = serve(state).await;
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let write = |rows: &[(&str, &str, bool)]| {
        let mut text = String::from("id,email,dept,active\n");
        for (id, dept, active) in rows {
            text.push_str(&format!("{id},{id}@example.com,{dept},{active}\n"));
        }
        std::fs::write(&csv, text).unwrap();
    };
    write(&[("a", "eng", true), ("b", "eng", true), ("c", "ops", true)]);
    let mapping = dir.path().join("mapping.yaml");
    std::fs::write(
        &mapping,
        "version: 2\nexternal_id: id\nstatus:\n  active_if: active == \"true\"\nattributes:\n  userName: email\n  email: email\n\
         groups:\n  - external_id: \"dept-{{ dept }}\"\n    name: \"{{ dept }}\"\n",
    )
    .unwrap();
    // A three-person org: every change is a large share, which is not what this is about.
    let lenient = "    safeguards:\n      max_deactivations_percent: 100\n      \
                   max_membership_removals_percent: 100\n      max_group_deletions_percent: 100\n";
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, lenient);
    let text = std::fs::read_to_string(&config).unwrap();
    // Its own job name: the recorder is shared with the other tests of this binary.
    let text = text
        .replace(&mapping_path().display().to_string(), &mapping.display().to_string())
        .replace("- name: hr", "- name: mover");
    std::fs::write(&config, text).unwrap();
    let settings = load(&config);
    let jobs = settings.select_jobs(None).unwrap();
    let changes = |samples: &[Sample], action: &str| {
        sum(samples, "xaas_group_changes_total", &[("job", "mover"), ("action", action)])
    };
    let actions = ["group_upserted", "group_deleted", "membership_added", "membership_removed"];

    let before = scrape(addr).await;
    let report = xaas::cli::run_jobs(&settings, &jobs, false).await.unwrap();
    assert_eq!(report.jobs[0].outcome.as_str(), "success", "{:?}", report.jobs[0].error);
    let first = scrape(addr).await;
    let got: Vec<f64> = actions.iter().map(|a| changes(&first, a) - changes(&before, a)).collect();
    assert_eq!(got, [2.0, 0.0, 3.0, 0.0], "{actions:?}");

    // c moves to eng (ops is left empty: retired), b leaves.
    write(&[("a", "eng", true), ("b", "eng", false), ("c", "eng", true)]);
    let report = xaas::cli::run_jobs(&settings, &jobs, false).await.unwrap();
    assert_eq!(report.jobs[0].outcome.as_str(), "success", "{:?}", report.jobs[0].error);
    let second = scrape(addr).await;
    let got: Vec<f64> = actions.iter().map(|a| changes(&second, a) - changes(&first, a)).collect();
    // Only c is sent: eng is upserted again with c as its one new member; a is unchanged.
    assert_eq!(got, [1.0, 1.0, 1.0, 2.0], "{actions:?}: {:#?}", report.jobs[0].sessions);
    let okta: Vec<String> = sim.snapshot().groups.iter().map(|g| g.external_id.clone()).collect();
    assert_eq!(okta, ["dept-eng"]);
}
