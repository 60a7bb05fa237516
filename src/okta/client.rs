//! Typed HTTP client for the Identity Sources import API (FACTS §2a).
//!
//! One method per endpoint the importer needs. Every call goes through [`OktaClient::execute`],
//! the one policy stack of every outbound call (STYLE habit 4), applied per attempt:
//!
//! 1. **Credentials**: `Authorization: SSWS …` or `Bearer …` from [`super::auth`] (the only
//!    place a secret is exposed), plus `Accept`, `User-Agent`, and `Content-Length: 0` on
//!    body-less POSTs (Okta answers 411 otherwise, FACTS §1).
//! 2. **Concurrency cap** ([`super::concurrency`]): at most `max_concurrent_requests` (≤ 75)
//!    attempts in flight, shared by all clones of the client; halved on a concurrency 429 and
//!    grown back on answers, since Okta limits concurrent requests per org (FACTS §7).
//! 3. **Rate ceiling and pacing** ([`super::rate_limit`]): governor, plus slowing down on
//!    `X-Rate-Limit-Remaining` before Okta answers 429.
//! 4. **Per-attempt timeout** (`request_timeout`).
//! 5. **Retry**, decided by what the failure says about whether Okta applied the request; see
//!    [`Retry`] and [`OktaClient::classify`]. A server hint (`X-Rate-Limit-Reset`) beats the
//!    computed backoff.
//!
//! Each attempt is counted in `xaas_okta_requests_total` under a fixed endpoint label (see
//! [`crate::telemetry::endpoint`]), and `X-Rate-Limit-Remaining` feeds a gauge.
//!
//! Non-2xx answers become a typed [`OktaError`] carrying Okta's errorCode, errorSummary,
//! errorCauses and errorId, and are logged with those fields.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::{Authenticator, Credentials};
use super::batch::RequestKind;
use super::concurrency::Concurrency;
use super::error::{OktaError, Operation};
use super::model::{ErrorBody, Session};
use super::rate_limit::{RateBudget, RateOptions};
use crate::telemetry::{self as metrics, endpoint};

/// Transport settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// How many times a 429 is retried (after waiting for the rate-limit reset).
    pub max_rate_limit_retries: u32,
    /// The longest single wait for a rate-limit reset.
    pub max_rate_limit_wait: Duration,
    /// Retries after a failure that is safe to repeat: any failure of a read (GET, DELETE),
    /// and a failure that certainly did not reach Okta (connection refused) for writes.
    pub max_retries: u32,
    /// First backoff of those retries; doubled each time, with jitter.
    pub retry_backoff: Duration,
    /// Requests in flight at once, across every clone of the client.
    pub max_concurrent_requests: usize,
    /// The rate ceiling and pacing.
    pub rate: RateOptions,
}

/// Requests in flight at once by default: a full session's 50 bulk loads (FACTS §4) in one
/// round when the rate budget allows it, leaving a third of the org's 75 concurrent requests
/// (FACTS §7) to the other integrations. Below that, the number of loads in flight follows
/// the rate budget and the concurrency 429s ([`OktaClient::loads_in_flight`]).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 50;

/// Okta's default concurrency limit per org (FACTS §7): a higher cap could only earn 429s.
pub const OKTA_MAX_CONCURRENT_REQUESTS: usize = 75;

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_rate_limit_retries: 4,
            max_rate_limit_wait: Duration::from_secs(120),
            max_retries: 3,
            retry_backoff: Duration::from_millis(500),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            rate: RateOptions::default(),
        }
    }
}

/// Backoff for a 429 without usable rate-limit headers: 1 s, 2 s, 4 s…
const RATE_LIMIT_FALLBACK_BACKOFF: Duration = Duration::from_secs(1);
/// Upper bound of the random delay added to 429 waits, so that several clients sharing a
/// bucket do not all come back in the same millisecond.
const RATE_LIMIT_JITTER_MS: u64 = 250;
/// How much of an unexpected body goes into a [`OktaError::Decode`].
const SNIPPET_CHARS: usize = 200;

const REQUEST_ID: &str = "x-okta-request-id";
const RATE_LIMIT_LIMIT: &str = "x-rate-limit-limit";
const RATE_LIMIT_REMAINING: &str = "x-rate-limit-remaining";
const RATE_LIMIT_RESET: &str = "x-rate-limit-reset";
const RETRY_FOR: &str = "x-okta-retry-for";
const RETRY_COUNT: &str = "x-okta-retry-count";

/// A client for one Okta org. Clones share the token cache, the concurrency cap, the rate
/// budget and the cancellation token.
#[derive(Clone)]
pub struct OktaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The org URL as configured; API paths are appended to it.
    org_url: Url,
    /// The org's origin, the only form of the URL that goes into error messages.
    org: String,
    auth: Authenticator,
    options: ClientOptions,
    concurrency: Concurrency,
    budget: RateBudget,
    /// Cancelled on shutdown. The client's own calls ignore it (a cancel-session call during
    /// shutdown must still go out); the session lifecycle selects on it.
    cancel: CancellationToken,
}

impl std::fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaClient")
            .field("org", &self.inner.org)
            .field("auth", &self.inner.auth.kind())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// An answer that passed the status checks.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

/// One call, as [`OktaClient::execute`] sees it.
pub(super) struct Call<'a> {
    pub(super) op: Operation,
    /// The fixed route template, for metrics (never the path: it holds ids).
    pub(super) endpoint: &'static str,
    pub(super) method: Method,
    pub(super) url: Url,
    /// `None` for body-less calls; POSTs then still send `Content-Length: 0`.
    pub(super) json_body: Option<&'a [u8]>,
    /// Safe to repeat after a failure that may have been applied (timeout, reset, 5xx).
    pub(super) idempotent: bool,
}

/// What to do after a failed attempt.
enum Retry {
    /// Send the same request again after this wait.
    After(Duration),
    /// Give up with this error.
    Fail(OktaError),
}

/// The outcome of one attempt, before classification.
enum Attempt {
    Answer(StatusCode, HeaderMap, Vec<u8>),
    /// Failed before the request could reach Okta.
    NotSent(OktaError),
    /// Failed after the request may have reached Okta.
    Lost(OktaError),
}

impl OktaClient {
    /// A client for the org at `org_url` (e.g. `https://acme.okta.com`), authenticating with
    /// an SSWS API token.
    pub fn new(
        org_url: Url,
        token: SecretString,
        options: ClientOptions,
    ) -> Result<Self, OktaError> {
        Self::with_credentials(org_url, Credentials::ApiToken(token), options)
    }

    /// A client for the org at `org_url` with any [`Credentials`] (API token or OAuth).
    pub fn with_credentials(
        org_url: Url,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<Self, OktaError> {
        if !matches!(org_url.scheme(), "https" | "http") || org_url.cannot_be_a_base() {
            return Err(OktaError::Other(format!(
                "the okta org url must be an http(s) url like https://acme.okta.com, not {}",
                org_url.origin().ascii_serialization()
            )));
        }
        // Credentials in the URL are never needed (they go in a header) and would show up in
        // transport error messages, which quote the URL.
        let mut org_url = org_url;
        let _ = org_url.set_username("");
        let _ = org_url.set_password(None);
        let http = reqwest::Client::builder()
            .user_agent(concat!("xaas/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.request_timeout)
            .build()
            .map_err(|e| OktaError::Other(format!("cannot build the http client: {e}")))?;
        let auth =
            Authenticator::new(credentials, &org_url, http.clone(), options.request_timeout)?;
        let concurrency = options.max_concurrent_requests.clamp(1, OKTA_MAX_CONCURRENT_REQUESTS);
        let inner = Inner {
            http,
            org: org_url.origin().ascii_serialization(),
            org_url,
            auth,
            concurrency: Concurrency::new(concurrency as u32),
            budget: RateBudget::new(options.rate, concurrency as u32),
            options,
            cancel: CancellationToken::new(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Use `token` as the shutdown signal (e.g. cancelled on Ctrl-C). Call before cloning.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.cancel = token;
        } else {
            // Already shared: link the new token to the existing one instead.
            let existing = self.inner.cancel.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                existing.cancel();
            });
        }
        self
    }

    /// The shutdown signal: cancelled when the process is asked to stop.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// `GET …/sessions`: the active sessions of the identity source.
    pub async fn list_sessions(&self, source_id: &str) -> Result<Vec<Session>, OktaError> {
        let call = Call {
            op: "list sessions",
            endpoint: endpoint::SESSIONS_LIST,
            method: Method::GET,
            url: self.url(source_id, &["sessions"]),
            json_body: None,
            idempotent: true,
        };
        let answer = self.execute(call).await?;
        decode("list sessions", &answer)
    }

    /// `POST …/sessions`. Okta documents 200 but answers 201 (FACTS §11); both are fine.
    pub async fn create_session(&self, source_id: &str) -> Result<Session, OktaError> {
        // Not idempotent: a create that timed out may have created a session, and a second one
        // would only meet the 5-minute rule. The importer cleans up instead (lists and cancels
        // open sessions before trying again).
        let call = Call {
            op: "create session",
            endpoint: endpoint::SESSIONS_CREATE,
            method: Method::POST,
            url: self.url(source_id, &["sessions"]),
            json_body: None,
            idempotent: false,
        };
        let answer = self.execute(call).await?;
        decode("create session", &answer)
    }

    /// `GET …/sessions/{id}`.
    pub async fn get_session(
        &self,
        source_id: &str,
        session_id: &str,
    ) -> Result<Session, OktaError> {
        let call = Call {
            op: "get session",
            endpoint: endpoint::SESSIONS_GET,
            method: Method::GET,
            url: self.url(source_id, &["sessions", session_id]),
            json_body: None,
            idempotent: true,
        };
        let answer = self.execute(call).await?;
        decode("get session", &answer)
    }

    /// `DELETE …/sessions/{id}`: cancel a `CREATED` or `IN_PROGRESS` session. Okta answers 400
    /// `E0000001` for any other status (FACTS §9).
    pub async fn cancel_session(&self, source_id: &str, session_id: &str) -> Result<(), OktaError> {
        // Idempotent in effect: a repeated cancel of a cancelled session gets a 400 the
        // importer understands (it then reads the status).
        let call = Call {
            op: "cancel session",
            endpoint: endpoint::SESSIONS_CANCEL,
            method: Method::DELETE,
            url: self.url(source_id, &["sessions", session_id]),
            json_body: None,
            idempotent: true,
        };
        self.execute(call).await.map(drop)
    }

    /// `POST …/sessions/{id}/<bulk endpoint>` (users, groups or memberships; see
    /// [`RequestKind::endpoint`]), with a body the packer built.
    ///
    /// Never retried after an ambiguous failure: see [`OktaError::is_ambiguous`] and the
    /// importer, which replays the whole session instead.
    pub async fn bulk_load(
        &self,
        source_id: &str,
        session_id: &str,
        kind: RequestKind,
        body: &[u8],
    ) -> Result<(), OktaError> {
        let (op, endpoint) = (kind.describe(), kind.endpoint());
        let call = Call {
            op,
            endpoint,
            method: Method::POST,
            url: self.url(source_id, &["sessions", session_id, endpoint]),
            json_body: Some(body),
            idempotent: false,
        };
        self.execute(call).await.map(drop)
    }

    /// `POST …/sessions/{id}/start-import`: trigger processing; answers the session, normally
    /// `TRIGGERED`.
    pub async fn start_import(
        &self,
        source_id: &str,
        session_id: &str,
    ) -> Result<Session, OktaError> {
        let call = Call {
            op: "start import",
            endpoint: endpoint::SESSIONS_START_IMPORT,
            method: Method::POST,
            url: self.url(source_id, &["sessions", session_id, "start-import"]),
            json_body: None,
            idempotent: false,
        };
        let answer = self.execute(call).await?;
        decode("start import", &answer)
    }

    /// `{org}/api/v1/identity-sources/{source_id}/{rest…}`, each segment percent-encoded.
    pub(super) fn url(&self, source_id: &str, rest: &[&str]) -> Url {
        let mut url = self.inner.org_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut segments =
                url.path_segments_mut().expect("new() checked that the org url can be a base");
            segments
                .pop_if_empty()
                .extend(["api", "v1", "identity-sources", source_id])
                .extend(rest);
        }
        url
    }

    /// Send one call through the policy stack described in the module doc, and map the final
    /// answer to `Ok` (2xx) or an [`OktaError`].
    pub(super) async fn execute(&self, call: Call<'_>) -> Result<Answer, OktaError> {
        let inner = &*self.inner;
        let mut rate_limit_retries = 0u32;
        let mut retries = 0u32;
        let mut token_renewed = false;
        // Request id of the last 429, echoed in `X-Okta-Retry-For`.
        let mut retry_for: Option<String> = None;
        loop {
            // A token request that fails is final here: the token endpoint has its own retries.
            let (auth, bearer) = inner.auth.header().await?;
            let permit =
                inner.concurrency.acquire().await.map_err(|_| {
                    OktaError::Other("the client's request limiter was closed".into())
                })?;
            let round = permit.round();
            let waited = inner.budget.acquire().await;
            if waited >= Duration::from_millis(100) {
                tracing::debug!(method = %call.method, path = call.url.path(), wait_ms = millis(waited), "paced by the rate budget");
            }
            let started = Instant::now();
            let outcome = self.attempt(&call, auth, retry_for.as_deref(), rate_limit_retries).await;
            drop(permit);
            let elapsed = started.elapsed();
            let elapsed_ms = millis(elapsed);
            let status = match &outcome {
                Attempt::Answer(status, ..) => Some(status.as_u16()),
                Attempt::NotSent(_) | Attempt::Lost(_) => None,
            };
            metrics::okta_request(call.endpoint, status, elapsed);
            let path = call.url.path();

            let retry = match outcome {
                Attempt::Answer(status, headers, body) => {
                    self.observe_rate(call.endpoint, &headers);
                    let request_id =
                        headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    tracing::debug!(
                        method = %call.method,
                        path,
                        status = status.as_u16(),
                        request_id = request_id.as_deref().unwrap_or(""),
                        elapsed_ms,
                        "okta request"
                    );
                    if status.is_success() {
                        inner.concurrency.answered();
                        return Ok(Answer { status, body });
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        // Okta refuses a 429'd request before doing anything: safe to repeat,
                        // even a bulk load into the same session.
                        if rate_limit_retries >= inner.options.max_rate_limit_retries {
                            Retry::Fail(OktaError::RateLimited {
                                op: call.op,
                                retries: rate_limit_retries,
                                reset_at: header_reset_at(&headers),
                                request_id,
                            })
                        } else {
                            let wait = self.rate_limit_wait(&headers, rate_limit_retries);
                            rate_limit_retries += 1;
                            let concurrency = header_u32(&headers, RATE_LIMIT_LIMIT) == Some(0);
                            if concurrency {
                                inner.concurrency.refused(round);
                            }
                            tracing::warn!(
                                method = %call.method,
                                path,
                                request_id = request_id.as_deref().unwrap_or(""),
                                wait_ms = millis(wait),
                                retry = rate_limit_retries,
                                concurrency_limit = concurrency,
                                "okta rate limit reached, waiting for the reset"
                            );
                            retry_for = request_id;
                            Retry::After(wait)
                        }
                    } else if status == StatusCode::UNAUTHORIZED
                        && !token_renewed
                        && inner.auth.rejected(bearer.as_ref()).await
                    {
                        // Okta checks the token before anything else: not applied. The access
                        // token may have been revoked or our clock may be off; one retry with
                        // a fresh token.
                        token_renewed = true;
                        tracing::info!(method = %call.method, path, "okta rejected the access token, getting a new one");
                        Retry::After(Duration::ZERO)
                    } else {
                        let err = self.error_from(call.op, status, &headers, &body, request_id);
                        if err.is_ambiguous()
                            && call.idempotent
                            && retries < inner.options.max_retries
                        {
                            Retry::After(self.backoff(&mut retries))
                        } else {
                            Retry::Fail(err)
                        }
                    }
                }
                Attempt::NotSent(err) => {
                    tracing::debug!(method = %call.method, path, elapsed_ms, error = %err, "okta request not sent");
                    // The request never reached Okta: repeating it cannot duplicate anything.
                    if retries < inner.options.max_retries {
                        Retry::After(self.backoff(&mut retries))
                    } else {
                        Retry::Fail(err)
                    }
                }
                Attempt::Lost(err) => {
                    tracing::debug!(method = %call.method, path, elapsed_ms, error = %err, "okta request failed after sending");
                    // Okta may have applied it. Only reads and cancels are repeated here; a
                    // write goes back to the caller, who knows how to recover without sending
                    // the same data twice into one session.
                    if call.idempotent && retries < inner.options.max_retries {
                        Retry::After(self.backoff(&mut retries))
                    } else {
                        Retry::Fail(err)
                    }
                }
            };
            match retry {
                Retry::Fail(err) => return Err(err),
                Retry::After(wait) => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    /// The rate limit Okta reported last (`X-Rate-Limit-Limit`, `-Remaining`), if any.
    pub fn rate_limit_seen(&self) -> Option<(u32, u32)> {
        self.inner.budget.seen()
    }

    /// How many bulk loads of a session to keep in flight now: the concurrency cap, within
    /// what the rate budget releases at once, what the window has left before pacing, and
    /// what the org's concurrency let through lately (see [`super::rate_limit`]).
    pub fn loads_in_flight(&self) -> usize {
        self.inner.budget.width(self.inner.concurrency.limit()) as usize
    }

    /// The next transient backoff: `retry_backoff × 2^n`, plus up to 25% jitter.
    fn backoff(&self, retries: &mut u32) -> Duration {
        let base = self.inner.options.retry_backoff * 2u32.saturating_pow((*retries).min(16));
        *retries += 1;
        base + base.mul_f64(rand::random_range(0.0..0.25))
    }

    /// Feed the rate budget (and the remaining-requests gauge of `endpoint`) from an answer's
    /// headers.
    fn observe_rate(&self, endpoint: &'static str, headers: &HeaderMap) {
        let reset_in = header_reset_at(headers).map(|reset| {
            let now = header_date(headers).unwrap_or_else(Utc::now);
            // Whole seconds on both sides: one more second keeps us on the late side.
            Duration::from_secs((reset - now).num_seconds().max(0) as u64 + 1)
        });
        let remaining = header_u32(headers, RATE_LIMIT_REMAINING);
        if let Some(remaining) = remaining {
            metrics::okta_rate_limit_remaining(endpoint, remaining);
        }
        self.inner.budget.observe(header_u32(headers, RATE_LIMIT_LIMIT), remaining, reset_in);
    }

    /// One HTTP attempt within the per-attempt timeout: send and read the whole body.
    async fn attempt(
        &self,
        call: &Call<'_>,
        auth: HeaderValue,
        retry_for: Option<&str>,
        retry_count: u32,
    ) -> Attempt {
        let timeout = self.inner.options.request_timeout;
        match tokio::time::timeout(timeout, self.send(call, auth, retry_for, retry_count)).await {
            Ok(Ok((status, headers, body))) => Attempt::Answer(status, headers, body),
            // Refused, DNS, TLS: no byte of the request reached Okta.
            Ok(Err(e)) if e.is_connect() => {
                Attempt::NotSent(OktaError::Connect { op: call.op, message: error_chain(&e) })
            }
            Ok(Err(e)) => Attempt::Lost(transport_error(call.op, &e)),
            Err(_elapsed) => Attempt::Lost(OktaError::Timeout { op: call.op, timeout }),
        }
    }

    async fn send(
        &self,
        call: &Call<'_>,
        auth: HeaderValue,
        retry_for: Option<&str>,
        retry_count: u32,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json");
        request = match call.json_body {
            Some(body) => {
                request.header(header::CONTENT_TYPE, "application/json").body(body.to_vec())
            }
            // Okta answers 411 to a POST without Content-Length (FACTS §1).
            None if call.method == Method::POST => {
                request.header(header::CONTENT_LENGTH, "0").body(Vec::new())
            }
            None => request,
        };
        if retry_count > 0 {
            if let Some(id) = retry_for.and_then(|id| HeaderValue::from_str(id).ok()) {
                request = request.header(RETRY_FOR, id);
            }
            request = request.header(RETRY_COUNT, retry_count.to_string());
        }

        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok((status, headers, body))
    }

    /// How long to wait after a 429 (FACTS §7): `X-Rate-Limit-Reset − Date + 1 s`, plus jitter,
    /// capped by `max_rate_limit_wait`. Without usable headers: 1 s, 2 s, 4 s… (capped too).
    fn rate_limit_wait(&self, headers: &HeaderMap, retries_so_far: u32) -> Duration {
        let base = match header_reset_at(headers) {
            Some(reset) => {
                let now = header_date(headers).unwrap_or_else(Utc::now);
                let secs = (reset - now).num_seconds().max(0) as u64 + 1;
                Duration::from_secs(secs)
            }
            None => RATE_LIMIT_FALLBACK_BACKOFF * 2u32.saturating_pow(retries_so_far.min(16)),
        };
        (base + jitter(RATE_LIMIT_JITTER_MS)).min(self.inner.options.max_rate_limit_wait)
    }

    fn error_from(
        &self,
        op: Operation,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        request_id: Option<String>,
    ) -> OktaError {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let code = parsed.error_code;
        let mut summary = parsed.error_summary;
        if summary.is_empty() {
            // OAuth failures come with an empty body and the reason in `WWW-Authenticate`
            // (FACTS §1); anything else unparsed is shown as a snippet.
            summary = headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| snippet(body));
        }
        let causes: Vec<String> = parsed
            .error_causes
            .into_iter()
            .map(|c| c.error_summary)
            .filter(|s| !s.is_empty())
            .collect();
        let error_id = Some(parsed.error_id).filter(|id| !id.is_empty());
        // Every Okta error is logged with its own fields, so it can be found by errorId or
        // request id in Okta's system log and by support.
        tracing::warn!(
            op,
            status = status.as_u16(),
            error_code = %code,
            error_summary = %summary,
            error_causes = ?causes,
            error_id = error_id.as_deref().unwrap_or(""),
            request_id = request_id.as_deref().unwrap_or(""),
            "okta answered an error"
        );
        match status {
            StatusCode::UNAUTHORIZED => OktaError::Unauthorized {
                op,
                org: self.inner.org.clone(),
                code,
                summary,
                error_id,
                request_id,
            },
            StatusCode::FORBIDDEN => {
                OktaError::Forbidden { op, code, summary, causes, error_id, request_id }
            }
            StatusCode::NOT_FOUND => {
                OktaError::NotFound { op, code, summary, causes, error_id, request_id }
            }
            _ => OktaError::Api {
                op,
                status: status.as_u16(),
                code,
                summary,
                causes,
                error_id,
                request_id,
            },
        }
    }
}

/// Parse a 2xx JSON body.
pub(super) fn decode<T: DeserializeOwned>(op: Operation, answer: &Answer) -> Result<T, OktaError> {
    serde_json::from_slice(&answer.body).map_err(|e| OktaError::Decode {
        op,
        status: answer.status.as_u16(),
        message: e.to_string(),
        snippet: snippet(&answer.body),
    })
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(SNIPPET_CHARS).collect()
}

/// A reqwest error after sending, as an [`OktaError::Transport`].
fn transport_error(op: Operation, err: &reqwest::Error) -> OktaError {
    if err.is_timeout() {
        return OktaError::Transport { op, message: "timed out".into() };
    }
    OktaError::Transport { op, message: error_chain(err) }
}

/// A reqwest error as text: the error and its causes ("connection refused" sits deep in the
/// chain). reqwest only knows the URL, which holds no secret; the token is in a header.
fn error_chain(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn header_reset_at(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let secs: i64 = headers.get(RATE_LIMIT_RESET)?.to_str().ok()?.trim().parse().ok()?;
    DateTime::from_timestamp(secs, 0)
}

fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_date(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text).ok().map(|d| d.with_timezone(&Utc))
}

fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(rand::random_range(0..=max_ms))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(max_wait: Duration) -> OktaClient {
        OktaClient::new(
            Url::parse("https://acme.okta.com").expect("url"),
            SecretString::from("t"),
            ClientOptions { max_rate_limit_wait: max_wait, ..ClientOptions::default() },
        )
        .expect("client")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("ascii"));
        }
        map
    }

    #[test]
    fn rate_limit_wait_follows_reset_minus_date_plus_one_second() {
        // Date is 2021-01-01T00:00:00Z = 1609459200; the reset comes 30 s later.
        let h =
            headers(&[("date", "Fri, 01 Jan 2021 00:00:00 GMT"), (RATE_LIMIT_RESET, "1609459230")]);
        let wait = client(Duration::from_secs(120)).rate_limit_wait(&h, 0);
        assert!(wait >= Duration::from_secs(31), "{wait:?}");
        assert!(wait <= Duration::from_secs(31) + Duration::from_millis(RATE_LIMIT_JITTER_MS));
        // The cap wins over the server's hint.
        let capped = client(Duration::from_secs(10)).rate_limit_wait(&h, 0);
        assert_eq!(capped, Duration::from_secs(10));
    }

    #[test]
    fn rate_limit_wait_without_headers_backs_off_exponentially() {
        let c = client(Duration::from_secs(120));
        let none = HeaderMap::new();
        for (retries, secs) in [(0, 1), (1, 2), (2, 4), (3, 8)] {
            let wait = c.rate_limit_wait(&none, retries);
            assert!(wait >= Duration::from_secs(secs), "{retries}: {wait:?}");
            assert!(wait < Duration::from_secs(secs) + Duration::from_millis(300));
        }
        assert_eq!(
            client(Duration::from_secs(5)).rate_limit_wait(&none, 10),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn urls_are_built_under_the_org_and_percent_encoded() {
        let c = OktaClient::new(
            Url::parse("https://user:pw@acme.okta.com/").expect("url"),
            SecretString::from("t"),
            ClientOptions::default(),
        )
        .expect("client");
        assert_eq!(
            c.url("0oa1", &["sessions", "aps/1"]).as_str(),
            "https://acme.okta.com/api/v1/identity-sources/0oa1/sessions/aps%2F1"
        );
    }
}
