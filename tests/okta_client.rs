//! The Okta client against a wiremock server: headers Okta insists on, status codes seen in
//! reality (FACTS §11), 429 handling (FACTS §7), error parsing (FACTS §9), and that the token
//! never leaks into errors or Debug output.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use url::Url;
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use xaas::okta::OktaError;
use xaas::okta::batch::RequestKind;
use xaas::okta::client::{ClientOptions, OktaClient};
use xaas::okta::model::SessionStatus;

const TOKEN: &str = "00SECRET-token-value-xyz";
const SOURCE: &str = "0oaxc95befZNgrJl71d7";
const SESSION: &str = "apsyofrdjpnHboweG1d7";
const SESSIONS_PATH: &str = "/api/v1/identity-sources/0oaxc95befZNgrJl71d7/sessions";
const SESSION_PATH: &str =
    "/api/v1/identity-sources/0oaxc95befZNgrJl71d7/sessions/apsyofrdjpnHboweG1d7";

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        max_rate_limit_retries: 4,
        max_rate_limit_wait: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn client(server: &MockServer, options: ClientOptions) -> OktaClient {
    let url = Url::parse(&server.uri()).expect("wiremock uri");
    OktaClient::new(url, SecretString::from(TOKEN), options).expect("client")
}

fn session_json(status: &str) -> serde_json::Value {
    serde_json::json!({
        "id": SESSION,
        "identitySourceId": SOURCE,
        "status": status,
        "importType": "INCREMENTAL",
        "created": "2026-05-13T05:52:24.000Z",
        "lastUpdated": "2026-05-13T05:52:24.000Z"
    })
}

fn okta_error(code: &str, summary: &str, causes: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": "oaeCvJxtXDbTBCgsdhf12mhvQ",
        "errorCauses": causes.iter().map(|c| serde_json::json!({"errorSummary": c})).collect::<Vec<_>>()
    })
}

fn spacing_body() -> serde_json::Value {
    okta_error(
        "E0000001",
        "Api validation failed: importSession",
        &[
            "Only one active import session per identity source is allowed to be created every 5 minutes",
        ],
    )
}

#[tokio::test]
async fn create_sends_ssws_and_content_length_zero_and_accepts_201() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SESSIONS_PATH))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .and(header("accept", "application/json"))
        .and(header("content-length", "0"))
        .respond_with(ResponseTemplate::new(201).set_body_json(session_json("CREATED")))
        .expect(1)
        .mount(&server)
        .await;

    let session = client(&server, options()).create_session(SOURCE).await.expect("create");
    assert_eq!(session.id, SESSION);
    assert_eq!(session.status, SessionStatus::Created);

    let requests = server.received_requests().await.expect("recording on");
    let ua = requests[0].headers.get("user-agent").expect("user agent");
    assert!(ua.to_str().expect("ascii").starts_with("xaas/"));
}

#[tokio::test]
async fn create_accepts_200_as_documented() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SESSIONS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json("CREATED")))
        .mount(&server)
        .await;
    let session = client(&server, options()).create_session(SOURCE).await.expect("create");
    assert_eq!(session.status, SessionStatus::Created);
}

#[tokio::test]
async fn start_import_sends_content_length_zero() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/start-import")))
        .and(header("content-length", "0"))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json("TRIGGERED")))
        .expect(1)
        .mount(&server)
        .await;
    let session = client(&server, options()).start_import(SOURCE, SESSION).await.expect("start");
    assert_eq!(session.status, SessionStatus::Triggered);
}

#[tokio::test]
async fn bulk_loads_go_to_their_endpoints_as_json() {
    let server = MockServer::start().await;
    let upsert = br#"{"entityType":"USERS","profiles":[{"externalId":"E1","profile":{"email":"a@example.com"}}]}"#;
    let delete = br#"{"entityType":"USERS","profiles":[{"externalId":"E2"}]}"#;
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/bulk-upsert")))
        .and(header("content-type", "application/json"))
        .and(wiremock::matchers::body_bytes(upsert.to_vec()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/bulk-delete")))
        .and(header("content-type", "application/json"))
        .and(wiremock::matchers::body_bytes(delete.to_vec()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, options());
    c.bulk_load(SOURCE, SESSION, RequestKind::Upsert, upsert).await.expect("upsert");
    c.bulk_load(SOURCE, SESSION, RequestKind::Delete, delete).await.expect("delete");
}

#[tokio::test]
async fn cancel_accepts_any_2xx_and_list_parses_sessions() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(SESSION_PATH))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SESSIONS_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!([session_json("TRIGGERED")])),
        )
        .mount(&server)
        .await;
    let c = client(&server, options());
    c.cancel_session(SOURCE, SESSION).await.expect("cancel");
    let sessions = c.list_sessions(SOURCE).await.expect("list");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].status, SessionStatus::Triggered);
}

#[tokio::test]
async fn a_429_is_retried_after_the_reset_with_retry_headers() {
    let server = MockServer::start().await;
    // Reset == Date: the SDK rule waits reset − date + 1 s = 1 s.
    let now = chrono::Utc::now();
    let date = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/bulk-upsert")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-okta-request-id", "req-429-abc")
                .insert_header("x-rate-limit-limit", "600")
                .insert_header("x-rate-limit-remaining", "0")
                .insert_header("x-rate-limit-reset", now.timestamp().to_string().as_str())
                .insert_header("date", date.as_str())
                .set_body_json(okta_error(
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                    &[],
                )),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/bulk-upsert")))
        .and(header("x-okta-retry-for", "req-429-abc"))
        .and(header("x-okta-retry-count", "1"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;

    let started = Instant::now();
    client(&server, options())
        .bulk_load(SOURCE, SESSION, RequestKind::Upsert, b"{}")
        .await
        .expect("retried after the 429");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(server.received_requests().await.expect("recording").len(), 2);
}

#[tokio::test]
async fn a_429_without_headers_backs_off_and_gives_up_as_rate_limited() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(SESSION_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("x-okta-request-id", "req-429"))
        .mount(&server)
        .await;
    let opts = ClientOptions {
        max_rate_limit_retries: 2,
        // Caps the 1 s, 2 s fallback backoff so the test stays fast.
        max_rate_limit_wait: Duration::from_millis(20),
        ..options()
    };
    let err = client(&server, opts).get_session(SOURCE, SESSION).await.expect_err("rate limited");
    match &err {
        OktaError::RateLimited { retries, request_id, .. } => {
            assert_eq!(*retries, 2);
            assert_eq!(request_id.as_deref(), Some("req-429"));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(err.is_retryable());
    let requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 3);
    assert!(requests[0].headers.get("x-okta-retry-count").is_none());
    assert_eq!(
        requests[2].headers.get("x-okta-retry-count").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
}

#[tokio::test]
async fn a_401_is_unauthorized_and_names_the_org_not_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(SESSIONS_PATH))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("x-okta-request-id", "req-401")
                .set_body_json(okta_error("E0000011", "Invalid token provided", &[])),
        )
        .mount(&server)
        .await;
    let err = client(&server, options()).list_sessions(SOURCE).await.expect_err("401");
    assert!(matches!(err, OktaError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("api token"), "{text}");
    assert!(text.contains("expired or revoked"), "{text}");
    assert!(text.contains(&server.uri()), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!format!("{err:?}").contains(TOKEN));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn okta_error_bodies_are_parsed() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(SESSION_PATH))
        .respond_with(
            ResponseTemplate::new(400).insert_header("x-okta-request-id", "req-400").set_body_json(
                okta_error(
                    "E0000001",
                    "Api validation failed: importSessionId",
                    &["Only a session that is in CREATED or IN_PROGRESS status can be canceled."],
                ),
            ),
        )
        .mount(&server)
        .await;
    let err = client(&server, options()).cancel_session(SOURCE, SESSION).await.expect_err("400");
    match &err {
        OktaError::Api { status, code, summary, causes, request_id, .. } => {
            assert_eq!(*status, 400);
            assert_eq!(code, "E0000001");
            assert_eq!(summary, "Api validation failed: importSessionId");
            assert_eq!(
                causes,
                &["Only a session that is in CREATED or IN_PROGRESS status can be canceled."]
            );
            assert_eq!(request_id.as_deref(), Some("req-400"));
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert!(!err.is_session_spacing());
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn the_five_minute_answer_is_recognised() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SESSIONS_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(spacing_body()))
        .expect(1) // a create is never retried by the client itself
        .mount(&server)
        .await;
    let err = client(&server, options()).create_session(SOURCE).await.expect_err("400");
    assert!(err.is_session_spacing(), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn not_found_forbidden_and_undecodable_bodies_are_typed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(SESSIONS_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_json(okta_error(
            "E0000007",
            "Not found: Resource not found: 0oa (AppInstance)",
            &[],
        )))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SESSIONS_PATH))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("www-authenticate", "Bearer error=\"insufficient_scope\""),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SESSION_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>"))
        .mount(&server)
        .await;
    let c = client(&server, options());
    let not_found = c.list_sessions(SOURCE).await.expect_err("404");
    assert!(matches!(not_found, OktaError::NotFound { .. }), "{not_found:?}");
    let forbidden = c.create_session(SOURCE).await.expect_err("403");
    assert!(matches!(forbidden, OktaError::Forbidden { .. }), "{forbidden:?}");
    assert!(forbidden.to_string().contains("insufficient_scope"));
    let decode = c.get_session(SOURCE, SESSION).await.expect_err("html");
    assert!(matches!(decode, OktaError::Decode { .. }), "{decode:?}");
    assert!(decode.to_string().contains("<html>login"));
}

#[tokio::test]
async fn bulk_loads_are_not_retried_on_5xx_but_reads_are() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/bulk-upsert")))
        .respond_with(ResponseTemplate::new(500).set_body_json(okta_error(
            "E0000009",
            "Internal Server Error",
            &[],
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SESSION_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SESSION_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json("COMPLETED")))
        .mount(&server)
        .await;
    let c = client(&server, options());
    let err = c.bulk_load(SOURCE, SESSION, RequestKind::Upsert, b"{}").await.expect_err("500");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_retryable());
    let session = c.get_session(SOURCE, SESSION).await.expect("retried read");
    assert_eq!(session.status, SessionStatus::Completed);
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{SESSION_PATH}/start-import")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(session_json("TRIGGERED"))
                .set_delay(Duration::from_secs(2)),
        )
        .expect(1) // never repeated: it may have been applied
        .mount(&server)
        .await;
    let opts = ClientOptions { request_timeout: Duration::from_millis(200), ..options() };
    let err = client(&server, opts).start_import(SOURCE, SESSION).await.expect_err("timeout");
    assert!(matches!(err, OktaError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    // Bind, learn the port, close: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = Url::parse(&format!("http://{addr}")).expect("url");
    let c = OktaClient::new(url, SecretString::from(TOKEN), options()).expect("client");
    let err = c.create_session(SOURCE).await.expect_err("refused");
    // Refused: certainly not applied, so not ambiguous (a write may be retried in place).
    assert!(matches!(err, OktaError::Connect { .. }), "{err:?}");
    assert!(!err.is_ambiguous());
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() {
    let url = Url::parse("https://acme.okta.com").expect("url");
    let c = OktaClient::new(url, SecretString::from(TOKEN), options()).expect("client");
    assert!(!format!("{c:?}").contains(TOKEN));

    let every_variant = vec![
        OktaError::Unauthorized {
            op: "list sessions",
            org: "https://acme.okta.com".into(),
            code: "E0000011".into(),
            summary: "Invalid token provided".into(),
            error_id: Some("oae1".into()),
            request_id: Some("r".into()),
        },
        OktaError::Forbidden {
            op: "create session",
            code: "E0000006".into(),
            summary: "You do not have permission".into(),
            causes: Vec::new(),
            error_id: None,
            request_id: None,
        },
        OktaError::NotFound {
            op: "get session",
            code: "E0000007".into(),
            summary: "Not found".into(),
            causes: Vec::new(),
            error_id: None,
            request_id: None,
        },
        OktaError::RateLimited {
            op: "bulk upsert",
            retries: 4,
            reset_at: chrono::DateTime::from_timestamp(1_609_459_200, 0),
            request_id: Some("r".into()),
        },
        OktaError::Api {
            op: "cancel session",
            status: 400,
            code: "E0000001".into(),
            summary: "Api validation failed".into(),
            causes: vec!["cause".into()],
            error_id: Some("oae2".into()),
            request_id: None,
        },
        OktaError::Timeout { op: "start import", timeout: Duration::from_secs(60) },
        OktaError::Transport { op: "list sessions", message: "connection reset".into() },
        OktaError::Connect { op: "list sessions", message: "connection refused".into() },
        OktaError::OAuth {
            status: 401,
            error: "invalid_client".into(),
            description: "The client_assertion signature is invalid.".into(),
        },
        OktaError::Decode {
            op: "get session",
            status: 200,
            message: "expected value".into(),
            snippet: "<html>".into(),
        },
        OktaError::Other("the okta org url must be an http(s) url".into()),
    ];
    for err in &every_variant {
        assert!(!err.to_string().contains(TOKEN), "{err}");
        assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
        // Our own wording is lowercase, without a trailing period.
        let text = err.to_string();
        assert!(text.chars().next().is_some_and(|c| c.is_lowercase()), "{text}");
        assert!(!text.ends_with('.'), "{text}");
    }

    // Errors really produced by the client, with the token in play.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header_exists("authorization"))
        .respond_with(ResponseTemplate::new(401).set_body_string(""))
        .mount(&server)
        .await;
    let err = client(&server, options()).list_sessions(SOURCE).await.expect_err("401");
    assert!(!err.to_string().contains(TOKEN));
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[test]
fn bad_org_urls_and_tokens_are_refused_without_echoing_the_token() {
    let bad_token = "abc\ndef-secret";
    let err = OktaClient::new(
        Url::parse("https://acme.okta.com").expect("url"),
        SecretString::from(bad_token),
        ClientOptions::default(),
    )
    .expect_err("newline in token");
    assert!(!err.to_string().contains("def-secret"));
    let err = OktaClient::new(
        Url::parse("mailto:admin@acme.com").expect("url"),
        SecretString::from(TOKEN),
        ClientOptions::default(),
    )
    .expect_err("not http");
    assert!(matches!(err, OktaError::Other(_)));
}
