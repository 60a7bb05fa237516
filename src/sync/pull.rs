//! Pull a job's source and map every record: the first stage of a run.
//!
//! The whole pull is mapped and de-duplicated before anything is sent, for two reasons: Okta
//! must never see one externalId twice in a session (FACTS §5), and a pull that fails half way
//! must not send half a picture. Records that cannot be read or mapped are rejected with their
//! line and reason; the rest go on.

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::SyncError;
use super::references::{self, Absent, Resolution};
use super::report::Duplicate;
use super::spill::Spill;
use crate::mapping::{Mapped, NotYet, Origin, Rejection};
use crate::okta::batch::Oversized;
use crate::settings::Job;

/// The outcome of pulling and mapping a job's source.
#[derive(Debug)]
pub struct Pulled {
    /// Users to send, de-duplicated (last record wins), in first-seen order; on disk, so
    /// memory holds only the externalId index (see [`super::spill`]).
    pub users: Spill,
    pub rejected: Vec<Rejection>,
    pub deduplicated: Vec<Duplicate>,
    /// Joiners whose pre-hire window has not opened: not sent this run.
    pub not_yet: Vec<NotYet>,
    /// Items read from the source, including rejected ones.
    pub read: u64,
    /// The mapping's `references`, resolved against the pull (rejections are in `rejected`).
    pub references: Resolution,
}

/// A pull that must not be sent. Carries what was learnt on the way, for the report.
#[derive(Debug)]
pub struct PullFailure {
    /// [`SyncError::PullIncomplete`], [`SyncError::TooManyRejected`], [`SyncError::Spill`] or
    /// [`SyncError::Shutdown`].
    pub error: SyncError,
    pub read: u64,
    pub rejected: Vec<Rejection>,
}

impl PullFailure {
    /// Whether the source was read to its end (only the error budget stopped it): then who is
    /// missing from it is known, though nothing is sent.
    pub fn complete(&self) -> bool {
        matches!(self.error, SyncError::TooManyRejected(_))
    }
}

impl std::fmt::Display for PullFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// Pull every record of `job`'s source and map it.
///
/// An `Err` means nothing may be sent: the pull was incomplete, or the error budget
/// (`max_rejected`) was exceeded. A count budget stops the pull as soon as it is exceeded; a
/// percentage can only be judged at the end. Cancelling `cancel` stops the pull between two
/// records ([`SyncError::Shutdown`]). Relative paths of the source are resolved against
/// `base_dir` (the config file's directory).
pub async fn pull_and_map(
    base_dir: &Path,
    job: &Job,
    cancel: &CancellationToken,
) -> Result<Pulled, PullFailure> {
    let source = job.source.build(base_dir);
    let mut stream = source.pull();
    let mut rejected: Vec<Rejection> = Vec::new();
    let mut read = 0u64;
    let fail = |error, read, rejected| PullFailure { error, read, rejected };
    let mut users = match Spill::new() {
        Ok(s) => s,
        Err(e) => {
            return Err(fail(SyncError::spill("create a temporary file for")(e), 0, rejected));
        }
    };
    let mut deduplicated: Vec<Duplicate> = Vec::new();
    let mut dup_index: HashMap<String, usize> = HashMap::new();
    let mut not_yet: Vec<NotYet> = Vec::new();
    // One instant for the whole pull, so every record is dated against the same day.
    let now = chrono::Utc::now();
    let memory = super::memory::MemoryLimit::of(job.max_memory);
    loop {
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(fail(SyncError::Shutdown, read, rejected)),
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                return Err(fail(SyncError::PullIncomplete(e.to_string()), read, rejected));
            }
        };
        read += 1;
        if read.is_multiple_of(super::memory::CHECK_EVERY)
            && let Some(limit) = &memory
            && let Err(e) = limit.check(&job.name, read)
        {
            return Err(fail(e, read, rejected));
        }
        let user = match item.and_then(|record| job.mapping.apply_at(&record, now)) {
            Ok(Mapped::User(u)) => u,
            Ok(Mapped::NotYet(n)) => {
                not_yet.push(n);
                continue;
            }
            Err(rejection) => {
                rejected.push(rejection);
                if let Some(budget) = job.max_rejected
                    && let Some(message) = budget.exceeded_early(rejected.len() as u64)
                {
                    return Err(fail(SyncError::TooManyRejected(message), read, rejected));
                }
                continue;
            }
        };
        let previous = match users.push(&user) {
            Ok(p) => p,
            Err(e) => return Err(fail(SyncError::spill("write")(e), read, rejected)),
        };
        if let Some(previous) = previous {
            // Last record wins; the report says which records were dropped.
            let kept = user.origin.clone();
            match dup_index.get(&user.external_id) {
                Some(&d) => {
                    let dup = &mut deduplicated[d];
                    dup.dropped.push(previous);
                    dup.kept = kept;
                }
                None => {
                    dup_index.insert(user.external_id.clone(), deduplicated.len());
                    deduplicated.push(Duplicate {
                        external_id: user.external_id,
                        kept,
                        dropped: vec![previous],
                    });
                }
            }
        }
    }
    if let Err(e) = users.finish() {
        return Err(fail(SyncError::spill("write")(e), read, rejected));
    }
    let absent = Absent {
        rejected: rejected.iter().filter_map(|r| r.external_id.as_deref()).collect(),
        not_yet: not_yet.iter().map(|n| n.external_id.as_str()).collect(),
    };
    let resolved = references::resolve(&job.mapping, users, &absent);
    drop(absent);
    let (users, mut resolution) = match resolved {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(SyncError::spill("resolve the references of")(e), read, rejected));
        }
    };
    rejected.append(&mut resolution.rejected);
    if let Some(budget) = job.max_rejected
        && let Some(message) = budget.exceeded(rejected.len() as u64, read)
    {
        return Err(fail(SyncError::TooManyRejected(message), read, rejected));
    }
    // Once more with everything the pull holds, before anything is planned or sent.
    if let Some(limit) = &memory
        && let Err(e) = limit.check(&job.name, read)
    {
        return Err(fail(e, read, rejected));
    }
    Ok(Pulled { users, rejected, deduplicated, not_yet, read, references: resolution })
}

/// Turn users too large to send into rejections.
pub fn reject_oversized(pulled: &mut Pulled, oversized: Vec<(Oversized, Origin)>) {
    for (o, origin) in oversized {
        pulled.rejected.push(Rejection {
            origin,
            external_id: Some(o.external_id.clone()),
            field: None,
            reason: o.reason(),
        });
    }
}
