//! Webhook authentication: HMAC-SHA256 request signatures, or a bearer token.
//!
//! A signed request carries two headers:
//!
//! ```text
//! X-Xaas-Timestamp: 1767225600
//! X-Xaas-Signature: v2=5f2b…(64 hex digits)
//! ```
//!
//! Two signature versions ([`sign_v2`], [`sign`]):
//!
//! - `v2=hex(HMAC-SHA256(secret, "{timestamp}\n{METHOD}\n{path}\n{raw body}"))`: covers the
//!   method and the path as well (the path the daemon receives, without the query), so a
//!   captured request cannot be aimed at another route.
//! - `v1=hex(HMAC-SHA256(secret, "{timestamp}.{raw body}"))`: the first scheme, accepted unless
//!   `require_v2: true`.
//!
//! Several comma-separated values may be sent (both versions, or a sender signing with both
//! secrets during a rotation). When any `v2=` value is present, a `v2=` value must match: one
//! tampered path fails even if a `v1=` value is also there. Every comparison is constant-time
//! (`Mac::verify_slice`).
//!
//! A timestamp outside the replay window of our clock is refused. Within it, a signed message
//! accepted once is remembered in the state store by its fingerprints ([`Verified`]), so its
//! repeat is answered as a duplicate of the first, after a restart and on any replica
//! (`crate::state::events::SeenSignature`). The fingerprints are digests of what was signed,
//! not of the `v1`/`v2` values, so resending a request with only its second-secret signature
//! is still recognised.
//!
//! Everything here is pure (the clock is an argument), so it is unit- and property-tested
//! without a server.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signing time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-xaas-timestamp";
/// The header carrying `v2=<hex>` and `v1=<hex>` signatures.
pub const SIGNATURE_HEADER: &str = "x-xaas-signature";

/// At most this many signature values are tried, so a huge header costs bounded work.
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
    #[error("garbled signature: X-Xaas-Signature must be `v2=<64 hex digits>` (or `v1=`)")]
    GarbledSignature,
    #[error(
        "a v2 signature is required (serve.webhook.auth.require_v2): sign \"{{timestamp}}\\n{{METHOD}}\\n{{path}}\\n{{body}}\" and send `v2=<hex>`"
    )]
    V2Required,
    #[error("timestamp outside the {0} window")]
    Expired(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("v2 signature does not match (it covers the method and the path too)")]
    MismatchV2,
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

/// The `v2=<hex>` value for a request to `method path` with `body`, signed at `timestamp`.
pub fn sign_v2(secret: &[u8], timestamp: i64, method: &str, path: &str, body: &[u8]) -> String {
    let mac = mac_v2(secret, timestamp, method, path, body);
    format!("v2={}", hex::encode(mac.finalize().into_bytes()))
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // Any key length is valid for HMAC; `new_from_slice` cannot fail here.
    <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = keyed(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `"{timestamp}\n{METHOD}\n{path}\n{body}"`: newlines cannot occur in a method or a path,
/// so no two requests sign the same bytes.
fn mac_v2(secret: &[u8], timestamp: i64, method: &str, path: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = keyed(secret);
    for part in [timestamp.to_string().as_bytes(), method.as_bytes(), path.as_bytes()] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac.update(body);
    mac
}

/// A signed request as received (headers `None` when absent or not visible ASCII).
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub method: &'a str,
    /// The path the daemon received, without the query.
    pub path: &'a str,
    pub body: &'a [u8],
}

/// What a verified request is known by (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub timestamp: i64,
    /// The timestamp and the body.
    pub message: MessageKey,
    /// The timestamp, method, path and body, when a v2 signature covered them.
    pub routed: Option<MessageKey>,
}

/// The decoded 32-byte values of `version` (`"v1="`, `"v2="`) in a signature header.
fn values(signature: &str, version: &str) -> Vec<Vec<u8>> {
    signature
        .split(',')
        .filter_map(|part| part.trim().strip_prefix(version))
        .filter_map(|h| hex::decode(h.trim()).ok())
        .filter(|b| b.len() == 32)
        .take(MAX_SIGNATURES)
        .collect()
}

/// Check a signed request against `secrets` at `now` (unix seconds).
pub fn verify_hmac(
    secrets: &[SecretString],
    window_secs: u64,
    require_v2: bool,
    req: Signed<'_>,
    now: i64,
) -> Result<Verified, AuthError> {
    let signature = req.signature.map(str::trim).filter(|s| !s.is_empty());
    let Some(signature) = signature else { return Err(AuthError::MissingSignature) };
    let Some(ts) = req.timestamp.map(str::trim) else { return Err(AuthError::MissingTimestamp) };
    let timestamp: i64 = match ts.parse() {
        Ok(t) if ts.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => return Err(AuthError::GarbledTimestamp),
    };
    let (v2, v1) = (values(signature, "v2="), values(signature, "v1="));
    if v2.is_empty() && v1.is_empty() {
        return Err(AuthError::GarbledSignature);
    }
    if v2.is_empty() && require_v2 {
        return Err(AuthError::V2Required);
    }
    let window = i64::try_from(window_secs).unwrap_or(i64::MAX);
    if now.checked_sub(timestamp).is_none_or(|d| d.checked_abs().is_none_or(|d| d > window)) {
        return Err(AuthError::Expired(describe_window(window_secs)));
    }
    let message = MessageKey::of(timestamp, req.body);
    if !v2.is_empty() {
        let matched = secrets.iter().any(|secret| {
            let mac = mac_v2(
                secret.expose_secret().as_bytes(),
                timestamp,
                req.method,
                req.path,
                req.body,
            );
            v2.iter().any(|c| mac.clone().verify_slice(c).is_ok())
        });
        if !matched {
            return Err(AuthError::MismatchV2);
        }
        let routed = message.scoped(&format!("{} {}", req.method, req.path));
        return Ok(Verified { timestamp, message, routed: Some(routed) });
    }
    let matched = secrets.iter().any(|secret| {
        let mac = mac(secret.expose_secret().as_bytes(), timestamp, req.body);
        v1.iter().any(|c| mac.clone().verify_slice(c).is_ok())
    });
    if !matched {
        return Err(AuthError::Mismatch);
    }
    Ok(Verified { timestamp, message, routed: None })
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
        let mut m = keyed(b"xaas bearer comparison");
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

    /// Lower-case hex, as the state store keeps it.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    fn of(timestamp: i64, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(timestamp.to_string().as_bytes());
        h.update(b".");
        h.update(body);
        Self(h.finalize().into())
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

    const PATH: &str = "/v1/jobs/hr/records";

    fn req<'a>(ts: &'a str, sig: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed { timestamp: Some(ts), signature: Some(sig), method: "POST", path: PATH, body }
    }

    /// v1 accepted (`require_v2: false`).
    fn verify(
        s: &[SecretString],
        window: u64,
        r: Signed<'_>,
        now: i64,
    ) -> Result<Verified, AuthError> {
        verify_hmac(s, window, false, r, now)
    }

    #[test]
    fn a_signature_made_with_sign_verifies() {
        let sig = sign(b"k1", NOW, b"[{}]");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        let ts = NOW.to_string();
        assert!(verify(&secrets(&["k1"]), 300, req(&ts, &sig, b"[{}]"), NOW + 299).is_ok());
    }

    #[test]
    fn each_failure_has_its_own_reason() {
        let s = secrets(&["k1"]);
        let ts = NOW.to_string();
        let sig = sign(b"k1", NOW, b"body");
        let none = Signed { signature: None, ..req(&ts, &sig, b"body") };
        assert_eq!(verify(&s, 300, none, NOW), Err(AuthError::MissingSignature));
        let no_ts = Signed { timestamp: None, ..req(&ts, &sig, b"body") };
        assert_eq!(verify(&s, 300, no_ts, NOW), Err(AuthError::MissingTimestamp));
        assert_eq!(
            verify(&s, 300, req("-5", &sig, b"body"), NOW),
            Err(AuthError::GarbledTimestamp)
        );
        assert_eq!(
            verify(&s, 300, req(&ts, "sha256=abc", b"body"), NOW),
            Err(AuthError::GarbledSignature)
        );
        let err = verify(&s, 300, req(&ts, &sig, b"body"), NOW + 301).unwrap_err();
        assert_eq!(err.to_string(), "timestamp outside the 5-minute window");
        assert_eq!(verify(&s, 300, req(&ts, &sig, b"bodx"), NOW), Err(AuthError::Mismatch));
        assert_eq!(
            verify(&secrets(&["k2"]), 300, req(&ts, &sig, b"body"), NOW),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_either_secret_and_either_signature() {
        let s = secrets(&["old", "new"]);
        let ts = NOW.to_string();
        let old = sign(b"old", NOW, b"x");
        let new = sign(b"new", NOW, b"x");
        assert!(verify(&s, 300, req(&ts, &new, b"x"), NOW).is_ok());
        let both = format!("v1=00, {old}, {new}");
        assert!(verify(&secrets(&["new"]), 300, req(&ts, &both, b"x"), NOW).is_ok());
    }

    #[test]
    fn a_message_is_known_by_what_was_signed_not_by_the_signature() {
        let ts = NOW.to_string();
        let s = secrets(&["a", "b"]);
        let both = format!("{},{}", sign(b"a", NOW, b"x"), sign(b"b", NOW, b"x"));
        let first = verify(&s, 300, req(&ts, &both, b"x"), NOW).unwrap();
        // The same message with only its second signature has the same fingerprint.
        let second = verify(&s, 300, req(&ts, &sign(b"b", NOW, b"x"), b"x"), NOW).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.routed, None);
        let other = verify(&s, 300, req(&ts, &sign(b"a", NOW, b"y"), b"y"), NOW).unwrap();
        assert_ne!(first.message, other.message);
    }

    #[test]
    fn v2_covers_the_method_and_the_path() {
        let s = secrets(&["k"]);
        let ts = NOW.to_string();
        let v2 = sign_v2(b"k", NOW, "POST", PATH, b"[{}]");
        assert!(v2.starts_with("v2=") && v2.len() == 3 + 64);
        let ok = verify_hmac(&s, 300, true, req(&ts, &v2, b"[{}]"), NOW).unwrap();
        assert!(ok.routed.is_some());
        // Aimed at another job, or with another method: refused, even with a valid v1 beside.
        let elsewhere = Signed { path: "/v1/jobs/payroll/records", ..req(&ts, &v2, b"[{}]") };
        assert_eq!(verify(&s, 300, elsewhere, NOW), Err(AuthError::MismatchV2));
        let both = format!("{v2},{}", sign(b"k", NOW, b"[{}]"));
        let elsewhere = Signed { path: "/v1/jobs/payroll/records", ..req(&ts, &both, b"[{}]") };
        assert_eq!(verify(&s, 300, elsewhere, NOW), Err(AuthError::MismatchV2));
        let put = Signed { method: "PUT", ..req(&ts, &v2, b"[{}]") };
        assert_eq!(verify(&s, 300, put, NOW), Err(AuthError::MismatchV2));
        // The same body signed for two routes: two routed fingerprints, one message.
        let other = sign_v2(b"k", NOW, "POST", "/v1/jobs/payroll/records", b"[{}]");
        let there = Signed { path: "/v1/jobs/payroll/records", ..req(&ts, &other, b"[{}]") };
        let there = verify(&s, 300, there, NOW).unwrap();
        assert_ne!(there.routed, ok.routed);
        assert_eq!(there.message, ok.message);
        // v1 alone: accepted unless v2 is required.
        let v1 = sign(b"k", NOW, b"[{}]");
        assert!(verify(&s, 300, req(&ts, &v1, b"[{}]"), NOW).is_ok());
        assert_eq!(
            verify_hmac(&s, 300, true, req(&ts, &v1, b"[{}]"), NOW),
            Err(AuthError::V2Required)
        );
        // The path and the body cannot trade bytes: newlines separate them.
        let a = sign_v2(b"k", NOW, "POST", "/a.b", b"c");
        let b = sign_v2(b"k", NOW, "POST", "/a", b"b.c");
        assert_ne!(a, b);
    }

    #[test]
    fn scoped_keys_tell_empty_bodies_on_different_routes_apart() {
        let k = MessageKey::of(NOW, b"");
        assert_ne!(k.scoped("POST /v1/jobs/a/trigger"), k.scoped("POST /v1/jobs/b/trigger"));
        assert_eq!(k.scoped("x"), MessageKey::of(NOW, b"").scoped("x"));
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
            sig in proptest::option::of("(v[12]=[0-9a-f]{0,70},? ?){0,3}|.{0,80}"),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            now in any::<i64>(),
            window in any::<u64>(),
            auth in proptest::option::of(".{0,40}"),
        ) {
            let s = secrets(&["k"]);
            let r = Signed {
                timestamp: ts.as_deref(),
                signature: sig.as_deref(),
                method: "POST",
                path: PATH,
                body: &body,
            };
            let _ = verify_hmac(&s, window, true, r, now);
            let _ = verify_hmac(&s, window, false, r, now);
            let _ = verify_bearer(&SecretString::from("k".to_string()), auth.as_deref());
        }

        #[test]
        fn signed_requests_verify_within_the_window(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            skew in -300i64..=300,
        ) {
            let ts = NOW.to_string();
            let sig = sign(b"k", NOW, &body);
            prop_assert!(verify(&secrets(&["k"]), 300, req(&ts, &sig, &body), NOW + skew).is_ok());
            let sig = sign_v2(b"k", NOW, "POST", PATH, &body);
            prop_assert!(verify_hmac(&secrets(&["k"]), 300, true, req(&ts, &sig, &body), NOW + skew).is_ok());
        }
    }
}
