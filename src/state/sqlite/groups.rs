//! The mover's state in SQLite: each user's confirmed memberships (`users.groups`, a JSON
//! array) and the groups each job created (`job_groups`). One transaction per call.

use rusqlite::{Connection, params};

use super::OwnedGroup;

/// The stored memberships of a user (`NULL`, or a row written before migration 6: none).
pub(super) fn parse(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

pub(super) fn set_memberships(
    conn: &mut Connection,
    job: &str,
    users: &[(String, Vec<String>)],
    at: &str,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO users (job, external_id, groups, first_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (job, external_id) DO UPDATE SET groups = excluded.groups",
        )?;
        for (id, groups) in users {
            let text = if groups.is_empty() {
                None
            } else {
                Some(serde_json::to_string(groups).expect("a list of strings serializes"))
            };
            stmt.execute(params![job, id, text, at])?;
        }
    }
    tx.commit()
}

pub(super) fn owned(conn: &Connection, job: &str) -> rusqlite::Result<Vec<OwnedGroup>> {
    let mut stmt = conn.prepare_cached(
        "SELECT external_id, empty_runs FROM job_groups WHERE job = ?1 ORDER BY external_id",
    )?;
    let rows = stmt.query_map([job], |r| {
        Ok(OwnedGroup { external_id: r.get(0)?, empty_runs: r.get::<_, i64>(1)?.max(0) as u32 })
    })?;
    rows.collect()
}

pub(super) fn confirm(
    conn: &mut Connection,
    job: &str,
    upserted: &[String],
    deleted: &[String],
    at: &str,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut up = tx.prepare(
            "INSERT INTO job_groups (job, external_id, empty_runs, created_at, confirmed_at)
             VALUES (?1, ?2, 0, ?3, ?3)
             ON CONFLICT (job, external_id) DO UPDATE SET empty_runs = 0,
                confirmed_at = excluded.confirmed_at",
        )?;
        for id in upserted {
            up.execute(params![job, id, at])?;
        }
        let mut del = tx.prepare("DELETE FROM job_groups WHERE job = ?1 AND external_id = ?2")?;
        for id in deleted {
            del.execute(params![job, id])?;
        }
    }
    tx.commit()
}

pub(super) fn record(
    conn: &mut Connection,
    job: &str,
    derived: &dyn Fn(&str) -> bool,
) -> rusqlite::Result<()> {
    let owned = owned(conn, job)?;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx
            .prepare("UPDATE job_groups SET empty_runs = ?3 WHERE job = ?1 AND external_id = ?2")?;
        for g in owned {
            let runs = g.empty_runs_after(derived(&g.external_id));
            if runs != g.empty_runs {
                stmt.execute(params![job, g.external_id, i64::from(runs)])?;
            }
        }
    }
    tx.commit()
}
