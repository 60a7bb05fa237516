//! Compiling a mapping: YAML text → [`Mapping`], reporting every error at once.
//!
//! The steps are: parse the YAML (syntax errors keep their line and column), read the raw
//! [`spec`](super::spec) (shape errors and unknown keys), then give it meaning here: check the
//! version, attribute names and `required` references, normalise the status values, and
//! compile every template once into one minijinja [`Environment`]. Records are then mapped by
//! [`super::eval`] without parsing anything again.
//!
//! Every problem becomes a [`Diagnostic`] located through [`YamlIndex`]; nothing stops at the
//! first error, so ops fix a file in one round.

use std::collections::BTreeSet;
use std::path::Path;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use super::eval::{self, Constraint};
use super::spec::{self, LongValueSpec, MappingSpec, StatusSpec, ValueSpec, WhenMissing};
use super::{MappedUser, Record, Rejection};
use crate::diag::{Diagnostic, Diagnostics, YamlIndex, suggest};

/// The mapping format versions this build understands.
pub const SUPPORTED_VERSIONS: &[u64] = &[1];

/// Status values meaning "active" when `status.active_values` is not given.
pub const DEFAULT_ACTIVE_VALUES: &[&str] = &["true", "1", "yes", "y", "active"];
/// Status values meaning "deactivated" when `status.inactive_values` is not given.
pub const DEFAULT_INACTIVE_VALUES: &[&str] = &["false", "0", "no", "n", "inactive"];

/// A compiled mapping, ready to apply to records. Cheap to share: it is immutable, and
/// `Send + Sync` so one instance can serve concurrent tasks.
#[derive(Debug)]
pub struct Mapping {
    /// Every template of the mapping, compiled once, named by its key path.
    pub(super) env: Environment<'static>,
    pub(super) external_id: Producer,
    /// `None`: no status rule, every record is active.
    pub(super) status: Option<StatusRule>,
    /// In file order.
    pub(super) attributes: Vec<Attribute>,
    /// Every source field the mapping reads, for cross-checks against a source's columns.
    source_fields: BTreeSet<String>,
}

/// How a value is produced from a record.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Producer {
    /// Copy this field.
    Field(String),
    /// Render the template registered in the environment under this name.
    Template(String),
}

/// One profile attribute.
#[derive(Debug, Clone)]
pub(super) struct Attribute {
    pub(super) name: String,
    pub(super) producer: Producer,
    /// The record is rejected when this attribute ends up empty.
    pub(super) required: bool,
    /// Okta's limits for standard attributes; `None` for custom ones.
    pub(super) constraint: Option<Constraint>,
}

/// The active/deactivated rule, with values trimmed and lowercased.
#[derive(Debug, Clone)]
pub(super) struct StatusRule {
    pub(super) field: String,
    pub(super) active: Vec<String>,
    pub(super) inactive: Vec<String>,
    pub(super) when_missing: WhenMissing,
}

impl Mapping {
    /// Parse and compile the mapping YAML `text` read from `file`. Collects every error, each
    /// with the file, line, column and key path; they come back sorted by position.
    pub fn from_yaml(file: &Path, text: &str) -> Result<Mapping, Diagnostics> {
        let index = YamlIndex::new(file, text);
        // Strict booleans: `yes` in `active_values` must stay the string "yes", not become
        // `true` (YAML 1.1). Leading zeros stay strings for the same reason.
        let options = serde_saphyr::options! {
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
            with_snippet: false,
        };
        let root: Value = match serde_saphyr::from_str_with_options(text, options) {
            Ok(v) => v,
            Err(e) => return Err(Diagnostics(vec![syntax_diag(file, &e)])),
        };
        let mut diags = Vec::new();
        let spec = spec::read(&root, &index, &mut diags);
        let mapping = compile(spec, &index, &mut diags);
        if diags.is_empty() {
            Ok(mapping)
        } else {
            // Whole-file problems (no line) first, then in reading order.
            diags.sort_by_key(|d| (d.line.unwrap_or(0), d.column.unwrap_or(0)));
            Err(Diagnostics(diags))
        }
    }

    /// Map one record into the profile sent to Okta, or say why it cannot be.
    pub fn apply(&self, record: &Record) -> Result<MappedUser, Rejection> {
        eval::apply(self, record)
    }

    /// The profile attribute names this mapping produces, in file order.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().map(|a| a.name.as_str())
    }

    /// The attributes a record must produce (from `required:` and `required: true`).
    pub fn required_attributes(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().filter(|a| a.required).map(|a| a.name.as_str())
    }

    /// The field holding the status, when the mapping has a status rule.
    pub fn status_field(&self) -> Option<&str> {
        self.status.as_ref().map(|s| s.field.as_str())
    }

    /// Every source field the mapping reads (copied fields, template variables, the status
    /// field). A `validate` command can compare these with a CSV header.
    pub fn source_fields(&self) -> &BTreeSet<String> {
        &self.source_fields
    }
}

/// Turn a well-shaped spec into a mapping, adding a diagnostic for every semantic problem.
/// The mapping returned when `diags` is non-empty is incomplete and must not be used.
fn compile(spec: MappingSpec, index: &YamlIndex, diags: &mut Vec<Diagnostic>) -> Mapping {
    let mut env = Environment::new();
    // Undefined fields render empty (and so are omitted), even `{{ a.b }}` when `a` is
    // missing: sources differ in which fields they fill, and that is not an error.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Profiles are plain strings, not HTML.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Print like the rest of the mapping does: booleans as `true`/`false` (minijinja would
    // write Python's `True`), and null as nothing (not `none`), so it is omitted when alone.
    env.set_formatter(|out, state, value| match value.kind() {
        ValueKind::Bool => {
            out.write_str(if value.is_true() { "true" } else { "false" }).map_err(|e| {
                minijinja::Error::new(ErrorKind::WriteFailure, "cannot write output").with_source(e)
            })
        }
        ValueKind::None => Ok(()),
        _ => minijinja::escape_formatter(out, state, value),
    });
    let mut source_fields = BTreeSet::new();

    if let Some(v) = &spec.version
        && !v.as_u64().is_some_and(|v| SUPPORTED_VERSIONS.contains(&v))
    {
        let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(u64::to_string).collect();
        diags.push(index.diag(
            "version",
            format!("unsupported version `{v}`, supported versions: {}", supported.join(", ")),
        ));
    }

    let mut ctx = Ctx { env: &mut env, index, diags, source_fields: &mut source_fields };
    let external_id = match &spec.external_id {
        Some(vs) => {
            if let ValueSpec::Long(LongValueSpec { required: Some(false), .. }) = vs {
                ctx.diags.push(index.diag(
                    "external_id.required",
                    "`external_id` is always required: a record without one cannot be imported",
                ));
            }
            ctx.producer(vs, "external_id")
        }
        None => None,
    }
    .unwrap_or(Producer::Field(String::new()));

    let mut attributes = Vec::with_capacity(spec.attributes.len());
    for (name, vs) in &spec.attributes {
        let path = format!("attributes.{name}");
        if name == "externalId" || name == "external_id" {
            ctx.diags.push(index.diag(
                &path,
                "`externalId` is not a profile attribute; set it with the top-level \
                 `external_id` key",
            ));
        } else if !is_identifier(name) {
            ctx.diags.push(index.diag(
                &path,
                format!(
                    "attribute name `{name}` is not valid: use letters, digits and `_`, not \
                     starting with a digit (okta variable names)"
                ),
            ));
        }
        let Some(producer) = ctx.producer(vs, &path) else { continue };
        let required = matches!(vs, ValueSpec::Long(LongValueSpec { required: Some(true), .. }));
        attributes.push(Attribute {
            name: name.clone(),
            producer,
            required,
            constraint: eval::constraint_for(name),
        });
    }

    let names: Vec<&str> = spec.attributes.iter().map(|(n, _)| n.as_str()).collect();
    let mut required_names = Vec::new();
    for (i, name) in spec.required.iter().enumerate() {
        if names.contains(&name.as_str()) {
            required_names.push(name.clone());
        } else {
            let hint = match suggest(name, &names) {
                Some(s) => format!(", did you mean `{s}`?"),
                None => String::new(),
            };
            ctx.diags.push(index.diag(
                format!("required[{i}]"),
                format!("`{name}` is not an attribute of this mapping{hint}"),
            ));
        }
    }
    for a in &mut attributes {
        a.required |= required_names.contains(&a.name);
    }
    // File order, so plans and docs list attributes as ops wrote them (the YAML tree sorts).
    attributes.sort_by_key(|a| index.locate(&format!("attributes.{}", a.name)));

    let status = spec.status.as_ref().and_then(|s| status_rule(s, index, ctx.diags));
    if let Some(s) = &status {
        source_fields.insert(s.field.clone());
    }

    Mapping { env, external_id, status, attributes, source_fields }
}

/// What compiling one value needs, bundled to keep signatures short.
struct Ctx<'a> {
    env: &'a mut Environment<'static>,
    index: &'a YamlIndex,
    diags: &'a mut Vec<Diagnostic>,
    source_fields: &'a mut BTreeSet<String>,
}

impl Ctx<'_> {
    /// Compile one value at key `path`; `None` (with diagnostics) when it is invalid.
    fn producer(&mut self, vs: &ValueSpec, path: &str) -> Option<Producer> {
        let (text, is_template, at) = match vs {
            ValueSpec::Short(s) => (s.as_str(), looks_like_template(s), path.to_string()),
            ValueSpec::Long(long) => match (&long.from, &long.template) {
                (Some(f), None) => (f.as_str(), false, format!("{path}.from")),
                (None, Some(t)) => (t.as_str(), true, format!("{path}.template")),
                (Some(_), Some(_)) => {
                    self.diags
                        .push(self.index.diag(path, "both `from` and `template` are set, use one"));
                    return None;
                }
                (None, None) => {
                    self.diags.push(self.index.diag(path, "needs `from` (a field) or `template`"));
                    return None;
                }
            },
        };
        if !is_template {
            if text.trim().is_empty() {
                self.diags.push(self.index.diag(at, "the field name is empty"));
                return None;
            }
            self.source_fields.insert(text.to_string());
            return Some(Producer::Field(text.to_string()));
        }
        if let Err(e) = self.env.add_template_owned(path.to_string(), text.to_string()) {
            self.diags
                .push(self.index.diag(at, format!("invalid template: {}", template_error(&e))));
            return None;
        }
        let template = self.env.get_template(path).ok()?;
        self.source_fields.extend(template.undeclared_variables(false));
        // A dry run on an empty record finds unknown filters, tests and functions now, rather
        // than on every record at run time. Other failures may depend on the data, so they are
        // left to run time (where they reject the record).
        if let Err(e) = template.render(minijinja::context! {}) {
            let unknown = matches!(
                e.kind(),
                ErrorKind::UnknownFilter
                    | ErrorKind::UnknownTest
                    | ErrorKind::UnknownFunction
                    | ErrorKind::UnknownMethod
            );
            if unknown {
                self.diags
                    .push(self.index.diag(at, format!("invalid template: {}", template_error(&e))));
                return None;
            }
        }
        Some(Producer::Template(path.to_string()))
    }
}

fn status_rule(
    s: &StatusSpec,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Option<StatusRule> {
    let before = diags.len();
    if s.field.trim().is_empty() {
        diags.push(index.diag("status.field", "the field name is empty"));
    }
    let mut lists = Vec::with_capacity(2);
    for (key, given, defaults) in [
        ("active_values", &s.active_values, DEFAULT_ACTIVE_VALUES),
        ("inactive_values", &s.inactive_values, DEFAULT_INACTIVE_VALUES),
    ] {
        let values: Vec<String> = match given {
            Some(v) => v.clone(),
            None => defaults.iter().map(|s| s.to_string()).collect(),
        };
        if values.is_empty() {
            diags.push(index.diag(format!("status.{key}"), "the list is empty"));
        }
        let mut norm = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let n = v.trim().to_lowercase();
            if n.is_empty() {
                diags.push(index.diag(
                    format!("status.{key}[{i}]"),
                    "an empty value; use `when_missing` for absent or empty status fields",
                ));
            } else if !norm.contains(&n) {
                norm.push(n);
            }
        }
        lists.push(norm);
    }
    let inactive = lists.pop().unwrap_or_default();
    let active = lists.pop().unwrap_or_default();
    for (i, v) in inactive.iter().enumerate() {
        if active.contains(v) {
            // Point at the explicit list that introduced the clash.
            let key = if s.inactive_values.is_some() { "inactive_values" } else { "active_values" };
            let at = if key == "inactive_values" {
                format!("status.{key}[{i}]")
            } else {
                format!("status.{key}")
            };
            diags.push(index.diag(at, format!("`{v}` is both an active and an inactive value")));
        }
    }
    (diags.len() == before).then(|| StatusRule {
        field: s.field.clone(),
        active,
        inactive,
        when_missing: s.when_missing,
    })
}

/// A shorthand value is a template when it contains template syntax; otherwise a field name.
fn looks_like_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Okta variable names: ASCII letters, digits and `_`, not starting with a digit.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A minijinja error without the template name (the diagnostic already has the key).
fn template_error(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(": ");
        s.push_str(detail);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

/// A YAML syntax error, located where the parser stopped.
fn syntax_diag(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let loc = e.location();
    let mut message = e.without_snippet().to_string();
    // The parser appends its own " at line L, column C"; the diagnostic carries it already.
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    Diagnostic {
        file: file.to_path_buf(),
        line: loc.map(|l| l.line() as usize),
        column: loc.map(|l| l.column() as usize),
        key: String::new(),
        message: format!("invalid yaml: {message}"),
    }
}
