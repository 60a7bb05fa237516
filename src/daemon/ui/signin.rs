//! The sign-in routes: the token form, and the OIDC login, callback and logout.
//!
//! OIDC: `GET /ui/login?next=/ui/held` keeps a pending login (nonce, PKCE verifier, where to go
//! next, the digest of this browser's login cookie) in the state store under the digest of a
//! random `state`, and sends the browser to the provider. `GET /ui/oidc/callback` takes that
//! record (once: a replayed callback finds nothing), checks it came back to the same browser,
//! exchanges the code and checks the ID token ([`super::oidc`]), then opens a session for a
//! viewer or an approver, or answers 403 for anyone else.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::context;
use secrecy::ExposeSecret;
use serde::Deserialize;
use tracing::{info, warn};

use super::access::{self, LOGIN_COOKIE, Role, Signed};
use super::oidc::{LoginError, PendingLogin};
use super::{Ui, render};
use crate::settings::ui::UiAuth;

#[derive(Debug, Deserialize)]
pub struct LoginParams {
    next: Option<String>,
    signed_out: Option<String>,
}

/// Only a path of the page itself (no `//host`, no scheme): never an open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui".to_string(),
    }
}

/// `GET /ui/login`: the token form, or (OIDC) the start of a sign-in.
pub async fn login_page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(params): Query<LoginParams>,
) -> Response {
    if let UiAuth::Oidc(_) = &ui.settings.auth {
        if params.signed_out.is_some() {
            let ctx = context! { oidc => true, message => "You are signed out." };
            return render(&ui, "login.html", ctx).into_response();
        }
        return start_oidc(&ui, &headers, safe_next(params.next.as_deref())).await;
    }
    if access::credential(&ui.settings.auth, &headers).is_some() {
        return Redirect::to(&ui.path("/ui")).into_response();
    }
    let basic = matches!(ui.settings.auth, UiAuth::Basic { .. });
    render(&ui, "login.html", context! { basic }).into_response()
}

async fn start_oidc(ui: &Ui, headers: &HeaderMap, next: String) -> Response {
    let Some(oidc) = ui.oidc.clone() else {
        return login_failed(ui, LoginError::Internal("no OIDC client".into()));
    };
    // One login cookie per browser, reused by logins started in several tabs.
    let browser = access::cookie(headers, LOGIN_COOKIE)
        .filter(|c| c.len() >= 40)
        .unwrap_or_else(access::random_value);
    let (url, state, pending) = match oidc.start(next, access::digest("browser", &browser)).await {
        Ok(started) => started,
        Err(e) => return login_failed(ui, e),
    };
    let key = access::digest("login", &state);
    let text = serde_json::to_string(&pending).unwrap_or_default();
    let until = Utc::now() + chrono::Duration::seconds(access::LOGIN_MAX_AGE_SECS);
    let events = ui.daemon.events().clone();
    let stored = tokio::task::spawn_blocking(move || events.put_signin(&key, &text, until)).await;
    if let Err(e) = stored.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        return login_failed(
            ui,
            LoginError::Internal(format!("cannot keep the login in the state: {e}")),
        );
    }
    let mut response = Redirect::to(url.as_str()).into_response();
    let max_age = access::LOGIN_MAX_AGE_SECS;
    if let Some(v) = access::set_cookie(ui, headers, LOGIN_COOKIE, &browser, max_age, "Lax") {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A sign-in that failed: a page and a log line that say what to check.
fn login_failed(ui: &Ui, e: LoginError) -> Response {
    let status = match &e {
        LoginError::Unreachable { .. }
        | LoginError::WrongIssuer { .. }
        | LoginError::RedirectRefused { .. }
        | LoginError::BadClient { .. } => StatusCode::BAD_GATEWAY,
        LoginError::Provider { .. } => StatusCode::FORBIDDEN,
        LoginError::Clock { .. } | LoginError::BadToken(_) => StatusCode::UNAUTHORIZED,
        LoginError::StaleLogin | LoginError::OtherBrowser => StatusCode::BAD_REQUEST,
        LoginError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    warn!(error = %e, status = status.as_u16(), "sign-in to the page failed");
    let ctx = context! { message => e.to_string(), status => status.as_u16(), retry => true };
    (status, render(ui, "error.html", ctx)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /ui/oidc/callback`: the provider sends the browser back here.
pub async fn callback(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let (Some(oidc), UiAuth::Oidc(settings)) = (ui.oidc.clone(), &ui.settings.auth) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The pending login is taken before anything else: a replayed callback finds nothing.
    let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return login_failed(&ui, LoginError::StaleLogin);
    };
    let key = access::digest("login", state);
    let events = ui.daemon.events().clone();
    let taken = tokio::task::spawn_blocking(move || events.take_signin(&key, Utc::now())).await;
    let pending: PendingLogin = match taken {
        Ok(Ok(Some(text))) => match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(_) => return login_failed(&ui, LoginError::StaleLogin),
        },
        Ok(Ok(None)) => return login_failed(&ui, LoginError::StaleLogin),
        Ok(Err(e)) => return login_failed(&ui, LoginError::Internal(e.to_string())),
        Err(e) => return login_failed(&ui, LoginError::Internal(e.to_string())),
    };
    let browser = access::cookie(&headers, LOGIN_COOKIE).map(|c| access::digest("browser", &c));
    if !browser.is_some_and(|b| access::same(&b, &pending.browser)) {
        return login_failed(&ui, LoginError::OtherBrowser);
    }
    if let Some(code) = params.error {
        let description = params.error_description.map(|d| format!(": {d}")).unwrap_or_default();
        return login_failed(&ui, LoginError::Provider { code, description });
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        return login_failed(&ui, LoginError::StaleLogin);
    };
    let next = pending.next.clone();
    let identity = match oidc.finish(code, pending).await {
        Ok(i) => i,
        Err(e) => return login_failed(&ui, e),
    };
    let who = identity.email.clone().unwrap_or_else(|| identity.subject.clone());
    let Some(role) = access::role_of(settings, &identity) else {
        warn!(who = %who, groups = ?identity.groups, "signed in at the identity provider but holds no role on the page");
        let message = format!(
            "You are signed in as {who}, but you are neither a viewer nor an approver of this page. Ask whoever runs xaas to add you (serve.ui.auth.viewers or approvers: a group in the `{}` claim, or your email).",
            settings.groups_claim
        );
        let ctx = context! { message, status => 403 };
        return (StatusCode::FORBIDDEN, render(&ui, "error.html", ctx)).into_response();
    };
    let value = match access::open_session(&ui, settings, identity, role).await {
        Ok(v) => v,
        Err(e) => {
            return login_failed(&ui, LoginError::Internal(format!("cannot open a session: {e}")));
        }
    };
    info!(who = %who, role = ?role, "signed in to the page");
    let mut response = Redirect::to(&ui.path(&next)).into_response();
    let max = i64::try_from(settings.session_max.as_secs()).unwrap_or(i64::MAX);
    let h = response.headers_mut();
    if let Some(v) = access::set_cookie(&ui, &headers, access::COOKIE, &value, max, "Lax") {
        h.append(header::SET_COOKIE, v);
    }
    if let Some(v) = access::set_cookie(&ui, &headers, LOGIN_COOKIE, "", 0, "Lax") {
        h.append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /ui/login`: a right token sets the session cookie.
pub async fn token_login(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let UiAuth::Token { token } = &ui.settings.auth else {
        return Redirect::to(&ui.path("/ui")).into_response();
    };
    if !access::same(form.token.trim(), token.expose_secret()) {
        return super::refuse(&ui, "/ui", Some("that token is not valid"));
    }
    let value = access::token_session_value(token.expose_secret());
    let mut response = Redirect::to(&ui.path("/ui")).into_response();
    let max = access::TOKEN_COOKIE_MAX_AGE_SECS as i64;
    if let Some(v) = access::set_cookie(&ui, &headers, access::COOKIE, &value, max, "Strict") {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /ui/logout` (CSRF-checked): the session is deleted, so its cookie no longer works
/// anywhere; with OIDC the browser then goes to the provider's end-session endpoint.
pub async fn logout(
    State(ui): State<Ui>,
    axum::Extension(s): axum::Extension<Signed>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = super::csrf_refused(&ui, &form.csrf, &s) {
        return refused;
    }
    let mut target = ui.path("/ui/login?signed_out=1");
    if let (Some(key), Some(oidc)) = (s.session.clone(), ui.oidc.clone()) {
        match access::close_session(&ui, key).await {
            Ok(Some(id_token)) => {
                let after = oidc
                    .settings()
                    .redirect_url
                    .join(&ui.path("/ui/login?signed_out=1"))
                    .ok()
                    .map(|u| u.to_string());
                if let Some(url) = oidc.end_session_url(&id_token, after.as_deref()).await {
                    target = url.to_string();
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot delete the page session at logout"),
        }
        info!(who = %s.who, "signed out of the page");
    }
    let mut response = Redirect::to(&target).into_response();
    if let Some(v) = access::set_cookie(&ui, &headers, access::COOKIE, "", 0, "Lax") {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// What a viewer gets for an approver's action.
pub fn approver_only(ui: &Ui, s: &Signed) -> Option<Response> {
    if s.role == Role::Approver {
        return None;
    }
    let message = format!(
        "{} may view this page but not approve or resume: that needs the approver role (serve.ui.auth.approvers)",
        s.who
    );
    let ctx = context! { message, status => 403, who => s.who.clone() };
    Some((StatusCode::FORBIDDEN, render(ui, "error.html", ctx)).into_response())
}
