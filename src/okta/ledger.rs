//! Which import sessions on an identity source are ours: the sessions this xaas created, and
//! the creates whose answer it never read.
//!
//! An identity source is often shared for a while: an admin, a Workflows flow or another tool
//! may be filling a session of its own (common while a company moves from its flows to xaas).
//! Okta's session carries no creator, so xaas remembers what it did, per identity source, in
//! the state ([`SessionLedger::persisted`]):
//!
//! - every session Okta created for us (its id), written as soon as the answer arrives;
//! - every create attempt, written **before** the call with the window in which Okta may act
//!   on it (sent, up to the request timeout), and forgotten once answered, or once it certainly
//!   did not reach Okta (a refusal, a refused connection).
//!
//! An open session is ours when its id is known, or when it was created (Okta's `created`)
//! within the window of a create whose answer was lost (a timeout, a broken connection, or a
//! process killed while waiting), give or take [`CLOCK_SKEW`]. Anything else is foreign: it is
//! never cancelled nor written to ([`super::session::Importer::prepare`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How far apart our clock and Okta's may be when matching a lost create to a session.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Known session ids kept per identity source.
const MAX_KNOWN: usize = 200;
/// Unanswered creates older than this are forgotten (Okta expires open sessions sooner).
const MAX_ATTEMPT_AGE: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// What is kept, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Sessions Okta created for us, oldest first.
    #[serde(default)]
    pub known: VecDeque<KnownSession>,
    /// Creates sent whose answer was never read.
    #[serde(default)]
    pub unanswered: Vec<CreateAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownSession {
    pub id: String,
    pub at: DateTime<Utc>,
}

/// A create sent at `sent_at`; Okta may have created its session until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAttempt {
    pub sent_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Whose a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Created for us (its id is known).
    Us,
    /// Created within the window of a create of ours whose answer was lost.
    UsByTime(CreateAttempt),
    /// Someone else's.
    Other,
}

impl Owner {
    pub fn is_us(&self) -> bool {
        !matches!(self, Owner::Other)
    }
}

/// The ledger of one identity source, shared by the importers built for it and written
/// through to the state on every change.
#[derive(Clone)]
pub struct SessionLedger {
    inner: Arc<Mutex<Ledger>>,
    persist: Arc<dyn Fn(&Ledger) + Send + Sync>,
}

impl std::fmt::Debug for SessionLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLedger").field("ledger", &*self.lock()).finish()
    }
}

impl SessionLedger {
    /// A ledger starting from `ledger` (read back from the state), writing each change
    /// through `persist`.
    pub fn persisted(ledger: Ledger, persist: impl Fn(&Ledger) + Send + Sync + 'static) -> Self {
        Self { inner: Arc::new(Mutex::new(ledger)), persist: Arc::new(persist) }
    }

    /// A ledger kept in memory only (tests, and a process without a state).
    pub fn in_memory() -> Self {
        Self::persisted(Ledger::default(), |_| {})
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn change(&self, f: impl FnOnce(&mut Ledger)) {
        let mut ledger = self.lock();
        f(&mut ledger);
        (self.persist)(&ledger);
    }

    /// A copy of what is kept.
    pub fn snapshot(&self) -> Ledger {
        self.lock().clone()
    }

    /// A create is about to be sent; Okta may act on it until `within` has passed. Written
    /// before the call, so a process killed while waiting leaves it behind.
    pub fn create_sent(&self, within: Duration) -> CreateAttempt {
        let now = Utc::now();
        let attempt = CreateAttempt { sent_at: now, until: now + delta(within) };
        self.change(|l| {
            l.unanswered.retain(|a| now - a.sent_at < MAX_ATTEMPT_AGE);
            l.unanswered.push(attempt);
        });
        attempt
    }

    /// Okta answered `attempt` with the session `id`.
    pub fn created(&self, attempt: CreateAttempt, id: &str) {
        self.change(|l| {
            l.unanswered.retain(|a| *a != attempt);
            remember(l, id);
        });
    }

    /// `attempt` certainly did not create a session (Okta refused it, or no connection was
    /// made).
    pub fn not_created(&self, attempt: CreateAttempt) {
        self.change(|l| l.unanswered.retain(|a| *a != attempt));
    }

    /// Whose the session `id` created at `created` (Okta's clock) is. A session matched to a
    /// lost create becomes known, and that create is no longer open to another match.
    pub fn owner(&self, id: &str, created: Option<DateTime<Utc>>) -> Owner {
        if self.lock().known.iter().any(|k| k.id == id) {
            return Owner::Us;
        }
        let Some(created) = created else { return Owner::Other };
        let skew = delta(CLOCK_SKEW);
        let matched = self
            .lock()
            .unanswered
            .iter()
            .find(|a| a.sent_at - skew <= created && created <= a.until + skew)
            .copied();
        match matched {
            Some(attempt) => {
                self.created(attempt, id);
                Owner::UsByTime(attempt)
            }
            None => Owner::Other,
        }
    }
}

fn remember(l: &mut Ledger, id: &str) {
    if !l.known.iter().any(|k| k.id == id) {
        l.known.push_back(KnownSession { id: id.to_string(), at: Utc::now() });
    }
    while l.known.len() > MAX_KNOWN {
        l.known.pop_front();
    }
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_and_lost_creates_are_ours_and_the_rest_is_not() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let w = written.clone();
        let ledger =
            SessionLedger::persisted(Ledger::default(), move |l| w.lock().unwrap().push(l.clone()));
        let a = ledger.create_sent(Duration::from_secs(30));
        assert_eq!(
            written.lock().unwrap().last().unwrap().unanswered,
            [a],
            "written before the call"
        );
        ledger.created(a, "aps1");
        assert_eq!(ledger.owner("aps1", None), Owner::Us);
        assert!(ledger.snapshot().unanswered.is_empty());
        // A create whose answer was lost: a session created within its window is ours, once.
        let lost = ledger.create_sent(Duration::from_secs(30));
        let foreign_time = lost.sent_at - chrono::TimeDelta::minutes(10);
        assert_eq!(ledger.owner("aps-admin", Some(foreign_time)), Owner::Other);
        assert_eq!(ledger.owner("aps-admin", None), Owner::Other);
        let in_window = lost.sent_at + chrono::TimeDelta::seconds(5);
        assert_eq!(ledger.owner("aps2", Some(in_window)), Owner::UsByTime(lost));
        assert_eq!(ledger.owner("aps2", None), Owner::Us, "now known");
        assert_eq!(ledger.owner("aps3", Some(in_window)), Owner::Other, "one create, one session");
        // A refused create opens no window.
        let refused = ledger.create_sent(Duration::from_secs(30));
        ledger.not_created(refused);
        assert_eq!(ledger.owner("aps4", Some(refused.sent_at)), Owner::Other);
        // The written record reads back as the same ledger.
        let last = written.lock().unwrap().last().unwrap().clone();
        let text = serde_json::to_string(&last).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), ledger.snapshot());
    }
}
