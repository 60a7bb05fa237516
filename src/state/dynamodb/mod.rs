//! The distributed state backend (`state.backend: dynamodb`): the same state, run history
//! (with the decisions and approvals the monitoring page shows) and webhook events as
//! [`super::sqlite`] and [`super::events`], in DynamoDB tables that every
//! `xaas serve` replica shares, plus the leases that give each identity source one owner.
//!
//! # Tables (names from `state.table_prefix`, created on open when missing, on-demand billing)
//!
//! | table          | key                      | holds                                              |
//! |----------------|--------------------------|----------------------------------------------------|
//! | `users`        | `job`, `external_id`     | one user per job: hash, status, pending, profile, memberships; under `job` = `<job>#groups`, the groups the job created |
//! | `runs`         | `job`, `id` (N)          | the run history, holds and approvals               |
//! | `events`       | `id`                     | every webhook event (what `GET /v1/events` shows)  |
//! | `open_events`  | `job`, `seq` (N)         | the events still to import, in arrival order       |
//! | `meta`         | `pk`                     | counters, job facts, run → job, session times, triggers; the page's sign-in records (`expires_at` TTL) |
//! | `leases`       | `source`                 | the lease per identity source: owner, token, expiry |
//! | `seen`         | `key`                    | signed webhook requests within the replay window (`expires_at` TTL) |
//! | `decisions`    | `run`, `sk`              | each run's per-record decisions, in chunks, and their counts (see `history`) |
//!
//! Every read that decides something is strongly consistent (`ConsistentRead`), and the open
//! events are a table of their own so the queue's `pending` is a consistent query whose size
//! is the backlog, not the history.
//!
//! # Sync callers, async SDK
//!
//! [`StateStore`] is synchronous and imports call it from inside `Handle::block_on` on a
//! blocking thread, where a second `block_on` would panic. So one dedicated thread runs its own
//! current-thread tokio runtime and the SDK client; callers send it a request over a channel
//! and block on a plain `std` channel for the answer (or await a oneshot, for async callers).
//! The handle is shared per table prefix and endpoint by the whole process, so opening the
//! store for every run and every pushed batch costs nothing after the first time.
//!
//! # Leases and fencing
//!
//! A lease item per identity source is taken with a conditional update whose condition
//! compares its expiry with now (`attribute_not_exists(owner) OR expires_at < :now OR
//! owner = :me`); DynamoDB's TTL deletion is never relied on. Each acquisition adds one to the
//! item's `token`, the fencing token. Once the daemon turns fencing on
//! ([`Dynamo::enable_fencing`]), every state write for a job (users, runs, job facts, events,
//! session times) first re-reads the lease item consistently and refuses unless this replica
//! still holds it with the same token, and then writes each item with `fence = :token` under
//! the condition `attribute_not_exists(fence) OR fence <= :token`: once a newer owner has
//! written an item, a replica with an older token can never overwrite it.
//!
//! `TransactWriteItems` with a `ConditionCheck` on the lease would close the short window
//! between the lease read and the item writes too, but dynalite (what the tests and the local
//! stack run) does not implement transactions; the per-item fence keeps that window harmless
//! for every item the new owner has touched, and a replica checks its lease before every Okta
//! call, so a stale replica never reaches Okta (see `crate::daemon::lease`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, BillingMode, KeySchemaElement, KeyType,
    KeysAndAttributes, ReturnValue, ScalarAttributeType, Select, TableStatus,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use sha2::Digest;
use tokio::sync::oneshot;

use super::config::DynamoStateSettings;
use super::events::{Claim, EventStatus, EventView, NewEvent, QueuedEvent, SeenSignature, Stored};
use super::{
    Confirmed, Entry, Hold, JobState, OwnedGroup, RunId, RunRecord, SentStatus, StateError,
    StateStore,
};

type Item = HashMap<String, Av>;
type Request = Box<dyn FnOnce(Ctx) -> BoxFuture<'static, ()> + Send>;

/// The TTL attribute (unix seconds) of finished runs and events (`state.history`) and of
/// seen signatures: DynamoDB deletes them after it. TTL is turned on for those tables.
pub(super) const TTL_ATTRIBUTE: &str = "expires_at";

/// When a history item finished at `at` and kept for `keep` expires, in unix seconds.
pub(super) fn expiry(at: DateTime<Utc>, keep: Duration) -> i64 {
    at.timestamp().saturating_add(i64::try_from(keep.as_secs()).unwrap_or(i64::MAX))
}

/// Item writes run this many at a time within one call.
const WRITE_CONCURRENCY: usize = 16;

/// Users read per page when a pull is recorded (streamed in key order; the counters that
/// change are written before the next page is read).
const PULL_PAGE: usize = 1000;

/// The reports of runs are cut above this size (an item holds at most 400 KB).
const MAX_REPORT_BYTES: usize = 300_000;

/// A table's name, hash key, and range key (with whether it is a number).
type Schema<'a> = (&'a str, &'static str, Option<(&'static str, bool)>);

/// What identifies a handle: table prefix, region, endpoint.
type HandleKey = (String, Option<String>, Option<String>);

/// The table names.
#[derive(Debug, Clone)]
struct Tables {
    users: String,
    runs: String,
    events: String,
    open_events: String,
    meta: String,
    leases: String,
    seen: String,
    decisions: String,
}

impl Tables {
    fn new(prefix: &str) -> Self {
        Self {
            users: format!("{prefix}users"),
            runs: format!("{prefix}runs"),
            events: format!("{prefix}events"),
            open_events: format!("{prefix}open_events"),
            meta: format!("{prefix}meta"),
            leases: format!("{prefix}leases"),
            seen: format!("{prefix}seen"),
            decisions: format!("{prefix}decisions"),
        }
    }

    /// Each table with its key.
    fn schemas(&self) -> [Schema<'_>; 8] {
        [
            (&self.users, "job", Some(("external_id", false))),
            (&self.runs, "job", Some(("id", true))),
            (&self.events, "id", None),
            (&self.open_events, "job", Some(("seq", true))),
            (&self.meta, "pk", None),
            (&self.leases, "source", None),
            (&self.seen, "key", None),
            (&self.decisions, "run", Some(("sk", false))),
        ]
    }
}

/// What a request on the DynamoDB thread works with.
#[derive(Clone)]
struct Ctx {
    client: Client,
    t: Arc<Tables>,
    replica: Arc<str>,
    lease: Duration,
}

/// Which identity sources this replica holds, once fencing is on.
#[derive(Debug, Default)]
struct Fencing {
    /// job → identity source.
    job_source: HashMap<String, String>,
    /// identity source → fencing token of the lease held.
    held: HashMap<String, u64>,
}

struct Inner {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
    t: Arc<Tables>,
    replica: Arc<str>,
    lease: Duration,
    location: String,
    /// `None`: writes are not fenced (one-shot CLI runs, tests of the store itself).
    fencing: Mutex<Option<Fencing>>,
}

/// A connection to the DynamoDB state: the thread that talks to DynamoDB, the table names, and
/// this replica's leases. Cheap to clone.
#[derive(Clone)]
pub struct Dynamo {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dynamo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dynamo").field("location", &self.inner.location).finish()
    }
}

mod events;
mod groups;
mod history;
mod items;
mod leases;
mod signins;
mod tables;
mod users;

pub use events::DynamoEventStore;
use items::*;
use tables::*;
pub use users::DynamoStore;

/// Every DynamoDB handle of this process, per (prefix, region, endpoint).
fn handles() -> &'static Mutex<HashMap<HandleKey, Dynamo>> {
    static HANDLES: OnceLock<Mutex<HashMap<HandleKey, Dynamo>>> = OnceLock::new();
    HANDLES.get_or_init(Default::default)
}

impl Dynamo {
    /// The process's handle on these tables, started (and the tables created) on first use.
    pub fn open(settings: &DynamoStateSettings) -> Result<Self, StateError> {
        let key =
            (settings.table_prefix.clone(), settings.region.clone(), settings.endpoint_url.clone());
        let mut all = handles().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = all.get(&key) {
            return Ok(d.clone());
        }
        let d = Self::start(settings, None)?;
        d.ensure_tables()?;
        all.insert(key, d.clone());
        Ok(d)
    }

    /// A handle of its own on these tables, with `client` (tests bring static credentials)
    /// or one built from the default AWS chain. Creates missing tables.
    pub fn connect(
        settings: &DynamoStateSettings,
        client: Option<Client>,
    ) -> Result<Self, StateError> {
        let d = Self::start(settings, client)?;
        d.ensure_tables()?;
        Ok(d)
    }

    fn start(settings: &DynamoStateSettings, client: Option<Client>) -> Result<Self, StateError> {
        let t = Arc::new(Tables::new(&settings.table_prefix));
        let location = format!("dynamodb tables {}*", settings.table_prefix);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "xaas".into());
        let short = uuid::Uuid::now_v7().simple().to_string();
        let replica: Arc<str> =
            format!("{host}/{}/{}", std::process::id(), &short[short.len() - 8..]).into();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let cfg = settings.clone();
        let ctx_t = t.clone();
        let ctx_replica = replica.clone();
        std::thread::Builder::new()
            .name("xaas-dynamodb".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match client {
                        Some(c) => c,
                        None => build_client(&cfg).await,
                    };
                    let ctx = Ctx { client, t: ctx_t, replica: ctx_replica, lease: cfg.lease };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(request) = rx.recv().await {
                        tokio::spawn(request(ctx.clone()));
                    }
                });
            })
            .map_err(|e| err(&t.meta, format!("cannot start the dynamodb thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| err(&t.meta, "the dynamodb thread stopped while starting"))?
            .map_err(|e| err(&t.meta, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                requests: tx,
                t,
                replica,
                lease: settings.lease,
                location,
                fencing: Mutex::new(None),
            }),
        })
    }

    /// This replica's id in the lease items (`{hostname}/{pid}/{random}`).
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// How long a lease lasts.
    pub fn lease_duration(&self) -> Duration {
        self.inner.lease
    }

    /// Run `f` on the DynamoDB thread and block until it answers (sync callers).
    fn call<T, F, Fut>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StateError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Run `f` on the DynamoDB thread and await its answer (async callers).
    async fn call_async<T, F, Fut>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StateError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await.map_err(|_| self.stopped())?
    }

    fn submit<T, F, Fut>(
        &self,
        f: F,
        answer: impl FnOnce(Result<T, StateError>) + Send + 'static,
    ) -> Result<(), StateError>
    where
        T: Send + 'static,
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StateError>> + Send + 'static,
    {
        let request: Request = Box::new(move |ctx| {
            Box::pin(async move {
                answer(f(ctx).await);
            })
        });
        self.inner.requests.send(request).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> StateError {
        StateError::Backend {
            location: self.inner.location.clone(),
            message: "the dynamodb thread has stopped".into(),
        }
    }

    /// Create the tables that are missing and wait until they are active.
    fn ensure_tables(&self) -> Result<(), StateError> {
        self.call(|ctx| async move {
            for (name, hash, range) in ctx.t.schemas() {
                ensure_table(&ctx.client, name, hash, range).await?;
            }
            for table in [&ctx.t.runs, &ctx.t.events, &ctx.t.seen, &ctx.t.decisions, &ctx.t.meta] {
                tables::enable_ttl(&ctx.client, table).await;
            }
            Ok(())
        })
    }

    // ---- fencing --------------------------------------------------------------------------

    /// Fence every write from now on: a write for a job is refused unless this replica holds
    /// the lease on the job's identity source (`job_source`: job → identity source).
    pub fn enable_fencing(&self, job_source: HashMap<String, String>) {
        let mut f = self.inner.fencing.lock().unwrap_or_else(|e| e.into_inner());
        match f.as_mut() {
            Some(f) => f.job_source = job_source,
            None => *f = Some(Fencing { job_source, held: HashMap::new() }),
        }
    }

    /// This replica now holds `source`'s lease with `token` (or no longer, with `None`).
    pub fn set_held(&self, source: &str, token: Option<u64>) {
        let mut f = self.inner.fencing.lock().unwrap_or_else(|e| e.into_inner());
        let f = f.get_or_insert_with(Fencing::default);
        match token {
            Some(t) => f.held.insert(source.to_string(), t),
            None => f.held.remove(source),
        };
    }

    /// The token this replica holds `source` with, when it does.
    pub fn held(&self, source: &str) -> Option<u64> {
        let f = self.inner.fencing.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref().and_then(|f| f.held.get(source).copied())
    }

    /// The identity source and token a write for `job` is fenced with; `None` when fencing is
    /// off. Refused when the lease is not held.
    fn fence_for_job(&self, job: &str) -> Result<Option<(String, u64)>, StateError> {
        let f = self.inner.fencing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = f.as_ref() else { return Ok(None) };
        let source = f.job_source.get(job).ok_or_else(|| {
            err(
                &self.inner.t.leases,
                format!(
                    "job `{job}` has no identity source known to the lease manager: write refused"
                ),
            )
        })?;
        match f.held.get(source) {
            Some(&t) => Ok(Some((source.clone(), t))),
            None => Err(lease_lost(&self.inner.t, source)),
        }
    }

    fn fence_for_source(&self, source: &str) -> Result<Option<u64>, StateError> {
        let f = self.inner.fencing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = f.as_ref() else { return Ok(None) };
        match f.held.get(source) {
            Some(&t) => Ok(Some(t)),
            None => Err(lease_lost(&self.inner.t, source)),
        }
    }
}
