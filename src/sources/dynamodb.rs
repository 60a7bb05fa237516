//! DynamoDB source (`type: dynamodb`): reads a table or one of its indexes with Scan (optionally
//! a parallel scan over `segments`) or with a Query.
//!
//! Pages are read one at a time per segment (`LastEvaluatedKey` → `ExclusiveStartKey`) and sent
//! through a bounded channel, so at most a few pages per segment are in memory whatever the
//! table's size. Items become records with every attribute type converted (see
//! [`to_json`]).
//!
//! Credentials come from the AWS default chain: environment, shared profile, web identity
//! (IRSA), container and instance metadata. `region` and `endpoint_url` override what the chain
//! finds (the endpoint is how tests reach dynalite). Throttling (`ProvisionedThroughputExceeded`,
//! `ThrottlingException`, `RequestLimitExceeded`) and transient errors are retried by the SDK's
//! standard retry strategy: exponential backoff with jitter, `max_attempts` attempts in all, each
//! attempt bounded by `timeout_secs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::error::display::DisplayErrorContext;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Source, SourceError, SourceItem};
use crate::mapping::{Origin, Record};

/// `type: dynamodb`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbSourceConfig {
    /// The table name.
    pub table: String,
    /// Read this global or local secondary index instead of the table.
    #[serde(default)]
    pub index: Option<String>,
    /// The AWS region; the default chain's (`AWS_REGION`, profile) when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// Send requests here instead of the regional endpoint (DynamoDB Local, dynalite, a VPC
    /// endpoint).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Parallel scan: this many segments read concurrently (1 to 64; default 1). Not used with
    /// `query`.
    #[serde(default = "default_segments")]
    pub segments: u32,
    /// Read with Query instead of Scan.
    #[serde(default)]
    pub query: Option<QueryConfig>,
    /// A filter applied by DynamoDB after reading (it still reads, and bills, every item).
    #[serde(default)]
    pub filter_expression: Option<String>,
    /// The attributes to return, e.g. `id, email, #n`.
    #[serde(default)]
    pub projection: Option<String>,
    /// `#name` placeholders used in the expressions.
    #[serde(default)]
    pub expression_attribute_names: BTreeMap<String, String>,
    /// `:value` placeholders used in the expressions: strings, numbers, booleans or null.
    #[serde(default)]
    pub expression_attribute_values: BTreeMap<String, serde_json::Value>,
    /// Strongly consistent reads (tables and local indexes only).
    #[serde(default)]
    pub consistent_read: bool,
    /// Items per request (DynamoDB's `Limit`); DynamoDB's 1 MB page when absent.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Attempts per request, the first included, for throttling and transient errors.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Timeout of one request attempt, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// `query:` — a Query on the table or on `index`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The key condition, e.g. `department = :d`.
    pub key_condition: String,
}

fn default_segments() -> u32 {
    1
}
fn default_max_attempts() -> u32 {
    8
}
fn default_timeout_secs() -> u64 {
    30
}

impl DynamoDbSourceConfig {
    /// Pure checks serde cannot express.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.table.trim().is_empty() {
            out.push(("table".into(), "missing: the table name".into()));
        }
        if !(1..=64).contains(&self.segments) {
            out.push(("segments".into(), "must be between 1 and 64".into()));
        }
        if self.query.is_some() && self.segments > 1 {
            out.push(("segments".into(), "a query cannot be split into segments".into()));
        }
        if self.max_attempts == 0 {
            out.push(("max_attempts".into(), "must be at least 1".into()));
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be greater than 0".into()));
        }
        if self.page_size == Some(0) {
            out.push(("page_size".into(), "must be greater than 0".into()));
        }
        for (k, v) in &self.expression_attribute_values {
            if !k.starts_with(':') {
                out.push((
                    format!("expression_attribute_values.{k}"),
                    "placeholders start with `:`".into(),
                ));
            }
            if v.is_array() || v.is_object() {
                out.push((
                    format!("expression_attribute_values.{k}"),
                    "must be a string, number, boolean or null".into(),
                ));
            }
        }
        for k in self.expression_attribute_names.keys() {
            if !k.starts_with('#') {
                out.push((
                    format!("expression_attribute_names.{k}"),
                    "placeholders start with `#`".into(),
                ));
            }
        }
        out
    }
}

/// Reads one table (or index).
pub struct DynamoDbSource {
    config: DynamoDbSourceConfig,
    /// Built on first use: loading the credential chain is async and may touch the network.
    client: tokio::sync::OnceCell<Client>,
}

impl DynamoDbSource {
    pub fn new(config: &DynamoDbSourceConfig) -> Self {
        Self { config: config.clone(), client: tokio::sync::OnceCell::new() }
    }

    fn error(&self, message: impl Into<String>) -> SourceError {
        SourceError::DynamoDb { table: self.config.table.clone(), message: message.into() }
    }

    async fn client(&self) -> Client {
        self.client.get_or_init(|| build_client(&self.config)).await.clone()
    }
}

async fn build_client(config: &DynamoDbSourceConfig) -> Client {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.max_attempts)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(config.timeout_secs))
                .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
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

/// One request's parameters, shared by every segment.
#[derive(Clone)]
struct Request {
    config: DynamoDbSourceConfig,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Request {
    fn new(config: &DynamoDbSourceConfig) -> Self {
        let names = (!config.expression_attribute_names.is_empty())
            .then(|| config.expression_attribute_names.clone().into_iter().collect());
        let values = (!config.expression_attribute_values.is_empty()).then(|| {
            config
                .expression_attribute_values
                .iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect()
        });
        Self { config: config.clone(), names, values }
    }

    /// One page: the items and where the next page starts.
    async fn page(
        &self,
        client: &Client,
        segment: Option<(i32, i32)>,
        start: Option<HashMap<String, AttributeValue>>,
        limit: Option<i32>,
    ) -> Result<Page, String> {
        let c = &self.config;
        let limit = limit.or(c.page_size.map(|n| n.min(i32::MAX as u32) as i32));
        let (items, next) = match &c.query {
            Some(q) => {
                let out = client
                    .query()
                    .table_name(&c.table)
                    .set_index_name(c.index.clone())
                    .key_condition_expression(&q.key_condition)
                    .set_filter_expression(c.filter_expression.clone())
                    .set_projection_expression(c.projection.clone())
                    .set_expression_attribute_names(self.names.clone())
                    .set_expression_attribute_values(self.values.clone())
                    .consistent_read(c.consistent_read)
                    .set_limit(limit)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| describe(&DisplayErrorContext(&e).to_string()))?;
                (out.items.unwrap_or_default(), out.last_evaluated_key)
            }
            None => {
                let out = client
                    .scan()
                    .table_name(&c.table)
                    .set_index_name(c.index.clone())
                    .set_segment(segment.map(|s| s.0))
                    .set_total_segments(segment.map(|s| s.1))
                    .set_filter_expression(c.filter_expression.clone())
                    .set_projection_expression(c.projection.clone())
                    .set_expression_attribute_names(self.names.clone())
                    .set_expression_attribute_values(self.values.clone())
                    .consistent_read(c.consistent_read)
                    .set_limit(limit)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| describe(&DisplayErrorContext(&e).to_string()))?;
                (out.items.unwrap_or_default(), out.last_evaluated_key)
            }
        };
        // An empty LastEvaluatedKey is how some emulators say "done".
        Ok(Page { items, next: next.filter(|k| !k.is_empty()) })
    }
}

struct Page {
    items: Vec<HashMap<String, AttributeValue>>,
    next: Option<HashMap<String, AttributeValue>>,
}

/// Turn the SDK's error chain into one clear line, naming the likely cause first.
fn describe(chain: &str) -> String {
    let hint = if chain.contains("ResourceNotFoundException") {
        "the table or index does not exist (check `table`, `index` and `region`)"
    } else if chain.contains("credentials") || chain.contains("Credentials") {
        "no usable aws credentials (looked in the environment, the shared profile, web identity, container and instance metadata)"
    } else if chain.contains("UnrecognizedClientException")
        || chain.contains("InvalidSignatureException")
        || chain.contains("security token")
    {
        "aws rejected the credentials"
    } else if chain.contains("AccessDeniedException") {
        "access denied: the credentials lack permission to read this table"
    } else if chain.contains("ValidationException") {
        "dynamodb rejected the request (check the expressions and placeholders)"
    } else if chain.contains("region") && chain.contains("not set") {
        "no aws region: set `region` or AWS_REGION"
    } else {
        "the request failed"
    };
    format!("{hint}: {chain}")
}

/// Rows buffered per segment between the readers and the consumer.
const CHANNEL_CAPACITY: usize = 1024;

type Tx = mpsc::Sender<Result<Vec<HashMap<String, AttributeValue>>, SourceError>>;

impl Source for DynamoDbSource {
    fn check(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let client = self.client().await;
            let request = Request::new(&self.config);
            // One item with the real parameters: this exercises credentials, region, table,
            // index, permissions and the expressions exactly as a run would.
            request
                .page(&client, None, None, Some(1))
                .await
                .map_err(|message| self.error(message))?;
            let what = match (&self.config.index, &self.config.query) {
                (Some(i), Some(_)) => format!("query on index {i}"),
                (Some(i), None) => format!("scan of index {i}"),
                (None, Some(_)) => "query".to_string(),
                (None, None) => "scan".to_string(),
            };
            Ok(format!("dynamodb table {}: readable ({what})", self.config.table))
        })
    }

    fn pull(&self) -> BoxStream<'static, Result<SourceItem, SourceError>> {
        let config = self.config.clone();
        let cell = self.client.clone();
        let stream = futures::stream::once(async move {
            let client = cell.get_or_init(|| build_client(&config)).await.clone();
            let request = Request::new(&config);
            let segments = if config.query.is_some() { 1 } else { config.segments.max(1) };
            // Pages, not items, go through the channel; its capacity bounds pages in flight.
            let capacity = (CHANNEL_CAPACITY / 100).max(segments as usize);
            let (tx, rx) = mpsc::channel(capacity);
            let mut tasks = tokio::task::JoinSet::new();
            for segment in 0..segments {
                let seg = (segments > 1).then_some((segment as i32, segments as i32));
                tasks.spawn(read_segment(
                    client.clone(),
                    request.clone(),
                    seg,
                    tx.clone(),
                    config.table.clone(),
                ));
            }
            drop(tx);
            let table = config.table.clone();
            // A panicking reader would close the channel like a finished one; join every task
            // after the last page so that a panic becomes an error, not a complete pull.
            let end = futures::stream::once(async move {
                while let Some(done) = tasks.join_next().await {
                    if let Err(e) = done {
                        return Some(Err(SourceError::DynamoDb {
                            table,
                            message: format!("a scan task failed: {e}"),
                        }));
                    }
                }
                None
            })
            .filter_map(futures::future::ready);
            let mut index = 0u64;
            ReceiverStream::new(rx).chain(end).flat_map(move |page| {
                let items: Vec<Result<SourceItem, SourceError>> = match page {
                    Err(e) => vec![Err(e)],
                    Ok(items) => items
                        .into_iter()
                        .map(|item| {
                            let origin = Origin::Index(index);
                            index += 1;
                            Ok(Ok(Record { origin, fields: to_record(item) }))
                        })
                        .collect(),
                };
                futures::stream::iter(items)
            })
        })
        .flatten();
        Box::pin(stream)
    }
}

/// Read every page of one segment (or the whole scan/query) into `tx`. Stops at the first
/// error, or when the consumer is gone.
async fn read_segment(
    client: Client,
    request: Request,
    segment: Option<(i32, i32)>,
    tx: Tx,
    table: String,
) {
    let mut start = None;
    loop {
        match request.page(&client, segment, start.take(), None).await {
            Ok(page) => {
                if tx.send(Ok(page.items)).await.is_err() {
                    return;
                }
                match page.next {
                    Some(next) => start = Some(next),
                    None => return,
                }
            }
            Err(message) => {
                let _ = tx.send(Err(SourceError::DynamoDb { table, message })).await;
                return;
            }
        }
    }
}

fn to_record(item: HashMap<String, AttributeValue>) -> serde_json::Map<String, serde_json::Value> {
    // Sorted keys: records (and so reports) do not depend on hash order.
    let sorted: BTreeMap<String, AttributeValue> = item.into_iter().collect();
    sorted.into_iter().map(|(k, v)| (k, to_json(v))).collect()
}

/// One attribute value in the record model:
///
/// | DynamoDB | record |
/// |---|---|
/// | S | string |
/// | N | number when it fits exactly in an i64/u64/f64, else the decimal string (DynamoDB keeps 38 digits) |
/// | BOOL | boolean |
/// | NULL | null |
/// | M | object |
/// | L | array |
/// | SS, NS | array of strings, of numbers (as N) |
/// | B, BS | base64 string, array of base64 strings |
pub fn to_json(value: AttributeValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AttributeValue::S(s) => Value::String(s),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::M(m) => Value::Object(to_record(m)),
        AttributeValue::L(l) => Value::Array(l.into_iter().map(to_json).collect()),
        AttributeValue::Ss(ss) => Value::Array(ss.into_iter().map(Value::String).collect()),
        AttributeValue::Ns(ns) => Value::Array(ns.into_iter().map(number).collect()),
        AttributeValue::B(b) => Value::String(aws_smithy_types::base64::encode(b.as_ref())),
        AttributeValue::Bs(bs) => Value::Array(
            bs.into_iter()
                .map(|b| Value::String(aws_smithy_types::base64::encode(b.as_ref())))
                .collect(),
        ),
        // A type added to DynamoDB after this SDK: keep the record, mark the value.
        _ => Value::Null,
    }
}

fn number(n: String) -> serde_json::Value {
    if let Ok(i) = n.parse::<i64>() {
        return i.into();
    }
    if let Ok(u) = n.parse::<u64>() {
        return u.into();
    }
    if let Ok(f) = n.parse::<f64>()
        && f.is_finite()
        && f.to_string() == n
        && let Some(num) = serde_json::Number::from_f64(f)
    {
        return serde_json::Value::Number(num);
    }
    serde_json::Value::String(n)
}

/// A placeholder value from the config.
fn from_json(v: &serde_json::Value) -> AttributeValue {
    match v {
        serde_json::Value::String(s) => AttributeValue::S(s.clone()),
        serde_json::Value::Number(n) => AttributeValue::N(n.to_string()),
        serde_json::Value::Bool(b) => AttributeValue::Bool(*b),
        // Arrays and objects are rejected by `validate`.
        _ => AttributeValue::Null(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::Blob;
    use serde_json::json;

    #[test]
    fn every_attribute_type_converts() {
        let item = HashMap::from([
            ("s".to_string(), AttributeValue::S("x".into())),
            ("n".to_string(), AttributeValue::N("42".into())),
            ("f".to_string(), AttributeValue::N("1.5".into())),
            ("big".to_string(), AttributeValue::N("123456789012345678901234567890".into())),
            ("b".to_string(), AttributeValue::Bool(true)),
            ("z".to_string(), AttributeValue::Null(true)),
            (
                "m".to_string(),
                AttributeValue::M(HashMap::from([("k".into(), AttributeValue::S("v".into()))])),
            ),
            ("l".to_string(), AttributeValue::L(vec![AttributeValue::N("1".into())])),
            ("ss".to_string(), AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("ns".to_string(), AttributeValue::Ns(vec!["1".into(), "2.5".into()])),
            ("bin".to_string(), AttributeValue::B(Blob::new(b"hi".to_vec()))),
            ("bs".to_string(), AttributeValue::Bs(vec![Blob::new(b"hi".to_vec())])),
        ]);
        let got = serde_json::Value::Object(to_record(item));
        assert_eq!(
            got,
            json!({
                "s": "x", "n": 42, "f": 1.5, "big": "123456789012345678901234567890",
                "b": true, "z": null, "m": {"k": "v"}, "l": [1], "ss": ["a", "b"],
                "ns": [1, 2.5], "bin": "aGk=", "bs": ["aGk="]
            })
        );
    }

    #[test]
    fn errors_name_the_cause() {
        assert!(
            describe("ResourceNotFoundException: Requested resource not found")
                .starts_with("the table or index does not exist")
        );
        assert!(describe("failed to load credentials").starts_with("no usable aws credentials"));
    }
}
