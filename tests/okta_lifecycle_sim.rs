//! Session lifecycle scenarios against the Okta emulator (`xaas::sim`).
//!
//! The wiremock scenarios in `okta_lifecycle.rs` pin exact call sequences; these check the
//! same behaviour against something that enforces Okta's rules (FACTS §4, §6) and records
//! every rule a client breaks as a violation: each scenario ends with zero violations.
//!
//! The emulator's clock runs `CLOCK_SCALE` times faster than real time, so its 5-minute rule
//! lasts 300 ms here; the importer's spacing is set a little above that.

use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use url::Url;
use xaas::okta::batch::{PlannedRequest, RequestKind, SessionKind, SessionPlan};
use xaas::okta::client::{ClientOptions, OktaClient};
use xaas::okta::model::SessionStatus;
use xaas::okta::session::{Importer, PlanHints, SessionOptions};
use xaas::sim::{SimConfig, SimHandle, SimLimits};

const SOURCE: &str = "0oasim0000000000000";
const TOKEN: &str = "sim-token";
/// Simulated seconds per real second: Okta's 300 s spacing becomes 300 ms.
const CLOCK_SCALE: f64 = 1000.0;

async fn sim(limits: SimLimits) -> SimHandle {
    let config = SimConfig {
        clock_scale: CLOCK_SCALE,
        processing_delay: Duration::from_millis(50),
        limits,
        ..SimConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    xaas::sim::spawn(config, listener).await.expect("spawn emulator")
}

fn importer(sim: &SimHandle) -> Importer {
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from(TOKEN),
        ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() },
    )
    .expect("client");
    Importer::new(
        client,
        SOURCE,
        SessionOptions {
            // Okta's 300 s at CLOCK_SCALE, plus a margin for the emulator's own clock.
            spacing: Duration::from_millis(350),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            ..SessionOptions::default()
        },
    )
}

fn request(kind: RequestKind, ids: &[&str]) -> PlannedRequest {
    let profiles: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| match kind {
            RequestKind::Upsert => serde_json::json!({
                "externalId": id,
                "profile": {"email": format!("{id}@example.com"), "userName": format!("{id}@example.com"),
                            "firstName": "Test", "lastName": id}
            }),
            _ => serde_json::json!({"externalId": id}),
        })
        .collect();
    PlannedRequest {
        kind,
        external_ids: ids.iter().map(|s| s.to_string()).collect(),
        body: serde_json::to_vec(&serde_json::json!({"entityType": "USERS", "profiles": profiles}))
            .expect("json"),
    }
}

fn upsert_plan(ids: &[&str]) -> SessionPlan {
    SessionPlan { kind: SessionKind::Upsert, requests: vec![request(RequestKind::Upsert, ids)] }
}

fn assert_no_violations(sim: &SimHandle) {
    let violations = sim.snapshot().violations;
    assert!(violations.is_empty(), "the emulator recorded violations: {violations:#?}");
}

fn session_status(sim: &SimHandle, id: &str) -> SessionStatus {
    sim.snapshot().sessions.into_iter().find(|s| s.id == id).expect("session in snapshot").status
}

#[tokio::test]
async fn a_session_imports_users_and_completes() {
    let sim = sim(SimLimits::default()).await;
    let outcome = importer(&sim).run(&upsert_plan(&["E1", "E2"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert_eq!((outcome.requests, outcome.profiles), (1, 2));
    let users = sim.snapshot().users;
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| u.status == "ACTIVE"));
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn prepare_cancels_a_stale_created_session_and_the_run_then_succeeds() {
    let sim = sim(SimLimits::default()).await;
    let stale_id = sim.inject_session(SOURCE, SessionStatus::Created);
    let mut importer = importer(&sim);
    let stale = importer.prepare().await.expect("prepare");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].id, stale_id);
    assert_eq!(stale[0].action, "cancelled");
    assert_eq!(session_status(&sim, &stale_id), SessionStatus::Closed);

    let outcome = importer.run(&upsert_plan(&["E1"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn prepare_cancels_a_stale_in_progress_session() {
    let sim = sim(SimLimits::default()).await;
    let stale_id = sim.inject_session(SOURCE, SessionStatus::InProgress);
    let stale = importer(&sim).prepare().await.expect("prepare");
    assert_eq!(stale[0].found, SessionStatus::InProgress);
    assert_eq!(stale[0].action, "cancelled");
    assert_eq!(session_status(&sim, &stale_id), SessionStatus::Closed);
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn prepare_waits_for_a_triggered_session() {
    let sim = sim(SimLimits::default()).await;
    let stale_id = sim.inject_session(SOURCE, SessionStatus::Triggered);
    let stale = importer(&sim).prepare().await.expect("prepare");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].action, "waited");
    assert_eq!(stale[0].final_status, SessionStatus::Completed);
    assert_eq!(session_status(&sim, &stale_id), SessionStatus::Completed);
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn two_runs_keep_the_five_minute_spacing() {
    let sim = sim(SimLimits::default()).await;
    let mut importer = importer(&sim);
    let first = importer.run(&upsert_plan(&["E1"])).await;
    let second = importer.run(&upsert_plan(&["E2"])).await;
    assert_eq!(first.error, None, "{first:?}");
    assert_eq!(second.error, None, "{second:?}");
    assert!(second.spacing_wait_ms > 0);

    // In the emulator's (simulated) time the second session came ≥ 5 minutes after the first.
    let sessions = sim.snapshot().sessions;
    assert_eq!(sessions.len(), 2);
    let created = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(&sessions[i].created).expect("okta timestamp")
    };
    let mut times = [created(0), created(1)];
    times.sort();
    assert!(times[1] - times[0] >= chrono::TimeDelta::seconds(300), "{times:?}");
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_session_from_an_earlier_process_is_waited_out_on_okta_refusal() {
    let sim = sim(SimLimits::default()).await;
    // A session this importer never saw, triggered just now: creating one is refused.
    sim.inject_session(SOURCE, SessionStatus::Triggered);
    tokio::time::sleep(Duration::from_millis(100)).await; // let it complete
    let outcome = importer(&sim).run(&upsert_plan(&["E1"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert!(outcome.spacing_wait_ms >= 350, "{outcome:?}");
    // The refused create is recorded by the emulator; that refusal is exactly what the
    // importer reacts to, so it is the only violation allowed.
    let violations = sim.snapshot().violations;
    assert!(violations.iter().all(|v| v.rule == "session_spacing"), "{violations:#?}");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_stray_open_session_that_blocks_the_create_is_cancelled_then_the_create_retried() {
    // A create this importer gave up on reached Okta after `prepare`: the session it opened
    // blocks ours. Okta's refusal reads like the 5-minute rule; waiting alone would never end
    // it (three refusals, then failure), so the importer cancels the stray first.
    let sim = sim(SimLimits::default()).await;
    let mut importer = importer(&sim);
    importer.prepare().await.expect("prepare");
    let stray = sim.inject_session(SOURCE, SessionStatus::Created);
    let outcome = importer.run(&upsert_plan(&["E1"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert_eq!(session_status(&sim, &stray), SessionStatus::Closed);
    let violations = sim.snapshot().violations;
    assert_eq!(violations.len(), 1, "only the first, refused create: {violations:#?}");
    assert!(violations[0].message.contains("still CREATED"), "{violations:#?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_delete_only_session_of_unknown_users_is_cancelled_not_triggered() {
    let sim = sim(SimLimits::default()).await;
    let plan = SessionPlan {
        kind: SessionKind::Delete,
        requests: vec![request(RequestKind::Delete, &["NOBODY1", "NOBODY2"])],
    };
    let outcome = importer(&sim).run(&plan).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert!(outcome.cancelled_untriggerable);
    assert_eq!(outcome.final_status, Some(SessionStatus::Closed));
    let id = outcome.id.expect("created");
    assert_eq!(session_status(&sim, &id), SessionStatus::Closed);
    assert_no_violations(&sim);
    sim.shutdown().await;
}

/// The state says Okta knows a deactivated user, but Okta does not (the identity source was
/// reset, or the state came from another org): the trigger is refused, and the session is
/// cancelled as "nothing to import", not failed, so the next run does not fail the same way.
#[tokio::test]
async fn a_wrong_hint_that_okta_knows_the_deactivated_users_still_ends_cancelled_not_failed() {
    let sim = sim(SimLimits::default()).await;
    let plan = SessionPlan {
        kind: SessionKind::Delete,
        requests: vec![request(RequestKind::Delete, &["NOBODY1"])],
    };
    let hints = PlanHints { deletes_known_users: true };
    let outcome = importer(&sim).run_with(&plan, hints).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert!(outcome.cancelled_untriggerable);
    assert_eq!(outcome.final_status, Some(SessionStatus::Closed));
    assert!(outcome.note.as_deref().unwrap_or("").contains("nothing to import"));
    let id = outcome.id.expect("created");
    assert_eq!(session_status(&sim, &id), SessionStatus::Closed);
    // The one cost of the wrong hint: a refused start-import.
    let violations = sim.snapshot().violations;
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(violations[0].message.contains("CREATED"), "{violations:#?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn deactivating_known_users_is_triggered_and_completes() {
    let sim = sim(SimLimits::default()).await;
    let profile = [("email".to_string(), "k@example.com".to_string())].into_iter().collect();
    sim.seed_user(SOURCE, "KNOWN1", profile, true);
    let plan = SessionPlan {
        kind: SessionKind::Delete,
        requests: vec![request(RequestKind::Delete, &["KNOWN1"])],
    };
    let outcome = importer(&sim).run(&plan).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    let users = sim.snapshot().users;
    assert_eq!(users[0].status, "DEACTIVATED");
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_upload_failure_cancels_the_session() {
    // The emulator enforces a lowered per-request limit, so the second request is refused.
    let sim = sim(SimLimits { max_profiles_per_request: 2, ..SimLimits::default() }).await;
    let plan = SessionPlan {
        kind: SessionKind::Upsert,
        requests: vec![
            request(RequestKind::Upsert, &["E1", "E2"]),
            request(RequestKind::Upsert, &["E3", "E4", "E5"]),
        ],
    };
    let outcome = importer(&sim).run(&plan).await;
    let error = outcome.error.clone().expect("error");
    assert!(error.contains("bulk load 2 of 2"), "{error}");
    // Okta's own fields reach the report, structured, for Okta support.
    let detail = outcome.okta_error.clone().expect("okta error detail");
    assert_eq!(detail.status, Some(400));
    assert_eq!(detail.error_code, "E0000001");
    assert!(!detail.error_summary.is_empty());
    assert!(!detail.error_causes.is_empty(), "{detail:?}");
    assert!(detail.error_id.as_deref().is_some_and(|id| !id.is_empty()), "{detail:?}");
    let json = serde_json::to_value(&outcome).expect("json");
    assert_eq!(json["okta_error"]["error_code"], "E0000001");
    assert_eq!(outcome.requests, 1);
    assert_eq!(outcome.final_status, Some(SessionStatus::Closed));
    let id = outcome.id.expect("created");
    assert_eq!(session_status(&sim, &id), SessionStatus::Closed);
    assert!(sim.snapshot().users.is_empty(), "nothing imported from a cancelled session");
    sim.shutdown().await;
}

#[tokio::test]
async fn okta_reporting_error_is_an_error() {
    let sim = sim(SimLimits::default()).await;
    sim.fail_next_session(SOURCE);
    let outcome = importer(&sim).run(&upsert_plan(&["E1"])).await;
    assert_eq!(outcome.final_status, Some(SessionStatus::Error));
    let error = outcome.error.expect("error");
    assert!(error.starts_with("okta reported ERROR for session"), "{error}");
    assert_no_violations(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_at_prepare() {
    let sim = sim(SimLimits::default()).await;
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from("not-the-token"),
        ClientOptions::default(),
    )
    .expect("client");
    let err =
        Importer::new(client, SOURCE, SessionOptions::default()).prepare().await.expect_err("401");
    assert!(matches!(err, xaas::okta::OktaError::Unauthorized { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-token"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_new_importer_can_carry_over_the_spacing_clock() {
    let sim = sim(SimLimits::default()).await;
    let mut first = importer(&sim);
    let outcome = first.run(&upsert_plan(&["E1"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    // The next run builds a fresh importer but hands over when the last session happened,
    // so it waits by itself instead of being refused by Okta first.
    let mut second = importer(&sim).with_last_session_activity(first.last_session_activity());
    let outcome = second.run(&upsert_plan(&["E2"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert!(outcome.spacing_wait_ms > 0);
    assert_no_violations(&sim);
    sim.shutdown().await;
}

/// A process killed between sending a trigger and hearing back must leave its successor a
/// clock that covers the trigger: Okta counts its 5 minutes from there, and a create inside
/// them is refused (a violation here). The killed importer wrote "the request's timeout from
/// now" before sending, and the successor, reading it back, waits that out.
#[tokio::test]
async fn a_process_killed_while_triggering_leaves_a_clock_its_successor_waits_out() {
    use std::sync::{Arc, Mutex};
    use xaas::okta::session::SpacingClock;
    use xaas::sim::{Fault, FaultPlan, FaultRule};

    let rule = |endpoint: &str, ms| FaultRule {
        endpoint: endpoint.into(),
        requests: vec![1],
        probability: None,
        fault: Fault::Delay { ms, applied: true },
    };
    let config = SimConfig {
        clock_scale: CLOCK_SCALE,
        processing_delay: Duration::from_millis(50),
        // The load is answered late (so the trigger comes well after the create), and the
        // trigger is applied at once but answered only after the "kill".
        faults: FaultPlan {
            seed: 0,
            rules: vec![rule("bulk-upsert", 200), rule("start-import", 2_000)],
        },
        ..SimConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim = xaas::sim::spawn(config, listener).await.expect("spawn emulator");
    let importer = |sim: &SimHandle, clock: SpacingClock| {
        let client = OktaClient::new(
            Url::parse(&sim.base_url()).expect("url"),
            SecretString::from(TOKEN),
            ClientOptions { request_timeout: Duration::from_secs(1), ..ClientOptions::default() },
        )
        .expect("client");
        let options = SessionOptions {
            spacing: Duration::from_millis(350),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            ..SessionOptions::default()
        };
        Importer::new(client, SOURCE, options).with_spacing_clock(clock)
    };

    // What the first process persisted, last write wins (the state file).
    let saved: Arc<Mutex<Option<chrono::DateTime<chrono::Utc>>>> = Arc::default();
    let write = {
        let saved = saved.clone();
        move |at| *saved.lock().unwrap() = Some(at)
    };
    let mut first = importer(&sim, SpacingClock::persisted(None, write));
    let plan = upsert_plan(&["E1"]);
    let triggered = async {
        while !sim.snapshot().sessions.iter().any(|s| s.triggered.is_some()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        outcome = first.run(&plan) => panic!("the run ended before the trigger was answered: {outcome:?}"),
        // The "kill": the run is dropped the moment Okta has applied the trigger.
        () = triggered => {}
    }
    drop(first);

    let last = *saved.lock().unwrap();
    let mut successor = importer(&sim, SpacingClock::persisted(last, |_| {}));
    let outcome = successor.run(&upsert_plan(&["E2"])).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert!(outcome.spacing_wait_ms >= 350, "{outcome:?}");
    assert_no_violations(&sim);
    sim.shutdown().await;
}

/// Every bulk endpoint of FACTS §2a, in one session: users, groups and memberships are
/// uploaded, the session completes, and the emulator holds the result with zero violations.
#[tokio::test]
async fn every_bulk_endpoint_is_reachable_and_applied() {
    let sim = sim(SimLimits::default()).await;
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from(TOKEN),
        ClientOptions::default(),
    )
    .expect("client");
    let body = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    let loads = [
        (
            RequestKind::Upsert,
            body(serde_json::json!({"entityType": "USERS", "profiles": [
            {"externalId": "u1", "profile": {"userName": "u1@example.com", "email": "u1@example.com"}},
            {"externalId": "u2", "profile": {"userName": "u2@example.com", "email": "u2@example.com"}}]})),
        ),
        (
            RequestKind::GroupsUpsert,
            body(serde_json::json!({"profiles": [
            {"externalId": "g1", "profile": {"displayName": "Engineering"}},
            {"externalId": "g2", "profile": {"displayName": "Old team"}}]})),
        ),
        (
            RequestKind::MembershipsUpsert,
            body(serde_json::json!({"memberships": [
            {"groupExternalId": "g1", "memberExternalIds": ["u1", "u2"]}]})),
        ),
    ];
    let session = client.create_session(SOURCE).await.expect("create");
    for (kind, b) in &loads {
        client
            .bulk_load(SOURCE, &session.id, *kind, b)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    client.start_import(SOURCE, &session.id).await.expect("trigger");
    wait_completed(&client, &session.id).await;

    sim.advance_clock(Duration::from_secs(301));
    let loads = [
        (
            RequestKind::MembershipsDelete,
            body(serde_json::json!({"memberships": [
            {"groupExternalId": "g1", "memberExternalIds": ["u2"]}]})),
        ),
        (RequestKind::GroupsDelete, body(serde_json::json!({"externalIds": ["g2"]}))),
        (
            RequestKind::Delete,
            body(serde_json::json!({"entityType": "USERS", "profiles": [{"externalId": "u2"}]})),
        ),
    ];
    let session = client.create_session(SOURCE).await.expect("create second");
    for (kind, b) in &loads {
        client
            .bulk_load(SOURCE, &session.id, *kind, b)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    client.start_import(SOURCE, &session.id).await.expect("trigger second");
    wait_completed(&client, &session.id).await;

    assert_no_violations(&sim);
    let snap = sim.snapshot();
    let u2 = snap.users.iter().find(|u| u.external_id == "u2").expect("u2");
    assert_eq!(u2.status, "DEACTIVATED");
    let g1 = snap.groups.iter().find(|g| g.external_id == "g1").expect("g1");
    assert_eq!(g1.members, vec!["u1".to_string()]);
    assert!(
        snap.groups.iter().all(|g| g.external_id != "g2"),
        "g2 should be gone: {:?}",
        snap.groups
    );
}

async fn wait_completed(client: &OktaClient, id: &str) {
    for _ in 0..100 {
        let s = client.get_session(SOURCE, id).await.expect("get");
        if s.status == SessionStatus::Completed {
            return;
        }
        assert!(!s.status.is_final(), "session ended {}", s.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session {id} did not complete");
}

// ----- the direct (session-less) user endpoints (issue 17) --------------------------------------

async fn direct_sim(faults: xaas::sim::FaultPlan) -> SimHandle {
    let config = SimConfig { clock_scale: CLOCK_SCALE, faults, ..SimConfig::default() };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    xaas::sim::spawn(config, listener).await.expect("spawn emulator")
}

fn direct_client(sim: &SimHandle) -> OktaClient {
    OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from(TOKEN),
        ClientOptions {
            request_timeout: Duration::from_millis(400),
            retry_backoff: Duration::from_millis(10),
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

fn profile(id: &str, city: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("email", format!("{id}@example.com")),
        ("userName", format!("{id}@example.com")),
        ("city", city.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn user<'a>(snap: &'a xaas::sim::SimSnapshot, id: &str) -> Option<&'a xaas::sim::SimUser> {
    snap.users.iter().find(|u| u.external_id == id)
}

#[tokio::test]
async fn direct_user_calls_create_replace_and_deactivate_without_a_session() {
    use xaas::okta::direct::{Deleted, is_unavailable};
    let sim = direct_sim(Default::default()).await;
    let client = direct_client(&sim);
    client.put_user(SOURCE, "e1", &profile("e1", "Bergen"), false).await.expect("create");
    client.put_user(SOURCE, "e1", &profile("e1", "Oslo"), true).await.expect("replace");
    // The caller thought Okta had e2: the PUT's 404 becomes a create.
    client.put_user(SOURCE, "e2", &profile("e2", "Oslo"), true).await.expect("create on 404");
    let got = client.get_user(SOURCE, "e1").await.unwrap().expect("e1 exists");
    assert_eq!(got.profile["city"], "Oslo");
    assert_eq!(client.get_user(SOURCE, "nobody").await.unwrap(), None);
    assert_eq!(client.delete_user(SOURCE, "e1").await.unwrap(), Deleted::Deactivated);
    assert_eq!(client.delete_user(SOURCE, "e1").await.unwrap(), Deleted::Deactivated);
    assert_eq!(client.delete_user(SOURCE, "nobody").await.unwrap(), Deleted::Unknown);
    // A replace reactivates, as a bulk upsert does.
    client.put_user(SOURCE, "e1", &profile("e1", "Oslo"), true).await.unwrap();
    let snap = sim.snapshot();
    let e1 = user(&snap, "e1").unwrap();
    assert_eq!((e1.status.as_str(), e1.deactivations), ("ACTIVE", 1));
    assert_eq!(user(&snap, "e2").unwrap().profile, profile("e2", "Oslo"));
    // An update changes what it is given, keeps the rest, and reactivates too.
    assert_eq!(client.delete_user(SOURCE, "e2").await.unwrap(), Deleted::Deactivated);
    let mut change = profile("e2", "Tromsø");
    change.remove("city");
    change.insert("title".into(), "Engineer".into());
    let got = client.patch_user(SOURCE, "e2", &change).await.expect("update");
    assert_eq!((got.profile["city"].as_str(), got.profile["title"].as_str()), ("Oslo", "Engineer"));
    let err = client.patch_user(SOURCE, "nobody", &change).await.expect_err("unknown");
    assert_eq!(err.status(), Some(404), "{err}");
    let snap = sim.snapshot();
    let e2 = user(&snap, "e2").unwrap();
    assert_eq!((e2.status.as_str(), e2.deactivations), ("ACTIVE", 1));
    assert_eq!(e2.profile["title"], "Engineer");
    assert!(snap.sessions.is_empty(), "no session: {:?}", snap.sessions);
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);

    // Okta requires email and userName on a direct write.
    let mut no_email = profile("e3", "Oslo");
    no_email.remove("email");
    let err = client.put_user(SOURCE, "e3", &no_email, false).await.expect_err("refused");
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("email"), "{err}");
    assert!(!is_unavailable(&err));
    // An org without the feature: recognised, so callers fall back to sessions.
    sim.set_direct_endpoints(false);
    let err = client.delete_user(SOURCE, "e2").await.expect_err("feature off");
    assert!(is_unavailable(&err), "{err}");
    assert_eq!(user(&sim.snapshot(), "e2").unwrap().status, "ACTIVE");
}

/// 429s, 5xx applied or not, an answer past the timeout and a dropped connection, on the
/// first create and the first deactivation: each ends in the source's state, the user created
/// once and deactivated once, and nothing else changed.
#[tokio::test]
async fn direct_calls_survive_faults_without_changing_a_user_twice() {
    use xaas::okta::direct::Deleted;
    use xaas::sim::{Fault, FaultPlan, FaultRule};
    let faults = [
        Fault::RateLimit { reset_secs: 1 },
        Fault::ServerError { status: 503, applied: true },
        Fault::ServerError { status: 500, applied: false },
        Fault::Delay { ms: 800, applied: true },
        Fault::Drop { applied: true },
        Fault::Drop { applied: false },
    ];
    for fault in faults {
        let rules = ["user-create", "user-delete"]
            .map(|endpoint| FaultRule {
                endpoint: endpoint.into(),
                requests: vec![1],
                probability: None,
                fault: fault.clone(),
            })
            .to_vec();
        let sim = direct_sim(FaultPlan { seed: 1, rules }).await;
        let client = direct_client(&sim);
        client
            .put_user(SOURCE, "e1", &profile("e1", "Oslo"), false)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        let deleted =
            client.delete_user(SOURCE, "e1").await.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(deleted, Deleted::Deactivated, "{fault:?}");
        // Let a held request land before looking.
        assert!(sim.settle(Duration::from_secs(5)).await, "{fault:?}");
        let snap = sim.snapshot();
        assert_eq!(snap.users.len(), 1, "{fault:?}");
        let e1 = user(&snap, "e1").unwrap();
        assert_eq!(e1.status, "DEACTIVATED", "{fault:?}");
        assert_eq!(e1.deactivations, 1, "{fault:?}");
        assert_eq!(e1.profile, profile("e1", "Oslo"), "{fault:?}");
        assert!(snap.violations.iter().all(|v| v.held), "{fault:?}: {:?}", snap.violations);
    }
}
