//! `xaas serve` end to end: the real binary, the emulator as Okta, signed pushes over HTTP.
//!
//! - a pushed termination reaches Okta within 5 s (the latency is printed);
//! - 1,000 events acknowledged, then SIGKILL: after a restart each reaches Okta exactly once;
//! - a trigger runs the job's pull;
//! - SIGTERM mid-import exits 0 and leaves no open session;
//! - SIGHUP keeps the old config when the new one is invalid, and takes a valid one.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::config::TestConfig;
use common::serve::Serve;
use common::{Person, SOURCE, signed_get, signed_post};
use xaas::sim::SimHandle;

/// The daemon config of these tests: one CSV job, the HMAC webhook; `serve_extra` lines go
/// under `serve:`.
fn write_config(dir: &Path, sim: &SimHandle, csv: &Path, serve_extra: &str) -> PathBuf {
    let mut config = TestConfig::new(dir, &sim.base_url(), csv);
    config.serve_mut().extra = serve_extra.to_string();
    config.write(&dir.join("xaas.yaml"))
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
    let config = write_config(dir.path(), &sim, &csv, "");
    let daemon = Serve::start(dir.path(), &config, "termination", &[]).await;

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
    // The push is counted, by job and outcome, and its acknowledgement timed.
    let metrics = client.get(format!("{}/metrics", daemon.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"xaas_webhook_events_total{job="hr",outcome="accepted"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("xaas_webhook_ack_duration_seconds_count 1"), "{metrics}");
}

#[tokio::test]
async fn events_acknowledged_before_a_sigkill_each_reach_okta_exactly_once() {
    // Okta's 5 minutes take 1 s on the emulator's clock (scale 300) and in the client.
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let config = write_config(dir.path(), &sim, &csv, "  batch_window_ms: 300\n");
    let daemon = Serve::start(dir.path(), &config, "first", &[]).await;

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

    let daemon = Serve::start(dir.path(), &config, "second", &[]).await;
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
    let config = write_config(dir.path(), &sim, &csv, "");
    let mut daemon = Serve::start(dir.path(), &config, "sigterm", &[]).await;
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
    let config = write_config(dir.path(), &sim, &csv, "");
    let daemon = Serve::start(dir.path(), &config, "sighup", &[]).await;
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
    let config = write_config(dir.path(), &sim, &csv, "  batch_window_ms: 100\n");
    // A delta run (the first run of a job is otherwise a full resync, which resends all).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("    mapping:", "    full_resync_every: never\n    mapping:"),
    )
    .unwrap();
    let daemon = Serve::start(dir.path(), &config, "push-then-pull", &[]).await;
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
    trigger_and_wait(&daemon).await;
    let snap = sim.snapshot();
    assert_eq!(
        snap.sessions.len(),
        sessions_after_push,
        "the pull resent pushed users:\n{}",
        daemon.log()
    );
    assert!(snap.users.iter().all(|u| u.imports == 1));
}

#[tokio::test]
async fn pushed_terminations_over_the_safeguard_are_held_and_not_sent() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &csv);
    config.serve_mut().extra = "  batch_window_ms: 100\n".into();
    config.jobs = vec![common::config::job(
        "hr",
        SOURCE,
        &csv,
        "    safeguards:\n      max_deactivations: 2\n",
    )];
    let config = config.write(&dir.path().join("xaas.yaml"));
    let daemon = Serve::start(dir.path(), &config, "push-safeguard", &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/hr/records", daemon.base);
    let people: Vec<Person> = (0..6).map(|i| Person::generate(i, true)).collect();
    let batch =
        |people: &[Person]| serde_json::Value::Array(people.iter().map(Person::json).collect());
    let (status, body) = signed_post(&client, &url, &batch(&people)).await;
    assert_eq!(status, 202, "{body}");
    let joined = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    assert_eq!(joined["status"], "done", "{joined}");

    // Three terminations in one push: over max_deactivations (2), held, nothing sent.
    let leavers: Vec<Person> =
        people[..3].iter().map(|p| Person { active: false, ..p.clone() }).collect();
    let sessions_before = sim.snapshot().sessions.len();
    let (status, body) = signed_post(&client, &url, &batch(&leavers)).await;
    assert_eq!(status, 202, "{body}");
    let held = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    assert_eq!(held["status"], "held", "{held}");
    let outcomes: Vec<&str> = held["outcome"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["held", "held", "held"], "{held}");
    assert_eq!(sim.snapshot().sessions.len(), sessions_before, "a held batch sends no session");
    assert!(sim.snapshot().users.iter().all(|u| u.status == "ACTIVE"));

    // Two are within the threshold: they go out.
    let (status, body) = signed_post(&client, &url, &batch(&leavers[..2])).await;
    assert_eq!(status, 202, "{body}");
    let sent = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    assert_eq!(sent["status"], "done", "{sent}");
    let deactivated = sim.snapshot().users.iter().filter(|u| u.status == "DEACTIVATED").count();
    assert_eq!(deactivated, 2);
    assert!(sim.snapshot().violations.is_empty(), "{:?}", sim.snapshot().violations);
}

/// Issue 18's readiness: a job whose CSV has disappeared fails, and the daemon stays ready,
/// keeps taking signed pushes and imports them; the failure shows in /metrics and /v1/jobs.
#[tokio::test]
async fn a_failing_job_leaves_the_daemon_ready_and_pushes_flowing() {
    const UI_TOKEN: &str = "e2e-ui-token-0123456789abcdef";
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.csv");
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &missing);
    config.serve_mut().extra = "  batch_window_ms: 100\n".into();
    config.serve_mut().after =
        "  ui:\n    enabled: true\n    auth:\n      type: token\n      token_env: XAAS_TEST_UI_TOKEN\n"
            .into();
    let config = config.write(&dir.path().join("xaas.yaml"));
    let env = [("XAAS_TEST_UI_TOKEN", UI_TOKEN)];
    let daemon = Serve::start(dir.path(), &config, "failing-job", &env).await;
    let client = reqwest::Client::new();
    let trigger = format!("{}/v1/jobs/hr/trigger", daemon.base);
    let (status, body) = signed_post(&client, &trigger, &serde_json::json!({})).await;
    assert_eq!(status, 202, "{body}");
    let jobs_url = format!("{}/v1/jobs", daemon.base);
    let deadline = Instant::now() + Duration::from_secs(20);
    let jobs = loop {
        let jobs: serde_json::Value =
            client.get(&jobs_url).bearer_auth(UI_TOKEN).send().await.unwrap().json().await.unwrap();
        if jobs["jobs"][0]["last_run"]["outcome"] == "failed" {
            break jobs;
        }
        assert!(Instant::now() < deadline, "no failed run: {jobs}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(jobs["jobs"][0]["name"], "hr");

    let readyz = client.get(format!("{}/readyz", daemon.base)).send().await.unwrap();
    assert_eq!(readyz.status().as_u16(), 200);
    let readyz: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(readyz["warnings"], serde_json::json!(["job hr: last run failed (1 in a row)"]));

    // Pushes are still taken and imported.
    let hire = Person::generate(42, true);
    let records = format!("{}/v1/jobs/hr/records", daemon.base);
    let (status, body) = signed_post(&client, &records, &hire.json()).await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sim.snapshot().users.iter().any(|u| u.external_id == hire.id && u.status == "ACTIVE") {
        assert!(Instant::now() < deadline, "the push was not imported:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = client.get(format!("{}/metrics", daemon.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    for line in [
        r#"xaas_job_consecutive_failures{job="hr"} 1"#,
        r#"xaas_job_last_run{job="hr",outcome="failed"} 1"#,
        r#"xaas_job_last_run{job="hr",outcome="success"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(sim.snapshot().violations.is_empty(), "{:?}", sim.snapshot().violations);
}

/// Push `leaver`'s termination and wait until Okta has the user deactivated; the latency.
async fn terminate(daemon: &Serve, sim: &SimHandle, leaver: &Person) -> Duration {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let url = format!("{}/v1/jobs/hr/records", daemon.base);
    let (status, body) = signed_post(&client, &url, &leaver.json()).await;
    assert_eq!(status, 202, "{body}");
    loop {
        let snap = sim.snapshot();
        if snap.users.iter().any(|u| u.external_id == leaver.id && u.status == "DEACTIVATED") {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not deactivated:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 17: Okta's 5-minute rule is in force (a session was created just before, Okta's
/// 5 minutes take 5 s here), and pushed terminations go out at once through the direct
/// endpoint, without a session; with `realtime: off` the same termination waits for a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_terminations_do_not_wait_for_the_session_spacing() {
    let sim = common::start_sim(60.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &csv);
    config.okta = "  session_spacing_secs: 5.1\n  poll_initial_ms: 20\n  poll_max_secs: 1\n".into();
    config.serve_mut().extra = "  batch_window_ms: 20\n".into();
    let path = config.write(&dir.path().join("xaas.yaml"));
    let daemon = Serve::start(dir.path(), &path, "realtime", &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/hr/records", daemon.base);
    let people: Vec<Person> = (0..21).map(|i| Person::generate(i, true)).collect();
    let all = serde_json::Value::Array(people.iter().map(Person::json).collect());
    let (status, body) = signed_post(&client, &url, &all).await;
    assert_eq!(status, 202, "{body}");
    let joined = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    assert_eq!(joined["status"], "done", "{joined}");
    // The joiners' session was just created: a new one must wait out the spacing.
    let sessions = sim.snapshot().sessions.len();
    let mut latencies = Vec::new();
    for p in &people[..20] {
        latencies.push(terminate(&daemon, &sim, &Person { active: false, ..p.clone() }).await);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "direct termination push → okta: p50 {} ms, p99 {} ms (20 pushes, spacing in force)",
        ms(latencies[9]),
        ms(latencies[19])
    );
    assert_eq!(sim.snapshot().sessions.len(), sessions, "terminations opened no session");
    // Counted once the daemon has confirmed the last one (just after Okta applied it).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = client.get(format!("{}/metrics", daemon.base)).send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        if metrics.contains(r#"xaas_direct_users_total{job="hr",outcome="deactivated"} 20"#) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(daemon);

    // The same with `realtime: off`: a session, after the spacing.
    config.jobs = vec![common::config::job("hr", SOURCE, &csv, "    realtime: off\n")];
    let path = config.write(&path);
    let daemon = Serve::start(dir.path(), &path, "realtime-off", &[]).await;
    let (status, body) =
        signed_post(&client, &format!("{}/v1/jobs/hr/records", daemon.base), &people[20].json())
            .await;
    assert_eq!(status, 202, "{body}");
    daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    let sessions = sim.snapshot().sessions.len();
    let waited = terminate(&daemon, &sim, &Person { active: false, ..people[20].clone() }).await;
    println!("session termination push → okta (realtime: off): {} ms", ms(waited));
    assert_eq!(sim.snapshot().sessions.len(), sessions + 1, "realtime: off sends a session");
    drop(daemon);

    // An org without the direct endpoints: the termination falls back to a session, and the
    // daemon says so in its log and its metrics.
    sim.set_direct_endpoints(false);
    config.jobs = vec![common::config::job("hr", SOURCE, &csv, "")];
    let path = config.write(&path);
    let daemon = Serve::start(dir.path(), &path, "realtime-fallback", &[]).await;
    let sessions = sim.snapshot().sessions.len();
    let leaver = Person { active: false, ..people[20].clone() };
    let back = Person { active: true, ..leaver.clone() };
    let (status, body) =
        signed_post(&client, &format!("{}/v1/jobs/hr/records", daemon.base), &back.json()).await;
    assert_eq!(status, 202, "{body}");
    daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    let fell_back = terminate(&daemon, &sim, &leaver).await;
    println!("termination after the fallback to sessions: {} ms", ms(fell_back));
    assert_eq!(sim.snapshot().sessions.len(), sessions + 2, "the rejoin and the termination");
    assert!(
        daemon.log().contains("okta refused its direct identity-source endpoints"),
        "{}",
        daemon.log()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = client.get(format!("{}/metrics", daemon.base)).send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        if metrics.contains(r#"xaas_direct_users_total{job="hr",outcome="fallback"} 1"#) {
            let gauge =
                format!(r#"xaas_direct_endpoints_unavailable{{identity_source="{SOURCE}"}} 1"#);
            assert!(metrics.contains(&gauge), "{metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `/readyz` stays ready and names the source, when it is tried again, and why.
    let readyz = client.get(format!("{}/readyz", daemon.base)).send().await.unwrap();
    assert_eq!(readyz.status().as_u16(), 200, "a missing feature is not unreadiness");
    let readyz: serde_json::Value = readyz.json().await.unwrap();
    let direct = &readyz["direct_endpoints"][0];
    assert_eq!(direct["identity_source"], SOURCE, "{readyz}");
    assert_eq!(direct["status"], "unavailable", "{readyz}");
    assert!(direct["error"].as_str().unwrap().contains("E0000015"), "{readyz}");
    let refused =
        chrono::DateTime::parse_from_rfc3339(direct["refused_at"].as_str().unwrap()).unwrap();
    let retry = chrono::DateTime::parse_from_rfc3339(direct["retry_at"].as_str().unwrap()).unwrap();
    assert_eq!((retry - refused).num_seconds(), 600, "{readyz}");
    assert!(
        readyz["warnings"].to_string().contains("IDENTITY_SOURCE_MANAGE_INDIVIDUAL_ENTITIES"),
        "{readyz}"
    );
    // Resting: a second termination goes straight into a session, without asking Okta's
    // direct endpoint or logging the refusal again.
    let metrics = |daemon: &Serve| {
        let url = format!("{}/metrics", daemon.base);
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let deletes = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("xaas_okta_requests_total{") && l.contains("users.delete"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let refusals = deletes(&metrics(&daemon).await);
    assert!(refusals >= 1.0, "the first termination asked the direct endpoint");
    let rejoin = Person { active: true, ..leaver.clone() };
    let (status, body) =
        signed_post(&client, &format!("{}/v1/jobs/hr/records", daemon.base), &rejoin.json()).await;
    assert_eq!(status, 202, "{body}");
    daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    terminate(&daemon, &sim, &leaver).await;
    let log = daemon.log();
    assert_eq!(
        log.matches("okta refused its direct identity-source endpoints").count(),
        1,
        "{log}"
    );
    assert_eq!(deletes(&metrics(&daemon).await), refusals, "resting: no direct call");
    assert!(sim.snapshot().violations.is_empty(), "{:?}", sim.snapshot().violations);
}

/// `realtime: changes`: pushed hires and profile changes go out through the direct endpoints
/// too (no session), and the state is confirmed, so the next pull resends nothing.
#[tokio::test]
async fn realtime_changes_sends_pushed_upserts_without_a_session() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..3).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &csv);
    config.serve_mut().extra = "  batch_window_ms: 20\n".into();
    config.jobs = vec![common::config::job(
        "hr",
        SOURCE,
        &csv,
        "    realtime: changes\n    full_resync_every: never\n",
    )];
    let path = config.write(&dir.path().join("xaas.yaml"));
    let daemon = Serve::start(dir.path(), &path, "realtime-changes", &[]).await;
    let client = reqwest::Client::new();
    let all = serde_json::Value::Array(people.iter().map(Person::json).collect());
    let (status, body) =
        signed_post(&client, &format!("{}/v1/jobs/hr/records", daemon.base), &all).await;
    assert_eq!(status, 202, "{body}");
    let ev = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    let outcomes: Vec<&str> = ev["outcome"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["upserted"; 3], "{ev}");
    let snap = sim.snapshot();
    assert!(snap.sessions.is_empty(), "no session: {:?}", snap.sessions);
    for p in &people {
        let u = snap.users.iter().find(|u| u.external_id == p.id).expect("created");
        assert_eq!(u.profile, p.expected_profile());
    }
    // The scheduled pull finds them confirmed: nothing to send, still no session.
    trigger_and_wait(&daemon).await;
    let snap = sim.snapshot();
    assert!(snap.sessions.is_empty(), "the pull resent pushed users: {:?}", snap.sessions);
    assert!(snap.users.iter().all(|u| u.imports == 1));
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
}

/// Trigger the job's pull and wait until the daemon logs that a run finished.
async fn trigger_and_wait(daemon: &Serve) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/hr/trigger", daemon.base);
    let (status, _) = signed_post(&client, &url, &serde_json::json!({})).await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("run finished") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batch too big for one session is cut, and its later events come back in the next batch:
/// a pushed termination among them is sent directly with its own event, so that event says
/// `deactivated`, not `unchanged` (sent before its event's turn, as it once was).
#[tokio::test]
async fn a_termination_in_the_part_of_a_batch_cut_for_later_reports_what_was_sent() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &csv);
    let serve = config.serve_mut();
    serve.extra = "  batch_window_ms: 5000\n  max_batch_records: 20000\n".into();
    serve.webhook.push_str("    max_body_bytes: 20000000\n    max_records_per_request: 10000\n");
    config.jobs = vec![common::config::job(
        "hr",
        SOURCE,
        &csv,
        "    safeguards:\n      max_creations_percent: 100\n      min_source_percent: 0\n",
    )];
    let path = config.write(&dir.path().join("xaas.yaml"));
    let daemon = Serve::start(dir.path(), &path, "split-batch", &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/hr/records", daemon.base);
    // Someone Okta has.
    let known = Person::generate(50_000, true);
    let (status, body) = signed_post(&client, &url, &known.json()).await;
    assert_eq!(status, 202, "{body}");
    daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    // Two events of 6,000 hires that also carry that person (together more than one
    // session's 10,000), then that person leaves: the termination starts a batch at once, of
    // itself and the earlier events that touch the same person, in order.
    let mut ids = Vec::new();
    for part in 0..2 {
        let mut people: Vec<serde_json::Value> =
            (part * 6_000..(part + 1) * 6_000).map(|i| Person::generate(i, true).json()).collect();
        people.push(known.json());
        let (status, body) = signed_post(&client, &url, &serde_json::Value::Array(people)).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["event_id"].as_str().unwrap().to_string());
    }
    let leaver = Person { active: false, ..known.clone() };
    let (status, body) = signed_post(&client, &url, &leaver.json()).await;
    assert_eq!(status, 202, "{body}");
    let ev = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    let record = &ev["outcome"]["records"][0];
    assert_eq!(record["outcome"], "deactivated", "{ev}");
    assert_eq!(record["reason"], "sent directly, no session", "{ev}");
    for id in &ids {
        let ev = daemon.finished_event(id).await;
        let records = ev["outcome"]["records"].as_array().unwrap();
        assert_eq!(records.len(), 6_001);
        let upserted = records.iter().filter(|r| r["outcome"] == "upserted").count();
        assert_eq!(upserted, 6_000, "{}", records[6_000]);
        assert_eq!(records[6_000]["outcome"], "superseded", "the leaver's later push won");
    }
    let snap = sim.snapshot();
    assert_eq!(snap.users.len(), 12_001);
    let gone = snap.users.iter().find(|u| u.external_id == known.id).unwrap();
    assert_eq!(gone.status, "DEACTIVATED");
    assert_eq!(snap.sessions.len(), 3, "the first hire, then the batch cut into two sessions");
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
}
