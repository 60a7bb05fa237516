//! The HTTP JSON source against a real local axum server on 127.0.0.1:0: each pagination style,
//! each auth method, a 429 with Retry-After, a 500 mid-pagination (incomplete pull, also through
//! `xaas run` and its report), and a malformed JSON page.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use xaas::sources::http::{HttpSource, HttpSourceConfig};
use xaas::sources::{Source, SourceError};

#[derive(Default)]
struct Counters {
    token_requests: u32,
    hits: HashMap<String, u32>,
}

type S = Arc<Mutex<Counters>>;

/// Page `p` (1-based) of `pages` pages of 2 records each.
fn recs(p: u64) -> Vec<Value> {
    (0..2).map(|i| json!({ "id": format!("u{p}-{i}") })).collect()
}

fn q(params: &HashMap<String, String>, k: &str, default: u64) -> u64 {
    params.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn hit(s: &S, name: &str) -> u32 {
    let mut c = s.lock().unwrap();
    let n = c.hits.entry(name.to_string()).or_default();
    *n += 1;
    *n
}

fn authorized(h: &HeaderMap, name: &str, want: &str) -> bool {
    h.get(name).and_then(|v| v.to_str().ok()) == Some(want)
}

async fn next_url(Query(p): Query<HashMap<String, String>>) -> Response {
    let page = q(&p, "p", 1);
    let next = (page < 3).then(|| format!("/next?p={}", page + 1));
    axum::Json(json!({ "data": recs(page), "links": { "next": next } })).into_response()
}

async fn link(Query(p): Query<HashMap<String, String>>) -> Response {
    let page = q(&p, "p", 1);
    let mut h = HeaderMap::new();
    if page < 3 {
        h.insert("link", format!("</link?p={}>; rel=\"next\"", page + 1).parse().unwrap());
    }
    (h, axum::Json(json!(recs(page)))).into_response()
}

async fn cursor(Query(p): Query<HashMap<String, String>>) -> Response {
    let (page, next) = match p.get("cursor").map(String::as_str) {
        None => (1, json!("c2")),
        Some("c2") => (2, json!("c3")),
        Some("c3") => (3, json!(null)),
        Some(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    axum::Json(json!({ "items": recs(page), "meta": { "next_cursor": next } })).into_response()
}

/// Five records; `offset`/`limit`.
async fn offset(Query(p): Query<HashMap<String, String>>) -> Response {
    let all: Vec<Value> = (0..5).map(|i| json!({ "id": format!("o{i}") })).collect();
    let off = q(&p, "offset", 0) as usize;
    let lim = q(&p, "limit", 100) as usize;
    let page: Vec<Value> = all.iter().skip(off).take(lim).cloned().collect();
    axum::Json(json!({ "results": page, "total": 5 })).into_response()
}

/// Five records; `page`/`per_page`: pages of 2, 2, 1.
async fn page(Query(p): Query<HashMap<String, String>>) -> Response {
    let all: Vec<Value> = (0..5).map(|i| json!({ "id": format!("p{i}") })).collect();
    let n = q(&p, "page", 1) as usize;
    let size = q(&p, "per_page", 2) as usize;
    let page: Vec<Value> = all.iter().skip((n - 1) * size).take(size).cloned().collect();
    axum::Json(json!({ "users": page })).into_response()
}

/// POST search with the page number in the JSON body.
async fn search(axum::Json(body): axum::Json<Value>) -> Response {
    if body["filter"] != "all" {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let n = body["page"].as_u64().unwrap_or(0);
    let page = if n <= 2 { recs(n) } else { Vec::new() };
    axum::Json(json!({ "hits": page })).into_response()
}

async fn bearer(h: HeaderMap) -> Response {
    if !authorized(&h, "authorization", "Bearer s3cret-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!(recs(1))).into_response()
}

async fn basic(h: HeaderMap) -> Response {
    // "hr:pa55" in base64
    if !authorized(&h, "authorization", "Basic aHI6cGE1NQ==") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!(recs(1))).into_response()
}

async fn api_key(h: HeaderMap) -> Response {
    if !authorized(&h, "x-api-key", "k3y") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!(recs(1))).into_response()
}

async fn token(State(s): State<S>, h: HeaderMap, body: String) -> Response {
    // "client:csecret" in base64
    if !authorized(&h, "authorization", "Basic Y2xpZW50OmNzZWNyZXQ=")
        || !body.contains("grant_type=client_credentials")
        || !body.contains("scope=hr.read")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    s.lock().unwrap().token_requests += 1;
    axum::Json(json!({ "access_token": "issued-1", "token_type": "Bearer", "expires_in": 3600 }))
        .into_response()
}

async fn oauth_data(h: HeaderMap, Query(p): Query<HashMap<String, String>>) -> Response {
    if !authorized(&h, "authorization", "Bearer issued-1") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let page = q(&p, "p", 1);
    let next = (page < 3).then(|| format!("/oauth-data?p={}", page + 1));
    axum::Json(json!({ "data": recs(page), "next": next })).into_response()
}

async fn too_many(State(s): State<S>) -> Response {
    if hit(&s, "429") == 1 {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    axum::Json(json!(recs(1))).into_response()
}

/// Page 1 fine, page 2 always 500.
async fn fail500(Query(p): Query<HashMap<String, String>>) -> Response {
    match q(&p, "p", 1) {
        1 => axum::Json(json!({ "data": [
            {"id": "emp000001@example.com", "active": "true", "first_name": "A", "last_name": "B", "email": "emp000001@example.com"}
        ], "next": "/fail500?p=2" }))
        .into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn malformed(Query(p): Query<HashMap<String, String>>) -> Response {
    match q(&p, "p", 1) {
        1 => axum::Json(json!({ "data": recs(1), "next": "/malformed?p=2" })).into_response(),
        _ => ([("content-type", "application/json")], "{\"data\": [ {\"id\": ").into_response(),
    }
}

async fn server() -> (String, S) {
    let state = S::default();
    let app = Router::new()
        .route("/next", get(next_url))
        .route("/link", get(link))
        .route("/cursor", get(cursor))
        .route("/offset", get(offset))
        .route("/page", get(page))
        .route("/search", post(search))
        .route("/bearer", get(bearer))
        .route("/basic", get(basic))
        .route("/apikey", get(api_key))
        .route("/oauth/token", post(token))
        .route("/oauth-data", get(oauth_data))
        .route("/429", get(too_many))
        .route("/fail500", get(fail500))
        .route("/malformed", get(malformed))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn source(config: Value, base_dir: &Path) -> HttpSource {
    let c: HttpSourceConfig = serde_json::from_value(config).unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    HttpSource::new(&c, base_dir)
}

/// The ids pulled, or the error that ended the pull.
async fn pull(src: &HttpSource) -> Result<Vec<String>, (Vec<String>, SourceError)> {
    let mut ids = Vec::new();
    let mut stream = src.pull();
    while let Some(item) = stream.next().await {
        match item {
            Ok(Ok(r)) => ids.push(r.fields["id"].as_str().unwrap().to_string()),
            Ok(Err(rej)) => panic!("unexpected rejection {rej}"),
            Err(e) => return Err((ids, e)),
        }
    }
    Ok(ids)
}

fn six() -> Vec<String> {
    (1..=3).flat_map(|p| (0..2).map(move |i| format!("u{p}-{i}"))).collect()
}

#[tokio::test]
async fn next_url_in_body() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/next"), "records": "/data",
               "pagination": {"type": "next_url", "next": "/links/next"}}),
        Path::new("/"),
    );
    assert_eq!(pull(&src).await.unwrap(), six());
}

#[tokio::test]
async fn link_header() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/link"), "pagination": {"type": "link_header"}}),
        Path::new("/"),
    );
    assert_eq!(pull(&src).await.unwrap(), six());
}

#[tokio::test]
async fn cursor_param() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/cursor"), "records": "/items",
               "pagination": {"type": "cursor", "param": "cursor", "next_cursor": "/meta/next_cursor"}}),
        Path::new("/"),
    );
    assert_eq!(pull(&src).await.unwrap(), six());
}

#[tokio::test]
async fn offset_limit_stops_on_a_short_page() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/offset"), "records": "/results",
               "pagination": {"type": "offset", "limit": 2, "total": "/total"}}),
        Path::new("/"),
    );
    assert_eq!(pull(&src).await.unwrap(), ["o0", "o1", "o2", "o3", "o4"]);
}

#[tokio::test]
async fn page_number_stops_on_a_short_page() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/page"), "records": "/users",
               "pagination": {"type": "page", "size_param": "per_page", "size": 2}}),
        Path::new("/"),
    );
    assert_eq!(pull(&src).await.unwrap(), ["p0", "p1", "p2", "p3", "p4"]);
}

#[tokio::test]
async fn post_with_page_number_in_the_body_stops_on_an_empty_page() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/search"), "method": "post", "body": {"filter": "all"},
               "records": "/hits", "pagination": {"type": "page", "start": 1}}),
        Path::new("/"),
    );
    let ids = pull(&src).await.unwrap();
    assert_eq!(ids, ["u1-0", "u1-1", "u2-0", "u2-1"]);
}

#[tokio::test]
async fn hard_page_cap_makes_the_pull_incomplete() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/next"), "records": "/data", "max_pages": 2,
               "pagination": {"type": "next_url", "next": "/links/next"}}),
        Path::new("/"),
    );
    let (ids, e) = pull(&src).await.unwrap_err();
    assert_eq!(ids.len(), 4);
    assert!(e.to_string().contains("max_pages = 2"), "{e}");
}

#[tokio::test]
async fn bearer_token_from_a_file() {
    let (base, _) = server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
    let src = source(
        json!({"url": format!("{base}/bearer"), "auth": {"type": "bearer", "token": {"file": "token"}}}),
        dir.path(),
    );
    assert_eq!(pull(&src).await.unwrap(), ["u1-0", "u1-1"]);
}

#[tokio::test]
async fn basic_auth_from_the_environment() {
    let (base, _) = server().await;
    // A name no other test reads; set before the source reads it.
    unsafe { std::env::set_var("XAAS_TEST_HTTP_BASIC_PASSWORD", "pa55") };
    let src = source(
        json!({"url": format!("{base}/basic"),
               "auth": {"type": "basic", "username": "hr", "password": {"env": "XAAS_TEST_HTTP_BASIC_PASSWORD"}}}),
        Path::new("/"),
    );
    assert_eq!(pull(&src).await.unwrap(), ["u1-0", "u1-1"]);
}

#[tokio::test]
async fn api_key_header_and_a_wrong_key_is_a_clear_error_without_the_key() {
    let (base, _) = server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "k3y").unwrap();
    let src = source(
        json!({"url": format!("{base}/apikey"),
               "auth": {"type": "api_key", "header": "X-API-Key", "key": {"file": "key"}}}),
        dir.path(),
    );
    assert_eq!(pull(&src).await.unwrap(), ["u1-0", "u1-1"]);
    std::fs::write(dir.path().join("key"), "wrong-key").unwrap();
    let (_, e) = pull(&src).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("401"), "{msg}");
    assert!(!msg.contains("wrong-key"), "the secret leaked: {msg}");
}

#[tokio::test]
async fn oauth2_client_credentials_token_is_fetched_once_and_cached() {
    let (base, state) = server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "csecret").unwrap();
    let src = source(
        json!({"url": format!("{base}/oauth-data"), "records": "/data",
               "pagination": {"type": "next_url", "next": "/next"},
               "auth": {"type": "oauth2_client_credentials", "token_url": format!("{base}/oauth/token"),
                        "client_id": "client", "client_secret": {"file": "secret"}, "scope": "hr.read"}}),
        dir.path(),
    );
    assert_eq!(pull(&src).await.unwrap(), six());
    assert_eq!(state.lock().unwrap().token_requests, 1, "three pages, one token");
}

#[tokio::test]
async fn a_429_waits_for_retry_after_then_succeeds() {
    let (base, _) = server().await;
    let src = source(json!({"url": format!("{base}/429"), "retry_initial_ms": 1}), Path::new("/"));
    let started = Instant::now();
    assert_eq!(pull(&src).await.unwrap(), ["u1-0", "u1-1"]);
    // Retry-After: 1 beats the 1 ms computed backoff.
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_500_mid_pagination_makes_the_pull_incomplete() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/fail500"), "records": "/data", "max_retries": 1,
               "retry_initial_ms": 5, "pagination": {"type": "next_url", "next": "/next"}}),
        Path::new("/"),
    );
    let (ids, e) = pull(&src).await.unwrap_err();
    assert_eq!(ids.len(), 1);
    assert!(e.to_string().contains("500"), "{e}");
}

#[tokio::test]
async fn a_malformed_json_page_makes_the_pull_incomplete() {
    let (base, _) = server().await;
    let src = source(
        json!({"url": format!("{base}/malformed"), "records": "/data",
               "pagination": {"type": "next_url", "next": "/next"}}),
        Path::new("/"),
    );
    let (ids, e) = pull(&src).await.unwrap_err();
    assert_eq!(ids.len(), 2);
    assert!(e.to_string().contains("not valid json"), "{e}");
}

/// Through the real binary: the report marks the pull incomplete and nothing reaches Okta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xaas_run_reports_an_incomplete_pull_and_sends_nothing() {
    let (base, _) = server().await;
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: {}\n  auth:\n    type: api_token\n    token_env: XAAS_TEST_TOKEN\njobs:\n  - name: hr\n    identity_source_id: {}\n    source:\n      type: http\n      url: {base}/fail500\n      records: /data\n      max_retries: 1\n      retry_initial_ms: 5\n      pagination:\n        type: next_url\n        next: /next\n    mapping: {}\n",
            sim.base_url(),
            common::SOURCE,
            common::mapping_path().display()
        ),
    )
    .unwrap();
    let report_path = dir.path().join("report.json");
    let out = common::xaas_async(common::run_args(&config, &report_path), common::TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("pull INCOMPLETE"), "{stdout}");
    let report = common::read_report(&report_path);
    assert_eq!(report["jobs"][0]["pull_complete"], false);
    assert_eq!(report["jobs"][0]["outcome"], "failed");
    let snap = sim.snapshot();
    assert!(snap.sessions.is_empty(), "nothing may be sent after an incomplete pull");
}
