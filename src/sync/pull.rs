//! Pull a job's source and map every record: the first stage of a run.
//!
//! The whole pull is mapped and de-duplicated before anything is sent, for two reasons: Okta
//! must never see one externalId twice in a session (FACTS §5), and a pull that fails half way
//! must not send half a picture. Records that cannot be read or mapped are rejected with their
//! line and reason; the rest go on.

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio_util::sync::CancellationToken;

use super::SyncError;
use super::references::{self, Absent, Resolution};
use super::report::Duplicate;
use super::spill::{Encoded, IdHasher, Spill};
use crate::mapping::{Mapped, Mapping, NotYet, Origin, Rejection};
use crate::okta::batch::Oversized;
use crate::settings::Job;
use crate::sources::SourceItem;
use chrono::{DateTime, Utc};

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

/// Records mapped per blocking task, and batches mapped at once: mapping runs on the
/// blocking threads while the source reads ahead (CSV parses on a thread of its own) and this
/// task spills, so every core works. Results are taken in the source's order. Sized by
/// `bench/scale.py` on 2 cores: 1,024 × 4 held about 20 MiB more than 512 × 3 at the same
/// speed, and 256 was no smaller and slower.
const MAP_BATCH: usize = 512;
const MAP_IN_FLIGHT: usize = 3;

/// One record as a mapping worker hands it back: mapped, and a user already encoded for the
/// spill (the costly part of spilling); or why not.
enum Step {
    User(Encoded),
    NotYet(NotYet),
    Rejected(Rejection),
    /// The spill could not encode the user: the pull stops (nothing is lost silently).
    Failed(std::io::Error),
}

impl Step {
    fn of(item: SourceItem, mapping: &Mapping, now: DateTime<Utc>, h: &IdHasher) -> Self {
        match item.and_then(|r| mapping.apply_at(&r, now)) {
            Ok(Mapped::User(u)) => match Encoded::new(&u, h) {
                Ok(e) => Step::User(e),
                Err(e) => Step::Failed(e),
            },
            Ok(Mapped::NotYet(n)) => Step::NotYet(n),
            Err(r) => Step::Rejected(r),
        }
    }
}

/// What the pull has gathered so far, taking mapped records in the source's order.
struct Gathered<'j> {
    job: &'j Job,
    users: Spill,
    rejected: Vec<Rejection>,
    deduplicated: Vec<Duplicate>,
    dup_index: HashMap<String, usize>,
    not_yet: Vec<NotYet>,
    read: u64,
    memory: Option<super::memory::MemoryLimit>,
}

impl Gathered<'_> {
    /// Take the next record, as mapped; an `Err` stops the pull.
    fn take(&mut self, item: Step) -> Result<(), SyncError> {
        self.read += 1;
        if self.read.is_multiple_of(super::memory::CHECK_EVERY)
            && let Some(limit) = &self.memory
        {
            limit.check(&self.job.name, self.read)?;
        }
        let user = match item {
            Step::User(u) => u,
            Step::Failed(e) => return Err(SyncError::spill("write")(e)),
            Step::NotYet(n) => {
                self.not_yet.push(n);
                return Ok(());
            }
            Step::Rejected(rejection) => {
                self.rejected.push(rejection);
                if let Some(budget) = self.job.max_rejected
                    && let Some(message) = budget.exceeded_early(self.rejected.len() as u64)
                {
                    return Err(SyncError::TooManyRejected(message));
                }
                return Ok(());
            }
        };
        let Some(previous) = self.users.push_encoded(&user).map_err(SyncError::spill("write"))?
        else {
            return Ok(());
        };
        // Last record wins; the report says which records were dropped.
        let kept = user.origin;
        match self.dup_index.get(&user.external_id) {
            Some(&d) => {
                let dup = &mut self.deduplicated[d];
                dup.dropped.push(previous);
                dup.kept = kept;
            }
            None => {
                self.dup_index.insert(user.external_id.clone(), self.deduplicated.len());
                self.deduplicated.push(Duplicate {
                    external_id: user.external_id,
                    kept,
                    dropped: vec![previous],
                });
            }
        }
        Ok(())
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
    let fail = |error, g: Gathered| PullFailure { error, read: g.read, rejected: g.rejected };
    let users = match Spill::new() {
        Ok(s) => s,
        Err(e) => {
            let error = SyncError::spill("create a temporary file for")(e);
            return Err(PullFailure { error, read: 0, rejected: Vec::new() });
        }
    };
    let mut g = Gathered {
        job,
        users,
        rejected: Vec::new(),
        deduplicated: Vec::new(),
        dup_index: HashMap::new(),
        not_yet: Vec::new(),
        read: 0,
        memory: super::memory::MemoryLimit::of(job.max_memory),
    };
    // One instant for the whole pull, so every record is dated against the same day.
    let now = chrono::Utc::now();
    let hasher = g.users.hasher();
    let map_batch = |batch: Vec<SourceItem>| {
        let (mapping, hasher) = (job.mapping.clone(), hasher);
        crate::compute::spawn(move || {
            let mapped: Vec<Step> =
                batch.into_iter().map(|item| Step::of(item, &mapping, now, &hasher)).collect();
            mapped
        })
    };
    let mut batch: Vec<SourceItem> = Vec::with_capacity(MAP_BATCH);
    let mut in_flight = FuturesOrdered::new();
    // Set once the source has said all it will: `Err` when it failed part way.
    let mut ended: Option<Result<(), String>> = None;
    loop {
        if ended.is_some() && in_flight.is_empty() {
            break;
        }
        let reading = ended.is_none() && in_flight.len() < MAP_IN_FLIGHT;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(fail(SyncError::Shutdown, g)),
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let mapped: Vec<Step> = match done {
                    Ok(m) => m,
                    Err(e) => {
                        let error = SyncError::PullIncomplete(format!("mapping failed: {e}"));
                        return Err(fail(error, g));
                    }
                };
                for item in mapped {
                    if let Err(e) = g.take(item) {
                        return Err(fail(e, g));
                    }
                }
            }
            item = stream.next(), if reading => {
                match item {
                    Some(Ok(i)) => batch.push(i),
                    Some(Err(e)) => ended = Some(Err(e.to_string())),
                    None => ended = Some(Ok(())),
                }
                if batch.len() >= MAP_BATCH || (ended.is_some() && !batch.is_empty()) {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(MAP_BATCH));
                    in_flight.push_back(map_batch(full));
                }
            }
        }
    }
    // Everything read before a failure was taken (its rejections are in the report).
    if let Some(Err(e)) = ended {
        return Err(fail(SyncError::PullIncomplete(e), g));
    }
    finish(g)
}

/// The pull was read to its end: resolve references, judge the error budget.
fn finish(g: Gathered) -> Result<Pulled, PullFailure> {
    let Gathered { job, users, mut rejected, deduplicated, not_yet, read, memory, .. } = g;
    let fail = |error, read, rejected| PullFailure { error, read, rejected };
    let mut users = users;
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
