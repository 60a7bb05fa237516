//! `serve.ui:`: the monitoring pages (`/ui`) and their JSON (`/v1/runs`, `/v1/jobs`).
//!
//! ```yaml
//! serve:
//!   ui:
//!     enabled: true
//!     auth:
//!       type: token             # Authorization: Bearer, or the login form's cookie
//!       token_env: XAAS_UI_TOKEN
//!     # or: {type: basic, username: ops, password_file: /run/secrets/ui-password}
//!     # or: {type: oidc, issuer: …, client_id: …} (see [`super::oidc`])
//!     show_profiles: false      # profile values are personal data
//!     runs_per_job: 20
//! ```
//!
//! Off by default: its routes answer 404. Secrets are read at load time, like the webhook's
//! ([`super::webhook`]), so a missing one is a config error naming its key.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use super::oidc::{OidcSettings, RawOidc};
use super::webhook::{one_of, read_secret};
use crate::diag::{Diagnostic, YamlIndex};

/// `serve.ui:` as written.
#[derive(Debug, Deserialize)]
pub struct RawUi {
    /// Serve `/ui` and `/v1/runs`, `/v1/jobs`. Off unless `true`.
    #[serde(default)]
    pub enabled: bool,
    /// How people sign in; tagged by `type` (`token` or `basic`). Required when enabled.
    #[serde(default)]
    pub auth: Option<RawUiAuth>,
    /// Record and show each user's profile values on the run page (personal data).
    #[serde(default)]
    pub show_profiles: bool,
    /// Runs per job in the jobs page's bars and the held list.
    #[serde(default = "default_runs_per_job")]
    pub runs_per_job: usize,
    /// The path prefix a reverse proxy serves the page under, and strips before forwarding
    /// (`/xaas`: the browser asks for `/xaas/ui`, the daemon gets `/ui`). Links and redirects
    /// carry it. None by default.
    #[serde(default)]
    pub base_path: String,
}

/// The keys of `serve.ui:` (for unknown-key suggestions).
pub const UI_KEYS: &[&str] = &["enabled", "auth", "show_profiles", "runs_per_job", "base_path"];

fn default_runs_per_job() -> usize {
    20
}

/// `serve.ui.auth:`, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawUiAuth {
    /// A static admin token: `Authorization: Bearer <token>`, or typed once in the login form
    /// (which sets an HttpOnly, SameSite=Strict cookie). Exactly one of the three places.
    Token { token: Option<SecretString>, token_env: Option<String>, token_file: Option<PathBuf> },
    /// HTTP basic auth with one user.
    Basic {
        username: String,
        password: Option<SecretString>,
        password_env: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// Sign in with the company's identity provider ([`super::oidc`]).
    Oidc(Box<RawOidc>),
}

/// `serve.ui:`, resolved (only when enabled).
#[derive(Debug, Clone)]
pub struct UiSettings {
    pub auth: UiAuth,
    pub show_profiles: bool,
    pub runs_per_job: usize,
    /// `""` or a prefix like `/xaas` (no trailing slash).
    pub base_path: String,
}

/// How the UI authenticates. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub enum UiAuth {
    Token { token: SecretString },
    Basic { username: String, password: SecretString },
    Oidc(Box<OidcSettings>),
}

/// Resolve `serve.ui:` (found at `key`); `None` when it is off or has problems (pushed to
/// `diags`).
pub fn resolve(
    raw: RawUi,
    key: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<UiSettings> {
    if !raw.enabled {
        return None;
    }
    let before = diags.len();
    let base = index.file().parent().map(Path::to_path_buf).unwrap_or_default();
    let at = format!("{key}.auth");
    let base_path = raw.base_path.trim().trim_end_matches('/').to_string();
    if !base_path.is_empty()
        && (!base_path.starts_with('/') || base_path.contains(['?', '#', ' ', '"', '\'']))
    {
        diags.push(index.diag(
            format!("{key}.base_path"),
            "must be a path like `/xaas` (starting with `/`, no query)",
        ));
    }
    let auth = match raw.auth {
        None => {
            diags.push(index.diag(
                at,
                "missing: add `auth: {type: token, token_env: XAAS_UI_TOKEN}` (or `type: basic`)",
            ));
            None
        }
        Some(RawUiAuth::Token { token, token_env, token_file }) => {
            let names = ["token", "token_env", "token_file"];
            one_of(&at, "the token", names, token, token_env, token_file, index, diags)
                .and_then(|place| read_secret(place, &at, &base, index, diags))
                .map(|token| UiAuth::Token { token })
        }
        Some(RawUiAuth::Basic { username, password, password_env, password_file }) => {
            if username.trim().is_empty() || username.contains(':') {
                diags.push(
                    index.diag(format!("{at}.username"), "must be a non-empty name without `:`"),
                );
            }
            let names = ["password", "password_env", "password_file"];
            one_of(&at, "the password", names, password, password_env, password_file, index, diags)
                .and_then(|place| read_secret(place, &at, &base, index, diags))
                .map(|password| UiAuth::Basic { username, password })
        }
        Some(RawUiAuth::Oidc(oidc)) => super::oidc::resolve(*oidc, &at, &base_path, index, diags)
            .map(|o| UiAuth::Oidc(Box::new(o))),
    };
    if raw.runs_per_job == 0 || raw.runs_per_job > 500 {
        diags.push(index.diag(format!("{key}.runs_per_job"), "must be between 1 and 500"));
    }
    if diags.len() > before {
        return None;
    }
    Some(UiSettings {
        auth: auth?,
        show_profiles: raw.show_profiles,
        runs_per_job: raw.runs_per_job,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(yaml: &str) -> (Option<UiSettings>, Vec<Diagnostic>) {
        let raw: RawUi = serde_saphyr::from_str(yaml).unwrap();
        let index = YamlIndex::new("xaas.yaml", yaml);
        let mut diags = Vec::new();
        let s = resolve(raw, "serve.ui", &index, &mut diags);
        (s, diags)
    }

    #[test]
    fn off_by_default_and_needs_auth_when_on() {
        let (s, diags) = parse("show_profiles: true\n");
        assert!(s.is_none() && diags.is_empty());
        let (s, diags) = parse("enabled: true\n");
        assert!(s.is_none());
        assert_eq!(diags[0].key, "serve.ui.auth");
    }

    #[test]
    fn token_and_basic() {
        let (s, diags) = parse("enabled: true\nauth: {type: token, token: abc}\n");
        assert!(diags.is_empty(), "{diags:?}");
        let s = s.unwrap();
        assert_eq!(s.runs_per_job, 20);
        assert!(!s.show_profiles);
        assert!(!format!("{s:?}").contains("abc"));
        let (s, diags) = parse("enabled: true\nauth: {type: basic, username: ops, password: pw}\n");
        assert!(diags.is_empty(), "{diags:?}");
        let UiAuth::Basic { username, password } = s.unwrap().auth else { panic!() };
        assert_eq!((username.as_str(), password.expose_secret()), ("ops", "pw"));
        let (_, diags) = parse(
            "enabled: true\nauth: {type: basic, username: '', password_env: XAAS_UNSET_UI_PW}\nruns_per_job: 0\n",
        );
        let keys: Vec<&str> = diags.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["serve.ui.auth.username", "serve.ui.auth", "serve.ui.runs_per_job"]);
    }

    const OIDC: &str = "enabled: true
base_path: /xaas/
auth:
  type: oidc
  issuer: https://example.okta.com
  client_id: 0oa1
  client_secret: s3cr3t-value
  redirect_url: https://ops.example.com/xaas/ui/oidc/callback
  approvers: {groups: [xaas-approvers]}
";

    #[test]
    fn oidc_defaults_and_the_issuer_as_written() {
        let (s, diags) = parse(OIDC);
        assert!(diags.is_empty(), "{diags:?}");
        let s = s.unwrap();
        assert_eq!(s.base_path, "/xaas", "no trailing slash");
        assert!(!format!("{s:?}").contains("s3cr3t"), "Debug shows no secret");
        let UiAuth::Oidc(o) = s.auth else { panic!("{s:?}") };
        // Compared as a string with the provider's: never given a trailing slash.
        assert_eq!(o.issuer.as_str(), "https://example.okta.com");
        assert_eq!(o.scopes, ["openid", "email", "profile", "groups"]);
        assert_eq!((o.groups_claim.as_str(), o.session_idle.as_secs()), ("groups", 3600));
        assert_eq!((o.session_max.as_secs(), o.clock_skew.as_secs()), (43200, 60));
        assert!(o.approvers.admits(None, &["xaas-approvers".into()]));
        assert!(!o.viewers.admits(Some("x@example.com"), &["xaas-approvers".into()]));
    }

    #[test]
    fn oidc_mistakes_are_named_by_key() {
        let bad = OIDC
            .replace("https://example.okta.com", "http://example.okta.com")
            .replace("/xaas/ui/oidc/callback", "/callback")
            .replace("client_secret: s3cr3t-value", "client_secret_env: XAAS_UNSET_OIDC_SECRET")
            .replace("  approvers: {groups: [xaas-approvers]}\n", "  scopes: [email]\n");
        let (s, diags) = parse(&bad);
        assert!(s.is_none());
        let keys: Vec<&str> = diags.iter().map(|d| d.key.as_str()).collect();
        for key in [
            "serve.ui.auth.issuer",
            "serve.ui.auth.redirect_url",
            "serve.ui.auth.scopes",
            "serve.ui.auth",
        ] {
            assert!(keys.contains(&key), "{key} in {diags:?}");
        }
        let text = format!("{diags:?}");
        assert!(text.contains("/xaas/ui/oidc/callback"), "says which path: {text}");
        assert!(text.contains("https://"), "{text}");
        assert!(text.contains("XAAS_UNSET_OIDC_SECRET is not set"), "{text}");
    }
}
