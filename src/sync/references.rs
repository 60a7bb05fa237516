//! The pull's second pass: fill in the mapping's `references` (a manager's `userName`, say)
//! from the other people of the same pull ([`crate::mapping::references`] has the rule).
//!
//! The first pass spilled every user with the referenced externalIds unresolved. This pass
//! reads the spill twice, in order, and never holds more than this in memory, per person:
//! the value of each *referenced* attribute (one string, usually the `userName`), one slot
//! number per reference, and one flag.
//!
//! 1. Read every user: keep the referenced attributes' values and where each reference points.
//! 2. Decide who is rejected: a record whose `reject` reference dangles, then, following the
//!    references backwards, every record whose `reject` reference points at a rejected one.
//!    Linear in people and references, whatever the hierarchy's depth (cycles end too).
//! 3. Read every user again, resolve, and write the resolved users to a new spill (which
//!    computes the hashes the delta compares, so a manager's new login changes each report's
//!    hash). The first spill's index is freed before, so two are never held at once.

use std::borrow::Cow;
use std::collections::HashSet;

use super::spill::Spill;
use crate::mapping::references::{self, Dangling, Lookup, OnMissing, PersonRef};
use crate::mapping::{Mapping, Rejection};

/// No reference (the record names no one).
const NONE: u32 = u32::MAX;
/// A reference to someone not in the spill.
const ABSENT: u32 = u32::MAX - 1;

/// What resolving a pull's references gave.
#[derive(Debug, Default)]
pub struct Resolution {
    /// References filled in.
    pub resolved: u64,
    /// References left out (`on_missing: omit`).
    pub dangling: Vec<Dangling>,
    /// Records rejected by an `on_missing: reject` reference.
    pub rejected: Vec<Rejection>,
}

/// Why a person the spill does not hold is missing: what the pull knows of them.
pub struct Absent<'a> {
    /// externalIds the pull rejected.
    pub rejected: HashSet<&'a str>,
    /// externalIds of joiners not imported yet (pre-hire).
    pub not_yet: HashSet<&'a str>,
}

impl Absent<'_> {
    fn why(&self, person: &str) -> &'static str {
        if self.rejected.contains(person) {
            references::REJECTED
        } else if self.not_yet.contains(person) {
            references::NOT_YET
        } else {
            references::NOT_IN_PULL
        }
    }
}

/// Resolve the references of every user of `spill`; the resolved users come back in a new
/// spill, in the same order. A mapping without references returns `spill` untouched.
pub fn resolve(
    mapping: &Mapping,
    mut spill: Spill,
    absent: &Absent<'_>,
) -> std::io::Result<(Spill, Resolution)> {
    let refs = mapping.references();
    if refs.is_empty() || spill.is_empty() {
        return Ok((spill, Resolution::default()));
    }
    let people = Index::read(&spill, refs)?;
    let rejected = people.rejected(refs);
    spill.forget_index();

    let mut out = Spill::new()?;
    let mut resolution = Resolution::default();
    for (slot, user) in spill.iter().enumerate() {
        let mut user = user?;
        let links = user.links.len() as u64;
        let lookup = |r: usize, person: &str| people.lookup(slot, r, &rejected, person, absent);
        match references::resolve(refs, &mut user, lookup) {
            Ok(dangling) => {
                resolution.resolved += links - dangling.len() as u64;
                resolution.dangling.extend(dangling);
                out.push(&user)?;
            }
            Err(rejection) => resolution.rejected.push(rejection),
        }
    }
    out.finish()?;
    Ok((out, resolution))
}

/// What the second pass keeps per person.
struct Index {
    /// Per referenced attribute, per slot: its value.
    values: Vec<Vec<Option<Box<str>>>>,
    /// Per reference: which of `values` it reads.
    reads: Vec<usize>,
    /// Per slot and reference (`slot * refs + r`): the slot referred to, [`NONE`] or
    /// [`ABSENT`].
    targets: Vec<u32>,
}

impl Index {
    fn read(spill: &Spill, refs: &[PersonRef]) -> std::io::Result<Self> {
        let mut attributes: Vec<&str> = refs.iter().map(|r| r.attribute.as_str()).collect();
        attributes.sort_unstable();
        attributes.dedup();
        let reads = refs
            .iter()
            .map(|r| attributes.iter().position(|a| *a == r.attribute).unwrap_or(0))
            .collect();
        let mut values: Vec<Vec<Option<Box<str>>>> =
            attributes.iter().map(|_| Vec::with_capacity(spill.len())).collect();
        let mut targets = Vec::with_capacity(spill.len() * refs.len());
        for user in spill.iter() {
            let user = user?;
            for (a, attribute) in attributes.iter().enumerate() {
                values[a].push(user.profile.get(*attribute).map(|v| v.as_str().into()));
            }
            for r in refs {
                targets.push(match user.links.get(&r.name) {
                    None => NONE,
                    Some(person) => match spill.slot_of(person) {
                        Some(slot) => u32::try_from(slot).unwrap_or(ABSENT),
                        None => ABSENT,
                    },
                });
            }
        }
        Ok(Self { values, reads, targets })
    }

    /// The value reference `r` of `slot` finds, before any rejection.
    fn found(&self, slot: usize, r: usize) -> Option<Lookup<'_>> {
        match self.targets[slot * self.reads.len() + r] {
            NONE => None,
            ABSENT => Some(Lookup::Missing(Cow::Borrowed(""))),
            t => Some(Lookup::Found(
                self.values[self.reads[r]][t as usize].as_deref().map(Cow::Borrowed),
            )),
        }
    }

    /// Per slot: rejected by an `on_missing: reject` reference, directly or through others.
    fn rejected(&self, refs: &[PersonRef]) -> Vec<bool> {
        let slots = self.targets.len() / refs.len().max(1);
        let mut rejected = vec![false; slots];
        let mut queue = Vec::new();
        // (referred to, referring) for every `reject` reference that resolves.
        let mut edges: Vec<(u32, u32)> = Vec::new();
        for (slot, is_rejected) in rejected.iter_mut().enumerate() {
            for (r, pref) in refs.iter().enumerate() {
                if pref.on_missing != OnMissing::Reject {
                    continue;
                }
                match self.found(slot, r) {
                    Some(found) if references::dangles(pref, &found) => *is_rejected = true,
                    Some(_) => edges.push((self.targets[slot * refs.len() + r], slot as u32)),
                    None => {}
                }
            }
            if *is_rejected {
                queue.push(slot as u32);
            }
        }
        edges.sort_unstable();
        while let Some(t) = queue.pop() {
            let from = edges.partition_point(|e| e.0 < t);
            for &(_, s) in edges[from..].iter().take_while(|e| e.0 == t) {
                if !rejected[s as usize] {
                    rejected[s as usize] = true;
                    queue.push(s);
                }
            }
        }
        rejected
    }

    /// What reference `r` of `slot` finds once rejections are known.
    fn lookup<'a>(
        &'a self,
        slot: usize,
        r: usize,
        rejected: &[bool],
        person: &str,
        absent: &Absent<'_>,
    ) -> Lookup<'a> {
        match self.targets[slot * self.reads.len() + r] {
            ABSENT | NONE => Lookup::Missing(Cow::Borrowed(absent.why(person))),
            t if rejected[t as usize] => Lookup::Missing(Cow::Borrowed(references::REJECTED)),
            _ => self.found(slot, r).unwrap_or(Lookup::Found(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{Origin, Record};

    const MAPPING: &str = r#"version: 2
external_id: id
status: { active_if: "true" }
attributes:
  userName: email
references:
  manager: { person: boss, attribute: userName, on_missing: reject }
  buddyName: { person: buddy, attribute: userName }
"#;

    fn spill(m: &Mapping, people: &[(&str, &str, &str)]) -> Spill {
        let mut spill = Spill::new().unwrap();
        for (i, (id, boss, buddy)) in people.iter().enumerate() {
            let fields = serde_json::json!({
                "id": id, "email": format!("{id}@x.io"), "boss": boss, "buddy": buddy,
            });
            let serde_json::Value::Object(fields) = fields else { unreachable!() };
            let user = m.apply(&Record { origin: Origin::Index(i as u64), fields }).unwrap();
            spill.push(&user).unwrap();
        }
        spill.finish().unwrap();
        spill
    }

    /// A cycle resolves; a missing manager rejects, and the rejection runs down the chain of
    /// reports but not into an `omit` reference, which dangles instead.
    #[test]
    fn cycles_resolve_and_rejections_follow_reject_references_only() {
        let m = Mapping::from_yaml(std::path::Path::new("m.yaml"), MAPPING).unwrap();
        let people = [
            ("a", "b", ""),
            ("b", "a", "c"),
            ("c", "nobody", ""),
            ("d", "c", ""),
            ("e", "d", ""),
            ("f", "a", "e"),
        ];
        let absent = Absent { rejected: HashSet::new(), not_yet: HashSet::new() };
        let (out, res) = resolve(&m, spill(&m, &people), &absent).unwrap();
        let rejected: Vec<&str> =
            res.rejected.iter().filter_map(|r| r.external_id.as_deref()).collect();
        assert_eq!(rejected, ["c", "d", "e"]);
        assert!(res.rejected[0].reason.contains("`nobody`, who is not in this pull"));
        assert!(res.rejected[1].reason.contains("`c`, who was rejected by this pull"));
        let users: Vec<_> = out.iter().map(Result::unwrap).collect();
        let ids: Vec<&str> = users.iter().map(|u| u.external_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "f"]);
        assert_eq!(users[0].profile["manager"], "b@x.io");
        assert_eq!(users[1].profile["manager"], "a@x.io");
        assert!(!users[1].profile.contains_key("buddyName"), "c was rejected: omitted");
        assert!(!users[2].profile.contains_key("buddyName"));
        assert!(users.iter().all(|u| u.links.is_empty()));
        assert_eq!(res.resolved, 3);
        let dangling: Vec<(&str, &str)> =
            res.dangling.iter().map(|d| (d.external_id.as_str(), d.person.as_str())).collect();
        assert_eq!(dangling, [("b", "c"), ("f", "e")]);
        // The resolved copy is what the delta hashes: the manager is part of it.
        assert_eq!(out.content_hashes(&[0]).unwrap(), [users[0].content_hash_hex()]);
        assert_eq!(out.slot_of("f"), Some(2));
    }
}
