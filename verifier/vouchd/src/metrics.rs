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
    /// The deep health check's latest outcome (see [`HealthMetrics`]).
    pub health: HealthMetrics,
    /// Key servers' and key providers' health ([`KeyServerMetrics`]).
    pub key_servers: KeyServerMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vouchd");
        let key_servers = KeyServerMetrics::register(&mut registry);
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
        let health = HealthMetrics::register(&mut registry);
        Self {
            health,
            registry,
            http_requests,
            auth_denials,
            agent_sessions,
            agent_sessions_total,
            agent_sessions_ended,
            attestations,
            tokens_issued,
            sweeps,
            key_servers,
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

/// A certificate vouchd depends on.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `tls`, `kms-client`, `kms-ca`, `tpm-ca` or `token-signing`.
    pub kind: String,
    /// The key server, cluster or key id it belongs to (`api` for the TLS certificate).
    pub name: String,
    pub subject: String,
}

/// One component of the deep health check.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// `store`, `key_server` or `certificates`.
    pub component: String,
    /// The key server's name; empty for the others.
    pub name: String,
}

/// The deep health check as metrics (`GET /v1/health` says the same as JSON): refreshed
/// periodically by vouchd and on each `GET /v1/health`.
#[derive(Debug, Default)]
pub struct HealthMetrics {
    /// notAfter of each certificate, Unix seconds.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// 1 when the component is healthy, 0 otherwise.
    pub ok: Family<ComponentLabels, Gauge>,
    /// When the check last ran, Unix seconds.
    pub checked: Gauge,
}

impl HealthMetrics {
    fn register(registry: &mut Registry) -> Self {
        let health = Self::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of each certificate vouchd depends on (Unix seconds), as the deep health check saw it",
            health.certificate_expiry.clone(),
        );
        registry.register(
            "health_ok",
            "1 when a component of the deep health check is healthy, 0 when not",
            health.ok.clone(),
        );
        registry.register(
            "health_checked_timestamp_seconds",
            "When the deep health check behind vouchd_health_ok last ran (Unix seconds)",
            health.checked.clone(),
        );
        health
    }

    /// Replaces the figures with those of `deep`, checked at `now`.
    pub fn record(&self, deep: &vouch_api::types::DeepHealth, now: i64) {
        self.certificate_expiry.clear();
        for cert in &deep.certificates {
            let (kind, name) = cert.what.split_once(':').unwrap_or((&cert.what, "api"));
            self.certificate_expiry
                .get_or_create(&CertificateLabels {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    subject: cert.subject.clone(),
                })
                .set(cert.not_after);
        }
        self.ok.clear();
        let set = |component: &str, name: &str, ok: bool| {
            self.ok
                .get_or_create(&ComponentLabels {
                    component: component.to_owned(),
                    name: name.to_owned(),
                })
                .set(i64::from(ok));
        };
        set("store", "", deep.store == "ok");
        for server in &deep.key_servers {
            set(
                "key_server",
                &server.name,
                server.endpoints.iter().any(|e| e.reachable),
            );
        }
        set(
            "certificates",
            "",
            deep.certificates.iter().all(|c| c.not_after > now),
        );
        self.checked.set(now);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub kms: String,
    /// `host:port`, as configured.
    pub endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Key-provider health, as last seen: each key server endpoint's reachability (set whenever
/// vouchd tries the endpoints: `GET /v1/key-providers/{name}/status`, `vouch provider
/// status`) and each provider's last failure (a key operation, or its status check).
#[derive(Debug, Clone, Default)]
pub struct KeyServerMetrics {
    /// `vouchd_key_server_up{kms, endpoint}`: 1 reachable, 0 not, when last tried.
    pub up: Family<EndpointLabels, Gauge>,
    /// `vouchd_key_provider_last_error_timestamp_seconds{provider}`: when it last failed.
    pub last_error: Family<ProviderLabels, Gauge>,
    /// `vouchd_key_provider_key_active{provider}`: 1 when its primary key was active at the
    /// last check, 0 when not.
    pub key_active: Family<ProviderLabels, Gauge>,
}

impl KeyServerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "key_server_up",
            "Whether a key server endpoint (replica) accepted a connection when last tried",
            m.up.clone(),
        );
        registry.register(
            "key_provider_last_error_timestamp_seconds",
            "When a key provider last failed (Unix seconds)",
            m.last_error.clone(),
        );
        registry.register(
            "key_provider_key_active",
            "Whether a key provider's primary key was active at its last check",
            m.key_active.clone(),
        );
        m
    }

    /// Records whether `endpoint` of `kms` was reachable.
    pub fn endpoint(&self, kms: &str, endpoint: &str, reachable: bool) {
        self.up
            .get_or_create(&EndpointLabels {
                kms: kms.into(),
                endpoint: endpoint.into(),
            })
            .set(i64::from(reachable));
    }

    /// Records a failure of `provider` at `at`.
    pub fn failed(&self, provider: &str, at: i64) {
        self.last_error
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .set(at);
    }

    /// Records whether `provider`'s primary key was active at its check.
    pub fn key_checked(&self, provider: &str, active: bool) {
        self.key_active
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .set(i64::from(active));
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

    #[test]
    fn key_server_health_is_exported() {
        let m = Metrics::new();
        m.key_servers.endpoint("kms-1", "127.0.0.1:5696", true);
        m.key_servers.endpoint("kms-1", "127.0.0.2:5696", false);
        m.key_servers.failed("p1", 1_700_000_000);
        m.key_servers.key_checked("p1", false);
        let text = m.render();
        for line in [
            "vouchd_key_server_up{kms=\"kms-1\",endpoint=\"127.0.0.1:5696\"} 1",
            "vouchd_key_server_up{kms=\"kms-1\",endpoint=\"127.0.0.2:5696\"} 0",
            "vouchd_key_provider_last_error_timestamp_seconds{provider=\"p1\"} 1700000000",
            "vouchd_key_provider_key_active{provider=\"p1\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
