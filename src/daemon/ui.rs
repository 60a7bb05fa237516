//! The monitoring pages at `/ui`: jobs, a run, held runs (with Approve), webhook events.
//!
//! Server-rendered with minijinja; the templates and the stylesheet are compiled into the
//! binary (`include_str!`), auto-escaped (`.html`), and take the very structs `/v1/*` returns
//! ([`super::api`]): one code path for people and scripts.
//!
//! # Access
//!
//! Off unless `serve.ui.enabled` (the routes are not mounted: 404). When on, every page and
//! `/v1/jobs`, `/v1/runs*` need one of:
//! - `type: token`: `Authorization: Bearer <token>`, or the login form, which sets an
//!   HttpOnly, SameSite=Strict cookie holding an HMAC of the token (never the token);
//! - `type: basic`: HTTP basic auth;
//! - `type: oidc`: sign-in with the company's identity provider ([`oidc`], [`signin`]), with
//!   server-side sessions and the viewer and approver roles ([`access`]).
//!
//! Token and basic users are approvers. Behind a reverse proxy that serves the page under a
//! prefix (`serve.ui.base_path`), every link and redirect carries it.
//!
//! The Approve action is a POST that carries a CSRF token (an HMAC of the credential, so a
//! forged cross-site form cannot know it), needs a ticked confirmation, is written to the
//! audit trail (who, when, from which address), then queues the job's next run.

mod access;
mod oidc;
mod signin;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::Utc;
use minijinja::{Environment, context};
use serde::Deserialize;
use tracing::{info, warn};

use super::Daemon;
use super::api::{self, ApiError, DecisionParams, with_store};
use super::queue::RunReason;
use crate::settings::ui::{UiAuth, UiSettings};
use crate::state::{ApprovalRecord, RunId};

pub use access::COOKIE;
use access::Signed;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("ui/base.html")),
        ("jobs.html", include_str!("ui/jobs.html")),
        ("run.html", include_str!("ui/run.html")),
        ("held.html", include_str!("ui/held.html")),
        ("confirm.html", include_str!("ui/confirm.html")),
        ("webhook.html", include_str!("ui/webhook.html")),
        ("login.html", include_str!("ui/login.html")),
        ("error.html", include_str!("ui/error.html")),
    ] {
        // The templates ship inside the binary and are covered by the tests; a broken one
        // shows up as a render error on its page, not a panic.
        if let Err(e) = env.add_template(name, source) {
            warn!(template = name, error = %e, "a UI template does not compile");
        }
    }
    env.add_filter("when", when);
    env.add_filter("duration", duration);
    env.add_filter("pct", |n: u64, max: u64| if max == 0 { 0 } else { (n * 100).div_ceil(max) });
    env
});

const STYLE: &str = include_str!("ui/style.css");

/// `2026-11-23T06:41:12.345Z` → `2026-11-23 06:41:12 UTC`.
fn when(s: Option<String>) -> String {
    match s.as_deref().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) {
        Some(d) => d.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "—".into(),
    }
}

/// Milliseconds → `850 ms`, `12.3 s`, `4 min 5 s`.
fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The UI's shared state.
#[derive(Clone)]
struct Ui {
    daemon: Arc<Daemon>,
    settings: Arc<UiSettings>,
    /// The relying party, with `type: oidc`.
    oidc: Option<oidc::Oidc>,
}

impl Ui {
    /// `path` (which starts with `/`) as the browser sees it: under the base path.
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_path)
    }
}

/// Adds `Server-Timing: app;dur=<ms>` (the time spent building the answer, auth included), so
/// `bench/ui.sh` and a browser's dev tools can read the server time of a page.
async fn server_timing(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}

/// Refuses requests without a valid credential: JSON routes get 401 JSON, pages get the
/// login form (token), a basic-auth challenge, or (OIDC) a redirect to the sign-in.
async fn require_auth(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    let found = match &ui.settings.auth {
        UiAuth::Oidc(_) => access::session(&ui, request.headers()).await,
        auth => Ok(access::credential(auth, request.headers())),
    };
    match found {
        Ok(Some(s)) => {
            request.extensions_mut().insert(s);
            next.run(request).await
        }
        Ok(None) => {
            let uri = request.uri();
            let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui").to_string();
            refuse(&ui, &target, None)
        }
        Err(e) => {
            warn!(error = %e, "cannot read the page session from the state");
            let message = format!("cannot read the session from the state: {e}");
            let ctx = context! { message, status => 503 };
            (StatusCode::SERVICE_UNAVAILABLE, render(&ui, "error.html", ctx)).into_response()
        }
    }
}

/// No valid credential for `target` (a path of ours).
fn refuse(ui: &Ui, target: &str, message: Option<&str>) -> Response {
    if target.starts_with("/v1/") {
        let body = serde_json::json!({ "error": "authentication required" });
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        if let Some(challenge) = challenge(&ui.settings.auth) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        return response;
    }
    if let UiAuth::Oidc(_) = ui.settings.auth {
        let next: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        return Redirect::to(&ui.path(&format!("/ui/login?next={next}"))).into_response();
    }
    let basic = matches!(ui.settings.auth, UiAuth::Basic { .. });
    let html = render(ui, "login.html", context! { basic, message });
    let mut response = (StatusCode::UNAUTHORIZED, html).into_response();
    if let Some(challenge) = challenge(&ui.settings.auth) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

fn challenge(auth: &UiAuth) -> Option<HeaderValue> {
    match auth {
        UiAuth::Token { .. } => Some(HeaderValue::from_static("Bearer realm=\"xaas\"")),
        UiAuth::Basic { .. } => {
            Some(HeaderValue::from_static("Basic realm=\"xaas\", charset=\"UTF-8\""))
        }
        UiAuth::Oidc(_) => None,
    }
}

/// Render `name` with `ctx` and the page's base path (`base`).
fn render(ui: &Ui, name: &str, ctx: minijinja::Value) -> Html<String> {
    let ctx = context! { base => ui.settings.base_path.clone(), ..ctx };
    match TEMPLATES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html),
        Err(e) => {
            warn!(template = name, error = %e, "cannot render a UI page");
            Html(format!("<h1>cannot render this page</h1><p>{}</p>", escape(&e.to_string())))
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// What every signed-in page knows of its reader.
fn reader(s: &Signed) -> minijinja::Value {
    context! {
        csrf => s.csrf.clone(), who => s.who.clone(),
        can_approve => s.can_approve(), can_sign_out => s.can_sign_out,
    }
}

fn page(ui: &Ui, name: &str, signed: &Signed, nav: &str, page: impl serde::Serialize) -> Response {
    let page = minijinja::Value::from(minijinja::value::Serde(page));
    render(ui, name, context! { page, nav, ..reader(signed) }).into_response()
}

fn error_page(ui: &Ui, e: ApiError, signed: &Signed) -> Response {
    let status = e.status();
    let ctx = context! { message => e.to_string(), status => status.as_u16(), ..reader(signed) };
    (status, render(ui, "error.html", ctx)).into_response()
}

async fn jobs_page(State(ui): State<Ui>, axum::Extension(s): axum::Extension<Signed>) -> Response {
    match with_store(&ui.daemon, |st, store| api::jobs(st, store, Utc::now())).await {
        Ok(view) => page(&ui, "jobs.html", &s, "jobs", view),
        Err(e) => error_page(&ui, e, &s),
    }
}

async fn run_page(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
    Path(id): Path<RunId>,
    Query(params): Query<DecisionParams>,
) -> Response {
    let query = match params.query() {
        Ok(q) => q,
        Err(e) => return error_page(&ui, e, &s),
    };
    let show = ui.settings.show_profiles;
    match with_store(&ui.daemon, move |_, store| api::run_detail(store, id, &query, show)).await {
        Ok(view) => {
            let decisions: Vec<&str> =
                crate::state::Decision::ALL.iter().map(|d| d.as_str()).collect();
            let page = minijinja::Value::from(minijinja::value::Serde(view));
            let ctx = context! { page, nav => "jobs", decisions, ..reader(&s) };
            render(&ui, "run.html", ctx).into_response()
        }
        Err(e) => error_page(&ui, e, &s),
    }
}

#[derive(Debug, Deserialize)]
struct HeldParams {
    approved: Option<RunId>,
    queued: Option<String>,
}

async fn held_page(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
    Query(params): Query<HeldParams>,
) -> Response {
    match with_store(&ui.daemon, |st, store| api::held(st, store)).await {
        Ok(view) => {
            let page = minijinja::Value::from(minijinja::value::Serde(view));
            let ctx = context! {
                page, nav => "held", approved => params.approved, queued => params.queued,
                ..reader(&s)
            };
            render(&ui, "held.html", ctx).into_response()
        }
        Err(e) => error_page(&ui, e, &s),
    }
}

/// The confirmation step: what approving will allow, and a checkbox to tick.
async fn confirm_page(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
    Path(id): Path<RunId>,
) -> Response {
    if let Some(refused) = signin::approver_only(&ui, &s) {
        return refused;
    }
    let query = crate::state::DecisionQuery {
        decision: Some(crate::state::Decision::Deactivated),
        limit: 10,
        ..Default::default()
    };
    match with_store(&ui.daemon, move |_, store| api::run_detail(store, id, &query, false)).await {
        Ok(view) if view.hold.is_some() => page(&ui, "confirm.html", &s, "held", view),
        Ok(_) => error_page(&ui, ApiError::BadRequest(format!("run {id} was not held")), &s),
        Err(e) => error_page(&ui, e, &s),
    }
}

#[derive(Debug, Deserialize)]
struct ApproveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /ui/held/{id}/approve`: CSRF-checked, confirmed, audited, then the job runs.
async fn approve(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<RunId>,
    Form(form): Form<ApproveForm>,
) -> Response {
    if let Some(refused) =
        signin::approver_only(&ui, &s).or_else(|| csrf_refused(&ui, &form.csrf, &s))
    {
        return refused;
    }
    if form.confirm.as_deref() != Some("yes") {
        let e = ApiError::BadRequest("tick the confirmation box to approve".into());
        return error_page(&ui, e, &s);
    }
    let (who, approver) = (s.who.clone(), s.approver.clone());
    let result = {
        let daemon = ui.daemon.clone();
        tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
            let mut store = daemon.open_store()?;
            let record =
                store.run_by_id(id)?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
            let now = Utc::now();
            store.approve(&record.job, id, now)?;
            store.record_approval(&ApprovalRecord {
                job: record.job.clone(),
                run: id,
                approved_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                approved_by: who,
                remote_addr: Some(peer.ip().to_string()),
                approver,
            })?;
            // An approval is a person looking at the job: it resumes a quarantine too.
            if let Some(q) = super::watch::resume_job(store.as_mut(), &record.job)? {
                info!(job = %record.job, reason = %q.reason, "quarantine lifted by an approval");
            }
            Ok(record.job)
        })
        .await
        .map_err(|e| ApiError::Join(e.to_string()))
        .and_then(|r| r)
    };
    match result {
        Ok(job) => {
            info!(job = %job, run = id, by = %s.who, from = %peer.ip(), "held run approved in the UI");
            // The approval releases the job's next run: run it now.
            let ack = ui.daemon.enqueue_run(&job, RunReason::Trigger);
            Redirect::to(&ui.path(&format!("/ui/held?approved={id}&queued={}", ack.status)))
                .into_response()
        }
        Err(ApiError::State(e @ crate::state::StateError::AlreadyUsed { .. }))
        | Err(ApiError::State(e @ crate::state::StateError::NotHeld { .. })) => {
            error_page(&ui, ApiError::BadRequest(e.to_string()), &s)
        }
        Err(e) => error_page(&ui, e, &s),
    }
}

/// A POST whose form does not carry the session's CSRF token: 403.
fn csrf_refused(ui: &Ui, csrf: &str, s: &Signed) -> Option<Response> {
    if access::same(csrf, &s.csrf) {
        return None;
    }
    let e = ApiError::BadRequest("the form's CSRF token is missing or wrong".into());
    Some((StatusCode::FORBIDDEN, error_page(ui, e, s)).into_response())
}

/// `POST /ui/jobs/{job}/resume`: lift the job's quarantine and run it now.
async fn resume(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(job): Path<String>,
    Form(form): Form<signin::CsrfForm>,
) -> Response {
    if let Some(refused) =
        signin::approver_only(&ui, &s).or_else(|| csrf_refused(&ui, &form.csrf, &s))
    {
        return refused;
    }
    if !ui.daemon.settings().jobs.iter().any(|j| j.name == job) {
        return error_page(&ui, ApiError::NotFound(format!("no job {job}")), &s);
    }
    let daemon = ui.daemon.clone();
    let name = job.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        Ok(super::watch::resume_job(daemon.open_store()?.as_mut(), &name)?)
    })
    .await
    .map_err(|e| ApiError::Join(e.to_string()))
    .and_then(|r| r);
    match result {
        Ok(lifted) => {
            let reason = lifted.map(|q| q.reason).unwrap_or_default();
            info!(job = %job, reason = %reason, by = %s.who, from = %peer.ip(), "job resumed in the UI");
            let ack = ui.daemon.enqueue_run(&job, RunReason::Trigger);
            Redirect::to(&ui.path(&format!("/ui?resumed={job}&queued={}", ack.status)))
                .into_response()
        }
        Err(e) => error_page(&ui, e, &s),
    }
}

async fn webhook_page(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
) -> Response {
    let daemon = ui.daemon.clone();
    let view = tokio::task::spawn_blocking(move || api::webhook(&daemon))
        .await
        .map_err(|e| ApiError::Join(e.to_string()))
        .and_then(|r| r);
    match view {
        Ok(view) => page(&ui, "webhook.html", &s, "webhook", view),
        Err(e) => error_page(&ui, e, &s),
    }
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// The UI's routes (pages and `/v1/jobs`, `/v1/runs*`); `None` when `serve.ui` is off.
pub fn router(daemon: &Arc<Daemon>) -> Option<Router> {
    let settings = Arc::new(daemon.settings().serve.ui.clone()?);
    let oidc = match &settings.auth {
        UiAuth::Oidc(o) => match oidc::Oidc::new((**o).clone()) {
            Ok(client) => {
                // Discover in the background: an unreachable provider delays nothing else.
                let warm = client.clone();
                tokio::spawn(async move { warm.warm_up().await });
                Some(client)
            }
            Err(e) => {
                warn!(error = %e, "the page's sign-in cannot start: every sign-in will fail");
                None
            }
        },
        _ => None,
    };
    let csp = content_security_policy(&settings.auth);
    let ui = Ui { daemon: daemon.clone(), settings, oidc };
    let protected = Router::new()
        .route("/ui", get(jobs_page))
        .route("/ui/runs/{id}", get(run_page))
        .route("/ui/held", get(held_page))
        .route("/ui/held/{id}/approve", get(confirm_page).post(approve))
        .route("/ui/jobs/{job}/resume", axum::routing::post(resume))
        .route("/ui/webhook", get(webhook_page))
        .route("/ui/logout", axum::routing::post(signin::logout))
        .with_state(ui.clone())
        .merge(
            Router::new()
                .route("/v1/jobs", get(api::get_jobs))
                .route("/v1/runs", get(api::get_runs))
                .route("/v1/runs/{id}", get(api::get_run))
                .with_state(daemon.clone()),
        )
        .layer(middleware::from_fn_with_state(ui.clone(), require_auth))
        .layer(middleware::from_fn(server_timing));
    let open = Router::new()
        .route("/ui/login", get(signin::login_page).post(signin::token_login))
        .route(crate::settings::oidc::CALLBACK_PATH, get(signin::callback))
        .route("/ui/style.css", get(style))
        .with_state(ui);
    Some(protected.merge(open).layer(middleware::from_fn_with_state(csp, security_headers)))
}

/// What every page may load: its own stylesheet, and nothing else (no script at all; the
/// inline `style` attributes of the charts' bars are the only inline content). It may not be
/// framed, and its forms post only to itself (and, with OIDC, the logout form's redirect to
/// the identity provider's end-session endpoint, which browsers check against `form-action`).
fn content_security_policy(auth: &UiAuth) -> HeaderValue {
    let provider = match auth {
        UiAuth::Oidc(o) => format!(" {}", o.issuer.url().origin().ascii_serialization()),
        _ => String::new(),
    };
    let text = format!(
        "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; \
         img-src 'self' data:; form-action 'self'{provider}; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// The page defends itself in a browser: a Content-Security-Policy, no framing (so the
/// Approve page cannot be clicked through from another site), no MIME sniffing, no referrer
/// to other origins; the JSON routes are never cached (they carry personal data).
async fn security_headers(
    State(csp): State<HeaderValue>,
    request: Request,
    next: Next,
) -> Response {
    let json = request.uri().path().starts_with("/v1/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if json {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
