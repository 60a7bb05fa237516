//! `notify:`: who hears about held runs, failing jobs, recoveries and quarantines.
//!
//! ```yaml
//! notify:
//!   public_url: https://xaas.example.com   # links in messages: {public_url}/ui/runs/{id}
//!   after_failures: 2                      # a job failing: after this many failed runs in a row
//!   throttle_secs: 21600                   # one message per job and kind per 6 hours
//!   targets:
//!     - type: slack                        # a Slack-compatible incoming webhook
//!       url_env: XAAS_SLACK_WEBHOOK_URL    # (url | url_env | url_file: the URL is a secret)
//!     - type: webhook                      # JSON, signed like our own webhook (X-Xaas-Signature)
//!       url: https://hooks.example.com/xaas
//!       secret_env: XAAS_NOTIFY_SECRET     # (secret | secret_env | secret_file)
//! ```
//!
//! Off when absent. Secrets are read at load time, like the webhook's ([`super::webhook`]).
//! Delivery is in [`crate::daemon::notify`]; what is sent when, in [`crate::daemon::watch`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::webhook::{one_of, read_secret};
use crate::diag::{Diagnostic, YamlIndex};

/// `notify:` as written.
#[derive(Debug, Deserialize)]
pub struct RawNotify {
    /// Where people open the daemon's pages; links are left out without it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// A job is announced as failing after this many failed runs in a row.
    #[serde(default = "default_after_failures")]
    pub after_failures: u32,
    /// At most one message per job and kind (held, failing, recovered, quarantined) per
    /// this many seconds.
    #[serde(default = "default_throttle_secs")]
    pub throttle_secs: u64,
    /// Each delivery attempt's timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts per message and target (with a doubling back-off from 1 s).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
}

/// The keys of `notify:` (for unknown-key suggestions).
pub const NOTIFY_KEYS: &[&str] =
    &["public_url", "after_failures", "throttle_secs", "timeout_secs", "attempts", "targets"];

fn default_after_failures() -> u32 {
    2
}
fn default_throttle_secs() -> u64 {
    6 * 3600
}
fn default_timeout_secs() -> u64 {
    10
}
fn default_attempts() -> u32 {
    3
}

/// One `notify.targets[]` entry, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawTarget {
    /// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...): `{"text": ...}`.
    Slack { url: Option<SecretString>, url_env: Option<String>, url_file: Option<PathBuf> },
    /// A JSON document per notification, signed with HMAC-SHA256 like our own webhook.
    Webhook {
        url: String,
        secret: Option<SecretString>,
        secret_env: Option<String>,
        secret_file: Option<PathBuf>,
    },
}

/// `notify:`, resolved.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Without a trailing slash.
    pub public_url: Option<String>,
    pub after_failures: u32,
    pub throttle: Duration,
    pub timeout: Duration,
    pub attempts: u32,
    pub targets: Vec<Target>,
}

/// Where a notification goes. `Debug` shows no secret (a Slack URL is one).
#[derive(Clone)]
pub enum Target {
    Slack { url: SecretString },
    Webhook { url: String, secret: SecretString },
}

impl Target {
    /// What logs and errors may name: the kind, and the webhook's host.
    pub fn describe(&self) -> String {
        match self {
            Target::Slack { .. } => "slack".to_string(),
            Target::Webhook { url, .. } => {
                let host = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                format!("webhook {host}")
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Target::Slack { url } => url.expose_secret(),
            Target::Webhook { url, .. } => url,
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Resolve `notify:`; `None` when it has problems (pushed to `diags`).
pub fn resolve(
    raw: RawNotify,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<NotifySettings> {
    let before = diags.len();
    let base = index.file().parent().map(Path::to_path_buf).unwrap_or_default();
    let public_url = raw.public_url.map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &public_url
        && !is_http_url(u)
    {
        diags.push(index.diag("notify.public_url", format!("`{u}` is not an http(s) URL")));
    }
    if raw.after_failures == 0 {
        diags.push(index.diag("notify.after_failures", "must be at least 1"));
    }
    if raw.timeout_secs == 0 || raw.timeout_secs > 120 {
        diags.push(index.diag("notify.timeout_secs", "must be between 1 and 120"));
    }
    if raw.attempts == 0 || raw.attempts > 10 {
        diags.push(index.diag("notify.attempts", "must be between 1 and 10"));
    }
    let mut targets = Vec::new();
    for (i, t) in raw.targets.into_iter().enumerate() {
        let at = format!("notify.targets[{i}]");
        let target = match t {
            RawTarget::Slack { url, url_env, url_file } => {
                let names = ["url", "url_env", "url_file"];
                one_of(&at, "the webhook URL", names, url, url_env, url_file, index, diags)
                    .and_then(|place| read_secret(place, &at, &base, index, diags))
                    .map(|url| Target::Slack { url })
            }
            RawTarget::Webhook { url, secret, secret_env, secret_file } => {
                let names = ["secret", "secret_env", "secret_file"];
                let secret = one_of(
                    &at,
                    "the signing secret",
                    names,
                    secret,
                    secret_env,
                    secret_file,
                    index,
                    diags,
                )
                .and_then(|place| read_secret(place, &at, &base, index, diags));
                secret.map(|secret| Target::Webhook { url, secret })
            }
        };
        if let Some(t) = &target
            && !is_http_url(t.url())
        {
            // The URL of a Slack target is a secret: name the key, not the value.
            diags.push(index.diag(format!("{at}.url"), "is not an http(s) URL"));
        }
        targets.extend(target);
    }
    if diags.len() > before {
        return None;
    }
    Some(NotifySettings {
        public_url,
        after_failures: raw.after_failures,
        throttle: Duration::from_secs(raw.throttle_secs),
        timeout: Duration::from_secs(raw.timeout_secs),
        attempts: raw.attempts,
        targets,
    })
}

fn is_http_url(u: &str) -> bool {
    reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<NotifySettings>, Vec<Diagnostic>) {
        let raw: RawNotify = serde_saphyr::from_str(yaml).unwrap();
        let index = YamlIndex::new("xaas.yaml", yaml);
        let mut diags = Vec::new();
        let s = resolve(raw, &index, &mut diags);
        (s, diags)
    }

    #[test]
    fn defaults_and_both_targets() {
        let (s, diags) = parse(
            "public_url: https://xaas.example.com/\ntargets:\n  - {type: slack, url: 'https://hooks.slack.com/services/T/B/secretpart'}\n  - {type: webhook, url: 'http://127.0.0.1:9/n', secret: s3cret}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let s = s.unwrap();
        assert_eq!(s.public_url.as_deref(), Some("https://xaas.example.com"));
        assert_eq!((s.after_failures, s.throttle.as_secs(), s.attempts), (2, 21600, 3));
        assert_eq!(s.targets.len(), 2);
        let shown = format!("{s:?}");
        assert!(!shown.contains("secretpart") && !shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("webhook 127.0.0.1"), "{shown}");
    }

    #[test]
    fn each_problem_names_its_key_and_never_the_secret_url() {
        let (s, diags) = parse(
            "after_failures: 0\nattempts: 0\ntargets:\n  - {type: slack, url: 'not a url secretpart'}\n  - {type: webhook, url: 'https://h.example.com'}\n  - {type: slack, url_env: XAAS_UNSET_NOTIFY_URL}\n",
        );
        assert!(s.is_none());
        let keys: Vec<&str> = diags.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "notify.after_failures",
                "notify.attempts",
                "notify.targets[0].url",
                "notify.targets[1]",
                "notify.targets[2]"
            ]
        );
        assert!(diags.iter().all(|d| !d.to_string().contains("secretpart")), "{diags:?}");
    }
}
