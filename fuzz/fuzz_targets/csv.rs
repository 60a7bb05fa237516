//! CSV parsing: any bytes, in several dialects, read the way a pull reads its file. Must never
//! panic; every row is a record or a rejection that says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xaas::sources::csv::{CsvSource, CsvSourceConfig};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the dialect; the rest is the file.
    let Some((&pick, file)) = data.split_first() else { return };
    let delimiter = [",", ";", "\t", "|"][usize::from(pick & 3)];
    let mut config = serde_json::json!({
        "path": "fuzz.csv",
        "delimiter": delimiter,
        "header": pick & 4 == 0,
    });
    if pick & 8 != 0 {
        config["columns"] = serde_json::json!(["id", "active", "name"]);
    }
    let config: CsvSourceConfig = serde_json::from_value(config).expect("a valid dialect");
    let source = CsvSource::new(&config, std::path::Path::new("."));
    for item in source.read_bytes(file) {
        if let Ok(Err(rejection)) = item {
            assert!(!rejection.reason.is_empty(), "a rejection says why");
        }
    }
});
