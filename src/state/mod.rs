//! What xaas remembers between runs: per job and externalId, what Okta last *confirmed*.
//!
//! Okta imports are incremental and leavers must be sent explicitly (FACTS §5), so a run needs
//! to know what it sent before: to skip unchanged users (delta uploads), and to tell a leaver
//! (an id this job sent as active that has disappeared from the source) from an id it never
//! owned. That knowledge lives behind [`StateStore`], so the embedded SQLite file
//! ([`sqlite::SqliteStore`]) and the distributed DynamoDB tables ([`dynamodb::DynamoStore`],
//! shared by several `xaas serve` replicas, with leases and fencing) are interchangeable; the
//! trait speaks only in the domain types below, and `tests/state_contract.rs` runs the same
//! tests against both.
//!
//! # The write rules that make crashes harmless
//!
//! - Before a session is created, every user in it is marked *pending* with the status about
//!   to be sent ([`StateStore::mark_pending`]). A pending user is sent again by the next run
//!   whatever the state says, because Okta may or may not have applied it.
//! - Only once Okta reports the session `COMPLETED` are its users *confirmed*
//!   ([`StateStore::confirm`]): the hash (and optionally the profile) of what was sent, the
//!   status sent, and the pending mark cleared, in one transaction.
//! - A complete pull that was not held is recorded at the end of the run
//!   ([`StateStore::record_pull`]): missing-run counters, last seen, and the pull's size (the
//!   baseline of the source-shrink safeguard).
//!
//! A crash anywhere leaves users either confirmed (Okta has them) or pending/unchanged in state
//! (the next run resends them), so the next run converges on the source.

pub mod config;
pub mod dynamodb;
pub mod events;
pub mod sqlite;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A run's id in the history (what `xaas approve --run` takes).
pub type RunId = i64;

/// The status last sent for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SentStatus {
    /// Upserted (active in Okta).
    Active,
    /// Bulk-deleted (deactivated in Okta).
    Inactive,
}

impl SentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SentStatus::Active => "active",
            SentStatus::Inactive => "inactive",
        }
    }

    /// The status an upsert (`active`) or a bulk delete sends.
    pub fn of(active: bool) -> Self {
        if active { SentStatus::Active } else { SentStatus::Inactive }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(SentStatus::Active),
            "inactive" => Some(SentStatus::Inactive),
            _ => None,
        }
    }
}

/// One user as the state knows it (the profile itself is fetched separately, on demand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub external_id: String,
    /// Hash of the profile (and groups) Okta last confirmed; `None` if never confirmed.
    pub hash: Option<String>,
    /// The status Okta last confirmed; `None` if never confirmed.
    pub status: Option<SentStatus>,
    /// Sent in a session whose outcome is unknown (not confirmed yet), with this status.
    pub pending: Option<SentStatus>,
    /// Consecutive complete pulls this user was missing from.
    pub missing_runs: u32,
    /// The group memberships this job gave the user and Okta confirmed: group externalIds,
    /// sorted. Only these are ever removed (`crate::sync::delta`, "memberships").
    pub groups: Vec<String>,
}

impl Entry {
    /// Whether this job sent the user as active: it owns it, and may deactivate it when it
    /// goes missing. A pending upsert counts: Okta may have created the user.
    pub fn owned_active(&self) -> bool {
        self.status == Some(SentStatus::Active) || self.pending == Some(SentStatus::Active)
    }
}

/// A user Okta confirmed (its session COMPLETED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub external_id: String,
    pub status: SentStatus,
    /// The hash of what was sent; `None` keeps the stored one (a leaver's deactivation carries
    /// no profile).
    pub hash: Option<String>,
    /// The profile sent, when profiles are kept; `None` keeps the stored one.
    pub profile: Option<BTreeMap<String, String>>,
}

impl Confirmed {
    /// What confirming `user` as sent stores: its status, its content hash (upserts), and its
    /// profile when profiles are kept.
    pub fn of(user: &crate::mapping::MappedUser, keep_profiles: bool) -> Self {
        Confirmed {
            external_id: user.external_id.clone(),
            status: SentStatus::of(user.active),
            hash: user.active.then(|| user.content_hash_hex()),
            profile: (user.active && keep_profiles).then(|| user.profile.clone()),
        }
    }
}

/// A group this job created: Okta confirmed its `bulk-groups-upsert`. Only such groups are
/// ever deleted, and only by this job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedGroup {
    pub external_id: String,
    /// Consecutive complete pulls in which no active user derived the group.
    pub empty_runs: u32,
}

impl OwnedGroup {
    /// Its empty-run count after a complete pull that did (`derived`) or did not derive it:
    /// the one counting rule of [`StateStore::record_groups`], for every backend.
    pub fn empty_runs_after(&self, derived: bool) -> u32 {
        if derived { 0 } else { self.empty_runs + 1 }
    }
}

/// Job-level facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobState {
    /// Users in the last complete pull that was recorded; `None` before the first one.
    pub last_pull_users: Option<u64>,
    pub last_pull_at: Option<DateTime<Utc>>,
    /// When the last full resync completed.
    pub last_full_resync_at: Option<DateTime<Utc>>,
    /// Users whose confirmed status is active.
    pub known_active: u64,
}

/// How a job's latest runs went, kept in the state so a restart, another replica and
/// `xaas approve --resume` all see the same: what notifications and quarantine decide from
/// (`crate::daemon::watch`). It names no user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JobWatch {
    /// Failed runs in a row.
    #[serde(default)]
    pub failures: u32,
    /// Of those, the latest in a row whose failure only a person can fix (the same kind).
    #[serde(default)]
    pub lasting_failures: u32,
    /// The kind of the last failure (`okta_credentials`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Set while the job is quarantined: its schedule backs off until someone resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantine>,
    /// A "failing" notification went out for the current streak, so its end is announced.
    #[serde(default)]
    pub failing_notified: bool,
    /// When each kind of notification (`held`, `failing`...) last went out: the throttle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notified: BTreeMap<String, DateTime<Utc>>,
}

/// A quarantined job: why, since when, and when its schedule may run it next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Quarantine {
    /// The failure kind that repeated (`okta_credentials`...).
    pub reason: String,
    pub since: DateTime<Utc>,
    /// The schedule's firings before this are skipped.
    pub next_attempt: DateTime<Utc>,
    /// The current back-off: it doubles after each failed attempt, up to a day.
    pub backoff_secs: u64,
    /// The run that quarantined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
}

/// A run held by a safeguard, and what approving it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// Deactivations the held run would have sent.
    pub deactivations: u64,
    /// Creations the held run would have sent.
    pub creations: u64,
    /// Why it was held.
    pub reasons: Vec<String>,
}

/// One run in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub job: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `success`, `completed_with_rejections`, `failed`, `held`; `None` while running (or if
    /// the process died).
    pub outcome: Option<String>,
    pub hold: Option<Hold>,
    pub approved_at: Option<String>,
    /// The run that used this approval.
    pub consumed_by: Option<RunId>,
}

/// What a run decided for one record (the run page's per-record list).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Created,
    Updated,
    Reactivated,
    /// With a reason: `inactive_in_source`, `missing_from_source` or
    /// `inactive_not_sent_before`.
    Deactivated,
    Unchanged,
    /// Not sent, with the reason and the line (or position) of the record.
    Rejected,
    /// A joiner whose pre-hire window has not opened.
    NotYet,
}

impl Decision {
    /// Every decision, in the order pages list them.
    pub const ALL: [Decision; 7] = [
        Decision::Created,
        Decision::Updated,
        Decision::Reactivated,
        Decision::Deactivated,
        Decision::Rejected,
        Decision::NotYet,
        Decision::Unchanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Created => "created",
            Decision::Updated => "updated",
            Decision::Reactivated => "reactivated",
            Decision::Deactivated => "deactivated",
            Decision::Unchanged => "unchanged",
            Decision::Rejected => "rejected",
            Decision::NotYet => "not_yet",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// One record's decision in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DecisionRecord {
    pub external_id: String,
    pub decision: Decision,
    /// Why (deactivations and rejections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the record was in the source (`line 12`, `record #3`), for rejections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// The profile sent (JSON object), kept only with `serve.ui.show_profiles: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<serde_json::Value>,
    /// For an update, the attributes that changed against the last profile Okta confirmed
    /// (empty when the state keeps no profiles); their values only with `show_profiles`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<AttributeChange>,
}

/// One attribute of an update, against the last profile Okta confirmed (`from`, `to`: absent
/// when the attribute was added or removed, or when values are not shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AttributeChange {
    pub attribute: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Which decisions of a run to read: one page, after a key (keyset pagination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionQuery {
    /// Only externalIds starting with this.
    pub q: Option<String>,
    pub decision: Option<Decision>,
    /// Only records after this cursor (the previous page's `next_after`).
    pub after: Option<String>,
    pub limit: usize,
}

/// One decision's part of a page read: its records from `low` (after it, unless
/// `inclusive`) up to `high` (exclusive), in externalId order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRange {
    pub decision: Decision,
    pub low: String,
    pub inclusive: bool,
    pub high: Option<String>,
}

impl Decision {
    /// Where this decision comes on a page (its index in [`Decision::ALL`]).
    pub fn rank(self) -> usize {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(Self::ALL.len() - 1)
    }
}

impl DecisionQuery {
    /// The page size, bounded.
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, 1_000)
    }

    /// What a backend reads for this page, in page order: for each decision (the filtered
    /// one, or all from the cursor's on), the externalIds past the cursor and within the
    /// prefix search. A backend reads them in turn until it has `page_size() + 1` records,
    /// then calls [`DecisionPage::cut`].
    pub fn ranges(&self) -> Vec<DecisionRange> {
        let q = self.q.as_deref().filter(|q| !q.is_empty());
        // `decision:externalId`; a bare externalId (a cursor from before changes-first
        // pages) is read as being in the first decision.
        let cursor = self.after.as_deref().map(|after| {
            after
                .split_once(':')
                .and_then(|(d, id)| Some((Decision::parse(d)?, id)))
                .unwrap_or((Decision::ALL[0], after))
        });
        let high = q.and_then(prefix_end);
        Decision::ALL
            .into_iter()
            .filter(|d| self.decision.is_none_or(|only| only == *d))
            .filter_map(|d| {
                let (low, inclusive) = match cursor {
                    Some((c, _)) if d.rank() < c.rank() => return None,
                    Some((c, id)) if c == d => match q {
                        Some(q) if q > id => (q, true),
                        _ => (id, false),
                    },
                    _ => (q.unwrap_or_default(), true),
                };
                Some(DecisionRange {
                    decision: d,
                    low: low.to_string(),
                    inclusive,
                    high: high.clone(),
                })
            })
            .collect()
    }
}

/// The smallest string greater than every string starting with `prefix` (a prefix search as
/// a key range); `None` when there is none.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// One page of a run's decisions: changes first ([`Decision::ALL`] order), by externalId
/// within each decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecisionPage {
    pub items: Vec<DecisionRecord>,
    /// Pass as `after` for the next page (`decision:externalId`); `None` on the last one.
    pub next_after: Option<String>,
}

impl DecisionPage {
    /// The page of `limit` from `items` read in page order (up to `limit + 1` of them: one
    /// more says there is a next page).
    pub fn cut(mut items: Vec<DecisionRecord>, limit: usize) -> Self {
        let next_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| format!("{}:{}", d.decision.as_str(), d.external_id))
        } else {
            None
        };
        Self { items, next_after }
    }
}

/// An approval of a held run, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApprovalRecord {
    pub job: String,
    pub run: RunId,
    pub approved_at: String,
    /// `cli`, or who signed in to the UI (`token`, or the basic-auth user name).
    pub approved_by: String,
    /// The client's address, for approvals through the UI.
    pub remote_addr: Option<String>,
    /// Who signed in with the company's identity provider (`serve.ui.auth.type: oidc`), as
    /// the ID token named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<Approver>,
}

/// The person behind an approval, from their ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Approver {
    /// The token's `sub`: stable at the identity provider.
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

fn unsupported(what: &str) -> StateError {
    StateError::Unsupported(what.to_string())
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {location}: {message}")]
    Backend { location: String, message: String },
    #[error(
        "the state store {location} has schema version {found}, newer than this xaas knows ({known}); upgrade xaas"
    )]
    TooNew { location: String, found: i64, known: i64 },
    #[error("no run {run} of job `{job}` in the state store")]
    NoSuchRun { job: String, run: RunId },
    #[error("run {run} of job `{job}` was not held by a safeguard: nothing to approve")]
    NotHeld { job: String, run: RunId },
    /// A call a backend does not implement.
    #[error("{0} is not supported by this state backend yet")]
    Unsupported(String),
    #[error("run {run} of job `{job}` was already used by run {by}")]
    AlreadyUsed { job: String, run: RunId, by: RunId },
}

/// The state of every job, behind one interface for every backend.
///
/// Calls are synchronous and short (one transaction each); the pipeline calls them between
/// Okta sessions, never while a lock is held across an await.
pub trait StateStore: Send {
    /// Job-level facts (baseline pull size, last full resync, active users known).
    fn job_state(&self, job: &str) -> Result<JobState, StateError>;

    /// Every user of `job`, streamed: memory does not grow with the number of users.
    fn for_each_entry(&self, job: &str, f: &mut dyn FnMut(Entry)) -> Result<(), StateError>;

    /// The entries of the given users of `job` (those the state knows; order unspecified).
    /// Pushed (webhook) batches use it instead of a full scan.
    fn entries(&self, job: &str, external_ids: &[&str]) -> Result<Vec<Entry>, StateError>;

    /// The latest run of `job` in the history, if any.
    fn last_run(&self, job: &str) -> Result<Option<RunRecord>, StateError>;

    /// The last profile Okta confirmed for one user, when profiles are kept.
    fn confirmed_profile(
        &self,
        job: &str,
        external_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StateError>;

    /// Mark users as about to be sent with `status` (before their session is created).
    fn mark_pending(
        &mut self,
        job: &str,
        users: &[(&str, SentStatus)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// Record users Okta confirmed (their session COMPLETED), clearing their pending mark.
    fn confirm(
        &mut self,
        job: &str,
        users: &[Confirmed],
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// Set the memberships Okta confirmed for each user (group externalIds, sorted; empty
    /// when the user has none left), after a session with membership loads COMPLETED.
    fn set_memberships(
        &mut self,
        job: &str,
        users: &[(String, Vec<String>)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// The groups `job` created and has not deleted, in externalId order.
    fn owned_groups(&self, job: &str) -> Result<Vec<OwnedGroup>, StateError>;

    /// Groups Okta confirmed upserted (now owned by `job`, with 0 empty runs) and deleted (no
    /// longer owned).
    fn confirm_groups(
        &mut self,
        job: &str,
        upserted: &[String],
        deleted: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// Record which owned groups a complete pull derived: those reset to 0 empty runs, every
    /// other owned group gains one.
    fn record_groups(
        &mut self,
        job: &str,
        derived: &dyn Fn(&str) -> bool,
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// Record a complete pull: users for which `present` holds are reset to 0 missing runs;
    /// when `count_missing`, every other user gains one missing run. The job's users are
    /// streamed in key order a page at a time and only the counters that change are written,
    /// so the cost grows with the changes, not with the pull. `users` becomes the
    /// source-shrink baseline.
    fn record_pull(
        &mut self,
        job: &str,
        present: &dyn Fn(&str) -> bool,
        count_missing: bool,
        users: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// A full resync of `job` completed at `at`.
    fn record_full_resync(&mut self, job: &str, at: DateTime<Utc>) -> Result<(), StateError>;

    /// Start a run in the history.
    fn begin_run(&mut self, job: &str, at: DateTime<Utc>) -> Result<RunId, StateError>;

    /// Finish a run: its outcome, its report (JSON) and, when held, why.
    fn finish_run(
        &mut self,
        run: RunId,
        outcome: &str,
        report_json: &str,
        hold: Option<&Hold>,
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// One run of `job`.
    fn run(&self, job: &str, run: RunId) -> Result<Option<RunRecord>, StateError>;

    /// The report (JSON) of one run, if it finished.
    fn run_report(&self, job: &str, run: RunId) -> Result<Option<String>, StateError>;

    /// Approve a held run: the next run of `job` that needs no more than it did is released.
    fn approve(&mut self, job: &str, run: RunId, at: DateTime<Utc>) -> Result<(), StateError>;

    /// Use an approval that covers `deactivations` and `creations`, on behalf of run `by`.
    /// Returns the approved run's id, or `None` when no unused approval covers them.
    fn take_approval(
        &mut self,
        job: &str,
        deactivations: u64,
        creations: u64,
        by: RunId,
    ) -> Result<Option<RunId>, StateError>;

    /// Record what `run` decided for each record, in one transaction (at the end of the run),
    /// with the counts per decision.
    fn record_decisions(
        &mut self,
        run: RunId,
        decisions: &mut dyn Iterator<Item = DecisionRecord>,
    ) -> Result<u64, StateError> {
        let _ = (run, decisions);
        Err(unsupported("recording decisions"))
    }

    /// One page of a run's decisions.
    fn decisions(&self, run: RunId, query: &DecisionQuery) -> Result<DecisionPage, StateError> {
        let _ = (run, query);
        Err(unsupported("reading decisions"))
    }

    /// How many records of `run` got each decision (kept at write time: no scan).
    fn decision_counts(&self, run: RunId) -> Result<BTreeMap<Decision, u64>, StateError> {
        let _ = run;
        Ok(BTreeMap::new())
    }

    /// Runs newest first, of one job or all, with an id below `before` (pagination).
    fn runs(
        &self,
        job: Option<&str>,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let _ = (job, before, limit);
        Err(unsupported("listing runs"))
    }

    /// One run by id, whatever its job.
    fn run_by_id(&self, run: RunId) -> Result<Option<RunRecord>, StateError> {
        let _ = run;
        Err(unsupported("reading a run by id"))
    }

    /// One pass of retention (`state.history`) at `now`, deleting at most about `max_rows`
    /// rows in short transactions; call again until it says `done`. The users' state is never
    /// pruned. Backends that expire history themselves (DynamoDB's TTL) do nothing here.
    fn prune_history(
        &mut self,
        policy: &config::HistoryPolicy,
        now: DateTime<Utc>,
        max_rows: usize,
    ) -> Result<config::Pruned, StateError> {
        let _ = (policy, now, max_rows);
        Ok(config::Pruned { done: true, ..Default::default() })
    }

    /// The store's size in bytes and how much of it is free (reusable) space, when known.
    fn size_bytes(&self) -> Option<(u64, u64)> {
        None
    }

    /// How `job`'s latest runs went (default: nothing recorded yet).
    fn job_watch(&self, job: &str) -> Result<JobWatch, StateError>;

    /// Replace `job`'s [`JobWatch`]. Not fenced: a resume from the CLI or another replica's
    /// UI writes it too (the last write wins; each is a whole record).
    fn set_job_watch(&mut self, job: &str, watch: &JobWatch) -> Result<(), StateError>;

    /// Write an approval to the audit trail.
    fn record_approval(&mut self, approval: &ApprovalRecord) -> Result<(), StateError> {
        let _ = approval;
        Err(unsupported("the approval audit trail"))
    }

    /// The audit trail of one run's approvals.
    fn approvals(&self, run: RunId) -> Result<Vec<ApprovalRecord>, StateError> {
        let _ = run;
        Ok(Vec::new())
    }
}

/// A stored [`JobWatch`] read back; one that no longer parses (written by a newer xaas) is
/// logged and read as empty rather than failing every run.
fn watch_of(text: Option<&str>, location: &str) -> JobWatch {
    let Some(text) = text else { return JobWatch::default() };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(location, error = %e, "unreadable job watch record: starting afresh");
        JobWatch::default()
    })
}

/// Rows one pruning pass deletes at most.
pub const PRUNE_PASS_ROWS: usize = 10_000;

/// Apply `policy` until nothing is left to prune, a pass of [`PRUNE_PASS_ROWS`] at a time
/// with `pause` between passes, so an import writing to the same store gets its turn; then
/// publish the store's size. The totals removed.
pub fn prune(
    store: &mut dyn StateStore,
    policy: &config::HistoryPolicy,
    pause: std::time::Duration,
) -> Result<config::Pruned, StateError> {
    let mut total = config::Pruned::default();
    loop {
        let pass = store.prune_history(policy, Utc::now(), PRUNE_PASS_ROWS)?;
        total.runs += pass.runs;
        total.decisions += pass.decisions;
        total.events += pass.events;
        total.signatures += pass.signatures;
        crate::telemetry::pruned(pass.runs, pass.decisions, pass.events, pass.signatures);
        if pass.done {
            break;
        }
        std::thread::sleep(pause);
    }
    total.done = true;
    if total.runs + total.events > 0 {
        tracing::info!(
            runs = total.runs,
            decisions = total.decisions,
            events = total.events,
            "pruned the history"
        );
    }
    if let Some((bytes, free)) = store.size_bytes() {
        crate::telemetry::state_size(bytes, free);
    }
    Ok(total)
}

/// Open the configured backend.
pub fn open(settings: &config::StateSettings) -> Result<Box<dyn StateStore>, StateError> {
    match &settings.backend {
        config::StateBackend::Sqlite { path } => {
            Ok(Box::new(sqlite::SqliteStore::open(path, settings.store_profiles)?))
        }
        config::StateBackend::Dynamodb(d) => Ok(Box::new(
            dynamodb::DynamoStore::open(d, settings.store_profiles)?.with_history(settings.history),
        )),
    }
}

/// Open the configured backend for reading only (`plan`): a store that does not exist yet
/// reads as empty and is not created.
pub fn open_read_only(settings: &config::StateSettings) -> Result<Box<dyn StateStore>, StateError> {
    match &settings.backend {
        config::StateBackend::Sqlite { path } if !path.exists() => {
            Ok(Box::new(sqlite::SqliteStore::in_memory(settings.store_profiles)?))
        }
        config::StateBackend::Sqlite { path } => {
            Ok(Box::new(sqlite::SqliteStore::open_read_only(path, settings.store_profiles)?))
        }
        // Reads only, but opening creates missing tables (they are empty then).
        config::StateBackend::Dynamodb(d) => {
            Ok(Box::new(dynamodb::DynamoStore::open(d, settings.store_profiles)?))
        }
    }
}

/// Open the webhook event log of the configured backend.
pub fn open_events(settings: &config::StateSettings) -> Result<events::EventStore, StateError> {
    match &settings.backend {
        config::StateBackend::Sqlite { path } => events::EventStore::open(path),
        config::StateBackend::Dynamodb(d) => dynamodb::DynamoEventStore::open(d).map(|e| {
            events::EventStore::Dynamo(e.with_events_kept_for(settings.history.keep_events_for))
        }),
    }
}
