//! Settings: the YAML config file ops write, layered with `XAAS_*` environment overrides.
//!
//! Layers, lowest first: built-in defaults → the YAML file → `XAAS_*` environment variables
//! (`__` separates nesting levels, e.g. `XAAS_OKTA__ORG_URL`, `XAAS_OKTA__AUTH__TOKEN`).
//!
//! Loading is "parse, don't validate": raw serde structs go through one pure step
//! ([`load`]) that returns domain types or *every* problem at once, each with its file, line
//! and key. Unknown keys are errors (with a did-you-mean suggestion), because a typo in an
//! identity pipeline should never silently fall back to a default. The only I/O is reading the
//! config file and the mapping files it names; nothing here touches the network, which is
//! what lets `xaas validate` run in CI.

pub mod notify;
pub mod oidc;
mod raw;
pub mod schedule;
pub mod ui;
pub mod webhook;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::diag::{Diagnostic, Diagnostics, YamlIndex, suggest};
use crate::mapping::Mapping;
use crate::okta::batch::SessionMode;
use crate::okta::client::ClientOptions;
use crate::okta::rate_limit::RateOptions;
use crate::okta::session::SessionOptions;
use crate::sources::SourceConfig;

/// Each component owns its resolved settings; they are re-exported here, where the config
/// file is read.
pub use crate::okta::config::{Auth, OktaSettings, SecretError, TokenSource};
pub use crate::state::config::{
    DEFAULT_LEASE_SECS, DEFAULT_STATE_FILE, DEFAULT_TABLE_PREFIX, DynamoStateSettings,
    StateBackend, StateSettings,
};

pub use raw::{
    MissedRuns, RawAuth, RawJob, RawLeavers, RawOkta, RawSafeguards, RawServe, RawState, Realtime,
    StateBackendKind,
};

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file these settings came from.
    pub file: PathBuf,
    /// Relative paths in the config (mappings, CSV files) are resolved against this directory.
    pub base_dir: PathBuf,
    pub okta: OktaSettings,
    /// Where the state (what Okta confirmed, run history) is kept.
    pub state: StateSettings,
    pub jobs: Vec<Job>,
    /// The daemon (`xaas serve`).
    pub serve: ServeSettings,
    /// Who hears about held runs and failing jobs; `None`: nobody.
    pub notify: Option<notify::NotifySettings>,
}

/// `serve:`, resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: std::net::SocketAddr,
    pub shutdown_deadline: Duration,
    pub batch_window: Duration,
    pub max_batch_records: usize,
    /// `None`: the webhook is off (its routes answer 404).
    pub webhook: Option<webhook::WebhookSettings>,
    /// `None`: the UI is off (its routes answer 404).
    pub ui: Option<ui::UiSettings>,
}

/// How users missing from the source become deactivations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leavers {
    pub deactivate_missing: bool,
    /// At least 1.
    pub missing_runs: u32,
}

/// `jobs[].groups`: what happens to the groups and memberships a job gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    pub remove_memberships_on_deactivate: bool,
    /// `None`: groups are never deleted; otherwise at least 1.
    pub retire_after_runs: Option<u32>,
}

/// Per-run thresholds; `None` turns one off.
#[derive(Debug, Clone, PartialEq)]
pub struct Safeguards {
    pub max_deactivations: Option<u64>,
    pub max_deactivations_percent: Option<f64>,
    pub max_creations: Option<u64>,
    pub max_creations_percent: Option<f64>,
    pub min_source_percent: Option<f64>,
    pub max_membership_removals: Option<u64>,
    pub max_membership_removals_percent: Option<f64>,
    pub max_group_deletions: Option<u64>,
    pub max_group_deletions_percent: Option<f64>,
    pub on_hold: OnHold,
}

impl Default for Safeguards {
    fn default() -> Self {
        let r = RawSafeguards::default();
        Self {
            max_deactivations: r.max_deactivations,
            max_deactivations_percent: r.max_deactivations_percent,
            max_creations: r.max_creations,
            max_creations_percent: r.max_creations_percent,
            min_source_percent: r.min_source_percent,
            max_membership_removals: r.max_membership_removals,
            max_membership_removals_percent: r.max_membership_removals_percent,
            max_group_deletions: r.max_group_deletions,
            max_group_deletions_percent: r.max_group_deletions_percent,
            on_hold: r.on_hold,
        }
    }
}

/// What a held run still sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHold {
    /// Nothing at all (the default).
    #[default]
    Nothing,
    /// Creations, updates and reactivations, when only a deactivation threshold was crossed.
    Upserts,
}

/// The default `full_resync_every`.
pub const DEFAULT_FULL_RESYNC_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One job: a source, a mapping, and the identity source it feeds.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub identity_source_id: String,
    pub source: SourceConfig,
    /// The mapping file, resolved against the config file's directory.
    pub mapping_path: PathBuf,
    pub mapping: Arc<Mapping>,
    /// When the daemon (`xaas serve`) runs the job, in `timezone`; `run` ignores it.
    pub schedule: Option<schedule::Schedule>,
    /// The time zone of `schedule`.
    pub timezone: chrono_tz::Tz,
    /// Scheduled runs start up to this long after their time (random).
    pub jitter: Duration,
    pub missed: MissedRuns,
    pub sessions: SessionMode,
    /// Abort the run, sending nothing, when more records than this are rejected.
    pub max_rejected: Option<ErrorBudget>,
    /// `max_memory_mb`, in bytes (`None`: the container's limit, if any).
    pub max_memory: Option<u64>,
    /// Send only what changed since Okta last confirmed it.
    pub delta: bool,
    /// A full resync is due this long after the last one; `None`: never.
    pub full_resync_every: Option<Duration>,
    pub leavers: Leavers,
    pub safeguards: Safeguards,
    pub groups: GroupSettings,
    /// Which pushed changes skip the session (`raw::Realtime`).
    pub realtime: Realtime,
    /// Delta runs this small go through the direct endpoints (0: never).
    pub direct_max_changes: u64,
    /// Lasting failures in a row before the schedule backs off (0: never).
    pub quarantine_after: u32,
    /// The other jobs feeding the same identity source: a group one of them created is never
    /// deleted by this one.
    pub peers: Vec<String>,
}

/// An error budget (`max_rejected`): a count of rejected records, or a percentage of the
/// records read. Applies to every source type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorBudget {
    Count(u64),
    Percent(f64),
}

impl ErrorBudget {
    /// Whether `rejected` already exceeds a count budget (a percentage needs the total).
    pub fn exceeded_early(self, rejected: u64) -> Option<String> {
        match self {
            ErrorBudget::Count(max) if rejected > max => Some(format!(
                "more than {max} record(s) rejected (max_rejected: {max}); the pull was stopped"
            )),
            _ => None,
        }
    }

    /// Whether `rejected` of `read` records exceeds the budget.
    pub fn exceeded(self, rejected: u64, read: u64) -> Option<String> {
        match self {
            ErrorBudget::Count(_) => self.exceeded_early(rejected),
            ErrorBudget::Percent(p) => {
                let share = if read == 0 { 0.0 } else { rejected as f64 * 100.0 / read as f64 };
                (share > p).then(|| {
                    format!(
                        "{rejected} of {read} record(s) rejected ({share:.2}%), over max_rejected: {p}%"
                    )
                })
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for ErrorBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "max_rejected must be a count (`50`) or a percentage (`5%`), found `{s}`"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(ErrorBudget::Count(n)),
            Raw::Text(t) => {
                let t = t.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(v) if (0.0..=100.0).contains(&v) => Ok(ErrorBudget::Percent(v)),
                        _ => Err(bad(t)),
                    }
                } else {
                    t.parse::<u64>().map(ErrorBudget::Count).map_err(|_| bad(t))
                }
            }
        }
    }
}

impl Settings {
    /// What is allowed but works differently than ops may expect: `xaas validate` prints
    /// these as notes and the daemon logs them at start.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        for job in &self.jobs {
            if !self.state.store_profiles && !job.mapping.references().is_empty() {
                out.push(format!(
                    "job `{}`: its mapping has `references`, and `state.store_profiles: false` \
                     leaves no confirmed profiles to resolve them from, so a pushed user whose \
                     reference names someone outside the same push is held for the next \
                     scheduled run (scheduled runs resolve every reference)",
                    job.name
                ));
            }
        }
        out
    }

    /// The names of the jobs that import into identity source `source`.
    pub fn jobs_of(&self, source: &str) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.identity_source_id == source)
            .map(|j| j.name.clone())
            .collect()
    }

    /// The jobs selected by `--job NAME` (all when `None`).
    pub fn select_jobs(&self, name: Option<&str>) -> Result<Vec<&Job>, String> {
        match name {
            None => Ok(self.jobs.iter().collect()),
            Some(n) => match self.jobs.iter().find(|j| j.name == n) {
                Some(j) => Ok(vec![j]),
                None => {
                    let names: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
                    let hint = suggest(n, &names)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    Err(format!("no job named `{n}`{hint}; jobs: {}", names.join(", ")))
                }
            },
        }
    }
}

pub use crate::diag::is_loopback_http;

/// Load and validate `path`, with `XAAS_*` overrides from the process environment.
pub fn load(path: &Path) -> Result<Settings, Diagnostics> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(path, &env)
}

/// Load and validate `path` with the given environment (tests pass their own).
pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Settings, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    load_from_str(path, &text, env)
}

/// Validate `text` as the config file `path` (whose directory relative paths are resolved
/// against) with the given environment. The only I/O is reading the mapping files it names.
pub fn load_from_str(
    path: &Path,
    text: &str,
    env: &[(String, String)],
) -> Result<Settings, Diagnostics> {
    let text = text.to_string();
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    let index = YamlIndex::new(path, &text);
    let mut diags = Vec::new();
    let Some(raw) = raw::parse(path, &text, env, &index, &mut diags) else {
        return Err(Diagnostics(diags));
    };
    let settings = validate(path, &base_dir, raw, &index, &mut diags);
    match settings {
        Some(s) if diags.is_empty() => Ok(s),
        _ => Err(Diagnostics(diags)),
    }
}

fn validate(
    path: &Path,
    base_dir: &Path,
    raw: raw::RawSettings,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<Settings> {
    let okta = raw.okta.and_then(|o| validate_okta(o, index, diags));
    let mut jobs = Vec::new();
    let mut names = std::collections::HashSet::new();
    if raw.jobs.is_empty() && diags.is_empty() {
        diags.push(index.diag("jobs", "no jobs are defined: add at least one under `jobs`"));
    }
    for (i, job) in raw.jobs.into_iter().enumerate() {
        let Some(job) = job else { continue };
        let key = format!("jobs[{i}]");
        if !names.insert(job.name.clone()) {
            diags.push(
                index.diag(format!("{key}.name"), format!("duplicate job name `{}`", job.name)),
            );
        }
        if let Some(j) = validate_job(&key, job, base_dir, index, diags) {
            jobs.push(j);
        }
    }
    let sources: Vec<(String, String)> =
        jobs.iter().map(|j| (j.name.clone(), j.identity_source_id.clone())).collect();
    for j in &mut jobs {
        j.peers = sources
            .iter()
            .filter(|(name, source)| *name != j.name && *source == j.identity_source_id)
            .map(|(name, _)| name.clone())
            .collect();
    }
    let raw_state = raw.state.unwrap_or_default();
    let state = StateSettings {
        backend: match raw_state.backend {
            StateBackendKind::Sqlite => StateBackend::Sqlite {
                path: base_dir.join(raw_state.path.unwrap_or_else(|| DEFAULT_STATE_FILE.into())),
            },
            StateBackendKind::Dynamodb => {
                let table_prefix =
                    raw_state.table_prefix.unwrap_or_else(|| DEFAULT_TABLE_PREFIX.into());
                // Table names: 3-255 of [A-Za-z0-9_.-]; the longest suffix is `open_events`.
                if table_prefix.len() > 200
                    || !table_prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    diags.push(index.diag(
                        "state.table_prefix",
                        "a table prefix takes only letters, digits, `_`, `-` and `.` (at most 200)",
                    ));
                }
                let lease_secs = raw_state.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
                if lease_secs < 2 {
                    diags.push(index.diag("state.lease_secs", "a lease lasts at least 2 seconds"));
                }
                StateBackend::Dynamodb(DynamoStateSettings {
                    table_prefix,
                    region: raw_state.region,
                    endpoint_url: raw_state.endpoint_url,
                    lease: Duration::from_secs(lease_secs.max(2)),
                })
            }
        },
        store_profiles: raw_state.store_profiles,
        history: history_policy(&raw_state.history, index, diags),
    };
    let serve = validate_serve(raw.serve.unwrap_or_default(), index, diags);
    // Its problems are in `diags`, which fail the load.
    let notify = raw.notify.and_then(|n| notify::resolve(n, index, diags));
    Some(Settings {
        file: path.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        okta: okta?,
        state,
        jobs,
        serve: serve?,
        notify,
    })
}

/// `state.history`, resolved: `null` keeps forever, 0 only by count.
fn history_policy(
    raw: &raw::RawHistory,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> crate::state::config::HistoryPolicy {
    let mut days = |key: &str, d: Option<f64>| match d {
        None => None,
        Some(d) if d.is_finite() && (0.0..=36_500.0).contains(&d) => {
            Some(Duration::from_secs_f64(d * 86_400.0))
        }
        Some(_) => {
            diags.push(index.diag(
                format!("state.history.{key}"),
                "must be a number of days from 0 to 36500, or null to keep forever",
            ));
            None
        }
    };
    crate::state::config::HistoryPolicy {
        keep_runs_for: days("keep_days", raw.keep_days),
        keep_runs: raw.keep_runs,
        keep_events_for: days("events_keep_days", raw.events_keep_days),
    }
}

fn validate_serve(
    raw: RawServe,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<ServeSettings> {
    let before = diags.len();
    let listen = match raw.listen.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            diags.push(index.diag(
                "serve.listen",
                format!("`{}` is not an address like `0.0.0.0:8080`: {e}", raw.listen),
            ));
            None
        }
    };
    if raw.max_batch_records == 0 {
        diags.push(index.diag("serve.max_batch_records", "must be at least 1"));
    }
    let webhook = match raw.webhook {
        None => None,
        Some(w) => webhook::resolve(w, "serve.webhook", index, diags),
    };
    let ui = raw.ui.and_then(|u| ui::resolve(u, "serve.ui", index, diags));
    if diags.len() > before {
        return None;
    }
    Some(ServeSettings {
        listen: listen?,
        shutdown_deadline: Duration::from_secs(raw.shutdown_deadline_secs),
        batch_window: Duration::from_millis(raw.batch_window_ms),
        max_batch_records: raw.max_batch_records,
        webhook,
        ui,
    })
}

fn validate_okta(
    raw: RawOkta,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<OktaSettings> {
    let before = diags.len();
    let spacing = Duration::from_millis(raw.session_spacing_ms());
    let org_url = match raw.org_url.as_deref().map(Url::parse) {
        None => {
            diags.push(index.diag("okta.org_url", "missing: set it to https://{yourOktaDomain}"));
            None
        }
        Some(Err(e)) => {
            diags.push(index.diag("okta.org_url", format!("not a valid url: {e}")));
            None
        }
        Some(Ok(url)) if url.scheme() == "https" || is_loopback_http(&url) => {
            if url.path() != "/" || url.query().is_some() {
                diags.push(index.diag(
                    "okta.org_url",
                    "give only the org's base url, e.g. https://example.okta.com (no path)",
                ));
            }
            Some(url)
        }
        Some(Ok(url)) => {
            diags.push(index.diag(
                "okta.org_url",
                format!(
                    "`{url}` must use https://; plain http:// is allowed only for loopback addresses (the emulator)"
                ),
            ));
            None
        }
    };
    let auth = match raw.auth {
        None => {
            diags.push(index.diag(
                "okta.auth",
                "missing: add `auth: {type: api_token, token_file: /path/to/token}` (or token / token_env)",
            ));
            None
        }
        Some(RawAuth::ApiToken { token, token_file, token_env }) => {
            let given = [token.is_some(), token_file.is_some(), token_env.is_some()];
            match (given.iter().filter(|g| **g).count(), token, token_file, token_env) {
                (1, Some(t), _, _) => Some(Auth::ApiToken(TokenSource::Inline(t))),
                (1, _, Some(f), _) => {
                    Some(Auth::ApiToken(TokenSource::File(index_dir(index).join(f))))
                }
                (1, _, _, Some(e)) => Some(Auth::ApiToken(TokenSource::Env(e))),
                (0, ..) => {
                    diags.push(index.diag(
                        "okta.auth",
                        "give the api token as one of `token`, `token_file` or `token_env`",
                    ));
                    None
                }
                _ => {
                    diags.push(index.diag(
                        "okta.auth",
                        "give the api token in only one of `token`, `token_file` or `token_env`",
                    ));
                    None
                }
            }
        }
        Some(RawAuth::Oauth {
            client_id,
            private_key,
            private_key_file,
            private_key_env,
            kid,
            scopes,
        }) => {
            if client_id.trim().is_empty() {
                diags.push(index.diag("okta.auth.client_id", "must not be empty"));
            }
            let given =
                [private_key.is_some(), private_key_file.is_some(), private_key_env.is_some()];
            let key = match (
                given.iter().filter(|g| **g).count(),
                private_key,
                private_key_file,
                private_key_env,
            ) {
                (1, Some(k), _, _) => Some(TokenSource::Inline(k)),
                (1, _, Some(f), _) => Some(TokenSource::File(index_dir(index).join(f))),
                (1, _, _, Some(e)) => Some(TokenSource::Env(e)),
                _ => {
                    diags.push(index.diag(
                        "okta.auth",
                        "give the pem private key in exactly one of `private_key`, `private_key_file` or `private_key_env`",
                    ));
                    None
                }
            };
            key.map(|private_key| Auth::OAuth {
                client_id: client_id.trim().to_string(),
                private_key,
                kid,
                scopes: scopes.unwrap_or_default(),
            })
        }
    };
    let positive = |key: &str, v: u64, diags: &mut Vec<Diagnostic>| {
        if v == 0 {
            diags.push(index.diag(format!("okta.{key}"), "must be greater than 0"));
        }
    };
    positive("request_timeout_secs", raw.request_timeout_secs, diags);
    positive("poll_initial_ms", raw.poll_initial_ms, diags);
    positive("poll_max_secs", raw.poll_max_secs, diags);
    positive("session_timeout_secs", raw.session_timeout_secs, diags);
    positive("max_concurrent_requests", raw.max_concurrent_requests as u64, diags);
    if raw.max_concurrent_requests > crate::okta::client::OKTA_MAX_CONCURRENT_REQUESTS {
        diags.push(index.diag(
            "okta.max_concurrent_requests",
            format!(
                "must be at most {}: Okta allows that many concurrent requests per org (35 on Integrator Free), and answers 429 to the rest",
                crate::okta::client::OKTA_MAX_CONCURRENT_REQUESTS
            ),
        ));
    }
    positive("max_rate_limit_wait_secs", raw.max_rate_limit_wait_secs, diags);
    if raw.max_requests_per_minute == Some(0) {
        diags.push(index.diag("okta.max_requests_per_minute", "must be greater than 0"));
    }
    if !(1..=100).contains(&raw.rate_limit_share_percent) {
        diags.push(index.diag("okta.rate_limit_share_percent", "must be between 1 and 100"));
    }
    if diags.len() > before {
        return None;
    }
    Some(OktaSettings {
        org_url: org_url?,
        auth: auth?,
        client: ClientOptions {
            request_timeout: Duration::from_secs(raw.request_timeout_secs),
            max_rate_limit_retries: raw.max_rate_limit_retries,
            max_rate_limit_wait: Duration::from_secs(raw.max_rate_limit_wait_secs),
            max_retries: raw.max_retries,
            retry_backoff: Duration::from_millis(raw.retry_backoff_ms),
            max_concurrent_requests: raw.max_concurrent_requests,
            rate: RateOptions {
                requests_per_minute: raw.max_requests_per_minute.and_then(NonZeroU32::new),
                org_share_percent: raw.rate_limit_share_percent,
                adaptive: true,
            },
        },
        sessions: SessionOptions {
            spacing,
            poll_initial: Duration::from_millis(raw.poll_initial_ms),
            poll_max: Duration::from_secs(raw.poll_max_secs),
            session_timeout: Duration::from_secs(raw.session_timeout_secs),
            max_replays: raw.max_session_replays,
            foreign_session_wait: Duration::from_secs(raw.foreign_session_wait_secs),
        },
    })
}

fn index_dir(index: &YamlIndex) -> PathBuf {
    index.file().parent().map(Path::to_path_buf).unwrap_or_default()
}

fn validate_job(
    key: &str,
    raw: RawJob,
    base_dir: &Path,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<Job> {
    let before = diags.len();
    let valid_name = !raw.name.is_empty()
        && raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        diags.push(index.diag(
            format!("{key}.name"),
            format!("`{}` is not a valid job name: use letters, digits, `-` and `_`", raw.name),
        ));
    }
    if raw.identity_source_id.trim().is_empty() {
        diags.push(index.diag(
            format!("{key}.identity_source_id"),
            "missing: the id of the Custom Identity Source app (it starts with 0oa)",
        ));
    }
    let timezone = match raw.timezone.as_deref().map(str::trim) {
        None => chrono_tz::UTC,
        Some(name) => match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                diags.push(index.diag(
                    format!("{key}.timezone"),
                    format!("`{name}` is not an IANA time zone name like `Europe/Paris` or `UTC`"),
                ));
                chrono_tz::UTC
            }
        },
    };
    let schedule =
        raw.schedule.as_deref().and_then(|expr| match schedule::Schedule::parse(expr, timezone) {
            Ok(s) => Some(s),
            Err(e) => {
                diags.push(index.diag(format!("{key}.schedule"), e.to_string()));
                None
            }
        });
    if raw.schedule.is_none() && (raw.timezone.is_some() || raw.jitter_secs > 0) {
        diags.push(
            index.diag(format!("{key}.schedule"), "`timezone` and `jitter_secs` need a `schedule`"),
        );
    }
    for (sub, message) in raw.source.validate() {
        diags.push(index.diag(format!("{key}.source.{sub}"), message));
    }
    let full_resync_every = match raw.full_resync_every.as_deref().map(str::trim) {
        None => Some(DEFAULT_FULL_RESYNC_EVERY),
        Some("never") => None,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                diags.push(index.diag(
                    format!("{key}.full_resync_every"),
                    "must be longer than 0 (use `never` to turn it off)",
                ));
                None
            }
            Err(e) => {
                diags.push(index.diag(
                    format!("{key}.full_resync_every"),
                    format!("`{text}` is not a duration like `7d` or `12h`, nor `never`: {e}"),
                ));
                None
            }
        },
    };
    if raw.groups.retire_after_runs == Some(0) {
        diags.push(index.diag(
            format!("{key}.groups.retire_after_runs"),
            "must be at least 1 (set it to `null` to never delete groups)",
        ));
    }
    if raw.max_memory_mb == Some(0) {
        diags.push(index.diag(
            format!("{key}.max_memory_mb"),
            "must be at least 1 (leave it out to use the container's memory limit)",
        ));
    }
    if raw.leavers.missing_runs == 0 {
        diags.push(index.diag(
            format!("{key}.leavers.missing_runs"),
            "must be at least 1 (set `deactivate_missing: false` to never deactivate missing users)",
        ));
    }
    let g = &raw.safeguards;
    for (name, v) in [
        ("max_deactivations_percent", g.max_deactivations_percent),
        ("max_creations_percent", g.max_creations_percent),
        ("min_source_percent", g.min_source_percent),
        ("max_membership_removals_percent", g.max_membership_removals_percent),
        ("max_group_deletions_percent", g.max_group_deletions_percent),
    ] {
        if let Some(v) = v
            && !(0.0..=100.0).contains(&v)
        {
            diags.push(index.diag(
                format!("{key}.safeguards.{name}"),
                format!("must be a percentage between 0 and 100, found {v}"),
            ));
        }
    }
    let mapping_path = base_dir.join(&raw.mapping);
    let mapping = match std::fs::read_to_string(&mapping_path) {
        Err(e) => {
            diags.push(index.diag(
                format!("{key}.mapping"),
                format!("cannot read mapping file {}: {e}", mapping_path.display()),
            ));
            None
        }
        Ok(text) => match Mapping::from_yaml(&mapping_path, &text) {
            Ok(m) => Some(Arc::new(m)),
            Err(errs) => {
                diags.extend(errs.0);
                None
            }
        },
    };
    if diags.len() > before {
        return None;
    }
    Some(Job {
        name: raw.name,
        identity_source_id: raw.identity_source_id.trim().to_string(),
        source: raw.source,
        mapping_path,
        mapping: mapping?,
        schedule,
        timezone,
        jitter: Duration::from_secs(raw.jitter_secs),
        missed: raw.missed,
        sessions: raw.sessions,
        max_rejected: raw.max_rejected,
        max_memory: raw.max_memory_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        delta: raw.delta,
        full_resync_every,
        leavers: Leavers {
            deactivate_missing: raw.leavers.deactivate_missing,
            missing_runs: raw.leavers.missing_runs,
        },
        safeguards: Safeguards {
            max_deactivations: g.max_deactivations,
            max_deactivations_percent: g.max_deactivations_percent,
            max_creations: g.max_creations,
            max_creations_percent: g.max_creations_percent,
            min_source_percent: g.min_source_percent,
            max_membership_removals: g.max_membership_removals,
            max_membership_removals_percent: g.max_membership_removals_percent,
            max_group_deletions: g.max_group_deletions,
            max_group_deletions_percent: g.max_group_deletions_percent,
            on_hold: g.on_hold,
        },
        groups: GroupSettings {
            remove_memberships_on_deactivate: raw.groups.remove_memberships_on_deactivate,
            retire_after_runs: raw.groups.retire_after_runs,
        },
        realtime: raw.realtime,
        direct_max_changes: raw.direct_max_changes,
        quarantine_after: raw.quarantine_after,
        peers: Vec::new(),
    })
}
