//! The 5-minute clock of an identity source (FACTS §4b: one session creation per 5 minutes):
//! when a session was last created or triggered, shared by the importers of one source and
//! optionally persisted in the state. The clock also hands each importer the source's
//! [`SessionLedger`] (which sessions are ours), read afresh from the state every time: with
//! several replicas, the one that held the source before may have created sessions since.

use std::time::Duration;

use std::time::Instant;

use super::ledger::SessionLedger;

/// The 5-minute clock of one identity source, shared by every importer a daemon builds for
/// it, and optionally persisted (each creation or trigger is written through), so that a
/// restarted process still waits out the spacing of the one that died.
#[derive(Clone, Default)]
pub struct SpacingClock {
    last: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    persist: Option<std::sync::Arc<dyn Fn(chrono::DateTime<chrono::Utc>) + Send + Sync>>,
    ledger: Option<std::sync::Arc<dyn Fn() -> SessionLedger + Send + Sync>>,
}

impl std::fmt::Debug for SpacingClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpacingClock").field("last", &self.get()).finish()
    }
}

impl SpacingClock {
    /// A clock that writes each activity through `persist`, starting from `last` (a wall
    /// time read back from where `persist` writes).
    pub fn persisted(
        last: Option<chrono::DateTime<chrono::Utc>>,
        persist: impl Fn(chrono::DateTime<chrono::Utc>) + Send + Sync + 'static,
    ) -> Self {
        let clock = Self {
            last: Default::default(),
            persist: Some(std::sync::Arc::new(persist)),
            ledger: None,
        };
        if let Some(at) = last {
            // The same moment on this process's monotonic clock. It may lie ahead: a process
            // that died while creating or triggering left the latest moment Okta could have
            // acted (see [`SpacingClock::pending`]).
            let now = Instant::now();
            let delta = at - chrono::Utc::now();
            *clock.lock() = match delta.to_std() {
                Ok(ahead) => now.checked_add(ahead),
                Err(_) => now.checked_sub((-delta).to_std().unwrap_or(Duration::ZERO)),
            };
        }
        clock
    }

    /// Hand importers the ledger `load` reads (from the state, each time).
    pub fn with_ledger(mut self, load: impl Fn() -> SessionLedger + Send + Sync + 'static) -> Self {
        self.ledger = Some(std::sync::Arc::new(load));
        self
    }

    /// The source's ledger as the state has it now; `None` without one (every session is then
    /// taken for ours, as before ledgers existed: tests and embedders).
    pub fn ledger(&self) -> Option<SessionLedger> {
        self.ledger.as_ref().map(|load| load())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When a session was last created or triggered.
    pub fn get(&self) -> Option<Instant> {
        *self.lock()
    }

    /// A session was created or triggered now.
    pub fn touch(&self) {
        self.set(Duration::ZERO);
    }

    /// A create or trigger is about to be sent, and Okta may act on it at any moment until
    /// `within` has passed (the request's timeout): until the answer replaces it, the clock
    /// says "then". A process killed while waiting for the answer leaves this mark behind,
    /// so its successor waits long enough whether or not Okta acted.
    pub fn pending(&self, within: Duration) {
        self.set(within);
    }

    fn set(&self, ahead: Duration) {
        *self.lock() = Some(Instant::now() + ahead);
        if let Some(p) = &self.persist {
            let ahead = chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::zero());
            p(chrono::Utc::now() + ahead);
        }
    }
}
