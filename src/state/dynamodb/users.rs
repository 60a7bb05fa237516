//! The state store on DynamoDB: users, runs, job facts and approvals.

use super::*;

/// [`StateStore`] on DynamoDB.
pub struct DynamoStore {
    pub(super) d: Dynamo,
    store_profiles: bool,
    /// Finished runs carry an `expires_at` (TTL) attribute from `keep_runs_for`.
    history: crate::state::config::HistoryPolicy,
}

impl DynamoStore {
    /// The store on the process's shared handle (see [`Dynamo::open`]).
    pub fn open(settings: &DynamoStateSettings, store_profiles: bool) -> Result<Self, StateError> {
        Ok(Self { d: Dynamo::open(settings)?, store_profiles, history: Default::default() })
    }

    /// Expire finished runs under `history` (DynamoDB's TTL deletes them; the last
    /// `keep_runs` of a job are not protected on this backend).
    pub fn with_history(mut self, history: crate::state::config::HistoryPolicy) -> Self {
        self.history = history;
        self
    }

    /// The store on a given handle.
    pub fn with(d: Dynamo, store_profiles: bool) -> Self {
        Self { d, store_profiles, history: Default::default() }
    }

    /// The job's fence, checked against the lease item.
    fn fence(&self, job: &str) -> Result<Option<(String, u64)>, StateError> {
        self.d.fence_for_job(job)
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
            let keys = unique.iter().map(|id| user_key(&job, id)).collect();
            out.extend(
                batch_get(&ctx, &ctx.t.users, keys, None).await?.iter().filter_map(entry_of),
            );
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

    fn set_memberships(
        &mut self,
        job: &str,
        users: &[(String, Vec<String>)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        let users = users.to_vec();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            groups::set_memberships(ctx, token, job, users, ts(at)).await
        })
    }

    fn owned_groups(&self, job: &str) -> Result<Vec<OwnedGroup>, StateError> {
        let job = job.to_string();
        self.d.call(move |ctx| async move { groups::owned(&ctx, &job).await })
    }

    fn confirm_groups(
        &mut self,
        job: &str,
        upserted: &[String],
        deleted: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        let job = job.to_string();
        let (upserted, deleted) = (upserted.to_vec(), deleted.to_vec());
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            groups::confirm(ctx, token, job, upserted, deleted, ts(at)).await
        })
    }

    fn record_groups(
        &mut self,
        job: &str,
        derived: &dyn Fn(&str) -> bool,
        _at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let runs = groups::empty_runs_after(&self.owned_groups(job)?, derived);
        if runs.is_empty() {
            return Ok(());
        }
        let fence = self.fence(job)?;
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            groups::write_empty_runs(ctx, token, job, runs).await
        })
    }

    fn record_pull(
        &mut self,
        job: &str,
        present: &dyn Fn(&str) -> bool,
        count_missing: bool,
        users: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let fence = self.fence(job)?;
        // Page by page in key order: each page is read on the DynamoDB thread, `present`
        // decides here, and only the counters that change are written.
        let mut start: Option<Item> = None;
        loop {
            let of = job.to_string();
            let (items, next) = self.d.call(move |ctx| async move {
                let page = Page {
                    hash_key: "job",
                    value: &of,
                    projection: Some("external_id, missing_runs"),
                    newest_first: false,
                    limit: Some(PULL_PAGE as i32),
                };
                query_page(&ctx, &ctx.t.users, &page, start).await
            })?;
            let changes: Vec<(String, bool)> = items
                .iter()
                .filter_map(|item| {
                    let id = get_s(item, "external_id")?;
                    let missing = get_n::<u32>(item, "missing_runs").unwrap_or(0);
                    // `last_seen` is not kept in this backend.
                    match present(&id) {
                        true if missing == 0 => None,
                        true => Some((id, true)),
                        false if count_missing => Some((id, false)),
                        false => None,
                    }
                })
                .collect();
            if !changes.is_empty() {
                let fence = fence.clone();
                let job = job.to_string();
                self.d.call(move |ctx| async move {
                    let token = fenced(&ctx, &fence).await?;
                    let updates = changes.into_iter().map(|(id, seen)| {
                        let upd = Upd::new(&ctx.t.users, user_key(&job, &id));
                        let upd = if seen {
                            upd.set("missing_runs", n(0))
                        } else {
                            upd.add("missing_runs", n(1))
                        };
                        let upd = upd.cond("attribute_exists(#job)", &["job"], &[]).fence(token);
                        let ctx = ctx.clone();
                        Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) })
                            as BoxFuture<'static, _>
                    });
                    run_all(updates.collect()).await
                })?;
            }
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        let job = job.to_string();
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
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
        // A held run waits for its approval: no expiry.
        let expires =
            self.history.keep_runs_for.filter(|_| hold.is_none()).map(|keep| expiry(at, keep));
        self.d.call(move |ctx| async move {
            let token = fenced(&ctx, &fence).await?;
            let mut upd = Upd::new(&ctx.t.runs, run_key(&job, run))
                .set("finished_at", s(ts(at)))
                .set("outcome", s(outcome))
                .set("report", s(report))
                .fence(token);
            if let Some(t) = expires {
                upd = upd.set(TTL_ATTRIBUTE, n(t));
            }
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

    fn record_decisions(
        &mut self,
        run: RunId,
        decisions: &mut dyn Iterator<Item = crate::state::DecisionRecord>,
    ) -> Result<u64, StateError> {
        self.write_decisions(run, decisions)
    }

    fn decisions(
        &self,
        run: RunId,
        query: &crate::state::DecisionQuery,
    ) -> Result<crate::state::DecisionPage, StateError> {
        self.decision_page(run, query)
    }

    fn decision_counts(
        &self,
        run: RunId,
    ) -> Result<BTreeMap<crate::state::Decision, u64>, StateError> {
        self.counts_of(run)
    }

    fn runs(
        &self,
        job: Option<&str>,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        self.list_runs(job, before, limit)
    }

    fn run_by_id(&self, run: RunId) -> Result<Option<RunRecord>, StateError> {
        self.find_run(run)
    }

    fn record_approval(
        &mut self,
        approval: &crate::state::ApprovalRecord,
    ) -> Result<(), StateError> {
        self.add_approval(approval)
    }

    fn approvals(&self, run: RunId) -> Result<Vec<crate::state::ApprovalRecord>, StateError> {
        self.approvals_of(run)
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

    fn job_watch(&self, job: &str) -> Result<crate::state::JobWatch, StateError> {
        let key = key1("pk", &format!("watch#{job}"));
        let item = self.d.call(move |ctx| async move { get_item(&ctx, &ctx.t.meta, key).await })?;
        let text = item.as_ref().and_then(|i| get_s(i, "watch"));
        Ok(crate::state::watch_of(text.as_deref(), "dynamodb meta"))
    }

    fn set_job_watch(
        &mut self,
        job: &str,
        watch: &crate::state::JobWatch,
    ) -> Result<(), StateError> {
        let key = key1("pk", &format!("watch#{job}"));
        let text = serde_json::to_string(watch).unwrap_or_default();
        self.d.call(move |ctx| async move {
            Upd::new(&ctx.t.meta, key)
                .set("watch", s(text))
                .set("updated_at", s(ts(Utc::now())))
                .send(&ctx.client)
                .await
                .map(|_| ())
                .map_err(|e| sdk_err(&ctx.t.meta, "record the job watch", e))
        })
    }
}
