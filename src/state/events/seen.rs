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

use rusqlite::{Connection, OptionalExtension, params};

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

/// Look `sig` up (unexpired rows only, at `now` in unix seconds).
pub(super) fn check(conn: &Connection, sig: &SeenSignature, now: i64) -> rusqlite::Result<Claim> {
    let seen = conn
        .prepare_cached(
            "SELECT route, event_id FROM seen_signatures WHERE key = ?1 AND expires_at >= ?2",
        )?
        .query_row(params![sig.decisive(), now], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .optional()?;
    Ok(match seen {
        None => Claim::New,
        Some((route, event_id)) => sig.judge(route, event_id),
    })
}

/// Remember `sig` (found [`Claim::New`] by [`check`] in the same transaction) with the event
/// it stored.
pub(super) fn remember(
    conn: &Connection,
    sig: &SeenSignature,
    event_id: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO seen_signatures (key, route, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET route = excluded.route, event_id = excluded.event_id,
             expires_at = excluded.expires_at",
    )?
    .execute(params![sig.decisive(), sig.route, event_id, sig.expires_at])?;
    if sig.routed.is_some() {
        // Its v1 form too, unless a live record (another route's) holds it.
        conn.prepare_cached(
            "INSERT INTO seen_signatures (key, route, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET route = excluded.route,
                 event_id = excluded.event_id, expires_at = excluded.expires_at
             WHERE seen_signatures.expires_at < ?5",
        )?
        .execute(params![sig.message, sig.route, event_id, sig.expires_at, now])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE seen_signatures (key TEXT PRIMARY KEY, route TEXT NOT NULL,
                 event_id TEXT, expires_at INTEGER NOT NULL);",
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
        let first = sig("m1", None, "POST /a");
        assert_eq!(check(&conn, &first, 100).unwrap(), Claim::New);
        remember(&conn, &first, Some("evt_1"), 100).unwrap();
        assert_eq!(
            check(&conn, &first, 200).unwrap(),
            Claim::Duplicate { event_id: Some("evt_1".into()) }
        );
        let elsewhere = sig("m1", None, "POST /b");
        assert_eq!(
            check(&conn, &elsewhere, 200).unwrap(),
            Claim::OtherRoute { route: "POST /a".into() }
        );
        // Past its expiry it is new again (and the timestamp check refuses it first).
        assert_eq!(check(&conn, &first, 1_001).unwrap(), Claim::New);
        let elsewhere = SeenSignature { expires_at: 2_000, ..elsewhere };
        remember(&conn, &elsewhere, Some("evt_2"), 1_001).unwrap();
        assert_eq!(
            check(&conn, &elsewhere, 1_001).unwrap(),
            Claim::Duplicate { event_id: Some("evt_2".into()) }
        );
    }

    #[test]
    fn a_v2_message_decides_by_route_and_guards_its_v1_form() {
        let conn = db();
        let on_a = sig("m1", Some("r-a"), "POST /a");
        remember(&conn, &on_a, Some("evt_1"), 100).unwrap();
        // The same body signed for another route with v2 is another message.
        let on_b = sig("m1", Some("r-b"), "POST /b");
        assert_eq!(check(&conn, &on_b, 100).unwrap(), Claim::New);
        remember(&conn, &on_b, Some("evt_2"), 100).unwrap();
        // A's v1 form stays A's: the v2 request to B did not take it over.
        let stripped_to_b = sig("m1", None, "POST /b");
        assert_eq!(
            check(&conn, &stripped_to_b, 100).unwrap(),
            Claim::OtherRoute { route: "POST /a".into() }
        );
        let stripped_to_a = sig("m1", None, "POST /a");
        assert_eq!(
            check(&conn, &stripped_to_a, 100).unwrap(),
            Claim::Duplicate { event_id: Some("evt_1".into()) }
        );
        assert_eq!(
            check(&conn, &on_b, 100).unwrap(),
            Claim::Duplicate { event_id: Some("evt_2".into()) }
        );
    }
}
