//! Safeguards against the emulator, through the real binary: a truncated source holds the run
//! with nobody deactivated; approval (or `--allow-deactivations`) releases one held run; an
//! incomplete HTTP pull deactivates nobody.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use serde_json::json;

fn deactivated(sim: &xaas::sim::SimHandle) -> usize {
    sim.snapshot().users.iter().filter(|u| u.status == "DEACTIVATED").count()
}

async fn approve(dir: &std::path::Path, run: i64) -> std::process::Output {
    let config = dir.join("xaas.yaml").display().to_string();
    xaas_async(
        vec![
            "approve".into(),
            "--config".into(),
            config,
            "--job".into(),
            "hr".into(),
            "--run".into(),
            run.to_string(),
        ],
        TOKEN,
    )
    .await
}

/// A CSV truncated to 10% holds the run: exit 5, no session, nobody deactivated, the report
/// says why. Approving the held run releases the next run, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_source_is_held_until_approved() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let people: Vec<Person> = (0..2_000).map(|i| Person::generate(i, true)).collect();
    write_csv(&csv, &people);
    let run1 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run1.out.status.code(), Some(0), "{}", run1.stdout());
    let sessions = sim.snapshot().sessions.len();

    write_csv(&csv, &people[..200]);
    let held = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    let stdout = held.stdout();
    assert_eq!(held.out.status.code(), Some(5), "{stdout}\n{}", held.stderr());
    assert!(stdout.contains("HELD"), "{stdout}");
    assert!(stdout.contains("min_source_percent"), "{stdout}");
    assert_eq!(sim.snapshot().sessions.len(), sessions, "nothing may be sent");
    assert_eq!(deactivated(&sim), 0);
    let report = held.report();
    let job = &report["jobs"][0];
    assert_eq!(job["outcome"], "held");
    assert_eq!(job["changes"]["leavers_missing"], 1_800);
    let kinds: Vec<&str> = job["hold"]["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"source_shrink") && kinds.contains(&"deactivations"), "{kinds:?}");
    let run_id = job["run_id"].as_i64().unwrap();
    assert!(stdout.contains(&format!("xaas approve --job hr --run {run_id}")), "{stdout}");

    // Held again while nobody approved: a held run does not become the new baseline.
    let again = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(again.out.status.code(), Some(5), "{}", again.stdout());
    assert_eq!(deactivated(&sim), 0);

    let ok = approve(dir.path(), run_id).await;
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let released = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(released.out.status.code(), Some(0), "{}\n{}", released.stdout(), released.stderr());
    assert!(
        released.stdout().contains(&format!("approval of run {run_id}")),
        "{}",
        released.stdout()
    );
    assert_eq!(deactivated(&sim), 1_800);
    assert_eq!(released.report()["jobs"][0]["counts"]["deactivated"], 1_800);
    // The approval was used once: approving it again is refused.
    let twice = approve(dir.path(), run_id).await;
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already used"));
}

/// `--allow-deactivations N` releases a held run only when it deactivates at most N users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_deactivations_releases_only_up_to_n() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let people: Vec<Person> = (0..100).map(|i| Person::generate(i, true)).collect();
    write_csv(&csv, &people);
    let run1 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run1.out.status.code(), Some(0), "{}", run1.stdout());
    write_csv(&csv, &people[..70]);
    let config = dir.path().join("xaas.yaml").display().to_string();
    let run = |n: &str| {
        xaas_async(
            vec![
                "run".into(),
                "--config".into(),
                config.clone(),
                "--allow-deactivations".into(),
                n.into(),
            ],
            TOKEN,
        )
    };
    let out = run("29").await;
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(deactivated(&sim), 0);
    let out = run("30").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("released by --allow-deactivations 30"), "{stdout}");
    assert_eq!(deactivated(&sim), 30);
}

/// Pages of the HTTP source: page 2 fails with 500 once `broken` is set.
async fn pages(
    State((people, broken)): State<(Arc<Vec<Person>>, Arc<AtomicBool>)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if page == 2 && broken.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let per = people.len().div_ceil(2);
    let records: Vec<serde_json::Value> = people
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|p| {
            let row = p.csv_row();
            let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(row.as_bytes());
            let rec = rdr.records().next().unwrap().unwrap();
            let obj: serde_json::Map<String, serde_json::Value> =
                HEADER.split(',').zip(rec.iter()).map(|(k, v)| (k.to_string(), json!(v))).collect();
            serde_json::Value::Object(obj)
        })
        .collect();
    let next = (page < 2).then(|| format!("/users?page={}", page + 1));
    axum::Json(json!({ "data": records, "next": next })).into_response()
}

/// A source outage part way through the pull: nothing is sent and nobody is deactivated,
/// though half the users are "missing"; the state is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_http_pull_deactivates_nobody() {
    let people: Arc<Vec<Person>> = Arc::new((0..400).map(|i| Person::generate(i, true)).collect());
    let broken = Arc::new(AtomicBool::new(false));
    let app =
        Router::new().route("/users", get(pages)).with_state((people.clone(), broken.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: {}\n  auth:\n    type: api_token\n    token_env: XAAS_TEST_TOKEN\n  session_spacing_secs: 1.05\n  poll_initial_ms: 20\n  poll_max_secs: 1\njobs:\n  - name: hr\n    identity_source_id: {SOURCE}\n    source:\n      type: http\n      url: {base}/users?page=1\n      records: /data\n      max_retries: 1\n      retry_initial_ms: 5\n      pagination:\n        type: next_url\n        next: /next\n    mapping: {}\n",
            sim.base_url(),
            mapping_path().display()
        ),
    )
    .unwrap();
    let args = || vec!["run".to_string(), "--config".into(), config.display().to_string()];
    let out = xaas_async(args(), TOKEN).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sim.snapshot().users.iter().filter(|u| u.status == "ACTIVE").count(), 400);
    let sessions = sim.snapshot().sessions.len();

    broken.store(true, Ordering::SeqCst);
    let out = xaas_async(args(), TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("pull INCOMPLETE"), "{stdout}");
    assert_eq!(sim.snapshot().sessions.len(), sessions, "nothing may be sent");
    assert_eq!(deactivated(&sim), 0);

    // The source is back: nothing changed, so nothing is sent and nobody was counted missing.
    broken.store(false, Ordering::SeqCst);
    let out = xaas_async(args(), TOKEN).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(sim.snapshot().sessions.len(), sessions);
    assert_eq!(deactivated(&sim), 0);
}
