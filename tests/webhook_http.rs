//! The webhook over real HTTP: a server on 127.0.0.1:0 serving `webhook::router`, a real
//! event store in a temporary directory, a real mapping loaded through `settings::load`, and a
//! fake `Dispatch` that records what it was told.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use xaas::daemon::auth::{sign, sign_v2};
use xaas::daemon::webhook::{WebhookContext, router};
use xaas::daemon::{Dispatch, TriggerAck};
use xaas::settings::Job;
use xaas::state::events::EventStore;

const SECRET: &str = "webhook-secret-1";
const NEXT_SECRET: &str = "webhook-secret-2";

const MAPPING: &str = r#"version: 2
source_fields: [id, active, email, first_name, last_name]
external_id: "{{ id | trim | lower }}"
status:
  active_if: '{"true": true, "false": false}[active | trim | lower]'
  when_missing: reject
attributes:
  userName: "{{ email | trim | lower }}"
  email: "{{ email | trim | lower }}"
  firstName: first_name
  lastName: last_name
required: [userName, email, firstName, lastName]
"#;

#[derive(Default)]
struct FakeDispatch {
    jobs: Mutex<Vec<Arc<Job>>>,
    stored: Mutex<Vec<(String, bool)>>,
    triggered: Mutex<Vec<String>>,
}

impl Dispatch for FakeDispatch {
    fn job(&self, name: &str) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap().iter().find(|j| j.name == name).cloned()
    }
    fn events_stored(&self, job: &str, urgent: bool) {
        self.stored.lock().unwrap().push((job.to_string(), urgent));
    }
    fn trigger(&self, job: &str) -> TriggerAck {
        self.triggered.lock().unwrap().push(job.to_string());
        TriggerAck { status: "queued", position: 0 }
    }
}

struct Server {
    url: String,
    dispatch: Arc<FakeDispatch>,
    events: EventStore,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A server whose `serve.webhook:` is `webhook_yaml` (indented under `webhook:`).
async fn start(webhook_yaml: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mapping.yaml", MAPPING);
    write(dir.path(), "hr.csv", "id,active,email,first_name,last_name\n");
    let config = format!(
        "okta:\n  org_url: https://example.okta.com\n  auth:\n    type: api_token\n    token: t\njobs:\n  - name: hr\n    identity_source_id: 0oa1\n    source:\n      type: csv\n      path: hr.csv\n    mapping: mapping.yaml\nserve:\n  webhook:\n{webhook_yaml}"
    );
    write(dir.path(), "xaas.yaml", &config);
    let settings = xaas::settings::load(&dir.path().join("xaas.yaml")).unwrap_or_else(|d| {
        panic!("config does not load:\n{d}");
    });
    let webhook = settings.serve.webhook.clone().expect("serve.webhook is set");
    let dispatch = Arc::new(FakeDispatch::default());
    // `hr`, and `payroll`: the same job under another name.
    let payroll = xaas::settings::Job { name: "payroll".into(), ..settings.jobs[0].clone() };
    *dispatch.jobs.lock().unwrap() = vec![Arc::new(settings.jobs[0].clone()), Arc::new(payroll)];
    let events = EventStore::open(&dir.path().join("xaas-state.db")).unwrap();
    let ctx = WebhookContext::fixed(dispatch.clone(), events.clone(), webhook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        url: format!("http://{addr}"),
        dispatch,
        events,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const HMAC: &str =
    "    auth:\n      type: hmac\n      secrets:\n        - value: webhook-secret-1\n";

fn person(id: &str, active: &str) -> Value {
    json!({"id": id, "active": active, "email": format!("{id}@example.com"), "first_name": "A", "last_name": "B"})
}

impl Server {
    /// POST `body` to `path`, signed with `secret` at `ts`.
    async fn post_signed(
        &self,
        path: &str,
        body: &[u8],
        secret: &str,
        ts: i64,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("X-Xaas-Timestamp", ts.to_string())
            .header("X-Xaas-Signature", sign(secret.as_bytes(), ts, body))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn push(&self, body: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(body).unwrap();
        self.post_signed("/v1/jobs/hr/records", &body, SECRET, Utc::now().timestamp(), &[]).await
    }

    fn stored(&self) -> usize {
        self.events.recent(100).unwrap().len()
    }
}

async fn error_of(r: reqwest::Response) -> String {
    let body: Value = r.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_signed_push_is_stored_then_dispatched_and_can_be_looked_up() {
    let s = start(HMAC).await;
    let r = s.push(&json!([person("a1", "true"), person("a2", "false")])).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    let id = body["event_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("evt_"));
    assert_eq!(location, format!("/v1/events/{id}"));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["records"], 2);
    assert_eq!(body["urgent"], true, "a record mapping to active: false is urgent");
    assert_eq!(*s.dispatch.stored.lock().unwrap(), [("hr".to_string(), true)]);

    let pending = s.events.pending(&["hr".to_string()], 100).unwrap();
    assert_eq!(pending.len(), 1);
    let records: Value = serde_json::from_str(&pending[0].records).unwrap();
    assert_eq!(records[1]["id"], "a2", "stored in the source shape, in order");

    // A single object is one record, not urgent.
    let r = s.push(&person("a3", "true")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["records"].clone(), body["urgent"].clone()), (json!(1), json!(false)));

    // GET /v1/events/{id}, signed over the empty body.
    let ts = Utc::now().timestamp();
    let r = s
        .client
        .get(format!("{}{location}", s.url))
        .header("X-Xaas-Timestamp", ts.to_string())
        .header("X-Xaas-Signature", sign(SECRET.as_bytes(), ts, b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "queued");
    assert_eq!(view["record_count"], 2);
    assert!(view.get("records").is_none(), "the view never shows the records");

    // Reads skip the replay check: polling again with the same timestamp works.
    let r = s
        .client
        .get(format!("{}{location}", s.url))
        .header("X-Xaas-Timestamp", ts.to_string())
        .header("X-Xaas-Signature", sign(SECRET.as_bytes(), ts, b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = s
        .client
        .get(format!("{}/v1/events/evt_nope", s.url))
        .header("X-Xaas-Timestamp", ts.to_string())
        .header("X-Xaas-Signature", sign(SECRET.as_bytes(), ts, b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Unsigned GET is refused.
    let r = s.client.get(format!("{}{location}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await, "missing signature");
}

#[tokio::test]
async fn bad_signatures_old_timestamps_replays_and_big_bodies_store_nothing() {
    let s = start(&format!("{HMAC}    max_body_bytes: 2048\n")).await;
    let body = serde_json::to_vec(&json!([person("b1", "true")])).unwrap();
    let now = Utc::now().timestamp();
    let path = "/v1/jobs/hr/records";

    let r = s.post_signed(path, &body, "wrong-secret", now, &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await, "signature does not match");

    let r = s.post_signed(path, &body, SECRET, now - 301, &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await, "timestamp outside the 5-minute window");

    let r = s.client.post(format!("{}{path}", s.url)).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await, "missing signature");

    let big = vec![b' '; 3000];
    let r = s.post_signed(path, &big, SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let msg = error_of(r).await;
    assert!(msg.contains("limit of 2048 bytes"), "{msg}");
    assert_eq!(s.stored(), 0);
    assert!(s.dispatch.stored.lock().unwrap().is_empty());

    let r = s.post_signed(path, &body, SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let first: Value = r.json().await.unwrap();
    // The same signed bytes again: the first event, not applied again.
    let r = s.post_signed(path, &body, SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!((&again["event_id"], &again["duplicate"]), (&first["event_id"], &json!(true)));
    assert_eq!(s.stored(), 1);
    assert_eq!(s.dispatch.stored.lock().unwrap().len(), 1, "dispatched once");
}

#[tokio::test]
async fn v2_signatures_cover_the_path_and_v1_can_be_refused() {
    let s = start(&format!(
        "{HMAC}      require_v2: true
"
    ))
    .await;
    let body = serde_json::to_vec(&json!([person("v1", "true")])).unwrap();
    let now = Utc::now().timestamp();
    let path = "/v1/jobs/hr/records";
    let send = |path: &str, signature: String| {
        s.client
            .post(format!("{}{path}", s.url))
            .header("X-Xaas-Timestamp", now.to_string())
            .header("X-Xaas-Signature", signature)
            .body(body.clone())
            .send()
    };
    let r = send(path, sign(SECRET.as_bytes(), now, &body)).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(error_of(r).await.starts_with("a v2 signature is required"));
    let v2 = sign_v2(SECRET.as_bytes(), now, "POST", path, &body);
    let r = send("/v1/jobs/payroll/records", v2.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "signed for another path");
    assert_eq!(
        error_of(r).await,
        "v2 signature does not match (it covers the method and the path too)"
    );
    assert_eq!(s.stored(), 0);
    let r = send(path, v2.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(path, v2).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a repeat is a duplicate");
    assert_eq!(s.stored(), 1);
    // Reads are v2-signed over their own method and path, and may be polled.
    let id = r.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_string();
    let event_path = format!("/v1/events/{id}");
    let read = |signature: String| {
        s.client
            .get(format!("{}{event_path}", s.url))
            .header("X-Xaas-Timestamp", now.to_string())
            .header("X-Xaas-Signature", signature)
            .send()
    };
    let get_v2 = sign_v2(SECRET.as_bytes(), now, "GET", &event_path, b"");
    for _ in 0..2 {
        assert_eq!(read(get_v2.clone()).await.unwrap().status(), StatusCode::OK);
    }
    let posted = sign_v2(SECRET.as_bytes(), now, "POST", &event_path, b"");
    assert_eq!(read(posted).await.unwrap().status(), StatusCode::UNAUTHORIZED, "another method");
    let v1 = sign(SECRET.as_bytes(), now, b"");
    assert_eq!(read(v1).await.unwrap().status(), StatusCode::UNAUTHORIZED, "v2 required");
}

#[tokio::test]
async fn a_v1_message_sent_to_another_route_is_refused_with_409() {
    let s = start(HMAC).await;
    let body = serde_json::to_vec(&json!([person("w1", "true")])).unwrap();
    let now = Utc::now().timestamp();
    let r = s.post_signed("/v1/jobs/hr/records", &body, SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The same v1-signed bytes aimed at another job: a v1 signature does not cover the path.
    let r = s.post_signed("/v1/jobs/payroll/records", &body, SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let msg = error_of(r).await;
    assert!(msg.contains("already accepted on `POST /v1/jobs/hr/records`"), "{msg}");
    assert_eq!(s.stored(), 1);
    // Signed with v2 for that job, the same body is another message: stored.
    let v2 = sign_v2(SECRET.as_bytes(), now, "POST", "/v1/jobs/payroll/records", &body);
    let r = s
        .client
        .post(format!("{}/v1/jobs/payroll/records", s.url))
        .header("X-Xaas-Timestamp", now.to_string())
        .header("X-Xaas-Signature", v2)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(s.stored(), 2);
}

#[tokio::test]
async fn malformed_json_and_mapping_rejections_are_explained() {
    let s = start(HMAC).await;
    let now = Utc::now().timestamp();
    let path = "/v1/jobs/hr/records";
    let r = s.post_signed(path, b"[{\"id\": \"x\",\n  \"active\": }]", SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let msg = error_of(r).await;
    assert_eq!(msg, "invalid json at line 2 column 13: expected value");

    let r = s.post_signed(path, br#"[{}, "x"]"#, SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(r).await,
        "expected an object or an array of objects, found a string at record #1"
    );

    let r =
        s.push(&json!([person("c1", "true"), person("c2", "ture"), person("c3", "true")])).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "1 of 3 record(s) rejected by the mapping of job `hr`; nothing was stored"
    );
    assert_eq!(body["details"][0]["index"], 1);
    assert!(body["details"][0]["reason"].as_str().unwrap().contains("gave no value"));
    assert!(!body.to_string().contains("c2@example.com"), "no record values echoed");
    assert_eq!(s.stored(), 0, "all or nothing");

    // A control character in an identifier: 422, naming the field and the position; each of
    // U+0000-U+001F and U+007F.
    for c in (0u32..0x20).chain([0x7f]).filter_map(char::from_u32) {
        let mut bad = person("c4", "true");
        bad["id"] = json!(format!("c{c}4"));
        let r = s.push(&json!([person("c5", "true"), bad])).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "U+{:04X}", c as u32);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["details"][0]["index"], 1, "{body}");
        let reason = body["details"][0]["reason"].as_str().unwrap();
        let code = format!("U+{:04X} at character 2", c as u32);
        assert!(reason.contains(&code), "{code}: {body}");
    }
    assert_eq!(s.stored(), 0);

    let r = s.post_signed("/v1/jobs/nope/records", br#"{"id": "x"}"#, SECRET, now - 2, &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(r).await, "no job named `nope`");
}

#[tokio::test]
async fn an_idempotent_retry_is_stored_once() {
    let s = start(HMAC).await;
    let body = serde_json::to_vec(&json!([person("d1", "true")])).unwrap();
    let now = Utc::now().timestamp();
    let key = [("Idempotency-Key", "batch-42")];
    let path = "/v1/jobs/hr/records";
    let first = s.post_signed(path, &body, SECRET, now, &key).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    // A retry is signed again (a new timestamp); the key makes it a duplicate.
    let again = s.post_signed(path, &body, SECRET, now - 1, &key).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["event_id"], first["event_id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(s.stored(), 1);
    assert_eq!(s.dispatch.stored.lock().unwrap().len(), 1);

    let long = "k".repeat(256);
    let r = s.post_signed(path, &body, SECRET, now - 2, &[("Idempotency-Key", &long)]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_per_client_rate_limit_answers_429_with_retry_after() {
    let s = start(&format!("{HMAC}    rate_limit_per_second: 1\n    rate_limit_burst: 2\n")).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = s.client.post(format!("{}/v1/jobs/hr/records", s.url)).send().await.unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = Some(r.headers()["retry-after"].to_str().unwrap().to_string());
            let msg = error_of(r).await;
            assert!(msg.starts_with("too many requests from this client"), "{msg}");
        }
    }
    assert_eq!(statuses[..2], [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED]);
    assert_eq!(statuses[2], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("1"));
}

#[tokio::test]
async fn the_second_rotation_secret_is_accepted_and_trigger_works() {
    let s = start(&format!("{HMAC}        - value: {NEXT_SECRET}\n")).await;
    let body = serde_json::to_vec(&person("e1", "true")).unwrap();
    let now = Utc::now().timestamp();
    let r = s.post_signed("/v1/jobs/hr/records", &body, NEXT_SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let r = s.post_signed("/v1/jobs/hr/trigger", b"", NEXT_SECRET, now, &[]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack, json!({"status": "queued", "position": 0}));
    assert_eq!(*s.dispatch.triggered.lock().unwrap(), ["hr"]);
    // The same signed trigger again is a duplicate: answered, not run twice; also with the
    // job's name spelled another way in the path.
    for path in ["/v1/jobs/hr/trigger", "/v1/jobs/h%72/trigger"] {
        let r = s.post_signed(path, b"", NEXT_SECRET, now, &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ack: Value = r.json().await.unwrap();
        assert_eq!(ack, json!({"status": "duplicate", "duplicate": true}));
    }
    assert_eq!(*s.dispatch.triggered.lock().unwrap(), ["hr"]);
}

#[tokio::test]
async fn bearer_mode_accepts_the_token_and_refuses_others() {
    let s = start("    auth:\n      type: bearer\n      token: bearer-token-1\n").await;
    let body = serde_json::to_vec(&person("f1", "true")).unwrap();
    let url = format!("{}/v1/jobs/hr/records", s.url);
    let r = s.client.post(&url).bearer_auth("bearer-token-1").body(body.clone()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::ACCEPTED);
    let r = s.client.post(&url).bearer_auth("bearer-token-2").body(body.clone()).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await, "bearer token does not match");
    let r = s.client.post(&url).body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.stored(), 1);
}

#[test]
fn webhook_config_mistakes_fail_the_load_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mapping.yaml", MAPPING);
    write(dir.path(), "hr.csv", "id\n");
    let config = "okta:\n  org_url: https://example.okta.com\n  auth:\n    type: api_token\n    token: t\njobs:\n  - name: hr\n    identity_source_id: 0oa1\n    source:\n      type: csv\n      path: hr.csv\n    mapping: mapping.yaml\nserve:\n  webhook:\n    auth:\n      type: hmac\n      secrets:\n        - env: XAAS_TEST_WEBHOOK_UNSET_VAR\n    max_body_byte: 10\n";
    write(dir.path(), "xaas.yaml", config);
    let err = xaas::settings::load(&dir.path().join("xaas.yaml")).unwrap_err().to_string();
    // The key path reads `serve.webhook.?.max_body_byte` today (serde_ignored's marker for the
    // Option in RawServe; raw.rs could strip it and suggest from WEBHOOK_KEYS).
    assert!(err.contains("unknown key") && err.contains("max_body_byte"), "{err}");
    assert!(
        err.contains("serve.webhook.auth.secrets[0]: the environment variable XAAS_TEST_WEBHOOK_UNSET_VAR is not set or is empty"),
        "{err}"
    );
    assert!(!err.contains("webhook-secret"), "{err}");
}
