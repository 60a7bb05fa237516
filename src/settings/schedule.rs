//! A job's `schedule`, parsed once when the config is loaded (croner), in the job's
//! `timezone`. The daemon fires it, the
//! monitoring page shows its next time, and missed runs are found from it: all with this one
//! value.

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// A job's parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    /// The expression with seconds (`0 */15 * * * *`).
    pub expression: String,
    /// The expression as the config wrote it (what the monitoring page shows).
    pub written: String,
    pub timezone: Tz,
}

/// Why a schedule could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron expression `{expr}`: {message}")]
pub struct ScheduleError {
    pub expr: String,
    pub message: String,
}

impl Schedule {
    /// Parse a 5-field (minute first) or 6-field (seconds first) cron expression.
    pub fn parse(expr: &str, timezone: Tz) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        let expression =
            if fields == 5 { format!("0 {}", expr.trim()) } else { expr.trim().to_string() };
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&expression)
            .map_err(|e| ScheduleError { expr: expr.to_string(), message: e.to_string() })?;
        Ok(Self { cron, expression, written: expr.trim().to_string(), timezone })
    }

    /// The first scheduled time strictly after `t`: what fires, and what the monitoring page
    /// shows as the next run.
    ///
    /// The expression is matched against the local wall-clock time, then the local time is
    /// placed on the timeline, so each local time runs once across daylight saving: one that
    /// does not exist (the hour skipped in spring) runs at the first instant after it, and one
    /// that happens twice (the hour repeated in autumn) at its first occurrence only.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = t.with_timezone(&self.timezone).naive_local();
        // Local times already behind `t` (the repeated hour's) are passed over: at most an
        // hour of them, one per second.
        for _ in 0..=3_601 {
            let next = self.cron.find_next_occurrence(&local.and_utc(), false).ok()?.naive_utc();
            let at = self.instant_of(next);
            if at > t {
                return Some(at);
            }
            local = next;
        }
        None
    }

    /// Where the local time `local` is on the timeline: its first occurrence, or for a local
    /// time that does not exist, the first instant after the gap.
    fn instant_of(&self, local: NaiveDateTime) -> DateTime<Utc> {
        use chrono::{LocalResult, TimeZone, Timelike};
        match self.timezone.from_local_datetime(&local) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
            LocalResult::None => {
                // Transitions fall on whole minutes: the first minute that exists is the gap's
                // end. A gap lasts hours at most (a day, once, in Samoa).
                let mut minute = local.with_second(0).unwrap_or(local);
                for _ in 0..2 * 24 * 60 {
                    minute += chrono::Duration::minutes(1);
                    if let Some(at) = self.timezone.from_local_datetime(&minute).earliest() {
                        return at.with_timezone(&Utc);
                    }
                }
                local.and_utc()
            }
        }
    }

    /// The time between the next two scheduled times after `t` (what "twice the schedule"
    /// means for an alert).
    pub fn interval_after(&self, t: DateTime<Utc>) -> Option<std::time::Duration> {
        let first = self.next_after(t)?;
        let second = self.next_after(first)?;
        (second - first).to_std().ok()
    }

    /// The last scheduled time at or before `t` (at most a year back), to tell a run missed
    /// while the daemon was down.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // As `next_after`, backwards: local times matched, then placed on the timeline.
        let mut local = t.with_timezone(&self.timezone).naive_local();
        let mut inclusive = true;
        for _ in 0..=3_601 {
            let prev =
                self.cron.find_previous_occurrence(&local.and_utc(), inclusive).ok()?.naive_utc();
            let at = self.instant_of(prev);
            if at <= t {
                return Some(at).filter(|d| t - *d < chrono::Duration::days(366));
            }
            local = prev;
            inclusive = false;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn paris(expr: &str) -> Schedule {
        Schedule::parse(expr, "Europe/Paris".parse().unwrap()).unwrap()
    }

    #[test]
    fn a_time_skipped_in_spring_runs_at_the_first_instant_after_it() {
        // 29 March 2026: 02:00 CET does not exist; 03:00 CEST (01:00 UTC) is the next instant.
        let s = paris("30 2 * * *");
        assert_eq!(s.next_after(utc(2026, 3, 28, 12, 0)), Some(utc(2026, 3, 29, 1, 0)));
        assert_eq!(s.next_after(utc(2026, 3, 29, 1, 0)), Some(utc(2026, 3, 30, 0, 30)));
    }

    #[test]
    fn a_time_repeated_in_autumn_runs_once() {
        // 25 October 2026: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
        let s = paris("30 2 * * *");
        assert_eq!(s.next_after(utc(2026, 10, 24, 12, 0)), Some(utc(2026, 10, 25, 0, 30)));
        assert_eq!(s.next_after(utc(2026, 10, 25, 0, 30)), Some(utc(2026, 10, 26, 1, 30)));
        // Every 20 minutes: the repeated hour's second pass is skipped as well.
        let s = paris("*/20 * * * *");
        assert_eq!(s.next_after(utc(2026, 10, 25, 0, 40)), Some(utc(2026, 10, 25, 2, 0)));
        // Asked during the second pass: the day's run is behind, the next is tomorrow.
        let s = paris("30 2 * * *");
        assert_eq!(s.next_after(utc(2026, 10, 25, 1, 10)), Some(utc(2026, 10, 26, 1, 30)));
        assert_eq!(s.last_at_or_before(utc(2026, 10, 25, 1, 40)), Some(utc(2026, 10, 25, 0, 30)));
    }

    #[test]
    fn the_last_time_before_is_where_it_fired() {
        let s = paris("30 2 * * *");
        // After the spring gap: it fired at the gap's end.
        assert_eq!(s.last_at_or_before(utc(2026, 3, 29, 1, 5)), Some(utc(2026, 3, 29, 1, 0)));
        assert_eq!(s.last_at_or_before(utc(2026, 3, 29, 0, 55)), Some(utc(2026, 3, 28, 1, 30)));
        assert_eq!(s.last_at_or_before(utc(2026, 3, 28, 1, 30)), Some(utc(2026, 3, 28, 1, 30)));
    }
}
