//! Fault injection: randomised trials that break things the way production does, then check
//! that xaas never lost, double-sent or wrongly deactivated an identity.
//!
//! Each trial (one seed) imports a random population into the emulator in four versions of the
//! source (the initial load, then two rounds of leavers, status flips, profile changes and
//! joiners, then a small delta of at most 20 changes). Two jobs read the same source: `hr` maps
//! people into groups by city, into one identity source, through sessions; `hr-direct` maps
//! them without groups into another, so its small delta goes through Okta's direct endpoints
//! (no session: `PUT`, `POST`, `DELETE` one user at a time) under the same faults. Every
//! attempt at a version may get, at random:
//!
//! - an emulator fault plan: 429 storms, 5xx (with or without the load applied), answers
//!   delayed past the client's timeout, dropped connections;
//! - a SIGKILL of `xaas run` at a random moment;
//! - a source fault: an HTTP 500 in the middle of the pagination, or the DynamoDB endpoint going
//!   away in the middle of a scan (a proxy in front of dynalite that stops forwarding).
//!
//! Attempts repeat until one succeeds (the faults stop after a few). Then the trial checks:
//! the emulator holds exactly the source's state (status and profile of every user, and the
//! members of each job group: people are grouped by city, which the changes move), no
//! session carried an externalId twice and no other rule was broken (a direct create of a user
//! Okta has is one), no session is left open, nobody who stayed active was ever deactivated on
//! the way, and one more clean run sends nothing at all; all of it in both identity
//! sources. The small delta also creates no session in `hr-direct`'s and writes nobody
//! outside it there.
//!
//! `XAAS_CHAOS_VERBOSE=1` prints each attempt's faults so far, exit code and full log.
//! `XAAS_CHAOS_TRIALS` (default 5, CI) and `XAAS_CHAOS_SEED` (the first seed; default from
//! the clock) choose the trials; the seed of a failing trial is printed so it can be replayed:
//! `XAAS_CHAOS_SEED=<seed> XAAS_CHAOS_TRIALS=1 cargo test --test chaos -- --nocapture`.
//! `bench/chaos.sh` runs 50.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use common::config::{TestConfig, job_with_source};
use common::{Person, SOURCE, TOKEN};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use xaas::sim::{Fault, FaultPlan, FaultRule, SimHandle};

/// The identity source of the `hr-direct` job (no groups: its small deltas go direct).
const DIRECT_SOURCE: &str = "0oasim0000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_trials_never_lose_duplicate_or_wrongly_deactivate() {
    let trials: u64 =
        std::env::var("XAAS_CHAOS_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let first: u64 =
        std::env::var("XAAS_CHAOS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        });
    let dynamodb = std::env::var("XAAS_TEST_DYNAMODB_ENDPOINT").ok();
    if dynamodb.is_none() && std::env::var("CI").is_ok() {
        panic!("XAAS_TEST_DYNAMODB_ENDPOINT is not set: run the tests through tests/run");
    }
    println!(
        "chaos: {trials} trial(s) from seed {first} (replay one: XAAS_CHAOS_SEED=<seed> XAAS_CHAOS_TRIALS=1); dynamodb: {}",
        dynamodb.as_deref().unwrap_or("not available, DynamoDB trials become CSV")
    );
    let started = Instant::now();
    let mut faults = Tally::default();
    for seed in first..first + trials {
        let t = Instant::now();
        match trial(seed, dynamodb.as_deref()).await {
            Ok(tally) => {
                println!(
                    "chaos: seed {seed} ok in {:.1} s ({} attempts: {})",
                    t.elapsed().as_secs_f64(),
                    tally.attempts,
                    tally.describe()
                );
                faults.add(&tally);
            }
            Err(e) => panic!(
                "chaos: trial with seed {seed} FAILED: {e}\nreplay: XAAS_CHAOS_SEED={seed} XAAS_CHAOS_TRIALS=1 cargo test --test chaos -- --nocapture"
            ),
        }
    }
    println!(
        "chaos: {trials} trial(s) passed in {:.0} s; {} attempts in all: {}",
        started.elapsed().as_secs_f64(),
        faults.attempts,
        faults.describe()
    );
}

/// What a trial's attempts went through.
#[derive(Debug, Default)]
struct Tally {
    attempts: u32,
    by_kind: BTreeMap<&'static str, u32>,
}

impl Tally {
    fn note(&mut self, kind: &'static str) {
        *self.by_kind.entry(kind).or_default() += 1;
    }
    fn add(&mut self, other: &Tally) {
        self.attempts += other.attempts;
        for (k, v) in &other.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
    }
    fn describe(&self) -> String {
        self.by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SourceKind {
    Csv,
    Http,
    DynamoDb,
}

/// The people of one version of the source, by index.
type Population = BTreeMap<usize, Person>;

async fn trial(seed: u64, dynamodb: Option<&str>) -> Result<Tally, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    // Okta's 5 minutes take 0.3 s (emulator ×1000, client spacing 0.3 s; a session expires
    // after 86 s instead of 24 h); each call takes a few milliseconds, so a kill lands anywhere
    // in a run.
    let sim = {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let config = xaas::sim::SimConfig {
            clock_scale: 1000.0,
            processing_delay: Duration::from_millis(rng.random_range(5..60)),
            latency: Duration::from_millis(rng.random_range(1..15)),
            identity_sources: vec![SOURCE.into(), DIRECT_SOURCE.into()],
            ..xaas::sim::SimConfig::default()
        };
        xaas::sim::spawn(config, listener).await.map_err(|e| e.to_string())?
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kind = match rng.random_range(0..10) {
        0..=3 => SourceKind::Csv,
        4..=6 => SourceKind::Http,
        _ if dynamodb.is_some() => SourceKind::DynamoDb,
        _ => SourceKind::Csv,
    };
    let http = HttpSource::start().await;
    let proxy = match (kind, dynamodb) {
        (SourceKind::DynamoDb, Some(endpoint)) => Some(Proxy::start(endpoint).await),
        _ => None,
    };
    // Unique per run: a replayed seed must not find the last run's table.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let table = format!("chaos_{seed}_{}_{nanos}", std::process::id());
    if let Some(p) = &proxy {
        create_table(&p.direct, &table).await?;
    }
    let csv = dir.path().join("people.csv");
    let config = write_config(dir.path(), &sim, kind, &csv, &http.base, proxy.as_ref(), &table);

    let mut population: Population = BTreeMap::new();
    let mut next_index = 0usize;
    let n = rng.random_range(100..1_500);
    for _ in 0..n {
        let active = rng.random_bool(0.9);
        population.insert(next_index, Person::generate(next_index, active));
        next_index += 1;
    }
    let mut previous: Option<Population> = None;
    // Sessions opened by a held create, open at the end of the previous version.
    let mut strays: Vec<String> = Vec::new();
    for version in 0..4 {
        let mut small = None;
        if version == 3 {
            small = Some(mutate_small(&mut rng, &mut population, &mut next_index));
        } else if version > 0 {
            mutate(&mut rng, &mut population, &mut next_index, version);
        }
        publish(kind, &population, &csv, &http, proxy.as_ref(), &table).await?;
        let before = sim.snapshot();
        let late =
            converge(&mut rng, &sim, &config, dir.path(), kind, &http, proxy.as_ref(), &mut tally)
                .await
                .map_err(|e| format!("version {version}: {e}"))?;
        // A request the last attempts gave up on (an answer delayed past the timeout) may
        // still reach Okta's processing: let it land in this version, whose faults explain it,
        // rather than in the next one's window.
        if !sim.settle(Duration::from_secs(15)).await {
            return Err(format!(
                "version {version}: the emulator still handles {} request(s) 15 s after the run",
                sim.requests_in_flight()
            ));
        }
        check(&sim, &population, previous.as_ref(), &before, late)
            .map_err(|e| format!("version {version} ({kind:?} source): {e}"))?;
        check_users(&sim.snapshot(), DIRECT_SOURCE, &population, previous.as_ref(), &before)
            .map_err(|e| format!("version {version} ({kind:?} source, hr-direct): {e}"))?;
        if let Some(changed) = &small {
            check_direct(&sim.snapshot(), &before, changed).map_err(|e| {
                format!("version {version}, the small delta ({kind:?} source): {e}")
            })?;
        }
        // Converged: one more clean run sends nothing.
        let sessions = sim.snapshot().sessions.len();
        let (code, log) = run_xaas(&config, dir.path(), None).await;
        if code != Some(0) {
            return Err(format!("version {version}: a clean rerun exited {code:?}:\n{log}"));
        }
        let after = sim.snapshot().sessions.len();
        if after != sessions {
            return Err(format!(
                "version {version}: a rerun after convergence created {} session(s): something was sent twice",
                after - sessions
            ));
        }
        // Open sessions now: only strays a held create opened after its run gave up on it
        // (after the session that replaced it was done, so no rule stopped it). A run with
        // nothing to send makes no Okta call, so they stay until the next run with changes
        // cancels them as stale: checked at the end of the next version.
        let snap = sim.snapshot();
        let open = snap
            .sessions
            .iter()
            .filter(|s| matches!(s.status.as_str(), "CREATED" | "IN_PROGRESS" | "TRIGGERED"));
        let (held, ours): (Vec<_>, Vec<_>) = open.partition(|s| s.created_by_held_request);
        if !ours.is_empty() {
            let ours: Vec<_> = ours.iter().map(|s| (&s.id, s.status)).collect();
            return Err(format!("version {version}: sessions open after the rerun: {ours:?}"));
        }
        if let Some(id) = strays.iter().find(|id| held.iter().any(|s| &&s.id == id)) {
            return Err(format!(
                "version {version}: the stray session {id} of the previous version is still open"
            ));
        }
        strays = held.iter().map(|s| s.id.clone()).collect();
        previous = Some(population.clone());
    }
    Ok(tally)
}

/// Leavers, status flips, profile changes and joiners.
fn mutate(rng: &mut StdRng, population: &mut Population, next_index: &mut usize, version: u32) {
    let keys: Vec<usize> = population.keys().copied().collect();
    for k in keys {
        let roll: f64 = rng.random();
        if roll < 0.06 {
            population.remove(&k);
        } else if roll < 0.10 {
            let p = population.get_mut(&k).expect("key from the map");
            p.active = !p.active;
        } else if roll < 0.20 {
            let p = population.get_mut(&k).expect("key from the map");
            p.city = format!("Ciudad {version}-{}", rng.random_range(0..1000));
        }
    }
    for _ in 0..rng.random_range(0..20) {
        population.insert(*next_index, Person::generate(*next_index, true));
        *next_index += 1;
    }
}

/// A small delta: 1 to 14 active people get a new title, up to 3 leave (inactive) and up to
/// 3 join; at most 20 users, under `direct_max_changes` (25 by default). `hr-direct` has no
/// groups, so it sends them through the direct endpoints; `hr` moves memberships, so it
/// uses sessions. Returns the externalIds changed.
fn mutate_small(
    rng: &mut StdRng,
    population: &mut Population,
    next_index: &mut usize,
) -> Vec<String> {
    let active: Vec<usize> = population.iter().filter(|(_, p)| p.active).map(|(k, _)| *k).collect();
    let mut changed = Vec::new();
    for _ in 0..rng.random_range(1..=14usize).min(active.len()) {
        let p = population.get_mut(&active[rng.random_range(0..active.len())]).expect("a key");
        p.title = format!("Title {}", rng.random_range(0..1_000_000));
        changed.push(p.id.clone());
    }
    for _ in 0..rng.random_range(0..=3usize).min(active.len()) {
        let p = population.get_mut(&active[rng.random_range(0..active.len())]).expect("a key");
        p.active = false;
        changed.push(p.id.clone());
    }
    for _ in 0..rng.random_range(0..=3) {
        let p = Person::generate(*next_index, true);
        changed.push(p.id.clone());
        population.insert(*next_index, p);
        *next_index += 1;
    }
    changed.sort();
    changed.dedup();
    changed
}

/// `hr-direct`'s small delta went without a session and wrote only its own people (at least once each:
/// a kill between Okta's answer and the state's confirmation sends a user again, which a
/// `PUT` makes harmless).
fn check_direct(
    snap: &xaas::sim::SimSnapshot,
    before: &xaas::sim::SimSnapshot,
    changed: &[String],
) -> Result<(), String> {
    let sessions = |s: &xaas::sim::SimSnapshot| {
        s.sessions.iter().filter(|s| s.identity_source_id == DIRECT_SOURCE).count()
    };
    if sessions(snap) != sessions(before) {
        return Err(format!(
            "{} session(s) for {} change(s): the direct path was not used",
            sessions(snap) - sessions(before),
            changed.len()
        ));
    }
    let was: HashMap<&str, u32> = before
        .users
        .iter()
        .filter(|u| u.identity_source_id == DIRECT_SOURCE)
        .map(|u| (u.external_id.as_str(), u.imports))
        .collect();
    for u in snap.users.iter().filter(|u| u.identity_source_id == DIRECT_SOURCE) {
        let then = was.get(u.external_id.as_str()).copied().unwrap_or(0);
        let ours = changed.binary_search(&u.external_id).is_ok();
        if ours && u.imports == then {
            return Err(format!("{} changed but was never written", u.external_id));
        }
        if !ours && u.imports != then {
            return Err(format!("{} did not change but was written", u.external_id));
        }
    }
    Ok(())
}

/// Repeat `xaas run` under random faults until an attempt succeeds.
#[allow(clippy::too_many_arguments)]
async fn converge(
    rng: &mut StdRng,
    sim: &SimHandle,
    config: &Path,
    dir: &Path,
    kind: SourceKind,
    http: &HttpSource,
    proxy: Option<&Proxy>,
    tally: &mut Tally,
) -> Result<bool, String> {
    let mut log_tail = String::new();
    // After an ambiguous failure (a 5xx, a dropped connection, an answer later than the
    // timeout) the client cannot know whether Okta acted: a load it gave up on may reach Okta
    // after the session was cancelled, and a cancel it retries may find the session already
    // closed. Okta refuses both with a 400 and no data changes; no client can prevent them.
    let mut late = false;
    for attempt in 0..12 {
        tally.attempts += 1;
        // The first attempts are faulty; later ones clean, so every version converges.
        let faulty = attempt < 4 && rng.random_bool(0.8);
        let mut kill_after = None;
        if faulty {
            let plan = match rng.random_range(0..8) {
                0 => {
                    tally.note("429 storm");
                    Some(plan(rng, "*", Some(0.3), Fault::RateLimit { reset_secs: 1 }))
                }
                1 => {
                    tally.note("5xx");
                    let applied = rng.random_bool(0.5);
                    late = true;
                    Some(plan(rng, "*", Some(0.2), Fault::ServerError { status: 502, applied }))
                }
                2 => {
                    tally.note("delay past the timeout");
                    let applied = rng.random_bool(0.5);
                    late = true;
                    let endpoint = [
                        "bulk-upsert",
                        "bulk-delete",
                        "start-import",
                        "create-session",
                        "user-replace",
                        "user-get",
                    ][rng.random_range(0..6)];
                    Some(plan(rng, endpoint, Some(0.6), Fault::Delay { ms: 1_500, applied }))
                }
                3 => {
                    tally.note("dropped connection");
                    let applied = rng.random_bool(0.5);
                    late = true;
                    Some(plan(rng, "*", Some(0.2), Fault::Drop { applied }))
                }
                4 | 5 => {
                    tally.note("SIGKILL");
                    kill_after = Some(Duration::from_millis(rng.random_range(20..600)));
                    None
                }
                _ => match kind {
                    SourceKind::Http => {
                        tally.note("http 500 mid-pagination");
                        http.fail_at_offset(rng.random_range(1..4) * 50);
                        None
                    }
                    SourceKind::DynamoDb => {
                        tally.note("dynamodb gone mid-scan");
                        if let Some(p) = proxy {
                            p.cut_after(rng.random_range(1..4));
                        }
                        None
                    }
                    SourceKind::Csv => {
                        tally.note("SIGKILL");
                        kill_after = Some(Duration::from_millis(rng.random_range(20..600)));
                        None
                    }
                },
            };
            if let Some(p) = plan {
                sim.set_faults(p);
            }
        } else {
            tally.note("clean");
        }
        let (code, log) = run_xaas(config, dir, kill_after).await;
        if std::env::var_os("XAAS_CHAOS_VERBOSE").is_some() {
            let full = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
            println!(
                "chaos: attempt {attempt}: {:?}, kill after {kill_after:?}, exit {code:?}\n{full}",
                tally.by_kind
            );
        }
        sim.clear_faults();
        http.heal();
        if let Some(p) = proxy {
            p.heal();
        }
        if code != Some(0) {
            tally.note("attempt failed or killed");
        }
        match code {
            Some(0) => return Ok(late),
            // Killed, or failed under the faults: try again.
            None | Some(1) => log_tail = log,
            Some(other) => return Err(format!("xaas run exited {other}:\n{log}")),
        }
    }
    Err(format!("did not converge in 12 attempts; last log:\n{log_tail}"))
}

fn plan(rng: &mut StdRng, endpoint: &str, probability: Option<f64>, fault: Fault) -> FaultPlan {
    FaultPlan {
        seed: rng.random(),
        rules: vec![FaultRule { endpoint: endpoint.into(), requests: vec![], probability, fault }],
    }
}

/// `xaas run`; the exit code (`None` when killed) and its stderr.
async fn run_xaas(
    config: &Path,
    dir: &Path,
    kill_after: Option<Duration>,
) -> (Option<i32>, String) {
    let log = dir.join("run.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["run", "--config", config.to_str().expect("utf-8 path")])
        .env("XAAS_TEST_TOKEN", TOKEN)
        .env("XAAS_LOG", "xaas=info")
        .env("AWS_ACCESS_KEY_ID", "chaos")
        .env("AWS_SECRET_ACCESS_KEY", "chaos")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("xaas starts");
    let status = match kill_after {
        Some(after) => match tokio::time::timeout(after, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        },
        None => match tokio::time::timeout(Duration::from_secs(120), child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                None
            }
        },
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = text
        .lines()
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    (status.and_then(|s| s.code()), tail)
}

/// The emulator against the source; `before` is its state when this version was published.
fn check(
    sim: &SimHandle,
    population: &Population,
    previous: Option<&Population>,
    before: &xaas::sim::SimSnapshot,
    late_requests: bool,
) -> Result<(), String> {
    let snap = sim.snapshot();
    let broken: Vec<_> = snap.violations[before.violations.len()..]
        .iter()
        .filter(|v| {
            // A request a fault held on its way met a state its client never saw (e.g. a
            // create the client gave up on, landing within 5 minutes of the session it
            // created instead): the network's doing, recorded as such by the emulator.
            let explained_late = late_requests
                && matches!(v.rule.as_str(), "load_not_open_session" | "cancel_not_open_session");
            // Our create refused because such a held create opened a stray session after
            // `prepare` looked (the client then cancels the stray and creates again).
            let refused_by_stray = v.rule == "session_spacing"
                && snap.sessions.iter().any(|s| {
                    s.created_by_held_request && v.message.contains(&format!("session {} ", s.id))
                });
            !(v.held || explained_late || refused_by_stray)
        })
        .collect();
    if !broken.is_empty() {
        return Err(format!("okta rules broken: {broken:?}"));
    }
    let open: Vec<_> = snap
        .sessions
        .iter()
        // A session a held create opened after its client gave up is not the client's: the
        // next run cancels it (checked after the clean rerun).
        .filter(|s| !s.created_by_held_request)
        .filter(|s| matches!(s.status.as_str(), "CREATED" | "IN_PROGRESS" | "TRIGGERED"))
        .map(|s| (&s.id, s.status.as_str()))
        .collect();
    if !open.is_empty() {
        return Err(format!("sessions left open: {open:?}"));
    }
    check_users(&snap, SOURCE, population, previous, before)?;
    // Memberships follow the source: the active people of each city are its group's members,
    // nobody else; a group nobody derives any more was retired.
    let okta_groups: BTreeMap<String, Vec<String>> = snap
        .groups
        .iter()
        .map(|g| {
            let mut m = g.members.clone();
            m.sort();
            (g.external_id.clone(), m)
        })
        .collect();
    let want = implied_groups(population);
    if okta_groups != want {
        let wrong: Vec<_> = want
            .keys()
            .chain(okta_groups.keys())
            .filter(|k| want.get(*k) != okta_groups.get(*k))
            .take(3)
            .map(|k| {
                let (w, o) = (want.get(k).cloned().unwrap_or_default(), okta_groups.get(k));
                let o = o.cloned().unwrap_or_default();
                let missing: Vec<_> = w.iter().filter(|m| !o.contains(m)).take(3).collect();
                let extra: Vec<_> = o.iter().filter(|m| !w.contains(m)).take(3).collect();
                format!(
                    "{k}: {} member(s) wanted, {} in okta; missing {missing:?}…, extra {extra:?}…",
                    w.len(),
                    o.len()
                )
            })
            .collect();
        return Err(format!("okta's groups differ from the source: {wrong:?}"));
    }
    Ok(())
}

/// The users of one identity source are exactly the source's, and nobody who stayed active
/// was deactivated on the way.
fn check_users(
    snap: &xaas::sim::SimSnapshot,
    source: &str,
    population: &Population,
    previous: Option<&Population>,
    before: &xaas::sim::SimSnapshot,
) -> Result<(), String> {
    let users: HashMap<&str, &xaas::sim::SimUser> = snap
        .users
        .iter()
        .filter(|u| u.identity_source_id == source)
        .map(|u| (u.external_id.as_str(), u))
        .collect();
    let by_id: HashMap<&str, &Person> = population.values().map(|p| (p.id.as_str(), p)).collect();
    for p in population.values() {
        match (p.active, users.get(p.id.as_str())) {
            (true, None) => {
                return Err(format!("{} is active in the source, missing in okta", p.id));
            }
            (true, Some(u)) if u.status != "ACTIVE" => {
                return Err(format!("{} is active in the source, {} in okta", p.id, u.status));
            }
            (true, Some(u)) if u.profile != p.expected_profile() => {
                return Err(format!("{}: okta's profile differs from the source", p.id));
            }
            (false, Some(u)) if u.status != "DEACTIVATED" => {
                return Err(format!("{} is inactive in the source, {} in okta", p.id, u.status));
            }
            _ => {}
        }
    }
    for u in snap.users.iter().filter(|u| u.identity_source_id == source) {
        if !by_id.contains_key(u.external_id.as_str()) && u.status != "DEACTIVATED" {
            return Err(format!("{} left the source but is {} in okta", u.external_id, u.status));
        }
    }
    // Nobody who stayed active was deactivated on the way, not even for a moment.
    if let Some(prev) = previous {
        let was: HashMap<&str, u32> = before
            .users
            .iter()
            .filter(|u| u.identity_source_id == source)
            .map(|u| (u.external_id.as_str(), u.deactivations))
            .collect();
        let stayed = prev
            .values()
            .filter(|p| p.active && by_id.get(p.id.as_str()).is_some_and(|q| q.active));
        for p in stayed {
            let now = users.get(p.id.as_str()).map_or(0, |u| u.deactivations);
            let then = was.get(p.id.as_str()).copied().unwrap_or(0);
            if now != then {
                return Err(format!("{} stayed active in the source but was deactivated", p.id));
            }
        }
    }
    Ok(())
}

/// The group rule the trials add to the seed mapping.
const CITY_GROUPS: &str = "groups:\n  - external_id: \"city-{{ city | lower | replace(' ', '-') }}\"\n    name: \"{{ city }}\"\n";

/// The groups and members the population implies (computed without the mapping code).
fn implied_groups(population: &Population) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in population.values().filter(|p| p.active) {
        let id = format!("city-{}", p.city.to_lowercase().replace(' ', "-"));
        out.entry(id).or_default().push(p.id.clone());
    }
    out.values_mut().for_each(|m| m.sort());
    out
}

/// Both jobs' leavers and safeguards: every change goes (the trials check the result).
const LEAVERS_AND_SAFEGUARDS: &str = "    leavers:\n      deactivate_missing: true\n      missing_runs: 1\n    safeguards:\n      max_deactivations: 1000000\n      max_deactivations_percent: 100\n      max_creations_percent: 100\n      min_source_percent: 0\n      \
     max_membership_removals: 1000000\n      max_membership_removals_percent: 100\n      max_group_deletions: 1000000\n      max_group_deletions_percent: 100\n";

fn write_config(
    dir: &Path,
    sim: &SimHandle,
    kind: SourceKind,
    csv: &Path,
    http: &str,
    proxy: Option<&Proxy>,
    table: &str,
) -> PathBuf {
    let source = match (kind, proxy) {
        (SourceKind::Http, _) => format!(
            "      type: http\n      url: {http}/people\n      records: /results\n      max_retries: 1\n      retry_initial_ms: 5\n      pagination:\n        type: offset\n        limit: 50\n        total: /total\n"
        ),
        (SourceKind::DynamoDb, Some(p)) => format!(
            "      type: dynamodb\n      table: {table}\n      region: us-east-1\n      endpoint_url: {}\n      page_size: 40\n      max_attempts: 2\n",
            p.url
        ),
        _ => format!("      type: csv\n      path: {}\n", csv.display()),
    };
    // The seed mapping plus a group per city: the profile changes below move people between
    // cities, so every version has movers, leavers losing their groups and emptied groups
    // retired, under the same faults.
    let seed = std::fs::read_to_string(common::mapping_path()).expect("the example mapping");
    let mapping = dir.join("mapping.yaml");
    std::fs::write(&mapping, seed.replacen("\ntests:", &format!("\n{CITY_GROUPS}tests:"), 1))
        .expect("write the mapping");
    let mut config = TestConfig::for_run(dir, &sim.base_url());
    config.okta = "  session_spacing_secs: 0.3\n  poll_initial_ms: 20\n  poll_max_secs: 1\n  request_timeout_secs: 1\n  retry_backoff_ms: 20\n  max_rate_limit_wait_secs: 5\n".into();
    config.jobs =
        vec![job_with_source("hr", SOURCE, &source, LEAVERS_AND_SAFEGUARDS).replace(
            &common::mapping_path().display().to_string(),
            &mapping.display().to_string(),
        )];
    // The same people without groups into a second identity source: its small deltas go
    // through the direct endpoints.
    config.jobs.push(job_with_source("hr-direct", DIRECT_SOURCE, &source, LEAVERS_AND_SAFEGUARDS));
    config.write(&dir.join("xaas.yaml"))
}

/// Make `population` the source's content.
async fn publish(
    kind: SourceKind,
    population: &Population,
    csv: &Path,
    http: &HttpSource,
    proxy: Option<&Proxy>,
    table: &str,
) -> Result<(), String> {
    let people: Vec<Person> = population.values().cloned().collect();
    match kind {
        SourceKind::Csv => common::write_csv(csv, &people),
        SourceKind::Http => {
            *http.data.lock().expect("lock") = people.iter().map(Person::json).collect()
        }
        SourceKind::DynamoDb => {
            let p = proxy.ok_or("no dynamodb")?;
            replace_items(&p.direct, table, &people).await?;
        }
    }
    Ok(())
}

// ---- the HTTP source: a real local server, offset/limit pages, a 500 on demand --------------

#[derive(Clone)]
struct HttpSource {
    base: String,
    data: Arc<Mutex<Vec<Value>>>,
    fail_offset: Arc<Mutex<Option<usize>>>,
}

impl HttpSource {
    async fn start() -> Self {
        let me = HttpSource {
            base: String::new(),
            data: Arc::new(Mutex::new(Vec::new())),
            fail_offset: Arc::new(Mutex::new(None)),
        };
        let app =
            axum::Router::new().route("/people", axum::routing::get(people)).with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        HttpSource { base, ..me }
    }
    fn fail_at_offset(&self, offset: usize) {
        *self.fail_offset.lock().expect("lock") = Some(offset);
    }
    fn heal(&self) {
        *self.fail_offset.lock().expect("lock") = None;
    }
}

async fn people(State(s): State<HttpSource>, Query(q): Query<HashMap<String, String>>) -> Response {
    let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(50);
    if s.fail_offset.lock().expect("lock").is_some_and(|f| offset >= f) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "chaos").into_response();
    }
    let data = s.data.lock().expect("lock");
    let page: Vec<Value> = data.iter().skip(offset).take(limit).cloned().collect();
    axum::Json(json!({ "results": page, "total": data.len() })).into_response()
}

// ---- DynamoDB: dynalite behind a proxy that can stop forwarding mid-scan ---------------------

struct Proxy {
    /// The proxy's URL (what xaas uses).
    url: String,
    /// dynalite itself (for setting up the table).
    direct: String,
    /// Connections left before the proxy stops forwarding; `None`: forward everything.
    budget: Arc<Mutex<Option<u32>>>,
}

impl Proxy {
    async fn start(endpoint: &str) -> Self {
        let target = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let budget: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        let b = budget.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let allowed = {
                    let mut b = b.lock().expect("lock");
                    match b.as_mut() {
                        None => true,
                        Some(0) => false,
                        Some(n) => {
                            *n -= 1;
                            true
                        }
                    }
                };
                if !allowed {
                    // The endpoint is gone: the connection dies without an answer.
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { url, direct: endpoint.to_string(), budget }
    }
    /// Forward `n` more connections, then none.
    fn cut_after(&self, n: u32) {
        *self.budget.lock().expect("lock") = Some(n);
    }
    fn heal(&self) {
        *self.budget.lock().expect("lock") = None;
    }
}

async fn dynamo(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "chaos", "chaos", None, None, "chaos",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

async fn create_table(endpoint: &str, table: &str) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let client = dynamo(endpoint).await;
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await
        .map_err(|e| format!("create table: {e:?}"))?;
    common::dynamodb_table_active(&client, table).await
}

/// Make the table hold exactly `people`.
async fn replace_items(endpoint: &str, table: &str, people: &[Person]) -> Result<(), String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = dynamo(endpoint).await;
    let wanted: std::collections::HashSet<&str> = people.iter().map(|p| p.id.as_str()).collect();
    // Delete those no longer there.
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .projection_expression("id")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| format!("scan: {e:?}"))?;
        for item in page.items() {
            if let Some(AttributeValue::S(id)) = item.get("id")
                && !wanted.contains(id.as_str())
            {
                client
                    .delete_item()
                    .table_name(table)
                    .key("id", AttributeValue::S(id.clone()))
                    .send()
                    .await
                    .map_err(|e| format!("delete: {e:?}"))?;
            }
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    for p in people {
        let mut item = HashMap::new();
        if let Value::Object(map) = p.json() {
            for (k, v) in map {
                item.insert(k, AttributeValue::S(v.as_str().unwrap_or_default().to_string()));
            }
        }
        client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| format!("put: {e:?}"))?;
    }
    Ok(())
}
