//! End-to-end imports through the real `xaas` binary into the real emulator.

mod common;

use std::collections::HashMap;

use common::*;

/// The acceptance run: 25,000 active users plus 2,500 leavers (10 %), through `xaas run`.
/// The leavers already exist in Okta as active users (an earlier import created them), so
/// their deactivation is real. The emulator's clock runs 300× faster: the 5-minute spacing
/// is 1 s of real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_25k_users_in_three_upsert_sessions_and_a_separate_delete_session() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut people: Vec<Person> = (0..25_000).map(|i| Person::generate(i, true)).collect();
    let leavers: Vec<Person> = (25_000..27_500).map(|i| Person::generate(i, false)).collect();
    // Interleave leavers through the file, as a real export would.
    for (n, l) in leavers.iter().enumerate() {
        people.insert(n * 10 + 5, l.clone());
        sim.seed_user(SOURCE, &l.id, l.expected_profile(), true);
    }
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &people);
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, "");
    let report_path = dir.path().join("report.json");

    let out = xaas_async(run_args(&config, &report_path), TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "emulator saw rule violations: {:#?}", snap.violations);

    // Sessions: three upsert sessions of 10,000 + 10,000 + 5,000, then deletes on their own.
    let completed: Vec<_> = snap.sessions.iter().filter(|s| !s.loads.is_empty()).collect();
    let upserts: Vec<_> =
        completed.iter().filter(|s| s.loads.iter().all(|l| l.kind == "upsert")).collect();
    let deletes: Vec<_> =
        completed.iter().filter(|s| s.loads.iter().all(|l| l.kind == "delete")).collect();
    assert_eq!(
        upserts.len() + deletes.len(),
        completed.len(),
        "a session mixed upserts and deletes"
    );
    let sizes: Vec<usize> = upserts.iter().map(|s| s.distinct_users).collect();
    assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
    assert_eq!(deletes.iter().map(|s| s.distinct_users).sum::<usize>(), 2_500);
    for s in &completed {
        assert_eq!(s.status, xaas::okta::model::SessionStatus::Completed, "session {}", s.id);
        assert!(s.loads.len() <= 50, "session {} had {} requests", s.id, s.loads.len());
        for l in &s.loads {
            assert!(l.profiles <= 200 && l.profiles > 0, "{} profiles in one request", l.profiles);
            assert!(l.bytes <= 200 * 1024, "{} bytes in one request", l.bytes);
        }
    }

    // Final users match the CSV exactly.
    let users: HashMap<&str, _> = snap.users.iter().map(|u| (u.external_id.as_str(), u)).collect();
    assert_eq!(users.len(), 27_500);
    for p in &people {
        let u = users.get(p.id.as_str()).unwrap_or_else(|| panic!("{} missing from okta", p.id));
        let want = if p.active { "ACTIVE" } else { "DEACTIVATED" };
        assert_eq!(u.status, want, "{}", p.id);
        assert_eq!(u.profile, p.expected_profile(), "{}", p.id);
    }

    let report = read_report(&report_path);
    let c = &report["jobs"][0]["counts"];
    assert_eq!(c["read"], 27_500);
    assert_eq!(c["rejected"], 0);
    assert_eq!(c["upserted"], 25_000);
    assert_eq!(c["deactivated"], 2_500);
    assert_eq!(report["jobs"][0]["sessions"].as_array().unwrap().len(), 4);
    assert!(stdout.contains("upserted 25000 of 25000"), "{stdout}");
    // The 5-minute spacing was waited for, and said so in the log.
    assert!(stderr.contains("spacing"), "{stderr}");
}

/// Duplicates: last record wins, Okta never sees an externalId twice in a session, and the
/// report names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_external_ids_are_sent_once_and_reported() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut people: Vec<Person> = (0..300).map(|i| Person::generate(i, true)).collect();
    let mut changed = Person::generate(7, true);
    changed.title = "Dr".into();
    changed.city = "Zürich".into();
    people.push(changed.clone()); // line 302: a later record for emp000007
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &people);
    let run = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    let out = &run.out;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
    let u = snap.users.iter().find(|u| u.external_id == changed.id).unwrap();
    assert_eq!(u.profile, changed.expected_profile(), "the last record must win");
    assert_eq!(snap.users.len(), 300);
    let report = run.report();
    assert_eq!(report["jobs"][0]["counts"]["deduplicated"], 1);
    let d = &report["jobs"][0]["deduplicated"][0];
    assert_eq!(d["external_id"], changed.id);
    assert_eq!(d["kept"]["line"], 302);
    assert_eq!(d["dropped"][0]["line"], 9);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("duplicate externalId emp000007@example.com")
    );
}

/// Leavers Okta never knew: the delete session stays CREATED, so it is cancelled, never
/// triggered, and the run still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_session_of_unknown_users_is_cancelled_not_triggered() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let people: Vec<Person> = (0..50).map(|i| Person::generate(i, i % 10 != 0)).collect();
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &people);
    let run = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    let out = &run.out;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
    let delete_sessions: Vec<_> =
        snap.sessions.iter().filter(|s| s.loads.iter().any(|l| l.kind == "delete")).collect();
    assert_eq!(delete_sessions.len(), 1);
    assert_eq!(delete_sessions[0].status, xaas::okta::model::SessionStatus::Closed);
    assert!(delete_sessions[0].triggered.is_none());
    assert_eq!(snap.users.len(), 45);
    let report = run.report();
    assert_eq!(report["jobs"][0]["counts"]["deactivated"], 0);
    assert_eq!(report["jobs"][0]["sessions"][1]["outcome"]["final_status"], "CLOSED");
}

/// `xaas plan` sends nothing and shows what would be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sends_nothing() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let people: Vec<Person> = (0..450).map(|i| Person::generate(i, i % 3 != 0)).collect();
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &people);
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, "");
    let out = xaas_async(
        vec![
            "plan".into(),
            "--config".into(),
            config.display().to_string(),
            "--format".into(),
            "json".into(),
        ],
        "wrong-token-plan-needs-none",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sessions = plan[0]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["kind"], "upsert");
    assert_eq!(sessions[1]["kind"], "delete");
    assert_eq!(plan[0]["counts"]["to_upsert"], 300);
    assert_eq!(plan[0]["counts"]["to_deactivate"], 150);
    let first = &sessions[0]["requests"][0]["users"][0];
    assert_eq!(first["externalId"], "emp000001@example.com");
    assert_eq!(first["profile"]["displayName"], format!("{} {}", people[1].first, people[1].last));
    assert!(sessions[1]["requests"][0]["users"][0].get("profile").is_none());
    let snap = sim.snapshot();
    assert_eq!(snap.requests_total, 0, "plan must not call okta");
    assert!(snap.sessions.is_empty());
}

/// The README's demo: 100 sample users; the report's counts match the data.
#[test]
fn demo_imports_the_sample_and_counts_match() {
    let csv =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data/users.csv"))
            .unwrap();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let active_col = headers.iter().position(|h| h == "active").unwrap();
    let (mut active, mut inactive) = (0, 0);
    for r in rdr.records() {
        if &r.unwrap()[active_col] == "true" { active += 1 } else { inactive += 1 }
    }
    assert_eq!(active + inactive, 100);
    assert!(inactive > 0);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("demo.json");
    let out = xaas(&["demo", "--report", &report_path.display().to_string()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report = read_report(&report_path);
    let c = &report["jobs"][0]["counts"];
    assert_eq!(c["read"], 100);
    assert_eq!(c["rejected"], 0);
    assert_eq!(c["upserted"], active);
    assert_eq!(c["deactivated"], inactive);
    assert!(
        stdout.contains(&format!("holds {active} active and {inactive} deactivated")),
        "{stdout}"
    );
    assert!(stdout.contains("rule violations: 0"), "{stdout}");
}

/// `sessions: combined`: upserts and deactivations share one session (one 5-minute wait
/// fewer), requests still never mix kinds, and Okta applies both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_sessions_carry_upserts_and_deactivations_together() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let people: Vec<Person> = (0..500).map(|i| Person::generate(i, i % 5 != 0)).collect();
    for p in people.iter().filter(|p| !p.active) {
        sim.seed_user(SOURCE, &p.id, p.expected_profile(), true);
    }
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &people);
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, "    sessions: combined\n");
    let out =
        xaas_async(vec!["run".into(), "--config".into(), config.display().to_string()], TOKEN)
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
    assert_eq!(snap.sessions.len(), 1, "one combined session");
    let kinds: std::collections::BTreeSet<&str> =
        snap.sessions[0].loads.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), vec!["delete", "upsert"]);
    assert_eq!(snap.users.iter().filter(|u| u.status == "DEACTIVATED").count(), 100);
    assert_eq!(snap.users.iter().filter(|u| u.status == "ACTIVE").count(), 400);
    assert!(String::from_utf8_lossy(&out.stdout).contains("session 1: combined"));
}
