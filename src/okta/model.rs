//! Wire types of the Identity Sources API (FACTS §3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `IdentitySourceSession`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub identity_source_id: String,
    pub status: SessionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
}

/// `IdentitySourceSessionStatus` (FACTS §4a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    Created,
    InProgress,
    Triggered,
    Completed,
    Closed,
    Expired,
    Error,
    /// A status this version does not know; treated as not final.
    #[serde(other)]
    Unknown,
}

impl SessionStatus {
    /// `CREATED`, `IN_PROGRESS` and `TRIGGERED` sessions are "active" (FACTS §4b).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Created | Self::InProgress | Self::Triggered)
    }

    /// No further transition will happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Closed | Self::Expired | Self::Error)
    }

    /// Data can still be loaded, and the session can be cancelled.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Created | Self::InProgress)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::InProgress => "IN_PROGRESS",
            Self::Triggered => "TRIGGERED",
            Self::Completed => "COMPLETED",
            Self::Closed => "CLOSED",
            Self::Expired => "EXPIRED",
            Self::Error => "ERROR",
            Self::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `BulkUpsertRequestBody.profiles`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpsertProfile<'a> {
    pub external_id: &'a str,
    pub profile: &'a BTreeMap<String, String>,
}

/// One entry of `BulkDeleteRequestBody.profiles`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteProfile<'a> {
    pub external_id: &'a str,
}

/// Okta's error body (FACTS §9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub error_summary: String,
    #[serde(default)]
    pub error_link: String,
    #[serde(default)]
    pub error_id: String,
    #[serde(default)]
    pub error_causes: Vec<ErrorCause>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorCause {
    #[serde(default)]
    pub error_summary: String,
}
