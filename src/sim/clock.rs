//! The emulator's simulated clock.
//!
//! Okta's session rules are about minutes (the 5-minute rule) and hours (the 24-hour expiry).
//! Tests cannot wait that long, so session timestamps come from a clock that runs
//! `clock_scale` times faster than real time and can be jumped forward by tests.
//! Rate-limit windows deliberately do NOT use this clock: they are real wall-clock windows,
//! because a client's backoff sleeps are real.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// `now = origin + real elapsed × scale + advanced offset`.
#[derive(Debug)]
pub(crate) struct SimClock {
    origin_real: Instant,
    origin_sim: DateTime<Utc>,
    scale: f64,
    offset: Mutex<TimeDelta>,
}

impl SimClock {
    /// A clock starting at the current wall-clock second. A scale that is negative or not a
    /// number would make time run backwards or be undefined; it is treated as 1.0.
    pub(crate) fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale >= 0.0 { scale } else { 1.0 };
        let now = Utc::now();
        // Okta timestamps have second precision; starting on a whole second keeps ours honest.
        let origin_sim = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        Self {
            origin_real: Instant::now(),
            origin_sim,
            scale,
            offset: Mutex::new(TimeDelta::zero()),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let scaled_ms = self.origin_real.elapsed().as_secs_f64() * self.scale * 1000.0;
        // `as` saturates for huge floats, and the checked adds below saturate at the end of time,
        // so no clock_scale can make the emulator panic.
        let elapsed = TimeDelta::try_milliseconds(scaled_ms as i64).unwrap_or(TimeDelta::MAX);
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        self.origin_sim
            .checked_add_signed(elapsed)
            .and_then(|t| t.checked_add_signed(offset))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Jump simulated time forward.
    pub(crate) fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = offset.checked_add(&to_delta(by)).unwrap_or(TimeDelta::MAX);
    }
}

/// std → chrono duration, saturating (a `Duration::MAX` limit means "never").
pub(crate) fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Okta's timestamp format: second precision with a literal `.000Z`.
pub(crate) fn okta_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_time_forward() {
        let clock = SimClock::new(0.0);
        let before = clock.now();
        clock.advance(Duration::from_secs(300));
        assert_eq!(clock.now() - before, TimeDelta::seconds(300));
    }

    #[test]
    fn absurd_scales_do_not_panic() {
        for scale in [f64::NAN, f64::INFINITY, -1.0, f64::MAX] {
            let clock = SimClock::new(scale);
            clock.advance(Duration::MAX);
            let _ = clock.now();
        }
    }

    #[test]
    fn okta_time_has_second_precision() {
        let t = DateTime::from_timestamp(1_778_651_544, 123_000_000).expect("valid timestamp");
        assert_eq!(okta_time(t), "2026-05-13T05:52:24.000Z");
    }
}
