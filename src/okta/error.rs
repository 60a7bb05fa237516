//! Typed errors of the Okta client.
//!
//! Every failure of a call to the Identity Sources API ends up as one [`OktaError`] variant, so
//! callers can decide what to do without parsing strings: [`OktaError::is_retryable`] says
//! whether a later attempt may succeed, [`OktaError::retry_after`] carries the server's hint and
//! [`OktaError::is_session_spacing`] recognises Okta's 5-minute rule (FACTS §4b).
//!
//! None of the variants can hold the API token: the client never puts it anywhere but the
//! `Authorization` header, and the org is named by its origin only (no userinfo, no path).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Okta's error body fields, for the JSON report (FACTS §9): what ops quote to Okta support.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OktaErrorDetail {
    /// HTTP status, when Okta answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `errorCode`, e.g. `E0000001`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_code: String,
    /// `errorSummary`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_summary: String,
    /// `errorCauses[].errorSummary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_causes: Vec<String>,
    /// `errorId`, unique per error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    /// `X-Okta-Request-Id` of the failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What the client was doing when the error happened, e.g. `"create session"`.
pub type Operation = &'static str;

/// An error from talking to Okta.
#[derive(Debug, thiserror::Error)]
pub enum OktaError {
    /// HTTP 401: the token was not accepted.
    #[error(
        "{op}: okta rejected the credentials for {org} (http 401{}){}: the api token or access token is wrong, expired or revoked{}{}",
        code_suffix(code),
        summary_suffix(summary),
        error_id_suffix(error_id),
        request_id_suffix(request_id)
    )]
    Unauthorized {
        op: Operation,
        /// The org's origin, e.g. `https://acme.okta.com`.
        org: String,
        code: String,
        summary: String,
        /// Okta's `errorId`, unique per error, for Okta support.
        error_id: Option<String>,
        request_id: Option<String>,
    },

    /// HTTP 403: the token is valid but may not do this. With OAuth, Okta answers 403 with an
    /// empty body and `WWW-Authenticate: Bearer error="insufficient_scope"` (FACTS §1) when the
    /// access token lacks a scope; the message then says which scopes to grant.
    #[error(
        "{op}: okta denied access (http 403{}){}: {}{}{}{}",
        code_suffix(code),
        summary_suffix(summary),
        forbidden_hint(summary),
        causes_suffix(causes),
        error_id_suffix(error_id),
        request_id_suffix(request_id)
    )]
    Forbidden {
        op: Operation,
        code: String,
        summary: String,
        causes: Vec<String>,
        error_id: Option<String>,
        request_id: Option<String>,
    },

    /// HTTP 404: unknown identity source or session.
    #[error(
        "{op}: okta answered not found (http 404{}){}: check the identity source id{}{}{}",
        code_suffix(code),
        summary_suffix(summary),
        causes_suffix(causes),
        error_id_suffix(error_id),
        request_id_suffix(request_id)
    )]
    NotFound {
        op: Operation,
        code: String,
        summary: String,
        causes: Vec<String>,
        error_id: Option<String>,
        request_id: Option<String>,
    },

    /// The OAuth token endpoint refused to issue an access token (`invalid_client`,
    /// `invalid_scope`, ...). The hint says what to check in the service app.
    #[error(
        "get access token: okta's token endpoint answered http {status} {error}{}: {}",
        summary_suffix(description),
        oauth_hint(error)
    )]
    OAuth {
        status: u16,
        /// The OAuth `error` code, e.g. `invalid_client`.
        error: String,
        /// `error_description`.
        description: String,
    },

    /// HTTP 429 after the client used up its retries.
    #[error(
        "{op}: okta kept answering 429 (rate limited) after {retries} retries{}{}",
        reset_suffix(reset_at),
        request_id_suffix(request_id)
    )]
    RateLimited {
        op: Operation,
        retries: u32,
        /// When Okta said the rate-limit window resets (`X-Rate-Limit-Reset`).
        reset_at: Option<DateTime<Utc>>,
        request_id: Option<String>,
    },

    /// Any other non-2xx answer, with Okta's error body (FACTS §9).
    #[error(
        "{op}: okta answered http {status}{}{}{}{}{}",
        code_suffix(code),
        summary_suffix(summary),
        causes_suffix(causes),
        error_id_suffix(error_id),
        request_id_suffix(request_id)
    )]
    Api {
        op: Operation,
        status: u16,
        code: String,
        summary: String,
        causes: Vec<String>,
        /// Okta's `errorId`, unique per error, for Okta support.
        error_id: Option<String>,
        request_id: Option<String>,
    },

    /// No complete answer within the per-attempt timeout.
    #[error("{op}: no answer from okta within {}", humantime::format_duration(*timeout))]
    Timeout { op: Operation, timeout: Duration },

    /// The connection broke after the request may have been sent (reset, closed before the
    /// answer, truncated body...). Okta may or may not have applied it. The message comes
    /// from the HTTP stack, which never sees the token outside the header.
    #[error("{op}: could not talk to okta: {message}")]
    Transport { op: Operation, message: String },

    /// No connection could be made (refused, DNS, TLS handshake): the request never reached
    /// Okta, so it was certainly not applied.
    #[error("{op}: could not connect to okta: {message}")]
    Connect { op: Operation, message: String },

    /// A 2xx answer whose body is not what the API documents.
    #[error(
        "{op}: unexpected answer from okta (http {status}): {message}; body starts with {snippet:?}"
    )]
    Decode {
        op: Operation,
        status: u16,
        message: String,
        /// The first few hundred characters of the body.
        snippet: String,
    },

    /// Another client (an admin, a Workflows flow, another tool) keeps a session open on the
    /// identity source: xaas never cancels nor writes to it, and gave up waiting.
    #[error(
        "session {id} on the identity source was opened by another client, not this xaas{}, and is still {status} after waiting {}: xaas leaves it alone; let its owner finish it, or cancel it (DELETE /api/v1/identity-sources/{{id}}/sessions/{id}), then run again",
        age.map(|a| format!(" {} ago", humantime::format_duration(Duration::from_secs(a.as_secs())))).unwrap_or_default(),
        humantime::format_duration(Duration::from_secs(waited.as_secs()))
    )]
    ForeignSession {
        id: String,
        /// `CREATED` or `IN_PROGRESS`.
        status: String,
        /// How old it is by Okta's `created`.
        age: Option<Duration>,
        waited: Duration,
    },

    /// Anything else, e.g. an unusable org URL or token given to [`super::OktaClient::new`].
    #[error("okta client: {0}")]
    Other(String),
}

impl OktaError {
    /// The HTTP status Okta answered, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::RateLimited { .. } => Some(429),
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::OAuth { status, .. } => Some(*status),
            Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::Connect { .. }
            | Self::ForeignSession { .. }
            | Self::Other(_) => None,
        }
    }

    /// Okta's `X-Okta-Request-Id` of the failing answer, to quote to Okta support.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Unauthorized { request_id, .. }
            | Self::Forbidden { request_id, .. }
            | Self::NotFound { request_id, .. }
            | Self::RateLimited { request_id, .. }
            | Self::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Okta's error fields, structured for the report; `None` when Okta never answered.
    pub fn detail(&self) -> Option<OktaErrorDetail> {
        let (code, summary, causes): (&str, &str, &[String]) = match self {
            Self::Unauthorized { code, summary, .. } => (code, summary, &[]),
            Self::Forbidden { code, summary, causes, .. }
            | Self::NotFound { code, summary, causes, .. }
            | Self::Api { code, summary, causes, .. } => (code, summary, causes),
            Self::RateLimited { .. } => ("E0000047", "", &[]),
            Self::OAuth { error, description, .. } => (error, description, &[]),
            _ => return None,
        };
        Some(OktaErrorDetail {
            status: self.status(),
            error_code: code.to_string(),
            error_summary: summary.to_string(),
            error_causes: causes.to_vec(),
            error_id: self.error_id().map(str::to_string),
            request_id: self.request_id().map(str::to_string),
        })
    }

    /// Whether the same call may succeed later, without anybody changing the configuration.
    ///
    /// This does not say the call is *safe* to repeat: a timed-out bulk load may have been
    /// applied. The client only repeats calls it knows are safe (429s, and reads).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::Connect { .. }
            | Self::ForeignSession { .. } => true,
            Self::Api { status, .. } => *status >= 500 || self.is_session_spacing(),
            _ => false,
        }
    }

    /// Whether Okta may have applied the request although we got no success answer: a
    /// timeout, a connection that broke after sending, or a 5xx (a server error says nothing
    /// about whether the work was done). A bulk load that failed this way must never be sent
    /// again into the same session (FACTS §5: a user twice in a session corrupts data).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Okta's `errorId` of the failing answer, when it sent one.
    pub fn error_id(&self) -> Option<&str> {
        match self {
            Self::Unauthorized { error_id, .. }
            | Self::Forbidden { error_id, .. }
            | Self::NotFound { error_id, .. }
            | Self::Api { error_id, .. } => error_id.as_deref(),
            _ => None,
        }
    }

    /// How long to wait before trying again, when Okta told us (or its rule does).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { reset_at: Some(reset), .. } => {
                Some((*reset - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            }
            // Okta's documented spacing between session creations (FACTS §4b).
            Self::Api { .. } if self.is_session_spacing() => Some(Duration::from_secs(300)),
            _ => None,
        }
    }

    /// The 400 `E0000001` Okta answers to a session creation within 5 minutes of another
    /// active session ("Only one active import session per identity source is allowed to be
    /// created every 5 minutes"). The wording is not in any recording (FACTS §4b [INF]), so we
    /// match a few phrasings rather than the exact sentence.
    pub fn is_session_spacing(&self) -> bool {
        let Self::Api { status: 400, code, summary, causes, .. } = self else {
            return false;
        };
        if code != "E0000001" {
            return false;
        }
        std::iter::once(summary).chain(causes).any(|text| {
            let text = text.to_ascii_lowercase();
            text.contains("every 5 minutes")
                || text.contains("within five minutes")
                || text.contains("within 5 minutes")
                || text.contains("another active")
                || text.contains("one active import session")
        })
    }
}

fn code_suffix(code: &str) -> String {
    if code.is_empty() { String::new() } else { format!(" {code}") }
}

fn summary_suffix(summary: &str) -> String {
    if summary.is_empty() { String::new() } else { format!(" {summary:?}") }
}

fn causes_suffix(causes: &[String]) -> String {
    if causes.is_empty() { String::new() } else { format!(", causes: {}", causes.join("; ")) }
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    match request_id {
        Some(id) => format!(" [okta request id {id}]"),
        None => String::new(),
    }
}

fn error_id_suffix(error_id: &Option<String>) -> String {
    match error_id {
        Some(id) if !id.is_empty() => format!(" [okta error id {id}]"),
        _ => String::new(),
    }
}

fn forbidden_hint(summary: &str) -> &'static str {
    if summary.contains("insufficient_scope") {
        "the access token lacks a scope: grant okta.identitySources.manage and \
         okta.identitySources.read to the service app and request both"
    } else {
        "the token's admin role or scopes do not cover this identity source"
    }
}

fn oauth_hint(error: &str) -> &'static str {
    match error {
        "invalid_client" => {
            "okta did not accept the client assertion: check the client id, that the service \
             app uses public key / private key authentication with this key's public half \
             (and kid, if set), and that the machine clock is right"
        }
        "invalid_scope" => {
            "a requested scope is not granted: grant okta.identitySources.manage and \
             okta.identitySources.read to the service app (okta api scopes tab)"
        }
        "unauthorized_client" => {
            "the app may not use the client credentials grant: it must be an api services app"
        }
        _ => "see the okta system log for this client id",
    }
}

fn reset_suffix(reset_at: &Option<DateTime<Utc>>) -> String {
    match reset_at {
        Some(at) => format!(", the limit resets at {}", at.to_rfc3339()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str, summary: &str, causes: &[&str]) -> OktaError {
        OktaError::Api {
            op: "create session",
            status,
            code: code.into(),
            summary: summary.into(),
            causes: causes.iter().map(|c| c.to_string()).collect(),
            error_id: Some("oae1".into()),
            request_id: Some("req1".into()),
        }
    }

    #[test]
    fn recognises_the_five_minute_rule() {
        let err = api(
            400,
            "E0000001",
            "Api validation failed: importSession",
            &[
                "Only one active import session per identity source is allowed to be created every 5 minutes",
            ],
        );
        assert!(err.is_session_spacing());
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(300)));

        let other = api(
            400,
            "E0000001",
            "Api validation failed: importSessionId",
            &["Only a session that is in CREATED or IN_PROGRESS status can be canceled."],
        );
        assert!(!other.is_session_spacing());
        assert!(!other.is_retryable());
    }

    #[test]
    fn messages_are_lowercase_and_carry_the_details() {
        let err = api(400, "E0000003", "The request body was not well-formed.", &["a", "b"]);
        let text = err.to_string();
        assert!(text.starts_with("create session: okta answered http 400 E0000003"));
        assert!(text.contains("causes: a; b"));
        assert!(text.contains("req1"));
        let timeout = OktaError::Timeout { op: "get session", timeout: Duration::from_secs(60) };
        assert_eq!(timeout.to_string(), "get session: no answer from okta within 1m");
    }
}
