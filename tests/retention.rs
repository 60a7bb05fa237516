//! History retention (`state.history`) on the SQLite file: old runs with their decisions and
//! approvals, and finished webhook events, are pruned in passes; the last runs of each job,
//! held runs still waiting, queued events and every user's state stay; the space goes back to
//! the file system. (`bench/retention.py` measures the file over 200 runs.)

use std::time::Duration;

use chrono::Utc;
use xaas::state::config::HistoryPolicy;
use xaas::state::events::{EventStatus, EventStore, NewEvent};
use xaas::state::sqlite::SqliteStore;
use xaas::state::{
    ApprovalRecord, Confirmed, Decision, DecisionQuery, DecisionRecord, Hold, JobWatch, SentStatus,
    StateStore,
};

fn decisions(n: usize) -> Vec<DecisionRecord> {
    (0..n)
        .map(|i| DecisionRecord {
            external_id: format!("emp{i:06}@example.com"),
            decision: Decision::Unchanged,
            reason: None,
            line: Some(format!("line {}", i + 2)),
            profile: None,
            changes: Vec::new(),
        })
        .collect()
}

/// One finished run of `job` with `n` decisions; held when `held`.
fn run(s: &mut SqliteStore, job: &str, outcome: &str, held: bool, n: usize) -> i64 {
    let at = Utc::now();
    let id = s.begin_run(job, at).unwrap();
    let hold = held.then(|| Hold { deactivations: 9, creations: 0, reasons: vec!["9 > 2".into()] });
    s.finish_run(id, outcome, "{}", hold.as_ref(), at).unwrap();
    s.record_decisions(id, &mut decisions(n).into_iter()).unwrap();
    id
}

/// A run's decisions, counted by paging through them.
fn decision_count(s: &SqliteStore, run: i64) -> usize {
    let mut n = 0;
    let mut after = None;
    loop {
        let q = DecisionQuery { limit: 1_000, after: after.clone(), ..Default::default() };
        let page = s.decisions(run, &q).unwrap();
        n += page.items.len();
        match page.next_after {
            Some(next) => after = Some(next),
            None => return n,
        }
    }
}

#[test]
fn old_runs_go_in_passes_and_the_last_ones_held_ones_and_the_users_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut s = SqliteStore::open(&path, true).unwrap();
    // The users' state, and the job's watch record: never pruned.
    let users: Vec<Confirmed> = (0..50)
        .map(|i| Confirmed {
            external_id: format!("u{i}"),
            hash: Some("h".into()),
            status: SentStatus::Active,
            profile: None,
        })
        .collect();
    s.confirm("hr", &users, Utc::now()).unwrap();
    s.set_job_watch("hr", &JobWatch { failures: 1, ..Default::default() }).unwrap();
    // hr: 1 ok, 2 held then released by the success of 3, 4..7 ok, 8 held (still waiting), 9 failed.
    let mut ids = Vec::new();
    for (outcome, held) in [
        ("success", false),
        ("held", true),
        ("success", false),
        ("success", false),
        ("success", false),
        ("success", false),
        ("success", false),
        ("held", true),
        ("failed", false),
    ] {
        ids.push(run(&mut s, "hr", outcome, held, 3_000));
    }
    s.record_approval(&ApprovalRecord {
        job: "hr".into(),
        run: ids[1],
        approved_at: Utc::now().to_rfc3339(),
        approved_by: "cli".into(),
        remote_addr: None,
        approver: None,
    })
    .unwrap();
    let other =
        [run(&mut s, "other", "success", false, 10), run(&mut s, "other", "success", false, 10)];
    let (before, _) = s.size_bytes().unwrap();

    // Kept for a time: nothing is old enough.
    let month = HistoryPolicy {
        keep_runs_for: Some(Duration::from_secs(30 * 86_400)),
        keep_runs: 1,
        keep_events_for: None,
    };
    let p = s.prune_history(&month, Utc::now(), 100_000).unwrap();
    assert_eq!((p.runs, p.decisions, p.done), (0, 0, true));

    // By count only: the last run of each job, and the held run still waiting.
    let policy =
        HistoryPolicy { keep_runs_for: Some(Duration::ZERO), keep_runs: 1, keep_events_for: None };
    let later = Utc::now() + chrono::Duration::seconds(1);
    let mut passes = 0;
    let mut total = (0, 0);
    loop {
        let p = s.prune_history(&policy, later, 2_500).unwrap();
        passes += 1;
        total = (total.0 + p.runs, total.1 + p.decisions);
        if p.done {
            break;
        }
        assert!(p.runs + p.decisions <= 2_501, "a pass keeps to its budget: {p:?}");
    }
    assert!(passes > 3, "small budgets take several passes: {passes}");
    assert_eq!(total, (8, 7 * 3_000 + 10), "runs 1-7 of hr and the first of other");
    let kept: Vec<i64> = s.runs(None, None, 100).unwrap().iter().map(|r| r.id).rev().collect();
    assert_eq!(kept, [ids[7], ids[8], other[1]]);
    for (i, id) in ids.iter().enumerate() {
        let expected = if i >= 7 { 3_000 } else { 0 };
        assert_eq!(decision_count(&s, *id), expected, "run {i}");
    }
    assert!(s.approvals(ids[1]).unwrap().is_empty(), "its approvals went with the run");
    assert_eq!(s.decision_counts(ids[0]).unwrap().len(), 0);
    // Untouched: every user, the watch record.
    let mut n = 0;
    s.for_each_entry("hr", &mut |_| n += 1).unwrap();
    assert_eq!(n, 50);
    assert_eq!(s.job_watch("hr").unwrap().failures, 1);
    // The space went back to the file system (a new file vacuums incrementally).
    let (after, _) = s.size_bytes().unwrap();
    assert!(after < before / 2, "{before} → {after} bytes");
    let on_disk = std::fs::metadata(&path).unwrap().len();
    assert!(on_disk <= before, "{on_disk}");
}

#[tokio::test]
async fn finished_events_go_after_their_time_and_queued_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let events = EventStore::open(&path).unwrap();
    let new = |i: usize| NewEvent {
        job: "hr".into(),
        idempotency_key: Some(format!("k{i}")),
        records: "[{}]".into(),
        record_count: 1,
        urgent: false,
        external_ids: vec![format!("u{i}")],
        signature: None,
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(events.append(new(i)).await.unwrap().id);
    }
    let done: Vec<(String, EventStatus, serde_json::Value)> =
        ids[..3].iter().map(|id| (id.clone(), EventStatus::Done, serde_json::json!({}))).collect();
    events.finish(&done, Utc::now()).unwrap();
    let mut s = SqliteStore::open(&path, true).unwrap();
    let week = HistoryPolicy {
        keep_runs_for: None,
        keep_runs: 50,
        keep_events_for: Some(Duration::from_secs(7 * 86_400)),
    };
    assert_eq!(s.prune_history(&week, Utc::now(), 1_000).unwrap().events, 0);
    let now = HistoryPolicy { keep_events_for: Some(Duration::ZERO), ..week };
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(s.prune_history(&now, later, 1_000).unwrap().events, 3);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(events.get(id).unwrap().is_some(), i >= 3, "event {i}");
    }
    assert_eq!(events.has_pending(&["hr".to_string()]).unwrap().0, 2, "queued ones stay");
    // A pruned event's idempotency key is free again (documented).
    assert!(!events.append(new(0)).await.unwrap().duplicate);
    assert!(events.append(new(4)).await.unwrap().duplicate);
}
