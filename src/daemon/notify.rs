//! Delivering [`Notice`]s to the `notify.targets` ([`crate::settings::notify`]): a
//! Slack-compatible incoming webhook (`{"text": ...}`), or a JSON document signed with HMAC
//! like our own webhook (`X-Xaas-Timestamp`, `X-Xaas-Signature: v1=...`, see
//! [`super::auth::sign`]).
//!
//! Delivery never blocks or fails an import: [`Notifier::send`] only spawns a task per target,
//! each tries `notify.attempts` times (each within `notify.timeout_secs`, 1 s, 2 s, 4 s...
//! apart) and then logs a warning and gives up. The texts carry job names, run ids, counts,
//! failure kinds and links, never a user, a record, an error text or a secret.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::watch::{Notice, NoticeKind};
use crate::settings::notify::{NotifySettings, Target};

/// Deliveries in flight at once; more wait their turn.
const MAX_IN_FLIGHT: usize = 16;

/// Sends notices in the background. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("xaas/", env!("CARGO_PKG_VERSION")))
            // A notification target never gets our credentials by a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http, tasks: TaskTracker::new(), permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }
    }

    /// Deliver `notices` to every target of `settings`, in the background (must be called
    /// within a tokio runtime). Returns at once.
    pub fn send(&self, settings: Option<&NotifySettings>, notices: Vec<Notice>) {
        let Some(settings) = settings else { return };
        for notice in notices {
            info!(job = %notice.job, kind = notice.kind.as_str(), run_id = notice.run_id, targets = settings.targets.len(), "notification");
            for target in &settings.targets {
                let body = render(target, &notice, settings.public_url.as_deref());
                let delivery = Delivery {
                    http: self.http.clone(),
                    target: target.clone(),
                    body,
                    kind: notice.kind,
                    job: notice.job.clone(),
                    timeout: settings.timeout,
                    attempts: settings.attempts,
                };
                let permits = self.permits.clone();
                self.tasks.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    delivery.run().await;
                });
            }
        }
    }

    /// Wait up to `within` for the deliveries under way (a one-shot `xaas run` before it
    /// exits); the rest are abandoned.
    pub async fn flush(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait()).await.is_err() {
            warn!(within = ?within, "notifications still under way were abandoned");
        }
        self.tasks.reopen();
    }
}

struct Delivery {
    http: reqwest::Client,
    target: Target,
    body: Vec<u8>,
    kind: NoticeKind,
    job: String,
    timeout: Duration,
    attempts: u32,
}

impl Delivery {
    async fn run(self) {
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=self.attempts {
            match self.attempt().await {
                Ok(()) => {
                    debug!(target = %self.target.describe(), job = %self.job, kind = self.kind.as_str(), attempt, "notification delivered");
                    crate::telemetry::notification(self.kind.as_str(), "delivered");
                    return;
                }
                Err(e) if attempt == self.attempts => {
                    warn!(target = %self.target.describe(), job = %self.job, kind = self.kind.as_str(), attempts = self.attempts, error = %e, "notification not delivered: giving up");
                    crate::telemetry::notification(self.kind.as_str(), "failed");
                    return;
                }
                Err(e) => {
                    debug!(target = %self.target.describe(), attempt, error = %e, "notification failed: retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// One attempt: the error names the target's kind and host, never its URL (a Slack URL
    /// is a secret).
    async fn attempt(&self) -> Result<(), String> {
        let mut req = self
            .http
            .post(self.target.url())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone());
        if let Target::Webhook { secret, .. } = &self.target {
            let ts = chrono::Utc::now().timestamp();
            let signature = super::auth::sign(secret.expose_secret().as_bytes(), ts, &self.body);
            req = req
                .header(super::auth::TIMESTAMP_HEADER, ts.to_string())
                .header(super::auth::SIGNATURE_HEADER, signature)
                .header("x-xaas-event", self.kind.as_str());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered http {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err(format!("no answer within {:?}", self.timeout)),
            Err(e) if e.is_connect() => Err("cannot connect".to_string()),
            Err(_) => Err("the request failed".to_string()),
        }
    }
}

/// The body for `target`.
fn render(target: &Target, notice: &Notice, public_url: Option<&str>) -> Vec<u8> {
    let links = Links::of(notice, public_url);
    let text = text(notice, &links);
    let doc = match target {
        Target::Slack { .. } => serde_json::json!({ "text": text }),
        Target::Webhook { .. } => {
            let mut doc = serde_json::to_value(notice).unwrap_or_default();
            doc["summary"] = text.into();
            if let Some(hint) = notice.failure.map(|f| f.explain()) {
                doc["hint"] = hint.into();
            }
            doc["links"] = serde_json::to_value(&links).unwrap_or_default();
            doc
        }
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[derive(serde::Serialize)]
struct Links {
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approve: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<String>,
}

impl Links {
    fn of(notice: &Notice, base: Option<&str>) -> Links {
        let Some(base) = base else { return Links { run: None, approve: None, jobs: None } };
        let run = notice.run_id.map(|id| format!("{base}/ui/runs/{id}"));
        let approve = match (notice.kind, notice.run_id) {
            (NoticeKind::Held, Some(id)) => Some(format!("{base}/ui/held/{id}/approve")),
            _ => None,
        };
        Links { run, approve, jobs: Some(format!("{base}/ui")) }
    }
}

/// The one-line text (Slack's `text`, the webhook's `summary`).
fn text(n: &Notice, links: &Links) -> String {
    let run = n.run_id.map_or(String::new(), |id| format!("run {id} of "));
    let failure = n.failure.map_or("unknown", |f| f.as_str());
    let hint = n.failure.map_or("", |f| f.explain());
    let mut t = match n.kind {
        NoticeKind::Held => {
            let h = n.held.as_ref();
            let (d, c, read) = h.map_or((0, 0, 0), |h| (h.deactivations, h.creations, h.read));
            let why = h.map(|h| h.reasons.join("; ")).unwrap_or_default();
            format!(
                "xaas: {run}job `{}` was held by a safeguard: it would deactivate {d} and create {c} user(s), {read} record(s) read ({why}). Nothing risky was sent; approve it to let the next run through.",
                n.job
            )
        }
        NoticeKind::Failing => format!(
            "xaas: job `{}` failed {} run(s) in a row ({failure}): {hint}.",
            n.job, n.failures
        ),
        NoticeKind::Recovered => {
            format!("xaas: job `{}` recovered: {run}the job succeeded.", n.job)
        }
        NoticeKind::Quarantined => format!(
            "xaas: job `{}` is quarantined after {} failed run(s) in a row ({failure}): {hint}. Its schedule tries it again at {}; resume it with `xaas approve --job {} --resume` or from the jobs page once fixed.",
            n.job,
            n.failures,
            n.next_attempt.map_or("-".to_string(), |t| t.to_rfc3339()),
            n.job
        ),
    };
    if let Some(link) = links.approve.as_ref().or(links.run.as_ref()) {
        t.push(' ');
        t.push_str(link);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::FailureKind;

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            kind,
            job: "hr".into(),
            identity_source: "0oa1".into(),
            run_id: Some(12),
            at: chrono::Utc::now(),
            failures: 3,
            failure: Some(FailureKind::OktaCredentials),
            held: None,
            next_attempt: None,
        }
    }

    #[test]
    fn slack_gets_text_and_the_webhook_a_document_with_links() {
        let slack = Target::Slack { url: "https://hooks.example.com/T/B/x".to_string().into() };
        let body = render(&slack, &notice(NoticeKind::Failing), Some("https://x.example.com"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("job `hr` failed 3 run(s) in a row (okta_credentials)"), "{text}");
        assert!(text.ends_with("https://x.example.com/ui/runs/12"), "{text}");
        let hook = Target::Webhook { url: "http://h".into(), secret: "s".to_string().into() };
        let body = render(&hook, &notice(NoticeKind::Held), Some("https://x.example.com"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "held");
        assert_eq!(v["run_id"], 12);
        assert_eq!(v["links"]["approve"], "https://x.example.com/ui/held/12/approve");
        let body = render(&hook, &notice(NoticeKind::Recovered), None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["links"], serde_json::json!({}), "no public_url, no links");
    }
}
