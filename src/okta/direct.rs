//! The direct (session-less) user endpoints of an identity source (FACTS §2b): one user at a
//! time, not subject to the 5-minute session rule. Each call goes through the client's one
//! policy stack (credentials, concurrency cap, rate budget, timeout, retry).
//!
//! Repeating: `PUT`, `PATCH` and `DELETE` are safe to repeat, so an ambiguous failure (timeout,
//! reset, 5xx) is retried by the stack; `POST` is not (a timed-out create may have created the user),
//! so [`OktaClient::create_user`] reads the user back before it decides.
//!
//! Answers differ from the spec (FACTS §2b): `POST` is documented without a body and answers
//! one; `DELETE` is documented 204 and answers 200 with an empty body. Any 2xx is accepted, and
//! no body is required.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Call, OktaClient, decode};
use super::error::OktaError;
use crate::telemetry::endpoint;

/// The body of a direct create or replace (`UserRequestSchema`). Okta requires `email` and
/// `userName` in it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRequest<'a> {
    external_id: &'a str,
    profile: &'a BTreeMap<String, String>,
}

/// The body of a direct update (`UsersUpdateRequestSchema`): the attributes to change. Okta's
/// schema requires `email` and `userName` here too (FACTS §3).
#[derive(Debug, Serialize)]
struct UserUpdate<'a> {
    profile: &'a BTreeMap<String, String>,
}

/// What Okta answers for a user (`UserResponseSchema`). It carries no status: whether the user
/// is deactivated cannot be read back.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DirectUser {
    pub id: String,
    pub external_id: String,
    #[serde(default)]
    pub profile: BTreeMap<String, String>,
}

/// What a direct deactivation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Okta had the user: deactivated.
    Deactivated,
    /// Okta never had the user (404): nothing to deactivate, which is done too.
    Unknown,
}

/// Whether Okta refused a direct call because the org does not have the direct endpoints
/// (FACTS §9: E0000015, 401; any other refusal of the route itself, 403, 405 or 501, is read
/// the same), as opposed to a refusal of this user's data.
pub fn is_unavailable(e: &OktaError) -> bool {
    let code = e.detail().map(|d| d.error_code).unwrap_or_default();
    code == "E0000015" || matches!(e.status(), Some(401 | 403 | 405 | 501))
}

impl OktaClient {
    /// `DELETE …/users/{externalId}`: deactivate one user now.
    pub async fn delete_user(
        &self,
        source_id: &str,
        external_id: &str,
    ) -> Result<Deleted, OktaError> {
        let call = Call {
            op: "deactivate user",
            endpoint: endpoint::USERS_DELETE,
            method: Method::DELETE,
            url: self.url(source_id, &["users", external_id]),
            json_body: None,
            idempotent: true,
        };
        match self.execute(call).await {
            Ok(_) => Ok(Deleted::Deactivated),
            Err(e) if is_unknown_user(&e) => Ok(Deleted::Unknown),
            Err(e) => Err(e),
        }
    }

    /// `GET …/users/{externalId}`; `None` when Okta does not have the user.
    pub async fn get_user(
        &self,
        source_id: &str,
        external_id: &str,
    ) -> Result<Option<DirectUser>, OktaError> {
        let call = Call {
            op: "get user",
            endpoint: endpoint::USERS_GET,
            method: Method::GET,
            url: self.url(source_id, &["users", external_id]),
            json_body: None,
            idempotent: true,
        };
        match self.execute(call).await {
            Ok(answer) => decode("get user", &answer).map(Some),
            Err(e) if is_unknown_user(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create or replace one user now: `PUT` when Okta has it, `POST` when it does not
    /// (`known` is what the caller believes; a wrong guess costs one more call). An ambiguous
    /// failure of the `POST` reads the user back instead of creating it twice.
    pub async fn put_user(
        &self,
        source_id: &str,
        external_id: &str,
        profile: &BTreeMap<String, String>,
        known: bool,
    ) -> Result<(), OktaError> {
        let body = serde_json::to_vec(&UserRequest { external_id, profile })
            .map_err(|e| OktaError::Other(format!("cannot encode the user: {e}")))?;
        if known {
            match self.replace_user(source_id, external_id, &body).await {
                Err(e) if is_unknown_user(&e) => {}
                other => return other,
            }
        }
        // A create that failed ambiguously may have created the user: read it back, and only
        // create again when Okta does not have it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let call = Call {
                op: "create user",
                endpoint: endpoint::USERS_CREATE,
                method: Method::POST,
                url: self.url(source_id, &["users"]),
                json_body: Some(&body),
                idempotent: false,
            };
            let err = match self.execute(call).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            // Refused as existing (created by an earlier attempt, or meanwhile): replace it.
            let settle = err.is_ambiguous() || (err.status() == Some(400) && !known);
            if !settle {
                return Err(err);
            }
            match self.get_user(source_id, external_id).await? {
                Some(_) => return self.replace_user(source_id, external_id, &body).await,
                None if err.is_ambiguous() && attempt <= self.options().max_retries => {
                    tokio::time::sleep(self.options().retry_backoff * attempt).await;
                }
                None => return Err(err),
            }
        }
    }

    /// `PATCH …/users/{externalId}`: change the given attributes of a user Okta has, and
    /// answer the whole user as Okta now holds it. Attributes not given keep their value
    /// [INF: the spec names the operation an update; FACTS has no recording]. The sync sends
    /// whole profiles ([`OktaClient::put_user`]), which a mapping always has; this is for a
    /// caller that knows only what changed.
    pub async fn patch_user(
        &self,
        source_id: &str,
        external_id: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<DirectUser, OktaError> {
        let body = serde_json::to_vec(&UserUpdate { profile: changes })
            .map_err(|e| OktaError::Other(format!("cannot encode the user: {e}")))?;
        let call = Call {
            op: "update user",
            endpoint: endpoint::USERS_UPDATE,
            method: Method::PATCH,
            url: self.url(source_id, &["users", external_id]),
            json_body: Some(&body),
            idempotent: true,
        };
        let answer = self.execute(call).await?;
        decode("update user", &answer)
    }

    async fn replace_user(
        &self,
        source_id: &str,
        external_id: &str,
        body: &[u8],
    ) -> Result<(), OktaError> {
        let call = Call {
            op: "replace user",
            endpoint: endpoint::USERS_REPLACE,
            method: Method::PUT,
            url: self.url(source_id, &["users", external_id]),
            json_body: Some(body),
            idempotent: true,
        };
        self.execute(call).await.map(drop)
    }
}

/// A 404 for the user, not for the identity source itself (a wrong `identity_source_id`
/// names the `AppInstance`).
fn is_unknown_user(e: &OktaError) -> bool {
    e.status() == Some(404)
        && !e.detail().is_some_and(|d| d.error_summary.contains("(AppInstance)"))
}
