//! Termination end-to-end latency: seed an active user in the emulator, push a signed
//! `active: false` record for it to `xaas serve`, and time until the emulator shows the user
//! DEACTIVATED. Repeats, waiting out Okta's session spacing between probes (so no spacing is
//! pending, as the target assumes), and prints each latency and the median.
//!
//! With `XAAS_PROBE_UNDER_SPACING=1` it does the opposite: before each push it makes the
//! emulator record a session created that instant, so Okta's 5-minute rule is in force (what
//! a termination meets right after a scheduled import created its session), and does not wait.
//! The summary then gives p50 and p99 as well.
//!
//! Usage: termination_probe WEBHOOK_URL SIM_URL [PROBES] [SPACING_SECS] [PREFIX]
//! (job `hr` with `mappings/csv-hr-export.yaml`; secret `XAAS_WEBHOOK_SECRET` or
//! `bench-secret`). Run through `bench/daemon.sh`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use xaas::daemon::auth::sign;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: termination_probe WEBHOOK_URL SIM_URL [PROBES] [SPACING_SECS] [PREFIX]";
    let webhook = args.next().context(usage)?;
    let sim = args.next().context(usage)?;
    let probes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let spacing: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1.0);
    let prefix = args.next().unwrap_or_else(|| "probe".into());
    let secret = std::env::var("XAAS_WEBHOOK_SECRET").unwrap_or_else(|_| "bench-secret".into());
    let under_spacing = std::env::var("XAAS_PROBE_UNDER_SPACING").is_ok_and(|v| v == "1");
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    for i in 0..probes {
        let id = format!("{prefix}{i}@example.com");
        client
            .post(format!("{sim}/__sim/users"))
            .json(&json!({ "externalId": id, "profile": { "email": id }, "active": true }))
            .send()
            .await?
            .error_for_status()?;
        if under_spacing {
            client
                .post(format!("{sim}/__sim/sessions"))
                .json(&json!({ "status": "COMPLETED" }))
                .send()
                .await?
                .error_for_status()?;
        } else {
            // No session spacing pending: wait it out since the previous probe's session.
            tokio::time::sleep(Duration::from_secs_f64(spacing + 0.2)).await;
        }
        let body = serde_json::to_vec(&json!({
            "id": id, "active": "false", "first_name": "Leaver", "last_name": "Probe",
            "email": id, "country": "FR", "dob": "1980-01-02",
        }))?;
        let ts = chrono::Utc::now().timestamp();
        let started = Instant::now();
        let r = client
            .post(format!("{webhook}/v1/jobs/hr/records"))
            .header("X-Xaas-Timestamp", ts.to_string())
            .header("X-Xaas-Signature", sign(secret.as_bytes(), ts, &body))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            bail!("the push was refused: {} {}", r.status(), r.text().await?);
        }
        loop {
            let state: serde_json::Value =
                client.get(format!("{sim}/__sim/state")).send().await?.json().await?;
            let deactivated = state["users"].as_array().is_some_and(|users| {
                users.iter().any(|u| u["external_id"] == id && u["status"] == "DEACTIVATED")
            });
            if deactivated {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("{id} was not deactivated within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!("termination {}: {ms:.0} ms (push → DEACTIVATED in the emulator)", i + 1);
        latencies.push(ms);
    }
    latencies.sort_by(f64::total_cmp);
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
    let max = latencies.last().copied().unwrap_or(0.0);
    let p99 = latencies
        .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let spacing = if under_spacing { ", okta's 5-minute rule in force" } else { "" };
    println!(
        "termination latency over {probes} probe(s){spacing}: median {median:.0} ms, p99 {p99:.0} ms, max {max:.0} ms"
    );
    Ok(())
}
