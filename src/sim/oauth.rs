//! The OAuth 2.0 side of the emulator: `POST /oauth2/v1/token` for service apps using the
//! client credentials grant with `private_key_jwt` (FACTS §1), and the `Bearer` check of
//! `/api` calls with Okta's scope rules.
//!
//! The assertion is verified as Okta documents it: signature against the app's registered
//! public key (RS256 or ES256), `iss = sub = client_id`, `aud` = this org's token URL, `exp`
//! in the future and at most one hour ahead, and a `jti` never seen before. Failures answer
//! OAuth-shaped errors (`{"error","error_description"}`), not Okta's API error body.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use super::errors::random_id;
use super::state::{Ctx, Sim};

/// A registered service app.
#[derive(Debug, Clone)]
pub struct SimOAuthClient {
    pub client_id: String,
    /// The public half of the app's key, PEM (SubjectPublicKeyInfo, RSA or EC P-256).
    pub public_key_pem: String,
    /// Scopes granted to the app (the Okta API Scopes tab).
    pub scopes: Vec<String>,
}

/// Issued tokens and used assertion ids.
#[derive(Debug, Default)]
pub(crate) struct OAuthState {
    tokens: HashMap<String, Issued>,
    used_jti: HashSet<String>,
    pub issued_total: u64,
}

#[derive(Debug)]
struct Issued {
    scopes: Vec<String>,
    expires: Instant,
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    client_assertion_type: String,
    #[serde(default)]
    client_assertion: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    jti: Option<String>,
    exp: u64,
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(serde_json::json!({ "error": error, "error_description": description })))
        .into_response()
}

/// `POST /oauth2/v1/token`.
pub(crate) async fn token(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let ctx = Ctx { method: "POST".into(), path: "/oauth2/v1/token".into(), session_id: None };
    match issue(&sim, &headers, &form) {
        Ok(response) => response,
        Err((status, error, description)) => {
            sim.record(&ctx, &[("oauth_token_refused", format!("{error}: {description}"))]);
            oauth_error(status, error, &description)
        }
    }
}

type Refusal = (StatusCode, &'static str, String);

fn invalid_client(description: impl Into<String>) -> Refusal {
    (StatusCode::UNAUTHORIZED, "invalid_client", description.into())
}

fn issue(sim: &Sim, headers: &HeaderMap, form: &TokenForm) -> Result<Response, Refusal> {
    if form.grant_type != "client_credentials" {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("The authorization grant type is not supported: {:?}", form.grant_type),
        ));
    }
    if form.client_assertion_type != ASSERTION_TYPE || form.client_assertion.is_empty() {
        return Err(invalid_client(
            "Client authentication failed: a client_assertion of type jwt-bearer is required (private_key_jwt)",
        ));
    }
    let header = jsonwebtoken::decode_header(&form.client_assertion)
        .map_err(|_| invalid_client("The client_assertion is not a well-formed JWT"))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(invalid_client(format!(
            "The client_assertion signature algorithm {:?} is not allowed",
            header.alg
        )));
    }
    let unverified: Claims =
        jsonwebtoken::dangerous::insecure_decode_claims(&form.client_assertion)
            .map_err(|_| invalid_client("The client_assertion claims are missing or malformed"))?;
    let config = sim.config();
    let client =
        config.oauth_clients.iter().find(|c| c.client_id == unverified.iss).ok_or_else(|| {
            invalid_client("The client_id is not valid (iss names no registered app)")
        })?;
    let key = match header.alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(client.public_key_pem.as_bytes()),
        _ => DecodingKey::from_ec_pem(client.public_key_pem.as_bytes()),
    }
    .map_err(|_| {
        invalid_client("The client_assertion signature algorithm does not match the registered key")
    })?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let token_url = format!("http://{host}/oauth2/v1/token");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[&token_url]);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<serde_json::Value>(&form.client_assertion, &key, &validation).map_err(
        |e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid_client(match e.kind() {
                ErrorKind::ExpiredSignature => "The client_assertion token is expired.".to_string(),
                ErrorKind::InvalidSignature => {
                    "The client_assertion signature is invalid.".to_string()
                }
                ErrorKind::InvalidAudience => {
                    format!("The audience claim for client_assertion must be the endpoint invoked for the request: {token_url}")
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                    "The iss and sub claims of the client_assertion must both be the client_id".to_string()
                }
                other => format!("The client_assertion is invalid: {other:?}"),
            })
        },
    )?;
    let now = super::state::epoch_now();
    if unverified.exp > now + 3600 {
        return Err(invalid_client(
            "The client_assertion token has an expiration too far in the future (at most one hour).",
        ));
    }
    let requested: Vec<String> = form.scope.split_whitespace().map(str::to_string).collect();
    if requested.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The scope parameter is required for the client credentials grant".into(),
        ));
    }
    if let Some(missing) = requested.iter().find(|s| !client.scopes.contains(s)) {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!(
                "One or more scopes are not configured for the authorization server resource: {missing}"
            ),
        ));
    }
    let lifetime = config.access_token_lifetime;
    let access_token = random_id("eyJsim.", 40);
    {
        let mut st = sim.shared.oauth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(jti) = unverified.jti
            && !st.used_jti.insert(jti)
        {
            return Err(invalid_client("The client_assertion token has already been used (jti)."));
        }
        st.issued_total += 1;
        let clock = Instant::now();
        st.tokens.retain(|_, t| t.expires > clock);
        st.tokens.insert(
            access_token.clone(),
            Issued { scopes: requested.clone(), expires: clock + lifetime },
        );
    }
    Ok(Json(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs().max(1),
        "access_token": access_token,
        "scope": requested.join(" "),
    }))
    .into_response())
}

/// Check `Authorization: Bearer …` for an `/api` call: 401 `invalid_token` for an unknown or
/// expired token, 403 `insufficient_scope` when the token lacks the scope the operation needs
/// (reads need `okta.identitySources.read`, everything else `…manage`). Both with an empty
/// body and the reason in `WWW-Authenticate`, as Okta does (FACTS §1).
pub(crate) fn check_bearer(sim: &Sim, ctx: &Ctx, token: &str, read_only: bool) -> Option<Response> {
    let needed =
        if read_only { "okta.identitySources.read" } else { "okta.identitySources.manage" };
    let scopes = {
        let st = sim.shared.oauth.lock().unwrap_or_else(|e| e.into_inner());
        st.tokens.get(token).filter(|t| t.expires > Instant::now()).map(|t| t.scopes.clone())
    };
    let Some(scopes) = scopes else {
        // Okta's API answers an unknown or expired access token with its usual 401 E0000011
        // body; the OAuth reason is in `WWW-Authenticate` as well.
        let mut response = sim
            .fail(ctx, super::errors::ApiError::invalid_token("unknown or expired access token"));
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"IDX\", error=\"invalid_token\", error_description=\"The access token is invalid.\"",
            ),
        );
        return Some(response);
    };
    if scopes.iter().any(|s| s == needed) {
        return None;
    }
    sim.record(ctx, &[("insufficient_scope", format!("the access token lacks {needed}"))]);
    Some(www_authenticate(
        StatusCode::FORBIDDEN,
        format!(
            "Bearer realm=\"IDX\", error=\"insufficient_scope\", error_description=\"The access token provided does not contain the required scopes.\", scope=\"{needed}\""
        ),
    ))
}

fn www_authenticate(status: StatusCode, value: String) -> Response {
    let mut response = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// How long the emulator's access tokens live by default (Okta: fixed at one hour).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
