//! `xaas serve` as a child process: its start (on port 0: the daemon reports the port it
//! bound in its log), readiness, signals, exit and log. One harness for every test that runs
//! the daemon; its config comes from [`super::config::TestConfig`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TOKEN, WEBHOOK_SECRET};

/// A running `xaas serve`, killed (and reaped) on drop.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`, the port the daemon reported.
    pub base: String,
    log: PathBuf,
}

impl Serve {
    /// Wait (up to 20 s) until the pushed event `id` is no longer pending; it, as
    /// `GET /v1/events/{id}` says.
    pub async fn finished_event(&self, id: &str) -> serde_json::Value {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, ev) =
                super::signed_get(&client, &format!("{}/v1/events/{id}", self.base)).await;
            assert_eq!(s, 200, "{ev}");
            if ev["status"] != "queued" && ev["status"] != "processing" {
                return ev;
            }
            assert!(Instant::now() < deadline, "event still pending: {ev}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

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
