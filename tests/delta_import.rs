//! Delta imports against the emulator, through the real binary: a second run sends exactly
//! what changed, and a session that ends in ERROR leaves the state untouched so the next run
//! sends it again.

mod common;

use std::collections::HashMap;

use common::*;
use xaas::sim::SimSnapshot;
use xaas::state::StateStore;

/// A job that never sends a small delta through the direct endpoints (tests of sessions).
const SESSIONS_ONLY: &str = "    direct_max_changes: 0\n";

/// Sessions that received loads, from index `from` on.
fn loaded(snap: &SimSnapshot, from: usize) -> Vec<&xaas::sim::SimSessionView> {
    snap.sessions.iter().skip(from).filter(|s| !s.loads.is_empty()).collect()
}

/// Okta holds exactly `source`, plus `gone` as deactivated.
fn assert_matches_source(snap: &SimSnapshot, source: &[Person], gone: &[Person]) {
    let users: HashMap<&str, _> = snap.users.iter().map(|u| (u.external_id.as_str(), u)).collect();
    assert_eq!(users.len(), source.len() + gone.len());
    for p in source {
        let u = users.get(p.id.as_str()).unwrap_or_else(|| panic!("{} missing from okta", p.id));
        assert_eq!(u.status, if p.active { "ACTIVE" } else { "DEACTIVATED" }, "{}", p.id);
        if p.active {
            assert_eq!(u.profile, p.expected_profile(), "{}", p.id);
        }
    }
    for p in gone {
        assert_eq!(users[p.id.as_str()].status, "DEACTIVATED", "{} left the source", p.id);
    }
}

/// The acceptance run: 20,000 users, then 1% change (updates, 20 terminations, 10 deleted
/// rows, 5 new hires): the second run sends exactly those, in one upsert session and one
/// deactivation session, and the plan shows the attribute-level diff first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_sends_only_the_one_percent_that_changed() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let mut people: Vec<Person> = (0..20_000).map(|i| Person::generate(i, true)).collect();
    write_csv(&csv, &people);
    let run1 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run1.out.status.code(), Some(0), "{}\n{}", run1.stdout(), run1.stderr());
    assert_eq!(run1.report()["jobs"][0]["counts"]["upserted"], 20_000);
    assert!(dir.path().join("xaas-state.db").exists(), "the state lives next to the config");
    let before = sim.snapshot().sessions.len();

    // 165 updates, 20 terminations, 10 deleted rows, 5 new hires: 200 changes (1%).
    for i in 0..165 {
        people[i * 100].city = format!("Santa Cruz {i}");
    }
    for i in 0..20 {
        people[i * 100 + 50].active = false;
    }
    let deleted: Vec<Person> = (0..10).map(|i| people[i * 100 + 75].clone()).collect();
    people.retain(|p| !deleted.iter().any(|d| d.id == p.id));
    people.extend((20_000..20_005).map(|i| Person::generate(i, true)));
    write_csv(&csv, &people);

    // The plan: counts and an attribute-level diff against what Okta confirmed.
    let config = dir.path().join("xaas.yaml");
    let plan = xaas_async(
        vec![
            "plan".into(),
            "--config".into(),
            config.display().to_string(),
            "--format".into(),
            "json".into(),
        ],
        TOKEN,
    )
    .await;
    assert_eq!(plan.status.code(), Some(0), "{}", String::from_utf8_lossy(&plan.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let ch = &plan[0]["changes"];
    assert_eq!(ch["creates"], 5);
    assert_eq!(ch["updates"], 165);
    assert_eq!(ch["deactivations"], 20);
    assert_eq!(ch["leavers_missing"], 10);
    assert_eq!(ch["unchanged"], 20_000 - 165 - 20 - 10);
    let first = &plan[0]["details"]["updates"][0];
    assert_eq!(first["external_id"], people[0].id);
    assert_eq!(first["changes"][0]["attribute"], "city");
    assert_eq!(first["changes"][0]["from"], "Las Palmas de Gran Canaria");
    assert_eq!(first["changes"][0]["to"], "Santa Cruz 0");
    assert_eq!(sim.snapshot().sessions.len(), before, "a plan sends nothing");

    let run2 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    let stdout = run2.stdout();
    assert_eq!(run2.out.status.code(), Some(0), "{stdout}\n{}", run2.stderr());
    assert!(stdout.contains("unchanged (skipped)"), "the plan is printed first: {stdout}");
    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
    let sessions = loaded(&snap, before);
    assert_eq!(sessions.len(), 2, "one upsert and one deactivation session");
    assert!(sessions[0].loads.iter().all(|l| l.kind == "upsert"));
    assert_eq!(sessions[0].distinct_users, 170);
    assert!(sessions[1].loads.iter().all(|l| l.kind == "delete"));
    assert_eq!(sessions[1].distinct_users, 30);
    assert_matches_source(&snap, &people, &deleted);
    let c = &run2.report()["jobs"][0]["counts"];
    assert_eq!(c["upserted"], 170);
    assert_eq!(c["deactivated"], 30);

    // A third run with no change sends nothing at all.
    let run3 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run3.out.status.code(), Some(0), "{}", run3.stdout());
    assert_eq!(sim.snapshot().sessions.len(), snap.sessions.len(), "nothing changed");
    let ch = &run3.report()["jobs"][0]["changes"];
    assert_eq!(ch["unchanged"], 20_000 - 20 - 10 + 5);
    assert_eq!(ch["already_inactive"], 20);
}

/// A session that ends in ERROR confirms nothing: the state keeps the old hashes (the users
/// stay pending), and the next run sends the same users again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_session_leaves_state_untouched_and_the_next_run_resends() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let mut people: Vec<Person> = (0..300).map(|i| Person::generate(i, true)).collect();
    write_csv(&csv, &people);
    let run1 = run_csv(dir.path(), &sim.base_url(), &csv, SESSIONS_ONLY, TOKEN).await;
    assert_eq!(run1.out.status.code(), Some(0), "{}", run1.stdout());
    let state_path = dir.path().join("xaas-state.db");
    let hashes = |path: &std::path::Path| {
        let store = xaas::state::sqlite::SqliteStore::open(path, true).unwrap();
        let mut m = HashMap::new();
        store
            .for_each_entry("hr", &mut |e| {
                m.insert(e.external_id.clone(), e);
            })
            .unwrap();
        m
    };
    let confirmed = hashes(&state_path);
    assert_eq!(confirmed.len(), 300);

    for p in people.iter_mut().take(10) {
        p.title = "Dr".into();
        p.city = "Zürich".into();
    }
    write_csv(&csv, &people);
    sim.fail_next_session(SOURCE);
    let run2 = run_csv(dir.path(), &sim.base_url(), &csv, SESSIONS_ONLY, TOKEN).await;
    assert_eq!(run2.out.status.code(), Some(1), "{}", run2.stdout());
    let after = hashes(&state_path);
    for p in &people[..10] {
        let (was, now) = (&confirmed[&p.id], &after[&p.id]);
        assert_eq!(now.hash, was.hash, "{}: an ERROR session must not change the state", p.id);
        assert!(now.pending.is_some(), "{}: sent but unconfirmed", p.id);
    }
    assert!(after.values().filter(|e| e.pending.is_some()).count() == 10);

    let before = sim.snapshot().sessions.len();
    let run3 = run_csv(dir.path(), &sim.base_url(), &csv, SESSIONS_ONLY, TOKEN).await;
    assert_eq!(run3.out.status.code(), Some(0), "{}\n{}", run3.stdout(), run3.stderr());
    let snap = sim.snapshot();
    let sessions = loaded(&snap, before);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].distinct_users, 10, "exactly the users of the failed session");
    assert_matches_source(&snap, &people, &[]);
    let done = hashes(&state_path);
    assert!(done.values().all(|e| e.pending.is_none()));
    assert_ne!(done[&people[0].id].hash, confirmed[&people[0].id].hash);
}

/// Issue 17: a delta of at most `direct_max_changes` (25 by default) users goes through the
/// direct endpoints, without a session (and so without the 5-minute wait); 26 use sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_delta_needs_no_session_and_a_larger_one_uses_sessions() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let mut people: Vec<Person> = (0..200).map(|i| Person::generate(i, true)).collect();
    write_csv(&csv, &people);
    let run1 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run1.out.status.code(), Some(0), "{}", run1.stderr());

    // 10 changes: 7 updates, 2 terminations, 1 new hire.
    for (i, p) in people.iter_mut().enumerate().take(7) {
        p.city = format!("Ciudad {i}");
    }
    people[10].active = false;
    people[11].active = false;
    people.push(Person::generate(500, true));
    write_csv(&csv, &people);
    let before = sim.snapshot().sessions.len();
    // The plan says so, in JSON and in text; the plan for the larger delta below does not.
    let plan = |format: &'static str| {
        let config = dir.path().join("xaas.yaml").display().to_string();
        xaas_async(
            vec!["plan".into(), "--config".into(), config, "--format".into(), format.into()],
            TOKEN,
        )
    };
    let json = plan("json").await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json[0]["direct"], true, "{json}");
    let text = String::from_utf8_lossy(&plan("text").await.stdout).to_string();
    assert!(text.contains("directly (no session)"), "{text}");
    let run2 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run2.out.status.code(), Some(0), "{}\n{}", run2.stdout(), run2.stderr());
    let snap = sim.snapshot();
    assert_eq!(snap.sessions.len(), before, "no session for 10 changes");
    assert_matches_source(&snap, &people, &[]);
    let job = &run2.report()["jobs"][0];
    assert_eq!(job["counts"]["sent_directly"], 10, "{job}");
    assert_eq!(job["counts"]["upserted"], 8);
    assert_eq!(job["counts"]["deactivated"], 2);
    assert!(run2.stdout().contains("sent directly, no session: 10"), "{}", run2.stdout());
    // Confirmed: the next run has nothing to send.
    let run3 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run3.report()["jobs"][0]["counts"]["sent_directly"], 0);
    assert_eq!(sim.snapshot().sessions.len(), before);

    // 26 changes: sessions.
    for (i, p) in people.iter_mut().enumerate().skip(20).take(26) {
        p.city = format!("Villa {i}");
    }
    write_csv(&csv, &people);
    let json = plan("json").await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json[0].get("direct"), None, "26 changes: sessions; {json}");
    let run4 = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    assert_eq!(run4.out.status.code(), Some(0), "{}", run4.stderr());
    let snap = sim.snapshot();
    assert_eq!(loaded(&snap, before).len(), 1, "one upsert session for 26 changes");
    assert_eq!(run4.report()["jobs"][0]["counts"]["sent_directly"], 0);
    assert_matches_source(&snap, &people, &[]);
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
}
