//! Leases: one owner per identity source, its fencing token, and the stored triggers the
//! owner claims.

use super::*;

/// Leases on identity sources and stored triggers (see the module doc, "Leases and fencing").
impl Dynamo {
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
