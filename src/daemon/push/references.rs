//! The mapping's `references` for pushed users: the pull's rule
//! ([`crate::mapping::references`]), with the other people looked up in the batch first (the
//! newest word), then in the state's last confirmed profiles.
//!
//! A record whose `reject` reference dangles is rejected, and so, in turn, are the records of
//! the batch whose `reject` reference points at it, as in a pull. With
//! `state.store_profiles: false` the state has no profiles to look in: a user whose reference
//! names someone outside the batch is held (not sent, the next scheduled run sends it), since
//! leaving their manager out would clear it in Okta until then.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::Batch;
use crate::mapping::references::{self, Lookup};
use crate::settings::Settings;
use crate::state::events::QueuedEvent;
use crate::state::{StateError, StateStore};

type Profile = BTreeMap<String, String>;

/// Resolve the references of every mapped user of `batch`.
pub(super) fn resolve_batch(
    batch: &mut Batch,
    settings: &Settings,
    events: &[QueuedEvent],
    store: &dyn StateStore,
) -> Result<(), StateError> {
    let job_of = |i: usize| events[batch.mapped[i].event].job.as_str();
    let todo: Vec<usize> =
        (0..batch.mapped.len()).filter(|&i| !batch.mapped[i].user.links.is_empty()).collect();
    if todo.is_empty() {
        return Ok(());
    }
    let by_id: HashMap<(&str, &str), usize> = (0..batch.mapped.len())
        .map(|i| ((job_of(i), batch.mapped[i].user.external_id.as_str()), i))
        .collect();
    // Records the mapping rejected, then those a `reject` reference rejects.
    let mut rejected: HashSet<(String, String)> = HashSet::new();
    for (e, outcomes) in batch.outcomes.iter().enumerate() {
        for o in outcomes.iter().filter(|o| o.outcome == "rejected") {
            if let Some(id) = &o.external_id {
                rejected.insert((events[e].job.clone(), id.clone()));
            }
        }
    }
    let mut state: HashMap<(String, String), Option<Profile>> = HashMap::new();
    let mut outcome: HashMap<usize, Result<super::MappedUser, crate::mapping::Rejection>> =
        HashMap::new();
    let mut blocked: HashMap<usize, String> = HashMap::new();
    // Until no more records are rejected: each round can only reject more, so this ends.
    loop {
        let mut more = false;
        for &i in &todo {
            let job_name = job_of(i);
            let Some(job) = settings.jobs.iter().find(|j| j.name == job_name) else { continue };
            let refs = job.mapping.references();
            let mut user = batch.mapped[i].user.clone();
            let outside: Vec<&String> = user
                .links
                .values()
                .filter(|p| !by_id.contains_key(&(job_name, p.as_str())))
                .collect();
            if !settings.state.store_profiles && !outside.is_empty() {
                blocked.insert(
                    i,
                    format!(
                        "references `{}`, who is not in this push, and the state keeps no \
                         profiles to look them up (`state.store_profiles: false`); the next \
                         scheduled run sends it",
                        outside[0]
                    ),
                );
                continue;
            }
            for p in outside {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    state.entry((job_name.to_string(), p.clone()))
                {
                    slot.insert(store.confirmed_profile(job_name, p)?);
                }
            }
            let lookup = |r: usize, person: &str| {
                let attribute = refs[r].attribute.as_str();
                let key = (job_name.to_string(), person.to_string());
                if rejected.contains(&key) {
                    return Lookup::Missing(Cow::Borrowed(references::REJECTED));
                }
                if let Some(&j) = by_id.get(&(job_name, person)) {
                    let p = &batch.mapped[j].user.profile;
                    return Lookup::Found(p.get(attribute).map(|v| Cow::Owned(v.clone())));
                }
                match state.get(&key) {
                    Some(Some(p)) => Lookup::Found(p.get(attribute).map(|v| Cow::Owned(v.clone()))),
                    _ => Lookup::Missing(Cow::Borrowed(
                        "is neither in this push nor confirmed in okta by this job",
                    )),
                }
            };
            let result = references::resolve(refs, &mut user, lookup);
            if let Err(r) = &result {
                more |= rejected
                    .insert((job_name.to_string(), r.external_id.clone().unwrap_or_default()));
            }
            outcome.insert(
                i,
                result.map(|dangling| {
                    if !dangling.is_empty() {
                        let left: Vec<String> = dangling
                            .iter()
                            .map(|d| format!("left out {}: {}", d.attribute, d.reason))
                            .collect();
                        batch.notes[i] = Some(left.join("; "));
                    }
                    user
                }),
            );
        }
        if !more {
            break;
        }
    }
    for (i, why) in blocked {
        batch.send[i] = false;
        batch.held[i] = Some(why);
    }
    for (i, result) in outcome {
        match result {
            Ok(user) => batch.mapped[i].user = user,
            Err(r) => {
                batch.send[i] = false;
                batch.notes[i] = None;
                let m = &batch.mapped[i];
                batch.outcomes[m.event].push(super::RecordOutcome {
                    index: m.index,
                    external_id: r.external_id.clone(),
                    outcome: "rejected",
                    reason: Some(r.reason),
                });
            }
        }
    }
    Ok(())
}
