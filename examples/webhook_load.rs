//! Webhook load generator: N concurrent connections, each sending unique signed single-record
//! pushes back to back for a fixed time; prints accepted events per second and the ack
//! latency (p50, p99, max) of accepted requests.
//!
//! Usage: webhook_load URL [CONNECTIONS] [SECONDS]
//!   (e.g. `webhook_load http://127.0.0.1:8080 64 10`; job `hr`, secret `XAAS_WEBHOOK_SECRET`
//!   or `bench-secret`). Run through `bench/webhook.sh`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use xaas::daemon::auth::sign;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().context("usage: webhook_load URL [CONNECTIONS] [SECONDS]")?;
    let connections: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let secret = std::env::var("XAAS_WEBHOOK_SECRET").unwrap_or_else(|_| "bench-secret".into());
    let endpoint = format!("{}/v1/jobs/hr/records", url.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();

    let workers: Vec<_> = (0..connections)
        .map(|w| {
            // One client per worker: one keep-alive connection each.
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build();
            let (endpoint, secret) = (endpoint.clone(), secret.clone());
            tokio::spawn(async move {
                let client = client?;
                let mut latencies = Vec::new();
                let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let id = format!("load.w{w}.n{i}@example.com");
                    let body = serde_json::to_vec(&json!({
                        "id": id, "active": "true", "first_name": "Load", "last_name": "Test",
                        "email": id, "country": "FR", "dob": "1980-01-02",
                    }))?;
                    let ts = chrono::Utc::now().timestamp();
                    let sent = Instant::now();
                    let r = client
                        .post(&endpoint)
                        .header("X-Xaas-Timestamp", ts.to_string())
                        .header("X-Xaas-Signature", sign(secret.as_bytes(), ts, &body))
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    let status = r.status().as_u16();
                    r.bytes().await?;
                    if status == 202 {
                        latencies.push(sent.elapsed());
                    }
                    *statuses.entry(status).or_default() += 1;
                    i += 1;
                }
                anyhow::Ok((latencies, statuses))
            })
        })
        .collect();

    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for w in workers {
        let (l, s) = w.await??;
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(i - 1).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "connections {connections}, {elapsed:.1} s: {} accepted, {:.0} events/s; ack p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; statuses {statuses:?}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    Ok(())
}
