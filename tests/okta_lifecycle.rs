//! Session lifecycle scenarios (FACTS §4, §8) against wiremock with scripted answers.
//!
//! Each scenario scripts what Okta answers, in order, and checks what the importer did:
//! which calls it made (and did not make), the outcome it reports, and the spacing it kept.
//! Durations are milliseconds instead of minutes, so the tests run on the real clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};
use xaas::okta::batch::{PlannedRequest, RequestKind, SessionKind, SessionPlan};
use xaas::okta::client::{ClientOptions, OktaClient};
use xaas::okta::model::SessionStatus;
use xaas::okta::session::{Importer, PlanHints, SessionOptions};

const SOURCE: &str = "0oasrc";
const BASE: &str = "/api/v1/identity-sources/0oasrc/sessions";
const SPACING: Duration = Duration::from_millis(300);

/// Answers from a script, in order; the last answer repeats. Records when each call came.
#[derive(Clone)]
struct Script {
    answers: Arc<Mutex<VecDeque<ResponseTemplate>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    fn new(answers: Vec<ResponseTemplate>) -> Self {
        Self { answers: Arc::new(Mutex::new(answers.into())), calls: Arc::default() }
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().expect("lock").clone()
    }
}

impl Respond for Script {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        self.calls.lock().expect("lock").push(Instant::now());
        let mut answers = self.answers.lock().expect("lock");
        if answers.len() > 1 {
            answers.pop_front().expect("non-empty")
        } else {
            answers.front().cloned().expect("a script has at least one answer")
        }
    }
}

fn session(id: &str, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "id": id,
        "identitySourceId": SOURCE,
        "status": status,
        "importType": "INCREMENTAL",
        "created": "2026-05-13T05:52:24.000Z",
        "lastUpdated": "2026-05-13T05:52:24.000Z"
    }))
}

/// Okta answers a creation with 201, not the documented 200 (FACTS §11).
fn created(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "id": id, "identitySourceId": SOURCE, "status": "CREATED", "importType": "INCREMENTAL"
    }))
}

fn okta_400(summary: &str, cause: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "errorCode": "E0000001",
        "errorSummary": summary,
        "errorLink": "E0000001",
        "errorId": "oae123",
        "errorCauses": [{"errorSummary": cause}]
    }))
}

fn spacing_400() -> ResponseTemplate {
    okta_400(
        "Api validation failed: importSession",
        "Only one active import session per identity source is allowed to be created every 5 minutes",
    )
}

fn not_cancellable_400() -> ResponseTemplate {
    okta_400(
        "Api validation failed: importSessionId",
        "Only a session that is in CREATED or IN_PROGRESS status can be canceled.",
    )
}

fn options() -> SessionOptions {
    SessionOptions {
        spacing: SPACING,
        poll_initial: Duration::from_millis(10),
        poll_max: Duration::from_millis(40),
        session_timeout: Duration::from_secs(5),
        ..SessionOptions::default()
    }
}

fn importer(server: &MockServer, options: SessionOptions) -> Importer {
    let url = Url::parse(&server.uri()).expect("wiremock uri");
    let client = OktaClient::new(
        url,
        SecretString::from("test-token"),
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            max_rate_limit_retries: 2,
            max_rate_limit_wait: Duration::from_millis(50),
            // These scenarios pin exact call sequences: one request at a time.
            max_concurrent_requests: 1,
            ..ClientOptions::default()
        },
    )
    .expect("client");
    Importer::new(client, SOURCE, options)
}

fn request(kind: RequestKind, ids: &[&str]) -> PlannedRequest {
    let profiles: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| match kind {
            RequestKind::Upsert => serde_json::json!({"externalId": id, "profile": {"email": format!("{id}@example.com")}}),
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

fn upsert_plan(requests: usize) -> SessionPlan {
    SessionPlan {
        kind: SessionKind::Upsert,
        requests: (0..requests)
            .map(|i| request(RequestKind::Upsert, &[&format!("U{i}a"), &format!("U{i}b")]))
            .collect(),
    }
}

/// One session deactivating `ids` in one bulk delete.
fn delete_plan(ids: &[&str]) -> SessionPlan {
    SessionPlan { kind: SessionKind::Delete, requests: vec![request(RequestKind::Delete, ids)] }
}

/// Session `id` is created and takes bulk deletes.
async fn mount_created_with_delete(server: &MockServer, id: &str) {
    mount(server, "POST", BASE, &Script::new(vec![created(id)])).await;
    let delete = Script::new(vec![ResponseTemplate::new(202)]);
    mount(server, "POST", &format!("{BASE}/{id}/bulk-delete"), &delete).await;
}

async fn mount(server: &MockServer, verb: &str, p: &str, script: &Script) {
    Mock::given(method(verb)).and(path(p)).respond_with(script.clone()).mount(server).await;
}

async fn never(server: &MockServer, verb: &str, p: &str) {
    Mock::given(method(verb))
        .and(path(p))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(server)
        .await;
}

#[tokio::test]
async fn prepare_cancels_stale_open_sessions() {
    let server = MockServer::start().await;
    let list = Script::new(vec![ResponseTemplate::new(200).set_body_json(serde_json::json!([
        {"id": "aps1", "identitySourceId": SOURCE, "status": "CREATED"},
        {"id": "aps2", "identitySourceId": SOURCE, "status": "IN_PROGRESS"},
    ]))]);
    mount(&server, "GET", BASE, &list).await;
    let cancel1 = Script::new(vec![ResponseTemplate::new(204)]);
    let cancel2 = Script::new(vec![ResponseTemplate::new(204)]);
    mount(&server, "DELETE", &format!("{BASE}/aps1"), &cancel1).await;
    mount(&server, "DELETE", &format!("{BASE}/aps2"), &cancel2).await;

    let stale = importer(&server, options()).prepare().await.expect("prepare");
    assert_eq!(stale.len(), 2);
    assert_eq!(stale[0].id, "aps1");
    assert_eq!(stale[0].found, SessionStatus::Created);
    assert_eq!(stale[0].action, "cancelled");
    assert_eq!(stale[0].final_status, SessionStatus::Closed);
    assert_eq!(stale[1].found, SessionStatus::InProgress);
    assert_eq!(stale[1].action, "cancelled");
    assert_eq!(cancel1.calls().len(), 1);
    assert_eq!(cancel2.calls().len(), 1);
}

#[tokio::test]
async fn prepare_waits_for_a_triggered_session() {
    let server = MockServer::start().await;
    let list = Script::new(vec![ResponseTemplate::new(200).set_body_json(serde_json::json!([
        {"id": "aps3", "identitySourceId": SOURCE, "status": "TRIGGERED"},
    ]))]);
    mount(&server, "GET", BASE, &list).await;
    let get = Script::new(vec![
        session("aps3", "TRIGGERED"),
        session("aps3", "TRIGGERED"),
        session("aps3", "COMPLETED"),
    ]);
    mount(&server, "GET", &format!("{BASE}/aps3"), &get).await;
    never(&server, "DELETE", &format!("{BASE}/aps3")).await;

    let stale = importer(&server, options()).prepare().await.expect("prepare");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].action, "waited");
    assert_eq!(stale[0].found, SessionStatus::Triggered);
    assert_eq!(stale[0].final_status, SessionStatus::Completed);
    assert_eq!(get.calls().len(), 3);
}

#[tokio::test]
async fn prepare_follows_a_session_triggered_between_list_and_cancel() {
    let server = MockServer::start().await;
    let list = Script::new(vec![ResponseTemplate::new(200).set_body_json(serde_json::json!([
        {"id": "aps4", "identitySourceId": SOURCE, "status": "IN_PROGRESS"},
    ]))]);
    mount(&server, "GET", BASE, &list).await;
    let cancel = Script::new(vec![not_cancellable_400()]);
    mount(&server, "DELETE", &format!("{BASE}/aps4"), &cancel).await;
    let get = Script::new(vec![session("aps4", "TRIGGERED"), session("aps4", "COMPLETED")]);
    mount(&server, "GET", &format!("{BASE}/aps4"), &get).await;

    let stale = importer(&server, options()).prepare().await.expect("prepare");
    assert_eq!(stale[0].action, "waited");
    assert_eq!(stale[0].found, SessionStatus::InProgress);
    assert_eq!(stale[0].final_status, SessionStatus::Completed);
}

/// Mount a full happy path for session `id`: create, uploads, IN_PROGRESS, trigger, COMPLETED.
struct HappyPath {
    create: Script,
    upsert: Script,
    get: Script,
    start: Script,
}

async fn happy_path(server: &MockServer, id: &str, gets: Vec<ResponseTemplate>) -> HappyPath {
    let paths = HappyPath {
        create: Script::new(vec![created(id)]),
        upsert: Script::new(vec![ResponseTemplate::new(202)]),
        get: Script::new(gets),
        start: Script::new(vec![session(id, "TRIGGERED")]),
    };
    mount(server, "POST", BASE, &paths.create).await;
    mount(server, "POST", &format!("{BASE}/{id}/bulk-upsert"), &paths.upsert).await;
    mount(server, "GET", &format!("{BASE}/{id}"), &paths.get).await;
    mount(server, "POST", &format!("{BASE}/{id}/start-import"), &paths.start).await;
    paths
}

#[tokio::test]
async fn a_session_is_created_loaded_triggered_and_followed_to_completed() {
    let server = MockServer::start().await;
    let paths = happy_path(
        &server,
        "aps10",
        vec![session("aps10", "TRIGGERED"), session("aps10", "COMPLETED")],
    )
    .await;
    never(&server, "DELETE", &format!("{BASE}/aps10")).await;

    let outcome = importer(&server, options()).run(&upsert_plan(3)).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.id.as_deref(), Some("aps10"));
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert_eq!(outcome.requests, 3);
    assert_eq!(outcome.profiles, 6);
    assert_eq!(outcome.spacing_wait_ms, 0);
    assert!(!outcome.cancelled_untriggerable);
    assert_eq!(paths.upsert.calls().len(), 3);
    assert_eq!(paths.start.calls().len(), 1);
    // Accepted user upserts put the session IN_PROGRESS: no status read before the trigger,
    // only the two polls after it.
    let (gets, start) = (paths.get.calls(), paths.start.calls()[0]);
    assert_eq!(gets.len(), 2, "two polls, no read before the trigger");
    assert!(gets.iter().all(|&at| at > start), "every read follows the trigger");
}

#[tokio::test]
async fn two_runs_keep_okta_five_minute_spacing() {
    let server = MockServer::start().await;
    let paths = happy_path(&server, "aps20", vec![session("aps20", "COMPLETED")]).await;

    let mut importer = importer(&server, options());
    let first = importer.run(&upsert_plan(1)).await;
    let second = importer.run(&upsert_plan(1)).await;
    assert_eq!(first.error, None);
    assert_eq!(second.error, None);
    assert_eq!(first.spacing_wait_ms, 0);
    assert!(second.spacing_wait_ms > 0, "{second:?}");

    // Okta's clock counts from the trigger too; we count from the later of the two.
    let creates = paths.create.calls();
    let starts = paths.start.calls();
    assert_eq!(creates.len(), 2);
    assert!(creates[1] - creates[0] >= SPACING);
    assert!(creates[1] - starts[0] >= SPACING - Duration::from_millis(5));
}

#[tokio::test]
async fn a_create_refused_by_the_five_minute_rule_is_retried_after_the_spacing() {
    let server = MockServer::start().await;
    // One refusal (a session of an earlier process we never saw), then the session.
    let create = Script::new(vec![spacing_400(), created("aps30")]);
    mount(&server, "POST", BASE, &create).await;
    let ok = Script::new(vec![ResponseTemplate::new(202)]);
    mount(&server, "POST", &format!("{BASE}/aps30/bulk-upsert"), &ok).await;
    let get = Script::new(vec![session("aps30", "COMPLETED")]);
    mount(&server, "GET", &format!("{BASE}/aps30"), &get).await;
    let start = Script::new(vec![session("aps30", "TRIGGERED")]);
    mount(&server, "POST", &format!("{BASE}/aps30/start-import"), &start).await;

    let outcome = importer(&server, options()).run(&upsert_plan(1)).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert!(outcome.spacing_wait_ms >= SPACING.as_millis() as u64);
    let calls = create.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[1] - calls[0] >= SPACING);
}

#[tokio::test]
async fn a_create_refused_too_often_is_an_error_without_a_session() {
    let server = MockServer::start().await;
    let create = Script::new(vec![spacing_400()]);
    mount(&server, "POST", BASE, &create).await;
    let opts = SessionOptions { spacing: Duration::from_millis(20), ..options() };
    let outcome = importer(&server, opts).run(&upsert_plan(1)).await;
    assert_eq!(outcome.id, None);
    let error = outcome.error.expect("error");
    assert!(error.contains("every 5 minutes"), "{error}");
    assert_eq!(create.calls().len(), 4, "one try and three retries");
}

#[tokio::test]
async fn a_delete_only_session_of_unknown_users_is_cancelled_not_triggered() {
    let server = MockServer::start().await;
    mount_created_with_delete(&server, "aps40").await;
    mount(
        &server,
        "GET",
        &format!("{BASE}/aps40"),
        &Script::new(vec![session("aps40", "CREATED")]),
    )
    .await;
    let cancel = Script::new(vec![ResponseTemplate::new(204)]);
    mount(&server, "DELETE", &format!("{BASE}/aps40"), &cancel).await;
    never(&server, "POST", &format!("{BASE}/aps40/start-import")).await;

    let plan = delete_plan(&["GONE1", "GONE2"]);
    let outcome = importer(&server, options()).run(&plan).await;
    assert_eq!(outcome.error, None);
    assert!(outcome.cancelled_untriggerable);
    assert_eq!(outcome.final_status, Some(SessionStatus::Closed));
    assert!(outcome.note.as_deref().unwrap_or("").contains("nothing to import"));
    assert_eq!(outcome.requests, 1);
    assert_eq!(outcome.profiles, 2);
    assert_eq!(cancel.calls().len(), 1);
}

#[tokio::test]
async fn deactivating_users_okta_confirmed_triggers_without_reading_the_session_first() {
    let server = MockServer::start().await;
    mount_created_with_delete(&server, "aps41").await;
    let get = Script::new(vec![session("aps41", "COMPLETED")]);
    mount(&server, "GET", &format!("{BASE}/aps41"), &get).await;
    let start = Script::new(vec![session("aps41", "TRIGGERED")]);
    mount(&server, "POST", &format!("{BASE}/aps41/start-import"), &start).await;
    never(&server, "DELETE", &format!("{BASE}/aps41")).await;

    let plan = delete_plan(&["LEFT1", "LEFT2"]);
    let hints = PlanHints { deletes_known_users: true };
    let outcome = importer(&server, options()).run_with(&plan, hints).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.final_status, Some(SessionStatus::Completed));
    assert_eq!(start.calls().len(), 1);
    let (gets, triggered) = (get.calls(), start.calls()[0]);
    assert_eq!(gets.len(), 1, "one poll");
    assert!(gets[0] > triggered, "no read between the upload and the trigger");
}

#[tokio::test]
async fn an_upload_failure_cancels_the_session() {
    let server = MockServer::start().await;
    mount(&server, "POST", BASE, &Script::new(vec![created("aps50")])).await;
    let upsert = Script::new(vec![
        ResponseTemplate::new(202),
        ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "errorCode": "E0000003",
            "errorSummary": "The request body was not well-formed.",
            "errorCauses": []
        })),
    ]);
    mount(&server, "POST", &format!("{BASE}/aps50/bulk-upsert"), &upsert).await;
    let cancel = Script::new(vec![ResponseTemplate::new(204)]);
    mount(&server, "DELETE", &format!("{BASE}/aps50"), &cancel).await;
    never(&server, "POST", &format!("{BASE}/aps50/start-import")).await;

    let outcome = importer(&server, options()).run(&upsert_plan(3)).await;
    let error = outcome.error.clone().expect("error");
    assert!(error.contains("bulk load 2 of 3"), "{error}");
    assert!(error.contains("E0000003"), "{error}");
    assert_eq!(outcome.requests, 1);
    assert_eq!(outcome.final_status, Some(SessionStatus::Closed));
    assert_eq!(cancel.calls().len(), 1);
    assert_eq!(upsert.calls().len(), 2, "stops at the first failure");
}

#[tokio::test]
async fn an_upload_failure_whose_cancel_fails_still_reports_the_upload_error() {
    let server = MockServer::start().await;
    mount(&server, "POST", BASE, &Script::new(vec![created("aps51")])).await;
    mount(
        &server,
        "POST",
        &format!("{BASE}/aps51/bulk-upsert"),
        &Script::new(vec![ResponseTemplate::new(500)]),
    )
    .await;
    mount(
        &server,
        "DELETE",
        &format!("{BASE}/aps51"),
        &Script::new(vec![ResponseTemplate::new(404)]),
    )
    .await;
    mount(
        &server,
        "GET",
        &format!("{BASE}/aps51"),
        &Script::new(vec![session("aps51", "IN_PROGRESS")]),
    )
    .await;

    let outcome = importer(&server, options()).run(&upsert_plan(1)).await;
    let error = outcome.error.expect("error");
    assert!(error.contains("http 500"), "{error}");
    assert_eq!(outcome.final_status, Some(SessionStatus::InProgress));
}

#[tokio::test]
async fn okta_reporting_error_is_an_error() {
    let server = MockServer::start().await;
    happy_path(&server, "aps60", vec![session("aps60", "TRIGGERED"), session("aps60", "ERROR")])
        .await;
    let outcome = importer(&server, options()).run(&upsert_plan(1)).await;
    assert_eq!(outcome.final_status, Some(SessionStatus::Error));
    let error = outcome.error.expect("error");
    assert!(error.starts_with("okta reported ERROR for session aps60"), "{error}");
}

#[tokio::test]
async fn following_a_session_gives_up_after_the_session_timeout() {
    let server = MockServer::start().await;
    happy_path(&server, "aps70", vec![session("aps70", "TRIGGERED")]).await;
    let opts = SessionOptions { session_timeout: Duration::from_millis(150), ..options() };
    let started = Instant::now();
    let outcome = importer(&server, opts).run(&upsert_plan(1)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(outcome.final_status, Some(SessionStatus::Triggered));
    let error = outcome.error.expect("error");
    assert!(error.contains("gave up"), "{error}");
}

#[tokio::test]
async fn an_empty_plan_creates_no_session() {
    let server = MockServer::start().await;
    never(&server, "POST", BASE).await;
    let plan = SessionPlan { kind: SessionKind::Upsert, requests: Vec::new() };
    let outcome = importer(&server, options()).run(&plan).await;
    assert_eq!(outcome.id, None);
    assert_eq!(outcome.error, None);
    assert!(outcome.note.is_some());
}
