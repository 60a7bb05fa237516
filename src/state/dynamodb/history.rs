//! The run history the monitoring page reads, on DynamoDB: the runs newest first, one run by
//! id, the per-record decisions of a run, their counts, and the approvals' audit trail. With
//! it `/ui` and `/v1/runs` work on every replica, whichever ran the job.
//!
//! # Decisions
//!
//! A run of 100,000 people decides 100,000 records; one item each would cost 100,000 writes
//! per run. They are written instead as **chunks** in the `decisions` table (key `run`,
//! `sk`): the run's records sorted in page order (changes first, [`Decision::ALL`], then by
//! externalId, as SQLite pages them), cut into items of at most [`CHUNK_RECORDS`] records or
//! [`CHUNK_BYTES`] of JSON, with `sk = "{rank}#{first externalId}"`. A page finds the chunk
//! holding its cursor with one reverse query (the last `sk` at or before it) and reads on from
//! there, so any page, however deep, reads one or two chunks per decision. The counts per
//! decision are one more item (`sk = "#counts"`, outside every rank's range). Chunks carry the
//! run's `expires_at`, so they go with it.
//!
//! Written once per run, at its end: records repeated within the call keep their first
//! decision (as SQLite's), a second call for the same run adds its records as they are.
//!
//! # Runs and approvals
//!
//! Runs are the `runs` table (`job`, `id`); across jobs they are found newest first through
//! the `run#{id}` items of `meta` (which job each run id belongs to), a window of ids at a
//! time. An approval is appended to its run's item (`approvals`, a list of JSON records).

use super::*;
use crate::state::{
    ApprovalRecord, Decision, DecisionPage, DecisionQuery, DecisionRange, DecisionRecord,
};

/// The most records in one decisions chunk (a page reads one or two per decision: smaller
/// chunks decode faster, larger ones cost fewer writes; 400 writes for 100,000 records).
const CHUNK_RECORDS: usize = 250;
/// The most JSON in one decisions chunk (an item holds at most 400 KB).
const CHUNK_BYTES: usize = 200_000;
/// Run ids looked up at once when listing the runs of every job.
const RUN_WINDOW: i64 = 100;
/// The attributes of a run the listing reads (not its report).
const RUN_FIELDS: &str = "id, job, started_at, finished_at, outcome, hold, hold_deactivations, hold_creations, approved_at, consumed_by";

fn run_pk(run: RunId) -> Av {
    s(run.to_string())
}

fn chunk_sk(d: Decision, first: &str) -> String {
    format!("{}#{first}", d.rank())
}

const COUNTS_SK: &str = "#counts";

impl DynamoStore {
    /// The job of run `run`, from `meta`.
    pub(super) async fn job_of(ctx: &Ctx, run: RunId) -> Result<Option<String>, StateError> {
        let item = get_item(ctx, &ctx.t.meta, key1("pk", &format!("run#{run}"))).await?;
        Ok(item.and_then(|i| get_s(&i, "job")))
    }

    pub(super) fn write_decisions(
        &mut self,
        run: RunId,
        decisions: &mut dyn Iterator<Item = DecisionRecord>,
    ) -> Result<u64, StateError> {
        // First decision per record, then page order.
        let mut seen = HashSet::new();
        let mut all: Vec<DecisionRecord> =
            decisions.filter(|d| seen.insert(d.external_id.clone())).collect();
        drop(seen);
        all.sort_by(|a, b| {
            (a.decision.rank(), &a.external_id).cmp(&(b.decision.rank(), &b.external_id))
        });
        let mut counts: BTreeMap<Decision, u64> = BTreeMap::new();
        for d in &all {
            *counts.entry(d.decision).or_default() += 1;
        }
        let chunks = chunks(&all)?;
        let written = all.len() as u64;
        drop(all);
        self.d.call(move |ctx| async move {
            // The run's expiry, so its decisions go with it.
            let expires = match Self::job_of(&ctx, run).await? {
                Some(job) => get_item(&ctx, &ctx.t.runs, run_key(&job, run))
                    .await?
                    .and_then(|i| get_n::<i64>(&i, TTL_ATTRIBUTE)),
                None => None,
            };
            let puts = chunks
                .into_iter()
                .map(|(sk, last, data)| {
                    let ctx = ctx.clone();
                    let mut item: Item = HashMap::from([
                        ("run".to_string(), run_pk(run)),
                        ("sk".to_string(), s(sk)),
                        ("last".to_string(), s(last)),
                        ("data".to_string(), s(data)),
                    ]);
                    if let Some(at) = expires {
                        item.insert(TTL_ATTRIBUTE.into(), n(at));
                    }
                    Box::pin(async move {
                        ctx.client
                            .put_item()
                            .table_name(&ctx.t.decisions)
                            .set_item(Some(item))
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| sdk_err(&ctx.t.decisions, "put decisions", e))
                    }) as BoxFuture<'static, Result<(), StateError>>
                })
                .collect();
            run_all(puts).await?;
            let mut upd = Upd::new(&ctx.t.decisions, counts_key(run));
            for (d, k) in &counts {
                upd = upd.add(&format!("n_{}", d.as_str()), n(*k));
            }
            if let Some(at) = expires {
                upd = upd.set(TTL_ATTRIBUTE, n(at));
            }
            upd.send(&ctx.client)
                .await
                .map_err(|e| sdk_err(&ctx.t.decisions, "count decisions", e))?;
            Ok(written)
        })
    }

    pub(super) fn decision_page(
        &self,
        run: RunId,
        query: &DecisionQuery,
    ) -> Result<DecisionPage, StateError> {
        let limit = query.page_size();
        let ranges = query.ranges();
        self.d.call(move |ctx| async move {
            // Decisions the run has none of are not read.
            let counts = get_item(&ctx, &ctx.t.decisions, counts_key(run)).await?;
            let none = |d: Decision| {
                counts.as_ref().is_some_and(|c| {
                    get_n::<u64>(c, &format!("n_{}", d.as_str())).unwrap_or(0) == 0
                })
            };
            let mut items: Vec<DecisionRecord> = Vec::with_capacity(limit + 1);
            for r in ranges.iter().filter(|r| !none(r.decision)) {
                items.extend(read_range(&ctx, run, r, limit + 1 - items.len()).await?);
                if items.len() > limit {
                    break;
                }
            }
            Ok(DecisionPage::cut(items, limit))
        })
    }

    pub(super) fn counts_of(&self, run: RunId) -> Result<BTreeMap<Decision, u64>, StateError> {
        self.d.call(move |ctx| async move {
            let item = get_item(&ctx, &ctx.t.decisions, counts_key(run)).await?;
            let mut out = BTreeMap::new();
            if let Some(item) = item {
                for d in Decision::ALL {
                    if let Some(k) = get_n::<u64>(&item, &format!("n_{}", d.as_str())) {
                        out.insert(d, k);
                    }
                }
            }
            Ok(out)
        })
    }

    pub(super) fn list_runs(
        &self,
        job: Option<&str>,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let job = job.map(str::to_string);
        let limit = limit.max(1);
        self.d.call(move |ctx| async move {
            match job {
                Some(job) => runs_of_job(&ctx, &job, before, limit).await,
                None => runs_of_every_job(&ctx, before, limit).await,
            }
        })
    }

    pub(super) fn find_run(&self, run: RunId) -> Result<Option<RunRecord>, StateError> {
        self.d.call(move |ctx| async move {
            let Some(job) = Self::job_of(&ctx, run).await? else { return Ok(None) };
            Ok(get_item(&ctx, &ctx.t.runs, run_key(&job, run)).await?.as_ref().and_then(run_of))
        })
    }

    pub(super) fn add_approval(&mut self, approval: &ApprovalRecord) -> Result<(), StateError> {
        let text = serde_json::to_string(approval).unwrap_or_default();
        let key = run_key(&approval.job, approval.run);
        let run = approval.run;
        self.d.call(move |ctx| async move {
            ctx.client
                .update_item()
                .table_name(&ctx.t.runs)
                .set_key(Some(key))
                .update_expression("SET #a = list_append(if_not_exists(#a, :empty), :new)")
                .condition_expression("attribute_exists(#id)")
                .expression_attribute_names("#a", "approvals")
                .expression_attribute_names("#id", "id")
                .expression_attribute_values(":empty", Av::L(Vec::new()))
                .expression_attribute_values(":new", Av::L(vec![s(text)]))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_err(&ctx.t.runs, &format!("record the approval of run {run}"), e))
        })
    }

    pub(super) fn approvals_of(&self, run: RunId) -> Result<Vec<ApprovalRecord>, StateError> {
        self.d.call(move |ctx| async move {
            let Some(job) = Self::job_of(&ctx, run).await? else { return Ok(Vec::new()) };
            let item = get_item(&ctx, &ctx.t.runs, run_key(&job, run)).await?;
            Ok(item
                .as_ref()
                .map(|i| get_list(i, "approvals"))
                .unwrap_or_default()
                .iter()
                .filter_map(|t| serde_json::from_str(t).ok())
                .collect())
        })
    }
}

fn counts_key(run: RunId) -> Item {
    HashMap::from([("run".to_string(), run_pk(run)), ("sk".to_string(), s(COUNTS_SK))])
}

/// Cut the sorted records into chunk items: (sk, last externalId, JSON array).
fn chunks(all: &[DecisionRecord]) -> Result<Vec<(String, String, String)>, StateError> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < all.len() {
        let d = all[start].decision;
        let mut data = String::from("[");
        let mut end = start;
        while end < all.len()
            && all[end].decision == d
            && end - start < CHUNK_RECORDS
            && (end == start || data.len() < CHUNK_BYTES)
        {
            if end > start {
                data.push(',');
            }
            let one = serde_json::to_string(&all[end])
                .map_err(|e| err("decisions", format!("cannot write a decision: {e}")))?;
            data.push_str(&one);
            end += 1;
        }
        data.push(']');
        out.push((chunk_sk(d, &all[start].external_id), all[end - 1].external_id.clone(), data));
        start = end;
    }
    Ok(out)
}

/// A query of `run`'s decisions items with `a <= sk <= b`.
fn between(
    ctx: &Ctx,
    run: RunId,
    a: &str,
    b: &str,
) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
    ctx.client
        .query()
        .table_name(&ctx.t.decisions)
        .key_condition_expression("#r = :r AND #sk BETWEEN :a AND :b")
        .expression_attribute_names("#r", "run")
        .expression_attribute_names("#sk", "sk")
        .expression_attribute_values(":r", run_pk(run))
        .expression_attribute_values(":a", s(a))
        .expression_attribute_values(":b", s(b))
}

/// Up to `want` records of one decision's range, in externalId order.
async fn read_range(
    ctx: &Ctx,
    run: RunId,
    range: &DecisionRange,
    want: usize,
) -> Result<Vec<DecisionRecord>, StateError> {
    let t = &ctx.t.decisions;
    let low = range.low.as_str();
    let prefix = format!("{}#", range.decision.rank());
    // '$' follows '#': the end of this decision's range.
    let end = format!("{}$", range.decision.rank());
    let mut out = Vec::new();
    // The chunk holding `low` (the last one starting at or before it), read whole: a page
    // usually ends inside it.
    let holding = between(ctx, run, &prefix, &format!("{prefix}{low}"))
        .scan_index_forward(false)
        .limit(1)
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk_err(t, "query decisions", e))?;
    let mut start = None;
    if let Some(item) = holding.items.unwrap_or_default().into_iter().next() {
        if take_chunk(&item, run, range, want, &mut out)? {
            return Ok(out);
        }
        start = Some(HashMap::from([
            ("run".to_string(), run_pk(run)),
            ("sk".to_string(), s(get_s(&item, "sk").unwrap_or_default())),
        ]));
    }
    // Then the chunks after it, one at a time, until the page or the range is full.
    loop {
        let page = between(ctx, run, &prefix, &end)
            .limit(1)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk_err(t, "query decisions", e))?;
        for item in page.items.unwrap_or_default() {
            if take_chunk(&item, run, range, want, &mut out)? {
                return Ok(out);
            }
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

/// Add the records of one chunk that fall in `range` to `out`; `true` when nothing after it
/// is needed (`want` records, or the range's end reached).
fn take_chunk(
    item: &Item,
    run: RunId,
    range: &DecisionRange,
    want: usize,
    out: &mut Vec<DecisionRecord>,
) -> Result<bool, StateError> {
    let (low, high) = (range.low.as_str(), range.high.as_deref());
    // A chunk that ends before `low` holds nothing of the range.
    if get_s(item, "last").is_some_and(|last| last.as_str() < low) {
        return Ok(false);
    }
    let data = get_s(item, "data").unwrap_or_default();
    let records: Vec<DecisionRecord> = serde_json::from_str(&data).map_err(|e| {
        err("decisions", format!("an unreadable decisions chunk of run {run}: {e}"))
    })?;
    for r in records {
        let id = r.external_id.as_str();
        if high.is_some_and(|h| id >= h) {
            return Ok(true);
        }
        if if range.inclusive { id >= low } else { id > low } {
            out.push(r);
            if out.len() >= want {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn runs_of_job(
    ctx: &Ctx,
    job: &str,
    before: Option<RunId>,
    limit: usize,
) -> Result<Vec<RunRecord>, StateError> {
    let mut req = ctx
        .client
        .query()
        .table_name(&ctx.t.runs)
        .expression_attribute_names("#j", "job")
        .expression_attribute_values(":j", s(job))
        .scan_index_forward(false)
        .consistent_read(true)
        .limit(i32::try_from(limit).unwrap_or(i32::MAX));
    req = match before {
        Some(b) => req
            .key_condition_expression("#j = :j AND #id < :b")
            .expression_attribute_names("#id", "id")
            .expression_attribute_values(":b", n(b)),
        None => req.key_condition_expression("#j = :j"),
    };
    let (projection, names) = projection(RUN_FIELDS);
    req = req.projection_expression(projection);
    for (k, v) in names {
        req = req.expression_attribute_names(k, v);
    }
    let page = req.send().await.map_err(|e| sdk_err(&ctx.t.runs, "query runs", e))?;
    Ok(page.items.unwrap_or_default().iter().filter_map(run_of).collect())
}

/// The runs of every job, newest first: run ids walked down from `before` (or the newest) a
/// window at a time, each resolved to its job through `meta` and read from `runs`. Pruned
/// runs leave gaps; the walk stops after 20 empty windows.
async fn runs_of_every_job(
    ctx: &Ctx,
    before: Option<RunId>,
    limit: usize,
) -> Result<Vec<RunRecord>, StateError> {
    let newest = get_item(ctx, &ctx.t.meta, key1("pk", "counter#runs"))
        .await?
        .and_then(|i| get_n::<i64>(&i, "n"))
        .unwrap_or(0);
    let mut top = before.map_or(newest, |b| (b - 1).min(newest));
    let mut out = Vec::new();
    let mut empty = 0;
    while top >= 1 && out.len() < limit && empty < 20 {
        let low = (top - RUN_WINDOW + 1).max(1);
        let ids: Vec<i64> = (low..=top).rev().collect();
        let metas = batch_get(
            ctx,
            &ctx.t.meta,
            ids.iter().map(|id| key1("pk", &format!("run#{id}"))).collect(),
            None,
        )
        .await?;
        let jobs: HashMap<i64, String> = metas
            .iter()
            .filter_map(|i| {
                let id = get_s(i, "pk")?.strip_prefix("run#")?.parse().ok()?;
                Some((id, get_s(i, "job")?))
            })
            .collect();
        let keys = ids.iter().filter_map(|id| jobs.get(id).map(|j| run_key(j, *id))).collect();
        let mut found: Vec<RunRecord> = batch_get(ctx, &ctx.t.runs, keys, Some(RUN_FIELDS))
            .await?
            .iter()
            .filter_map(run_of)
            .collect();
        if found.is_empty() {
            empty += 1;
        }
        found.sort_by_key(|r| std::cmp::Reverse(r.id));
        out.extend(found);
        top = low - 1;
    }
    out.truncate(limit);
    Ok(out)
}
