//! The Okta Identity Sources ("Anything-as-a-Source") client.
//!
//! - [`model`]: wire types, as Okta sends and expects them (see `shared/okta/FACTS.md` §3).
//! - [`batch`]: packing users into requests and sessions within Okta's limits (FACTS §6).
//! - [`client`]: one typed method per endpoint, with the SSWS header, `Content-Length: 0` on
//!   body-less POSTs and 429 handling.
//! - [`session`]: the session lifecycle: clean up stale sessions, respect the 5-minute rule,
//!   upload, trigger (or cancel a session that stayed `CREATED`), follow to `COMPLETED`/`ERROR`.
//! - [`error`]: typed errors with `is_retryable()` and `retry_after()`.

pub mod batch;
pub mod client;
pub mod error;
pub mod model;
pub mod session;

pub use client::OktaClient;
pub use error::OktaError;
