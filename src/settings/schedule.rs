//! A job's `schedule`, parsed once when the config is loaded, by the parser that fires it
//! (croner, as tokio-cron-scheduler does), in the job's `timezone`. The daemon fires it, the
//! monitoring page shows its next time, and missed runs are found from it: all with this one
//! value.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A job's parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    /// The expression with seconds (`0 */15 * * * *`), as tokio-cron-scheduler wants it.
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

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.timezone), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
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
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.timezone), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
            .filter(|d| t - *d < chrono::Duration::days(366))
    }
}
