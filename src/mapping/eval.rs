//! Applying a compiled mapping to one record: record → externalId, status, profile.
//!
//! The rules, in order:
//!
//! 1. **externalId**: produced, trimmed, 1 to 512 characters; otherwise the record is rejected.
//! 2. **status**: the status value (trimmed, compared case-insensitively) must be in one of
//!    the two lists. Anything else rejects the record: we never guess when deactivation is at
//!    stake.
//! 3. **profile**: each attribute is produced and trimmed; empty values are omitted, never
//!    sent as empty strings. Standard attributes must meet Okta's limits (FACTS §3).
//! 4. An active record must produce its `required` attributes and a non-empty profile (Okta
//!    creates an empty user from an empty profile).
//! 5. **Control characters** (U+0000 to U+001F, U+007F): the externalId, `userName` and
//!    `email` identify a person, and one with a control character rejects the record (the
//!    reason names the character and its position); other attributes keep their tabs and
//!    newlines but lose any NUL, which no system downstream stores faithfully.
//!
//! A deactivated record only needs its externalId: bulk-delete sends nothing else. A bad
//! profile value must not keep a leaver active in Okta, so for deactivated records invalid
//! attributes are left out of the profile instead of rejecting the record. Either way a
//! [`MappedUser`]'s profile only ever holds values Okta accepts.
//!
//! **Effective dating** (v2 `status.start_date`, `end_date`, `pre_hire_days`): "today" is the
//! calendar day of `now` in the worker's time zone. On and after the end date the record is
//! deactivated, whatever the active rule says. An otherwise active joiner is held back
//! ([`Mapped::NotYet`]) until `pre_hire_days` before the start date. The profile is still
//! mapped first, so a future joiner with bad data is rejected now, while there is time to fix it.
//!
//! **Groups** (v2 `groups:`) are derived for active users only: a leaver gains no membership.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, Utc};
use chrono_tz::Tz;
use minijinja::Value as JinjaValue;
use minijinja::value::ValueKind;
use serde_json::Value;

use super::compile::{ActiveRule, EXPR_RESULT, GroupRule, Mapping, Part, Producer, StatusRule};
use super::dates::{self, When};
use super::spec::WhenMissing;
use super::{GroupRef, Mapped, MappedUser, NotYet, Record, Rejection};

/// Group externalIds, member externalIds and displayNames: at most 255 characters (FACTS §3).
pub const GROUP_ID_MAX_CHARS: usize = 255;
/// A group's description: at most 1024 characters (FACTS §3).
pub const GROUP_DESCRIPTION_MAX_CHARS: usize = 1024;

/// The externalId's length limit in characters (FACTS §3: `maxLength 512`).
pub const EXTERNAL_ID_MAX_CHARS: usize = 512;

/// Okta's limits for one standard profile attribute (FACTS §3). Lengths are in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraint {
    pub min_chars: usize,
    pub max_chars: usize,
    /// Must look like an email address.
    pub email: bool,
}

/// The constraint of a standard attribute; custom attributes have none.
pub fn constraint_for(attribute: &str) -> Option<Constraint> {
    let c = |min_chars, max_chars, email| Some(Constraint { min_chars, max_chars, email });
    match attribute {
        "email" | "secondEmail" => c(5, 100, true),
        "firstName" | "lastName" => c(1, 50, false),
        "userName" | "mobilePhone" => c(1, 100, false),
        "homeAddress" => c(1, 4096, false),
        _ => None,
    }
}

/// Whether `s` has the shape of an email address: one `@`, a non-empty local part, a dotted
/// domain without empty labels, and no whitespace. Okta checks more; this catches the data
/// errors that would otherwise fail a whole import.
pub fn is_email(s: &str) -> bool {
    if s.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Why a value could not be produced (the reason of a rejection).
type Reason = String;

/// Why `s` cannot identify a person: the first control character (U+0000 to U+001F, U+007F)
/// in it, and where (1-based, in characters).
fn control_char(s: &str) -> Option<Reason> {
    let (i, c) = s.chars().enumerate().find(|(_, c)| c.is_ascii_control())?;
    Some(format!(
        "holds the control character U+{:04X} at character {}: an identifier may not hold control characters (fix it in the source)",
        c as u32,
        i + 1
    ))
}

/// Rule 5 of the module doc for one attribute's value.
fn clean(name: &str, value: Option<String>) -> Result<Option<String>, Reason> {
    let Some(v) = value else { return Ok(None) };
    if matches!(name, "userName" | "email") {
        return match control_char(&v) {
            Some(reason) => Err(reason),
            None => Ok(Some(v)),
        };
    }
    if !v.contains('\0') {
        return Ok(Some(v));
    }
    let v: String = v.chars().filter(|&c| c != '\0').collect();
    Ok(Some(v).filter(|v| !v.is_empty()))
}

pub(super) fn apply(m: &Mapping, record: &Record, now: DateTime<Utc>) -> Result<Mapped, Rejection> {
    let reject = |external_id: Option<&str>, field: &str, reason: String| Rejection {
        origin: record.origin.clone(),
        external_id: external_id.map(str::to_string),
        field: Some(field.to_string()),
        reason,
    };
    // Built on first use: most mappings copy fields and never need it.
    let mut ctx = Context { mapping: m, record, value: None };

    let external_id = match ctx.produce(&m.external_id) {
        Ok(Some(id)) => id,
        Ok(None) => {
            let reason = match &m.external_id {
                Producer::Field(f) => {
                    format!("field `{f}` is absent or empty, so there is no externalId")
                }
                Producer::Template(..) => {
                    "the external_id template rendered empty, so there is no externalId".to_string()
                }
            };
            return Err(reject(None, "externalId", reason));
        }
        Err(reason) => return Err(reject(None, "externalId", reason)),
    };
    let n = external_id.chars().count();
    if n > EXTERNAL_ID_MAX_CHARS {
        return Err(reject(
            None,
            "externalId",
            format!("{n} characters, the limit is {EXTERNAL_ID_MAX_CHARS}"),
        ));
    }
    if let Some(reason) = control_char(&external_id) {
        return Err(reject(None, "externalId", reason));
    }
    let id = Some(external_id.as_str());

    let (active, start) = match &m.status {
        None => (true, None),
        Some(rule) => {
            status(rule, &mut ctx, now).map_err(|(field, reason)| reject(id, &field, reason))?
        }
    };

    // Collected as pairs and built in one go: a sorted bulk build is cheaper than inserting
    // attribute by attribute (the mapping bench spent ~15% in BTreeMap inserts).
    let mut profile: Vec<(String, String)> = Vec::with_capacity(m.attributes.len());
    for a in &m.attributes {
        let checked =
            ctx.produce(&a.producer).and_then(|v| clean(&a.name, v)).and_then(|v| {
                match (v, a.constraint) {
                    (Some(v), Some(c)) => check(&v, c).map(|()| Some(v)),
                    (v, _) => Ok(v),
                }
            });
        match checked {
            Ok(Some(v)) => profile.push((a.name.clone(), v)),
            Ok(None) if a.required && active => {
                let reason = match &a.producer {
                    Producer::Field(f) => {
                        format!("required attribute is missing: field `{f}` is absent or empty")
                    }
                    Producer::Template(..) => {
                        "required attribute is missing: its template rendered empty".to_string()
                    }
                };
                return Err(reject(id, &a.name, reason));
            }
            Ok(None) => {}
            // See the module doc: a leaver's bad attribute must not block the deactivation.
            Err(_) if !active => {}
            Err(reason) => return Err(reject(id, &a.name, reason)),
        }
    }
    // Attribute names are distinct YAML keys, so no pair overwrites another.
    let profile: BTreeMap<String, String> = profile.into_iter().collect();
    if active && profile.is_empty() {
        return Err(Rejection {
            origin: record.origin.clone(),
            external_id: Some(external_id),
            field: None,
            reason: "every attribute is empty, and okta creates an empty user from an empty \
                     profile"
                .to_string(),
        });
    }
    let mut groups = Vec::new();
    if active {
        for (i, g) in m.groups.iter().enumerate() {
            let group = group(g, &mut ctx).map_err(|r| reject(id, &format!("groups[{i}]"), r))?;
            if let Some(group) = group
                && !groups.iter().any(|x: &GroupRef| x.external_id == group.external_id)
            {
                groups.push(group);
            }
        }
        if !groups.is_empty() && n > GROUP_ID_MAX_CHARS {
            return Err(reject(
                id,
                "externalId",
                format!(
                    "{n} characters: a group member's externalId is limited to \
                     {GROUP_ID_MAX_CHARS}"
                ),
            ));
        }
    }
    // References are only read here; `references::resolve` fills them in once the other
    // people are mapped. A leaver sends no profile, so carries none.
    let mut links = BTreeMap::new();
    if active {
        for r in &m.references {
            match ctx.produce(&r.person) {
                Ok(Some(person)) => {
                    links.insert(r.name.clone(), person);
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(reject(id, &format!("references.{}.person", r.name), reason));
                }
            }
        }
    }
    if let Some((start_date, import_from)) = start {
        return Ok(Mapped::NotYet(NotYet {
            origin: record.origin.clone(),
            external_id,
            start_date,
            import_from,
        }));
    }
    Ok(Mapped::User(MappedUser {
        origin: record.origin.clone(),
        external_id,
        active,
        profile,
        groups,
        links,
    }))
}

/// A status problem: the field at fault and why.
type StatusError = (String, Reason);

/// The record's active flag, and for a joiner outside the pre-hire window, their start date
/// and the day the window opens.
fn status(
    rule: &StatusRule,
    ctx: &mut Context<'_>,
    now: DateTime<Utc>,
) -> Result<(bool, Option<(chrono::NaiveDate, chrono::NaiveDate)>), StatusError> {
    let missing = |field: &str, what: String| -> Result<bool, StatusError> {
        match rule.when_missing {
            WhenMissing::Active => Ok(true),
            WhenMissing::Inactive => Ok(false),
            WhenMissing::Reject => Err((field.to_string(), what)),
        }
    };
    let mut active = match &rule.active {
        ActiveRule::Always => true,
        ActiveRule::Field { field, active, inactive } => {
            let raw = match ctx.record.fields.get(field) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(v @ (Value::Array(_) | Value::Object(_))) => {
                    return Err((
                        field.clone(),
                        format!("status field `{field}` holds {}, expected a value", kind(v)),
                    ));
                }
            };
            match raw {
                None => missing(field, format!("status field `{field}` is absent or empty"))?,
                Some(v) => {
                    let lower = v.to_lowercase();
                    if active.contains(&lower) {
                        true
                    } else if inactive.contains(&lower) {
                        false
                    } else {
                        return Err((
                            field.clone(),
                            format!(
                                "status field `{field}` has value `{v}`, expected one of {} \
                                 (active) or {} (inactive)",
                                quoted(active),
                                quoted(inactive)
                            ),
                        ));
                    }
                }
            }
        }
        ActiveRule::Expression(name) => {
            let v = ctx.eval(name).map_err(|r| ("status".to_string(), r))?;
            match v.kind() {
                ValueKind::Bool => v.is_true(),
                ValueKind::Undefined | ValueKind::None => {
                    missing("status", "`status.active_if` gave no value".to_string())?
                }
                _ => {
                    return Err((
                        "status".to_string(),
                        format!(
                            "`status.active_if` gave `{v}`, expected true or false (compare \
                             it, e.g. `status == \"Active\"`)"
                        ),
                    ));
                }
            }
        }
    };
    if rule.start_date.is_none() && rule.end_date.is_none() {
        return Ok((active, None));
    }
    let tz = match &rule.worker_time_zone {
        None => rule.time_zone,
        Some(name) => {
            let v = ctx.eval(name).map_err(|r| ("status".to_string(), r))?;
            match text(&v) {
                None => rule.time_zone,
                Some(t) => dates::time_zone(&t).ok_or_else(|| {
                    (
                        "status".to_string(),
                        format!("`status.worker_time_zone` gave `{t}`, not an IANA time zone"),
                    )
                })?,
            }
        }
    };
    let today = now.with_timezone(&tz).date_naive();
    if let Some(end) = &rule.end_date
        && let Some(end) = ctx.date(end, "end_date", tz)?
        && today >= end
    {
        active = false;
    }
    if active
        && let Some(start) = &rule.start_date
        && let Some(start) = ctx.date(start, "start_date", tz)?
    {
        let from = start.checked_sub_days(Days::new(rule.pre_hire_days.into())).unwrap_or(start);
        if today < from {
            return Ok((true, Some((start, from))));
        }
    }
    Ok((active, None))
}

/// The group a rule gives this record, if any.
fn group(g: &GroupRule, ctx: &mut Context<'_>) -> Result<Option<GroupRef>, Reason> {
    if let Some(when) = &g.when
        && !ctx.eval(when)?.is_true()
    {
        return Ok(None);
    }
    let Some(external_id) = ctx.produce(&g.external_id)? else { return Ok(None) };
    let limit = |what: &str, v: &str, max: usize| {
        let n = v.chars().count();
        if n > max {
            Err(format!("group {what} is {n} characters, the limit is {max}"))
        } else {
            Ok(())
        }
    };
    limit("externalId", &external_id, GROUP_ID_MAX_CHARS)?;
    let Some(display_name) = ctx.produce(&g.name)? else {
        return Err(format!("group `{external_id}` has an empty name (displayName is required)"));
    };
    limit("name", &display_name, GROUP_ID_MAX_CHARS)?;
    let description = match &g.description {
        None => None,
        Some(p) => ctx.produce(p)?,
    };
    if let Some(d) = &description {
        limit("description", d, GROUP_DESCRIPTION_MAX_CHARS)?;
    }
    Ok(Some(GroupRef { external_id, display_name, description }))
}

/// The trimmed text of a value; `None` when absent or empty.
fn text(v: &JinjaValue) -> Option<String> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::String => v.as_str().and_then(non_empty),
        _ => non_empty(&v.to_string()),
    }
}

/// Check a non-empty, trimmed value against a constraint.
pub(super) fn check(v: &str, c: Constraint) -> Result<(), Reason> {
    let n = v.chars().count();
    if n > c.max_chars {
        return Err(format!("{n} characters, the limit is {}", c.max_chars));
    }
    if n < c.min_chars {
        return Err(format!("{n} characters, the minimum is {}", c.min_chars));
    }
    if c.email && !is_email(v) {
        return Err(format!("{v:?} is not a valid email address"));
    }
    Ok(())
}

/// One record being mapped, with its template context built lazily.
struct Context<'a> {
    mapping: &'a Mapping,
    record: &'a Record,
    value: Option<JinjaValue>,
}

impl Context<'_> {
    /// The trimmed value, `None` when absent or empty, or why it cannot be produced.
    fn produce(&mut self, p: &Producer) -> Result<Option<String>, Reason> {
        match p {
            Producer::Field(f) => match self.record.fields.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(non_empty(s)),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(Value::Bool(b)) => Ok(Some(b.to_string())),
                Some(Value::Array(_)) => Err(format!(
                    "field `{f}` holds a list; arrays aren't supported by okta profiles"
                )),
                Some(Value::Object(_)) => {
                    Err(format!("field `{f}` holds an object; okta profile values are strings"))
                }
            },
            Producer::Template(name, Some(parts)) => match concat(self.record, parts) {
                Some(out) => Ok(non_empty(&out)),
                // A value the shortcut does not render exactly as minijinja would.
                None => self.render(name),
            },
            Producer::Template(name, None) => self.render(name),
        }
    }

    /// Render the template `name` with minijinja.
    fn render(&mut self, name: &str) -> Result<Option<String>, Reason> {
        let template = self
            .mapping
            .env
            .get_template(name)
            .map_err(|e| format!("template `{name}` is not compiled: {e}"))?;
        let (record, fields) = (self.record, &self.mapping.template_fields);
        let ctx = self.value.get_or_insert_with(|| context(record, fields));
        let out = template.render(ctx.clone()).map_err(|e| format!("template failed: {e}"))?;
        Ok(non_empty(&out))
    }

    /// Evaluate the expression template `name`; undefined when it gave nothing.
    fn eval(&mut self, name: &str) -> Result<JinjaValue, Reason> {
        let template = self
            .mapping
            .env
            .get_template(name)
            .map_err(|e| format!("expression `{name}` is not compiled: {e}"))?;
        let (record, fields) = (self.record, &self.mapping.template_fields);
        let ctx = self.value.get_or_insert_with(|| context(record, fields));
        let captured = template
            .render_captured(ctx.clone())
            .map_err(|e| format!("`{name}` failed: {}", short_error(&e)))?;
        Ok(captured.state().lookup(EXPR_RESULT).unwrap_or(JinjaValue::UNDEFINED))
    }

    /// Evaluate the date expression `name` (`start_date` or `end_date`) as a calendar day in
    /// `tz`; `None` when it gave nothing.
    fn date(
        &mut self,
        name: &str,
        key: &str,
        tz: Tz,
    ) -> Result<Option<chrono::NaiveDate>, StatusError> {
        let v = self.eval(name).map_err(|r| ("status".to_string(), r))?;
        let when = match v.kind() {
            ValueKind::Number => i64::try_from(v.clone()).ok().and_then(dates::from_epoch),
            _ => match text(&v) {
                None => return Ok(None),
                Some(t) => dates::parse(&t, None),
            },
        };
        let when: When = when.ok_or_else(|| {
            (
                "status".to_string(),
                format!(
                    "`status.{key}` gave `{v}`, not a date (YYYY-MM-DD or RFC 3339; use the \
                     `date` filter for other shapes)"
                ),
            )
        })?;
        Ok(Some(when.day_in(tz)))
    }
}

/// A minijinja error as one line, without the template source dump.
fn short_error(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

/// Render a plain concatenation template without minijinja; `None` when a field holds a
/// value whose rendering is not obviously the same (floats, lists, objects).
fn concat(record: &Record, parts: &[Part]) -> Option<String> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Field(f) => match record.fields.get(f) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                    let _ = write!(out, "{n}");
                }
                Some(_) => return None,
            },
        }
    }
    Some(out)
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The template context of a record: the fields templates read (`fields`, known at compile
/// time), with nulls left undefined so they render empty like absent fields. Converting only
/// these, not the whole record, is what keeps mapping fast on wide records.
fn context(record: &Record, fields: &[String]) -> JinjaValue {
    let map: BTreeMap<String, JinjaValue> = fields
        .iter()
        .filter_map(|k| match record.fields.get(k) {
            None | Some(Value::Null) => None,
            Some(v) => Some((k.clone(), to_jinja(v))),
        })
        .collect();
    JinjaValue::from(map)
}

fn to_jinja(v: &Value) -> JinjaValue {
    match v {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                JinjaValue::from(i)
            } else if let Some(u) = n.as_u64() {
                JinjaValue::from(u)
            } else {
                // Finite by construction: JSON has no NaN or infinity.
                JinjaValue::from(n.as_f64().unwrap_or_default())
            }
        }
        Value::String(s) => JinjaValue::from(s.as_str()),
        Value::Array(items) => items.iter().map(to_jinja).collect(),
        Value::Object(map) => {
            let m: BTreeMap<String, JinjaValue> =
                map.iter().map(|(k, v)| (k.clone(), to_jinja(v))).collect();
            JinjaValue::from(m)
        }
    }
}

fn quoted(values: &[String]) -> String {
    values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        for ok in ["a@b.c", "first.last+tag@sub.example.com", "ñ@exämple.es"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in
            ["", "a", "a@b", "@b.c", "a@@b.c", "a@b.c@d.e", "a@.b", "a@b.", "a b@c.d", "a@b\t.c"]
        {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn only_standard_attributes_are_constrained() {
        assert_eq!(
            constraint_for("email").map(|c| (c.min_chars, c.max_chars, c.email)),
            Some((5, 100, true))
        );
        assert_eq!(constraint_for("lastName").map(|c| c.max_chars), Some(50));
        assert_eq!(constraint_for("homeAddress").map(|c| c.max_chars), Some(4096));
        assert_eq!(constraint_for("displayName"), None);
        assert_eq!(constraint_for("Email"), None, "okta names are case-sensitive");
    }
}
