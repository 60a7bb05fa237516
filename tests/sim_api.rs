//! Integration tests of the Okta emulator over real HTTP: lifecycle, session rules, limits,
//! errors, rate limits and processing (FACTS §4–§9, §11).

mod sim_support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sim_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xaas::sim::{SessionStatus, SimConfig, SimLimits, SimSnapshot};

fn is_okta_time(s: &str) -> bool {
    // 2026-05-13T05:52:24.000Z
    s.len() == 24 && s.ends_with(".000Z") && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[tokio::test]
async fn happy_lifecycle_creates_users() {
    let t = T::default().await;
    let r = t.create().await;
    assert_eq!(r.status(), 201);
    let s: Value = r.json().await.unwrap();
    let sid = s["id"].as_str().unwrap().to_string();
    assert!(
        sid.starts_with("aps") && sid.len() == 20 && sid.chars().all(|c| c.is_ascii_alphanumeric()),
        "{sid}"
    );
    assert_eq!(s["identitySourceId"], SRC);
    assert_eq!(s["status"], "CREATED");
    assert_eq!(s["importType"], "INCREMENTAL");
    assert!(is_okta_time(s["created"].as_str().unwrap()), "{s}");
    assert_eq!(s["created"], s["lastUpdated"]);

    let body = upsert(&[
        ("e1", json!({"firstName": "Ada", "email": "ada@example.com"})),
        ("e2", json!({"firstName": "Bob"})),
    ]);
    let r = t.load(&sid, "bulk-upsert", &body).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers().get("content-length").unwrap(), "0");
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(t.status(&sid).await, "IN_PROGRESS");

    let listed: Vec<Value> = t.req(Method::GET, "/sessions", None).await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], sid.as_str());

    let r = t.trigger(&sid).await;
    assert_eq!(r.status(), 200);
    let trig: Value = r.json().await.unwrap();
    assert!(trig.is_object(), "start-import returns one object, not an array");
    assert_eq!(trig["status"], "TRIGGERED");
    t.wait_status(&sid, "COMPLETED").await;

    let listed: Vec<Value> = t.req(Method::GET, "/sessions", None).await.json().await.unwrap();
    assert!(listed.is_empty(), "a COMPLETED session is not active: {listed:?}");
    let snap = t.snap();
    assert_eq!(snap.users.len(), 2);
    let ada = snap.users.iter().find(|u| u.external_id == "e1").unwrap();
    assert_eq!(ada.status, "ACTIVE");
    assert!(ada.id.starts_with("0ua") && ada.id.len() == 20);
    assert_eq!(ada.profile.get("firstName").map(String::as_str), Some("Ada"));
    let view = &snap.sessions[0];
    assert_eq!(view.status, SessionStatus::Completed);
    assert_eq!(view.loads.len(), 1);
    assert_eq!(view.loads[0].kind, "upsert");
    assert_eq!(view.loads[0].profiles, 2);
    assert_eq!(view.distinct_users, 2);
    assert!(view.triggered.is_some());
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn five_minute_rule_then_accepted_after_advance() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    // An open (CREATED) session blocks, however old it is.
    t.sim.advance_clock(Duration::from_secs(600));
    let v = okta_error(t.create().await, 400, "E0000001").await;
    assert_eq!(
        causes(&v),
        [
            "Only one active import session per identity source is allowed to be created every 5 minutes"
        ]
    );

    t.load_ok(&sid, "bulk-upsert", &upsert(&[("e1", json!({"firstName": "A"}))])).await;
    assert_eq!(t.trigger(&sid).await.status(), 200);
    t.wait_status(&sid, "COMPLETED").await;
    // Completed, but triggered less than 5 simulated minutes ago.
    t.sim.advance_clock(Duration::from_secs(299));
    okta_error(t.create().await, 400, "E0000001").await;
    t.sim.advance_clock(Duration::from_secs(2));
    assert_eq!(t.create().await.status(), 201);
    let spacing: Vec<_> =
        t.snap().violations.into_iter().filter(|v| v.rule == "session_spacing").collect();
    assert_eq!(spacing.len(), 2);
    assert_eq!(spacing[0].method, "POST");
    assert!(spacing[0].path.ends_with("/sessions"));
}

#[tokio::test]
async fn cancelled_session_does_not_block_a_new_one() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let r = t.req(Method::DELETE, &format!("/sessions/{sid}"), None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(t.status(&sid).await, "CLOSED");
    let listed: Vec<Value> = t.req(Method::GET, "/sessions", None).await.json().await.unwrap();
    assert!(listed.is_empty());
    assert_eq!(
        t.create().await.status(),
        201,
        "a CLOSED session must not trigger the 5-minute rule"
    );
    assert!(t.rules().is_empty());
}

#[tokio::test]
async fn trigger_of_created_session_is_rejected() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let v = okta_error(t.trigger(&sid).await, 400, "E0000001").await;
    assert_eq!(v["errorSummary"], "Api validation failed: importSessionId");
    assert_eq!(t.status(&sid).await, "CREATED");
    let snap = t.snap();
    assert_eq!(snap.violations.len(), 1);
    assert_eq!(snap.violations[0].rule, "trigger_created_session");
    assert_eq!(snap.violations[0].session_id.as_deref(), Some(sid.as_str()));
}

#[tokio::test]
async fn cancel_of_triggered_session_returns_the_recorded_body() {
    let t =
        T::start(SimConfig { processing_delay: Duration::from_secs(30), ..SimConfig::default() })
            .await;
    let sid = t.create_ok().await;
    t.load_ok(&sid, "bulk-upsert", &upsert(&[("e1", json!({"firstName": "A"}))])).await;
    assert_eq!(t.trigger(&sid).await.status(), 200);
    let v =
        okta_error(t.req(Method::DELETE, &format!("/sessions/{sid}"), None).await, 400, "E0000001")
            .await;
    assert_eq!(v["errorSummary"], "Api validation failed: importSessionId");
    assert_eq!(
        causes(&v),
        ["Only a session that is in CREATED or IN_PROGRESS status can be canceled."]
    );
    assert_eq!(t.status(&sid).await, "TRIGGERED");
    // Loads into a TRIGGERED session are refused too.
    okta_error(
        t.load(&sid, "bulk-upsert", &upsert(&[("e2", json!({"firstName": "B"}))])).await,
        400,
        "E0000001",
    )
    .await;
    assert_eq!(t.rules(), ["cancel_not_open_session", "load_not_open_session"]);
}

#[tokio::test]
async fn sessions_expire_after_24h_without_requests() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    t.sim.advance_clock(Duration::from_secs(23 * 3600));
    // A request on the session counts as activity and restarts the 24 h.
    assert_eq!(t.status(&sid).await, "CREATED");
    t.sim.advance_clock(Duration::from_secs(23 * 3600));
    assert_eq!(t.status(&sid).await, "CREATED");
    t.sim.advance_clock(Duration::from_secs(24 * 3600));
    assert_eq!(t.status(&sid).await, "EXPIRED");
    let listed: Vec<Value> = t.req(Method::GET, "/sessions", None).await.json().await.unwrap();
    assert!(listed.is_empty());
    okta_error(
        t.load(&sid, "bulk-upsert", &upsert(&[("e1", json!({"firstName": "A"}))])).await,
        400,
        "E0000001",
    )
    .await;
    assert_eq!(t.create().await.status(), 201, "an EXPIRED session no longer blocks");

    // IN_PROGRESS sessions expire as well (S2), and the snapshot evaluates expiry too.
    let t2 = T::default().await;
    let sid2 = t2.create_ok().await;
    t2.load_ok(&sid2, "bulk-upsert", &upsert(&[("e1", json!({"firstName": "A"}))])).await;
    t2.sim.advance_clock(Duration::from_secs(24 * 3600));
    assert_eq!(t2.snap().sessions[0].status, SessionStatus::Expired);
}

#[tokio::test]
async fn more_than_200_profiles_is_rejected() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let v =
        okta_error(t.load(&sid, "bulk-upsert", &many("u", 0..201)).await, 400, "E0000001").await;
    assert!(causes(&v)[0].contains("200"), "{v}");
    assert_eq!(t.rules(), ["max_profiles_per_request"]);
    assert_eq!(t.status(&sid).await, "CREATED", "a rejected load does not count");
    t.load_ok(&sid, "bulk-upsert", &many("u", 0..200)).await;
    okta_error(t.load(&sid, "bulk-delete", &delete(&vec!["x"; 201])).await, 400, "E0000001").await;
}

#[tokio::test]
async fn body_over_200kb_is_rejected_not_buffered() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let addr = "x".repeat(1500);
    let users: Vec<(String, Value)> =
        (0..150).map(|i| (format!("u{i}"), json!({"homeAddress": addr}))).collect();
    let refs: Vec<(&str, Value)> = users.iter().map(|(id, p)| (id.as_str(), p.clone())).collect();
    let body = upsert(&refs);
    assert!(serde_json::to_vec(&body).unwrap().len() > 204_800);
    let v = okta_error(t.load(&sid, "bulk-upsert", &body).await, 400, "E0000001").await;
    assert!(causes(&v)[0].contains("204800"), "{v}");
    // Far beyond: 5 MB of junk is refused without being parsed (or buffered).
    let huge = vec![b'a'; 5 << 20];
    let r = t
        .http
        .post(t.url(&format!("/sessions/{sid}/bulk-upsert")))
        .header("Authorization", format!("SSWS {TOKEN}"))
        .body(huge)
        .send()
        .await;
    if let Ok(r) = r {
        // The server may answer before the client finished writing; if the answer arrives, it is the Okta 400.
        okta_error(r, 400, "E0000001").await;
    }
    assert_eq!(t.rules()[0], "max_request_bytes");
    assert!(t.snap().sessions[0].loads.is_empty());
}

#[tokio::test]
async fn the_51st_request_of_a_session_is_rejected() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    for i in 0..50 {
        t.load_ok(&sid, "bulk-upsert", &many("u", i..i + 1)).await;
    }
    let v =
        okta_error(t.load(&sid, "bulk-upsert", &many("u", 50..51)).await, 400, "E0000001").await;
    assert!(causes(&v)[0].contains("50"), "{v}");
    assert_eq!(t.rules(), ["max_requests_per_session"]);
    assert_eq!(t.snap().sessions[0].loads.len(), 50);
    assert_eq!(t.trigger(&sid).await.status(), 200, "the session itself stays usable");
}

#[tokio::test]
async fn the_10001st_user_of_a_session_is_rejected() {
    // Default 10,000-user limit; bigger requests so it is reachable within 50 loads.
    let limits = SimLimits {
        max_profiles_per_request: 1000,
        max_request_bytes: 1 << 20,
        ..SimLimits::default()
    };
    let t = T::start(SimConfig { limits, ..SimConfig::default() }).await;
    let sid = t.create_ok().await;
    for i in 0..10 {
        t.load_ok(&sid, "bulk-upsert", &many("u", i * 1000..(i + 1) * 1000)).await;
    }
    assert_eq!(t.snap().sessions[0].distinct_users, 10_000);
    okta_error(t.load(&sid, "bulk-upsert", &many("u", 10_000..10_001)).await, 400, "E0000001")
        .await;
    assert_eq!(t.rules(), ["max_users_per_session"]);
    // Re-sending a known user adds no new one: accepted, but a duplicate.
    t.load_ok(&sid, "bulk-delete", &delete(&["u5"])).await;
    assert_eq!(t.rules(), ["max_users_per_session", "duplicate_external_id_in_session"]);
    assert_eq!(t.snap().sessions[0].distinct_users, 10_000);
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let t = T::default().await;
    for auth in [None, Some("SSWS nope"), Some("Bearer sim-token"), Some("sim-token")] {
        let mut rb = t.http.get(t.url("/sessions"));
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        let r = rb.send().await.unwrap();
        assert!(r.headers().contains_key("x-okta-request-id"));
        let v = okta_error(r, 401, "E0000011").await;
        assert_eq!(v["errorSummary"], "Invalid token provided");
    }
    assert_eq!(t.rules(), vec!["invalid_token"; 4]);
    assert!(t.snap().sessions.is_empty());
}

#[tokio::test]
async fn unknown_source_or_session_is_404() {
    let config = SimConfig {
        identity_sources: vec![SRC.into(), "0oaother00000000000".into()],
        ..SimConfig::default()
    };
    let t = T::start(config).await;
    let r = t
        .http
        .post(format!("{}/api/v1/identity-sources/0oanope/sessions", t.sim.base_url()))
        .header("Authorization", format!("SSWS {TOKEN}"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    okta_error(r, 404, "E0000007").await;
    okta_error(t.req(Method::GET, "/sessions/apsdoesnotexist00000", None).await, 404, "E0000007")
        .await;
    // A session is only reachable under its own identity source.
    let sid = t.create_ok().await;
    let r = t
        .http
        .get(format!(
            "{}/api/v1/identity-sources/0oaother00000000000/sessions/{sid}",
            t.sim.base_url()
        ))
        .header("Authorization", format!("SSWS {TOKEN}"))
        .send()
        .await
        .unwrap();
    okta_error(r, 404, "E0000007").await;
    assert_eq!(t.rules(), ["unknown_identity_source", "unknown_session", "unknown_session"]);
}

/// Send raw HTTP/1.1 and return the status line's code.
async fn raw(t: &T, request: String) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(t.sim.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn post_without_content_length_is_411() {
    let t = T::default().await;
    let path = format!("/api/v1/identity-sources/{SRC}/sessions");
    let (code, text) =
        raw(&t, format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: SSWS {TOKEN}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(code, 411, "{text}");
    assert!(text.to_ascii_lowercase().contains("x-okta-request-id"), "{text}");
    // Chunked bodies carry no Content-Length either.
    let (code, text) = raw(
        &t,
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: SSWS {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 411, "{text}");
    assert_eq!(t.rules(), ["missing_content_length", "missing_content_length"]);
    assert!(t.snap().sessions.is_empty());
    // With Content-Length: 0 the same request succeeds.
    let (code, text) = raw(
        &t,
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: SSWS {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 201, "{text}");
}

#[tokio::test]
async fn rate_limit_gives_429_with_headers() {
    let t = T::start(SimConfig { rate_limit_per_minute: 3, ..SimConfig::default() }).await;
    let mut resets = Vec::new();
    for want_remaining in ["2", "1", "0"] {
        let r = t.req(Method::GET, "/sessions", None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-rate-limit-limit"], "3");
        assert_eq!(r.headers()["x-rate-limit-remaining"], want_remaining);
        resets.push(r.headers()["x-rate-limit-reset"].to_str().unwrap().to_string());
    }
    let r = t.req(Method::GET, "/sessions", None).await;
    assert_eq!(r.headers()["x-rate-limit-limit"], "3");
    assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
    let reset: u64 = r.headers()["x-rate-limit-reset"].to_str().unwrap().parse().unwrap();
    assert!(r.headers().contains_key("date"));
    assert_eq!(reset.to_string(), resets[0], "same fixed window");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(reset > now && reset <= now + 61, "reset {reset} now {now}");
    let v = okta_error(r, 429, "E0000047").await;
    assert_eq!(v["errorSummary"], "API call exceeded rate limit due to too many requests.");
    let snap = t.snap();
    assert_eq!((snap.requests_total, snap.rate_limited_total), (4, 1));
    assert!(snap.violations.is_empty(), "429s are counted, not violations");
}

#[tokio::test]
async fn concurrency_limit_gives_429_with_limit_zero() {
    let config = SimConfig {
        concurrency_limit: 2,
        latency: Duration::from_millis(500),
        ..SimConfig::default()
    };
    let t = T::start(config).await;
    let calls = (0..4).map(|_| t.req(Method::GET, "/sessions", None));
    let responses = futures::future::join_all(calls).await;
    let mut ok = 0;
    for r in responses {
        if r.status() == 429 {
            assert_eq!(r.headers()["x-rate-limit-limit"], "0");
            assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
            assert!(r.headers().contains_key("x-rate-limit-reset"));
        } else {
            assert_eq!(r.status(), 200);
            ok += 1;
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(t.snap().rate_limited_total, 2);
}

#[tokio::test]
async fn delete_only_of_unknown_ids_stays_created() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    t.load_ok(&sid, "bulk-delete", &delete(&["ghost1", "ghost2"])).await;
    assert_eq!(t.status(&sid).await, "CREATED");
    okta_error(t.trigger(&sid).await, 400, "E0000001").await;
    // A delete naming a known user does move it.
    t.sim.seed_user(SRC, "known", BTreeMap::new(), true);
    t.load_ok(&sid, "bulk-delete", &delete(&["known"])).await;
    assert_eq!(t.status(&sid).await, "IN_PROGRESS");
}

#[tokio::test]
async fn delete_deactivates_and_upsert_reactivates() {
    let t = T::default().await;
    t.import(&upsert(&[
        ("u1", json!({"firstName": "A", "title": "x"})),
        ("u2", json!({"firstName": "B"})),
    ]))
    .await;
    let id_before = t.snap().users[0].id.clone();
    let sid = t.create_ok().await;
    t.load_ok(&sid, "bulk-delete", &delete(&["u1", "nobody"])).await;
    assert_eq!(t.status(&sid).await, "IN_PROGRESS");
    assert_eq!(t.trigger(&sid).await.status(), 200);
    t.wait_status(&sid, "COMPLETED").await;
    t.sim.advance_clock(Duration::from_secs(301));
    let snap = t.snap();
    let status: Vec<_> =
        snap.users.iter().map(|u| (u.external_id.as_str(), u.status.as_str())).collect();
    assert_eq!(
        status,
        [("u1", "DEACTIVATED"), ("u2", "ACTIVE")],
        "deleted users are deactivated, unknown ids ignored"
    );

    t.import(&upsert(&[("u1", json!({"firstName": "A2"}))])).await;
    let u1 = t.snap().users.into_iter().find(|u| u.external_id == "u1").unwrap();
    assert_eq!(u1.status, "ACTIVE");
    assert_eq!(u1.id, id_before, "same Okta user, reactivated");
    assert_eq!(
        u1.profile,
        BTreeMap::from([("firstName".to_string(), "A2".to_string())]),
        "profile replaced, not merged"
    );
}

#[tokio::test]
async fn duplicate_external_ids_are_accepted_but_recorded() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    t.load_ok(
        &sid,
        "bulk-upsert",
        &upsert(&[("u1", json!({"firstName": "A"})), ("u1", json!({"firstName": "B"}))]),
    )
    .await;
    assert_eq!(t.rules(), ["duplicate_external_id_in_session"]);
    t.load_ok(&sid, "bulk-upsert", &upsert(&[("u2", json!({"firstName": "C"}))])).await;
    assert_eq!(t.rules().len(), 1, "no duplicate in the second load");
    t.load_ok(&sid, "bulk-delete", &delete(&["u2"])).await;
    let snap = t.snap();
    assert_eq!(snap.violations.len(), 2);
    assert!(snap.violations[1].message.contains("u2"), "{:?}", snap.violations[1]);
    assert_eq!(snap.violations[1].session_id.as_deref(), Some(sid.as_str()));
    assert_eq!(snap.sessions[0].distinct_users, 2);
}

#[tokio::test]
async fn profile_values_must_be_valid_strings() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    for (value, rule) in [
        (json!({"age": 42}), "non_string_value"),
        (json!({"groups": ["a"]}), "non_string_value"),
        (json!({"manager": {"id": "x"}}), "non_string_value"),
        (json!({"email": "not-an-email"}), "profile_field_format"),
        (json!({"firstName": "x".repeat(51)}), "profile_field_length"),
        (json!({"homeAddress": "x".repeat(4097)}), "profile_field_length"),
    ] {
        let field = value.as_object().unwrap().keys().next().unwrap().clone();
        let v = okta_error(
            t.load(&sid, "bulk-upsert", &upsert(&[("u1", value)])).await,
            400,
            "E0000001",
        )
        .await;
        assert!(causes(&v)[0].contains(&field), "cause must name {field}: {v}");
        assert_eq!(t.rules().last().map(String::as_str), Some(rule));
    }
    assert_eq!(t.status(&sid).await, "CREATED");
    let long_id = "x".repeat(513);
    okta_error(
        t.load(&sid, "bulk-upsert", &upsert(&[(long_id.as_str(), json!({"firstName": "A"}))]))
            .await,
        400,
        "E0000001",
    )
    .await;
    okta_error(
        t.load(&sid, "bulk-upsert", &json!({"entityType": "USERS", "profiles": []})).await,
        400,
        "E0000001",
    )
    .await;
    assert_eq!(t.rules().last().map(String::as_str), Some("empty_profiles"));

    // Accepted but discouraged: an empty value on a custom attribute, an empty profile.
    t.load_ok(
        &sid,
        "bulk-upsert",
        &upsert(&[("u1", json!({"department": ""})), ("u2", json!({}))]),
    )
    .await;
    let rules = t.rules();
    assert_eq!(&rules[rules.len() - 2..], ["empty_value", "empty_profile"]);
}

#[tokio::test]
async fn malformed_bodies_are_e0000003() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let url = t.url(&format!("/sessions/{sid}/bulk-upsert"));
    for body in ["", "{not json", r#"{"entityType":"GROUPS","profiles":[{"externalId":"a"}]}"#] {
        let r = t
            .http
            .post(&url)
            .header("Authorization", format!("SSWS {TOKEN}"))
            .header("Content-Length", body.len().to_string())
            .body(body)
            .send()
            .await
            .unwrap();
        okta_error(r, 400, "E0000003").await;
    }
    assert_eq!(t.rules(), ["missing_body", "malformed_json", "invalid_entity_type"]);
}

#[tokio::test]
async fn triggered_sessions_of_a_source_are_processed_sequentially() {
    let t = T::start(SimConfig {
        processing_delay: Duration::from_millis(400),
        ..SimConfig::default()
    })
    .await;
    let s1 = t.create_ok().await;
    t.load_ok(&s1, "bulk-upsert", &upsert(&[("u", json!({"firstName": "First"}))])).await;
    assert_eq!(t.trigger(&s1).await.status(), 200);
    t.sim.advance_clock(Duration::from_secs(301));
    let s2 = t.create_ok().await;
    t.load_ok(&s2, "bulk-upsert", &upsert(&[("u", json!({"firstName": "Second"}))])).await;
    assert_eq!(t.trigger(&s2).await.status(), 200);
    t.wait_status(&s1, "COMPLETED").await;
    assert_eq!(
        t.status(&s2).await,
        "TRIGGERED",
        "s2 waits for s1, then takes its own processing time"
    );
    assert_eq!(t.snap().users[0].profile["firstName"], "First");
    t.wait_status(&s2, "COMPLETED").await;
    assert_eq!(t.snap().users[0].profile["firstName"], "Second");
}

#[tokio::test]
async fn fail_next_session_ends_in_error_without_applying() {
    let t = T::default().await;
    t.sim.fail_next_session(SRC);
    let sid = t.create_ok().await;
    t.load_ok(&sid, "bulk-upsert", &upsert(&[("u", json!({"firstName": "A"}))])).await;
    assert_eq!(t.trigger(&sid).await.status(), 200);
    t.wait_status(&sid, "ERROR").await;
    assert!(t.snap().users.is_empty());
    // Only the next one fails.
    t.sim.advance_clock(Duration::from_secs(301));
    t.import(&upsert(&[("u", json!({"firstName": "A"}))])).await;
    assert_eq!(t.snap().users.len(), 1);
}

#[tokio::test]
async fn injected_sessions_follow_the_rules() {
    let t = T::default().await;
    let stale = t.sim.inject_session(SRC, SessionStatus::InProgress);
    okta_error(t.create().await, 400, "E0000001").await;
    assert_eq!(t.req(Method::DELETE, &format!("/sessions/{stale}"), None).await.status(), 204);
    let trig = t.sim.inject_session(SRC, SessionStatus::Triggered);
    t.wait_status(&trig, "COMPLETED").await;
}

#[tokio::test]
async fn group_endpoints_validate_and_store() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let too_many: Vec<Value> = (0..201)
        .map(|i| json!({"externalId": format!("g{i}"), "profile": {"displayName": "G"}}))
        .collect();
    okta_error(
        t.load(&sid, "bulk-groups-upsert", &json!({"profiles": too_many})).await,
        400,
        "E0000001",
    )
    .await;
    okta_error(
        t.load(&sid, "bulk-groups-delete", &json!({"externalIds": ["x".repeat(256)]})).await,
        400,
        "E0000001",
    )
    .await;
    okta_error(
        t.load(&sid, "bulk-group-memberships-upsert", &json!({"memberships": []})).await,
        400,
        "E0000001",
    )
    .await;
    assert_eq!(t.rules(), ["max_profiles_per_request", "group_id_length", "empty_profiles"]);

    t.load_ok(&sid, "bulk-upsert", &upsert(&[("u1", json!({"firstName": "A"}))])).await;
    t.load_ok(
        &sid,
        "bulk-groups-upsert",
        &json!({"profiles": [{"externalId": "g1", "profile": {"displayName": "Eng"}}]}),
    )
    .await;
    t.load_ok(
        &sid,
        "bulk-group-memberships-upsert",
        &json!({"memberships": [{"groupExternalId": "g1", "memberExternalIds": ["u1", "u2"]}]}),
    )
    .await;
    t.load_ok(
        &sid,
        "bulk-group-memberships-delete",
        &json!({"memberships": [{"groupExternalId": "g1", "memberExternalIds": ["u2"]}]}),
    )
    .await;
    assert_eq!(t.trigger(&sid).await.status(), 200);
    t.wait_status(&sid, "COMPLETED").await;
    let snap = t.snap();
    assert_eq!(snap.groups.len(), 1);
    assert_eq!(snap.groups[0].display_name.as_deref(), Some("Eng"));
    assert!(snap.groups[0].id.starts_with("00g"));
    // u2 is no user of the identity source: its membership is not applied (and is a
    // violation), and the delete naming it again is skipped and counted.
    assert_eq!(snap.groups[0].members, ["u1"]);
    assert_eq!(snap.memberships_skipped, 1);
    assert_eq!(
        t.rules(),
        [
            "max_profiles_per_request",
            "group_id_length",
            "empty_profiles",
            "duplicate_membership_in_session",
            "membership_unknown_member"
        ]
    );
    let kinds: Vec<_> = snap.sessions[0].loads.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["upsert", "groups-upsert", "group-memberships-upsert", "group-memberships-delete"]
    );
}

#[tokio::test]
async fn every_api_response_carries_okta_headers() {
    let t = T::default().await;
    let sid = t.create_ok().await;
    let responses = [
        t.req(Method::GET, "/sessions", None).await,
        t.req(Method::GET, &format!("/sessions/{sid}"), None).await,
        t.req(Method::GET, "/nope", None).await,
        t.http.get(t.url("/sessions")).send().await.unwrap(),
    ];
    let mut ids = Vec::new();
    for r in &responses {
        for h in [
            "x-okta-request-id",
            "x-rate-limit-limit",
            "x-rate-limit-remaining",
            "x-rate-limit-reset",
            "date",
        ] {
            assert!(r.headers().contains_key(h), "{} lacks {h}", r.url());
        }
        ids.push(r.headers()["x-okta-request-id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 4, "request ids are unique");
    assert_eq!(responses[2].status(), 404);
}

#[tokio::test]
async fn introspection_over_http() {
    let t = T::default().await;
    let base = t.sim.base_url();
    let r = t
        .http
        .post(format!("{base}/__sim/users"))
        .json(&json!({"externalId": "seeded", "profile": {"firstName": "S"}, "active": false}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let sid = t.create_ok().await;
    let r = t
        .http
        .post(format!("{base}/__sim/clock/advance"))
        .json(&json!({"seconds": 90000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let snap: SimSnapshot =
        t.http.get(format!("{base}/__sim/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(snap.users[0].external_id, "seeded");
    assert_eq!(snap.users[0].status, "DEACTIVATED");
    assert_eq!(snap.sessions[0].id, sid);
    assert_eq!(snap.sessions[0].status, SessionStatus::Expired, "90,000 s > 24 h");
    assert_eq!(snap.requests_total, 1, "/__sim calls are not counted");
    assert!(t.http.post(format!("{base}/__sim/reset")).send().await.unwrap().status().is_success());
    let snap: SimSnapshot =
        t.http.get(format!("{base}/__sim/state")).send().await.unwrap().json().await.unwrap();
    assert!(snap.users.is_empty() && snap.sessions.is_empty() && snap.requests_total == 0);
}

#[tokio::test]
async fn reqwest_bodiless_post_needs_an_explicit_empty_body() {
    // Documents a trap for the client: reqwest sends no Content-Length for a bodiless POST,
    // not even with an explicit empty body. Okta (and so the emulator) answers 411; only an
    // explicit `Content-Length: 0` header works.
    let t = T::default().await;
    let auth = format!("SSWS {TOKEN}");
    let r = t.http.post(t.url("/sessions")).header("Authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 411);
    let r = t
        .http
        .post(t.url("/sessions"))
        .header("Authorization", &auth)
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 411);
    let r = t
        .http
        .post(t.url("/sessions"))
        .header("Authorization", &auth)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}
