//! Manager links (`references:`), through the real binary against the emulator: every
//! `manager` is the manager's mapped `userName`, dangling references follow `on_missing`, a
//! manager's new login reaches every report in the next delta, and webhook pushes resolve
//! against the batch and the state's confirmed profiles. The mapping side (validation, a
//! mapping test's `others`) is here too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::config::{HMAC_WEBHOOK, ServeSection, TestConfig, job_with_source};
use common::serve::Serve;
use common::*;
use xaas::mapping::{Mapping, testing};

const MAPPING: &str = r#"version: 2
source_fields: [id, email, first, last, manager_id]
external_id: "{{ id }}"
status: { active_if: "true" }
attributes:
  userName: "{{ email }}"
  email: "{{ email }}"
  firstName: "{{ first }}"
  lastName: "{{ last }}"
required: [userName, email]
references:
  manager:
    person: manager_id
    attribute: userName
    on_missing: ON_MISSING
"#;

/// The sizes of the five levels of the hierarchy: one head, then ten times as many per level,
/// the rest at the bottom.
fn levels(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 1);
    for level in 0..5 {
        let size_here = if level == 4 { n - start } else { size.min(n - start) };
        out.push((start, size_here));
        start += size_here;
        size *= 10;
    }
    out
}

/// Person `i`'s manager in the hierarchy (the head has none).
fn manager_of(i: usize, n: usize) -> Option<usize> {
    let lv = levels(n);
    let level = lv.iter().position(|&(s, len)| i >= s && i < s + len)?;
    if level == 0 || lv[level - 1].1 == 0 {
        return None;
    }
    let (up_start, up_len) = lv[level - 1];
    Some(up_start + (i - lv[level].0) % up_len)
}

/// 1% of the people name a manager who is in no record.
fn dangles(i: usize) -> bool {
    i % 100 == 50
}

/// The one record the mapping rejects (an email that is not one): a level-3 manager.
const BROKEN: usize = 555;

fn email(i: usize, moved: &BTreeMap<usize, String>) -> String {
    if i == BROKEN {
        return "not-an-email".into();
    }
    moved.get(&i).cloned().unwrap_or_else(|| format!("u{i}@example.com"))
}

fn write_people(path: &Path, n: usize, moved: &BTreeMap<usize, String>) {
    let mut text = String::from("id,email,first,last,manager_id\n");
    for i in 0..n {
        let manager = match manager_of(i, n) {
            Some(_) if dangles(i) => format!("gone{i}"),
            Some(m) => format!("u{m}"),
            None => String::new(),
        };
        text.push_str(&format!("u{i},{},First{i},Last{i},{manager}\n", email(i, moved)));
    }
    std::fs::write(path, text).unwrap();
}

/// The config of these tests: one CSV job `hr` with [`MAPPING`]; returns it (to change and
/// write again), its path and the CSV's.
fn setup(dir: &Path, base_url: &str, on_missing: &str) -> (TestConfig, PathBuf, PathBuf) {
    let mapping = dir.join("mapping.yaml");
    std::fs::write(&mapping, MAPPING.replace("ON_MISSING", on_missing)).unwrap();
    let csv = dir.join("people.csv");
    let mut config = TestConfig::for_run(dir, base_url);
    let source = format!("      type: csv\n      path: {}\n", csv.display());
    config.jobs = vec![
        job_with_source("hr", SOURCE, &source, "    max_rejected: 50%\n")
            .replace(&mapping_path().display().to_string(), &mapping.display().to_string()),
    ];
    let path = config.write(&dir.join("xaas.yaml"));
    (config, path, csv)
}

async fn run(config: &Path) -> (Option<i32>, String, serde_json::Value) {
    let report = config.with_file_name("report.json");
    let out = xaas_async(run_args(config, &report), TOKEN).await;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.exists(), "no report:\n{text}");
    (out.status.code(), text, read_report(&report))
}

/// externalId → `manager` of every user in the emulator (`None`: no manager).
fn okta_managers(sim: &xaas::sim::SimHandle) -> BTreeMap<String, Option<String>> {
    sim.snapshot()
        .users
        .iter()
        .map(|u| (u.external_id.clone(), u.profile.get("manager").cloned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manager_is_the_managers_user_name_and_a_new_login_reaches_every_report() {
    const N: usize = 10_000;
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config, csv) = setup(dir.path(), &sim.base_url(), "omit");
    let mut moved = BTreeMap::new();
    write_people(&csv, N, &moved);
    let (code, out, report) = run(&config).await;
    assert_eq!(code, Some(3), "one record is rejected:\n{out}");

    // What the export implies, computed without the mapping code.
    let want = |moved: &BTreeMap<usize, String>| -> BTreeMap<String, Option<String>> {
        (0..N)
            .filter(|&i| i != BROKEN)
            .map(|i| {
                let manager = manager_of(i, N)
                    .filter(|&m| !dangles(i) && m != BROKEN)
                    .map(|m| email(m, moved));
                (format!("u{i}"), manager)
            })
            .collect()
    };
    assert_eq!(okta_managers(&sim), want(&moved));
    let reports_of_broken = (0..N).filter(|&i| manager_of(i, N) == Some(BROKEN) && !dangles(i));
    let dangling =
        (0..N).filter(|&i| i != BROKEN && dangles(i)).count() + reports_of_broken.count();
    let job = &report["jobs"][0];
    assert_eq!(job["counts"]["references_dangling"], dangling as u64, "{out}");
    assert_eq!(job["counts"]["references_resolved"], (N - 2 - dangling) as u64, "{out}");
    let listed = job["dangling"].as_array().unwrap();
    assert_eq!(listed.len(), dangling);
    let reason = |id: &str| {
        listed.iter().find(|d| d["external_id"] == id).map(|d| d["reason"].as_str().unwrap())
    };
    assert_eq!(reason("u50"), Some("references `gone50`, who is not in this pull"));
    let a_report = (0..N).find(|&i| manager_of(i, N) == Some(BROKEN) && !dangles(i)).unwrap();
    assert_eq!(
        reason(&format!("u{a_report}")),
        Some("references `u555`, who was rejected by this pull")
    );
    assert!(out.contains("references resolved"), "{out}");

    // A manager with ten reports changes their email, so their userName: the next delta sends
    // them and each of their reports, and nobody else.
    let manager = 3;
    let reports: BTreeSet<String> = (0..N)
        .filter(|&i| manager_of(i, N) == Some(manager) && !dangles(i))
        .map(|i| format!("u{i}"))
        .collect();
    assert!(reports.len() >= 10, "{reports:?}");
    moved.insert(manager, "u3.new@example.com".to_string());
    write_people(&csv, N, &moved);
    let (code, out, report) = run(&config).await;
    assert_eq!(code, Some(3), "{out}");
    let job = &report["jobs"][0];
    assert_eq!(job["mode"]["full"], false, "{out}");
    assert_eq!(job["changes"]["updates"], 1 + reports.len() as u64, "{out}");
    let updated: BTreeSet<String> = job["details"]["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["external_id"].as_str().unwrap().to_string())
        .collect();
    let mut expected = reports.clone();
    expected.insert("u3".into());
    assert_eq!(updated, expected);
    let got = okta_managers(&sim);
    assert_eq!(got, want(&moved));
    for r in &reports {
        assert_eq!(got[r].as_deref(), Some("u3.new@example.com"), "{r}");
    }
    assert!(sim.snapshot().violations.is_empty(), "{:#?}", sim.snapshot().violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_missing_reject_rejects_the_record_and_in_turn_those_who_report_to_it() {
    const N: usize = 2_000;
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config, csv) = setup(dir.path(), &sim.base_url(), "reject");
    write_people(&csv, N, &BTreeMap::new());
    let (code, out, report) = run(&config).await;
    assert_eq!(code, Some(3), "{out}");
    // Managers come before their reports, so one pass in order finds every rejection.
    let mut rejected = vec![false; N];
    for i in 0..N {
        rejected[i] = i == BROKEN
            || (manager_of(i, N).is_some() && dangles(i))
            || manager_of(i, N).is_some_and(|m| rejected[m]);
    }
    let want: BTreeSet<String> = (0..N).filter(|&i| rejected[i]).map(|i| format!("u{i}")).collect();
    assert!(want.len() > 20, "the cascade reaches reports of reports: {}", want.len());
    let got: BTreeSet<String> = report["jobs"][0]["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["external_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "{out}");
    let in_okta: BTreeSet<String> = okta_managers(&sim).into_keys().collect();
    assert_eq!(in_okta.len(), N - want.len());
    assert!(in_okta.is_disjoint(&want));
    let field = report["jobs"][0]["rejected"].as_array().unwrap()[0]["field"].clone();
    assert!(field == "references.manager" || field == "email", "{field}");
}

fn person(id: &str, manager: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "email": format!("{id}@example.com"), "first": "F", "last": "L",
        "manager_id": manager,
    })
}

/// Push one batch; what became of each record, by externalId: (outcome, reason).
async fn push(daemon: &Serve, records: &[serde_json::Value]) -> BTreeMap<String, (String, String)> {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/hr/records", daemon.base);
    let (status, body) = signed_post(&client, &url, &serde_json::json!(records)).await;
    assert_eq!(status, 202, "{body}");
    let ev = daemon.finished_event(body["event_id"].as_str().unwrap()).await;
    ev["outcome"]["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{ev}"))
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap_or_default().to_string();
            (
                r["external_id"].as_str().unwrap().to_string(),
                (r["outcome"].as_str().unwrap().to_string(), reason),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_users_resolve_their_manager_from_the_batch_and_the_state() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, config, csv) = setup(dir.path(), &sim.base_url(), "omit");
    write_people(&csv, 50, &BTreeMap::new());
    let (code, out, _) = run(&config).await;
    assert_eq!(code, Some(0), "{out}");
    cfg.serve = Some(ServeSection {
        extra: "  batch_window_ms: 100\n".into(),
        webhook: HMAC_WEBHOOK.into(),
        after: String::new(),
        listen: "127.0.0.1:0".into(),
    });
    cfg.write(&config);

    let daemon = Serve::start(dir.path(), &config, "push-managers", &[]).await;
    // h1 reports to u1 (in the state), h2 to h1 (in the same push), h3 to no one known.
    let outcomes =
        push(&daemon, &[person("h1", "u1"), person("h2", "h1"), person("h3", "nobody")]).await;
    assert_eq!(outcomes["h1"].0, "upserted", "{outcomes:?}");
    assert_eq!(outcomes["h2"].0, "upserted", "{outcomes:?}");
    assert_eq!(outcomes["h3"].0, "upserted", "{outcomes:?}");
    assert!(outcomes["h3"].1.contains("left out manager"), "{outcomes:?}");
    let managers = okta_managers(&sim);
    assert_eq!(managers["h1"].as_deref(), Some("u1@example.com"));
    assert_eq!(managers["h2"].as_deref(), Some("h1@example.com"));
    assert_eq!(managers["h3"], None);
    drop(daemon);

    // Without stored profiles, a manager outside the push cannot be looked up: the user is
    // held for the next scheduled run (sending it would clear its manager until then), and
    // `xaas validate` says so up front.
    cfg.state.push_str("  store_profiles: false\n");
    cfg.write(&config);
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["validate", "--config", config.to_str().unwrap()])
        .env("XAAS_TEST_TOKEN", TOKEN)
        .env("XAAS_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&validate.stdout).to_string();
    assert!(said.contains("note: job `hr`") && said.contains("store_profiles: false"), "{said}");
    let daemon = Serve::start(dir.path(), &config, "push-no-profiles", &[]).await;
    let outcomes = push(&daemon, &[person("h4", "u2"), person("h5", "h5")]).await;
    assert_eq!(outcomes["h4"].0, "held", "{outcomes:?}");
    assert!(outcomes["h4"].1.contains("store_profiles: false"), "{outcomes:?}");
    assert_eq!(outcomes["h5"].0, "upserted", "a reference inside the push still resolves");
    let managers = okta_managers(&sim);
    assert!(!managers.contains_key("h4"));
    assert_eq!(managers["h5"].as_deref(), Some("h5@example.com"));
    assert!(sim.snapshot().violations.is_empty(), "{:#?}", sim.snapshot().violations);
}

// ----- the mapping side --------------------------------------------------------------------

fn compile(yaml: &str) -> Result<Mapping, String> {
    Mapping::from_yaml(Path::new("maps/hr.yaml"), yaml).map_err(|d| d.to_string())
}

#[test]
fn validation_names_every_reference_mistake_with_its_key() {
    let err = compile(
        r#"version: 2
external_id: id
status: { active_if: "true" }
attributes:
  userName: email
  manager: boss
references:
  manager: { person: boss, attribute: userName }
  managerId: { person: boss, attribute: userNme, on_missing: drop }
  boss2: { person: boss, attribute: managerId }
  bad-name: { attribute: userName }
"#,
    )
    .expect_err("invalid");
    for needle in [
        "references.manager: `manager` is also under `attributes`",
        "references.managerId.attribute: `userNme` is not an attribute of this mapping, did you mean `userName`?",
        "references.managerId.on_missing: unknown value `drop`, expected one of `omit`, `reject`",
        "references.boss2.attribute: `managerId` is itself a reference",
        "attribute name `bad-name` is not valid",
        "references.bad-name: missing key `person`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let v1 = compile(
        "version: 1\nexternal_id: id\nattributes:\n  userName: email\nreferences:\n  m: { person: b, attribute: userName }\n",
    )
    .expect_err("v1");
    assert!(v1.contains("`references` needs `version: 2`"), "{v1}");
}

#[test]
fn a_mapping_test_gives_the_other_records_a_case_needs() {
    let m = compile(
        r#"version: 2
external_id: id
status: { active_if: active == "true" }
attributes:
  userName: email
references:
  manager: { person: boss, attribute: userName }
  managerStrict: { person: boss, attribute: userName, on_missing: reject }
tests:
  - name: the boss's login
    input: { id: "2", email: a@x.io, boss: "1", active: "true" }
    others:
      - { id: "1", email: boss@x.io, active: "true" }
    expect:
      profile: { userName: a@x.io, manager: boss@x.io, managerStrict: boss@x.io }
  - name: no such boss
    input: { id: "2", email: a@x.io, boss: "9", active: "true" }
    others:
      - { id: "1", email: boss@x.io, active: "true" }
    expect:
      rejected: "references `9`, who is not among the case's `others`"
  - name: a boss the pull rejects
    input: { id: "2", email: a@x.io, boss: "1", active: "true" }
    others:
      - { id: "1", active: "true" }
    expect:
      rejected: "who was rejected by this pull"
  - name: a leaver carries no reference
    input: { id: "2", email: a@x.io, boss: "9", active: "false" }
    expect:
      status: inactive
  - name: wrong on purpose
    input: { id: "2", email: a@x.io, boss: "1", active: "true" }
    others:
      - { id: "1", email: boss@x.io, active: "true" }
    expect:
      profile: { userName: a@x.io, manager: someone@x.io, managerStrict: boss@x.io }
"#,
    )
    .unwrap();
    let results = testing::run(&m, chrono::Utc::now());
    for r in &results[..4] {
        assert!(r.passed(), "{}: {:?}", r.name, r.diff);
    }
    assert!(!results[4].passed());
    assert!(results[4].diff[0].contains("profile.manager"), "{:?}", results[4].diff);
    assert!(results[4].diff[0].contains("boss@x.io"), "{:?}", results[4].diff);
}
