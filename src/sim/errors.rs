//! Okta-shaped error responses (FACTS §9) and the violations they record.
//!
//! Every rejection the emulator makes is an [`ApiError`]: the HTTP status, Okta's error code
//! and summary, the causes, and the client-behaviour rules it broke. The rules end up in the
//! snapshot's `violations`, so a test can assert *why* a client was rejected, not just that
//! it was.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::okta::model::{ErrorBody, ErrorCause};

/// A rejection, before it becomes a response.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub summary: String,
    pub causes: Vec<String>,
    /// `(rule, message)` pairs to record as violations.
    pub violations: Vec<(&'static str, String)>,
}

impl ApiError {
    /// 400 E0000001 "Api validation failed: {field}" with one cause.
    pub fn validation(rule: &'static str, field: &str, cause: impl Into<String>) -> Self {
        let cause = cause.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "E0000001",
            summary: format!("Api validation failed: {field}"),
            causes: vec![cause.clone()],
            violations: vec![(rule, cause)],
        }
    }

    /// 400 E0000003: the body is missing, not JSON, or of the wrong shape.
    pub fn malformed(rule: &'static str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "E0000003",
            summary: "The request body was not well-formed.".into(),
            // Okta's reader exception carries no causes (`includesExceptionMessage: false`);
            // the detail only goes to the violation log.
            causes: Vec::new(),
            violations: vec![(rule, detail)],
        }
    }

    /// 404 E0000007 for an unknown identity source or session.
    pub fn not_found(rule: &'static str, what: &str, kind: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "E0000007",
            summary: format!("Not found: Resource not found: {what} ({kind})"),
            causes: Vec::new(),
            violations: vec![(rule, format!("{kind} {what} does not exist"))],
        }
    }

    /// 401 E0000011.
    pub fn invalid_token(detail: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "E0000011",
            summary: "Invalid token provided".into(),
            causes: Vec::new(),
            violations: vec![("invalid_token", detail.into())],
        }
    }

    /// 429 E0000047. Not a violation: hitting a rate limit and backing off is legitimate;
    /// it is counted in `rate_limited_total` instead.
    pub fn rate_limited() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "E0000047",
            summary: "API call exceeded rate limit due to too many requests.".into(),
            causes: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// 411 for a POST/PUT without `Content-Length` (FACTS §1, S8). Okta's body for this is
    /// not recorded anywhere; we answer with an Okta-shaped body so clients parse it the same
    /// way as every other error. [INF]
    pub fn length_required() -> Self {
        Self {
            status: StatusCode::LENGTH_REQUIRED,
            code: "E0000003",
            summary: "The request body was not well-formed.".into(),
            causes: vec!["Any PUT or POST request without a Content-Length header returns a 411 error".into()],
            violations: vec![(
                "missing_content_length",
                "POST/PUT without a Content-Length header (send Content-Length: 0 for an empty body)".into(),
            )],
        }
    }

    /// 405 E0000022.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "E0000022",
            summary: "The endpoint does not support the provided HTTP method".into(),
            causes: Vec::new(),
            violations: vec![(
                "method_not_allowed",
                "the endpoint does not support this method".into(),
            )],
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error_code: self.code.into(),
            error_summary: self.summary.clone(),
            error_link: self.code.into(),
            error_id: random_id("oae", 22),
            error_causes: self
                .causes
                .iter()
                .map(|c| ErrorCause { error_summary: c.clone() })
                .collect(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// `prefix` + `len` random ASCII alphanumerics: Okta's id shape (`aps…`, `0ua…`, `oae…`).
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    id.extend((0..len).map(|_| char::from(rng.sample(Alphanumeric))));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_okta_shape() {
        let id = random_id("aps", 17);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("aps"));
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(random_id("oae", 22), random_id("oae", 22));
    }

    #[test]
    fn error_link_repeats_error_code() {
        let body = ApiError::validation("r", "profiles", "x").body();
        assert_eq!(body.error_link, body.error_code);
        assert_eq!(body.error_summary, "Api validation failed: profiles");
        assert_eq!(body.error_causes[0].error_summary, "x");
    }
}
