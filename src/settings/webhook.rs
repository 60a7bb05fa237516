//! `serve.webhook:`: how HR systems authenticate to the webhook, and its limits.
//!
//! (Skeleton: the webhook helper fills this in.)

use serde::Deserialize;

/// `serve.webhook:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawWebhook {}

/// The keys of `serve.webhook:` (for unknown-key suggestions).
pub const WEBHOOK_KEYS: &[&str] = &[];

/// `serve.webhook:`, resolved.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {}

/// Resolve `serve.webhook:` (found at `key`), pushing every problem to `diags`.
pub fn resolve(
    raw: RawWebhook,
    key: &str,
    index: &crate::diag::YamlIndex,
    diags: &mut Vec<crate::diag::Diagnostic>,
) -> Option<WebhookSettings> {
    let _ = (raw, key, index, diags);
    Some(WebhookSettings {})
}
