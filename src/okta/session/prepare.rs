//! The start of a run ([`Importer::prepare`]), and the clean-up after a create that may have
//! happened ([`Importer::cancel_open_sessions`]): what to do with the sessions already open
//! on the identity source, ours and other people's.
//!
//! A session is ours when the [`SessionLedger`](crate::okta::ledger) says so (its id is known,
//! or it was created within the window of a create of ours whose answer was lost). Ours, left
//! `CREATED`/`IN_PROGRESS` by an interrupted run, are cancelled; `TRIGGERED` ones, whoever's,
//! are followed to the end (Okta processes one at a time anyway). Someone else's open session
//! (an admin, a Workflows flow, another tool) is never cancelled nor written to: the run waits
//! up to `foreign_session_wait` for its owner to finish it, then fails naming it and its age.
//! Without a ledger (an importer built without the state) every session is taken for ours.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::{FollowError, Importer, StaleSession};
use crate::okta::error::OktaError;
use crate::okta::ledger::Owner;
use crate::okta::model::{Session, SessionStatus};

impl Importer {
    /// Start of a run: list sessions, cancel open ones we left behind, wait for triggered
    /// ones, wait for (and, past `foreign_session_wait`, fail on) open ones of others.
    ///
    /// Fails when Okta cannot be asked (list or cancel failing for another reason than the
    /// session having moved on), or when another client keeps a session open; a triggered
    /// session still running after `session_timeout` is reported with its last status, since
    /// Okta queues later sessions behind it anyway.
    pub async fn prepare(&mut self) -> Result<Vec<StaleSession>, OktaError> {
        let span = tracing::info_span!("okta_prepare", source_id = %self.source_id);
        self.prepare_inner().instrument(span).await
    }

    async fn prepare_inner(&mut self) -> Result<Vec<StaleSession>, OktaError> {
        let started = Instant::now();
        let mut stale = Vec::new();
        loop {
            let sessions = self.client.list_sessions(&self.source_id).await?;
            let mut foreign = None;
            for session in sessions {
                let found = session.status;
                match found {
                    SessionStatus::Created | SessionStatus::InProgress => {
                        if !self.owner(&session).is_us() {
                            foreign.get_or_insert(session);
                            continue;
                        }
                        stale.push(self.cancel_stale(session.id, found).await?);
                    }
                    SessionStatus::Triggered => {
                        let id = session.id;
                        tracing::info!(session_id = %id, "waiting for a triggered okta session");
                        let final_status = self.wait_stale(&id).await?;
                        stale.push(StaleSession {
                            id,
                            found,
                            action: "waited".into(),
                            final_status,
                        });
                    }
                    // The list should only hold active sessions, but Okta's own example also
                    // lists finished ones (FACTS §11); nothing to do about those.
                    _ => {}
                }
            }
            let Some(session) = foreign else { return Ok(stale) };
            let waited = started.elapsed();
            let age = created_at(&session).map(|c| Utc::now() - c);
            if waited >= self.options.foreign_session_wait {
                return Err(OktaError::ForeignSession {
                    id: session.id,
                    status: session.status.as_str().to_string(),
                    age: age.and_then(|a| a.to_std().ok()),
                    waited,
                });
            }
            tracing::info!(session_id = %session.id, status = %session.status, created = ?session.created, "another client has a session open on this identity source: waiting for it, not touching it");
            let pause = self.options.poll_max.min(self.options.foreign_session_wait - waited);
            tokio::select! {
                _ = tokio::time::sleep(pause.max(Duration::from_millis(10))) => {}
                _ = self.cancel.cancelled() => return Ok(stale),
            }
        }
    }

    /// Cancel a session of ours an interrupted run left open; if it moved on meanwhile
    /// (most likely got triggered), follow it instead.
    async fn cancel_stale(
        &self,
        id: String,
        found: SessionStatus,
    ) -> Result<StaleSession, OktaError> {
        match self.client.cancel_session(&self.source_id, &id).await {
            Ok(()) => {
                tracing::info!(session_id = %id, status = %found, "cancelled a stale okta session left open by an earlier run");
                Ok(StaleSession {
                    id,
                    found,
                    action: "cancelled".into(),
                    final_status: SessionStatus::Closed,
                })
            }
            Err(err) if err.status() == Some(400) => {
                tracing::info!(session_id = %id, error = %err, "stale okta session could not be cancelled, following it instead");
                let now = self.client.get_session(&self.source_id, &id).await?;
                let final_status =
                    if now.status.is_final() { now.status } else { self.wait_stale(&id).await? };
                Ok(StaleSession { id, found, action: "waited".into(), final_status })
            }
            Err(err) => Err(err),
        }
    }

    /// Whose `session` is (ours when there is no ledger).
    fn owner(&self, session: &Session) -> Owner {
        let Some(ledger) = &self.ledger else { return Owner::Us };
        let owner = ledger.owner(&session.id, created_at(session));
        if let Owner::UsByTime(attempt) = &owner {
            tracing::info!(session_id = %session.id, created = ?session.created, sent_at = %attempt.sent_at, "an open session created while a create of ours went unanswered: taken for ours");
        }
        owner
    }

    /// Follow a session found triggered, up to `session_timeout`.
    pub(super) async fn wait_stale(&self, id: &str) -> Result<SessionStatus, OktaError> {
        match self.follow(id).await {
            Ok(status) => Ok(status),
            Err(FollowError::TimedOut(last)) => {
                tracing::warn!(session_id = %id, status = %last, timeout = %humantime::format_duration(self.options.session_timeout), "gave up waiting for a stale okta session; okta will queue the next one behind it");
                Ok(last)
            }
            Err(FollowError::Okta(err)) => Err(err),
        }
    }

    /// Cancel every open session of ours: after an ambiguous create (it may have created one
    /// we never heard of) or a refused one (such a session may be what blocks it). Another
    /// client's is left alone. Failures are logged: the next create tells.
    pub(super) async fn cancel_open_sessions(&self) {
        match self.client.list_sessions(&self.source_id).await {
            Ok(sessions) => {
                for s in sessions.into_iter().filter(|s| s.status.is_open()) {
                    if !self.owner(&s).is_us() {
                        tracing::warn!(session_id = %s.id, status = %s.status, "another client's open session blocks ours: left alone");
                        continue;
                    }
                    match self.client.cancel_session(&self.source_id, &s.id).await {
                        Ok(()) => {
                            tracing::info!(session_id = %s.id, status = %s.status, "cancelled an open session we did not create knowingly (a create we gave up on)")
                        }
                        Err(err) => {
                            tracing::warn!(session_id = %s.id, error = %err, "could not cancel an open session")
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not list sessions after an ambiguous create")
            }
        }
    }
}

/// Okta's `created` of a session (RFC 3339), when it parses.
fn created_at(session: &Session) -> Option<DateTime<Utc>> {
    let created = session.created.as_deref()?;
    DateTime::parse_from_rfc3339(created).ok().map(|t| t.with_timezone(&Utc))
}
