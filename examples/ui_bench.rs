//! Seeds a state store with a large run history and times the monitoring pages over HTTP
//! (`bench/ui.sh`).
//!
//! `ui_bench [--runs 100] [--records 100000] [--requests 200] [--dir target/ui-bench]
//!  [--dynamodb http://127.0.0.1:PORT]`
//!
//! With `--dynamodb`, the history goes to fresh DynamoDB tables at that endpoint (dynalite)
//! instead of the SQLite file, and the daemon serves the pages from them.
//!
//! The store gets `runs` finished runs of one job, each with `records` per-record decisions
//! (1% created, 2% updated, 0.5% deactivated, 0.1% rejected, the rest unchanged), written
//! through `StateStore::record_decisions` like a real run (kept between invocations: the
//! seed is reused when it has the right size). Then `xaas::daemon::serve` starts on
//! 127.0.0.1:0 with the UI on, and each page is fetched `requests` times with reqwest.
//! Printed per page: p50/p99 of the server time (the `Server-Timing` header) and of the
//! whole request as the client saw it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xaas::state::sqlite::SqliteStore;
use xaas::state::{Decision, DecisionRecord, StateStore};

const TOKEN: &str = "bench-token-0123456789";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn id(i: usize) -> String {
    format!("emp{i:07}")
}

fn seed(store: &mut dyn StateStore, runs: usize, records: usize) -> Vec<i64> {
    let existing = store.runs(Some("hr"), None, runs + 1).expect("list runs");
    let complete = existing.len() == runs
        && existing.iter().all(|r| {
            store.decision_counts(r.id).map(|c| c.values().sum::<u64>()).unwrap_or(0)
                == records as u64
        });
    if complete {
        println!("reusing the seeded history");
        return existing.iter().map(|r| r.id).collect();
    }
    assert!(existing.is_empty(), "the store holds another history: remove it");
    let started = Instant::now();
    let sessions: Vec<serde_json::Value> = (0..10)
        .map(|s| {
            serde_json::json!({"kind": "upsert", "planned_requests": 50, "planned_upserts": 10000,
                "planned_deletes": 0, "outcome": {"id": format!("aps{s:017}"), "kind": "upsert",
                "requests": 50, "profiles": 10000, "final_status": "COMPLETED", "duration_ms": 4200}})
        })
        .collect();
    let report = serde_json::json!({"mode": {"full": false}, "sessions": sessions,
        "counts": {"read": records, "upserted": records / 100 * 3, "deactivated": records / 200,
            "not_imported": 0, "deduplicated": 0}})
    .to_string();
    let mut ids = Vec::new();
    for r in 0..runs {
        let now = chrono::Utc::now();
        let run = store.begin_run("hr", now).expect("begin");
        store.finish_run(run, "success", &report, None, now).expect("finish");
        let mut decisions = (0..records).map(|i| {
            // Spread the changes over the id space, and differently per run.
            let k = (i * 7919 + r * 104729) % 1000;
            let (decision, reason, line) = match k {
                0..10 => (Decision::Created, None, None),
                10..30 => (Decision::Updated, None, None),
                30..35 => (Decision::Deactivated, Some("missing_from_source".into()), None),
                35 => (
                    Decision::Rejected,
                    Some("email: not an email".into()),
                    Some(format!("line {}", i + 2)),
                ),
                _ => (Decision::Unchanged, None, None),
            };
            let changes = match decision {
                Decision::Updated => vec![xaas::state::AttributeChange {
                    attribute: "title".into(),
                    from: Some("Engineer".into()),
                    to: Some("Lead".into()),
                }],
                _ => Vec::new(),
            };
            DecisionRecord { external_id: id(i), decision, reason, line, profile: None, changes }
        });
        store.record_decisions(run, &mut decisions).expect("record decisions");
        ids.push(run);
        if (r + 1) % 10 == 0 {
            println!(
                "seeded {} runs × {records} decisions ({:.0} s)",
                r + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    ids.reverse();
    ids
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let runs: usize = arg("--runs", "100").parse().expect("--runs N");
    let records: usize = arg("--records", "100000").parse().expect("--records N");
    let requests: usize = arg("--requests", "200").parse().expect("--requests N");
    let dir = PathBuf::from(arg("--dir", "target/ui-bench"));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let state = dir.join("state.db");
    let dynamodb = std::env::args().any(|a| a == "--dynamodb").then(|| arg("--dynamodb", ""));
    let (ids, state_yaml) = match &dynamodb {
        None => {
            let mut store = SqliteStore::open(&state, false).expect("open the state store");
            let ids = seed(&mut store, runs, records);
            let size = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
            println!("state: SQLite, file {:.0} MB", size as f64 / 1e6);
            let path = state.canonicalize().expect("state path");
            (ids, format!("  path: {}\n", path.display()))
        }
        Some(endpoint) => {
            let prefix = format!("uibench_{}_", std::process::id());
            let settings = xaas::settings::DynamoStateSettings {
                table_prefix: prefix.clone(),
                region: Some("us-east-1".into()),
                endpoint_url: Some(endpoint.clone()),
                lease: std::time::Duration::from_secs(15),
            };
            let mut store = xaas::state::dynamodb::DynamoStore::open(&settings, false)
                .expect("open the dynamodb state");
            let started = Instant::now();
            let ids = seed(&mut store, runs, records);
            println!(
                "state: DynamoDB at {endpoint} (tables {prefix}*), seeded in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            let yaml = format!(
                "  backend: dynamodb\n  table_prefix: {prefix}\n  region: us-east-1\n  endpoint_url: {endpoint}\n"
            );
            (ids, yaml)
        }
    };
    println!("history: {} runs × {records} decisions", ids.len());

    let config = dir.join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: http://127.0.0.1:9\n  auth: {{type: api_token, token: unused}}\nstate:\n{state_yaml}serve:\n  listen: 127.0.0.1:0\n  ui:\n    enabled: true\n    auth: {{type: token, token: {TOKEN}}}\njobs:\n  - name: hr\n    identity_source_id: 0oabench000000000000\n    schedule: \"0 2 * * *\"\n    source: {{type: csv, path: people.csv}}\n    mapping: {}\n",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/seed-dynamodb.yaml").display()
        ),
    )
    .expect("write the config");
    let settings = xaas::settings::load(&config).expect("a valid config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (_reload_tx, reload) = tokio::sync::mpsc::unbounded_channel();
    let control = xaas::daemon::Control {
        shutdown: Box::pin(async move {
            let _ = stop_rx.await;
        }),
        reload,
        bound: Some(bound_tx),
    };
    let server = tokio::spawn(async move {
        xaas::daemon::serve(&config, settings, control).await.expect("serve");
    });
    let base = format!("http://{}", bound_rx.await.expect("bound"));
    let client = reqwest::Client::new();
    let mid = ids[ids.len() / 2];
    let last = id(records.saturating_sub(1_000));
    let pages = [
        ("jobs page", "/ui".to_string()),
        ("run page", format!("/ui/runs/{mid}")),
        ("search", format!("/ui/runs/{mid}?q={}", id(records * 54 / 100))),
        ("deep page", format!("/ui/runs/{mid}?after=unchanged:{last}")),
        (
            "filtered deep page",
            format!("/ui/runs/{mid}?decision=deactivated&after=deactivated:{}", id(records / 2)),
        ),
        ("json deep page", format!("/v1/runs/{mid}?after=unchanged:{last}")),
    ];
    println!("{requests} requests per page, one at a time (ms)");
    println!(
        "{:<20} {:<58} {:>10} {:>7} {:>10} {:>7}",
        "page", "GET", "server p50", "p99", "client p50", "p99"
    );
    for (name, path) in pages {
        let mut server_ms = Vec::new();
        let mut client_ms = Vec::new();
        for _ in 0..requests {
            let started = Instant::now();
            let resp = client
                .get(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let timing = resp
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("app;dur="))
                .and_then(|v| v.parse::<f64>().ok())
                .expect("a Server-Timing header");
            let body = resp.text().await.expect("body");
            assert!(body.len() > 100);
            client_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            server_ms.push(timing);
        }
        server_ms.sort_by(f64::total_cmp);
        client_ms.sort_by(f64::total_cmp);
        println!(
            "{name:<20} {path:<58} {:>10.2} {:>7.2} {:>10.2} {:>7.2}",
            percentile(&server_ms, 0.5),
            percentile(&server_ms, 0.99),
            percentile(&client_ms, 0.5),
            percentile(&client_ms, 0.99)
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}
