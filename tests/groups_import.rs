//! Groups and memberships derived by the mapping, imported through the real binary into the
//! emulator: the groups and members Okta ends up with are exactly those the data implies, and
//! the emulator records no rule violation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What `mappings/csv-hr-export.yaml` must produce for `sample-data/users.csv`, computed from
/// the CSV without the mapping code: one group per country of the active users.
fn expected_groups() -> BTreeMap<String, BTreeSet<String>> {
    let mut rdr = csv::Reader::from_path(Path::new(ROOT).join("sample-data/users.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (id, active, country) = (col("id"), col("active"), col("country"));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rdr.records() {
        let r = r.unwrap();
        if r[active].trim().eq_ignore_ascii_case("true") {
            out.entry(format!("country-{}", r[country].trim().to_lowercase()))
                .or_default()
                .insert(r[id].trim().to_lowercase());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_creates_the_groups_and_memberships_the_data_implies() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: {url}\n  auth:\n    type: api_token\n    token_env: XAAS_TEST_TOKEN\n  \
             session_spacing_secs: 1.05\n  poll_initial_ms: 20\n  poll_max_secs: 1\njobs:\n  - name: hr\n    \
             identity_source_id: {SOURCE}\n    source:\n      type: csv\n      path: {csv}\n    mapping: {mapping}\n",
            url = sim.base_url(),
            csv = Path::new(ROOT).join("sample-data/users.csv").display(),
            mapping = Path::new(ROOT).join("mappings/csv-hr-export.yaml").display(),
        ),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let out = xaas_async(run_args(&config, &report), TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "emulator saw rule violations: {:#?}", snap.violations);
    let want = expected_groups();
    assert!(want.len() >= 5, "the sample spans several countries: {want:?}");
    let got: BTreeMap<String, BTreeSet<String>> = snap
        .groups
        .iter()
        .map(|g| (g.external_id.clone(), g.members.iter().cloned().collect()))
        .collect();
    assert_eq!(got, want);
    let de = snap.groups.iter().find(|g| g.external_id == "country-de").expect("country-de");
    assert_eq!(de.display_name.as_deref(), Some("Staff Germany"));
    assert_eq!(de.description.as_deref(), Some("Everyone whose HR record is in country DE"));

    // Groups rode in the upsert session, after the users; leavers went in their own session.
    let loaded: Vec<_> = snap.sessions.iter().filter(|s| !s.loads.is_empty()).collect();
    let kinds: Vec<Vec<&str>> =
        loaded.iter().map(|s| s.loads.iter().map(|l| l.kind.as_str()).collect()).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[1], ["delete"]);
    let first_group = kinds[0].iter().position(|k| *k != "upsert").expect("group loads");
    assert!(kinds[0][first_group..].iter().all(|k| *k != "upsert" && *k != "delete"), "{kinds:?}");

    let report = read_report(&report);
    let c = &report["jobs"][0]["counts"];
    assert_eq!(c["groups"], want.len());
    assert_eq!(c["memberships"], want.values().map(BTreeSet::len).sum::<usize>());
    assert!(stdout.contains(&format!("groups {}", want.len())), "{stdout}");
}
