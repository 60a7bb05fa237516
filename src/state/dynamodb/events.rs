//! The webhook event log on DynamoDB: every event, the open ones in arrival order, and the
//! urgent closure of a termination.

use super::*;

/// The webhook event log on DynamoDB (see [`crate::state::events::EventStore`] for the contract).
#[derive(Clone, Debug)]
pub struct DynamoEventStore {
    pub(super) d: Dynamo,
    /// Finished events carry an `expires_at` (TTL) attribute from `keep_events_for`.
    keep_events_for: Option<std::time::Duration>,
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

/// A repeat found the first event `id`: if that append died between its writes, the event is
/// queued but has no open item; put it back (the retry is what saves it).
async fn restore_open(ctx: &Ctx, id: &str) -> Result<(), StateError> {
    let first = get_item(ctx, &ctx.t.events, key1("id", id)).await?;
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
    Ok(())
}

/// Withdraw an event written by an append that did not go through (best effort).
async fn delete_event(ctx: &Ctx, id: &str) {
    let _ = ctx
        .client
        .delete_item()
        .table_name(&ctx.t.events)
        .set_key(Some(key1("id", id)))
        .send()
        .await;
}

/// One fingerprint's item, unless a live one holds its key (see [`crate::state::events`]).
async fn put_seen(
    ctx: &Ctx,
    key: &str,
    sig: &SeenSignature,
    event_id: Option<&str>,
) -> Result<bool, StateError> {
    let mut item: Item = HashMap::from([
        ("key".to_string(), s(key)),
        ("route".to_string(), s(&sig.route)),
        (TTL_ATTRIBUTE.to_string(), n(sig.expires_at)),
    ]);
    if let Some(id) = event_id {
        item.insert("event_id".into(), s(id));
    }
    let put = ctx
        .client
        .put_item()
        .table_name(&ctx.t.seen)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#k) OR #e < :now")
        .expression_attribute_names("#k", "key")
        .expression_attribute_names("#e", TTL_ATTRIBUTE)
        .expression_attribute_values(":now", n(Utc::now().timestamp()))
        .send()
        .await;
    match put {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(sdk_err(&ctx.t.seen, "put seen signature", e)),
    }
}

/// Remember `sig` with its event, or say what an earlier request with it was.
async fn claim(
    ctx: &Ctx,
    sig: &SeenSignature,
    event_id: Option<&str>,
) -> Result<Claim, StateError> {
    if put_seen(ctx, sig.decisive(), sig, event_id).await? {
        if sig.routed.is_some() {
            // Its v1 form too, unless another route's live item holds it.
            put_seen(ctx, &sig.message, sig, event_id).await?;
        }
        return Ok(Claim::New);
    }
    let seen = get_item(ctx, &ctx.t.seen, key1("key", sig.decisive())).await?;
    Ok(match seen {
        Some(item) => {
            sig.judge(get_s(&item, "route").unwrap_or_default(), get_s(&item, "event_id"))
        }
        // Expired and deleted between the two calls: it was a replay all the same.
        None => Claim::Duplicate { event_id: None },
    })
}

/// Forget `sig` after its event could not be stored, so the sender may retry it as it is.
async fn release(ctx: &Ctx, sig: &SeenSignature, event_id: &str) {
    let keys =
        std::iter::once(sig.decisive()).chain(sig.routed.as_ref().map(|_| sig.message.as_str()));
    for key in keys {
        let _ = ctx
            .client
            .delete_item()
            .table_name(&ctx.t.seen)
            .set_key(Some(key1("key", key)))
            .condition_expression("event_id = :id")
            .expression_attribute_values(":id", s(event_id))
            .send()
            .await;
    }
}

impl DynamoEventStore {
    /// The event log on the process's shared handle.
    pub fn open(settings: &DynamoStateSettings) -> Result<Self, StateError> {
        Ok(Self { d: Dynamo::open(settings)?, keep_events_for: None })
    }

    /// Expire finished events after `keep` (DynamoDB's TTL deletes them).
    pub fn with_events_kept_for(mut self, keep: Option<std::time::Duration>) -> Self {
        self.keep_events_for = keep;
        self
    }

    /// The event log on a given handle.
    pub fn with(d: Dynamo) -> Self {
        Self { d, keep_events_for: None }
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
                        restore_open(&ctx, &id).await?;
                        return Ok(Stored::duplicate_of(id));
                    }
                    Err(e) => return Err(sdk_err(&ctx.t.events, &format!("put event {id}"), e)),
                }
                // 2. Its signed message, once: a repeat withdraws the event just written (the
                // queue reads only open events, so nothing saw it).
                if let Some(sig) = &e.signature {
                    let claimed = claim(&ctx, sig, Some(&id)).await;
                    if !matches!(claimed, Ok(Claim::New)) {
                        delete_event(&ctx, &id).await;
                    }
                    match claimed? {
                        Claim::New => {}
                        Claim::Duplicate { event_id: Some(first) } => {
                            restore_open(&ctx, &first).await?;
                            return Ok(Stored::duplicate_of(first));
                        }
                        other => return Ok(Stored::from_claim(other).unwrap_or(Stored::new(id))),
                    }
                }
                // 3. Its place in the queue.
                let put = ctx
                    .client
                    .put_item()
                    .table_name(&ctx.t.open_events)
                    .set_item(Some(open_item_from(&item)))
                    .send()
                    .await;
                if let Err(err_) = put {
                    delete_event(&ctx, &id).await;
                    if let Some(sig) = &e.signature {
                        release(&ctx, sig, &id).await;
                    }
                    return Err(sdk_err(&ctx.t.open_events, &format!("put open event {id}"), err_));
                }
                Ok(Stored::new(id))
            })
            .await
    }

    /// Remember a signed request that stores no event (a trigger).
    pub async fn claim_signature(&self, sig: SeenSignature) -> Result<Claim, StateError> {
        self.d.call_async(move |ctx| async move { claim(&ctx, &sig, None).await }).await
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
        let keep = self.keep_events_for;
        self.d.call(move |ctx| async move {
            let ids: Vec<String> = outcomes.iter().map(|(id, _, _)| id.clone()).collect();
            let views = Self::fenced_views(&d, &ctx, &ids).await?;
            let by_id: HashMap<String, (Item, Option<u64>)> = views
                .into_iter()
                .filter_map(|(v, t)| get_s(&v, "id").map(|id| (id, (v, t))))
                .collect();
            let expires = keep.map(|k| expiry(at, k));
            let at = ts(at);
            for (id, status, outcome) in outcomes {
                let Some((view, token)) = by_id.get(&id) else { continue };
                let (Some(job), Some(seq)) = (get_s(view, "job"), get_n::<i64>(view, "seq"))
                else {
                    continue;
                };
                let mut upd = Upd::new(&ctx.t.events, key1("id", &id))
                    .set("status", s(status.as_str()))
                    .set("outcome", s(outcome.to_string()))
                    .set("finished_at", s(&at))
                    .fence(*token);
                if let Some(t) = expires.filter(|_| !matches!(status, EventStatus::Queued | EventStatus::Processing)) {
                    upd = upd.set(TTL_ATTRIBUTE, n(t));
                }
                upd.send_fenced(&ctx).await?;
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

    pub fn session_ledger_text(&self, identity_source: &str) -> Result<Option<String>, StateError> {
        let key = key1("pk", &format!("ledger#{identity_source}"));
        self.d.call(move |ctx| async move {
            Ok(get_item(&ctx, &ctx.t.meta, key).await?.and_then(|i| get_s(&i, "ledger")))
        })
    }

    /// Fenced like the session times: a replica that lost the source's lease cannot
    /// overwrite what its new owner recorded.
    pub fn record_session_ledger(
        &self,
        identity_source: &str,
        ledger: &str,
    ) -> Result<(), StateError> {
        let token = self.d.fence_for_source(identity_source)?;
        let source = identity_source.to_string();
        let ledger = ledger.to_string();
        self.d.call(move |ctx| async move {
            if let Some(t) = token {
                check_lease(&ctx, &source, t).await?;
            }
            Upd::new(&ctx.t.meta, key1("pk", &format!("ledger#{source}")))
                .set("ledger", s(ledger))
                .fence(token)
                .send_fenced(&ctx)
                .await
                .map(|_| ())
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
