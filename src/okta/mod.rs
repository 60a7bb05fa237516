//! The Okta Identity Sources ("Anything-as-a-Source") client.
//!
//! - [`model`]: wire types, as Okta sends and expects them (see `shared/okta/FACTS.md` §3).
//! - [`batch`]: packing users into requests and sessions within Okta's limits (FACTS §6).
//! - [`auth`]: SSWS API tokens, or OAuth 2.0 client credentials with `private_key_jwt`
//!   (FACTS §1), with a cached, renewed access token.
//! - [`rate_limit`]: the rate budget: a governor ceiling and pacing on `X-Rate-Limit-*`.
//! - [`concurrency`]: the requests in flight: a cap that halves on a concurrency 429 and
//!   grows back on answers.
//! - [`client`]: one typed method per endpoint, through one policy stack (credentials →
//!   adaptive concurrency cap → rate budget → per-attempt timeout → retry that never duplicates).
//! - [`session`]: the session lifecycle: clean up stale sessions, respect the 5-minute rule,
//!   upload, trigger (or cancel a session that stayed `CREATED`), follow to `COMPLETED`/`ERROR`.
//! - [`error`]: typed errors with `is_retryable()` and `retry_after()`.

// `OktaError` carries Okta's whole error (code, summary, causes, errorId, request id) so the
// report can show it; it is only built on the failure path, where its size costs nothing.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod batch;
pub mod check;
pub mod client;
pub mod concurrency;
pub mod config;
pub mod direct;
pub mod error;
pub mod ledger;
pub mod model;
pub mod rate_limit;
pub mod session;
pub mod spacing;

pub use auth::{Credentials, OAuthConfig};
pub use client::OktaClient;
pub use error::OktaError;
