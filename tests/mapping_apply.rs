//! Applying a mapping to records: values, status, omissions, Okta's limits, rejections.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use xaas::mapping::{MappedUser, Mapping, Origin, Record, Rejection};

fn mapping(yaml: &str) -> Mapping {
    Mapping::from_yaml(Path::new("m.yaml"), yaml).unwrap_or_else(|d| panic!("{d}"))
}

fn record(fields: Value) -> Record {
    let Value::Object(fields) = fields else { panic!("fields must be an object") };
    Record { origin: Origin::Line(7), fields }
}

const BASE: &str = r#"
version: 1
external_id: id
status:
  field: active
attributes:
  userName: email
  email: email
  firstName: first_name
  lastName: last_name
  displayName: "{{ first_name }} {{ last_name }}"
  mobilePhone: { from: cell }
  streetAddress: { template: "{{ street_number }} {{ street_name }}", required: false }
  employeeNumber: number
  secondEmail: alt
  homeAddress: home
"#;

fn base_ok(fields: Value) -> MappedUser {
    mapping(BASE).apply(&record(fields)).unwrap_or_else(|r| panic!("{r}"))
}

fn base_err(fields: Value) -> Rejection {
    mapping(BASE).apply(&record(fields)).expect_err("the record should be rejected")
}

fn alice(extra: Value) -> Value {
    let mut v = json!({
        "id": "alice@example.com", "active": "true", "email": "alice@example.com",
        "first_name": "Alice", "last_name": "Liddell",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn copies_templates_and_long_forms() {
    let u = base_ok(alice(json!({
        "cell": " 630-851-127 ", "street_number": 2478, "street_name": "Calle del Arenal",
    })));
    assert_eq!(u.origin, Origin::Line(7));
    assert_eq!(u.external_id, "alice@example.com");
    assert!(u.active);
    let p: Vec<(&str, &str)> = u.profile.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        p,
        [
            ("displayName", "Alice Liddell"),
            ("email", "alice@example.com"),
            ("firstName", "Alice"),
            ("lastName", "Liddell"),
            ("mobilePhone", "630-851-127"),
            ("streetAddress", "2478 Calle del Arenal"),
            ("userName", "alice@example.com"),
        ]
    );
}

#[test]
fn empty_and_missing_values_are_omitted_never_sent_empty() {
    let u = base_ok(alice(json!({
        "cell": "   ", "street_number": "", "street_name": null, "number": null, "last_name": "",
    })));
    assert!(!u.profile.contains_key("mobilePhone"));
    assert!(!u.profile.contains_key("streetAddress"), "template rendering only spaces");
    assert!(!u.profile.contains_key("employeeNumber"));
    assert!(!u.profile.contains_key("lastName"));
    // Undefined template variables render empty; the result is trimmed.
    assert_eq!(u.profile["displayName"], "Alice");
    assert!(u.profile.values().all(|v| !v.is_empty() && v.trim() == v));
}

#[test]
fn numbers_and_bools_are_stringified() {
    let m = mapping(
        "version: 1\nexternal_id: id\nattributes:\n  a: n\n  b: f\n  c: t\n  d: \"{{ n }}-{{ t }}\"\n  \
         e: \"{{ o.x }}\"\n",
    );
    let u = m
        .apply(&record(json!({"id": 42, "n": 1234567, "f": 1.5, "t": false, "o": {"x": null}})))
        .unwrap();
    assert_eq!(u.external_id, "42");
    assert_eq!(u.profile["a"], "1234567");
    assert_eq!(u.profile["b"], "1.5");
    assert_eq!(u.profile["c"], "false");
    assert_eq!(u.profile["d"], "1234567-false");
    assert!(!u.profile.contains_key("e"), "null renders as nothing, not `none`");
}

#[test]
fn arrays_and_objects_are_rejected_for_copies() {
    let r = base_err(alice(json!({"cell": ["1", "2"]})));
    assert_eq!(r.field.as_deref(), Some("mobilePhone"));
    assert_eq!(r.external_id.as_deref(), Some("alice@example.com"));
    assert_eq!(r.origin, Origin::Line(7));
    assert!(r.reason.contains("arrays aren't supported by okta profiles"), "{}", r.reason);
    let r = base_err(alice(json!({"number": {"a": 1}})));
    assert_eq!(r.field.as_deref(), Some("employeeNumber"));
    assert!(r.reason.contains("holds an object"), "{}", r.reason);
}

#[test]
fn status_default_values_case_insensitive_and_json_bools() {
    for (v, active) in [
        (json!("true"), true),
        (json!(" YES "), true),
        (json!("Active"), true),
        (json!("y"), true),
        (json!(1), true),
        (json!(true), true),
        (json!("FALSE"), false),
        (json!("no"), false),
        (json!("0"), false),
        (json!("inactive"), false),
        (json!(false), false),
        (json!(0), false),
    ] {
        let u = base_ok(alice(json!({ "active": v.clone() })));
        assert_eq!(u.active, active, "{v}");
    }
}

#[test]
fn unknown_status_value_is_rejected_not_guessed() {
    let r = base_err(alice(json!({"active": "maybe"})));
    assert_eq!(r.field.as_deref(), Some("active"));
    assert_eq!(r.external_id.as_deref(), Some("alice@example.com"));
    assert!(
        r.reason.starts_with("status field `active` has value `maybe`, expected one of `true`"),
        "{}",
        r.reason
    );
    let r = base_err(alice(json!({"active": ["true"]})));
    assert_eq!(r.field.as_deref(), Some("active"));
}

#[test]
fn missing_status_follows_when_missing() {
    let r = base_err(alice(json!({"active": " "})));
    assert_eq!(r.reason, "status field `active` is absent or empty");
    let mut v = alice(json!({}));
    v.as_object_mut().unwrap().remove("active");
    assert!(base_err(v.clone()).reason.contains("absent or empty"));

    let with = |wm: &str| {
        mapping(&format!(
            "version: 1\nexternal_id: id\nstatus: {{ field: active, when_missing: {wm} }}\n\
             attributes: {{ email: email }}\n"
        ))
    };
    assert!(with("active").apply(&record(v.clone())).unwrap().active);
    assert!(!with("inactive").apply(&record(v.clone())).unwrap().active);
    assert!(with("reject").apply(&record(v)).is_err());
}

#[test]
fn custom_status_values_replace_the_defaults() {
    let m = mapping(
        "version: 1\nexternal_id: id\nstatus:\n  field: s\n  active_values: [A, on]\n  \
         inactive_values: [T, 0]\nattributes: { x: x }\n",
    );
    let run = |s: &str| m.apply(&record(json!({"id": "1", "s": s, "x": "v"})));
    assert!(run("a").unwrap().active);
    assert!(run("ON").unwrap().active);
    assert!(!run("t").unwrap().active);
    assert!(!run("0").unwrap().active);
    assert!(run("true").is_err(), "defaults no longer apply");
}

#[test]
fn no_status_rule_means_active() {
    let m = mapping("version: 1\nexternal_id: id\nattributes: { x: x }\n");
    assert!(m.apply(&record(json!({"id": "1", "x": "v"}))).unwrap().active);
}

#[test]
fn email_shape() {
    for bad in [
        "not-an-email",
        "a@b@example.com",
        "@example.com",
        "alice@localhost",
        "alice@example..com",
        "alice@.example.com",
        "alice@example.com.",
        "al ice@example.com",
    ] {
        let r = base_err(alice(json!({"email": bad})));
        assert_eq!(r.field.as_deref(), Some("email"), "{bad}");
        assert_eq!(r.reason, format!("{bad:?} is not a valid email address"));
    }
    let r = base_err(alice(json!({"email": "not-an-email"})));
    assert_eq!(
        r.to_string(),
        "line 7 (externalId alice@example.com): email: \"not-an-email\" is not a valid email address"
    );
    // secondEmail has the same rules.
    let r = base_err(alice(json!({"alt": "nope"})));
    assert_eq!(r.field.as_deref(), Some("secondEmail"));
    assert_eq!(r.reason, "4 characters, the minimum is 5");
}

#[test]
fn email_length_5_to_100() {
    let r = base_err(alice(json!({"email": "a@b."})));
    assert_eq!(r.reason, "4 characters, the minimum is 5");
    assert_eq!(base_ok(alice(json!({"email": "a@b.c"}))).profile["email"], "a@b.c");
    let local = "a".repeat(100 - "@example.com".len());
    let ok = format!("{local}@example.com");
    assert_eq!(ok.chars().count(), 100);
    assert_eq!(base_ok(alice(json!({"email": ok.clone()}))).profile["email"], ok);
    let r = base_err(alice(json!({"email": format!("a{ok}")})));
    assert_eq!(r.reason, "101 characters, the limit is 100");
}

#[test]
fn name_limits_count_characters_not_bytes() {
    let r = base_err(alice(json!({"first_name": "x".repeat(51)})));
    assert_eq!(r.field.as_deref(), Some("firstName"));
    assert_eq!(r.reason, "51 characters, the limit is 50");
    let r = base_err(alice(json!({"first_name": "y".repeat(61)})));
    assert_eq!(r.reason, "61 characters, the limit is 50");
    // 50 two-byte characters: 100 bytes, but within the limit.
    let u = base_ok(alice(json!({"last_name": "é".repeat(50)})));
    assert_eq!(u.profile["lastName"].chars().count(), 50);
    let r = base_err(alice(json!({"last_name": "ł".repeat(51)})));
    assert_eq!(r.field.as_deref(), Some("lastName"));
}

#[test]
fn username_mobile_and_home_address_limits() {
    let m = mapping(
        "version: 1\nexternal_id: id\nattributes: { userName: u, mobilePhone: m, homeAddress: h }\n",
    );
    let run = |k: &str, n: usize| m.apply(&record(json!({"id": "1", k: "x".repeat(n)})));
    assert!(run("u", 100).is_ok());
    let r = run("u", 101).unwrap_err();
    assert_eq!(
        (r.field.as_deref(), r.reason.as_str()),
        (Some("userName"), "101 characters, the limit is 100")
    );
    assert!(run("m", 100).is_ok());
    assert_eq!(run("m", 101).unwrap_err().field.as_deref(), Some("mobilePhone"));
    assert!(run("h", 4096).is_ok());
    assert_eq!(run("h", 4097).unwrap_err().reason, "4097 characters, the limit is 4096");
}

#[test]
fn custom_attributes_have_no_length_limit() {
    let m = mapping("version: 1\nexternal_id: id\nattributes: { note: n }\n");
    assert!(m.apply(&record(json!({"id": "1", "n": "x".repeat(5000)}))).is_ok());
}

#[test]
fn external_id_missing_empty_or_too_long_rejects() {
    let mut v = alice(json!({}));
    v.as_object_mut().unwrap().remove("id");
    let r = base_err(v);
    assert_eq!(r.field.as_deref(), Some("externalId"));
    assert_eq!(r.external_id, None);
    assert_eq!(r.reason, "field `id` is absent or empty, so there is no externalId");
    let r = base_err(alice(json!({"id": "  "})));
    assert_eq!(r.reason, "field `id` is absent or empty, so there is no externalId");

    assert_eq!(base_ok(alice(json!({"id": "é".repeat(512)}))).external_id.chars().count(), 512);
    let r = base_err(alice(json!({"id": "x".repeat(513)})));
    assert_eq!(r.field.as_deref(), Some("externalId"));
    assert_eq!(r.reason, "513 characters, the limit is 512");

    let m = mapping("version: 1\nexternal_id: \"{{ dept }}-{{ num }}\"\nattributes: { x: x }\n");
    assert_eq!(
        m.apply(&record(json!({"dept": "hr", "num": 7, "x": "v"}))).unwrap().external_id,
        "hr-7"
    );
    let m = mapping("version: 1\nexternal_id: \"{{ num }}\"\nattributes: { x: x }\n");
    let r = m.apply(&record(json!({"x": "v"}))).unwrap_err();
    assert!(r.reason.contains("rendered empty"), "{}", r.reason);
}

#[test]
fn empty_profile_is_rejected_for_active_users() {
    let r = base_err(json!({"id": "a@example.com", "active": "true"}));
    assert_eq!(r.field, None);
    assert_eq!(r.external_id.as_deref(), Some("a@example.com"));
    assert!(r.reason.contains("empty user"), "{}", r.reason);
}

#[test]
fn deactivations_need_only_the_external_id() {
    // A leaver with no profile, or a bad value, is still deactivated: keeping them active in
    // Okta because of a typo would be the worse failure.
    let u = base_ok(json!({"id": "a@example.com", "active": "false"}));
    assert!(!u.active);
    assert!(u.profile.is_empty());
    let u = base_ok(alice(json!({"active": "false", "email": "broken", "cell": ["x"]})));
    assert!(!u.active);
    assert!(!u.profile.contains_key("email"), "invalid values are left out");
    assert!(!u.profile.contains_key("mobilePhone"));
    assert_eq!(u.profile["firstName"], "Alice");
}

#[test]
fn required_attributes() {
    let m = mapping(
        "version: 1\nexternal_id: id\nattributes:\n  email: email\n  userName: { from: login, required: true }\n  \
         title: title\nrequired: [email]\n",
    );
    assert_eq!(m.required_attributes().collect::<Vec<_>>(), ["email", "userName"]);
    let ok = json!({"id": "1", "email": "a@example.com", "login": "a"});
    assert!(m.apply(&record(ok)).is_ok());
    let r = m.apply(&record(json!({"id": "1", "login": "a", "title": "Dr"}))).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("email"));
    assert_eq!(r.reason, "required attribute is missing: field `email` is absent or empty");
    let r =
        m.apply(&record(json!({"id": "1", "email": "a@example.com", "login": " "}))).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("userName"));
}

#[test]
fn template_runtime_errors_reject_the_record() {
    let m = mapping("version: 1\nexternal_id: id\nattributes:\n  x: \"{{ a / b }}\"\n");
    let r = m.apply(&record(json!({"id": "1", "a": 1, "b": 0}))).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("x"));
    assert!(r.reason.starts_with("template failed"), "{}", r.reason);
}

#[test]
fn templates_see_nested_values_and_missing_ones_render_empty() {
    let m = mapping(
        "version: 1\nexternal_id: id\nattributes:\n  city: \"{{ address.city }}\"\n  \
         zip: \"{{ address.zip.code }}{{ nope.deeper }}\"\n  x: x\n",
    );
    let u = m.apply(&record(json!({"id": "1", "address": {"city": "Kraków"}, "x": "v"}))).unwrap();
    assert_eq!(u.profile["city"], "Kraków");
    assert!(!u.profile.contains_key("zip"));
}

#[test]
fn mapping_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Mapping>();
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,80}".prop_map(Value::String),
        prop_oneof![Just("true"), Just("no"), Just(" Y "), Just("")].prop_map(|s| json!(s)),
        "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn apply_never_panics_and_keeps_its_promises(
        fields in prop::collection::btree_map(
            prop_oneof![
                Just("id".to_string()), Just("active".to_string()), Just("email".to_string()),
                Just("first_name".to_string()), Just("last_name".to_string()),
                Just("cell".to_string()), Just("street_number".to_string()),
                Just("street_name".to_string()), Just("number".to_string()),
                Just("alt".to_string()), Just("home".to_string()), "[a-z_]{1,6}",
            ],
            json_value(),
            0..12,
        )
    ) {
        let m = mapping(BASE);
        let r = record(Value::Object(fields.into_iter().collect()));
        match m.apply(&r) {
            Ok(u) => {
                prop_assert!(!u.external_id.is_empty());
                prop_assert!(u.external_id.chars().count() <= 512);
                prop_assert!(!u.active || !u.profile.is_empty());
                for v in u.profile.values() {
                    prop_assert!(!v.is_empty());
                    prop_assert_eq!(v.trim(), v.as_str());
                }
            }
            Err(rej) => {
                prop_assert!(!rej.reason.is_empty());
                prop_assert_eq!(rej.origin, Origin::Line(7));
            }
        }
    }
}

#[test]
fn control_characters_reject_identifiers_and_nul_leaves_other_attributes() {
    // The externalId: rejected, naming the character and its position.
    let r = base_err(alice(json!({"id": "ali\u{1}ce@example.com"})));
    assert_eq!(r.field.as_deref(), Some("externalId"));
    assert!(r.reason.contains("U+0001 at character 4"), "{}", r.reason);
    assert_eq!(r.origin, Origin::Line(7));
    // email (and userName, mapped from it here): DEL inside is refused too.
    let r = base_err(alice(json!({"email": "alice\u{7f}@example.com"})));
    assert!(matches!(r.field.as_deref(), Some("userName" | "email")), "{r:?}");
    assert!(r.reason.contains("U+007F at character 6"), "{}", r.reason);
    // userName on its own, with a newline inside.
    let m = mapping(
        "version: 1\nexternal_id: id\nattributes:\n  userName: login\n  email: email\n  title: title\n",
    );
    let rec = |login: &str, title: &str| {
        record(json!({"id": "a1", "login": login, "email": "a@example.com", "title": title}))
    };
    let r = m.apply(&rec("a\nb", "x")).expect_err("a newline in userName");
    assert_eq!(r.field.as_deref(), Some("userName"));
    assert!(r.reason.contains("U+000A at character 2"), "{}", r.reason);
    // Other attributes keep tabs and newlines, and lose NUL.
    let u = m.apply(&rec("a", "Head\tof\nSales\u{0}")).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(u.profile["title"], "Head\tof\nSales");
    let u = m.apply(&rec("a", "\u{0}")).unwrap_or_else(|r| panic!("{r}"));
    assert!(!u.profile.contains_key("title"), "only NUL: empty, so omitted");
    // A leaver with a bad email is still deactivated (the bad value is left out).
    let u = base_ok(alice(json!({"active": "false", "email": "a\u{2}b@example.com"})));
    assert!(!u.active);
}
