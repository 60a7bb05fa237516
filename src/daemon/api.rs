//! The monitoring data, as JSON for scripts (`/v1/jobs`, `/v1/runs`, `/v1/runs/{id}`) and as
//! the structs the UI's templates render ([`super::ui`]).
//!
//! One code path: every page and every JSON answer is built by a function of this module
//! from the state store, so what a script reads is what the page shows. Reads open their own
//! state-store connection on a blocking thread (SQLite calls are synchronous); pages are
//! bounded by construction: a run's decisions come one keyset page at a time, and counts per
//! decision are kept at write time, so a run of 100,000 records costs what a run of 10 does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Daemon;
use crate::mapping::references::Dangling;
use crate::okta::error::OktaErrorDetail;
use crate::settings::Settings;
use crate::state::events::EventView;
use crate::state::{
    ApprovalRecord, Decision, DecisionPage, DecisionQuery, RunId, RunRecord, StateError, StateStore,
};
use crate::sync::report::{Counts, JobReport, MembershipDetail, SessionReport};

/// Decisions per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 50;
/// Webhook events on the webhook page.
pub const RECENT_EVENTS: usize = 100;

/// Why a monitoring request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("the request was cancelled: {0}")]
    Join(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::State(StateError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
            ApiError::State(_) | ApiError::Join(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

/// One run, as lists show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: RunId,
    pub job: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// `success`, `completed_with_rejections`, `failed`, `held`; `running` while unfinished.
    pub outcome: String,
    /// Records per decision (`created`, `updated`, …).
    pub counts: BTreeMap<Decision, u64>,
    /// Records that changed something (every decision but `unchanged`).
    pub changed: u64,
    pub total: u64,
    pub held: bool,
    pub approved_at: Option<String>,
    /// The run that used this run's approval.
    pub consumed_by: Option<RunId>,
}

/// A job on the jobs page.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub name: String,
    pub identity_source_id: String,
    pub schedule: Option<String>,
    pub timezone: String,
    pub next_run: Option<String>,
    pub last_run: Option<RunSummary>,
    /// The last `runs_per_job` runs, oldest first (the bars).
    pub recent: Vec<RunSummary>,
    /// The most changed records of one run among `recent` (the bars' scale).
    pub max_changed: u64,
    /// Failed runs in a row (from the state, so every replica says the same).
    pub consecutive_failures: u32,
    /// Set while the job is quarantined: its schedule backs off until it is resumed.
    pub quarantine: Option<QuarantineView>,
}

/// A quarantined job, as `/v1/jobs` and the jobs page show it.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineView {
    /// `quarantined: okta_credentials`.
    pub status: String,
    /// The failure kind that repeated.
    pub reason: String,
    /// What to fix.
    pub explanation: String,
    pub since: String,
    /// When the schedule tries it again (unless resumed before).
    pub next_attempt: String,
    /// The run that quarantined it.
    pub run: Option<RunId>,
}

/// `/v1/jobs` and the jobs page.
#[derive(Debug, Clone, Serialize)]
pub struct JobsView {
    pub jobs: Vec<JobView>,
    /// Runs awaiting an approval.
    pub held: usize,
    pub now: String,
    /// How many runs per job `recent` holds at most.
    pub runs_per_job: usize,
}

/// An Okta session of a run, from its report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionView {
    pub id: Option<String>,
    pub kind: String,
    pub requests: u64,
    pub profiles: u64,
    pub upserts: u64,
    pub deletes: u64,
    /// `COMPLETED`, `ERROR`, …; `not sent` when the session was never attempted.
    pub final_status: String,
    pub error: Option<String>,
    /// Okta's error, when it answered with one.
    pub okta_error: Option<OktaErrorDetail>,
    pub duration_ms: Option<u64>,
}

/// Why a run was held and what it would do.
#[derive(Debug, Clone, Serialize)]
pub struct HoldView {
    pub reasons: Vec<String>,
    pub deactivations: u64,
    pub creations: u64,
    /// `awaiting_approval`, `approved` (the next run may go), `used` (by a later run).
    pub status: String,
}

/// At most this many left-out references on the run page and in `/v1/runs/{id}` (the stored
/// report has them all).
pub const DANGLING_SHOWN: usize = 100;

/// `/v1/runs/{id}` and the run page.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    pub run: RunSummary,
    pub full: bool,
    pub mode_reason: Option<String>,
    pub error: Option<String>,
    pub released_by: Option<String>,
    /// The report's counts (read, rejected, upserted, deactivated, not imported, …).
    pub report_counts: Option<Counts>,
    /// Per user, the memberships added and removed (the report's list, capped like it).
    pub memberships: Vec<MembershipDetail>,
    /// Groups this run created and deleted.
    pub groups_created: Vec<String>,
    pub groups_deleted: Vec<String>,
    /// References left out of profiles (`on_missing: omit`), at most [`DANGLING_SHOWN`].
    pub dangling: Vec<Dangling>,
    pub sessions: Vec<SessionView>,
    pub hold: Option<HoldView>,
    pub approvals: Vec<ApprovalRecord>,
    pub decisions: DecisionPage,
    pub query: QueryView,
    pub show_profiles: bool,
}

/// The decision query, echoed back (for the page's search form and links).
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryView {
    pub q: Option<String>,
    pub decision: Option<Decision>,
    pub after: Option<String>,
    pub limit: usize,
}

/// A held run on the held page.
#[derive(Debug, Clone, Serialize)]
pub struct HeldRun {
    pub run: RunSummary,
    pub hold: HoldView,
    pub approvals: Vec<ApprovalRecord>,
}

/// The held page.
#[derive(Debug, Clone, Serialize)]
pub struct HeldView {
    pub runs: Vec<HeldRun>,
}

/// The webhook page.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub enabled: bool,
    pub events: Vec<EventView>,
}

/// `?job=&limit=&before=` of `/v1/runs`.
#[derive(Debug, Default, Deserialize)]
pub struct RunsParams {
    pub job: Option<String>,
    pub limit: Option<usize>,
    pub before: Option<RunId>,
}

/// `?q=&after=&decision=&limit=` of a run.
#[derive(Debug, Default, Deserialize)]
pub struct DecisionParams {
    pub q: Option<String>,
    pub after: Option<String>,
    pub decision: Option<String>,
    pub limit: Option<usize>,
}

impl DecisionParams {
    pub fn query(&self) -> Result<DecisionQuery, ApiError> {
        fn nonempty(s: &Option<String>) -> Option<&str> {
            s.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        let decision = match nonempty(&self.decision) {
            None => None,
            Some(d) => Some(Decision::parse(d).ok_or_else(|| {
                let valid: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
                ApiError::BadRequest(format!("unknown decision `{d}`; valid: {}", valid.join(", ")))
            })?),
        };
        Ok(DecisionQuery {
            q: nonempty(&self.q).map(str::to_string),
            decision,
            after: self.after.clone().filter(|a| !a.is_empty()),
            limit: self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 1_000),
        })
    }
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

/// A run with its counts per decision.
pub fn summary(store: &dyn StateStore, r: RunRecord) -> Result<RunSummary, ApiError> {
    let counts = store.decision_counts(r.id)?;
    let total = counts.values().sum();
    let changed = counts.iter().filter(|(d, _)| **d != Decision::Unchanged).map(|(_, n)| n).sum();
    let duration_ms = match (parse_ts(&r.started_at), r.finished_at.as_deref().and_then(parse_ts)) {
        (Some(a), Some(b)) => Some((b - a).num_milliseconds()),
        _ => None,
    };
    Ok(RunSummary {
        id: r.id,
        job: r.job,
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_ms,
        outcome: r.outcome.unwrap_or_else(|| "running".into()),
        counts,
        changed,
        total,
        held: r.hold.is_some(),
        approved_at: r.approved_at,
        consumed_by: r.consumed_by,
    })
}

/// The jobs, their schedule, last run and recent runs.
pub fn jobs(
    settings: &Settings,
    store: &dyn StateStore,
    now: DateTime<Utc>,
) -> Result<JobsView, ApiError> {
    let per_job = settings.serve.ui.as_ref().map_or(20, |u| u.runs_per_job);
    let mut jobs = Vec::new();
    for job in &settings.jobs {
        let watch = store.job_watch(&job.name)?;
        let quarantine = watch.quarantine.as_ref().map(|q| {
            let kind = crate::sync::FailureKind::parse(&q.reason);
            QuarantineView {
                status: format!("quarantined: {}", q.reason),
                reason: q.reason.clone(),
                explanation: kind.map_or("", |k| k.explain()).to_string(),
                since: ts(q.since),
                next_attempt: ts(q.next_attempt),
                run: q.run,
            }
        });
        // A quarantined job's schedule skips its firings before the back-off's attempt.
        let after = watch
            .quarantine
            .as_ref()
            .map_or(now, |q| now.max(q.next_attempt - chrono::Duration::milliseconds(1)));
        let next_run = job.schedule.as_ref().and_then(|s| s.next_after(after)).map(ts);
        let mut recent = store
            .runs(Some(&job.name), None, per_job)?
            .into_iter()
            .map(|r| summary(store, r))
            .collect::<Result<Vec<_>, _>>()?;
        recent.reverse();
        jobs.push(JobView {
            name: job.name.clone(),
            identity_source_id: job.identity_source_id.clone(),
            schedule: job.schedule.as_ref().map(|s| s.written.clone()),
            timezone: job.timezone.to_string(),
            next_run,
            last_run: recent.last().cloned(),
            max_changed: recent.iter().map(|r| r.changed).max().unwrap_or(0),
            recent,
            consecutive_failures: watch.failures,
            quarantine,
        });
    }
    let held = held(settings, store)?.runs.iter().filter(|r| r.hold.status != "used").count();
    Ok(JobsView { jobs, held, now: ts(now), runs_per_job: per_job })
}

/// Runs newest first.
pub fn runs(store: &dyn StateStore, params: &RunsParams) -> Result<Vec<RunSummary>, ApiError> {
    let limit = params.limit.unwrap_or(20).clamp(1, 500);
    store
        .runs(params.job.as_deref(), params.before, limit)?
        .into_iter()
        .map(|r| summary(store, r))
        .collect()
}

/// A session of a stored report, as the run page shows it.
fn session_view(s: &SessionReport) -> SessionView {
    let o = s.outcome.as_ref();
    SessionView {
        id: o.and_then(|o| o.id.clone()),
        kind: s.kind.label().to_string(),
        requests: match o {
            Some(o) if o.requests > 0 => o.requests as u64,
            _ => s.planned_requests as u64,
        },
        profiles: o.map_or(0, |o| o.profiles) as u64,
        upserts: s.planned_upserts as u64,
        deletes: s.planned_deletes as u64,
        final_status: o
            .and_then(|o| o.final_status)
            .map_or_else(|| "not sent".to_string(), |st| st.as_str().to_string()),
        error: o.and_then(|o| o.error.clone()),
        okta_error: o.and_then(|o| o.okta_error.clone()),
        duration_ms: o.map(|o| o.duration_ms),
    }
}

fn hold_view(r: &RunRecord) -> Option<HoldView> {
    let h = r.hold.as_ref()?;
    let status = match (&r.approved_at, r.consumed_by) {
        (_, Some(_)) => "used",
        (Some(_), None) => "approved",
        (None, None) => "awaiting_approval",
    };
    Some(HoldView {
        reasons: h.reasons.clone(),
        deactivations: h.deactivations,
        creations: h.creations,
        status: status.into(),
    })
}

/// One run: summary, sessions, hold, approvals and one page of decisions.
pub fn run_detail(
    store: &dyn StateStore,
    id: RunId,
    query: &DecisionQuery,
    show_profiles: bool,
) -> Result<RunDetail, ApiError> {
    let record = store.run_by_id(id)?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    // The report is read back with the type that wrote it (a run still in progress has none).
    let report = match store.run_report(&record.job, id)? {
        None => None,
        Some(json) => match serde_json::from_str::<JobReport>(&json) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(run = id, error = %e, "the stored run report cannot be read");
                None
            }
        },
    };
    let details = report.as_ref().map(|r| r.details.clone()).unwrap_or_default();
    let mut dangling = report.as_ref().map(|r| r.dangling.clone()).unwrap_or_default();
    dangling.truncate(DANGLING_SHOWN);
    let sessions = report.as_ref().map_or(&[][..], |r| &r.sessions[..]);
    let sessions = sessions.iter().map(session_view).collect();
    let mode = report.as_ref().map(|r| r.mode.clone());
    let hold = hold_view(&record);
    let approvals = store.approvals(id)?;
    let mut decisions = store.decisions(id, query)?;
    if !show_profiles {
        // Stored only when shown, but a setting turned off later hides them again.
        for d in &mut decisions.items {
            d.profile = None;
            d.changes.iter_mut().for_each(|c| (c.from, c.to) = (None, None));
        }
    }
    Ok(RunDetail {
        run: summary(store, record)?,
        full: mode.as_ref().is_some_and(|m| m.full),
        mode_reason: mode.and_then(|m| m.reason),
        error: report.as_ref().and_then(|r| r.error.clone()),
        released_by: report.as_ref().and_then(|r| r.released_by.clone()),
        report_counts: report.map(|r| r.counts),
        memberships: details.memberships,
        groups_created: details.groups_created,
        groups_deleted: details.groups_deleted,
        dangling,
        sessions,
        hold,
        approvals,
        decisions,
        query: QueryView {
            q: query.q.clone(),
            decision: query.decision,
            after: query.after.clone(),
            limit: query.limit,
        },
        show_profiles,
    })
}

/// Held runs not used by a later run, newest first, among each job's recent runs.
pub fn held(settings: &Settings, store: &dyn StateStore) -> Result<HeldView, ApiError> {
    let per_job = settings.serve.ui.as_ref().map_or(20, |u| u.runs_per_job);
    let mut runs = Vec::new();
    for job in &settings.jobs {
        let recent = store.runs(Some(&job.name), None, per_job)?;
        // A later run that went through (not held) supersedes earlier holds.
        let cleared =
            recent.iter().find(|r| r.outcome.as_deref().is_some_and(|o| o != "held")).map(|r| r.id);
        for r in recent {
            if r.consumed_by.is_some() || cleared.is_some_and(|c| c > r.id) {
                continue;
            }
            let Some(hold) = hold_view(&r) else { continue };
            let approvals = store.approvals(r.id)?;
            runs.push(HeldRun { run: summary(store, r)?, hold, approvals });
        }
    }
    runs.sort_by_key(|h| std::cmp::Reverse(h.run.id));
    Ok(HeldView { runs })
}

/// Recent webhook events.
pub fn webhook(daemon: &Daemon) -> Result<WebhookView, ApiError> {
    let enabled = daemon.settings().serve.webhook.is_some();
    Ok(WebhookView { enabled, events: daemon.events().recent(RECENT_EVENTS)? })
}

/// Run `f` with a read connection to the state store, on a blocking thread.
pub async fn with_store<T, F>(daemon: &Arc<Daemon>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Settings, &dyn StateStore) -> Result<T, ApiError> + Send + 'static,
{
    let settings = daemon.settings();
    tokio::task::spawn_blocking(move || {
        let store = crate::state::open_read_only(&settings.state)?;
        f(&settings, store.as_ref())
    })
    .await
    .map_err(|e| ApiError::Join(e.to_string()))?
}

/// `GET /v1/jobs`.
pub async fn get_jobs(State(daemon): State<Arc<Daemon>>) -> Result<Json<JobsView>, ApiError> {
    with_store(&daemon, |s, store| jobs(s, store, Utc::now())).await.map(Json)
}

/// `GET /v1/runs?job=&limit=&before=`.
pub async fn get_runs(
    State(daemon): State<Arc<Daemon>>,
    Query(params): Query<RunsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let runs = with_store(&daemon, move |_, store| runs(store, &params)).await?;
    let next_before = runs.last().map(|r| r.id);
    Ok(Json(serde_json::json!({ "runs": runs, "next_before": next_before })))
}

/// `GET /v1/runs/{id}?q=&after=&decision=&limit=`.
pub async fn get_run(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<RunId>,
    Query(params): Query<DecisionParams>,
) -> Result<Json<RunDetail>, ApiError> {
    let query = params.query()?;
    with_store(&daemon, move |s, store| {
        let show = s.serve.ui.as_ref().is_some_and(|u| u.show_profiles);
        run_detail(store, id, &query, show)
    })
    .await
    .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::batch::SessionKind;
    use crate::okta::model::SessionStatus;
    use crate::okta::session::SessionOutcome;
    use crate::state::sqlite::SqliteStore;
    use crate::sync::report::{JobOutcome, SyncMode};

    /// A report with every part the run page reads filled in, as a run writes it.
    fn report() -> JobReport {
        let mut r = JobReport::named("hr", "0oasource");
        r.outcome = JobOutcome::Failed;
        r.mode = SyncMode { full: true, reason: Some("--full".into()) };
        r.error = Some("session s2 (delete) did not complete: okta answered 400".into());
        r.released_by = Some("the approval of run 3".into());
        r.counts.read = 120;
        r.counts.upserted = 100;
        r.counts.not_imported = 7;
        let outcome = |id: &str, status, requests, error: Option<&str>| SessionOutcome {
            id: Some(id.into()),
            kind: SessionKind::Upsert,
            requests,
            profiles: requests * 50,
            final_status: Some(status),
            error: error.map(str::to_string),
            note: None,
            spacing_wait_ms: 0,
            duration_ms: 1_234,
            cancelled_untriggerable: false,
            replays: 0,
            replayed_session_ids: Vec::new(),
            okta_error: error.map(|_| crate::okta::error::OktaErrorDetail {
                status: Some(400),
                error_code: "E0000001".into(),
                ..Default::default()
            }),
            max_in_flight: 0,
        };
        let session = |kind, upserts, deletes, outcome| SessionReport {
            kind,
            planned_requests: 2,
            planned_upserts: upserts,
            planned_deletes: deletes,
            planned_groups: 0,
            planned_memberships: 0,
            planned_membership_removals: 0,
            planned_group_deletions: 0,
            largest_request_bytes: 1_000,
            outcome,
        };
        r.sessions = vec![
            session(
                SessionKind::Upsert,
                100,
                0,
                Some(outcome("s1", SessionStatus::Completed, 2, None)),
            ),
            session(
                SessionKind::Delete,
                0,
                7,
                Some(outcome("s2", SessionStatus::Error, 1, Some("okta answered 400"))),
            ),
            session(SessionKind::Delete, 0, 3, None),
        ];
        r
    }

    #[test]
    fn the_stored_report_reads_back_as_the_type_that_wrote_it() {
        let written = serde_json::to_value(report()).unwrap();
        let read: JobReport = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(read).unwrap(), written);
    }

    #[test]
    fn the_run_page_shows_what_the_run_wrote() {
        let mut store = SqliteStore::in_memory(false).unwrap();
        let at = Utc::now();
        let id = store.begin_run("hr", at).unwrap();
        let json = serde_json::to_string(&report()).unwrap();
        store.finish_run(id, "failed", &json, None, at).unwrap();
        let query = DecisionQuery { limit: 10, ..DecisionQuery::default() };
        let d = run_detail(&store, id, &query, false).unwrap();
        assert!(d.full);
        assert_eq!(d.mode_reason.as_deref(), Some("--full"));
        assert_eq!(d.error, report().error);
        assert_eq!(d.released_by.as_deref(), Some("the approval of run 3"));
        let counts = d.report_counts.unwrap();
        assert_eq!((counts.read, counts.upserted, counts.not_imported), (120, 100, 7));
        let s: Vec<(Option<&str>, &str, &str, u64)> = d
            .sessions
            .iter()
            .map(|s| (s.id.as_deref(), s.kind.as_str(), s.final_status.as_str(), s.requests))
            .collect();
        assert_eq!(
            s,
            vec![
                (Some("s1"), "upsert", "COMPLETED", 2),
                (Some("s2"), "delete", "ERROR", 1),
                (None, "delete", "not sent", 2),
            ]
        );
        assert_eq!(d.sessions[1].error.as_deref(), Some("okta answered 400"));
        assert_eq!(
            d.sessions[1].okta_error.as_ref().map(|e| e.error_code.as_str()),
            Some("E0000001")
        );
        assert_eq!(d.sessions[0].duration_ms, Some(1_234));
    }
}
