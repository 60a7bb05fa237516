//! The import-session lifecycle (FACTS §4, §8).
//!
//! An [`Importer`] drives the sessions of one identity source:
//!
//! 1. [`Importer::prepare`], once per run: sessions of ours left `CREATED`/`IN_PROGRESS` by an
//!    earlier, interrupted run are cancelled; `TRIGGERED` ones are followed to the end,
//!    because Okta processes one session at a time anyway; another client's open session is
//!    waited for, never touched ([`prepare`], [`crate::okta::ledger`]).
//! 2. [`Importer::run`], per planned session: wait for Okta's 5-minute spacing, create, upload
//!    the packer's bodies in order, then trigger and follow the session to `COMPLETED`/`ERROR`.
//!    A session that stayed `CREATED` after the uploads (a delete-only load of unknown users,
//!    FACTS §4b) cannot be triggered and is cancelled instead. Whatever fails after creation,
//!    the session is cancelled before returning: an open session would block the next one.
//!
//! Time is plain tokio time with the durations of [`SessionOptions`]; tests shrink them to
//! milliseconds rather than pausing the clock, because real HTTP servers are involved.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use super::spacing::SpacingClock;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::{RequestKind, SessionKind, SessionPlan};
use super::client::OktaClient;
use super::error::OktaError;
use super::ledger::SessionLedger;
use super::model::SessionStatus;

mod prepare;

/// Lifecycle settings.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Minimum time between two session creations for one identity source (Okta: 5 minutes).
    pub spacing: Duration,
    /// First poll interval while following a triggered session.
    pub poll_initial: Duration,
    /// Longest poll interval (the backoff's ceiling).
    pub poll_max: Duration,
    /// Give up following one session after this long.
    pub session_timeout: Duration,
    /// How many times a session is cancelled and replayed in a fresh one after an ambiguous
    /// failure (a bulk load that timed out, lost its connection or got a 5xx).
    pub max_replays: u32,
    /// How long a run waits for another client's open session on its identity source to end
    /// before it fails naming it.
    pub foreign_session_wait: Duration,
}

/// First poll of a triggered session. Okta processes a session in seconds to minutes; polls
/// then back off by [`POLL_GROWTH`] up to `poll_max`, so a short first interval costs a few
/// calls (14 over a 3-minute import, against 13 from 1 s) and finds a quick import done
/// half a second after it finished.
pub const DEFAULT_POLL_INITIAL: Duration = Duration::from_millis(500);

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            spacing: Duration::from_secs(300),
            poll_initial: DEFAULT_POLL_INITIAL,
            poll_max: Duration::from_secs(30),
            session_timeout: Duration::from_secs(3 * 3600),
            max_replays: 2,
            foreign_session_wait: Duration::from_secs(600),
        }
    }
}

/// How many times a creation refused by the 5-minute rule is retried (each after `spacing`).
const MAX_SPACING_RETRIES: u32 = 3;
/// Poll interval growth per poll.
const POLL_GROWTH: f64 = 1.5;

/// What happened to a session found open at the start of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaleSession {
    pub id: String,
    /// The status it was found in.
    pub found: SessionStatus,
    /// What we did: `cancelled` or `waited`.
    pub action: String,
    /// Its status afterwards.
    pub final_status: SessionStatus,
}

/// The outcome of one planned session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Okta's session id, once created.
    pub id: Option<String>,
    pub kind: SessionKind,
    /// Bulk requests Okta accepted.
    pub requests: usize,
    /// Profiles in the accepted requests.
    pub profiles: usize,
    /// The last status seen (`COMPLETED`, `ERROR`, `CLOSED` when cancelled...).
    pub final_status: Option<SessionStatus>,
    /// Why the session did not complete, if it did not.
    pub error: Option<String>,
    /// Something worth knowing that is not an error (e.g. a session cancelled because Okta
    /// kept it in CREATED: nothing to import).
    pub note: Option<String>,
    /// Time spent waiting for Okta's 5-minute rule before creating it.
    pub spacing_wait_ms: u64,
    /// Time from the first call for this session to its final status.
    pub duration_ms: u64,
    /// The session was cancelled instead of triggered because Okta kept it `CREATED` after
    /// the uploads: nothing in it to import. Not an error.
    pub cancelled_untriggerable: bool,
    /// How many times the session's records were replayed in a fresh session after an
    /// ambiguous failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replays: u32,
    /// The sessions cancelled before each replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replayed_session_ids: Vec<String>,
    /// Okta's own error fields (errorCode, errorSummary, errorCauses, errorId, request id)
    /// for the error that ended the session, when Okta answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub okta_error: Option<crate::okta::error::OktaErrorDetail>,
    /// The most bulk loads in flight at once during the upload (it follows the rate budget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_in_flight: u32,
}

/// What a finished [`SessionOutcome`] means for the users it carried: the one place that
/// decides whether their state may be confirmed, and whether sending again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// Okta has every user of the session as sent: confirm them.
    Applied,
    /// Ended without an error but without Okta's word either: confirm nothing, no failure.
    Unconfirmed,
    /// Failed; sending the same again may pass (network, 5xx, 429, shutdown).
    Retryable,
    /// Failed for a reason sending the same again cannot fix: Okta refused the content (a 4xx
    /// other than 429) or processed it into `ERROR`.
    Refused,
}

impl SessionOutcome {
    /// Classify this outcome (see [`SessionVerdict`]). `upserts` is the number of users the
    /// session upserted; `shutdown` whether the run was being cancelled.
    pub fn verdict(&self, upserts: usize, shutdown: bool) -> SessionVerdict {
        if self.final_status == Some(SessionStatus::Completed) {
            return SessionVerdict::Applied;
        }
        if self.error.is_none() {
            // Okta kept a delete-only session CREATED: every id in it was unknown to Okta,
            // which is what a deactivation asks for. Confirm them, or every run would resend.
            return if self.cancelled_untriggerable && upserts == 0 {
                SessionVerdict::Applied
            } else {
                SessionVerdict::Unconfirmed
            };
        }
        let refused = self
            .okta_error
            .as_ref()
            .and_then(|d| d.status)
            .is_some_and(|s| (400..500).contains(&s) && s != 429);
        if (refused || self.final_status == Some(SessionStatus::Error)) && !shutdown {
            SessionVerdict::Refused
        } else {
            SessionVerdict::Retryable
        }
    }

    /// Why the session did not complete, in words.
    pub fn failure(&self) -> String {
        self.error.clone().unwrap_or_else(|| {
            format!(
                "session ended {}",
                self.final_status.map(SessionStatus::as_str).unwrap_or("unknown")
            )
        })
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Drives import sessions for one identity source.
pub struct Importer {
    client: OktaClient,
    source_id: String,
    options: SessionOptions,
    /// When this importer last created or triggered a session: the 5-minute rule counts from
    /// there (FACTS §4b).
    last_activity: Option<Instant>,
    /// The client's shutdown signal: uploads stop and the open session is cancelled.
    cancel: CancellationToken,
    /// Called with each session's id right after it is created, before anything is uploaded
    /// (the daemon records it durably, to know after a crash whether the session completed).
    on_created: Option<OnCreated>,
    /// The identity source's shared clock, updated at each creation and trigger.
    clock: Option<SpacingClock>,
    /// Which sessions are ours; `None`: all of them (no state to tell).
    ledger: Option<SessionLedger>,
}

/// See [`Importer::on_created`]. An `Err` cancels the session (nothing is uploaded).
pub type OnCreated = Box<dyn FnMut(&str) -> Result<(), String> + Send + Sync>;

impl Importer {
    pub fn new(client: OktaClient, source_id: impl Into<String>, options: SessionOptions) -> Self {
        let cancel = client.cancellation().clone();
        Self {
            client,
            source_id: source_id.into(),
            options,
            last_activity: None,
            cancel,
            on_created: None,
            clock: None,
            ledger: None,
        }
    }

    /// Share `clock` with other importers of this identity source (a daemon's runs and
    /// pushed batches): its last activity is where this importer's spacing starts, and every
    /// creation or trigger updates it at once (not at the end of the run).
    pub fn with_spacing_clock(mut self, clock: SpacingClock) -> Self {
        self.last_activity = clock.get();
        if let Some(ledger) = clock.ledger() {
            self.ledger = Some(ledger);
        }
        self.clock = Some(clock);
        self
    }

    /// Tell our sessions from other clients' with `ledger` (recording each create in it).
    pub fn with_ledger(mut self, ledger: SessionLedger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// A session was created or triggered now.
    fn touch(&mut self) {
        self.last_activity = Some(Instant::now());
        if let Some(c) = &self.clock {
            c.touch();
        }
    }

    /// A create or trigger is about to go out: see [`SpacingClock::pending`]. Its answer, or
    /// its failure, calls [`Importer::touch`]: a request that failed ambiguously may have been
    /// applied, and one that certainly was not costs at most one spacing wait.
    fn pending(&mut self) {
        let within = self.client.options().request_timeout;
        self.last_activity = Some(Instant::now() + within);
        if let Some(c) = &self.clock {
            c.pending(within);
        }
    }

    /// Call `f` with each session's id once it is created, before the uploads (`None`: stop).
    pub fn set_on_created(&mut self, f: Option<OnCreated>) {
        self.on_created = f;
    }

    /// When this importer last created or triggered a session, if it did.
    pub fn last_session_activity(&self) -> Option<Instant> {
        self.last_activity
    }

    /// Carry the spacing clock over from an earlier importer of the same identity source (a
    /// daemon building one importer per run). Without it, the first creation of a run that
    /// follows closely on the previous one is refused by Okta once, then waited out.
    pub fn with_last_session_activity(mut self, at: Option<Instant>) -> Self {
        self.last_activity = at;
        self
    }

    /// Create, load, trigger (or cancel) and follow one session.
    pub async fn run(&mut self, plan: &SessionPlan) -> SessionOutcome {
        self.run_with(plan, PlanHints::default()).await
    }

    /// [`Importer::run`], with what the caller knows about the plan's users.
    pub async fn run_with(&mut self, plan: &SessionPlan, hints: PlanHints) -> SessionOutcome {
        let span = tracing::info_span!(
            "okta_session",
            source_id = %self.source_id,
            kind = %plan.kind,
            session_id = tracing::field::Empty,
        );
        let mut outcome = SessionOutcome {
            id: None,
            kind: plan.kind,
            requests: 0,
            profiles: 0,
            final_status: None,
            error: None,
            spacing_wait_ms: 0,
            duration_ms: 0,
            cancelled_untriggerable: false,
            note: None,
            replays: 0,
            replayed_session_ids: Vec::new(),
            okta_error: None,
            max_in_flight: 0,
        };
        if plan.requests.is_empty() {
            // A session without loads would stay CREATED and cost a 5-minute slot for nothing.
            outcome.note = Some("nothing to send: no session created".into());
            return outcome;
        }
        let started = Instant::now();
        self.run_inner(plan, hints, &mut outcome).instrument(span.clone()).await;
        let total = millis(started.elapsed());
        outcome.duration_ms = total.saturating_sub(outcome.spacing_wait_ms);
        span.in_scope(|| match &outcome.error {
            None => tracing::info!(
                status = outcome.final_status.map(SessionStatus::as_str).unwrap_or(""),
                requests = outcome.requests,
                profiles = outcome.profiles,
                duration_ms = outcome.duration_ms,
                "okta session finished"
            ),
            Some(error) => tracing::warn!(
                status = outcome.final_status.map(SessionStatus::as_str).unwrap_or(""),
                requests = outcome.requests,
                profiles = outcome.profiles,
                error = %error,
                "okta session failed"
            ),
        });
        crate::telemetry::session_finished(
            outcome.kind.label(),
            outcome.final_status.map_or("NOT_CREATED", SessionStatus::as_str),
            std::time::Duration::from_millis(outcome.duration_ms),
        );
        outcome
    }

    async fn run_inner(
        &mut self,
        plan: &SessionPlan,
        hints: PlanHints,
        outcome: &mut SessionOutcome,
    ) {
        let mut replays = 0;
        loop {
            match self.attempt(plan, hints, outcome).await {
                Attempt::Done => return,
                Attempt::Replay(reason) => {
                    if self.cancel.is_cancelled() {
                        outcome.error = Some(format!("{reason}; not replayed: shutdown requested"));
                        return;
                    }
                    if replays >= self.options.max_replays {
                        outcome.error = Some(format!(
                            "{reason}; gave up after replaying the session {replays} time(s)"
                        ));
                        return;
                    }
                    replays += 1;
                    outcome.replays = replays;
                    if let Some(id) = outcome.id.take() {
                        outcome.replayed_session_ids.push(id);
                    }
                    outcome.requests = 0;
                    outcome.profiles = 0;
                    tracing::warn!(reason = %reason, replay = replays, "replaying the session's records in a fresh okta session");
                }
            }
        }
    }

    /// One try at a planned session: create, upload, trigger, follow. Each step returns
    /// `Err(attempt)` when the try ends there.
    async fn attempt(
        &mut self,
        plan: &SessionPlan,
        hints: PlanHints,
        outcome: &mut SessionOutcome,
    ) -> Attempt {
        let id = match self.open_session(outcome).await {
            Ok(id) => id,
            Err(end) => return end,
        };
        let (upserted_users, deleted_users) = match self.upload(plan, &id, outcome).await {
            Ok(kinds) => kinds,
            Err(end) => return end,
        };
        // 3. A session Okta kept CREATED cannot be triggered (FACTS §4b): cancel it. Only loads
        //    that can all be no-ops (deletes of users Okta does not know) leave it CREATED; an
        //    accepted user upsert, or a delete of a user Okta confirmed, moves it to
        //    IN_PROGRESS, so then the read would cost a call per session for nothing. If Okta
        //    disagrees (the state says it knows users it does not), the trigger's 400 sends us
        //    back to the read below.
        let assumed = upserted_users || (deleted_users && hints.deletes_known_users);
        if let Err(end) = self.check_triggerable(&id, assumed, outcome).await {
            return end;
        }
        self.trigger_and_follow(&id, assumed, outcome).await
    }

    /// Step 1: create the session, respecting the 5-minute rule, and record its id.
    async fn open_session(&mut self, outcome: &mut SessionOutcome) -> Result<String, Attempt> {
        let session = match self.create_spaced(outcome).await {
            Ok(session) => session,
            Err(CreateError::Cancelled) => {
                outcome.error = Some("shutdown requested before the session was created".into());
                return Err(Attempt::Done);
            }
            Err(CreateError::Okta(err)) if err.is_ambiguous() => {
                // The create may have happened: an open session of ours would block the next
                // one. Cancel whatever is open, then try again in a fresh session.
                self.cancel_open_sessions().await;
                return Err(Attempt::Replay(format!(
                    "creating the session failed ambiguously: {err}"
                )));
            }
            Err(CreateError::Okta(err)) => {
                outcome.error = Some(err.to_string());
                outcome.okta_error = err.detail();
                return Err(Attempt::Done);
            }
        };
        let id = session.id;
        tracing::Span::current().record("session_id", id.as_str());
        tracing::info!(session_id = %id, "created okta import session");
        outcome.id = Some(id.clone());
        outcome.final_status = Some(session.status);
        if let Some(hook) = self.on_created.as_mut()
            && let Err(e) = hook(&id)
        {
            outcome.error = Some(format!("cannot record session {id}, so it was cancelled: {e}"));
            if let Err(err) = self.client.cancel_session(&self.source_id, &id).await {
                tracing::warn!(session_id = %id, error = %err, "cannot cancel the session");
            } else {
                outcome.final_status = Some(SessionStatus::Closed);
            }
            return Err(Attempt::Done);
        }
        Ok(id)
    }

    /// Step 2: upload the plan's requests. Returns whether users were upserted and deleted.
    async fn upload(
        &mut self,
        plan: &SessionPlan,
        id: &str,
        outcome: &mut SessionOutcome,
    ) -> Result<(bool, bool), Attempt> {
        // 2. Upload. Requests of one kind go concurrently, as many at a time as the client
        //    says the rate budget and the org's concurrency allow (asked again before each
        //    load, so the width follows the budget as answers arrive); kinds keep the packer's
        //    order (users before groups before memberships, upserts before deletes), since Okta
        //    applies loads in arrival order.
        let total = plan.requests.len();
        let mut upserted_users = false;
        let mut deleted_users = false;
        let mut start = 0;
        while start < total {
            let kind = plan.requests[start].kind;
            let end = plan.requests[start..]
                .iter()
                .position(|r| r.kind != kind)
                .map_or(total, |n| start + n);
            let client = &self.client;
            let source_id = self.source_id.as_str();
            let session_id = id;
            let mut waiting =
                plan.requests[start..end].iter().enumerate().map(|(offset, r)| (start + offset, r));
            let mut uploads = futures::stream::FuturesUnordered::new();
            loop {
                // After a failure or a shutdown nothing more is launched; the loads in flight
                // are waited for before the session is cancelled, so none of them lands in a
                // session we already closed.
                while uploads.len() < client.loads_in_flight() {
                    let Some((index, request)) = waiting.next() else { break };
                    uploads.push(async move {
                        let result = client
                            .bulk_load(source_id, session_id, request.kind, &request.body)
                            .await;
                        (index, request, result)
                    });
                }
                outcome.max_in_flight = outcome.max_in_flight.max(uploads.len() as u32);
                if uploads.is_empty() {
                    break;
                }
                let next = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => None,
                    next = uploads.next() => next,
                };
                match next {
                    // Shutdown mid-upload: wait for the in-flight loads and cancel the session,
                    // so no stale open session blocks the next run.
                    None => {
                        while uploads.next().await.is_some() {}
                        drop(uploads);
                        let error = format!(
                            "shutdown requested during the upload ({} of {total} requests sent), session {id} cancelled",
                            outcome.requests
                        );
                        self.abort(id, error, outcome).await;
                        return Err(Attempt::Done);
                    }
                    Some((_, request, Ok(()))) => {
                        upserted_users |= request.kind == RequestKind::Upsert;
                        deleted_users |= request.kind == RequestKind::Delete;
                        outcome.requests += 1;
                        outcome.profiles += request.external_ids.len();
                        tracing::debug!(
                            done = outcome.requests,
                            of = total,
                            profiles = request.external_ids.len(),
                            "okta accepted a bulk load"
                        );
                    }
                    Some((index, _, Err(err))) => {
                        while uploads.next().await.is_some() {}
                        drop(uploads);
                        let error = format!(
                            "bulk load {} of {total} failed, session {id} cancelled: {err}",
                            index + 1
                        );
                        outcome.okta_error = err.detail();
                        self.abort(id, error.clone(), outcome).await;
                        // Why replay instead of retrying the request: after a timeout, a reset
                        // connection or a 5xx we cannot know whether Okta took the load. Sending
                        // it again into this session could put the same externalIds in it
                        // twice, which Okta warns corrupts data (FACTS §5). A cancelled session
                        // is discarded whole, so its records go again, all of them, once, into
                        // a fresh session (after the 5-minute spacing). Failures that were
                        // certainly not applied (429, refused connection) never get here: the
                        // client retried them in place.
                        if err.is_ambiguous() && outcome.final_status == Some(SessionStatus::Closed)
                        {
                            outcome.error = None;
                            outcome.okta_error = None;
                            return Err(Attempt::Replay(error));
                        }
                        return Err(Attempt::Done);
                    }
                }
            }
            start = end;
        }
        Ok((upserted_users, deleted_users))
    }

    /// Step 3: the session's status before triggering (`assumed` IN_PROGRESS without reading
    /// it); a session Okta kept CREATED is cancelled, and so is one a shutdown caught here.
    async fn check_triggerable(
        &mut self,
        id: &str,
        assumed: bool,
        outcome: &mut SessionOutcome,
    ) -> Result<(), Attempt> {
        let status = if assumed {
            Ok(SessionStatus::InProgress)
        } else {
            self.client.get_session(&self.source_id, id).await.map(|s| s.status)
        };
        let status = match status {
            Ok(status) => status,
            Err(err) => {
                let error = format!("could not read session {id} after the uploads: {err}");
                outcome.okta_error = err.detail();
                self.abort(id, error, outcome).await;
                return Err(Attempt::Done);
            }
        };
        outcome.final_status = Some(status);
        if status == SessionStatus::Created {
            self.cancel_untriggerable(id, outcome).await;
            return Err(Attempt::Done);
        }
        if self.cancel.is_cancelled() {
            let error = format!("shutdown requested before triggering, session {id} cancelled");
            self.abort(id, error, outcome).await;
            return Err(Attempt::Done);
        }
        Ok(())
    }

    /// Step 4: trigger the session and follow it to its end.
    async fn trigger_and_follow(
        &mut self,
        id: &str,
        assumed: bool,
        outcome: &mut SessionOutcome,
    ) -> Attempt {
        // 4. Trigger and follow. Triggering restarts Okta's 5-minute clock as well, whatever
        //    the answer: a trigger that failed ambiguously may have gone through.
        self.pending();
        let triggered = self.trigger(id).await;
        self.touch();
        match triggered {
            Ok(status) => {
                outcome.final_status = Some(status);
                tracing::info!(session_id = %id, status = %status, "triggered okta import");
            }
            Err(err) => {
                // We assumed IN_PROGRESS without reading it: a refusal may mean Okta kept the
                // session CREATED after all (every deactivated user unknown to it, whatever
                // the state said). That is "nothing to import", not a failure.
                if assumed
                    && !err.is_ambiguous()
                    && let Ok(session) = self.client.get_session(&self.source_id, id).await
                    && session.status == SessionStatus::Created
                {
                    tracing::warn!(session_id = %id, "okta kept the session CREATED although the state says it knows users in it");
                    self.cancel_untriggerable(id, outcome).await;
                    return Attempt::Done;
                }
                // Not triggered (the trigger's own check said so): cancel.
                let error = format!("start import of session {id} failed: {err}");
                outcome.okta_error = err.detail();
                self.abort(id, error, outcome).await;
                return Attempt::Done;
            }
        }
        let followed = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {
                outcome.error = Some(format!(
                    "shutdown requested while following session {id}; it is triggered, okta finishes it on its own"
                ));
                return Attempt::Done;
            }
            followed = self.follow(id) => followed,
        };
        match followed {
            Ok(status) => {
                outcome.final_status = Some(status);
                match status {
                    SessionStatus::Completed => {}
                    SessionStatus::Error => {
                        outcome.error = Some(format!(
                            "okta reported ERROR for session {id}: processing the import failed; \
                             see import monitoring in the okta admin console. The next run sends \
                             these records again"
                        ));
                    }
                    other => {
                        outcome.error =
                            Some(format!("session {id} ended {other} instead of COMPLETED"));
                    }
                }
            }
            Err(FollowError::TimedOut(last)) => {
                outcome.final_status = Some(last);
                outcome.error = Some(format!(
                    "gave up after {} waiting for session {id} to finish, last status {last}",
                    humantime::format_duration(self.options.session_timeout)
                ));
            }
            Err(FollowError::Okta(err)) => {
                outcome.error = Some(format!("could not follow session {id}: {err}"));
                outcome.okta_error = err.detail();
            }
        }
        Attempt::Done
    }

    /// Cancel a session Okta kept CREATED after its uploads (every load was a deactivation of
    /// a user it does not know): there is nothing to import, and it cannot be triggered.
    async fn cancel_untriggerable(&self, id: &str, outcome: &mut SessionOutcome) {
        outcome.final_status = Some(SessionStatus::Created);
        outcome.cancelled_untriggerable = true;
        match self.client.cancel_session(&self.source_id, id).await {
            Ok(()) => {
                outcome.final_status = Some(SessionStatus::Closed);
                let note = format!(
                    "nothing to import: okta kept session {id} in CREATED after the uploads \
                     (all deactivations were for users it does not know), so it was cancelled"
                );
                tracing::info!(session_id = %id, "{note}");
                outcome.note = Some(note);
            }
            Err(err) => {
                outcome.error = Some(format!(
                    "okta kept session {id} in CREATED after the uploads and cancelling it failed: {err}"
                ));
            }
        }
    }

    /// `start-import`. After an ambiguous failure the session's status tells whether it went
    /// through: `TRIGGERED` (or later) is success; still `IN_PROGRESS` means it was not
    /// applied, so one more trigger is safe (a trigger carries no records to duplicate).
    async fn trigger(&self, id: &str) -> Result<SessionStatus, OktaError> {
        match self.client.start_import(&self.source_id, id).await {
            Ok(session) => Ok(session.status),
            Err(err) if err.is_ambiguous() => {
                let now = self.client.get_session(&self.source_id, id).await.map_err(|_| err)?;
                match now.status {
                    SessionStatus::InProgress => {
                        tracing::info!(session_id = %id, "start import failed before okta applied it, triggering again");
                        Ok(self.client.start_import(&self.source_id, id).await?.status)
                    }
                    status => Ok(status),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Wait out the spacing since our last session, then create; on Okta's 5-minute 400 (a
    /// session we did not see, e.g. from a previous process) wait again and retry.
    async fn create_spaced(
        &mut self,
        outcome: &mut SessionOutcome,
    ) -> Result<super::model::Session, CreateError> {
        if let Some(last) = self.last_activity {
            let wait = self.options.spacing.saturating_sub(last.elapsed());
            self.spacing_wait(wait, outcome, "since the previous session").await?;
        }
        let mut retries = 0;
        loop {
            // Counted from the answer, or the failure: later is the safe side of Okta's clock,
            // and a create that failed ambiguously may have happened.
            self.pending();
            let attempt =
                self.ledger.as_ref().map(|l| l.create_sent(self.client.options().request_timeout));
            let created = self.client.create_session(&self.source_id).await;
            self.touch();
            if let (Some(ledger), Some(attempt)) = (&self.ledger, attempt) {
                match &created {
                    Ok(session) => ledger.created(attempt, &session.id),
                    // A timeout or a broken connection may have created it: the window stays.
                    Err(err) if err.is_ambiguous() => {}
                    Err(_) => ledger.not_created(attempt),
                }
            }
            match created {
                Ok(session) => return Ok(session),
                Err(err) if err.is_session_spacing() && retries < MAX_SPACING_RETRIES => {
                    retries += 1;
                    tracing::info!(error = %err, retry = retries, "okta refused the session under its 5-minute rule");
                    // Okta words "a session is still open" and "too soon" alike. An open one
                    // can only be a stray of ours (runs on a source never overlap): a create
                    // we gave up on that reached Okta after `prepare`. Waiting would not
                    // close it; cancelling does.
                    self.cancel_open_sessions().await;
                    // We do not know when the other session started: wait a full period.
                    self.spacing_wait(self.options.spacing, outcome, "okta refused the session")
                        .await?;
                }
                Err(err) => return Err(CreateError::Okta(err)),
            }
        }
    }

    async fn spacing_wait(
        &self,
        wait: Duration,
        outcome: &mut SessionOutcome,
        reason: &str,
    ) -> Result<(), CreateError> {
        if wait.is_zero() {
            return Ok(());
        }
        tracing::info!(
            wait_ms = millis(wait),
            reason,
            "waiting {:.1} s for okta's 5-minute session spacing",
            wait.as_secs_f64()
        );
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(CreateError::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
        outcome.spacing_wait_ms += millis(wait);
        Ok(())
    }

    /// After a failure past creation: cancel the session so it cannot block the next one, and
    /// record the status it ended in. The cancel's own failure is logged, not returned: the
    /// first error is the one worth reporting.
    async fn abort(&self, id: &str, error: String, outcome: &mut SessionOutcome) {
        outcome.error = Some(error);
        match self.client.cancel_session(&self.source_id, id).await {
            Ok(()) => {
                tracing::info!(session_id = %id, "cancelled the failed okta session");
                outcome.final_status = Some(SessionStatus::Closed);
            }
            Err(cancel_err) => {
                tracing::warn!(session_id = %id, error = %cancel_err, "could not cancel the failed okta session");
                match self.client.get_session(&self.source_id, id).await {
                    Ok(session) => outcome.final_status = Some(session.status),
                    Err(get_err) => {
                        tracing::warn!(session_id = %id, error = %get_err, "could not read the failed okta session either");
                    }
                }
            }
        }
    }

    /// Poll a triggered session until it reaches a final status or `session_timeout` passes.
    /// Intervals grow from `poll_initial` by ×1.5 up to `poll_max`, with a little jitter so
    /// that parallel importers do not poll in lockstep. Errors Okta may recover from (429
    /// after the client's own retries, 5xx, timeouts) do not end the wait.
    async fn follow(&self, id: &str) -> Result<SessionStatus, FollowError> {
        let deadline = Instant::now() + self.options.session_timeout;
        let mut interval = self.options.poll_initial;
        let mut last = SessionStatus::Triggered;
        loop {
            let jitter = interval.mul_f64(rand::random_range(0.0..0.1));
            let wait = interval + jitter;
            if Instant::now() + wait > deadline {
                return Err(FollowError::TimedOut(last));
            }
            tokio::time::sleep(wait).await;
            match self.client.get_session(&self.source_id, id).await {
                Ok(session) => {
                    if session.status != last {
                        tracing::debug!(session_id = %id, status = %session.status, "okta session status");
                    }
                    last = session.status;
                    if last.is_final() {
                        return Ok(last);
                    }
                }
                Err(err) if err.is_retryable() => {
                    tracing::warn!(session_id = %id, error = %err, "polling the okta session failed, will poll again");
                }
                Err(err) => return Err(FollowError::Okta(err)),
            }
            interval = interval.mul_f64(POLL_GROWTH).min(self.options.poll_max);
        }
    }
}

/// What the caller knows about a plan's users that Okta's answers would otherwise have to tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanHints {
    /// At least one user the plan deactivates is one Okta confirmed as active (the state says
    /// so), so its bulk delete moves the session to `IN_PROGRESS` as an upsert does and the
    /// session can be triggered without reading its status first.
    pub deletes_known_users: bool,
}

/// How one try at a session ended.
enum Attempt {
    /// Finished, successfully or not; `outcome` says which.
    Done,
    /// The session was cancelled after an ambiguous failure; replay its records.
    Replay(String),
}

enum CreateError {
    Cancelled,
    Okta(OktaError),
}

enum FollowError {
    /// `session_timeout` passed; the last status seen.
    TimedOut(SessionStatus),
    Okta(OktaError),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
