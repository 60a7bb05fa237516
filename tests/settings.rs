//! Settings: layering, env overrides, secrets, and errors with file:line: key.

use std::path::Path;

use xaas::settings::{Auth, TokenSource, load_with_env};

fn mapping() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/seed-dynamodb.yaml").display().to_string()
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("xaas.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn base(org_url: &str, auth: &str) -> String {
    format!(
        "okta:\n  org_url: {org_url}\n  auth:\n{auth}\njobs:\n  - name: hr\n    identity_source_id: 0oa1\n    source:\n      type: csv\n      path: users.csv\n    mapping: {}\n",
        mapping()
    )
}

#[test]
fn loads_defaults_and_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        &base("https://example.okta.com", "    type: api_token\n    token_file: secret/token"),
    );
    let s = load_with_env(&p, &[]).unwrap();
    assert_eq!(s.okta.org_url.as_str(), "https://example.okta.com/");
    assert_eq!(s.okta.sessions.spacing.as_secs(), 300);
    assert_eq!(s.okta.client.request_timeout.as_secs(), 60);
    assert_eq!(s.jobs.len(), 1);
    assert_eq!(s.jobs[0].sessions, xaas::okta::batch::SessionMode::Separate);
    let Auth::ApiToken(TokenSource::File(f)) = &s.okta.auth else { panic!("{:?}", s.okta.auth) };
    assert_eq!(f, &dir.path().join("secret/token"));
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        &base("https://example.okta.com", "    type: api_token\n    token_env: OKTA_TOKEN"),
    );
    let env = vec![
        ("XAAS_OKTA__ORG_URL".to_string(), "https://other.okta.com".to_string()),
        ("XAAS_OKTA__REQUEST_TIMEOUT_SECS".to_string(), "5".to_string()),
        ("XAAS_LOG".to_string(), "debug".to_string()), // not a config key: ignored
    ];
    let s = load_with_env(&p, &env).unwrap();
    assert_eq!(s.okta.org_url.host_str(), Some("other.okta.com"));
    assert_eq!(s.okta.client.request_timeout.as_secs(), 5);
}

#[test]
fn inline_token_never_shows_in_debug_and_token_file_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        &base("https://example.okta.com", "    type: api_token\n    token: 00SECRETabc123"),
    );
    let s = load_with_env(&p, &[]).unwrap();
    let debug = format!("{s:?}");
    assert!(!debug.contains("00SECRETabc123"), "{debug}");

    std::fs::write(dir.path().join("tok"), "  00FILEtoken\n").unwrap();
    let src = TokenSource::File(dir.path().join("tok"));
    use secrecy::ExposeSecret;
    assert_eq!(src.resolve().unwrap().expose_secret(), "00FILEtoken");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let err = TokenSource::File(empty.clone()).resolve().unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains(&empty.display().to_string()), "{err}");
}

#[test]
fn http_is_allowed_only_for_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let auth = "    type: api_token\n    token_env: T";
    for ok in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"] {
        let p = write(dir.path(), &base(ok, auth));
        assert!(load_with_env(&p, &[]).is_ok(), "{ok}");
    }
    for bad in ["http://example.okta.com", "http://10.0.0.1", "ftp://example.okta.com"] {
        let p = write(dir.path(), &base(bad, auth));
        let err = load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.contains(":2:3: okta.org_url:") && err.contains("https"), "{bad}: {err}");
    }
}

#[test]
fn two_token_sources_are_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        &base("https://e.okta.com", "    type: api_token\n    token: a\n    token_env: B"),
    );
    let err = load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.contains("only one of"), "{err}");
}

#[test]
fn unknown_keys_everywhere_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "okta:\n  org_url: https://e.okta.com\n  org_ulr: x\n  auth:\n    type: api_token\n    token_env: T\njob:\n  - {{}}\njobs:\n  - name: hr\n    identity_source_id: 0oa1\n    shedule: '* * * * *'\n    source:\n      type: csv\n      path: users.csv\n    mapping: {}\n",
        mapping()
    );
    let p = write(dir.path(), &text);
    let err = load_with_env(&p, &[]).unwrap_err();
    let s = err.to_string();
    assert!(
        s.contains(":3:3: okta.org_ulr: unknown key `org_ulr` (did you mean `org_url`?)"),
        "{s}"
    );
    assert!(s.contains(":7:1: job: unknown key `job` (did you mean `jobs`?)"), "{s}");
    assert!(
        s.contains(":12:5: jobs[0].shedule: unknown key `shedule` (did you mean `schedule`?)"),
        "{s}"
    );
    assert_eq!(err.0.len(), 3, "{s}");
}

#[test]
fn unknown_source_type_lists_valid_types() {
    let dir = tempfile::tempdir().unwrap();
    let text = base("https://e.okta.com", "    type: api_token\n    token_env: T")
        .replace("type: csv", "type: excel");
    let p = write(dir.path(), &text);
    let s = load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(s.contains("jobs[0]") && s.contains("excel") && s.contains("csv"), "{s}");
}

#[test]
fn syntax_errors_have_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "okta:\n  org_url: [unclosed\njobs: []\n");
    let s = load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(s.contains("invalid yaml"), "{s}");
    assert!(s.contains(&format!("{}:", p.display())), "{s}");
}

#[test]
fn missing_config_file_names_it() {
    let s = load_with_env(Path::new("/nonexistent/xaas.yaml"), &[]).unwrap_err().to_string();
    assert!(s.contains("/nonexistent/xaas.yaml") && s.contains("cannot read"), "{s}");
}
