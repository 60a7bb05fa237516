//! The SQLite event log: one writer thread group-commits the appends (see the parent module),
//! a second connection reads and updates.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use tokio::sync::oneshot;

use super::*;
use crate::state::StateError;

/// The most appends written in one transaction (bounds a commit's latency under a flood).
const MAX_GROUP: usize = 1024;

type Reply = oneshot::Sender<Result<Stored, StateError>>;

/// The SQLite event log. Cheap to clone; every clone shares the writer thread, which stops
/// once the last clone is dropped.
#[derive(Clone)]
pub struct SqliteEventStore {
    appends: mpsc::Sender<(NewEvent, Reply)>,
    reader: Arc<Mutex<Connection>>,
    location: Arc<str>,
}

impl std::fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventStore").field("location", &self.location).finish()
    }
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn backend(location: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Backend { location: location.to_string(), message: e.to_string() }
}

/// A connection on the state file, durable on commit.
fn connect(path: &Path, location: &str) -> Result<Connection, StateError> {
    let conn = Connection::open(path).map_err(|e| backend(location, e))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(|e| backend(location, e))?;
    // FULL: the WAL is synced at every commit, so a committed event survives a power loss
    // too (the 202 promises it is stored).
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .map_err(|e| backend(location, e))?;
    Ok(conn)
}

impl SqliteEventStore {
    /// Open the state file at `path` (creating and migrating it like the state store does)
    /// and start the writer thread.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let location = path.display().to_string();
        // The state store owns the schema: opening it runs any pending migration.
        drop(crate::state::sqlite::SqliteStore::open(path, false)?);
        let writer = connect(path, &location)?;
        let reader = connect(path, &location)?;
        let (tx, rx) = mpsc::channel();
        let loc = location.clone();
        std::thread::Builder::new()
            .name("xaas-events-writer".into())
            .spawn(move || write_loop(writer, rx, &loc))
            .map_err(|e| backend(&location, format!("cannot start the event writer: {e}")))?;
        Ok(Self { appends: tx, reader: Arc::new(Mutex::new(reader)), location: location.into() })
    }

    /// Store `e` durably. Returns once it is committed (or is a duplicate of a committed one).
    pub async fn append(&self, e: NewEvent) -> Result<Stored, StateError> {
        let (tx, rx) = oneshot::channel();
        self.appends.send((e, tx)).map_err(|_| self.err("the event writer has stopped"))?;
        rx.await.map_err(|_| self.err("the event writer stopped before answering"))?
    }

    /// Remember a signed request that stores no event (see [`EventStore::claim_signature`]).
    pub async fn claim_signature(&self, sig: SeenSignature) -> Result<Claim, StateError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = store.conn()?;
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| store.err(e))?;
            let now = Utc::now().timestamp();
            let claim = seen::claim(&tx, &sig, None, now).map_err(|e| store.err(e))?;
            tx.commit().map_err(|e| store.err(e))?;
            Ok(claim)
        })
        .await
        .map_err(|e| self.err(format!("the signature check stopped: {e}")))?
    }

    /// One event, by id.
    pub fn get(&self, id: &str) -> Result<Option<EventView>, StateError> {
        let conn = self.conn()?;
        conn.query_row(
            &format!("SELECT {VIEW_COLUMNS} FROM webhook_events WHERE id = ?1"),
            [id],
            view,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// The most recent events, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<EventView>, StateError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VIEW_COLUMNS} FROM webhook_events ORDER BY seq DESC LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map([limit], view).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Events of `jobs` still to import (queued, or processing when a session was
    /// interrupted), oldest first, up to about `max_records` records: it stops after the event
    /// that reaches `max_records`, and always returns at least one event when there is one.
    pub fn pending(
        &self,
        jobs: &[String],
        max_records: usize,
    ) -> Result<Vec<QueuedEvent>, StateError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        // Terminations first: the urgent events, plus every earlier open event that touches
        // one of their users (and, transitively, of those events' users), so no user's
        // events are imported out of order. `None`: nothing urgent, plain arrival order.
        let only = self.urgent_closure(&conn, jobs)?;
        let sql = format!(
            "SELECT id, seq, job, records, urgent, status, sessions, record_count
             FROM webhook_events
             WHERE status IN ('queued', 'processing') AND job IN ({})
             ORDER BY seq",
            placeholders(jobs.len())
        );
        let sql = match &only {
            None => sql,
            Some(seqs) => sql.replace(
                "ORDER BY seq",
                &format!(
                    "AND seq IN ({}) ORDER BY seq",
                    seqs.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
                ),
            ),
        };
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params_from_iter(jobs)).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut total = 0usize;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let read = || -> rusqlite::Result<(QueuedEvent, i64)> {
                let status: String = r.get(5)?;
                let sessions: String = r.get(6)?;
                Ok((
                    QueuedEvent {
                        id: r.get(0)?,
                        seq: r.get(1)?,
                        job: r.get(2)?,
                        records: r.get(3)?,
                        urgent: r.get(4)?,
                        status: EventStatus::parse(&status).unwrap_or(EventStatus::Queued),
                        sessions: serde_json::from_str(&sessions).unwrap_or_default(),
                    },
                    r.get(7)?,
                ))
            };
            let (event, count) = read().map_err(|e| self.err(e))?;
            out.push(event);
            total = total.saturating_add(usize::try_from(count).unwrap_or(0));
            if total >= max_records {
                break;
            }
        }
        Ok(out)
    }

    /// The open events an urgent flush must take (see [`EventStore::pending`]); `None` when no
    /// open event is urgent.
    fn urgent_closure(
        &self,
        conn: &Connection,
        jobs: &[String],
    ) -> Result<Option<Vec<i64>>, StateError> {
        let sql = format!(
            "SELECT seq FROM webhook_events
             WHERE urgent = 1 AND status IN ('queued', 'processing') AND job IN ({}) ORDER BY seq",
            placeholders(jobs.len())
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let urgent: Vec<i64> = stmt
            .query_map(params_from_iter(jobs), |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))?;
        let Some(&last) = urgent.last() else { return Ok(None) };
        let open = format!(
            "SELECT seq FROM webhook_events
             WHERE status = 'processing' AND job IN ({})",
            placeholders(jobs.len())
        );
        let mut stmt = conn.prepare(&open).map_err(|e| self.err(e))?;
        let processing: Vec<i64> = stmt
            .query_map(params_from_iter(jobs), |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))?;
        let mut ids_of = conn
            .prepare_cached("SELECT external_id FROM webhook_event_users WHERE seq = ?1")
            .map_err(|e| self.err(e))?;
        let mut earlier = conn
            .prepare_cached(
                "SELECT u.seq FROM webhook_event_users u JOIN webhook_events e ON e.seq = u.seq
                 WHERE u.external_id = ?1 AND u.seq < ?2
                   AND e.status IN ('queued', 'processing')",
            )
            .map_err(|e| self.err(e))?;
        let mut set: std::collections::BTreeSet<i64> =
            urgent.iter().chain(processing.iter()).copied().collect();
        let mut frontier: Vec<i64> = set.iter().copied().collect();
        let mut seen_ids = std::collections::HashSet::new();
        while let Some(seq) = frontier.pop() {
            let ids: Vec<String> = ids_of
                .query_map([seq], |r| r.get(0))
                .and_then(Iterator::collect)
                .map_err(|e| self.err(e))?;
            for id in ids {
                if !seen_ids.insert(id.clone()) {
                    continue;
                }
                let seqs: Vec<i64> = earlier
                    .query_map(params![id, last], |r| r.get(0))
                    .and_then(Iterator::collect)
                    .map_err(|e| self.err(e))?;
                for s in seqs {
                    if set.insert(s) {
                        frontier.push(s);
                    }
                }
            }
        }
        Ok(Some(set.into_iter().collect()))
    }

    /// How many events of `jobs` are still to import, and whether any of them is urgent.
    pub fn has_pending(&self, jobs: &[String]) -> Result<(usize, bool), StateError> {
        if jobs.is_empty() {
            return Ok((0, false));
        }
        let conn = self.conn()?;
        let sql = format!(
            "SELECT COUNT(*), COALESCE(MAX(urgent), 0) FROM webhook_events
             WHERE status IN ('queued', 'processing') AND job IN ({})",
            placeholders(jobs.len())
        );
        conn.query_row(&sql, params_from_iter(jobs), |r| {
            Ok((usize::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get::<_, i64>(1)? != 0))
        })
        .map_err(|e| self.err(e))
    }

    /// The events `ids` are in an import session (`session_id`, once Okta gave one).
    pub fn mark_processing(
        &self,
        ids: &[String],
        session_id: Option<&str>,
    ) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut select = tx
                .prepare_cached("SELECT sessions FROM webhook_events WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE webhook_events SET status = 'processing', sessions = ?2 WHERE id = ?1",
                )
                .map_err(|e| self.err(e))?;
            for id in ids {
                let Some(text) = select
                    .query_row([id], |r| r.get::<_, String>(0))
                    .optional()
                    .map_err(|e| self.err(e))?
                else {
                    continue;
                };
                let mut sessions: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
                if let Some(s) = session_id
                    && !sessions.iter().any(|x| x == s)
                {
                    sessions.push(s.to_string());
                }
                let sessions = serde_json::to_string(&sessions).map_err(|e| self.err(e))?;
                update.execute(params![id, sessions]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Record how the events ended: their status and the import's outcome (JSON).
    pub fn finish(
        &self,
        outcomes: &[(String, EventStatus, serde_json::Value)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE webhook_events SET status = ?2, outcome = ?3, finished_at = ?4
                     WHERE id = ?1",
                )
                .map_err(|e| self.err(e))?;
            let at = ts(at);
            for (id, status, outcome) in outcomes {
                let outcome = serde_json::to_string(outcome).map_err(|e| self.err(e))?;
                update
                    .execute(params![id, status.as_str(), outcome, at])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Events not finished yet (queued or processing), across every job: the queue depth.
    pub fn queued_total(&self) -> Result<u64, StateError> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT COUNT(*) FROM webhook_events WHERE status IN ('queued', 'processing')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(|e| self.err(e))
    }

    /// Record that xaas created or triggered a session of `identity_source` at `at`.
    pub fn record_session_activity(
        &self,
        identity_source: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO session_activity (identity_source, at) VALUES (?1, ?2)
             ON CONFLICT (identity_source) DO UPDATE SET at = excluded.at",
            rusqlite::params![identity_source, at.to_rfc3339()],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When xaas last created or triggered a session of `identity_source`, if ever.
    pub fn session_activity(
        &self,
        identity_source: &str,
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        let conn = self.conn()?;
        let text: Option<String> = conn
            .query_row(
                "SELECT at FROM session_activity WHERE identity_source = ?1",
                [identity_source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|d| d.with_timezone(&Utc)))
    }

    /// The stored session ledger of `identity_source` (JSON), if any.
    pub fn session_ledger_text(&self, identity_source: &str) -> Result<Option<String>, StateError> {
        self.conn()?
            .query_row(
                "SELECT ledger FROM session_ledger WHERE identity_source = ?1",
                [identity_source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Replace the stored session ledger of `identity_source`.
    pub fn record_session_ledger(
        &self,
        identity_source: &str,
        ledger: &str,
    ) -> Result<(), StateError> {
        self.conn()?
            .execute(
                "INSERT INTO session_ledger (identity_source, ledger) VALUES (?1, ?2)
                 ON CONFLICT (identity_source) DO UPDATE SET ledger = excluded.ledger",
                rusqlite::params![identity_source, ledger],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Store the sign-in record `key` until `expires_at` (replacing one with that key).
    pub fn put_signin(
        &self,
        key: &str,
        data: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        self.conn()?
            .execute(
                "INSERT INTO signins (key, data, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                params![key, data, expires_at.timestamp_millis()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The sign-in record `key`, unless it expired before `now`.
    pub fn signin(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>, StateError> {
        self.conn()?
            .query_row(
                "SELECT data FROM signins WHERE key = ?1 AND expires_at > ?2",
                params![key, now.timestamp_millis()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Remove the sign-in record `key` and return it (unless it had expired): of two
    /// callers, one gets it.
    pub fn take_signin(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>, StateError> {
        let taken: Option<(String, i64)> = self
            .conn()?
            .query_row(
                "DELETE FROM signins WHERE key = ?1 RETURNING data, expires_at",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(taken.filter(|(_, exp)| *exp > now.timestamp_millis()).map(|(data, _)| data))
    }

    /// Remove the sign-in record `key` (none: nothing to do).
    pub fn delete_signin(&self, key: &str) -> Result<(), StateError> {
        self.conn()?
            .execute("DELETE FROM signins WHERE key = ?1", [key])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StateError> {
        // A panic while holding the lock leaves the connection usable (each call is one
        // statement or one transaction, rolled back on drop).
        Ok(self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        backend(&self.location, e)
    }
}

const VIEW_COLUMNS: &str =
    "id, job, status, received_at, finished_at, record_count, sessions, outcome";

fn view(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventView> {
    let status: String = r.get(2)?;
    let sessions: String = r.get(6)?;
    let outcome: Option<String> = r.get(7)?;
    Ok(EventView {
        id: r.get(0)?,
        job: r.get(1)?,
        status: EventStatus::parse(&status).unwrap_or(EventStatus::Queued),
        received_at: r.get(3)?,
        finished_at: r.get(4)?,
        record_count: r.get(5)?,
        sessions: serde_json::from_str(&sessions).unwrap_or_default(),
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
    })
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The writer thread: group commit (see the module doc). Returns when every sender is gone.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<(NewEvent, Reply)>, location: &str) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let answers = write_group(&mut conn, &group, location);
        for ((_, reply), answer) in group.into_iter().zip(answers) {
            // The caller may have gone (its request was cancelled); the event is stored anyway.
            let _ = reply.send(answer);
        }
    }
}

/// Write `group` in one transaction; one answer per event, in order.
fn write_group(
    conn: &mut Connection,
    group: &[(NewEvent, Reply)],
    location: &str,
) -> Vec<Result<Stored, StateError>> {
    let failed_all = |e: &dyn std::fmt::Display| -> Vec<Result<Stored, StateError>> {
        group.iter().map(|_| Err(backend(location, e))).collect()
    };
    // Immediate: the write lock is taken (waiting on the busy timeout) before the duplicate
    // checks read, so another writer on the file cannot slip the same message in between.
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return failed_all(&e),
    };
    let now = Utc::now();
    let received_at = ts(now);
    let now = now.timestamp();
    let mut answers = Vec::with_capacity(group.len());
    {
        let statements = (
            tx.prepare_cached(
                "SELECT id FROM webhook_events WHERE job = ?1 AND idempotency_key = ?2",
            ),
            tx.prepare_cached(
                "INSERT INTO webhook_events
                 (id, job, idempotency_key, records, record_count, urgent, status, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
            ),
        );
        let (mut find, mut insert) = match statements {
            (Ok(f), Ok(i)) => (f, i),
            (Err(e), _) | (_, Err(e)) => return failed_all(&e),
        };
        for (e, _) in group {
            let answer = write_one(&tx, &mut find, &mut insert, e, &received_at, now);
            answers.push(answer.map_err(|err| backend(location, err)));
        }
    }
    match tx.commit() {
        Ok(()) => answers,
        Err(e) => failed_all(&e),
    }
}

/// One append of a group: a repeat (signed message or idempotency key seen before) answers
/// with the first event, anything else is stored with its users, its signature claimed for it.
fn write_one(
    tx: &rusqlite::Transaction<'_>,
    find: &mut rusqlite::CachedStatement<'_>,
    insert: &mut rusqlite::CachedStatement<'_>,
    e: &NewEvent,
    received_at: &str,
    now: i64,
) -> rusqlite::Result<Stored> {
    let id = format!("evt_{}", uuid::Uuid::now_v7());
    if let Some(sig) = &e.signature
        && let Some(seen) = Stored::from_claim(seen::claim(tx, sig, Some(&id), now)?)
    {
        return Ok(seen);
    }
    let stored = store_event(tx, find, insert, e, id.clone(), received_at);
    if let Some(sig) = &e.signature {
        match &stored {
            // The idempotency key named an earlier event: the signature is that one's.
            Ok(s) if s.id != id => seen::repoint(tx, sig, &id, &s.id)?,
            Ok(_) => {}
            // Nothing stored: neither is the signature, so the sender may retry as it is.
            Err(_) => seen::release(tx, sig, &id)?,
        }
    }
    stored
}

/// Store `e` as event `id`, unless its idempotency key names an earlier one.
fn store_event(
    tx: &rusqlite::Transaction<'_>,
    find: &mut rusqlite::CachedStatement<'_>,
    insert: &mut rusqlite::CachedStatement<'_>,
    e: &NewEvent,
    id: String,
    received_at: &str,
) -> rusqlite::Result<Stored> {
    if let Some(key) = &e.idempotency_key
        && let Some(first) =
            find.query_row(params![e.job, key], |r| r.get::<_, String>(0)).optional()?
    {
        return Ok(Stored::duplicate_of(first));
    }
    insert.execute(params![
        id,
        e.job,
        e.idempotency_key,
        e.records,
        e.record_count,
        e.urgent,
        received_at
    ])?;
    let seq = tx.last_insert_rowid();
    let mut users =
        tx.prepare_cached("INSERT INTO webhook_event_users (seq, external_id) VALUES (?1, ?2)")?;
    for ext in &e.external_ids {
        users.execute(params![seq, ext])?;
    }
    Ok(Stored::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_store_is_shareable_across_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<EventStore>();
    }

    // Appending, paging, the urgent closure and idempotency are the event log's contract,
    // checked on this backend and DynamoDB alike in `tests/state_contract.rs`.

    #[tokio::test]
    async fn appended_events_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = EventStore::open(&path).unwrap();
        let mut ids = Vec::new();
        let appends: Vec<_> = (0..200).map(|_| store.append(event("hr", None, 1, false))).collect();
        for r in futures::future::join_all(appends).await {
            ids.push(r.unwrap().id);
        }
        drop(store);
        let store = EventStore::open(&path).unwrap();
        let pending = store.pending(&jobs(&["hr"]), usize::MAX).unwrap();
        let got: Vec<String> = pending.into_iter().map(|e| e.id).collect();
        assert_eq!(got, ids, "every acknowledged event, in acknowledgement order");
        // The state store still opens the same file (its schema is current).
        crate::state::sqlite::SqliteStore::open_read_only(&path, false).unwrap();
    }
}
