//! Other people's sessions are left alone; ours are cleaned up (issue 18, point 6).
//!
//! Against the emulator: a session another client (an admin, a Workflows flow) opened on the
//! identity source is never cancelled nor written to; the run waits for it, then fails naming
//! it, or goes on once its owner finishes it. A session a killed xaas left open is cancelled,
//! found by its id in the state's ledger, or by its creation time when the create's answer was
//! lost.

mod common;

use std::time::Duration;

use secrecy::SecretString;
use url::Url;
use xaas::okta::batch::{PlannedRequest, RequestKind, SessionKind, SessionPlan};
use xaas::okta::client::{ClientOptions, OktaClient};
use xaas::okta::error::OktaError;
use xaas::okta::ledger::SessionLedger;
use xaas::okta::model::SessionStatus;
use xaas::okta::session::{Importer, SessionOptions};
use xaas::sim::{Fault, FaultPlan, FaultRule, SimHandle};
use xaas::state::events::EventStore;

use common::{SOURCE, TOKEN};

fn importer(sim: &SimHandle, foreign_wait: Duration) -> Importer {
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).unwrap(),
        SecretString::from(TOKEN),
        ClientOptions { request_timeout: Duration::from_secs(2), ..ClientOptions::default() },
    )
    .unwrap();
    Importer::new(
        client,
        SOURCE,
        SessionOptions {
            // The emulator runs 300× fast: Okta's 5 minutes are 1 s.
            spacing: Duration::from_millis(1_050),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            foreign_session_wait: foreign_wait,
            ..SessionOptions::default()
        },
    )
}

fn plan(ids: &[&str]) -> SessionPlan {
    let profiles: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({"externalId": id, "profile": {"userName": format!("{id}@example.com"), "email": format!("{id}@example.com"), "firstName": "A", "lastName": "B"}})
        })
        .collect();
    let body =
        serde_json::to_vec(&serde_json::json!({"entityType": "USERS", "profiles": profiles}))
            .unwrap();
    SessionPlan {
        kind: SessionKind::Upsert,
        requests: vec![PlannedRequest {
            kind: RequestKind::Upsert,
            external_ids: ids.iter().map(|id| id.to_string()).collect(),
            body,
        }],
    }
}

fn session(sim: &SimHandle, id: &str) -> xaas::sim::SimSessionView {
    sim.snapshot().sessions.into_iter().find(|s| s.id == id).expect("session")
}

#[tokio::test]
async fn another_clients_open_session_is_never_touched_and_the_run_fails_naming_it() {
    let sim = common::start_sim(300.0).await;
    let theirs = sim.inject_session(SOURCE, SessionStatus::Created);
    let mut ours =
        importer(&sim, Duration::from_millis(400)).with_ledger(SessionLedger::in_memory());
    let err = ours.prepare().await.expect_err("a foreign open session fails the run");
    let OktaError::ForeignSession { id, status, waited, .. } = &err else { panic!("{err}") };
    assert_eq!((id.as_str(), status.as_str()), (theirs.as_str(), "CREATED"));
    assert!(*waited >= Duration::from_millis(400), "it waited first: {waited:?}");
    let message = err.to_string();
    assert!(message.contains(&theirs) && message.contains("another client"), "{message}");
    let s = session(&sim, &theirs);
    assert_eq!(s.status, SessionStatus::Created, "not cancelled");
    assert!(s.loads.is_empty(), "not written to");

    // A create that meets it (it appeared after the start of the run) leaves it alone too.
    let sim = common::start_sim(300.0).await;
    let mut late = importer(&sim, Duration::from_secs(5)).with_ledger(SessionLedger::in_memory());
    late.prepare().await.expect("nothing open yet");
    let theirs = sim.inject_session(SOURCE, SessionStatus::Created);
    let outcome = late.run(&plan(&["E1"])).await;
    assert!(outcome.error.is_some(), "{outcome:?}");
    let s = session(&sim, &theirs);
    assert_eq!((s.status, s.loads.len()), (SessionStatus::Created, 0), "{s:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_run_goes_on_once_the_other_client_finishes_its_session() {
    let sim = common::start_sim(300.0).await;
    let theirs = sim.inject_session(SOURCE, SessionStatus::Created);
    // Its owner closes it a moment later.
    let url = format!("{}/api/v1/identity-sources/{SOURCE}/sessions/{theirs}", sim.base_url());
    let owner = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = reqwest::Client::new()
            .delete(url)
            .header("Authorization", format!("SSWS {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    });
    let mut ours = importer(&sim, Duration::from_secs(10)).with_ledger(SessionLedger::in_memory());
    let stale = ours.prepare().await.expect("waited for it");
    owner.await.unwrap();
    assert!(stale.is_empty(), "we did nothing to it: {stale:?}");
    let outcome = ours.run(&plan(&["E1"])).await;
    assert_eq!((outcome.error, outcome.final_status), (None, Some(SessionStatus::Completed)));
    assert_eq!(sim.snapshot().users.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn sessions_a_killed_run_left_are_ours_by_id_or_by_the_time_of_a_lost_create() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // A process that created one session (and recorded its id), then sent another create
    // whose answer it never read, and was killed: both are in the state's ledger.
    {
        let events = EventStore::open(&state).unwrap();
        let ledger = events.session_ledger(SOURCE);
        let answered = ledger.create_sent(Duration::from_secs(2));
        let created = sim.inject_session(SOURCE, SessionStatus::InProgress);
        ledger.created(answered, &created);
        ledger.create_sent(Duration::from_secs(2));
    }
    let lost = sim.inject_session(SOURCE, SessionStatus::Created);
    let known = sim
        .snapshot()
        .sessions
        .into_iter()
        .find(|s| s.status == SessionStatus::InProgress)
        .unwrap()
        .id;
    // The next process reads the ledger back from the state.
    let events = EventStore::open(&state).unwrap();
    let mut next =
        importer(&sim, Duration::from_secs(5)).with_spacing_clock(events.spacing_clock(SOURCE));
    let mut stale = next.prepare().await.expect("prepare");
    stale.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![known.clone(), lost.clone()];
    expected.sort();
    assert_eq!(stale.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), expected);
    assert!(stale.iter().all(|s| s.action == "cancelled"), "{stale:?}");
    assert_eq!(session(&sim, &known).status, SessionStatus::Closed);
    assert_eq!(session(&sim, &lost).status, SessionStatus::Closed);
    // The lost create's session is known now, and the window is used up.
    let ledger = events.session_ledger(SOURCE).snapshot();
    assert!(ledger.unanswered.is_empty(), "{ledger:?}");
    assert!(ledger.known.iter().any(|k| k.id == lost), "{ledger:?}");
    assert!(sim.snapshot().violations.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_recognised_cleaned_up_and_replayed() {
    let sim = common::start_sim(300.0).await;
    sim.set_faults(FaultPlan {
        seed: 0,
        rules: vec![FaultRule {
            endpoint: "create-session".into(),
            requests: vec![1],
            probability: None,
            fault: Fault::Drop { applied: true },
        }],
    });
    let mut ours = importer(&sim, Duration::from_secs(5)).with_ledger(SessionLedger::in_memory());
    ours.prepare().await.expect("prepare");
    let outcome = ours.run(&plan(&["E1", "E2"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.replays, 1, "{outcome:?}");
    let sessions = sim.snapshot().sessions;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(
        sessions.iter().any(|s| s.status == SessionStatus::Closed),
        "the lost one was cancelled: {sessions:?}"
    );
    assert_eq!(sim.snapshot().users.len(), 2);
    sim.shutdown().await;
}

/// The real binary: `xaas run` meets a session an admin opened, waits
/// `foreign_session_wait_secs`, fails naming it, and leaves it as it was.
#[tokio::test]
async fn xaas_run_fails_on_a_foreign_session_with_its_id_and_sends_nothing() {
    let sim = common::start_sim(300.0).await;
    let theirs = sim.inject_session(SOURCE, SessionStatus::Created);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(
        &csv,
        &[common::Person::generate(1, true), common::Person::generate(2, true)],
    );
    let mut config = common::config::TestConfig::for_run(dir.path(), &sim.base_url());
    config.okta.push_str("  foreign_session_wait_secs: 1\n");
    config.jobs = vec![common::config::job("hr", SOURCE, &csv, "")];
    let path = config.write(&dir.path().join("xaas.yaml"));
    let report = dir.path().join("report.json");
    let out = common::xaas_async(common::run_args(&path, &report), TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r = common::read_report(&report);
    let job = &r["jobs"][0];
    assert_eq!(job["failure"], "foreign_session", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains(&theirs) && error.contains("another client"), "{error}");
    let s = session(&sim, &theirs);
    assert_eq!((s.status, s.loads.len()), (SessionStatus::Created, 0));
    assert!(sim.snapshot().users.is_empty());
    sim.shutdown().await;
}
