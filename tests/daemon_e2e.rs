//! `xaas serve` end to end: the real binary, the emulator as Okta, signed pushes over HTTP.
//!
//! - a pushed termination reaches Okta within 5 s (the latency is printed);
//! - 1,000 events acknowledged, then SIGKILL: after a restart each reaches Okta exactly once;
//! - a trigger runs the job's pull;
//! - SIGTERM mid-import exits 0 and leaves no open session;
//! - SIGHUP keeps the old config when the new one is invalid, and takes a valid one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Person, SOURCE, TOKEN, free_port, signed_post};
use xaas::sim::SimHandle;

const SECRET: &str = common::WEBHOOK_SECRET;

struct Daemon {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: &Path, port: u16, tag: &str) -> Daemon {
        let log = dir.join(format!("serve-{tag}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_xaas"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("XAAS_TEST_TOKEN", TOKEN)
            .env("XAAS_TEST_WEBHOOK_SECRET", SECRET)
            .env("XAAS_LOG", "xaas=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{}/healthz", self.base)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("xaas serve did not start:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Wait for the process to exit; its exit code.
    async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("xaas serve did not exit within {within:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one CSV job and the webhook on `port`; `extra` is appended under `serve:`.
fn write_config(dir: &Path, sim: &SimHandle, csv: &Path, port: u16, serve_extra: &str) -> PathBuf {
    let path = dir.join("xaas.yaml");
    let text = format!(
        "okta:
  org_url: {url}
  auth:
    type: api_token
    token_env: XAAS_TEST_TOKEN
  session_spacing_secs: 1
  poll_initial_ms: 20
  poll_max_secs: 1
state:
  path: {state}
serve:
  listen: 127.0.0.1:{port}
  shutdown_deadline_secs: 2
{serve_extra}  webhook:
    auth:
      type: hmac
      secrets:
        - env: XAAS_TEST_WEBHOOK_SECRET
    # One test client sends everything: lift the per-client limit.
    rate_limit_per_second: 100000
    rate_limit_burst: 100000
jobs:
  - name: hr
    identity_source_id: {SOURCE}
    source:
      type: csv
      path: {csv}
    mapping: {mapping}
",
        url = sim.base_url(),
        state = dir.join("state.db").display(),
        csv = csv.display(),
        mapping = common::mapping_path().display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn signed_get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let ts = chrono::Utc::now().timestamp();
    let signature = xaas::daemon::auth::sign(SECRET.as_bytes(), ts, b"");
    let resp = client
        .get(url)
        .header("x-xaas-timestamp", ts.to_string())
        .header("x-xaas-signature", signature)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

fn no_open_sessions(sim: &SimHandle) -> bool {
    sim.snapshot()
        .sessions
        .iter()
        .all(|s| !matches!(s.status.as_str(), "CREATED" | "IN_PROGRESS" | "TRIGGERED"))
}

#[tokio::test]
async fn a_pushed_termination_reaches_okta_within_five_seconds() {
    let sim = common::start_sim(1.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let person = Person::generate(7, true);
    sim.seed_user(SOURCE, &person.id, person.expected_profile(), true);
    let port = free_port();
    let config = write_config(dir.path(), &sim, &csv, port, "");
    let daemon = Daemon::start(dir.path(), &config, port, "termination");
    daemon.wait_ready().await;

    let client = reqwest::Client::new();
    let leaver = Person { active: false, ..person.clone() };
    let started = Instant::now();
    let (status, body) =
        signed_post(&client, &format!("{}/v1/jobs/hr/records", daemon.base), &leaver.json()).await;
    assert_eq!(status, 202, "{body}\n{}", daemon.log());
    assert_eq!(body["urgent"], true, "{body}");
    let latency = loop {
        let snap = sim.snapshot();
        let user = snap.users.iter().find(|u| u.external_id == person.id).unwrap();
        if user.status == "DEACTIVATED" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not deactivated within 5 s:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("termination end-to-end latency: {} ms", latency.as_millis());
    // The event says what happened.
    let id = body["event_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, ev) = signed_get(&client, &format!("{}/v1/events/{id}", daemon.base)).await;
        assert_eq!(s, 200, "{ev}");
        if ev["status"] == "done" {
            let records = ev["outcome"]["records"].as_array().unwrap();
            assert_eq!(records[0]["outcome"], "deactivated", "{ev}");
            break;
        }
        assert!(Instant::now() < deadline, "event not done: {ev}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sim.snapshot().violations.is_empty(), "{:?}", sim.snapshot().violations);
}

#[tokio::test]
async fn events_acknowledged_before_a_sigkill_each_reach_okta_exactly_once() {
    // Okta's 5 minutes take 1 s on the emulator's clock (scale 300) and in the client.
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let port = free_port();
    let config = write_config(dir.path(), &sim, &csv, port, "  batch_window_ms: 300\n");
    let daemon = Daemon::start(dir.path(), &config, port, "first");
    daemon.wait_ready().await;

    let client = reqwest::Client::new();
    let people: Vec<Person> = (0..1_000).map(|i| Person::generate(i, true)).collect();
    let url = format!("{}/v1/jobs/hr/records", daemon.base);
    let acks = futures::future::join_all(people.chunks(20).map(|chunk| {
        let client = client.clone();
        let url = url.clone();
        let chunk = chunk.to_vec();
        async move {
            let mut ids = Vec::new();
            for p in chunk {
                let (status, body) = signed_post(&client, &url, &p.json()).await;
                assert_eq!(status, 202, "{body}");
                ids.push(body["event_id"].as_str().unwrap().to_string());
            }
            ids
        }
    }))
    .await;
    // Killed the moment the last 202 is in: no chance to drain.
    daemon.signal("-KILL");
    let mut daemon = daemon;
    daemon.wait_exit(Duration::from_secs(5)).await;
    let ids: Vec<String> = acks.into_iter().flatten().collect();
    assert_eq!(ids.len(), 1_000);
    let before = sim.snapshot().users.len();
    println!("imported before the kill: {before} of 1000");

    let daemon = Daemon::start(dir.path(), &config, port, "second");
    daemon.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snap = sim.snapshot();
        let active = snap.users.iter().filter(|u| u.status == "ACTIVE").count();
        if active == 1_000 && no_open_sessions(&sim) {
            break;
        }
        assert!(Instant::now() < deadline, "only {active} users after restart:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a stray resend the chance to show up.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let snap = sim.snapshot();
    for p in &people {
        let u = snap.users.iter().find(|u| u.external_id == p.id).unwrap();
        assert_eq!(u.imports, 1, "{} imported {} times", p.id, u.imports);
        assert_eq!(u.profile, p.expected_profile());
    }
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
    assert!(no_open_sessions(&sim));
    // Every event ends `done`.
    for id in ids.iter().step_by(50) {
        let (_, ev) = signed_get(&client, &format!("{}/v1/events/{id}", daemon.base)).await;
        assert_eq!(ev["status"], "done", "{ev}");
    }
}

#[tokio::test]
async fn sigterm_mid_import_exits_zero_and_leaves_no_open_session() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..20_000).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let port = free_port();
    let config = write_config(dir.path(), &sim, &csv, port, "");
    let mut daemon = Daemon::start(dir.path(), &config, port, "sigterm");
    daemon.wait_ready().await;
    let client = reqwest::Client::new();
    let (status, body) = signed_post(
        &client,
        &format!("{}/v1/jobs/hr/trigger", daemon.base),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // Wait until a session is open, then stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while no_open_sessions(&sim) || sim.snapshot().sessions.is_empty() {
        assert!(Instant::now() < deadline, "no session started:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.signal("-TERM");
    let code = daemon.wait_exit(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "{}", daemon.log());
    // Whatever was triggered finishes in Okta; nothing is left CREATED or IN_PROGRESS.
    let open: Vec<_> = sim
        .snapshot()
        .sessions
        .into_iter()
        .filter(|s| matches!(s.status.as_str(), "CREATED" | "IN_PROGRESS"))
        .collect();
    assert!(open.is_empty(), "{open:?}\n{}", daemon.log());
}

#[tokio::test]
async fn sighup_keeps_the_old_config_when_the_new_one_is_invalid() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..10).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let port = free_port();
    let config = write_config(dir.path(), &sim, &csv, port, "");
    let daemon = Daemon::start(dir.path(), &config, port, "sighup");
    daemon.wait_ready().await;
    let good = std::fs::read_to_string(&config).unwrap();

    // Invalid: refused, the old one keeps serving.
    std::fs::write(&config, good.replace("name: hr", "name: hr\n    bogus_key: 1")).unwrap();
    daemon.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("configuration reload refused") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.log().contains("bogus_key"), "the refusal names the bad key");
    let client = reqwest::Client::new();
    let (status, body) = signed_post(
        &client,
        &format!("{}/v1/jobs/hr/trigger", daemon.base),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // Valid: a second job appears and can be triggered.
    let second = good.replace(
        "jobs:\n",
        &format!(
            "jobs:\n  - name: contractors\n    identity_source_id: {SOURCE}\n    source:\n      type: csv\n      path: {}\n    mapping: {}\n",
            csv.display(),
            common::mapping_path().display()
        ),
    );
    std::fs::write(&config, second).unwrap();
    daemon.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = signed_post(
        &client,
        &format!("{}/v1/jobs/contractors/trigger", daemon.base),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}\n{}", daemon.log());
    // Both runs land: the emulator ends with the ten users.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.snapshot().users.len() < 10 {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pushed_records_update_the_state_so_the_next_pull_does_not_resend_them() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..5).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let port = free_port();
    let config = write_config(dir.path(), &sim, &csv, port, "  batch_window_ms: 100\n");
    // A delta run (the first run of a job is otherwise a full resync, which resends all).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("    mapping:", "    full_resync_every: never\n    mapping:"),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), &config, port, "push-then-pull");
    daemon.wait_ready().await;
    let client = reqwest::Client::new();
    // The HR system pushes the same five people the export holds, in one request.
    let batch: Vec<serde_json::Value> = people.iter().map(Person::json).collect();
    let (status, body) = signed_post(
        &client,
        &format!("{}/v1/jobs/hr/records", daemon.base),
        &serde_json::Value::Array(batch),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim.snapshot().users.len() < 5 || !no_open_sessions(&sim) {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sessions_after_push = sim.snapshot().sessions.len();
    // The scheduled pull (triggered here) finds them unchanged: no new session at all.
    let (status, _) = signed_post(
        &client,
        &format!("{}/v1/jobs/hr/trigger", daemon.base),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("run finished") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = sim.snapshot();
    assert_eq!(
        snap.sessions.len(),
        sessions_after_push,
        "the pull resent pushed users:\n{}",
        daemon.log()
    );
    assert!(snap.users.iter().all(|u| u.imports == 1));
}
