//! Typed errors of the Okta client (STUB: owned by the client work).

/// An error from talking to Okta.
#[derive(Debug, thiserror::Error)]
pub enum OktaError {
    #[error("okta api error: {0}")]
    Other(String),
}
