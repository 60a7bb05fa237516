//! The mover's state on DynamoDB: a user's confirmed memberships are its item's `groups`
//! attribute (a JSON array); the groups a job created are items of the users table under the
//! partition `<job>#groups` (job names never hold `#`), keyed by the group's externalId.

use super::*;

/// The partition of `job`'s groups.
fn partition(job: &str) -> String {
    format!("{job}#groups")
}

pub(super) async fn set_memberships(
    ctx: Ctx,
    token: Option<u64>,
    job: String,
    users: Vec<(String, Vec<String>)>,
    at: String,
) -> Result<(), StateError> {
    let updates = users
        .into_iter()
        .map(|(id, groups)| {
            let ctx = ctx.clone();
            let mut upd =
                Upd::new(&ctx.t.users, user_key(&job, &id)).set_default("first_seen", s(&at));
            upd = if groups.is_empty() {
                upd.remove("groups")
            } else {
                upd.set("groups", s(serde_json::to_string(&groups).expect("strings serialize")))
            };
            let upd = upd.fence(token);
            Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) })
                as BoxFuture<'static, _>
        })
        .collect();
    run_all(updates).await
}

pub(super) async fn owned(ctx: &Ctx, job: &str) -> Result<Vec<OwnedGroup>, StateError> {
    let items = query_all(
        ctx,
        &ctx.t.users,
        "job",
        &partition(job),
        Some("external_id, empty_runs"),
        false,
    )
    .await?;
    Ok(items
        .iter()
        .filter_map(|i| {
            Some(OwnedGroup {
                external_id: get_s(i, "external_id")?,
                empty_runs: get_n(i, "empty_runs").unwrap_or(0),
            })
        })
        .collect())
}

pub(super) async fn confirm(
    ctx: Ctx,
    token: Option<u64>,
    job: String,
    upserted: Vec<String>,
    deleted: Vec<String>,
    at: String,
) -> Result<(), StateError> {
    let part = partition(&job);
    let mut updates: Vec<BoxFuture<'static, Result<(), StateError>>> = Vec::new();
    for id in upserted {
        let upd = Upd::new(&ctx.t.users, user_key(&part, &id))
            .set("empty_runs", n(0))
            .set("confirmed_at", s(&at))
            .set_default("created_at", s(&at))
            .fence(token);
        let ctx = ctx.clone();
        updates.push(Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) }));
    }
    for id in deleted {
        let ctx = ctx.clone();
        let key = user_key(&part, &id);
        updates.push(Box::pin(async move {
            ctx.client
                .delete_item()
                .table_name(&ctx.t.users)
                .set_key(Some(key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_err(&ctx.t.users, "delete group", e))
        }));
    }
    run_all(updates).await
}

/// Empty-run counters to write for a complete pull: `(group, new count)`.
pub(super) fn empty_runs_after(
    owned: &[OwnedGroup],
    derived: &dyn Fn(&str) -> bool,
) -> Vec<(String, u32)> {
    owned
        .iter()
        .filter_map(|g| {
            let runs = g.empty_runs_after(derived(&g.external_id));
            (runs != g.empty_runs).then(|| (g.external_id.clone(), runs))
        })
        .collect()
}

pub(super) async fn write_empty_runs(
    ctx: Ctx,
    token: Option<u64>,
    job: String,
    runs: Vec<(String, u32)>,
) -> Result<(), StateError> {
    let part = partition(&job);
    let updates = runs
        .into_iter()
        .map(|(id, count)| {
            let ctx = ctx.clone();
            let upd = Upd::new(&ctx.t.users, user_key(&part, &id))
                .set("empty_runs", n(count))
                .cond("attribute_exists(#job)", &["job"], &[])
                .fence(token);
            Box::pin(async move { upd.send_fenced(&ctx).await.map(|_| ()) })
                as BoxFuture<'static, _>
        })
        .collect();
    run_all(updates).await
}
