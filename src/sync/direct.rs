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
