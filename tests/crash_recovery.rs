//! Crash recovery (issue 6): `xaas run` is killed with SIGKILL at random points of a run,
//! sometimes twice in a row, and the next run to completion must converge on the source
//! exactly, with no externalId ever sent twice in one Okta session.
//!
//! One emulator and one config directory live through every trial, as they would in a real
//! deployment: the source changes a little before each trial (profile updates, terminations,
//! rehires, new hires), so once state and delta uploads exist, the state file kept next to the
//! config matters. Rows are never deleted: today's main does not deactivate a missing row, the
//! delta version will, and this test must hold for both.
//!
//! In some trials part of the trial's changes are undone between the kill and the next run
//! (HR fixing a mistake while xaas was down). The killed run may already have applied them in
//! Okta, so a delta that trusted its state over what Okta may have received would see
//! "unchanged" and skip them: the test would catch that drift.
//!
//! Kill points: each trial draws its delay from its own slice of the expected run time, the
//! slices shuffled, so the trials spread over the whole run (pull, prepare, create, upload,
//! trigger, poll, the spacing wait between the upsert and the deactivation session). The
//! expected run time is measured, not guessed: the first uninterrupted run, then each trial's
//! final run. The phase each kill landed in is read back from the emulator and printed, with
//! a tally at the end; it is not asserted, since it depends on timing.
//!
//! After each trial: the final run exits 0; the emulator's users equal the source (status and
//! profile, from `Person::expected_profile`, independent of the mapping code); no session was
//! ever sent an externalId twice (the emulator's `duplicate_external_id_in_session`, and
//! independently: per session, profiles loaded = distinct users); no session is left CREATED
//! or IN_PROGRESS. Other violations are allowed and printed per trial: a new process does not
//! know when the killed one created its last session, so its first create may meet the
//! 5-minute rule.
//!
//! `XAAS_CRASH_SEED=<n>` reproduces a run's source changes and delays (printed first). Timing
//! still varies, so the phases a seed hits may differ from one machine to another.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Person, SOURCE, TOKEN, read_report, write_config, write_csv};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use xaas::okta::model::SessionStatus;
use xaas::sim::{SimConfig, SimHandle, SimSnapshot};

/// Trials, each with one or two kills and a final run.
const TRIALS: usize = 24;
/// Initial population; every eighth person is a leaver whom Okta still has as active.
const USERS: usize = 2_500;
/// Per-call latency of the emulator.
const LATENCY: Duration = Duration::from_millis(30);
/// How long the emulator takes to process a triggered session.
const PROCESSING: Duration = Duration::from_millis(80);
/// Simulated seconds per real second: Okta's 5 minutes take 300 ms, so the spacing wait
/// between the upsert and the deactivation session is a good part of a run (and gets its
/// share of kills). A restarted debug build needs about as long before its first create, so
/// it seldom meets the 5-minute rule; `okta_lifecycle` tests that path.
const CLOCK_SCALE: f64 = 1_000.0;
/// The client's spacing, in real seconds: 300 s / 1000 plus a margin.
const SPACING_SECS: f64 = 0.31;
/// Changes to the source before each trial.
const UPDATES: usize = 60;
const TERMINATIONS: usize = 8;
const REHIRES: usize = 6;
const NEW_HIRES: usize = 4;
/// Share of trials with a second kill (of the run that recovers from the first).
const DOUBLE_KILL_P: f64 = 0.35;
/// Share of trials where part of the changes are undone after the first kill.
const REVERT_P: f64 = 0.4;
/// Bounds that keep a hung run from hanging the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_next_run_converges() {
    let seed = match std::env::var("XAAS_CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("XAAS_CRASH_SEED must be an unsigned integer"),
        Err(_) => rand::random::<u64>(),
    };
    println!("crash test seed {seed} (XAAS_CRASH_SEED={seed} reproduces it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let sim = start_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("users.csv");
    let config = write_config(dir.path(), &sim.base_url(), &csv, SPACING_SECS, "");
    let mut source = Source::new(USERS);
    for p in source.people.iter().filter(|p| !p.active) {
        // Leavers Okta still has as active, from an earlier import.
        sim.seed_user(SOURCE, &p.id, p.expected_profile(), true);
    }
    source.write(&csv);

    // The first, uninterrupted run: the initial import, and the first estimate of a run's length.
    let baseline = final_run(&sim, &config, dir.path(), "baseline").await;
    check_trial(&sim, &source, "baseline", &[&baseline.log]).await;
    println!("baseline: {} ms, {}", baseline.elapsed.as_millis(), baseline.summary);
    let mut expected_run = baseline.elapsed;

    // Shuffled slices of the expected run time, one per trial.
    let mut strata: Vec<usize> = (0..TRIALS).collect();
    strata.shuffle(&mut rng);
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen_violations = sim.snapshot().violations.len();

    for (trial, &stratum) in strata.iter().enumerate() {
        let name = format!("trial {:02}", trial + 1);
        let before_trial = source.mutate(&mut rng, trial + 1);
        source.write(&csv);

        let mut logs = Vec::new();
        let mut kills = Vec::new();
        let first_delay =
            expected_run.mul_f64((stratum as f64 + rng.random::<f64>()) / TRIALS as f64);
        let kill =
            run_and_kill(&sim, &config, dir.path(), &format!("{name}-kill-1"), first_delay).await;
        logs.push(kill.log.clone());
        kills.push(kill);

        let mut note = String::new();
        if rng.random_bool(REVERT_P) {
            let undone = source.revert_some(&mut rng, &before_trial);
            source.write(&csv);
            note.push_str(&format!(", {undone} changes undone after the kill"));
        }
        if rng.random_bool(DOUBLE_KILL_P) {
            let delay = expected_run.mul_f64(rng.random::<f64>());
            let kill =
                run_and_kill(&sim, &config, dir.path(), &format!("{name}-kill-2"), delay).await;
            logs.push(kill.log.clone());
            kills.push(kill);
        }

        let killed: Vec<String> =
            kills.iter().map(|k| format!("{} ms [{}]", k.delay.as_millis(), k.phase)).collect();
        println!("{name}: killed at {}{note}", killed.join(" then "));
        for k in &kills {
            *tally.entry(k.phase_class.clone()).or_default() += 1;
        }

        let fin = final_run(&sim, &config, dir.path(), &name).await;
        logs.push(fin.log.clone());
        let log_refs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
        check_trial(&sim, &source, &name, &log_refs).await;
        // Each trial's changes are about the same size: its final run predicts the next run.
        expected_run = fin.elapsed;

        let snap = sim.snapshot();
        let violations = count_rules(&snap.violations[seen_violations..]);
        seen_violations = snap.violations.len();
        println!(
            "{name}: converged; final run {} ms, {}; violations {violations:?}",
            fin.elapsed.as_millis(),
            fin.summary,
        );
    }

    println!("kill points by phase: {tally:?}");
    println!("{TRIALS} trials in {:.1} s (seed {seed})", started.elapsed().as_secs_f64());
    sim.shutdown().await;
}

// ----- the emulator and the source --------------------------------------------------------

async fn start_sim() -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = SimConfig {
        clock_scale: CLOCK_SCALE,
        latency: LATENCY,
        processing_delay: PROCESSING,
        // The rate limit is not under test here; a real minute of trials would exceed 600.
        rate_limit_per_minute: 1_000_000,
        ..SimConfig::default()
    };
    xaas::sim::spawn(config, listener).await.expect("spawn emulator")
}

/// The HR source, in file order.
struct Source {
    people: Vec<Person>,
    next_index: usize,
}

impl Source {
    fn new(n: usize) -> Self {
        let people = (0..n).map(|i| Person::generate(i, i % 8 != 3)).collect();
        Self { people, next_index: n }
    }

    fn write(&self, csv: &Path) {
        write_csv(csv, &self.people);
    }

    /// A day of HR changes; returns the changed people as they were, by position.
    ///
    /// Invariants that keep the expected Okta state exact: a profile changes only while the
    /// person is active (a deactivation carries no profile, so Okta keeps the last one sent),
    /// and every person in the file is known to Okta (leavers were seeded, new hires start
    /// active). Nobody changes twice in one trial.
    fn mutate(&mut self, rng: &mut StdRng, trial: usize) -> Vec<(usize, Person)> {
        let mut active: Vec<usize> =
            (0..self.people.len()).filter(|&i| self.people[i].active).collect();
        let mut inactive: Vec<usize> =
            (0..self.people.len()).filter(|&i| !self.people[i].active).collect();
        active.shuffle(rng);
        inactive.shuffle(rng);
        let mut before = Vec::new();
        for (k, &i) in active.iter().take(UPDATES).enumerate() {
            before.push((i, self.people[i].clone()));
            let p = &mut self.people[i];
            p.city = format!("Santa Cruz, T{trial:02}-{k}");
            p.street_number = format!("{}", 1 + (trial * 131 + k) % 9000);
            if k % 3 == 0 {
                p.title = ["Mr", "Ms", "Dr"][(trial + k) % 3].into();
            }
        }
        for &i in active.iter().skip(UPDATES).take(TERMINATIONS) {
            before.push((i, self.people[i].clone()));
            self.people[i].active = false;
        }
        for &i in inactive.iter().take(REHIRES) {
            before.push((i, self.people[i].clone()));
            self.people[i].active = true;
        }
        for _ in 0..NEW_HIRES {
            self.people.push(Person::generate(self.next_index, true));
            self.next_index += 1;
        }
        before
    }

    /// Undo about half of a trial's changes (new hires stay: undoing them deletes rows).
    fn revert_some(&mut self, rng: &mut StdRng, before: &[(usize, Person)]) -> usize {
        let mut undone = 0;
        for (i, old) in before {
            if rng.random_bool(0.5) {
                self.people[*i] = old.clone();
                undone += 1;
            }
        }
        undone
    }
}

// ----- running the binary -----------------------------------------------------------------

fn xaas_run(config: &Path, report: Option<&Path>, log: &Path) -> tokio::process::Command {
    let out = File::create(log).expect("create log");
    let err = out.try_clone().expect("clone log");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_xaas"));
    cmd.arg("run").arg("--config").arg(config);
    if let Some(report) = report {
        cmd.arg("--report").arg(report);
    }
    cmd.env("XAAS_TEST_TOKEN", TOKEN)
        .env("XAAS_LOG", "xaas=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // A panicking test must not leave a run behind.
        .kill_on_drop(true);
    cmd
}

/// A run killed (or, if it was quicker, finished) after `delay`.
struct Kill {
    delay: Duration,
    /// Where it was, read back from the emulator, e.g. `session 1 upload (7 loads)`.
    phase: String,
    /// The same, coarse, for the tally.
    phase_class: String,
    log: PathBuf,
}

async fn run_and_kill(
    sim: &SimHandle,
    config: &Path,
    dir: &Path,
    name: &str,
    delay: Duration,
) -> Kill {
    let log = dir.join(format!("{name}.log"));
    let before = sim.snapshot();
    let mut child = xaas_run(config, None, &log).spawn().expect("spawn xaas");
    let exited = match tokio::time::timeout(delay, child.wait()).await {
        Ok(status) => Some(status.expect("wait for xaas")),
        Err(_) => {
            // SIGKILL: no shutdown path runs, exactly like a crash or an OOM kill.
            child.start_kill().expect("SIGKILL xaas");
            let status = child.wait().await.expect("wait for the killed xaas");
            // It may have exited between the timeout and the signal.
            status.code().map(|_| status)
        }
    };
    if let Some(status) = exited {
        // Not killed: then it was a normal run, and must have succeeded like one.
        assert_eq!(status.code(), Some(0), "{name}: exited on its own, but failed\n{}", tail(&log));
    }
    let after = sim.snapshot();
    let (phase, phase_class) = phase_at_kill(&before, &after, exited);
    Kill { delay, phase, phase_class, log }
}

struct FinalRun {
    elapsed: Duration,
    /// Counts and what it did about stale sessions, from its report.
    summary: String,
    log: PathBuf,
}

/// A run to completion, which must exit 0.
async fn final_run(sim: &SimHandle, config: &Path, dir: &Path, name: &str) -> FinalRun {
    let log = dir.join(format!("{name}-final.log"));
    let report_path = dir.join(format!("{name}-report.json"));
    let started = Instant::now();
    let mut child = xaas_run(config, Some(&report_path), &log).spawn().expect("spawn xaas");
    let status: ExitStatus = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
        Ok(status) => status.expect("wait for xaas"),
        Err(_) => {
            let _ = child.kill().await;
            panic!("{name}: the final run did not finish in {RUN_TIMEOUT:?}\n{}", tail(&log));
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "{name}: the run after the kill failed\n{}\nemulator sessions:\n{}",
        tail(&log),
        sessions_table(&sim.snapshot())
    );
    let report = read_report(&report_path);
    let job = &report["jobs"][0];
    let stale: Vec<String> = job["stale_sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{} {} -> {}",
                        s["action"].as_str().unwrap_or("?"),
                        s["found"],
                        s["final_status"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let spacing_waits: Vec<u64> = job["sessions"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["outcome"]["spacing_wait_ms"].as_u64()).collect())
        .unwrap_or_default();
    let summary = format!(
        "upserted {}, deactivated {}, spacing waits {spacing_waits:?} ms, stale sessions [{}]",
        job["counts"]["upserted"],
        job["counts"]["deactivated"],
        stale.join(", ").replace('"', "")
    );
    FinalRun { elapsed, summary, log }
}

// ----- checks -------------------------------------------------------------------------------

/// Everything a trial must leave behind. Panics with the trial's logs.
async fn check_trial(sim: &SimHandle, source: &Source, name: &str, logs: &[&Path]) {
    // A killed run may have triggered a session the final run did not need to wait for (with
    // delta, it may have had nothing to send); Okta finishes it on its own. Wait for that,
    // bounded: processing is ~100 ms here.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let snap = loop {
        let snap = sim.snapshot();
        if !snap.sessions.iter().any(|s| s.status == SessionStatus::Triggered)
            || Instant::now() > deadline
        {
            break snap;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut problems = Vec::new();
    for s in &snap.sessions {
        if matches!(
            s.status,
            SessionStatus::Created | SessionStatus::InProgress | SessionStatus::Triggered
        ) {
            problems.push(format!("session {} left {}", s.id, s.status));
        }
        let user_profiles: usize = s
            .loads
            .iter()
            .filter(|l| l.kind == "upsert" || l.kind == "delete")
            .map(|l| l.profiles)
            .sum();
        if user_profiles != s.distinct_users {
            problems.push(format!(
                "session {} ({}) was sent {user_profiles} user entries for {} distinct users",
                s.id, s.status, s.distinct_users
            ));
        }
    }
    for v in snap.violations.iter().filter(|v| v.rule == "duplicate_external_id_in_session") {
        problems.push(format!("duplicate externalId in session {:?}: {}", v.session_id, v.message));
    }
    problems.extend(user_mismatches(&snap, &source.people));

    if !problems.is_empty() {
        let mut msg = format!("{name}: did not converge ({} problems)\n", problems.len());
        for p in problems.iter().take(25) {
            msg.push_str(&format!("  - {p}\n"));
        }
        msg.push_str(&format!("emulator sessions:\n{}", sessions_table(&snap)));
        for log in logs {
            msg.push_str(&format!("\n--- {}\n{}", log.display(), tail(log)));
        }
        panic!("{msg}");
    }
}

/// Differences between Okta's users and the source: the same externalIds, each with the
/// source's status and profile.
fn user_mismatches(snap: &SimSnapshot, people: &[Person]) -> Vec<String> {
    let mut problems = Vec::new();
    let users: HashMap<&str, _> = snap.users.iter().map(|u| (u.external_id.as_str(), u)).collect();
    for p in people {
        let Some(u) = users.get(p.id.as_str()) else {
            problems.push(format!("{} is missing from okta", p.id));
            continue;
        };
        let want = if p.active { "ACTIVE" } else { "DEACTIVATED" };
        if u.status != want {
            problems.push(format!("{} is {} in okta, {want} in the source", p.id, u.status));
        }
        let expected = p.expected_profile();
        if u.profile != expected {
            let diff: Vec<String> = expected
                .iter()
                .filter(|(k, v)| u.profile.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: okta {:?}, source {v:?}", u.profile.get(k)))
                .collect();
            problems.push(format!("{} profile differs: {}", p.id, diff.join("; ")));
        }
    }
    if snap.users.len() != people.len() {
        problems.push(format!("okta has {} users, the source {}", snap.users.len(), people.len()));
    }
    problems
}

/// Where a run was when it was killed, from what the emulator saw it do.
fn phase_at_kill(
    before: &SimSnapshot,
    after: &SimSnapshot,
    exited: Option<ExitStatus>,
) -> (String, String) {
    if exited.is_some() {
        return ("finished before the kill".into(), "finished".into());
    }
    let requests = after.requests_total - before.requests_total;
    if requests == 0 {
        return ("start-up or pull, no request yet".into(), "pull".into());
    }
    let new = &after.sessions[before.sessions.len().min(after.sessions.len())..];
    let Some(last) = new.last() else {
        return (
            format!("prepare or spacing wait ({requests} requests)"),
            "prepare/spacing".into(),
        );
    };
    let n = new.len();
    match last.status {
        SessionStatus::Created => (format!("session {n} created, nothing loaded"), "create".into()),
        SessionStatus::InProgress => {
            (format!("session {n} upload ({} loads)", last.loads.len()), "upload".into())
        }
        SessionStatus::Triggered => {
            (format!("session {n} triggered, polling"), "trigger/poll".into())
        }
        SessionStatus::Completed => (
            format!("session {n} completed: last poll or spacing wait before the next"),
            "between sessions".into(),
        ),
        other => (format!("session {n} {other}"), format!("session {other}")),
    }
}

fn count_rules(violations: &[xaas::sim::Violation]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for v in violations {
        *counts.entry(v.rule.clone()).or_default() += 1;
    }
    counts
}

fn sessions_table(snap: &SimSnapshot) -> String {
    snap.sessions
        .iter()
        .map(|s| {
            format!(
                "  {} {:<11} created {} loads {} users {}\n",
                s.id,
                s.status.to_string(),
                s.created,
                s.loads.len(),
                s.distinct_users
            )
        })
        .collect()
}

/// The end of a run's log, for failure messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
