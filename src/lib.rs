//! xaas: connect any HR or identity system of record to Okta through the Identity Sources
//! ("Anything-as-a-Source") import API.
//!
//! A job pulls records from a source, maps each one with a YAML mapping that ops edit, plans
//! what to send, and drives Okta's import sessions within every documented limit.
//!
//! # Layout
//!
//! Data flows top to bottom:
//!
//! - [`cli`]: the command line (`run`, `plan`, `validate`, `demo`, `sim`).
//! - [`settings`]: the YAML config, layered with `XAAS_*` environment overrides; pure
//!   validation that reports every error with file, line and key.
//! - [`sources`]: where records come from (CSV today); a closed, `type`-tagged enum.
//! - [`mapping`]: record → Okta profile. Pure: no I/O.
//! - [`sync`]: one run of a job: pull → map → de-duplicate → plan → push → report.
//! - [`state`]: what Okta confirmed per job and user, run history, per-record decisions and
//!   approvals; SQLite by default.
//! - [`daemon`]: `xaas serve`: schedules, queues, webhook, health, and the monitoring UI.
//! - [`okta`]: the typed Identity Sources client and the session lifecycle.
//! - [`sim`]: a faithful Okta emulator for tests, the demo and benchmarks.
//! - [`diag`]: diagnostics with file, line and key for the files ops edit.

pub mod cli;
pub mod daemon;
pub mod demo;
pub mod diag;
pub mod mapping;
pub mod okta;
pub mod settings;
pub mod sim;
pub mod sources;
pub mod state;
pub mod sync;
pub mod telemetry;
