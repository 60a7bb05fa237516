//! Leases: with the DynamoDB state backend, several `xaas serve` replicas share the work, and
//! each identity source is worked by one of them at a time, its lease owner.
//!
//! Every replica serves the webhook and stores events into the shared tables; only the owner
//! of a source runs its queue (scheduled runs, triggers, pushed batches). The loop here, every
//! [`POLL`]:
//!
//! - renews the leases it holds every third of the lease time; a renewal refused (another
//!   replica took the lease after it expired) or not confirmed before two thirds of the lease
//!   have passed since the last successful one ends the *term* (a watchdog timer per term fires
//!   at that instant, not at the next poll): the source's cancellation token fires, so its Okta client stops before its next session create or upload (the importer
//!   cancels the session it had open), and the state refuses its writes (fencing, see
//!   [`crate::state::dynamodb`]). A replica thus gives a source up a third of a lease *before*
//!   anyone else may take it;
//! - tries to take the sources nobody holds (a consistent read first; the conditional write
//!   only when the lease is free or expired): a dead replica's sources move within the lease
//!   time plus a poll per source the taker already holds (replicas holding fewer sources try
//!   first, which spreads the sources over the replicas);
//! - for the sources it owns, wakes their queues when events stored by any replica are
//!   pending (`has_pending`), and runs the triggers other replicas stored for their jobs.
//!
//! With the SQLite backend there is one replica and no lease: every source is always owned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::dynamodb::Dynamo;

/// How often leases are checked, events polled and stored triggers picked up.
pub const POLL: Duration = Duration::from_millis(500);

/// One source this replica holds.
#[derive(Debug)]
struct Held {
    token: u64,
    /// The last successful acquisition or renewal started here.
    renewed: Instant,
    /// Until when the lease is trusted; the term's watchdog cancels it then, to the instant,
    /// unless a renewal moved it.
    trusted_until: Arc<Mutex<Instant>>,
    /// Cancelled when the term ends (lease lost, not renewed in time, or shutdown).
    term: CancellationToken,
}

/// Cancel `term` at `until` (which renewals move), or return once it is cancelled otherwise.
async fn watchdog(term: CancellationToken, until: Arc<Mutex<Instant>>, source: String) {
    loop {
        let deadline = *until.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= deadline {
            warn!(identity_source = %source, "lease not renewed in time: this replica stops working the identity source");
            term.cancel();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = term.cancelled() => return,
        }
    }
}

/// What this replica holds.
pub struct Leases {
    dynamo: Dynamo,
    lease: Duration,
    /// Terms are children of this token (the daemon's Okta shutdown signal).
    parent: CancellationToken,
    held: Mutex<HashMap<String, Held>>,
    /// Polls each free source has been seen free (see [`Leases::tick`]).
    seen_free: Mutex<HashMap<String, usize>>,
}

/// What a tick changed.
#[derive(Debug, Default)]
pub struct Tick {
    /// Sources this replica took.
    pub acquired: Vec<String>,
    /// Sources this replica lost.
    pub lost: Vec<String>,
}

impl Leases {
    pub fn new(dynamo: Dynamo, parent: CancellationToken) -> Self {
        let lease = dynamo.lease_duration();
        Self {
            dynamo,
            lease,
            parent,
            held: Mutex::new(HashMap::new()),
            seen_free: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long after its last renewal a lease is still trusted: two thirds of it, so this
    /// replica stops a third of a lease before another may take over.
    fn trusted(&self) -> Duration {
        self.lease - self.lease / 3
    }

    /// Whether this replica holds `source` now (and may touch Okta for it).
    pub fn holds(&self, source: &str) -> bool {
        self.lock()
            .get(source)
            .is_some_and(|h| !h.term.is_cancelled() && h.renewed.elapsed() < self.trusted())
    }

    /// The cancellation token of the current term on `source`, when held.
    pub fn term(&self, source: &str) -> Option<CancellationToken> {
        if !self.holds(source) {
            return None;
        }
        self.lock().get(source).map(|h| h.term.clone())
    }

    /// The fencing token of the current term on `source`, when held.
    pub fn token(&self, source: &str) -> Option<u64> {
        if !self.holds(source) {
            return None;
        }
        self.lock().get(source).map(|h| h.token)
    }

    /// The sources held.
    pub fn owned(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lose(&self, source: &str, why: &str) {
        if let Some(h) = self.lock().remove(source) {
            h.term.cancel();
            warn!(identity_source = %source, token = h.token, reason = why, "lease lost: this replica stops working the identity source");
        }
        self.dynamo.set_held(source, None);
    }

    /// Renew, take or give up leases on `sources`.
    pub async fn tick(&self, sources: &[String]) -> Tick {
        let mut tick = Tick::default();
        // Sources no longer configured are given up.
        let stale: Vec<String> =
            self.owned().into_iter().filter(|s| !sources.contains(s)).collect();
        for s in stale {
            self.release(&s).await;
        }
        for source in sources {
            let held = self.lock().get(source).map(|h| (h.token, h.renewed));
            match held {
                Some((token, renewed)) => {
                    if renewed.elapsed() >= self.trusted() {
                        self.lose(source, "not renewed in time");
                        tick.lost.push(source.clone());
                        continue;
                    }
                    if renewed.elapsed() < self.lease / 3 {
                        continue;
                    }
                    let started = Instant::now();
                    match self.dynamo.renew(source, token).await {
                        Ok(true) => {
                            if let Some(h) = self.lock().get_mut(source) {
                                h.renewed = started;
                                *h.trusted_until.lock().unwrap_or_else(|e| e.into_inner()) =
                                    started + self.trusted();
                            }
                        }
                        Ok(false) => {
                            self.lose(source, "another replica holds it");
                            tick.lost.push(source.clone());
                        }
                        Err(e) => {
                            warn!(identity_source = %source, error = %e, "cannot renew the lease; retrying")
                        }
                    }
                }
                None => {
                    match self.dynamo.lease_available(source).await {
                        Ok(true) => {}
                        Ok(false) => {
                            self.seen_free.lock().unwrap_or_else(|e| e.into_inner()).remove(source);
                            continue;
                        }
                        Err(e) => {
                            warn!(identity_source = %source, error = %e, "cannot read the lease");
                            continue;
                        }
                    }
                    // Spread the sources: a replica holding n sources waits n polls before
                    // taking a free one, so a replica holding fewer gets there first.
                    let waited = {
                        let mut seen = self.seen_free.lock().unwrap_or_else(|e| e.into_inner());
                        let n = seen.entry(source.clone()).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    if waited < self.lock().len() {
                        continue;
                    }
                    let started = Instant::now();
                    match self.dynamo.acquire(source).await {
                        Ok(Some(token)) => {
                            let term = self.parent.child_token();
                            let trusted_until = Arc::new(Mutex::new(started + self.trusted()));
                            tokio::spawn(watchdog(
                                term.clone(),
                                trusted_until.clone(),
                                source.clone(),
                            ));
                            self.lock().insert(
                                source.clone(),
                                Held { token, renewed: started, trusted_until, term },
                            );
                            self.dynamo.set_held(source, Some(token));
                            self.seen_free.lock().unwrap_or_else(|e| e.into_inner()).remove(source);
                            info!(identity_source = %source, token, replica = %self.dynamo.replica(), "lease acquired: this replica works the identity source");
                            tick.acquired.push(source.clone());
                        }
                        Ok(None) => {}
                        Err(e) => {
                            warn!(identity_source = %source, error = %e, "cannot take the lease")
                        }
                    }
                }
            }
        }
        tick
    }

    /// Give `source` up now (its lease expires at once, so another replica takes over).
    pub async fn release(&self, source: &str) {
        let token = self.lock().get(source).map(|h| h.token);
        self.lose(source, "released");
        if let Some(token) = token
            && let Err(e) = self.dynamo.release(source, token).await
        {
            warn!(identity_source = %source, error = %e, "cannot release the lease; it expires by itself");
        }
    }

    /// Give every lease up (shutdown, after the work in hand is finished).
    pub async fn release_all(&self) {
        for s in self.owned() {
            self.release(&s).await;
        }
    }
}
