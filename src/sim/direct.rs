//! The direct (session-less) user endpoints of an identity source (FACTS §2b): create, get,
//! replace, update and delete one user by `externalId`. They go through the same front door as the
//! bulk endpoints (rate limits, headers, token, faults: [`super::routes`]), validate bodies
//! with the bulk upsert's rules plus the required `email` and `userName`, and never count
//! toward the 5-minute session rule.
//!
//! Effects on the identity source's users, with what is known:
//! - `POST` creates an active user; a second `POST` of the same externalId is refused
//!   (400 E0000001) [INF: Okta's answer is unrecorded].
//! - `PUT` replaces the profile of a user the source has, and reactivates a deactivated one,
//!   as a bulk upsert does [INF]; an unknown user is 404 E0000007 (the spec lists 404).
//! - `PATCH` changes the attributes it is given and keeps the others [INF: "update" in the
//!   spec, unrecorded], reactivating as `PUT` does; its body still needs `email` and
//!   `userName` (the spec's Required profile, FACTS §3). An unknown user is 404 E0000007.
//! - `DELETE` **deactivates** the user [INF]: the bulk delete deactivates (FACTS §5) and an
//!   identity source never deletes Okta users; the answer is 200 with an empty body (the
//!   recording; the spec says 204). An unknown user is 404 E0000007.
//! - `GET` answers `UserResponseSchema`, which has no status: a client cannot read back
//!   whether a user is deactivated.
//!
//! An org without the feature is emulated by [`Sim::set_direct_endpoints`]: every direct call
//! then answers 401 E0000015 [INF: FACTS §9 lists it for a feature that is off].

use std::collections::BTreeMap;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::clock::okta_time;
use super::errors::ApiError;
use super::state::{Sim, UserRec};
use super::validate::parse_direct_user;

/// A direct body is one profile: far below the bulk limit.
const MAX_BODY: usize = 64 * 1024;

fn feature_off() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "E0000015",
        summary: "You do not have permission to access the feature you are requesting".into(),
        causes: Vec::new(),
        violations: Vec::new(),
    }
}

/// 404 E0000007. Not a violation: asking about a user is how a client finds out.
fn unknown_user(external_id: &str) -> ApiError {
    let mut e = ApiError::not_found("direct_unknown_user", external_id, "IdentitySourceUser");
    e.violations.clear();
    e
}

fn wire(external_id: &str, u: &UserRec) -> serde_json::Value {
    json!({
        "id": u.id,
        "externalId": external_id,
        "created": okta_time(u.created),
        "lastUpdated": okta_time(u.last_updated),
        "profile": u.profile,
    })
}

async fn body_of(body: Body) -> Result<Vec<u8>, ApiError> {
    to_bytes(body, MAX_BODY)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| ApiError::malformed("malformed_body", format!("could not read the body: {e}")))
}

impl Sim {
    fn direct_ok(&self, source: &str) -> Result<(), ApiError> {
        if !self.direct_endpoints() {
            return Err(feature_off());
        }
        self.check_source(source)
    }

    fn direct_create(
        &self,
        source: &str,
        external_id: String,
        profile: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ApiError> {
        let now = self.now();
        let mut st = self.state();
        let key = (source.to_string(), external_id.clone());
        if st.users.contains_key(&key) {
            return Err(ApiError::validation(
                "direct_create_existing",
                "externalId",
                format!("externalId: a user with externalId {external_id} already exists"),
            ));
        }
        let user = super::apply::upsert_user(&mut st, key, profile, now);
        let out = wire(&external_id, user);
        Ok(out)
    }

    /// `PUT` (`merge` false: the profile given) or `PATCH` (`merge`: the user's profile with
    /// the attributes given) of a user the source has; either reactivates it.
    fn direct_write(
        &self,
        source: &str,
        external_id: &str,
        given: BTreeMap<String, String>,
        merge: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let now = self.now();
        let mut st = self.state();
        let key = (source.to_string(), external_id.to_string());
        let user = st.users.get(&key).ok_or_else(|| unknown_user(external_id))?;
        let profile = if merge {
            let mut profile = user.profile.clone();
            profile.extend(given);
            profile
        } else {
            given
        };
        let user = super::apply::upsert_user(&mut st, key, profile, now);
        Ok(wire(external_id, user))
    }

    fn direct_delete(&self, source: &str, external_id: &str) -> Result<(), ApiError> {
        let now = self.now();
        let mut st = self.state();
        let key = (source.to_string(), external_id.to_string());
        let user = st.users.get_mut(&key).ok_or_else(|| unknown_user(external_id))?;
        super::apply::deactivate_user(user, now);
        Ok(())
    }

    fn direct_get(&self, source: &str, external_id: &str) -> Result<serde_json::Value, ApiError> {
        let st = self.state();
        let key = (source.to_string(), external_id.to_string());
        st.users.get(&key).map(|u| wire(external_id, u)).ok_or_else(|| unknown_user(external_id))
    }
}

/// 200 with the user, or Okta's error body (recorded like every refusal).
fn answer(sim: &Sim, m: &Method, u: &Uri, result: Result<serde_json::Value, ApiError>) -> Response {
    match result {
        Ok(user) => axum::Json(user).into_response(),
        Err(e) => sim.fail(&super::routes::ctx(m, u, None), e),
    }
}

pub(super) async fn create(
    State(sim): State<Sim>,
    Path(source): Path<String>,
    m: Method,
    u: Uri,
    body: Body,
) -> Response {
    let result = async {
        sim.direct_ok(&source)?;
        let (external_id, profile) = parse_direct_user(&body_of(body).await?, None)?;
        sim.direct_create(&source, external_id, profile)
    };
    answer(&sim, &m, &u, result.await)
}

pub(super) async fn get_user(
    State(sim): State<Sim>,
    Path((source, external_id)): Path<(String, String)>,
    m: Method,
    u: Uri,
) -> Response {
    answer(
        &sim,
        &m,
        &u,
        sim.direct_ok(&source).and_then(|()| sim.direct_get(&source, &external_id)),
    )
}

pub(super) async fn replace(
    State(sim): State<Sim>,
    Path((source, external_id)): Path<(String, String)>,
    m: Method,
    u: Uri,
    body: Body,
) -> Response {
    write(&sim, &source, &external_id, &m, &u, body, false).await
}

pub(super) async fn update(
    State(sim): State<Sim>,
    Path((source, external_id)): Path<(String, String)>,
    m: Method,
    u: Uri,
    body: Body,
) -> Response {
    write(&sim, &source, &external_id, &m, &u, body, true).await
}

/// `PUT` or `PATCH` (`merge`): the same checks, then [`Sim::direct_write`].
async fn write(
    sim: &Sim,
    source: &str,
    external_id: &str,
    m: &Method,
    u: &Uri,
    body: Body,
    merge: bool,
) -> Response {
    let result = async {
        sim.direct_ok(source)?;
        let (_, profile) = parse_direct_user(&body_of(body).await?, Some(external_id))?;
        sim.direct_write(source, external_id, profile, merge)
    };
    answer(sim, m, u, result.await)
}

pub(super) async fn delete(
    State(sim): State<Sim>,
    Path((source, external_id)): Path<(String, String)>,
    m: Method,
    u: Uri,
) -> Response {
    match sim.direct_ok(&source).and_then(|()| sim.direct_delete(&source, &external_id)) {
        Ok(()) => {
            // The recording's 200 with an empty body, not the spec's 204 (FACTS §2b).
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        Err(e) => sim.fail(&super::routes::ctx(&m, &u, None), e),
    }
}
