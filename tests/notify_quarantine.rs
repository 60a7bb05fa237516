//! Running unattended, end to end with the real daemon, the emulator and a real local HTTP
//! receiver:
//!
//! - a held run, two failed runs, a recovery and a quarantine each produce exactly one
//!   message per target (signed when the target is a webhook), naming nobody; a target that
//!   answers 500 is retried and given up, one that hangs does not hold the runs back;
//! - a job whose token is revoked stops reaching Okta after `quarantine_after` runs (the
//!   emulator's request count stays put while its schedule keeps firing), shows it in
//!   `/v1/jobs`, and runs again after `xaas approve --resume`.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use common::config::TestConfig;
use common::serve::Serve;
use common::{Person, signed_post};

/// One request a target received.
#[derive(Debug, Clone)]
struct Received {
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Serve `/good` and `/slack` (200), `/fail` (500) and `/hang` (never answers).
    async fn start() -> (Receiver, String) {
        let me = Receiver::default();
        async fn take(
            State(r): State<Receiver>,
            UrlPath(target): UrlPath<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let hang = target == "hang";
            let status =
                if target == "fail" { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
            r.got.lock().unwrap().push(Received { target, headers, body: body.to_vec() });
            if hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            status
        }
        let app = axum::Router::new()
            .route("/{target}", axum::routing::post(take))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (me, base)
    }

    fn to(&self, target: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.target == target).cloned().collect()
    }
}

/// Trigger the job and wait until the daemon has logged `n` finished runs in all.
async fn run(daemon: &Serve, n: usize) -> serde_json::Value {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/hr/trigger", daemon.base);
    // A distinct body each time: the same signed bytes twice in a second read as a replay.
    let (status, body) = signed_post(&client, &url, &serde_json::json!({ "run": n })).await;
    assert_eq!(status, 202, "{body}");
    wait_runs(daemon, n).await
}

/// Wait until `n` runs finished; the last one's log line.
async fn wait_runs(daemon: &Serve, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = daemon.log();
        let finished: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "run finished")
            .collect();
        if finished.len() >= n {
            return finished[n - 1].clone();
        }
        assert!(Instant::now() < deadline, "run {n} did not finish:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["kind"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[tokio::test]
async fn held_failing_recovered_and_quarantined_each_notify_once_and_name_nobody() {
    let sim = common::start_sim(300.0).await;
    let (receiver, hooks) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..10).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &csv);
    config.jobs = vec![common::config::job(
        "hr",
        common::SOURCE,
        &csv,
        "    max_rejected: 0\n    quarantine_after: 3\n    leavers:\n      deactivate_missing: true\n      missing_runs: 1\n    safeguards:\n      max_deactivations: 2\n      max_creations_percent: 100\n      min_source_percent: 0\n",
    )];
    let notify = format!(
        "notify:\n  public_url: http://xaas.test\n  timeout_secs: 1\n  attempts: 2\n  targets:\n    - {{type: webhook, url: '{hooks}/good', secret: notify-secret}}\n    - {{type: slack, url: '{hooks}/slack'}}\n    - {{type: webhook, url: '{hooks}/fail', secret: other}}\n    - {{type: slack, url: '{hooks}/hang'}}\n"
    );
    let path = dir.path().join("xaas.yaml");
    std::fs::write(&path, format!("{}{notify}", config.render())).unwrap();
    let daemon = Serve::start(dir.path(), &path, "notify", &[]).await;

    // 1: the first import; 2: half the people gone, over max_deactivations: held.
    assert_eq!(run(&daemon, 1).await["fields"]["outcome"], "success");
    common::write_csv(&csv, &people[..5]);
    assert_eq!(run(&daemon, 2).await["fields"]["outcome"], "held");
    // 3, 4: the export is gone: two failed runs.
    std::fs::remove_file(&csv).unwrap();
    assert_eq!(run(&daemon, 3).await["fields"]["outcome"], "failed");
    // The hanging target holds the held run's delivery open (it never answers): runs go on
    // regardless.
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.to("hang").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the held run's message never reached the hanging target"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run(&daemon, 4).await["fields"]["outcome"], "failed");
    // 5: back, all there: recovered.
    common::write_csv(&csv, &people);
    assert_eq!(run(&daemon, 5).await["fields"]["outcome"], "success");
    // 6-8: every record rejected (no first name), over max_rejected 0: a lasting failure,
    // quarantined on the third.
    let nameless: Vec<Person> =
        people.iter().map(|p| Person { first: String::new(), ..p.clone() }).collect();
    common::write_csv(&csv, &nameless);
    for n in 6..=8 {
        assert_eq!(run(&daemon, n).await["fields"]["outcome"], "failed");
    }

    // Each kind exactly once per target (the second "failing" falls in the throttle).
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.to("good").len() < 4 || receiver.to("fail").len() < 8 {
        assert!(Instant::now() < deadline, "{:?}", receiver.got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let good = receiver.to("good");
    assert_eq!(kinds(&good), ["held", "failing", "recovered", "quarantined"]);
    assert_eq!(receiver.to("slack").len(), 4);
    // A 500 is retried (2 attempts per message), then given up.
    assert_eq!(receiver.to("fail").len(), 8, "attempts per message");

    // Signed like our webhook, with the kind in a header.
    for r in &good {
        let ts: i64 = r.headers["x-xaas-timestamp"].to_str().unwrap().parse().unwrap();
        let expected = xaas::daemon::auth::sign(b"notify-secret", ts, &r.body);
        assert_eq!(r.headers["x-xaas-signature"].to_str().unwrap(), expected);
    }
    let doc = |i: usize| serde_json::from_slice::<serde_json::Value>(&good[i].body).unwrap();
    let held = doc(0);
    assert_eq!(held["held"]["deactivations"], 5, "{held}");
    assert_eq!(
        held["links"]["approve"],
        format!("http://xaas.test/ui/held/{}/approve", held["run_id"])
    );
    assert_eq!(doc(1)["failure"], "pull_incomplete");
    assert_eq!(doc(1)["failures"], 2);
    assert_eq!(doc(3)["failure"], "too_many_rejected");
    assert!(doc(3)["next_attempt"].is_string());
    let slack: Vec<String> = receiver
        .to("slack")
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        slack[3]
            .contains("job `hr` is quarantined after 3 failed run(s) in a row (too_many_rejected)"),
        "{slack:?}"
    );

    // Nobody named: no id, email or name of the sample in any message.
    for r in receiver.got.lock().unwrap().iter() {
        let body = String::from_utf8_lossy(&r.body);
        for p in &people {
            for personal in [&p.id, &p.email, &format!("{} {}", p.first, p.last), &p.cell] {
                assert!(!body.contains(personal.as_str()), "{personal} in {body}");
            }
        }
    }
    // The failed deliveries are counted.
    let metrics =
        reqwest::get(format!("{}/metrics", daemon.base)).await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("xaas_notifications_total") && l.contains("result=\"failed\"")),
        "{metrics}"
    );
}

/// The config of the quarantine test: the token in a file (so it can be fixed and reloaded),
/// a run every second, the UI on for `/v1/jobs`.
fn quarantine_config(dir: &Path, org: &str, csv: &Path, token_file: &Path) -> std::path::PathBuf {
    let mut config = TestConfig::new(dir, org, csv);
    config.serve_mut().after =
        "  ui:\n    enabled: true\n    auth: {type: token, token: ui-token}\n".into();
    config.jobs = vec![common::config::job(
        "hr",
        common::SOURCE,
        csv,
        "    schedule: '* * * * * *'\n    quarantine_after: 3\n    safeguards:\n      max_creations_percent: 100\n      min_source_percent: 0\n",
    )];
    let text = config
        .render()
        .replace("token_env: XAAS_TEST_TOKEN", &format!("token_file: {}", token_file.display()));
    let path = dir.join("xaas.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn jobs(daemon: &Serve) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/jobs", daemon.base))
        .bearer_auth("ui-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_revoked_token_quarantines_the_job_until_it_is_resumed() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..5).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let token_file = dir.path().join("okta-token");
    std::fs::write(&token_file, "revoked-token").unwrap();
    let path = quarantine_config(dir.path(), &sim.base_url(), &csv, &token_file);
    let mut daemon = Serve::start(dir.path(), &path, "quarantine", &[]).await;

    // Three scheduled runs fail with 401, then the job is quarantined.
    for n in 1..=3 {
        assert_eq!(wait_runs(&daemon, n).await["fields"]["outcome"], "failed");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("job quarantined") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = sim.snapshot().requests_total;
    assert!(requests >= 3, "each run asked okta once: {requests}");
    // The schedule keeps firing every second; okta hears nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.snapshot().requests_total, requests, "a quarantined job stays away from okta");
    assert!(daemon.log().contains("scheduled run skipped: the job is quarantined"));
    let log = daemon.log();
    let runs = log.lines().filter(|l| l.contains("\"run finished\"")).count();
    assert_eq!(runs, 3, "no run after the quarantine:\n{log}");
    let j = jobs(&daemon).await;
    let hr = &j["jobs"][0];
    assert_eq!(hr["quarantine"]["status"], "quarantined: okta_credentials", "{j}");
    assert_eq!(hr["consecutive_failures"], 3, "{j}");
    assert!(hr["quarantine"]["explanation"].as_str().unwrap().contains("API token"), "{j}");
    let ui = reqwest::Client::new()
        .get(format!("{}/ui", daemon.base))
        .bearer_auth("ui-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ui.contains("quarantined: okta_credentials") && ui.contains("id=\"resume-hr\""),
        "{ui}"
    );

    // Fixed and reloaded, but still quarantined: nothing runs until someone resumes it.
    std::fs::write(&token_file, common::TOKEN).unwrap();
    daemon.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sim.snapshot().requests_total, requests);
    let config = path.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
            .args(["approve", "--config", &config, "--job", "hr", "--resume"])
            .env("XAAS_TEST_WEBHOOK_SECRET", common::WEBHOOK_SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resumed job hr") && stdout.contains("okta_credentials"), "{stdout}");
    // The next firing runs it, and it succeeds.
    assert_eq!(wait_runs(&daemon, 4).await["fields"]["outcome"], "success");
    let snap = sim.snapshot();
    assert_eq!(snap.users.len(), people.len(), "imported after the resume");
    let j = jobs(&daemon).await;
    assert!(j["jobs"][0]["quarantine"].is_null(), "{j}");
    assert_eq!(j["jobs"][0]["consecutive_failures"], 0, "{j}");
    daemon.kill();
}
