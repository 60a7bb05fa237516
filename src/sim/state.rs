//! The emulator's state and the session rules (FACTS §4, §5, §6).
//!
//! [`Sim`] is a cheap-clone handle on one shared, mutex-guarded [`State`]. Every API operation
//! is a short synchronous critical section (never held across `.await`), which makes the
//! rules easy to read: look at the state, decide, mutate. Time-based transitions (24-hour
//! expiry) are evaluated lazily at the start of each critical section, against the simulated
//! clock. Processing of TRIGGERED sessions is the only background work: one worker task
//! picks, per identity source, the earliest-triggered session and completes it after
//! `processing_delay`, so sessions of a source are processed one at a time, in trigger order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::SimConfig;
use super::apply::{apply, named_twice};
use super::clock::{SimClock, okta_time, to_delta};
use super::errors::ApiError;
pub(super) use super::errors::random_id;
use super::validate::{LoadData, LoadKind, Parsed};
use crate::okta::model::{Session, SessionStatus};

/// Everything the emulator knows, as returned by `GET /__sim/state`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SimSnapshot {
    pub users: Vec<SimUser>,
    pub sessions: Vec<SimSessionView>,
    pub violations: Vec<Violation>,
    pub requests_total: u64,
    pub rate_limited_total: u64,
    /// Groups and their members (stored simply; not part of the original contract, so
    /// defaulted when absent).
    #[serde(default)]
    pub groups: Vec<SimGroup>,
    /// Faults injected so far (see [`super::faults`]).
    #[serde(default)]
    pub faults_injected: u64,
    /// Access tokens issued by `POST /oauth2/v1/token`.
    #[serde(default)]
    pub tokens_issued: u64,
    /// Membership deletes skipped at import: the group, the user, or the membership was not
    /// there ([INF] Okta ignores unknown ids in deletes, FACTS §5).
    #[serde(default)]
    pub memberships_skipped: u64,
    /// Group deletes of groups the identity source does not have, skipped.
    #[serde(default)]
    pub groups_skipped: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SimUser {
    pub identity_source_id: String,
    pub external_id: String,
    /// `0ua…`
    pub id: String,
    /// `ACTIVE` or `DEACTIVATED`.
    pub status: String,
    pub profile: BTreeMap<String, String>,
    pub created: String,
    pub last_updated: String,
    /// How many completed sessions upserted or deleted this user (tests of exactly-once
    /// delivery read it).
    #[serde(default)]
    pub imports: u32,
    /// How many times an import turned this user from active to deactivated (tests of "no
    /// user deactivated wrongly" read it).
    #[serde(default)]
    pub deactivations: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SimSessionView {
    pub id: String,
    pub identity_source_id: String,
    pub status: SessionStatus,
    pub created: String,
    pub triggered: Option<String>,
    pub loads: Vec<LoadView>,
    /// Distinct user external ids loaded (upserted or deleted) in this session.
    pub distinct_users: usize,
    /// Created by a create request an injected fault held on its way ([`Violation::held`]):
    /// the client had given up on it, so the session is the network's doing, not its own.
    #[serde(default)]
    pub created_by_held_request: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LoadView {
    /// `upsert` | `delete` for users; `groups-upsert`, `groups-delete`,
    /// `group-memberships-upsert`, `group-memberships-delete` for the group endpoints.
    pub kind: String,
    pub profiles: usize,
    pub bytes: usize,
}

/// A client behaviour Okta rejects or warns about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Stable snake_case id, e.g. `session_spacing`, `max_profiles_per_request`.
    pub rule: String,
    pub message: String,
    pub method: String,
    pub path: String,
    pub session_id: Option<String>,
    /// The request was held on its way by an injected fault (a delay before processing), so it
    /// was judged later than its client sent it: the state it met may not be the one the
    /// client saw. Tests may put such violations down to the fault.
    #[serde(default)]
    pub held: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SimGroup {
    pub identity_source_id: String,
    pub external_id: String,
    /// `00g…`
    pub id: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub members: Vec<String>,
}

/// Who is asking: recorded with every violation.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub method: String,
    pub path: String,
    pub session_id: Option<String>,
}

/// Cheap-clone handle on the emulator's shared state.
#[derive(Clone, Debug)]
pub struct Sim {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    pub clock: SimClock,
    state: Mutex<State>,
    /// Wakes the processing worker (a session was triggered or finished).
    wake: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    pub rate: Mutex<RateWindow>,
    pub in_flight: AtomicU32,
    /// Requests held by an injected fault (a delay before processing may still apply them).
    pub faulted_in_flight: AtomicU32,
    pub oauth: Mutex<super::oauth::OAuthState>,
    pub faults: Mutex<super::faults::FaultState>,
    /// `false`: the org lacks the direct endpoints ([`super::direct`]).
    pub direct_endpoints: std::sync::atomic::AtomicBool,
}

/// Fixed 60-second real-time rate-limit window (FACTS §7).
#[derive(Debug)]
pub(crate) struct RateWindow {
    pub started: Instant,
    /// UTC epoch seconds at which the window ends.
    pub reset_epoch: u64,
    pub count: u32,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// In creation order.
    pub(super) sessions: Vec<SessionRec>,
    pub(super) users: BTreeMap<(String, String), UserRec>,
    pub(super) groups: BTreeMap<(String, String), GroupRec>,
    pub(super) violations: Vec<Violation>,
    pub(super) requests_total: u64,
    pub(super) rate_limited_total: u64,
    pub(super) memberships_skipped: u64,
    pub(super) groups_skipped: u64,
    /// Identity sources whose next processed session ends in ERROR.
    pub(super) fail_next: HashSet<String>,
    /// Identity sources with a session being processed right now.
    pub(super) busy: HashSet<String>,
    pub(super) trigger_seq: u64,
    /// Bumped by reset, so processing started before a reset cannot touch the new state.
    pub(super) generation: u64,
}

#[derive(Debug)]
pub(super) struct SessionRec {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) status: SessionStatus,
    pub(super) created: DateTime<Utc>,
    pub(super) last_updated: DateTime<Utc>,
    /// The wall-clock times the API reports as `created` and `lastUpdated`: Okta's clock is
    /// the real one, so a client may compare them with its own (which sessions it created:
    /// `crate::okta::ledger`). The rules (spacing, expiry) use the scaled times above.
    pub(super) created_wall: DateTime<Utc>,
    pub(super) updated_wall: DateTime<Utc>,
    /// Last API request naming this session: the 24-hour inactivity clock.
    pub(super) last_activity: DateTime<Utc>,
    pub(super) triggered: Option<DateTime<Utc>>,
    pub(super) trigger_seq: u64,
    loads: Vec<LoadRec>,
    pub(super) user_ids: HashSet<String>,
    /// Groups named by group loads, and (group, member) pairs named by membership loads: a
    /// second mention in one session is a violation (the order Okta applies them in is
    /// undocumented, FACTS §5).
    pub(super) group_ids: HashSet<String>,
    pub(super) memberships: HashSet<(String, String)>,
    pub(super) created_by_held_request: bool,
}

#[derive(Debug)]
struct LoadRec {
    view: LoadView,
    /// Dropped once the session is processed or cancelled (Okta discards cancelled data).
    data: Option<LoadData>,
}

#[derive(Debug, Clone)]
pub(super) struct UserRec {
    pub(super) id: String,
    pub(super) active: bool,
    pub(super) profile: BTreeMap<String, String>,
    pub(super) created: DateTime<Utc>,
    pub(super) last_updated: DateTime<Utc>,
    pub(super) imports: u32,
    pub(super) deactivations: u32,
}

#[derive(Debug, Clone)]
pub(super) struct GroupRec {
    pub(super) id: String,
    pub(super) display_name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) members: BTreeSet<String>,
}

impl SessionRec {
    fn wire(&self) -> Session {
        Session {
            id: self.id.clone(),
            identity_source_id: self.source.clone(),
            status: self.status,
            import_type: Some("INCREMENTAL".into()),
            created: Some(okta_time(self.created_wall)),
            last_updated: Some(okta_time(self.updated_wall)),
        }
    }

    fn set_status(&mut self, status: SessionStatus, now: DateTime<Utc>) {
        self.status = status;
        self.last_updated = now;
        self.updated_wall = Utc::now();
        if !matches!(
            status,
            SessionStatus::Created | SessionStatus::InProgress | SessionStatus::Triggered
        ) {
            // Final: loaded data is either applied or discarded; keep only the views.
            for load in &mut self.loads {
                load.data = None;
            }
        }
    }
}

impl Sim {
    /// Build the emulator state and start its processing worker.
    ///
    /// Must be called inside a tokio runtime (the worker is a spawned task). The worker holds
    /// only a weak reference and stops when the last `Sim` clone is dropped or on shutdown.
    pub fn new(config: SimConfig) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let clock = SimClock::new(config.clock_scale);
        let shared = Arc::new(Shared {
            clock,
            state: Mutex::new(State::default()),
            wake: wake.clone(),
            shutdown,
            rate: Mutex::new(RateWindow {
                started: Instant::now(),
                reset_epoch: reset_epoch(config.rate_limit_window),
                count: 0,
            }),
            in_flight: AtomicU32::new(0),
            faulted_in_flight: AtomicU32::new(0),
            oauth: Mutex::new(super::oauth::OAuthState::default()),
            faults: Mutex::new(super::faults::FaultState::new(config.faults.clone())),
            direct_endpoints: std::sync::atomic::AtomicBool::new(true),
            config,
        });
        tokio::spawn(run_worker(Arc::downgrade(&shared), wake, shutdown_rx));
        Self { shared }
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that
        // matters for an emulator; keep serving rather than poisoning every later request.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Answer the direct user endpoints as an org with the feature (`true`, the default) or
    /// without it (every call 401 E0000015).
    pub fn set_direct_endpoints(&self, on: bool) {
        self.shared.direct_endpoints.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn direct_endpoints(&self) -> bool {
        self.shared.direct_endpoints.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop the processing worker.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
    }

    // ----- introspection --------------------------------------------------------------------

    /// Replace the fault plan; its counters start again at zero.
    pub fn set_faults(&self, plan: super::faults::FaultPlan) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) =
            super::faults::FaultState::new(plan);
    }

    pub fn snapshot(&self) -> SimSnapshot {
        let faults_injected = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).injected;
        let tokens_issued =
            self.shared.oauth.lock().unwrap_or_else(|e| e.into_inner()).issued_total;
        let now = self.now();
        let expiry = self.shared.config.limits.session_expiry;
        let mut st = self.state();
        expire_stale(&mut st, now, expiry);
        SimSnapshot {
            users: st
                .users
                .iter()
                .map(|((source, ext), u)| SimUser {
                    identity_source_id: source.clone(),
                    external_id: ext.clone(),
                    id: u.id.clone(),
                    status: if u.active { "ACTIVE" } else { "DEACTIVATED" }.into(),
                    profile: u.profile.clone(),
                    created: okta_time(u.created),
                    last_updated: okta_time(u.last_updated),
                    imports: u.imports,
                    deactivations: u.deactivations,
                })
                .collect(),
            sessions: st
                .sessions
                .iter()
                .map(|s| SimSessionView {
                    id: s.id.clone(),
                    identity_source_id: s.source.clone(),
                    status: s.status,
                    created: okta_time(s.created),
                    triggered: s.triggered.map(okta_time),
                    loads: s.loads.iter().map(|l| l.view.clone()).collect(),
                    distinct_users: s.user_ids.len(),
                    created_by_held_request: s.created_by_held_request,
                })
                .collect(),
            violations: st.violations.clone(),
            requests_total: st.requests_total,
            rate_limited_total: st.rate_limited_total,
            groups: st
                .groups
                .iter()
                .map(|((source, ext), g)| SimGroup {
                    identity_source_id: source.clone(),
                    external_id: ext.clone(),
                    id: g.id.clone(),
                    display_name: g.display_name.clone(),
                    description: g.description.clone(),
                    members: g.members.iter().cloned().collect(),
                })
                .collect(),
            faults_injected,
            tokens_issued,
            memberships_skipped: st.memberships_skipped,
            groups_skipped: st.groups_skipped,
        }
    }

    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Create or overwrite a user directly (no session, no rules).
    pub fn seed_user(
        &self,
        source_id: &str,
        external_id: &str,
        profile: BTreeMap<String, String>,
        active: bool,
    ) {
        let now = self.now();
        let mut st = self.state();
        let key = (source_id.to_string(), external_id.to_string());
        let user = st.users.entry(key).or_insert_with(|| UserRec {
            id: random_id("0ua", 17),
            active,
            profile: BTreeMap::new(),
            created: now,
            last_updated: now,
            imports: 0,
            deactivations: 0,
        });
        user.active = active;
        user.profile = profile;
        user.last_updated = now;
    }

    /// Create or overwrite a group and its members directly (no session, no rules): what an
    /// admin or another tool made.
    pub fn seed_group(
        &self,
        source_id: &str,
        external_id: &str,
        display_name: &str,
        members: &[String],
    ) {
        let mut st = self.state();
        let key = (source_id.to_string(), external_id.to_string());
        let group = st.groups.entry(key).or_insert_with(|| GroupRec {
            id: random_id("00g", 17),
            display_name: None,
            description: None,
            members: BTreeSet::new(),
        });
        group.display_name = Some(display_name.to_string());
        group.members.extend(members.iter().cloned());
    }

    /// Put a session in any state, bypassing every rule. A TRIGGERED one is queued for
    /// processing like any other.
    pub fn inject_session(&self, source_id: &str, status: SessionStatus) -> String {
        let now = self.now();
        let id = random_id("aps", 17);
        let mut st = self.state();
        st.trigger_seq += 1;
        let seq = st.trigger_seq;
        let triggered = status == SessionStatus::Triggered;
        st.sessions.push(SessionRec {
            id: id.clone(),
            source: source_id.to_string(),
            status,
            created: now,
            last_updated: now,
            created_wall: Utc::now(),
            updated_wall: Utc::now(),
            last_activity: now,
            triggered: triggered.then_some(now),
            trigger_seq: seq,
            loads: Vec::new(),
            user_ids: HashSet::new(),
            group_ids: HashSet::new(),
            memberships: HashSet::new(),
            created_by_held_request: false,
        });
        drop(st);
        if triggered {
            self.shared.wake.notify_one();
        }
        id
    }

    pub fn fail_next_session(&self, source_id: &str) {
        self.state().fail_next.insert(source_id.to_string());
    }

    /// Forget all users, groups, sessions, violations and counters (config and clock stay).
    pub fn reset(&self) {
        let mut st = self.state();
        let generation = st.generation + 1;
        *st = State { generation, ..State::default() };
    }

    // ----- bookkeeping used by the HTTP layer ------------------------------------------------

    pub(crate) fn count_request(&self) {
        self.state().requests_total += 1;
    }

    pub(crate) fn count_rate_limited(&self) {
        self.state().rate_limited_total += 1;
    }

    pub(crate) fn record(&self, ctx: &Ctx, violations: &[(&'static str, String)]) {
        if violations.is_empty() {
            return;
        }
        let mut st = self.state();
        for (rule, message) in violations {
            st.violations.push(Violation {
                rule: (*rule).into(),
                message: message.clone(),
                method: ctx.method.clone(),
                path: ctx.path.clone(),
                session_id: ctx.session_id.clone(),
                held: super::faults::held(),
            });
        }
    }

    pub(crate) fn check_source(&self, source: &str) -> Result<(), ApiError> {
        if self.shared.config.identity_sources.iter().any(|s| s == source) {
            Ok(())
        } else {
            Err(ApiError::not_found("unknown_identity_source", source, "AppInstance"))
        }
    }

    // ----- the API operations ----------------------------------------------------------------

    /// `GET sessions`: active sessions only (FACTS §4b, §11).
    pub(crate) fn list_sessions(&self, source: &str) -> Result<Vec<Session>, ApiError> {
        self.check_source(source)?;
        let now = self.now();
        let mut st = self.state();
        expire_stale(&mut st, now, self.shared.config.limits.session_expiry);
        Ok(st
            .sessions
            .iter()
            .filter(|s| s.source == source && s.status.is_active())
            .map(SessionRec::wire)
            .collect())
    }

    /// `POST sessions`, with the one-open-session and 5-minute rules.
    pub(crate) fn create_session(&self, source: &str) -> Result<Session, ApiError> {
        self.check_source(source)?;
        let now = self.now();
        let limits = &self.shared.config.limits;
        let spacing = to_delta(limits.session_spacing);
        let mut st = self.state();
        expire_stale(&mut st, now, limits.session_expiry);
        let blocker = st.sessions.iter().filter(|s| s.source == source).find_map(|s| {
            if s.status.is_open() {
                return Some(format!("session {} is still {}", s.id, s.status));
            }
            // A cancelled session never blocks: Okta's Terraform provider cancels failed
            // sessions precisely so a corrected re-apply is not blocked (FACTS §4b).
            if s.status == SessionStatus::Closed {
                return None;
            }
            let recent = |t: DateTime<Utc>| now.signed_duration_since(t) < spacing;
            if recent(s.created) {
                return Some(format!("session {} was created at {}", s.id, okta_time(s.created)));
            }
            match s.triggered {
                Some(t) if recent(t) => {
                    Some(format!("session {} was triggered at {}", s.id, okta_time(t)))
                }
                _ => None,
            }
        });
        if let Some(reason) = blocker {
            let mut err = ApiError::validation(
                "session_spacing",
                "identitySourceId",
                "Only one active import session per identity source is allowed to be created every 5 minutes",
            );
            err.violations = vec![("session_spacing", format!("new session refused: {reason}"))];
            return Err(err);
        }
        let rec = SessionRec {
            id: random_id("aps", 17),
            source: source.to_string(),
            status: SessionStatus::Created,
            created: now,
            last_updated: now,
            created_wall: Utc::now(),
            updated_wall: Utc::now(),
            last_activity: now,
            triggered: None,
            trigger_seq: 0,
            loads: Vec::new(),
            user_ids: HashSet::new(),
            group_ids: HashSet::new(),
            memberships: HashSet::new(),
            created_by_held_request: super::faults::held(),
        };
        let wire = rec.wire();
        st.sessions.push(rec);
        Ok(wire)
    }

    /// Find a session of `source`, expire it if stale, and count this request as activity.
    fn session_mut<'a>(
        &self,
        st: &'a mut State,
        source: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<&'a mut SessionRec, ApiError> {
        expire_stale(st, now, self.shared.config.limits.session_expiry);
        let session =
            st.sessions.iter_mut().find(|s| s.id == id && s.source == source).ok_or_else(|| {
                ApiError::not_found("unknown_session", id, "IdentitySourceSession")
            })?;
        // Inactivity = "no API requests in 24 hours" (S2); any request naming the session counts.
        session.last_activity = now;
        Ok(session)
    }

    pub(crate) fn get_session(&self, source: &str, id: &str) -> Result<Session, ApiError> {
        self.check_source(source)?;
        let now = self.now();
        let mut st = self.state();
        Ok(self.session_mut(&mut st, source, id, now)?.wire())
    }

    /// `DELETE sessions/{id}`: cancel, only from CREATED/IN_PROGRESS (recorded body, FACTS §9).
    pub(crate) fn cancel_session(&self, source: &str, id: &str) -> Result<(), ApiError> {
        self.check_source(source)?;
        let now = self.now();
        let mut st = self.state();
        let session = self.session_mut(&mut st, source, id, now)?;
        if !session.status.is_open() {
            let mut err = ApiError::validation(
                "cancel_not_open_session",
                "importSessionId",
                "Only a session that is in CREATED or IN_PROGRESS status can be canceled.",
            );
            err.violations[0].1 = format!("cancel of a {} session", session.status);
            return Err(err);
        }
        session.set_status(SessionStatus::Closed, now);
        Ok(())
    }

    /// Session checks that come before reading a load's body.
    pub(crate) fn check_loadable(&self, source: &str, id: &str) -> Result<(), ApiError> {
        self.check_source(source)?;
        let now = self.now();
        let mut st = self.state();
        let session = self.session_mut(&mut st, source, id, now)?;
        ensure_open_for_load(session)
    }

    /// Accept a validated load into a session, enforcing the per-session limits.
    pub(crate) fn accept_load(
        &self,
        ctx: &Ctx,
        source: &str,
        id: &str,
        kind: LoadKind,
        parsed: Parsed,
        bytes: usize,
    ) -> Result<(), ApiError> {
        let now = self.now();
        let limits = &self.shared.config.limits;
        let mut st = self.state();
        // Look up users before borrowing the session mutably.
        let ids = parsed.data.user_ids();
        let any_known_user =
            ids.iter().any(|ext| st.users.contains_key(&(source.to_string(), (*ext).to_string())));
        let session = self.session_mut(&mut st, source, id, now)?;
        // Re-check: the state may have changed while the body was being read.
        ensure_open_for_load(session)?;
        if session.loads.len() >= limits.max_requests_per_session {
            return Err(ApiError::validation(
                "max_requests_per_session",
                "importSessionId",
                format!(
                    "The maximum number of bulk-load requests for a session is {}",
                    limits.max_requests_per_session
                ),
            ));
        }
        let mut seen_here = HashSet::new();
        let mut duplicates = BTreeSet::new();
        for ext in &ids {
            if !seen_here.insert(*ext) || session.user_ids.contains(*ext) {
                duplicates.insert(*ext);
            }
        }
        let new_users = seen_here.iter().filter(|e| !session.user_ids.contains(**e)).count();
        if session.user_ids.len() + new_users > limits.max_users_per_session {
            return Err(ApiError::validation(
                "max_users_per_session",
                "profiles",
                format!(
                    "A session can import at most {} users ({} already loaded, {new_users} new in this request)",
                    limits.max_users_per_session,
                    session.user_ids.len()
                ),
            ));
        }
        let mut warnings = parsed.warnings;
        if !duplicates.is_empty() {
            let sample: Vec<&str> = duplicates.iter().take(5).copied().collect();
            warnings.push((
                "duplicate_external_id_in_session",
                format!(
                    "{} externalId(s) sent more than once in this session, e.g. {}",
                    duplicates.len(),
                    sample.join(", ")
                ),
            ));
        }
        session.user_ids.extend(ids.iter().map(|e| (*e).to_string()));
        warnings.extend(named_twice(session, &parsed.data));
        // FACTS §4b: a delete-only load of unknown ids leaves the session CREATED.
        let moves = kind != LoadKind::DeleteUsers || any_known_user;
        if moves && session.status == SessionStatus::Created {
            session.status = SessionStatus::InProgress;
        }
        session.last_updated = now;
        let profiles = parsed.data.len();
        session.loads.push(LoadRec {
            view: LoadView { kind: kind.as_str().into(), profiles, bytes },
            data: Some(parsed.data),
        });
        drop(st);
        self.record(ctx, &warnings);
        Ok(())
    }

    /// `POST start-import`: only from IN_PROGRESS.
    pub(crate) fn trigger(&self, source: &str, id: &str) -> Result<Session, ApiError> {
        self.check_source(source)?;
        let now = self.now();
        let mut st = self.state();
        st.trigger_seq += 1;
        let seq = st.trigger_seq;
        let session = self.session_mut(&mut st, source, id, now)?;
        match session.status {
            SessionStatus::InProgress => {}
            SessionStatus::Created => {
                let mut err = ApiError::validation(
                    "trigger_created_session",
                    "importSessionId",
                    "Only a session that is in IN_PROGRESS status can be triggered. Load data into the session first.",
                );
                err.violations[0].1 = "start-import on a CREATED session (no data was loaded, or only deletes of unknown users)".into();
                return Err(err);
            }
            other => {
                let mut err = ApiError::validation(
                    "trigger_not_in_progress",
                    "importSessionId",
                    "Only a session that is in IN_PROGRESS status can be triggered.",
                );
                err.violations[0].1 = format!("start-import on a {other} session");
                return Err(err);
            }
        }
        session.set_status(SessionStatus::Triggered, now);
        session.triggered = Some(now);
        session.trigger_seq = seq;
        let wire = session.wire();
        drop(st);
        self.shared.wake.notify_one();
        Ok(wire)
    }

    // ----- processing ------------------------------------------------------------------------

    /// Claim the next TRIGGERED session of every idle identity source.
    fn claim_jobs(&self) -> Vec<Job> {
        let mut st = self.state();
        let mut next: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for s in st
            .sessions
            .iter()
            .filter(|s| s.status == SessionStatus::Triggered && !st.busy.contains(&s.source))
        {
            let entry = next.entry(s.source.clone()).or_insert((s.trigger_seq, s.id.clone()));
            if s.trigger_seq < entry.0 {
                *entry = (s.trigger_seq, s.id.clone());
            }
        }
        let generation = st.generation;
        next.into_iter()
            .map(|(source, (_, session_id))| {
                st.busy.insert(source.clone());
                Job { source, session_id, generation }
            })
            .collect()
    }

    /// Apply a processed session's loads in order and mark it COMPLETED (or ERROR).
    fn finish(&self, job: &Job) {
        let now = self.now();
        let mut st = self.state();
        if st.generation != job.generation {
            return; // reset since the job started; its source is no longer busy in this state
        }
        st.busy.remove(&job.source);
        let failed = st.fail_next.remove(&job.source);
        let Some(idx) = st.sessions.iter().position(|s| s.id == job.session_id) else {
            return;
        };
        if st.sessions[idx].status != SessionStatus::Triggered {
            return;
        }
        if failed {
            st.sessions[idx].set_status(SessionStatus::Error, now);
            return;
        }
        let loads: Vec<LoadData> =
            st.sessions[idx].loads.iter_mut().filter_map(|l| l.data.take()).collect();
        for load in loads {
            apply(&mut st, &job.source, load, now);
        }
        st.sessions[idx].set_status(SessionStatus::Completed, now);
    }
}

fn ensure_open_for_load(session: &SessionRec) -> Result<(), ApiError> {
    if session.status.is_open() {
        return Ok(());
    }
    let mut err = ApiError::validation(
        "load_not_open_session",
        "importSessionId",
        "Bulk data can only be loaded into a session that is in CREATED or IN_PROGRESS status.",
    );
    err.violations[0].1 = format!("bulk load into a {} session", session.status);
    Err(err)
}

/// CREATED/IN_PROGRESS sessions with no request for `expiry` become EXPIRED.
fn expire_stale(st: &mut State, now: DateTime<Utc>, expiry: Duration) {
    let expiry = to_delta(expiry);
    for s in st.sessions.iter_mut().filter(|s| s.status.is_open()) {
        if now.signed_duration_since(s.last_activity) >= expiry {
            // Okta would stamp the moment it expired; that is the end of the inactivity window.
            let at = s.last_activity.checked_add_signed(expiry).unwrap_or(now);
            s.set_status(SessionStatus::Expired, at);
        }
    }
}

#[derive(Debug)]
struct Job {
    source: String,
    session_id: String,
    generation: u64,
}

/// Background processing: sequential per identity source, in trigger order.
async fn run_worker(weak: Weak<Shared>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let sim = Sim { shared };
        let delay = sim.shared.config.processing_delay;
        for job in sim.claim_jobs() {
            let weak = Arc::downgrade(&sim.shared);
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                if let Some(shared) = weak.upgrade() {
                    let sim = Sim { shared };
                    sim.finish(&job);
                    sim.shared.wake.notify_one();
                }
            });
        }
        drop(sim);
        tokio::select! {
            _ = wake.notified() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// The epoch second at which a window starting now ends, rounded *up*: a client waiting
/// until the advertised reset must never come back before the window really restarts.
pub(crate) fn reset_epoch(window: Duration) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now + window).as_secs_f64().ceil() as u64
}

pub(crate) fn epoch_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
