//! One user through Okta's direct endpoints (no session, so no 5-minute wait), with the send
//! stage's rules ([`super::stage`]): marked *pending* before Okta can see the call, confirmed
//! only on Okta's 2xx. A crash or a failure in between leaves the user pending, and the next
//! run or push sends it again; `DELETE` and `PUT` are safe to repeat, and the client reads a
//! user back before repeating a `POST` ([`crate::okta::direct`]).
//!
//! When the org refuses the direct endpoints ([`crate::okta::direct::is_unavailable`]: the
//! feature is not enabled), [`mark_unavailable`] records it for the identity source: logged
//! once with what to enable, the `xaas_direct_endpoints_unavailable` gauge, `/readyz`'s
//! `direct_endpoints` (a warning, never unready). Pushes and runs then use sessions, and try
//! the direct path again after [`RETRY_DIRECT_AFTER`].

use super::SyncError;
use super::stage;
use crate::mapping::MappedUser;
use crate::okta::OktaClient;
use crate::okta::direct::Deleted;
use crate::okta::error::OktaError;
use crate::state::{Confirmed, SentStatus, StateStore};

/// How long the direct path of an identity source rests after the org refused it.
pub const RETRY_DIRECT_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Identity sources whose org refused the direct endpoints: when, and whether that was said.
static UNAVAILABLE: std::sync::Mutex<Vec<Refusal>> = std::sync::Mutex::new(Vec::new());

/// The org refused the direct endpoints of one identity source.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub identity_source: String,
    /// The last refusal.
    pub at: chrono::DateTime<chrono::Utc>,
    since: std::time::Instant,
    /// Okta's answer, as an error line (no secret: the client's errors never carry one).
    pub error: String,
}

impl Refusal {
    /// When the direct path is tried again.
    pub fn retry_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.at + chrono::Duration::from_std(RETRY_DIRECT_AFTER).unwrap_or_default()
    }
}

fn refusals() -> std::sync::MutexGuard<'static, Vec<Refusal>> {
    UNAVAILABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the direct path of `source` is resting after a refusal (it is tried again once
/// [`RETRY_DIRECT_AFTER`] has passed since the last one).
pub fn resting(source: &str) -> bool {
    refusals().iter().any(|r| r.identity_source == source && r.since.elapsed() < RETRY_DIRECT_AFTER)
}

/// Record that the org refused `source`'s direct endpoints with `error`: logged with what to
/// enable the first time (at info on later retries), and the gauge set.
pub fn mark_unavailable(source: &str, error: &OktaError) {
    let mut list = refusals();
    let first = !list.iter().any(|r| r.identity_source == source);
    list.retain(|r| r.identity_source != source);
    list.push(Refusal {
        identity_source: source.to_owned(),
        at: chrono::Utc::now(),
        since: std::time::Instant::now(),
        error: error.to_string(),
    });
    drop(list);
    if first {
        tracing::warn!(identity_source = %source, error = %error, "okta refused its direct identity-source endpoints: changes wait for import sessions; enable the org's individual identity-source operations (IDENTITY_SOURCE_MANAGE_INDIVIDUAL_ENTITIES) to send them at once; trying again in 10 minutes");
    } else {
        tracing::info!(identity_source = %source, error = %error, "okta still refuses its direct identity-source endpoints: using import sessions; trying again in 10 minutes");
    }
    crate::telemetry::direct_unavailable(source, true);
}

/// A direct call for `source` went through: forget an earlier refusal.
pub fn mark_available(source: &str) {
    let mut list = refusals();
    let before = list.len();
    list.retain(|r| r.identity_source != source);
    if list.len() != before {
        drop(list);
        tracing::info!(identity_source = %source, "okta accepts its direct identity-source endpoints again");
        crate::telemetry::direct_unavailable(source, false);
    }
}

/// The identity sources whose direct endpoints are refused now, for `/readyz`.
pub fn unavailable() -> Vec<Refusal> {
    refusals().clone()
}

/// Which of `ids` Okta may have (confirmed, or sent once and maybe applied), read in one go:
/// a direct upsert `PUT`s those and `POST`s the others.
pub fn known_to_okta(
    store: &dyn StateStore,
    job: &str,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, crate::state::StateError> {
    Ok(store
        .entries(job, ids)?
        .into_iter()
        .filter(|e| e.status.is_some() || e.pending.is_some())
        .map(|e| e.external_id)
        .collect())
}

/// Why a direct send did not complete.
#[derive(Debug)]
pub enum DirectError {
    /// Okta refused or failed the call; the user stays pending.
    Okta(OktaError),
    /// The state could not be written (before the call: nothing was sent).
    State(SyncError),
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectError::Okta(e) => e.fmt(f),
            DirectError::State(e) => e.fmt(f),
        }
    }
}

/// What a direct send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectSent {
    Upserted,
    Deactivated,
    /// A deactivation of a user Okta never had: nothing to do, confirmed as inactive.
    UnknownToOkta,
}

/// Send `user` of `job` now: a deactivation with `DELETE`, an upsert with `PUT` (or `POST`
/// when `known` is false: the state has never seen Okta confirm the user).
pub async fn send_user(
    store: &mut dyn StateStore,
    client: &OktaClient,
    source: &str,
    job: &str,
    user: &MappedUser,
    known: bool,
    keep_profiles: bool,
) -> Result<DirectSent, DirectError> {
    let status = SentStatus::of(user.active);
    store
        .mark_pending(job, &[(user.external_id.as_str(), status)], chrono::Utc::now())
        .map_err(|e| DirectError::State(SyncError::MarkPending(e)))?;
    let sent = if user.active {
        client
            .put_user(source, &user.external_id, &user.profile, known)
            .await
            .map(|()| DirectSent::Upserted)
    } else {
        client.delete_user(source, &user.external_id).await.map(|d| match d {
            Deleted::Deactivated => DirectSent::Deactivated,
            Deleted::Unknown => DirectSent::UnknownToOkta,
        })
    };
    let sent = match sent {
        Ok(sent) => {
            mark_available(source);
            sent
        }
        Err(e) => {
            if crate::okta::direct::is_unavailable(&e) {
                mark_unavailable(source, &e);
            }
            return Err(DirectError::Okta(e));
        }
    };
    stage::confirm(store, || Ok(vec![(job, vec![Confirmed::of(user, keep_profiles)])]))
        .map_err(DirectError::State)?;
    Ok(sent)
}

/// Whether a run's plan (not `held` whole by a safeguard) may go through the direct
/// endpoints instead of sessions: a delta
/// (not a full resync) of at most `job.direct_max_changes` users, without group changes (the
/// direct calls here are per user), each upsert carrying the `email` and `userName` Okta's
/// direct writes require.
pub fn run_qualifies(
    job: &crate::settings::Job,
    report: &super::report::JobReport,
    held: bool,
) -> bool {
    let c = &report.counts;
    let users = c.to_upsert + c.to_deactivate;
    !held
        && job.direct_max_changes > 0
        && !report.mode.full
        && users > 0
        && users <= job.direct_max_changes
        && c.groups + c.memberships + c.memberships_removed + c.groups_deleted == 0
}

/// What sending a run's users directly came to.
#[derive(Debug)]
pub enum RunDirect {
    /// Every user was sent and confirmed.
    Sent { upserted: u64, deactivated: u64 },
    /// Not possible (a user lacks `email` or `userName`, or the org refused the direct
    /// endpoints before anything was sent): send the sessions instead.
    UseSessions(String),
    /// Failed part way; what was sent is confirmed, the rest stays for the next run.
    Failed { upserted: u64, deactivated: u64, error: DirectError },
}

/// Send `users` (the run's planned users, upserts and deactivations) one by one.
pub async fn send_run(
    store: &mut dyn StateStore,
    client: &OktaClient,
    job: &crate::settings::Job,
    users: &[MappedUser],
    keep_profiles: bool,
) -> RunDirect {
    let lacking = users.iter().find(|u| {
        u.active && !(u.profile.contains_key("email") && u.profile.contains_key("userName"))
    });
    if let Some(u) = lacking {
        return RunDirect::UseSessions(format!(
            "{} has no email or userName, which a direct write requires",
            u.external_id
        ));
    }
    if resting(&job.identity_source_id) {
        return RunDirect::UseSessions(
            "okta refused the direct endpoints lately; they are tried again 10 minutes after the refusal".into(),
        );
    }
    let (mut upserted, mut deactivated) = (0, 0);
    let ids: Vec<&str> = users.iter().map(|u| u.external_id.as_str()).collect();
    let known = match known_to_okta(store, &job.name, &ids) {
        Ok(k) => k,
        Err(e) => {
            let error = DirectError::State(SyncError::state("read the state")(e));
            return RunDirect::Failed { upserted, deactivated, error };
        }
    };
    for user in users {
        let known = known.contains(&user.external_id);
        let source = job.identity_source_id.as_str();
        match send_user(store, client, source, &job.name, user, known, keep_profiles).await {
            Ok(DirectSent::Upserted) => upserted += 1,
            Ok(_) => deactivated += 1,
            Err(DirectError::Okta(e))
                if upserted + deactivated == 0 && crate::okta::direct::is_unavailable(&e) =>
            {
                return RunDirect::UseSessions(format!("okta refused its direct endpoints: {e}"));
            }
            Err(error) => return RunDirect::Failed { upserted, deactivated, error },
        }
    }
    RunDirect::Sent { upserted, deactivated }
}
