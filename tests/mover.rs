//! The mover, through the real binary against the emulator: memberships follow the source
//! (movers lose their old groups, leavers every group this job gave), a group no active user
//! derives is deleted, what an admin made by hand is never touched, and a run that would strip
//! everyone's department is held until approved.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::config::FAST_OKTA;
use common::*;

const MAPPING: &str = r#"version: 2
source_fields: [id, email, first, last, dept, location, active]
external_id: "{{ id }}"
status:
  active_if: '{"true": true, "false": false}[active]'
  when_missing: reject
attributes:
  userName: "{{ email }}"
  email: "{{ email }}"
  firstName: "{{ first }}"
  lastName: "{{ last }}"
  department: "{{ dept }}"
required: [userName, email]
groups:
  - external_id: "dept-{{ dept }}"
    name: "Department {{ dept }}"
    when: dept != ""
  - external_id: "loc-{{ location }}"
    name: "Location {{ location }}"
"#;

/// One person of the test's HR export.
#[derive(Clone)]
struct Row {
    id: String,
    dept: String,
    location: String,
    active: bool,
}

fn people(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: format!("u{i}"),
            dept: format!("d{}", i % 10),
            location: format!("l{}", i % 5),
            active: true,
        })
        .collect()
}

fn write_rows(path: &Path, rows: &[Row]) {
    let mut text = String::from("id,email,first,last,dept,location,active\n");
    for r in rows {
        text.push_str(&format!(
            "{id},{id}@example.com,First{id},Last{id},{},{},{}\n",
            r.dept,
            r.location,
            r.active,
            id = r.id
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// The memberships the rows imply, computed without the mapping code.
fn implied(rows: &[Row]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.active) {
        if !r.dept.is_empty() {
            out.entry(format!("dept-{}", r.dept)).or_default().insert(r.id.clone());
        }
        out.entry(format!("loc-{}", r.location)).or_default().insert(r.id.clone());
    }
    out
}

fn okta_groups(sim: &xaas::sim::SimHandle) -> BTreeMap<String, BTreeSet<String>> {
    sim.snapshot()
        .groups
        .iter()
        .map(|g| (g.external_id.clone(), g.members.iter().cloned().collect()))
        .collect()
}

fn setup(dir: &Path, base_url: &str, safeguards: &str) -> (PathBuf, PathBuf) {
    let mapping = dir.join("mapping.yaml");
    std::fs::write(&mapping, MAPPING).unwrap();
    let csv = dir.join("people.csv");
    let config = dir.join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: {base_url}\n  auth:\n    type: api_token\n    token_env: XAAS_TEST_TOKEN\n{FAST_OKTA}\
             state:\n  path: {state}\njobs:\n  - name: hr\n    identity_source_id: {SOURCE}\n    source:\n      type: csv\n      path: {csv}\n    \
             mapping: {mapping}\n    safeguards:\n{safeguards}",
            state = dir.join("state.db").display(),
            csv = csv.display(),
            mapping = mapping.display(),
        ),
    )
    .unwrap();
    (config, csv)
}

async fn run(config: &Path, extra: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let report = config.with_file_name("report.json");
    let mut args = run_args(config, &report);
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = xaas_async(args, TOKEN).await;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, read_report(&report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_and_groups_follow_the_source_and_leave_hand_made_ones_alone() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = setup(
        dir.path(),
        &sim.base_url(),
        "      max_membership_removals: 2000\n      max_deactivations_percent: 5\n",
    );
    let mut rows = people(10_000);
    write_rows(&csv, &rows);
    let (code, out, _) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(okta_groups(&sim), implied(&rows));

    // What an admin made by hand: a group of its own, and a membership in a job group.
    sim.seed_group(SOURCE, "hand-admins", "Admins (by hand)", &["u0".into(), "u9".into()]);
    sim.seed_group(SOURCE, "dept-d3", "Department d3", &["u5".into()]);

    // 2% move from d1 to d2, 1% leave (half marked inactive, half gone from the export), and
    // department d9 disappears: its people move to d8.
    for (i, r) in rows.iter_mut().enumerate() {
        if i % 50 == 1 {
            r.dept = "d2".into();
        }
        if i % 10 == 9 {
            r.dept = "d8".into();
        }
        if i % 200 == 107 {
            r.active = false;
        }
    }
    let kept: Vec<Row> =
        rows.iter().enumerate().filter(|(i, _)| i % 200 != 7).map(|(_, r)| r.clone()).collect();
    write_rows(&csv, &kept);
    let (code, out, report) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let job = &report["jobs"][0];
    // 200 movers lose d1, 1,000 lose d9, 100 leavers lose both of their groups.
    assert_eq!(job["changes"]["membership_removals"], 200 + 1_000 + 100 * 2, "{out}");
    assert_eq!(job["changes"]["group_deletions"], 1, "{out}");
    assert_eq!(job["counts"]["memberships_removed"], 1_400);
    assert_eq!(job["counts"]["groups_deleted"], 1);
    assert_eq!(job["details"]["groups_deleted"], serde_json::json!(["dept-d9"]));
    assert!(out.contains("memberships removed"), "{out}");

    let mut want = implied(&kept);
    want.insert("hand-admins".into(), ["u0".into(), "u9".into()].into());
    want.get_mut("dept-d3").unwrap().insert("u5".into());
    let got = okta_groups(&sim);
    assert!(!got.contains_key("dept-d9"), "the emptied department's group is deleted");
    assert_eq!(got, want);
    for leaver in (0..10_000).filter(|i| i % 100 == 7).map(|i| format!("u{i}")) {
        assert!(got.values().all(|m| !m.contains(&leaver)), "{leaver} keeps a group");
    }
    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);

    // Converged: the next run has nothing to add or take away.
    let (code, out, report) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let c = &report["jobs"][0]["counts"];
    assert_eq!(
        (c["to_upsert"].as_u64(), c["memberships_removed"].as_u64()),
        (Some(0), Some(0)),
        "{out}"
    );
    assert_eq!(okta_groups(&sim), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_strips_every_department_is_held_until_approved() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = setup(dir.path(), &sim.base_url(), "      max_deactivations: 500\n");
    let mut rows = people(2_000);
    write_rows(&csv, &rows);
    let (code, out, _) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    let before = okta_groups(&sim);
    let sessions = sim.snapshot().sessions.len();

    // A broken export: the department column is empty for everyone.
    for r in &mut rows {
        r.dept.clear();
    }
    write_rows(&csv, &rows);
    let (code, out, report) = run(&config, &[]).await;
    assert_eq!(code, Some(5), "{out}");
    let job = &report["jobs"][0];
    let kinds: Vec<&str> = job["hold"]["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"membership_removals") && kinds.contains(&"group_deletions"),
        "{kinds:?}"
    );
    assert_eq!(job["changes"]["membership_removals"], 2_000);
    assert_eq!(job["changes"]["group_deletions"], 10);
    assert_eq!(sim.snapshot().sessions.len(), sessions, "nothing may be sent: {out}");
    assert_eq!(okta_groups(&sim), before);

    // --allow-deactivations releases deactivations only: still held.
    let (code, out, _) = run(&config, &["--allow-deactivations", "10"]).await;
    assert_eq!(code, Some(5), "{out}");
    assert_eq!(okta_groups(&sim), before);

    let run_id = job["run_id"].as_i64().unwrap();
    let approved = xaas_async(
        vec![
            "approve".into(),
            "--config".into(),
            config.display().to_string(),
            "--job".into(),
            "hr".into(),
            "--run".into(),
            run_id.to_string(),
        ],
        TOKEN,
    )
    .await;
    assert_eq!(approved.status.code(), Some(0), "{}", String::from_utf8_lossy(&approved.stderr));
    let (code, out, _) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(okta_groups(&sim), implied(&rows), "only the location groups remain");
    assert!(sim.snapshot().violations.is_empty());
}

/// A crash between the membership removals being sent and the session completing: the state
/// keeps the old memberships (nothing is confirmed), and the next run sends the removals
/// again (Okta skips what it already removed) and converges. The deterministic companion of
/// the random kills in `tests/crash_recovery.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_removals_complete_leaves_them_unconfirmed_and_the_next_run_converges() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = xaas::sim::spawn(
        xaas::sim::SimConfig {
            clock_scale: 300.0,
            // Long enough to kill the run while its session is TRIGGERED.
            processing_delay: std::time::Duration::from_secs(3),
            ..xaas::sim::SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = setup(dir.path(), &sim.base_url(), "      max_deactivations: 500\n");
    let mut rows = people(1_000);
    write_rows(&csv, &rows);
    let (code, out, _) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");

    for r in rows.iter_mut().step_by(10) {
        r.dept = "d-new".into();
    }
    write_rows(&csv, &rows);
    let log = std::fs::File::create(dir.path().join("killed.log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["run", "--config", &config.display().to_string()])
        .env("XAAS_TEST_TOKEN", TOKEN)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let removal_session = async {
        loop {
            let snap = sim.snapshot();
            if let Some(s) = snap.sessions.iter().find(|s| {
                s.loads.iter().any(|l| l.kind == "group-memberships-delete")
                    && s.status == xaas::okta::model::SessionStatus::Triggered
            }) {
                return s.id.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let session = tokio::time::timeout(std::time::Duration::from_secs(60), removal_session)
        .await
        .expect("the run sends its membership removals");
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // Nothing was confirmed: the plan still removes the movers' old memberships.
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
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    let changes = &plan[0]["changes"];
    assert_eq!(changes["membership_removals"], 100, "{changes}");

    // Okta finishes the orphaned session; the next run resends and converges.
    let done = async {
        while sim.snapshot().sessions.iter().any(|s| s.id == session && !s.status.is_final()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), done).await.unwrap();
    let (code, out, report) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report["jobs"][0]["counts"]["memberships_removed"], 100);
    assert_eq!(okta_groups(&sim), implied(&rows));
    assert!(sim.snapshot().memberships_skipped >= 100, "the resent removals were already applied");
    let (code, out, report) = run(&config, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report["jobs"][0]["counts"]["memberships_removed"], 0, "{out}");
    assert_eq!(report["jobs"][0]["counts"]["to_upsert"], 0, "{out}");
    assert!(sim.snapshot().violations.is_empty(), "{:#?}", sim.snapshot().violations);
}
