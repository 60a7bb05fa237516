//! The tables: the client, creating a missing table, and the paged and counted reads every
//! part uses.

use super::*;

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) async fn build_client(config: &DynamoStateSettings) -> Client {
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

/// Turn on TTL deletion by [`super::TTL_ATTRIBUTE`] for `table` (history retention). Best
/// effort: an endpoint without TTL (dynalite) or a role without `dynamodb:UpdateTimeToLive`
/// keeps every item, and says so once at debug/warn level.
pub(super) async fn enable_ttl(client: &Client, table: &str) {
    use aws_sdk_dynamodb::types::{TimeToLiveSpecification, TimeToLiveStatus};
    let on = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .ok()
        .and_then(|d| d.time_to_live_description.and_then(|t| t.time_to_live_status));
    if matches!(on, Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling)) {
        return;
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(super::TTL_ATTRIBUTE)
        .build();
    let Ok(spec) = spec else { return };
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
    {
        Ok(_) => tracing::info!(table, "turned on TTL for the history"),
        Err(e) => {
            tracing::debug!(table, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "cannot turn on TTL: history items are kept")
        }
    }
}

pub(super) async fn ensure_table(
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
pub(super) async fn query_all(
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
        let page = Page { hash_key, value, projection, newest_first, limit: None };
        let (items, next) = query_page(ctx, table, &page, start.take()).await?;
        out.extend(items);
        match next {
            Some(k) => start = Some(k),
            None => return Ok(out),
        }
    }
}

/// One page of a query on a hash key, in sort-key order (see [`query_page`]).
pub(super) struct Page<'a> {
    pub hash_key: &'a str,
    pub value: &'a str,
    /// Attributes to read, comma-separated (all when `None`).
    pub projection: Option<&'a str>,
    pub newest_first: bool,
    /// At most this many items (DynamoDB's 1 MB page limit applies anyway).
    pub limit: Option<i32>,
}

/// One page of a query, from `start`, with the key to start the next page from (`None` on
/// the last page).
pub(super) async fn query_page(
    ctx: &Ctx,
    table: &str,
    page: &Page<'_>,
    start: Option<Item>,
) -> Result<(Vec<Item>, Option<Item>), StateError> {
    let mut req = ctx
        .client
        .query()
        .table_name(table)
        .key_condition_expression("#k = :k")
        .expression_attribute_names("#k", page.hash_key)
        .expression_attribute_values(":k", s(page.value))
        .consistent_read(true)
        .scan_index_forward(!page.newest_first)
        .set_limit(page.limit)
        .set_exclusive_start_key(start);
    if let Some(p) = page.projection {
        // Projections name attributes through `#p_<name>` (reserved words again).
        let mut parts = Vec::new();
        for a in p.split(',') {
            let a = a.trim();
            req = req.expression_attribute_names(format!("#p_{a}"), a);
            parts.push(format!("#p_{a}"));
        }
        req = req.projection_expression(parts.join(", "));
    }
    let out = req.send().await.map_err(|e| sdk_err(table, "query", e))?;
    let next = out.last_evaluated_key.filter(|k| !k.is_empty());
    Ok((out.items.unwrap_or_default(), next))
}

pub(super) async fn get_item(
    ctx: &Ctx,
    table: &str,
    key: Item,
) -> Result<Option<Item>, StateError> {
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
pub(super) async fn check_lease(ctx: &Ctx, source: &str, token: u64) -> Result<(), StateError> {
    let item = get_item(ctx, &ctx.t.leases, key1("source", source)).await?;
    let holds = item.as_ref().is_some_and(|i| {
        get_s(i, "owner").as_deref() == Some(&*ctx.replica)
            && get_n::<u64>(i, "token") == Some(token)
    });
    if holds { Ok(()) } else { Err(lease_lost(&ctx.t, source)) }
}

/// Run `updates` a few at a time; the first error wins.
pub(super) async fn run_all(
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

/// Add one to the counter `name` (in `meta`) and return the new value.
pub(super) async fn next_counter(ctx: &Ctx, name: &str) -> Result<i64, StateError> {
    let item = Upd::new(&ctx.t.meta, key1("pk", &format!("counter#{name}")))
        .add("n", n(1))
        .send(&ctx.client)
        .await
        .map_err(|e| sdk_err(&ctx.t.meta, &format!("counter {name}"), e))?;
    item.as_ref()
        .and_then(|i| get_n(i, "n"))
        .ok_or_else(|| err(&ctx.t.meta, format!("counter {name} has no value")))
}

/// Check the lease (when fenced) and return the token to stamp items with.
pub(super) async fn fenced(
    ctx: &Ctx,
    fence: &Option<(String, u64)>,
) -> Result<Option<u64>, StateError> {
    match fence {
        None => Ok(None),
        Some((source, token)) => {
            check_lease(ctx, source, *token).await?;
            Ok(Some(*token))
        }
    }
}

/// Every item of `keys` that exists in `table` (consistent; unprocessed keys retried).
pub(super) async fn batch_get(
    ctx: &Ctx,
    table: &str,
    keys: Vec<Item>,
    fields: Option<&str>,
) -> Result<Vec<Item>, StateError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(100) {
        let mut keys = chunk.to_vec();
        while !keys.is_empty() {
            let mut ka = KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true);
            if let Some(f) = fields {
                let (expr, names) = projection(f);
                ka = ka.projection_expression(expr);
                for (k, v) in names {
                    ka = ka.expression_attribute_names(k, v);
                }
            }
            let ka = ka.build().map_err(|e| err(table, e))?;
            let page = ctx
                .client
                .batch_get_item()
                .request_items(table, ka)
                .send()
                .await
                .map_err(|e| sdk_err(table, "batch get", e))?;
            if let Some(items) = page.responses.and_then(|mut r| r.remove(table)) {
                out.extend(items);
            }
            keys = page
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if !keys.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(out)
}

/// `#p_x` names for a projection (several attribute names are reserved words).
pub(super) fn projection(fields: &str) -> (String, Vec<(String, String)>) {
    let names: Vec<(String, String)> =
        fields.split(',').map(|a| (format!("#p_{}", a.trim()), a.trim().to_string())).collect();
    let expr = names.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
    (expr, names)
}
