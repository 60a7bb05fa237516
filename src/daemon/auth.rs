//! Webhook authentication: HMAC-SHA256 request signatures, or a bearer token.
//!
//! A signed request carries two headers:
//!
//! ```text
//! X-Xaas-Timestamp: 1767225600
//! X-Xaas-Signature: v1=5f2b…(64 hex digits)
//! ```
//!
//! The signature is `hex(HMAC-SHA256(secret, "{timestamp}.{raw body}"))` ([`sign`]). Several
//! comma-separated `v1=` values may be sent (a sender signing with both secrets during a
//! rotation); the request is accepted when any configured secret matches any of them. Every
//! comparison is constant-time (`Mac::verify_slice`).
//!
//! Two more checks make a captured request useless to replay: the timestamp must be within the
//! replay window of our clock, and a signed message accepted once is refused for as long as
//! its timestamp stays in that window ([`ReplayCache`]). The cache is keyed by a SHA-256 of the
//! signed message rather than by the `v1` value that matched, so resending a request with only
//! its second-secret signature is still caught.
//!
//! Everything here is pure (the clock is an argument), so it is unit- and property-tested
//! without a server.

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signing time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-xaas-timestamp";
/// The header carrying `v1=<hex>` signatures.
pub const SIGNATURE_HEADER: &str = "x-xaas-signature";

/// At most this many `v1=` values are tried, so a huge header costs bounded work.
const MAX_SIGNATURES: usize = 8;

/// Why a request was not authenticated. The message is what the 401 body says: it names the
/// problem, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing signature")]
    MissingSignature,
    #[error("missing timestamp: send X-Xaas-Timestamp with the unix time in seconds")]
    MissingTimestamp,
    #[error("garbled timestamp: X-Xaas-Timestamp must be the unix time in seconds")]
    GarbledTimestamp,
    #[error("garbled signature: X-Xaas-Signature must be `v1=<64 hex digits>`")]
    GarbledSignature,
    #[error("timestamp outside the {0} window")]
    Expired(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("replayed request")]
    Replayed,
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("bearer token does not match")]
    BadToken,
}

/// The `X-Xaas-Signature` value for `body` signed at `timestamp` (unix seconds) with
/// `secret`: `v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // Any key length is valid for HMAC; `new_from_slice` cannot fail here.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// A signed request's headers, as received (`None` when absent or not visible ASCII).
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Check a signed request against `secrets` at `now` (unix seconds). On success returns the
/// key to remember in the [`ReplayCache`] together with the request's timestamp.
pub fn verify_hmac(
    secrets: &[SecretString],
    window_secs: u64,
    req: Signed<'_>,
    now: i64,
) -> Result<(MessageKey, i64), AuthError> {
    let signature = req.signature.map(str::trim).filter(|s| !s.is_empty());
    let Some(signature) = signature else { return Err(AuthError::MissingSignature) };
    let Some(ts) = req.timestamp.map(str::trim) else { return Err(AuthError::MissingTimestamp) };
    let timestamp: i64 = match ts.parse() {
        Ok(t) if ts.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => return Err(AuthError::GarbledTimestamp),
    };
    let candidates: Vec<Vec<u8>> = signature
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h.trim()).ok())
        .filter(|b| b.len() == 32)
        .take(MAX_SIGNATURES)
        .collect();
    if candidates.is_empty() {
        return Err(AuthError::GarbledSignature);
    }
    let window = i64::try_from(window_secs).unwrap_or(i64::MAX);
    if now.checked_sub(timestamp).is_none_or(|d| d.checked_abs().is_none_or(|d| d > window)) {
        return Err(AuthError::Expired(describe_window(window_secs)));
    }
    let matched = secrets.iter().any(|secret| {
        let mac = mac(secret.expose_secret().as_bytes(), timestamp, req.body);
        candidates.iter().any(|c| mac.clone().verify_slice(c).is_ok())
    });
    if !matched {
        return Err(AuthError::Mismatch);
    }
    Ok((MessageKey::of(timestamp, req.body), timestamp))
}

/// "5-minute", "90-second": how the replay window reads in an error.
fn describe_window(secs: u64) -> String {
    if secs.is_multiple_of(60) { format!("{}-minute", secs / 60) } else { format!("{secs}-second") }
}

/// Check `Authorization` against the configured bearer token, in constant time.
pub fn verify_bearer(token: &SecretString, authorization: Option<&str>) -> Result<(), AuthError> {
    let presented = authorization
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(presented) = presented else { return Err(AuthError::MissingToken) };
    // Both sides go through the same keyed MAC, so the comparison is fixed-length and
    // constant-time whatever the token lengths (`CtOutput` compares with `subtle`).
    let digest = |t: &str| {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"xaas bearer comparison")
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        m.update(t.as_bytes());
        m.finalize()
    };
    if digest(token.expose_secret()) == digest(presented) {
        Ok(())
    } else {
        Err(AuthError::BadToken)
    }
}

/// What identifies one signed message: SHA-256 of `"{timestamp}.{body}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageKey([u8; 32]);

impl MessageKey {
    /// This key narrowed to one route (`"POST /v1/jobs/hr/trigger"`). An empty body signed at
    /// one second is the same message for every route, so two legitimate empty-body requests
    /// to different routes within a second would otherwise look like a replay.
    pub fn scoped(self, route: &str) -> Self {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(route.as_bytes());
        Self(h.finalize().into())
    }

    fn of(timestamp: i64, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(timestamp.to_string().as_bytes());
        h.update(b".");
        h.update(body);
        Self(h.finalize().into())
    }
}

/// Signed messages accepted within the replay window, bounded in memory.
///
/// Entries leave once their timestamp is older than the window (the timestamp check refuses
/// them from then on anyway). Above `capacity` the oldest accepted entry goes first: replaying
/// it would then need `capacity` newer signed requests inside one window, far beyond the
/// per-client rate limit.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashMap<MessageKey, i64>,
    /// Insertion order, for eviction.
    order: VecDeque<(MessageKey, i64)>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Remember `key` (signed at `timestamp`); `Err(Replayed)` when it was already there.
    pub fn insert(
        &mut self,
        key: MessageKey,
        timestamp: i64,
        now: i64,
        window_secs: u64,
    ) -> Result<(), AuthError> {
        self.evict(now, window_secs);
        if self.seen.contains_key(&key) {
            return Err(AuthError::Replayed);
        }
        while self.seen.len() >= self.capacity {
            let Some((old, _)) = self.order.pop_front() else { break };
            self.seen.remove(&old);
        }
        self.seen.insert(key, timestamp);
        self.order.push_back((key, timestamp));
        Ok(())
    }

    /// Forget `key`: the request was authenticated but not acted on (the event could not be
    /// stored), so the sender may retry it as it is.
    pub fn forget(&mut self, key: &MessageKey) {
        self.seen.remove(key);
        // Its `order` entry stays until evicted; `evict` skips keys no longer in `seen`.
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn evict(&mut self, now: i64, window_secs: u64) {
        let window = i64::try_from(window_secs).unwrap_or(i64::MAX);
        let oldest_valid = now.saturating_sub(window);
        // Insertion order is nearly timestamp order (clocks differ by at most the window), so
        // scanning from the front until a recent entry is enough.
        while let Some((key, ts)) = self.order.front().copied() {
            // Forgotten (or re-inserted later) entries leave their old `order` slot behind.
            let gone = self.seen.get(&key) != Some(&ts);
            if ts < oldest_valid || gone {
                self.order.pop_front();
                if !gone {
                    self.seen.remove(&key);
                }
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_767_225_600;

    fn secrets(s: &[&str]) -> Vec<SecretString> {
        s.iter().map(|s| SecretString::from(s.to_string())).collect()
    }

    fn req<'a>(ts: &'a str, sig: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed { timestamp: Some(ts), signature: Some(sig), body }
    }

    #[test]
    fn a_signature_made_with_sign_verifies() {
        let sig = sign(b"k1", NOW, b"[{}]");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        let ts = NOW.to_string();
        assert!(verify_hmac(&secrets(&["k1"]), 300, req(&ts, &sig, b"[{}]"), NOW + 299).is_ok());
    }

    #[test]
    fn each_failure_has_its_own_reason() {
        let s = secrets(&["k1"]);
        let ts = NOW.to_string();
        let sig = sign(b"k1", NOW, b"body");
        let none = Signed { timestamp: Some(&ts), signature: None, body: b"body" };
        assert_eq!(verify_hmac(&s, 300, none, NOW), Err(AuthError::MissingSignature));
        let no_ts = Signed { timestamp: None, signature: Some(&sig), body: b"body" };
        assert_eq!(verify_hmac(&s, 300, no_ts, NOW), Err(AuthError::MissingTimestamp));
        assert_eq!(
            verify_hmac(&s, 300, req("-5", &sig, b"body"), NOW),
            Err(AuthError::GarbledTimestamp)
        );
        assert_eq!(
            verify_hmac(&s, 300, req(&ts, "sha256=abc", b"body"), NOW),
            Err(AuthError::GarbledSignature)
        );
        let err = verify_hmac(&s, 300, req(&ts, &sig, b"body"), NOW + 301).unwrap_err();
        assert_eq!(err.to_string(), "timestamp outside the 5-minute window");
        assert_eq!(verify_hmac(&s, 300, req(&ts, &sig, b"bodx"), NOW), Err(AuthError::Mismatch));
        assert_eq!(
            verify_hmac(&secrets(&["k2"]), 300, req(&ts, &sig, b"body"), NOW),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_either_secret_and_either_signature() {
        let s = secrets(&["old", "new"]);
        let ts = NOW.to_string();
        let old = sign(b"old", NOW, b"x");
        let new = sign(b"new", NOW, b"x");
        assert!(verify_hmac(&s, 300, req(&ts, &new, b"x"), NOW).is_ok());
        let both = format!("v1=00, {old}, {new}");
        assert!(verify_hmac(&secrets(&["new"]), 300, req(&ts, &both, b"x"), NOW).is_ok());
    }

    #[test]
    fn the_replay_cache_refuses_a_message_twice_and_forgets_old_ones() {
        let mut cache = ReplayCache::new(10);
        let ts = NOW.to_string();
        let s = secrets(&["a", "b"]);
        let both = format!("{},{}", sign(b"a", NOW, b"x"), sign(b"b", NOW, b"x"));
        let (key, t) = verify_hmac(&s, 300, req(&ts, &both, b"x"), NOW).unwrap();
        assert!(cache.insert(key, t, NOW, 300).is_ok());
        // The same message with only its second signature is still a replay.
        let second = sign(b"b", NOW, b"x");
        let (key2, _) = verify_hmac(&s, 300, req(&ts, &second, b"x"), NOW).unwrap();
        assert_eq!(cache.insert(key2, t, NOW + 10, 300), Err(AuthError::Replayed));
        // Past the window it is evicted (and refused as expired by the timestamp check).
        let other = MessageKey::of(NOW + 400, b"y");
        assert!(cache.insert(other, NOW + 400, NOW + 400, 300).is_ok());
        assert_eq!(cache.len(), 1);
        cache.forget(&other);
        assert!(cache.insert(other, NOW + 400, NOW + 400, 300).is_ok());
    }

    #[test]
    fn scoped_keys_tell_empty_bodies_on_different_routes_apart() {
        let k = MessageKey::of(NOW, b"");
        assert_ne!(k.scoped("POST /v1/jobs/a/trigger"), k.scoped("POST /v1/jobs/b/trigger"));
        assert_eq!(k.scoped("x"), MessageKey::of(NOW, b"").scoped("x"));
    }

    #[test]
    fn the_replay_cache_is_bounded() {
        let mut cache = ReplayCache::new(3);
        for i in 0..10 {
            cache.insert(MessageKey::of(NOW, &[i]), NOW, NOW, 300).unwrap();
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn bearer_tokens_compare_whole() {
        let t = SecretString::from("tok-123".to_string());
        assert!(verify_bearer(&t, Some("Bearer tok-123")).is_ok());
        assert!(verify_bearer(&t, Some("bearer  tok-123 ")).is_ok());
        assert_eq!(verify_bearer(&t, Some("Bearer tok-12")), Err(AuthError::BadToken));
        assert_eq!(verify_bearer(&t, Some("Basic tok-123")), Err(AuthError::MissingToken));
        assert_eq!(verify_bearer(&t, None), Err(AuthError::MissingToken));
    }

    proptest! {
        #[test]
        fn verification_never_panics(
            ts in proptest::option::of(".{0,24}"),
            sig in proptest::option::of("(v1=[0-9a-f]{0,70},? ?){0,3}|.{0,80}"),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            now in any::<i64>(),
            window in any::<u64>(),
            auth in proptest::option::of(".{0,40}"),
        ) {
            let s = secrets(&["k"]);
            let r = Signed { timestamp: ts.as_deref(), signature: sig.as_deref(), body: &body };
            if let Ok((key, t)) = verify_hmac(&s, window, r, now) {
                let mut cache = ReplayCache::new(4);
                let _ = cache.insert(key, t, now, window);
            }
            let _ = verify_bearer(&SecretString::from("k".to_string()), auth.as_deref());
        }

        #[test]
        fn signed_requests_verify_within_the_window(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            skew in -300i64..=300,
        ) {
            let sig = sign(b"k", NOW, &body);
            let ts = NOW.to_string();
            prop_assert!(verify_hmac(&secrets(&["k"]), 300, req(&ts, &sig, &body), NOW + skew).is_ok());
        }
    }
}
