//! Attribute values, keys and item conversions.

use super::*;

pub(super) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(super) fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|d| d.with_timezone(&Utc))
}

pub(super) fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}

pub(super) fn n(v: impl ToString) -> Av {
    Av::N(v.to_string())
}

pub(super) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

pub(super) fn get_bool(item: &Item, k: &str) -> bool {
    item.get(k).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false)
}

pub(super) fn get_list(item: &Item, k: &str) -> Vec<String> {
    item.get(k)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

/// An error on `table`, with the SDK's full context (never a credential).
pub(super) fn err(table: &str, what: impl std::fmt::Display) -> StateError {
    StateError::Backend { location: format!("dynamodb table {table}"), message: what.to_string() }
}

pub(super) fn sdk_err<E, R>(table: &str, op: &str, e: SdkError<E, R>) -> StateError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    err(table, format!("{op} failed: {}", DisplayErrorContext(&e)))
}

/// The error was a failed condition (`ConditionalCheckFailedException`).
pub(super) fn condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// The lease on `source` was lost: writes are refused.
pub(super) fn lease_lost(t: &Tables, source: &str) -> StateError {
    err(
        &t.leases,
        format!(
            "the lease on identity source {source} is no longer held by this replica: write refused"
        ),
    )
}

/// One `UpdateItem`, built from parts (every attribute name goes through `#` placeholders:
/// `status`, `hash` and many others are reserved words).
pub(super) struct Upd {
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
    pub(super) fn new(table: &str, key: Item) -> Self {
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

    pub(super) fn name(&mut self, attr: &str) -> String {
        let p = format!("#{attr}");
        self.names.insert(p.clone(), attr.to_string());
        p
    }

    pub(super) fn set(mut self, attr: &str, v: Av) -> Self {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), v);
        self.sets.push(format!("{name} = :{attr}"));
        self
    }

    /// `SET attr = if_not_exists(attr, v)`.
    pub(super) fn set_default(mut self, attr: &str, v: Av) -> Self {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), v);
        self.sets.push(format!("{name} = if_not_exists({name}, :{attr})"));
        self
    }

    pub(super) fn remove(mut self, attr: &str) -> Self {
        let name = self.name(attr);
        self.removes.push(name);
        self
    }

    pub(super) fn add(mut self, attr: &str, v: Av) -> Self {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), v);
        self.adds.push(format!("{name} :{attr}"));
        self
    }

    /// A condition; `#attr` names in it must be declared with [`Upd::name`] or used elsewhere.
    pub(super) fn cond(mut self, expr: &str, names: &[&str], values: &[(&str, Av)]) -> Self {
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
    pub(super) fn fence(self, token: Option<u64>) -> Self {
        match token {
            None => self,
            Some(t) => self.set("fence", n(t)).cond(
                "attribute_not_exists(#fence) OR #fence <= :fence",
                &["fence"],
                &[],
            ),
        }
    }

    pub(super) async fn send(
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
    pub(super) async fn send_fenced(self, ctx: &Ctx) -> Result<Option<Item>, StateError> {
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

pub(super) fn key1(k: &str, v: &str) -> Item {
    HashMap::from([(k.to_string(), s(v))])
}

pub(super) fn user_key(job: &str, id: &str) -> Item {
    HashMap::from([("job".to_string(), s(job)), ("external_id".to_string(), s(id))])
}

pub(super) fn run_key(job: &str, id: RunId) -> Item {
    HashMap::from([("job".to_string(), s(job)), ("id".to_string(), n(id))])
}

pub(super) fn open_key(job: &str, seq: i64) -> Item {
    HashMap::from([("job".to_string(), s(job)), ("seq".to_string(), n(seq))])
}

pub(super) fn entry_of(item: &Item) -> Option<Entry> {
    Some(Entry {
        external_id: get_s(item, "external_id")?,
        hash: get_s(item, "hash"),
        status: get_s(item, "status").as_deref().and_then(SentStatus::parse),
        pending: get_s(item, "pending").as_deref().and_then(SentStatus::parse),
        missing_runs: get_n::<u32>(item, "missing_runs").unwrap_or(0),
        groups: get_s(item, "groups")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
    })
}

pub(super) fn run_of(item: &Item) -> Option<RunRecord> {
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
