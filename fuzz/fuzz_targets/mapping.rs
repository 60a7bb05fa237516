//! Mapping compilation and evaluation: any YAML as a mapping file, and any JSON record through
//! a mapping that compiled. Must never panic: a bad file is a list of diagnostics, a bad
//! record a rejection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xaas::mapping::{Mapping, Origin, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // `<mapping yaml>\n#record\n<json record>`: the record part is optional.
    let (yaml, record) = match text.split_once("\n#record\n") {
        Some((y, r)) => (y, Some(r)),
        None => (text, None),
    };
    let Ok(mapping) = Mapping::from_yaml(std::path::Path::new("fuzz.yaml"), yaml) else { return };
    let fields = match record.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(serde_json::Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    };
    let record = Record { origin: Origin::Index(0), fields };
    if let Ok(xaas::mapping::Mapped::User(user)) = mapping.apply_at(&record, chrono_now()) {
        assert!(!user.external_id.is_empty(), "a mapped user has an externalId");
        assert!(user.profile.values().all(|v| !v.is_empty()), "empty values are omitted");
    }
});

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("a valid instant")
}
