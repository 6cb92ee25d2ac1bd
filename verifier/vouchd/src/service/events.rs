//! Events: every configuration change and host state change is logged, stored (the
//! `/v1/events` feed) and, when `webhook_url` is configured, POSTed as JSON to it.
//!
//! Webhook delivery is best effort: one attempt per event, with a timeout, off the request's
//! path; a failure is logged. The stored feed is the record of truth.

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

/// Logs, stores and (if configured) posts an event.
pub async fn record(state: &AppState, kind: &str, subject: &str, detail: serde_json::Value) {
    tracing::info!(kind, subject, %detail, "event");
    let at = crate::now();
    let (k, s, d) = (kind.to_owned(), subject.to_owned(), detail.clone());
    let id = match store::run(&state.store, move |st| st.add_event(at, &k, &s, &d)).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, kind, subject, "cannot record an event");
            return;
        }
    };
    if let Some(hook) = &state.webhook {
        let hook = std::sync::Arc::clone(hook);
        let event = Event {
            id,
            at,
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            detail,
        };
        tokio::spawn(async move { hook.deliver(&event).await });
    }
}
