//! The plain-concatenation shortcut renders exactly what minijinja renders: the same mapping
//! is applied with each template in its shortcut form (`{{ a }} {{ b }}`) and in a form the
//! shortcut refuses (`{{ a }}{{ ' ' }}{{ b }}`, which minijinja renders identically), and the
//! profiles must match for records with strings, numbers, booleans, nulls, unicode, blanks
//! and missing fields.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use xaas::mapping::{Mapping, Origin, Record};

fn mapping(display: &str, street: &str) -> Mapping {
    let text = format!(
        "version: 2\nsource_fields: [id, first, last, num, street]\nexternal_id: id\nstatus:\n  field: id\n  active_values: [\"x1\"]\n  when_missing: active\nattributes:\n  displayName: \"{display}\"\n  streetAddress: \"{street}\"\n"
    );
    Mapping::from_yaml(Path::new("concat.yaml"), &text).unwrap_or_else(|d| panic!("{d}\n{text}"))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[ a-zA-Zéøß0-9,{}%#-]{0,12}".prop_map(Value::String),
        Just(json!(["a", "b"])),
    ]
}

proptest! {
    #[test]
    fn shortcut_renders_like_minijinja(
        first in proptest::option::of(value()),
        last in proptest::option::of(value()),
        num in proptest::option::of(value()),
        street in proptest::option::of(value()),
    ) {
        let fast = mapping("{{ first }} {{ last }}", "No. {{num}}, {{ street }}!");
        let slow = mapping("{{ first }}{{ ' ' }}{{ last }}", "No. {{ num }}{{ ', ' }}{{ street }}!");
        let mut fields = Map::new();
        fields.insert("id".into(), json!("x1"));
        for (k, v) in [("first", first), ("last", last), ("num", num), ("street", street)] {
            if let Some(v) = v {
                fields.insert(k.into(), v);
            }
        }
        let record = Record { origin: Origin::Index(0), fields };
        let a = fast.apply(&record).map(|u| u.profile).map_err(|r| r.reason);
        let b = slow.apply(&record).map(|u| u.profile).map_err(|r| r.reason);
        prop_assert_eq!(a, b);
    }
}
