//! Settings for the production client: `auth: {type: oauth}` and the rate-limit,
//! concurrency, retry and replay keys (their defaults, and that bad values are refused).

use std::path::Path;

use xaas::settings::{Auth, TokenSource, load_with_env};

fn config(dir: &Path, okta_extra: &str) -> std::path::PathBuf {
    let mapping = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/seed-dynamodb.yaml");
    let text = format!(
        "okta:\n  org_url: https://example.okta.com\n{okta_extra}\njobs:\n  - name: hr\n    identity_source_id: 0oa1\n    source:\n      type: csv\n      path: users.csv\n    mapping: {}\n",
        mapping.display()
    );
    let p = dir.join("xaas.yaml");
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn oauth_auth_and_defaults() {
    let dir = tempfile::tempdir().expect("dir");
    let p = config(
        dir.path(),
        "  auth:\n    type: oauth\n    client_id: 0oaapp\n    private_key_file: keys/okta.pem\n    kid: k1",
    );
    let s = load_with_env(&p, &[]).expect("valid");
    let Auth::OAuth { client_id, private_key: TokenSource::File(f), kid, scopes } = &s.okta.auth
    else {
        panic!("{:?}", s.okta.auth)
    };
    assert_eq!(client_id, "0oaapp");
    assert_eq!(f, &dir.path().join("keys/okta.pem"));
    assert_eq!(kid.as_deref(), Some("k1"));
    assert!(scopes.is_empty(), "empty means the default scopes");
    let c = &s.okta.client;
    assert_eq!(c.max_concurrent_requests, 50, "a full session's 50 loads at once");
    assert_eq!(c.rate.org_share_percent, 50);
    assert_eq!(c.rate.requests_per_minute, None);
    assert_eq!(c.max_retries, 3);
    assert_eq!(s.okta.sessions.max_replays, 2);
}

#[test]
fn new_keys_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let p = config(
        dir.path(),
        "  auth: {type: api_token, token: t}\n  max_concurrent_requests: 8\n  max_requests_per_minute: 120\n  max_session_replays: 0",
    );
    let s = load_with_env(&p, &[]).expect("valid");
    assert_eq!(s.okta.client.max_concurrent_requests, 8);
    assert_eq!(s.okta.client.rate.requests_per_minute.map(|n| n.get()), Some(120));
    assert_eq!(s.okta.sessions.max_replays, 0);

    let p = config(
        dir.path(),
        "  auth: {type: oauth, client_id: x, private_key_env: A, private_key_file: b}\n  max_concurrent_requests: 0\n  rate_limit_share_percent: 150",
    );
    let text = load_with_env(&p, &[]).expect_err("invalid").to_string();
    assert!(text.contains("exactly one of `private_key`"), "{text}");
    assert!(text.contains("okta.max_concurrent_requests"), "{text}");
    assert!(text.contains("okta.rate_limit_share_percent"), "{text}");

    // Above Okta's per-org concurrency: refused, with the reason.
    let p =
        config(dir.path(), "  auth: {type: api_token, token: t}\n  max_concurrent_requests: 76");
    let text = load_with_env(&p, &[]).expect_err("over 75").to_string();
    assert!(text.contains("okta.max_concurrent_requests") && text.contains("at most 75"), "{text}");
    let p =
        config(dir.path(), "  auth: {type: api_token, token: t}\n  max_concurrent_requests: 75");
    assert_eq!(
        load_with_env(&p, &[]).expect("75 is allowed").okta.client.max_concurrent_requests,
        75
    );
}
