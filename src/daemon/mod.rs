//! `xaas serve`: the long-running daemon.
//!
//! One process serves every job of the config:
//!
//! - [`schedule`]: each job's cron `schedule` (one loop per job on the wall clock, DST-safe)
//!   puts a run on the queue.
//! - [`queue`]: one ordered queue per identity source. Scheduled runs, webhook batches and
//!   manual triggers all go through it, so two imports never overlap on one identity source
//!   (Okta allows one active session per source, and 5 minutes between creations).
//! - [`webhook`]: `POST /v1/jobs/{job}/records` (HR systems push records in the job's source
//!   shape), `POST /v1/jobs/{job}/trigger`, `GET /v1/events/{id}`; signed (HMAC-SHA256) or
//!   bearer-authenticated, size- and rate-limited. An event is written durably
//!   ([`crate::state::events`]) before the 202.
//! - [`push`]: coalesces queued events into import sessions; terminations are urgent.
//! - [`health`] and [`metrics`]: `/healthz`, `/readyz`, Prometheus `/metrics`.
//! - [`lease`]: with the DynamoDB state backend, several replicas share the work; each identity
//!   source is worked by its lease owner only (every replica accepts webhook events).
//! - [`ui`] and [`api`]: the monitoring pages (`/ui`) and their JSON (`/v1/jobs`, `/v1/runs`),
//!   when `serve.ui` is on.
//!
//! Shutdown (SIGTERM) stops intake, lets the running import finish or cancels its open session
//! before a deadline, and exits 0. SIGHUP reloads the config and mappings, keeping the old ones
//! when the new ones are invalid.

pub mod api;
pub mod auth;
pub mod coordination;
pub mod health;
pub mod lease;
pub mod notify;
pub mod push;
pub mod queue;
pub mod schedule;
pub mod ui;
pub mod watch;
pub mod webhook;

use std::sync::Arc;

use crate::settings::Job;

/// What the webhook needs from the rest of the daemon: the jobs as currently configured (they
/// change on SIGHUP), and a way to wake the queue of a job's identity source.
pub trait Dispatch: Send + Sync + 'static {
    /// The job named `name`, as currently configured.
    fn job(&self, name: &str) -> Option<Arc<Job>>;

    /// Events for `job` were stored durably; `urgent` when one of them maps to a deactivated
    /// user (a termination), which flushes at once instead of after the batch window.
    fn events_stored(&self, job: &str, urgent: bool);

    /// Ask for a pull of `job` now (`POST /v1/jobs/{job}/trigger`). Returns where it stands.
    fn trigger(&self, job: &str) -> TriggerAck;

    /// The configured job names (for "no job named …" answers).
    fn job_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The answer to a manual trigger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TriggerAck {
    /// `queued`, or `already_queued` when a run of this job was already waiting (runs never
    /// pile up).
    pub status: &'static str,
    /// Items ahead of it in the identity source's queue (the running one included).
    pub position: usize,
}

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::okta::OktaClient;
use crate::okta::session::SpacingClock;
use crate::settings::{MissedRuns, Settings};
use crate::state::events::EventStore;
use crate::sync::{self, RunOptions};
use crate::telemetry as metrics;
use queue::{PushProgress, RunReason, Runner, SourceQueue};
use schedule::{Fired, Schedule};

/// Why a configuration reload was refused; the previous configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{} problem(s); the previous configuration stays in force:\n{}", .0.0.len(), .0.render_with_sources())]
    Invalid(crate::diag::Diagnostics),
    #[error("the previous configuration stays in force: {0}")]
    Okta(#[from] crate::okta::config::BuildError),
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the state store: {0}")]
    State(#[from] crate::state::StateError),
    #[error("cannot build the okta client: {0}")]
    Okta(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// The settings in force, and the Okta client built from them (both swapped on reload).
struct Live {
    settings: Arc<Settings>,
    client: OktaClient,
}

/// An Okta client bound to one lease term (its cancellation) and one version of the settings.
type TermClient = (CancellationToken, Arc<Settings>, OktaClient);

/// The running daemon, shared by the HTTP handlers, the scheduler and the queue workers.
pub struct Daemon {
    config_path: PathBuf,
    live: RwLock<Arc<Live>>,
    events: EventStore,
    queues: RwLock<HashMap<String, Arc<SourceQueue>>>,
    spacing: Mutex<HashMap<String, SpacingClock>>,
    /// With leases: each source's Okta client for the current lease term and settings (one
    /// client, so one OAuth token, per term rather than per run).
    source_clients: Mutex<HashMap<String, TermClient>>,
    /// Fired at the shutdown deadline: the Okta client stops and cancels its open session.
    okta_cancel: CancellationToken,
    /// Fired when intake stops: queue workers finish the item in hand and return.
    stop: CancellationToken,
    workers: TaskTracker,
    readiness: Arc<health::Readiness>,
    /// Delivers notifications in the background (targets from the settings in force).
    notifier: notify::Notifier,
    /// The webhook's settings, swapped on reload.
    webhook: tokio::sync::watch::Sender<Option<Arc<crate::settings::webhook::WebhookSettings>>>,
    /// How this replica shares the identity sources with others (none, with SQLite).
    coordination: coordination::Coordination,
    self_ref: std::sync::Weak<Daemon>,
}

impl Daemon {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.live().settings.clone()
    }

    pub fn events(&self) -> &EventStore {
        &self.events
    }

    /// Whether this replica works `source` (holds its lease; always, without leases).
    pub fn owns(&self, source: &str) -> bool {
        self.coordination.owns(source)
    }

    /// The Okta client to work `source` with, `None` when this replica does not own it. With
    /// leases, the client's cancellation is the lease term's: losing the lease stops it before
    /// its next session create or upload.
    fn client_for(&self, live: &Live, source: &str) -> Option<OktaClient> {
        let term = match self.coordination.term(source) {
            coordination::Term::Always => return Some(live.client.clone()),
            coordination::Term::NotOwned => return None,
            coordination::Term::Lease(term) => term,
        };
        let mut clients = self.source_clients.lock().unwrap_or_else(|e| e.into_inner());
        // A lost term is cancelled, and a reload swaps the settings: both build a new client.
        if let Some((t, settings, client)) = clients.get(source)
            && !t.is_cancelled()
            && Arc::ptr_eq(settings, &live.settings)
        {
            return Some(client.clone());
        }
        match live.settings.okta.build_client() {
            Ok(c) => {
                let c = c.with_cancellation(term.clone());
                clients.insert(source.to_string(), (term, live.settings.clone(), c.clone()));
                Some(c)
            }
            Err(e) => {
                warn!(error = %e, "cannot build the okta client");
                None
            }
        }
    }

    /// A connection to the state store of the settings in force: the daemon's one way to
    /// open it (a run, a pushed batch, the UI's approvals and the missed-run check use it).
    pub fn open_store(
        &self,
    ) -> Result<Box<dyn crate::state::StateStore>, crate::state::StateError> {
        crate::state::open(&self.settings().state)
    }

    fn queue(&self, source: &str) -> Option<Arc<SourceQueue>> {
        self.queues.read().unwrap_or_else(|e| e.into_inner()).get(source).cloned()
    }

    /// The identity source's 5-minute clock, persisted in the state file so a restart (even
    /// after SIGKILL) keeps honouring the spacing of the sessions created before it.
    fn spacing(&self, source: &str) -> SpacingClock {
        let mut clocks = self.spacing.lock().unwrap_or_else(|e| e.into_inner());
        clocks
            .entry(source.to_string())
            .or_insert_with(|| self.events.spacing_clock(source))
            .clone()
    }

    /// Take in the settings in force: a queue per identity source, the coordination's job
    /// map, and the schedule gauges (what "no successful run in twice the schedule" compares
    /// with).
    fn apply_settings(&self, settings: &Settings) {
        // Fencing knows the jobs before any queue can run one.
        self.coordination.configure(settings);
        self.ensure_queues(settings);
        let now = Utc::now();
        for job in &settings.jobs {
            if let Some(interval) = job.schedule.as_ref().and_then(|s| s.interval_after(now)) {
                metrics::set_schedule_interval(&job.name, interval);
            }
        }
    }

    /// A queue and its worker for every identity source of `settings` that has none yet.
    fn ensure_queues(&self, settings: &Settings) {
        let Some(me) = self.self_ref.upgrade() else { return };
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        for job in &settings.jobs {
            if queues.contains_key(&job.identity_source_id) {
                continue;
            }
            let q = Arc::new(SourceQueue::new(
                job.identity_source_id.clone(),
                settings.serve.batch_window,
                settings.serve.max_batch_records,
            ));
            queues.insert(job.identity_source_id.clone(), q.clone());
            let runner: Arc<dyn Runner> = Arc::new(DaemonRunner(me.clone()));
            let stop = self.stop.clone();
            let span = info_span!("queue", identity_source = %job.identity_source_id);
            self.workers.spawn(q.work(runner, stop).instrument(span));
        }
    }

    /// Queue a run of `job` (scheduled, missed or manual).
    pub fn enqueue_run(&self, job: &str, reason: RunReason) -> TriggerAck {
        let settings = self.settings();
        let Some(j) = settings.jobs.iter().find(|j| j.name == job) else {
            return TriggerAck { status: "unknown_job", position: 0 };
        };
        match self.queue(&j.identity_source_id) {
            Some(q) => q.enqueue_run(job, reason, j.missed),
            None => TriggerAck { status: "shutting_down", position: 0 },
        }
    }

    /// Reload the config file (SIGHUP): validated first, swapped in only when valid.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        self.readiness.set_config_error(result.as_ref().err().map(ToString::to_string));
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let settings = crate::settings::load(&self.config_path).map_err(ReloadError::Invalid)?;
        let client = settings.okta.build_client()?.with_cancellation(self.okta_cancel.clone());
        self.apply_settings(&settings);
        self.readiness.retain_jobs(settings.jobs.iter().map(|j| j.name.as_str()));
        // Read first: a `borrow()` guard in the match would deadlock `send_replace`.
        let webhook_on = self.webhook.borrow().is_some();
        match (webhook_on, settings.serve.webhook.clone()) {
            (true, Some(w)) => {
                self.webhook.send_replace(Some(Arc::new(w)));
            }
            (false, None) => {}
            // The routes are mounted at start: turning the webhook on or off needs a restart.
            (true, None) => warn!(
                "serve.webhook was removed: the webhook stays on with its previous settings until a restart"
            ),
            (false, Some(_)) => {
                warn!("serve.webhook was added: restart the daemon to turn the webhook on")
            }
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Live { settings: Arc::new(settings), client });
        info!(config = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    /// Runs missed while the daemon was down (`missed: once`): one run per job (of `only`'s
    /// identity source, when given) whose last scheduled time is after its last run's start.
    fn queue_missed_runs(&self, now: DateTime<Utc>, only: Option<&str>) {
        let settings = self.settings();
        let store = match self.open_store() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the run history: missed runs are not caught up");
                return;
            }
        };
        for job in &settings.jobs {
            if only.is_some_and(|s| s != job.identity_source_id) {
                continue;
            }
            let (Some(schedule), MissedRuns::Once) = (&job.schedule, job.missed) else { continue };
            let Some(due) = schedule.last_at_or_before(now) else { continue };
            let last = store.last_run(&job.name).ok().flatten();
            let last_start = last
                .and_then(|r| DateTime::parse_from_rfc3339(&r.started_at).ok())
                .map(|d| d.with_timezone(&Utc));
            if let Some(started) = last_start
                && started < due
            {
                info!(job = %job.name, due = %due, last_run = %started, "a scheduled run was missed while the daemon was down: running it once");
                self.enqueue_run(&job.name, RunReason::Missed(due));
            }
        }
    }

    /// Wake the queues of sources with events left pending (by a crash or a shutdown).
    fn queue_pending_events(&self) {
        let settings = self.settings();
        let mut by_source: HashMap<&str, Vec<String>> = HashMap::new();
        for j in &settings.jobs {
            by_source.entry(j.identity_source_id.as_str()).or_default().push(j.name.clone());
        }
        for (source, jobs) in by_source {
            match self.events.has_pending(&jobs) {
                Ok((n, urgent)) if n > 0 => {
                    info!(identity_source = %source, events = n, "pushed events are pending from before the restart");
                    if let Some(q) = self.queue(source) {
                        q.events_stored(urgent);
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot read the pending events"),
            }
        }
    }

    /// Queue depth per identity source and pending events, for `/metrics`.
    fn publish_gauges(&self) {
        for (source, q) in self.queues.read().unwrap_or_else(|e| e.into_inner()).iter() {
            metrics::set_queue_depth(source, q.depth());
        }
        if let Ok(n) = self.events.queued_total() {
            metrics::set_events_pending(n);
        }
    }

    fn close_queues(&self) {
        for q in self.queues.read().unwrap_or_else(|e| e.into_inner()).values() {
            q.close();
        }
    }
}

impl Dispatch for Daemon {
    fn job(&self, name: &str) -> Option<Arc<Job>> {
        self.settings().jobs.iter().find(|j| j.name == name).cloned().map(Arc::new)
    }

    fn events_stored(&self, job: &str, urgent: bool) {
        let settings = self.settings();
        // Another replica's events reach their owner through its poll (see `lease`).
        if let Some(j) = settings.jobs.iter().find(|j| j.name == job)
            && self.owns(&j.identity_source_id)
            && let Some(q) = self.queue(&j.identity_source_id)
        {
            q.events_stored(urgent);
        }
    }

    fn trigger(&self, job: &str) -> TriggerAck {
        let settings = self.settings();
        let source = settings.jobs.iter().find(|j| j.name == job).map(|j| &j.identity_source_id);
        if let Some(source) = source
            // Stored durably for the owner (this replica or another), which claims it within
            // a poll and deletes it once the run is over: it survives the owner's death.
            && let Some(stored) = self.coordination.store_trigger(job)
        {
            return match stored {
                Ok(()) => {
                    info!(job, identity_source = %source, "trigger stored for the lease owner");
                    TriggerAck { status: "forwarded", position: 0 }
                }
                Err(e) => {
                    warn!(job, error = %e, "cannot store the trigger for the lease owner");
                    TriggerAck { status: "not_stored", position: 0 }
                }
            };
        }
        self.enqueue_run(job, RunReason::Trigger)
    }

    fn job_names(&self) -> Vec<String> {
        self.settings().jobs.iter().map(|j| j.name.clone()).collect()
    }
}

impl Fired for Daemon {
    fn fire(&self, job: &str, at: DateTime<Utc>) {
        let settings = self.settings();
        let Some(j) = settings.jobs.iter().find(|j| j.name == job) else { return };
        if !self.owns(&j.identity_source_id) {
            tracing::debug!(job, "scheduled run left to the lease owner of its identity source");
            return;
        }
        let delay = schedule::jitter_delay(j.jitter);
        let Some(me) = self.self_ref.upgrade() else { return };
        let job = job.to_string();
        let stop = self.stop.clone();
        // The jitter delays the enqueue, not the worker: other work goes on meanwhile.
        self.workers.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
            me.enqueue_run(&job, RunReason::Scheduled(at));
        });
    }
}

/// The real [`Runner`]: runs jobs and pushed batches against Okta.
struct DaemonRunner(Arc<Daemon>);

impl Runner for DaemonRunner {
    fn run(&self, source: &str, job: &str, reason: RunReason) -> BoxFuture<'static, ()> {
        let daemon = self.0.clone();
        let spacing = daemon.spacing(source);
        let job = job.to_string();
        let source = source.to_string();
        off_worker(
            move || async move {
                let live = daemon.live();
                let Some(j) = live.settings.jobs.iter().find(|j| j.name == job) else {
                    warn!(job = %job, "the job is no longer configured: run dropped");
                    return;
                };
                let Some(client) = daemon.client_for(&live, &source) else {
                    info!(job = %job, "not the lease owner of the identity source: run dropped");
                    return;
                };
                let settings = &live.settings;
                let report = match daemon.open_store() {
                    Ok(mut store) => {
                        if matches!(reason, RunReason::Scheduled(_) | RunReason::Missed(_))
                            && let Some(q) =
                                watch::schedule_held_back(store.as_ref(), &job, Utc::now())
                        {
                            info!(job = %job, reason = %q.reason, next_attempt = %q.next_attempt, "scheduled run skipped: the job is quarantined");
                            daemon.coordination.finish_trigger(&job, &source);
                            return;
                        }
                        let mut ctx = sync::RunContext {
                            store: store.as_mut(),
                            okta: Some(&client),
                            spacing: Some(spacing),
                            cancel: client.cancellation().clone(),
                            base_dir: &settings.base_dir,
                        };
                        let report =
                            sync::run_job(&mut ctx, settings, j, &RunOptions::default()).await;
                        let notices =
                            watch::record_run(store.as_mut(), j, settings.notify.as_ref(), &report);
                        daemon.notifier.send(settings.notify.as_ref(), notices);
                        report
                    }
                    Err(e) => sync::not_started(
                        j,
                        &sync::SyncError::state("open the state store")(e),
                        false,
                    ),
                };
                let outcome = report.outcome.as_str();
                // The stored trigger this run answered (if any) is done.
                daemon.coordination.finish_trigger(&job, &source);
                daemon.readiness.record_run(&job, report.outcome, chrono::Utc::now());
                daemon.publish_gauges();
                match &report.error {
                    None => {
                        info!(job = %job, reason = reason.as_str(), outcome, run_id = report.run_id, "run finished")
                    }
                    Some(e) => {
                        warn!(job = %job, reason = reason.as_str(), outcome, run_id = report.run_id, error = %e, "run finished")
                    }
                }
            },
            (),
        )
    }

    fn push(&self, source: &str) -> BoxFuture<'static, PushProgress> {
        let daemon = self.0.clone();
        let source = source.to_string();
        let failed = PushProgress { more: true, retry_after: Some(push::RETRY_AFTER) };
        off_worker(
            move || async move {
                let live = daemon.live();
                let Some(client) = daemon.client_for(&live, &source) else {
                    return PushProgress { more: false, retry_after: None };
                };
                let spacing = daemon.spacing(&source);
                let mut store = match daemon.open_store() {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot open the state store");
                        return failed;
                    }
                };
                let ctx = push::PushContext {
                    settings: &live.settings,
                    client: &client,
                    events: &daemon.events,
                    spacing: &spacing,
                };
                let progress = push::push_batch(&ctx, store.as_mut(), &source).await;
                daemon.publish_gauges();
                progress
            },
            failed,
        )
    }

    fn pending(&self, source: &str) -> (usize, bool) {
        let settings = self.0.settings();
        let jobs = settings.jobs_of(source);
        self.0.events.has_pending(&jobs).unwrap_or((0, false))
    }

    fn owns(&self, source: &str) -> bool {
        self.0.owns(source)
    }
}

/// How often the daemon applies `state.history` (and publishes the state's size).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Retention: a pruning pass now and every [`PRUNE_EVERY`], on a blocking thread, in short
/// transactions with pauses between them so imports keep their turn. Runs until aborted.
async fn prune_loop(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let d = daemon.clone();
        let done = tokio::task::spawn_blocking(move || {
            let policy = d.settings().state.history;
            let mut store = d.open_store()?;
            crate::state::prune(store.as_mut(), &policy, std::time::Duration::from_millis(20))
        })
        .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot prune the history"),
            Err(e) => warn!(error = %e, "the pruning task failed"),
        }
    }
}

/// With several replicas: keep the leases, and work the sources held (see [`lease`]). Runs
/// until aborted.
async fn lease_loop(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(lease::POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if daemon.stop.is_cancelled() {
            return;
        }
        let settings = daemon.settings();
        let mut by_source: HashMap<String, Vec<String>> = HashMap::new();
        for j in &settings.jobs {
            by_source.entry(j.identity_source_id.clone()).or_default().push(j.name.clone());
        }
        let mut sources: Vec<String> = by_source.keys().cloned().collect();
        sources.sort();
        let Some(changed) = daemon.coordination.tick(&sources).await else { return };
        for source in &changed.acquired {
            // Another replica may have created sessions since this one last looked.
            daemon.spacing.lock().unwrap_or_else(|e| e.into_inner()).remove(source);
            let d = daemon.clone();
            let s = source.clone();
            // Reads the run history (blocking calls): off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || d.queue_missed_runs(Utc::now(), Some(&s)))
                .await;
        }
        for work in daemon.coordination.owned_work(&by_source).await {
            if let Some((n, urgent)) = work.pending
                && n > 0
                && let Some(q) = daemon.queue(&work.source)
            {
                q.events_stored(urgent);
            }
            for job in work.triggered {
                info!(job = %job, "running a stored trigger");
                daemon.enqueue_run(&job, RunReason::Trigger);
            }
        }
    }
}

/// Build and drive an import future on a blocking-pool thread, on the same runtime.
///
/// The import's upload stream borrows the session plan inside `buffer_unordered`, and rustc
/// cannot prove such a future `Send` for every lifetime (rust-lang/rust#102211), which a boxed
/// `Send` future needs. Here the future is created and polled on one thread by
/// `Handle::block_on`, so it never has to be `Send`; only `make` (an `Arc` and strings) moves.
/// Timers and sockets still run on the runtime. `fallback` is returned if the thread panics.
fn off_worker<T, F, Fut>(make: F, fallback: T) -> BoxFuture<'static, T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let handle = tokio::runtime::Handle::current();
    Box::pin(async move {
        let task = tokio::task::spawn_blocking(move || handle.block_on(make()));
        task.await.unwrap_or(fallback)
    })
}

/// What `serve` listens to besides its own signals (tests drive these).
pub struct Control {
    /// Resolves when the daemon should stop.
    pub shutdown: BoxFuture<'static, ()>,
    /// Each message asks for a config reload.
    pub reload: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// Told the bound address once listening (tests bind port 0).
    pub bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
}

/// Run the daemon until `control.shutdown` resolves.
pub async fn serve(
    config_path: &Path,
    settings: Settings,
    control: Control,
) -> Result<(), ServeError> {
    let Control { shutdown, mut reload, bound } = control;
    let prometheus = metrics::install().map_err(|e| ServeError::Config(e.to_string()))?;
    let readiness = Arc::new(health::Readiness::new());
    let okta_cancel = CancellationToken::new();
    let client = settings
        .okta
        .build_client()
        .map_err(|e| ServeError::Okta(e.to_string()))?
        .with_cancellation(okta_cancel.clone());
    // Opening the store runs its migrations (SQLite) or creates missing tables (DynamoDB);
    // the event log lives in the same file or tables.
    drop(crate::state::open(&settings.state)?);
    readiness.set_state_store_ok(true);
    let events = crate::state::open_events(&settings.state)?;
    let coordination = coordination::Coordination::for_store(&events, okta_cancel.clone());
    let listen = settings.serve.listen;
    if settings.serve.webhook.is_some() {
        for notice in settings.notices() {
            warn!("{notice}");
        }
    }
    let settings = Arc::new(settings);
    let daemon = Arc::new_cyclic(|me| Daemon {
        config_path: config_path.to_path_buf(),
        live: RwLock::new(Arc::new(Live { settings: settings.clone(), client })),
        events,
        queues: RwLock::new(HashMap::new()),
        spacing: Mutex::new(HashMap::new()),
        source_clients: Mutex::new(HashMap::new()),
        okta_cancel: okta_cancel.clone(),
        stop: CancellationToken::new(),
        workers: TaskTracker::new(),
        readiness: readiness.clone(),
        notifier: notify::Notifier::new(),
        webhook: tokio::sync::watch::channel(settings.serve.webhook.clone().map(Arc::new)).0,
        coordination,
        self_ref: me.clone(),
    });
    daemon.apply_settings(&settings);
    let lease_loop = match daemon.coordination.is_shared() {
        // Pending events and missed runs are the owner's: see `lease_loop`.
        true => Some(tokio::spawn(lease_loop(daemon.clone()))),
        false => {
            daemon.queue_pending_events();
            daemon.queue_missed_runs(Utc::now(), None);
            None
        }
    };

    let prune_loop = tokio::spawn(prune_loop(daemon.clone()));

    // Schedules.
    let scheduled: Vec<(String, Schedule)> =
        settings.jobs.iter().filter_map(|j| Some((j.name.clone(), j.schedule.clone()?))).collect();
    let schedules_stop = CancellationToken::new();
    let schedules =
        schedule::start(&scheduled, Arc::new(schedule::WallClock), daemon.clone(), &schedules_stop);
    for (job, s) in &scheduled {
        info!(job = %job, schedule = %s.expression, timezone = %s.timezone, next = ?s.next_after(Utc::now()), "scheduled");
    }

    // HTTP.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen { addr: listen, source })?;
    let local =
        listener.local_addr().map_err(|source| ServeError::Listen { addr: listen, source })?;
    info!(listen = %local, "listening");
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }
    let app = router(&daemon, health::HealthState::new(readiness.clone(), prometheus));
    let intake = CancellationToken::new();
    let http = {
        let intake = intake.clone();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move { intake.cancelled().await })
                .await
        })
    };

    // Until shutdown: reloads.
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reload.recv() => {
                if let Err(e) = daemon.reload() {
                    error!(error = %e, "configuration reload refused");
                }
            }
        }
    }

    // Shutdown: stop intake, let the item in hand finish until the deadline, then cancel.
    let deadline = daemon.settings().serve.shutdown_deadline;
    info!(deadline_secs = deadline.as_secs(), "shutting down: no new work is taken");
    readiness.set_draining(true);
    intake.cancel();
    schedules_stop.cancel();
    schedules.join_all().await;
    daemon.close_queues();
    daemon.stop.cancel();
    daemon.workers.close();
    if tokio::time::timeout(deadline, daemon.workers.wait()).await.is_err() {
        warn!("the shutdown deadline passed: cancelling the open okta session");
        okta_cancel.cancel();
        // Cancelling a session is one call; give it a bounded moment.
        if tokio::time::timeout(std::time::Duration::from_secs(30), daemon.workers.wait())
            .await
            .is_err()
        {
            warn!("the import did not stop in time");
        }
    }
    prune_loop.abort();
    // Hand the identity sources over at once instead of after the lease time.
    if let Some(task) = lease_loop {
        task.abort();
    }
    daemon.coordination.release_all().await;
    // Messages about the last runs get a short moment to go out.
    daemon.notifier.flush(std::time::Duration::from_secs(5)).await;
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "the http server ended with an error"),
        Err(e) => warn!(error = %e, "the http server task failed"),
    }
    info!("stopped");
    Ok(())
}

/// The daemon's HTTP routes: the webhook and the UI (when configured), health and metrics.
pub fn router(daemon: &Arc<Daemon>, health: health::HealthState) -> axum::Router {
    let mut app = health::router(health);
    let current = daemon.webhook.borrow().clone();
    if let Some(first) = current {
        // The router reads the settings through a watch channel, so a reload's new secrets
        // and limits apply to the next request.
        let (tx, rx) = tokio::sync::watch::channel(first);
        let mut updates = daemon.webhook.subscribe();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let next = updates.borrow_and_update().clone();
                if let Some(w) = next {
                    tx.send_replace(w);
                }
            }
        });
        let dispatch: Arc<dyn Dispatch> = daemon.clone();
        app = app.merge(webhook::router(webhook::WebhookContext {
            dispatch,
            events: daemon.events.clone(),
            settings: rx,
        }));
    }
    if let Some(ui) = ui::router(daemon) {
        app = app.merge(ui);
    }
    app
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A channel fed by SIGHUP.
pub fn reload_signal() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            info!("SIGHUP received: reloading the configuration");
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}
