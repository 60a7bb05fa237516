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
//!
//! Version 2 adds expressions (`status.active_if`, dates, `groups[].when`). An expression is
//! checked with minijinja's expression parser (so its syntax errors read as expression errors)
//! and then registered as a one-statement template, `{% set __value = (…) %}`, whose result is
//! read back from the render state with its type intact. That keeps every compiled artefact in
//! the one environment the mapping owns: minijinja's `Expression` borrows its environment,
//! which a self-contained `Mapping` could not store.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use super::eval::{self, Constraint};
use super::filters::{self, KNOWN_FILTERS, STATIC_ERROR, Tables};
use super::references::PersonRef;
use super::spec::{
    self, GroupSpec, LongValueSpec, MappingSpec, StatusSpec, TestSpec, ValueSpec, WhenMissing,
};
use super::{Mapped, MappedUser, Record, Rejection};
use crate::diag::{Diagnostic, Diagnostics, YamlIndex, suggest};

/// The mapping format versions this build understands.
pub const SUPPORTED_VERSIONS: &[u64] = &[1, 2];

/// The variable an expression's wrapper template stores its result in.
pub(super) const EXPR_RESULT: &str = "__value";

/// Global functions of minijinja: names a template may call that are not record fields.
const GLOBAL_FUNCTIONS: &[&str] = &["range", "dict", "namespace", "debug"];

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
    /// Group rules (v2), in file order.
    pub(super) groups: Vec<GroupRule>,
    /// `references` (v2), in file order.
    pub(super) references: Vec<PersonRef>,
    /// Every source field the mapping reads, for cross-checks against a source's columns.
    source_fields: BTreeSet<String>,
    /// The fields templates and expressions read: only these go into a record's template
    /// context, which is most of the cost of mapping a record (see BENCHMARKS.md).
    pub(super) template_fields: Vec<String>,
    /// The file's own test cases, with the line each starts on.
    pub(super) tests: Vec<(TestSpec, Option<usize>)>,
    /// The file the mapping was read from.
    file: PathBuf,
    version: u64,
}

/// One `groups` rule.
#[derive(Debug, Clone)]
pub(super) struct GroupRule {
    pub(super) external_id: Producer,
    pub(super) name: Producer,
    pub(super) description: Option<Producer>,
    /// The expression template deciding whether the rule applies.
    pub(super) when: Option<String>,
}

/// How a value is produced from a record.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Producer {
    /// Copy this field.
    Field(String),
    /// Render the template registered in the environment under this name. When the template
    /// is only text and `{{ field }}` references (most attribute templates are), the parts are
    /// kept too, so evaluation can concatenate them without running minijinja.
    Template(String, Option<Vec<Part>>),
}

/// A piece of a plain concatenation template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Text(String),
    Field(String),
}

/// The parts of `text` when it is nothing but literal text and `{{ identifier }}`s; `None`
/// for anything else (filters, attribute access, tags, comments, whitespace control,
/// literals such as `true`), which minijinja renders.
pub(super) fn plain_concat(text: &str) -> Option<Vec<Part>> {
    let plain_text = |t: &str| !(t.contains("{%") || t.contains("{#") || t.contains("}}"));
    let is_ident = |t: &str| {
        let mut chars = t.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !matches!(t, "true" | "false" | "none" | "True" | "False" | "None")
    };
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let (lit, after) = (&rest[..open], &rest[open + 2..]);
        if !plain_text(lit) {
            return None;
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit.to_string()));
        }
        let close = after.find("}}")?;
        let inner = after[..close].trim();
        if !is_ident(inner) {
            return None;
        }
        parts.push(Part::Field(inner.to_string()));
        rest = &after[close + 2..];
    }
    if !plain_text(rest) {
        return None;
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Some(parts)
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

/// The active/deactivated rule and the effective dates.
#[derive(Debug, Clone)]
pub(super) struct StatusRule {
    pub(super) active: ActiveRule,
    pub(super) when_missing: WhenMissing,
    /// Expression templates giving the start and end dates.
    pub(super) start_date: Option<String>,
    pub(super) end_date: Option<String>,
    pub(super) pre_hire_days: u32,
    pub(super) time_zone: Tz,
    /// Expression template giving a per-record time zone.
    pub(super) worker_time_zone: Option<String>,
}

/// How a record's active flag is decided (before dates apply).
#[derive(Debug, Clone)]
pub(super) enum ActiveRule {
    /// v1: the field's value, trimmed and lowercased, is in one of the lists.
    Field { field: String, active: Vec<String>, inactive: Vec<String> },
    /// v2: the expression template's result, `true` or `false`.
    Expression(String),
    /// Only dates decide: active until the end date.
    Always,
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

    /// Map one record as of the instant `now`: a user to send, a joiner whose pre-hire window
    /// has not opened, or why it cannot be mapped. Only effective dating reads `now`.
    pub fn apply_at(&self, record: &Record, now: DateTime<Utc>) -> Result<Mapped, Rejection> {
        eval::apply(self, record, now)
    }

    /// Map one record as of the system clock. A joiner outside the pre-hire window is
    /// reported as a rejection here; code that must tell them apart uses [`Self::apply_at`].
    pub fn apply(&self, record: &Record) -> Result<MappedUser, Rejection> {
        match self.apply_at(record, Utc::now())? {
            Mapped::User(u) => Ok(u),
            Mapped::NotYet(n) => Err(Rejection {
                origin: n.origin,
                external_id: Some(n.external_id),
                field: None,
                reason: format!(
                    "starts on {}: not imported before {} (pre-hire window)",
                    n.start_date, n.import_from
                ),
            }),
        }
    }

    /// The file this mapping was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The mapping format version (1 or 2).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the mapping derives groups from records.
    pub fn has_groups(&self) -> bool {
        !self.groups.is_empty()
    }

    /// The `references` entries, in file order.
    pub fn references(&self) -> &[PersonRef] {
        &self.references
    }

    /// How many test cases the file declares.
    pub fn test_count(&self) -> usize {
        self.tests.len()
    }

    /// The profile attribute names this mapping produces, in file order.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().map(|a| a.name.as_str())
    }

    /// The attributes a record must produce (from `required:` and `required: true`).
    pub fn required_attributes(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().filter(|a| a.required).map(|a| a.name.as_str())
    }

    /// The field holding the status, when the mapping has a v1 (field) status rule.
    pub fn status_field(&self) -> Option<&str> {
        match &self.status.as_ref()?.active {
            ActiveRule::Field { field, .. } => Some(field.as_str()),
            _ => None,
        }
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
    let mut env = environment(&spec);
    let mut source_fields = BTreeSet::new();

    let version = version(&spec, index, diags);

    let mut ctx = Ctx {
        env: &mut env,
        index,
        diags,
        source_fields: &mut source_fields,
        references: Vec::new(),
        template_fields: BTreeSet::new(),
    };
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

    let required_names = required_names(&spec, index, ctx.diags);
    for a in &mut attributes {
        a.required |= required_names.contains(&a.name);
    }
    // File order, so plans and docs list attributes as ops wrote them (the YAML tree sorts).
    attributes.sort_by_key(|a| index.locate(&format!("attributes.{}", a.name)));

    let status = spec.status.as_ref().and_then(|s| ctx.status_rule(s));
    let groups: Vec<GroupRule> =
        spec.groups.iter().enumerate().filter_map(|(i, g)| ctx.group_rule(g, i)).collect();

    let names: Vec<&str> = spec.attributes.iter().map(|(n, _)| n.as_str()).collect();
    let mut references = ctx.references(&spec.references, &names);
    references.sort_by_key(|r| index.locate(&format!("references.{}", r.name)));

    check_declared_fields(&spec, &ctx.references, index, ctx.diags);
    let template_fields = std::mem::take(&mut ctx.template_fields).into_iter().collect();
    let tests = spec
        .tests
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, index.locate(&format!("tests[{i}]")).map(|(l, _)| l)))
        .collect();

    Mapping {
        env,
        external_id,
        status,
        attributes,
        groups,
        references,
        source_fields,
        template_fields,
        tests,
        file: index.file().to_path_buf(),
        version,
    }
}

/// The template environment of one mapping: how values print, and its lookup tables.
fn environment(spec: &MappingSpec) -> Environment<'static> {
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
    let tables: Tables = spec
        .lookups
        .iter()
        .map(|(name, rows)| (name.clone(), rows.iter().cloned().collect::<HashMap<_, _>>()))
        .collect();
    filters::register(&mut env, Arc::new(tables));
    env
}

/// The mapping's `version` (2 when absent), and what the other version's keys need.
fn version(spec: &MappingSpec, index: &YamlIndex, diags: &mut Vec<Diagnostic>) -> u64 {
    let version = match &spec.version {
        Some(v) => match v.as_u64().filter(|v| SUPPORTED_VERSIONS.contains(v)) {
            Some(v) => v,
            None => {
                let supported: Vec<String> =
                    SUPPORTED_VERSIONS.iter().map(u64::to_string).collect();
                diags.push(index.diag(
                    "version",
                    format!(
                        "unsupported version `{v}`, supported versions: {}",
                        supported.join(", ")
                    ),
                ));
                2
            }
        },
        None => 2,
    };
    if version == 1 {
        for key in &spec.v2_keys {
            let short = key.rsplit('.').next().unwrap_or(key);
            diags.push(
                index.diag(
                    key,
                    format!("`{short}` needs `version: 2` (this file says `version: 1`)"),
                ),
            );
        }
    } else if spec.status.is_none() && spec.version.as_ref().and_then(Value::as_u64) == Some(2) {
        diags.push(index.diag(
            "",
            "missing key `status`: version 2 needs an explicit rule for who is active \
             (`status: { active_if: \"true\" }` if everyone in the source is)",
        ));
    }
    version
}

/// The names in `required:`, each checked to be an attribute of the mapping.
fn required_names(
    spec: &MappingSpec,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
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
            diags.push(index.diag(
                format!("required[{i}]"),
                format!("`{name}` is not an attribute of this mapping{hint}"),
            ));
        }
    }
    required_names
}

/// With `source_fields:` declared, every field a value reads must be one of them.
fn check_declared_fields(
    spec: &MappingSpec,
    references: &[(String, String)],
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(declared) = &spec.source_fields {
        let known: Vec<&str> = declared.iter().map(String::as_str).collect();
        for (path, field) in references {
            if known.contains(&field.as_str()) {
                continue;
            }
            let hint = match suggest(field, &known) {
                Some(s) => format!(", did you mean `{s}`?"),
                None => String::new(),
            };
            diags.push(index.diag(
                path,
                format!("field `{field}` is not one of the declared `source_fields`{hint}"),
            ));
        }
    }
}

/// What compiling one value needs, bundled to keep signatures short.
pub(super) struct Ctx<'a> {
    env: &'a mut Environment<'static>,
    pub(super) index: &'a YamlIndex,
    pub(super) diags: &'a mut Vec<Diagnostic>,
    source_fields: &'a mut BTreeSet<String>,
    /// (key path, field) for every field read, to check against `source_fields`.
    references: Vec<(String, String)>,
    /// Fields read by templates and expressions.
    template_fields: BTreeSet<String>,
}

impl Ctx<'_> {
    /// Compile one value at key `path`; `None` (with diagnostics) when it is invalid.
    pub(super) fn producer(&mut self, vs: &ValueSpec, path: &str) -> Option<Producer> {
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
            self.references.push((at, text.to_string()));
            return Some(Producer::Field(text.to_string()));
        }
        self.template(text, path, at)
    }

    /// Compile the template `text`, registered as `path`; diagnostics go to key `at`.
    fn template(&mut self, text: &str, path: &str, at: String) -> Option<Producer> {
        if let Err(e) = self.env.add_template_owned(path.to_string(), text.to_string()) {
            self.diags
                .push(self.index.diag(at, format!("invalid template: {}", template_error(&e))));
            return None;
        }
        let template = self.env.get_template(path).ok()?;
        let vars = template.undeclared_variables(false);
        self.note_references(&at, vars);
        self.dry_run(path, &at, "template")
            .then(|| Producer::Template(path.to_string(), plain_concat(text)))
    }

    /// Record the fields a template or expression reads.
    fn note_references(&mut self, at: &str, vars: std::collections::HashSet<String>) {
        let mut vars: Vec<String> =
            vars.into_iter().filter(|v| !GLOBAL_FUNCTIONS.contains(&v.as_str())).collect();
        vars.sort();
        for v in vars {
            self.source_fields.insert(v.clone());
            self.template_fields.insert(v.clone());
            self.references.push((at.to_string(), v));
        }
    }

    /// Render the template `name` on an empty record: finds unknown filters, tests and
    /// functions, and filter arguments that are wrong whatever the data, now rather than on
    /// every record. Other failures may depend on the data, so they are left to run time
    /// (where they reject the record). `false` when a diagnostic was added.
    fn dry_run(&mut self, name: &str, at: &str, what: &str) -> bool {
        let Ok(template) = self.env.get_template(name) else { return false };
        let Err(e) = template.render(minijinja::context! {}) else { return true };
        let unknown = matches!(
            e.kind(),
            ErrorKind::UnknownFilter
                | ErrorKind::UnknownTest
                | ErrorKind::UnknownFunction
                | ErrorKind::UnknownMethod
        );
        let is_static = e.detail().is_some_and(|d| d.starts_with(STATIC_ERROR));
        if !unknown && !is_static {
            return true;
        }
        let mut message = format!("invalid {what}: {}", template_error(&e));
        if e.kind() == ErrorKind::UnknownFilter
            && let Some(name) = unknown_filter_name(&e)
            && let Some(s) = suggest(&name, KNOWN_FILTERS)
        {
            message.push_str(&format!(", did you mean `{s}`?"));
        }
        self.diags.push(self.index.diag(at, message));
        false
    }

    /// Compile the expression `text` at key `path`; returns the name of its wrapper template.
    fn expression(&mut self, text: &str, path: &str) -> Option<String> {
        if text.trim().is_empty() {
            self.diags.push(self.index.diag(path, "the expression is empty"));
            return None;
        }
        let vars = match self.env.compile_expression(text) {
            Ok(expr) => expr.undeclared_variables(false),
            Err(e) => {
                self.diags.push(
                    self.index.diag(path, format!("invalid expression: {}", template_error(&e))),
                );
                return None;
            }
        };
        let wrapper = format!("{{% set {EXPR_RESULT} = ({text}) %}}");
        if let Err(e) = self.env.add_template_owned(path.to_string(), wrapper) {
            self.diags
                .push(self.index.diag(path, format!("invalid expression: {}", template_error(&e))));
            return None;
        }
        self.note_references(path, vars);
        self.dry_run(path, path, "expression").then(|| path.to_string())
    }

    fn status_rule(&mut self, s: &StatusSpec) -> Option<StatusRule> {
        let before = self.diags.len();
        let active = match (&s.field, &s.active_if) {
            (Some(field), _) => {
                if field.trim().is_empty() {
                    self.diags.push(self.index.diag("status.field", "the field name is empty"));
                }
                self.source_fields.insert(field.clone());
                self.references.push(("status.field".to_string(), field.clone()));
                let (active, inactive) = status_lists(s, self.index, self.diags);
                ActiveRule::Field { field: field.clone(), active, inactive }
            }
            (None, Some(expr)) => {
                for key in ["active_values", "inactive_values"] {
                    let given = if key == "active_values" {
                        s.active_values.is_some()
                    } else {
                        s.inactive_values.is_some()
                    };
                    if given {
                        self.diags.push(self.index.diag(
                            format!("status.{key}"),
                            format!("`{key}` goes with `field`, not `active_if`"),
                        ));
                    }
                }
                match self.expression(expr, "status.active_if") {
                    Some(name) => ActiveRule::Expression(name),
                    None => ActiveRule::Always,
                }
            }
            (None, None) => ActiveRule::Always,
        };
        let start_date =
            s.start_date.as_ref().and_then(|e| self.expression(e, "status.start_date"));
        let end_date = s.end_date.as_ref().and_then(|e| self.expression(e, "status.end_date"));
        let worker_time_zone =
            s.worker_time_zone.as_ref().and_then(|e| self.expression(e, "status.worker_time_zone"));
        if s.pre_hire_days.is_some() && s.start_date.is_none() {
            self.diags.push(self.index.diag(
                "status.pre_hire_days",
                "`pre_hire_days` needs `start_date`: the window opens that many days before it",
            ));
        }
        let time_zone = match &s.time_zone {
            None => chrono_tz::UTC,
            Some(name) => match super::dates::time_zone(name) {
                Some(tz) => tz,
                None => {
                    let names: Vec<&str> =
                        chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                    let hint = match suggest(name, &names) {
                        Some(s) => format!(", did you mean `{s}`?"),
                        None => " (use an IANA name such as `Europe/Berlin`)".to_string(),
                    };
                    self.diags.push(
                        self.index
                            .diag("status.time_zone", format!("unknown time zone `{name}`{hint}")),
                    );
                    chrono_tz::UTC
                }
            },
        };
        (self.diags.len() == before).then_some(StatusRule {
            active,
            when_missing: s.when_missing,
            start_date,
            end_date,
            pre_hire_days: s.pre_hire_days.unwrap_or(0),
            time_zone,
            worker_time_zone,
        })
    }

    fn group_rule(&mut self, g: &GroupSpec, i: usize) -> Option<GroupRule> {
        let path = format!("groups[{i}]");
        let before = self.diags.len();
        let value = |ctx: &mut Self, key: &str, text: &Option<String>| {
            // Always a template: `name: Managers` is the constant "Managers".
            text.as_ref().and_then(|t| {
                let at = format!("{path}.{key}");
                ctx.template(t, &at, at.clone())
            })
        };
        let external_id = value(self, "external_id", &g.external_id);
        let name = value(self, "name", &g.name);
        let description = value(self, "description", &g.description);
        let when = g.when.as_ref().and_then(|w| self.expression(w, &format!("{path}.when")));
        if self.diags.len() > before {
            return None;
        }
        Some(GroupRule { external_id: external_id?, name: name?, description, when })
    }
}

/// The name in minijinja's "filter X is unknown" detail.
fn unknown_filter_name(e: &minijinja::Error) -> Option<String> {
    let d = e.detail()?;
    let rest = d.strip_prefix("filter ")?;
    Some(rest.split_whitespace().next()?.trim_matches('`').to_string())
}

/// The v1 status value lists, trimmed and lowercased, defaults applied.
fn status_lists(
    s: &StatusSpec,
    index: &YamlIndex,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<String>, Vec<String>) {
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
    (active, inactive)
}

/// A shorthand value is a template when it contains template syntax; otherwise a field name.
fn looks_like_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Okta variable names: ASCII letters, digits and `_`, not starting with a digit.
pub(super) fn is_identifier(name: &str) -> bool {
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
