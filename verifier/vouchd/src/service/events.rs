//! Events: every configuration change and host state change is logged, stored (the
//! `/v1/events` feed) and, when `webhook_url` is configured, POSTed as JSON to it.
//!
//! Webhook delivery is best effort: one attempt per event, with a timeout, off the request's
//! path; a failure is logged. The stored feed is the record of truth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::AppState;
use crate::store::{self, Event};

/// How long one webhook delivery may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook's client and target.
#[derive(Debug)]
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Webhook {
    /// A webhook posting to `url` (http or https; https is verified with the platform's
    /// roots).
    pub fn new(url: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("webhook_url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("webhook_url must be http or https".into());
        }
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent(concat!("vouchd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self { client, url })
    }

    async fn deliver(&self, event: &Event) {
        match self.client.post(self.url.clone()).json(event).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), id = event.id, "webhook refused the event")
            }
            Err(e) => tracing::warn!(error = %e, id = event.id, "webhook delivery failed"),
        }
    }
}

/// The most keys a [`RateLimit`] tracks; past it, nothing more is allowed until windows
/// expire (the log still has every refusal).
const RATE_LIMIT_KEYS: usize = 10_000;

/// At most so many events per key (a peer's address) and minute, so that an unauthenticated
/// peer cannot flood the event feed.
#[derive(Debug, Default)]
pub struct RateLimit {
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimit {
    /// Whether one more event for `key` fits `per_minute` at `now` (Unix seconds); counts it
    /// if so.
    pub fn allow(&self, key: &str, per_minute: u32, now: i64) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        if windows.len() >= RATE_LIMIT_KEYS {
            windows.retain(|_, (start, _)| now.saturating_sub(*start) < 60);
        }
        if windows.len() >= RATE_LIMIT_KEYS && !windows.contains_key(key) {
            return false;
        }
        let window = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.saturating_sub(window.0) >= 60 {
            *window = (now, 0);
        }
        if window.1 >= per_minute {
            return false;
        }
        window.1 = window.1.saturating_add(1);
        true
    }
}

/// Logs and (if configured) posts an event already stored.
pub fn announce(state: &AppState, event: Event) {
    tracing::info!(kind = %event.kind, subject = %event.subject, detail = %event.detail, "event");
    if let Some(hook) = &state.webhook {
        let hook = std::sync::Arc::clone(hook);
        tokio::spawn(async move { hook.deliver(&event).await });
    }
}

/// Logs, stores and (if configured) posts an event.
pub async fn record(state: &AppState, kind: &str, subject: &str, detail: serde_json::Value) {
    let at = crate::now();
    let (k, s, d) = (kind.to_owned(), subject.to_owned(), detail.clone());
    match store::run(&state.store, move |st| st.add_event(at, &k, &s, &d)).await {
        Ok(id) => announce(
            state,
            Event {
                id,
                at,
                kind: kind.to_owned(),
                subject: subject.to_owned(),
                detail,
            },
        ),
        Err(e) => tracing::error!(error = %e, kind, subject, %detail, "cannot record an event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_counts_per_key_and_minute() {
        let limit = RateLimit::default();
        assert!(limit.allow("a", 2, 100));
        assert!(limit.allow("a", 2, 110));
        assert!(!limit.allow("a", 2, 120));
        assert!(limit.allow("b", 2, 120));
        assert!(limit.allow("a", 2, 160));
    }
}
