//! The `state:` block and the per-job delta, leavers and safeguards keys: defaults, values,
//! and every error reported with its key.

use std::path::Path;
use std::time::Duration;

use xaas::settings::{OnHold, StateBackend, load_with_env};

fn config(dir: &Path, top: &str, job: &str) -> std::path::PathBuf {
    let mapping = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/seed-dynamodb.yaml");
    let text = format!(
        "okta:\n  org_url: https://example.okta.com\n  auth:\n    type: api_token\n    token: t\n{top}jobs:\n  - name: hr\n    identity_source_id: 0oa1\n    source:\n      type: csv\n      path: users.csv\n    mapping: {}\n{job}",
        mapping.display()
    );
    let p = dir.join("xaas.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_are_conservative_and_the_state_lives_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let s = load_with_env(&config(dir.path(), "", ""), &[]).unwrap();
    assert_eq!(s.state.backend, StateBackend::Sqlite { path: dir.path().join("xaas-state.db") });
    assert!(s.state.store_profiles);
    let j = &s.jobs[0];
    assert!(j.delta);
    assert_eq!(j.full_resync_every, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!((j.leavers.deactivate_missing, j.leavers.missing_runs), (true, 1));
    let g = &j.safeguards;
    assert_eq!(g.max_deactivations, Some(500));
    assert_eq!(g.max_deactivations_percent, Some(10.0));
    assert_eq!(g.max_creations, None);
    assert_eq!(g.max_creations_percent, Some(25.0));
    assert_eq!(g.min_source_percent, Some(90.0));
    assert_eq!(g.on_hold, OnHold::Nothing);
}

#[test]
fn every_key_can_be_set() {
    let dir = tempfile::tempdir().unwrap();
    let p = config(
        dir.path(),
        "state:\n  path: var/state.db\n  store_profiles: false\n",
        "    delta: false\n    full_resync_every: 12h\n    leavers:\n      missing_runs: 3\n    safeguards:\n      max_deactivations: null\n      max_creations: 10\n      min_source_percent: 50\n      on_hold: upserts\n",
    );
    let s = load_with_env(&p, &[]).unwrap();
    assert_eq!(s.state.backend, StateBackend::Sqlite { path: dir.path().join("var/state.db") });
    assert!(!s.state.store_profiles);
    let j = &s.jobs[0];
    assert!(!j.delta);
    assert_eq!(j.full_resync_every, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(j.leavers.missing_runs, 3);
    assert_eq!(j.safeguards.max_deactivations, None, "null turns a threshold off");
    assert_eq!(j.safeguards.max_creations, Some(10));
    assert_eq!(j.safeguards.min_source_percent, Some(50.0));
    assert_eq!(j.safeguards.on_hold, OnHold::Upserts);
    let never = config(dir.path(), "", "    full_resync_every: never\n");
    assert_eq!(load_with_env(&never, &[]).unwrap().jobs[0].full_resync_every, None);
}

#[test]
fn bad_values_are_all_reported_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = config(
        dir.path(),
        "state:\n  pth: x.db\n",
        "    full_resync_every: weekly\n    leavers:\n      missing_runs: 0\n    safeguards:\n      max_deactivations_percent: 150\n      max_deactivation: 5\n",
    );
    let err = load_with_env(&p, &[]).unwrap_err().to_string();
    for want in [
        "state.pth",
        "jobs[0].full_resync_every",
        "jobs[0].leavers.missing_runs",
        "jobs[0].safeguards.max_deactivations_percent",
        "max_deactivation",
    ] {
        assert!(err.contains(want), "{want} not reported in:\n{err}");
    }
}

#[test]
fn the_dynamodb_backend_has_defaults_and_checks_its_keys() {
    use xaas::settings::DynamoStateSettings;
    let dir = tempfile::tempdir().unwrap();
    let p = config(dir.path(), "state:\n  backend: dynamodb\n", "");
    let s = load_with_env(&p, &[]).unwrap();
    assert_eq!(
        s.state.backend,
        StateBackend::Dynamodb(DynamoStateSettings {
            table_prefix: "xaas_".into(),
            region: None,
            endpoint_url: None,
            lease: Duration::from_secs(15),
        })
    );
    let p = config(
        dir.path(),
        "state:\n  backend: dynamodb\n  table_prefix: prod-xaas.\n  region: eu-west-1\n  endpoint_url: http://127.0.0.1:8000\n  lease_secs: 30\n",
        "",
    );
    let StateBackend::Dynamodb(d) = load_with_env(&p, &[]).unwrap().state.backend else {
        panic!("not dynamodb")
    };
    assert_eq!(d.table_prefix, "prod-xaas.");
    assert_eq!(d.region.as_deref(), Some("eu-west-1"));
    assert_eq!(d.endpoint_url.as_deref(), Some("http://127.0.0.1:8000"));
    assert_eq!(d.lease, Duration::from_secs(30));
    let p = config(
        dir.path(),
        "state:\n  backend: dynamodb\n  table_prefix: 'no spaces'\n  lease_secs: 1\n",
        "",
    );
    let err = load_with_env(&p, &[]).unwrap_err().to_string();
    for want in ["state.table_prefix", "state.lease_secs"] {
        assert!(err.contains(want), "{want} not reported in:\n{err}");
    }
    let p = config(dir.path(), "state:\n  backend: redis\n", "");
    let err = load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.contains("state.backend"), "{err}");
}
