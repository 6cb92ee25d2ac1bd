//! The deep health check (`GET /v1/health`, `vouch health --deep`): the store answers, each
//! key server's endpoints accept a connection, and the certificates vouchd depends on (the
//! API's TLS certificate, the key servers' client and CA certificates, the clusters' TPM CAs)
//! with their expiry.

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

/// Runs every check.
pub async fn deep(state: &AppState) -> DeepHealth {
    let now = crate::now();
    let mut certs = Vec::new();
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
