//! `xaas serve` as a child process: its config, its start (on port 0: the daemon reports the
//! port it bound in its log), readiness, signals, exit and log. One harness for every test
//! that runs the daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{SOURCE, TOKEN, WEBHOOK_SECRET, mapping_path};

/// A config file for the daemon tests, rendered as YAML. Every part has a test default; set
/// what a test is about.
pub struct ServeConfig {
    pub org_url: String,
    /// `state:` (indented body). Default: the SQLite file `state.db` in the test's directory.
    pub state: String,
    /// Lines under `serve:` before the webhook (indented by two spaces).
    pub serve_extra: String,
    /// `serve.webhook:` (indented body). Default: HMAC with [`WEBHOOK_SECRET`], no rate limit.
    pub webhook: String,
    /// More `serve:` sections after the webhook (`ui:`...), indented by two spaces.
    pub serve_after: String,
    /// The `jobs:` entries, each from [`job`].
    pub jobs: Vec<String>,
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

impl ServeConfig {
    /// One CSV job `hr` on [`SOURCE`] reading `csv`, SQLite state in `dir`.
    pub fn new(dir: &Path, org_url: &str, csv: &Path) -> Self {
        ServeConfig {
            org_url: org_url.to_string(),
            state: format!("  path: {}\n", dir.join("state.db").display()),
            serve_extra: String::new(),
            webhook: HMAC_WEBHOOK.to_string(),
            serve_after: String::new(),
            jobs: vec![job("hr", SOURCE, csv, "")],
        }
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        format!(
            "okta:
  org_url: {url}
  auth:
    type: api_token
    token_env: XAAS_TEST_TOKEN
  session_spacing_secs: 1
  poll_initial_ms: 20
  poll_max_secs: 1
state:
{state}serve:
  listen: 127.0.0.1:0
  shutdown_deadline_secs: 2
{extra}  webhook:
{webhook}{after}jobs:
{jobs}",
            url = self.org_url,
            state = self.state,
            extra = self.serve_extra,
            webhook = self.webhook,
            after = self.serve_after,
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
    format!(
        "  - name: {name}
    identity_source_id: {source}
    source:
      type: csv
      path: {csv}
    mapping: {mapping}
{extra}",
        csv = csv.display(),
        mapping = mapping_path().display(),
    )
}

/// A running `xaas serve`, killed (and reaped) on drop.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`, the port the daemon reported.
    pub base: String,
    log: PathBuf,
}

impl Serve {
    /// Start `xaas serve --config CONFIG`, logging JSON to `dir/serve-TAG.log`, with the test
    /// token and webhook secret in its environment, plus `env`. Returns once it answers
    /// `/healthz`.
    pub async fn start(dir: &Path, config: &Path, tag: &str, env: &[(&str, &str)]) -> Serve {
        let log = dir.join(format!("serve-{tag}.log"));
        // XAAS_TEST_BIN: a copy of the binary, for a target directory shared between
        // checkouts (another build may replace `target/debug/xaas` mid-test).
        let bin =
            std::env::var("XAAS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_xaas").into());
        let mut command = Command::new(bin);
        command
            .args(["--log-format", "json", "serve", "--config", config.to_str().unwrap()])
            .env("XAAS_TEST_TOKEN", TOKEN)
            .env("XAAS_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("XAAS_LOG", "xaas=debug")
            // Never the developer's AWS profile: tests that need AWS pass what they need.
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let mut serve = Serve { child, base: String::new(), log };
        serve.base = format!("http://{}", serve.wait_listening().await);
        serve.wait_ready().await;
        serve
    }

    /// The address from the daemon's `listening` log line.
    async fn wait_listening(&mut self) -> String {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            for line in self.log().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                if v["fields"]["message"] == "listening"
                    && let Some(addr) = v["fields"]["listen"].as_str()
                {
                    return addr.to_string();
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("xaas serve exited ({status}) before listening:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("xaas serve did not report its address:\n{}", self.log());
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("{}/healthz", self.base)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("xaas serve did not answer /healthz:\n{}", self.log());
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send a signal (`-TERM`, `-HUP`, `-KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("xaas serve did not exit within {within:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
