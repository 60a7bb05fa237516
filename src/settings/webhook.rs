//! `serve.webhook:`: how HR systems authenticate to the webhook, and its limits.
//!
//! ```yaml
//! serve:
//!   webhook:
//!     auth:
//!       type: hmac
//!       secrets:                 # one, or two while rotating
//!         - env: XAAS_WEBHOOK_SECRET
//!         - file: /run/secrets/webhook-next
//!       replay_window_secs: 300
//!       require_v2: false        # true: refuse v1 signatures (they do not cover the path)
//!     max_body_bytes: 1048576
//!     rate_limit_per_second: 50
//!     rate_limit_burst: 100
//!     max_records_per_request: 10000
//! ```
//!
//! Secrets are read here, at load time (and again on SIGHUP), so a missing environment
//! variable or an empty file is a config error naming its key rather than a daemon that
//! answers 401 to everyone. Like the rest of [`crate::settings`], resolving is a single step
//! that reports every problem at once.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::diag::{Diagnostic, YamlIndex};

/// `serve.webhook:` as written.
#[derive(Debug, Deserialize)]
pub struct RawWebhook {
    /// How callers authenticate; tagged by `type` (`hmac` or `bearer`). Required.
    #[serde(default)]
    pub auth: Option<RawWebhookAuth>,
    /// The largest request body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Sustained requests per second allowed from one client (by IP address).
    #[serde(default = "default_rate_limit_per_second")]
    pub rate_limit_per_second: u32,
    /// Requests one client may send at once above the sustained rate (the bucket size).
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// The most records one request may carry.
    #[serde(default = "default_max_records_per_request")]
    pub max_records_per_request: usize,
}

impl Default for RawWebhook {
    fn default() -> Self {
        Self {
            auth: None,
            max_body_bytes: default_max_body_bytes(),
            rate_limit_per_second: default_rate_limit_per_second(),
            rate_limit_burst: default_rate_limit_burst(),
            max_records_per_request: default_max_records_per_request(),
        }
    }
}

/// The keys of `serve.webhook:` (for unknown-key suggestions).
pub const WEBHOOK_KEYS: &[&str] = &[
    "auth",
    "max_body_bytes",
    "rate_limit_per_second",
    "rate_limit_burst",
    "max_records_per_request",
];

/// The default `max_body_bytes`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The default `replay_window_secs`.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn default_rate_limit_per_second() -> u32 {
    50
}
fn default_rate_limit_burst() -> u32 {
    100
}
fn default_max_records_per_request() -> usize {
    10_000
}
fn default_replay_window_secs() -> u64 {
    DEFAULT_REPLAY_WINDOW_SECS
}

/// `serve.webhook.auth:`, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawWebhookAuth {
    /// Each request is signed: `X-Xaas-Signature: v2=<hex HMAC-SHA256 of
    /// "{timestamp}\n{METHOD}\n{path}\n{body}">` (or the older `v1=` of "{timestamp}.{body}")
    /// with `X-Xaas-Timestamp: <unix seconds>`.
    Hmac {
        /// One shared secret, or two while rotating (a request signed with either is
        /// accepted).
        #[serde(default)]
        secrets: Vec<RawSecret>,
        /// A request whose timestamp is further than this from the daemon's clock is refused,
        /// and a signed request seen once within it is answered as a duplicate, in seconds.
        #[serde(default = "default_replay_window_secs")]
        replay_window_secs: u64,
        /// Refuse `v1=` signatures, which do not cover the method and the path.
        #[serde(default)]
        require_v2: bool,
    },
    /// `Authorization: Bearer <token>`. Give the token in exactly one of the three places.
    Bearer {
        /// The token itself (prefer `token_file` or `token_env`).
        token: Option<SecretString>,
        /// A file holding the token (e.g. a mounted Kubernetes secret), relative to the
        /// config file.
        token_file: Option<PathBuf>,
        /// The name of an environment variable holding the token.
        token_env: Option<String>,
    },
}

/// One HMAC secret: exactly one of `value`, `env` or `file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// The secret itself (prefer `env` or `file`).
    pub value: Option<SecretString>,
    /// The name of an environment variable holding the secret.
    pub env: Option<String>,
    /// A file holding the secret, relative to the config file; surrounding whitespace is
    /// trimmed.
    pub file: Option<PathBuf>,
}

/// `serve.webhook:`, resolved.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub auth: WebhookAuth,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Sustained requests per second per client IP.
    pub rate_limit_per_second: NonZeroU32,
    /// Burst per client IP.
    pub rate_limit_burst: NonZeroU32,
    /// The most records one request may carry.
    pub max_records_per_request: usize,
}

/// How webhook callers authenticate. `Debug` shows no secret (`SecretString` redacts).
#[derive(Debug, Clone)]
pub enum WebhookAuth {
    /// HMAC-SHA256 signatures (see [`crate::daemon::auth`]).
    Hmac {
        /// One or two secrets (two while rotating).
        secrets: Vec<SecretString>,
        /// Timestamps further than this from now are refused; signed messages are remembered
        /// this long, so a repeat is answered as a duplicate.
        replay_window: Duration,
        /// Only `v2=` signatures are accepted.
        require_v2: bool,
    },
    /// A static bearer token.
    Bearer { token: SecretString },
}

/// Resolve `serve.webhook:` (found at `key`), pushing every problem to `diags`. The only I/O
/// is reading the secrets (environment variables and files).
pub fn resolve(
    raw: RawWebhook,
    key: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<WebhookSettings> {
    let before = diags.len();
    let base = index.file().parent().map(Path::to_path_buf).unwrap_or_default();
    let auth = match raw.auth {
        None => {
            diags.push(index.diag(
                format!("{key}.auth"),
                "missing: add `auth: {type: hmac, secrets: [{env: XAAS_WEBHOOK_SECRET}]}` (or `type: bearer`)",
            ));
            None
        }
        Some(RawWebhookAuth::Hmac { secrets, replay_window_secs, require_v2 }) => {
            let at = format!("{key}.auth.secrets");
            if secrets.is_empty() || secrets.len() > 2 {
                diags.push(index.diag(
                    at.clone(),
                    format!("give one secret, or two while rotating; found {}", secrets.len()),
                ));
            }
            if replay_window_secs == 0 {
                diags.push(
                    index.diag(format!("{key}.auth.replay_window_secs"), "must be greater than 0"),
                );
            }
            let resolved: Vec<Option<SecretString>> = secrets
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let at = format!("{at}[{i}]");
                    let names = ["value", "env", "file"];
                    let place =
                        one_of(&at, "the secret", names, s.value, s.env, s.file, index, diags)?;
                    read_secret(place, &at, &base, index, diags)
                })
                .collect();
            let secrets: Option<Vec<SecretString>> = resolved.into_iter().collect();
            secrets.map(|secrets| WebhookAuth::Hmac {
                secrets,
                replay_window: Duration::from_secs(replay_window_secs),
                require_v2,
            })
        }
        Some(RawWebhookAuth::Bearer { token, token_file, token_env }) => {
            let at = format!("{key}.auth");
            let names = ["token", "token_env", "token_file"];
            one_of(&at, "the bearer token", names, token, token_env, token_file, index, diags)
                .and_then(|place| read_secret(place, &at, &base, index, diags))
                .map(|token| WebhookAuth::Bearer { token })
        }
    };
    let positive = |name: &str, ok: bool, diags: &mut Vec<Diagnostic>| {
        if !ok {
            diags.push(index.diag(format!("{key}.{name}"), "must be greater than 0"));
        }
    };
    positive("max_body_bytes", raw.max_body_bytes > 0, diags);
    positive("max_records_per_request", raw.max_records_per_request > 0, diags);
    let per_second = NonZeroU32::new(raw.rate_limit_per_second);
    positive("rate_limit_per_second", per_second.is_some(), diags);
    let burst = NonZeroU32::new(raw.rate_limit_burst);
    positive("rate_limit_burst", burst.is_some(), diags);
    if diags.len() > before {
        return None;
    }
    Some(WebhookSettings {
        auth: auth?,
        max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
        rate_limit_per_second: per_second?,
        rate_limit_burst: burst?,
        max_records_per_request: raw.max_records_per_request,
    })
}

/// Where one secret is written.
pub(super) enum Place {
    Inline(SecretString),
    Env(String),
    File(PathBuf),
}

/// The one place a secret is given in (`names`: the inline, env and file keys); a
/// diagnostic when none or several are.
#[allow(clippy::too_many_arguments)]
pub(super) fn one_of(
    at: &str,
    what: &str,
    names: [&str; 3],
    inline: Option<SecretString>,
    env: Option<String>,
    file: Option<PathBuf>,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<Place> {
    let given = [inline.is_some(), env.is_some(), file.is_some()].iter().filter(|g| **g).count();
    if given != 1 {
        let [inline_name, env_name, file_name] = names;
        diags.push(index.diag(
            at,
            format!("give {what} as exactly one of `{inline_name}`, `{env_name}` or `{file_name}`"),
        ));
        return None;
    }
    match (inline, env, file) {
        (Some(s), _, _) => Some(Place::Inline(s)),
        (_, Some(e), _) => Some(Place::Env(e)),
        (_, _, Some(f)) => Some(Place::File(f)),
        _ => None,
    }
}

/// Read a secret now; a diagnostic (naming where it was looked for, never the value) when it
/// is missing or empty.
pub(super) fn read_secret(
    place: Place,
    at: &str,
    base: &Path,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<SecretString> {
    let (text, problem) = match place {
        Place::Inline(s) => {
            let empty = s.expose_secret().trim().is_empty();
            (Some(s), empty.then(|| "the secret is empty".to_string()))
        }
        Place::Env(var) => match std::env::var(&var) {
            Ok(v) if !v.trim().is_empty() => (Some(SecretString::from(v.trim().to_string())), None),
            _ => (None, Some(format!("the environment variable {var} is not set or is empty"))),
        },
        Place::File(file) => {
            let path = base.join(file);
            match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim().is_empty() => {
                    (Some(SecretString::from(v.trim().to_string())), None)
                }
                Ok(_) => (None, Some(format!("the secret file {} is empty", path.display()))),
                Err(e) => {
                    (None, Some(format!("cannot read the secret file {}: {e}", path.display())))
                }
            }
        }
    };
    match problem {
        Some(message) => {
            diags.push(index.diag(at, message));
            None
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<WebhookSettings>, Vec<Diagnostic>) {
        let raw: RawWebhook = serde_saphyr::from_str(yaml).unwrap();
        let index = YamlIndex::new("xaas.yaml", yaml);
        let mut diags = Vec::new();
        let s = resolve(raw, "serve.webhook", &index, &mut diags);
        (s, diags)
    }

    #[test]
    fn defaults_and_two_rotation_secrets() {
        let (s, diags) =
            parse("auth:\n  type: hmac\n  secrets:\n    - value: one\n    - value: \" two \"\n");
        assert!(diags.is_empty(), "{diags:?}");
        let s = s.unwrap();
        assert_eq!(s.max_body_bytes, 1024 * 1024);
        assert_eq!(s.rate_limit_per_second.get(), 50);
        assert_eq!(s.rate_limit_burst.get(), 100);
        assert_eq!(s.max_records_per_request, 10_000);
        let WebhookAuth::Hmac { secrets, replay_window, require_v2 } = &s.auth else { panic!() };
        assert!(!require_v2);
        assert_eq!(*replay_window, Duration::from_secs(300));
        assert_eq!(secrets.len(), 2);
        let debug = format!("{s:?}");
        assert!(!debug.contains("one") && !debug.contains("two"), "{debug}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let (s, diags) = parse(
            "auth:\n  type: hmac\n  secrets:\n    - env: XAAS_TEST_WEBHOOK_SECRET_UNSET\n    - value: a\n      env: B\n    - file: /nonexistent/secret\n  replay_window_secs: 0\nmax_body_bytes: 0\nrate_limit_burst: 0\n",
        );
        assert!(s.is_none());
        let got: Vec<String> = diags.iter().map(|d| format!("{}: {}", d.key, d.message)).collect();
        let want = [
            "serve.webhook.auth.secrets: give one secret, or two while rotating; found 3",
            "serve.webhook.auth.replay_window_secs: must be greater than 0",
            "serve.webhook.auth.secrets[0]: the environment variable XAAS_TEST_WEBHOOK_SECRET_UNSET is not set or is empty",
            "serve.webhook.auth.secrets[1]: give the secret as exactly one of `value`, `env` or `file`",
            "serve.webhook.auth.secrets[2]: cannot read the secret file /nonexistent/secret",
            "serve.webhook.max_body_bytes: must be greater than 0",
            "serve.webhook.rate_limit_burst: must be greater than 0",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g} should start with {w}");
        }
    }

    #[test]
    fn missing_auth_and_bearer_from_a_file() {
        let (s, diags) = parse("max_records_per_request: 5\n");
        assert!(s.is_none());
        assert_eq!(diags[0].key, "serve.webhook.auth");
        assert!(diags[0].message.starts_with("missing"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let (s, diags) =
            parse(&format!("auth:\n  type: bearer\n  token_file: {}\n", file.display()));
        assert!(diags.is_empty(), "{diags:?}");
        let WebhookAuth::Bearer { token } = s.unwrap().auth else { panic!() };
        assert_eq!(token.expose_secret(), "s3cret");

        let (_, diags) = parse("auth:\n  type: bearer\n");
        assert_eq!(
            diags[0].message,
            "give the bearer token as exactly one of `token`, `token_env` or `token_file`"
        );
    }
}
