//! The client and the session lifecycle under injected faults (emulator `faults`): a 429
//! storm (rate and concurrency 429s), 5xx on bulk-upsert (applied or not) and on create, a
//! timeout after the load was applied, and dropped connections (bulk-upsert, start-import).
//!
//! Every scenario ends with the same checks: the users in the emulator are exactly the
//! source's, no session ever saw an externalId twice (`duplicate_external_id_in_session`),
//! and no session is left CREATED, IN_PROGRESS or TRIGGERED.
//!
//! Plus pacing: the client slows down on `X-Rate-Limit-Remaining` and meets no 429.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::net::TcpListener;
use url::Url;
use xaas::okta::batch::{PlannedRequest, RequestKind, SessionKind, SessionPlan};
use xaas::okta::client::{ClientOptions, OktaClient};
use xaas::okta::model::SessionStatus;
use xaas::okta::rate_limit::RateOptions;
use xaas::okta::session::{Importer, SessionOptions, SessionOutcome};
use xaas::sim::{Fault, FaultPlan, FaultRule, SimConfig, SimHandle};

const SOURCE: &str = "0oasim0000000000000";
const TOKEN: &str = "sim-token";
/// 6 requests of 20 users.
const REQUESTS: usize = 6;
const PER_REQUEST: usize = 20;

async fn sim(faults: FaultPlan) -> SimHandle {
    let config = SimConfig {
        clock_scale: 1000.0,
        processing_delay: Duration::from_millis(30),
        faults,
        ..SimConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    xaas::sim::spawn(config, listener).await.expect("spawn emulator")
}

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_millis(800),
        max_rate_limit_retries: 6,
        // The emulator's resets are whole seconds away; keep the test quick.
        max_rate_limit_wait: Duration::from_millis(300),
        retry_backoff: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

fn importer(sim: &SimHandle, options: ClientOptions) -> Importer {
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from(TOKEN),
        options,
    )
    .expect("client");
    Importer::new(
        client,
        SOURCE,
        SessionOptions {
            spacing: Duration::from_millis(350),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            max_replays: 2,
            ..SessionOptions::default()
        },
    )
}

fn profile(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("email".to_string(), format!("{id}@example.com")),
        ("userName".to_string(), format!("{id}@example.com")),
        ("firstName".to_string(), "Test".to_string()),
        ("lastName".to_string(), id.to_string()),
    ])
}

fn plan() -> (SessionPlan, Vec<String>) {
    plan_of(REQUESTS, PER_REQUEST)
}

fn plan_of(requests: usize, per_request: usize) -> (SessionPlan, Vec<String>) {
    let ids: Vec<String> = (0..requests * per_request).map(|i| format!("EMP{i:05}")).collect();
    let requests = ids
        .chunks(per_request)
        .map(|chunk| {
            let profiles: Vec<serde_json::Value> = chunk
                .iter()
                .map(|id| serde_json::json!({"externalId": id, "profile": profile(id)}))
                .collect();
            PlannedRequest {
                kind: RequestKind::Upsert,
                external_ids: chunk.to_vec(),
                body: serde_json::to_vec(
                    &serde_json::json!({"entityType": "USERS", "profiles": profiles}),
                )
                .expect("json"),
            }
        })
        .collect();
    (SessionPlan { kind: SessionKind::Upsert, requests }, ids)
}

fn rule(endpoint: &str, requests: &[u64], fault: Fault) -> FaultRule {
    FaultRule { endpoint: endpoint.into(), requests: requests.to_vec(), probability: None, fault }
}

/// Run the plan and check the invariants every scenario must keep.
async fn run_and_check(faults: FaultPlan) -> (SessionOutcome, xaas::sim::SimSnapshot) {
    let sim = sim(faults).await;
    let (plan, ids) = plan();
    let mut importer = importer(&sim, options());
    importer.prepare().await.expect("prepare");
    let outcome = importer.run(&plan).await;
    let snap = assert_exact(&sim, &outcome, &ids);
    sim.shutdown().await;
    (outcome, snap)
}

/// The session completed with every user, the emulator holds exactly them, no rule was broken
/// and nothing is left open.
fn assert_exact(
    sim: &SimHandle,
    outcome: &SessionOutcome,
    ids: &[String],
) -> xaas::sim::SimSnapshot {
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed), "{outcome:?}");
    assert_eq!(outcome.profiles, ids.len());

    let snap = sim.snapshot();
    // The users are exactly the source's.
    let got: BTreeMap<String, (String, BTreeMap<String, String>)> = snap
        .users
        .iter()
        .map(|u| (u.external_id.clone(), (u.status.clone(), u.profile.clone())))
        .collect();
    let want: BTreeMap<String, (String, BTreeMap<String, String>)> =
        ids.iter().map(|id| (id.clone(), ("ACTIVE".to_string(), profile(id)))).collect();
    assert_eq!(got, want);
    // No externalId twice in any session, and no other rule broken.
    assert!(
        snap.violations.iter().all(|v| v.rule != "duplicate_external_id_in_session"),
        "{:?}",
        snap.violations
    );
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
    // Nothing left open or running.
    for s in &snap.sessions {
        assert!(
            matches!(s.status, SessionStatus::Completed | SessionStatus::Closed),
            "session {} left {}",
            s.id,
            s.status
        );
    }
    snap
}

#[tokio::test]
async fn a_429_storm_is_waited_out_in_place() {
    let faults = FaultPlan {
        seed: 1,
        rules: vec![
            rule("*", &[1, 2, 3], Fault::RateLimit { reset_secs: 0 }),
            rule("bulk-upsert", &[2, 3, 4, 5], Fault::RateLimit { reset_secs: 0 }),
            rule("get-session", &[1], Fault::ConcurrencyLimit),
            rule("start-import", &[1], Fault::RateLimit { reset_secs: 0 }),
        ],
    };
    let (outcome, snap) = run_and_check(faults).await;
    // 429s mean "not applied": retried in place, in the same session, no replay.
    assert_eq!(outcome.replays, 0);
    assert_eq!(snap.sessions.len(), 1);
    assert!(snap.faults_injected >= 7, "{}", snap.faults_injected);
    assert_eq!(snap.rate_limited_total, snap.faults_injected);
}

#[tokio::test]
async fn a_5xx_after_the_load_was_applied_replays_the_session() {
    let faults = FaultPlan {
        seed: 0,
        rules: vec![rule("bulk-upsert", &[3], Fault::ServerError { status: 502, applied: true })],
    };
    let (outcome, snap) = run_and_check(faults).await;
    assert_eq!(outcome.replays, 1);
    assert_eq!(outcome.replayed_session_ids.len(), 1);
    assert_eq!(snap.sessions.len(), 2);
    assert_eq!(snap.sessions[0].status, SessionStatus::Closed);
}

#[tokio::test]
async fn a_5xx_that_was_not_applied_is_also_replayed_never_resent() {
    // The client cannot tell the two 5xx apart, so both take the same safe path.
    let faults = FaultPlan {
        seed: 0,
        rules: vec![rule("bulk-upsert", &[1], Fault::ServerError { status: 500, applied: false })],
    };
    let (outcome, _) = run_and_check(faults).await;
    assert_eq!(outcome.replays, 1);
}

#[tokio::test]
async fn an_ambiguous_create_cleans_up_and_replays() {
    // The session is created, but the client sees a 500: it must cancel the session it
    // never heard of, or the next create would be blocked.
    let faults = FaultPlan {
        seed: 0,
        rules: vec![rule(
            "create-session",
            &[1],
            Fault::ServerError { status: 500, applied: true },
        )],
    };
    let (outcome, snap) = run_and_check(faults).await;
    assert_eq!(outcome.replays, 1);
    assert_eq!(snap.sessions.len(), 2);
}

#[tokio::test]
async fn a_timeout_after_the_load_was_applied_replays_the_session() {
    let faults = FaultPlan {
        seed: 0,
        rules: vec![rule("bulk-upsert", &[2], Fault::Delay { ms: 2_000, applied: true })],
    };
    let (outcome, snap) = run_and_check(faults).await;
    assert_eq!(outcome.replays, 1);
    assert_eq!(snap.sessions[0].status, SessionStatus::Closed);
}

#[tokio::test]
async fn a_load_held_before_processing_lands_after_the_cancel_and_settle_waits_for_it() {
    // The network holds the second load past the client's timeout: the client cancels the
    // session and replays it. The held load reaches Okta only afterwards and meets a CLOSED
    // session, which Okta refuses (no data changes). `settle` lets a test wait for it before
    // judging the emulator's violations.
    let faults = FaultPlan {
        seed: 0,
        rules: vec![rule("bulk-upsert", &[2], Fault::Delay { ms: 4_000, applied: false })],
    };
    let sim = sim(faults).await;
    let (plan, ids) = plan();
    let mut importer = importer(&sim, options());
    let outcome = importer.run(&plan).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.replays, 1);
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert!(sim.requests_in_flight() >= 1, "the held load is still on its way");
    assert!(sim.snapshot().violations.is_empty(), "{:?}", sim.snapshot().violations);

    assert!(sim.settle(Duration::from_secs(10)).await, "the held load ends");
    assert_eq!(sim.requests_in_flight(), 0);
    let snap = sim.snapshot();
    let late: Vec<_> =
        snap.violations.iter().map(|v| (v.rule.as_str(), v.session_id.clone(), v.held)).collect();
    assert_eq!(
        late,
        [("load_not_open_session", Some(outcome.replayed_session_ids[0].clone()), true)],
        "recorded as held by the fault"
    );
    assert_eq!(snap.users.len(), ids.len());
}

#[tokio::test]
async fn dropped_connections_on_upload_and_trigger() {
    let faults = FaultPlan {
        seed: 0,
        rules: vec![
            rule("bulk-upsert", &[4], Fault::Drop { applied: true }),
            // The trigger went through but the answer was lost: the client reads the status
            // and follows the session instead of cancelling or re-triggering it.
            rule("start-import", &[1], Fault::Drop { applied: true }),
        ],
    };
    let (outcome, snap) = run_and_check(faults).await;
    assert_eq!(outcome.replays, 1);
    assert_eq!(snap.faults_injected, 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_in_place() {
    // Nothing listens at first: the request never reaches Okta, so retrying is safe.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = OktaClient::new(
        Url::parse(&format!("http://{addr}")).expect("url"),
        SecretString::from(TOKEN),
        ClientOptions { max_retries: 6, retry_backoff: Duration::from_millis(100), ..options() },
    )
    .expect("client");
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = TcpListener::bind(addr).await.expect("rebind");
        xaas::sim::spawn(SimConfig::default(), listener).await.expect("spawn")
    });
    let session = client.create_session(SOURCE).await.expect("created after the retries");
    let sim = server.await.expect("join");
    assert_eq!(sim.snapshot().sessions.len(), 1);
    assert_eq!(sim.snapshot().sessions[0].id, session.id);
}

#[tokio::test]
async fn shutdown_mid_upload_cancels_the_session() {
    let faults = FaultPlan {
        seed: 0,
        rules: vec![rule("bulk-upsert", &[], Fault::Delay { ms: 150, applied: false })],
    };
    let sim = sim(faults).await;
    let (plan, _) = plan();
    let token = tokio_util::sync::CancellationToken::new();
    // One upload at a time, 150 ms each: the cancel lands in the middle of the uploads.
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from(TOKEN),
        ClientOptions { max_concurrent_requests: 1, ..options() },
    )
    .expect("client")
    .with_cancellation(token.clone());
    let mut importer = Importer::new(client, SOURCE, SessionOptions::default());
    let cancel = token;
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(350)).await;
        cancel.cancel();
    });
    let outcome = importer.run(&plan).await;
    stopper.await.expect("join");
    let error = outcome.error.clone().expect("error");
    assert!(error.contains("shutdown requested"), "{error}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Closed));
    let snap = sim.snapshot();
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.sessions[0].status, SessionStatus::Closed, "no stale open session");
    assert!(snap.users.is_empty());
}

#[tokio::test]
async fn the_client_slows_down_on_remaining_without_a_429() {
    // 40 requests per 2-second window; 60 calls. Without pacing the 41st gets a 429.
    async fn run(adaptive: bool) -> (u64, Duration) {
        let config = SimConfig {
            rate_limit_per_minute: 40,
            rate_limit_window: Duration::from_secs(2),
            ..SimConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sim = xaas::sim::spawn(config, listener).await.expect("spawn");
        let client = OktaClient::new(
            Url::parse(&sim.base_url()).expect("url"),
            SecretString::from(TOKEN),
            ClientOptions {
                // A ceiling far above the window, so only the headers can slow it down.
                rate: RateOptions {
                    requests_per_minute: std::num::NonZeroU32::new(100_000),
                    adaptive,
                    ..RateOptions::default()
                },
                max_rate_limit_wait: Duration::from_secs(4),
                ..ClientOptions::default()
            },
        )
        .expect("client");
        let started = Instant::now();
        for _ in 0..60 {
            client.list_sessions(SOURCE).await.expect("list");
        }
        let elapsed = started.elapsed();
        let limited = sim.snapshot().rate_limited_total;
        sim.shutdown().await;
        (limited, elapsed)
    }
    let (limited, elapsed) = run(true).await;
    assert_eq!(limited, 0, "paced: no 429");
    assert!(elapsed >= Duration::from_secs(1), "it did slow down: {elapsed:?}");
    let (limited, _) = run(false).await;
    assert!(limited >= 1, "without pacing the same load meets a 429");
}

#[tokio::test]
async fn a_full_session_uploads_as_wide_as_the_budget_allows() {
    // 10,000 users in 50 loads. The default cap (50) and the org's 600/min (our share 300/min,
    // a burst of 50) let the whole session go in one round; a cap of 10 holds it to ten.
    async fn run(cap: usize) -> (u32, u64) {
        let config = SimConfig { latency: Duration::from_millis(50), ..SimConfig::default() };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sim = xaas::sim::spawn(config, listener).await.expect("spawn");
        let (plan, ids) = plan_of(50, 200);
        let mut importer =
            importer(&sim, ClientOptions { max_concurrent_requests: cap, ..options() });
        importer.prepare().await.expect("prepare");
        let outcome = importer.run(&plan).await;
        let snap = assert_exact(&sim, &outcome, &ids);
        sim.shutdown().await;
        (outcome.max_in_flight, snap.rate_limited_total)
    }
    assert_eq!(run(ClientOptions::default().max_concurrent_requests).await, (50, 0));
    assert_eq!(run(10).await, (10, 0));
}

#[tokio::test]
async fn a_concurrency_429_narrows_the_requests_in_flight() {
    // An org whose other clients leave us 4 concurrent requests; we start with all 24 loads.
    // (24, so that the retries stay inside the rate ceiling's burst and the test is quick.)
    let config = SimConfig {
        latency: Duration::from_millis(100),
        concurrency_limit: 4,
        clock_scale: 1000.0,
        processing_delay: Duration::from_millis(30),
        ..SimConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim = xaas::sim::spawn(config, listener).await.expect("spawn");
    let (plan, ids) = plan_of(24, 20);
    let client = OktaClient::new(
        Url::parse(&sim.base_url()).expect("url"),
        SecretString::from(TOKEN),
        ClientOptions {
            max_concurrent_requests: 50,
            // A ceiling above the test's calls: only the org's concurrency holds them back.
            rate: RateOptions {
                requests_per_minute: std::num::NonZeroU32::new(6000),
                ..RateOptions::default()
            },
            ..options()
        },
    )
    .expect("client");
    let mut importer = Importer::new(
        client.clone(),
        SOURCE,
        SessionOptions {
            spacing: Duration::from_millis(350),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(100),
            session_timeout: Duration::from_secs(20),
            max_replays: 0,
            ..SessionOptions::default()
        },
    );
    importer.prepare().await.expect("prepare");
    let outcome = importer.run(&plan).await;
    let snap = assert_exact(&sim, &outcome, &ids);
    let first = snap.rate_limited_total;
    assert_eq!(outcome.max_in_flight, 24, "the first round was the whole session");
    assert!(first >= 20, "the first burst met the org's limit: {first}");
    let learnt = client.loads_in_flight();
    assert!(learnt < 24, "the width narrowed: {learnt}");
    // The next session starts from what the first taught: far fewer refusals.
    tokio::time::sleep(Duration::from_millis(400)).await; // the spacing
    let (plan, ids) = plan_of(24, 20);
    let outcome = importer.run(&plan).await;
    let snap = assert_exact(&sim, &outcome, &ids);
    let second = snap.rate_limited_total - first;
    eprintln!(
        "concurrency 429s: {first} in the first session, {second} in the second; width {learnt} after the first"
    );
    assert!(second * 2 < first, "{second} refusals in the second session, {first} in the first");
    sim.shutdown().await;
}
