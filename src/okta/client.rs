//! Typed HTTP client for the Identity Sources API (STUB: owned by the client work).

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::batch::RequestKind;
use super::error::OktaError;
use super::model::Session;

/// Transport settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// How many times a 429 is retried (after waiting for the rate-limit reset).
    pub max_rate_limit_retries: u32,
    /// The longest single wait for a rate-limit reset.
    pub max_rate_limit_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_rate_limit_retries: 4,
            max_rate_limit_wait: Duration::from_secs(120),
        }
    }
}

/// A client for one Okta org.
#[derive(Debug, Clone)]
pub struct OktaClient {}

impl OktaClient {
    pub fn new(
        org_url: Url,
        token: SecretString,
        options: ClientOptions,
    ) -> Result<Self, OktaError> {
        let _ = (org_url, token, options);
        Ok(Self {})
    }
    pub async fn list_sessions(&self, source_id: &str) -> Result<Vec<Session>, OktaError> {
        Err(OktaError::Other(source_id.into()))
    }
    pub async fn create_session(&self, source_id: &str) -> Result<Session, OktaError> {
        Err(OktaError::Other(source_id.into()))
    }
    pub async fn get_session(
        &self,
        source_id: &str,
        session_id: &str,
    ) -> Result<Session, OktaError> {
        Err(OktaError::Other(format!("{source_id}{session_id}")))
    }
    pub async fn cancel_session(&self, source_id: &str, session_id: &str) -> Result<(), OktaError> {
        Err(OktaError::Other(format!("{source_id}{session_id}")))
    }
    pub async fn bulk_load(
        &self,
        source_id: &str,
        session_id: &str,
        kind: RequestKind,
        body: &[u8],
    ) -> Result<(), OktaError> {
        let _ = (kind, body);
        Err(OktaError::Other(format!("{source_id}{session_id}")))
    }
    pub async fn start_import(
        &self,
        source_id: &str,
        session_id: &str,
    ) -> Result<Session, OktaError> {
        Err(OktaError::Other(format!("{source_id}{session_id}")))
    }
}
