//! `xaas demo`: the whole pipeline on embedded defaults, against the built-in emulator.
//!
//! It starts the emulator on a free loopback port, writes the embedded sample CSV, mapping and
//! a config into a temporary directory, and runs the sample job through the normal `run` path
//! (config loading included). The emulator's clock runs 1000× faster, so Okta's 5-minute
//! session spacing takes 0.3 s.
//!
//! To show deactivations too, the emulator first holds the sample's inactive users as active
//! Okta users, as if an earlier import had created them before they left.

use std::path::Path;
use std::time::Duration;

use crate::sim::{self, SimConfig};
use crate::sync::report::EXIT_FAILURE;

/// The sample users (100 synthetic people in the seed's DynamoDB schema).
pub const SAMPLE_CSV: &str = include_str!("../sample-data/users.csv");
/// The seed's mapping onto the Custom Identity Source profile.
pub const SAMPLE_MAPPING: &str = include_str!("../mappings/seed-dynamodb.yaml");

const IDENTITY_SOURCE: &str = "0oasim0000000000000";
const TOKEN: &str = "sim-token";
const CLOCK_SCALE: f64 = 1000.0;

/// Run the demo; returns the exit code.
pub async fn run(report_path: Option<&Path>) -> i32 {
    match run_inner(report_path).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

async fn run_inner(report_path: Option<&Path>) -> Result<i32, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind a loopback port for the emulator: {e}"))?;
    let config = SimConfig {
        identity_sources: vec![IDENTITY_SOURCE.into()],
        api_tokens: vec![TOKEN.into()],
        clock_scale: CLOCK_SCALE,
        processing_delay: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let handle = sim::spawn(config, listener)
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    write("users.csv", SAMPLE_CSV)?;
    write("mapping.yaml", SAMPLE_MAPPING)?;
    write(
        "xaas.yaml",
        &format!(
            "okta:\n  org_url: {url}\n  auth:\n    type: api_token\n    token: {TOKEN}\n  session_spacing_secs: {spacing}\n  poll_initial_ms: 50\n  poll_max_secs: 1\njobs:\n  - name: sample\n    identity_source_id: {IDENTITY_SOURCE}\n    source:\n      type: csv\n      path: users.csv\n    mapping: mapping.yaml\n",
            url = handle.base_url(),
            spacing = 300.0 / CLOCK_SCALE,
        ),
    )?;
    let settings =
        crate::settings::load(&dir.path().join("xaas.yaml")).map_err(|d| d.to_string())?;
    let job = &settings.jobs[0];

    // The people who have left: present in Okta from an earlier import, inactive in HR now.
    let pulled = crate::sync::pull_and_map(&settings.base_dir, job, &Default::default())
        .await
        .map_err(|f| f.to_string())?;
    let mut leavers = 0;
    for u in pulled.users.iter() {
        let u = u.map_err(|e| format!("cannot read back the sample users: {e}"))?;
        if u.active {
            continue;
        }
        handle.seed_user(IDENTITY_SOURCE, &u.external_id, u.profile.clone(), true);
        leavers += 1;
    }
    println!(
        "okta emulator on {} holds {leavers} active user(s) who have since left (inactive in the sample)",
        handle.base_url()
    );
    println!("importing sample-data/users.csv into the emulator…\n");

    let report =
        crate::sync::jobs::run_jobs(&settings, &[job], false).await.map_err(|e| e.to_string())?;
    print!("{}", report.render_text());
    if let Some(path) = report_path {
        crate::sync::jobs::write_report(path, &report).map_err(|e| e.to_string())?;
    }
    let snap = handle.snapshot();
    let active = snap.users.iter().filter(|u| u.status == "ACTIVE").count();
    let deactivated = snap.users.iter().filter(|u| u.status == "DEACTIVATED").count();
    println!(
        "\nthe emulator now holds {active} active and {deactivated} deactivated user(s); rule violations: {}",
        snap.violations.len()
    );
    handle.shutdown().await;
    Ok(report.exit_code())
}
