//! Seen signatures: a signed webhook request is remembered in the state until its timestamp
//! leaves the replay window, so the same signed message, sent again after a restart or to
//! another replica, is answered as a duplicate of the first instead of being applied twice.
//!
//! Two fingerprints per request (computed by `crate::daemon::auth`, stored as hex):
//!
//! - `message`: the timestamp and the body (with the route for a trigger or an empty body,
//!   which are the same bytes for every job). A `v1=` signature covers only these, so a
//!   message seen on another route is a replay aimed elsewhere: [`Claim::OtherRoute`].
//! - `routed`: the message with its method and path, when a `v2=` signature covered them.
//!   It decides alone: the same body signed for two routes is two messages. Its `message`
//!   is remembered as well (unless another route holds it), so stripping the `v2=` value
//!   and replaying the `v1=` one does not make it new.
//!
//! SQLite keeps them in `seen_signatures` (migration 9), written in the transaction that
//! stores the event; the pruning pass deletes expired rows. DynamoDB keeps them in the
//! `seen` table with conditional puts and a TTL attribute (`crate::state::dynamodb`).

use rusqlite::{Connection, params};

/// A signed request's fingerprints (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSignature {
    /// Hex SHA-256 of the signed message: timestamp and body (and route, see the module doc).
    pub message: String,
    /// Hex SHA-256 of timestamp, method, path and body, when a v2 signature covered them.
    pub routed: Option<String>,
    /// The route it came on: `POST /v1/jobs/hr/records`.
    pub route: String,
    /// Unix seconds after which the timestamp check refuses the message anyway.
    pub expires_at: i64,
}

/// What the state knew of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Never seen: remembered from now on.
    New,
    /// Seen before on this route: the first request's event (`None` for a trigger).
    Duplicate { event_id: Option<String> },
    /// Seen before on another route, under a signature that does not cover the path.
    OtherRoute { route: String },
}

impl SeenSignature {
    /// The fingerprint whose presence decides.
    pub fn decisive(&self) -> &str {
        self.routed.as_deref().unwrap_or(&self.message)
    }

    /// What an earlier record of the decisive fingerprint (its route and event) means.
    pub fn judge(&self, seen_route: String, event_id: Option<String>) -> Claim {
        // A routed fingerprint includes the route: seen means seen here.
        if self.routed.is_some() || seen_route == self.route {
            Claim::Duplicate { event_id }
        } else {
            Claim::OtherRoute { route: seen_route }
        }
    }
}

/// The SQLite key of a fingerprint: its 32 bytes (the hex as is, should it not decode).
fn key(hex_digest: &str) -> Vec<u8> {
    hex::decode(hex_digest).unwrap_or_else(|_| hex_digest.as_bytes().to_vec())
}

/// Claim `sig` for `event_id` at `now` (unix seconds), in the caller's transaction: one
/// insert when the message is new (the usual case: a new row, or an expired one replaced),
/// and only for a repeat a read of what the first request was.
pub(super) fn claim(
    conn: &Connection,
    sig: &SeenSignature,
    event_id: Option<&str>,
    now: i64,
) -> rusqlite::Result<Claim> {
    let mut put = conn.prepare_cached(
        "INSERT INTO seen_signatures (key, route, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET route = excluded.route, event_id = excluded.event_id,
             expires_at = excluded.expires_at
         WHERE seen_signatures.expires_at < ?5",
    )?;
    let decisive = key(sig.decisive());
    if put.execute(params![decisive, sig.route, event_id, sig.expires_at, now])? == 0 {
        let (route, first) = conn
            .prepare_cached("SELECT route, event_id FROM seen_signatures WHERE key = ?1")?
            .query_row([&decisive], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
        return Ok(sig.judge(route, first));
    }
    if sig.routed.is_some() {
        // Its v1 form too, unless a live record (another route's) holds it.
        put.execute(params![key(&sig.message), sig.route, event_id, sig.expires_at, now])?;
    }
    Ok(Claim::New)
}

/// Point `sig`'s records at `event_id` instead (the event turned out to be an earlier one).
pub(super) fn repoint(
    conn: &Connection,
    sig: &SeenSignature,
    from: &str,
    to: &str,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE seen_signatures SET event_id = ?3 WHERE key = ?1 AND event_id = ?2",
    )?;
    for k in
        std::iter::once(sig.decisive()).chain(sig.routed.as_ref().map(|_| sig.message.as_str()))
    {
        stmt.execute(params![key(k), from, to])?;
    }
    Ok(())
}

/// Forget `sig`'s records for `event_id` (its event could not be stored after all).
pub(super) fn release(
    conn: &Connection,
    sig: &SeenSignature,
    event_id: &str,
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM seen_signatures WHERE key = ?1 AND event_id = ?2")?;
    for k in
        std::iter::once(sig.decisive()).chain(sig.routed.as_ref().map(|_| sig.message.as_str()))
    {
        stmt.execute(params![key(k), event_id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE seen_signatures (key BLOB PRIMARY KEY, route TEXT NOT NULL,
                 event_id TEXT, expires_at INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        conn
    }

    fn sig(message: &str, routed: Option<&str>, route: &str) -> SeenSignature {
        SeenSignature {
            message: message.into(),
            routed: routed.map(Into::into),
            route: route.into(),
            expires_at: 1_000,
        }
    }

    #[test]
    fn a_v1_message_is_a_duplicate_on_its_route_and_a_conflict_elsewhere() {
        let conn = db();
        let first = sig("a1", None, "POST /a");
        assert_eq!(claim(&conn, &first, Some("evt_1"), 100).unwrap(), Claim::New);
        assert_eq!(
            claim(&conn, &first, Some("evt_x"), 200).unwrap(),
            Claim::Duplicate { event_id: Some("evt_1".into()) }
        );
        let elsewhere = sig("a1", None, "POST /b");
        assert_eq!(
            claim(&conn, &elsewhere, Some("evt_y"), 200).unwrap(),
            Claim::OtherRoute { route: "POST /a".into() }
        );
        // Past its expiry it is new again (and the timestamp check refuses it first).
        let elsewhere = SeenSignature { expires_at: 2_000, ..elsewhere };
        assert_eq!(claim(&conn, &elsewhere, Some("evt_2"), 1_001).unwrap(), Claim::New);
        assert_eq!(
            claim(&conn, &elsewhere, None, 1_001).unwrap(),
            Claim::Duplicate { event_id: Some("evt_2".into()) }
        );
        // Released (its event was not stored), the sender may send it again.
        release(&conn, &elsewhere, "evt_2").unwrap();
        assert_eq!(claim(&conn, &elsewhere, Some("evt_3"), 1_001).unwrap(), Claim::New);
        repoint(&conn, &elsewhere, "evt_3", "evt_0").unwrap();
        assert_eq!(
            claim(&conn, &elsewhere, None, 1_001).unwrap(),
            Claim::Duplicate { event_id: Some("evt_0".into()) }
        );
    }

    #[test]
    fn a_v2_message_decides_by_route_and_guards_its_v1_form() {
        let conn = db();
        let on_a = sig("a1", Some("ra"), "POST /a");
        assert_eq!(claim(&conn, &on_a, Some("evt_1"), 100).unwrap(), Claim::New);
        // The same body signed for another route with v2 is another message.
        let on_b = sig("a1", Some("rb"), "POST /b");
        assert_eq!(claim(&conn, &on_b, Some("evt_2"), 100).unwrap(), Claim::New);
        // A's v1 form stays A's: the v2 request to B did not take it over.
        let stripped_to_b = sig("a1", None, "POST /b");
        assert_eq!(
            claim(&conn, &stripped_to_b, None, 100).unwrap(),
            Claim::OtherRoute { route: "POST /a".into() }
        );
        let stripped_to_a = sig("a1", None, "POST /a");
        assert_eq!(
            claim(&conn, &stripped_to_a, None, 100).unwrap(),
            Claim::Duplicate { event_id: Some("evt_1".into()) }
        );
        assert_eq!(
            claim(&conn, &on_b, None, 100).unwrap(),
            Claim::Duplicate { event_id: Some("evt_2".into()) }
        );
    }
}
