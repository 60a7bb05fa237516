//! The monitoring JSON (`/v1/jobs`, `/v1/runs`, `/v1/runs/{id}`) and the UI's access rules,
//! over real HTTP against `xaas::daemon::serve` on 127.0.0.1:0, with a state store seeded
//! directly (no import needed to have a history).
//!
//! - no credentials (or wrong ones): 401, for JSON and pages alike; UI off: 404;
//! - keyset pagination walks every decision exactly once, in externalId order; `?q=` is a
//!   prefix search and `?decision=` a filter, both paginated;
//! - profile values appear only with `serve.ui.show_profiles: true`;
//! - the approve POST is refused without the CSRF token, and audited with it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use xaas::mapping::references::Dangling;
use xaas::okta::batch::SessionKind;
use xaas::okta::model::SessionStatus;
use xaas::okta::session::SessionOutcome;
use xaas::state::sqlite::SqliteStore;
use xaas::state::{AttributeChange, Decision, DecisionRecord, Hold, StateStore};
use xaas::sync::report::{JobReport, MembershipDetail, SessionReport};

const TOKEN: &str = "ui-test-token-0123456789";

struct Served {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

fn config(dir: &Path, ui: &str) -> PathBuf {
    let path = dir.join("xaas.yaml");
    let text = format!(
        "okta:
  org_url: http://127.0.0.1:9
  auth:
    type: api_token
    token: not-used
state:
  path: {state}
serve:
  listen: 127.0.0.1:0
{ui}jobs:
  - name: hr
    identity_source_id: 0oasim0000000000000
    schedule: \"0 2 * * *\"
    source:
      type: csv
      path: people.csv
    mapping: {mapping}
",
        state = dir.join("state.db").display(),
        mapping =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/seed-dynamodb.yaml").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn token_ui(show_profiles: bool) -> String {
    format!(
        "  ui:\n    enabled: true\n    show_profiles: {show_profiles}\n    auth:\n      type: token\n      token: {TOKEN}\n"
    )
}

async fn serve(config: &Path) -> Served {
    let settings = xaas::settings::load(config).expect("valid config");
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
    let path = config.to_path_buf();
    let task = tokio::spawn(async move {
        let _keep = _reload_tx;
        xaas::daemon::serve(&path, settings, control).await.expect("serve");
    });
    let addr = bound_rx.await.expect("bound");
    Served { base: format!("http://{addr}"), stop: Some(stop_tx), task }
}

/// One finished run of `hr` with 250 decisions (`u0000`…`u0249`): every 10th deactivated,
/// the 5th of every 10 updated (its title changed), every other 7th created, the rest
/// unchanged; each with a profile.
fn seed(dir: &Path, held: bool) -> i64 {
    let mut store = SqliteStore::open(&dir.join("state.db"), false).unwrap();
    let now = chrono::Utc::now();
    let run = store.begin_run("hr", now).unwrap();
    let hold =
        held.then(|| Hold { deactivations: 25, creations: 0, reasons: vec!["too many".into()] });
    // A report as a run writes it: the type the run page reads back.
    let mut report = JobReport::named("hr", "0oaui0000000000000");
    report.counts.read = 250;
    report.counts.upserted = 36;
    report.counts.deactivated = 25;
    // What a mover run adds: group changes and a left-out manager.
    report.counts.memberships = 3;
    report.counts.memberships_removed = 2;
    report.counts.groups_deleted = 1;
    report.counts.references_resolved = 40;
    report.counts.references_dangling = 1;
    report.details.memberships = vec![MembershipDetail {
        external_id: "u0003".into(),
        added: vec!["dept-eng".into()],
        removed: vec!["dept-sales".into()],
    }];
    report.details.groups_deleted = vec!["dept-sales".into()];
    report.dangling = vec![Dangling {
        external_id: "u0008".into(),
        attribute: "manager".into(),
        person: "e404".into(),
        reason: "references `e404`, who is not in this pull".into(),
    }];
    report.sessions = vec![SessionReport {
        kind: SessionKind::Combined,
        planned_requests: 2,
        planned_upserts: 36,
        planned_deletes: 25,
        planned_groups: 0,
        planned_memberships: 0,
        planned_membership_removals: 0,
        planned_group_deletions: 0,
        largest_request_bytes: 9_000,
        outcome: Some(SessionOutcome {
            id: Some("aps123".into()),
            kind: SessionKind::Combined,
            requests: 2,
            profiles: 61,
            final_status: Some(SessionStatus::Completed),
            error: None,
            note: None,
            spacing_wait_ms: 0,
            duration_ms: 840,
            cancelled_untriggerable: false,
            replays: 0,
            replayed_session_ids: Vec::new(),
            okta_error: None,
            max_in_flight: 0,
        }),
    }];
    let report = serde_json::to_value(&report).unwrap();
    let outcome = if held { "held" } else { "success" };
    store.finish_run(run, outcome, &report.to_string(), hold.as_ref(), now).unwrap();
    let mut decisions = (0..250).map(|i| {
        let (decision, reason) = if i % 10 == 0 {
            (Decision::Deactivated, Some("missing_from_source".to_string()))
        } else if i % 10 == 5 {
            (Decision::Updated, None)
        } else if i % 7 == 0 {
            (Decision::Created, None)
        } else {
            (Decision::Unchanged, None)
        };
        let changes = match decision {
            Decision::Updated => vec![AttributeChange {
                attribute: "title".into(),
                from: Some(format!("Title {i}")),
                to: Some(format!("Title {}", i + 1)),
            }],
            _ => Vec::new(),
        };
        DecisionRecord {
            external_id: format!("u{i:04}"),
            decision,
            reason,
            line: None,
            profile: Some(json!({"email": format!("person{i}@example.com")})),
            changes,
        }
    });
    assert_eq!(store.record_decisions(run, &mut decisions).unwrap(), 250);
    run
}

async fn get(client: &reqwest::Client, url: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = client.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let (status, body) = get(client, url, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The seeded ids of `range` in page order: created, updated, deactivated, then unchanged.
fn changes_first(range: std::ops::Range<usize>) -> Vec<String> {
    let rank = |i: usize| match (i % 10, i % 7) {
        (0, _) => 2,
        (5, _) => 1,
        (_, 0) => 0,
        _ => 3,
    };
    let mut ids: Vec<(usize, String)> = range.map(|i| (rank(i), format!("u{i:04}"))).collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Every page of `url` (which has no `after`), following `next_after`.
async fn walk(client: &reqwest::Client, url: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let u = match &after {
            Some(a) => format!("{url}&after={a}"),
            None => url.to_string(),
        };
        let page = get_json(client, &u).await;
        let items = page["decisions"]["items"].as_array().unwrap();
        ids.extend(items.iter().map(|d| d["external_id"].as_str().unwrap().to_string()));
        match page["decisions"]["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_need_auth_and_paginate_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &token_ui(false));
    let run = seed(dir.path(), false);
    let served = serve(&config).await;
    let client = reqwest::Client::new();
    let base = &served.base;

    // Refused without credentials, or with wrong ones; pages too.
    for path in ["/v1/jobs", "/v1/runs", &format!("/v1/runs/{run}"), "/ui", "/ui/held"] {
        let (status, body) = get(&client, &format!("{base}{path}"), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains(TOKEN));
        let (status, _) = get(&client, &format!("{base}{path}"), Some("Bearer wrong")).await;
        assert_eq!(status, 401, "{path}");
    }
    // The login page and the stylesheet are open.
    assert_eq!(get(&client, &format!("{base}/ui/login"), None).await.0, 200);
    assert_eq!(get(&client, &format!("{base}/ui/style.css"), None).await.0, 200);

    let jobs = get_json(&client, &format!("{base}/v1/jobs")).await;
    assert_eq!(jobs["jobs"][0]["name"], "hr");
    assert!(jobs["jobs"][0]["next_run"].as_str().unwrap().ends_with("02:00:00Z"), "{jobs}");
    assert_eq!(jobs["jobs"][0]["last_run"]["id"], run);
    assert_eq!(jobs["jobs"][0]["last_run"]["counts"]["deactivated"], 25);

    let runs = get_json(&client, &format!("{base}/v1/runs?job=hr&limit=5")).await;
    assert_eq!(runs["runs"][0]["id"], run);
    assert_eq!(runs["runs"][0]["total"], 250);
    assert_eq!(get_json(&client, &format!("{base}/v1/runs?job=nobody")).await["runs"], json!([]));

    let detail = get_json(&client, &format!("{base}/v1/runs/{run}?limit=10")).await;
    assert_eq!(detail["sessions"][0]["id"], "aps123");
    assert_eq!(detail["sessions"][0]["final_status"], "COMPLETED");
    assert_eq!(detail["decisions"]["items"].as_array().unwrap().len(), 10);
    assert_eq!(detail["report_counts"]["memberships_removed"], 2);
    assert_eq!(detail["memberships"][0]["removed"], json!(["dept-sales"]));
    assert_eq!(detail["groups_deleted"], json!(["dept-sales"]));
    assert_eq!(detail["dangling"][0]["person"], "e404");
    assert!(
        detail["decisions"]["items"][0].get("profile").is_none(),
        "profiles are hidden unless show_profiles: {detail}"
    );

    // Every decision once, changes first (created, updated, deactivated; unchanged last), by
    // externalId within each, over pages of 37.
    let all = walk(&client, &format!("{base}/v1/runs/{run}?limit=37")).await;
    assert_eq!(all, changes_first(0..250));
    // A prefix search, paginated.
    let found = walk(&client, &format!("{base}/v1/runs/{run}?q=u01&limit=30")).await;
    assert_eq!(found, changes_first(100..200));
    // An update says what changed, without the values unless show_profiles.
    let updated =
        get_json(&client, &format!("{base}/v1/runs/{run}?decision=updated&limit=1")).await;
    assert_eq!(updated["decisions"]["items"][0]["changes"], json!([{"attribute": "title"}]));
    let one = walk(&client, &format!("{base}/v1/runs/{run}?q=u0042")).await;
    assert_eq!(one, ["u0042"]);
    // A decision filter, paginated.
    let gone = walk(&client, &format!("{base}/v1/runs/{run}?decision=deactivated&limit=7")).await;
    let want: BTreeSet<String> = (0..250).step_by(10).map(|i| format!("u{i:04}")).collect();
    assert_eq!(gone.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(gone.len(), 25);
    // Bad input is a 400, an unknown run a 404.
    let (status, body) = get(
        &client,
        &format!("{base}/v1/runs/{run}?decision=nope"),
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("valid: created"), "{body}");
    let (status, _) =
        get(&client, &format!("{base}/v1/runs/99999"), Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 404);

    // The pages render the same data.
    for path in ["/ui", "/ui/held", "/ui/webhook"] {
        let (status, html) =
            get(&client, &format!("{base}{path}"), Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 200, "{path}: {html}");
        assert!(!html.contains("cannot render"), "{path}: {html}");
    }
    let (_, html) = get(&client, &format!("{base}/ui"), Some(&format!("Bearer {TOKEN}"))).await;
    assert!(html.contains(&format!("href=\"/ui/runs/{run}\"")), "{html}");
    // The run page, with a search.
    let (status, html) =
        get(&client, &format!("{base}/ui/runs/{run}?q=u01"), Some(&format!("Bearer {TOKEN}")))
            .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("u0100") && !html.contains("u0099"), "search applies to the page");
    assert!(!html.contains("person100@example.com"), "no profile values on the page");
    // An update names what changed, not the values.
    let (_, html) =
        get(&client, &format!("{base}/ui/runs/{run}?q=u0005"), Some(&format!("Bearer {TOKEN}")))
            .await;
    assert!(html.contains("<b>title</b> changed"), "{html}");
    assert!(!html.contains("Title 5"), "no values without show_profiles: {html}");
    // The mover's counts and per-user changes, and the left-out reference.
    assert!(html.contains("memberships removed 2 · groups deleted 1"), "{html}");
    assert!(html.contains("references resolved 40 · left out 1"), "{html}");
    assert!(html.contains("Retired (deleted): <span class=\"mono\">dept-sales</span>"), "{html}");
    assert!(
        html.contains("<td class=\"small\">dept-eng</td><td class=\"small\">dept-sales</td>"),
        "{html}"
    );
    assert!(html.contains("references `e404`, who is not in this pull"), "{html}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_shown_only_with_show_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &token_ui(true));
    let run = seed(dir.path(), false);
    let served = serve(&config).await;
    let client = reqwest::Client::new();
    let detail = get_json(&client, &format!("{}/v1/runs/{run}?q=u0003", served.base)).await;
    assert_eq!(detail["decisions"]["items"][0]["profile"]["email"], "person3@example.com");
    let (_, html) = get(
        &client,
        &format!("{}/ui/runs/{run}?q=u0003", served.base),
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert!(html.contains("person3@example.com"), "{html}");
    // An update's old and new values, on the page and in the JSON.
    let detail = get_json(&client, &format!("{}/v1/runs/{run}?q=u0005", served.base)).await;
    assert_eq!(
        detail["decisions"]["items"][0]["changes"],
        json!([{"attribute": "title", "from": "Title 5", "to": "Title 6"}])
    );
    let (_, html) = get(
        &client,
        &format!("{}/ui/runs/{run}?q=u0005", served.base),
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert!(html.contains("<b>title</b> Title 5 → Title 6"), "{html}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    seed(dir.path(), false);
    let served = serve(&config).await;
    let client = reqwest::Client::new();
    for path in ["/ui", "/ui/login", "/v1/runs", "/v1/jobs"] {
        let (status, _) =
            get(&client, &format!("{}{path}", served.base), Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 404, "{path}");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_an_approval_needs_its_csrf_token_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let ui = "  ui:\n    enabled: true\n    auth:\n      type: basic\n      username: ops\n      password: hunter2-but-longer\n";
    let config = config(dir.path(), ui);
    let run = seed(dir.path(), true);
    let served = serve(&config).await;
    let client = reqwest::Client::new();
    let base = &served.base;
    let (status, _) = get(&client, &format!("{base}/ui/held"), None).await;
    assert_eq!(status, 401);
    let wrong = client.get(format!("{base}/ui/held")).basic_auth("ops", Some("nope")).send().await;
    assert_eq!(wrong.unwrap().status().as_u16(), 401);
    let page = client
        .get(format!("{base}/ui/held/{run}/approve"))
        .basic_auth("ops", Some("hunter2-but-longer"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(!html.contains("hunter2"), "never render secrets");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a csrf field")
        .to_string();

    let post = |form: Vec<(&'static str, String)>| {
        client
            .post(format!("{base}/ui/held/{run}/approve"))
            .basic_auth("ops", Some("hunter2-but-longer"))
            .form(&form)
            .send()
    };
    // A forged form (no token, or a wrong one) is refused; so is one without the box ticked.
    let forged = post(vec![("confirm", "yes".into())]).await.unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    let forged = post(vec![("confirm", "yes".into()), ("csrf", "0".repeat(64))]).await.unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    let unticked = post(vec![("csrf", csrf.clone())]).await.unwrap();
    assert_eq!(unticked.status().as_u16(), 400);
    let store = SqliteStore::open(&dir.path().join("state.db"), false).unwrap();
    assert!(store.approvals(run).unwrap().is_empty());
    assert!(store.run("hr", run).unwrap().unwrap().approved_at.is_none());

    let ok = post(vec![("csrf", csrf.clone()), ("confirm", "yes".into())]).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let audit = store.approvals(run).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].approved_by, "ops");
    assert_eq!(audit[0].remote_addr.as_deref(), Some("127.0.0.1"));
    assert!(store.run("hr", run).unwrap().unwrap().approved_at.is_some());
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_approvals_are_audited_as_cli_and_listed_on_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &token_ui(false));
    let run = seed(dir.path(), true);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["approve", "--config", config.to_str().unwrap(), "--job", "hr", "--run"])
        .arg(run.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let served = serve(&config).await;
    let client = reqwest::Client::new();
    let detail = get_json(&client, &format!("{}/v1/runs/{run}", served.base)).await;
    assert_eq!(detail["approvals"][0]["approved_by"], "cli", "{detail}");
    assert_eq!(detail["hold"]["status"], "approved", "{detail}");
    let held = get_json(&client, &format!("{}/v1/jobs", served.base)).await;
    assert_eq!(held["held"], 1, "approved but not used yet: still listed");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_sends_the_browser_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &token_ui(false));
    let run = seed(dir.path(), true);
    let served = serve(&config).await;
    let client = reqwest::Client::new();
    let base = &served.base;
    let auth = format!("Bearer {TOKEN}");
    let gets = [
        "/ui".to_string(),
        format!("/ui/runs/{run}"),
        "/ui/held".into(),
        format!("/ui/held/{run}/approve"),
        "/ui/webhook".into(),
        "/ui/login".into(),
        "/ui/style.css".into(),
        "/v1/jobs".into(),
        "/v1/runs".into(),
        format!("/v1/runs/{run}"),
        "/v1/runs/99999".into(),
    ];
    let posts =
        [format!("/ui/held/{run}/approve"), "/ui/jobs/hr/resume".into(), "/ui/logout".into()];
    let mut responses = Vec::new();
    for path in &gets {
        for signed_in in [true, false] {
            let mut req = client.get(format!("{base}{path}"));
            if signed_in {
                req = req.header("authorization", &auth);
            }
            responses
                .push((format!("GET {path} signed in: {signed_in}"), req.send().await.unwrap()));
        }
    }
    for path in &posts {
        let req = client
            .post(format!("{base}{path}"))
            .header("authorization", &auth)
            .form(&[("csrf", "x")]);
        responses.push((format!("POST {path}"), req.send().await.unwrap()));
    }
    for (what, r) in responses {
        let h = r.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp:?}");
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{what}: {csp}");
        assert_eq!(h.get("x-frame-options").map(|v| v.as_bytes()), Some(&b"DENY"[..]), "{what}");
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{what}"
        );
        assert_eq!(
            h.get("referrer-policy").map(|v| v.as_bytes()),
            Some(&b"same-origin"[..]),
            "{what}"
        );
        if what.contains(" /v1/") {
            assert_eq!(
                h.get("cache-control").map(|v| v.as_bytes()),
                Some(&b"no-store"[..]),
                "{what}"
            );
        }
    }
    // No page carries a script for the policy to block.
    let (_, html) = get(&client, &format!("{base}/ui/runs/{run}"), Some(&auth)).await;
    assert!(!html.contains("<script"), "{html}");
    served.stop().await;
}
