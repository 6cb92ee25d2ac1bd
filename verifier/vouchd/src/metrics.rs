//! Prometheus metrics, served as OpenMetrics text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template, not the raw path, to bound cardinality.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// `unauthenticated` or `forbidden`.
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    /// This vouchd's id among the replicas of its database (new at each start).
    pub replica: String,
}

/// Every metric vouchd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub auth_denials: Family<DenialLabels, Counter>,
    pub agent_sessions: Gauge,
    pub agent_sessions_total: Counter,
    pub agent_sessions_ended: Family<ResultLabels, Counter>,
    pub attestations: Family<ResultLabels, Counter>,
    pub tokens_issued: Counter,
    /// Expiry sweeps this vouchd ran (one per period across every replica on the database).
    pub sweeps: Family<ReplicaLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vouchd");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Management API requests by route and status",
            http_requests.clone(),
        );
        let auth_denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "auth_denials",
            "Management API requests refused by authentication or authorisation",
            auth_denials.clone(),
        );
        let agent_sessions = Gauge::default();
        registry.register(
            "agent_sessions_active",
            "Agent sessions open now",
            agent_sessions.clone(),
        );
        let agent_sessions_total = Counter::default();
        registry.register(
            "agent_sessions",
            "Agent sessions accepted",
            agent_sessions_total.clone(),
        );
        let agent_sessions_ended = Family::<ResultLabels, Counter>::default();
        registry.register(
            "agent_sessions_ended",
            "Agent sessions ended, by how",
            agent_sessions_ended.clone(),
        );
        let attestations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "attestations",
            "Attestation verdicts by result",
            attestations.clone(),
        );
        let tokens_issued = Counter::default();
        registry.register(
            "attestation_tokens_issued",
            "Signed attestation tokens issued",
            tokens_issued.clone(),
        );
        let sweeps = Family::<ReplicaLabels, Counter>::default();
        registry.register(
            "expiry_sweeps",
            "Expiry sweeps run by this vouchd, labelled with its replica id (each period is swept by one replica of the database)",
            sweeps.clone(),
        );
        Self {
            registry,
            http_requests,
            auth_denials,
            agent_sessions,
            agent_sessions_total,
            agent_sessions_ended,
            attestations,
            tokens_issued,
            sweeps,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a sweep run by `replica`.
    pub fn swept(&self, replica: &str) {
        self.sweeps
            .get_or_create(&ReplicaLabels {
                replica: replica.into(),
            })
            .inc();
    }

    pub fn denied(&self, kind: &str) {
        self.auth_denials
            .get_or_create(&DenialLabels { kind: kind.into() })
            .inc();
    }

    pub fn session_ended(&self, result: &str) {
        self.agent_sessions_ended
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let m = Metrics::new();
        m.denied("forbidden");
        m.agent_sessions.inc();
        let text = m.render();
        assert!(
            text.contains("vouchd_auth_denials_total{kind=\"forbidden\"} 1"),
            "{text}"
        );
        assert!(text.contains("vouchd_agent_sessions_active 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
