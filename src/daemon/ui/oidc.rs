//! Sign-in with the company's identity provider: OpenID Connect authorization code with PKCE,
//! through the `openidconnect` crate (discovery, the authorization URL, the code exchange and
//! every check of the ID token: signature against the provider's JWKS, issuer, audience,
//! expiry, nonce).
//!
//! What this module adds around the crate:
//! - discovery is lazy and retried: an identity provider that cannot be reached at start-up
//!   does not stop the daemon (the webhook and imports go on); each sign-in tries again and
//!   the page says what to check;
//! - the redirect URL is probed once per discovery (a GET of the authorization endpoint, not
//!   followed): a provider that refuses it answers with an error page of its own and never
//!   comes back to us, so without the probe a person would only see the provider's page;
//! - an ID token signed with a key we have not seen (a rotation) refreshes the JWKS once and
//!   is checked again;
//! - each failure is a [`LoginError`] whose message says what to check, without a secret.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreErrorResponseType};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, JsonWebKeySet, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::okta::auth::ClientAssertion;
use crate::settings::oidc::{ClientAuth, OidcSettings};

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Discovery is not tried again sooner than this after a failure (a page reload right after
/// an error shows the same error without hammering the provider).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The JWKS is fetched again for an unknown key at most this often.
const JWKS_REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Why a sign-in failed: what the page and the log say. No secret, no token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoginError {
    #[error(
        "cannot reach the identity provider at {issuer}: {reason}. Check serve.ui.auth.issuer, and that this host can reach it (DNS, proxy, firewall)"
    )]
    Unreachable { issuer: String, reason: String },
    #[error(
        "the identity provider at {issuer} answered, but not as that issuer ({reason}). serve.ui.auth.issuer must be exactly the `issuer` of its discovery document ({issuer}/.well-known/openid-configuration), trailing slash included"
    )]
    WrongIssuer { issuer: String, reason: String },
    #[error(
        "the identity provider refused the sign-in request (HTTP {status}{detail}): check that the app {client_id} exists and lists exactly {redirect_url} as a sign-in redirect URI (serve.ui.auth.redirect_url)"
    )]
    RedirectRefused { status: u16, detail: String, client_id: String, redirect_url: String },
    #[error(
        "the identity provider refused this app's credentials ({code}): check serve.ui.auth.client_id and the client secret (or private key) it was given"
    )]
    BadClient { code: String },
    #[error("the identity provider answered `{code}`{description}")]
    Provider { code: String, description: String },
    #[error(
        "the ID token's times do not fit this server's clock ({detail}); this host's clock or the identity provider's is off by more than clock_skew_secs ({skew} s): check NTP on both"
    )]
    Clock { detail: String, skew: u64 },
    #[error(
        "the ID token was refused: {0}. Sign in again; if it keeps failing, check serve.ui.auth.issuer and client_id"
    )]
    BadToken(String),
    #[error("this sign-in link was already used or has expired: sign in again")]
    StaleLogin,
    #[error("this sign-in was started in another browser: sign in again from this one")]
    OtherBrowser,
    #[error("cannot finish the sign-in: {0}")]
    Internal(String),
}

/// What a login needs back at the callback: kept in the state store under its `state`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingLogin {
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to go after signing in (a path under the page).
    pub next: String,
    /// The digest of the browser's login cookie: the callback must come from the same browser.
    pub browser: String,
}

/// The person the ID token names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The values of the groups claim.
    pub groups: Vec<String>,
    /// The raw ID token, for the end-session endpoint's `id_token_hint`.
    pub id_token: String,
}

struct Provider {
    metadata: ProviderMetadataWithLogout,
    client: Client,
    jwks_fetched: Instant,
}

/// The OIDC relying party. Cheap to clone.
#[derive(Clone)]
pub struct Oidc {
    settings: Arc<OidcSettings>,
    http: reqwest::Client,
    assertion: Option<Arc<ClientAssertion>>,
    state: Arc<Mutex<Discovery>>,
}

#[derive(Default)]
struct Discovery {
    provider: Option<Arc<Provider>>,
    last_failure: Option<(Instant, LoginError)>,
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{0}")]
    Reqwest(#[from] reqwest::Error),
    #[error("{0}")]
    Http(#[from] openidconnect::http::Error),
}

/// The crate's HTTP calls, through our reqwest (no redirects followed: a token endpoint that
/// redirects is an error, not a hop).
#[derive(Clone)]
struct Http(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(self.0.clone(), request))
    }
}

async fn send(
    http: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (k, v) in response.headers() {
        builder = builder.header(k, v);
    }
    Ok(builder.body(response.bytes().await?.to_vec())?)
}

impl Oidc {
    /// Build the relying party; no network yet. Fails on a private key that cannot sign.
    pub fn new(settings: OidcSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the http client: {e}"))?;
        let assertion = match &settings.client_auth {
            ClientAuth::Secret(_) => None,
            ClientAuth::PrivateKey { pem, key_id } => {
                use secrecy::ExposeSecret;
                let signer = ClientAssertion::from_pem(
                    pem.expose_secret().as_bytes(),
                    &settings.client_id,
                    key_id.clone(),
                )
                .map_err(|e| format!("serve.ui.auth: {e}"))?;
                Some(Arc::new(signer))
            }
        };
        Ok(Self { settings: Arc::new(settings), http, assertion, state: Default::default() })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Discover now (at start-up): logs what happened; never fails the caller.
    pub async fn warm_up(&self) {
        match self.provider().await {
            Ok(_) => {
                info!(issuer = %self.settings.issuer.as_str(), "identity provider discovered: sign-in ready")
            }
            Err(e) => {
                warn!(error = %e, "the page's sign-in is not ready yet: it is tried again at each sign-in")
            }
        }
    }

    /// The discovered provider, discovering (and probing the redirect URL) when needed.
    async fn provider(&self) -> Result<Arc<Provider>, LoginError> {
        let mut state = self.state.lock().await;
        if let Some(p) = &state.provider {
            return Ok(p.clone());
        }
        if let Some((at, e)) = &state.last_failure
            && at.elapsed() < RETRY_AFTER
        {
            return Err(e.clone());
        }
        match self.discover().await {
            Ok(p) => {
                let p = Arc::new(p);
                state.provider = Some(p.clone());
                state.last_failure = None;
                Ok(p)
            }
            Err(e) => {
                state.last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn discover(&self) -> Result<Provider, LoginError> {
        let issuer = self.settings.issuer.clone();
        let http = Http(self.http.clone());
        let metadata =
            ProviderMetadataWithLogout::discover_async(issuer, &http).await.map_err(|e| {
                let issuer = self.settings.issuer.as_str().trim_end_matches('/').to_string();
                match e {
                    openidconnect::DiscoveryError::Validation(reason) => {
                        LoginError::WrongIssuer { issuer, reason }
                    }
                    openidconnect::DiscoveryError::Response(status, _, _) => {
                        LoginError::WrongIssuer { issuer, reason: format!("HTTP {status}") }
                    }
                    openidconnect::DiscoveryError::Parse(e) => LoginError::WrongIssuer {
                        issuer,
                        reason: format!("not a discovery document: {e}"),
                    },
                    e => LoginError::Unreachable { issuer, reason: error_chain(&e) },
                }
            })?;
        let client = self.client(&metadata);
        self.probe(&client).await?;
        Ok(Provider { metadata, client, jwks_fetched: Instant::now() })
    }

    fn client(&self, metadata: &ProviderMetadataWithLogout) -> Client {
        let secret = match &self.settings.client_auth {
            ClientAuth::Secret(s) => {
                use secrecy::ExposeSecret;
                Some(ClientSecret::new(s.expose_secret().to_string()))
            }
            ClientAuth::PrivateKey { .. } => None,
        };
        let client_id = ClientId::new(self.settings.client_id.clone());
        let client = CoreClient::from_provider_metadata(metadata.clone(), client_id, secret)
            .set_redirect_uri(RedirectUrl::from_url(self.settings.redirect_url.clone()));
        if self.assertion.is_some() {
            client.set_auth_type(openidconnect::AuthType::RequestBody)
        } else {
            client
        }
    }

    /// GET the authorization endpoint with our client and redirect URL (not followed): a
    /// provider that refuses them answers 4xx itself; one that accepts them redirects to its
    /// login page (or renders it).
    async fn probe(&self, client: &Client) -> Result<(), LoginError> {
        let (url, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("openid".into()))
            .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
            .url();
        let response = self.http.get(url).send().await.map_err(|e| LoginError::Unreachable {
            issuer: self.settings.issuer.as_str().to_string(),
            reason: error_chain(&e),
        })?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(LoginError::RedirectRefused {
            status: status.as_u16(),
            detail: provider_message(&body).map(|m| format!(": {m}")).unwrap_or_default(),
            client_id: self.settings.client_id.clone(),
            redirect_url: self.settings.redirect_url.to_string(),
        })
    }

    /// Start a sign-in: the provider's URL to send the browser to, and what to keep under
    /// the returned `state` until the callback.
    pub async fn start(
        &self,
        next: String,
        browser: String,
    ) -> Result<(url::Url, String, PendingLogin), LoginError> {
        let provider = self.provider().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = PendingLogin {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next,
            browser,
        };
        Ok((url, state.secret().clone(), pending))
    }

    /// Finish a sign-in: exchange `code` (with the PKCE verifier) and check the ID token.
    pub async fn finish(
        &self,
        code: String,
        pending: PendingLogin,
    ) -> Result<Identity, LoginError> {
        let provider = self.provider().await?;
        let mut exchange = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| LoginError::Internal(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        if let Some(signer) = &self.assertion {
            let aud = provider.metadata.token_endpoint().map(|u| u.to_string()).unwrap_or_default();
            let jwt = signer.sign(&aud).map_err(LoginError::Internal)?;
            exchange = exchange
                .add_extra_param(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                )
                .add_extra_param("client_assertion", jwt);
        }
        let http = Http(self.http.clone());
        let response = exchange.request_async(&http).await.map_err(|e| self.token_error(e))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| LoginError::BadToken("the token response has no id_token".into()))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let verified = match self.verify(&provider, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.refresh_jwks(&provider).await? {
                Some(fresh) => self.verify(&fresh, id_token, &nonce),
                None => Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )),
            },
            other => other,
        };
        let claims = verified.map_err(|e| self.claims_error(e))?;
        let raw = id_token.to_string();
        Ok(Identity {
            subject: claims.subject().to_string(),
            email: claims
                .email()
                .filter(|_| claims.email_verified() != Some(false))
                .map(|e| e.to_string()),
            name: claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
            groups: groups_of(&raw, &self.settings.groups_claim),
            id_token: raw,
        })
    }

    fn verify(
        &self,
        provider: &Provider,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &Nonce,
    ) -> Result<openidconnect::core::CoreIdTokenClaims, ClaimsVerificationError> {
        let skew = chrono::Duration::from_std(self.settings.clock_skew).unwrap_or_default();
        let verifier = provider
            .client
            .id_token_verifier()
            .set_time_fn(move || Utc::now() - skew)
            .set_issue_time_verifier_fn(move |iat| {
                let ahead = iat - Utc::now();
                if ahead > skew {
                    Err(format!("issued {} s ahead of this server's clock", ahead.num_seconds()))
                } else {
                    Ok(())
                }
            });
        id_token.claims(&verifier, nonce).cloned()
    }

    /// Fetch the JWKS again (a key rotation) and keep the provider with it; `None` when it
    /// was fetched moments ago (another unknown key is then not a rotation).
    async fn refresh_jwks(&self, stale: &Provider) -> Result<Option<Arc<Provider>>, LoginError> {
        let mut state = self.state.lock().await;
        if let Some(p) = &state.provider
            && p.jwks_fetched > stale.jwks_fetched
        {
            return Ok(Some(p.clone()));
        }
        if stale.jwks_fetched.elapsed() < JWKS_REFRESH_EVERY {
            return Ok(None);
        }
        let http = Http(self.http.clone());
        let jwks =
            JsonWebKeySet::fetch_async(stale.metadata.jwks_uri(), &http).await.map_err(|e| {
                LoginError::Unreachable {
                    issuer: self.settings.issuer.as_str().to_string(),
                    reason: format!("cannot fetch its signing keys: {}", error_chain(&e)),
                }
            })?;
        let metadata = stale.metadata.clone().set_jwks(jwks);
        let client = self.client(&metadata);
        info!(issuer = %self.settings.issuer.as_str(), "fetched the identity provider's signing keys again (unknown key id)");
        let fresh = Arc::new(Provider { metadata, client, jwks_fetched: Instant::now() });
        state.provider = Some(fresh.clone());
        Ok(Some(fresh))
    }

    fn token_error<E: std::error::Error + 'static>(
        &self,
        e: RequestTokenError<E, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
    ) -> LoginError {
        match e {
            RequestTokenError::ServerResponse(r) => {
                let code = r.error().as_ref().to_string();
                if matches!(
                    r.error(),
                    CoreErrorResponseType::InvalidClient
                        | CoreErrorResponseType::UnauthorizedClient
                ) {
                    LoginError::BadClient { code }
                } else if matches!(r.error(), CoreErrorResponseType::InvalidGrant) {
                    // A code used twice, or one issued for another login.
                    LoginError::StaleLogin
                } else {
                    let description = r
                        .error_description()
                        .map(|d| format!(": {}", printable(d)))
                        .unwrap_or_default();
                    LoginError::Provider { code, description }
                }
            }
            RequestTokenError::Request(e) => LoginError::Unreachable {
                issuer: self.settings.issuer.as_str().to_string(),
                reason: format!("its token endpoint: {}", error_chain(&e)),
            },
            RequestTokenError::Parse(e, _) => {
                LoginError::Internal(format!("unreadable token response: {e}"))
            }
            RequestTokenError::Other(e) => LoginError::Internal(printable(&e)),
        }
    }

    fn claims_error(&self, e: ClaimsVerificationError) -> LoginError {
        let skew = self.settings.clock_skew.as_secs();
        match e {
            ClaimsVerificationError::Expired(detail) => LoginError::Clock { detail, skew },
            other => LoginError::BadToken(other.to_string()),
        }
    }

    /// The end-session URL to send the browser to after a logout, when the provider has one.
    pub async fn end_session_url(&self, id_token: &str, after: Option<&str>) -> Option<url::Url> {
        let provider = self.provider().await.ok()?;
        let endpoint = provider.metadata.additional_metadata().end_session_endpoint.clone()?;
        let mut url = endpoint.url().clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("id_token_hint", id_token);
            q.append_pair("client_id", &self.settings.client_id);
            if let Some(after) = after {
                q.append_pair("post_logout_redirect_uri", after);
            }
        }
        Some(url)
    }
}

/// An error with its sources, which is where reqwest puts "connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    printable(&text)
}

/// At most 300 visible characters, so a provider's page cannot flood ours.
fn printable(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clean.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// The readable text of a provider's error page: the JSON `error_description`, or the HTML
/// without its tags.
fn provider_message(body: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let d = v.get("error_description").or_else(|| v.get("error")).and_then(|d| d.as_str());
        return d.map(printable);
    }
    let mut text = String::new();
    let mut in_tag = false;
    let body = body.split("</head>").last().unwrap_or(body);
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = printable(&text);
    (!text.is_empty()).then_some(text)
}

/// The groups claim of a verified ID token: a list of strings, or one string. The token's
/// signature and claims were checked before this reads its payload.
fn groups_of(id_token: &str, claim: &str) -> Vec<String> {
    use base64::Engine as _;
    let payload = id_token.split('.').nth(1).unwrap_or_default();
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    match json.get(claim) {
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|g| g.as_str().map(String::from)).collect()
        }
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_from_the_configured_claim() {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let token =
            format!("h.{}.s", enc(serde_json::json!({"groups": ["a", 3, "b"], "roles": "ops"})));
        assert_eq!(groups_of(&token, "groups"), ["a", "b"]);
        assert_eq!(groups_of(&token, "roles"), ["ops"]);
        assert!(groups_of(&token, "none").is_empty());
        assert!(groups_of("garbage", "groups").is_empty());
    }

    #[test]
    fn a_provider_page_is_read_as_text() {
        let html = "<html><head><title>x</title><style>p{}</style></head><body><h1>oops</h1>\n<p>redirect_uri did not match</p></body></html>";
        assert_eq!(provider_message(html).as_deref(), Some("oops redirect_uri did not match"));
        let json = r#"{"error":"invalid_request","error_description":"bad redirect"}"#;
        assert_eq!(provider_message(json).as_deref(), Some("bad redirect"));
        assert_eq!(printable(&"a\u{1b}b ".repeat(200)).chars().count(), 300);
    }
}
