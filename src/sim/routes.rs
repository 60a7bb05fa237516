//! The HTTP surface: Okta's Identity Sources endpoints (FACTS §2a) and the `/__sim`
//! introspection endpoints.
//!
//! Every `/api` request goes through [`api_middleware`] first, in the order a real Okta
//! front door plausibly applies its checks: concurrency cap → rate-limit window → added
//! latency → `Content-Length` (411) → token (401). It stamps every `/api` response with
//! `X-Okta-Request-Id`, the three `X-Rate-Limit-*` headers and `Date`. Handlers then do the
//! identity-source/session lookups and the session rules in [`super::state`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;

use super::clock::okta_time;
use super::errors::{ApiError, random_id};
use super::faults::{Fault, endpoint_of};
use super::state::{Ctx, Sim, epoch_now, reset_epoch};
use super::validate::{LoadKind, parse_load};
use crate::okta::model::SessionStatus;

const P: &str = "/api/v1/identity-sources/{source}";

/// The emulator's router. Needs a tokio runtime (see [`Sim::new`]).
pub fn router(sim: Sim) -> Router {
    let load = |kind: LoadKind| {
        post(
            move |s: State<Sim>,
                  p: Path<(String, String)>,
                  m: Method,
                  u: Uri,
                  h: HeaderMap,
                  b: Body| { bulk_load(kind, s, p, m, u, h, b) },
        )
    };
    let api = Router::new()
        .route(&format!("{P}/sessions"), get(list_sessions).post(create_session))
        .route(&format!("{P}/sessions/{{session}}"), get(get_session).delete(cancel_session))
        .route(&format!("{P}/sessions/{{session}}/bulk-upsert"), load(LoadKind::UpsertUsers))
        .route(&format!("{P}/sessions/{{session}}/bulk-delete"), load(LoadKind::DeleteUsers))
        .route(
            &format!("{P}/sessions/{{session}}/bulk-groups-upsert"),
            load(LoadKind::UpsertGroups),
        )
        .route(
            &format!("{P}/sessions/{{session}}/bulk-groups-delete"),
            load(LoadKind::DeleteGroups),
        )
        .route(
            &format!("{P}/sessions/{{session}}/bulk-group-memberships-upsert"),
            load(LoadKind::UpsertMemberships),
        )
        .route(
            &format!("{P}/sessions/{{session}}/bulk-group-memberships-delete"),
            load(LoadKind::DeleteMemberships),
        )
        .route(&format!("{P}/sessions/{{session}}/start-import"), post(start_import))
        .route(&format!("{P}/users"), post(super::direct::create))
        .route(
            &format!("{P}/users/{{user}}"),
            get(super::direct::get_user)
                .put(super::direct::replace)
                .patch(super::direct::update)
                .delete(super::direct::delete),
        )
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed)
        .layer(from_fn_with_state(sim.clone(), api_middleware))
        .route("/oauth2/v1/token", post(super::oauth::token))
        // Outermost, so an injected fault can happen before or after the real processing.
        .layer(from_fn_with_state(sim.clone(), fault_middleware));
    let introspection = Router::new()
        .route("/__sim/state", get(sim_state))
        .route("/__sim/clock/advance", post(sim_advance))
        .route("/__sim/users", post(sim_seed_user))
        .route("/__sim/groups", post(sim_seed_group))
        .route("/__sim/sessions", post(sim_inject_session))
        .route("/__sim/fail-next", post(sim_fail_next))
        .route("/__sim/reset", post(sim_reset))
        .route("/__sim/faults", get(sim_get_faults).post(sim_set_faults).delete(sim_clear_faults));
    api.merge(introspection).with_state(sim)
}

// ----- the /api middleware -------------------------------------------------------------------

/// Decrements the in-flight count however the request ends (including client disconnects).
struct InFlight<'a>(&'a Sim);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a request held by an injected fault until it ends, however it ends; it moves into
/// the task that processes the request, so that work is counted even after the client left.
struct Faulted(Sim);

impl Faulted {
    fn new(sim: &Sim) -> Self {
        sim.shared.faulted_in_flight.fetch_add(1, Ordering::SeqCst);
        Self(sim.clone())
    }
}

impl Drop for Faulted {
    fn drop(&mut self) {
        self.0.shared.faulted_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `(limit, remaining, reset epoch)` for the rate-limit headers.
type RateHeaders = (u32, u32, u64);

impl Sim {
    /// Count one request in the current fixed 60-second window.
    fn take_rate_token(&self) -> Result<RateHeaders, RateHeaders> {
        let limit = self.shared.config.rate_limit_per_minute;
        let window = self.shared.config.rate_limit_window;
        let mut w = self.shared.rate.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.elapsed() >= window {
            w.started = Instant::now();
            w.reset_epoch = reset_epoch(window);
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        if w.count > limit {
            Err((limit, 0, w.reset_epoch))
        } else {
            Ok((limit, limit - w.count, w.reset_epoch))
        }
    }

    /// Turn a rejection into a response, recording its violations.
    pub(crate) fn fail(&self, ctx: &Ctx, err: ApiError) -> Response {
        self.record(ctx, &err.violations);
        err.into_response()
    }
}

pub(super) fn ctx(method: &Method, uri: &Uri, session_id: Option<&str>) -> Ctx {
    Ctx {
        method: method.to_string(),
        path: uri.path().to_string(),
        session_id: session_id.map(str::to_string),
    }
}

async fn api_middleware(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    sim.count_request();
    let context = ctx(req.method(), req.uri(), None);
    let before = sim.shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(&sim);
    let (mut response, (limit, remaining, reset)) = if before >= sim.shared.config.concurrency_limit
    {
        // Concurrency 429s report Limit 0 and an estimated reset (FACTS §7).
        sim.count_rate_limited();
        (ApiError::rate_limited().into_response(), (0, 0, epoch_now() + 1))
    } else {
        match sim.take_rate_token() {
            Err(headers) => {
                sim.count_rate_limited();
                (ApiError::rate_limited().into_response(), headers)
            }
            Ok(headers) => {
                let latency = sim.shared.config.latency;
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let response = match precheck(&sim, &context, &req) {
                    None => next.run(req).await,
                    Some(rejected) => rejected,
                };
                (response, headers)
            }
        }
    };
    let h = response.headers_mut();
    h.insert("x-okta-request-id", header_value(random_id("", 27)));
    h.insert("x-rate-limit-limit", header_value(limit.to_string()));
    h.insert("x-rate-limit-remaining", header_value(remaining.to_string()));
    h.insert("x-rate-limit-reset", header_value(reset.to_string()));
    h.insert(
        header::DATE,
        header_value(chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
    );
    response
}

fn header_value(s: String) -> HeaderValue {
    // Only ever called with ASCII digits/letters/commas, which are always valid header bytes.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The checks before routing: 411, then the credentials (SSWS token or OAuth bearer token).
fn precheck(sim: &Sim, ctx: &Ctx, req: &Request) -> Option<Response> {
    // hyper removes nothing here: a chunked request simply has no content-length header.
    if matches!(*req.method(), Method::POST | Method::PUT)
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        return Some(sim.fail(ctx, ApiError::length_required()));
    }
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(bearer) = auth.and_then(|v| v.strip_prefix("Bearer ")) {
        let read_only = *req.method() == Method::GET;
        return super::oauth::check_bearer(sim, ctx, bearer.trim(), read_only);
    }
    match auth.and_then(|v| v.strip_prefix("SSWS ")) {
        Some(t) if sim.shared.config.api_tokens.iter().any(|known| known == t.trim()) => None,
        Some(_) => Some(sim.fail(ctx, ApiError::invalid_token("unknown SSWS token"))),
        None => Some(sim.fail(
            ctx,
            ApiError::invalid_token("missing Authorization header, or neither SSWS nor Bearer"),
        )),
    }
}

/// Inject the fault the plan has for this request, if any (see [`super::faults`]).
async fn fault_middleware(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_of(req.method(), req.uri().path());
    let fault = sim.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).next(&endpoint);
    let Some(fault) = fault else {
        return next.run(req).await;
    };
    tracing::debug!(endpoint, ?fault, "emulator injecting a fault");
    // Processing runs in its own task, after `wait`: it completes even when the client hangs
    // up, which is the point of an "applied" fault, and of a request held on its way (the
    // client gives up on it, Okta still gets it).
    let apply = |req: Request, next: Next, wait: Duration| {
        let held = Faulted::new(&sim);
        let task = tokio::spawn(async move {
            let _held = held;
            if wait.is_zero() {
                next.run(req).await
            } else {
                tokio::time::sleep(wait).await;
                super::faults::as_held(next.run(req)).await
            }
        });
        async move { task.await.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()) }
    };
    let rate_headers = |mut r: Response, limit: u32, reset: u64| {
        let h = r.headers_mut();
        h.insert("x-okta-request-id", header_value(random_id("", 27)));
        h.insert("x-rate-limit-limit", header_value(limit.to_string()));
        h.insert("x-rate-limit-remaining", header_value("0".into()));
        h.insert("x-rate-limit-reset", header_value(reset.to_string()));
        h.insert(
            header::DATE,
            header_value(chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        );
        r
    };
    match fault {
        Fault::RateLimit { reset_secs } => {
            sim.count_rate_limited();
            let limit = sim.shared.config.rate_limit_per_minute;
            rate_headers(ApiError::rate_limited().into_response(), limit, epoch_now() + reset_secs)
        }
        Fault::ConcurrencyLimit => {
            sim.count_rate_limited();
            rate_headers(ApiError::rate_limited().into_response(), 0, epoch_now() + 1)
        }
        Fault::ServerError { status, applied } => {
            if applied {
                let _ = apply(req, next, Duration::ZERO).await;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut err = ApiError::validation("injected_fault", "server", "injected server error");
            err.status = status;
            err.code = "E0000009";
            err.summary = "Internal Server Error".into();
            err.causes.clear();
            err.violations.clear();
            err.into_response()
        }
        Fault::Delay { ms, applied } => {
            let wait = Duration::from_millis(ms);
            if applied {
                let response = apply(req, next, Duration::ZERO).await;
                tokio::time::sleep(wait).await;
                response
            } else {
                apply(req, next, wait).await
            }
        }
        Fault::Drop { applied } => {
            if applied {
                let _ = apply(req, next, Duration::ZERO).await;
            }
            // A body that fails at once: hyper aborts the connection, and the client sees it
            // closed before a complete answer.
            let failing = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "connection dropped by fault injection",
                ))
            });
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from_stream(failing))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

async fn api_not_found(State(sim): State<Sim>, method: Method, uri: Uri) -> Response {
    let mut err = ApiError::not_found("unknown_endpoint", uri.path(), "Resource");
    err.violations[0].1 = format!("no such endpoint: {method} {}", uri.path());
    sim.fail(&ctx(&method, &uri, None), err)
}

async fn api_method_not_allowed(State(sim): State<Sim>, method: Method, uri: Uri) -> Response {
    sim.fail(&ctx(&method, &uri, None), ApiError::method_not_allowed())
}

// ----- session endpoints ---------------------------------------------------------------------

async fn list_sessions(
    State(sim): State<Sim>,
    Path(source): Path<String>,
    m: Method,
    u: Uri,
) -> Response {
    match sim.list_sessions(&source) {
        Ok(list) => Json(list).into_response(),
        Err(e) => sim.fail(&ctx(&m, &u, None), e),
    }
}

async fn create_session(
    State(sim): State<Sim>,
    Path(source): Path<String>,
    m: Method,
    u: Uri,
) -> Response {
    // Okta answers 201, not the spec's 200 (FACTS §11).
    match sim.create_session(&source) {
        Ok(session) => (StatusCode::CREATED, Json(session)).into_response(),
        Err(e) => sim.fail(&ctx(&m, &u, None), e),
    }
}

async fn get_session(
    State(sim): State<Sim>,
    Path((source, id)): Path<(String, String)>,
    m: Method,
    u: Uri,
) -> Response {
    match sim.get_session(&source, &id) {
        Ok(session) => Json(session).into_response(),
        Err(e) => sim.fail(&ctx(&m, &u, Some(&id)), e),
    }
}

async fn cancel_session(
    State(sim): State<Sim>,
    Path((source, id)): Path<(String, String)>,
    m: Method,
    u: Uri,
) -> Response {
    match sim.cancel_session(&source, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim.fail(&ctx(&m, &u, Some(&id)), e),
    }
}

async fn start_import(
    State(sim): State<Sim>,
    Path((source, id)): Path<(String, String)>,
    m: Method,
    u: Uri,
) -> Response {
    // A single session object, not the spec example's array (FACTS §11).
    match sim.trigger(&source, &id) {
        Ok(session) => Json(session).into_response(),
        Err(e) => sim.fail(&ctx(&m, &u, Some(&id)), e),
    }
}

async fn bulk_load(
    kind: LoadKind,
    State(sim): State<Sim>,
    Path((source, id)): Path<(String, String)>,
    m: Method,
    u: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let context = ctx(&m, &u, Some(&id));
    match bulk_load_inner(&sim, &context, kind, &source, &id, &headers, body).await {
        Ok(()) => {
            let mut response = StatusCode::ACCEPTED.into_response();
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        Err(e) => sim.fail(&context, e),
    }
}

async fn bulk_load_inner(
    sim: &Sim,
    context: &Ctx,
    kind: LoadKind,
    source: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    sim.check_loadable(source, id)?;
    let limits = &sim.shared.config.limits;
    let max = limits.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_big = |n: usize| {
        ApiError::validation(
            "max_request_bytes",
            "body",
            format!("A bulk-load request can contain at most {max} bytes of data (got {n})"),
        )
    };
    let bytes = match read_limited(body, max, declared).await {
        ReadBody::Complete(bytes) => bytes,
        ReadBody::TooLarge(n) => return Err(too_big(n)),
        ReadBody::Failed(e) => {
            return Err(ApiError::malformed(
                "malformed_body",
                format!("could not read the body: {e}"),
            ));
        }
    };
    let parsed = parse_load(kind, &bytes, limits.max_profiles_per_request)?;
    sim.accept_load(context, source, id, kind, parsed, bytes.len())
}

enum ReadBody {
    Complete(Bytes),
    /// Bytes seen (declared or read) when the limit was crossed.
    TooLarge(usize),
    Failed(String),
}

/// Read at most `max` bytes. Beyond that, keep *discarding* (not buffering) up to a cap so
/// the client finishes sending and reads our 400 instead of a reset connection; a body that
/// declares more than the cap is refused without reading it at all.
async fn read_limited(body: Body, max: usize, declared: Option<usize>) -> ReadBody {
    let drain_cap = max.saturating_mul(8).max(1 << 20);
    if let Some(n) = declared
        && n > drain_cap
    {
        return ReadBody::TooLarge(n);
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max));
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return ReadBody::Failed(e.to_string()),
        };
        total = total.saturating_add(chunk.len());
        if total <= max {
            buf.extend_from_slice(&chunk);
        } else if total > drain_cap {
            break;
        }
    }
    if total > max { ReadBody::TooLarge(total) } else { ReadBody::Complete(Bytes::from(buf)) }
}

// ----- introspection -------------------------------------------------------------------------

async fn sim_state(State(sim): State<Sim>) -> Response {
    Json(sim.snapshot()).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn sim_advance(State(sim): State<Sim>, Json(body): Json<Advance>) -> Response {
    if !body.seconds.is_finite() || body.seconds < 0.0 {
        return (StatusCode::BAD_REQUEST, "seconds must be a finite, non-negative number")
            .into_response();
    }
    sim.advance_clock(Duration::from_secs_f64(body.seconds.min(1e12)));
    Json(serde_json::json!({ "now": okta_time(sim.shared.clock.now()) })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedUser {
    #[serde(default, alias = "identity_source_id")]
    identity_source_id: Option<String>,
    #[serde(alias = "external_id")]
    external_id: String,
    #[serde(default)]
    profile: BTreeMap<String, String>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// The identity source a `/__sim` call means: the given one, else the first configured.
fn source_or_default(sim: &Sim, source: Option<String>) -> String {
    source.or_else(|| sim.config().identity_sources.first().cloned()).unwrap_or_default()
}

async fn sim_seed_user(State(sim): State<Sim>, Json(body): Json<SeedUser>) -> Response {
    let source = source_or_default(&sim, body.identity_source_id);
    sim.seed_user(&source, &body.external_id, body.profile, body.active);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedGroup {
    #[serde(default, alias = "identity_source_id")]
    identity_source_id: Option<String>,
    #[serde(alias = "external_id")]
    external_id: String,
    #[serde(alias = "display_name")]
    display_name: String,
    #[serde(default)]
    members: Vec<String>,
}

async fn sim_seed_group(State(sim): State<Sim>, Json(body): Json<SeedGroup>) -> Response {
    let source = source_or_default(&sim, body.identity_source_id);
    sim.seed_group(&source, &body.external_id, &body.display_name, &body.members);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InjectSession {
    #[serde(default, alias = "identity_source_id")]
    identity_source_id: Option<String>,
    status: SessionStatus,
}

async fn sim_inject_session(State(sim): State<Sim>, Json(body): Json<InjectSession>) -> Response {
    let source = source_or_default(&sim, body.identity_source_id);
    let id = sim.inject_session(&source, body.status);
    Json(serde_json::json!({ "id": id })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailNext {
    #[serde(default, alias = "identity_source_id")]
    identity_source_id: Option<String>,
}

async fn sim_fail_next(State(sim): State<Sim>, Json(body): Json<FailNext>) -> Response {
    let source = source_or_default(&sim, body.identity_source_id);
    sim.fail_next_session(&source);
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_get_faults(State(sim): State<Sim>) -> Response {
    let st = sim.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    Json(serde_json::json!({
        "plan": st.plan,
        "counts": st.counts,
        "injected": st.injected,
    }))
    .into_response()
}

async fn sim_set_faults(
    State(sim): State<Sim>,
    Json(plan): Json<super::faults::FaultPlan>,
) -> Response {
    sim.set_faults(plan);
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_clear_faults(State(sim): State<Sim>) -> Response {
    sim.set_faults(super::faults::FaultPlan::default());
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_reset(State(sim): State<Sim>) -> Response {
    sim.reset();
    StatusCode::NO_CONTENT.into_response()
}
