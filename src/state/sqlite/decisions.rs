//! The per-record decisions of each run (the run page): written in one transaction at the end
//! of a run, read a keyset page at a time, changes first.
//!
//! Pages list the decisions in [`Decision::ALL`] order (created, updated, reactivated,
//! deactivated, rejected, not yet started; unchanged last), by externalId within each, so what
//! a run changed is on its first page. Each decision is one range of the
//! `run_decisions_by_decision` index, so a page, however deep, is at most one range read per
//! decision (what to read is [`DecisionQuery::ranges`], for every backend). The page cursor
//! (`next_after`) is `decision:externalId`.

use std::collections::BTreeMap;

use rusqlite::params;

use super::SqliteStore;
use crate::state::{
    AttributeChange, Decision, DecisionPage, DecisionQuery, DecisionRecord, RunId, StateError,
};

impl SqliteStore {
    pub(super) fn write_decisions(
        &mut self,
        run: RunId,
        decisions: &mut dyn Iterator<Item = DecisionRecord>,
    ) -> Result<u64, StateError> {
        let location = self.location.clone();
        let e = |e| super::backend(&location, e);
        let tx = self.conn.transaction().map_err(e)?;
        let mut counts: BTreeMap<Decision, u64> = BTreeMap::new();
        let mut written = 0u64;
        {
            // A record rejected twice (or rejected and kept) keeps its first decision.
            let mut stmt = tx
                .prepare(
                    "INSERT OR IGNORE INTO run_decisions
                        (run, external_id, decision, reason, line, profile, changes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            for d in decisions {
                let profile = d.profile.as_ref().map(|p| p.to_string());
                let changes = (!d.changes.is_empty())
                    .then(|| serde_json::to_string(&d.changes).unwrap_or_default());
                let n = stmt
                    .execute(params![
                        run,
                        d.external_id,
                        d.decision.as_str(),
                        d.reason,
                        d.line,
                        profile,
                        changes
                    ])
                    .map_err(e)?;
                if n > 0 {
                    *counts.entry(d.decision).or_default() += 1;
                    written += 1;
                }
            }
            let mut stmt = tx
                .prepare(
                    "INSERT INTO run_decision_counts (run, decision, n) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run, decision) DO UPDATE SET n = n + excluded.n",
                )
                .map_err(e)?;
            for (d, n) in &counts {
                stmt.execute(params![run, d.as_str(), *n as i64]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(written)
    }

    pub(super) fn decision_page(
        &self,
        run: RunId,
        query: &DecisionQuery,
    ) -> Result<DecisionPage, StateError> {
        let limit = query.page_size();
        let mut items: Vec<DecisionRecord> = Vec::with_capacity(limit + 1);
        for r in query.ranges() {
            // Plain range bounds, so each read is one range of the index (an `OR` or an
            // `IS NULL` test in the bounds would make SQLite scan the rest of the decision).
            let mut sql = String::from(
                "SELECT external_id, decision, reason, line, profile, changes FROM run_decisions
                 WHERE run = ?1 AND decision = ?2",
            );
            sql.push_str(if r.inclusive {
                " AND external_id >= ?3"
            } else {
                " AND external_id > ?3"
            });
            if r.high.is_some() {
                sql.push_str(" AND external_id < ?5");
            }
            sql.push_str(" ORDER BY external_id LIMIT ?4");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
            let want = (limit + 1 - items.len()) as i64;
            let d = r.decision.as_str();
            let rows = match &r.high {
                Some(high) => stmt.query_map(params![run, d, r.low, want, high], decision_row),
                None => stmt.query_map(params![run, d, r.low, want], decision_row),
            }
            .map_err(|e| self.err(e))?;
            for row in rows {
                items.push(row.map_err(|e| self.err(e))?);
            }
            if items.len() > limit {
                break;
            }
        }
        Ok(DecisionPage::cut(items, limit))
    }

    pub(super) fn counts_of(&self, run: RunId) -> Result<BTreeMap<Decision, u64>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT decision, n FROM run_decision_counts WHERE run = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (d, n) = row.map_err(|e| self.err(e))?;
            if let Some(d) = Decision::parse(&d) {
                out.insert(d, n.max(0) as u64);
            }
        }
        Ok(out)
    }
}

fn decision_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRecord> {
    let decision: String = r.get(1)?;
    let profile: Option<String> = r.get(4)?;
    let changes: Option<String> = r.get(5)?;
    Ok(DecisionRecord {
        external_id: r.get(0)?,
        // Written by this module from `Decision::as_str`; an unknown one reads as unchanged.
        decision: Decision::parse(&decision).unwrap_or(Decision::Unchanged),
        reason: r.get(2)?,
        line: r.get(3)?,
        profile: profile.and_then(|p| serde_json::from_str(&p).ok()),
        changes: changes
            .and_then(|c| serde_json::from_str::<Vec<AttributeChange>>(&c).ok())
            .unwrap_or_default(),
    })
}
