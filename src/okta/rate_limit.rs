//! The rate budget of the client: a fixed ceiling (governor) and pacing on Okta's headers.
//!
//! Two layers, both consulted before every attempt (retries included, since each one costs a
//! request from the same bucket):
//!
//! 1. **A ceiling**, with governor. Either a fixed `requests_per_minute`, or a share of the
//!    org's limit (default 50%, the share Okta gives each token, FACTS §7 / S12). The org's
//!    limit is not configured but learned from `X-Rate-Limit-Limit`, so the ceiling is built
//!    after the first answer and rebuilt if Okta reports another limit.
//! 2. **Pacing** on `X-Rate-Limit-Remaining` / `-Reset`: Okta's counters are shared with every
//!    other client of the org, so the ceiling alone cannot prevent 429s. Once fewer than
//!    [`SLOW_DOWN_BELOW`] of the window's requests remain, requests are spread evenly over the
//!    time left until the reset; when only `reserve` requests remain (as many as we may have
//!    in flight), we wait for the reset instead of spending the last ones. Slowing down costs
//!    seconds; a 429 costs a whole window.
//!
//!
//! The same state bounds how many bulk loads a session keeps in flight ([`RateBudget::width`]):
//! no more than the ceiling releases at once (its burst), and no more than fit before the
//! pacing line of the window. The org's concurrency is [`super::concurrency`]'s.
//!
//! No lock is held across an `.await`: the shared state is read and updated in short critical
//! sections, then the task sleeps on its own.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Start spreading requests once fewer than this share of the window's limit remains.
pub const SLOW_DOWN_BELOW: f64 = 0.25;

/// Two reset times this close are the same window (the headers carry whole seconds, and the
/// answers' `Date`s differ).
const SAME_WINDOW_SLACK: Duration = Duration::from_secs(2);

/// Loads in flight once pacing spreads requests over the window: each waits for its slot
/// anyway, so more would only hold concurrency permits other calls (a termination) need.
const PACED_WIDTH: u32 = 2;

/// The ceiling, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateOptions {
    /// A fixed ceiling in requests per minute. When set, `org_share_percent` is ignored.
    pub requests_per_minute: Option<NonZeroU32>,
    /// Otherwise: this percentage of the org's limit (`X-Rate-Limit-Limit`), 1 to 100.
    pub org_share_percent: u8,
    /// Pace on `X-Rate-Limit-Remaining` (on by default; off only to measure without it).
    pub adaptive: bool,
}

impl Default for RateOptions {
    fn default() -> Self {
        Self { requests_per_minute: None, org_share_percent: 50, adaptive: true }
    }
}

/// What the last answer said about the window.
#[derive(Debug, Default)]
struct Window {
    limit: u32,
    remaining: Option<u32>,
    reset_at: Option<Instant>,
    /// The earliest moment the next paced request may go.
    next_slot: Option<Instant>,
}

/// Shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct RateBudget {
    options: RateOptions,
    /// Requests we may have in flight at once; kept in reserve when pacing.
    reserve: u32,
    fixed: Option<Arc<DefaultDirectRateLimiter>>,
    /// The learned ceiling and the org limit it was built from.
    learned: Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>,
    window: Mutex<Window>,
}

/// The ceiling's burst: ten seconds' worth, enough to start a session's uploads at once, small
/// enough that the minute's budget is not spent in the first second.
fn burst_of(per_minute: NonZeroU32) -> NonZeroU32 {
    NonZeroU32::new((per_minute.get() / 6).max(1)).unwrap_or(NonZeroU32::MIN)
}

fn limiter(per_minute: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
    let quota = Quota::per_minute(per_minute).allow_burst(burst_of(per_minute));
    Arc::new(RateLimiter::direct(quota))
}

/// The ceiling for an org limit of `org_limit` requests per minute and a share in percent.
pub fn share_of(org_limit: u32, percent: u8) -> NonZeroU32 {
    let share = u64::from(org_limit) * u64::from(percent.clamp(1, 100)) / 100;
    NonZeroU32::new(u32::try_from(share).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

impl RateBudget {
    pub(crate) fn new(options: RateOptions, reserve: u32) -> Self {
        Self {
            options,
            reserve,
            fixed: options.requests_per_minute.map(limiter),
            learned: Mutex::new(None),
            window: Mutex::new(Window::default()),
        }
    }

    /// The ceiling in requests per minute, fixed or learned; `None` before the first answer.
    fn ceiling_per_minute(&self) -> Option<NonZeroU32> {
        self.options.requests_per_minute.or_else(|| {
            let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            learned.as_ref().map(|(limit, _)| share_of(*limit, self.options.org_share_percent))
        })
    }

    /// How many bulk loads to keep in flight now, at most `cap` and at least one: see the
    /// module doc.
    pub(crate) fn width(&self, cap: u32) -> u32 {
        let mut width = cap.max(1);
        if let Some(per_minute) = self.ceiling_per_minute() {
            width = width.min(burst_of(per_minute).get());
        }
        if self.options.adaptive {
            let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(remaining), Some(reset_at)) = (w.remaining, w.reset_at)
                && reset_at > Instant::now()
                && w.limit > 0
            {
                let line = (f64::from(w.limit) * SLOW_DOWN_BELOW).ceil() as u32;
                width = width.min(match remaining.checked_sub(line) {
                    Some(above) if above > 0 => above,
                    _ => PACED_WIDTH,
                });
            }
        }
        width.max(1)
    }

    /// The last answer's limit and remaining count, when one carried them.
    pub(crate) fn seen(&self) -> Option<(u32, u32)> {
        let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        (w.limit > 0).then(|| (w.limit, w.remaining.unwrap_or(0)))
    }

    /// Wait until one more request fits the ceiling and the pacing. Returns how long it waited.
    pub(crate) async fn acquire(&self) -> Duration {
        let started = Instant::now();
        let ceiling = self.fixed.clone().or_else(|| {
            let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            learned.as_ref().map(|(_, l)| l.clone())
        });
        if let Some(ceiling) = ceiling {
            ceiling.until_ready().await;
        }
        if self.options.adaptive
            && let Some(at) = self.pace_slot(Instant::now())
        {
            tokio::time::sleep_until(at).await;
        }
        started.elapsed()
    }

    /// When the next request may go, from the last headers; `None` for "now". Reserves the
    /// slot, so concurrent callers are spread rather than released together.
    fn pace_slot(&self, now: Instant) -> Option<Instant> {
        // The reserve never exceeds what we keep in flight: the ceiling's burst.
        let reserve =
            self.ceiling_per_minute().map_or(self.reserve, |c| self.reserve.min(burst_of(c).get()));
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(remaining), Some(reset_at)) = (w.remaining, w.reset_at) else {
            return None;
        };
        if reset_at <= now || w.limit == 0 {
            // The window has passed (or the answer was a concurrency 429 without a limit):
            // nothing known about the new one yet.
            return None;
        }
        if f64::from(remaining) >= f64::from(w.limit) * SLOW_DOWN_BELOW {
            return None;
        }
        let usable = remaining.saturating_sub(reserve);
        if usable == 0 {
            // Wait for the reset (plus a little, for clock skew and rounding), and count the
            // request against the new window so the next callers queue behind it.
            let at = reset_at + Duration::from_millis(rand::random_range(50..=250));
            w.remaining = Some(w.limit.saturating_sub(1));
            w.reset_at = None;
            w.next_slot = Some(at);
            return Some(at);
        }
        let spacing = (reset_at - now) / usable;
        let slot = w.next_slot.map_or(now, |s| s.max(now));
        w.next_slot = Some(slot + spacing);
        // Count the request now; the answer's headers will correct it.
        w.remaining = Some(remaining.saturating_sub(1));
        (slot > now).then_some(slot)
    }

    /// Learn from an answer's `X-Rate-Limit-*` headers. `reset_in` is the time to the reset
    /// as the server sees it (`X-Rate-Limit-Reset − Date`).
    pub(crate) fn observe(
        &self,
        limit: Option<u32>,
        remaining: Option<u32>,
        reset_in: Option<Duration>,
    ) {
        let now = Instant::now();
        if let Some(limit) = limit.filter(|l| *l > 0) {
            if self.fixed.is_none() {
                let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
                if learned.as_ref().is_none_or(|(known, _)| *known != limit) {
                    let ceiling = share_of(limit, self.options.org_share_percent);
                    tracing::debug!(
                        org_limit = limit,
                        ceiling_per_minute = ceiling.get(),
                        "okta rate ceiling set from x-rate-limit-limit"
                    );
                    *learned = Some((limit, limiter(ceiling)));
                }
            }
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            w.limit = limit;
            if let Some(remaining) = remaining {
                // Answers arrive out of order under concurrency; within one window the lowest
                // count is the freshest. One window is one reset time (give or take the
                // headers' whole seconds): a 429 that reset in a second and the next answer
                // counting a fresh minute are two windows, and the 429's zero must not stall
                // the fresh one until its end.
                let same_window = w.reset_at.is_some_and(|r| {
                    r > now
                        && reset_in.is_none_or(|d| {
                            let new = now + d;
                            new.max(r) - new.min(r) <= SAME_WINDOW_SLACK
                        })
                });
                w.remaining = Some(match w.remaining {
                    Some(known) if same_window => known.min(remaining),
                    _ => remaining,
                });
            }
            if let Some(reset_in) = reset_in {
                w.reset_at = Some(now + reset_in);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_of_the_org_limit() {
        assert_eq!(share_of(600, 50).get(), 300);
        assert_eq!(share_of(1200, 25).get(), 300);
        assert_eq!(share_of(1, 50).get(), 1, "never zero");
        assert_eq!(share_of(600, 0).get(), 6, "a 0% share is read as 1%");
    }

    #[tokio::test(start_paused = true)]
    async fn paces_only_when_few_requests_remain() {
        let budget = RateBudget::new(RateOptions::default(), 2);
        // Plenty left: no pacing.
        budget.observe(Some(100), Some(80), Some(Duration::from_secs(30)));
        assert!(budget.pace_slot(Instant::now()).is_none());
        // 12 left of 100, 2 in reserve: 10 usable over 30 s → one every 3 s.
        budget.observe(Some(100), Some(12), Some(Duration::from_secs(30)));
        let now = Instant::now();
        assert!(budget.pace_slot(now).is_none(), "the first goes at once");
        let second = budget.pace_slot(now).expect("paced");
        assert!(second - now >= Duration::from_millis(2900), "{:?}", second - now);
        // Down to the reserve: wait for the reset.
        budget.observe(Some(100), Some(2), Some(Duration::from_secs(20)));
        let at = budget.pace_slot(Instant::now()).expect("waits");
        assert!(at - Instant::now() >= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn learns_the_ceiling_from_the_org_limit() {
        let budget = RateBudget::new(RateOptions::default(), 4);
        budget.observe(Some(600), Some(599), Some(Duration::from_secs(60)));
        let learned = budget.learned.lock().expect("lock");
        assert_eq!(learned.as_ref().map(|(l, _)| *l), Some(600));
        drop(learned);
        // A concurrency 429 reports limit 0: it must not replace the learned limit.
        budget.observe(Some(0), Some(0), Some(Duration::from_secs(1)));
        assert_eq!(budget.learned.lock().expect("lock").as_ref().map(|(l, _)| *l), Some(600));
    }

    #[tokio::test(start_paused = true)]
    async fn the_width_follows_the_budget() {
        let budget = RateBudget::new(RateOptions::default(), 50);
        assert_eq!(budget.width(50), 50, "nothing known yet: the cap");
        // 600/min org, our 50% share: 300/min, a burst of 50.
        budget.observe(Some(600), Some(598), Some(Duration::from_secs(60)));
        assert_eq!(budget.width(75), 50, "the ceiling's burst");
        assert_eq!(budget.width(10), 10, "the cap");
        // 160 left of 600: 10 above the pacing line (150).
        budget.observe(Some(600), Some(160), Some(Duration::from_secs(30)));
        assert_eq!(budget.width(50), 10);
        budget.observe(Some(600), Some(100), Some(Duration::from_secs(30)));
        assert_eq!(budget.width(50), PACED_WIDTH, "paced: a couple in flight");
        // A fixed ceiling of 60/min releases 10 at once.
        let fixed =
            RateOptions { requests_per_minute: NonZeroU32::new(60), ..RateOptions::default() };
        assert_eq!(RateBudget::new(fixed, 50).width(50), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_429_window_does_not_stall_the_next_one() {
        let budget = RateBudget::new(RateOptions::default(), 10);
        // An injected 429: nothing left, reset in 2 s.
        budget.observe(Some(600), Some(0), Some(Duration::from_secs(2)));
        // The next answer counts a fresh minute: 598 left, reset in 60 s.
        budget.observe(Some(600), Some(598), Some(Duration::from_secs(60)));
        assert!(budget.pace_slot(Instant::now()).is_none(), "a fresh window: no wait");
        // Within one window (the same reset, give or take a second) the lowest count wins.
        budget.observe(Some(600), Some(100), Some(Duration::from_secs(59)));
        budget.observe(Some(600), Some(120), Some(Duration::from_secs(60)));
        assert_eq!(budget.window.lock().expect("lock").remaining, Some(100));
    }
}
