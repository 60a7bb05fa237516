//! HTTP JSON source (`type: http`): pages through an HR system's JSON API.
//!
//! Each page is one request (GET, or POST with a JSON body); its records are the array found at
//! the JSON pointer `records`. Five pagination styles cover what HR APIs do (see
//! [`Pagination`]); each has an explicit stop condition, and `max_pages` is a hard cap: reaching
//! it ends the pull as *incomplete*, because a silently truncated pull would look like leavers.
//!
//! Every request goes through one policy (STYLE habit 4): a governor rate limit per source, a
//! per-attempt timeout, then retries with jittered exponential backoff on 429, 5xx and transport
//! errors, where a `Retry-After` header beats the computed delay. A page that still fails, or
//! that is not JSON, ends the pull as incomplete.
//!
//! Auth: bearer token, basic, an API-key header, or OAuth 2.0 client credentials (the token is
//! cached until shortly before it expires, and fetched again once on a 401). Secrets are read
//! from an environment variable or a file when the pull starts, held as `SecretString`, and
//! never appear in errors: URLs in messages lose their query string.
//!
//! Only one page is held at a time: records of a page are handed on before the next is fetched.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use url::Url;

use super::{Source, SourceError, SourceItem};
use crate::mapping::{Origin, Record, Rejection};

/// `type: http`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The first page's URL.
    pub url: String,
    /// `get` (default) or `post`.
    #[serde(default)]
    pub method: Method,
    /// The JSON body of a POST.
    #[serde(default)]
    pub body: Option<Value>,
    /// Extra request headers (not secrets: use `auth`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON pointer to the array of records in a page (`/data`); empty: the page is the array.
    #[serde(default)]
    pub records: String,
    #[serde(default)]
    pub pagination: Pagination,
    /// Hard cap on pages. Reaching it ends the pull as incomplete (nothing is sent).
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Timeout of one request attempt, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries after the first attempt, for 429, 5xx and transport errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay, in milliseconds; doubles each retry (with jitter). `Retry-After`
    /// overrides it.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest wait for one retry, in seconds, whatever `Retry-After` says.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// At most this many requests per second to this source (token requests included).
    #[serde(default = "default_rate_limit_per_sec")]
    pub rate_limit_per_sec: u32,
    /// A PEM file of extra CA certificates to trust (on top of the system's), relative to the
    /// config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_max_pages() -> u64 {
    10_000
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    5
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_secs() -> u64 {
    120
}
fn default_rate_limit_per_sec() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Get,
    Post,
}

/// How to reach the next page, tagged by `type`. For a POST, the cursor/offset/page parameter
/// is set as a top-level field of the JSON body; for a GET, as a query parameter.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One page only.
    #[default]
    None,
    /// The next page's URL is in the body at the pointer `next` (absolute, or relative to the
    /// current page). Stops when it is absent, null or empty.
    NextUrl { next: String },
    /// The next page's URL is the `Link: <…>; rel="next"` header. Stops when there is none.
    LinkHeader,
    /// An opaque cursor from the body (pointer `next_cursor`) is sent back as `param`. Stops
    /// when it is absent, null or empty.
    Cursor { param: String, next_cursor: String },
    /// `offset_param` advances by the records received; `limit_param` asks for `limit`. Stops
    /// on a page shorter than `limit`, or when the offset reaches the number at the pointer
    /// `total` (when given).
    Offset {
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        limit: u64,
        #[serde(default)]
        total: Option<String>,
    },
    /// `param` counts pages from `start` (default 1); `size_param`/`size` ask for a page size.
    /// Stops on an empty page, on a page shorter than `size` (when given), or after the page
    /// number at the pointer `total_pages` (when given).
    Page {
        #[serde(default = "default_page_param")]
        param: String,
        #[serde(default = "default_page_start")]
        start: u64,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        total_pages: Option<String>,
    },
}

fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_page_start() -> u64 {
    1
}

/// Where a secret is read from: exactly one of `env` and `file`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The name of an environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// A file (e.g. a mounted Kubernetes secret), relative to the config file.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    fn validate(&self, key: &str, out: &mut Vec<(String, String)>) {
        if self.env.is_some() == self.file.is_some() {
            out.push((key.to_string(), "give exactly one of `env` and `file`".into()));
        }
    }

    /// Read the secret now. The error names where it was looked for, never the value.
    fn resolve(&self, base_dir: &Path) -> Result<SecretString, String> {
        match (&self.env, &self.file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
                _ => Err(format!("the environment variable {var} is not set or is empty")),
            },
            (None, Some(file)) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
                match text.trim() {
                    "" => Err(format!("the secret file {} is empty", path.display())),
                    t => Ok(SecretString::from(t.to_string())),
                }
            }
            (None, None) => Err("no secret configured".into()),
        }
    }
}

/// `auth:`, tagged by `type`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: SecretRef },
    /// `Authorization: Basic …`.
    Basic { username: String, password: SecretRef },
    /// The key in a header of your choice, e.g. `X-API-Key`.
    ApiKey { header: String, key: SecretRef },
    /// OAuth 2.0 client credentials; the access token is cached until it expires.
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        #[serde(default)]
        scope: Option<String>,
        /// `basic` (default): credentials in the Authorization header; `post`: in the form.
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Basic,
    Post,
}

impl HttpSourceConfig {
    /// Pure checks serde cannot express.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match Url::parse(&self.url) {
            Ok(u) if u.scheme() == "https" || crate::diag::is_loopback_http(&u) => {}
            Ok(_) => out.push((
                "url".into(),
                "must use https:// (plain http:// only for loopback addresses)".into(),
            )),
            Err(e) => out.push(("url".into(), format!("not a valid url: {e}"))),
        }
        if !self.records.is_empty() && !self.records.starts_with('/') {
            out.push(("records".into(), "a json pointer starts with `/`".into()));
        }
        if self.body.is_some() && self.method == Method::Get {
            out.push(("body".into(), "a body needs `method: post`".into()));
        }
        if self.method == Method::Post
            && !matches!(
                self.pagination,
                Pagination::None | Pagination::NextUrl { .. } | Pagination::LinkHeader
            )
            && !matches!(self.body, None | Some(Value::Object(_)))
        {
            out.push(("body".into(), "must be a json object to carry the page parameter".into()));
        }
        if self.max_pages == 0 {
            out.push(("max_pages".into(), "must be greater than 0".into()));
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be greater than 0".into()));
        }
        if self.rate_limit_per_sec == 0 {
            out.push(("rate_limit_per_sec".into(), "must be greater than 0".into()));
        }
        for name in self.headers.keys() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push((format!("headers.{name}"), "not a valid header name".into()));
            }
        }
        let pointer = |p: &str, key: &str, out: &mut Vec<(String, String)>| {
            if !p.starts_with('/') {
                out.push((format!("pagination.{key}"), "a json pointer starts with `/`".into()));
            }
        };
        match &self.pagination {
            Pagination::NextUrl { next } => pointer(next, "next", &mut out),
            Pagination::Cursor { next_cursor, .. } => pointer(next_cursor, "next_cursor", &mut out),
            Pagination::Offset { limit, total, .. } => {
                if *limit == 0 {
                    out.push(("pagination.limit".into(), "must be greater than 0".into()));
                }
                if let Some(t) = total {
                    pointer(t, "total", &mut out);
                }
            }
            Pagination::Page { total_pages, size, .. } => {
                if *size == Some(0) {
                    out.push(("pagination.size".into(), "must be greater than 0".into()));
                }
                if let Some(t) = total_pages {
                    pointer(t, "total_pages", &mut out);
                }
            }
            Pagination::None | Pagination::LinkHeader => {}
        }
        match &self.auth {
            Some(HttpAuth::Bearer { token }) => token.validate("auth.token", &mut out),
            Some(HttpAuth::Basic { password, .. }) => password.validate("auth.password", &mut out),
            Some(HttpAuth::ApiKey { header, key }) => {
                key.validate("auth.key", &mut out);
                if HeaderName::from_bytes(header.as_bytes()).is_err() {
                    out.push(("auth.header".into(), "not a valid header name".into()));
                }
            }
            Some(HttpAuth::Oauth2ClientCredentials { token_url, client_secret, .. }) => {
                client_secret.validate("auth.client_secret", &mut out);
                match Url::parse(token_url) {
                    Ok(u) if u.scheme() == "https" || crate::diag::is_loopback_http(&u) => {}
                    _ => out.push((
                        "auth.token_url".into(),
                        "must be an https:// url (plain http:// only for loopback)".into(),
                    )),
                }
            }
            None => {}
        }
        out
    }
}

/// Reads one paginated API.
pub struct HttpSource {
    config: Arc<HttpSourceConfig>,
    base_dir: PathBuf,
}

impl HttpSource {
    pub fn new(config: &HttpSourceConfig, base_dir: &Path) -> Self {
        Self { config: Arc::new(config.clone()), base_dir: base_dir.to_path_buf() }
    }
}

impl Source for HttpSource {
    fn check(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let mut reader = Reader::new(Arc::clone(&self.config), &self.base_dir)?;
            let url = reader.first_url()?;
            let page = reader.fetch(&url, &[]).await?;
            let records = reader.records_of(&page.body, &url)?;
            Ok(format!(
                "http source {}: first page readable ({} record(s))",
                redact(&url),
                records.len()
            ))
        })
    }

    fn pull(&self) -> BoxStream<'static, Result<SourceItem, SourceError>> {
        let config = Arc::clone(&self.config);
        let base_dir = self.base_dir.clone();
        let stream = futures::stream::once(async move {
            // One page of read-ahead: the next page is fetched while this one is consumed.
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                let result = match Reader::new(config, &base_dir) {
                    Ok(mut reader) => reader.run(&tx).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    let _ = tx.send(vec![Err(e)]).await;
                }
            });
            futures::StreamExt::flat_map(ReceiverStream::new(rx), futures::stream::iter)
        });
        Box::pin(futures::StreamExt::flatten(stream))
    }
}

type Tx = mpsc::Sender<Vec<Result<SourceItem, SourceError>>>;

/// A page parameter: name and value.
type Param = (String, String);

struct Page {
    body: Value,
    headers: HeaderMap,
}

/// The state of one pull.
struct Reader {
    config: Arc<HttpSourceConfig>,
    client: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    auth: Option<ResolvedAuth>,
    /// The cached OAuth access token and when to stop using it.
    token: Option<(SecretString, Instant)>,
}

enum ResolvedAuth {
    Bearer(SecretString),
    Basic(String, SecretString),
    ApiKey(HeaderName, SecretString),
    OAuth {
        token_url: Url,
        client_id: String,
        secret: SecretString,
        scope: Option<String>,
        client_auth: ClientAuth,
    },
}

fn err(url: &Url, message: impl Into<String>) -> SourceError {
    SourceError::Http { url: redact(url), message: message.into() }
}

/// The URL without its query string or credentials: those may carry secrets.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

impl Reader {
    fn new(config: Arc<HttpSourceConfig>, base_dir: &Path) -> Result<Self, SourceError> {
        let conf_err = |m: String| SourceError::Config(format!("http source {}: {m}", config.url));
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .user_agent(concat!("xaas/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let path = base_dir.join(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| conf_err(format!("cannot read ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| conf_err(format!("ca_file {} is not pem: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client =
            builder.build().map_err(|e| conf_err(format!("cannot build the client: {e}")))?;
        let rate = NonZeroU32::new(config.rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        let auth = match &config.auth {
            None => None,
            Some(a) => Some(resolve_auth(a, base_dir).map_err(conf_err)?),
        };
        Ok(Self {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            config,
            client,
            auth,
            token: None,
        })
    }

    fn first_url(&self) -> Result<Url, SourceError> {
        Url::parse(&self.config.url)
            .map_err(|e| SourceError::Config(format!("http source url: {e}")))
    }

    /// Page through everything, sending each page's records.
    async fn run(&mut self, tx: &Tx) -> Result<(), SourceError> {
        let mut url = self.first_url()?;
        // The first page's parameter, and the size parameter every page carries.
        let (mut param, fixed): (Option<Param>, Option<Param>) = match &self.config.pagination {
            Pagination::Offset { offset_param, limit_param, limit, .. } => (
                Some((offset_param.clone(), "0".into())),
                Some((limit_param.clone(), limit.to_string())),
            ),
            Pagination::Page { param, start, size_param, size, .. } => (
                Some((param.clone(), start.to_string())),
                size_param.clone().zip(size.map(|s| s.to_string())),
            ),
            _ => (None, None),
        };
        let mut index = 0u64;
        let mut received = 0u64;
        let mut seen_next = std::collections::HashSet::new();
        for page_no in 0..self.config.max_pages {
            let params: Vec<(String, String)> = fixed.iter().chain(param.iter()).cloned().collect();
            let target = with_params(&url, &params, self.config.method);
            let page = self.fetch(&target, &params).await?;
            let records = self.records_of(&page.body, &target)?;
            let count = records.len() as u64;
            received += count;
            let items: Vec<_> = records
                .into_iter()
                .map(|v| {
                    let origin = Origin::Index(index);
                    index += 1;
                    Ok(match v {
                        Value::Object(fields) => Ok(Record { origin, fields }),
                        other => Err(Rejection {
                            origin,
                            external_id: None,
                            field: None,
                            reason: format!(
                                "a record must be a json object, found {}",
                                kind(&other)
                            ),
                        }),
                    })
                })
                .collect();
            if !items.is_empty() && tx.send(items).await.is_err() {
                return Ok(()); // the consumer is gone
            }
            // Decide the next page; `None` ends the pull, complete.
            let next: Option<(Url, Option<Param>)> = match &self.config.pagination {
                Pagination::None => None,
                Pagination::NextUrl { next } => match page.body.pointer(next) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some((
                        target.join(s).map_err(|e| err(&target, format!("bad next url: {e}")))?,
                        None,
                    )),
                    Some(other) => {
                        return Err(err(
                            &target,
                            format!("the next url at {next} is {}", kind(other)),
                        ));
                    }
                },
                Pagination::LinkHeader => link_next(&page.headers)
                    .map(|l| {
                        target.join(&l).map_err(|e| err(&target, format!("bad link url: {e}")))
                    })
                    .transpose()?
                    .map(|u| (u, None)),
                Pagination::Cursor { param: name, next_cursor } => {
                    match page.body.pointer(next_cursor) {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) if s.is_empty() => None,
                        Some(Value::String(s)) => {
                            Some((url.clone(), Some((name.clone(), s.clone()))))
                        }
                        Some(Value::Number(n)) => {
                            Some((url.clone(), Some((name.clone(), n.to_string()))))
                        }
                        Some(other) => {
                            return Err(err(
                                &target,
                                format!("the cursor at {next_cursor} is {}", kind(other)),
                            ));
                        }
                    }
                }
                Pagination::Offset { offset_param, limit, total, .. } => {
                    let total =
                        total.as_ref().and_then(|p| page.body.pointer(p)).and_then(Value::as_u64);
                    let done = count < *limit || total.is_some_and(|t| received >= t);
                    (!done)
                        .then(|| (url.clone(), Some((offset_param.clone(), received.to_string()))))
                }
                Pagination::Page { param: name, start, size, total_pages, .. } => {
                    let this = start + page_no;
                    let total = total_pages
                        .as_ref()
                        .and_then(|p| page.body.pointer(p))
                        .and_then(Value::as_u64);
                    let done = count == 0
                        || size.is_some_and(|s| count < s)
                        || total.is_some_and(|t| this >= t);
                    (!done).then(|| (url.clone(), Some((name.clone(), (this + 1).to_string()))))
                }
            };
            match next {
                None => return Ok(()),
                Some((u, p)) => {
                    // A server that hands back the same next page would loop until max_pages.
                    let key = format!("{u}|{p:?}");
                    if !seen_next.insert(key) {
                        return Err(err(
                            &target,
                            "the server returned the same next page twice; stopping",
                        ));
                    }
                    url = u;
                    param = p;
                }
            }
        }
        Err(err(
            &url,
            format!(
                "stopped at max_pages = {} with more pages to read; the pull is incomplete",
                self.config.max_pages
            ),
        ))
    }

    /// The records array of a page.
    fn records_of(&self, body: &Value, url: &Url) -> Result<Vec<Value>, SourceError> {
        match body.pointer(&self.config.records) {
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(other) => Err(err(
                url,
                format!(
                    "expected an array of records at `{}`, found {}",
                    self.config.records,
                    kind(other)
                ),
            )),
            None => Err(err(url, format!("the page has no `{}`", self.config.records))),
        }
    }

    /// One page, through the rate limit, timeout and retry policy.
    async fn fetch(&mut self, url: &Url, params: &[(String, String)]) -> Result<Page, SourceError> {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            self.limiter.until_ready().await;
            let mut req = match self.config.method {
                Method::Get => self.client.get(url.clone()),
                Method::Post => {
                    let mut body =
                        self.config.body.clone().unwrap_or(Value::Object(Default::default()));
                    if let Value::Object(map) = &mut body {
                        for (k, v) in params {
                            // Numbers stay numbers in a JSON body.
                            let value = v
                                .parse::<u64>()
                                .map(Value::from)
                                .unwrap_or_else(|_| Value::String(v.clone()));
                            map.insert(k.clone(), value);
                        }
                    }
                    self.client.post(url.clone()).json(&body)
                }
            };
            req = req.header(reqwest::header::ACCEPT, "application/json");
            for (k, v) in &self.config.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            req = self.authorize(req).await?;
            let retry_after;
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let headers = resp.headers().clone();
                        let bytes = resp
                            .bytes()
                            .await
                            .map_err(|e| err(url, format!("reading the body: {e}")))?;
                        let body: Value = serde_json::from_slice(&bytes)
                            .map_err(|e| err(url, format!("the page is not valid json: {e}")))?;
                        return Ok(Page { body, headers });
                    }
                    if status == reqwest::StatusCode::UNAUTHORIZED
                        && !refreshed
                        && matches!(self.auth, Some(ResolvedAuth::OAuth { .. }))
                    {
                        // The cached token may have been revoked early: fetch a new one, once.
                        refreshed = true;
                        self.token = None;
                        continue;
                    }
                    let retryable = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error();
                    if !retryable || attempt >= self.config.max_retries {
                        return Err(err(
                            url,
                            format!(
                                "http {status}{}",
                                if retryable {
                                    format!(" after {} attempt(s)", attempt + 1)
                                } else {
                                    String::new()
                                }
                            ),
                        ));
                    }
                    retry_after = parse_retry_after(resp.headers());
                    tracing::warn!(url = %redact(url), status = %status, attempt, "retrying");
                }
                Err(e) => {
                    if attempt >= self.config.max_retries {
                        return Err(err(
                            url,
                            format!(
                                "request failed after {} attempt(s): {}",
                                attempt + 1,
                                without_url(&e)
                            ),
                        ));
                    }
                    retry_after = None;
                    tracing::warn!(url = %redact(url), error = %without_url(&e), attempt, "retrying");
                }
            }
            let delay =
                retry_after.unwrap_or_else(|| backoff(self.config.retry_initial_ms, attempt));
            tokio::time::sleep(delay.min(Duration::from_secs(self.config.retry_max_secs))).await;
            attempt += 1;
        }
    }

    async fn authorize(
        &mut self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SourceError> {
        Ok(match &self.auth {
            None => req,
            Some(ResolvedAuth::Bearer(t)) => req.bearer_auth(t.expose_secret()),
            Some(ResolvedAuth::Basic(u, p)) => req.basic_auth(u, Some(p.expose_secret())),
            Some(ResolvedAuth::ApiKey(h, k)) => {
                let mut v = HeaderValue::from_str(k.expose_secret()).map_err(|_| {
                    SourceError::Config("the api key is not a valid header value".into())
                })?;
                v.set_sensitive(true);
                req.header(h.clone(), v)
            }
            Some(ResolvedAuth::OAuth { .. }) => {
                let token = self.oauth_token().await?;
                req.bearer_auth(token.expose_secret())
            }
        })
    }

    /// The cached access token, or a new one.
    async fn oauth_token(&mut self) -> Result<SecretString, SourceError> {
        if let Some((t, until)) = &self.token
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let Some(ResolvedAuth::OAuth { token_url, client_id, secret, scope, client_auth }) =
            &self.auth
        else {
            return Err(SourceError::Config("oauth token requested without oauth settings".into()));
        };
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if let Some(s) = scope {
            form.push(("scope", s.clone()));
        }
        let mut attempt = 0;
        let resp = loop {
            self.limiter.until_ready().await;
            let mut req = self.client.post(token_url.clone());
            let mut f = form.clone();
            match client_auth {
                ClientAuth::Basic => req = req.basic_auth(client_id, Some(secret.expose_secret())),
                ClientAuth::Post => {
                    f.push(("client_id", client_id.clone()));
                    f.push(("client_secret", secret.expose_secret().to_string()));
                }
            }
            req = req.form(&f);
            match req.send().await {
                Ok(r)
                    if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    if attempt >= self.config.max_retries {
                        return Err(err(token_url, format!("token request: http {}", r.status())));
                    }
                    let d = parse_retry_after(r.headers())
                        .unwrap_or_else(|| backoff(self.config.retry_initial_ms, attempt));
                    tokio::time::sleep(d.min(Duration::from_secs(self.config.retry_max_secs)))
                        .await;
                }
                Ok(r) => break r,
                Err(e) => {
                    if attempt >= self.config.max_retries {
                        return Err(err(
                            token_url,
                            format!("token request failed: {}", without_url(&e)),
                        ));
                    }
                    tokio::time::sleep(backoff(self.config.retry_initial_ms, attempt)).await;
                }
            }
            attempt += 1;
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(err(
                token_url,
                format!("the token endpoint refused the client credentials: http {status}"),
            ));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: SecretString,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenResponse = resp.json().await.map_err(|e| {
            err(token_url, format!("the token response is not valid: {}", without_url(&e)))
        })?;
        // Renew a little early so a token never expires mid-request.
        let life = Duration::from_secs(t.expires_in.unwrap_or(300))
            .saturating_sub(Duration::from_secs(30));
        self.token = Some((t.access_token.clone(), Instant::now() + life));
        Ok(t.access_token)
    }
}

fn resolve_auth(auth: &HttpAuth, base_dir: &Path) -> Result<ResolvedAuth, String> {
    Ok(match auth {
        HttpAuth::Bearer { token } => ResolvedAuth::Bearer(token.resolve(base_dir)?),
        HttpAuth::Basic { username, password } => {
            ResolvedAuth::Basic(username.clone(), password.resolve(base_dir)?)
        }
        HttpAuth::ApiKey { header, key } => ResolvedAuth::ApiKey(
            HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("`{header}` is not a valid header name"))?,
            key.resolve(base_dir)?,
        ),
        HttpAuth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            client_auth,
        } => ResolvedAuth::OAuth {
            token_url: Url::parse(token_url).map_err(|e| format!("token_url: {e}"))?,
            client_id: client_id.clone(),
            secret: client_secret.resolve(base_dir)?,
            scope: scope.clone(),
            client_auth: *client_auth,
        },
    })
}

/// `url` with the page parameters set (replacing any of the same name), for a GET; a POST
/// carries them in the body.
fn with_params(url: &Url, params: &[(String, String)], method: Method) -> Url {
    let mut u = url.clone();
    if method == Method::Get && !params.is_empty() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| params.iter().all(|(k, _)| k != name))
            .map(|(a, b)| (a.into_owned(), b.into_owned()))
            .collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for (a, b) in kept.iter().chain(params) {
            q.append_pair(a, b);
        }
    }
    u
}

/// The `rel="next"` target of a `Link` header.
fn link_next(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(s) = value.to_str() else { continue };
        for part in s.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"next\""
                    || p == "rel=next"
                    || (p.starts_with("rel=") && p.split(['"', ' ']).any(|w| w == "next"))
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return Some(target[1..target.len() - 1].to_string());
            }
        }
    }
    None
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Exponential backoff with full jitter: a random delay up to `initial × 2^attempt`.
fn backoff(initial_ms: u64, attempt: u32) -> Duration {
    let cap = initial_ms.saturating_mul(1u64 << attempt.min(16));
    let ms = rand::random_range(cap / 2..=cap.max(1));
    Duration::from_millis(ms)
}

/// A reqwest error without its URL (the query string may hold secrets).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), &redact(u));
    }
    s
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<https://a/x?page=1>; rel=\"prev\", <https://a/x?page=3>; rel=\"next\"",
            ),
        );
        assert_eq!(link_next(&h).as_deref(), Some("https://a/x?page=3"));
        assert_eq!(link_next(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn redact_drops_query_and_credentials() {
        let u = Url::parse("https://user:pw@h/p?api_key=secret").unwrap();
        assert_eq!(redact(&u), "https://h/p");
    }
}
