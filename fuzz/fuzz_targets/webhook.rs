//! The webhook's untrusted input: the body parser and the signature check, on any bytes and
//! any header values. Must never panic; a forged signature must never verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use xaas::daemon::auth::{Signed, sign, verify_hmac};
use xaas::daemon::webhook::parse_records;

fuzz_target!(|data: &[u8]| {
    // Parts: timestamp header, signature header, body (split on the first two 0xff bytes).
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let timestamp = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let signature = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let body = parts.next().unwrap_or_default();

    let _ = parse_records(body, 100);
    let _ = parse_records(data, 3);

    let secrets = vec![SecretString::from("fuzz-secret-one"), SecretString::from("fuzz-secret-two")];
    let now = 1_795_000_000;
    let forged = verify_hmac(&secrets, 300, Signed { timestamp, signature, body }, now);
    // Random headers essentially never carry the right MAC; if they verify, they must equal
    // what signing produces.
    if forged.is_ok() {
        let ts: i64 = timestamp.unwrap_or_default().trim().parse().unwrap_or_default();
        let good = [sign(b"fuzz-secret-one", ts, body), sign(b"fuzz-secret-two", ts, body)];
        assert!(
            signature.is_some_and(|s| good.iter().any(|g| s.contains(g.as_str()))),
            "a signature verified without being one"
        );
    }
    // And a real signature of the fuzzed body always verifies.
    let ts = now.to_string();
    let real = sign(b"fuzz-secret-two", now, body);
    let signed = Signed { timestamp: Some(&ts), signature: Some(&real), body };
    assert!(verify_hmac(&secrets, 300, signed, now).is_ok());
});
