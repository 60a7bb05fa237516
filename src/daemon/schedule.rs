//! When each job runs: its cron `schedule`, read in its `timezone`, plus a random `jitter`.
//!
//! In production the firing is done by tokio-cron-scheduler ([`start_cron`]); every firing is
//! handed to [`Fired::fire`], which applies the jitter and puts a run on the job's
//! identity-source queue (where the missed-run policy and the no-overlap rule live, see
//! [`super::queue`]).
//!
//! tokio-cron-scheduler reads the wall clock (`Utc::now()`), which tests cannot pause. So the
//! same [`Fired`] sink can also be driven by [`run_virtual`], a loop over [`Schedule::next_after`]
//! that sleeps on tokio's clock: under `#[tokio::test(start_paused = true)]` a day of cron
//! firings takes milliseconds, and the queue behind it is the production one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

pub use crate::settings::schedule::{Schedule, ScheduleError};

/// Where firings go (the daemon's queues, or a test's recorder).
pub trait Fired: Send + Sync + 'static {
    /// `job` came due at `at` (jitter not yet applied).
    fn fire(&self, job: &str, at: DateTime<Utc>);
}

/// Start tokio-cron-scheduler with one cron job per scheduled job. Firing calls
/// `sink.fire(job, now)`. Shut the returned scheduler down on exit.
pub async fn start_cron(
    jobs: &[(String, Schedule)],
    sink: Arc<dyn Fired>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    for (name, schedule) in jobs {
        let name = name.clone();
        let sink = sink.clone();
        let job = CronJob::new_async_tz(
            schedule.expression.as_str(),
            schedule.timezone,
            move |_id, _scheduler| {
                let sink = sink.clone();
                let name = name.clone();
                Box::pin(async move { sink.fire(&name, Utc::now()) })
            },
        )?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

/// A clock for [`run_virtual`]: `base` plus the tokio time elapsed since `started` (tokio's
/// clock pauses and advances in tests).
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

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        self.base + elapsed
    }

    /// The tokio instant at which the clock reads `t`.
    pub fn instant_at(&self, t: DateTime<Utc>) -> tokio::time::Instant {
        let ahead = (t - self.base).to_std().unwrap_or(Duration::ZERO);
        self.started + ahead
    }
}

/// Fire `job` on `schedule` by tokio's clock until `cancel`: the paused-time twin of
/// [`start_cron`], for tests and the emulator.
pub async fn run_virtual(
    job: String,
    schedule: Schedule,
    clock: TokioClock,
    sink: Arc<dyn Fired>,
    cancel: CancellationToken,
) {
    let mut after = clock.now();
    while let Some(next) = schedule.next_after(after) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(clock.instant_at(next)) => {}
        }
        sink.fire(&job, next);
        after = next;
    }
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
