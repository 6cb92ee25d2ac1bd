//! The deep health check (`GET /v1/health`, `vouch health --deep`): the store answers, each
//! key server's endpoints accept a connection, and the certificates vouchd depends on (the
//! API's TLS certificate in service, the key servers' client and CA certificates, the clusters'
//! TPM CAs) with their expiry, and a retired token-signing key with the end of its grace
//! period. The same figures are exported as metrics ([`refresh_metrics`]).

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use vouch_api::types::{CertificateHealth, DeepHealth, EndpointHealth, KeyServerHealth};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::AppState;
use crate::store::{self, KeyServerRecord};

/// How long one endpoint may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DAY: i64 = 86_400;

/// The certificate's subject and notAfter.
fn expiry(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some((
        cert.subject().to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

fn certificates(what: &str, ders: &[Vec<u8>], now: i64, out: &mut Vec<CertificateHealth>) {
    for der in ders {
        let (subject, not_after) =
            expiry(der).unwrap_or_else(|| ("(does not parse)".into(), i64::MIN / 2));
        out.push(CertificateHealth {
            what: what.to_owned(),
            subject,
            not_after,
            days_left: not_after.saturating_sub(now).div_euclid(DAY),
        });
    }
}

fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|d| d.to_vec())
        .collect()
}

/// Tries each endpoint of `server` once.
pub(crate) async fn endpoints(server: &KeyServerRecord) -> KeyServerHealth {
    let mut out = Vec::with_capacity(server.endpoints.len());
    for endpoint in &server.endpoints {
        let tried =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await;
        let error = match tried {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {CONNECT_TIMEOUT:?}")),
        };
        out.push(EndpointHealth {
            endpoint: endpoint.clone(),
            reachable: error.is_none(),
            error,
        });
    }
    KeyServerHealth {
        name: server.name.clone(),
        endpoints: out,
    }
}

/// How often vouchd runs the deep health check for its metrics (`GET /v1/health` also
/// refreshes them).
pub const METRICS_PERIOD: Duration = Duration::from_secs(60);

/// Runs every check and records the outcome in the metrics.
pub async fn deep(state: &AppState) -> DeepHealth {
    let health = check(state).await;
    state.metrics.health.record(&health, crate::now());
    health
}

/// Runs the deep health check every [`METRICS_PERIOD`] (the first at once) for the
/// metrics, until `state.shutdown` is cancelled.
pub async fn refresh_metrics(state: AppState) {
    let mut tick = tokio::time::interval(METRICS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        let health = deep(&state).await;
        if health.status != "ok" {
            tracing::warn!(store = %health.store, "the deep health check is degraded; `vouch health --deep` says why");
        }
    }
}

/// Runs every check.
async fn check(state: &AppState) -> DeepHealth {
    let now = crate::now();
    let mut certs = Vec::new();
    match state.tls.as_ref().and_then(|live| live.current()) {
        // The certificate in service (which a failed reload leaves in place).
        Some(info) => certs.push(CertificateHealth {
            what: "tls".to_owned(),
            subject: info.subject,
            not_after: info.not_after,
            days_left: info.not_after.saturating_sub(now).div_euclid(DAY),
        }),
        None => {
            let tls = state
                .config
                .tls_cert
                .clone()
                .unwrap_or_else(|| state.config.data_dir.join("api-cert.pem"));
            if let Ok(pem) = std::fs::read_to_string(&tls) {
                certificates(
                    "tls",
                    &pem_ders(&pem).into_iter().take(1).collect::<Vec<_>>(),
                    now,
                    &mut certs,
                );
            }
        }
    }
    // A retired token-signing key in its grace period: when it leaves the JWKS.
    for key in state.signer.describe() {
        if let Some(until) = key.grace_until.filter(|until| *until > now) {
            certs.push(CertificateHealth {
                what: format!("token-signing:{}", key.kid),
                subject: "retired token-signing key (in the JWKS until its grace period ends)"
                    .to_owned(),
                not_after: until,
                days_left: until.saturating_sub(now).div_euclid(DAY),
            });
        }
    }
    let stored = store::run(&state.store, |s| {
        let servers = s.list_key_servers()?;
        let mut cas = Vec::new();
        for cluster in s.list_clusters()? {
            let ders: Vec<Vec<u8>> = s
                .list_ca_certs(&cluster.name)?
                .into_iter()
                .map(|c| c.der)
                .collect();
            cas.push((cluster.name, ders));
        }
        Ok((servers, cas))
    })
    .await;
    let (store_status, servers) = match stored {
        Ok((servers, cas)) => {
            for (cluster, ders) in cas {
                certificates(&format!("tpm-ca:{cluster}"), &ders, now, &mut certs);
            }
            ("ok".to_owned(), servers)
        }
        Err(e) => (e.to_string(), Vec::new()),
    };
    let mut key_servers = Vec::with_capacity(servers.len());
    for server in &servers {
        certificates(
            &format!("kms-client:{}", server.name),
            &pem_ders(&server.client_certificate),
            now,
            &mut certs,
        );
        certificates(
            &format!("kms-ca:{}", server.name),
            &pem_ders(&server.ca_certificates),
            now,
            &mut certs,
        );
        key_servers.push(endpoints(server).await);
    }
    certs.sort_by_key(|c| c.not_after);
    let degraded = store_status != "ok"
        || key_servers
            .iter()
            .any(|k| !k.endpoints.iter().any(|e| e.reachable))
        || certs.iter().any(|c| c.not_after <= now);
    DeepHealth {
        status: if degraded { "degraded" } else { "ok" }.into(),
        store: store_status,
        key_servers,
        certificates: certs,
    }
}
