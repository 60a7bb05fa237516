//! Compiling mappings: every error reported at once, each at its line, with helpful text.

use std::path::Path;

use xaas::diag::{Diagnostic, Diagnostics};
use xaas::mapping::Mapping;

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match Mapping::from_yaml(Path::new("maps/hr.yaml"), yaml) {
        Ok(_) => panic!("expected errors"),
        Err(Diagnostics(d)) => d,
    }
}

/// (line, key, message) triples, for compact assertions.
fn summary(d: &[Diagnostic]) -> Vec<(Option<usize>, &str, &str)> {
    d.iter().map(|d| (d.line, d.key.as_str(), d.message.as_str())).collect()
}

#[test]
fn a_valid_mapping_compiles_and_lists_its_parts() {
    let m = Mapping::from_yaml(
        Path::new("m.yaml"),
        r#"
version: 1
external_id: "{{ id }}"
status: { field: active }
attributes:
  zeta: z
  userName: email
  displayName: "{{ first_name }} {{ last_name }}"
"#,
    )
    .unwrap();
    // File order, not alphabetical.
    assert_eq!(m.attribute_names().collect::<Vec<_>>(), ["zeta", "userName", "displayName"]);
    assert_eq!(m.status_field(), Some("active"));
    assert_eq!(
        m.source_fields().iter().map(String::as_str).collect::<Vec<_>>(),
        ["active", "email", "first_name", "id", "last_name", "z"]
    );
}

#[test]
fn several_errors_in_one_file_are_all_reported_at_their_lines() {
    let yaml = "\
version: 1
external_id: id
statsu:
  field: active
attributes:
  userName: email
  first-name: first_name
  displayName: \"{{ first_name }\"
  mobilePhone: { from: cell, template: \"{{ cell }}\" }
  title: { form: title }
  city: 42
required: [userName, emial]
";
    let d = errors(yaml);
    assert_eq!(
        summary(&d),
        [
            (Some(3), "statsu", "unknown key `statsu`, did you mean `status`?"),
            (
                Some(7),
                "attributes.first-name",
                "attribute name `first-name` is not valid: use letters, digits and `_`, not \
                 starting with a digit (okta variable names)"
            ),
            (
                Some(8),
                "attributes.displayName",
                "invalid template: syntax error: unexpected `}`, expected end of variable block \
                 (template line 1)"
            ),
            (Some(9), "attributes.mobilePhone", "both `from` and `template` are set, use one"),
            // Same line: by column.
            (Some(10), "attributes.title", "needs `from` (a field) or `template`"),
            (Some(10), "attributes.title.form", "unknown key `form`, did you mean `from`?"),
            (
                Some(11),
                "attributes.city",
                "expected a field name, a template, or a mapping with `from` or `template`, \
                 found a number"
            ),
            (Some(12), "required[1]", "`emial` is not an attribute of this mapping"),
        ]
    );
    // Displayed with file, line, column and key.
    assert_eq!(
        d[0].to_string(),
        "maps/hr.yaml:3:1: statsu: unknown key `statsu`, did you mean `status`?"
    );
}

#[test]
fn unknown_keys_everywhere_with_suggestions() {
    let d = errors(
        "version: 1\nexternal_id: id\nstatus:\n  feild: active\n  active_value: [yes]\n  \
         when_missing: sometimes\nattributes: { a: { from: x, requird: true } }\ncolour: 1\n",
    );
    assert_eq!(
        summary(&d),
        [
            // The missing `field` is reported where the status block starts.
            (Some(3), "status", "needs a rule: `field` (v1), or `active_if` or `end_date` (v2)"),
            (Some(4), "status.feild", "unknown key `feild`, did you mean `field`?"),
            (
                Some(5),
                "status.active_value",
                "unknown key `active_value`, did you mean `active_values`?"
            ),
            (
                Some(6),
                "status.when_missing",
                "unknown value `sometimes`, expected one of `reject`, `active`, `inactive`"
            ),
            (Some(7), "attributes.a.requird", "unknown key `requird`, did you mean `required`?"),
            (
                Some(8),
                "colour",
                "unknown key `colour`, expected one of `version`, `external_id`, `status`, \
                 `attributes`, `required`, `source_fields`, `lookups`, `groups`, `references`, `tests`"
            ),
        ]
    );
}

#[test]
fn bad_and_missing_version() {
    let d = errors("version: 3\nexternal_id: id\nstatus: { field: a }\nattributes: { a: b }\n");
    assert_eq!(
        summary(&d),
        [(Some(1), "version", "unsupported version `3`, supported versions: 1, 2")]
    );
    let d = errors("version: \"one\"\nexternal_id: id\nattributes: { a: b }\n");
    assert_eq!(d[0].message, "unsupported version `\"one\"`, supported versions: 1, 2");
    let d = errors("external_id: id\nattributes: { a: b }\n");
    assert_eq!(summary(&d), [(None, "", "missing key `version` (supported versions: 1, 2)")]);
}

#[test]
fn missing_parts_and_wrong_types() {
    let d = errors("version: 1\n");
    assert_eq!(
        summary(&d),
        [(None, "", "missing key `external_id`"), (None, "", "missing key `attributes`")]
    );
    let d = errors("version: 1\nexternal_id: [a]\nattributes: {}\nrequired: email\n");
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(d[0].key, "external_id");
    assert!(d[1].message.starts_with("no attributes"), "{}", d[1].message);
    assert_eq!(d[2].message, "expected a list of attribute names, found a string");
    let d = errors("- just\n- a list\n");
    assert!(d[0].message.starts_with("a mapping file must be a YAML mapping"));
}

#[test]
fn bad_template_is_a_compile_error_at_the_attribute_line() {
    let d = errors(
        "version: 1\nexternal_id: id\nattributes:\n  ok: a\n  bad:\n    template: \"{% if x %}yes\"\n",
    );
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].key.as_str()), (Some(6), "attributes.bad.template"));
    assert!(d[0].message.starts_with("invalid template: syntax error"), "{}", d[0].message);
    // Unknown filters are found at load time, not on every record.
    let d = errors("version: 1\nexternal_id: id\nattributes:\n  a: \"{{ x | shout }}\"\n");
    assert_eq!((d[0].line, d[0].key.as_str()), (Some(4), "attributes.a"));
    assert!(d[0].message.contains("unknown filter"), "{}", d[0].message);
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let d = errors("version: 1\nexternal_id: id\nattributes:\n  a: [b\n  c: d\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, Some(5));
    assert!(d[0].column.is_some());
    assert!(d[0].message.starts_with("invalid yaml: "), "{}", d[0].message);
    assert!(!d[0].message.contains(" at line "), "position is not repeated: {}", d[0].message);
    let d = errors("version: 1\nversion: 1\n");
    assert_eq!(d[0].line, Some(2));
    assert!(d[0].message.contains("duplicate"), "{}", d[0].message);
}

#[test]
fn status_lists_are_checked() {
    let d = errors(
        "version: 1\nexternal_id: id\nstatus:\n  field: s\n  active_values: [yes, \" \"]\n  \
         inactive_values: [YES, [x]]\nattributes: { a: b }\n",
    );
    // A shape error no longer hides the rest of the block: the lists are checked too.
    assert_eq!(
        summary(&d),
        [
            (
                Some(5),
                "status.active_values[1]",
                "an empty value; use `when_missing` for absent or empty status fields"
            ),
            (Some(6), "status.inactive_values[0]", "`yes` is both an active and an inactive value"),
            (Some(6), "status.inactive_values[1]", "expected a string, found a list"),
        ]
    );
    let d = errors(
        "version: 1\nexternal_id: id\nstatus:\n  field: s\n  active_values: [yes, \" \"]\n  \
         inactive_values: [YES, no]\nattributes: { a: b }\n",
    );
    assert_eq!(
        summary(&d),
        [
            (
                Some(5),
                "status.active_values[1]",
                "an empty value; use `when_missing` for absent or empty status fields"
            ),
            (Some(6), "status.inactive_values[0]", "`yes` is both an active and an inactive value"),
        ]
    );
    // `yes` stays the string "yes" (YAML 1.2), so it is not confused with `true`.
    let m = Mapping::from_yaml(
        Path::new("m.yaml"),
        "version: 1\nexternal_id: id\nstatus: { field: s, active_values: [yes], inactive_values: [no] }\nattributes: { a: b }\n",
    );
    assert!(m.is_ok(), "{:?}", m.err());
}

#[test]
fn external_id_rules() {
    let d = errors(
        "version: 1\nexternal_id: { from: id, required: false }\nattributes:\n  externalId: id\n",
    );
    assert_eq!(
        summary(&d),
        [
            (
                Some(2),
                "external_id.required",
                "`external_id` is always required: a record without one cannot be imported"
            ),
            (
                Some(4),
                "attributes.externalId",
                "`externalId` is not a profile attribute; set it with the top-level \
                 `external_id` key"
            ),
        ]
    );
    let d = errors("version: 1\nexternal_id: \"  \"\nattributes: { a: b }\n");
    assert_eq!(summary(&d), [(Some(2), "external_id", "the field name is empty")]);
}
