//! `xaas check` asks Okta too (issue 18, point 4), against the emulator: accepted credentials,
//! the identity source, its open session and the rate limit; a wrong token, a scope the app
//! was not granted (or the config leaves out) and an unknown identity source, each with what
//! to fix; and never a write.

mod common;

use std::path::Path;

use common::config::{TestConfig, job};
use common::{Person, SOURCE, TOKEN, write_csv, xaas_async};
use xaas::sim::{SimConfig, SimHandle, SimOAuthClient};

const CLIENT_ID: &str = "0oaservice000000001";
const RSA_PUBLIC: &str = include_str!("fixtures/oauth/test-rsa-public.pem");

async fn sim(oauth_scopes: &[&str]) -> SimHandle {
    let config = SimConfig {
        oauth_clients: vec![SimOAuthClient {
            client_id: CLIENT_ID.into(),
            public_key_pem: RSA_PUBLIC.into(),
            scopes: oauth_scopes.iter().map(|s| s.to_string()).collect(),
        }],
        ..SimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    xaas::sim::spawn(config, listener).await.unwrap()
}

/// A config with one CSV job per identity source; `auth` replaces the API-token block.
fn config(dir: &Path, sim: &SimHandle, sources: &[&str], auth: Option<&str>) -> String {
    let csv = dir.join("people.csv");
    write_csv(&csv, &(0..3).map(|i| Person::generate(i, true)).collect::<Vec<_>>());
    let mut c = TestConfig::for_run(dir, &sim.base_url());
    c.jobs =
        sources.iter().enumerate().map(|(i, s)| job(&format!("job{i}"), s, &csv, "")).collect();
    let mut text = c.render();
    if let Some(auth) = auth {
        text = text.replace("    type: api_token\n    token_env: XAAS_TEST_TOKEN\n", auth);
    }
    let path = dir.join("xaas.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn check(config: &str, token: &str) -> (Option<i32>, String, String) {
    let out = xaas_async(vec!["check".into(), "--config".into(), config.into()], token).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The emulator saw no write: no session, no user.
fn nothing_written(sim: &SimHandle) {
    let snap = sim.snapshot();
    assert!(snap.users.is_empty(), "{:?}", snap.users);
    assert!(snap.violations.iter().all(|v| v.rule != "session_spacing"), "{:?}", snap.violations);
}

#[tokio::test]
async fn check_reports_the_credentials_the_source_its_open_session_and_the_rate_limit() {
    let sim = sim(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    // A session someone left open a moment ago.
    let client = xaas::okta::OktaClient::new(
        url::Url::parse(&sim.base_url()).unwrap(),
        secrecy::SecretString::from(TOKEN),
        Default::default(),
    )
    .unwrap();
    let open = client.create_session(SOURCE).await.unwrap();
    let sessions = sim.snapshot().sessions.len();
    let config = config(dir.path(), &sim, &[SOURCE], None);
    let (code, out, err) = check(&config, TOKEN).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("credentials accepted: the api token"), "{out}");
    assert!(out.contains(&format!("identity source {SOURCE} exists and may be read")), "{out}");
    assert!(out.contains(&format!("open sessions: {} CREATED for 0 min", open.id)), "{out}");
    assert!(out.contains("rate limit 600 per window"), "{out}");
    assert_eq!(sim.snapshot().sessions.len(), sessions, "read-only: no session created or closed");
    assert_eq!(
        sim.snapshot().sessions[0].status.as_str(),
        "CREATED",
        "the open session is left alone"
    );
    nothing_written(&sim);
}

#[tokio::test]
async fn check_names_a_wrong_token_and_an_unknown_identity_source_with_their_fixes() {
    let sim = sim(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let unknown = "0oanosuchsource0000";
    let config = config(dir.path(), &sim, &[SOURCE, unknown], None);

    let (code, out, err) = check(&config, "not-the-token").await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("okta rejected the credentials"), "{err}");
    assert!(err.contains("wrong, expired or revoked"), "{err}");
    assert!(!err.contains("not-the-token"), "no secret in the output: {err}");
    assert_eq!(err.matches("okta check of identity source").count(), 1, "said once: {err}");

    let (code, out, err) = check(&config, TOKEN).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains(&format!("identity source {SOURCE} exists")), "{out}");
    assert!(
        err.contains(&format!("job job1: okta check of identity source {unknown} failed")),
        "{err}"
    );
    assert!(err.contains("check the identity source id"), "{err}");
    assert!(sim.snapshot().sessions.is_empty());
    nothing_written(&sim);
}

#[tokio::test]
async fn check_names_a_scope_the_app_lacks_or_the_config_leaves_out() {
    // The app was granted read only.
    let sim = sim(&["okta.identitySources.read"]).await;
    let dir = tempfile::tempdir().unwrap();
    let key =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oauth/test-rsa-private.pem");
    let oauth = |scopes: &str| {
        format!(
            "    type: oauth\n    client_id: {CLIENT_ID}\n    private_key_file: {}\n    kid: test-kid\n{scopes}",
            key.display()
        )
    };
    let path = config(dir.path(), &sim, &[SOURCE], Some(&oauth("")));
    let (code, out, err) = check(&path, TOKEN).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("invalid_scope"), "{err}");
    assert!(err.contains("okta.identitySources.manage"), "{err}");
    assert_eq!(sim.snapshot().tokens_issued, 0);

    // Asking for read only gets a token, which can read but would never create a session.
    let path = config(
        dir.path(),
        &sim,
        &[SOURCE],
        Some(&oauth("    scopes: [okta.identitySources.read]\n")),
    );
    let (code, out, err) = check(&path, TOKEN).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("credentials accepted: oauth app"), "{out}");
    assert!(err.contains("okta.auth.scopes lacks okta.identitySources.manage"), "{err}");
    assert!(sim.snapshot().sessions.is_empty());
    nothing_written(&sim);
}
