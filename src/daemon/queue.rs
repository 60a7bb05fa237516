//! One ordered queue per identity source.
//!
//! Okta allows one active import session per identity source and 5 minutes between session
//! creations (FACTS §4), so everything that imports into one source goes through one queue and
//! one worker: scheduled runs, manual triggers and batches of pushed (webhook) events. Two
//! imports never overlap on a source, whatever their origin.
//!
//! The queue never piles up:
//! - a run of a job that is already waiting is not queued twice (`already_queued`); with
//!   `missed: skip`, a scheduled run that comes due while the same job is running is dropped;
//! - pushed events are one queue item however many arrive: the item waits for the batch window
//!   (from the first event), then imports what is pending. A termination (an event mapping to a
//!   deactivated user) is urgent: its item moves to the front, ahead of waiting runs, and
//!   flushes at once (the session still waits for Okta's 5-minute rule, see
//!   [`crate::okta::session::Importer`]).
//!
//! What a run or a batch does is behind [`Runner`], so the ordering rules are tested in paused
//! time with a fake runner.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::TriggerAck;
use crate::settings::MissedRuns;

/// Why a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunReason {
    /// Its schedule came due at this time.
    Scheduled(DateTime<Utc>),
    /// `POST /v1/jobs/{job}/trigger`.
    Trigger,
    /// A scheduled time passed while the daemon was down (`missed: once`).
    Missed(DateTime<Utc>),
}

impl RunReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunReason::Scheduled(_) => "scheduled",
            RunReason::Trigger => "trigger",
            RunReason::Missed(_) => "missed",
        }
    }
}

/// What a pushed batch left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushProgress {
    /// Events remain pending (more than one batch's worth arrived, or the batch failed and
    /// will be retried).
    pub more: bool,
    /// The batch failed; wait this long before retrying.
    pub retry_after: Option<Duration>,
}

/// What the queue runs.
pub trait Runner: Send + Sync + 'static {
    /// Run `job` (pull, diff, import).
    fn run(&self, source: &str, job: &str, reason: RunReason) -> BoxFuture<'static, ()>;
    /// Import one batch of the source's pending pushed events.
    fn push(&self, source: &str) -> BoxFuture<'static, PushProgress>;
    /// The source's pending pushed events: how many records, and whether one is urgent.
    fn pending(&self, source: &str) -> (usize, bool);
    /// Whether this replica works `source` now (its lease owner; always with one replica).
    /// Items taken while it does not are dropped: runs are the owner's, pushed events stay
    /// stored for it.
    fn owns(&self, _source: &str) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Run { job: String, reason: RunReason },
    Push,
}

#[derive(Debug)]
struct State {
    waiting: VecDeque<Item>,
    /// What the worker is doing.
    running: Option<Item>,
    /// When the waiting push item flushes (the batch window from its first event).
    push_due: Option<Instant>,
    closed: bool,
}

/// The queue of one identity source.
pub struct SourceQueue {
    source: String,
    state: Mutex<State>,
    /// Something was queued (wakes an idle worker).
    queued: Notify,
    /// An urgent event arrived, or the batch grew (wakes a worker waiting out the window).
    push_wake: Notify,
    batch_window: Duration,
    max_batch_records: usize,
}

impl SourceQueue {
    pub fn new(
        source: impl Into<String>,
        batch_window: Duration,
        max_batch_records: usize,
    ) -> Self {
        Self {
            source: source.into(),
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                running: None,
                push_due: None,
                closed: false,
            }),
            queued: Notify::new(),
            push_wake: Notify::new(),
            batch_window,
            max_batch_records,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this short lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items waiting plus the one running.
    pub fn depth(&self) -> usize {
        let s = self.lock();
        s.waiting.len() + usize::from(s.running.is_some())
    }

    /// Queue a run of `job`. Runs of one job never pile up.
    pub fn enqueue_run(&self, job: &str, reason: RunReason, missed: MissedRuns) -> TriggerAck {
        let mut s = self.lock();
        let position = s.waiting.len() + usize::from(s.running.is_some());
        if s.closed {
            return TriggerAck { status: "shutting_down", position };
        }
        let is_job = |i: &Item| matches!(i, Item::Run { job: j, .. } if j == job);
        if let Some(at) = s.waiting.iter().position(is_job) {
            debug!(job, reason = reason.as_str(), "a run of this job is already waiting");
            return TriggerAck {
                status: "already_queued",
                position: at + usize::from(s.running.is_some()),
            };
        }
        let running_same = s.running.as_ref().is_some_and(is_job);
        if running_same && missed == MissedRuns::Skip && matches!(reason, RunReason::Scheduled(_)) {
            info!(job, "scheduled run skipped: the previous run is still going (missed: skip)");
            return TriggerAck { status: "skipped", position };
        }
        s.waiting.push_back(Item::Run { job: job.to_string(), reason });
        drop(s);
        self.queued.notify_one();
        TriggerAck { status: "queued", position }
    }

    /// Pushed events were stored; make sure a push item is waiting.
    pub fn events_stored(&self, urgent: bool) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        let now = Instant::now();
        match s.waiting.iter().position(|i| *i == Item::Push) {
            Some(at) => {
                if urgent {
                    // Ahead of waiting runs, and due now.
                    if at != 0 {
                        s.waiting.remove(at);
                        s.waiting.push_front(Item::Push);
                    }
                    s.push_due = Some(now);
                }
            }
            None => {
                if urgent {
                    s.waiting.push_front(Item::Push);
                    s.push_due = Some(now);
                } else {
                    s.waiting.push_back(Item::Push);
                    s.push_due = Some(now + self.batch_window);
                }
            }
        }
        drop(s);
        self.queued.notify_one();
        self.push_wake.notify_one();
    }

    /// Stop taking work; the worker finishes what it is doing and returns.
    pub fn close(&self) {
        self.lock().closed = true;
        self.queued.notify_one();
        self.push_wake.notify_one();
    }

    /// The next item (with a push item's due time), waiting for one; `None` once closed.
    async fn next(&self, cancel: &CancellationToken) -> Option<(Item, Option<Instant>)> {
        loop {
            let notified = self.queued.notified();
            {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                if let Some(item) = s.waiting.pop_front() {
                    s.running = Some(item.clone());
                    let due = if item == Item::Push { s.push_due.take() } else { None };
                    return Some((item, due));
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }

    fn done(&self) {
        self.lock().running = None;
    }

    /// Wait out the batch window of a push item: until it is due, a termination arrives, or
    /// a full batch is pending. Returns `false` when there is nothing to push.
    async fn wait_for_batch(
        &self,
        due: Instant,
        runner: &dyn Runner,
        cancel: &CancellationToken,
    ) -> bool {
        loop {
            let woken = self.push_wake.notified();
            let (records, urgent) = runner.pending(&self.source);
            if records == 0 || self.lock().closed {
                return false;
            }
            if urgent || records >= self.max_batch_records || Instant::now() >= due {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = woken => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Serve the queue until it is closed or `cancel` fires. The item in hand is finished
    /// (the runner sees the cancellation through its Okta client and cancels open sessions).
    pub async fn work(self: Arc<Self>, runner: Arc<dyn Runner>, cancel: CancellationToken) {
        while let Some((item, due)) = self.next(&cancel).await {
            if !runner.owns(&self.source) {
                info!(source = %self.source, "not the lease owner of this identity source: queue item dropped");
                self.done();
                continue;
            }
            match item {
                Item::Run { job, reason } => {
                    info!(source = %self.source, job = %job, reason = reason.as_str(), "run starting");
                    runner.run(&self.source, &job, reason).await;
                    self.done();
                }
                Item::Push => {
                    // The window runs from the first event of the item.
                    let due = due.unwrap_or_else(Instant::now);
                    let flush = self.wait_for_batch(due, runner.as_ref(), &cancel).await;
                    let progress = if flush { Some(runner.push(&self.source).await) } else { None };
                    self.done();
                    if let Some(p) = progress
                        && p.more
                    {
                        if let Some(wait) = p.retry_after {
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = cancel.cancelled() => {}
                            }
                        }
                        let (_, urgent) = runner.pending(&self.source);
                        // Behind whatever queued meanwhile, unless urgent; no window: these
                        // events already waited theirs.
                        let mut s = self.lock();
                        if !s.closed && !s.waiting.contains(&Item::Push) {
                            if urgent {
                                s.waiting.push_front(Item::Push);
                            } else {
                                s.waiting.push_back(Item::Push);
                            }
                            s.push_due = Some(Instant::now());
                        } else if !s.closed {
                            s.push_due = Some(Instant::now());
                        }
                        drop(s);
                        self.queued.notify_one();
                    }
                }
            }
        }
    }
}
