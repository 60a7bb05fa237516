//! OAuth 2.0 client credentials with `private_key_jwt` (FACTS §1), client against emulator:
//! a good key (RS256 and ES256), a wrong key, an expired or too-long assertion, a missing
//! scope at the token endpoint and at the API, and renewal of a short-lived access token.
//!
//! The keys in `tests/fixtures/oauth/` are test-only keys generated for these tests.

// `OktaError` carries Okta's whole error body; see `src/okta/mod.rs`.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use url::Url;
use xaas::okta::client::{ClientOptions, OktaClient};
use xaas::okta::{Credentials, OAuthConfig, OktaError};
use xaas::sim::{SimConfig, SimHandle, SimOAuthClient};

const SOURCE: &str = "0oasim0000000000000";
const CLIENT_ID: &str = "0oaservice000000001";
const RSA_PRIVATE: &str = include_str!("fixtures/oauth/test-rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/oauth/test-rsa-public.pem");
const EC_PRIVATE: &str = include_str!("fixtures/oauth/test-ec-private.pem");
const EC_PUBLIC: &str = include_str!("fixtures/oauth/test-ec-public.pem");
const WRONG_PRIVATE: &str = include_str!("fixtures/oauth/test-wrong-rsa-private.pem");
const BOTH: [&str; 2] = ["okta.identitySources.manage", "okta.identitySources.read"];

async fn sim(public_key: &str, granted: &[&str], lifetime: Duration) -> SimHandle {
    let config = SimConfig {
        oauth_clients: vec![SimOAuthClient {
            client_id: CLIENT_ID.into(),
            public_key_pem: public_key.into(),
            scopes: granted.iter().map(|s| s.to_string()).collect(),
        }],
        access_token_lifetime: lifetime,
        api_tokens: vec![],
        ..SimConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    xaas::sim::spawn(config, listener).await.expect("spawn emulator")
}

fn client(sim: &SimHandle, private_key: &str, scopes: &[&str]) -> Result<OktaClient, OktaError> {
    OktaClient::with_credentials(
        Url::parse(&sim.base_url()).expect("url"),
        Credentials::OAuth(OAuthConfig {
            client_id: CLIENT_ID.into(),
            private_key_pem: SecretString::from(private_key.to_string()),
            kid: Some("test-kid".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }),
        ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() },
    )
}

#[tokio::test]
async fn a_good_rsa_key_gets_a_token_and_can_create_a_session() {
    let sim = sim(RSA_PUBLIC, &BOTH, Duration::from_secs(3600)).await;
    let c = client(&sim, RSA_PRIVATE, &[]).expect("client");
    assert!(c.list_sessions(SOURCE).await.expect("list").is_empty());
    let session = c.create_session(SOURCE).await.expect("create");
    c.cancel_session(SOURCE, &session.id).await.expect("cancel");
    let snap = sim.snapshot();
    assert_eq!(snap.tokens_issued, 1, "one token, cached across calls");
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
    assert!(!format!("{c:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn a_good_ec_key_signs_es256() {
    let sim = sim(EC_PUBLIC, &BOTH, Duration::from_secs(3600)).await;
    let c = client(&sim, EC_PRIVATE, &[]).expect("client");
    c.list_sessions(SOURCE).await.expect("list");
    assert_eq!(sim.snapshot().tokens_issued, 1);
}

#[tokio::test]
async fn a_wrong_key_is_invalid_client_with_a_hint() {
    let sim = sim(RSA_PUBLIC, &BOTH, Duration::from_secs(3600)).await;
    let c = client(&sim, WRONG_PRIVATE, &[]).expect("client");
    let err = c.list_sessions(SOURCE).await.expect_err("wrong key");
    match &err {
        OktaError::OAuth { status: 401, error, description } => {
            assert_eq!(error, "invalid_client");
            assert!(description.contains("signature is invalid"), "{description}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("public key"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(sim.snapshot().tokens_issued, 0);
}

#[tokio::test]
async fn a_key_that_is_not_a_private_key_is_refused_up_front() {
    let sim = sim(RSA_PUBLIC, &BOTH, Duration::from_secs(3600)).await;
    // A public key parses as a PEM key but cannot sign: the client refuses it at start-up,
    // not at the first call.
    let err = client(&sim, RSA_PUBLIC, &[]).expect_err("public key");
    assert!(matches!(err, OktaError::Other(_)), "{err:?}");
    let err = client(&sim, "not a key", &[]).expect_err("garbage");
    assert!(err.to_string().contains("not a pem rsa or ec"), "{err}");
}

/// Assertions the client would never build, signed with the right key.
#[tokio::test]
async fn expired_and_too_long_assertions_are_refused() {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: String,
        exp: u64,
        iat: u64,
        jti: String,
    }
    let sim = sim(RSA_PUBLIC, &BOTH, Duration::from_secs(3600)).await;
    let token_url = format!("{}/oauth2/v1/token", sim.base_url());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let http = reqwest::Client::new();
    for (exp, expected) in [(now - 120, "expired"), (now + 2 * 3600, "too far in the future")] {
        let claims = Claims {
            iss: CLIENT_ID,
            sub: CLIENT_ID,
            aud: token_url.clone(),
            exp,
            iat: now - 200,
            jti: format!("{exp}"),
        };
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .expect("sign");
        let r = http
            .post(&token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "okta.identitySources.manage"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", jwt.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"], "invalid_client");
        assert!(body["error_description"].as_str().unwrap_or("").contains(expected), "{body}");
    }
    assert_eq!(sim.snapshot().tokens_issued, 0);
}

#[tokio::test]
async fn a_scope_not_granted_is_invalid_scope() {
    // The app was granted read only; the client asks for both (the default).
    let sim = sim(RSA_PUBLIC, &["okta.identitySources.read"], Duration::from_secs(3600)).await;
    let c = client(&sim, RSA_PRIVATE, &[]).expect("client");
    let err = c.list_sessions(SOURCE).await.expect_err("invalid scope");
    assert!(
        matches!(&err, OktaError::OAuth { status: 400, error, .. } if error == "invalid_scope"),
        "{err:?}"
    );
    assert!(err.to_string().contains("okta.identitySources.manage"), "{err}");
}

#[tokio::test]
async fn a_token_without_the_manage_scope_gets_403_insufficient_scope() {
    let sim = sim(RSA_PUBLIC, &BOTH, Duration::from_secs(3600)).await;
    let c = client(&sim, RSA_PRIVATE, &["okta.identitySources.read"]).expect("client");
    c.list_sessions(SOURCE).await.expect("reading is allowed");
    let err = c.create_session(SOURCE).await.expect_err("403");
    match &err {
        OktaError::Forbidden { summary, .. } => {
            assert!(summary.contains("insufficient_scope"), "{summary}")
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("grant okta.identitySources.manage"), "{err}");
    assert!(sim.snapshot().sessions.is_empty());
}

#[tokio::test]
async fn a_short_lived_token_is_renewed_before_it_expires() {
    // 2 s tokens: the client renews a fifth of the lifetime early (0.4 s before expiry), so
    // calls spread over 3 s need a second token and never meet a 401.
    let sim = sim(RSA_PUBLIC, &BOTH, Duration::from_secs(2)).await;
    let c = client(&sim, RSA_PRIVATE, &[]).expect("client");
    for _ in 0..6 {
        c.list_sessions(SOURCE).await.expect("list");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let snap = sim.snapshot();
    assert!(snap.tokens_issued >= 2, "renewed: {}", snap.tokens_issued);
    assert!(snap.violations.is_empty(), "no call with an expired token: {:?}", snap.violations);
}
