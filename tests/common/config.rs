//! The config files of the end-to-end tests, rendered as YAML from one builder: every part
//! has a test default, and a test sets what it is about.

use std::path::{Path, PathBuf};

use super::{SOURCE, mapping_path};

/// A config file. `render` writes `okta:` (API token from `XAAS_TEST_TOKEN`), `state:`,
/// `serve:` when the daemon is configured, and `jobs:`.
pub struct TestConfig {
    pub org_url: String,
    /// Lines under `okta:` after `auth:` (indented by two spaces).
    pub okta: String,
    /// `state:` (indented body). Default: the SQLite file `state.db` in the test's directory;
    /// empty: no `state:` section (the default file next to the config).
    pub state: String,
    /// `None`: no `serve:` section (a config for `xaas run`).
    pub serve: Option<ServeSection>,
    /// The `jobs:` entries, each from [`job`] or [`job_with_source`].
    pub jobs: Vec<String>,
}

/// `serve:`, listening on port 0 (the daemon reports the port it bound).
pub struct ServeSection {
    /// Lines under `serve:` before the webhook (indented by two spaces).
    pub extra: String,
    /// `serve.webhook:` (indented body). Default: HMAC with the test secret, no rate limit.
    pub webhook: String,
    /// More `serve:` sections after the webhook (`ui:`...), indented by two spaces.
    pub after: String,
    /// `serve.listen`: port 0 unless a test must know its URL before the start (an OIDC
    /// redirect URL).
    pub listen: String,
}

/// The webhook section every daemon test uses unless it says otherwise.
pub const HMAC_WEBHOOK: &str = "    auth:
      type: hmac
      secrets:
        - env: XAAS_TEST_WEBHOOK_SECRET
    # One test client sends everything: lift the per-client limit.
    rate_limit_per_second: 100000
    rate_limit_burst: 100000
";

/// The client settings of the tests: 1 s spacing (the emulator runs 300× faster), fast polls.
pub const FAST_OKTA: &str =
    "  session_spacing_secs: 1\n  poll_initial_ms: 20\n  poll_max_secs: 1\n";

impl TestConfig {
    /// A daemon config: one CSV job `hr` on [`SOURCE`] reading `csv`, SQLite state in `dir`,
    /// the HMAC webhook.
    pub fn new(dir: &Path, org_url: &str, csv: &Path) -> Self {
        TestConfig {
            serve: Some(ServeSection {
                extra: String::new(),
                webhook: HMAC_WEBHOOK.to_string(),
                after: String::new(),
                listen: "127.0.0.1:0".into(),
            }),
            jobs: vec![job("hr", SOURCE, csv, "")],
            ..Self::for_run(dir, org_url)
        }
    }

    /// A config for `xaas run`: no `serve:`, no jobs yet.
    pub fn for_run(dir: &Path, org_url: &str) -> Self {
        TestConfig {
            org_url: org_url.to_string(),
            okta: FAST_OKTA.to_string(),
            state: format!("  path: {}\n", dir.join("state.db").display()),
            serve: None,
            jobs: Vec::new(),
        }
    }

    /// The `serve:` section (the config must have one).
    pub fn serve_mut(&mut self) -> &mut ServeSection {
        self.serve.as_mut().expect("a daemon config")
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        let serve = self.serve.as_ref().map_or(String::new(), |s| {
            format!(
                "serve:\n  listen: {}\n  shutdown_deadline_secs: 2\n{}  webhook:\n{}{}",
                s.listen, s.extra, s.webhook, s.after
            )
        });
        let state =
            if self.state.is_empty() { String::new() } else { format!("state:\n{}", self.state) };
        format!(
            "okta:\n  org_url: {url}\n  auth:\n    type: api_token\n    token_env: XAAS_TEST_TOKEN\n{okta}{state}{serve}jobs:\n{jobs}",
            url = self.org_url,
            okta = self.okta,
            jobs = self.jobs.concat(),
        )
    }

    /// Write it to `path`; returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.render()).unwrap();
        path.to_path_buf()
    }
}

/// One `jobs:` entry reading `csv` with the repo's example mapping; `extra` lines (indented
/// by four spaces) are appended.
pub fn job(name: &str, source: &str, csv: &Path, extra: &str) -> String {
    job_with_source(
        name,
        source,
        &format!("      type: csv\n      path: {}\n", csv.display()),
        extra,
    )
}

/// One `jobs:` entry with its `source:` body (indented by six spaces) and the repo's example
/// mapping; `extra` lines (indented by four spaces) are appended.
pub fn job_with_source(name: &str, identity_source: &str, source: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    identity_source_id: {identity_source}\n    source:\n{source}    mapping: {mapping}\n{extra}",
        mapping = mapping_path().display(),
    )
}
