//! The emulator's response bodies checked against Okta's official OpenAPI spec
//! (`shared/okta/identity-sources.openapi.yaml`, FACTS S1).
//!
//! Status codes differ from the spec on purpose (FACTS §11: create is 201, not 200), but the
//! bodies agree, so every session body (create, get, list items, start-import) must validate
//! against `IdentitySourceSession` and every error body against `Error`. The schemas are made
//! strict (`additionalProperties: false`) so a field the spec does not know is caught too.

mod sim_support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};
use sim_support::*;
use xaas::sim::SimConfig;

const SPEC: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/okta/identity-sources.openapi.yaml");

fn load_spec() -> Value {
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| {
        panic!("the OpenAPI spec must exist at {SPEC} (shared/okta beside the worktree): {e}")
    });
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{SPEC} is not valid YAML: {e}"))
}

/// Inline every `#/components/schemas/...` `$ref` and forbid unknown properties.
fn resolve(schema: &Value, schemas: &Map<String, Value>, depth: usize) -> Value {
    assert!(depth < 32, "cyclic $ref in the spec");
    match schema {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get("$ref") {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {r}"));
                let target =
                    schemas.get(name).unwrap_or_else(|| panic!("$ref to missing schema {name}"));
                return resolve(target, schemas, depth + 1);
            }
            let mut out: Map<String, Value> =
                obj.iter().map(|(k, v)| (k.clone(), resolve(v, schemas, depth))).collect();
            if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(v, schemas, depth)).collect())
        }
        other => other.clone(),
    }
}

struct Schemas {
    session: jsonschema::Validator,
    error: jsonschema::Validator,
    user: jsonschema::Validator,
}

fn schemas() -> Schemas {
    let spec = load_spec();
    let all =
        spec["components"]["schemas"].as_object().expect("components.schemas in the spec").clone();
    let build = |name: &str| {
        let schema = resolve(&json!({"$ref": format!("#/components/schemas/{name}")}), &all, 0);
        // OpenAPI 3.0 schemas are a dialect of draft 4; formats (date-time) are checked.
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
    };
    Schemas {
        session: build("IdentitySourceSession"),
        error: build("Error"),
        user: build("UserResponseSchema"),
    }
}

fn check(validator: &jsonschema::Validator, what: &str, body: &Value) {
    let errors: Vec<String> =
        validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match the spec: {errors:?}\nbody: {body}");
}

#[tokio::test]
async fn response_bodies_match_the_official_schemas() {
    let s = schemas();
    let t =
        T::start(SimConfig { processing_delay: Duration::from_secs(30), ..SimConfig::default() })
            .await;

    let r = t.create().await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    check(&s.session, "create", &created);
    let sid = created["id"].as_str().unwrap().to_string();

    check(&s.session, "get", &t.get(&sid).await);
    t.load_ok(&sid, "bulk-upsert", &upsert(&[("u1", json!({"firstName": "A"}))])).await;
    let list: Value = t.req(Method::GET, "/sessions", None).await.json().await.unwrap();
    let items = list.as_array().expect("list is an array");
    assert_eq!(items.len(), 1);
    for item in items {
        check(&s.session, "list item", item);
    }
    let r = t.trigger(&sid).await;
    assert_eq!(r.status(), 200);
    let triggered: Value = r.json().await.unwrap();
    check(&s.session, "start-import", &triggered);
    assert_eq!(triggered["status"], "TRIGGERED");

    // One of each error family.
    let errors = [
        t.create().await, // 400 E0000001 5-minute rule
        t.req(Method::DELETE, &format!("/sessions/{sid}"), None).await, // 400 recorded cancel body
        t.load(&sid, "bulk-upsert", &json!({"entityType": "NOPE"})).await, // 400 load into a TRIGGERED session
        t.req(Method::GET, "/sessions/apsnothere0000000000", None).await,  // 404 E0000007
        t.http.get(t.url("/sessions")).send().await.unwrap(),              // 401 E0000011
    ];
    let mut codes = Vec::new();
    for r in errors {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        check(&s.error, &format!("error {status}"), &body);
        codes.push(body["errorCode"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(codes, ["E0000001", "E0000001", "E0000001", "E0000007", "E0000011"]);
}

/// The direct user endpoints (issue 17): create, get, replace and update answer
/// `UserResponseSchema`;
/// their refusals answer `Error` (an unknown user, a body without `email`, an org without the
/// feature).
#[tokio::test]
async fn direct_user_bodies_match_the_official_schemas() {
    let s = schemas();
    let t = T::start(SimConfig::default()).await;
    let body = json!({"externalId": "e1", "profile": {"email": "e1@x.io", "userName": "e1@x.io"}});
    let r = t.req(Method::POST, "/users", Some(&body)).await;
    assert_eq!(r.status(), 200);
    check(&s.user, "create user", &r.json().await.unwrap());
    let r = t.req(Method::GET, "/users/e1", None).await;
    assert_eq!(r.status(), 200);
    check(&s.user, "get user", &r.json().await.unwrap());
    let r = t.req(Method::PUT, "/users/e1", Some(&body)).await;
    assert_eq!(r.status(), 200);
    check(&s.user, "replace user", &r.json().await.unwrap());
    let update =
        json!({"profile": {"email": "e1@x.io", "userName": "e1@x.io", "firstName": "Ola"}});
    let r = t.req(Method::PATCH, "/users/e1", Some(&update)).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    check(&s.user, "update user", &updated);
    assert_eq!(updated["profile"]["firstName"], "Ola");
    let r = t.req(Method::DELETE, "/users/e1", None).await;
    assert_eq!(r.status(), 200, "the recorded 200, not the spec's 204");
    assert!(r.bytes().await.unwrap().is_empty());

    let no_email = json!({"externalId": "e2", "profile": {"userName": "e2@x.io"}});
    let refusals = [
        t.req(Method::GET, "/users/nobody", None).await,
        t.req(Method::POST, "/users", Some(&no_email)).await,
    ];
    let mut codes = Vec::new();
    for r in refusals {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        check(&s.error, &format!("error {status}"), &body);
        codes.push((status, body["errorCode"].as_str().unwrap_or_default().to_string()));
    }
    t.sim.set_direct_endpoints(false);
    let r = t.req(Method::DELETE, "/users/e1", None).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    check(&s.error, "feature off", &body);
    codes.push((status, body["errorCode"].as_str().unwrap_or_default().to_string()));
    let want = [(404, "E0000007"), (400, "E0000001"), (401, "E0000015")];
    assert_eq!(codes, want.map(|(s, c)| (s, c.to_string())));
}

#[tokio::test]
async fn rate_limit_error_matches_the_schema() {
    let s = schemas();
    let t = T::start(SimConfig { rate_limit_per_minute: 1, ..SimConfig::default() }).await;
    assert_eq!(t.req(Method::GET, "/sessions", None).await.status(), 200);
    let r = t.req(Method::GET, "/sessions", None).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    check(&s.error, "429", &body);
    assert_eq!(body["errorCauses"], json!([]), "as in the spec's E0000047 example");
}

#[test]
fn strict_schema_rejects_drift() {
    // Guards the guard: the validator must actually catch a wrong status and an extra field.
    let s = schemas();
    assert!(!s.session.is_valid(&json!({"id": "aps1", "status": "RUNNING"})));
    assert!(!s.session.is_valid(&json!({"id": "aps1", "extra": true})));
    assert!(!s.session.is_valid(&json!({"id": "aps1", "created": "yesterday"})));
    assert!(s.session.is_valid(
        &json!({"id": "aps1", "status": "CREATED", "created": "2026-05-13T05:52:24.000Z"})
    ));
    assert!(!s.error.is_valid(&json!({"errorCauses": [{"errorSummary": 3}]})));
}
