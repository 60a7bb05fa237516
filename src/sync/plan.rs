//! The full plan as JSON (`xaas plan --format json`): every session, every request, and the
//! users in each, so a change can be reviewed before anything is sent.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::{Counts, Duplicate};
use super::{PullFailureKind, Pulled, pull_and_map, reject_oversized};
use crate::mapping::Rejection;
use crate::okta::batch::{Limits, RequestKind, SessionKind};
use crate::settings::{Job, Settings};

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
    pub counts: Counts,
    pub rejected: Vec<Rejection>,
    pub deduplicated: Vec<Duplicate>,
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
    /// `plan`'s exit code: failure, rejected records, or success.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            crate::cli::EXIT_FAILURE
        } else if !self.rejected.is_empty() {
            crate::cli::EXIT_REJECTED
        } else {
            crate::cli::EXIT_OK
        }
    }
}

/// Pull, map and pack `job`, sending nothing.
pub async fn build(settings: &Settings, job: &Job) -> PlanDocument {
    let mut doc = PlanDocument {
        job: job.name.clone(),
        identity_source_id: job.identity_source_id.clone(),
        error: None,
        pull_complete: true,
        counts: Counts::default(),
        rejected: Vec::new(),
        deduplicated: Vec::new(),
        sessions: Vec::new(),
    };
    let mut pulled: Pulled = match pull_and_map(settings, job).await {
        Ok(p) => p,
        Err(failure) => {
            doc.error = Some(match failure.kind {
                PullFailureKind::Incomplete => format!(
                    "the pull did not complete, so nothing would be sent: {}",
                    failure.message
                ),
                PullFailureKind::TooManyRejected => {
                    format!("{}, so nothing would be sent", failure.message)
                }
            });
            doc.pull_complete = failure.kind != PullFailureKind::Incomplete;
            doc.counts.read = failure.read;
            doc.counts.rejected = failure.rejected.len() as u64;
            doc.rejected = failure.rejected;
            return doc;
        }
    };
    let mut sessions = pulled.users.sessions(job.sessions, Limits::default());
    loop {
        let s = match sessions.next_session() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                doc.error = Some(format!("cannot read back the pulled users: {e}"));
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
        let (up, del) = s.counts();
        doc.counts.to_upsert += up as u64;
        doc.counts.to_deactivate += del as u64;
        doc.sessions.push(PlannedSessionDoc { kind: s.kind, requests });
    }
    let oversized = sessions.take_oversized();
    drop(sessions);
    reject_oversized(&mut pulled, oversized);
    doc.counts.read = pulled.read;
    doc.counts.rejected = pulled.rejected.len() as u64;
    doc.counts.deduplicated = pulled.deduplicated.iter().map(|d| d.dropped.len() as u64).sum();
    doc.rejected = pulled.rejected;
    doc.deduplicated = pulled.deduplicated;
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
