//! One user through Okta's direct endpoints (no session, so no 5-minute wait), with the send
//! stage's rules ([`super::stage`]): marked *pending* before Okta can see the call, confirmed
//! only on Okta's 2xx. A crash or a failure in between leaves the user pending, and the next
//! run or push sends it again; `DELETE` and `PUT` are safe to repeat, and the client reads a
//! user back before repeating a `POST` ([`crate::okta::direct`]).

use super::SyncError;
use super::stage;
use crate::mapping::MappedUser;
use crate::okta::OktaClient;
use crate::okta::direct::Deleted;
use crate::okta::error::OktaError;
use crate::state::{Confirmed, SentStatus, StateStore};

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
    }
    .map_err(DirectError::Okta)?;
    stage::confirm(store, || Ok(vec![(job, vec![Confirmed::of(user, keep_profiles)])]))
        .map_err(DirectError::State)?;
    Ok(sent)
}

/// Whether a run's plan may go through the direct endpoints instead of sessions: a delta
/// (not a full resync) of at most `job.direct_max_changes` users, without group changes (the
/// direct calls here are per user), each upsert carrying the `email` and `userName` Okta's
/// direct writes require.
pub fn run_qualifies(job: &crate::settings::Job, report: &super::report::JobReport) -> bool {
    let c = &report.counts;
    let users = c.to_upsert + c.to_deactivate;
    job.direct_max_changes > 0
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
