//! References: a profile attribute copied from *another* person of the same pull, found by
//! their externalId. The first use is the manager: HR records carry the manager's employee
//! number, while Okta's `manager` or `managerId` want the manager's login.
//!
//! ```yaml
//! references:
//!   manager:                  # the attribute this produces
//!     person: manager_id      # a field or template giving the other person's externalId
//!     attribute: userName     # that person's *mapped* attribute
//!     on_missing: omit        # omit (default) | reject
//! ```
//!
//! Mapping a record only reads the other person's externalId ([`MappedUser::links`]); the
//! value is filled in by [`resolve`] once every record is mapped, by whoever holds the other
//! people: the pull (a second pass over its spill), a webhook push (the batch, then the
//! state's confirmed profiles) or a mapping test (the case's `others`). All three call this
//! one rule.
//!
//! A reference is *dangling* when the person is not found, the pull rejected them, or they
//! have no value for the attribute. `on_missing: omit` leaves the attribute out (and the run
//! report counts it); `reject` rejects the record, and so, in turn, the records that reject
//! on a reference to it. Leavers carry no references: a deactivation sends no profile, and a
//! departed manager must never block one.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::compile::{Ctx, Producer};
use super::eval::{self, Constraint};
use super::spec::{ON_MISSING, ReferenceSpec, one_of};
use super::{MappedUser, Rejection};
use crate::diag::suggest;

/// Why a referenced person is missing: the pull rejected their record.
pub const REJECTED: &str = "was rejected by this pull";
/// Why a referenced person is missing: a joiner whose pre-hire window has not opened.
pub const NOT_YET: &str = "is not imported yet (pre-hire window)";
/// Why a referenced person is missing: no record has their externalId.
pub const NOT_IN_PULL: &str = "is not in this pull";

/// What a dangling reference does to its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Leave the attribute out (counted in the report).
    #[default]
    Omit,
    /// Reject the record.
    Reject,
}

/// One compiled `references` entry.
#[derive(Debug, Clone)]
pub struct PersonRef {
    /// The profile attribute it produces.
    pub name: String,
    /// The referenced person's attribute it copies.
    pub attribute: String,
    pub on_missing: OnMissing,
    pub(super) person: Producer,
    pub(super) constraint: Option<Constraint>,
}

/// What looking up a referenced person found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The person is known: the value of the attribute, `None` when they have none.
    Found(Option<Cow<'a, str>>),
    /// Not known, and why ("is not in this pull", "was rejected by this pull", …).
    Missing(Cow<'a, str>),
}

/// A reference left out of a profile (`on_missing: omit`), for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dangling {
    /// The record's externalId.
    pub external_id: String,
    /// The attribute left out.
    pub attribute: String,
    /// The externalId it refers to.
    pub person: String,
    /// Why it did not resolve, lowercase.
    pub reason: String,
}

/// Fill in `user`'s references ([`MappedUser::links`], emptied) from `lookup(i, person)`,
/// where `i` is the reference's position in `refs`. Returns the references left out; `Err`
/// when one with `on_missing: reject` did not resolve.
pub fn resolve<'a>(
    refs: &[PersonRef],
    user: &mut MappedUser,
    mut lookup: impl FnMut(usize, &str) -> Lookup<'a>,
) -> Result<Vec<Dangling>, Rejection> {
    let links = std::mem::take(&mut user.links);
    let mut dangling = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let Some(person) = links.get(&r.name) else { continue };
        let why = match outcome(r, lookup(i, person)) {
            Ok(value) => {
                user.profile.insert(r.name.clone(), value.into_owned());
                continue;
            }
            Err(why) => why,
        };
        let reason = format!("references `{person}`, who {why}");
        if r.on_missing == OnMissing::Reject {
            return Err(Rejection {
                origin: user.origin.clone(),
                external_id: Some(user.external_id.clone()),
                field: Some(format!("references.{}", r.name)),
                reason,
            });
        }
        dangling.push(Dangling {
            external_id: user.external_id.clone(),
            attribute: r.name.clone(),
            person: person.clone(),
            reason,
        });
    }
    Ok(dangling)
}

/// What a lookup gives reference `r`: the value to copy, or why it dangles.
fn outcome<'a>(r: &PersonRef, found: Lookup<'a>) -> Result<Cow<'a, str>, String> {
    match found {
        Lookup::Found(Some(value)) => match r.constraint.map(|c| eval::check(&value, c)) {
            Some(Err(reason)) => {
                Err(format!("its `{}` cannot be `{}`: {reason}", r.attribute, r.name))
            }
            _ => Ok(value),
        },
        Lookup::Found(None) => Err(format!("has no `{}`", r.attribute)),
        Lookup::Missing(why) => Err(why.into_owned()),
    }
}

/// Whether a lookup result makes the reference dangle (what `reject` rejects on).
pub fn dangles(r: &PersonRef, found: &Lookup<'_>) -> bool {
    outcome(r, found.clone()).is_err()
}

impl Ctx<'_> {
    /// Compile the `references` entries against the mapping's attribute names.
    pub(super) fn references(
        &mut self,
        specs: &[ReferenceSpec],
        attributes: &[&str],
    ) -> Vec<PersonRef> {
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            let path = format!("references.{}", s.name);
            let before = self.diags.len();
            if attributes.contains(&s.name.as_str()) {
                self.diags.push(self.index.diag(
                    &path,
                    format!(
                        "`{}` is also under `attributes`: an attribute comes from one place",
                        s.name
                    ),
                ));
            } else if !super::compile::is_identifier(&s.name) {
                self.diags.push(self.index.diag(
                    &path,
                    format!(
                        "attribute name `{}` is not valid: use letters, digits and `_`, not \
                         starting with a digit (okta variable names)",
                        s.name
                    ),
                ));
            }
            let attribute = s.attribute.clone().unwrap_or_default();
            if s.attribute.is_some() && !attributes.contains(&attribute.as_str()) {
                let references: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                let message = if references.contains(&attribute.as_str()) {
                    format!(
                        "`{attribute}` is itself a reference: refer to the attribute it copies \
                         (references are resolved in one pass)"
                    )
                } else if matches!(attribute.as_str(), "externalId" | "external_id") {
                    "the externalId is what `person` gives: copy that field under `attributes` \
                     instead"
                        .to_string()
                } else {
                    let hint = suggest(&attribute, attributes)
                        .map(|s| format!(", did you mean `{s}`?"))
                        .unwrap_or_default();
                    format!("`{attribute}` is not an attribute of this mapping{hint}")
                };
                self.diags.push(self.index.diag(format!("{path}.attribute"), message));
            }
            let on_missing = match s.on_missing.as_deref() {
                None | Some("omit") => OnMissing::Omit,
                Some("reject") => OnMissing::Reject,
                Some(other) => {
                    self.diags.push(self.index.diag(
                        format!("{path}.on_missing"),
                        format!("unknown value `{other}`, expected one of {}", one_of(ON_MISSING)),
                    ));
                    OnMissing::Omit
                }
            };
            let person =
                s.person.as_ref().and_then(|p| self.producer(p, &format!("{path}.person")));
            if let Some(person) = person
                && self.diags.len() == before
            {
                out.push(PersonRef {
                    name: s.name.clone(),
                    attribute,
                    on_missing,
                    person,
                    constraint: eval::constraint_for(&s.name),
                });
            }
        }
        out
    }
}
