//! The embedded state store: one SQLite file (WAL journal), versioned migrations.
//!
//! WAL with `synchronous = NORMAL` keeps every committed transaction across a killed process
//! (only a power loss may drop the last one, which the pending marks make harmless). Each
//! trait call is one transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{
    ApprovalRecord, Confirmed, Decision, DecisionPage, DecisionQuery, DecisionRecord, Entry, Hold,
    JobState, JobWatch, OwnedGroup, RunId, RunRecord, SentStatus, StateError, StateStore,
};

mod decisions;
mod groups;
mod history;
mod pull;

/// Migrations, in order; the schema version is the number applied (`PRAGMA user_version`).
/// Never edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: users, jobs and run history.
    "CREATE TABLE users (
        job TEXT NOT NULL,
        external_id TEXT NOT NULL,
        hash TEXT,
        status TEXT,
        pending TEXT,
        profile TEXT,
        first_seen TEXT NOT NULL,
        last_seen TEXT,
        confirmed_at TEXT,
        missing_runs INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job, external_id)
    ) WITHOUT ROWID;
    CREATE TABLE jobs (
        job TEXT PRIMARY KEY,
        last_pull_users INTEGER,
        last_pull_at TEXT,
        last_full_resync_at TEXT
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        hold TEXT,
        hold_deactivations INTEGER,
        hold_creations INTEGER,
        approved_at TEXT,
        consumed_by INTEGER,
        report TEXT
    );
    CREATE INDEX runs_job ON runs (job, id);",
    // 2: webhook events (`crate::state::events`): pushed records, stored before the 202.
    "CREATE TABLE webhook_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job TEXT NOT NULL,
        idempotency_key TEXT,
        records TEXT NOT NULL,
        record_count INTEGER NOT NULL,
        urgent INTEGER NOT NULL,
        status TEXT NOT NULL,
        received_at TEXT NOT NULL,
        finished_at TEXT,
        sessions TEXT NOT NULL DEFAULT '[]',
        outcome TEXT
    );
    CREATE UNIQUE INDEX webhook_events_idempotency ON webhook_events (job, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX webhook_events_open ON webhook_events (job, seq)
        WHERE status IN ('queued', 'processing');",
    // 3: when xaas last created or triggered a session per identity source, so a restarted
    // daemon still honours Okta's 5-minute rule (`crate::okta::session::SpacingClock`).
    "CREATE TABLE session_activity (
        identity_source TEXT PRIMARY KEY,
        at TEXT NOT NULL
    );",
    // 4: which users each webhook event touches, so a termination can be imported ahead of
    // the backlog together with every earlier event for the same users (never overtaking one).
    "CREATE TABLE webhook_event_users (
        seq INTEGER NOT NULL,
        external_id TEXT NOT NULL
    );
    CREATE INDEX webhook_event_users_id ON webhook_event_users (external_id, seq);
    CREATE INDEX webhook_events_urgent ON webhook_events (job, seq)
        WHERE urgent = 1 AND status IN ('queued', 'processing');",
    // 5: what each run decided per record (the UI's run page), their counts per decision
    // (so a page never counts 100,000 rows), and the audit trail of approvals.
    "CREATE TABLE run_decisions (
        run INTEGER NOT NULL,
        external_id TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT,
        line TEXT,
        profile TEXT,
        PRIMARY KEY (run, external_id)
    ) WITHOUT ROWID;
    CREATE INDEX run_decisions_by_decision ON run_decisions (run, decision, external_id);
    CREATE TABLE run_decision_counts (
        run INTEGER NOT NULL,
        decision TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (run, decision)
    ) WITHOUT ROWID;
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        run INTEGER NOT NULL,
        approved_at TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        remote_addr TEXT
    );
    CREATE INDEX approvals_run ON approvals (run);",
    // 6: the mover (`crate::sync::delta`, "memberships"): the memberships each job gave each
    // user and Okta confirmed (a JSON array of group externalIds), and the groups each job
    // created, with the consecutive complete pulls that derived none of them.
    "ALTER TABLE users ADD COLUMN groups TEXT;
    CREATE TABLE job_groups (
        job TEXT NOT NULL,
        external_id TEXT NOT NULL,
        empty_runs INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        confirmed_at TEXT NOT NULL,
        PRIMARY KEY (job, external_id)
    ) WITHOUT ROWID;",
    // 7: how each job's latest runs went (`crate::daemon::watch`), one JSON record per job.
    "CREATE TABLE job_watch (
        job TEXT PRIMARY KEY,
        watch TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
    // 8: the sessions xaas created on each identity source and its unanswered creates
    // (`crate::okta::ledger`), one JSON record per source.
    "CREATE TABLE session_ledger (
        identity_source TEXT PRIMARY KEY,
        ledger TEXT NOT NULL
    );",
    // 9: the signed webhook requests seen within the replay window (`crate::state::events`,
    // "seen"), so a replay is known after a restart; expired rows go with the pruning.
    "CREATE TABLE seen_signatures (
        key BLOB PRIMARY KEY,
        route TEXT NOT NULL,
        event_id TEXT,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX seen_signatures_expiry ON seen_signatures (expires_at);",
    // 10: what an update changed, old → new (`decisions`), a JSON array.
    "ALTER TABLE run_decisions ADD COLUMN changes TEXT;",
    // 11: the monitoring page's sign-in records (`crate::state::events`, "sign-in"): pending
    // logins and sessions, by the digest of their secret; expired rows go with the pruning.
    "CREATE TABLE signins (
        key TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX signins_expiry ON signins (expires_at);",
    // 12: who approved, from their ID token (JSON `Approver`), for OIDC sign-in.
    "ALTER TABLE approvals ADD COLUMN approver TEXT;",
];

/// The columns [`run_row`] reads.
const RUN_COLUMNS: &str = "id, job, started_at, finished_at, outcome, hold, hold_deactivations,
    hold_creations, approved_at, consumed_by";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let reasons: Option<String> = r.get(5)?;
    let hold = reasons.map(|text| Hold {
        reasons: serde_json::from_str(&text).unwrap_or_default(),
        deactivations: r.get::<_, Option<i64>>(6).ok().flatten().unwrap_or(0) as u64,
        creations: r.get::<_, Option<i64>>(7).ok().flatten().unwrap_or(0) as u64,
    });
    Ok(RunRecord {
        id: r.get(0)?,
        job: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        outcome: r.get(4)?,
        hold,
        approved_at: r.get(8)?,
        consumed_by: r.get(9)?,
    })
}

/// The SQLite state store.
pub struct SqliteStore {
    conn: Connection,
    location: String,
    store_profiles: bool,
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|d| d.with_timezone(&Utc))
}

impl SqliteStore {
    /// Open (creating it if needed) and migrate the file at `path`.
    pub fn open(path: &Path, store_profiles: bool) -> Result<Self, StateError> {
        let location = path.display().to_string();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Backend {
                location: location.clone(),
                message: format!("cannot create its directory: {e}"),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| backend(&location, e))?;
        let mut store = Self { conn, location, store_profiles };
        // A new file gives pruned pages back (`history`); it must be set before any table.
        if store.version()? == 0 {
            store
                .conn
                .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
                .map_err(|e| store.err(e))?;
        }
        store.configure(true)?;
        store.migrate()?;
        Ok(store)
    }

    /// Open an existing file without writing to it.
    pub fn open_read_only(path: &Path, store_profiles: bool) -> Result<Self, StateError> {
        let location = path.display().to_string();
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| backend(&location, e))?;
        let store = Self { conn, location, store_profiles };
        store.configure(false)?;
        let version = store.version()?;
        if version != MIGRATIONS.len() as i64 {
            // Older: `run` migrates it; a plan reads the old layout wrongly, so refuse.
            return Err(StateError::Backend {
                location: store.location.clone(),
                message: format!(
                    "schema version {version}, this xaas needs {}: run `xaas run` once to migrate it",
                    MIGRATIONS.len()
                ),
            });
        }
        Ok(store)
    }

    /// An empty, private store in memory (tests, and `plan` before any run).
    pub fn in_memory(store_profiles: bool) -> Result<Self, StateError> {
        let location = ":memory:".to_string();
        let conn = Connection::open_in_memory().map_err(|e| backend(&location, e))?;
        let mut store = Self { conn, location, store_profiles };
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self, write: bool) -> Result<(), StateError> {
        // Another process (a run overlapping a plan) may hold the write lock briefly.
        self.conn.busy_timeout(Duration::from_secs(10)).map_err(|e| self.err(e))?;
        if write {
            self.conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn version(&self) -> Result<i64, StateError> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let found = self.version()?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StateError::TooNew { location: self.location.clone(), found, known });
        }
        let location = self.location.clone();
        let tx = self.conn.transaction().map_err(|e| backend(&location, e))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(|e| StateError::Backend {
                location: location.clone(),
                message: format!("migration {} failed: {e}", i + 1),
            })?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| backend(&location, e))?;
        }
        tx.commit().map_err(|e| backend(&location, e))
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        backend(&self.location, e)
    }
}

fn backend(location: &str, e: rusqlite::Error) -> StateError {
    StateError::Backend { location: location.to_string(), message: e.to_string() }
}

impl StateStore for SqliteStore {
    fn job_state(&self, job: &str) -> Result<JobState, StateError> {
        let mut state = self
            .conn
            .query_row(
                "SELECT last_pull_users, last_pull_at, last_full_resync_at FROM jobs WHERE job = ?1",
                [job],
                |r| {
                    Ok(JobState {
                        last_pull_users: r.get::<_, Option<i64>>(0)?.map(|n| n as u64),
                        last_pull_at: parse_ts(r.get(1)?),
                        last_full_resync_at: parse_ts(r.get(2)?),
                        known_active: 0,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or_default();
        state.known_active = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM users WHERE job = ?1 AND status = 'active'",
                [job],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| self.err(e))? as u64;
        Ok(state)
    }

    fn for_each_entry(&self, job: &str, f: &mut dyn FnMut(Entry)) -> Result<(), StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT external_id, hash, status, pending, missing_runs, groups FROM users WHERE job = ?1
                 ORDER BY external_id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([job]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let status: Option<String> = r.get(2).map_err(|e| self.err(e))?;
            let pending: Option<String> = r.get(3).map_err(|e| self.err(e))?;
            f(Entry {
                external_id: r.get(0).map_err(|e| self.err(e))?,
                hash: r.get(1).map_err(|e| self.err(e))?,
                status: status.as_deref().and_then(SentStatus::parse),
                pending: pending.as_deref().and_then(SentStatus::parse),
                missing_runs: r.get::<_, i64>(4).map_err(|e| self.err(e))?.max(0) as u32,
                groups: groups::parse(r.get(5).map_err(|e| self.err(e))?),
            });
        }
        Ok(())
    }

    fn entries(&self, job: &str, external_ids: &[&str]) -> Result<Vec<Entry>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT external_id, hash, status, pending, missing_runs, groups FROM users
                 WHERE job = ?1 AND external_id = ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for id in external_ids {
            let row = stmt
                .query_row([job, id], |r| {
                    let status: Option<String> = r.get(2)?;
                    let pending: Option<String> = r.get(3)?;
                    Ok(Entry {
                        external_id: r.get(0)?,
                        hash: r.get(1)?,
                        status: status.as_deref().and_then(SentStatus::parse),
                        pending: pending.as_deref().and_then(SentStatus::parse),
                        missing_runs: r.get::<_, i64>(4)?.max(0) as u32,
                        groups: groups::parse(r.get(5)?),
                    })
                })
                .optional()
                .map_err(|e| self.err(e))?;
            out.extend(row);
        }
        Ok(out)
    }

    fn last_run(&self, job: &str) -> Result<Option<RunRecord>, StateError> {
        let id: Option<RunId> = self
            .conn
            .query_row("SELECT MAX(id) FROM runs WHERE job = ?1", [job], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.run(job, id),
            None => Ok(None),
        }
    }

    fn confirmed_profile(
        &self,
        job: &str,
        external_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StateError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT profile FROM users WHERE job = ?1 AND external_id = ?2",
                [job, external_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn mark_pending(
        &mut self,
        job: &str,
        users: &[(&str, SentStatus)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let location = self.location.clone();
        let e = |e| backend(&location, e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO users (job, external_id, pending, first_seen) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (job, external_id) DO UPDATE SET pending = excluded.pending",
                )
                .map_err(e)?;
            let at = ts(at);
            for (id, status) in users {
                stmt.execute(params![job, id, status.as_str(), at]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn confirm(
        &mut self,
        job: &str,
        users: &[Confirmed],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let location = self.location.clone();
        let keep_profiles = self.store_profiles;
        let e = |e| backend(&location, e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            // COALESCE keeps the stored hash/profile when none is given (a leaver's
            // deactivation carries no profile).
            let mut stmt = tx
                .prepare(
                    "INSERT INTO users (job, external_id, hash, status, pending, profile, first_seen, confirmed_at)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?6)
                     ON CONFLICT (job, external_id) DO UPDATE SET
                        hash = COALESCE(excluded.hash, users.hash),
                        status = excluded.status,
                        pending = NULL,
                        profile = CASE WHEN ?7 THEN COALESCE(excluded.profile, users.profile) ELSE NULL END,
                        confirmed_at = excluded.confirmed_at",
                )
                .map_err(e)?;
            let at = ts(at);
            for u in users {
                let profile = match (&u.profile, keep_profiles) {
                    (Some(p), true) => serde_json::to_string(p).ok(),
                    _ => None,
                };
                stmt.execute(params![
                    job,
                    u.external_id,
                    u.hash,
                    u.status.as_str(),
                    profile,
                    at,
                    keep_profiles
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn set_memberships(
        &mut self,
        job: &str,
        users: &[(String, Vec<String>)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let location = self.location.clone();
        groups::set_memberships(&mut self.conn, job, users, &ts(at))
            .map_err(|e| backend(&location, e))
    }

    fn owned_groups(&self, job: &str) -> Result<Vec<OwnedGroup>, StateError> {
        groups::owned(&self.conn, job).map_err(|e| self.err(e))
    }

    fn confirm_groups(
        &mut self,
        job: &str,
        upserted: &[String],
        deleted: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let location = self.location.clone();
        groups::confirm(&mut self.conn, job, upserted, deleted, &ts(at))
            .map_err(|e| backend(&location, e))
    }

    fn record_groups(
        &mut self,
        job: &str,
        derived: &dyn Fn(&str) -> bool,
        _at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let location = self.location.clone();
        groups::record(&mut self.conn, job, derived).map_err(|e| backend(&location, e))
    }

    fn record_pull(
        &mut self,
        job: &str,
        present: &dyn Fn(&str) -> bool,
        count_missing: bool,
        users: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let location = self.location.clone();
        let e = |e| backend(&location, e);
        let tx = self.conn.transaction().map_err(e)?;
        let at = ts(at);
        pull::record(&tx, job, present, count_missing, &at).map_err(e)?;
        tx.execute(
            "INSERT INTO jobs (job, last_pull_users, last_pull_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (job) DO UPDATE SET last_pull_users = excluded.last_pull_users,
                last_pull_at = excluded.last_pull_at",
            params![job, users as i64, at],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    fn record_full_resync(&mut self, job: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO jobs (job, last_full_resync_at) VALUES (?1, ?2)
                 ON CONFLICT (job) DO UPDATE SET last_full_resync_at = excluded.last_full_resync_at",
                params![job, ts(at)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn begin_run(&mut self, job: &str, at: DateTime<Utc>) -> Result<RunId, StateError> {
        self.conn
            .execute("INSERT INTO runs (job, started_at) VALUES (?1, ?2)", params![job, ts(at)])
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_run(
        &mut self,
        run: RunId,
        outcome: &str,
        report_json: &str,
        hold: Option<&Hold>,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let hold_text = hold.and_then(|h| serde_json::to_string(&h.reasons).ok());
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, report = ?4, hold = ?5,
                    hold_deactivations = ?6, hold_creations = ?7 WHERE id = ?1",
                params![
                    run,
                    ts(at),
                    outcome,
                    report_json,
                    hold_text,
                    hold.map(|h| h.deactivations as i64),
                    hold.map(|h| h.creations as i64)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn run(&self, job: &str, run: RunId) -> Result<Option<RunRecord>, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1 AND job = ?2"),
                params![run, job],
                run_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn run_report(&self, job: &str, run: RunId) -> Result<Option<String>, StateError> {
        self.conn
            .query_row(
                "SELECT report FROM runs WHERE id = ?1 AND job = ?2",
                params![run, job],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    fn approve(&mut self, job: &str, run: RunId, at: DateTime<Utc>) -> Result<(), StateError> {
        let record = self
            .run(job, run)?
            .ok_or_else(|| StateError::NoSuchRun { job: job.to_string(), run })?;
        if record.hold.is_none() {
            return Err(StateError::NotHeld { job: job.to_string(), run });
        }
        if let Some(by) = record.consumed_by {
            return Err(StateError::AlreadyUsed { job: job.to_string(), run, by });
        }
        self.conn
            .execute("UPDATE runs SET approved_at = ?2 WHERE id = ?1", params![run, ts(at)])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn take_approval(
        &mut self,
        job: &str,
        deactivations: u64,
        creations: u64,
        by: RunId,
    ) -> Result<Option<RunId>, StateError> {
        let found: Option<RunId> = self
            .conn
            .query_row(
                "SELECT id FROM runs WHERE job = ?1 AND hold IS NOT NULL AND approved_at IS NOT NULL
                    AND consumed_by IS NULL AND hold_deactivations >= ?2 AND hold_creations >= ?3
                 ORDER BY id DESC LIMIT 1",
                params![job, deactivations as i64, creations as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(id) = found {
            self.conn
                .execute("UPDATE runs SET consumed_by = ?2 WHERE id = ?1", params![id, by])
                .map_err(|e| self.err(e))?;
        }
        Ok(found)
    }

    fn record_decisions(
        &mut self,
        run: RunId,
        decisions: &mut dyn Iterator<Item = DecisionRecord>,
    ) -> Result<u64, StateError> {
        self.write_decisions(run, decisions)
    }

    fn decisions(&self, run: RunId, query: &DecisionQuery) -> Result<DecisionPage, StateError> {
        self.decision_page(run, query)
    }

    fn decision_counts(&self, run: RunId) -> Result<BTreeMap<Decision, u64>, StateError> {
        self.counts_of(run)
    }

    fn runs(
        &self,
        job: Option<&str>,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR job = ?1) AND id < ?2
                 ORDER BY id DESC LIMIT ?3"
            ))
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![job, before.unwrap_or(RunId::MAX), limit], run_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn run_by_id(&self, run: RunId) -> Result<Option<RunRecord>, StateError> {
        self.conn
            .query_row(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"), [run], run_row)
            .optional()
            .map_err(|e| self.err(e))
    }

    fn record_approval(&mut self, a: &ApprovalRecord) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO approvals (job, run, approved_at, approved_by, remote_addr, approver)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.job,
                    a.run,
                    a.approved_at,
                    a.approved_by,
                    a.remote_addr,
                    a.approver.as_ref().and_then(|p| serde_json::to_string(p).ok())
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn approvals(&self, run: RunId) -> Result<Vec<ApprovalRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT job, run, approved_at, approved_by, remote_addr, approver FROM approvals
                 WHERE run = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run], |r| {
                Ok(ApprovalRecord {
                    job: r.get(0)?,
                    run: r.get(1)?,
                    approved_at: r.get(2)?,
                    approved_by: r.get(3)?,
                    remote_addr: r.get(4)?,
                    approver: r
                        .get::<_, Option<String>>(5)?
                        .and_then(|t| serde_json::from_str(&t).ok()),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn prune_history(
        &mut self,
        policy: &crate::state::config::HistoryPolicy,
        now: DateTime<Utc>,
        max_rows: usize,
    ) -> Result<crate::state::config::Pruned, StateError> {
        self.prune(policy, now, max_rows)
    }

    fn size_bytes(&self) -> Option<(u64, u64)> {
        self.file_size()
    }

    fn job_watch(&self, job: &str) -> Result<JobWatch, StateError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT watch FROM job_watch WHERE job = ?1", [job], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(super::watch_of(text.as_deref(), &self.location))
    }

    fn set_job_watch(&mut self, job: &str, watch: &JobWatch) -> Result<(), StateError> {
        let text = serde_json::to_string(watch).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO job_watch (job, watch, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job) DO UPDATE SET watch = ?2, updated_at = ?3",
                params![job, text, ts(Utc::now())],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
