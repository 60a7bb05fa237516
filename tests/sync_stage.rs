//! The sync stage in process, through its context: the state store, the Okta client (against
//! the emulator) and the cancellation are passed in, as the CLI and the daemon do. These are
//! the scenarios that used to be reachable only through the binary: delta, leavers,
//! safeguards, a failed session, a shutdown.

mod common;

use std::path::PathBuf;

use common::{Person, SOURCE, TOKEN};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use xaas::okta::session::SpacingClock;
use xaas::okta::{Credentials, OktaClient};
use xaas::settings::Settings;
use xaas::sim::SimHandle;
use xaas::state::sqlite::SqliteStore;
use xaas::state::{SentStatus, StateStore};
use xaas::sync::report::{JobOutcome, JobReport};
use xaas::sync::{RunContext, RunOptions, run_job};

/// The emulator, one CSV job, an in-memory state and a client: what a run is given.
struct World {
    sim: SimHandle,
    _dir: tempfile::TempDir,
    csv: PathBuf,
    settings: Settings,
    store: SqliteStore,
    client: OktaClient,
    /// The identity source's 5-minute clock, shared by the runs as the CLI and daemon do.
    spacing: SpacingClock,
}

impl World {
    async fn new(people: &[Person], extra_job: &str) -> World {
        // 300×: Okta's 5 minutes take 1 s, like the client's spacing below.
        let sim = common::start_sim(300.0).await;
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("people.csv");
        common::write_csv(&csv, people);
        let config = common::write_config(dir.path(), &sim.base_url(), &csv, 1.05, extra_job);
        let settings = xaas::settings::load(&config).unwrap();
        let client = OktaClient::with_credentials(
            settings.okta.org_url.clone(),
            Credentials::ApiToken(SecretString::from(TOKEN)),
            settings.okta.client.clone(),
        )
        .unwrap();
        let store = SqliteStore::in_memory(false).unwrap();
        World { sim, _dir: dir, csv, settings, store, client, spacing: SpacingClock::default() }
    }

    async fn run_with(&mut self, options: &RunOptions, cancel: CancellationToken) -> JobReport {
        let mut ctx = RunContext {
            store: &mut self.store,
            okta: Some(&self.client),
            spacing: Some(self.spacing.clone()),
            cancel,
            base_dir: &self.settings.base_dir,
        };
        run_job(&mut ctx, &self.settings, &self.settings.jobs[0], options).await
    }

    async fn run(&mut self) -> JobReport {
        let cancel = self.client.cancellation().clone();
        self.run_with(&RunOptions::default(), cancel).await
    }

    fn export(&self, people: &[Person]) {
        common::write_csv(&self.csv, people);
    }

    fn active_in_okta(&self) -> usize {
        self.sim.snapshot().users.iter().filter(|u| u.status == "ACTIVE").count()
    }

    fn assert_no_violations(&self) {
        let v = self.sim.snapshot().violations;
        assert!(v.is_empty(), "{v:#?}");
    }
}

fn people(n: usize) -> Vec<Person> {
    (0..n).map(|i| Person::generate(i, true)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_sends_only_what_changed_and_the_state_records_it() {
    let mut everyone = people(40);
    let mut w = World::new(&everyone, "").await;
    let first = w.run().await;
    assert_eq!(first.outcome, JobOutcome::Success, "{:?}", first.error);
    assert_eq!((first.changes.creates, first.counts.upserted), (40, 40));
    // Every user Okta confirmed is in the state with the hash of what was sent.
    let owned: Vec<String> = everyone.iter().map(|p| p.id.clone()).collect();
    let ids: Vec<&str> = owned.iter().map(String::as_str).collect();
    let entries = w.store.entries("hr", &ids).unwrap();
    assert_eq!(entries.len(), 40);
    assert!(entries.iter().all(|e| e.status == Some(SentStatus::Active) && e.pending.is_none()));

    for p in everyone.iter_mut().take(3) {
        p.city = format!("{}-moved", p.city);
    }
    w.export(&everyone);
    let second = w.run().await;
    assert_eq!(second.outcome, JobOutcome::Success, "{:?}", second.error);
    assert_eq!((second.changes.updates, second.changes.unchanged), (3, 37));
    assert_eq!(second.counts.upserted, 3, "a delta run sends only the changes");
    let updated: Vec<&str> =
        second.details.updates.iter().map(|u| u.external_id.as_str()).collect();
    assert_eq!(updated, ids[..3].to_vec());

    // Nothing changed: no session at all.
    let sessions_before = w.sim.snapshot().sessions.len();
    let third = w.run().await;
    assert_eq!(third.changes.unchanged, 40);
    assert!(third.sessions.is_empty());
    assert_eq!(w.sim.snapshot().sessions.len(), sessions_before);
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_is_deactivated_only_after_the_configured_missing_runs() {
    let everyone = people(30);
    let mut w = World::new(&everyone, "    leavers:\n      missing_runs: 2\n").await;
    assert_eq!(w.run().await.outcome, JobOutcome::Success);
    // Two people are missing from the export.
    w.export(&everyone[2..]);
    let once = w.run().await;
    assert_eq!((once.changes.missing_waiting, once.changes.leavers_missing), (2, 0));
    assert_eq!(w.active_in_okta(), 30, "one missing run is not enough");
    let twice = w.run().await;
    assert_eq!(twice.changes.leavers_missing, 2);
    assert_eq!(twice.counts.deactivated, 2);
    assert_eq!(w.active_in_okta(), 28);
    let reasons: Vec<&str> =
        twice.details.deactivations.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["missing_from_source", "missing_from_source"]);
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_export_is_held_with_nothing_sent_until_released() {
    let everyone = people(50);
    let mut w = World::new(&everyone, "").await;
    assert_eq!(w.run().await.outcome, JobOutcome::Success);
    // 10 of 50 gone: 20%, over the default max_deactivations_percent (10%).
    w.export(&everyone[10..]);
    let sessions_before = w.sim.snapshot().sessions.len();
    let held = w.run().await;
    assert_eq!(held.outcome, JobOutcome::Held);
    let hold = held.hold.as_ref().unwrap();
    assert_eq!(hold.sent, "nothing");
    assert!(hold.breaches.iter().any(|b| b.message.contains("max_deactivations_percent")));
    assert_eq!(w.sim.snapshot().sessions.len(), sessions_before, "a held run sends nothing");
    assert_eq!(w.active_in_okta(), 50);

    // Released for at most 10 deactivations: they go out.
    let options = RunOptions { allow_deactivations: Some(10), ..RunOptions::default() };
    let cancel = w.client.cancellation().clone();
    let released = w.run_with(&options, cancel).await;
    assert_eq!(released.outcome, JobOutcome::Success, "{:?}", released.error);
    assert_eq!(released.released_by.as_deref(), Some("--allow-deactivations 10"));
    assert_eq!(w.active_in_okta(), 40);
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_session_leaves_its_users_pending_and_the_next_run_resends_them() {
    let everyone = people(20);
    let mut w = World::new(&everyone, "").await;
    w.sim.fail_next_session(SOURCE);
    let failed = w.run().await;
    assert_eq!(failed.outcome, JobOutcome::Failed);
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("did not complete"), "{error}");
    assert_eq!((failed.counts.upserted, failed.counts.not_imported), (0, 20));
    // Sent but never confirmed: pending, with no confirmed status.
    let ids: Vec<&str> = everyone.iter().map(|p| p.id.as_str()).collect();
    let entries = w.store.entries("hr", &ids).unwrap();
    assert!(entries.iter().all(|e| e.pending == Some(SentStatus::Active) && e.status.is_none()));

    let again = w.run().await;
    assert_eq!(again.outcome, JobOutcome::Success, "{:?}", again.error);
    assert_eq!(again.counts.upserted, 20, "every pending user is resent");
    let entries = w.store.entries("hr", &ids).unwrap();
    assert!(entries.iter().all(|e| e.pending.is_none() && e.status == Some(SentStatus::Active)));
    assert_eq!(w.active_in_okta(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_sends_nothing_and_says_why() {
    let mut w = World::new(&people(10), "").await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let report = w.run_with(&RunOptions::default(), cancel).await;
    assert_eq!(report.outcome, JobOutcome::Failed);
    assert!(!report.pull_complete, "a pull stopped by the shutdown is not complete");
    assert!(report.error.as_deref().unwrap_or("").contains("shutdown requested"), "{report:?}");
    assert!(w.sim.snapshot().sessions.is_empty());
}
