//! The daemon's scheduling rules in paused tokio time: cron firing, no overlapping imports on
//! an identity source, no pile-up of late runs, and pushed batches queued behind a running
//! import. The queue is the production one; only the runner (what a run does) is a fake that
//! takes a chosen (virtual) time and records when it ran.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xaas::daemon::queue::{PushProgress, RunReason, Runner, SourceQueue};
use xaas::daemon::schedule::{Fired, Schedule, TokioClock, WallClock, run_schedule};
use xaas::settings::MissedRuns;

#[derive(Debug, Clone, PartialEq)]
enum Did {
    Run { job: String, reason: &'static str, start: Duration, end: Duration },
    Push { events: usize, start: Duration },
}

/// A runner whose runs take `run_time` and which counts pushed events.
struct FakeRunner {
    origin: Instant,
    run_time: Duration,
    log: Mutex<Vec<Did>>,
    /// Pending pushed events: (count, urgent).
    pending: Mutex<(usize, bool)>,
    running: Mutex<bool>,
}

impl FakeRunner {
    fn new(run_time: Duration) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            run_time,
            log: Mutex::new(Vec::new()),
            pending: Mutex::new((0, false)),
            running: Mutex::new(false),
        })
    }
    fn store(&self, urgent: bool) {
        let mut p = self.pending.lock().unwrap();
        p.0 += 1;
        p.1 |= urgent;
    }
    fn log(&self) -> Vec<Did> {
        self.log.lock().unwrap().clone()
    }
}

struct Shared(Arc<FakeRunner>);

impl Runner for Shared {
    fn run(&self, _source: &str, job: &str, reason: RunReason) -> BoxFuture<'static, ()> {
        let me = self.0.clone();
        let job = job.to_string();
        Box::pin(async move {
            {
                let mut r = me.running.lock().unwrap();
                assert!(!*r, "two imports overlapped on one identity source");
                *r = true;
            }
            let start = me.origin.elapsed();
            tokio::time::sleep(me.run_time).await;
            let end = me.origin.elapsed();
            *me.running.lock().unwrap() = false;
            me.log.lock().unwrap().push(Did::Run { job, reason: reason.as_str(), start, end });
        })
    }
    fn push(&self, _source: &str) -> BoxFuture<'static, PushProgress> {
        let me = self.0.clone();
        Box::pin(async move {
            assert!(!*me.running.lock().unwrap(), "a push overlapped a run");
            let events = std::mem::take(&mut *me.pending.lock().unwrap()).0;
            let start = me.origin.elapsed();
            me.log.lock().unwrap().push(Did::Push { events, start });
            PushProgress { more: false, retry_after: None }
        })
    }
    fn pending(&self, _source: &str) -> (usize, bool) {
        *self.0.pending.lock().unwrap()
    }
}

/// Fired → queue, as the daemon wires it (jitter aside).
struct ToQueue {
    queue: Arc<SourceQueue>,
    missed: MissedRuns,
    fired: Mutex<Vec<DateTime<Utc>>>,
}

impl Fired for ToQueue {
    fn fire(&self, job: &str, at: DateTime<Utc>) {
        self.fired.lock().unwrap().push(at);
        self.queue.enqueue_run(job, RunReason::Scheduled(at), self.missed);
    }
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

fn start(
    run_time: Duration,
    window: Duration,
) -> (Arc<FakeRunner>, Arc<SourceQueue>, CancellationToken) {
    let runner = FakeRunner::new(run_time);
    let queue = Arc::new(SourceQueue::new("0oaSOURCE", window, 1_000));
    let cancel = CancellationToken::new();
    tokio::spawn(queue.clone().work(Arc::new(Shared(runner.clone())), cancel.clone()));
    (runner, queue, cancel)
}

#[tokio::test(start_paused = true)]
async fn cron_fires_at_each_scheduled_time_in_the_jobs_time_zone() {
    let (_runner, queue, cancel) = start(Duration::from_millis(10), Duration::from_secs(2));
    let sink = Arc::new(ToQueue { queue, missed: MissedRuns::Once, fired: Mutex::new(vec![]) });
    // Every 15 minutes, read in Paris time (UTC+1 in November).
    let schedule = Schedule::parse("*/15 * * * *", "Europe/Paris".parse().unwrap()).unwrap();
    let clock = TokioClock::starting_at(base() + chrono::Duration::seconds(30));
    tokio::spawn(run_schedule(
        "hr".into(),
        schedule,
        Arc::new(clock),
        sink.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let fired = sink.fired.lock().unwrap().clone();
    let want: Vec<DateTime<Utc>> =
        (1..=4).map(|i| base() + chrono::Duration::minutes(15 * i)).collect();
    assert_eq!(fired, want);
    cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_its_interval_never_overlaps_and_late_runs_do_not_pile_up() {
    // Every 10 s, but each run takes 35 s.
    let (runner, queue, cancel) = start(Duration::from_secs(35), Duration::from_secs(2));
    let sink = Arc::new(ToQueue { queue, missed: MissedRuns::Once, fired: Mutex::new(vec![]) });
    let schedule = Schedule::parse("*/10 * * * * *", chrono_tz::UTC).unwrap();
    tokio::spawn(run_schedule(
        "hr".into(),
        schedule,
        Arc::new(TokioClock::starting_at(base())),
        sink.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(205)).await;
    cancel.cancel();
    let fired = sink.fired.lock().unwrap().len();
    let runs: Vec<(Duration, Duration)> = runner
        .log()
        .into_iter()
        .filter_map(|d| match d {
            Did::Run { start, end, .. } => Some((start, end)),
            _ => None,
        })
        .collect();
    assert_eq!(fired, 20, "the schedule kept firing");
    // From 10 s, 35 s runs back to back: 5 complete by 205 s, not 20.
    assert_eq!(runs.len(), 5, "late runs ran once each, never piled up: {runs:?}");
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlapped: {pair:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn missed_skip_drops_firings_while_the_job_runs() {
    let (runner, queue, cancel) = start(Duration::from_secs(35), Duration::from_secs(2));
    let sink = Arc::new(ToQueue { queue, missed: MissedRuns::Skip, fired: Mutex::new(vec![]) });
    let schedule = Schedule::parse("*/10 * * * * *", chrono_tz::UTC).unwrap();
    tokio::spawn(run_schedule(
        "hr".into(),
        schedule,
        Arc::new(TokioClock::starting_at(base())),
        sink.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(200)).await;
    cancel.cancel();
    let runs: Vec<Duration> = runner
        .log()
        .into_iter()
        .filter_map(|d| match d {
            Did::Run { start, .. } => Some(start),
            _ => None,
        })
        .collect();
    // Each run starts on a firing that found the job idle: at 10 s, then at the first firing
    // after each 35 s run (50, 90, 130, 170).
    let secs: Vec<u64> = runs.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, vec![10, 50, 90, 130], "{runs:?}");
}

#[tokio::test(start_paused = true)]
async fn pushed_events_wait_behind_a_running_import_and_go_as_one_batch() {
    let (runner, queue, cancel) = start(Duration::from_secs(30), Duration::from_secs(2));
    queue.enqueue_run("hr", RunReason::Trigger, MissedRuns::Once);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..3 {
        runner.store(false);
        queue.events_stored(false);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    cancel.cancel();
    let log = runner.log();
    assert_eq!(log.len(), 2, "{log:?}");
    let Did::Run { end, .. } = &log[0] else { panic!("{log:?}") };
    let Did::Push { events, start } = &log[1] else { panic!("{log:?}") };
    assert_eq!(*events, 3, "the three events were coalesced into one batch");
    assert!(start >= end, "the batch waited for the running import: {log:?}");
}

#[tokio::test(start_paused = true)]
async fn the_batch_window_coalesces_and_a_termination_flushes_at_once() {
    let (runner, queue, cancel) = start(Duration::from_secs(30), Duration::from_secs(2));
    // Two ordinary events 500 ms apart: one batch, 2 s after the first.
    runner.store(false);
    queue.events_stored(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner.store(false);
    queue.events_stored(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A termination: no window.
    let t0 = runner.origin.elapsed();
    runner.store(true);
    queue.events_stored(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancel.cancel();
    let log = runner.log();
    assert_eq!(
        log,
        vec![
            Did::Push { events: 2, start: Duration::from_secs(2) },
            Did::Push { events: 1, start: t0 },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_termination_goes_ahead_of_waiting_runs_but_never_interrupts_one() {
    let (runner, queue, cancel) = start(Duration::from_secs(30), Duration::from_secs(2));
    queue.enqueue_run("a", RunReason::Trigger, MissedRuns::Once);
    tokio::time::sleep(Duration::from_secs(1)).await;
    queue.enqueue_run("b", RunReason::Trigger, MissedRuns::Once);
    // A second trigger of a waiting job is not queued twice.
    let again = queue.enqueue_run("b", RunReason::Trigger, MissedRuns::Once);
    assert_eq!(again.status, "already_queued");
    runner.store(true);
    queue.events_stored(true);
    tokio::time::sleep(Duration::from_secs(120)).await;
    cancel.cancel();
    let order: Vec<String> = runner
        .log()
        .into_iter()
        .map(|d| match d {
            Did::Run { job, .. } => job,
            Did::Push { .. } => "push".into(),
        })
        .collect();
    assert_eq!(order, vec!["a", "push", "b"]);
}

/// The production firing on the wall clock (so real time, briefly).
#[tokio::test]
async fn the_wall_clock_fires_the_sink_every_second() {
    struct Count(Mutex<Vec<(String, DateTime<Utc>)>>);
    impl Fired for Count {
        fn fire(&self, job: &str, at: DateTime<Utc>) {
            self.0.lock().unwrap().push((job.to_string(), at));
        }
    }
    let sink = Arc::new(Count(Mutex::new(Vec::new())));
    let jobs = vec![("hr".to_string(), Schedule::parse("* * * * * *", chrono_tz::UTC).unwrap())];
    let cancel = CancellationToken::new();
    let loops = xaas::daemon::schedule::start(&jobs, Arc::new(WallClock), sink.clone(), &cancel);
    tokio::time::sleep(Duration::from_millis(3_600)).await;
    cancel.cancel();
    loops.join_all().await;
    let fired = sink.0.lock().unwrap().clone();
    assert!((2..=5).contains(&fired.len()), "{fired:?}");
    assert!(fired.iter().all(|(j, _)| j == "hr"));
}

/// Firings recorded as they come (no queue behind).
struct Record(Mutex<Vec<DateTime<Utc>>>);

impl Fired for Record {
    fn fire(&self, _job: &str, at: DateTime<Utc>) {
        self.0.lock().unwrap().push(at);
    }
}

/// Run the production schedule loops (`schedule::start`) on a paused clock from `from` for
/// `days`; the firings, and whether "next run" (what `/v1/jobs` and `/ui` show, asked a second
/// after each firing) named each firing before it came.
async fn fire_for_days(
    expr: &str,
    zone: &str,
    from: DateTime<Utc>,
    days: i64,
) -> Vec<DateTime<Utc>> {
    let schedule = Schedule::parse(expr, zone.parse().unwrap()).unwrap();
    let sink = Arc::new(Record(Mutex::new(Vec::new())));
    let cancel = CancellationToken::new();
    let clock = TokioClock::starting_at(from);
    let jobs = vec![("hr".to_string(), schedule.clone())];
    let loops = xaas::daemon::schedule::start(&jobs, Arc::new(clock), sink.clone(), &cancel);
    let mut shown = vec![schedule.next_after(from).unwrap()];
    for _ in 0..days * 24 * 60 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let fired = sink.0.lock().unwrap().len();
        if fired == shown.len() {
            // It fired what the page showed; the page now shows the next one.
            use xaas::daemon::schedule::Clock;
            shown.push(schedule.next_after(clock.now()).unwrap());
        }
    }
    cancel.cancel();
    loops.join_all().await;
    let fired = sink.0.lock().unwrap().clone();
    assert_eq!(fired[..], shown[..fired.len()], "the page's next run is when it fired");
    fired
}

/// The local dates of `fired` in `zone`, each once.
fn local_days(fired: &[DateTime<Utc>], zone: &str) -> Vec<chrono::NaiveDate> {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    fired.iter().map(|t| t.with_timezone(&tz).date_naive()).collect()
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn consecutive_days(first: (i32, u32, u32), n: u64) -> Vec<chrono::NaiveDate> {
    let start = chrono::NaiveDate::from_ymd_opt(first.0, first.1, first.2).unwrap();
    start.iter_days().take(n as usize).collect()
}

#[tokio::test(start_paused = true)]
async fn paris_at_two_runs_once_a_day_across_both_transitions() {
    // Spring: on 29 March 2026 02:00 does not exist (01:59:59 CET, then 03:00 CEST).
    let fired = fire_for_days("0 2 * * *", "Europe/Paris", utc(2026, 3, 26, 12, 0), 6).await;
    assert_eq!(local_days(&fired, "Europe/Paris"), consecutive_days((2026, 3, 27), 6));
    assert_eq!(fired[1], utc(2026, 3, 28, 1, 0), "02:00 CET");
    assert_eq!(fired[2], utc(2026, 3, 29, 1, 0), "the first instant after 02:00: 03:00 CEST");
    assert_eq!(fired[3], utc(2026, 3, 30, 0, 0), "02:00 CEST");
    // Autumn: on 25 October 2026 02:00 happens twice (CEST, then CET): once.
    let fired = fire_for_days("0 2 * * *", "Europe/Paris", utc(2026, 10, 22, 12, 0), 6).await;
    assert_eq!(local_days(&fired, "Europe/Paris"), consecutive_days((2026, 10, 23), 6));
    assert_eq!(fired[1], utc(2026, 10, 24, 0, 0), "02:00 CEST");
    assert_eq!(fired[2], utc(2026, 10, 25, 0, 0), "the first 02:00, CEST");
    assert_eq!(fired[3], utc(2026, 10, 26, 1, 0), "02:00 CET");
}

#[tokio::test(start_paused = true)]
async fn new_york_at_half_past_one_runs_once_a_day_across_both_transitions() {
    // Spring: on 8 March 2026 the clock skips 02:00-03:00; 01:30 EST is there as usual.
    let fired = fire_for_days("30 1 * * *", "America/New_York", utc(2026, 3, 5, 12, 0), 6).await;
    assert_eq!(local_days(&fired, "America/New_York"), consecutive_days((2026, 3, 6), 6));
    assert_eq!(fired[2], utc(2026, 3, 8, 6, 30), "01:30 EST");
    assert_eq!(fired[3], utc(2026, 3, 9, 5, 30), "01:30 EDT");
    // Autumn: on 1 November 2026 01:30 happens twice (EDT, then EST): once.
    let fired = fire_for_days("30 1 * * *", "America/New_York", utc(2026, 10, 29, 12, 0), 6).await;
    assert_eq!(local_days(&fired, "America/New_York"), consecutive_days((2026, 10, 30), 6));
    assert_eq!(fired[2], utc(2026, 11, 1, 5, 30), "the first 01:30, EDT");
    assert_eq!(fired[3], utc(2026, 11, 2, 6, 30), "01:30 EST");
}
