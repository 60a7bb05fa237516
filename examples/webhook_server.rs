//! A minimal webhook server for benchmarks: the real router, a real event store (group commit,
//! `synchronous = FULL`) in a temporary directory, the repo's CSV mapping, and a no-op
//! `Dispatch`. It stands in for `xaas serve` so the webhook can be measured on its own.
//!
//! The per-client rate limit is set out of the way (the load generator is one client, on
//! loopback); everything else (signature check, replay cache, parsing, mapping, the durable
//! append) is what production runs.
//!
//! Usage: webhook_server [LISTEN] (default 127.0.0.1:0). Prints `listening on ADDR`, serves
//! until Ctrl-C or SIGTERM, then prints how many events it stored. The HMAC secret is
//! `XAAS_WEBHOOK_SECRET` (default `bench-secret`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use xaas::daemon::webhook::{WebhookContext, router};
use xaas::daemon::{Dispatch, TriggerAck};
use xaas::settings::Job;
use xaas::state::events::EventStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers the webhook's calls without queueing anything.
struct NoDispatch(Arc<Job>);

impl Dispatch for NoDispatch {
    fn job(&self, name: &str) -> Option<Arc<Job>> {
        (self.0.name == name).then(|| self.0.clone())
    }
    fn events_stored(&self, _job: &str, _urgent: bool) {}
    fn trigger(&self, _job: &str) -> TriggerAck {
        TriggerAck { status: "queued", position: 0 }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let dir = tempfile::tempdir()?;
    let mapping = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/csv-hr-export.yaml");
    std::fs::write(dir.path().join("hr.csv"), "id\n")?;
    let config = format!(
        "okta:\n  org_url: https://example.okta.com\n  auth:\n    type: api_token\n    token: unused\n\
         jobs:\n  - name: hr\n    identity_source_id: 0oabench\n    source:\n      type: csv\n      path: hr.csv\n    mapping: {}\n\
         serve:\n  webhook:\n    auth:\n      type: hmac\n      secrets:\n        - env: XAAS_WEBHOOK_SECRET\n    \
         rate_limit_per_second: 1000000\n    rate_limit_burst: 1000000\n",
        mapping.display()
    );
    if std::env::var("XAAS_WEBHOOK_SECRET").is_err() {
        // SAFETY: single-threaded here; the runtime's workers do not read the environment.
        unsafe { std::env::set_var("XAAS_WEBHOOK_SECRET", "bench-secret") };
    }
    let path = dir.path().join("xaas.yaml");
    std::fs::write(&path, config)?;
    let settings = xaas::settings::load(&path).map_err(|d| anyhow::anyhow!("{d}"))?;
    let webhook = settings.serve.webhook.context("serve.webhook is set")?;
    let job = settings.jobs.into_iter().next().context("one job")?;
    let events = EventStore::open(&dir.path().join("xaas-state.db"))?;
    let ctx = WebhookContext::fixed(Arc::new(NoDispatch(Arc::new(job))), events.clone(), webhook);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    println!("stored {} events", events.queued_total()?);
    Ok(())
}
