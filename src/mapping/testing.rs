//! Running a mapping's own `tests:` (the cases declared next to the rules they check, as
//! Vector does for its transforms).
//!
//! Each case maps its `input` record as of its `now` and compares what it got with `expect`.
//! Only what a case states is checked; a stated `profile` must match exactly, so an attribute
//! that appears or disappears by accident fails the test. Failures read as a diff: one line per
//! difference, `-` what was expected, `+` what the mapping produced.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::references::{self, Lookup};
use super::{Mapped, Mapping, Origin, Record};

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's `name`, or `tests[i]`.
    pub name: String,
    /// The line the case starts on.
    pub line: Option<usize>,
    /// One entry per difference; empty when the case passed.
    pub diff: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.diff.is_empty()
    }
}

/// Run every case of `m`. Cases without `now` use `default_now`.
pub fn run(m: &Mapping, default_now: DateTime<Utc>) -> Vec<CaseResult> {
    m.tests
        .iter()
        .enumerate()
        .map(|(i, (case, line))| {
            let name = case.name.clone().unwrap_or_else(|| format!("tests[{i}]"));
            let mut diff = Vec::new();
            let now = match &case.now {
                None => default_now,
                Some(text) => match super::dates::parse_now(text) {
                    Some(t) => t,
                    None => {
                        diff.push(format!("`now: {text}` is not an RFC 3339 instant or a date"));
                        return CaseResult { name, line: *line, diff };
                    }
                },
            };
            compare(&case.expect, map_case(m, case, i, now), &mut diff);
            CaseResult { name, line: *line, diff }
        })
        .collect()
}

/// Map case `i`'s input as of `now`, its `references` resolved against the case's `others`
/// (mapped as of the same instant) and itself, as a pull would against its other records.
fn map_case(
    m: &Mapping,
    case: &super::spec::TestSpec,
    i: usize,
    now: DateTime<Utc>,
) -> Result<Mapped, super::Rejection> {
    let record = Record { origin: Origin::Index(i as u64), fields: case.input.clone() };
    let mut user = match m.apply_at(&record, now)? {
        Mapped::User(u) => u,
        not_yet => return Ok(not_yet),
    };
    if user.links.is_empty() {
        return Ok(Mapped::User(user));
    }
    let others: Vec<Result<Mapped, super::Rejection>> = case
        .others
        .iter()
        .enumerate()
        .map(|(j, fields)| {
            m.apply_at(&Record { origin: Origin::Index(j as u64), fields: fields.clone() }, now)
        })
        .collect();
    let itself = (user.external_id.clone(), user.profile.clone());
    let refs = m.references();
    let lookup = |r: usize, person: &str| {
        let attribute = refs[r].attribute.as_str();
        if person == itself.0 {
            return Lookup::Found(itself.1.get(attribute).map(|v| Cow::Owned(v.clone())));
        }
        let why = others.iter().rev().find_map(|o| match o {
            Ok(Mapped::User(u)) if u.external_id == person => {
                Some(Lookup::Found(u.profile.get(attribute).map(|v| Cow::Owned(v.clone()))))
            }
            Ok(Mapped::NotYet(n)) if n.external_id == person => {
                Some(Lookup::Missing(Cow::Borrowed(references::NOT_YET)))
            }
            Err(r) if r.external_id.as_deref() == Some(person) => {
                Some(Lookup::Missing(Cow::Borrowed(references::REJECTED)))
            }
            _ => None,
        });
        why.unwrap_or(Lookup::Missing(Cow::Borrowed("is not among the case's `others`")))
    };
    references::resolve(refs, &mut user, lookup)?;
    Ok(Mapped::User(user))
}

fn compare(
    x: &super::spec::ExpectSpec,
    got: Result<Mapped, super::Rejection>,
    diff: &mut Vec<String>,
) {
    let mut line = |what: &str, want: &str, got: &str| {
        diff.push(format!("{what}:\n    - {want}\n    + {got}"));
    };
    let mapped = match (got, &x.rejected) {
        (Err(r), Some(want)) => {
            if let Some(text) = want
                && !r.to_string().contains(text.as_str())
            {
                line("rejection", &format!("a reason containing {text:?}"), &r.to_string());
            }
            return;
        }
        (Err(r), None) => {
            line("result", "mapped", &format!("rejected: {r}"));
            return;
        }
        (Ok(m), Some(_)) => {
            let shown = match &m {
                Mapped::User(u) => format!("mapped (externalId {})", u.external_id),
                Mapped::NotYet(n) => format!("not yet (externalId {})", n.external_id),
            };
            line("result", "rejected", &shown);
            return;
        }
        (Ok(m), None) => m,
    };
    let (external_id, status) = match &mapped {
        Mapped::User(u) => (&u.external_id, if u.active { "active" } else { "inactive" }),
        Mapped::NotYet(n) => (&n.external_id, "not_yet"),
    };
    if let Some(want) = &x.external_id
        && want != external_id
    {
        line("external_id", want, external_id);
    }
    if let Some(want) = &x.status
        && want != status
    {
        let got = match &mapped {
            Mapped::NotYet(n) => {
                format!("not_yet (starts {}, imported from {})", n.start_date, n.import_from)
            }
            _ => status.to_string(),
        };
        line("status", want, &got);
    }
    let (profile, groups) = match &mapped {
        Mapped::User(u) => {
            (u.profile.clone(), u.groups.iter().map(|g| g.external_id.clone()).collect())
        }
        Mapped::NotYet(_) => (BTreeMap::new(), Vec::new()),
    };
    if let Some(want) = &x.profile {
        let want: BTreeMap<&str, &str> =
            want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut keys: Vec<&str> = want.keys().copied().collect();
        keys.extend(profile.keys().map(String::as_str).filter(|k| !want.contains_key(k)));
        keys.sort_unstable();
        for k in keys {
            let (w, g) = (want.get(k).copied(), profile.get(k).map(String::as_str));
            if w != g {
                let show = |v: Option<&str>| v.map_or("(absent)".to_string(), |v| format!("{v:?}"));
                line(&format!("profile.{k}"), &show(w), &show(g));
            }
        }
    }
    if let Some(want) = &x.groups {
        let mut want = want.clone();
        want.sort();
        let mut got: Vec<String> = groups;
        got.sort();
        if want != got {
            line("groups", &format!("{want:?}"), &format!("{got:?}"));
        }
    }
}

/// What the mapping gives for each case's input (as of the case's `now`, else `default_now`),
/// named like [`run`] names them: for previews and snapshot tests of a mapping's behaviour.
pub fn outputs(
    m: &Mapping,
    default_now: DateTime<Utc>,
) -> Vec<(String, Result<Mapped, super::Rejection>)> {
    m.tests
        .iter()
        .enumerate()
        .map(|(i, (case, _))| {
            let name = case.name.clone().unwrap_or_else(|| format!("tests[{i}]"));
            let now = case.now.as_deref().and_then(super::dates::parse_now).unwrap_or(default_now);
            (name, map_case(m, case, i, now))
        })
        .collect()
}
