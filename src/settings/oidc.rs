//! `serve.ui.auth: {type: oidc}`: sign in to the monitoring page with the company's identity
//! provider (OpenID Connect authorization code with PKCE).
//!
//! ```yaml
//! serve:
//!   ui:
//!     enabled: true
//!     auth:
//!       type: oidc
//!       issuer: https://example.okta.com          # discovery: {issuer}/.well-known/openid-configuration
//!       client_id: 0oa1b2c3d4
//!       client_secret_env: XAAS_OIDC_CLIENT_SECRET # or client_secret_file / client_secret,
//!       # or private_key_jwt: private_key_file: /run/secrets/oidc.pem (+ key_id)
//!       redirect_url: https://ops.example.com/ui/oidc/callback
//!       scopes: [openid, email, profile, groups]  # the default
//!       groups_claim: groups                      # the ID token claim listing the groups
//!       viewers: {groups: [xaas-viewers]}
//!       approvers: {groups: [xaas-approvers], emails: [lead@example.com]}
//!       session_idle_secs: 3600                   # signed out after an hour without a page
//!       session_max_secs: 43200                   # and after 12 hours in any case
//!       clock_skew_secs: 60                       # tolerated difference between the clocks
//! ```
//!
//! Approvers may do everything viewers may, and approve held runs and resume jobs. Anyone the
//! two lists do not name gets a 403 page after signing in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::webhook::{Place, one_of, read_secret};
use crate::diag::{Diagnostic, YamlIndex};

/// The path of the callback route, under the page's base path.
pub const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// `serve.ui.auth` with `type: oidc`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The issuer URL; its discovery document is read at start-up (and retried).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// `private_key_jwt` instead of a secret: the app's PEM private key (RSA or EC P-256).
    pub private_key_file: Option<PathBuf>,
    pub private_key_env: Option<String>,
    /// The key id registered with the app, sent as the assertion's `kid`.
    pub key_id: Option<String>,
    /// Where the identity provider sends the browser back: `{page URL}/ui/oidc/callback`.
    pub redirect_url: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default)]
    pub viewers: Members,
    #[serde(default)]
    pub approvers: Members,
    #[serde(default = "default_idle")]
    pub session_idle_secs: u64,
    #[serde(default = "default_max")]
    pub session_max_secs: u64,
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups"].map(String::from).to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_idle() -> u64 {
    3600
}
fn default_max() -> u64 {
    12 * 3600
}
fn default_skew() -> u64 {
    60
}

/// Who holds a role: members of any of `groups` (from the groups claim), or the people whose
/// verified email is in `emails` (compared without case).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Members {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub emails: Vec<String>,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.emails.is_empty()
    }

    /// Someone with `email` (verified) in `groups` holds this role.
    pub fn admits(&self, email: Option<&str>, groups: &[String]) -> bool {
        let by_email = email.is_some_and(|e| self.emails.iter().any(|m| m.eq_ignore_ascii_case(e)));
        by_email || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `client_secret_basic`.
    Secret(SecretString),
    /// `private_key_jwt`: the PEM key and its key id.
    PrivateKey { pem: SecretString, key_id: Option<String> },
}

/// `serve.ui.auth: {type: oidc}`, resolved. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Exactly as written: OpenID Connect compares it with the provider's `issuer` (and the
    /// tokens' `iss`) as a string, so `https://example.okta.com` and
    /// `https://example.okta.com/` are different issuers.
    pub issuer: openidconnect::IssuerUrl,
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub redirect_url: Url,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub viewers: Members,
    pub approvers: Members,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub clock_skew: Duration,
}

/// An `http://` URL is accepted only on a loopback host (a test provider, a local proxy).
fn checked_url(
    text: &str,
    at: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<Url> {
    match Url::parse(text.trim()) {
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(u)
            if u.scheme() == "http"
                && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) =>
        {
            Some(u)
        }
        Ok(u) => {
            diags.push(
                index
                    .diag(at, format!("`{u}` must be an https:// URL (http:// only on localhost)")),
            );
            None
        }
        Err(e) => {
            diags.push(index.diag(at, format!("not a URL: {e}")));
            None
        }
    }
}

/// Resolve the `oidc` auth found at `at`; `base_path` is the page's (for the redirect URL).
pub fn resolve(
    raw: RawOidc,
    at: &str,
    base_path: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<OidcSettings> {
    let before = diags.len();
    let base = index.file().parent().map(Path::to_path_buf).unwrap_or_default();
    let issuer = checked_url(&raw.issuer, &format!("{at}.issuer"), index, diags);
    let redirect_url = checked_url(&raw.redirect_url, &format!("{at}.redirect_url"), index, diags);
    let callback = format!("{base_path}{CALLBACK_PATH}");
    if let Some(u) = &redirect_url
        && u.path() != callback
    {
        diags.push(index.diag(
            format!("{at}.redirect_url"),
            format!(
                "its path must be `{callback}` (the page's callback{}), not `{}`",
                if base_path.is_empty() {
                    String::new()
                } else {
                    format!(" under base_path `{base_path}`")
                },
                u.path()
            ),
        ));
    }
    if raw.client_id.trim().is_empty() {
        diags.push(index.diag(format!("{at}.client_id"), "must not be empty"));
    }
    let client_auth = client_auth(&raw, at, &base, index, diags);
    if !raw.scopes.iter().any(|s| s == "openid") {
        diags.push(index.diag(format!("{at}.scopes"), "must include `openid`"));
    }
    if raw.viewers.is_empty() && raw.approvers.is_empty() {
        diags.push(index.diag(
            at,
            "nobody could use the page: list `viewers` or `approvers` (groups or emails)",
        ));
    }
    if raw.groups_claim.trim().is_empty() {
        diags.push(index.diag(format!("{at}.groups_claim"), "must not be empty"));
    }
    for (key, secs) in
        [("session_idle_secs", raw.session_idle_secs), ("session_max_secs", raw.session_max_secs)]
    {
        if secs == 0 {
            diags.push(index.diag(format!("{at}.{key}"), "must be greater than 0"));
        }
    }
    if raw.clock_skew_secs > 600 {
        diags.push(index.diag(format!("{at}.clock_skew_secs"), "must be at most 600 (10 minutes)"));
    }
    if diags.len() > before {
        return None;
    }
    issuer.as_ref()?;
    let issuer = openidconnect::IssuerUrl::new(raw.issuer.trim().to_string()).ok()?;
    Some(OidcSettings {
        issuer,
        client_id: raw.client_id.trim().to_string(),
        client_auth: client_auth?,
        redirect_url: redirect_url?,
        scopes: raw.scopes,
        groups_claim: raw.groups_claim,
        viewers: raw.viewers,
        approvers: raw.approvers,
        session_idle: Duration::from_secs(raw.session_idle_secs),
        session_max: Duration::from_secs(raw.session_max_secs),
        clock_skew: Duration::from_secs(raw.clock_skew_secs),
    })
}

/// Exactly one of a client secret (three places) or a private key (two).
fn client_auth(
    raw: &RawOidc,
    at: &str,
    base: &Path,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<ClientAuth> {
    let secret_given = raw.client_secret.is_some()
        || raw.client_secret_env.is_some()
        || raw.client_secret_file.is_some();
    let key_given = raw.private_key_file.is_some() || raw.private_key_env.is_some();
    if secret_given && key_given {
        diags.push(
            index.diag(at, "give a client secret or a private key (private_key_jwt), not both"),
        );
        return None;
    }
    if key_given {
        let place = match (&raw.private_key_file, &raw.private_key_env) {
            (Some(f), None) => Place::File(f.clone()),
            (None, Some(e)) => Place::Env(e.clone()),
            _ => {
                diags.push(index.diag(
                    at,
                    "give the private key as one of `private_key_file` or `private_key_env`",
                ));
                return None;
            }
        };
        let pem = read_secret(place, at, base, index, diags)?;
        use secrecy::ExposeSecret;
        let pem_bytes = pem.expose_secret().as_bytes();
        if let Err(e) =
            crate::okta::auth::ClientAssertion::from_pem(pem_bytes, &raw.client_id, None)
        {
            diags.push(index.diag(at, e));
            return None;
        }
        return Some(ClientAuth::PrivateKey { pem, key_id: raw.key_id.clone() });
    }
    let names = ["client_secret", "client_secret_env", "client_secret_file"];
    let place = one_of(
        at,
        "the client secret (or a private key: `private_key_file`)",
        names,
        raw.client_secret.clone(),
        raw.client_secret_env.clone(),
        raw.client_secret_file.clone(),
        index,
        diags,
    )?;
    read_secret(place, at, base, index, diags).map(ClientAuth::Secret)
}
