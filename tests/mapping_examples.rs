//! Every example mapping compiles and maps every sample user: the demo depends on both.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use xaas::mapping::{MappedUser, Mapping};
use xaas::sources::Source;
use xaas::sources::csv::{CsvSource, CsvSourceConfig};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The documented counts of sample-data/README.md.
const TOTAL: usize = 100;
const ACTIVE: usize = 88;
const INACTIVE: usize = 12;

fn mappings() -> Vec<(String, Mapping)> {
    let dir = Path::new(ROOT).join("mappings");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("mappings/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).expect("readable mapping");
            let mapping = Mapping::from_yaml(&path, &text)
                .unwrap_or_else(|d| panic!("{} does not compile:\n{d}", path.display()));
            out.push((path.display().to_string(), mapping));
        }
    }
    assert!(!out.is_empty(), "no mappings found");
    out
}

async fn sample_users(mapping: &Mapping) -> Vec<MappedUser> {
    let config: CsvSourceConfig =
        serde_json::from_value(serde_json::json!({ "path": "sample-data/users.csv" })).unwrap();
    let source = CsvSource::new(&config, Path::new(ROOT));
    let mut users = Vec::new();
    let mut stream = source.pull();
    while let Some(item) = stream.next().await {
        let record = item.expect("the pull completes").expect("every row is readable");
        match mapping.apply(&record) {
            Ok(u) => users.push(u),
            Err(r) => panic!("sample row rejected: {r}"),
        }
    }
    users
}

/// The example mappings written for `sample-data/users.csv` (the seed's table as a CSV);
/// the HTTP example maps a different, nested shape and is covered by its own `tests:`.
const SAMPLE_CSV_MAPPINGS: &[&str] = &["seed-dynamodb.yaml", "csv-hr-export.yaml"];

#[tokio::test]
async fn every_mapping_maps_every_sample_user() {
    for (name, mapping) in mappings() {
        if !SAMPLE_CSV_MAPPINGS.iter().any(|m| name.ends_with(m)) {
            continue;
        }
        let users = sample_users(&mapping).await;
        assert_eq!(users.len(), TOTAL, "{name}");
        assert_eq!(users.iter().filter(|u| u.active).count(), ACTIVE, "{name}");
        assert_eq!(users.iter().filter(|u| !u.active).count(), INACTIVE, "{name}");
    }
}

fn profile(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn seed_mapping_produces_exact_profiles() {
    let path = Path::new(ROOT).join("mappings/seed-dynamodb.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mapping = Mapping::from_yaml(&path, &text).unwrap();
    assert_eq!(
        mapping.attribute_names().collect::<Vec<_>>(),
        [
            "userName",
            "firstName",
            "lastName",
            "email",
            "mobilePhone",
            "title",
            "displayName",
            "primaryPhone",
            "zipCode",
            "streetAddress",
            "city",
            "state",
            "countryCode"
        ]
    );
    let users = sample_users(&mapping).await;
    let by_id: BTreeMap<&str, &MappedUser> =
        users.iter().map(|u| (u.external_id.as_str(), u)).collect();

    // Non-ASCII letters pass through untouched (line 2 of the file).
    let u = by_id["sebastiao.araujo@example.net"];
    assert_eq!(u.origin, xaas::mapping::Origin::Line(2));
    assert!(u.active);
    assert_eq!(
        u.profile,
        profile(&[
            ("city", "Belém"),
            ("countryCode", "BR"),
            ("displayName", "Sebastião Araújo"),
            ("email", "sebastiao.araujo@example.net"),
            ("firstName", "Sebastião"),
            ("lastName", "Araújo"),
            ("mobilePhone", "566-593-633"),
            ("primaryPhone", "671-256-553"),
            ("state", "Pará"),
            ("streetAddress", "8510 Avenida Nazaré"),
            ("title", "Mrs"),
            ("userName", "sebastiao.araujo@example.net"),
            ("zipCode", "37283-605"),
        ])
    );

    // A quoted street name with a comma keeps its comma.
    let u = by_id["amelia.thompson@example.com"];
    assert_eq!(u.profile["streetAddress"], "4469 Kirkgate, Flat 3");
    assert_eq!(u.profile["zipCode"], "LS7 3MS");
}
