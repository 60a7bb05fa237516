//! A faithful local emulator of Okta's Identity Sources import API (FACTS.md §2a–§11).
//!
//! It exists so the client, the sync engine, the demo and benchmarks can run against
//! something that says "no" exactly where Okta would: the session lifecycle, the 5-minute
//! rule, the 200-entity / 200 KB / 50-request / 10,000-user limits, Okta-shaped errors,
//! rate-limit headers and 429s. Every rejection, and every accepted-but-discouraged practice
//! (duplicate external ids, empty values), is also recorded as a [`Violation`], so tests can
//! assert that a client *behaves*, not only that it eventually succeeds.
//!
//! Where the official spec and the recorded traffic disagree, the emulator follows the
//! recordings (FACTS §11): create → 201, start-import → a single object, list → active only.
//!
//! # Layout
//! - [`clock`]: the simulated clock (scaled, advanceable) used for session timestamps.
//! - [`errors`]: Okta-shaped error bodies and the violations they carry.
//! - [`validate`]: pure parsing/validation of bulk-load bodies.
//! - [`state`]: the state, the session rules and background processing.
//! - [`routes`]: the axum router, the `/api` middleware and the `/__sim` endpoints.
//!
//! Introspection (no auth): `GET /__sim/state`, `POST /__sim/clock/advance {"seconds":N}`,
//! `POST /__sim/users {"identitySourceId"?, "externalId", "profile", "active"}`,
//! `POST /__sim/sessions {"identitySourceId"?, "status"}`, `POST /__sim/fail-next
//! {"identitySourceId"?}`, `POST /__sim/reset`, and `GET|POST|DELETE /__sim/faults` (see
//! [`faults`]).
//!
//! Authentication: SSWS tokens from [`SimConfig::api_tokens`], or OAuth 2.0 access tokens
//! from `POST /oauth2/v1/token` for the service apps in [`SimConfig::oauth_clients`] (see
//! [`oauth`]).

mod apply;
mod clock;
mod direct;
mod errors;
pub mod faults;
pub mod oauth;
mod routes;
mod state;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::okta::model::SessionStatus;
pub use faults::{Fault, FaultPlan, FaultRule};
pub use oauth::SimOAuthClient;
pub use routes::router;
pub use state::{LoadView, Sim, SimGroup, SimSessionView, SimSnapshot, SimUser, Violation};

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Identity source ids that exist (others get 404 E0000007).
    pub identity_sources: Vec<String>,
    /// Valid SSWS API tokens (others get 401 E0000011).
    pub api_tokens: Vec<String>,
    /// Simulated seconds per real second for the 5-minute rule and the 24-hour expiry.
    pub clock_scale: f64,
    /// Added latency per `/api` call.
    pub latency: Duration,
    /// Requests per fixed 60-second window before 429 E0000047.
    pub rate_limit_per_minute: u32,
    /// Simultaneous `/api` requests before a concurrency 429 (`X-Rate-Limit-Limit: 0`).
    pub concurrency_limit: u32,
    /// How long (real time) a triggered session takes to process.
    pub processing_delay: Duration,
    /// Okta's documented per-request and per-session limits.
    pub limits: SimLimits,
    /// OAuth service apps that may get access tokens (none by default).
    pub oauth_clients: Vec<SimOAuthClient>,
    /// Lifetime of issued access tokens (Okta: one hour). Shorten it to test renewal.
    pub access_token_lifetime: Duration,
    /// Length of the fixed rate-limit window (Okta: 60 s). Shorten it in tests.
    pub rate_limit_window: Duration,
    /// Faults to inject from the start.
    pub faults: FaultPlan,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            identity_sources: vec!["0oasim0000000000000".into()],
            api_tokens: vec!["sim-token".into()],
            clock_scale: 1.0,
            latency: Duration::ZERO,
            rate_limit_per_minute: 600,
            concurrency_limit: 75,
            processing_delay: Duration::from_millis(100),
            limits: SimLimits::default(),
            oauth_clients: Vec::new(),
            access_token_lifetime: oauth::DEFAULT_TOKEN_LIFETIME,
            rate_limit_window: Duration::from_secs(60),
            faults: FaultPlan::default(),
        }
    }
}

/// Okta's limits (FACTS §6). Lower them in tests to reach them cheaply.
#[derive(Debug, Clone)]
pub struct SimLimits {
    /// Entities per bulk-load request.
    pub max_profiles_per_request: usize,
    /// Bytes per bulk-load request body.
    pub max_request_bytes: usize,
    /// Bulk-load requests per session.
    pub max_requests_per_session: usize,
    /// Distinct users per session.
    pub max_users_per_session: usize,
    /// Minimum simulated time between session creations/triggers (the 5-minute rule).
    pub session_spacing: Duration,
    /// Simulated inactivity after which a CREATED/IN_PROGRESS session becomes EXPIRED.
    pub session_expiry: Duration,
}

impl Default for SimLimits {
    fn default() -> Self {
        Self {
            max_profiles_per_request: 200,
            max_request_bytes: 204_800,
            max_requests_per_session: 50,
            max_users_per_session: 10_000,
            session_spacing: Duration::from_secs(300),
            session_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// Start the emulator on `listener`, serving in a background task.
pub async fn spawn(
    config: SimConfig,
    listener: tokio::net::TcpListener,
) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let sim = Sim::new(config);
    let app = router(sim.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Dropping the handle drops `stop`, which also ends the server.
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(SimHandle { addr, sim, stop, task })
}

/// A running emulator.
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    sim: Sim,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state, e.g. to build another router on it.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Same data as `GET /__sim/state`.
    pub fn snapshot(&self) -> SimSnapshot {
        self.sim.snapshot()
    }

    pub fn advance_clock(&self, by: Duration) {
        self.sim.advance_clock(by);
    }

    pub fn seed_user(
        &self,
        source_id: &str,
        external_id: &str,
        profile: BTreeMap<String, String>,
        active: bool,
    ) {
        self.sim.seed_user(source_id, external_id, profile, active);
    }

    /// A group made outside xaas (by hand, or by another tool), with members.
    pub fn seed_group(
        &self,
        source_id: &str,
        external_id: &str,
        display_name: &str,
        members: &[String],
    ) {
        self.sim.seed_group(source_id, external_id, display_name, members);
    }

    pub fn inject_session(&self, source_id: &str, status: SessionStatus) -> String {
        self.sim.inject_session(source_id, status)
    }

    pub fn fail_next_session(&self, source_id: &str) {
        self.sim.fail_next_session(source_id);
    }

    /// Answer the direct user endpoints as an org without the feature (`false`) or with it.
    pub fn set_direct_endpoints(&self, on: bool) {
        self.sim.set_direct_endpoints(on);
    }

    /// Replace the fault plan (counters restart at zero).
    pub fn set_faults(&self, plan: FaultPlan) {
        self.sim.set_faults(plan);
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        self.sim.set_faults(FaultPlan::default());
    }

    /// Requests the emulator is still handling: the API's in-flight count plus those an
    /// injected fault holds (a delayed request may yet be applied after its client gave up).
    pub fn requests_in_flight(&self) -> u32 {
        let shared = &self.sim.shared;
        shared.in_flight.load(std::sync::atomic::Ordering::SeqCst)
            + shared.faulted_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until no request is in flight (see [`SimHandle::requests_in_flight`]), for at most
    /// `timeout`; `false` if some still were. Tests call it before judging the emulator's
    /// state, so that a request a client abandoned lands in the step that sent it.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.requests_in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stop serving and processing. Open keep-alive connections get 5 s to finish.
    pub async fn shutdown(self) {
        self.sim.shutdown();
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}
