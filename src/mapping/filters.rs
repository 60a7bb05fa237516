//! The filters the mapping adds to minijinja's built-ins (`trim`, `lower`, `upper`, `title`,
//! `replace`, `split`, `join`, `default`, …).
//!
//! | filter | does |
//! |---|---|
//! | `regex_capture(pattern, group=1)` | the capture group of the first match, or undefined |
//! | `regex_replace(pattern, replacement)` | every match replaced (`$1` refers to groups) |
//! | `date(format="%Y-%m-%d", from=None, tz=None)` | parse a date/instant, convert, format |
//! | `phone(region)` | E.164 (`+4930123456`) with `region` as the default country |
//! | `lookup(table)` | the value in a table of the mapping's `lookups:`, or undefined |
//!
//! An absent value (undefined or none) passes through every filter here unchanged, so an empty
//! field stays empty and the attribute is omitted. Filters fail (rejecting the record) only on
//! data they cannot make sense of, such as a phone number that is not one.
//!
//! Errors that do not depend on the record (an invalid regex, an unknown table, time zone or
//! region, an invalid format) carry [`STATIC_ERROR`] so that compile's dry run reports them at
//! load, with the key's line, rather than on every record.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use regex::Regex;

use super::dates::{self, When};

/// Marks an error that is wrong whatever the record (see the module doc).
pub const STATIC_ERROR: &str = "in the mapping: ";

/// The filter names available in templates and expressions, for did-you-mean suggestions.
pub const KNOWN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "d",
    "date",
    "default",
    "dictsort",
    "escape",
    "first",
    "float",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lookup",
    "lower",
    "map",
    "max",
    "min",
    "phone",
    "regex_capture",
    "regex_replace",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
];

/// Lookup tables: name → key → value.
pub type Tables = HashMap<String, HashMap<String, String>>;

/// Register the mapping's filters on `env`.
pub fn register(env: &mut Environment<'static>, tables: Arc<Tables>) {
    let cache: Arc<RwLock<HashMap<String, Regex>>> = Arc::default();
    let c = cache.clone();
    env.add_filter("regex_capture", move |v: Value, pattern: String, group: Option<usize>| {
        let re = regex(&c, &pattern)?;
        let Some(text) = text_of(&v) else { return Ok(v) };
        let group = group.unwrap_or(1);
        if group > re.captures_len().saturating_sub(1) && group != 0 {
            return Err(static_error(format!("regex `{pattern}` has no capture group {group}")));
        }
        Ok(re
            .captures(&text)
            .and_then(|c| c.get(group))
            .map(|m| Value::from(m.as_str()))
            .unwrap_or(Value::UNDEFINED))
    });
    env.add_filter("regex_replace", move |v: Value, pattern: String, with: String| {
        let re = regex(&cache, &pattern)?;
        let Some(text) = text_of(&v) else { return Ok(v) };
        Ok(Value::from(re.replace_all(&text, with.as_str()).into_owned()))
    });
    env.add_filter("date", date);
    env.add_filter("phone", phone);
    env.add_filter("lookup", move |v: Value, table: String| {
        let Some(t) = tables.get(&table) else {
            let mut names: Vec<&str> = tables.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(static_error(format!(
                "unknown lookup table `{table}`, the mapping's `lookups` has: {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        };
        let Some(key) = text_of(&v) else { return Ok(v) };
        Ok(t.get(key.trim()).map(|s| Value::from(s.as_str())).unwrap_or(Value::UNDEFINED))
    });
}

fn static_error(detail: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{STATIC_ERROR}{detail}"))
}

/// The text of a scalar; `None` for undefined and none (absent values pass through).
fn text_of(v: &Value) -> Option<String> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::String => v.as_str().map(str::to_string),
        _ => Some(v.to_string()),
    }
}

fn regex(cache: &RwLock<HashMap<String, Regex>>, pattern: &str) -> Result<Regex, Error> {
    // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
    if let Some(re) = cache.read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    let re =
        Regex::new(pattern).map_err(|e| static_error(format!("invalid regex `{pattern}`: {e}")))?;
    cache.write().unwrap_or_else(|e| e.into_inner()).insert(pattern.to_string(), re.clone());
    Ok(re)
}

/// `date(format="%Y-%m-%d", from=None, tz=None)`.
fn date(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let format: Option<String> = kwargs.get("format")?;
    let from: Option<String> = kwargs.get("from")?;
    let tz_name: Option<String> = kwargs.get("tz")?;
    kwargs.assert_all_used()?;
    let format = format.unwrap_or_else(|| "%Y-%m-%d".to_string());
    for f in [Some(&format), from.as_ref()].into_iter().flatten() {
        if !dates::valid_format(f) {
            return Err(static_error(format!("invalid date format `{f}`")));
        }
    }
    let tz = match &tz_name {
        None => None,
        Some(name) => Some(dates::time_zone(name).ok_or_else(|| {
            static_error(format!("unknown time zone `{name}` (use an IANA name)"))
        })?),
    };
    let when = match v.kind() {
        ValueKind::Undefined | ValueKind::None => return Ok(v),
        ValueKind::Number => {
            let secs = i64::try_from(v.clone()).map_err(|_| bad_date(&v))?;
            dates::from_epoch(secs).ok_or_else(|| bad_date(&v))?
        }
        _ => {
            let text = v.to_string();
            if text.trim().is_empty() {
                return Ok(Value::UNDEFINED);
            }
            dates::parse(&text, from.as_deref()).ok_or_else(|| bad_date(&v))?
        }
    };
    let mut out = String::new();
    let written = match when {
        // A calendar day has no time of day and no zone to convert.
        When::Date(d) => write!(out, "{}", d.format(&format)),
        _ => write!(out, "{}", when.local_in(tz).format(&format)),
    };
    written.map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("date format `{format}` needs a time, and `{v}` is only a date"),
        )
    })?;
    Ok(Value::from(out))
}

fn bad_date(v: &Value) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("`{v}` is not a date this filter can read"))
}

/// `phone(region)`: E.164, reading national numbers as in `region` (ISO 3166 alpha-2).
fn phone(v: Value, region: String) -> Result<Value, Error> {
    let id = phonenumber::country::Id::from_str(&region.to_ascii_uppercase()).map_err(|_| {
        static_error(format!("unknown region `{region}` (use an ISO 3166 code such as US)"))
    })?;
    let Some(text) = text_of(&v) else { return Ok(v) };
    if text.trim().is_empty() {
        return Ok(Value::UNDEFINED);
    }
    let invalid = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{text}` is not a valid phone number (default region {region})"),
        )
    };
    let n = phonenumber::parse(Some(id), text.trim()).map_err(|_| invalid())?;
    if !phonenumber::is_valid(&n) {
        return Err(invalid());
    }
    Ok(Value::from(n.format().mode(phonenumber::Mode::E164).to_string()))
}
