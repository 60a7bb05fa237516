//! Why a run (or a pushed batch) stopped: one typed error for the whole sync stage.
//!
//! The report keeps the message as text ([`super::report::JobReport::error`]); how it is worded
//! for a run or for a plan is a rendering choice ([`SyncError::describe`]), not an edit of the
//! text.

use crate::okta::OktaError;
use crate::okta::batch::SessionKind;
use crate::okta::session::SessionOutcome;
use crate::state::StateError;

/// Why a run, or a pushed batch, stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source failed part way: what was read is not the whole picture.
    #[error("the pull did not complete: {0}")]
    PullIncomplete(String),
    /// The source was read, but more records were rejected than `max_rejected` allows.
    #[error("{0}")]
    TooManyRejected(String),
    /// The state store could not be read or written; `doing` says what was attempted
    /// (`read the state`, `write the state`, `read the approvals`...).
    #[error("cannot {doing}: {source}")]
    State {
        doing: &'static str,
        #[source]
        source: StateError,
    },
    /// The pulled users' temporary file could not be written or read back.
    #[error("cannot {doing} the pulled users: {source}")]
    Spill {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Okta could not be prepared for the run (stale sessions listed, cancelled, waited for).
    #[error("cannot prepare the identity source: {0}")]
    Prepare(#[source] Box<OktaError>),
    /// An import session did not complete.
    #[error("session {} ({kind}) did not complete: {error}", id.as_deref().unwrap_or("(not created)"))]
    Session {
        id: Option<String>,
        kind: SessionKind,
        error: String,
        /// Sending the same again may pass (see [`crate::okta::session::SessionVerdict`]).
        retryable: bool,
    },
    /// The session's users could not be marked pending, so the session was not sent.
    #[error("cannot write the state, so nothing more was sent: {0}")]
    MarkPending(#[source] StateError),
    /// Okta completed a session, but the state could not record it.
    #[error("{0}; okta has the session, the next run resends it")]
    ConfirmFailed(#[source] Box<SyncError>),
    /// The sessions read back for sending differ from the ones planned (a local disk fault).
    #[error("the sessions changed between planning and sending")]
    PlanChanged,
    /// A user sent through the direct endpoints (no session) was not confirmed.
    #[error("a direct call did not complete: {0}; the users not confirmed are sent again next run")]
    Direct(String),
    /// The caller cancelled the run.
    #[error("shutdown requested")]
    Shutdown,
}

impl SyncError {
    /// A state failure while doing `doing`.
    pub fn state(doing: &'static str) -> impl FnOnce(StateError) -> SyncError {
        move |source| SyncError::State { doing, source }
    }

    /// A temporary-file failure while doing `doing` (`write`, `read back`).
    pub fn spill(doing: &'static str) -> impl FnOnce(std::io::Error) -> SyncError {
        move |source| SyncError::Spill { doing, source }
    }

    /// Whether the pull itself failed, so nothing at all went (or would go) to Okta.
    pub fn before_sending(&self) -> bool {
        matches!(self, SyncError::PullIncomplete(_) | SyncError::TooManyRejected(_))
    }

    /// A session that did not end as applied: `retryable` when sending the same again may
    /// pass.
    pub fn session(outcome: &SessionOutcome, kind: SessionKind, retryable: bool) -> SyncError {
        SyncError::Session { id: outcome.id.clone(), kind, error: outcome.failure(), retryable }
    }

    /// Whether sending again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Session { retryable, .. } => *retryable,
            SyncError::TooManyRejected(_) | SyncError::PlanChanged => false,
            _ => true,
        }
    }

    /// The report's wording: what happened, and what it means for what reached Okta, in the
    /// tense of a run (`dry_run: false`) or of a plan.
    pub fn describe(&self, dry_run: bool) -> String {
        let sent = if dry_run { "would be sent" } else { "was sent" };
        match self {
            SyncError::PullIncomplete(m) => {
                format!("the pull did not complete, so nothing {sent}: {m}")
            }
            SyncError::TooManyRejected(m) => format!("{m}, so nothing {sent}"),
            SyncError::Shutdown => {
                "shutdown requested: the remaining sessions were not sent".to_string()
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_words_the_same_failure_in_its_own_tense() {
        let e = SyncError::PullIncomplete("http 500 on page 3".into());
        assert_eq!(
            e.describe(false),
            "the pull did not complete, so nothing was sent: http 500 on page 3"
        );
        assert_eq!(
            e.describe(true),
            "the pull did not complete, so nothing would be sent: http 500 on page 3"
        );
        let e = SyncError::TooManyRejected("12 rejected records, over max_rejected (10)".into());
        assert!(e.describe(true).ends_with("so nothing would be sent"));
        assert!(e.before_sending() && !e.is_retryable());
    }

    #[test]
    fn a_session_error_names_the_session_and_its_kind() {
        let e = SyncError::Session {
            id: None,
            kind: SessionKind::Delete,
            error: "okta answered 400".into(),
            retryable: false,
        };
        assert_eq!(
            e.describe(false),
            "session (not created) (delete) did not complete: okta answered 400"
        );
        assert!(!e.is_retryable());
    }
}
