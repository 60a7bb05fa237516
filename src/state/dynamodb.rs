//! The distributed state backend (`state.backend: dynamodb`): the same state, run history and
//! webhook events as [`super::sqlite`] and [`super::events`], in DynamoDB tables that every
//! `xaas serve` replica shares, plus the leases that give each identity source one owner.
//!
//! # Tables (names from `state.table_prefix`, created on open when missing, on-demand billing)
//!
//! | table          | key                      | holds                                              |
//! |----------------|--------------------------|----------------------------------------------------|
//! | `users`        | `job`, `external_id`     | one user per job: hash, status, pending, profile   |
//! | `runs`         | `job`, `id` (N)          | the run history, holds and approvals               |
//! | `events`       | `id`                     | every webhook event (what `GET /v1/events` shows)  |
//! | `open_events`  | `job`, `seq` (N)         | the events still to import, in arrival order       |
//! | `meta`         | `pk`                     | counters, job facts, run → job, session times, triggers |
//! | `leases`       | `source`                 | the lease per identity source: owner, token, expiry |
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

use super::events::{EventStatus, EventView, NewEvent, QueuedEvent, Stored};
use super::{
    Confirmed, Entry, Hold, JobState, RunId, RunRecord, SentStatus, StateError, StateStore,
};
use crate::settings::DynamoStateSettings;

type Item = HashMap<String, Av>;
type Request = Box<dyn FnOnce(Ctx) -> BoxFuture<'static, ()> + Send>;

/// Item writes run this many at a time within one call.
const WRITE_CONCURRENCY: usize = 16;

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
        }
    }

    /// Each table with its key.
    fn schemas(&self) -> [Schema<'_>; 6] {
        [
            (&self.users, "job", Some(("external_id", false))),
            (&self.runs, "job", Some(("id", true))),
            (&self.events, "id", None),
            (&self.open_events, "job", Some(("seq", true))),
            (&self.meta, "pk", None),
            (&self.leases, "source", None),
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

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|d| d.with_timezone(&Utc))
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}

fn n(v: impl ToString) -> Av {
    Av::N(v.to_string())
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn get_bool(item: &Item, k: &str) -> bool {
    item.get(k).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false)
}

fn get_list(item: &Item, k: &str) -> Vec<String> {
    item.get(k)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

/// An error on `table`, with the SDK's full context (never a credential).
fn err(table: &str, what: impl std::fmt::Display) -> StateError {
    StateError::Backend { location: format!("dynamodb table {table}"), message: what.to_string() }
}

fn sdk_err<E, R>(table: &str, op: &str, e: SdkError<E, R>) -> StateError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    err(table, format!("{op} failed: {}", DisplayErrorContext(&e)))
}

/// The error was a failed condition (`ConditionalCheckFailedException`).
fn condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// The lease on `source` was lost: writes are refused.
fn lease_lost(t: &Tables, source: &str) -> StateError {
    err(
        &t.leases,
        format!(
            "the lease on identity source {source} is no longer held by this replica: write refused"
        ),
    )
}

/// One `UpdateItem`, built from parts (every attribute name goes through `#` placeholders:
/// `status`, `hash` and many others are reserved words).
struct Upd {
    table: String,
    key: Item,
    sets: Vec<String>,
    removes: Vec<String>,
    adds: Vec<String>,
    conds: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Upd {
    fn new(table: &str, key: Item) -> Self {
        Self {
            table: table.to_string(),
            key,
            sets: Vec::new(),
            removes: Vec::new(),
            adds: Vec::new(),
            conds: Vec::new(),
            names: HashMap::new(),
            values: Item::new(),
        }
    }

    fn name(&mut self, attr: &str) -> String {
        let p = format!("#{attr}");
        self.names.insert(p.clone(), attr.to_string());
        p
    }

    fn set(mut self, attr: &str, v: Av) -> Self {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), v);
        self.sets.push(format!("{name} = :{attr}"));
        self
    }

    /// `SET attr = if_not_exists(attr, v)`.
    fn set_default(mut self, attr: &str, v: Av) -> Self {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), v);
        self.sets.push(format!("{name} = if_not_exists({name}, :{attr})"));
        self
    }

    fn remove(mut self, attr: &str) -> Self {
        let name = self.name(attr);
        self.removes.push(name);
        self
    }

    fn add(mut self, attr: &str, v: Av) -> Self {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), v);
        self.adds.push(format!("{name} :{attr}"));
        self
    }

    /// A condition; `#attr` names in it must be declared with [`Upd::name`] or used elsewhere.
    fn cond(mut self, expr: &str, names: &[&str], values: &[(&str, Av)]) -> Self {
        for a in names {
            self.name(a);
        }
        for (k, v) in values {
            self.values.insert((*k).to_string(), v.clone());
        }
        self.conds.push(format!("({expr})"));
        self
    }

    /// Stamp the item with the fencing token, refusing when a newer owner wrote it.
    fn fence(self, token: Option<u64>) -> Self {
        match token {
            None => self,
            Some(t) => self.set("fence", n(t)).cond(
                "attribute_not_exists(#fence) OR #fence <= :fence",
                &["fence"],
                &[],
            ),
        }
    }

    async fn send(
        self,
        client: &Client,
    ) -> Result<Option<Item>, SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>>
    {
        let mut expr = String::new();
        if !self.sets.is_empty() {
            expr.push_str(&format!("SET {}", self.sets.join(", ")));
        }
        if !self.removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        if !self.adds.is_empty() {
            expr.push_str(&format!(" ADD {}", self.adds.join(", ")));
        }
        let mut req = client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key))
            .update_expression(expr.trim())
            .set_expression_attribute_names(Some(self.names))
            .return_values(ReturnValue::AllNew);
        if !self.values.is_empty() {
            req = req.set_expression_attribute_values(Some(self.values));
        }
        if !self.conds.is_empty() {
            req = req.condition_expression(self.conds.join(" AND "));
        }
        req.send().await.map(|o| o.attributes)
    }

    /// Send; a failed condition is a fencing refusal.
    async fn send_fenced(self, ctx: &Ctx) -> Result<Option<Item>, StateError> {
        let table = self.table.clone();
        match self.send(&ctx.client).await {
            Ok(item) => Ok(item),
            Err(e) if condition_failed(&e) => Err(err(
                &table,
                "a replica with a newer lease wrote this item: write refused (lease lost)",
            )),
            Err(e) => Err(sdk_err(&table, "update", e)),
        }
    }
}

fn key1(k: &str, v: &str) -> Item {
    HashMap::from([(k.to_string(), s(v))])
}

fn user_key(job: &str, id: &str) -> Item {
    HashMap::from([("job".to_string(), s(job)), ("external_id".to_string(), s(id))])
}

fn run_key(job: &str, id: RunId) -> Item {
    HashMap::from([("job".to_string(), s(job)), ("id".to_string(), n(id))])
}

fn open_key(job: &str, seq: i64) -> Item {
    HashMap::from([("job".to_string(), s(job)), ("seq".to_string(), n(seq))])
}

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

    // ---- leases ---------------------------------------------------------------------------

    /// Take the lease on `source` when it is free, expired, or already ours. Returns the new
    /// fencing token, or `None` when another replica holds it.
    pub async fn acquire(&self, source: &str) -> Result<Option<u64>, StateError> {
        let source = source.to_string();
        self.call_async(move |ctx| async move {
            let now = now_ms();
            let expires = now + millis(ctx.lease);
            let upd = Upd::new(&ctx.t.leases, key1("source", &source))
                .set("owner", s(ctx.replica.to_string()))
                .set("expires_at", n(expires))
                .set("acquired_at", n(now))
                .add("token", n(1))
                .cond(
                    "attribute_not_exists(#owner) OR #expires_at < :now OR #owner = :owner",
                    &[],
                    &[(":now", n(now))],
                );
            match upd.send(&ctx.client).await {
                Ok(item) => {
                    let token = item.as_ref().and_then(|i| get_n::<u64>(i, "token"));
                    token.map(Some).ok_or_else(|| err(&ctx.t.leases, "the lease item has no token"))
                }
                Err(e) if condition_failed(&e) => Ok(None),
                Err(e) => Err(sdk_err(&ctx.t.leases, &format!("acquire lease {source}"), e)),
            }
        })
        .await
    }

    /// Extend the lease on `source` held with `token`. `false`: it was lost (another replica
    /// took it after it expired).
    pub async fn renew(&self, source: &str, token: u64) -> Result<bool, StateError> {
        let source = source.to_string();
        self.call_async(move |ctx| async move {
            let expires = now_ms() + millis(ctx.lease);
            let upd = Upd::new(&ctx.t.leases, key1("source", &source))
                .set("expires_at", n(expires))
                .cond(
                    "#owner = :owner AND #token = :token",
                    &["owner", "token"],
                    &[(":owner", s(ctx.replica.to_string())), (":token", n(token))],
                );
            match upd.send(&ctx.client).await {
                Ok(_) => Ok(true),
                Err(e) if condition_failed(&e) => Ok(false),
                Err(e) => Err(sdk_err(&ctx.t.leases, &format!("renew lease {source}"), e)),
            }
        })
        .await
    }

    /// Give the lease up (shutdown): it expires now, so another replica takes over at once.
    pub async fn release(&self, source: &str, token: u64) -> Result<(), StateError> {
        let source = source.to_string();
        self.call_async(move |ctx| async move {
            let upd =
                Upd::new(&ctx.t.leases, key1("source", &source)).set("expires_at", n(0)).cond(
                    "#owner = :owner AND #token = :token",
                    &["owner", "token"],
                    &[(":owner", s(ctx.replica.to_string())), (":token", n(token))],
                );
            match upd.send(&ctx.client).await {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(sdk_err(&ctx.t.leases, &format!("release lease {source}"), e)),
            }
        })
        .await
    }

    /// Whether `source`'s lease can be taken by this replica now (missing, expired, or ours):
    /// a consistent read, cheaper than a conditional write that fails.
    pub async fn lease_available(&self, source: &str) -> Result<bool, StateError> {
        let source = source.to_string();
        self.call_async(move |ctx| async move {
            let item = get_item(&ctx, &ctx.t.leases, key1("source", &source)).await?;
            Ok(item.is_none_or(|i| {
                get_s(&i, "owner").is_none()
                    || get_n::<i64>(&i, "expires_at").unwrap_or(0) < now_ms()
                    || get_s(&i, "owner").as_deref() == Some(&*ctx.replica)
            }))
        })
        .await
    }

    /// Ask the owner of `job`'s identity source to run it. Stored durably before returning
    /// (the webhook's 202 promises it): the owner claims it ([`Dynamo::claim_trigger`]) and
    /// deletes it once the run is over ([`Dynamo::finish_trigger`]), so a trigger whose owner
    /// dies before running it is run by the next owner.
    pub fn store_trigger(&self, job: &str) -> Result<(), StateError> {
        let job = job.to_string();
        self.call(move |ctx| async move {
            Upd::new(&ctx.t.meta, key1("pk", &format!("trigger#{job}")))
                .set("at", s(ts(Utc::now())))
                .remove("claimed")
                .send(&ctx.client)
                .await
                .map(|_| ())
                .map_err(|e| sdk_err(&ctx.t.meta, &format!("store trigger of job {job}"), e))
        })
    }

    /// Claim a stored trigger of `job` with this lease term's `token`: `true` when there was
    /// one not claimed yet in this term (an earlier owner's claim does not count).
    pub async fn claim_trigger(&self, job: &str, token: u64) -> Result<bool, StateError> {
        let job = job.to_string();
        self.call_async(move |ctx| async move {
            let upd = Upd::new(&ctx.t.meta, key1("pk", &format!("trigger#{job}")))
                .set("claimed", n(token))
                .cond(
                    "attribute_exists(#pk) AND (attribute_not_exists(#claimed) OR #claimed < :claimed)",
                    &["pk"],
                    &[],
                );
            match upd.send(&ctx.client).await {
                Ok(_) => Ok(true),
                Err(e) if condition_failed(&e) => Ok(false),
                Err(e) => Err(sdk_err(&ctx.t.meta, &format!("claim trigger of job {job}"), e)),
            }
        })
        .await
    }

    /// A run of `job` is over: delete the trigger this term claimed (a trigger stored since
    /// is unclaimed, and stays).
    pub fn finish_trigger(&self, job: &str, token: u64) -> Result<(), StateError> {
        let job = job.to_string();
        self.call(move |ctx| async move {
            let out = ctx
                .client
                .delete_item()
                .table_name(&ctx.t.meta)
                .set_key(Some(key1("pk", &format!("trigger#{job}"))))
                .condition_expression("#claimed = :claimed")
                .expression_attribute_names("#claimed", "claimed")
                .expression_attribute_values(":claimed", n(token))
                .send()
                .await;
            match out {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(sdk_err(&ctx.t.meta, &format!("finish trigger of job {job}"), e)),
            }
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn build_client(config: &DynamoStateSettings) -> Client {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(3))
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

async fn ensure_table(
    client: &Client,
    name: &str,
    hash: &str,
    range: Option<(&str, bool)>,
) -> Result<(), StateError> {
    let described = client.describe_table().table_name(name).send().await;
    let status = match described {
        Ok(d) => d.table.and_then(|t| t.table_status),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
            let attr = |a: &str, number: bool| {
                AttributeDefinition::builder()
                    .attribute_name(a)
                    .attribute_type(if number {
                        ScalarAttributeType::N
                    } else {
                        ScalarAttributeType::S
                    })
                    .build()
                    .map_err(|e| err(name, e))
            };
            let key = |a: &str, kind: KeyType| {
                KeySchemaElement::builder()
                    .attribute_name(a)
                    .key_type(kind)
                    .build()
                    .map_err(|e| err(name, e))
            };
            let mut req = client
                .create_table()
                .table_name(name)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attr(hash, false)?)
                .key_schema(key(hash, KeyType::Hash)?);
            if let Some((r, number)) = range {
                req =
                    req.attribute_definitions(attr(r, number)?).key_schema(key(r, KeyType::Range)?);
            }
            match req.send().await {
                Ok(_) => tracing::info!(table = name, "created the dynamodb state table"),
                Err(e)
                    if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
                Err(e) => return Err(sdk_err(name, "create table", e)),
            }
            None
        }
        Err(e) => return Err(sdk_err(name, "describe table", e)),
    };
    if status == Some(TableStatus::Active) {
        return Ok(());
    }
    for _ in 0..600 {
        let d = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| sdk_err(name, "describe table", e))?;
        if d.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(err(name, "the table did not become active within 2 minutes"))
}

/// Every item of a partition (`hash_key = value`), consistent, page by page.
async fn query_all(
    ctx: &Ctx,
    table: &str,
    hash_key: &str,
    value: &str,
    projection: Option<&str>,
    newest_first: bool,
) -> Result<Vec<Item>, StateError> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut req = ctx
            .client
            .query()
            .table_name(table)
            .key_condition_expression("#k = :k")
            .expression_attribute_names("#k", hash_key)
            .expression_attribute_values(":k", s(value))
            .consistent_read(true)
            .scan_index_forward(!newest_first)
            .set_exclusive_start_key(start.take());
        if let Some(p) = projection {
            // Projections name attributes through `#p_<name>` (reserved words again).
            let mut parts = Vec::new();
            for a in p.split(',') {
                let a = a.trim();
                req = req.expression_attribute_names(format!("#p_{a}"), a);
                parts.push(format!("#p_{a}"));
            }
            req = req.projection_expression(parts.join(", "));
        }
        let page = req.send().await.map_err(|e| sdk_err(table, "query", e))?;
        out.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

async fn get_item(ctx: &Ctx, table: &str, key: Item) -> Result<Option<Item>, StateError> {
    let out = ctx
        .client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk_err(table, "get", e))?;
    Ok(out.item.filter(|i| !i.is_empty()))
}

/// Refuse unless this replica still holds `source`'s lease with `token` (a consistent read).
async fn check_lease(ctx: &Ctx, source: &str, token: u64) -> Result<(), StateError> {
    let item = get_item(ctx, &ctx.t.leases, key1("source", source)).await?;
    let holds = item.as_ref().is_some_and(|i| {
        get_s(i, "owner").as_deref() == Some(&*ctx.replica)
            && get_n::<u64>(i, "token") == Some(token)
    });
    if holds { Ok(()) } else { Err(lease_lost(&ctx.t, source)) }
}

/// Run `updates` a few at a time; the first error wins.
async fn run_all(
    updates: Vec<BoxFuture<'static, Result<(), StateError>>>,
) -> Result<(), StateError> {
    let mut results = futures::stream::iter(updates).buffer_unordered(WRITE_CONCURRENCY);
    let mut first = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r
            && first.is_none()
        {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn entry_of(item: &Item) -> Option<Entry> {
    Some(Entry {
        external_id: get_s(item, "external_id")?,
        hash: get_s(item, "hash"),
        status: get_s(item, "status").as_deref().and_then(SentStatus::parse),
        pending: get_s(item, "pending").as_deref().and_then(SentStatus::parse),
        missing_runs: get_n::<u32>(item, "missing_runs").unwrap_or(0),
    })
}

fn run_of(item: &Item) -> Option<RunRecord> {
    let hold = get_s(item, "hold").map(|text| Hold {
        reasons: serde_json::from_str(&text).unwrap_or_default(),
        deactivations: get_n(item, "hold_deactivations").unwrap_or(0),
        creations: get_n(item, "hold_creations").unwrap_or(0),
    });
    Some(RunRecord {
        id: get_n(item, "id")?,
        job: get_s(item, "job")?,
        started_at: get_s(item, "started_at")?,
        finished_at: get_s(item, "finished_at"),
        outcome: get_s(item, "outcome"),
        hold,
        approved_at: get_s(item, "approved_at"),
        consumed_by: get_n(item, "consumed_by"),
    })
}

/// Add one to the counter `name` (in `meta`) and return the new value.
async fn next_counter(ctx: &Ctx, name: &str) -> Result<i64, StateError> {
    let item = Upd::new(&ctx.t.meta, key1("pk", &format!("counter#{name}")))
        .add("n", n(1))
        .send(&ctx.client)
        .await
        .map_err(|e| sdk_err(&ctx.t.meta, &format!("counter {name}"), e))?;
    item.as_ref()
        .and_then(|i| get_n(i, "n"))
        .ok_or_else(|| err(&ctx.t.meta, format!("counter {name} has no value")))
}

// ---- the state store ------------------------------------------------------------------------

/// [`StateStore`] on DynamoDB.
pub struct DynamoStore {
    d: Dynamo,
    store_profiles: bool,
}

impl DynamoStore {
    /// The store on the process's shared handle (see [`Dynamo::open`]).
    pub fn open(settings: &DynamoStateSettings, store_profiles: bool) -> Result<Self, StateError> {
        Ok(Self { d: Dynamo::open(settings)?, store_profiles })
    }

    /// The store on a given handle.
    pub fn with(d: Dynamo, store_profiles: bool) -> Self {
        Self { d, store_profiles }
    }

    /// The job's fence, checked against the lease item.
    fn fence(&self, job: &str) -> Result<Option<(String, u64)>, StateError> {
        self.d.fence_for_job(job)
    }
}

/// Check the lease (when fenced) and return the token to stamp items with.
async fn fenced(ctx: &Ctx, fence: &Option<(String, u64)>) -> Result<Option<u64>, StateError> {
    match fence {
        None => Ok(None),
        Some((source, token)) => {
            check_lease(ctx, source, *token).await?;
            Ok(Some(*token))
        }
    }
}

impl StateStore for DynamoStore {
    fn job_state(&self, job: &str) -> Result<JobState, StateError> {
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let facts = get_item(&ctx, &ctx.t.meta, key1("pk", &format!("job#{job}"))).await?;
            let mut state = facts
                .map(|i| JobState {
                    last_pull_users: get_n(&i, "last_pull_users"),
                    last_pull_at: parse_ts(get_s(&i, "last_pull_at")),
                    last_full_resync_at: parse_ts(get_s(&i, "last_full_resync_at")),
                    known_active: 0,
                })
                .unwrap_or_default();
            let mut start: Option<Item> = None;
            loop {
                let page = ctx
                    .client
                    .query()
                    .table_name(&ctx.t.users)
                    .key_condition_expression("#j = :j")
                    .filter_expression("#s = :a")
                    .expression_attribute_names("#j", "job")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":j", s(&job))
                    .expression_attribute_values(":a", s("active"))
                    .select(Select::Count)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err(&ctx.t.users, "count active users", e))?;
                state.known_active += u64::try_from(page.count).unwrap_or(0);
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
            Ok(state)
        })
    }

    fn for_each_entry(&self, job: &str, f: &mut dyn FnMut(Entry)) -> Result<(), StateError> {
        // Page by page: each page is fetched on the DynamoDB thread, `f` runs here.
        let mut start: Option<Item> = None;
        loop {
            let job = job.to_string();
            let (items, next) = self.d.call(move |ctx| async move {
                let page = ctx
                    .client
                    .query()
                    .table_name(&ctx.t.users)
                    .key_condition_expression("#j = :j")
                    .expression_attribute_names("#j", "job")
                    .expression_attribute_values(":j", s(&job))
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| sdk_err(&ctx.t.users, "query users", e))?;
                Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
            })?;
            items.iter().filter_map(entry_of).for_each(&mut *f);
            match next {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    fn entries(&self, job: &str, external_ids: &[&str]) -> Result<Vec<Entry>, StateError> {
        let job = job.to_string();
        let ids: Vec<String> = external_ids.iter().map(|s| s.to_string()).collect();
        self.d.call(move |ctx| async move {
            let mut out = Vec::new();
            let unique: BTreeSet<String> = ids.into_iter().collect();
            let unique: Vec<String> = unique.into_iter().collect();
            for chunk in unique.chunks(100) {
                let mut keys: Vec<Item> = chunk.iter().map(|id| user_key(&job, id)).collect();
                while !keys.is_empty() {
                    let ka = KeysAndAttributes::builder()
                        .set_keys(Some(keys))
                        .consistent_read(true)
                        .build()
                        .map_err(|e| err(&ctx.t.users, e))?;
                    let page = ctx
                        .client
                        .batch_get_item()
                        .request_items(&ctx.t.users, ka)
                        .send()
                        .await
                        .map_err(|e| sdk_err(&ctx.t.users, "batch get users", e))?;
                    if let Some(items) = page.responses.and_then(|mut r| r.remove(&ctx.t.users)) {
                        out.extend(items.iter().filter_map(entry_of));
                    }
                    keys = page
                        .unprocessed_keys
                        .and_then(|mut u| u.remove(&ctx.t.users))
                        .map(|k| k.keys)
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            Ok(out)
        })
    }

    fn last_run(&self, job: &str) -> Result<Option<RunRecord>, StateError> {
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let page = ctx
                .client
                .query()
                .table_name(&ctx.t.runs)
                .key_condition_expression("#j = :j")
                .expression_attribute_names("#j", "job")
                .expression_attribute_values(":j", s(&job))
                .consistent_read(true)
                .scan_index_forward(false)
                .limit(1)
                .send()
                .await
                .map_err(|e| sdk_err(&ctx.t.runs, "query runs", e))?;
            Ok(page.items.unwrap_or_default().first().and_then(run_of))
        })
    }

    fn confirmed_profile(
        &self,
        job: &str,
        external_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StateError> {
        let key = user_key(job, external_id);
        self.d.call(move |ctx| async move {
            let item = get_item(&ctx, &ctx.t.users, key).await?;
            Ok(item.and_then(|i| get_s(&i, "profile")).and_then(|t| serde_json::from_str(&t).ok()))
        })
    }

    fn mark_pending(
        &mut self,
        job: &str,
        users: &[(&str, SentStatus)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        let users: Vec<(String, SentStatus)> =
            users.iter().map(|(id, st)| (id.to_string(), *st)).collect();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let at = ts(at);
            let updates = users
                .into_iter()
                .map(|(id, status)| {
                    let ctx = ctx.clone();
                    let upd = Upd::new(&ctx.t.users, user_key(&job, &id))
                        .set("pending", s(status.as_str()))
                        .set_default("first_seen", s(&at))
                        .fence(token);
                    Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) })
                        as BoxFuture<'static, _>
                })
                .collect();
            run_all(updates).await
        })
    }

    fn confirm(
        &mut self,
        job: &str,
        users: &[Confirmed],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        let users = users.to_vec();
        let keep = self.store_profiles;
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let at = ts(at);
            let updates = users
                .into_iter()
                .map(|u| {
                    let ctx = ctx.clone();
                    let mut upd = Upd::new(&ctx.t.users, user_key(&job, &u.external_id))
                        .set("status", s(u.status.as_str()))
                        .set("confirmed_at", s(&at))
                        .set_default("first_seen", s(&at))
                        .remove("pending")
                        .fence(token);
                    if let Some(h) = &u.hash {
                        upd = upd.set("hash", s(h));
                    }
                    match (&u.profile, keep) {
                        (Some(p), true) => {
                            if let Ok(text) = serde_json::to_string(p) {
                                upd = upd.set("profile", s(text));
                            }
                        }
                        (None, true) => {}
                        (_, false) => upd = upd.remove("profile"),
                    }
                    Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) })
                        as BoxFuture<'static, _>
                })
                .collect();
            run_all(updates).await
        })
    }

    fn record_pull(
        &mut self,
        job: &str,
        present: &mut dyn Iterator<Item = &str>,
        count_missing: bool,
        users: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        let present: HashSet<String> = present.map(str::to_string).collect();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let known = query_all(
                &ctx,
                &ctx.t.users,
                "job",
                &job,
                Some("external_id, missing_runs"),
                false,
            )
            .await?;
            let mut updates: Vec<BoxFuture<'static, Result<(), StateError>>> = Vec::new();
            for item in known {
                let Some(id) = get_s(&item, "external_id") else { continue };
                let missing = get_n::<u32>(&item, "missing_runs").unwrap_or(0);
                let upd = if present.contains(&id) {
                    if missing == 0 {
                        // Nothing changes (`last_seen` is not kept in this backend).
                        continue;
                    }
                    Upd::new(&ctx.t.users, user_key(&job, &id)).set("missing_runs", n(0))
                } else if count_missing {
                    Upd::new(&ctx.t.users, user_key(&job, &id)).add("missing_runs", n(1))
                } else {
                    continue;
                };
                let upd = upd.cond("attribute_exists(#job)", &["job"], &[]).fence(token);
                let ctx = ctx.clone();
                updates.push(Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) }));
            }
            run_all(updates).await?;
            Upd::new(&ctx.t.meta, key1("pk", &format!("job#{job}")))
                .set("last_pull_users", n(users))
                .set("last_pull_at", s(ts(at)))
                .fence(token)
                .send_fenced(&ctx)
                .await
                .map(|_| ())
        })
    }

    fn record_full_resync(&mut self, job: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            Upd::new(&ctx.t.meta, key1("pk", &format!("job#{job}")))
                .set("last_full_resync_at", s(ts(at)))
                .fence(token)
                .send_fenced(&ctx)
                .await
                .map(|_| ())
        })
    }

    fn begin_run(&mut self, job: &str, at: DateTime<Utc>) -> Result<RunId, StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let id = next_counter(&ctx, "runs").await?;
            // run → job first: `finish_run` gets only the id.
            Upd::new(&ctx.t.meta, key1("pk", &format!("run#{id}")))
                .set("job", s(&job))
                .send(&ctx.client)
                .await
                .map_err(|e| sdk_err(&ctx.t.meta, &format!("record run {id}"), e))?;
            Upd::new(&ctx.t.runs, run_key(&job, id))
                .set("started_at", s(ts(at)))
                .fence(token)
                .send_fenced(&ctx)
                .await?;
            Ok(id)
        })
    }

    fn finish_run(
        &mut self,
        run: RunId,
        outcome: &str,
        report_json: &str,
        hold: Option<&Hold>,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let d = self.d.clone();
        let job = d.call(move |ctx| async move {
            let item = get_item(&ctx, &ctx.t.meta, key1("pk", &format!("run#{run}"))).await?;
            item.and_then(|i| get_s(&i, "job"))
                .ok_or_else(|| err(&ctx.t.meta, format!("no run {run} (key run#{run})")))
        })?;
        let fence = self.fence(&job)?;
        let outcome = outcome.to_string();
        let report = if report_json.len() > MAX_REPORT_BYTES {
            serde_json::json!({ "truncated": true, "bytes": report_json.len() }).to_string()
        } else {
            report_json.to_string()
        };
        let hold = hold.cloned();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let mut upd = Upd::new(&ctx.t.runs, run_key(&job, run))
                .set("finished_at", s(ts(at)))
                .set("outcome", s(outcome))
                .set("report", s(report))
                .fence(token);
            if let Some(h) = hold {
                upd = upd
                    .set("hold", s(serde_json::to_string(&h.reasons).unwrap_or_default()))
                    .set("hold_deactivations", n(h.deactivations))
                    .set("hold_creations", n(h.creations));
            }
            upd.send_fenced(&ctx).await.map(|_| ())
        })
    }

    fn run(&self, job: &str, run: RunId) -> Result<Option<RunRecord>, StateError> {
        let key = run_key(job, run);
        self.d.call(move |ctx| async move {
            Ok(get_item(&ctx, &ctx.t.runs, key).await?.as_ref().and_then(run_of))
        })
    }

    fn run_report(&self, job: &str, run: RunId) -> Result<Option<String>, StateError> {
        let key = run_key(job, run);
        self.d.call(move |ctx| async move {
            Ok(get_item(&ctx, &ctx.t.runs, key).await?.and_then(|i| get_s(&i, "report")))
        })
    }

    fn approve(&mut self, job: &str, run: RunId, at: DateTime<Utc>) -> Result<(), StateError> {
        let record = self
            .run(job, run)?
            .ok_or_else(|| StateError::NoSuchRun { job: job.to_string(), run })?;
        if record.hold.is_none() {
            return Err(StateError::NotHeld { job: job.to_string(), run });
        }
        if let Some(by) = record.consumed_by {
            return Err(StateError::AlreadyUsed { job: job.to_string(), run, by });
        }
        let key = run_key(job, run);
        let used = self.d.call(move |ctx| async move {
            let upd = Upd::new(&ctx.t.runs, key).set("approved_at", s(ts(at))).cond(
                "attribute_not_exists(#consumed_by)",
                &["consumed_by"],
                &[],
            );
            match upd.send(&ctx.client).await {
                Ok(_) => Ok(false),
                Err(e) if condition_failed(&e) => Ok(true),
                Err(e) => Err(sdk_err(&ctx.t.runs, &format!("approve run {run}"), e)),
            }
        })?;
        if used {
            let by = self.run(job, run)?.and_then(|r| r.consumed_by).unwrap_or_default();
            return Err(StateError::AlreadyUsed { job: job.to_string(), run, by });
        }
        Ok(())
    }

    fn take_approval(
        &mut self,
        job: &str,
        deactivations: u64,
        creations: u64,
        by: RunId,
    ) -> Result<Option<RunId>, StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let runs = query_all(&ctx, &ctx.t.runs, "job", &job, None, true).await?;
            for r in runs.iter().filter_map(run_of) {
                let Some(hold) = &r.hold else { continue };
                if r.approved_at.is_none()
                    || r.consumed_by.is_some()
                    || hold.deactivations < deactivations
                    || hold.creations < creations
                {
                    continue;
                }
                // Used once, even when two runs race for it.
                let upd = Upd::new(&ctx.t.runs, run_key(&job, r.id))
                    .set("consumed_by", n(by))
                    .cond("attribute_not_exists(#consumed_by)", &["consumed_by"], &[])
                    .fence(token);
                match upd.send(&ctx.client).await {
                    Ok(_) => return Ok(Some(r.id)),
                    Err(e) if condition_failed(&e) => continue,
                    Err(e) => {
                        return Err(sdk_err(
                            &ctx.t.runs,
                            &format!("use approval of run {}", r.id),
                            e,
                        ));
                    }
                }
            }
            Ok(None)
        })
    }
}

// ---- the webhook event log ------------------------------------------------------------------

/// The webhook event log on DynamoDB (see [`super::events::EventStore`] for the contract).
#[derive(Clone, Debug)]
pub struct DynamoEventStore {
    d: Dynamo,
}

/// An open event as the `open_events` table holds it.
#[derive(Debug, Clone)]
struct OpenEvent {
    seq: i64,
    id: String,
    job: String,
    records: String,
    record_count: u32,
    urgent: bool,
    status: EventStatus,
    sessions: Vec<String>,
    external_ids: Vec<String>,
}

fn open_of(item: &Item) -> Option<OpenEvent> {
    Some(OpenEvent {
        seq: get_n(item, "seq")?,
        id: get_s(item, "id")?,
        job: get_s(item, "job")?,
        records: get_s(item, "records").unwrap_or_default(),
        record_count: get_n(item, "record_count").unwrap_or(0),
        urgent: get_bool(item, "urgent"),
        status: get_s(item, "status")
            .as_deref()
            .and_then(EventStatus::parse)
            .unwrap_or(EventStatus::Queued),
        sessions: get_s(item, "sessions")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        external_ids: get_list(item, "external_ids"),
    })
}

fn view_of(item: &Item) -> Option<EventView> {
    Some(EventView {
        id: get_s(item, "id")?,
        job: get_s(item, "job")?,
        status: get_s(item, "status")
            .as_deref()
            .and_then(EventStatus::parse)
            .unwrap_or(EventStatus::Queued),
        received_at: get_s(item, "received_at").unwrap_or_default(),
        finished_at: get_s(item, "finished_at"),
        record_count: get_n(item, "record_count").unwrap_or(0),
        sessions: get_s(item, "sessions")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        outcome: get_s(item, "outcome").and_then(|t| serde_json::from_str(&t).ok()),
    })
}

/// The open item of an event, from its full (view) item.
fn open_item_from(view: &Item) -> Item {
    let keep = [
        "job",
        "seq",
        "id",
        "records",
        "record_count",
        "urgent",
        "status",
        "sessions",
        "external_ids",
    ];
    view.iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The id of an event: time-ordered (`evt_<uuid v7>`), or derived from the idempotency key
/// (`evt_k<hash>`) so a conditional put on it stores a keyed event once, atomically.
fn event_id(job: &str, key: Option<&str>) -> String {
    match key {
        None => format!("evt_{}", uuid::Uuid::now_v7()),
        Some(key) => {
            let mut h = sha2::Sha256::new();
            h.update(job.as_bytes());
            h.update([0]);
            h.update(key.as_bytes());
            format!("evt_k{}", &hex::encode(h.finalize())[..32])
        }
    }
}

impl DynamoEventStore {
    /// The event log on the process's shared handle.
    pub fn open(settings: &DynamoStateSettings) -> Result<Self, StateError> {
        Ok(Self { d: Dynamo::open(settings)? })
    }

    /// The event log on a given handle.
    pub fn with(d: Dynamo) -> Self {
        Self { d }
    }

    /// The handle (leases, triggers).
    pub fn dynamo(&self) -> &Dynamo {
        &self.d
    }

    pub async fn append(&self, e: NewEvent) -> Result<Stored, StateError> {
        self.d
            .call_async(move |ctx| async move {
                let id = event_id(&e.job, e.idempotency_key.as_deref());
                let seq = next_counter(&ctx, "events").await?;
                let mut item: Item = HashMap::from([
                    ("id".to_string(), s(&id)),
                    ("job".to_string(), s(&e.job)),
                    ("seq".to_string(), n(seq)),
                    ("records".to_string(), s(&e.records)),
                    ("record_count".to_string(), n(e.record_count)),
                    ("urgent".to_string(), Av::Bool(e.urgent)),
                    ("status".to_string(), s(EventStatus::Queued.as_str())),
                    ("received_at".to_string(), s(ts(Utc::now()))),
                    ("sessions".to_string(), s("[]")),
                    (
                        "external_ids".to_string(),
                        Av::L(e.external_ids.iter().map(|x| s(x.as_str())).collect()),
                    ),
                ]);
                if let Some(k) = &e.idempotency_key {
                    item.insert("idempotency_key".into(), s(k));
                }
                // 1. The event itself, once per id (so once per idempotency key).
                let put = ctx
                    .client
                    .put_item()
                    .table_name(&ctx.t.events)
                    .set_item(Some(item.clone()))
                    .condition_expression("attribute_not_exists(id)")
                    .send()
                    .await;
                match put {
                    Ok(_) => {}
                    Err(err_) if condition_failed(&err_) => {
                        // A duplicate. If the first append died between its two writes, its
                        // open item is missing: put it back (the retry is what saves it).
                        let first = get_item(&ctx, &ctx.t.events, key1("id", &id)).await?;
                        if let Some(first) = first
                            && get_s(&first, "status").as_deref() == Some("queued")
                        {
                            let repair = ctx
                                .client
                                .put_item()
                                .table_name(&ctx.t.open_events)
                                .set_item(Some(open_item_from(&first)))
                                .condition_expression("attribute_not_exists(job)")
                                .send()
                                .await;
                            if let Err(e) = repair
                                && !condition_failed(&e)
                            {
                                return Err(sdk_err(&ctx.t.open_events, "restore open event", e));
                            }
                        }
                        return Ok(Stored { id, duplicate: true });
                    }
                    Err(e) => return Err(sdk_err(&ctx.t.events, &format!("put event {id}"), e)),
                }
                // 2. Its place in the queue.
                let put = ctx
                    .client
                    .put_item()
                    .table_name(&ctx.t.open_events)
                    .set_item(Some(open_item_from(&item)))
                    .send()
                    .await;
                if let Err(e) = put {
                    let _ = ctx
                        .client
                        .delete_item()
                        .table_name(&ctx.t.events)
                        .set_key(Some(key1("id", &id)))
                        .send()
                        .await;
                    return Err(sdk_err(&ctx.t.open_events, &format!("put open event {id}"), e));
                }
                Ok(Stored { id, duplicate: false })
            })
            .await
    }

    pub fn get(&self, id: &str) -> Result<Option<EventView>, StateError> {
        let key = key1("id", id);
        self.d.call(move |ctx| async move {
            Ok(get_item(&ctx, &ctx.t.events, key).await?.as_ref().and_then(view_of))
        })
    }

    pub fn recent(&self, limit: usize) -> Result<Vec<EventView>, StateError> {
        self.d.call(move |ctx| async move {
            // A scan of the history: fine for an operator's page, not for a hot path.
            let mut all: Vec<(i64, EventView)> = Vec::new();
            let mut start: Option<Item> = None;
            loop {
                let page = ctx
                    .client
                    .scan()
                    .table_name(&ctx.t.events)
                    .projection_expression(
                        "id, job, #s, received_at, finished_at, record_count, sessions, outcome, seq",
                    )
                    .expression_attribute_names("#s", "status")
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err(&ctx.t.events, "scan events", e))?;
                for item in page.items.unwrap_or_default() {
                    if let (Some(seq), Some(v)) = (get_n::<i64>(&item, "seq"), view_of(&item)) {
                        all.push((seq, v));
                    }
                }
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
            all.sort_by_key(|e| std::cmp::Reverse(e.0));
            Ok(all.into_iter().take(limit).map(|(_, v)| v).collect())
        })
    }

    /// Every open event of `jobs`, in store order.
    async fn open_events(
        ctx: &Ctx,
        jobs: &[String],
        projection: Option<&str>,
    ) -> Result<Vec<OpenEvent>, StateError> {
        let mut all = Vec::new();
        for job in jobs {
            let items = query_all(ctx, &ctx.t.open_events, "job", job, projection, false).await?;
            all.extend(items.iter().filter_map(open_of));
        }
        all.sort_by_key(|e| e.seq);
        Ok(all)
    }

    pub fn pending(
        &self,
        jobs: &[String],
        max_records: usize,
    ) -> Result<Vec<QueuedEvent>, StateError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = jobs.to_vec();
        let open =
            self.d.call(move |ctx| async move { Self::open_events(&ctx, &jobs, None).await })?;
        let only = urgent_closure(&open);
        let mut out = Vec::new();
        let mut total = 0usize;
        for e in open {
            if only.as_ref().is_some_and(|set| !set.contains(&e.seq)) {
                continue;
            }
            total = total.saturating_add(e.record_count as usize);
            out.push(QueuedEvent {
                id: e.id,
                seq: e.seq,
                job: e.job,
                records: e.records,
                urgent: e.urgent,
                status: e.status,
                sessions: e.sessions,
            });
            if total >= max_records {
                break;
            }
        }
        Ok(out)
    }

    pub fn has_pending(&self, jobs: &[String]) -> Result<(usize, bool), StateError> {
        if jobs.is_empty() {
            return Ok((0, false));
        }
        let jobs = jobs.to_vec();
        let open = self.d.call(move |ctx| async move {
            Self::open_events(&ctx, &jobs, Some("job, seq, id, urgent")).await
        })?;
        Ok((open.len(), open.iter().any(|e| e.urgent)))
    }

    /// Like [`DynamoEventStore::has_pending`], for async callers (the owner's poll).
    pub async fn has_pending_async(&self, jobs: &[String]) -> Result<(usize, bool), StateError> {
        if jobs.is_empty() {
            return Ok((0, false));
        }
        let jobs = jobs.to_vec();
        let open = self
            .d
            .call_async(move |ctx| async move {
                Self::open_events(&ctx, &jobs, Some("job, seq, id, urgent")).await
            })
            .await?;
        Ok((open.len(), open.iter().any(|e| e.urgent)))
    }

    /// The view items of `ids` with the fence of their jobs, checked.
    async fn fenced_views(
        d: &Dynamo,
        ctx: &Ctx,
        ids: &[String],
    ) -> Result<Vec<(Item, Option<u64>)>, StateError> {
        let mut checked: HashMap<String, Option<u64>> = HashMap::new();
        let mut out = Vec::new();
        for id in ids {
            let Some(view) = get_item(ctx, &ctx.t.events, key1("id", id)).await? else {
                continue;
            };
            let job = get_s(&view, "job").unwrap_or_default();
            let token = match checked.get(&job) {
                Some(t) => *t,
                None => {
                    let fence = d.fence_for_job(&job)?;
                    let t = fenced(ctx, &fence).await?;
                    checked.insert(job, t);
                    t
                }
            };
            out.push((view, token));
        }
        Ok(out)
    }

    pub fn mark_processing(
        &self,
        ids: &[String],
        session_id: Option<&str>,
    ) -> Result<(), StateError> {
        let ids = ids.to_vec();
        let session = session_id.map(str::to_string);
        let d = self.d.clone();
        self.d.call(move |ctx| async move {
            let views = Self::fenced_views(&d, &ctx, &ids).await?;
            for (view, token) in views {
                let (Some(id), Some(job), Some(seq)) =
                    (get_s(&view, "id"), get_s(&view, "job"), get_n::<i64>(&view, "seq"))
                else {
                    continue;
                };
                let mut sessions: Vec<String> = get_s(&view, "sessions")
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                if let Some(s_) = &session
                    && !sessions.contains(s_)
                {
                    sessions.push(s_.clone());
                }
                let sessions = serde_json::to_string(&sessions).unwrap_or_else(|_| "[]".into());
                Upd::new(&ctx.t.events, key1("id", &id))
                    .set("status", s("processing"))
                    .set("sessions", s(&sessions))
                    .fence(token)
                    .send_fenced(&ctx)
                    .await?;
                let upd = Upd::new(&ctx.t.open_events, open_key(&job, seq))
                    .set("status", s("processing"))
                    .set("sessions", s(&sessions))
                    .cond("attribute_exists(#id)", &["id"], &[])
                    .fence(token);
                match upd.send(&ctx.client).await {
                    Ok(_) => {}
                    Err(e) if condition_failed(&e) => {
                        // Finished meanwhile (nothing to mark), or fenced out.
                        if get_item(&ctx, &ctx.t.open_events, open_key(&job, seq)).await?.is_some()
                        {
                            return Err(err(
                                &ctx.t.open_events,
                                format!("event {id}: a replica with a newer lease wrote it: write refused (lease lost)"),
                            ));
                        }
                    }
                    Err(e) => return Err(sdk_err(&ctx.t.open_events, &format!("mark event {id}"), e)),
                }
            }
            Ok(())
        })
    }

    pub fn finish(
        &self,
        outcomes: &[(String, EventStatus, serde_json::Value)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let outcomes = outcomes.to_vec();
        let d = self.d.clone();
        self.d.call(move |ctx| async move {
            let ids: Vec<String> = outcomes.iter().map(|(id, _, _)| id.clone()).collect();
            let views = Self::fenced_views(&d, &ctx, &ids).await?;
            let by_id: HashMap<String, (Item, Option<u64>)> = views
                .into_iter()
                .filter_map(|(v, t)| get_s(&v, "id").map(|id| (id, (v, t))))
                .collect();
            let at = ts(at);
            for (id, status, outcome) in outcomes {
                let Some((view, token)) = by_id.get(&id) else { continue };
                let (Some(job), Some(seq)) = (get_s(view, "job"), get_n::<i64>(view, "seq"))
                else {
                    continue;
                };
                Upd::new(&ctx.t.events, key1("id", &id))
                    .set("status", s(status.as_str()))
                    .set("outcome", s(outcome.to_string()))
                    .set("finished_at", s(&at))
                    .fence(*token)
                    .send_fenced(&ctx)
                    .await?;
                if matches!(status, EventStatus::Queued | EventStatus::Processing) {
                    continue;
                }
                let mut del = ctx
                    .client
                    .delete_item()
                    .table_name(&ctx.t.open_events)
                    .set_key(Some(open_key(&job, seq)));
                if let Some(t) = token {
                    del = del
                        .condition_expression("attribute_not_exists(#fence) OR #fence <= :fence")
                        .expression_attribute_names("#fence", "fence")
                        .expression_attribute_values(":fence", n(t));
                }
                match del.send().await {
                    Ok(_) => {}
                    Err(e) if condition_failed(&e) => {
                        return Err(err(
                            &ctx.t.open_events,
                            format!("event {id}: a replica with a newer lease wrote it: write refused (lease lost)"),
                        ));
                    }
                    Err(e) => return Err(sdk_err(&ctx.t.open_events, &format!("finish event {id}"), e)),
                }
            }
            Ok(())
        })
    }

    pub fn queued_total(&self) -> Result<u64, StateError> {
        self.d.call(move |ctx| async move {
            let mut total = 0u64;
            let mut start: Option<Item> = None;
            loop {
                let page = ctx
                    .client
                    .scan()
                    .table_name(&ctx.t.open_events)
                    .select(Select::Count)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err(&ctx.t.open_events, "count open events", e))?;
                total += u64::try_from(page.count).unwrap_or(0);
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => return Ok(total),
                }
            }
        })
    }

    pub fn record_session_activity(
        &self,
        identity_source: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let token = self.d.fence_for_source(identity_source)?;
        let source = identity_source.to_string();
        self.d.call(move |ctx| async move {
            if let Some(t) = token {
                check_lease(&ctx, &source, t).await?;
            }
            Upd::new(&ctx.t.meta, key1("pk", &format!("activity#{source}")))
                .set("at", s(at.to_rfc3339()))
                .fence(token)
                .send_fenced(&ctx)
                .await
                .map(|_| ())
        })
    }

    pub fn session_activity(
        &self,
        identity_source: &str,
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        let key = key1("pk", &format!("activity#{identity_source}"));
        self.d.call(move |ctx| async move {
            Ok(parse_ts(get_item(&ctx, &ctx.t.meta, key).await?.and_then(|i| get_s(&i, "at"))))
        })
    }
}

/// The events an urgent flush takes (the same rule as the SQLite log): the urgent events, the
/// processing ones, and every earlier open event (before the last urgent one) that touches one
/// of their users, transitively. `None` when nothing is urgent.
fn urgent_closure(open: &[OpenEvent]) -> Option<BTreeSet<i64>> {
    let last = open.iter().filter(|e| e.urgent).map(|e| e.seq).max()?;
    let by_seq: HashMap<i64, &OpenEvent> = open.iter().map(|e| (e.seq, e)).collect();
    let mut touching: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in open {
        for id in &e.external_ids {
            touching.entry(id.as_str()).or_default().push(e.seq);
        }
    }
    let mut set: BTreeSet<i64> = open
        .iter()
        .filter(|e| e.urgent || e.status == EventStatus::Processing)
        .map(|e| e.seq)
        .collect();
    let mut frontier: Vec<i64> = set.iter().copied().collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(seq) = frontier.pop() {
        let Some(e) = by_seq.get(&seq) else { continue };
        for id in &e.external_ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            for &other in touching.get(id.as_str()).into_iter().flatten() {
                if other < last && set.insert(other) {
                    frontier.push(other);
                }
            }
        }
    }
    Some(set)
}
