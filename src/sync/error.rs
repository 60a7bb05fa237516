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
    /// The pull grew past its share of the job's memory limit (`crate::sync::memory`).
    #[error("{0}")]
    OutOfMemory(String),
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
        /// The HTTP status of Okta's answer that ended it, when one did.
        status: Option<u16>,
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
        matches!(
            self,
            SyncError::PullIncomplete(_)
                | SyncError::TooManyRejected(_)
                | SyncError::OutOfMemory(_)
        )
    }

    /// A session that did not end as applied: `retryable` when sending the same again may
    /// pass.
    pub fn session(outcome: &SessionOutcome, kind: SessionKind, retryable: bool) -> SyncError {
        SyncError::Session {
            id: outcome.id.clone(),
            kind,
            error: outcome.failure(),
            retryable,
            status: outcome.okta_error.as_ref().and_then(|d| d.status),
        }
    }

    /// What kind of failure this is: the report's `failure`, what notifications say, and
    /// whether retrying can fix it ([`FailureKind::is_lasting`], the quarantine's rule).
    pub fn kind(&self) -> FailureKind {
        match self {
            SyncError::PullIncomplete(_) => FailureKind::PullIncomplete,
            SyncError::TooManyRejected(_) => FailureKind::TooManyRejected,
            SyncError::OutOfMemory(_) => FailureKind::OutOfMemory,
            SyncError::State { .. }
            | SyncError::Spill { .. }
            | SyncError::MarkPending(_)
            | SyncError::PlanChanged => FailureKind::State,
            SyncError::ConfirmFailed(inner) => inner.kind(),
            SyncError::Prepare(e) => FailureKind::of_okta(e),
            SyncError::Session { status, .. } => match status {
                Some(401) => FailureKind::OktaCredentials,
                Some(403) => FailureKind::OktaScope,
                Some(404) => FailureKind::UnknownIdentitySource,
                Some(429) | Some(500..) => FailureKind::OktaUnavailable,
                _ => FailureKind::SessionFailed,
            },
            SyncError::Direct(_) => FailureKind::SessionFailed,
            SyncError::Shutdown => FailureKind::Shutdown,
        }
    }

    /// Whether sending again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Session { retryable, .. } => *retryable,
            SyncError::TooManyRejected(_) | SyncError::OutOfMemory(_) | SyncError::PlanChanged => {
                false
            }
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

/// What kind of failure ended a run, in words that name no record and no secret: what the
/// report's `failure` says, what a notification carries instead of the error text, and the
/// rule of quarantine ([`FailureKind::is_lasting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Okta refused the credentials (401, or the OAuth token endpoint's `invalid_client`).
    OktaCredentials,
    /// The credentials may not do this (403, or OAuth `invalid_scope`).
    OktaScope,
    /// Okta does not know the identity source (404).
    UnknownIdentitySource,
    /// More records were rejected than `max_rejected` allows: the mapping or the export.
    TooManyRejected,
    /// The source could not be read to the end.
    PullIncomplete,
    /// Okta was slow, unreachable, rate limiting or failing (429, 5xx, network).
    OktaUnavailable,
    /// An import session, or a direct call, ended in error.
    SessionFailed,
    /// The state store (or the pulled users' temporary file) failed.
    State,
    /// Another client keeps a session open on the identity source (it is left alone).
    ForeignSession,
    /// The pull needs more memory than the job may use (`max_memory_mb`, the container).
    OutOfMemory,
    /// The daemon was shutting down.
    Shutdown,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 11] = [
        FailureKind::OktaCredentials,
        FailureKind::OktaScope,
        FailureKind::UnknownIdentitySource,
        FailureKind::TooManyRejected,
        FailureKind::PullIncomplete,
        FailureKind::OktaUnavailable,
        FailureKind::SessionFailed,
        FailureKind::State,
        FailureKind::ForeignSession,
        FailureKind::OutOfMemory,
        FailureKind::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::OktaCredentials => "okta_credentials",
            FailureKind::OktaScope => "okta_scope",
            FailureKind::UnknownIdentitySource => "unknown_identity_source",
            FailureKind::TooManyRejected => "too_many_rejected",
            FailureKind::PullIncomplete => "pull_incomplete",
            FailureKind::OktaUnavailable => "okta_unavailable",
            FailureKind::SessionFailed => "session_failed",
            FailureKind::State => "state",
            FailureKind::ForeignSession => "foreign_session",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether only a person can fix it (new credentials, a scope, the right identity source
    /// id, a mapping or export fixed): running again on schedule just fails again, so a job
    /// failing so `quarantine_after` times in a row is quarantined. 5xx, network, 429 and
    /// the source's own outages are not lasting: they keep their schedule.
    pub fn is_lasting(self) -> bool {
        matches!(
            self,
            FailureKind::OktaCredentials
                | FailureKind::OktaScope
                | FailureKind::UnknownIdentitySource
                | FailureKind::TooManyRejected
                | FailureKind::OutOfMemory
        )
    }

    /// One sentence: what failed and what to check. Names no record, user or secret.
    pub fn explain(self) -> &'static str {
        match self {
            FailureKind::OktaCredentials => {
                "okta refused the credentials: replace the API token, or check the OAuth app's client id and key"
            }
            FailureKind::OktaScope => {
                "the credentials may not manage this identity source: grant okta.identitySources.manage and okta.identitySources.read, or use a token of an admin who may"
            }
            FailureKind::UnknownIdentitySource => {
                "okta does not know this identity source: check identity_source_id against the Identity Sources page of the org"
            }
            FailureKind::TooManyRejected => {
                "more records were rejected than max_rejected allows: fix the mapping or the export (the run page lists the reasons)"
            }
            FailureKind::PullIncomplete => {
                "the source could not be read to the end, so nothing was sent: check that it is reachable"
            }
            FailureKind::OktaUnavailable => {
                "okta was slow, unreachable or rate limiting: the next run tries again"
            }
            FailureKind::SessionFailed => {
                "an import did not complete in okta: the run page has okta's error"
            }
            FailureKind::State => {
                "the state store could not be read or written: check its disk or its tables"
            }
            FailureKind::ForeignSession => {
                "another client keeps an import session open on the identity source: xaas waits for it and never touches it; the run page names it"
            }
            FailureKind::OutOfMemory => {
                "the pull needs more memory than the job may use, so nothing was sent: raise max_memory_mb and the container's memory limit, or split the source"
            }
            FailureKind::Shutdown => "the daemon was shutting down during the run",
        }
    }

    /// The kind of an Okta client error.
    pub fn of_okta(e: &OktaError) -> FailureKind {
        match e {
            OktaError::Unauthorized { .. } => FailureKind::OktaCredentials,
            OktaError::Forbidden { .. } => FailureKind::OktaScope,
            OktaError::NotFound { .. } => FailureKind::UnknownIdentitySource,
            OktaError::ForeignSession { .. } => FailureKind::ForeignSession,
            OktaError::OAuth { error, status, .. } => match error.as_str() {
                "invalid_scope" => FailureKind::OktaScope,
                _ if *status >= 500 || *status == 429 => FailureKind::OktaUnavailable,
                _ => FailureKind::OktaCredentials,
            },
            OktaError::Api { status: 400..=499, .. } if !e.is_session_spacing() => {
                FailureKind::SessionFailed
            }
            _ => FailureKind::OktaUnavailable,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
            status: Some(400),
        };
        assert_eq!(
            e.describe(false),
            "session (not created) (delete) did not complete: okta answered 400"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn only_what_a_person_must_fix_is_lasting() {
        let okta = |e: OktaError| SyncError::Prepare(Box::new(e)).kind();
        let unauthorized = OktaError::Unauthorized {
            op: "list sessions",
            org: "https://acme.okta.com".into(),
            code: "E0000011".into(),
            summary: String::new(),
            error_id: None,
            request_id: None,
        };
        assert_eq!(okta(unauthorized), FailureKind::OktaCredentials);
        let oauth = |error: &str, status| OktaError::OAuth {
            status,
            error: error.into(),
            description: String::new(),
        };
        assert_eq!(okta(oauth("invalid_client", 401)), FailureKind::OktaCredentials);
        assert_eq!(okta(oauth("invalid_scope", 400)), FailureKind::OktaScope);
        assert_eq!(okta(oauth("server_error", 503)), FailureKind::OktaUnavailable);
        let timeout = OktaError::Timeout { op: "list sessions", timeout: Default::default() };
        assert_eq!(okta(timeout), FailureKind::OktaUnavailable);
        let session = |status| SyncError::Session {
            id: Some("aps1".into()),
            kind: SessionKind::Upsert,
            error: String::new(),
            retryable: false,
            status,
        };
        assert_eq!(session(Some(403)).kind(), FailureKind::OktaScope);
        assert_eq!(session(Some(503)).kind(), FailureKind::OktaUnavailable);
        assert_eq!(session(None).kind(), FailureKind::SessionFailed);
        let lasting: Vec<bool> = FailureKind::ALL
            .into_iter()
            .map(|k| {
                assert_eq!(FailureKind::parse(k.as_str()), Some(k));
                k.is_lasting()
            })
            .collect();
        assert_eq!(
            lasting,
            [true, true, true, true, false, false, false, false, false, true, false]
        );
        assert_eq!(
            SyncError::OutOfMemory("x".into()).kind(),
            FailureKind::OutOfMemory,
            "a person has to give it memory"
        );
    }
}
