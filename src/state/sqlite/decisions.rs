//! The per-record decisions of each run (the run page): written in one transaction at the end
//! of a run, read a keyset page at a time, changes first.
//!
//! Pages list the decisions in [`Decision::ALL`] order (created, updated, reactivated,
//! deactivated, rejected, not yet started; unchanged last), by externalId within each, so what
//! a run changed is on its first page. Each decision is one range of the
//! `run_decisions_by_decision` index, so a page, however deep, is at most one range read per
//! decision. The page cursor (`next_after`) is `decision:externalId`.

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
        let limit = query.limit.clamp(1, 1_000);
        let q = query.q.as_deref().filter(|q| !q.is_empty());
        let cursor = query.after.as_deref().map(parse_cursor);
        let mut items: Vec<DecisionRecord> = Vec::with_capacity(limit + 1);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT external_id, decision, reason, line, profile, changes FROM run_decisions
                 WHERE run = ?1 AND decision = ?2
                   AND (external_id > ?3 OR (?4 AND external_id = ?3))
                   AND (?5 IS NULL OR external_id < ?5)
                 ORDER BY external_id LIMIT ?6",
            )
            .map_err(|e| self.err(e))?;
        for d in Decision::ALL {
            if query.decision.is_some_and(|only| only != d) {
                continue;
            }
            // Past the cursor's decision entirely, or within it after its externalId.
            let (low, inclusive) = match cursor {
                Some((c, _)) if rank(d) < rank(c) => continue,
                Some((c, id)) if c == d => match q {
                    Some(q) if q > id => (q.to_string(), true),
                    _ => (id.to_string(), false),
                },
                _ => (q.unwrap_or_default().to_string(), true),
            };
            let high = q.and_then(prefix_end);
            let want = (limit + 1 - items.len()) as i64;
            let rows = stmt
                .query_map(params![run, d.as_str(), low, inclusive, high, want], decision_row)
                .map_err(|e| self.err(e))?;
            for row in rows {
                items.push(row.map_err(|e| self.err(e))?);
            }
            if items.len() > limit {
                break;
            }
        }
        let next_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| format!("{}:{}", d.decision.as_str(), d.external_id))
        } else {
            None
        };
        Ok(DecisionPage { items, next_after })
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

/// Where a decision comes on the page.
fn rank(d: Decision) -> usize {
    Decision::ALL.iter().position(|x| *x == d).unwrap_or(usize::MAX)
}

/// `decision:externalId`; a bare externalId (a cursor from before changes-first pages) is
/// read as being in the first decision.
fn parse_cursor(after: &str) -> (Decision, &str) {
    after
        .split_once(':')
        .and_then(|(d, id)| Some((Decision::parse(d)?, id)))
        .unwrap_or((Decision::ALL[0], after))
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

/// The smallest string greater than every string starting with `prefix` (for a prefix
/// search as a range on the index); `None` when there is none.
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
