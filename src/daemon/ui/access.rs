//! Who is asking, and what they may do: the token and basic credentials, and the OIDC
//! sessions (server-side, in the state store, so they survive a restart and work on every
//! replica), with the viewer and approver roles.
//!
//! An OIDC session is a random 256-bit value in an HttpOnly, SameSite=Lax cookie (`Secure`
//! when the page is served over https, or behind a proxy that says so with
//! `X-Forwarded-Proto: https`); the store keeps it under the SHA-256 of that value, so the
//! state holds no usable cookie. It ends after `session_idle_secs` without a request, after
//! `session_max_secs` in any case, and at logout (deleted: an old cookie is then refused).

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::Ui;
use super::oidc::Identity;
use crate::settings::oidc::OidcSettings;
use crate::settings::ui::UiAuth;
use crate::state::Approver;

/// The session cookie (the token login's, and the OIDC session's).
pub const COOKIE: &str = "xaas_ui";
/// The cookie that ties a sign-in's callback to the browser that started it.
pub const LOGIN_COOKIE: &str = "xaas_login";
/// How long a token login lasts, in seconds.
pub const TOKEN_COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;
/// A pending sign-in waits this long for its callback.
pub const LOGIN_MAX_AGE_SECS: i64 = 600;
/// A session's idle expiry is pushed back at most this often (one write a minute, not one
/// per page), and at least four times per idle timeout.
const TOUCH_EVERY_MS: i64 = 60_000;

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every page and JSON route.
    Viewer,
    /// And approving held runs and resuming jobs.
    Approver,
}

/// Who is signed in.
#[derive(Debug, Clone)]
pub struct Signed {
    /// For the page's header and the audit trail: `token`, the basic-auth user name, or the
    /// OIDC email (or name, or subject).
    pub who: String,
    /// The CSRF token every POST form carries.
    pub csrf: String,
    pub role: Role,
    /// The person, when they signed in with OIDC.
    pub approver: Option<Approver>,
    /// The session's store key (OIDC), for the logout.
    pub session: Option<String>,
    /// A sign-out button makes sense (token cookie, OIDC session).
    pub can_sign_out: bool,
}

impl Signed {
    pub fn can_approve(&self) -> bool {
        self.role == Role::Approver
    }
}

/// An OIDC session as the store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    subject: String,
    email: Option<String>,
    name: Option<String>,
    role: Role,
    /// Unix milliseconds.
    created_at: i64,
    touched_at: i64,
    /// For the end-session endpoint's `id_token_hint`.
    id_token: String,
}

pub fn hmac_hex(key: &[u8], message: &str) -> String {
    use hmac::{KeyInit, Mac};
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    use sha2::Digest;
    sha2::Sha256::digest(a.as_bytes()) == sha2::Sha256::digest(b.as_bytes())
}

/// The store key of a secret (a session cookie, a login's state): its SHA-256.
pub fn digest(kind: &str, secret: &str) -> String {
    use sha2::Digest;
    format!("{kind}:{}", hex::encode(sha2::Sha256::digest(secret.as_bytes())))
}

/// 256 random bits, URL-safe.
pub fn random_value() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The cookie value of a token login: an HMAC of the token, so the cookie never holds it.
pub fn token_session_value(token: &str) -> String {
    hmac_hex(token.as_bytes(), "xaas-ui-session-v1")
}

fn fixed(auth: &UiAuth) -> Option<Signed> {
    let (who, csrf) = match auth {
        UiAuth::Token { token } => {
            ("token".to_string(), hmac_hex(token.expose_secret().as_bytes(), "xaas-ui-csrf-v1"))
        }
        UiAuth::Basic { username, password } => (
            username.clone(),
            hmac_hex(password.expose_secret().as_bytes(), &format!("xaas-ui-csrf-v1:{username}")),
        ),
        UiAuth::Oidc(_) => return None,
    };
    let can_sign_out = matches!(auth, UiAuth::Token { .. });
    Some(Signed { who, csrf, role: Role::Approver, approver: None, session: None, can_sign_out })
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The token or basic credential in `headers`, checked (`None` for OIDC: see [`session`]).
pub fn credential(auth: &UiAuth, headers: &HeaderMap) -> Option<Signed> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let ok = match auth {
        UiAuth::Token { token } => {
            let token = token.expose_secret();
            let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
            bearer.is_some_and(|b| same(b.trim(), token))
                || cookie(headers, COOKIE).is_some_and(|c| same(&c, &token_session_value(token)))
        }
        UiAuth::Basic { username, password } => authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
            .is_some_and(|(u, p)| same(&u, username) & same(&p, password.expose_secret())),
        UiAuth::Oidc(_) => false,
    };
    if ok { fixed(auth) } else { None }
}

/// The role the ID token's person holds, if any (approvers first).
pub fn role_of(settings: &OidcSettings, identity: &Identity) -> Option<Role> {
    let email = identity.email.as_deref();
    if settings.approvers.admits(email, &identity.groups) {
        Some(Role::Approver)
    } else if settings.viewers.admits(email, &identity.groups) {
        Some(Role::Viewer)
    } else {
        None
    }
}

/// The OIDC session in `headers`, checked against the store (and its idle expiry pushed
/// back). `Ok(None)`: no cookie, or one that is unknown, logged out or expired.
pub async fn session(ui: &Ui, headers: &HeaderMap) -> Result<Option<Signed>, String> {
    let UiAuth::Oidc(settings) = &ui.settings.auth else { return Ok(None) };
    let Some(value) = cookie(headers, COOKIE) else { return Ok(None) };
    let key = digest("session", &value);
    let events = ui.daemon.events().clone();
    let (idle, max) = (millis(settings.session_idle), millis(settings.session_max));
    let found = tokio::task::spawn_blocking(move || -> Result<Option<Session>, String> {
        let now = Utc::now();
        let Some(text) = events.signin(&key, now).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let Ok(mut s) = serde_json::from_str::<Session>(&text) else { return Ok(None) };
        let now_ms = now.timestamp_millis();
        if now_ms >= s.created_at + max || now_ms >= s.touched_at + idle {
            return Ok(None);
        }
        // A short idle timeout is pushed back more often, so an active person keeps it.
        if now_ms - s.touched_at >= TOUCH_EVERY_MS.min(idle / 4) {
            s.touched_at = now_ms;
            let until = (now_ms + idle).min(s.created_at + max);
            let text = serde_json::to_string(&s).unwrap_or_default();
            events.put_signin(&key, &text, at_ms(until)).map_err(|e| e.to_string())?;
        }
        Ok(Some(s))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(found.map(|s| Signed {
        who: s.email.clone().or_else(|| s.name.clone()).unwrap_or_else(|| s.subject.clone()),
        csrf: hmac_hex(value.as_bytes(), "xaas-ui-csrf-v1"),
        role: s.role,
        approver: Some(Approver { subject: s.subject, email: s.email, name: s.name }),
        session: Some(digest("session", &value)),
        can_sign_out: true,
    }))
}

/// Start a session for `identity` with `role`: the cookie value to set.
pub async fn open_session(
    ui: &Ui,
    settings: &OidcSettings,
    identity: Identity,
    role: Role,
) -> Result<String, String> {
    let value = random_value();
    let key = digest("session", &value);
    let now = Utc::now().timestamp_millis();
    let session = Session {
        subject: identity.subject,
        email: identity.email,
        name: identity.name,
        role,
        created_at: now,
        touched_at: now,
        id_token: identity.id_token,
    };
    let until = now + millis(settings.session_idle).min(millis(settings.session_max));
    let text = serde_json::to_string(&session).map_err(|e| e.to_string())?;
    let events = ui.daemon.events().clone();
    tokio::task::spawn_blocking(move || events.put_signin(&key, &text, at_ms(until)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(value)
}

/// End the session `key` (a logout): its ID token, for the provider's end-session call.
pub async fn close_session(ui: &Ui, key: String) -> Result<Option<String>, String> {
    let events = ui.daemon.events().clone();
    tokio::task::spawn_blocking(move || {
        let taken = events.take_signin(&key, Utc::now()).map_err(|e| e.to_string())?;
        Ok(taken.and_then(|t| serde_json::from_str::<Session>(&t).ok()).map(|s| s.id_token))
    })
    .await
    .map_err(|e| e.to_string())?
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn at_ms(ms: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

/// The page is served over https: the request came over https to a proxy that says so, or
/// the configured redirect URL is https.
pub fn served_securely(ui: &Ui, headers: &HeaderMap) -> bool {
    let forwarded =
        headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| {
            p.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        });
    let configured =
        matches!(&ui.settings.auth, UiAuth::Oidc(o) if o.redirect_url.scheme() == "https");
    forwarded || configured
}

/// A `Set-Cookie` value: HttpOnly, on the page's path, `Secure` over https.
pub fn set_cookie(
    ui: &Ui,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age_secs: i64,
    same_site: &str,
) -> Option<HeaderValue> {
    let path = format!("{}/", ui.settings.base_path);
    let secure = if served_securely(ui, headers) { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).ok()
}
