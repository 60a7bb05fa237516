//! The Okta Identity Sources emulator (STUB: owned by the emulator work).

use std::net::SocketAddr;
use std::time::Duration;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Identity source ids that exist (others get 404 E0000007).
    pub identity_sources: Vec<String>,
    /// Valid SSWS API tokens (others get 401 E0000011).
    pub api_tokens: Vec<String>,
    /// Simulated seconds per real second for the 5-minute rule and the 24-hour expiry.
    pub clock_scale: f64,
    /// Added latency per API call.
    pub latency: Duration,
    /// Requests per minute before 429 E0000047.
    pub rate_limit_per_minute: u32,
    /// How long (real time) a triggered session takes to process.
    pub processing_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            identity_sources: vec!["0oasim0000000000000".into()],
            api_tokens: vec!["sim-token".into()],
            clock_scale: 1.0,
            latency: Duration::ZERO,
            rate_limit_per_minute: 600,
            processing_delay: Duration::from_millis(100),
        }
    }
}

/// A running emulator.
pub struct SimHandle {
    pub addr: SocketAddr,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Start the emulator on `listener` in a background task.
pub async fn spawn(
    config: SimConfig,
    listener: tokio::net::TcpListener,
) -> std::io::Result<SimHandle> {
    let _ = config;
    Ok(SimHandle { addr: listener.local_addr()? })
}

/// STUB placeholders for the lead's code; replaced by the emulator work.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SimSnapshot {
    pub users: Vec<SimUser>,
    pub violations: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SimUser {
    pub external_id: String,
    pub status: String,
    pub profile: std::collections::BTreeMap<String, String>,
}

impl SimHandle {
    pub fn snapshot(&self) -> SimSnapshot {
        SimSnapshot::default()
    }
    pub fn seed_user(
        &self,
        source_id: &str,
        external_id: &str,
        profile: std::collections::BTreeMap<String, String>,
        active: bool,
    ) {
        let _ = (source_id, external_id, profile, active);
    }
    pub async fn shutdown(self) {}
}
