//! The client's concurrency: how many attempts may be in flight at once.
//!
//! Okta limits concurrent requests per org (75 by default, 35 on Integrator Free, FACTS §7),
//! and every other integration of the org and every admin shares them. So the limit is not
//! fixed: it starts at the configured cap (`okta.max_concurrent_requests`, at most Okta's 75)
//! and follows what Okta answers, the way TCP's congestion window or Vector's adaptive request
//! concurrency do:
//!
//! - a **concurrency 429** (`X-Rate-Limit-Limit: 0`) halves the requests we had in flight
//!   (or the limit, if lower), once per round: the other refusals of the same burst (attempts
//!   that started before the limit changed) do not lower it again;
//! - each **2xx** counts towards one more permit, one per `limit` answers, back up to the cap.
//!
//! Every attempt, retries included, takes a permit, so the requests waiting out a concurrency
//! 429 come back no wider than the new limit. Lowering the limit never interrupts an attempt:
//! the permits are retired as they come back ([`Limit::debt`]).

use std::sync::Mutex;

use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

/// The adaptive limit, shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Concurrency {
    cap: u32,
    permits: Semaphore,
    limit: Mutex<Limit>,
}

#[derive(Debug)]
struct Limit {
    /// Attempts allowed in flight now, 1 to `cap`.
    current: u32,
    /// Permits still to retire because the limit fell while they were out.
    debt: u32,
    /// 2xx answers since the limit last grew.
    answers: u32,
    /// Bumped on every decrease, so one burst of refusals halves the limit once.
    round: u64,
    /// Permits out now.
    in_use: u32,
}

/// One attempt's permit: the round it started in, and its permit back to the pool on drop
/// (or retired, if the limit fell meanwhile).
pub(crate) struct Permit<'a> {
    owner: &'a Concurrency,
    permit: Option<SemaphorePermit<'a>>,
    round: u64,
}

impl Concurrency {
    pub(crate) fn new(cap: u32) -> Self {
        let cap = cap.max(1);
        Self {
            cap,
            permits: Semaphore::new(cap as usize),
            limit: Mutex::new(Limit { current: cap, debt: 0, answers: 0, round: 0, in_use: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limit> {
        self.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attempts allowed in flight now.
    pub(crate) fn limit(&self) -> u32 {
        self.lock().current
    }

    /// Wait for a permit.
    pub(crate) async fn acquire(&self) -> Result<Permit<'_>, AcquireError> {
        let permit = self.permits.acquire().await?;
        let mut l = self.lock();
        l.in_use += 1;
        Ok(Permit { owner: self, permit: Some(permit), round: l.round })
    }

    /// Okta refused for concurrency an attempt that started in `round` ([`Permit::round`]):
    /// halve the limit, unless another refusal of the same round already did.
    pub(crate) fn refused(&self, round: u64) {
        let mut l = self.lock();
        if round != l.round {
            return;
        }
        // The refused attempt has usually given its permit back already: count it.
        let lower = (l.current.min(l.in_use + 1) / 2).max(1);
        let retire = l.current - lower;
        l.current = lower;
        l.answers = 0;
        l.round += 1;
        // Retire the free permits now, the rest as they come back.
        let forgotten = self.permits.forget_permits(retire as usize) as u32;
        l.debt += retire - forgotten;
        tracing::info!(limit = lower, "okta's concurrency limit reached: fewer requests in flight");
    }

    /// A 2xx answer: one more permit per `limit` of them, up to the cap.
    pub(crate) fn answered(&self) {
        let mut l = self.lock();
        if l.current >= self.cap {
            return;
        }
        l.answers += 1;
        if l.answers < l.current {
            return;
        }
        l.answers = 0;
        l.current += 1;
        if l.debt > 0 {
            l.debt -= 1;
        } else {
            self.permits.add_permits(1);
        }
    }
}

impl Permit<'_> {
    /// The round the attempt started in.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let mut l = self.owner.lock();
        l.in_use -= 1;
        if l.debt > 0 {
            l.debt -= 1;
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn hold(c: &Concurrency, n: usize) -> Vec<Permit<'_>> {
        futures::future::join_all((0..n).map(|_| c.acquire()))
            .await
            .into_iter()
            .map(|p| p.expect("permit"))
            .collect()
    }

    #[tokio::test]
    async fn a_burst_of_refusals_halves_once_and_answers_win_it_back() {
        let c = Concurrency::new(40);
        let held = hold(&c, 40).await;
        // Thirty refusals of the same burst: one halving.
        for p in &held[..30] {
            c.refused(p.round());
        }
        assert_eq!(c.limit(), 20);
        drop(held);
        assert_eq!(c.permits.available_permits(), 20, "the retired permits are gone");
        // A refusal of the next round, while 9 were out besides the refused one: half of 10.
        let nine = hold(&c, 9).await;
        c.refused(nine[0].round());
        drop(nine);
        assert_eq!((c.limit(), c.permits.available_permits()), (5, 5));
        // Five answers: one more; then 6, 7, … answers for each next one.
        for _ in 0..5 {
            c.answered();
        }
        assert_eq!((c.limit(), c.permits.available_permits()), (6, 6));
        for _ in 0..2000 {
            c.answered();
        }
        assert_eq!(
            (c.limit(), c.permits.available_permits()),
            (40, 40),
            "back to the cap, no further"
        );
    }

    #[tokio::test]
    async fn never_below_one() {
        let c = Concurrency::new(1);
        let p = c.acquire().await.expect("permit");
        c.refused(p.round());
        drop(p);
        assert_eq!((c.limit(), c.permits.available_permits()), (1, 1));
    }
}
