//! The raw mapping spec: the shape of the YAML file ops write, before any meaning is given.
//!
//! We do not derive `Deserialize` with `deny_unknown_fields` here: serde stops at the first
//! error, and ops deserve to see every mistake in one go. Instead the YAML is parsed into a
//! generic tree and [`read`] walks it, checking each key and type and recording a
//! [`Diagnostic`] with the key path (so [`YamlIndex`] can give its line and column) for every
//! problem. Unknown keys get a did-you-mean suggestion. What this module accepts is only
//! well-*shaped*; whether it makes sense (templates compile, names are valid, the version is
//! supported) is [`super::compile`]'s job.
//!
//! Every value form that may grow in a later version (an attribute, the external id) has a
//! long form, a YAML mapping, so new keys can be added without breaking old files.
//!
//! Version 2 adds keys (`source_fields`, `lookups`, `groups`, `tests`, and the expression and
//! date keys of `status`). They are read here whatever the version, so that a v1 file using
//! them gets one precise "needs `version: 2`" error from compile instead of "unknown key".

use serde_json::Value;

use crate::diag::{Diagnostic, YamlIndex, suggest};

/// Keys allowed at the top of a mapping file.
pub const TOP_KEYS: &[&str] = &[
    "version",
    "external_id",
    "status",
    "attributes",
    "required",
    "source_fields",
    "lookups",
    "groups",
    "references",
    "tests",
];
/// Top-level keys that need `version: 2`.
pub const V2_TOP_KEYS: &[&str] = &["source_fields", "lookups", "groups", "references", "tests"];
/// Keys allowed in the `status` block.
pub const STATUS_KEYS: &[&str] = &[
    "field",
    "active_values",
    "inactive_values",
    "when_missing",
    "active_if",
    "start_date",
    "end_date",
    "pre_hire_days",
    "time_zone",
    "worker_time_zone",
];
/// `status` keys that need `version: 2`.
pub const V2_STATUS_KEYS: &[&str] =
    &["active_if", "start_date", "end_date", "pre_hire_days", "time_zone", "worker_time_zone"];
/// Keys of one `groups` rule.
pub const GROUP_KEYS: &[&str] = &["external_id", "name", "description", "when"];
/// Keys of one `references` entry.
pub const REFERENCE_KEYS: &[&str] = &["person", "attribute", "on_missing"];
/// The values of a reference's `on_missing`.
pub const ON_MISSING: &[&str] = &["omit", "reject"];
/// Keys of one test case.
pub const TEST_KEYS: &[&str] = &["name", "now", "input", "others", "expect"];
/// Keys of a test case's `expect`.
pub const EXPECT_KEYS: &[&str] = &["external_id", "status", "profile", "groups", "rejected"];
/// The values of `expect.status`.
pub const EXPECT_STATUS: &[&str] = &["active", "inactive", "not_yet"];
/// Keys allowed in the long form of an attribute or of `external_id`.
pub const LONG_KEYS: &[&str] = &["from", "template", "required"];
/// The values of `status.when_missing`.
pub const WHEN_MISSING: &[&str] = &["reject", "active", "inactive"];

/// A mapping file, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingSpec {
    /// `version`, kept raw so that compile can say which versions exist.
    pub version: Option<Value>,
    /// `external_id`: where the immutable HR key comes from.
    pub external_id: Option<ValueSpec>,
    /// `status`: the active/deactivated rule. Absent: every record is active.
    pub status: Option<StatusSpec>,
    /// `attributes`, in the order the YAML tree gave them (compile restores file order).
    pub attributes: Vec<(String, ValueSpec)>,
    /// `required`: attribute names a record must produce.
    pub required: Vec<String>,
    /// `source_fields`: the fields the source provides. When given, every field the mapping
    /// reads must be one of them.
    pub source_fields: Option<Vec<String>>,
    /// `lookups`: table name → (key → value), in file order.
    pub lookups: Vec<(String, Vec<(String, String)>)>,
    /// `groups`: one rule per list item.
    pub groups: Vec<GroupSpec>,
    /// `references`: attributes copied from another person of the same pull, in file order.
    pub references: Vec<ReferenceSpec>,
    /// `tests`: the mapping's own test cases.
    pub tests: Vec<TestSpec>,
    /// Key paths of version-2 keys present in the file (compile rejects them in a v1 file).
    pub v2_keys: Vec<String>,
}

/// One `groups` rule: a record yields at most one group per rule. The values are templates;
/// text without `{{` is a constant (group names are more often fixed than copied).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSpec {
    /// A template for the group's externalId (required).
    pub external_id: Option<String>,
    /// A template for the group's displayName (required).
    pub name: Option<String>,
    /// A template for the description (optional).
    pub description: Option<String>,
    /// An expression; the rule applies only when it is true.
    pub when: Option<String>,
}

/// One `references` entry: the profile attribute `name` is the `attribute` of the person whose
/// externalId `person` gives (a manager's `userName`, say).
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSpec {
    /// The profile attribute produced (the entry's key).
    pub name: String,
    /// A field or a template giving the referenced person's externalId.
    pub person: Option<ValueSpec>,
    /// The referenced person's mapped attribute to copy.
    pub attribute: Option<String>,
    /// `omit` (default) or `reject`, kept raw so compile can list the choices.
    pub on_missing: Option<String>,
}

/// One test case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestSpec {
    pub name: Option<String>,
    /// The clock for this case: an RFC 3339 instant or a date (midnight UTC).
    pub now: Option<String>,
    /// The input record.
    pub input: serde_json::Map<String, Value>,
    /// Other records of the same pull, which the input's `references` can name.
    pub others: Vec<serde_json::Map<String, Value>>,
    pub expect: ExpectSpec,
}

/// What a test case expects. Unset expectations are not checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpectSpec {
    pub external_id: Option<String>,
    /// `active`, `inactive` or `not_yet`.
    pub status: Option<String>,
    /// The whole profile, exactly.
    pub profile: Option<Vec<(String, String)>>,
    /// The group externalIds, in any order.
    pub groups: Option<Vec<String>>,
    /// The record must be rejected; `Some(text)`: the reason must contain `text`.
    pub rejected: Option<Option<String>>,
}

/// How one value (an attribute or the external id) is produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSpec {
    /// `name: text`: a field name, or a template when the text contains `{{` or `{%`.
    Short(String),
    /// `name: { from: …, template: …, required: … }`.
    Long(LongValueSpec),
}

/// The long form of a value. Exactly one of `from` and `template` must be set (checked by
/// compile, which can then report both problems with the same key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LongValueSpec {
    /// Copy this field.
    pub from: Option<String>,
    /// Render this template.
    pub template: Option<String>,
    /// Reject the record when the value ends up empty.
    pub required: Option<bool>,
}

/// The `status` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSpec {
    /// The field holding the status (v1 rule).
    pub field: Option<String>,
    /// An expression: true means active, false deactivated (v2 rule, instead of `field`).
    pub active_if: Option<String>,
    /// An expression giving the first day of work (a date or an RFC 3339 instant).
    pub start_date: Option<String>,
    /// An expression giving the termination date: deactivated on and after it.
    pub end_date: Option<String>,
    /// Import a joiner this many days before `start_date`.
    pub pre_hire_days: Option<u32>,
    /// The IANA time zone whose calendar days the dates are in (default UTC).
    pub time_zone: Option<String>,
    /// An expression giving a per-record IANA time zone; overrides `time_zone` when non-empty.
    pub worker_time_zone: Option<String>,
    /// Values meaning "active"; `None` means the defaults.
    pub active_values: Option<Vec<String>>,
    /// Values meaning "deactivated"; `None` means the defaults.
    pub inactive_values: Option<Vec<String>>,
    /// What an absent or empty status field means.
    pub when_missing: WhenMissing,
}

/// What an absent or empty status field means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenMissing {
    /// Reject the record (the default: never guess when deactivation is at stake).
    #[default]
    Reject,
    /// Treat the record as active.
    Active,
    /// Treat the record as deactivated.
    Inactive,
}

/// Walk the parsed YAML `root` and return the spec, pushing a diagnostic for every problem.
/// The returned spec holds whatever was well-shaped, so compile can look for more problems.
pub fn read(root: &Value, index: &YamlIndex, diags: &mut Vec<Diagnostic>) -> MappingSpec {
    let mut spec = MappingSpec::default();
    let Value::Object(top) = root else {
        diags.push(index.diag(
            "",
            format!(
                "a mapping file must be a YAML mapping with `version`, `external_id` and \
                 `attributes`, found {}",
                kind(root)
            ),
        ));
        return spec;
    };
    unknown_keys(top, "", TOP_KEYS, index, diags);
    for key in ["version", "external_id", "attributes"] {
        if !top.contains_key(key) {
            let hint = if key == "version" { " (supported versions: 1, 2)" } else { "" };
            diags.push(index.diag("", format!("missing key `{key}`{hint}")));
        }
    }

    for key in V2_TOP_KEYS {
        if top.contains_key(*key) {
            spec.v2_keys.push((*key).to_string());
        }
    }
    spec.version = top.get("version").cloned();
    if let Some(v) = top.get("external_id") {
        spec.external_id = value_spec(v, "external_id", index, diags);
    }
    if let Some(v) = top.get("status") {
        if let Value::Object(m) = v {
            spec.v2_keys.extend(
                V2_STATUS_KEYS
                    .iter()
                    .filter(|k| m.contains_key(**k))
                    .map(|k| format!("status.{k}")),
            );
        }
        spec.status = status_spec(v, index, diags);
    }
    if let Some(v) = top.get("attributes") {
        match v {
            Value::Object(attrs) if attrs.is_empty() => diags.push(index.diag(
                "attributes",
                "no attributes: every record would have an empty profile, and okta creates an \
                 empty user from an empty profile",
            )),
            Value::Object(attrs) => {
                for (name, v) in attrs {
                    let path = format!("attributes.{name}");
                    if let Some(vs) = value_spec(v, &path, index, diags) {
                        spec.attributes.push((name.clone(), vs));
                    }
                }
            }
            other => diags.push(index.diag(
                "attributes",
                format!("expected a mapping of attribute names to values, found {}", kind(other)),
            )),
        }
    }
    if let Some(v) = top.get("required") {
        spec.required = string_list(v, "required", "attribute names", index, diags);
    }
    if let Some(v) = top.get("source_fields") {
        spec.source_fields = Some(string_list(v, "source_fields", "field names", index, diags));
    }
    if let Some(v) = top.get("lookups") {
        spec.lookups = lookups(v, index, diags);
    }
    if let Some(v) = top.get("groups") {
        spec.groups = list_of(v, "groups", "group rules", index, diags, group_spec);
    }
    if let Some(v) = top.get("references") {
        spec.references = references(v, index, diags);
    }
    if let Some(v) = top.get("tests") {
        spec.tests = list_of(v, "tests", "test cases", index, diags, test_spec);
    }
    spec
}

fn references(v: &Value, index: &YamlIndex, diags: &mut Vec<Diagnostic>) -> Vec<ReferenceSpec> {
    let Value::Object(entries) = v else {
        diags.push(index.diag(
            "references",
            format!(
                "expected a mapping of attribute names to references (`person`, `attribute`), \
                 found {}",
                kind(v)
            ),
        ));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        let path = format!("references.{name}");
        let Value::Object(map) = entry else {
            diags.push(index.diag(
                &path,
                format!("expected a mapping with `person` and `attribute`, found {}", kind(entry)),
            ));
            continue;
        };
        unknown_keys(map, &path, REFERENCE_KEYS, index, diags);
        for key in ["person", "attribute"] {
            if !map.contains_key(key) {
                diags.push(index.diag(&path, format!("missing key `{key}`")));
            }
        }
        out.push(ReferenceSpec {
            name: name.clone(),
            person: map
                .get("person")
                .and_then(|v| value_spec(v, &format!("{path}.person"), index, diags)),
            attribute: opt_string(map, "attribute", &path, index, diags),
            on_missing: opt_string(map, "on_missing", &path, index, diags),
        });
    }
    out
}

/// Read each item of a list with `item`, which returns `None` (with diagnostics) when invalid.
fn list_of<T>(
    v: &Value,
    path: &str,
    what: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
    item: fn(&Value, &str, &YamlIndex, &mut Vec<Diagnostic>) -> Option<T>,
) -> Vec<T> {
    let Value::Array(items) = v else {
        diags.push(index.diag(path, format!("expected a list of {what}, found {}", kind(v))));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| item(v, &format!("{path}[{i}]"), index, diags))
        .collect()
}

fn lookups(
    v: &Value,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Object(tables) = v else {
        diags.push(index.diag(
            "lookups",
            format!("expected a mapping of table names to tables, found {}", kind(v)),
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, table) in tables {
        let path = format!("lookups.{name}");
        let Value::Object(entries) = table else {
            diags.push(index.diag(
                &path,
                format!("expected a mapping of keys to values, found {}", kind(table)),
            ));
            continue;
        };
        let mut rows = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match scalar_text(v) {
                Some(text) => rows.push((k.clone(), text)),
                None => {
                    diags.push(index.diag(
                        format!("{path}.{k}"),
                        format!("expected a string, found {}", kind(v)),
                    ))
                }
            }
        }
        out.push((name.clone(), rows));
    }
    out
}

/// An optional string under `key` of `map`; a non-string is a diagnostic.
fn opt_string(
    map: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<String> {
    match map.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            diags.push(index.diag(
                format!("{path}.{key}"),
                format!("expected a string, found {}", kind(other)),
            ));
            None
        }
    }
}

fn group_spec(
    v: &Value,
    path: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<GroupSpec> {
    let Value::Object(map) = v else {
        diags.push(index.diag(
            path,
            format!("expected a mapping with `external_id` and `name`, found {}", kind(v)),
        ));
        return None;
    };
    unknown_keys(map, path, GROUP_KEYS, index, diags);
    let g = GroupSpec {
        external_id: opt_string(map, "external_id", path, index, diags),
        name: opt_string(map, "name", path, index, diags),
        description: opt_string(map, "description", path, index, diags),
        when: opt_string(map, "when", path, index, diags),
    };
    for (key, set) in [("external_id", g.external_id.is_some()), ("name", g.name.is_some())] {
        if !set && !map.contains_key(key) {
            diags.push(index.diag(path, format!("missing key `{key}`")));
        }
    }
    Some(g)
}

fn test_spec(
    v: &Value,
    path: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<TestSpec> {
    let Value::Object(map) = v else {
        diags.push(index.diag(
            path,
            format!("expected a mapping with `input` and `expect`, found {}", kind(v)),
        ));
        return None;
    };
    unknown_keys(map, path, TEST_KEYS, index, diags);
    let before = diags.len();
    let mut t = TestSpec {
        name: opt_string(map, "name", path, index, diags),
        now: opt_string(map, "now", path, index, diags),
        ..TestSpec::default()
    };
    if let Some(others) = map.get("others") {
        let path = format!("{path}.others");
        match others {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(record) => t.others.push(record.clone()),
                        other => diags.push(index.diag(
                            format!("{path}[{i}]"),
                            format!(
                                "expected a mapping (a record's fields), found {}",
                                kind(other)
                            ),
                        )),
                    }
                }
            }
            other => diags.push(
                index.diag(&path, format!("expected a list of records, found {}", kind(other))),
            ),
        }
    }
    match map.get("input") {
        Some(Value::Object(input)) => t.input = input.clone(),
        Some(other) => diags.push(index.diag(
            format!("{path}.input"),
            format!("expected a mapping (the record's fields), found {}", kind(other)),
        )),
        None => diags.push(index.diag(path, "missing key `input`")),
    }
    let expect_path = format!("{path}.expect");
    match map.get("expect") {
        Some(Value::Object(e)) => {
            unknown_keys(e, &expect_path, EXPECT_KEYS, index, diags);
            let x = &mut t.expect;
            x.external_id = opt_string(e, "external_id", &expect_path, index, diags);
            x.status = opt_string(e, "status", &expect_path, index, diags);
            if let Some(s) = &x.status
                && !EXPECT_STATUS.contains(&s.as_str())
            {
                diags.push(index.diag(
                    format!("{expect_path}.status"),
                    format!("unknown status `{s}`, expected one of {}", one_of(EXPECT_STATUS)),
                ));
            }
            match e.get("profile") {
                None => {}
                Some(Value::Object(p)) => {
                    let mut pairs = Vec::with_capacity(p.len());
                    for (k, v) in p {
                        match scalar_text(v) {
                            Some(s) => pairs.push((k.clone(), s)),
                            None => diags.push(index.diag(
                                format!("{expect_path}.profile.{k}"),
                                format!(
                                    "expected a string (profile values are strings), found {}",
                                    kind(v)
                                ),
                            )),
                        }
                    }
                    x.profile = Some(pairs);
                }
                Some(other) => diags.push(index.diag(
                    format!("{expect_path}.profile"),
                    format!("expected a mapping of attributes, found {}", kind(other)),
                )),
            }
            if let Some(g) = e.get("groups") {
                x.groups =
                    Some(string_list(g, &format!("{expect_path}.groups"), "ids", index, diags));
            }
            match e.get("rejected") {
                None | Some(Value::Bool(false)) => {}
                Some(Value::Bool(true)) => x.rejected = Some(None),
                Some(Value::String(s)) => x.rejected = Some(Some(s.clone())),
                Some(other) => diags.push(index.diag(
                    format!("{expect_path}.rejected"),
                    format!("expected true or a part of the reason, found {}", kind(other)),
                )),
            }
            if x.rejected.is_some()
                && (x.status.is_some() || x.profile.is_some() || x.groups.is_some())
            {
                diags.push(index.diag(
                    format!("{expect_path}.rejected"),
                    "a rejected record has no status, profile or groups to expect",
                ));
            }
        }
        Some(other) => diags
            .push(index.diag(&expect_path, format!("expected a mapping, found {}", kind(other)))),
        None => diags.push(index.diag(path, "missing key `expect`")),
    }
    (diags.len() == before).then_some(t)
}

/// An attribute value or the external id: a string, or a long-form mapping.
fn value_spec(
    v: &Value,
    path: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<ValueSpec> {
    match v {
        Value::String(s) => Some(ValueSpec::Short(s.clone())),
        Value::Object(map) => {
            unknown_keys(map, path, LONG_KEYS, index, diags);
            let mut long = LongValueSpec::default();
            let mut ok = true;
            for key in ["from", "template"] {
                match map.get(key) {
                    None => {}
                    Some(Value::String(s)) => {
                        if key == "from" {
                            long.from = Some(s.clone());
                        } else {
                            long.template = Some(s.clone());
                        }
                    }
                    Some(other) => {
                        ok = false;
                        diags.push(index.diag(
                            format!("{path}.{key}"),
                            format!("expected a string, found {}", kind(other)),
                        ));
                    }
                }
            }
            match map.get("required") {
                None => {}
                Some(Value::Bool(b)) => long.required = Some(*b),
                Some(other) => {
                    ok = false;
                    diags.push(index.diag(
                        format!("{path}.required"),
                        format!("expected true or false, found {}", kind(other)),
                    ));
                }
            }
            ok.then_some(ValueSpec::Long(long))
        }
        other => {
            diags.push(index.diag(
                path,
                format!(
                    "expected a field name, a template, or a mapping with `from` or \
                     `template`, found {}",
                    kind(other)
                ),
            ));
            None
        }
    }
}

fn status_spec(v: &Value, index: &YamlIndex, diags: &mut Vec<Diagnostic>) -> Option<StatusSpec> {
    let Value::Object(map) = v else {
        diags.push(index.diag(
            "status",
            format!("expected a mapping with `field` or `active_if`, found {}", kind(v)),
        ));
        return None;
    };
    unknown_keys(map, "status", STATUS_KEYS, index, diags);
    let before = diags.len();
    let mut s = StatusSpec {
        field: opt_string(map, "field", "status", index, diags),
        active_if: opt_string(map, "active_if", "status", index, diags),
        start_date: opt_string(map, "start_date", "status", index, diags),
        end_date: opt_string(map, "end_date", "status", index, diags),
        time_zone: opt_string(map, "time_zone", "status", index, diags),
        worker_time_zone: opt_string(map, "worker_time_zone", "status", index, diags),
        ..StatusSpec::default()
    };
    if s.field.is_none() && s.active_if.is_none() && s.end_date.is_none() && before == diags.len() {
        diags.push(
            index.diag("status", "needs a rule: `field` (v1), or `active_if` or `end_date` (v2)"),
        );
    }
    if s.field.is_some() && s.active_if.is_some() {
        diags.push(index.diag("status.active_if", "both `field` and `active_if` are set, use one"));
    }
    match map.get("pre_hire_days") {
        None => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|d| d <= 3650) => {
            s.pre_hire_days = n.as_u64().map(|d| d as u32);
        }
        Some(other) => diags.push(index.diag(
            "status.pre_hire_days",
            format!("expected a number of days from 0 to 3650, found {}", kind(other)),
        )),
    }
    let mut lists = ["active_values", "inactive_values"].map(|key| {
        map.get(key).map(|v| string_list(v, &format!("status.{key}"), "values", index, diags))
    });
    s.when_missing = match map.get("when_missing") {
        None => WhenMissing::Reject,
        Some(Value::String(w)) if w == "reject" => WhenMissing::Reject,
        Some(Value::String(w)) if w == "active" => WhenMissing::Active,
        Some(Value::String(w)) if w == "inactive" => WhenMissing::Inactive,
        Some(other) => {
            let shown = scalar_text(other).unwrap_or_else(|| kind(other).to_string());
            diags.push(index.diag(
                "status.when_missing",
                format!("unknown value `{shown}`, expected one of {}", one_of(WHEN_MISSING)),
            ));
            WhenMissing::Reject
        }
    };
    s.active_values = lists[0].take();
    s.inactive_values = lists[1].take();
    // Returned even with errors: compile then checks the expressions and the time zone too,
    // so one run shows every problem of the block.
    Some(s)
}

/// A list of scalars, each turned into its text (`1` and `"1"` mean the same here: YAML
/// typing should not decide whether a status value matches).
fn string_list(
    v: &Value,
    path: &str,
    what: &str,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let Value::Array(items) = v else {
        diags.push(index.diag(path, format!("expected a list of {what}, found {}", kind(v))));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match scalar_text(item) {
            Some(s) => out.push(s),
            None => {
                diags.push(index.diag(
                    format!("{path}[{i}]"),
                    format!("expected a string, found {}", kind(item)),
                ))
            }
        }
    }
    out
}

/// Report every key of `map` not in `allowed`, with a suggestion when one is close.
fn unknown_keys(
    map: &serde_json::Map<String, Value>,
    path: &str,
    allowed: &[&str],
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) {
    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let message = match suggest(key, allowed) {
            Some(s) => format!("unknown key `{key}`, did you mean `{s}`?"),
            None => format!("unknown key `{key}`, expected one of {}", one_of(allowed)),
        };
        diags.push(index.diag(full, message));
    }
}

/// The text of a scalar; `None` for null, lists and mappings.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `a`, `b`, `c` for messages.
pub(crate) fn one_of(items: &[&str]) -> String {
    items.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

/// The YAML kind of a value, for "expected …, found …" messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
