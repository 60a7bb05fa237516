//! Retention of the SQLite file (`state.history`): old runs, their decisions and approvals,
//! finished webhook events and expired seen signatures are deleted in small batches, and the pages they held are
//! given back to the file system (incremental vacuum).
//!
//! Every statement is its own short transaction, so an import writing to the same file waits
//! at most one batch ([`CHUNK`] rows) for the write lock. Never pruned: the users' state
//! (hashes, confirmed profiles, memberships, missing counters), the jobs' facts, owned
//! groups, the session records, the jobs' watch records, and held runs not released yet.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, ts};
use crate::state::StateError;
use crate::state::config::{HistoryPolicy, Pruned};

/// Rows deleted per statement.
const CHUNK: usize = 2_000;
/// Pages handed back to the file system per incremental vacuum step (4 KiB each).
const VACUUM_PAGES: u32 = 2_048;

impl SqliteStore {
    /// One pruning pass of at most about `max_rows` rows.
    pub(super) fn prune(
        &mut self,
        policy: &HistoryPolicy,
        now: DateTime<Utc>,
        max_rows: usize,
    ) -> Result<Pruned, StateError> {
        let mut pruned = Pruned::default();
        let mut budget = max_rows.max(1);
        if let Some(age) = policy.keep_runs_for {
            let cutoff = ts(now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX));
            while budget > 0 {
                let Some(run) = self.prunable_run(&cutoff, policy.keep_runs)? else { break };
                if !self.prune_run(run, &mut budget, &mut pruned)? {
                    self.vacuum_step()?;
                    return Ok(pruned);
                }
            }
        }
        if let Some(age) = policy.keep_events_for {
            let cutoff = ts(now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX));
            while budget > 0 {
                let chunk = CHUNK.min(budget);
                let n = self.prune_events(&cutoff, chunk)?;
                pruned.events += n as u64;
                budget -= n;
                if n < chunk {
                    break;
                }
            }
        }
        while budget > 0 {
            let chunk = CHUNK.min(budget);
            let n = self.prune_signatures(now.timestamp(), chunk)?;
            pruned.signatures += n as u64;
            budget -= n;
            if n < chunk {
                break;
            }
        }
        pruned.done = budget > 0;
        self.vacuum_step()?;
        Ok(pruned)
    }

    /// The oldest run that may go: finished (or started, for one a dead process never
    /// finished) before `cutoff`, not among the last `keep` of its job, and not a held run
    /// still waiting (no approval used, no later success of its job).
    fn prunable_run(&self, cutoff: &str, keep: u32) -> Result<Option<i64>, StateError> {
        self.conn
            .query_row(
                "SELECT r.id FROM runs r
                 WHERE COALESCE(r.finished_at, r.started_at) < ?1
                   AND (SELECT COUNT(*) FROM runs n WHERE n.job = r.job AND n.id > r.id) >= ?2
                   AND NOT (r.hold IS NOT NULL AND r.consumed_by IS NULL AND NOT EXISTS (
                       SELECT 1 FROM runs s WHERE s.job = r.job AND s.id > r.id
                         AND s.outcome IN ('success', 'completed_with_rejections')))
                 ORDER BY r.id LIMIT 1",
                params![cutoff, keep],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Delete `run`'s decisions chunk by chunk, then the run itself. `false` when the budget
    /// ran out first (the rest goes next pass).
    fn prune_run(
        &mut self,
        run: i64,
        budget: &mut usize,
        pruned: &mut Pruned,
    ) -> Result<bool, StateError> {
        loop {
            let chunk = CHUNK.min(*budget);
            let n = self
                .conn
                .execute(
                    "DELETE FROM run_decisions WHERE run = ?1 AND external_id IN (
                        SELECT external_id FROM run_decisions WHERE run = ?1 LIMIT ?2)",
                    params![run, chunk as i64],
                )
                .map_err(|e| self.err(e))?;
            pruned.decisions += n as u64;
            *budget = budget.saturating_sub(n);
            if n < chunk {
                break;
            }
            if *budget == 0 {
                return Ok(false);
            }
        }
        let tx = self.conn.transaction().map_err(|e| backend_of(&self.location, e))?;
        for sql in [
            "DELETE FROM run_decision_counts WHERE run = ?1",
            "DELETE FROM approvals WHERE run = ?1",
            "DELETE FROM runs WHERE id = ?1",
        ] {
            tx.execute(sql, [run]).map_err(|e| backend_of(&self.location, e))?;
        }
        tx.commit().map_err(|e| backend_of(&self.location, e))?;
        pruned.runs += 1;
        *budget = budget.saturating_sub(1);
        Ok(true)
    }

    /// Delete up to `limit` finished events received before `cutoff` (and which users they
    /// touched). Queued and processing events are never pruned.
    fn prune_events(&mut self, cutoff: &str, limit: usize) -> Result<usize, StateError> {
        let select = "SELECT seq FROM webhook_events
             WHERE status NOT IN ('queued', 'processing') AND COALESCE(finished_at, received_at) < ?1
             ORDER BY seq LIMIT ?2";
        let tx = self.conn.transaction().map_err(|e| backend_of(&self.location, e))?;
        tx.execute(
            &format!("DELETE FROM webhook_event_users WHERE seq IN ({select})"),
            params![cutoff, limit as i64],
        )
        .map_err(|e| backend_of(&self.location, e))?;
        let n = tx
            .execute(
                &format!("DELETE FROM webhook_events WHERE seq IN ({select})"),
                params![cutoff, limit as i64],
            )
            .map_err(|e| backend_of(&self.location, e))?;
        tx.commit().map_err(|e| backend_of(&self.location, e))?;
        Ok(n)
    }

    /// Delete up to `limit` seen signatures expired before `now` (unix seconds): the timestamp
    /// check refuses their messages anyway. Whatever the history policy.
    /// Expired sign-in records (pending logins, sessions) go the same way.
    fn prune_signatures(&mut self, now: i64, limit: usize) -> Result<usize, StateError> {
        let signatures = self
            .conn
            .execute(
                "DELETE FROM seen_signatures WHERE key IN
                     (SELECT key FROM seen_signatures WHERE expires_at < ?1 LIMIT ?2)",
                params![now, limit as i64],
            )
            .map_err(|e| backend_of(&self.location, e))?;
        let signins = self
            .conn
            .execute(
                "DELETE FROM signins WHERE key IN
                     (SELECT key FROM signins WHERE expires_at < ?1 LIMIT ?2)",
                params![now, (limit - signatures) as i64],
            )
            .map_err(|e| backend_of(&self.location, e))?;
        Ok(signatures + signins)
    }

    /// Give free pages back to the file system, a step at a time (files created before
    /// incremental vacuum was on only reuse them).
    fn vacuum_step(&self) -> Result<(), StateError> {
        let mode: i64 =
            self.conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        if mode == 2 {
            // Each step of the statement frees pages: run it to the end.
            let mut stmt = self
                .conn
                .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while rows.next().map_err(|e| self.err(e))?.is_some() {}
        }
        Ok(())
    }

    /// The file's size in bytes, and how much of it is free pages.
    pub(super) fn file_size(&self) -> Option<(u64, u64)> {
        let pragma = |name: &str| -> Option<u64> {
            self.conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .ok()
                .map(|v| v.max(0) as u64)
        };
        let page = pragma("page_size")?;
        Some((pragma("page_count")? * page, pragma("freelist_count")? * page))
    }
}

fn backend_of(location: &str, e: rusqlite::Error) -> StateError {
    super::backend(location, e)
}
