//! Authentication to Okta: an SSWS API token, or OAuth 2.0 client credentials with
//! `private_key_jwt` (FACTS §1), which Okta recommends for service apps.
//!
//! For OAuth, the client signs a short-lived assertion (RS256 or ES256, chosen from the PEM
//! key's type) with `iss = sub = client_id` and `aud = {org}/oauth2/v1/token`, trades it for
//! an access token with the scopes `okta.identitySources.manage okta.identitySources.read`,
//! and caches the token until shortly before it expires (Okta fixes the lifetime at one
//! hour). The key and the tokens are [`SecretString`]s, exposed only to sign or to build the
//! `Authorization` header.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use super::error::OktaError;

/// The scopes the importer needs (FACTS §1): create/load/trigger/cancel, and read sessions.
pub const DEFAULT_SCOPES: [&str; 2] = ["okta.identitySources.manage", "okta.identitySources.read"];

/// Lifetime of the signed client assertion. Okta accepts up to one hour; a few minutes is
/// plenty for one token request and limits the damage of a leaked assertion.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// Renew at most this long before the access token expires...
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(300);
/// ...and at most this fraction of its lifetime before (for short-lived tokens in tests).
const RENEW_MARGIN_FRACTION: u32 = 5;
/// Attempts of one token request (on 429, 5xx, timeouts and connection errors). Asking twice
/// is harmless: at worst Okta issues two tokens.
const TOKEN_ATTEMPTS: u32 = 3;

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: SSWS {token}`.
    ApiToken(SecretString),
    /// OAuth 2.0 client credentials with a signed JWT assertion.
    OAuth(OAuthConfig),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiToken(_) => f.write_str("ApiToken([REDACTED])"),
            Self::OAuth(c) => f.debug_tuple("OAuth").field(c).finish(),
        }
    }
}

/// An OAuth service app (API Services, client credentials, public key / private key).
#[derive(Clone)]
pub struct OAuthConfig {
    pub client_id: String,
    /// The app's private key, PEM (PKCS#8 or PKCS#1 RSA, PKCS#8 or SEC1 EC P-256).
    pub private_key_pem: SecretString,
    /// The key id registered with the app, sent as the JWT's `kid` header.
    pub kid: Option<String>,
    /// Scopes to request; [`DEFAULT_SCOPES`] unless configured.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("private_key_pem", &"[REDACTED]")
            .field("kid", &self.kid)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// A cached access token, renewed before it expires.
///
/// The async mutex is deliberate: it is the single-flight gate for renewals, so that the
/// four concurrent uploads that find the token stale trigger one token request, not four.
/// Nothing else is ever awaited while it is held.
#[derive(Debug, Default)]
pub struct TokenCache {
    slot: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    token: SecretString,
    renew_at: Instant,
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached token, or a fresh one from `fetch` (which returns the token and its
    /// lifetime) when there is none or it is due for renewal.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString, OktaError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), OktaError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let requested = Instant::now();
        let (token, lifetime) = fetch().await?;
        // Counted from the request, not the answer: the safe side of Okta's clock.
        let renew_at = requested + lifetime.saturating_sub(renew_margin(lifetime));
        *slot = Some(Cached { token: token.clone(), renew_at });
        Ok(token)
    }

    /// Forget `token` if it is still the cached one (Okta answered 401 to it: revoked, or our
    /// clock is off). A token renewed meanwhile by another task is kept.
    pub async fn invalidate(&self, token: &SecretString) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|c| c.token.expose_secret() == token.expose_secret()) {
            *slot = None;
        }
    }
}

/// How long before expiry a token is renewed: a fifth of its lifetime, at most five minutes.
pub fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / RENEW_MARGIN_FRACTION).min(MAX_RENEW_MARGIN)
}

/// Produces the `Authorization` header of every API call.
pub(crate) enum Authenticator {
    ApiToken(SecretString),
    OAuth(Box<OAuthClient>),
}

impl Authenticator {
    pub(crate) fn new(
        credentials: Credentials,
        org_url: &Url,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Result<Self, OktaError> {
        match credentials {
            Credentials::ApiToken(token) => {
                // Check once that the token fits in a header, so calls cannot fail on it later.
                // The error deliberately does not say which character is wrong: that would
                // leak a part of it.
                if token.expose_secret().trim().is_empty()
                    || HeaderValue::from_str(&format!("SSWS {}", token.expose_secret())).is_err()
                {
                    return Err(OktaError::Other(
                        "the okta api token is empty or contains characters not allowed in an http header"
                            .into(),
                    ));
                }
                Ok(Self::ApiToken(token))
            }
            Credentials::OAuth(config) => {
                Ok(Self::OAuth(Box::new(OAuthClient::new(config, org_url, http, timeout)?)))
            }
        }
    }

    /// The header value for the next call.
    pub(crate) async fn header(&self) -> Result<(HeaderValue, Option<SecretString>), OktaError> {
        let (value, bearer) = match self {
            Self::ApiToken(token) => (format!("SSWS {}", token.expose_secret()), None),
            Self::OAuth(oauth) => {
                let token = oauth.token().await?;
                (format!("Bearer {}", token.expose_secret()), Some(token))
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            OktaError::Other("the access token contains characters not allowed in a header".into())
        })?;
        // Keeps the value out of `Debug` output of the request and of http2 header indexing.
        value.set_sensitive(true);
        Ok((value, bearer))
    }

    /// Okta answered 401 to `bearer`: drop it so the next call fetches a new one. Returns
    /// whether a retry with a new token makes sense.
    pub(crate) async fn rejected(&self, bearer: Option<&SecretString>) -> bool {
        match (self, bearer) {
            (Self::OAuth(oauth), Some(token)) => {
                oauth.cache.invalidate(token).await;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::ApiToken(_) => "api_token",
            Self::OAuth(_) => "oauth",
        }
    }
}

/// The token endpoint's client.
pub(crate) struct OAuthClient {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    assertion: ClientAssertion,
    scope: String,
    timeout: Duration,
    cache: TokenCache,
}

/// `private_key_jwt` client authentication (RFC 7523): a short-lived JWT signed with the
/// client's key, for Okta's token endpoint and for the page's OIDC sign-in alike.
pub struct ClientAssertion {
    client_id: String,
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
}

impl std::fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAssertion")
            .field("client_id", &self.client_id)
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ClientAssertion {
    /// The key's type picks the algorithm: RS256 for RSA, ES256 for EC P-256 (the two Okta
    /// apps are most often set up with). The error never quotes the key: parse errors could
    /// echo key material. Signs once, so a key that parses but cannot sign fails here.
    pub fn from_pem(pem: &[u8], client_id: &str, kid: Option<String>) -> Result<Self, String> {
        let (key, algorithm) = if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
            (k, Algorithm::RS256)
        } else if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            (k, Algorithm::ES256)
        } else {
            return Err("the private key is not a pem rsa or ec (p-256) private key".into());
        };
        let signer = Self { client_id: client_id.to_string(), key, algorithm, kid };
        signer.sign("https://example.invalid/token")?;
        Ok(signer)
    }

    /// A fresh assertion for the token endpoint `aud` (a new `jti` each time: Okta refuses a
    /// reused one).
    pub fn sign(&self, aud: &str) -> Result<String, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        let claims = AssertionClaims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("cannot sign the client assertion: {e}"))
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(default = "one_hour")]
    expires_in: u64,
}

fn one_hour() -> u64 {
    3600
}

#[derive(Deserialize, Default)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl OAuthClient {
    fn new(
        config: OAuthConfig,
        org_url: &Url,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Result<Self, OktaError> {
        if config.client_id.trim().is_empty() {
            return Err(OktaError::Other("the oauth client id is empty".into()));
        }
        let pem = config.private_key_pem.expose_secret().as_bytes();
        let assertion = ClientAssertion::from_pem(pem, &config.client_id, config.kid.clone())
            .map_err(|e| OktaError::Other(format!("the oauth {e}")))?;
        let mut token_url = org_url.clone();
        token_url.set_path("/oauth2/v1/token");
        token_url.set_query(None);
        token_url.set_fragment(None);
        let scopes = if config.scopes.is_empty() {
            DEFAULT_SCOPES.map(String::from).to_vec()
        } else {
            config.scopes
        };
        let client = Self {
            http,
            token_url,
            client_id: config.client_id,
            assertion,
            scope: scopes.join(" "),
            timeout,
            cache: TokenCache::new(),
        };
        Ok(client)
    }

    /// The signed `client_assertion` (FACTS §1).
    fn assertion(&self) -> Result<String, OktaError> {
        self.assertion
            .sign(self.token_url.as_str())
            .map_err(|e| OktaError::Other(format!("oauth: {e}")))
    }

    async fn token(&self) -> Result<SecretString, OktaError> {
        self.cache.get(|| self.fetch()).await
    }

    /// `POST /oauth2/v1/token` with the client credentials grant, retried a few times on
    /// failures that say nothing about the credentials.
    async fn fetch(&self) -> Result<(SecretString, Duration), OktaError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_once().await {
                Ok(token) => {
                    tracing::info!(client_id = %self.client_id, lifetime_secs = token.1.as_secs(), "got an okta access token");
                    return Ok(token);
                }
                Err(err) if attempt < TOKEN_ATTEMPTS && err.is_retryable() => {
                    let wait = err
                        .retry_after()
                        .unwrap_or(Duration::from_millis(500) * 2u32.pow(attempt - 1))
                        .min(Duration::from_secs(60))
                        + Duration::from_millis(rand::random_range(0..=250));
                    tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64, "okta token request failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn fetch_once(&self) -> Result<(SecretString, Duration), OktaError> {
        const OP: &str = "get access token";
        let assertion = self.assertion()?;
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", self.scope.as_str()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ];
        let request = self
            .http
            .post(self.token_url.clone())
            .header(header::ACCEPT, "application/json")
            .form(&form)
            .send();
        let response = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => return Err(OktaError::Timeout { op: OP, timeout: self.timeout }),
            Ok(Err(e)) if e.is_connect() => {
                return Err(OktaError::Connect { op: OP, message: e.to_string() });
            }
            Ok(Err(e)) => return Err(OktaError::Transport { op: OP, message: e.to_string() }),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| OktaError::Transport { op: OP, message: e.to_string() })?;
        if status.is_success() {
            let parsed: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| OktaError::Decode {
                    op: OP,
                    status: status.as_u16(),
                    message: e.to_string(),
                    snippet: String::from("(token response withheld)"),
                })?;
            if !parsed.token_type.is_empty() && !parsed.token_type.eq_ignore_ascii_case("bearer") {
                return Err(OktaError::Other(format!(
                    "okta issued a {} token; xaas supports bearer tokens only (turn off dpop for the service app)",
                    parsed.token_type
                )));
            }
            return Ok((
                SecretString::from(parsed.access_token),
                Duration::from_secs(parsed.expires_in),
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(OktaError::RateLimited {
                op: OP,
                retries: 0,
                reset_at: None,
                request_id: None,
            });
        }
        let parsed: OAuthErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        if status.is_server_error() || parsed.error.is_empty() {
            return Err(OktaError::Api {
                op: OP,
                status: status.as_u16(),
                code: String::new(),
                summary: String::from_utf8_lossy(&body).chars().take(200).collect(),
                causes: Vec::new(),
                error_id: None,
                request_id: None,
            });
        }
        Err(OktaError::OAuth {
            status: status.as_u16(),
            error: parsed.error,
            description: parsed.error_description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn renewal_margin_is_a_fifth_capped_at_five_minutes() {
        assert_eq!(renew_margin(Duration::from_secs(3600)), Duration::from_secs(300));
        assert_eq!(renew_margin(Duration::from_secs(10)), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_is_cached_then_renewed_before_it_expires() {
        let cache = TokenCache::new();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((SecretString::from(format!("token-{n}")), Duration::from_secs(3600)))
        };
        assert_eq!(cache.get(fetch).await.expect("token").expose_secret(), "token-1");
        // 54 minutes later: still the cached one.
        tokio::time::advance(Duration::from_secs(54 * 60)).await;
        assert_eq!(cache.get(fetch).await.expect("token").expose_secret(), "token-1");
        // 55 minutes: within five minutes of the expiry, renewed.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(cache.get(fetch).await.expect("token").expose_secret(), "token-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
