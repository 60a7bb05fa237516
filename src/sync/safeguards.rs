//! Safeguards: per-run thresholds checked before anything is sent (peers.md §4: truncated
//! files, changed filters and outages have wiped out users in other tools).
//!
//! A breach *holds* the run: nothing risky is sent, and the report says why and what would
//! have happened. `xaas approve --job NAME --run ID` (or `run --allow-deactivations N`)
//! releases one held run.
//!
//! What is counted, and against what:
//! - Deactivations: users this job owns (sent as active) that the source now marks inactive
//!   or that are missing from it. Inactive records of ids this job never sent as active are
//!   sent but not counted (on a first run there is nothing to compare with, and Okta ignores
//!   unknown ids). The percentage is of the users the state knows as active.
//! - Creations: only once the job has a recorded complete pull (a first run creates
//!   everyone, by definition).
//! - Source shrink: the pull's distinct users against the last complete pull that was not held.
//! - Membership removals: memberships this job gave that the run takes away (movers and
//!   leavers), against the memberships it gave. Group deletions: groups this job created that
//!   the run deletes, against the groups it created. A broken export that drops everyone's
//!   department is held here even when nobody is deactivated.

use serde::{Deserialize, Serialize};

use super::delta::Changes;
use crate::settings::Safeguards;
use crate::state::JobState;

/// Which threshold was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachKind {
    Deactivations,
    Creations,
    SourceShrink,
    MembershipRemovals,
    GroupDeletions,
}

/// One crossed threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breach {
    pub kind: BreachKind,
    pub message: String,
}

/// The absolute deactivation threshold alone: what a pushed batch is checked against (a batch
/// is not a whole pull, so shares and source shrink do not apply to it).
pub fn deactivation_count(g: &Safeguards, deactivations: u64) -> Option<Breach> {
    let max = g.max_deactivations?;
    (deactivations > max).then(|| Breach {
        kind: BreachKind::Deactivations,
        message: format!(
            "{deactivations} deactivation(s), over safeguards.max_deactivations ({max})"
        ),
    })
}

/// Check `changes` (for a pull of `pulled_users` distinct users) against the thresholds.
pub fn check(
    g: &Safeguards,
    changes: &Changes,
    state: &JobState,
    pulled_users: u64,
) -> Vec<Breach> {
    let mut out = Vec::new();
    let deact = changes.counted_deactivations();
    let known = state.known_active;
    let pct = |n: u64, of: u64| n as f64 * 100.0 / of as f64;
    out.extend(deactivation_count(g, deact));
    if let Some(max) = g.max_deactivations_percent
        && known > 0
        && pct(deact, known) > max
    {
        out.push(Breach {
            kind: BreachKind::Deactivations,
            message: format!(
                "{deact} deactivation(s) of {known} active user(s) ({:.1}%), over safeguards.max_deactivations_percent ({max}%)",
                pct(deact, known)
            ),
        });
    }
    out.extend(group_breaches(g, changes));
    let baseline = state.last_pull_users;
    if baseline.is_some() {
        let creates = changes.creates;
        if let Some(max) = g.max_creations
            && creates > max
        {
            out.push(Breach {
                kind: BreachKind::Creations,
                message: format!("{creates} creation(s), over safeguards.max_creations ({max})"),
            });
        }
        if let Some(max) = g.max_creations_percent
            && known > 0
            && pct(creates, known) > max
        {
            out.push(Breach {
                kind: BreachKind::Creations,
                message: format!(
                    "{creates} creation(s) for {known} active user(s) ({:.1}%), over safeguards.max_creations_percent ({max}%)",
                    pct(creates, known)
                ),
            });
        }
    }
    if let (Some(min), Some(last)) = (g.min_source_percent, baseline)
        && last > 0
        && pct(pulled_users, last) < min
    {
        out.push(Breach {
            kind: BreachKind::SourceShrink,
            message: format!(
                "the source returned {pulled_users} user(s), {:.1}% of the last complete pull ({last}), under safeguards.min_source_percent ({min}%)",
                pct(pulled_users, last)
            ),
        });
    }
    out
}

/// The membership-removal and group-deletion thresholds (count and share).
fn group_breaches(g: &Safeguards, changes: &Changes) -> Vec<Breach> {
    let pct = |n: u64, of: u64| n as f64 * 100.0 / of as f64;
    let mut out = Vec::new();
    let checks = [
        (
            BreachKind::MembershipRemovals,
            "membership removal(s)",
            "membership(s) this job gave",
            changes.membership_removals,
            changes.memberships_known,
            ("max_membership_removals", g.max_membership_removals),
            ("max_membership_removals_percent", g.max_membership_removals_percent),
        ),
        (
            BreachKind::GroupDeletions,
            "group deletion(s)",
            "group(s) this job created",
            changes.group_deletions,
            changes.groups_owned,
            ("max_group_deletions", g.max_group_deletions),
            ("max_group_deletions_percent", g.max_group_deletions_percent),
        ),
    ];
    for (kind, what, of_what, n, base, (count_key, count), (pct_key, share)) in checks {
        if let Some(max) = count
            && n > max
        {
            out.push(Breach {
                kind,
                message: format!("{n} {what}, over safeguards.{count_key} ({max})"),
            });
        }
        if let Some(max) = share
            && base > 0
            && pct(n, base) > max
        {
            out.push(Breach {
                kind,
                message: format!(
                    "{n} {what} of {base} {of_what} ({:.1}%), over safeguards.{pct_key} ({max}%)",
                    pct(n, base)
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(known: u64, last: Option<u64>) -> JobState {
        JobState { known_active: known, last_pull_users: last, ..JobState::default() }
    }

    #[test]
    fn defaults_hold_a_truncated_source_but_not_a_normal_day() {
        let g = Safeguards::default();
        let day = Changes {
            updates: 160,
            deactivations: 20,
            leavers_missing: 10,
            creates: 5,
            ..Changes::default()
        };
        assert!(check(&g, &day, &state(20_000, Some(20_000)), 19_995).is_empty());
        let truncated = Changes { leavers_missing: 18_000, ..Changes::default() };
        let kinds: Vec<BreachKind> = check(&g, &truncated, &state(20_000, Some(20_000)), 2_000)
            .iter()
            .map(|b| b.kind)
            .collect();
        assert!(kinds.contains(&BreachKind::Deactivations));
        assert!(kinds.contains(&BreachKind::SourceShrink));
    }

    #[test]
    fn a_first_run_creates_everyone_and_unowned_deactivations_do_not_count() {
        let g = Safeguards::default();
        let first = Changes { creates: 25_000, deactivations_unowned: 2_500, ..Changes::default() };
        assert!(check(&g, &first, &state(0, None), 27_500).is_empty());
        // Once there is a baseline, a creation spike holds.
        let spike = Changes { creates: 5_000, ..Changes::default() };
        let b = check(&g, &spike, &state(10_000, Some(10_000)), 15_000);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].kind, BreachKind::Creations);
    }

    #[test]
    fn the_absolute_count_holds_even_when_the_share_is_small() {
        let g = Safeguards::default();
        let c = Changes { leavers_missing: 501, ..Changes::default() };
        let b = check(&g, &c, &state(100_000, Some(100_000)), 99_499);
        assert_eq!(b.iter().map(|b| b.kind).collect::<Vec<_>>(), vec![BreachKind::Deactivations]);
        let off = Safeguards { max_deactivations: None, ..g };
        assert!(check(&off, &c, &state(100_000, Some(100_000)), 99_499).is_empty());
    }
}
