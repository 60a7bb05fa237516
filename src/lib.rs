//! xaas: connect any HR or identity system of record to Okta through the Identity Sources
//! ("Anything-as-a-Source") import API.
//!
//! A job pulls records from a source, maps each one with a YAML mapping that ops edit, plans
//! what to send, and drives Okta's import sessions within every documented limit.
//!
//! # Layout
//!
//! Layers, lowest first; a module imports only modules of lower layers (`tests/layering.rs`
//! checks it):
//!
//! 1. [`diag`] (diagnostics with file, line and key) and [`telemetry`] (metric names and the
//!    helpers that record them): what every layer needs.
//! 2. [`mapping`]: record → Okta profile. Pure: no I/O.
//! 3. [`okta`]: the typed Identity Sources client, its settings and the session lifecycle.
//! 4. [`sources`] (CSV, DynamoDB, HTTP JSON; a closed, `type`-tagged enum), [`state`] (what
//!    Okta confirmed per job and user, run history, decisions, approvals, webhook events;
//!    SQLite or DynamoDB) and [`sim`] (a faithful Okta emulator for tests, the demo and
//!    benchmarks).
//! 5. [`settings`]: the YAML config, layered with `XAAS_*` environment overrides; pure
//!    validation that reports every error with file, line and key, resolved into each
//!    component's own settings.
//! 6. [`sync`]: one run of a job (pull → map → de-duplicate → plan → send → report), given its
//!    store, client, spacing clock and cancellation; its send stage is the one pipeline that
//!    scheduled pulls and webhook batches share.
//! 7. [`daemon`]: `xaas serve`: schedules, queues, webhook, coordination of replicas, health,
//!    metrics and the monitoring page.
//! 8. [`demo`], then [`cli`]: the command line (`run`, `plan`, `validate`, `check`, `serve`,
//!    `approve`, `mapping`, `demo`, `sim`, `healthcheck`).

pub mod cli;
pub mod compute;
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
