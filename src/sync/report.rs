//! The run report: what a run read, rejected, planned, sent, and what Okta made of it.
//!
//! Printed as a human summary on stdout, and written as JSON with `--report FILE`. The same
//! structure serves `plan` (nothing sent: `dry_run: true`, sessions without outcomes).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::delta::Changes;
use super::safeguards::Breach;
use crate::mapping::references::Dangling;
use crate::mapping::{Origin, Rejection};
use crate::okta::batch::{SessionKind, SessionPlan};
use crate::okta::session::{SessionOutcome, StaleSession};

/// A whole invocation: one or more jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// RFC 3339 start time.
    pub started_at: String,
    pub duration_ms: u64,
    /// `true` for `plan`: nothing was sent to Okta.
    pub dry_run: bool,
    pub jobs: Vec<JobReport>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Everything read was mapped and every session completed.
    Success,
    /// Every session completed, but some records were rejected.
    CompletedWithRejections,
    /// The job could not finish: nothing, or only part, reached Okta.
    Failed,
    /// A safeguard held the run: nothing risky was sent (see `hold`).
    Held,
}

/// Exit code: every record was sent and every session completed.
pub const EXIT_OK: i32 = 0;
/// Exit code: a job could not finish (Okta error, unreadable source, bad credentials...).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: completed, but some records were rejected (see the report).
pub const EXIT_REJECTED: i32 = 3;
/// Exit code: a safeguard held a run; nothing risky was sent. Approve it or rerun with
/// `--allow-deactivations N`.
pub const EXIT_HELD: i32 = 5;

impl JobOutcome {
    /// The process exit code of a run that ended so (the README's exit-code table).
    pub fn exit_code(self) -> i32 {
        match self {
            JobOutcome::Success => EXIT_OK,
            JobOutcome::CompletedWithRejections => EXIT_REJECTED,
            JobOutcome::Failed => EXIT_FAILURE,
            JobOutcome::Held => EXIT_HELD,
        }
    }

    /// How bad it is, for the exit code of several jobs: the worst wins.
    fn severity(self) -> u8 {
        match self {
            JobOutcome::Success => 0,
            JobOutcome::CompletedWithRejections => 1,
            JobOutcome::Held => 2,
            JobOutcome::Failed => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Success => "success",
            JobOutcome::CompletedWithRejections => "completed_with_rejections",
            JobOutcome::Failed => "failed",
            JobOutcome::Held => "held",
        }
    }
}

/// Delta or full, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMode {
    /// `true`: every pulled user is sent.
    pub full: bool,
    /// Why a full resync (`--full`, `delta: false`, `full_resync_every`, first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a run was held and how to release it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldReport {
    pub breaches: Vec<Breach>,
    /// What still went out: `nothing` or `upserts`.
    pub sent: String,
    /// The command that releases it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// One attribute of an update (stored with the run's decisions too).
pub use crate::state::AttributeChange;

/// An update and what changed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateDetail {
    pub external_id: String,
    /// Empty when no confirmed profile is stored (`state.store_profiles: false`), or only
    /// groups changed, or the last send was never confirmed.
    pub changes: Vec<AttributeChange>,
}

/// One user's membership changes (group externalIds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipDetail {
    pub external_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub removed: Vec<String>,
}

/// A deactivation and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationDetail {
    pub external_id: String,
    pub reason: DeactivationReason,
}

/// Why a user is deactivated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeactivationReason {
    /// The source marks it inactive, and this job sent it as active.
    InactiveInSource,
    /// This job sent it as active, and it is missing from complete pulls.
    MissingFromSource,
    /// The source marks it inactive, and this job never sent it as active.
    InactiveNotSentBefore,
}

impl DeactivationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeactivationReason::InactiveInSource => "inactive_in_source",
            DeactivationReason::MissingFromSource => "missing_from_source",
            DeactivationReason::InactiveNotSentBefore => "inactive_not_sent_before",
        }
    }
}

/// Who is in each part of the plan (lists capped; see `truncated`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Details {
    pub creates: Vec<String>,
    pub updates: Vec<UpdateDetail>,
    pub reactivations: Vec<String>,
    pub deactivations: Vec<DeactivationDetail>,
    /// Users whose memberships change: the groups added and removed.
    #[serde(default)]
    pub memberships: Vec<MembershipDetail>,
    /// Groups this run creates (not created by this job before).
    #[serde(default)]
    pub groups_created: Vec<String>,
    /// Groups this job created that this run deletes.
    #[serde(default)]
    pub groups_deleted: Vec<String>,
    /// Some list was cut at the report's limit; `xaas plan --format json` has them all.
    pub truncated: bool,
}

/// One job's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    pub job: String,
    pub identity_source_id: String,
    /// This run's id in the state's history (what `xaas approve --run` takes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    pub outcome: JobOutcome,
    pub mode: SyncMode,
    /// The diff against the state.
    pub changes: Changes,
    /// Set when a safeguard held the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldReport>,
    /// Set when a breach was released (`--allow-deactivations`, or an approval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// Why users missing from the pull were not considered leavers this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absence_detection_off: Option<String>,
    pub details: Details,
    /// Why the job failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of failure it was (`okta_credentials`, `pull_incomplete`...): what
    /// notifications and the quarantine go by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<super::error::FailureKind>,
    /// `false` when the source failed part way. An incomplete pull sends nothing, and its
    /// missing records must never be read as users who left.
    pub pull_complete: bool,
    pub counts: Counts,
    /// Records that were not sent, with their line (or position) and reason.
    pub rejected: Vec<Rejection>,
    /// externalIds that appeared more than once: the last record won.
    pub deduplicated: Vec<Duplicate>,
    /// References left out of a profile (`on_missing: omit`), with who they named and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dangling: Vec<Dangling>,
    /// Sessions found open at the start and what was done with them.
    pub stale_sessions: Vec<StaleSession>,
    /// The plan's users go through Okta's direct endpoints, one call each and no session (a
    /// small delta within `direct_max_changes`, [`super::direct::run_qualifies`]); `sessions`
    /// is what goes instead if they cannot (a user without `email` or `userName`, or an org
    /// that refuses them). `counts.sent_directly` says what went.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    pub sessions: Vec<SessionReport>,
    pub timings: Timings,
}

/// The counts ops look at first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Rows/records read from the source, including those rejected.
    pub read: u64,
    /// Records rejected (unreadable, failed mapping, or too large to send).
    pub rejected: u64,
    /// Records dropped because a later record had the same externalId.
    pub deduplicated: u64,
    /// Active users planned for bulk-upsert.
    pub to_upsert: u64,
    /// Deactivated users planned for bulk-delete.
    pub to_deactivate: u64,
    /// Users upserted in sessions Okta reported COMPLETED.
    pub upserted: u64,
    /// Deactivations sent in sessions Okta reported COMPLETED. Okta silently ignores unknown
    /// externalIds, so this counts what we asked, not what changed.
    pub deactivated: u64,
    /// Planned users that were not imported (a session failed or was never sent).
    pub not_imported: u64,
    /// Joiners held back until their pre-hire window opens (mapping `status.start_date`).
    pub not_yet_started: u64,
    /// Group upserts planned (a group split over sessions counts once per session).
    pub groups: u64,
    /// Memberships (group, user pairs) planned for upsert.
    pub memberships: u64,
    /// Memberships this job gave, planned for removal (movers and leavers).
    #[serde(default)]
    pub memberships_removed: u64,
    /// Groups this job created, planned for deletion.
    #[serde(default)]
    pub groups_deleted: u64,
    /// `references` filled in from another person of the pull (a manager's login, say).
    #[serde(default)]
    pub references_resolved: u64,
    /// `references` left out because the person was not found (`on_missing: omit`); the
    /// records themselves are sent. `dangling` lists them.
    #[serde(default)]
    pub references_dangling: u64,
    /// Users sent through Okta's direct endpoints instead of a session (a small delta,
    /// `direct_max_changes`); they are counted in `upserted` and `deactivated` too.
    #[serde(default)]
    pub sent_directly: u64,
}

/// An externalId seen more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub external_id: String,
    /// Where the record that was kept came from.
    pub kept: Origin,
    /// Where the records that were dropped came from.
    pub dropped: Vec<Origin>,
}

/// One planned session and, after `run`, what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionReport {
    pub kind: SessionKind,
    /// Bulk requests planned.
    pub planned_requests: usize,
    pub planned_upserts: usize,
    pub planned_deletes: usize,
    pub planned_groups: usize,
    pub planned_memberships: usize,
    #[serde(default)]
    pub planned_membership_removals: usize,
    #[serde(default)]
    pub planned_group_deletions: usize,
    /// The largest request body, in bytes.
    pub largest_request_bytes: usize,
    /// `None` in a plan, or when the session was never attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<SessionOutcome>,
}

impl SessionReport {
    /// One line of the human summary: the `n`th session, planned and, after a run, its end.
    fn render_line(&self, out: &mut String, n: usize, dry_run: bool) {
        let s = self;
        let _ = write!(
            out,
            "  session {}: {} — {} request(s), {} upsert(s), {} deactivation(s)",
            n, s.kind, s.planned_requests, s.planned_upserts, s.planned_deletes
        );
        if s.planned_groups + s.planned_memberships > 0 {
            let _ = write!(
                out,
                ", {} group(s), {} membership(s)",
                s.planned_groups, s.planned_memberships
            );
        }
        if s.planned_membership_removals + s.planned_group_deletions > 0 {
            let _ = write!(
                out,
                ", {} membership removal(s), {} group deletion(s)",
                s.planned_membership_removals, s.planned_group_deletions
            );
        }
        match &s.outcome {
            None if dry_run => {}
            None => {
                let _ = write!(out, " — not sent");
            }
            Some(o) => {
                let status = o.final_status.map(|s| s.as_str()).unwrap_or("not created");
                let _ = write!(
                    out,
                    " — {} {status} ({} request(s), {} profile(s) accepted, {:.1}s",
                    o.id.as_deref().unwrap_or("-"),
                    o.requests,
                    o.profiles,
                    o.duration_ms as f64 / 1000.0
                );
                if o.spacing_wait_ms > 0 {
                    let _ = write!(
                        out,
                        ", waited {:.1}s for session spacing",
                        o.spacing_wait_ms as f64 / 1000.0
                    );
                }
                let _ = write!(out, ")");
                if let Some(note) = &o.note {
                    let _ = write!(out, " — {note}");
                }
                if let Some(e) = &o.error {
                    let _ = write!(out, " — error: {e}");
                }
            }
        }
        let _ = writeln!(out);
    }
}

impl SessionReport {
    pub fn planned(plan: &SessionPlan) -> Self {
        let (up, del) = plan.counts();
        let (groups, memberships) = plan.group_counts();
        let changes = plan.group_changes();
        Self {
            planned_membership_removals: changes.memberships_removed,
            planned_group_deletions: changes.groups_deleted,
            kind: plan.kind,
            planned_requests: plan.requests.len(),
            planned_upserts: up,
            planned_deletes: del,
            planned_groups: groups,
            planned_memberships: memberships,
            largest_request_bytes: plan.requests.iter().map(|r| r.body.len()).max().unwrap_or(0),
            outcome: None,
        }
    }
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Reading and mapping the source.
    pub pull_ms: u64,
    /// Everything that talked to Okta: stale sessions, waits, uploads, polling.
    pub push_ms: u64,
    pub total_ms: u64,
}

impl JobReport {
    /// The run failed with `e`: the outcome and the error say so, worded for a run or a plan.
    /// What approving this run allows, as the state keeps it; `None` unless it was held.
    pub fn state_hold(&self) -> Option<crate::state::Hold> {
        self.hold.as_ref().map(|h| crate::state::Hold {
            deactivations: self.changes.counted_deactivations(),
            creations: self.changes.creates,
            reasons: h.breaches.iter().map(|b| b.message.clone()).collect(),
        })
    }

    pub fn fail(&mut self, e: &super::SyncError, dry_run: bool) {
        self.outcome = JobOutcome::Failed;
        self.error = Some(e.describe(dry_run));
        self.failure = Some(e.kind());
    }

    /// Count this finished run in the metrics ([`crate::telemetry`]).
    pub fn record_metrics(&self, elapsed: std::time::Duration) {
        let c = &self.counts;
        crate::telemetry::run_finished(
            &self.job,
            self.outcome.as_str(),
            elapsed,
            &[
                ("read", c.read),
                ("rejected", c.rejected),
                ("deduplicated", c.deduplicated),
                ("upserted", c.upserted),
                ("deactivated", c.deactivated),
                ("unchanged", self.changes.unchanged),
                ("not_imported", c.not_imported),
                ("not_yet_started", c.not_yet_started),
                ("reference_dangling", c.references_dangling),
            ],
        );
        // What Okta applied: the planned group changes of the sessions that COMPLETED.
        let done: Vec<&SessionReport> = self
            .sessions
            .iter()
            .filter(|s| {
                s.outcome.as_ref().and_then(|o| o.final_status)
                    == Some(crate::okta::model::SessionStatus::Completed)
            })
            .collect();
        let sum = |f: fn(&SessionReport) -> usize| done.iter().map(|s| f(s) as u64).sum::<u64>();
        for (action, n) in [
            ("group_upserted", sum(|s| s.planned_groups)),
            ("group_deleted", sum(|s| s.planned_group_deletions)),
            ("membership_added", sum(|s| s.planned_memberships)),
            ("membership_removed", sum(|s| s.planned_membership_removals)),
        ] {
            crate::telemetry::group_changes(&self.job, action, n);
        }
    }
}

impl RunReport {
    /// The process exit code for this report: the worst job's (see [`JobOutcome::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        self.jobs
            .iter()
            .map(|j| j.outcome)
            .max_by_key(|o| o.severity())
            .unwrap_or(JobOutcome::Success)
            .exit_code()
    }

    /// The human summary.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for job in &self.jobs {
            job.render_text(&mut out, self.dry_run);
        }
        out
    }
}

/// At most this many rejected records and duplicates are listed in the text summary; the
/// JSON report always has all of them.
const TEXT_LIST_LIMIT: usize = 20;

impl JobReport {
    /// An empty report for `job`, before anything happened.
    pub fn new(job: &crate::settings::Job) -> Self {
        Self::named(&job.name, &job.identity_source_id)
    }

    /// An empty report of the job `job` on `identity_source_id`.
    pub fn named(job: &str, identity_source_id: &str) -> Self {
        Self {
            job: job.to_string(),
            identity_source_id: identity_source_id.to_string(),
            run_id: None,
            outcome: JobOutcome::Success,
            mode: SyncMode { full: false, reason: None },
            changes: Changes::default(),
            hold: None,
            released_by: None,
            absence_detection_off: None,
            details: Details::default(),
            error: None,
            failure: None,
            pull_complete: true,
            counts: Counts::default(),
            rejected: Vec::new(),
            deduplicated: Vec::new(),
            dangling: Vec::new(),
            stale_sessions: Vec::new(),
            direct: false,
            sessions: Vec::new(),
            timings: Timings::default(),
        }
    }

    /// The plan part of the summary: what the diff found, holds, and who. `xaas run` prints
    /// it before sending; `xaas plan` and the final report include it.
    /// The plan's group lines: counts, then who gains and loses which group.
    fn render_groups(&self, out: &mut String) {
        let (ch, d) = (&self.changes, &self.details);
        if ch.membership_removals + ch.group_deletions + ch.membership_changes > 0
            || !d.groups_created.is_empty()
        {
            let _ = writeln!(
                out,
                "    {:<34} {:>8}\n    {:<34} {:>8}\n    {:<34} {:>8}",
                "memberships removed",
                ch.membership_removals,
                "groups deleted",
                ch.group_deletions,
                "sent for memberships only",
                ch.membership_changes
            );
        }
        for m in d.memberships.iter().take(TEXT_LIST_LIMIT) {
            let mut parts: Vec<String> = m.added.iter().map(|g| format!("+{g}")).collect();
            parts.extend(m.removed.iter().map(|g| format!("-{g}")));
            let _ = writeln!(out, "    = groups of {}: {}", m.external_id, parts.join(" "));
        }
        for g in d.groups_created.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "    + group {g} (created)");
        }
        for g in d.groups_deleted.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "    - group {g} (retired: no active user derives it)");
        }
    }

    pub fn render_plan(&self, out: &mut String) {
        let ch = &self.changes;
        let mode = match (&self.mode.full, &self.mode.reason) {
            (true, Some(r)) => format!("full resync ({r})"),
            (true, None) => "full resync".to_string(),
            (false, _) => "delta".to_string(),
        };
        let run = self.run_id.map(|r| format!(", run {r}")).unwrap_or_default();
        let _ = writeln!(out, "  plan for job {} ({mode}{run}):", self.job);
        let _ = writeln!(out, "    {:<34} {:>8}", "create", ch.creates);
        let _ = writeln!(out, "    {:<34} {:>8}", "update", ch.updates);
        let _ = writeln!(out, "    {:<34} {:>8}", "reactivate", ch.reactivations);
        let _ =
            writeln!(out, "    {:<34} {:>8}", "deactivate (inactive in source)", ch.deactivations);
        let _ = writeln!(
            out,
            "    {:<34} {:>8}",
            "deactivate (missing from source)", ch.leavers_missing
        );
        let _ = writeln!(
            out,
            "    {:<34} {:>8}",
            "deactivate (inactive, never sent)", ch.deactivations_unowned
        );
        let unchanged = if self.mode.full { "unchanged (resent)" } else { "unchanged (skipped)" };
        let _ = writeln!(out, "    {:<34} {:>8}", unchanged, ch.unchanged);
        let _ = writeln!(out, "    {:<34} {:>8}", "already inactive", ch.already_inactive);
        let _ = writeln!(out, "    {:<34} {:>8}", "rejected", self.counts.rejected);
        if ch.missing_waiting > 0 {
            let _ = writeln!(
                out,
                "    {:<34} {:>8}",
                "missing, not yet deactivated", ch.missing_waiting
            );
        }
        if ch.unconfirmed_resent > 0 {
            let _ = writeln!(
                out,
                "    {:<34} {:>8}",
                "unconfirmed last time, resent", ch.unconfirmed_resent
            );
        }
        if self.direct {
            let _ = writeln!(
                out,
                "    direct: no session, one call per user (a delta within direct_max_changes; sessions only if Okta refuses)"
            );
        }
        if let Some(why) = &self.absence_detection_off {
            let _ = writeln!(out, "    missing users are not deactivated this run: {why}");
        }
        if let Some(h) = &self.hold {
            let _ = writeln!(out, "    HELD by a safeguard; sent: {}", h.sent);
            for b in &h.breaches {
                let _ = writeln!(out, "      - {}", b.message);
            }
            if let Some(r) = &h.release {
                let _ = writeln!(out, "      release with: {r}");
            }
        }
        if let Some(by) = &self.released_by {
            let _ = writeln!(out, "    safeguards released by {by}");
        }
        let d = &self.details;
        for id in d.creates.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "    + create {id}");
        }
        for u in d.updates.iter().take(TEXT_LIST_LIMIT) {
            let attrs: Vec<String> = u
                .changes
                .iter()
                .map(|c| {
                    format!(
                        "{}: {} → {}",
                        c.attribute,
                        c.from.as_deref().map_or("(none)".into(), |v| format!("{v:?}")),
                        c.to.as_deref().map_or("(none)".into(), |v| format!("{v:?}"))
                    )
                })
                .collect();
            let what = if attrs.is_empty() { "(changed)".to_string() } else { attrs.join(", ") };
            let _ = writeln!(out, "    ~ update {} {what}", u.external_id);
        }
        for id in d.reactivations.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "    ^ reactivate {id}");
        }
        for x in d.deactivations.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(
                out,
                "    - deactivate {} ({})",
                x.external_id,
                x.reason.as_str().replace('_', " ")
            );
        }
        self.render_groups(out);
        let shown =
            [d.creates.len(), d.updates.len(), d.reactivations.len(), d.deactivations.len()];
        if d.truncated || shown.iter().any(|n| *n > TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "    … more in `xaas plan --format json`");
        }
    }

    fn render_text(&self, out: &mut String, dry_run: bool) {
        let c = &self.counts;
        let outcome = match (dry_run, self.outcome) {
            (_, JobOutcome::Held) => "HELD by a safeguard",
            (true, JobOutcome::Failed) => "plan failed",
            (true, _) => "plan (nothing sent)",
            (false, JobOutcome::Success) => "completed",
            (false, JobOutcome::CompletedWithRejections) => "completed with rejected records",
            (false, JobOutcome::Failed) => "FAILED",
        };
        let _ = writeln!(
            out,
            "job {} → identity source {}: {outcome}",
            self.job, self.identity_source_id
        );
        // Only once the pull was diffed: a failed pull has no plan to show.
        if self.error.is_none() || self.changes != Changes::default() {
            self.render_plan(out);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  error: {e}");
        }
        if !self.pull_complete {
            let _ = writeln!(out, "  pull INCOMPLETE: nothing was sent, no user was deactivated");
        }
        let _ = writeln!(
            out,
            "  read {}, rejected {}, duplicates dropped {}",
            c.read, c.rejected, c.deduplicated
        );
        if c.not_yet_started > 0 {
            let _ = writeln!(
                out,
                "  {} joiner(s) not imported yet (before their pre-hire window)",
                c.not_yet_started
            );
        }
        if c.groups > 0 {
            let _ = writeln!(out, "  groups {}, memberships {}", c.groups, c.memberships);
        }
        if c.memberships_removed + c.groups_deleted > 0 {
            let _ = writeln!(
                out,
                "  memberships removed {}, groups deleted {}",
                c.memberships_removed, c.groups_deleted
            );
        }
        if c.sent_directly > 0 {
            let _ = writeln!(
                out,
                "  sent directly, no session: {} (a delta within direct_max_changes)",
                c.sent_directly
            );
        }
        if c.references_resolved + c.references_dangling > 0 {
            let _ = writeln!(
                out,
                "  references resolved {}, left out {}",
                c.references_resolved, c.references_dangling
            );
        }
        if dry_run {
            let _ = writeln!(
                out,
                "  would upsert {}, would deactivate {}{}",
                c.to_upsert,
                c.to_deactivate,
                if self.direct { ", directly (no session)" } else { "" }
            );
        } else {
            let _ = writeln!(
                out,
                "  upserted {} of {}, deactivated {} of {}{}",
                c.upserted,
                c.to_upsert,
                c.deactivated,
                c.to_deactivate,
                if c.not_imported > 0 {
                    format!(", NOT imported {}", c.not_imported)
                } else {
                    String::new()
                }
            );
        }
        for s in &self.stale_sessions {
            let _ = writeln!(
                out,
                "  stale session {} found {}: {} (now {})",
                s.id, s.found, s.action, s.final_status
            );
        }
        for (i, s) in self.sessions.iter().enumerate() {
            s.render_line(out, i + 1, dry_run);
        }
        for d in self.deduplicated.iter().take(TEXT_LIST_LIMIT) {
            let dropped: Vec<String> = d.dropped.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  duplicate externalId {}: kept {}, dropped {}",
                d.external_id,
                d.kept,
                dropped.join(", ")
            );
        }
        if self.deduplicated.len() > TEXT_LIST_LIMIT {
            let _ = writeln!(
                out,
                "  … {} more duplicates in the JSON report",
                self.deduplicated.len() - TEXT_LIST_LIMIT
            );
        }
        for d in self.dangling.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "  left out {} of {}: {}", d.attribute, d.external_id, d.reason);
        }
        if self.dangling.len() > TEXT_LIST_LIMIT {
            let _ = writeln!(
                out,
                "  … {} more references left out in the JSON report",
                self.dangling.len() - TEXT_LIST_LIMIT
            );
        }
        for r in self.rejected.iter().take(TEXT_LIST_LIMIT) {
            let _ = writeln!(out, "  rejected {r}");
        }
        if self.rejected.len() > TEXT_LIST_LIMIT {
            let _ = writeln!(
                out,
                "  … {} more rejected records in the JSON report",
                self.rejected.len() - TEXT_LIST_LIMIT
            );
        }
        let t = &self.timings;
        let _ = writeln!(
            out,
            "  took {:.1}s (pull and map {:.1}s, okta {:.1}s)",
            t.total_ms as f64 / 1000.0,
            t.pull_ms as f64 / 1000.0,
            t.push_ms as f64 / 1000.0
        );
    }
}
