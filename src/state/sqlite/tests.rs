use super::*;
use crate::state::AttributeChange;
use crate::state::prefix_end;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn entries(store: &SqliteStore, job: &str) -> Vec<Entry> {
    let mut v = Vec::new();
    store.for_each_entry(job, &mut |e| v.push(e)).unwrap();
    v.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    v
}

#[test]
fn pending_then_confirmed_then_missing() {
    let mut s = SqliteStore::in_memory(true).unwrap();
    s.mark_pending("hr", &[("a", SentStatus::Active), ("b", SentStatus::Active)], now()).unwrap();
    let e = entries(&s, "hr");
    assert_eq!(e.len(), 2);
    assert!(e.iter().all(|e| e.status.is_none() && e.owned_active()));
    let profile: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
    s.confirm(
        "hr",
        &[Confirmed {
            external_id: "a".into(),
            status: SentStatus::Active,
            hash: Some("h1".into()),
            profile: Some(profile.clone()),
        }],
        now(),
    )
    .unwrap();
    let e = entries(&s, "hr");
    assert_eq!(e[0].status, Some(SentStatus::Active));
    assert_eq!(e[0].pending, None);
    assert_eq!(e[0].hash.as_deref(), Some("h1"));
    assert_eq!(e[1].pending, Some(SentStatus::Active), "b was never confirmed");
    assert_eq!(s.confirmed_profile("hr", "a").unwrap(), Some(profile));
    // A leaver's deactivation keeps the hash.
    s.confirm(
        "hr",
        &[Confirmed {
            external_id: "a".into(),
            status: SentStatus::Inactive,
            hash: None,
            profile: None,
        }],
        now(),
    )
    .unwrap();
    let e = entries(&s, "hr");
    assert_eq!(e[0].status, Some(SentStatus::Inactive));
    assert_eq!(e[0].hash.as_deref(), Some("h1"));
    s.record_pull("hr", &|id| id == "b", true, 1, now()).unwrap();
    let e = entries(&s, "hr");
    assert_eq!((e[0].missing_runs, e[1].missing_runs), (1, 0));
    let j = s.job_state("hr").unwrap();
    assert_eq!(j.last_pull_users, Some(1));
    assert_eq!(j.known_active, 0);
    // Another job sees none of it.
    assert!(entries(&s, "other").is_empty());
}

#[test]
fn approvals_release_one_run_within_what_was_approved() {
    let mut s = SqliteStore::in_memory(false).unwrap();
    let r1 = s.begin_run("hr", now()).unwrap();
    assert!(matches!(s.approve("hr", r1, now()), Err(StateError::NotHeld { .. })));
    let hold = Hold { deactivations: 100, creations: 0, reasons: vec!["x".into()] };
    s.finish_run(r1, "held", "{}", Some(&hold), now()).unwrap();
    let r2 = s.begin_run("hr", now()).unwrap();
    assert_eq!(s.take_approval("hr", 100, 0, r2).unwrap(), None, "not approved yet");
    s.approve("hr", r1, now()).unwrap();
    assert_eq!(s.take_approval("hr", 101, 0, r2).unwrap(), None, "more than approved");
    assert_eq!(s.take_approval("hr", 90, 0, r2).unwrap(), Some(r1));
    assert_eq!(s.take_approval("hr", 90, 0, r2).unwrap(), None, "used once");
    assert!(matches!(s.approve("hr", r1, now()), Err(StateError::AlreadyUsed { .. })));
    assert!(matches!(s.approve("hr", 999, now()), Err(StateError::NoSuchRun { .. })));
}

#[test]
fn decisions_page_changes_first_search_by_prefix_and_keep_counts() {
    let mut s = SqliteStore::in_memory(false).unwrap();
    let run = s.begin_run("hr", now()).unwrap();
    let d = |id: &str, decision| DecisionRecord {
        external_id: id.into(),
        decision,
        reason: None,
        line: None,
        profile: None,
        changes: Vec::new(),
    };
    let mut rows = vec![d("b1", Decision::Rejected), d("a2", Decision::Created)].into_iter();
    let mut more =
        [d("a1", Decision::Created), d("b1", Decision::Created), d("ab", Decision::Unchanged)]
            .into_iter();
    assert_eq!(s.record_decisions(run, &mut rows).unwrap(), 2);
    // Written again for the same key: the first decision stays.
    assert_eq!(s.record_decisions(run, &mut more).unwrap(), 2);
    let page = |q: Option<&str>, after: Option<&str>, decision| {
        let query = DecisionQuery {
            q: q.map(str::to_string),
            after: after.map(str::to_string),
            decision,
            limit: 2,
        };
        let p = s.decisions(run, &query).unwrap();
        (p.items.iter().map(|d| d.external_id.clone()).collect::<Vec<_>>(), p.next_after)
    };
    // Changes first: created a1 a2, rejected b1, unchanged ab last.
    let first = (vec!["a1".into(), "a2".into()], Some("created:a2".into()));
    assert_eq!(page(None, None, None), first);
    assert_eq!(page(None, Some("created:a2"), None), (vec!["b1".into(), "ab".into()], None));
    assert_eq!(page(None, Some("rejected:b1"), None), (vec!["ab".into()], None));
    assert_eq!(page(Some("a"), Some("created:a1"), None), (vec!["a2".into(), "ab".into()], None));
    assert_eq!(page(Some("b"), None, None), (vec!["b1".into()], None));
    assert_eq!(page(None, None, Some(Decision::Created)).0, ["a1", "a2"]);
    assert_eq!(page(None, None, Some(Decision::Unchanged)).0, ["ab"]);
    // A cursor from before changes-first pages (a bare externalId) still pages on.
    assert_eq!(page(None, Some("a1"), None).0, ["a2", "b1"]);
    let counts = s.decision_counts(run).unwrap();
    assert_eq!(counts.get(&Decision::Created), Some(&2));
    assert_eq!(counts.get(&Decision::Rejected), Some(&1));
    assert_eq!(counts.get(&Decision::Unchanged), Some(&1));
    assert!(
        s.decisions(run + 1, &DecisionQuery { limit: 5, ..Default::default() })
            .unwrap()
            .items
            .is_empty()
    );
    // What an update changed is kept with it.
    let change = AttributeChange {
        attribute: "title".into(),
        from: Some("Engineer".into()),
        to: Some("Lead".into()),
    };
    let updated = DecisionRecord { changes: vec![change.clone()], ..d("c1", Decision::Updated) };
    assert_eq!(s.record_decisions(run, &mut std::iter::once(updated)).unwrap(), 1);
    let only = DecisionQuery { decision: Some(Decision::Updated), limit: 5, ..Default::default() };
    assert_eq!(s.decisions(run, &only).unwrap().items[0].changes, [change]);
    assert_eq!(prefix_end("ab"), Some("ac".into()));
}

#[test]
fn migrations_are_versioned_and_a_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(SqliteStore::open(&path, true).unwrap());
    // Reopening applies nothing twice.
    let s = SqliteStore::open(&path, true).unwrap();
    assert_eq!(s.version().unwrap(), MIGRATIONS.len() as i64);
    s.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(s);
    assert!(matches!(SqliteStore::open(&path, true), Err(StateError::TooNew { .. })));
}
