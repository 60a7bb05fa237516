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

use serde_json::Value;

use crate::diag::{Diagnostic, YamlIndex, suggest};

/// Keys allowed at the top of a mapping file.
pub const TOP_KEYS: &[&str] = &["version", "external_id", "status", "attributes", "required"];
/// Keys allowed in the `status` block.
pub const STATUS_KEYS: &[&str] = &["field", "active_values", "inactive_values", "when_missing"];
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
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSpec {
    /// The field holding the status.
    pub field: String,
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
            let hint = if key == "version" { " (supported versions: 1)" } else { "" };
            diags.push(index.diag("", format!("missing key `{key}`{hint}")));
        }
    }

    spec.version = top.get("version").cloned();
    if let Some(v) = top.get("external_id") {
        spec.external_id = value_spec(v, "external_id", index, diags);
    }
    if let Some(v) = top.get("status") {
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
    spec
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
            format!("expected a mapping with at least `field`, found {}", kind(v)),
        ));
        return None;
    };
    unknown_keys(map, "status", STATUS_KEYS, index, diags);
    let before = diags.len();
    let field = match map.get("field") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            diags.push(
                index.diag("status.field", format!("expected a field name, found {}", kind(other))),
            );
            None
        }
        None => {
            diags.push(index.diag("status", "missing key `field`"));
            None
        }
    };
    let mut lists = ["active_values", "inactive_values"].map(|key| {
        map.get(key).map(|v| string_list(v, &format!("status.{key}"), "values", index, diags))
    });
    let when_missing = match map.get("when_missing") {
        None => WhenMissing::Reject,
        Some(Value::String(s)) if s == "reject" => WhenMissing::Reject,
        Some(Value::String(s)) if s == "active" => WhenMissing::Active,
        Some(Value::String(s)) if s == "inactive" => WhenMissing::Inactive,
        Some(other) => {
            let shown = scalar_text(other).unwrap_or_else(|| kind(other).to_string());
            diags.push(index.diag(
                "status.when_missing",
                format!("unknown value `{shown}`, expected one of {}", one_of(WHEN_MISSING)),
            ));
            WhenMissing::Reject
        }
    };
    if diags.len() > before {
        return None;
    }
    Some(StatusSpec {
        field: field?,
        active_values: lists[0].take(),
        inactive_values: lists[1].take(),
        when_missing,
    })
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
