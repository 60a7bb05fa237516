//! Shared helpers for the emulator's integration tests: start a sim on 127.0.0.1:0 and
//! talk to it over real HTTP.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xaas::sim::{SimConfig, SimHandle, SimSnapshot, spawn};

pub const SRC: &str = "0oasim0000000000000";
pub const TOKEN: &str = "sim-token";

pub struct T {
    pub sim: SimHandle,
    pub http: reqwest::Client,
}

impl T {
    pub async fn start(config: SimConfig) -> T {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sim = spawn(config, listener).await.expect("spawn sim");
        T { sim, http: reqwest::Client::new() }
    }

    pub async fn default() -> T {
        Self::start(SimConfig::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1/identity-sources/{SRC}{path}", self.sim.base_url())
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .header("Authorization", format!("SSWS {TOKEN}"));
        rb = match body {
            Some(b) => rb
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b).expect("json")),
            // reqwest sends no Content-Length on a bodiless POST (not even with an empty
            // body); Okta answers that with 411, so a correct client must set it explicitly.
            None => rb.header("Content-Length", "0"),
        };
        rb.send().await.expect("request")
    }

    pub async fn create(&self) -> reqwest::Response {
        self.req(reqwest::Method::POST, "/sessions", None).await
    }

    /// Create a session, asserting 201; returns its id.
    pub async fn create_ok(&self) -> String {
        let r = self.create().await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let v: Value = r.json().await.expect("session json");
        v["id"].as_str().expect("id").to_string()
    }

    pub async fn load(&self, sid: &str, endpoint: &str, body: &Value) -> reqwest::Response {
        self.req(reqwest::Method::POST, &format!("/sessions/{sid}/{endpoint}"), Some(body)).await
    }

    pub async fn load_ok(&self, sid: &str, endpoint: &str, body: &Value) {
        let r = self.load(sid, endpoint, body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    }

    pub async fn trigger(&self, sid: &str) -> reqwest::Response {
        self.req(reqwest::Method::POST, &format!("/sessions/{sid}/start-import"), None).await
    }

    pub async fn get(&self, sid: &str) -> Value {
        let r = self.req(reqwest::Method::GET, &format!("/sessions/{sid}"), None).await;
        assert_eq!(r.status(), 200);
        r.json().await.expect("session json")
    }

    pub async fn status(&self, sid: &str) -> String {
        self.get(sid).await["status"].as_str().expect("status").to_string()
    }

    /// Poll until the session reaches `want` (fails after 5 s).
    pub async fn wait_status(&self, sid: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.status(sid).await;
            if s == want {
                return;
            }
            assert!(Instant::now() < deadline, "session {sid} stuck in {s}, wanted {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// create → upsert → trigger → COMPLETED, then step past the 5-minute rule.
    pub async fn import(&self, body: &Value) -> String {
        let sid = self.create_ok().await;
        self.load_ok(&sid, "bulk-upsert", body).await;
        assert_eq!(self.trigger(&sid).await.status(), 200);
        self.wait_status(&sid, "COMPLETED").await;
        self.sim.advance_clock(Duration::from_secs(301));
        sid
    }

    pub fn snap(&self) -> SimSnapshot {
        self.sim.snapshot()
    }

    pub fn rules(&self) -> Vec<String> {
        self.snap().violations.into_iter().map(|v| v.rule).collect()
    }
}

pub fn upsert(users: &[(&str, Value)]) -> Value {
    let profiles: Vec<Value> =
        users.iter().map(|(id, p)| json!({"externalId": id, "profile": p})).collect();
    json!({"entityType": "USERS", "profiles": profiles})
}

pub fn delete(ids: &[&str]) -> Value {
    let profiles: Vec<Value> = ids.iter().map(|id| json!({"externalId": id})).collect();
    json!({"entityType": "USERS", "profiles": profiles})
}

/// `n` users `{prefix}{i}` with small valid profiles.
pub fn many(prefix: &str, range: std::ops::Range<usize>) -> Value {
    let profiles: Vec<Value> = range
        .map(|i| json!({"externalId": format!("{prefix}{i}"), "profile": {"firstName": "F", "email": format!("u{i}@example.com")}}))
        .collect();
    json!({"entityType": "USERS", "profiles": profiles})
}

/// Assert an Okta-shaped error and return its body.
pub async fn okta_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let v: Value = r.json().await.expect("error json");
    assert_eq!(v["errorCode"], code, "{v}");
    assert_eq!(v["errorLink"], code, "{v}");
    assert!(v["errorId"].as_str().is_some_and(|id| id.starts_with("oae") && id.len() > 10), "{v}");
    assert!(v["errorCauses"].is_array(), "{v}");
    v
}

pub fn causes(v: &Value) -> Vec<String> {
    v["errorCauses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["errorSummary"].as_str().map(str::to_string))
        .collect()
}
