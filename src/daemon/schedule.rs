//! When each job runs: its cron `schedule`, read in its `timezone`, plus a random `jitter`.
//!
//! One loop per scheduled job ([`run_schedule`]) asks the job's [`Schedule`] for its next time
//! ([`Schedule::next_after`], which also says what the monitoring page shows as "next run"),
//! sleeps until then on a [`Clock`], and hands the firing to [`Fired::fire`], which applies
//! the jitter and puts a run on the job's identity-source queue (where the missed-run policy
//! and the no-overlap rule live, see [`super::queue`]).
//!
//! In production the clock is the wall clock ([`WallClock`]); tests drive the very same loop on
//! tokio's paused clock ([`TokioClock`]), so a year of firings across both daylight-saving
//! transitions takes milliseconds. (tokio-cron-scheduler fired the schedules before: it keeps
//! the zone's UTC offset from the moment a job is created, so after a DST change its jobs ran
//! an hour off until a restart, mvniekerk/tokio-cron-scheduler#87 and #107, and it reads the
//! wall clock, which a test cannot pause.)

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use crate::settings::schedule::{Schedule, ScheduleError};

/// Where firings go (the daemon's queues, or a test's recorder).
pub trait Fired: Send + Sync + 'static {
    /// `job` came due at `at` (jitter not yet applied).
    fn fire(&self, job: &str, at: DateTime<Utc>);
}

/// What the schedule loops read the time from and sleep on.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Return once the clock reads `t` or later.
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The longest a [`WallClock`] sleeps before looking at the time again, so a clock step (NTP,
/// a suspended VM) delays a firing by at most this much.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(30);

/// The system clock: what production fires by.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let Ok(left) = (t - Utc::now()).to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(WALL_CLOCK_RECHECK)).await;
            }
        })
    }
}

/// A clock on tokio's time: `base` plus the tokio time elapsed since `started` (tokio's clock
/// pauses and advances in tests).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        Self { base, started: tokio::time::Instant::now() }
    }

    /// The tokio instant at which the clock reads `t`.
    pub fn instant_at(&self, t: DateTime<Utc>) -> tokio::time::Instant {
        let ahead = (t - self.base).to_std().unwrap_or(Duration::ZERO);
        self.started + ahead
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        self.base + elapsed
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(self.instant_at(t)))
    }
}

/// Fire `job` on `schedule` by `clock` until `cancel`.
///
/// Each firing is the schedule's next time after the previous one, or after now when the
/// clock jumped past several (a suspended machine): those are one firing, and the queue's
/// missed-run policy decides about the rest.
pub async fn run_schedule(
    job: String,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Fired>,
    cancel: CancellationToken,
) {
    let mut after = clock.now();
    while let Some(next) = schedule.next_after(after) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = clock.sleep_until(next) => {}
        }
        sink.fire(&job, next);
        after = next.max(clock.now());
    }
}

/// One [`run_schedule`] loop per job, on `clock`, until `cancel`.
pub fn start(
    jobs: &[(String, Schedule)],
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Fired>,
    cancel: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut loops = tokio::task::JoinSet::new();
    for (name, schedule) in jobs {
        loops.spawn(run_schedule(
            name.clone(),
            schedule.clone(),
            clock.clone(),
            sink.clone(),
            cancel.clone(),
        ));
    }
    loops
}

/// A random delay in `[0, jitter]`.
pub fn jitter_delay(jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let ms = jitter.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_fields_get_a_zero_second() {
        let s = Schedule::parse("*/15 * * * *", chrono_tz::UTC).unwrap();
        assert_eq!(s.expression, "0 */15 * * * *");
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 7, 30).unwrap();
        assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, 15, 0).unwrap()));
        assert_eq!(
            s.last_at_or_before(t),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap())
        );
    }

    #[test]
    fn time_zone_is_honoured_across_dst() {
        // 02:30 every day in Paris: 01:30 UTC in winter, 00:30 UTC in summer.
        let s = Schedule::parse("0 30 2 * * *", "Europe/Paris".parse().unwrap()).unwrap();
        let winter = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(winter),
            Some(Utc.with_ymd_and_hms(2026, 1, 10, 1, 30, 0).unwrap())
        );
        let summer = Utc.with_ymd_and_hms(2026, 7, 10, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(summer),
            Some(Utc.with_ymd_and_hms(2026, 7, 10, 0, 30, 0).unwrap())
        );
    }

    #[test]
    fn garbage_is_an_error_naming_the_expression() {
        let e = Schedule::parse("every tuesday", chrono_tz::UTC).unwrap_err();
        assert!(e.to_string().contains("every tuesday"), "{e}");
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..100 {
            assert!(jitter_delay(Duration::from_secs(3)) <= Duration::from_secs(3));
        }
        assert_eq!(jitter_delay(Duration::ZERO), Duration::ZERO);
    }
}
