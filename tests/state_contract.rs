//! The state-store contract: the same test functions run against every backend, the embedded
//! SQLite file and DynamoDB (dynalite, started by `tests/run`, endpoint in
//! `XAAS_TEST_DYNAMODB_ENDPOINT`; under `CI=true` a missing endpoint fails instead of
//! skipping). Every method of `StateStore` and of the webhook `EventStore` is covered: pending
//! and confirm, missing counters, runs, holds and approvals, entries and last run, event
//! appends (durable, idempotent), pending order and the urgent closure, processing and
//! finishing, session times; plus the DynamoDB leases and their fencing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use xaas::settings::DynamoStateSettings;
use xaas::state::dynamodb::{Dynamo, DynamoEventStore, DynamoStore};
use xaas::state::events::{Claim, EventStatus, EventStore, NewEvent, SeenSignature, Stored};
use xaas::state::sqlite::SqliteStore;
use xaas::state::{
    ApprovalRecord, Approver, AttributeChange, Confirmed, Decision, DecisionQuery, DecisionRecord,
    Entry, Hold, JobWatch, Quarantine, SentStatus, StateError, StateStore,
};

/// dynalite's endpoint. Missing: a failure under CI, a skip on a laptop without npm.
fn endpoint() -> Option<String> {
    match std::env::var("XAAS_TEST_DYNAMODB_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("XAAS_TEST_DYNAMODB_ENDPOINT is not set: run the tests through tests/run")
        }
        _ => {
            eprintln!("skipped: XAAS_TEST_DYNAMODB_ENDPOINT is not set (run tests/run)");
            None
        }
    }
}

/// Fresh tables per test: a prefix of its own.
fn dynamo_settings(endpoint: &str) -> DynamoStateSettings {
    static N: AtomicUsize = AtomicUsize::new(0);
    DynamoStateSettings {
        table_prefix: format!(
            "contract_{}_{}_{}_",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            uuid::Uuid::now_v7().simple()
        ),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.to_string()),
        lease: Duration::from_secs(2),
    }
}

fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test");
    let conf = aws_sdk_dynamodb::config::Builder::new()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

fn dynamo(endpoint: &str) -> Dynamo {
    Dynamo::connect(&dynamo_settings(endpoint), Some(client(endpoint))).unwrap()
}

/// Generates `sqlite` and `dynamodb` tests from one sync contract function taking a store.
macro_rules! store_contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                let mut s = SqliteStore::in_memory(true).unwrap();
                super::$name(&mut s);
            }
            #[test]
            fn dynamodb() {
                let Some(e) = endpoint() else { return };
                let mut s = DynamoStore::with(dynamo(&e), true);
                super::$name(&mut s);
            }
        }
    )*};
}

/// The same for the event log (async).
macro_rules! events_contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("state.db");
                let store = EventStore::open(&path).unwrap();
                super::$name(store, &|| EventStore::open(&path).unwrap()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamodb() {
                let Some(e) = endpoint() else { return };
                let settings = dynamo_settings(&e);
                let d = Dynamo::connect(&settings, Some(client(&e))).unwrap();
                let store = EventStore::Dynamo(DynamoEventStore::with(d));
                let reopen = || {
                    let d = Dynamo::connect(&settings, Some(client(&e))).unwrap();
                    EventStore::Dynamo(DynamoEventStore::with(d))
                };
                super::$name(store, &reopen).await;
            }
        }
    )*};
}

store_contract!(
    pending_then_confirmed_then_missing,
    entries_and_profiles,
    runs_holds_and_approvals,
    job_facts,
    memberships_and_owned_groups,
    job_watch_is_kept_per_job_and_replaced_whole,
    run_history_is_listed_newest_first_and_found_by_id,
    decisions_page_changes_first_with_search_filter_and_counts,
    a_pull_is_recorded_page_by_page_over_many_users,
);

events_contract!(
    append_get_pending_finish,
    a_termination_jumps_the_queue_with_every_earlier_event_of_its_users,
    an_idempotency_key_stores_once_per_job,
    appended_events_survive_a_reopen,
    session_activity_is_kept,
    a_signed_message_is_applied_once_across_reopens_and_routes,
    sign_in_records_expire_are_taken_once_and_survive_a_reopen,
);

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn all_entries(store: &dyn StateStore, job: &str) -> Vec<Entry> {
    let mut v = Vec::new();
    store.for_each_entry(job, &mut |e| v.push(e)).unwrap();
    v.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    v
}

fn confirmed(id: &str, status: SentStatus, hash: Option<&str>) -> Confirmed {
    Confirmed {
        external_id: id.into(),
        status,
        hash: hash.map(Into::into),
        profile: hash.map(|h| [("hash".to_string(), h.to_string())].into()),
    }
}

fn pending_then_confirmed_then_missing(s: &mut dyn StateStore) {
    s.mark_pending("hr", &[("a", SentStatus::Active), ("b", SentStatus::Active)], now()).unwrap();
    let e = all_entries(s, "hr");
    assert_eq!(e.len(), 2);
    assert!(e.iter().all(|e| e.status.is_none() && e.owned_active() && e.hash.is_none()));
    s.confirm("hr", &[confirmed("a", SentStatus::Active, Some("h1"))], now()).unwrap();
    let e = all_entries(s, "hr");
    assert_eq!(e[0].status, Some(SentStatus::Active));
    assert_eq!(e[0].pending, None);
    assert_eq!(e[0].hash.as_deref(), Some("h1"));
    assert_eq!(e[1].pending, Some(SentStatus::Active), "b was never confirmed");
    assert_eq!(s.job_state("hr").unwrap().known_active, 1);
    // A leaver's deactivation keeps the hash and the profile.
    s.mark_pending("hr", &[("a", SentStatus::Inactive)], now()).unwrap();
    assert_eq!(all_entries(s, "hr")[0].pending, Some(SentStatus::Inactive));
    s.confirm("hr", &[confirmed("a", SentStatus::Inactive, None)], now()).unwrap();
    let e = all_entries(s, "hr");
    assert_eq!((e[0].status, e[0].pending), (Some(SentStatus::Inactive), None));
    assert_eq!(e[0].hash.as_deref(), Some("h1"));
    assert_eq!(
        s.confirmed_profile("hr", "a").unwrap(),
        Some([("hash".to_string(), "h1".to_string())].into())
    );
    // Missing counters: counted only when asked, reset when present again.
    s.record_pull("hr", &|id| id == "b", true, 1, now()).unwrap();
    s.record_pull("hr", &|id| id == "b", true, 1, now()).unwrap();
    let e = all_entries(s, "hr");
    assert_eq!((e[0].missing_runs, e[1].missing_runs), (2, 0));
    s.record_pull("hr", &|id| id == "b", false, 1, now()).unwrap();
    assert_eq!(all_entries(s, "hr")[0].missing_runs, 2, "not counted");
    // An id of the pull the state does not know is not created by it.
    s.record_pull("hr", &|id| ["a", "b", "zz"].contains(&id), true, 3, now()).unwrap();
    let e = all_entries(s, "hr");
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].missing_runs, e[1].missing_runs), (0, 0));
    let j = s.job_state("hr").unwrap();
    assert_eq!(j.last_pull_users, Some(3));
    assert!(j.last_pull_at.is_some());
    assert_eq!(j.known_active, 0);
    // Another job sees none of it.
    assert!(all_entries(s, "other").is_empty());
    assert_eq!(s.job_state("other").unwrap(), Default::default());
}

/// More users than one page of the streamed pull (1,000 rows on either backend), with ids
/// whose key order is not their number order: every counter lands on the right user.
fn a_pull_is_recorded_page_by_page_over_many_users(s: &mut dyn StateStore) {
    let ids: Vec<String> = (0..2345)
        .map(|i| if i % 7 == 0 { format!("zoë-{i}") } else { format!("user-{i}") })
        .collect();
    let pending: Vec<(&str, SentStatus)> =
        ids.iter().map(|id| (id.as_str(), SentStatus::Active)).collect();
    s.mark_pending("hr", &pending, now()).unwrap();
    let number = |id: &str| -> usize { id.rsplit('-').next().unwrap().parse().unwrap() };
    let counters = |s: &dyn StateStore| -> Vec<u32> {
        let mut v = vec![u32::MAX; ids.len()];
        for e in all_entries(s, "hr") {
            v[number(&e.external_id)] = e.missing_runs;
        }
        v
    };
    // Pull 1: the even ones; pull 2: every third; pull 3 (incomplete, not counted): every fifth.
    s.record_pull("hr", &|id| number(id) % 2 == 0, true, 1173, now()).unwrap();
    s.record_pull("hr", &|id| number(id) % 3 == 0, true, 782, now()).unwrap();
    let after_two: Vec<u32> = (0..ids.len())
        .map(|i| match (i % 2 == 0, i % 3 == 0) {
            (_, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
        })
        .collect();
    assert_eq!(counters(s), after_two);
    s.record_pull("hr", &|id| number(id) % 5 == 0, false, 469, now()).unwrap();
    let after_three: Vec<u32> =
        after_two.iter().enumerate().map(|(i, &m)| if i % 5 == 0 { 0 } else { m }).collect();
    assert_eq!(counters(s), after_three);
    assert_eq!(s.job_state("hr").unwrap().last_pull_users, Some(469));
}

fn entries_and_profiles(s: &mut dyn StateStore) {
    let many: Vec<String> = (0..150).map(|i| format!("u{i:03}")).collect();
    let users: Vec<(&str, SentStatus)> =
        many.iter().map(|id| (id.as_str(), SentStatus::Active)).collect();
    s.mark_pending("hr", &users, now()).unwrap();
    let ids: Vec<&str> = many.iter().map(String::as_str).chain(["nobody"]).collect();
    let mut got = s.entries("hr", &ids).unwrap();
    got.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    assert_eq!(got.len(), 150, "the known ones, more than one batch of 100");
    assert_eq!(got[0].external_id, "u000");
    assert!(s.entries("other", &ids).unwrap().is_empty());
    assert_eq!(s.confirmed_profile("hr", "u000").unwrap(), None);
    let profile: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
    s.confirm(
        "hr",
        &[Confirmed {
            external_id: "u001".into(),
            status: SentStatus::Active,
            hash: Some("h".into()),
            profile: Some(profile.clone()),
        }],
        now(),
    )
    .unwrap();
    assert_eq!(s.confirmed_profile("hr", "u001").unwrap(), Some(profile));
    assert_eq!(s.confirmed_profile("hr", "nobody").unwrap(), None);
}

fn runs_holds_and_approvals(s: &mut dyn StateStore) {
    assert_eq!(s.last_run("hr").unwrap(), None);
    let r1 = s.begin_run("hr", now()).unwrap();
    let other = s.begin_run("other", now()).unwrap();
    assert_ne!(r1, other);
    let r = s.run("hr", r1).unwrap().unwrap();
    assert_eq!((r.id, r.job.as_str(), r.outcome.as_deref()), (r1, "hr", None));
    assert_eq!(s.last_run("hr").unwrap().map(|r| r.id), Some(r1));
    assert!(s.run("other", r1).unwrap().is_none(), "runs are per job");
    assert!(matches!(s.approve("hr", r1, now()), Err(StateError::NotHeld { .. })));
    let hold = Hold { deactivations: 100, creations: 5, reasons: vec!["too many".into()] };
    s.finish_run(r1, "held", r#"{"outcome":"held"}"#, Some(&hold), now()).unwrap();
    let r = s.run("hr", r1).unwrap().unwrap();
    assert_eq!(r.outcome.as_deref(), Some("held"));
    assert_eq!(r.hold, Some(hold));
    assert!(r.finished_at.is_some());
    assert_eq!(s.run_report("hr", r1).unwrap().as_deref(), Some(r#"{"outcome":"held"}"#));
    let r2 = s.begin_run("hr", now()).unwrap();
    assert!(r2 > r1, "run ids grow");
    assert_eq!(s.last_run("hr").unwrap().map(|r| r.id), Some(r2));
    assert_eq!(s.run_report("hr", r2).unwrap(), None, "not finished");
    assert_eq!(s.take_approval("hr", 100, 0, r2).unwrap(), None, "not approved yet");
    s.approve("hr", r1, now()).unwrap();
    assert!(s.run("hr", r1).unwrap().unwrap().approved_at.is_some());
    assert_eq!(s.take_approval("hr", 101, 0, r2).unwrap(), None, "more than approved");
    assert_eq!(s.take_approval("hr", 90, 6, r2).unwrap(), None, "more creations than approved");
    assert_eq!(s.take_approval("other", 90, 0, r2).unwrap(), None, "another job's");
    assert_eq!(s.take_approval("hr", 90, 5, r2).unwrap(), Some(r1));
    assert_eq!(s.take_approval("hr", 90, 0, r2).unwrap(), None, "used once");
    assert_eq!(s.run("hr", r1).unwrap().unwrap().consumed_by, Some(r2));
    assert!(matches!(
        s.approve("hr", r1, now()),
        Err(StateError::AlreadyUsed { by, .. }) if by == r2
    ));
    assert!(matches!(s.approve("hr", 999_999, now()), Err(StateError::NoSuchRun { .. })));
    s.finish_run(r2, "success", "{}", None, now()).unwrap();
    assert_eq!(s.run("hr", r2).unwrap().unwrap().hold, None);
}

fn job_facts(s: &mut dyn StateStore) {
    assert_eq!(s.job_state("hr").unwrap(), Default::default());
    let at = now();
    s.record_full_resync("hr", at).unwrap();
    let j = s.job_state("hr").unwrap();
    assert_eq!(j.last_full_resync_at.map(|t| t.timestamp_millis()), Some(at.timestamp_millis()));
    assert_eq!(j.last_pull_users, None);
    s.record_pull("hr", &|_| false, true, 42, at).unwrap();
    let j = s.job_state("hr").unwrap();
    assert_eq!(j.last_pull_users, Some(42));
    assert!(j.last_full_resync_at.is_some(), "kept by a pull");
}

/// How a job's runs went (notifications and quarantine): one whole record per job.
fn job_watch_is_kept_per_job_and_replaced_whole(s: &mut dyn StateStore) {
    assert_eq!(s.job_watch("hr").unwrap(), JobWatch::default());
    let at = DateTime::from_timestamp_millis(now().timestamp_millis()).unwrap();
    let watch = JobWatch {
        failures: 3,
        lasting_failures: 3,
        last_failure: Some("okta_credentials".into()),
        quarantine: Some(Quarantine {
            reason: "okta_credentials".into(),
            since: at,
            next_attempt: at + chrono::Duration::hours(1),
            backoff_secs: 3600,
            run: Some(7),
        }),
        failing_notified: true,
        notified: BTreeMap::from([("failing".to_string(), at)]),
    };
    s.set_job_watch("hr", &watch).unwrap();
    assert_eq!(s.job_watch("hr").unwrap(), watch);
    assert_eq!(s.job_watch("contractors").unwrap(), JobWatch::default(), "per job");
    s.set_job_watch("hr", &JobWatch::default()).unwrap();
    assert_eq!(s.job_watch("hr").unwrap(), JobWatch::default(), "replaced whole");
}

/// The mover's state: memberships per user (kept apart from the profile confirmation, and
/// separate per job), and the groups a job created with their empty-run counters.
fn memberships_and_owned_groups(s: &mut dyn StateStore) {
    let at = now();
    s.confirm("hr", &[confirmed("a", SentStatus::Active, Some("h1"))], at).unwrap();
    let set = |g: &[&str]| g.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    s.set_memberships("hr", &[("a".into(), set(&["g1", "g2"])), ("b".into(), set(&["g1"]))], at)
        .unwrap();
    let e = all_entries(s, "hr");
    assert_eq!(
        e.iter().map(|e| (e.external_id.as_str(), e.groups.clone())).collect::<Vec<_>>(),
        [("a", set(&["g1", "g2"])), ("b", set(&["g1"]))]
    );
    assert_eq!(e[0].hash.as_deref(), Some("h1"), "memberships leave the confirmed hash alone");
    // A later profile confirmation keeps the memberships; an empty set clears them.
    s.confirm("hr", &[confirmed("a", SentStatus::Active, Some("h2"))], at).unwrap();
    s.set_memberships("hr", &[("b".into(), Vec::new())], at).unwrap();
    let by_id: BTreeMap<String, Vec<String>> = s
        .entries("hr", &["a", "b"])
        .unwrap()
        .into_iter()
        .map(|e| (e.external_id, e.groups))
        .collect();
    assert_eq!(by_id["a"], set(&["g1", "g2"]));
    assert!(by_id["b"].is_empty());
    assert!(all_entries(s, "other").is_empty(), "per job");

    assert!(s.owned_groups("hr").unwrap().is_empty());
    s.confirm_groups("hr", &set(&["g1", "g2", "g3"]), &[], at).unwrap();
    s.confirm_groups("other", &set(&["g9"]), &[], at).unwrap();
    s.record_groups("hr", &|g| g == "g1", at).unwrap();
    s.record_groups("hr", &|g| g == "g1" || g == "g3", at).unwrap();
    let owned: Vec<(String, u32)> =
        s.owned_groups("hr").unwrap().into_iter().map(|g| (g.external_id, g.empty_runs)).collect();
    assert_eq!(owned, [("g1".into(), 0), ("g2".into(), 2), ("g3".into(), 0)]);
    // Upserted again: empty runs start over; deleted: no longer owned.
    s.confirm_groups("hr", &set(&["g2"]), &set(&["g3"]), at).unwrap();
    let owned: Vec<(String, u32)> =
        s.owned_groups("hr").unwrap().into_iter().map(|g| (g.external_id, g.empty_runs)).collect();
    assert_eq!(owned, [("g1".into(), 0), ("g2".into(), 0)]);
    assert_eq!(s.owned_groups("other").unwrap().len(), 1);
    // The groups partition is not a job's users.
    assert_eq!(all_entries(s, "hr").len(), 2);
}

fn run_history_is_listed_newest_first_and_found_by_id(s: &mut dyn StateStore) {
    let ids: Vec<i64> = (0..5)
        .map(|i| {
            let job = if i % 2 == 0 { "hr" } else { "ad" };
            let id = s.begin_run(job, now()).unwrap();
            s.finish_run(id, "success", "{}", None, now()).unwrap();
            id
        })
        .collect();
    let listed = |s: &dyn StateStore, job: Option<&str>, before, limit| -> Vec<i64> {
        s.runs(job, before, limit).unwrap().into_iter().map(|r| r.id).collect()
    };
    assert_eq!(listed(s, Some("hr"), None, 10), [ids[4], ids[2], ids[0]]);
    assert_eq!(listed(s, Some("hr"), Some(ids[4]), 1), [ids[2]]);
    assert_eq!(listed(s, None, None, 10), [ids[4], ids[3], ids[2], ids[1], ids[0]]);
    assert_eq!(listed(s, None, Some(ids[3]), 2), [ids[2], ids[1]]);
    assert!(listed(s, Some("nobody"), None, 10).is_empty());
    let found = s.run_by_id(ids[3]).unwrap().unwrap();
    assert_eq!((found.job.as_str(), found.outcome.as_deref()), ("ad", Some("success")));
    assert!(s.run_by_id(999_999).unwrap().is_none());
    // The approvals' audit trail, per run, in order.
    let at = now().to_rfc3339();
    let approval = |by: &str| ApprovalRecord {
        job: "hr".into(),
        run: ids[2],
        approved_at: at.clone(),
        approved_by: by.into(),
        remote_addr: Some("10.0.0.7".into()),
        approver: None,
    };
    // An OIDC approval keeps the person the ID token named.
    let person = ApprovalRecord {
        approver: Some(Approver {
            subject: "00u1abc".into(),
            email: Some("ana@example.com".into()),
            name: Some("Ana Lima".into()),
        }),
        ..approval("ana@example.com")
    };
    assert!(s.approvals(ids[2]).unwrap().is_empty());
    s.record_approval(&approval("token")).unwrap();
    s.record_approval(&approval("cli")).unwrap();
    s.record_approval(&person).unwrap();
    let trail = s.approvals(ids[2]).unwrap();
    let by: Vec<&str> = trail.iter().map(|a| a.approved_by.as_str()).collect();
    assert_eq!(by, ["token", "cli", "ana@example.com"]);
    assert_eq!(trail[0], approval("token"));
    assert_eq!(trail[2], person);
    assert!(s.approvals(ids[0]).unwrap().is_empty());
}

fn decisions_page_changes_first_with_search_filter_and_counts(s: &mut dyn StateStore) {
    let run = s.begin_run("hr", now()).unwrap();
    s.finish_run(run, "success", "{}", None, now()).unwrap();
    // 2,600 records (more than one chunk of a decision on DynamoDB), in no order, one of them
    // twice (its first decision stays).
    let decision = |i: usize| match i % 13 {
        0 => Decision::Deactivated,
        1 | 2 => Decision::Updated,
        3 => Decision::Created,
        4 => Decision::Rejected,
        _ => Decision::Unchanged,
    };
    let record = |i: usize| DecisionRecord {
        external_id: format!("u{:05}", (i * 7919) % 2600),
        decision: decision((i * 7919) % 2600),
        reason: (decision((i * 7919) % 2600) == Decision::Deactivated)
            .then(|| "missing_from_source".to_string()),
        line: None,
        profile: None,
        changes: match decision((i * 7919) % 2600) {
            Decision::Updated => vec![AttributeChange {
                attribute: "title".into(),
                from: Some("a".into()),
                to: Some("b".into()),
            }],
            _ => Vec::new(),
        },
    };
    let mut all = (0..2600)
        .map(record)
        .chain(std::iter::once(DecisionRecord { decision: Decision::Created, ..record(0) }));
    assert_eq!(s.record_decisions(run, &mut all).unwrap(), 2600);
    let mut want: Vec<(usize, String)> =
        (0..2600).map(|i| (decision(i).rank(), format!("u{i:05}"))).collect();
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    let walk = |s: &dyn StateStore, q: Option<&str>, decision: Option<Decision>, limit| {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let query = DecisionQuery { q: q.map(Into::into), decision, after, limit };
            let page = s.decisions(run, &query).unwrap();
            assert!(page.items.len() <= limit);
            ids.extend(page.items.into_iter().map(|d| d.external_id));
            match page.next_after {
                Some(a) => after = Some(a),
                None => return ids,
            }
        }
    };
    assert_eq!(walk(s, None, None, 97), want, "every record once, changes first");
    let searched: Vec<String> = want.iter().filter(|id| id.starts_with("u012")).cloned().collect();
    assert_eq!(walk(s, Some("u012"), None, 7), searched);
    let updated: Vec<String> = (0..2600)
        .filter(|i| decision(*i) == Decision::Updated)
        .map(|i| format!("u{i:05}"))
        .collect();
    assert_eq!(walk(s, None, Some(Decision::Updated), 150), updated);
    // The first page holds changes; an update carries what changed.
    let first = s.decisions(run, &DecisionQuery { limit: 5, ..Default::default() }).unwrap();
    assert!(first.items.iter().all(|d| d.decision == Decision::Created));
    let one = DecisionQuery { q: Some("u00001".into()), limit: 1, ..Default::default() };
    let page = s.decisions(run, &one).unwrap();
    assert_eq!(page.items[0].decision, Decision::Updated);
    assert_eq!(page.items[0].changes[0].attribute, "title");
    let counts = s.decision_counts(run).unwrap();
    assert_eq!(counts.values().sum::<u64>(), 2600);
    assert_eq!(counts[&Decision::Updated], updated.len() as u64);
    assert!(s.decision_counts(run + 1000).unwrap().is_empty());
}

// ---- the event log ----------------------------------------------------------------------

fn event(job: &str, key: Option<&str>, count: u32, urgent: bool) -> NewEvent {
    NewEvent {
        job: job.into(),
        idempotency_key: key.map(Into::into),
        records: format!("[{}]", vec!["{}"; count as usize].join(",")),
        record_count: count,
        urgent,
        external_ids: Vec::new(),
        signature: None,
    }
}

fn jobs(j: &[&str]) -> Vec<String> {
    j.iter().map(|s| s.to_string()).collect()
}

/// The store's blocking calls, off the test's runtime workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn append_get_pending_finish(store: EventStore, _reopen: &dyn Fn() -> EventStore) {
    let a = store.append(event("hr", None, 2, false)).await.unwrap();
    let b = store.append(event("other", None, 1, false)).await.unwrap();
    let c = store.append(event("hr", None, 3, true)).await.unwrap();
    let d = store.append(event("hr", None, 1, false)).await.unwrap();
    assert!(a.id.starts_with("evt_") && !a.duplicate);
    let s = store.clone();
    let (a, b, c, d) = blocking(move || {
        let store = s;
        let v = store.get(&a.id).unwrap().unwrap();
        assert_eq!((v.job.as_str(), v.status, v.record_count), ("hr", EventStatus::Queued, 2));
        assert!(v.sessions.is_empty() && v.outcome.is_none() && v.finished_at.is_none());
        assert!(store.get("evt_nope").unwrap().is_none());
        // The urgent event first (it shares no user with the others).
        let p = store.pending(&jobs(&["hr"]), 4).unwrap();
        assert_eq!(p.iter().map(|e| &e.id).collect::<Vec<_>>(), [&c.id]);
        assert!(p[0].urgent);
        // Otherwise oldest first, stopping once the records are reached; at least one.
        let p = store.pending(&jobs(&["other"]), 4).unwrap();
        assert_eq!(p.iter().map(|e| &e.id).collect::<Vec<_>>(), [&b.id]);
        assert_eq!(p[0].records, "[{}]");
        assert_eq!(p[0].job, "other");
        assert_eq!(store.pending(&jobs(&["hr"]), 1).unwrap().len(), 1);
        assert!(store.pending(&[], 10).unwrap().is_empty());
        assert_eq!(store.has_pending(&jobs(&["hr"])).unwrap(), (3, true));
        assert_eq!(store.has_pending(&jobs(&["other"])).unwrap(), (1, false));
        assert_eq!(store.has_pending(&jobs(&["hr", "other"])).unwrap(), (4, true));
        assert_eq!(store.has_pending(&[]).unwrap(), (0, false));
        assert_eq!(store.queued_total().unwrap(), 4);
        // Both jobs together, in store order.
        store
            .finish(&[(c.id.clone(), EventStatus::Done, serde_json::Value::Null)], Utc::now())
            .unwrap();
        let p = store.pending(&jobs(&["hr", "other"]), 100).unwrap();
        assert_eq!(p.iter().map(|e| &e.id).collect::<Vec<_>>(), [&a.id, &b.id, &d.id]);
        let p: Vec<i64> = p.iter().map(|e| e.seq).collect();
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        (a, b, c, d)
    })
    .await;

    let s = store.clone();
    blocking(move || {
        let store = s;
        store.mark_processing(&[a.id.clone(), d.id.clone()], None).unwrap();
        store.mark_processing(std::slice::from_ref(&a.id), Some("ses_1")).unwrap();
        store.mark_processing(std::slice::from_ref(&a.id), Some("ses_2")).unwrap();
        store.mark_processing(std::slice::from_ref(&a.id), Some("ses_2")).unwrap();
        let p = store.pending(&jobs(&["hr"]), 100).unwrap();
        assert_eq!(p.iter().map(|e| &e.id).collect::<Vec<_>>(), [&a.id, &d.id]);
        assert_eq!(p[0].status, EventStatus::Processing);
        assert_eq!(p[0].sessions, ["ses_1", "ses_2"]);
        let v = store.get(&a.id).unwrap().unwrap();
        assert_eq!((v.status, v.sessions.len()), (EventStatus::Processing, 2));

        let at = Utc::now();
        store
            .finish(
                &[
                    (a.id.clone(), EventStatus::Done, serde_json::json!({"upserted": 2})),
                    (d.id.clone(), EventStatus::Failed, serde_json::json!({"error": "x"})),
                ],
                at,
            )
            .unwrap();
        let v = store.get(&a.id).unwrap().unwrap();
        assert_eq!(v.status, EventStatus::Done);
        assert_eq!(v.outcome, Some(serde_json::json!({"upserted": 2})));
        assert_eq!(v.finished_at, Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
        assert_eq!(store.get(&d.id).unwrap().unwrap().status, EventStatus::Failed);
        assert_eq!(store.has_pending(&jobs(&["hr"])).unwrap(), (0, false));
        assert_eq!(store.queued_total().unwrap(), 1);
        let recent: Vec<String> = store.recent(2).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(recent, [d.id.clone(), c.id.clone()]);
        assert_eq!(store.recent(100).unwrap().len(), 4);
        let _ = b;
    })
    .await;
}

async fn a_termination_jumps_the_queue_with_every_earlier_event_of_its_users(
    store: EventStore,
    _reopen: &dyn Fn() -> EventStore,
) {
    let touching = |ids: &[&str], urgent: bool| NewEvent {
        external_ids: ids.iter().map(|s| s.to_string()).collect(),
        ..event("hr", None, ids.len() as u32, urgent)
    };
    let e1 = store.append(touching(&["a", "c"], false)).await.unwrap();
    let e2 = store.append(touching(&["b"], false)).await.unwrap();
    let e3 = store.append(touching(&["c"], false)).await.unwrap();
    let e4 = store.append(touching(&["a"], true)).await.unwrap();
    let e5 = store.append(touching(&["a"], false)).await.unwrap();
    blocking(move || {
        // a's termination takes a's earlier event e1, which brings c's e3; b's e2 and the
        // later e5 wait.
        let ids: Vec<String> =
            store.pending(&jobs(&["hr"]), 100).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [e1.id.clone(), e3.id.clone(), e4.id.clone()]);
        // An event already processing always comes along.
        store.mark_processing(std::slice::from_ref(&e2.id), Some("ses_x")).unwrap();
        let ids: Vec<String> =
            store.pending(&jobs(&["hr"]), 100).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [e1.id.clone(), e2.id.clone(), e3.id.clone(), e4.id.clone()]);
        store
            .finish(
                &[e1.id, e2.id, e3.id, e4.id]
                    .map(|id| (id, EventStatus::Done, serde_json::Value::Null)),
                Utc::now(),
            )
            .unwrap();
        let ids: Vec<String> =
            store.pending(&jobs(&["hr"]), 100).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [e5.id]);
    })
    .await;
}

async fn an_idempotency_key_stores_once_per_job(store: EventStore, _: &dyn Fn() -> EventStore) {
    let first = store.append(event("hr", Some("k1"), 1, false)).await.unwrap();
    assert!(!first.duplicate);
    let again = store.append(event("hr", Some("k1"), 1, false)).await.unwrap();
    assert_eq!(again, Stored::duplicate_of(first.id.clone()));
    let other_job = store.append(event("ad", Some("k1"), 1, false)).await.unwrap();
    assert!(!other_job.duplicate);
    assert_ne!(other_job.id, first.id);
    // Concurrent duplicates: still one stored.
    let (x, y) = tokio::join!(
        store.append(event("hr", Some("k2"), 1, false)),
        store.append(event("hr", Some("k2"), 1, false)),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.id, y.id);
    assert!(x.duplicate != y.duplicate);
    // A key seen again after its event finished is still a duplicate.
    let s = store.clone();
    let id = first.id.clone();
    blocking(move || {
        s.finish(&[(id, EventStatus::Done, serde_json::Value::Null)], Utc::now()).unwrap()
    })
    .await;
    let late = store.append(event("hr", Some("k1"), 1, false)).await.unwrap();
    assert_eq!(late, Stored::duplicate_of(first.id.clone()));
    assert_eq!(blocking(move || store.queued_total().unwrap()).await, 2);
}

fn seen(message: &str, routed: Option<&str>, route: &str) -> SeenSignature {
    SeenSignature {
        message: format!("{message}-{}", uuid::Uuid::now_v7()),
        routed: routed.map(|r| format!("{r}-{}", uuid::Uuid::now_v7())),
        route: route.into(),
        expires_at: Utc::now().timestamp() + 300,
    }
}

fn signed(job: &str, sig: &SeenSignature) -> NewEvent {
    NewEvent { signature: Some(sig.clone()), ..event(job, None, 1, false) }
}

async fn a_signed_message_is_applied_once_across_reopens_and_routes(
    store: EventStore,
    reopen: &dyn Fn() -> EventStore,
) {
    const HR: &str = "POST /v1/jobs/hr/records";
    let v1 = seen("m", None, HR);
    let first = store.append(signed("hr", &v1)).await.unwrap();
    assert_eq!(first, Stored::new(first.id.clone()));
    // After a restart, or on another replica: the first event, nothing stored again.
    let other = reopen();
    let again = other.append(signed("hr", &v1)).await.unwrap();
    assert_eq!(again, Stored::duplicate_of(first.id.clone()));
    // The same v1 message aimed at another route: refused, nothing stored.
    let aimed = SeenSignature { route: "POST /v1/jobs/ad/records".into(), ..v1.clone() };
    let aimed = other.append(signed("ad", &aimed)).await.unwrap();
    assert_eq!(aimed.other_route.as_deref(), Some(HR));
    assert!(aimed.duplicate && aimed.id.is_empty());
    // v2 signed for another route: another message; its v1 form stays the first route's.
    let v2_ad = SeenSignature {
        routed: Some(format!("r-{}", uuid::Uuid::now_v7())),
        route: "POST /v1/jobs/ad/records".into(),
        ..v1.clone()
    };
    let ad = other.append(signed("ad", &v2_ad)).await.unwrap();
    assert!(!ad.duplicate && ad.other_route.is_none());
    assert_eq!(other.append(signed("ad", &v2_ad)).await.unwrap(), Stored::duplicate_of(ad.id));
    // A v2 request's v1 form, stripped and replayed to its route: a duplicate.
    let v2_hr = seen("m2", Some("r2"), HR);
    let stored = store.append(signed("hr", &v2_hr)).await.unwrap();
    let stripped = SeenSignature { routed: None, ..v2_hr.clone() };
    assert_eq!(
        reopen().append(signed("hr", &stripped)).await.unwrap(),
        Stored::duplicate_of(stored.id)
    );
    // Two senders at once with the same bytes: one event, both answered with it.
    let both = seen("m3", None, HR);
    let (x, y) = tokio::join!(store.append(signed("hr", &both)), other.append(signed("hr", &both)));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.id, y.id);
    assert!(x.duplicate != y.duplicate);
    // An expired record no longer counts (the timestamp check refuses such a message first).
    let old = SeenSignature { expires_at: Utc::now().timestamp() - 1, ..seen("m4", None, HR) };
    assert!(!store.append(signed("hr", &old)).await.unwrap().duplicate);
    assert!(!store.append(signed("hr", &old)).await.unwrap().duplicate);
    // Triggers store no event: the claim alone.
    const TRIGGER: &str = "POST /v1/jobs/hr/trigger";
    let t = seen("t", None, TRIGGER);
    assert_eq!(store.claim_signature(t.clone()).await.unwrap(), Claim::New);
    assert_eq!(
        reopen().claim_signature(t.clone()).await.unwrap(),
        Claim::Duplicate { event_id: None }
    );
    let t_ad = SeenSignature { route: "POST /v1/jobs/ad/trigger".into(), ..t };
    assert_eq!(
        store.claim_signature(t_ad).await.unwrap(),
        Claim::OtherRoute { route: TRIGGER.into() }
    );
    // What was stored: first, ad, stored, one of x/y, old twice.
    let s = store.clone();
    assert_eq!(blocking(move || s.queued_total().unwrap()).await, 6);
}

async fn appended_events_survive_a_reopen(store: EventStore, reopen: &dyn Fn() -> EventStore) {
    let appends: Vec<_> = (0..100).map(|_| store.append(event("hr", None, 1, false))).collect();
    let mut ids = Vec::new();
    for r in futures::future::join_all(appends).await {
        ids.push(r.unwrap().id);
    }
    drop(store);
    let store = reopen();
    let got: Vec<String> = blocking(move || {
        store.pending(&jobs(&["hr"]), usize::MAX).unwrap().into_iter().map(|e| e.id).collect()
    })
    .await;
    let mut want = ids.clone();
    let mut have = got.clone();
    want.sort();
    have.sort();
    assert_eq!(have, want, "every acknowledged event");
    // Acknowledgement order: joined appends may finish in any order, so sequential ones.
    let store = reopen();
    let mut seq_ids = Vec::new();
    for _ in 0..5 {
        seq_ids.push(store.append(event("seq", None, 1, false)).await.unwrap().id);
    }
    let got: Vec<String> = blocking(move || {
        store.pending(&jobs(&["seq"]), usize::MAX).unwrap().into_iter().map(|e| e.id).collect()
    })
    .await;
    assert_eq!(got, seq_ids, "in acknowledgement order");
}

async fn session_activity_is_kept(store: EventStore, reopen: &dyn Fn() -> EventStore) {
    let at = Utc::now();
    let s = store.clone();
    blocking(move || {
        assert_eq!(s.session_activity("0oa1").unwrap(), None);
        s.record_session_activity("0oa1", at).unwrap();
        s.record_session_activity("0oa2", at - chrono::Duration::seconds(60)).unwrap();
    })
    .await;
    let store = reopen();
    blocking(move || {
        let got = store.session_activity("0oa1").unwrap().unwrap();
        assert_eq!(got.timestamp(), at.timestamp());
        assert!(store.session_activity("0oa2").unwrap().unwrap() < got);
    })
    .await;
}

async fn sign_in_records_expire_are_taken_once_and_survive_a_reopen(
    store: EventStore,
    reopen: &dyn Fn() -> EventStore,
) {
    let now = Utc::now();
    let later = now + chrono::Duration::minutes(10);
    let s = store.clone();
    blocking(move || {
        assert_eq!(s.signin("session:a", now).unwrap(), None);
        s.put_signin("session:a", r#"{"sub":"a"}"#, later).unwrap();
        s.put_signin("login:b", "b", later).unwrap();
        s.put_signin("login:old", "old", now - chrono::Duration::seconds(1)).unwrap();
        // Replacing keeps one record with the new data and expiry.
        s.put_signin("session:a", r#"{"sub":"a2"}"#, later).unwrap();
    })
    .await;
    let store = reopen();
    let s = store.clone();
    blocking(move || {
        assert_eq!(s.signin("session:a", now).unwrap().as_deref(), Some(r#"{"sub":"a2"}"#));
        // Past its expiry a record is gone for reads and takes alike.
        assert_eq!(s.signin("session:a", later + chrono::Duration::seconds(1)).unwrap(), None);
        assert_eq!(s.signin("login:old", now).unwrap(), None);
        assert_eq!(s.take_signin("login:old", now).unwrap(), None);
        s.delete_signin("session:a").unwrap();
        assert_eq!(s.signin("session:a", now).unwrap(), None);
        s.delete_signin("session:never").unwrap();
    })
    .await;
    // Eight concurrent takers of one login: exactly one gets it.
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::task::spawn_blocking(move || s.take_signin("login:b", now).unwrap())
        })
        .collect();
    let mut got = Vec::new();
    for t in takers {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got, vec!["b".to_string()]);
}

// ---- leases and fencing (DynamoDB only) ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_owner_and_fences_the_one_that_lost_it() {
    let Some(e) = endpoint() else { return };
    let settings = dynamo_settings(&e);
    let a = Dynamo::connect(&settings, Some(client(&e))).unwrap();
    let b = Dynamo::connect(&settings, Some(client(&e))).unwrap();
    assert_ne!(a.replica(), b.replica());
    let map = std::collections::HashMap::from([("hr".to_string(), "0oa1".to_string())]);
    a.enable_fencing(map.clone());
    b.enable_fencing(map);

    // Without the lease, no write.
    let mut store_a = DynamoStore::with(a.clone(), true);
    let refused = blocking(move || {
        let r = store_a.mark_pending("hr", &[("u1", SentStatus::Active)], Utc::now());
        (r, store_a)
    })
    .await;
    let (r, mut store_a) = refused;
    assert!(r.unwrap_err().to_string().contains("lease"), "refused without the lease");

    let t1 = a.acquire("0oa1").await.unwrap().expect("a free lease is taken");
    assert_eq!(b.acquire("0oa1").await.unwrap(), None, "held by a");
    assert!(!b.lease_available("0oa1").await.unwrap());
    assert!(a.renew("0oa1", t1).await.unwrap());
    a.set_held("0oa1", Some(t1));
    store_a = blocking(move || {
        store_a.mark_pending("hr", &[("u1", SentStatus::Active)], Utc::now()).unwrap();
        store_a
    })
    .await;

    // a stops renewing; after the lease time b takes it, with a greater token.
    tokio::time::sleep(settings.lease + Duration::from_millis(200)).await;
    assert!(b.lease_available("0oa1").await.unwrap());
    let t2 = b.acquire("0oa1").await.unwrap().expect("an expired lease is taken");
    assert!(t2 > t1, "the fencing token grows: {t1} then {t2}");
    b.set_held("0oa1", Some(t2));
    assert!(!a.renew("0oa1", t1).await.unwrap(), "a cannot renew a lease b took");

    // a still believes it holds the lease: its writes are refused all the same.
    let mut store_b = DynamoStore::with(b.clone(), true);
    let (ra, rb) = blocking(move || {
        let rb = store_b.mark_pending("hr", &[("u1", SentStatus::Inactive)], Utc::now());
        let ra = store_a.confirm(
            "hr",
            &[confirmed("u1", SentStatus::Active, Some("stale"))],
            Utc::now(),
        );
        let ra2 = store_a.begin_run("hr", Utc::now());
        (ra.and(ra2.map(|_| ())), rb)
    })
    .await;
    rb.unwrap();
    assert!(ra.unwrap_err().to_string().contains("lease"));
    let b_store = DynamoStore::with(b.clone(), true);
    let e = blocking(move || b_store.entries("hr", &["u1"]).unwrap()).await;
    assert_eq!(e[0].pending, Some(SentStatus::Inactive), "b's write stands");
    assert_eq!(e[0].status, None, "a's stale confirm did not land");

    // A released lease is free at once.
    b.release("0oa1", t2).await.unwrap();
    let t3 = a.acquire("0oa1").await.unwrap().expect("released");
    assert!(t3 > t2);

    // A stored trigger is claimed once per term, survives until the run is over, and a
    // later owner claims it again when the earlier one died without running it.
    let b2 = b.clone();
    blocking(move || b2.store_trigger("hr").unwrap()).await;
    assert!(a.claim_trigger("hr", t3).await.unwrap());
    assert!(!a.claim_trigger("hr", t3).await.unwrap(), "claimed once per term");
    assert!(b.claim_trigger("hr", t3 + 1).await.unwrap(), "a newer term claims it again");
    let a2 = a.clone();
    blocking(move || a2.finish_trigger("hr", t3).unwrap()).await;
    assert!(!b.claim_trigger("hr", t3 + 1).await.unwrap(), "a stale term's finish keeps it");
    let b3 = b.clone();
    blocking(move || b3.finish_trigger("hr", t3 + 1).unwrap()).await;
    assert!(!b.claim_trigger("hr", t3 + 2).await.unwrap(), "deleted once its run is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_renew_stops_before_anyone_else_may_take_over() {
    use xaas::daemon::lease::Leases;
    let Some(e) = endpoint() else { return };
    let settings = dynamo_settings(&e);
    let d = Dynamo::connect(&settings, Some(client(&e))).unwrap();
    let other = Dynamo::connect(&settings, Some(client(&e))).unwrap();
    let leases = Leases::new(d.clone(), tokio_util::sync::CancellationToken::new());
    let sources = vec!["0oa1".to_string()];
    let tick = leases.tick(&sources).await;
    assert_eq!(tick.acquired, sources);
    assert!(leases.holds("0oa1"));
    let token = leases.token("0oa1").unwrap();
    assert_eq!(d.held("0oa1"), Some(token), "the state fences writes with it");
    let term = leases.term("0oa1").unwrap();
    // Renewals stop (as when DynamoDB cannot be reached): the term ends by itself, a third of
    // a lease before the lease expires, when nobody else can hold it yet.
    let started = std::time::Instant::now();
    tokio::time::timeout(settings.lease, term.cancelled()).await.expect("the term ended");
    let stopped = started.elapsed();
    assert!(!leases.holds("0oa1"));
    assert!(leases.term("0oa1").is_none(), "no Okta client for it any more");
    assert!(!other.lease_available("0oa1").await.unwrap(), "not yet free for another replica");
    println!(
        "stopped {} ms after the last renewal (lease {:?})",
        stopped.as_millis(),
        settings.lease
    );
    assert!(stopped < settings.lease - settings.lease / 4, "{stopped:?}");
    // The next tick drops it from the fenced set.
    let tick = leases.tick(&sources).await;
    assert_eq!(tick.lost, sources);
    assert_eq!(d.held("0oa1"), None);
}
