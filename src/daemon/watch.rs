//! What a finished run means beyond itself: whether someone should hear about it, and whether
//! the job is quarantined.
//!
//! The one rule, pure (the clock is an argument) and kept in the state as a
//! [`JobWatch`] so a restart, another replica and `xaas approve --resume` all see it:
//!
//! - **Held** (a safeguard held the run): a `held` notice with its counts and the link to
//!   approve it.
//! - **Failing**: after `notify.after_failures` failed runs in a row (default 2), one `failing`
//!   notice per streak, naming the [`FailureKind`], never the error text (it may quote a
//!   record).
//! - **Recovered**: the first run that succeeds after a `failing` notice, or that lifts a
//!   quarantine.
//! - **Quarantined**: `quarantine_after` failed runs in a row of one kind that only a person
//!   can fix ([`FailureKind::is_lasting`]: credentials, scope, identity source, mapping). The
//!   schedule then skips the job until `next_attempt`: twice the schedule's interval at first
//!   (at least 15 minutes), doubling after each failed attempt, up to a day. Transient failures
//!   (5xx, network, 429, the source) keep their schedule. A run that succeeds (a manual one,
//!   or the back-off's attempt), an approval in the UI, or `xaas approve --resume` lifts it.
//!
//! Every kind of notice is throttled to one per job per `notify.throttle_secs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::settings::Job;
use crate::settings::notify::NotifySettings;
use crate::state::{JobWatch, Quarantine, StateError, StateStore};
use crate::sync::FailureKind;
use crate::sync::report::{JobOutcome, JobReport};

/// The shortest back-off of a quarantined job.
pub const MIN_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// The longest: a quarantined job is tried once a day.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Held,
    Failing,
    Recovered,
    Quarantined,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Held => "held",
            NoticeKind::Failing => "failing",
            NoticeKind::Recovered => "recovered",
            NoticeKind::Quarantined => "quarantined",
        }
    }
}

/// One notification, before it is worded for a target: counts, ids and kinds only, never a
/// user, a record or an error text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub job: String,
    pub identity_source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    pub at: DateTime<Utc>,
    /// Failed runs in a row (failing, quarantined).
    #[serde(skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// What kind of failure (failing, quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// A held run: what it would have sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldCounts>,
    /// A quarantined job: when its schedule tries it next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The counts of a held run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldCounts {
    pub deactivations: u64,
    pub creations: u64,
    pub read: u64,
    /// Which safeguards held it (their thresholds and counts; no names).
    pub reasons: Vec<String>,
}

/// What [`after_run`] needs to know of the settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `quarantine_after` (0: never).
    pub quarantine_after: u32,
    /// `notify.after_failures`.
    pub after_failures: u32,
    /// `notify.throttle_secs`.
    pub throttle: Duration,
    /// The job's schedule interval, when it has one (the first back-off is twice it).
    pub interval: Option<Duration>,
}

impl Rules {
    /// The rules of `job` under `notify` (its defaults when there is no `notify:`).
    pub fn of(job: &Job, notify: Option<&crate::settings::notify::NotifySettings>) -> Rules {
        Rules {
            quarantine_after: job.quarantine_after,
            after_failures: notify.map_or(2, |n| n.after_failures),
            throttle: notify.map_or(Duration::from_secs(6 * 3600), |n| n.throttle),
            interval: job.schedule.as_ref().and_then(|s| s.interval_after(Utc::now())),
        }
    }
}

/// Update `watch` for a run that finished with `report` at `now`; the notices to send.
pub fn after_run(
    watch: &mut JobWatch,
    report: &JobReport,
    rules: Rules,
    now: DateTime<Utc>,
) -> Vec<Notice> {
    let notice = |kind| Notice {
        kind,
        job: report.job.clone(),
        identity_source: report.identity_source_id.clone(),
        run_id: report.run_id,
        at: now,
        failures: 0,
        failure: None,
        held: None,
        next_attempt: None,
    };
    let mut out = Vec::new();
    match report.outcome {
        JobOutcome::Success | JobOutcome::CompletedWithRejections => {
            let lifted = watch.quarantine.take().is_some();
            if lifted || std::mem::take(&mut watch.failing_notified) {
                out.push(notice(NoticeKind::Recovered));
            }
            watch.failures = 0;
            watch.lasting_failures = 0;
        }
        JobOutcome::Held => {
            // A safeguard doing its job is not a failure; a quarantine stays until a success.
            watch.failures = 0;
            watch.lasting_failures = 0;
            let hold = report.state_hold().unwrap_or_default();
            out.push(Notice {
                held: Some(HeldCounts {
                    deactivations: hold.deactivations,
                    creations: hold.creations,
                    read: report.counts.read,
                    reasons: hold.reasons,
                }),
                ..notice(NoticeKind::Held)
            });
        }
        // Stopped by a shutdown: says nothing about the job.
        JobOutcome::Failed if report.failure == Some(FailureKind::Shutdown) => {}
        JobOutcome::Failed => {
            let kind = report.failure.unwrap_or(FailureKind::SessionFailed);
            let same = watch.last_failure.as_deref() == Some(kind.as_str());
            watch.failures += 1;
            watch.lasting_failures = match (kind.is_lasting(), same) {
                (false, _) => 0,
                (true, true) => watch.lasting_failures + 1,
                (true, false) => 1,
            };
            watch.last_failure = Some(kind.as_str().to_string());
            let failing = Notice {
                failures: watch.failures,
                failure: Some(kind),
                ..notice(NoticeKind::Failing)
            };
            if watch.failures >= rules.after_failures && !watch.failing_notified {
                watch.failing_notified = true;
                out.push(failing.clone());
            }
            if let Some(q) = &mut watch.quarantine {
                // Another failed attempt: wait twice as long before the next.
                q.backoff_secs = (q.backoff_secs * 2).min(MAX_BACKOFF.as_secs());
                q.next_attempt = now + secs(q.backoff_secs);
            } else if rules.quarantine_after > 0 && watch.lasting_failures >= rules.quarantine_after
            {
                let backoff = first_backoff(rules.interval);
                let q = Quarantine {
                    reason: kind.as_str().to_string(),
                    since: now,
                    next_attempt: now + secs(backoff),
                    backoff_secs: backoff,
                    run: report.run_id,
                };
                out.push(Notice {
                    next_attempt: Some(q.next_attempt),
                    kind: NoticeKind::Quarantined,
                    ..failing
                });
                watch.quarantine = Some(q);
            }
        }
    }
    out.retain(|n| take_throttle(watch, n.kind, rules.throttle, now));
    out
}

/// Whether a notice of `kind` may go now (and if so, its time is recorded).
fn take_throttle(
    watch: &mut JobWatch,
    kind: NoticeKind,
    throttle: Duration,
    now: DateTime<Utc>,
) -> bool {
    let last = watch.notified.get(kind.as_str());
    if last.is_some_and(|t| {
        now.signed_duration_since(*t)
            < chrono::Duration::from_std(throttle).unwrap_or(chrono::Duration::MAX)
    }) {
        tracing::debug!(kind = kind.as_str(), "notification throttled");
        return false;
    }
    watch.notified.insert(kind.as_str().to_string(), now);
    true
}

fn first_backoff(interval: Option<Duration>) -> u64 {
    let doubled = interval.map_or(Duration::from_secs(3600), |i| i * 2);
    doubled.clamp(MIN_BACKOFF, MAX_BACKOFF).as_secs()
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

/// The quarantine that keeps the schedule from running the job at `now`, if any.
pub fn holds_schedule(watch: &JobWatch, now: DateTime<Utc>) -> Option<&Quarantine> {
    watch.quarantine.as_ref().filter(|q| now < q.next_attempt)
}

/// Someone resumed the job (`xaas approve --resume`, or the UI): its schedule runs it again,
/// and failures count afresh. Returns the quarantine lifted, if there was one.
pub fn resume(watch: &mut JobWatch) -> Option<Quarantine> {
    watch.failures = 0;
    watch.lasting_failures = 0;
    watch.quarantine.take()
}

/// After a run of `job` that ended with `report`: its stored [`JobWatch`] updated and the
/// quarantine gauge set; the notices to send. A state failure is logged and the notices still
/// go (unthrottled, at worst one more message).
pub fn record_run(
    store: &mut dyn StateStore,
    job: &Job,
    notify: Option<&NotifySettings>,
    report: &JobReport,
) -> Vec<Notice> {
    let mut watch = store.job_watch(&job.name).unwrap_or_else(|e| {
        tracing::warn!(job = %job.name, error = %e, "cannot read the job's watch record");
        JobWatch::default()
    });
    let was_quarantined = watch.quarantine.is_some();
    let notices = after_run(&mut watch, report, Rules::of(job, notify), Utc::now());
    if let Err(e) = store.set_job_watch(&job.name, &watch) {
        tracing::warn!(job = %job.name, error = %e, "cannot record the job's watch record");
    }
    match (&watch.quarantine, was_quarantined) {
        (Some(q), false) => {
            tracing::warn!(job = %job.name, reason = %q.reason, next_attempt = %q.next_attempt, "job quarantined: its schedule backs off until it is resumed (`xaas approve --job {} --resume`)", job.name)
        }
        (None, true) => tracing::info!(job = %job.name, "quarantine lifted: the run succeeded"),
        _ => {}
    }
    crate::telemetry::set_quarantined(&job.name, watch.quarantine.is_some());
    notices
}

/// The quarantine keeping `job`'s schedule from running it at `now`, if any. When the state
/// cannot be read the run goes ahead (it meets the same state failure and reports it).
pub fn schedule_held_back(
    store: &dyn StateStore,
    job: &str,
    now: DateTime<Utc>,
) -> Option<Quarantine> {
    let watch = store.job_watch(job).ok()?;
    crate::telemetry::set_quarantined(job, watch.quarantine.is_some());
    holds_schedule(&watch, now).cloned()
}

/// Lift `job`'s quarantine (`xaas approve --resume`, the UI): the quarantine lifted, if any.
pub fn resume_job(store: &mut dyn StateStore, job: &str) -> Result<Option<Quarantine>, StateError> {
    let mut watch = store.job_watch(job)?;
    let lifted = resume(&mut watch);
    store.set_job_watch(job, &watch)?;
    crate::telemetry::set_quarantined(job, false);
    Ok(lifted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 2, 0, 0).unwrap() + chrono::Duration::minutes(minute)
    }

    fn report(outcome: JobOutcome, failure: Option<FailureKind>) -> JobReport {
        let mut r = JobReport::named("hr", "0oa1");
        r.outcome = outcome;
        r.failure = failure;
        r.run_id = Some(1);
        r
    }

    const RULES: Rules = Rules {
        quarantine_after: 3,
        after_failures: 2,
        throttle: Duration::ZERO,
        interval: Some(Duration::from_secs(3600)),
    };

    fn kinds(n: &[Notice]) -> Vec<NoticeKind> {
        n.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn failing_once_per_streak_then_recovered() {
        let mut w = JobWatch::default();
        let fail = report(JobOutcome::Failed, Some(FailureKind::PullIncomplete));
        assert!(after_run(&mut w, &fail, RULES, at(0)).is_empty(), "one failure is not yet news");
        assert_eq!(kinds(&after_run(&mut w, &fail, RULES, at(1))), [NoticeKind::Failing]);
        for m in 2..6 {
            assert!(after_run(&mut w, &fail, RULES, at(m)).is_empty(), "once per streak");
        }
        assert!(w.quarantine.is_none(), "a source outage is transient: no quarantine");
        let ok = report(JobOutcome::Success, None);
        assert_eq!(kinds(&after_run(&mut w, &ok, RULES, at(7))), [NoticeKind::Recovered]);
        assert!(after_run(&mut w, &ok, RULES, at(8)).is_empty());
        assert_eq!(w.failures, 0);
    }

    #[test]
    fn lasting_failures_quarantine_and_back_off_doubling_up_to_a_day() {
        let mut w = JobWatch::default();
        let revoked = report(JobOutcome::Failed, Some(FailureKind::OktaCredentials));
        after_run(&mut w, &revoked, RULES, at(0));
        after_run(&mut w, &revoked, RULES, at(60));
        let n = after_run(&mut w, &revoked, RULES, at(120));
        assert_eq!(kinds(&n), [NoticeKind::Quarantined]);
        assert_eq!(n[0].failure, Some(FailureKind::OktaCredentials));
        let q = w.quarantine.clone().unwrap();
        assert_eq!((q.reason.as_str(), q.backoff_secs), ("okta_credentials", 7200));
        assert_eq!(q.next_attempt, at(240));
        assert!(holds_schedule(&w, at(239)).is_some() && holds_schedule(&w, at(240)).is_none());
        let mut backoffs = Vec::new();
        for _ in 0..6 {
            after_run(&mut w, &revoked, RULES, at(240));
            backoffs.push(w.quarantine.as_ref().unwrap().backoff_secs / 3600);
        }
        assert_eq!(backoffs, [4, 8, 16, 24, 24, 24]);
        // A held run (no failure) keeps the quarantine; a resume lifts it without a notice.
        after_run(&mut w, &report(JobOutcome::Held, None), RULES, at(300));
        assert!(w.quarantine.is_some());
        assert!(resume(&mut w).is_some() && holds_schedule(&w, at(300)).is_none());
    }

    #[test]
    fn a_transient_failure_breaks_the_lasting_streak_and_kinds_must_repeat() {
        let mut w = JobWatch::default();
        let revoked = report(JobOutcome::Failed, Some(FailureKind::OktaCredentials));
        let scope = report(JobOutcome::Failed, Some(FailureKind::OktaScope));
        let outage = report(JobOutcome::Failed, Some(FailureKind::OktaUnavailable));
        for r in [&revoked, &revoked, &outage, &revoked, &scope, &scope] {
            after_run(&mut w, r, RULES, at(0));
        }
        assert!(w.quarantine.is_none(), "{w:?}");
        assert_eq!(w.lasting_failures, 2);
        let off = Rules { quarantine_after: 0, ..RULES };
        for _ in 0..10 {
            after_run(&mut w, &scope, off, at(0));
        }
        assert!(w.quarantine.is_none(), "quarantine_after: 0 never quarantines");
    }

    #[test]
    fn each_kind_is_throttled_per_period_and_a_held_run_carries_its_counts() {
        let rules = Rules { throttle: Duration::from_secs(3600), ..RULES };
        let mut w = JobWatch::default();
        let mut held = report(JobOutcome::Held, None);
        held.counts.read = 100;
        held.changes.deactivations = 40;
        held.hold = Some(crate::sync::report::HoldReport {
            breaches: Vec::new(),
            sent: "nothing".into(),
            release: None,
        });
        let n = after_run(&mut w, &held, rules, at(0));
        assert_eq!(n[0].held.as_ref().map(|h| (h.deactivations, h.read)), Some((40, 100)));
        assert!(after_run(&mut w, &held, rules, at(59)).is_empty(), "throttled");
        assert_eq!(after_run(&mut w, &held, rules, at(60)).len(), 1, "a new period");
    }
}
