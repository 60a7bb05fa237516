//! The monitoring pages in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver by fantoccini, against the real `xaas serve`
//! binary importing into the emulator.
//!
//! One scenario, in the order an on-call engineer would go: unauthenticated access is refused
//! (the login form, and 401s), sign in, the jobs page, open a run, search an externalId, then
//! approve a held run (confirm step, CSRF-protected POST) and see its deactivations reach
//! the emulator. Screenshots go to `target/ui-screenshots/`.
//!
//! Without chromium the test is skipped with a message, except under `CI=true`, where it
//! fails: `tests/run` installs it (`common::browser`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::{self, click, shot, text_of, wait_for_query};
use common::config::{self, TestConfig};
use common::serve::Serve;
use common::{Person, SOURCE};
use fantoccini::Locator;
use serde_json::{Value, json};
use xaas::sim::SimHandle;

const UI_TOKEN: &str = "ui-e2e-admin-token-0123456789";
const WEBHOOK_TOKEN: &str = "ui-e2e-webhook-token-0123456789";

/// Two scheduled jobs, the bearer webhook and the token-protected UI.
fn write_config(dir: &Path, sim: &SimHandle, csv: &Path) -> PathBuf {
    let mut config = TestConfig::new(dir, &sim.base_url(), csv);
    config.serve_mut().webhook =
        "    auth:\n      type: bearer\n      token_env: XAAS_TEST_WEBHOOK_TOKEN\n".into();
    config.serve_mut().after = "  ui:\n    enabled: true\n    auth:\n      type: token\n      token_env: XAAS_TEST_UI_TOKEN\n".into();
    config.jobs = vec![
        config::job("hr", SOURCE, csv, "    schedule: \"0 2 * * *\"\n    timezone: Europe/Paris\n"),
        config::job("contractors", "0oasim0000000000001", csv, "    schedule: \"*/30 * * * *\"\n"),
    ];
    config.write(&dir.join("xaas.yaml"))
}

/// Trigger a run of `job` and wait until a run newer than `after` has finished; its JSON.
async fn run_and_wait(http: &reqwest::Client, base: &str, job: &str, after: i64) -> Value {
    let resp = http
        .post(format!("{base}/v1/jobs/{job}/trigger"))
        .bearer_auth(WEBHOOK_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().await.unwrap_or_default());
    wait_for_run(http, base, job, after).await
}

async fn wait_for_run(http: &reqwest::Client, base: &str, job: &str, after: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Value = http
            .get(format!("{base}/v1/runs?job={job}&limit=1"))
            .bearer_auth(UI_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let run = &runs["runs"][0];
        if run["id"].as_i64().is_some_and(|id| id > after) && run["outcome"] != "running" {
            return run.clone();
        }
        assert!(Instant::now() < deadline, "no finished run of {job} after {after}: {runs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deactivated(sim: &SimHandle) -> usize {
    sim.snapshot().users.iter().filter(|u| u.status == "DEACTIVATED").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_signs_in_reads_a_run_and_approves_a_held_one_in_a_browser() {
    let Some(started) = browser::start().await else { return };
    // The emulator's 5 minutes take 1 s, like the client's spacing.
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..200).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);
    let config = write_config(dir.path(), &sim, &csv);
    let serve = Serve::start(
        dir.path(),
        &config,
        "ui",
        &[("XAAS_TEST_UI_TOKEN", UI_TOKEN), ("XAAS_TEST_WEBHOOK_TOKEN", WEBHOOK_TOKEN)],
    )
    .await;
    let base = serve.base.clone();
    let http = reqwest::Client::new();
    let serve_log = || serve.log();

    // Run 1 creates 200 people; run 2 hires 10 and renames 15; run 3 sees 60 gone and is held.
    let first = run_and_wait(&http, &base, "hr", 0).await;
    assert_eq!(first["outcome"], "success", "{first}\n{}", serve_log());
    assert_eq!(first["counts"]["created"], 200, "{first}");
    let mut people = people;
    people.extend((200..210).map(|i| Person::generate(i, true)));
    for p in people.iter_mut().skip(30).take(15) {
        p.first = format!("{}-renamed", p.first);
    }
    // One record without a last name: rejected (the mapping requires it), with its line.
    let nameless = Person { last: String::new(), ..Person::generate(300, true) };
    let mut with_bad = people.clone();
    with_bad.push(nameless.clone());
    common::write_csv(&csv, &with_bad);
    let second = run_and_wait(&http, &base, "hr", first["id"].as_i64().unwrap()).await;
    assert_eq!(second["outcome"], "completed_with_rejections", "{second}\n{}", serve_log());
    let counts = &second["counts"];
    assert_eq!(
        (counts["created"].as_u64(), counts["updated"].as_u64(), counts["rejected"].as_u64()),
        (Some(10), Some(15), Some(1)),
        "{second}"
    );
    let rejected: Value = http
        .get(format!("{base}/v1/runs/{}?decision=rejected", second["id"]))
        .bearer_auth(UI_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = &rejected["decisions"]["items"][0];
    assert_eq!(r["external_id"], nameless.id.as_str(), "{rejected}");
    assert_eq!(r["line"], "line 212", "header, 210 people, then the bad one: {rejected}");
    assert!(r["reason"].as_str().unwrap().contains("lastName"), "{rejected}");
    // The run page lists what changed first, and for each rename the attribute that changed
    // (read before the push confirmed the new profile; no values without show_profiles): the
    // first name, and the display name made from it.
    let page: Value = http
        .get(format!("{base}/v1/runs/{}?limit=26", second["id"]))
        .bearer_auth(UI_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["decisions"]["items"].as_array().unwrap();
    let order: Vec<&str> = items.iter().map(|d| d["decision"].as_str().unwrap()).collect();
    let mut want = vec!["created"; 10];
    want.extend(["updated"; 15]);
    want.push("rejected");
    assert_eq!(order, want, "changes first: {page}");
    for d in &items[10..25] {
        let want = json!([{"attribute": "displayName"}, {"attribute": "firstName"}]);
        assert_eq!(d["changes"], want, "{d}");
    }
    common::write_csv(&csv, &people[..150]);
    let held = run_and_wait(&http, &base, "hr", second["id"].as_i64().unwrap()).await;
    assert_eq!(held["outcome"], "held", "{held}\n{}", serve_log());
    let held_id = held["id"].as_i64().unwrap();
    assert_eq!(deactivated(&sim), 0, "a held run sends nothing");

    // Unauthenticated access is refused.
    for path in ["/ui", "/ui/held", &format!("/ui/runs/{held_id}"), "/v1/runs", "/v1/jobs"] {
        let status = http.get(format!("{base}{path}")).send().await.unwrap().status();
        assert_eq!(status.as_u16(), 401, "{path}");
    }

    let browser = started.client.clone();

    // Signed out: the login form, not the page.
    browser.goto(&format!("{base}/ui")).await.unwrap();
    let source = browser.source().await.unwrap();
    assert!(source.contains("Sign in to xaas") && !source.contains("id=\"jobs\""), "{source}");
    shot(&browser, "login").await;
    browser.find(Locator::Id("token")).await.unwrap().send_keys("wrong").await.unwrap();
    click(&browser, "#login").await;
    let refused = text_of(&browser, ".alert.bad").await;
    assert!(refused.contains("that token is not valid"), "{refused}");
    browser.find(Locator::Id("token")).await.unwrap().send_keys(UI_TOKEN).await.unwrap();
    click(&browser, "#login").await;

    // The jobs page.
    let jobs = text_of(&browser, "#jobs").await;
    assert!(jobs.contains("hr") && jobs.contains("contractors"), "{jobs}");
    assert!(jobs.contains("held"), "the last run's outcome: {jobs}");
    assert!(jobs.contains("0 2 * * *") && jobs.contains("Europe/Paris"), "{jobs}");
    let bars = browser.find_all(Locator::Css("tr[data-job=hr] .bar")).await.unwrap();
    assert_eq!(bars.len(), 3, "one bar per run");
    shot(&browser, "jobs").await;

    // Open the first run from its bar.
    browser
        .find(Locator::Css(&format!("tr[data-job=hr] a.bar[href='/ui/runs/{}']", first["id"])))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let cards = text_of(&browser, ".cards").await;
    assert!(cards.contains("200") && cards.to_lowercase().contains("created"), "{cards}");
    let sessions = text_of(&browser, "#sessions").await;
    assert!(sessions.contains("COMPLETED"), "{sessions}");
    shot(&browser, "run").await;

    // Search one externalId.
    let wanted = &people[123].id;
    browser.find(Locator::Id("q")).await.unwrap().send_keys(wanted).await.unwrap();
    click(&browser, "#search").await;
    // The run page already lists decisions: wait for the search's page, not the old one.
    wait_for_query(&browser, "q=").await;
    let rows =
        browser.find_all(Locator::Css("#decisions tbody tr[data-external-id]")).await.unwrap();
    assert_eq!(rows.len(), 1, "exactly the searched user");
    let row = rows[0].text().await.unwrap();
    assert!(row.contains(wanted.as_str()) && row.contains("created"), "{row}");
    shot(&browser, "search").await;

    // The held run: why, and Approve through the confirmation step.
    browser.goto(&format!("{base}/ui/held")).await.unwrap();
    let held_table = text_of(&browser, "#held").await;
    assert!(held_table.contains("60"), "it would deactivate 60: {held_table}");
    shot(&browser, "held").await;
    click(&browser, &format!("#approve-{held_id}")).await;
    // Submitting without ticking the box does nothing (the checkbox is required).
    click(&browser, "#do-approve").await;
    assert!(browser.current_url().await.unwrap().path().ends_with("/approve"));
    assert_eq!(deactivated(&sim), 0);
    shot(&browser, "confirm").await;
    click(&browser, "#confirm").await;
    click(&browser, "#do-approve").await;
    let done = text_of(&browser, "#approved").await;
    assert!(done.contains(&format!("#{held_id} approved")), "{done}");

    // The approval queued the next run, which sends the 60 deactivations to Okta.
    let released = wait_for_run(&http, &base, "hr", held_id).await;
    assert_eq!(released["outcome"], "success", "{released}\n{}", serve_log());
    assert_eq!(released["counts"]["deactivated"], 60, "{released}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while deactivated(&sim) < 60 {
        assert!(Instant::now() < deadline, "the deactivations did not reach okta");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deactivated(&sim), 60);
    assert!(serve_log().contains("held run approved in the UI"));
    browser.goto(&format!("{base}/ui/runs/{held_id}")).await.unwrap();
    let approvals = browser.source().await.unwrap();
    assert!(approvals.contains("127.0.0.1") && approvals.contains("token"), "audited");
    browser.goto(&format!("{base}/ui")).await.unwrap();
    shot(&browser, "jobs-after").await;

    // Signed out again: refused.
    browser.delete_all_cookies().await.unwrap();
    browser.goto(&format!("{base}/ui/held")).await.unwrap();
    assert!(browser.source().await.unwrap().contains("Sign in to xaas"));
    browser.close().await.unwrap();
    assert!(sim.snapshot().violations.is_empty(), "{:?}", sim.snapshot().violations);
}
