//! Fault injection: make the emulator misbehave the way a real network and a busy Okta do.
//!
//! A [`FaultPlan`] is a list of [`FaultRule`]s, each naming an endpoint, which requests to
//! hit (by number, counted per endpoint from 1, or by probability with the plan's seed) and
//! a [`Fault`]. The first matching rule wins. Set it with [`super::SimConfig::faults`],
//! [`super::SimHandle::set_faults`] or `POST /__sim/faults` (JSON, same shape); `GET` shows
//! it with the counters, `DELETE` clears it.
//!
//! Faults that matter for "never duplicate" carry `applied`: whether Okta did the work
//! before things went wrong. A 5xx or a dropped connection *after* the load was accepted is
//! exactly the case where a naive client re-sends users into the same session.
//!
//! ```json
//! {"seed": 7, "rules": [
//!   {"endpoint": "bulk-upsert", "requests": [2], "fault": {"type": "server_error", "status": 502, "applied": true}},
//!   {"endpoint": "*", "probability": 0.3, "fault": {"type": "rate_limit", "reset_secs": 1}}
//! ]}
//! ```

use std::collections::BTreeMap;

use axum::http::Method;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// A scripted set of faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the random draws of `probability` rules: the same seed and the same request
    /// order give the same faults.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

/// Which requests get which fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `token`, `list-sessions`, `create-session`, `get-session`, `cancel-session`,
    /// `start-import`, a bulk endpoint (`bulk-upsert`, `bulk-delete`, `bulk-groups-upsert`…),
    /// `bulk` for any bulk endpoint, or `*` for every request.
    pub endpoint: String,
    /// Request numbers of that endpoint (1 = its first request). Empty: every request
    /// (subject to `probability`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<u64>,
    /// Hit each matching request with this probability (0 to 1), drawn from the seeded RNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    pub fault: Fault,
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// 429 E0000047, `X-Rate-Limit-Remaining: 0`, reset in `reset_secs`. Never applied.
    RateLimit {
        #[serde(default = "one")]
        reset_secs: u64,
    },
    /// The concurrency 429: `X-Rate-Limit-Limit: 0` and an estimated reset. Never applied.
    ConcurrencyLimit,
    /// An Okta-shaped 5xx (E0000009), after applying the request if `applied`.
    ServerError {
        #[serde(default = "five_hundred")]
        status: u16,
        #[serde(default)]
        applied: bool,
    },
    /// Answer `ms` late. With `applied` (the default) the request is processed first, so a
    /// client that times out has had its request applied; without, the wait comes first (the
    /// request is held on its way): a client that times out may see its request applied later,
    /// whether or not it is still connected, as with a real network.
    Delay {
        ms: u64,
        #[serde(default = "yes")]
        applied: bool,
    },
    /// Close the connection without a complete answer, after applying if `applied`.
    Drop {
        #[serde(default)]
        applied: bool,
    },
}

fn one() -> u64 {
    1
}
fn five_hundred() -> u16 {
    500
}
fn yes() -> bool {
    true
}

tokio::task_local! {
    /// Set while a request held by a [`Fault::Delay`] (without `applied`) is processed.
    static HELD: bool;
}

/// Whether the request being processed was held on its way by an injected fault.
pub(crate) fn held() -> bool {
    HELD.try_with(|held| *held).unwrap_or(false)
}

/// Process `request` as one that an injected fault held on its way.
pub(crate) async fn as_held<F: std::future::Future>(request: F) -> F::Output {
    HELD.scope(true, request).await
}

/// The endpoint name a request is counted under.
pub fn endpoint_of(method: &Method, path: &str) -> String {
    if path == "/oauth2/v1/token" {
        return "token".into();
    }
    let rest: Vec<&str> = path
        .strip_prefix("/api/v1/identity-sources/")
        .map(|r| r.split('/').skip(1).collect())
        .unwrap_or_default();
    match (method.as_str(), rest.as_slice()) {
        ("GET", ["sessions"]) => "list-sessions".into(),
        ("POST", ["sessions"]) => "create-session".into(),
        ("GET", ["sessions", _]) => "get-session".into(),
        ("DELETE", ["sessions", _]) => "cancel-session".into(),
        (_, ["sessions", _, last]) => (*last).into(),
        ("POST", ["users"]) => "user-create".into(),
        ("GET", ["users", _]) => "user-get".into(),
        ("PUT", ["users", _]) => "user-replace".into(),
        ("PATCH", ["users", _]) => "user-update".into(),
        ("DELETE", ["users", _]) => "user-delete".into(),
        _ => "other".into(),
    }
}

/// The plan with its counters and RNG.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub plan: FaultPlan,
    rng: StdRng,
    /// Requests seen per endpoint (and under `*`).
    pub counts: BTreeMap<String, u64>,
    pub injected: u64,
}

impl FaultState {
    pub fn new(plan: FaultPlan) -> Self {
        let rng = StdRng::seed_from_u64(plan.seed);
        Self { plan, rng, counts: BTreeMap::new(), injected: 0 }
    }

    /// Count the request and return the fault to inject, if any.
    pub fn next(&mut self, endpoint: &str) -> Option<Fault> {
        let n = {
            let c = self.counts.entry(endpoint.to_string()).or_default();
            *c += 1;
            *c
        };
        let all = {
            let c = self.counts.entry("*".to_string()).or_default();
            *c += 1;
            *c
        };
        let bulk = if endpoint.starts_with("bulk-") {
            let c = self.counts.entry("bulk".to_string()).or_default();
            *c += 1;
            *c
        } else {
            0
        };
        for rule in &self.plan.rules {
            let number = match rule.endpoint.as_str() {
                "*" => all,
                "bulk" if bulk > 0 => bulk,
                e if e == endpoint => n,
                _ => continue,
            };
            if !rule.requests.is_empty() && !rule.requests.contains(&number) {
                continue;
            }
            if let Some(p) = rule.probability
                && !rand::RngExt::random_bool(&mut self.rng, p.clamp(0.0, 1.0))
            {
                continue;
            }
            self.injected += 1;
            return Some(rule.fault.clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_named_after_the_operation() {
        let p = "/api/v1/identity-sources/0oa1/sessions";
        assert_eq!(endpoint_of(&Method::GET, p), "list-sessions");
        assert_eq!(endpoint_of(&Method::POST, p), "create-session");
        assert_eq!(endpoint_of(&Method::GET, &format!("{p}/aps1")), "get-session");
        assert_eq!(endpoint_of(&Method::DELETE, &format!("{p}/aps1")), "cancel-session");
        assert_eq!(endpoint_of(&Method::POST, &format!("{p}/aps1/bulk-upsert")), "bulk-upsert");
        assert_eq!(endpoint_of(&Method::POST, &format!("{p}/aps1/start-import")), "start-import");
        assert_eq!(endpoint_of(&Method::POST, "/oauth2/v1/token"), "token");
    }

    #[test]
    fn rules_match_by_request_number_and_seeded_probability() {
        let plan = FaultPlan {
            seed: 7,
            rules: vec![
                FaultRule {
                    endpoint: "bulk-upsert".into(),
                    requests: vec![2],
                    probability: None,
                    fault: Fault::Drop { applied: true },
                },
                FaultRule {
                    endpoint: "*".into(),
                    requests: vec![],
                    probability: Some(0.5),
                    fault: Fault::ConcurrencyLimit,
                },
            ],
        };
        let draw = |plan: &FaultPlan| {
            let mut s = FaultState::new(plan.clone());
            (0..40).map(|_| s.next("get-session")).collect::<Vec<_>>()
        };
        let first = draw(&plan);
        assert_eq!(first, draw(&plan), "same seed, same faults");
        let hits = first.iter().filter(|f| f.is_some()).count();
        assert!((8..=32).contains(&hits), "{hits} of 40 at p=0.5");

        let mut s = FaultState::new(FaultPlan { rules: plan.rules[..1].to_vec(), ..plan });
        assert_eq!(s.next("bulk-upsert"), None);
        assert_eq!(s.next("get-session"), None);
        assert_eq!(s.next("bulk-upsert"), Some(Fault::Drop { applied: true }));
        assert_eq!(s.next("bulk-upsert"), None);
        assert_eq!(s.injected, 1);
    }

    #[test]
    fn the_json_shape_is_stable() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"seed":1,"rules":[{"endpoint":"bulk-upsert","requests":[1,3],
                "fault":{"type":"server_error","status":503,"applied":true}}]}"#,
        )
        .expect("plan");
        assert_eq!(plan.rules[0].fault, Fault::ServerError { status: 503, applied: true });
        assert!(
            serde_json::from_str::<FaultPlan>(
                r#"{"rules":[{"endpoint":"x","fault":{"type":"nope"}}]}"#
            )
            .is_err()
        );
    }
}
