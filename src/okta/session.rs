//! The import-session lifecycle (FACTS §4, §8).
//!
//! An [`Importer`] drives the sessions of one identity source:
//!
//! 1. [`Importer::prepare`], once per run: sessions left `CREATED`/`IN_PROGRESS` by an earlier,
//!    interrupted run are cancelled (xaas owns its identity source and runs never overlap, so
//!    an open session can only be ours and stale); `TRIGGERED` ones are followed to the end,
//!    because Okta processes one session at a time anyway.
//! 2. [`Importer::run`], per planned session: wait for Okta's 5-minute spacing, create, upload
//!    the packer's bodies in order, then trigger and follow the session to `COMPLETED`/`ERROR`.
//!    A session that stayed `CREATED` after the uploads (a delete-only load of unknown users,
//!    FACTS §4b) cannot be triggered and is cancelled instead. Whatever fails after creation,
//!    the session is cancelled before returning: an open session would block the next one.
//!
//! Time is plain tokio time with the durations of [`SessionOptions`]; tests shrink them to
//! milliseconds rather than pausing the clock, because real HTTP servers are involved.

use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;

use super::batch::{SessionKind, SessionPlan};
use super::client::OktaClient;
use super::error::OktaError;
use super::model::SessionStatus;

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
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            spacing: Duration::from_secs(300),
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(30),
            session_timeout: Duration::from_secs(3 * 3600),
        }
    }
}

/// How many times a creation refused by the 5-minute rule is retried (each after `spacing`).
const MAX_SPACING_RETRIES: u32 = 3;
/// Poll interval growth per poll.
const POLL_GROWTH: f64 = 1.5;

/// What happened to a session found open at the start of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
}

/// Drives import sessions for one identity source.
pub struct Importer {
    client: OktaClient,
    source_id: String,
    options: SessionOptions,
    /// When this importer last created or triggered a session: the 5-minute rule counts from
    /// there (FACTS §4b).
    last_activity: Option<Instant>,
}

impl Importer {
    pub fn new(client: OktaClient, source_id: impl Into<String>, options: SessionOptions) -> Self {
        Self { client, source_id: source_id.into(), options, last_activity: None }
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

    /// Start of a run: list sessions, cancel open ones we left behind, wait for triggered ones.
    ///
    /// Fails only when Okta cannot be asked (list or cancel failing for another reason than
    /// the session having moved on); a triggered session still running after
    /// `session_timeout` is reported with its last status, since Okta queues later sessions
    /// behind it anyway.
    pub async fn prepare(&mut self) -> Result<Vec<StaleSession>, OktaError> {
        let span = tracing::info_span!("okta_prepare", source_id = %self.source_id);
        self.prepare_inner().instrument(span).await
    }

    async fn prepare_inner(&mut self) -> Result<Vec<StaleSession>, OktaError> {
        let sessions = self.client.list_sessions(&self.source_id).await?;
        let mut stale = Vec::new();
        for session in sessions {
            let found = session.status;
            let id = session.id;
            match found {
                SessionStatus::Created | SessionStatus::InProgress => {
                    match self.client.cancel_session(&self.source_id, &id).await {
                        Ok(()) => {
                            tracing::info!(session_id = %id, status = %found, "cancelled a stale okta session left open by an earlier run");
                            stale.push(StaleSession {
                                id,
                                found,
                                action: "cancelled".into(),
                                final_status: SessionStatus::Closed,
                            });
                        }
                        // It moved on between the list and the cancel (most likely got
                        // triggered): find out where it is and follow it if needed.
                        Err(err) if err.status() == Some(400) => {
                            tracing::info!(session_id = %id, error = %err, "stale okta session could not be cancelled, following it instead");
                            let now = self.client.get_session(&self.source_id, &id).await?;
                            let final_status = if now.status.is_final() {
                                now.status
                            } else {
                                self.wait_stale(&id).await?
                            };
                            stale.push(StaleSession {
                                id,
                                found,
                                action: "waited".into(),
                                final_status,
                            });
                        }
                        Err(err) => return Err(err),
                    }
                }
                SessionStatus::Triggered => {
                    tracing::info!(session_id = %id, "waiting for an okta session triggered by an earlier run");
                    let final_status = self.wait_stale(&id).await?;
                    stale.push(StaleSession { id, found, action: "waited".into(), final_status });
                }
                // The list should only hold active sessions, but Okta's own example also lists
                // finished ones (FACTS §11); nothing to do about those.
                _ => {}
            }
        }
        Ok(stale)
    }

    /// Follow a session found triggered, up to `session_timeout`.
    async fn wait_stale(&self, id: &str) -> Result<SessionStatus, OktaError> {
        match self.follow(id).await {
            Ok(status) => Ok(status),
            Err(FollowError::TimedOut(last)) => {
                tracing::warn!(session_id = %id, status = %last, timeout = %humantime::format_duration(self.options.session_timeout), "gave up waiting for a stale okta session; okta will queue the next one behind it");
                Ok(last)
            }
            Err(FollowError::Okta(err)) => Err(err),
        }
    }

    /// Create, load, trigger (or cancel) and follow one session.
    pub async fn run(&mut self, plan: &SessionPlan) -> SessionOutcome {
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
        };
        if plan.requests.is_empty() {
            // A session without loads would stay CREATED and cost a 5-minute slot for nothing.
            outcome.note = Some("nothing to send: no session created".into());
            return outcome;
        }
        let started = Instant::now();
        self.run_inner(plan, &mut outcome).instrument(span.clone()).await;
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
        outcome
    }

    async fn run_inner(&mut self, plan: &SessionPlan, outcome: &mut SessionOutcome) {
        // 1. Create, respecting the 5-minute rule.
        let session = match self.create_spaced(outcome).await {
            Ok(session) => session,
            Err(err) => {
                outcome.error = Some(err.to_string());
                return;
            }
        };
        let id = session.id;
        tracing::Span::current().record("session_id", id.as_str());
        tracing::info!(session_id = %id, "created okta import session");
        outcome.id = Some(id.clone());
        outcome.final_status = Some(session.status);

        // 2. Upload in the packer's order.
        for (index, request) in plan.requests.iter().enumerate() {
            let loaded =
                self.client.bulk_load(&self.source_id, &id, request.kind, &request.body).await;
            match loaded {
                Ok(()) => {
                    outcome.requests += 1;
                    outcome.profiles += request.external_ids.len();
                    tracing::debug!(
                        request = index + 1,
                        of = plan.requests.len(),
                        profiles = request.external_ids.len(),
                        "okta accepted a bulk load"
                    );
                }
                Err(err) => {
                    let error = format!(
                        "bulk load {} of {} failed, session {id} cancelled: {err}",
                        index + 1,
                        plan.requests.len()
                    );
                    self.abort(&id, error, outcome).await;
                    return;
                }
            }
        }

        // 3. A session Okta kept CREATED cannot be triggered (FACTS §4b): cancel it.
        let status = match self.client.get_session(&self.source_id, &id).await {
            Ok(session) => session.status,
            Err(err) => {
                let error = format!("could not read session {id} after the uploads: {err}");
                self.abort(&id, error, outcome).await;
                return;
            }
        };
        outcome.final_status = Some(status);
        if status == SessionStatus::Created {
            outcome.cancelled_untriggerable = true;
            match self.client.cancel_session(&self.source_id, &id).await {
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
            return;
        }

        // 4. Trigger and follow.
        match self.client.start_import(&self.source_id, &id).await {
            Ok(session) => {
                // Triggering restarts Okta's 5-minute clock as well.
                self.last_activity = Some(Instant::now());
                outcome.final_status = Some(session.status);
                tracing::info!(session_id = %id, status = %session.status, "triggered okta import");
            }
            Err(err) => {
                // It may or may not have been triggered (e.g. a timeout); the cancel tells: it
                // answers 400 on a triggered session, and `abort` then reads the real status.
                let error = format!("start import of session {id} failed: {err}");
                self.abort(&id, error, outcome).await;
                return;
            }
        }
        match self.follow(&id).await {
            Ok(status) => {
                outcome.final_status = Some(status);
                match status {
                    SessionStatus::Completed => {}
                    SessionStatus::Error => {
                        outcome.error = Some(format!(
                            "okta reported ERROR for session {id}: processing the import failed; \
                             see import monitoring in the okta admin console"
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
            }
        }
    }

    /// Wait out the spacing since our last session, then create; on Okta's 5-minute 400 (a
    /// session we did not see, e.g. from a previous process) wait again and retry.
    async fn create_spaced(
        &mut self,
        outcome: &mut SessionOutcome,
    ) -> Result<super::model::Session, OktaError> {
        if let Some(last) = self.last_activity {
            let wait = self.options.spacing.saturating_sub(last.elapsed());
            self.spacing_wait(wait, outcome, "since the previous session").await;
        }
        let mut retries = 0;
        loop {
            match self.client.create_session(&self.source_id).await {
                Ok(session) => {
                    // Counted from the answer: later is the safe side of Okta's clock.
                    self.last_activity = Some(Instant::now());
                    return Ok(session);
                }
                Err(err) if err.is_session_spacing() && retries < MAX_SPACING_RETRIES => {
                    retries += 1;
                    tracing::info!(error = %err, retry = retries, "okta refused the session under its 5-minute rule");
                    // We do not know when the other session started: wait a full period.
                    self.spacing_wait(self.options.spacing, outcome, "okta refused the session")
                        .await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn spacing_wait(&self, wait: Duration, outcome: &mut SessionOutcome, reason: &str) {
        if wait.is_zero() {
            return;
        }
        tracing::info!(
            wait_ms = millis(wait),
            reason,
            "waiting {:.1} s for okta's 5-minute session spacing",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
        outcome.spacing_wait_ms += millis(wait);
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

enum FollowError {
    /// `session_timeout` passed; the last status seen.
    TimedOut(SessionStatus),
    Okta(OktaError),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
