//! Replays of signed webhook requests against the real `xaas serve` (SQLite state) and the
//! emulator: the very same signed bytes, sent again after a restart, get 200 with the first
//! event's id and `"duplicate": true` and reach Okta once; two senders pushing the same bytes
//! in the same second both succeed; a v2 signature aimed at another path is refused.
//! (The replay to another replica is in `multi_replica.rs`.)

mod common;

use std::time::Duration;

use common::config::TestConfig;
use common::serve::Serve;
use common::{Person, SOURCE, SignedRequest};
use xaas::sim::SimHandle;

fn imports_of(sim: &SimHandle, id: &str) -> u32 {
    sim.snapshot().users.iter().find(|u| u.external_id == id).map_or(0, |u| u.imports)
}

#[tokio::test]
async fn a_signed_push_replayed_after_a_restart_is_a_duplicate_and_reaches_okta_once() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[]);
    let mut config = TestConfig::new(dir.path(), &sim.base_url(), &csv);
    config.serve_mut().extra = "  batch_window_ms: 100\n".into();
    let config = config.write(&dir.path().join("xaas.yaml"));
    let daemon = Serve::start(dir.path(), &config, "first", &[]).await;
    let http = reqwest::Client::new();

    // A v2-signed hire, imported.
    let hire = Person::generate(1, true);
    let push = SignedRequest::post("/v1/jobs/hr/records", &hire.json(), true);
    let (status, first) = push.send(&http, &daemon.base).await;
    assert_eq!(status, 202, "{first}\n{}", daemon.log());
    let id = first["event_id"].as_str().unwrap().to_string();
    assert_eq!(daemon.finished_event(&id).await["status"], "done");
    assert_eq!(imports_of(&sim, &hire.id), 1);

    // Restarted: the same bytes again are the first event, not a new one.
    daemon.signal("-TERM");
    let mut daemon = daemon;
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).await, Some(0));
    let daemon = Serve::start(dir.path(), &config, "second", &[]).await;
    let (status, again) = push.send(&http, &daemon.base).await;
    assert_eq!(status, 200, "{again}\n{}", daemon.log());
    assert_eq!(again["event_id"], id.as_str(), "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["status"], "done", "{again}");

    // Two senders, the same record, the same second: the same signed bytes. Both succeed,
    // one event is stored.
    let leaver = Person { active: false, ..Person::generate(2, true) };
    sim.seed_user(SOURCE, &leaver.id, leaver.expected_profile(), true);
    let same = SignedRequest::post("/v1/jobs/hr/records", &leaver.json(), false);
    let (sender_a, sender_b) = (reqwest::Client::new(), reqwest::Client::new());
    let (a, b) =
        tokio::join!(same.send(&sender_a, &daemon.base), same.send(&sender_b, &daemon.base));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 202], "{a:?} {b:?}");
    assert_eq!(a.1["event_id"], b.1["event_id"]);
    let id = a.1["event_id"].as_str().unwrap();
    assert_eq!(daemon.finished_event(id).await["status"], "done");

    // Tampering with the path of a v2 request: refused, nothing stored.
    let aimed = SignedRequest { path: "/v1/jobs/hr/trigger".into(), ..push.clone() };
    let (status, body) = aimed.send(&http, &daemon.base).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["error"],
        "v2 signature does not match (it covers the method and the path too)"
    );

    // Let a stray resend show itself: each person went to Okta once.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(imports_of(&sim, &hire.id), 1, "{}", daemon.log());
    let snap = sim.snapshot();
    let gone = snap.users.iter().find(|u| u.external_id == leaver.id).unwrap();
    assert_eq!(gone.status, "DEACTIVATED");
    assert_eq!(gone.imports, 1, "one deactivation, not two");
    let metrics = http.get(format!("{}/metrics", daemon.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"xaas_webhook_events_total{job="hr",outcome="duplicate"} 2"#),
        "{metrics}"
    );
}
