//! Recording a complete pull: the users' missing-run counters, streamed in key order.
//!
//! The job's users are read a page at a time along the primary key (`job, external_id`), and
//! only the rows whose counter changes are written: a user back in the pull after being
//! missing, and (when the pull counts) a user missing from it. A pull of a million people of
//! whom a thousand changed writes a thousand rows, with one page of ids in memory.
//!
//! `last_seen` is written on those changes only: a user missing from the pull keeps the time
//! of the last pull it was in (the job's `last_pull_at` before this one); a user present is
//! seen at the job's `last_pull_at`.

use rusqlite::{OptionalExtension, Transaction, params};

/// Rows read per page.
const PAGE: i64 = 1000;

/// Update the counters of `job`'s users for one pull at `at` (see the module doc).
pub(super) fn record(
    tx: &Transaction<'_>,
    job: &str,
    present: &dyn Fn(&str) -> bool,
    count_missing: bool,
    at: &str,
) -> rusqlite::Result<()> {
    let previous_pull: Option<String> = tx
        .query_row("SELECT last_pull_at FROM jobs WHERE job = ?1", [job], |r| r.get(0))
        .optional()?
        .flatten();
    let mut first = tx.prepare(
        "SELECT external_id, missing_runs FROM users WHERE job = ?1
         ORDER BY external_id LIMIT ?2",
    )?;
    let mut next = tx.prepare(
        "SELECT external_id, missing_runs FROM users WHERE job = ?1 AND external_id > ?2
         ORDER BY external_id LIMIT ?3",
    )?;
    let mut back = tx.prepare(
        "UPDATE users SET missing_runs = 0, last_seen = ?3 WHERE job = ?1 AND external_id = ?2",
    )?;
    let mut gone = tx.prepare(
        "UPDATE users SET missing_runs = missing_runs + 1,
            last_seen = CASE WHEN missing_runs = 0 THEN coalesce(?3, last_seen) ELSE last_seen END
         WHERE job = ?1 AND external_id = ?2",
    )?;
    let row = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?));
    let mut page: Vec<(String, i64)> =
        first.query_map(params![job, PAGE], row)?.collect::<Result<_, _>>()?;
    while !page.is_empty() {
        for (id, missing) in &page {
            if present(id) {
                if *missing != 0 {
                    back.execute(params![job, id, at])?;
                }
            } else if count_missing {
                gone.execute(params![job, id, previous_pull])?;
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
        let after = page.pop().map(|(id, _)| id).unwrap_or_default();
        page = next.query_map(params![job, after, PAGE], row)?.collect::<Result<_, _>>()?;
    }
    Ok(())
}
