//! `okta:`, resolved: where Okta is, how xaas authenticates, and the client's and sessions'
//! options. The client is built from these settings here, so every caller (a run, the daemon,
//! `xaas check`) builds it the same way.

use std::path::PathBuf;

use secrecy::SecretString;
use tracing::warn;
use url::Url;

use super::client::ClientOptions;
use super::session::SessionOptions;
use super::{Credentials, OAuthConfig, OktaClient};

/// Where and how to reach Okta.
#[derive(Debug, Clone)]
pub struct OktaSettings {
    /// `https://{yourOktaDomain}`; plain `http://` only for loopback addresses (emulator).
    pub org_url: Url,
    pub auth: Auth,
    pub client: ClientOptions,
    pub sessions: SessionOptions,
}

/// How xaas authenticates to Okta.
#[derive(Clone)]
pub enum Auth {
    /// An SSWS API token, from exactly one of these places.
    ApiToken(TokenSource),
    /// An OAuth service app: client credentials with a `private_key_jwt` assertion.
    OAuth {
        client_id: String,
        /// Where the PEM private key comes from.
        private_key: TokenSource,
        kid: Option<String>,
        /// Empty: the default scopes.
        scopes: Vec<String>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::ApiToken(src) => f.debug_tuple("ApiToken").field(src).finish(),
            Auth::OAuth { client_id, private_key, kid, scopes } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .field("private_key", private_key)
                .field("kid", kid)
                .field("scopes", scopes)
                .finish(),
        }
    }
}

/// Where a secret comes from. The inline variant is redacted in `Debug`.
#[derive(Clone)]
pub enum TokenSource {
    Inline(SecretString),
    File(PathBuf),
    Env(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline([REDACTED])"),
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
            TokenSource::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

/// A secret that could not be read. Names where it was looked for, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path} (okta.auth): {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the secret file {0} (okta.auth) is empty")]
    EmptyFile(PathBuf),
    #[error("the environment variable {0} named in okta.auth is not set or is empty")]
    Env(String),
}

impl TokenSource {
    /// Read the token now (at run time, so `validate` works without the secret present).
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            TokenSource::Inline(s) => Ok(s.clone()),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| SecretError::File { path: path.clone(), source })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(SecretError::EmptyFile(path.clone()));
                }
                Ok(SecretString::from(token.to_string()))
            }
            TokenSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
                _ => Err(SecretError::Env(var.clone())),
            },
        }
    }
}

/// Why the client could not be built. Names where a secret was looked for, never its value.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot build the okta client: {0}")]
    Client(String),
}

impl OktaSettings {
    /// Build the client. Secrets are read now (at run time, so `validate` works without them).
    pub fn build_client(&self) -> Result<OktaClient, BuildError> {
        let url = &self.org_url;
        if crate::diag::is_loopback_http(url) {
            warn!(org_url = %url, "okta.org_url uses plain http: allowed only because it is a loopback address");
        }
        let credentials = match &self.auth {
            Auth::ApiToken(source) => Credentials::ApiToken(source.resolve()?),
            Auth::OAuth { client_id, private_key, kid, scopes } => {
                Credentials::OAuth(OAuthConfig {
                    client_id: client_id.clone(),
                    private_key_pem: private_key.resolve()?,
                    kid: kid.clone(),
                    scopes: scopes.clone(),
                })
            }
        };
        OktaClient::with_credentials(url.clone(), credentials, self.client.clone())
            .map_err(|e| BuildError::Client(e.to_string()))
    }
}
