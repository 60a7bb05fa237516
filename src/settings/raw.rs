//! The raw shape of the config file, and the parse that collects every error.
//!
//! We don't put `deny_unknown_fields` on these structs: it stops at the first unknown key.
//! Instead `serde_ignored` reports every key serde skipped, and we turn each into an error with
//! a suggestion. The net effect is the same strictness, with all problems reported at once.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value};
use secrecy::SecretString;
use serde::Deserialize;

use crate::diag::{Diagnostic, YamlIndex, suggest};
use crate::okta::batch::SessionMode;
use crate::sources::SourceConfig;

/// The whole file.
#[derive(Debug, Default)]
pub(crate) struct RawSettings {
    pub okta: Option<RawOkta>,
    /// `state:`; defaults when absent.
    pub state: Option<RawState>,
    /// One entry per job; `None` where the job could not be parsed (its errors are reported).
    pub jobs: Vec<Option<RawJob>>,
    /// `serve:`; defaults when absent.
    pub serve: Option<RawServe>,
    /// `notify:`; no notifications when absent.
    pub notify: Option<crate::settings::notify::RawNotify>,
}

const TOP_KEYS: &[&str] = &["okta", "state", "jobs", "serve", "notify"];

/// `serve:`: the daemon (`xaas serve`).
#[derive(Debug, Deserialize)]
pub struct RawServe {
    /// Where the daemon listens (webhook, health, metrics), `host:port`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// On SIGTERM, how long the running import may take to finish before its open Okta
    /// session is cancelled, in seconds.
    #[serde(default = "default_shutdown_deadline_secs")]
    pub shutdown_deadline_secs: u64,
    /// Pushed events wait this long for others to share their import session, in
    /// milliseconds. Terminations don't wait.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// The most pushed records imported in one batch (sessions are still packed within
    /// Okta's limits).
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// The webhook HR systems push to; off when absent.
    #[serde(default)]
    pub webhook: Option<crate::settings::webhook::RawWebhook>,
    /// The monitoring pages (`/ui`) and their JSON; off when absent.
    #[serde(default)]
    pub ui: Option<crate::settings::ui::RawUi>,
}

impl Default for RawServe {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            shutdown_deadline_secs: default_shutdown_deadline_secs(),
            batch_window_ms: default_batch_window_ms(),
            max_batch_records: default_max_batch_records(),
            webhook: None,
            ui: None,
        }
    }
}

pub(crate) const SERVE_KEYS: &[&str] =
    &["listen", "shutdown_deadline_secs", "batch_window_ms", "max_batch_records", "webhook", "ui"];

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_shutdown_deadline_secs() -> u64 {
    60
}
fn default_batch_window_ms() -> u64 {
    2_000
}
fn default_max_batch_records() -> usize {
    10_000
}

/// `state:`: where xaas remembers what Okta confirmed (see `crate::state`).
#[derive(Debug, Deserialize)]
pub struct RawState {
    /// The backend: `sqlite` (a single local file, the default) or `dynamodb` (shared tables,
    /// for several `xaas serve` replicas).
    #[serde(default)]
    pub backend: StateBackendKind,
    /// The SQLite file, relative to the config file. Default: `xaas-state.db` next to it.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// DynamoDB: the prefix of every table name (`{prefix}users`, `{prefix}runs`,
    /// `{prefix}events`, `{prefix}open_events`, `{prefix}meta`, `{prefix}leases`, `{prefix}seen`,
    /// `{prefix}decisions`).
    /// Default `xaas_`. The tables are created on first use (on-demand billing) when missing.
    #[serde(default)]
    pub table_prefix: Option<String>,
    /// DynamoDB: the AWS region; the default chain's (`AWS_REGION`, profile) when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// DynamoDB: send requests here instead of the regional endpoint (dynalite, DynamoDB
    /// Local, a VPC endpoint).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// DynamoDB: how long a replica's lease on an identity source lasts without renewal, in
    /// seconds (renewed every third of it). A dead replica's sources move to another replica
    /// within this time. Default 15.
    #[serde(default)]
    pub lease_secs: Option<u64>,
    /// Keep the last profile Okta confirmed for each user, so `plan` can show an
    /// attribute-level diff. This is personal data at rest: `false` keeps only a hash.
    #[serde(default = "default_true")]
    pub store_profiles: bool,
    /// How much run history and how many finished webhook events are kept.
    #[serde(default)]
    pub history: RawHistory,
}

/// `state.history:`. `null` keeps forever; 0 keeps only by count (`keep_runs`).
#[derive(Debug, Deserialize)]
pub struct RawHistory {
    /// Runs finished longer ago than this many days are pruned (their reports, decisions and
    /// approvals)...
    #[serde(default = "default_keep_days")]
    pub keep_days: Option<f64>,
    /// ...except the last this many runs of each job, and held runs not released yet.
    #[serde(default = "default_keep_runs")]
    pub keep_runs: u32,
    /// Finished webhook events older than this many days are pruned.
    #[serde(default = "default_keep_days")]
    pub events_keep_days: Option<f64>,
}

impl Default for RawHistory {
    fn default() -> Self {
        Self {
            keep_days: default_keep_days(),
            keep_runs: default_keep_runs(),
            events_keep_days: default_keep_days(),
        }
    }
}

fn default_keep_days() -> Option<f64> {
    Some(30.0)
}
fn default_keep_runs() -> u32 {
    50
}

impl Default for RawState {
    fn default() -> Self {
        Self {
            backend: StateBackendKind::Sqlite,
            path: None,
            table_prefix: None,
            region: None,
            endpoint_url: None,
            lease_secs: None,
            store_profiles: true,
            history: RawHistory::default(),
        }
    }
}

const STATE_KEYS: &[&str] = &[
    "backend",
    "path",
    "table_prefix",
    "region",
    "endpoint_url",
    "lease_secs",
    "store_profiles",
    "history",
];

/// The state backends (a closed set).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateBackendKind {
    /// An embedded SQLite file.
    #[default]
    Sqlite,
    /// DynamoDB tables shared by every replica, with leases per identity source.
    Dynamodb,
}

fn default_true() -> bool {
    true
}

/// `okta:`
#[derive(Debug, Deserialize)]
pub struct RawOkta {
    /// The org's base URL, `https://{yourOktaDomain}`.
    pub org_url: Option<String>,
    /// How to authenticate; tagged by `type`.
    pub auth: Option<RawAuth>,
    /// Timeout of one HTTP attempt, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// How many times a 429 is retried after waiting for the rate-limit reset.
    #[serde(default = "default_max_rate_limit_retries")]
    pub max_rate_limit_retries: u32,
    /// Okta refuses a new import session within 5 minutes of the previous one. Lower this
    /// only against the emulator (whose clock can run faster); fractional seconds allowed.
    #[serde(default = "default_session_spacing_secs")]
    pub session_spacing_secs: f64,
    /// First poll interval while following a triggered session, in milliseconds.
    #[serde(default = "default_poll_initial_ms")]
    pub poll_initial_ms: u64,
    /// Longest poll interval, in seconds.
    #[serde(default = "default_poll_max_secs")]
    pub poll_max_secs: u64,
    /// Stop following one session (and fail the job) after this many seconds.
    #[serde(default = "default_session_timeout_secs")]
    pub session_timeout_secs: u64,
    /// Requests to Okta in flight at once; also how many bulk loads of a session are
    /// uploaded concurrently.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// A fixed client-side ceiling, in requests per minute. Unset: a share of the org's limit
    /// (see `rate_limit_share_percent`).
    #[serde(default)]
    pub max_requests_per_minute: Option<u32>,
    /// The share of the org's rate limit (learned from `X-Rate-Limit-Limit`) xaas may use,
    /// in percent. Okta gives each token 50% by default.
    #[serde(default = "default_rate_limit_share_percent")]
    pub rate_limit_share_percent: u8,
    /// Retries of a call that is safe to repeat (reads; writes that never reached Okta).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff of those retries, in milliseconds (doubled each time, with jitter).
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// The longest single wait for a rate-limit reset after a 429, in seconds.
    #[serde(default = "default_max_rate_limit_wait_secs")]
    pub max_rate_limit_wait_secs: u64,
    /// How many times a session is cancelled and its records replayed in a fresh session
    /// after an ambiguous failure (timeout, dropped connection, 5xx on a bulk load).
    #[serde(default = "default_max_session_replays")]
    pub max_session_replays: u32,
    /// How long a run waits for another client's open session on its identity source (an
    /// admin, a Workflows flow) before it fails naming it, in seconds. Such a session is never
    /// cancelled nor written to.
    #[serde(default = "default_foreign_session_wait_secs")]
    pub foreign_session_wait_secs: u64,
}

const OKTA_KEYS: &[&str] = &[
    "org_url",
    "auth",
    "request_timeout_secs",
    "max_rate_limit_retries",
    "session_spacing_secs",
    "poll_initial_ms",
    "poll_max_secs",
    "session_timeout_secs",
    "max_concurrent_requests",
    "max_requests_per_minute",
    "rate_limit_share_percent",
    "max_retries",
    "retry_backoff_ms",
    "max_rate_limit_wait_secs",
    "max_session_replays",
    "foreign_session_wait_secs",
];

impl RawOkta {
    pub(crate) fn session_spacing_ms(&self) -> u64 {
        (self.session_spacing_secs.max(0.0) * 1000.0).round() as u64
    }
}

fn default_request_timeout_secs() -> u64 {
    60
}
fn default_max_rate_limit_retries() -> u32 {
    4
}
fn default_session_spacing_secs() -> f64 {
    300.0
}
fn default_poll_initial_ms() -> u64 {
    crate::okta::session::DEFAULT_POLL_INITIAL.as_millis() as u64
}
fn default_poll_max_secs() -> u64 {
    30
}
fn default_session_timeout_secs() -> u64 {
    3 * 3600
}
fn default_max_concurrent_requests() -> usize {
    crate::okta::client::DEFAULT_MAX_CONCURRENT_REQUESTS
}
fn default_rate_limit_share_percent() -> u8 {
    50
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    500
}
fn default_max_rate_limit_wait_secs() -> u64 {
    120
}
fn default_max_session_replays() -> u32 {
    2
}
fn default_foreign_session_wait_secs() -> u64 {
    600
}

/// `okta.auth:`, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawAuth {
    /// An SSWS API token. Give exactly one of the three.
    ApiToken {
        /// The token itself (prefer `token_file` or `token_env`).
        token: Option<SecretString>,
        /// A file holding the token (e.g. a mounted Kubernetes secret).
        token_file: Option<PathBuf>,
        /// The name of an environment variable holding the token.
        token_env: Option<String>,
    },
    /// OAuth 2.0 client credentials with `private_key_jwt` (an Okta API Services app). Give
    /// the private key (PEM, RSA or EC P-256) in exactly one of the three places.
    Oauth {
        /// The service app's client id.
        client_id: String,
        /// The PEM key itself (prefer `private_key_file` or `private_key_env`).
        private_key: Option<SecretString>,
        /// A file holding the PEM key.
        private_key_file: Option<PathBuf>,
        /// The name of an environment variable holding the PEM key.
        private_key_env: Option<String>,
        /// The key id registered with the app (the JWT's `kid`), if it has several keys.
        kid: Option<String>,
        /// Scopes to request; default `okta.identitySources.manage okta.identitySources.read`.
        scopes: Option<Vec<String>>,
    },
}

/// One entry of `jobs:`.
#[derive(Debug, Deserialize)]
pub struct RawJob {
    /// Unique name, used by `--job` and in reports.
    pub name: String,
    /// The Custom Identity Source app's id (`0oa…`).
    pub identity_source_id: String,
    /// Where records come from; tagged by `type`.
    pub source: SourceConfig,
    /// The mapping file, relative to the config file.
    pub mapping: PathBuf,
    /// Cron expression for `xaas serve` (5 fields, or 6 with seconds first).
    #[serde(default)]
    pub schedule: Option<String>,
    /// The time zone `schedule` is read in (IANA name, e.g. `Europe/Paris`). Default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Each scheduled run starts after a random delay up to this many seconds, so many
    /// daemons on one schedule don't hit the source and Okta at the same instant.
    #[serde(default)]
    pub jitter_secs: u64,
    /// A scheduled run that came due while the job's queue was busy (or the daemon was
    /// down): `once` (default) runs it once when possible, never more; `skip` drops it.
    #[serde(default)]
    pub missed: MissedRuns,
    /// `separate` (default): upserts and deactivations in their own sessions; `combined`:
    /// both in the same sessions (fewer sessions, so fewer 5-minute waits).
    #[serde(default)]
    pub sessions: SessionMode,
    /// The error budget: the run aborts before sending anything when more records than this
    /// are rejected, as a count (`50`) or a share of the records read (`5%`).
    #[serde(default)]
    pub max_rejected: Option<crate::settings::ErrorBudget>,
    /// The most memory this job's run may hold, in MiB: a pull that grows past 90% of it stops
    /// before anything is sent, naming the figure. Default: the container's memory limit
    /// (the cgroup's `memory.max`), when there is one.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// `true` (default): send only users that are new, changed or changed status since the
    /// last profile Okta confirmed. `false`: send every user on every run.
    #[serde(default = "default_true")]
    pub delta: bool,
    /// Send every user once this long after the last full resync (e.g. `7d`), to heal changes
    /// made in Okta by hand. Default `7d`; `never` turns it off.
    #[serde(default)]
    pub full_resync_every: Option<String>,
    /// How users missing from the source become deactivations.
    #[serde(default)]
    pub leavers: RawLeavers,
    /// Per-run thresholds that hold a risky run for approval.
    #[serde(default)]
    pub safeguards: RawSafeguards,
    /// What happens to the groups and memberships this job gave (mapping v2 `groups:`).
    #[serde(default)]
    pub groups: RawGroups,
    /// What a webhook push sends without waiting for a session: `terminations` (default),
    /// `changes` (terminations and upserts), `off` (sessions only).
    #[serde(default)]
    pub realtime: Realtime,
    /// A delta run with at most this many users to send (and no group changes) sends them
    /// through the direct endpoints instead of a session; 0 turns it off.
    #[serde(default = "default_direct_max_changes")]
    pub direct_max_changes: u64,
    /// After this many failed runs in a row that only a person can fix (credentials, scope,
    /// identity source, mapping), the schedule backs off until resumed; 0 turns it off.
    #[serde(default = "default_quarantine_after")]
    pub quarantine_after: u32,
}

fn default_quarantine_after() -> u32 {
    3
}

fn default_direct_max_changes() -> u64 {
    25
}

/// `jobs[].realtime`: which pushed changes go out through Okta's direct user endpoints
/// (one call per user, no session, so no 5-minute wait) instead of an import session.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Realtime {
    /// Deactivations go out at once (`DELETE /users/{externalId}`); upserts in sessions.
    #[default]
    Terminations,
    /// Deactivations and upserts (`PUT`, or `POST` for a new user) go out at once, except
    /// users whose group memberships change (those need a session).
    Changes,
    /// Everything in sessions.
    Off,
}

/// `jobs[].groups:`
#[derive(Debug, Clone, Deserialize)]
pub struct RawGroups {
    /// Remove the memberships this job gave a user when it deactivates the user.
    #[serde(default = "default_true")]
    pub remove_memberships_on_deactivate: bool,
    /// Consecutive complete pulls in which no active user derives a group this job created
    /// before the group is deleted; `null` never deletes groups.
    #[serde(default = "default_retire_after_runs")]
    pub retire_after_runs: Option<u32>,
}

impl Default for RawGroups {
    fn default() -> Self {
        Self {
            remove_memberships_on_deactivate: true,
            retire_after_runs: default_retire_after_runs(),
        }
    }
}

fn default_retire_after_runs() -> Option<u32> {
    Some(1)
}

const JOB_KEYS: &[&str] = &[
    "name",
    "identity_source_id",
    "source",
    "mapping",
    "schedule",
    "timezone",
    "jitter_secs",
    "missed",
    "sessions",
    "max_rejected",
    "max_memory_mb",
    "delta",
    "full_resync_every",
    "leavers",
    "safeguards",
    "groups",
    "realtime",
    "direct_max_changes",
    "quarantine_after",
];

/// What happens to scheduled runs that came due while they could not start.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Run once as soon as possible, however many were missed.
    #[default]
    Once,
    /// Drop them; wait for the next scheduled time.
    Skip,
}

/// `jobs[].leavers:`
#[derive(Debug, Clone, Deserialize)]
pub struct RawLeavers {
    /// Deactivate users this job sent as active once they are missing from the source.
    /// `false` for sources that list only changes (leavers then come as `active: false`).
    #[serde(default = "default_true")]
    pub deactivate_missing: bool,
    /// Consecutive complete pulls a user must be missing from before it is deactivated.
    #[serde(default = "default_missing_runs")]
    pub missing_runs: u32,
}

impl Default for RawLeavers {
    fn default() -> Self {
        Self { deactivate_missing: true, missing_runs: default_missing_runs() }
    }
}

fn default_missing_runs() -> u32 {
    1
}

/// `jobs[].safeguards:` Each threshold may be set to `null` to turn it off.
#[derive(Debug, Clone, Deserialize)]
pub struct RawSafeguards {
    /// Hold the run when it would deactivate more users than this (absolute count).
    #[serde(default = "default_max_deactivations")]
    pub max_deactivations: Option<u64>,
    /// Hold the run when it would deactivate more than this share of the users this job
    /// knows as active, in percent.
    #[serde(default = "default_max_deactivations_percent")]
    pub max_deactivations_percent: Option<f64>,
    /// Hold the run when it would create more users than this (absolute count; not checked
    /// on a job's first run).
    #[serde(default)]
    pub max_creations: Option<u64>,
    /// Hold the run when it would create more than this share of the users this job knows
    /// as active, in percent (not checked on a job's first run).
    #[serde(default = "default_max_creations_percent")]
    pub max_creations_percent: Option<f64>,
    /// Hold the run when it would remove more group memberships this job gave than this
    /// (movers and leavers together).
    #[serde(default = "default_max_membership_removals")]
    pub max_membership_removals: Option<u64>,
    /// Hold the run when it would remove more than this share of the memberships this job
    /// gave, in percent.
    #[serde(default = "default_max_membership_removals_percent")]
    pub max_membership_removals_percent: Option<f64>,
    /// Hold the run when it would delete more groups this job created than this.
    #[serde(default = "default_max_group_deletions")]
    pub max_group_deletions: Option<u64>,
    /// Hold the run when it would delete more than this share of the groups this job
    /// created, in percent.
    #[serde(default = "default_max_group_deletions_percent")]
    pub max_group_deletions_percent: Option<f64>,
    /// Hold the run when the pull has fewer users than this share of the last complete
    /// pull, in percent.
    #[serde(default = "default_min_source_percent")]
    pub min_source_percent: Option<f64>,
    /// What a held run still sends: `nothing` (default) or `upserts` (creations, updates
    /// and reactivations go on when only a deactivation threshold was crossed).
    #[serde(default)]
    pub on_hold: crate::settings::OnHold,
}

impl Default for RawSafeguards {
    fn default() -> Self {
        Self {
            max_deactivations: default_max_deactivations(),
            max_deactivations_percent: default_max_deactivations_percent(),
            max_creations: None,
            max_creations_percent: default_max_creations_percent(),
            min_source_percent: default_min_source_percent(),
            max_membership_removals: default_max_membership_removals(),
            max_membership_removals_percent: default_max_membership_removals_percent(),
            max_group_deletions: default_max_group_deletions(),
            max_group_deletions_percent: default_max_group_deletions_percent(),
            on_hold: crate::settings::OnHold::default(),
        }
    }
}

fn default_max_deactivations() -> Option<u64> {
    Some(500)
}
fn default_max_deactivations_percent() -> Option<f64> {
    Some(10.0)
}
fn default_max_creations_percent() -> Option<f64> {
    Some(25.0)
}
fn default_min_source_percent() -> Option<f64> {
    Some(90.0)
}
fn default_max_membership_removals() -> Option<u64> {
    Some(1000)
}
fn default_max_membership_removals_percent() -> Option<f64> {
    Some(10.0)
}
fn default_max_group_deletions() -> Option<u64> {
    Some(10)
}
fn default_max_group_deletions_percent() -> Option<f64> {
    Some(50.0)
}

/// Parse the layered config into raw structs, pushing every problem into `diags`.
/// Returns `None` only when the file cannot be parsed at all.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    env: &[(String, String)],
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<RawSettings> {
    // Syntax first, with saphyr's line and column (the config crate's YAML errors have none).
    for event in saphyr_parser::Parser::new_from_str(text) {
        if let Err(e) = event {
            let m = e.marker();
            diags.push(Diagnostic {
                file: path.to_path_buf(),
                line: Some(m.line()),
                column: Some(m.col() + 1),
                key: String::new(),
                message: format!("invalid yaml: {}", e.info()),
            });
            return None;
        }
    }
    // Only nested overrides (`XAAS_OKTA__ORG_URL`): every key of ours is nested, and this keeps
    // unrelated XAAS_* variables (such as XAAS_LOG) out of the config.
    let overrides: config::Map<String, String> =
        env.iter().filter(|(k, _)| k.starts_with("XAAS_") && k.contains("__")).cloned().collect();
    let built = Config::builder()
        .add_source(File::from_str(text, FileFormat::Yaml))
        .add_source(
            Environment::with_prefix("XAAS")
                .prefix_separator("_")
                .separator("__")
                .source(Some(overrides)),
        )
        .build();
    let config = match built {
        Ok(c) => c,
        Err(e) => {
            diags.push(index.diag("", format!("cannot load: {e}")));
            return None;
        }
    };
    let top: config::Map<String, Value> = match config.try_deserialize() {
        Ok(t) => t,
        Err(e) => {
            diags.push(index.diag("", format!("the top level must be a mapping of keys: {e}")));
            return None;
        }
    };
    let mut raw = RawSettings::default();
    let mut keys: Vec<_> = top.keys().cloned().collect();
    keys.sort();
    for key in keys {
        if !TOP_KEYS.contains(&key.as_str()) {
            diags.push(unknown_key(index, "", &key, TOP_KEYS));
        }
    }
    match top.get("okta") {
        None => {
            diags.push(index.diag("okta", "missing: add an `okta:` section with org_url and auth"))
        }
        Some(v) => raw.okta = deserialize_collecting(index, "okta", v.clone(), OKTA_KEYS, diags),
    }
    if let Some(v) = top.get("state") {
        raw.state = deserialize_collecting(index, "state", v.clone(), STATE_KEYS, diags);
    }
    if let Some(v) = top.get("serve") {
        raw.serve = deserialize_collecting(index, "serve", v.clone(), SERVE_KEYS, diags);
    }
    if let Some(v) = top.get("notify") {
        let keys = crate::settings::notify::NOTIFY_KEYS;
        raw.notify = deserialize_collecting(index, "notify", v.clone(), keys, diags);
    }
    match top.get("jobs").cloned().map(Value::into_array) {
        None => {}
        Some(Err(_)) => diags.push(index.diag("jobs", "must be a list of jobs")),
        Some(Ok(jobs)) => {
            for (i, job) in jobs.into_iter().enumerate() {
                let key = format!("jobs[{i}]");
                raw.jobs.push(deserialize_collecting(index, &key, job, JOB_KEYS, diags));
            }
        }
    }
    Some(raw)
}

fn unknown_key(index: &YamlIndex, parent: &str, key: &str, known: &[&str]) -> Diagnostic {
    let full = if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") };
    let hint = match suggest(key, known) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => format!("; valid keys: {}", known.join(", ")),
    };
    index.diag(full, format!("unknown key `{key}`{hint}"))
}

/// Deserialize `value` (found at `key`), reporting unknown keys and type errors.
/// Sub-sections whose unknown keys get a did-you-mean from their own key list.
const NESTED_KEYS: &[(&str, &[&str])] = &[
    ("serve.webhook", crate::settings::webhook::WEBHOOK_KEYS),
    ("serve.ui", crate::settings::ui::UI_KEYS),
];

fn deserialize_collecting<T: serde::de::DeserializeOwned>(
    index: &YamlIndex,
    key: &str,
    value: Value,
    known: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(value, |p| unknown.push(p.to_string()));
    for path in unknown {
        // serde_ignored writes `?` for an Option's inner value: `webhook.?.max_body`.
        let path = path.replace("?.", "");
        // Direct children get a suggestion from `known`, known sub-sections from theirs;
        // deeper ones are reported as they are.
        let nested = path.split_once('.').and_then(|(parent, leaf)| {
            NESTED_KEYS
                .iter()
                .find(|(section, _)| *section == format!("{key}.{parent}"))
                .filter(|_| !leaf.contains('.'))
                .map(|(section, keys)| (section, leaf, keys))
        });
        if let Some((section, leaf, keys)) = nested {
            diags.push(unknown_key(index, section, leaf, keys));
        } else if path.contains('.') {
            diags.push(index.diag(format!("{key}.{path}"), format!("unknown key `{path}`")));
        } else {
            diags.push(unknown_key(index, key, &path, known));
        }
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(type_error(index, key, &e.to_string()));
            None
        }
    }
}

/// Turn a serde/config error into a diagnostic, pointing at the sub-key when it names one.
fn type_error(index: &YamlIndex, key: &str, message: &str) -> Diagnostic {
    // config errors end with "for key `a.b`"; serde's "missing field `x`" names a field.
    let sub = extract_between(message, "for key `", "`")
        .or_else(|| extract_between(message, "missing field `", "`"));
    let full = match sub {
        Some(s) if !s.is_empty() => format!("{key}.{s}"),
        _ => key.to_string(),
    };
    let mut msg = message.to_string();
    if let Some(pos) = msg.find(" for key `") {
        msg.truncate(pos);
    }
    index.diag(full, msg)
}

fn extract_between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}
