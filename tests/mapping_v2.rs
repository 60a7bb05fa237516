//! Mapping v2: every example's own tests, snapshots of what the examples map, validation of a
//! file with several mistakes (line, column, rendering), effective dating with a fixed clock in
//! non-UTC time zones, filters, and a property test over arbitrary JSON records.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use xaas::diag::Diagnostics;
use xaas::mapping::eval::{EXTERNAL_ID_MAX_CHARS, GROUP_DESCRIPTION_MAX_CHARS, GROUP_ID_MAX_CHARS};
use xaas::mapping::{Mapped, Mapping, Origin, Record, testing};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("mappings"))
        .expect("mappings/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Mapping {
    let text = std::fs::read_to_string(path).expect("readable");
    Mapping::from_yaml(path, &text).unwrap_or_else(|d| panic!("{}:\n{d}", path.display()))
}

fn compile(yaml: &str) -> Result<Mapping, Diagnostics> {
    Mapping::from_yaml(Path::new("maps/hr.yaml"), yaml)
}

fn record(fields: Value) -> Record {
    let Value::Object(fields) = fields else { panic!("not an object") };
    Record { origin: Origin::Index(0), fields }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("rfc 3339").with_timezone(&Utc)
}

/// A fixed default clock for cases that do not set `now`.
fn fixed_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 8, 0, 0).unwrap()
}

// ----- the examples ------------------------------------------------------------------------

/// CI runs every example's `tests:` through this (the same code as `xaas mapping test`).
#[test]
fn every_example_mapping_passes_its_own_tests() {
    let files = example_files();
    assert!(files.len() >= 3, "the seed, CSV and HTTP examples: {files:?}");
    for file in files {
        let m = load(&file);
        assert!(m.test_count() >= 3, "{} should carry its own tests", file.display());
        for r in testing::run(&m, fixed_now()) {
            assert!(r.passed(), "{} {}:\n{}", file.display(), r.name, r.diff.join("\n"));
        }
    }
}

#[test]
fn example_outputs_snapshot() {
    for file in example_files() {
        let m = load(&file);
        let out: Vec<Value> = testing::outputs(&m, fixed_now())
            .into_iter()
            .map(|(name, r)| match r {
                Ok(mapped) => json!({ "case": name, "mapped": mapped }),
                Err(rej) => json!({ "case": name, "rejected": rej.to_string() }),
            })
            .collect();
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        insta::assert_json_snapshot!(format!("example_{name}"), out);
    }
}

#[test]
fn sample_csv_through_the_csv_example_snapshot() {
    let m = load(&Path::new(ROOT).join("mappings/csv-hr-export.yaml"));
    let mut reader = csv::Reader::from_path(Path::new(ROOT).join("sample-data/users.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let mut out = Vec::new();
    for (i, row) in reader.records().take(8).enumerate() {
        let row = row.unwrap();
        let fields = headers
            .iter()
            .zip(row.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        let r = Record { origin: Origin::Line(i as u64 + 2), fields };
        out.push(serde_json::to_value(m.apply_at(&r, fixed_now()).unwrap()).unwrap());
    }
    insta::assert_json_snapshot!("sample_csv_first_rows", out);
}

// ----- validation --------------------------------------------------------------------------

const FIVE_MISTAKES: &str = r#"version: 2
source_fields: [id, active, first_name, last_name, email]
external_id: id
status:
  active_if: active == "true"
attributes:
  userName: email
  firstName: "{{ first_name | lowr }}"
  lastName: "{{ last_name | upper }"
  title: "{{ job_title }}"
  employeeNumber: 42
groups:
  - external_id: "dept-{{ id }}"
    nmae: Department
"#;

#[test]
fn five_mistakes_give_five_located_errors() {
    let Err(Diagnostics(d)) = compile(FIVE_MISTAKES) else { panic!("should not compile") };
    let got: Vec<(Option<usize>, Option<usize>, &str)> =
        d.iter().map(|d| (d.line, d.column, d.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(8), Some(3), "attributes.firstName"),
            (Some(9), Some(3), "attributes.lastName"),
            (Some(10), Some(3), "attributes.title"),
            (Some(11), Some(3), "attributes.employeeNumber"),
            (Some(13), Some(5), "groups[0]"),
            (Some(14), Some(5), "groups[0].nmae"),
        ],
        "{d:#?}"
    );
    // Five kinds of mistake (the misspelt key also leaves `name` missing: two messages).
    assert!(
        d[0].message.contains("unknown filter") && d[0].message.contains("did you mean `lower`")
    );
    assert!(d[1].message.starts_with("invalid template: syntax error"));
    assert!(d[2].message.contains("field `job_title` is not one of the declared `source_fields`"));
    assert!(d[3].message.contains("found a number"));
    assert_eq!(d[4].message, "missing key `name`");
    assert!(d[5].message.contains("did you mean `name`?"));
}

#[test]
fn rendered_validation_errors_snapshot() {
    let Err(diags) = compile(FIVE_MISTAKES) else { panic!("should not compile") };
    let rendered: Vec<String> = diags.0.iter().map(|d| d.render(Some(FIVE_MISTAKES))).collect();
    insta::assert_snapshot!("five_mistakes_rendered", rendered.join("\n"));
}

#[test]
fn more_v2_mistakes_are_caught_at_load() {
    let yaml = r#"version: 2
external_id: id
status:
  active_if: "active =="
  start_date: start
  time_zone: Europe/Berln
  pre_hire_days: -3
lookups:
  codes: { a: b }
attributes:
  a: "{{ x | lookup('cods') }}"
  b: "{{ x | regex_capture('(') }}"
  c: "{{ x | date(tz='Mars/Olympus') }}"
  d: "{{ x | phone('XX') }}"
"#;
    let Err(Diagnostics(d)) = compile(yaml) else { panic!("should not compile") };
    let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "status.active_if",
            "status.time_zone",
            "status.pre_hire_days",
            "attributes.a",
            "attributes.b",
            "attributes.c",
            "attributes.d",
        ],
        "{d:#?}"
    );
    assert!(d[0].message.starts_with("invalid expression: syntax error"), "{}", d[0].message);
    assert!(d[1].message.contains("did you mean `Europe/Berlin`?"), "{}", d[1].message);
    assert!(d[3].message.contains("unknown lookup table `cods`"), "{}", d[3].message);
    assert!(d[4].message.contains("invalid regex"), "{}", d[4].message);
    assert!(d[5].message.contains("unknown time zone"), "{}", d[5].message);
    assert!(d[6].message.contains("unknown region"), "{}", d[6].message);
}

#[test]
fn v2_keys_in_a_v1_file_name_the_version() {
    let yaml = "version: 1\nexternal_id: id\nstatus: { field: a, active_if: x }\nattributes: { a: b }\ngroups: []\n";
    let Err(Diagnostics(d)) = compile(yaml) else { panic!("should not compile") };
    let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
    assert!(
        msgs.contains(&"`groups` needs `version: 2` (this file says `version: 1`)"),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"`active_if` needs `version: 2` (this file says `version: 1`)"),
        "{msgs:?}"
    );
}

#[test]
fn version_2_requires_a_status_rule() {
    let Err(Diagnostics(d)) = compile("version: 2\nexternal_id: id\nattributes: { a: b }\n") else {
        panic!("should not compile")
    };
    assert_eq!(d.len(), 1);
    assert!(d[0].message.starts_with("missing key `status`"), "{}", d[0].message);
}

// ----- effective dating --------------------------------------------------------------------

const DATED: &str = r#"version: 2
external_id: id
status:
  active_if: state != "terminated"
  start_date: start
  end_date: end
  pre_hire_days: 5
  time_zone: America/New_York
attributes:
  userName: id
"#;

fn status_at(m: &Mapping, fields: Value, now: &str) -> String {
    match m.apply_at(&record(fields), at(now)).expect("mapped") {
        Mapped::User(u) if u.active => "active".into(),
        Mapped::User(_) => "inactive".into(),
        Mapped::NotYet(n) => format!("not_yet until {}", n.import_from),
    }
}

#[test]
fn pre_hire_window_opens_exactly_n_days_before_the_start_in_the_zone() {
    let m = compile(DATED).unwrap();
    let joiner = json!({"id": "j@example.com", "state": "hired", "start": "2025-07-10"});
    // The window opens on 2025-07-05 in New York (UTC-4 in July): 04:00Z.
    assert_eq!(
        status_at(&m, joiner.clone(), "2025-07-05T03:59:59Z"),
        "not_yet until 2025-07-05",
        "23:59 on 4 July in New York: still 6 days before"
    );
    assert_eq!(status_at(&m, joiner.clone(), "2025-07-05T04:00:00Z"), "active");
    assert_eq!(status_at(&m, joiner.clone(), "2025-07-10T12:00:00Z"), "active");
    assert_eq!(status_at(&m, joiner, "2026-01-01T00:00:00Z"), "active");
}

#[test]
fn leaver_is_deactivated_on_the_end_date_in_the_zone() {
    let m = compile(DATED).unwrap();
    let leaver = json!({"id": "l@example.com", "state": "active", "start": "2020-01-01", "end": "2025-03-31"});
    // New York is UTC-4 on 31 March 2025: the end date begins at 04:00Z.
    assert_eq!(status_at(&m, leaver.clone(), "2025-03-31T03:59:59Z"), "active");
    assert_eq!(status_at(&m, leaver.clone(), "2025-03-31T04:00:00Z"), "inactive");
    assert_eq!(status_at(&m, leaver.clone(), "2025-04-15T00:00:00Z"), "inactive");
    // An end date as an instant is converted into the zone first.
    let instant = json!({"id": "l", "state": "active", "end": "2025-03-31T02:00:00Z"});
    assert_eq!(
        status_at(&m, instant.clone(), "2025-03-30T23:00:00Z"),
        "inactive",
        "02:00Z on 31 March is still 30 March in New York, which has begun"
    );
    assert_eq!(status_at(&m, instant, "2025-03-30T03:00:00Z"), "active");
}

#[test]
fn the_active_rule_still_applies_and_bad_dates_reject() {
    let m = compile(DATED).unwrap();
    let fired = json!({"id": "f", "state": "terminated", "start": "2030-01-01"});
    assert_eq!(
        status_at(&m, fired, "2025-01-01T00:00:00Z"),
        "inactive",
        "no pre-hire for a leaver"
    );
    let bad = json!({"id": "b", "state": "active", "start": "next monday"});
    let err = m.apply_at(&record(bad), at("2025-01-01T00:00:00Z")).unwrap_err();
    assert!(err.reason.contains("not a date"), "{err}");
}

#[test]
fn worker_time_zone_overrides_the_default() {
    let m = compile(
        "version: 2\nexternal_id: id\nstatus:\n  end_date: end\n  time_zone: UTC\n  \
         worker_time_zone: tz\nattributes: { userName: id }\n",
    )
    .unwrap();
    let sydney = json!({"id": "s", "end": "2025-07-01", "tz": "Australia/Sydney"});
    let utc = json!({"id": "u", "end": "2025-07-01"});
    let now = "2025-06-30T15:00:00Z"; // 01:00 on 1 July in Sydney
    assert_eq!(status_at(&m, sydney, now), "inactive");
    assert_eq!(status_at(&m, utc, now), "active");
    let bad = json!({"id": "x", "end": "2025-07-01", "tz": "Sydney"});
    assert!(
        m.apply_at(&record(bad), at(now)).unwrap_err().reason.contains("not an IANA time zone")
    );
}

#[test]
fn apply_without_a_clock_reports_a_future_joiner_as_held_back() {
    let m = compile(DATED).unwrap();
    let far = json!({"id": "j", "state": "hired", "start": "2999-01-01"});
    let err = m.apply(&record(far)).unwrap_err();
    assert!(err.reason.contains("pre-hire window"), "{err}");
}

// ----- filters and expressions -------------------------------------------------------------

#[test]
fn filters_do_what_the_readme_says() {
    let m = compile(
        r#"version: 2
external_id: id
status: { active_if: "true" }
lookups:
  iso: { Germany: DE }
attributes:
  a: "{{ name | trim | title }}"
  b: "{{ code | regex_capture('^([A-Z]+)-') }}"
  c: "{{ tags | default('') | split(',') | map('trim') | join('|') }}"
  d: "{{ missing | default('n/a') }}"
  e: "{{ hired | date(from='%d/%m/%Y', format='%Y-%m-%d') }}"
  f: "{{ at | date(format='%Y-%m-%d %H:%M', tz='Asia/Tokyo') }}"
  g: "{{ cell | phone('GB') }}"
  h: "{{ country | lookup('iso') }}"
  i: "{{ 'yes' if flag else 'no' }}"
  j: "{{ addr.home.city | upper }}"
  k: "{{ name | replace('o', '0') }}"
  l: "{{ 1700000000 | date(format='%Y-%m-%dT%H:%M:%S') }}"
"#,
    )
    .unwrap();
    let r = record(json!({
        "id": "1", "name": "  ada lovelace ", "code": "ENG-42", "tags": "a, b ,c",
        "hired": "03/04/2021", "at": "2025-01-01T20:30:00Z", "cell": "07911 123456",
        "country": "Germany", "flag": true, "addr": {"home": {"city": "London"}},
    }));
    let Mapped::User(u) = m.apply_at(&r, fixed_now()).unwrap() else { panic!() };
    let p = |k: &str| u.profile.get(k).map(String::as_str);
    assert_eq!(p("a"), Some("Ada Lovelace"));
    assert_eq!(p("b"), Some("ENG"));
    assert_eq!(p("c"), Some("a|b|c"));
    assert_eq!(p("d"), Some("n/a"));
    assert_eq!(p("e"), Some("2021-04-03"));
    assert_eq!(p("f"), Some("2025-01-02 05:30"));
    assert_eq!(p("g"), Some("+447911123456"));
    assert_eq!(p("h"), Some("DE"));
    assert_eq!(p("i"), Some("yes"));
    assert_eq!(p("j"), Some("LONDON"));
    assert_eq!(p("k"), Some("ada l0velace"));
    assert_eq!(p("l"), Some("2023-11-14T22:13:20"));
    // Absent inputs pass through as absent: the attributes are omitted, not errors.
    let Mapped::User(u) =
        m.apply_at(&record(json!({"id": "2", "flag": false})), fixed_now()).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.profile.keys().collect::<Vec<_>>(), ["d", "i", "l"]);
}

#[test]
fn a_non_boolean_status_expression_rejects_rather_than_guesses() {
    let m = compile(
        "version: 2\nexternal_id: id\nstatus: { active_if: state }\nattributes: { a: id }\n",
    )
    .unwrap();
    let err = m.apply_at(&record(json!({"id": "1", "state": "Active"})), fixed_now()).unwrap_err();
    assert!(err.reason.contains("expected true or false"), "{err}");
}

#[test]
fn groups_are_derived_checked_and_deduplicated() {
    let m = compile(
        r#"version: 2
external_id: id
status: { active_if: active }
attributes: { a: id }
groups:
  - { external_id: "d-{{ dept }}", name: "{{ dept }}" }
  - { external_id: "d-{{ dept }}", name: "again {{ dept }}" }
  - { external_id: "m", name: Managers, when: manager }
"#,
    )
    .unwrap();
    let groups = |v: Value| match m.apply_at(&record(v), fixed_now()) {
        Ok(Mapped::User(u)) => {
            Ok(u.groups.into_iter().map(|g| (g.external_id, g.display_name)).collect::<Vec<_>>())
        }
        Ok(other) => panic!("{other:?}"),
        Err(r) => Err(r.reason),
    };
    assert_eq!(
        groups(json!({"id": "1", "active": true, "dept": "Ops", "manager": true})),
        Ok(vec![("d-Ops".into(), "Ops".into()), ("m".into(), "Managers".into())])
    );
    assert_eq!(groups(json!({"id": "1", "active": false, "dept": "Ops"})), Ok(vec![]));
    // A group id without a name is an error, not a group named "": use `when:` for
    // optional groups.
    let err = groups(json!({"id": "1", "active": true})).unwrap_err();
    assert!(err.contains("group `d-` has an empty name"), "{err}");
    let long = "x".repeat(300);
    let err = groups(json!({"id": "1", "active": true, "dept": long})).unwrap_err();
    assert!(err.contains("the limit is 255"), "{err}");
    let err = groups(json!({"id": "y".repeat(300), "active": true, "dept": "Ops"})).unwrap_err();
    assert!(err.contains("member's externalId is limited to 255"), "{err}");
}

// ----- properties --------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[0-9 +()-]{0,16}".prop_map(Value::String),
        prop_oneof![Just("Active"), Just("On Leave"), Just("2025-07-01"), Just("Germany")]
            .prop_map(|s| json!(s)),
        "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("status".to_string()),
                    Just("startDate".to_string()),
                    Just("endDate".to_string()),
                    Just("department".to_string()),
                    Just("first".to_string()),
                    Just("last".to_string()),
                    Just("type".to_string()),
                    Just("number".to_string()),
                    Just("country".to_string()),
                    Just("timeZone".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn evaluation_never_panics_and_yields_okta_shaped_output(
        fields in prop::collection::btree_map(
            prop_oneof![
                Just("employeeNumber".to_string()), Just("name".to_string()),
                Just("workEmail".to_string()), Just("employment".to_string()),
                Just("location".to_string()), Just("phones".to_string()),
                Just("jobTitle".to_string()), "[a-z]{1,6}",
            ],
            json_value(),
            0..8,
        ),
        secs in 0i64..4_000_000_000,
    ) {
        let m = load(&Path::new(ROOT).join("mappings/http-hris.yaml"));
        let r = record(Value::Object(fields.into_iter().collect()));
        let now = Utc.timestamp_opt(secs, 0).unwrap();
        match m.apply_at(&r, now) {
            Ok(Mapped::User(u)) => {
                prop_assert!(!u.external_id.is_empty());
                prop_assert!(u.external_id.chars().count() <= EXTERNAL_ID_MAX_CHARS);
                prop_assert!(!u.active || !u.profile.is_empty());
                for (k, v) in &u.profile {
                    prop_assert!(!v.is_empty() && v.trim() == v, "{k}: {v:?}");
                    if let Some(c) = xaas::mapping::eval::constraint_for(k) {
                        let n = v.chars().count();
                        prop_assert!(n >= c.min_chars && n <= c.max_chars, "{k}: {v:?}");
                    }
                }
                prop_assert!(u.active || u.groups.is_empty());
                for g in &u.groups {
                    prop_assert!((1..=GROUP_ID_MAX_CHARS).contains(&g.external_id.chars().count()));
                    prop_assert!((1..=GROUP_ID_MAX_CHARS).contains(&g.display_name.chars().count()));
                    prop_assert!(g.description.as_ref().is_none_or(|d| d.chars().count() <= GROUP_DESCRIPTION_MAX_CHARS));
                }
            }
            Ok(Mapped::NotYet(n)) => prop_assert!(n.import_from <= n.start_date),
            Err(rej) => prop_assert!(!rej.reason.is_empty()),
        }
    }
}
