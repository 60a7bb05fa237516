//! `xaas check`'s questions to Okta, read-only: are the credentials accepted, does each job's
//! identity source exist and may they read it, which session is open there, and what rate
//! limit Okta reports. One list-sessions call per identity source (a `GET`, the read scope)
//! answers all of it; with OAuth, getting the access token first proves the app was granted
//! every scope xaas asks for (the token endpoint refuses the request otherwise, FACTS §1).
//!
//! Nothing here writes: whether the credentials may *manage* the source (create a session) is
//! only known from the first run, except that an OAuth token carrying the manage scope was
//! issued.

use chrono::{DateTime, Utc};

use super::OktaClient;
use super::error::OktaError;
use super::model::Session;

/// What Okta said about one identity source.
#[derive(Debug, Clone)]
pub struct SourceCheck {
    /// Sessions not finished there (`CREATED`, `IN_PROGRESS`, `TRIGGERED`), oldest first.
    pub open: Vec<Session>,
    /// The rate limit of the last answer: limit per window, and what was left.
    pub rate_limit: Option<(u32, u32)>,
}

/// Ask Okta about `source_id` (one `GET …/sessions`).
pub async fn check_source(client: &OktaClient, source_id: &str) -> Result<SourceCheck, OktaError> {
    let sessions = client.list_sessions(source_id).await?;
    let mut open: Vec<Session> = sessions.into_iter().filter(|s| !s.status.is_final()).collect();
    open.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(SourceCheck { open, rate_limit: client.rate_limit_seen() })
}

/// One line about an open session: its id, status and age ("CREATED for 3 min").
pub fn describe_open(s: &Session, now: DateTime<Utc>) -> String {
    let age = s
        .created
        .as_deref()
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|c| {
            let minutes = (now - c.with_timezone(&Utc)).num_minutes().max(0);
            format!(" for {minutes} min")
        })
        .unwrap_or_default();
    format!("{} {}{age}", s.id, s.status)
}

/// Whether an error says the credentials themselves were refused (so every identity source
/// would say the same, and checking the others adds nothing).
pub fn is_credentials(e: &OktaError) -> bool {
    matches!(e, OktaError::Unauthorized { .. } | OktaError::OAuth { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::model::SessionStatus;

    #[test]
    fn an_open_session_is_described_with_its_age() {
        let s = Session {
            id: "aps1".into(),
            identity_source_id: "0oa1".into(),
            status: SessionStatus::Created,
            import_type: None,
            created: Some("2026-12-02T10:00:00.000Z".into()),
            last_updated: None,
        };
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:07:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(describe_open(&s, now), "aps1 CREATED for 7 min");
    }
}
