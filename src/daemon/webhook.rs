//! The webhook: HR systems push records instead of waiting for the next scheduled pull.
//!
//! Routes ([`router`]):
//!
//! - `POST /v1/jobs/{job}/records`: one JSON object, or an array of objects, in the job's
//!   *source* shape (what its CSV row or HTTP item would hold). Answered `202` with an event id
//!   once the event is stored durably; the import happens later, batched by the queue.
//! - `POST /v1/jobs/{job}/trigger`: a pull of the job now (`202`, with the queue position).
//! - `GET /v1/events/{id}`: where an event stands.
//!
//! Every request passes the same gates, cheapest first, so a flood or a stranger costs as
//! little as possible: the per-client rate limit (by IP address), the body size limit,
//! authentication ([`super::auth`]), then strict parsing. Records are mapped with the job's
//! mapping *before* anything is stored: a request with one bad record is refused whole (422,
//! listing each bad record), so the sender fixes it and resends, and nothing half-applied
//! waits in the queue. An `Idempotency-Key` header makes retries safe.
//!
//! Errors are JSON (`{"error": "...", "details": [...]}`) and never contain a secret or a
//! record's values: a mapping rejection's reason has every value taken from the record
//! replaced by `<value>`.
//!
//! Replays: a signed push or trigger is applied once. Its fingerprints ([`auth::Verified`])
//! are stored with the event, in the same transaction, until its timestamp leaves the replay
//! window (`crate::state::events::SeenSignature`), so the same signed request sent again (by
//! an attacker, by a sender's retry, or by two senders pushing the same record in the same
//! second) gets 200 with the first event's id and `"duplicate": true`, after a restart and on
//! any replica. A `v1=` signature does not cover the path: its message seen on another route
//! gets 409 and is not applied. A sender who means to apply the same content twice within the
//! window sends a distinct `Idempotency-Key` (or timestamp). Reads (`GET /v1/events/{id}`) have
//! no effect to repeat and are not remembered, so a client may poll.
//!
//! # Reloading
//!
//! [`WebhookContext::settings`] is a `watch` channel: on SIGHUP the daemon sends the new
//! `serve.webhook` settings and the next request uses them (secrets, limits; the rate limiter
//! is rebuilt when its limits change). Jobs and mappings come from [`Dispatch::job`], which
//! reloads on its own.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use futures::StreamExt;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::Dispatch;
use super::auth::{self, AuthError, Signed};
use crate::mapping::{Mapped, Origin, Record};
use crate::settings::webhook::{WebhookAuth, WebhookSettings};
use crate::state::events::{Claim, EventStore, NewEvent, SeenSignature};
use crate::telemetry;

/// The longest `Idempotency-Key` accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// Requests mapped on the async worker; bigger ones are mapped on a blocking thread so a
/// 10,000-record push does not stall other requests.
const INLINE_MAPPING_RECORDS: usize = 64;

/// Idle client buckets are dropped every this many rate-limit checks (bounds memory).
const RETAIN_EVERY_CHECKS: u64 = 4096;

/// What the webhook needs from the daemon.
#[derive(Clone)]
pub struct WebhookContext {
    pub dispatch: Arc<dyn Dispatch>,
    pub events: EventStore,
    /// The current `serve.webhook` settings; send new ones on SIGHUP (see the module doc).
    pub settings: watch::Receiver<Arc<WebhookSettings>>,
}

impl WebhookContext {
    /// A context whose settings never change (tests, benchmarks).
    pub fn fixed(
        dispatch: Arc<dyn Dispatch>,
        events: EventStore,
        settings: WebhookSettings,
    ) -> Self {
        // The receiver keeps the last value after the sender is dropped.
        let (_, settings) = watch::channel(Arc::new(settings));
        Self { dispatch, events, settings }
    }
}

/// The webhook's routes. Serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the rate limit is per client IP.
pub fn router(ctx: WebhookContext) -> Router {
    let app = Arc::new(App { ctx, limiter: Mutex::new(None), checks: AtomicU64::new(0) });
    Router::new()
        .route("/v1/jobs/{job}/records", post(push_records))
        .route("/v1/jobs/{job}/trigger", post(trigger))
        .route("/v1/events/{id}", get(event))
        .with_state(app)
}

struct App {
    ctx: WebhookContext,
    /// Built from the settings on first use, rebuilt when the limits change.
    limiter: Mutex<Option<ClientLimiter>>,
    checks: AtomicU64,
}

struct ClientLimiter {
    limits: (NonZeroU32, NonZeroU32),
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

/// A refused request: its status and JSON body.
pub struct Refusal {
    status: StatusCode,
    error: String,
    details: Vec<Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self { status, error: error.into(), details: Vec::new(), headers: Vec::new() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "details": self.details });
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

type Outcome = Result<Response, Refusal>;

fn finish(outcome: Outcome) -> Response {
    outcome.unwrap_or_else(IntoResponse::into_response)
}

impl App {
    fn settings(&self) -> Arc<WebhookSettings> {
        self.ctx.settings.borrow().clone()
    }

    /// The per-client rate limit: 429 with `Retry-After` (whole seconds, at least 1).
    fn rate_limit(&self, ip: IpAddr, settings: &WebhookSettings) -> Result<(), Refusal> {
        let limits = (settings.rate_limit_per_second, settings.rate_limit_burst);
        let limiter = {
            let mut slot = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(l) if l.limits == limits => l.limiter.clone(),
                _ => {
                    let quota = Quota::per_second(limits.0).allow_burst(limits.1);
                    let limiter = Arc::new(RateLimiter::keyed(quota));
                    *slot = Some(ClientLimiter { limits, limiter: limiter.clone() });
                    limiter
                }
            }
        };
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(RETAIN_EVERY_CHECKS) {
            limiter.retain_recent();
        }
        match limiter.check_key(&ip) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let secs = secs.max(1);
                // Debug only: a flood would otherwise write a log line per refused request.
                tracing::debug!(client = %ip, retry_after_secs = secs, "webhook rate limit hit");
                let mut r = Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many requests from this client (limit {} per second, burst {}); retry after {secs} s",
                        limits.0, limits.1
                    ),
                );
                r.headers.push((header::RETRY_AFTER, HeaderValue::from(secs)));
                Err(r)
            }
        }
    }

    /// Check the caller; for a signed request that has an effect, returns the fingerprints to
    /// remember with it (reads, `route.read`, have no effect to repeat: nothing is remembered).
    fn authenticate(
        &self,
        settings: &WebhookSettings,
        headers: &HeaderMap,
        body: &[u8],
        client: IpAddr,
        route: &Route<'_>,
    ) -> Result<Option<SeenSignature>, Refusal> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let result = match &settings.auth {
            WebhookAuth::Bearer { token } => {
                auth::verify_bearer(token, text(header::AUTHORIZATION.as_str())).map(|()| None)
            }
            WebhookAuth::Hmac { secrets, replay_window, require_v2 } => {
                let window = replay_window.as_secs();
                let signed = Signed {
                    timestamp: text(auth::TIMESTAMP_HEADER),
                    signature: text(auth::SIGNATURE_HEADER),
                    method: route.method,
                    path: route.path,
                    body,
                };
                let now = Utc::now().timestamp();
                auth::verify_hmac(secrets, window, *require_v2, signed, now)
                    .map(|v| (!route.read).then(|| route.fingerprints(&v, body, window)))
            }
        };
        result.map_err(|e| {
            tracing::warn!(client = %client, reason = %e, "webhook request not authenticated");
            let mut r = Refusal::new(StatusCode::UNAUTHORIZED, e.to_string());
            if matches!(e, AuthError::MissingToken | AuthError::BadToken) {
                r.headers.push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            r
        })
    }

    /// Rate limit, body limit and authentication, in that order (`route`: see
    /// [`Self::authenticate`]).
    async fn gate(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
        body: Body,
        route: &Route<'_>,
    ) -> Result<(Arc<WebhookSettings>, Bytes, Option<SeenSignature>), Refusal> {
        let settings = self.settings();
        self.rate_limit(client, &settings)?;
        let body = read_body(body, headers, settings.max_body_bytes).await?;
        let sig = self.authenticate(&settings, headers, &body, client, route)?;
        Ok((settings, body, sig))
    }
}

/// A request: its method and the path the daemon received (what a v2 signature covers).
struct Route<'a> {
    method: &'a str,
    path: &'a str,
    /// The route with its job decoded (`/v1/jobs/hr/records` for `/v1/jobs/h%72/records`):
    /// what a message is remembered under, so another spelling of the path is the same route.
    canonical: String,
    /// A trigger's body means nothing: `{}` signed in one second is the same message for every
    /// job, so its message is told apart by route (as an empty body's is).
    bodiless: bool,
    /// A read: no effect to repeat, so it is not remembered and a client may poll.
    read: bool,
}

impl Route<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.canonical)
    }

    /// What the state remembers of the verified request `v` (see
    /// [`crate::state::events::SeenSignature`]).
    fn fingerprints(&self, v: &auth::Verified, body: &[u8], window_secs: u64) -> SeenSignature {
        let route = self.name();
        let message =
            if body.is_empty() || self.bodiless { v.message.scoped(&route) } else { v.message };
        // The timestamp check accepts it until `timestamp + window`.
        let window = i64::try_from(window_secs).unwrap_or(i64::MAX);
        SeenSignature {
            message: message.hex(),
            routed: v.routed.map(|k| k.hex()),
            route,
            expires_at: v.timestamp.saturating_add(window).saturating_add(1),
        }
    }
}

/// 409: the signed message was accepted on another route (a v1 signature does not cover it).
fn seen_elsewhere(route: &str) -> Refusal {
    tracing::warn!(first_route = route, "signed webhook message repeated on another route");
    Refusal::new(
        StatusCode::CONFLICT,
        format!(
            "this signed message was already accepted on `{route}` and is not applied again; a v1 signature does not cover the path: sign with v2 to send the same body to several routes"
        ),
    )
}

/// The body, refused with 413 past `max` bytes (early when `Content-Length` says so).
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the limit of {max} bytes (serve.webhook.max_body_bytes)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Refusal::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The client's `Idempotency-Key`, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ascii characters"
            ),
        )
    };
    let key = value.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// The JSON kind of `v`, for error messages (never its value).
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

/// The records of a push body: one object or a non-empty array of objects.
/// Parse a push body: one JSON object or an array of them, at most `max_records`. Public for
/// fuzzing.
pub fn parse_records(body: &[u8], max_records: usize) -> Result<Vec<Map<String, Value>>, Refusal> {
    let bad = |msg: String| Refusal::new(StatusCode::BAD_REQUEST, msg);
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!("invalid json at line {} column {}: {}", e.line(), e.column(), json_reason(&e)))
    })?;
    match value {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) if items.is_empty() => {
            Err(bad("the array is empty: send at least one record".into()))
        }
        Value::Array(items) if items.len() > max_records => Err(bad(format!(
            "too many records: {}, at most {max_records} per request (serve.webhook.max_records_per_request)",
            items.len()
        ))),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => Ok(m),
                other => Err(bad(format!(
                    "expected an object or an array of objects, found {} at record #{i}",
                    kind(&other)
                ))),
            })
            .collect(),
        other => {
            Err(bad(format!("expected an object or an array of objects, found {}", kind(&other))))
        }
    }
}

/// serde_json's message without its trailing " at line L column C" (we print those apart).
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `reason` with every backquoted span that quotes a value of `fields` replaced by
/// `<value>`: a rejection must not echo personal data back (or into a log).
fn redact(reason: &str, fields: &Map<String, Value>) -> String {
    let values: Vec<String> = fields
        .values()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.to_lowercase()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|s| !s.trim().is_empty())
        .collect();
    let mut out = String::with_capacity(reason.len());
    let mut parts = reason.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for (i, part) in rest.iter().enumerate() {
        // Odd pieces are inside backquotes, unless the last quote is unmatched.
        let inside = i % 2 == 0 && i + 1 < rest.len();
        let lowered = part.to_lowercase();
        let quotes_a_value = !lowered.trim().is_empty()
            && values.iter().any(|v| v.contains(lowered.trim()) || lowered.contains(v.as_str()));
        out.push('`');
        out.push_str(if inside && quotes_a_value { "<value>" } else { part });
    }
    out
}

struct Checked {
    urgent: bool,
    /// The externalIds the records map to (so a termination can jump the queue without
    /// overtaking an earlier push for the same user).
    external_ids: Vec<String>,
    records: Vec<Map<String, Value>>,
}

/// Map every record; every rejection (index, field, redacted reason) when any is refused.
fn map_all(
    mapping: &crate::mapping::Mapping,
    records: Vec<Map<String, Value>>,
) -> Result<Checked, Vec<Value>> {
    let now = Utc::now();
    let mut urgent = false;
    let mut external_ids = Vec::new();
    let mut rejected = Vec::new();
    let mut kept = Vec::with_capacity(records.len());
    for (i, fields) in records.into_iter().enumerate() {
        let record = Record { origin: Origin::Index(i as u64), fields };
        match mapping.apply_at(&record, now) {
            Ok(Mapped::User(u)) => {
                urgent |= !u.active;
                external_ids.push(u.external_id);
            }
            // A joiner before their pre-hire window: stored, imported once the window opens.
            Ok(Mapped::NotYet(n)) => external_ids.push(n.external_id),
            Err(r) => rejected.push(json!({
                "index": i,
                "field": r.field,
                "reason": redact(&r.reason, &record.fields),
            })),
        }
        kept.push(record.fields);
    }
    if rejected.is_empty() {
        Ok(Checked { urgent, records: kept, external_ids })
    } else {
        Err(rejected)
    }
}

async fn push_records(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(job): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let client = client.ip();
    let route = Route {
        method: "POST",
        path: uri.path(),
        canonical: format!("/v1/jobs/{job}/records"),
        bodiless: false,
        read: false,
    };
    let response = match app.gate(client, &headers, body, &route).await {
        Err(r) => r.into_response(),
        // A failure stores nothing, the signature included: the sender may retry as it is.
        Ok((settings, body, sig)) => {
            finish(accept_records(&app, &settings, &job, &headers, &body, sig).await)
        }
    };
    // Labels stay bounded: a configured job name, never the raw path segment.
    let known = app.ctx.dispatch.job(&job).is_some();
    let label = if known { job.as_str() } else { telemetry::UNKNOWN_JOB };
    telemetry::webhook_event(label, webhook_outcome(response.status()));
    telemetry::webhook_ack(started.elapsed());
    response
}

/// What became of a push, from the status it was answered with.
fn webhook_outcome(status: StatusCode) -> telemetry::WebhookOutcome {
    use telemetry::WebhookOutcome as W;
    match status {
        StatusCode::ACCEPTED => W::Accepted,
        // 200 answers a repeat of a stored event (idempotency key) with the first one's id.
        StatusCode::OK => W::Duplicate,
        // 409: a signed message repeated on another route (a replay, not applied).
        StatusCode::UNAUTHORIZED | StatusCode::CONFLICT => W::RejectedAuth,
        StatusCode::TOO_MANY_REQUESTS => W::RateLimited,
        StatusCode::UNPROCESSABLE_ENTITY => W::RejectedMapping,
        s if s.is_server_error() => W::Failed,
        _ => W::RejectedBody,
    }
}

async fn accept_records(
    app: &App,
    settings: &WebhookSettings,
    job_name: &str,
    headers: &HeaderMap,
    body: &[u8],
    signature: Option<SeenSignature>,
) -> Outcome {
    let idempotency_key = idempotency_key(headers)?;
    let records = parse_records(body, settings.max_records_per_request)?;
    let Some(job) = app.ctx.dispatch.job(job_name) else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, no_such_job(app, job_name)));
    };
    let count = records.len();
    let mapping = job.mapping.clone();
    let mapped = if count <= INLINE_MAPPING_RECORDS {
        map_all(&mapping, records)
    } else {
        tokio::task::spawn_blocking(move || map_all(&mapping, records)).await.map_err(|e| {
            tracing::error!(job = job_name, error = %e, "webhook mapping task failed");
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "the records could not be mapped")
        })?
    };
    let mapped = match mapped {
        Ok(m) => m,
        Err(details) => {
            tracing::info!(
                job = job_name,
                records = count,
                rejected = details.len(),
                "webhook push refused by the mapping"
            );
            let mut r = Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} of {count} record(s) rejected by the mapping of job `{job_name}`; nothing was stored",
                    details.len()
                ),
            );
            r.details = details;
            return Err(r);
        }
    };
    let records_json = serde_json::to_string(&mapped.records).map_err(|e| {
        tracing::error!(job = job_name, error = %e, "cannot serialize webhook records");
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "the records could not be stored")
    })?;
    let stored = app
        .ctx
        .events
        .append(NewEvent {
            job: job_name.to_string(),
            idempotency_key,
            records: records_json,
            record_count: u32::try_from(count).unwrap_or(u32::MAX),
            urgent: mapped.urgent,
            external_ids: mapped.external_ids.clone(),
            signature,
        })
        .await
        .map_err(|e| {
            tracing::error!(job = job_name, error = %e, "cannot store a webhook event");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be stored; retry later",
            )
        })?;
    let location = HeaderValue::from_str(&format!("/v1/events/{}", stored.id))
        .unwrap_or_else(|_| HeaderValue::from_static("/v1/events"));
    if let Some(route) = &stored.other_route {
        return Err(seen_elsewhere(route));
    }
    if stored.duplicate {
        tracing::info!(job = job_name, event = %stored.id, "webhook repeat de-duplicated");
        let status = app
            .ctx
            .events
            .get(&stored.id)
            .ok()
            .flatten()
            .map_or(Value::from("queued"), |v| json!(v.status));
        let body = json!({
            "event_id": stored.id,
            "status": status,
            "records": count,
            "urgent": mapped.urgent,
            "duplicate": true,
        });
        return Ok(
            (StatusCode::OK, [(header::LOCATION, location)], axum::Json(body)).into_response()
        );
    }
    app.ctx.dispatch.events_stored(job_name, mapped.urgent);
    tracing::info!(
        job = job_name,
        event = %stored.id,
        records = count,
        urgent = mapped.urgent,
        "webhook event stored"
    );
    let body = json!({
        "event_id": stored.id,
        "status": "queued",
        "records": count,
        "urgent": mapped.urgent,
    });
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)).into_response())
}

async fn trigger(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(job): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let route = Route {
        method: "POST",
        path: uri.path(),
        canonical: format!("/v1/jobs/{job}/trigger"),
        bodiless: true,
        read: false,
    };
    let sig = match app.gate(client.ip(), &headers, body, &route).await {
        Err(r) => return r.into_response(),
        Ok((_, _, sig)) => sig,
    };
    if app.ctx.dispatch.job(&job).is_none() {
        return Refusal::new(StatusCode::NOT_FOUND, no_such_job(&app, &job)).into_response();
    }
    if let Some(sig) = sig {
        match app.ctx.events.claim_signature(sig).await {
            Ok(Claim::New) => {}
            Ok(Claim::Duplicate { .. }) => {
                tracing::info!(job = %job, "webhook trigger repeat de-duplicated");
                let body = json!({"status": "duplicate", "duplicate": true});
                return (StatusCode::OK, axum::Json(body)).into_response();
            }
            Ok(Claim::OtherRoute { route }) => return seen_elsewhere(&route).into_response(),
            Err(e) => {
                tracing::error!(job = %job, error = %e, "cannot record a webhook trigger");
                return Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the trigger could not be recorded; retry later",
                )
                .into_response();
            }
        }
    }
    let ack = app.ctx.dispatch.trigger(&job);
    tracing::info!(job = %job, status = ack.status, position = ack.position, "webhook trigger");
    (StatusCode::ACCEPTED, axum::Json(ack)).into_response()
}

async fn event(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A read has no effect to repeat: no replay check, so a client may poll freely.
    let route = Route {
        method: "GET",
        path: uri.path(),
        canonical: format!("/v1/events/{id}"),
        bodiless: true,
        read: true,
    };
    if let Err(r) = app.gate(client.ip(), &headers, body, &route).await {
        return r.into_response();
    }
    match app.ctx.events.get(&id) {
        Ok(Some(view)) => (StatusCode::OK, axum::Json(view)).into_response(),
        Ok(None) => Refusal::new(StatusCode::NOT_FOUND, format!("no event `{id}`")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a webhook event");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be read; retry later",
            )
            .into_response()
        }
    }
}

/// "no job named `x`", with the configured jobs and a suggestion.
fn no_such_job(app: &App, job: &str) -> String {
    let names = app.ctx.dispatch.job_names();
    if names.is_empty() {
        return format!("no job named `{job}`");
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = crate::diag::suggest(job, &refs)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    format!("no job named `{job}`{hint}; jobs: {}", refs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_problem_and_position() {
        let e = parse_records(b"[{\"a\": 1},\n {\"b\": }]", 10).err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.error, "invalid json at line 2 column 8: expected value");
        let e = parse_records(br#"[{}, {}, {}, "x"]"#, 10).err().unwrap();
        assert_eq!(
            e.error,
            "expected an object or an array of objects, found a string at record #3"
        );
        let e = parse_records(b"[]", 10).err().unwrap();
        assert_eq!(e.error, "the array is empty: send at least one record");
        let e = parse_records(b"[{}, {}]", 1).err().unwrap();
        assert!(e.error.starts_with("too many records: 2, at most 1"), "{}", e.error);
        assert_eq!(parse_records(b"{\"a\": 1}", 1).ok().unwrap().len(), 1);
    }

    #[test]
    fn redaction_hides_record_values_but_keeps_names() {
        let fields: Map<String, Value> =
            serde_json::from_str(r#"{"dob": "31/02/1999", "phone": "12"}"#).unwrap();
        assert_eq!(
            redact("`31/02/1999` is not a date this filter can read", &fields),
            "`<value>` is not a date this filter can read"
        );
        assert_eq!(
            redact("`status.active_if` gave no value", &fields),
            "`status.active_if` gave no value"
        );
        assert_eq!(redact("odd ` quote", &fields), "odd ` quote");
    }
}
