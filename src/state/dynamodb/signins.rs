//! The monitoring page's sign-in records on DynamoDB: items `signin#{key}` of `meta`, with
//! the TTL attribute so DynamoDB deletes them once expired (a read checks the expiry itself:
//! TTL deletion runs late, and dynalite has none).

use super::*;

fn signin_key(key: &str) -> Item {
    key1("pk", &format!("signin#{key}"))
}

/// The record's data, unless it expired before `now`.
fn live(item: Option<Item>, now: DateTime<Utc>) -> Option<String> {
    let item = item?;
    let until: i64 = get_n(&item, "until_ms")?;
    (until > now.timestamp_millis()).then(|| get_s(&item, "data")).flatten()
}

/// Sign-in records (see [`crate::state::events::EventStore::put_signin`]).
impl DynamoEventStore {
    pub fn put_signin(
        &self,
        key: &str,
        data: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let (key, data) = (signin_key(key), data.to_string());
        self.d.call(move |ctx| async move {
            let mut item = key;
            item.insert("data".into(), s(data));
            item.insert("until_ms".into(), n(expires_at.timestamp_millis()));
            item.insert(TTL_ATTRIBUTE.into(), n(expires_at.timestamp() + 1));
            ctx.client
                .put_item()
                .table_name(&ctx.t.meta)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| sdk_err(&ctx.t.meta, "put a sign-in record", e))?;
            Ok(())
        })
    }

    pub fn signin(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>, StateError> {
        let key = signin_key(key);
        self.d
            .call(move |ctx| async move { Ok(live(get_item(&ctx, &ctx.t.meta, key).await?, now)) })
    }

    /// One `DeleteItem` returning the old item: DynamoDB gives it to one caller only.
    pub fn take_signin(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>, StateError> {
        let key = signin_key(key);
        self.d.call(move |ctx| async move {
            let out = ctx
                .client
                .delete_item()
                .table_name(&ctx.t.meta)
                .set_key(Some(key))
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(|e| sdk_err(&ctx.t.meta, "take a sign-in record", e))?;
            Ok(live(out.attributes.filter(|i| !i.is_empty()), now))
        })
    }

    pub fn delete_signin(&self, key: &str) -> Result<(), StateError> {
        let key = signin_key(key);
        self.d.call(move |ctx| async move {
            ctx.client
                .delete_item()
                .table_name(&ctx.t.meta)
                .set_key(Some(key))
                .send()
                .await
                .map_err(|e| sdk_err(&ctx.t.meta, "delete a sign-in record", e))?;
            Ok(())
        })
    }
}
