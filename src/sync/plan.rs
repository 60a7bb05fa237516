//! The full plan as JSON (`xaas plan --format json`): the diff against the state (every
//! create, update with its attribute-level diff, reactivation, deactivation and why), holds,
//! and every session, request and user, so a change can be reviewed before anything is sent.

use std::collections::BTreeMap;

use serde::Serialize;

use super::delta::Changes;
use super::report::{Counts, Details, Duplicate, HoldReport, JobOutcome, JobReport, SyncMode};
use super::{RunContext, RunOptions, SyncError, prepare};
use crate::mapping::Rejection;
use crate::okta::batch::{Limits, RequestKind, SessionKind};
use crate::settings::Job;

/// A job's plan.
#[derive(Debug, Serialize)]
pub struct PlanDocument {
    pub job: String,
    pub identity_source_id: String,
    /// Set when the pull failed: nothing would be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `false` when the source failed part way.
    pub pull_complete: bool,
    /// Delta or full resync, and why.
    pub mode: SyncMode,
    /// The diff against the state.
    pub changes: Changes,
    /// Set when a safeguard would hold the run (no sessions are listed then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldReport>,
    /// Every create, update (with its attribute diff), reactivation and deactivation.
    pub details: Details,
    pub counts: Counts,
    pub rejected: Vec<Rejection>,
    pub deduplicated: Vec<Duplicate>,
    /// The users would go through Okta's direct endpoints, no session (see
    /// [`super::report::JobReport::direct`]); `sessions` is what would go instead if they cannot.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    pub sessions: Vec<PlannedSessionDoc>,
}

#[derive(Debug, Serialize)]
pub struct PlannedSessionDoc {
    pub kind: SessionKind,
    pub requests: Vec<PlannedRequestDoc>,
}

#[derive(Debug, Serialize)]
pub struct PlannedRequestDoc {
    pub kind: RequestKind,
    pub bytes: usize,
    pub users: Vec<PlannedUserDoc>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedUserDoc {
    pub external_id: String,
    /// The profile sent with an upsert; absent for a deactivation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<BTreeMap<String, String>>,
}

impl PlanDocument {
    /// `plan`'s exit code: the code the run would end with.
    pub fn exit_code(&self) -> i32 {
        let outcome = if self.error.is_some() {
            JobOutcome::Failed
        } else if self.hold.is_some() {
            JobOutcome::Held
        } else if !self.rejected.is_empty() {
            JobOutcome::CompletedWithRejections
        } else {
            JobOutcome::Success
        };
        outcome.exit_code()
    }
}

impl PlanDocument {
    /// The plan of `job`, empty so far.
    fn new(job: &Job) -> Self {
        PlanDocument {
            job: job.name.clone(),
            identity_source_id: job.identity_source_id.clone(),
            error: None,
            pull_complete: true,
            mode: SyncMode { full: false, reason: None },
            changes: Changes::default(),
            hold: None,
            details: Details::default(),
            counts: Counts::default(),
            rejected: Vec::new(),
            deduplicated: Vec::new(),
            direct: false,
            sessions: Vec::new(),
        }
    }

    /// A plan that could not be made.
    pub fn failed(job: &Job, e: &SyncError) -> Self {
        PlanDocument { error: Some(e.describe(true)), ..Self::new(job) }
    }
}

/// Pull, map, diff against the state and pack `job`, sending nothing and writing nothing
/// (`ctx.okta` is not used; give a read-only store).
pub async fn build(ctx: &mut RunContext<'_>, job: &Job, options: &RunOptions) -> PlanDocument {
    let mut doc = PlanDocument::new(job);
    // Every user is listed in the JSON plan.
    let options = RunOptions { detail_limit: usize::MAX, announce: false, ..options.clone() };
    let mut report = JobReport::new(job);
    let prepared = prepare(ctx, job, &options, &mut report).await;
    match &prepared {
        Err(e) => doc.error = Some(e.describe(true)),
        Ok(p) => doc.direct = super::direct::run_qualifies(job, &report, p.held),
    }
    doc.pull_complete = report.pull_complete;
    doc.mode = report.mode;
    doc.changes = report.changes;
    doc.hold = report.hold;
    doc.details = report.details;
    doc.counts = report.counts;
    doc.rejected = report.rejected;
    doc.deduplicated = report.deduplicated;
    let Ok(prepared) = prepared else { return doc };
    if prepared.held {
        return doc;
    }
    let mut sessions = prepared.pulled.users.sessions_selected(
        job.sessions,
        Limits::default(),
        Some(&prepared.send),
        &prepared.extra_deletes,
        &prepared.removals,
    );
    loop {
        let s = match sessions.next_session() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                doc.error = Some(SyncError::spill("read back")(e).describe(true));
                return doc;
            }
        };
        let requests = s
            .requests
            .iter()
            .map(|r| PlannedRequestDoc {
                kind: r.kind,
                bytes: r.body.len(),
                // The profiles shown are read from the exact body that would be sent.
                users: serde_json::from_slice::<Body>(&r.body)
                    .map(|b| {
                        b.profiles
                            .into_iter()
                            .map(|p| PlannedUserDoc {
                                external_id: p.external_id,
                                profile: match r.kind {
                                    RequestKind::Upsert => p.profile,
                                    _ => None,
                                },
                            })
                            .collect()
                    })
                    .unwrap_or_else(|_| {
                        r.external_ids
                            .iter()
                            .map(|id| PlannedUserDoc { external_id: id.clone(), profile: None })
                            .collect()
                    }),
            })
            .collect();
        doc.sessions.push(PlannedSessionDoc { kind: s.kind, requests });
    }
    doc
}

/// A bulk request body, read back for display.
#[derive(serde::Deserialize)]
struct Body {
    profiles: Vec<BodyProfile>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BodyProfile {
    external_id: String,
    #[serde(default)]
    profile: Option<BTreeMap<String, String>>,
}
