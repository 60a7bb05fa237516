//! Mapping throughput: records per second for one example mapping on one core.
//!
//! Run through `bench/mapping.sh` (release build). Records are generated in the shape of the
//! seed's DynamoDB table (as the DynamoDB source yields them: plain JSON values) before timing
//! starts, and mapped one after another on this thread, as `sync` maps a pull.
//!
//! In a pull each record is mapped right after the source decoded it, while it is still in
//! the CPU cache. So the timed loop cycles through a pool of `POOL` distinct records (a few
//! MB, cache-resident) rather than a million cold ones; `--cold` maps every record once from
//! a pool as large as the run, which measures memory bandwidth more than mapping.
//!
//! Usage: mapping_bench [MAPPING] [RECORDS] [--cold]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use serde_json::{Map, Value, json};
use xaas::mapping::{Mapped, Mapping, Origin, Record};

// The same allocator as the `xaas` binary, so the figure is what a pull sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn record(i: u64) -> Record {
    let first = ["Ana", "Jürgen", "Chloé", "Liam", "Sebastião", "Mei"][(i % 6) as usize];
    let last = ["Araújo", "Größ", "Martin", "Nguyen", "Kowalski", "Chen"][(i % 6) as usize];
    let id = format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase());
    let v = json!({
        "id": id,
        "active": if i.is_multiple_of(10) { "false" } else { "true" },
        "title": "Mx",
        "first_name": first,
        "last_name": last,
        "street_number": (i % 9000) + 1,
        "street_name": "Maximilianstraße",
        "city": "München",
        "state": "Bayern",
        "country": "DE",
        "postcode": format!("{:05}", i % 99999),
        "email": id,
        "phone": "579-246-955",
        "cell": "722-539-112",
        "dob": "1974-09-11T18:51:45.431Z",
    });
    let Value::Object(fields) = v else { unreachable!("a json object literal") };
    Record { origin: Origin::Index(i), fields: fields as Map<String, Value> }
}

/// Distinct records in the hot pool.
const POOL: u64 = 4_096;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cold = args.iter().any(|a| a == "--cold");
    let mut args = args.into_iter().filter(|a| a != "--cold");
    let path = PathBuf::from(args.next().unwrap_or_else(|| "mappings/seed-dynamodb.yaml".into()));
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let text = std::fs::read_to_string(&path).expect("the mapping file is readable");
    let mapping = Mapping::from_yaml(&path, &text).unwrap_or_else(|d| panic!("{d}"));
    let pool: Vec<Record> = (0..if cold { n } else { POOL.min(n) }).map(record).collect();
    let now = Utc::now();
    // Warm-up: caches, allocator.
    for r in pool.iter().take(10_000) {
        black_box(mapping.apply_at(r, now).ok());
    }
    let started = Instant::now();
    let mut users = 0u64;
    for r in pool.iter().cycle().take(n as usize) {
        if let Ok(Mapped::User(u)) = mapping.apply_at(black_box(r), now) {
            users += 1;
            black_box(u);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {n} records ({}) in {secs:.3} s on one core: {:.0} records/s ({users} mapped)",
        path.display(),
        if cold { "each once, cold" } else { "hot pool of 4096" },
        n as f64 / secs
    );
}
