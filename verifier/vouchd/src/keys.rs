//! The key provider service's runtime: a [`vouch_keyprovider::KeyProvider`] per configured
//! provider, built from the store on first use and kept (with its primary-key cache) until the
//! provider's configuration changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vouch_keyprovider::{Clock, KeyProvider, KeyRef, ProviderConfig, SystemClock, Wrapping};
use vouch_kmip::{Endpoint, KeyServer, ProtocolVersion};

use crate::api::error::ApiError;
use crate::store::{self, KeyProviderRecord, KeyServerRecord, Store, WrappingMode};

/// How long vouchd waits for one key server replica.
pub const KMIP_TIMEOUT: Duration = Duration::from_secs(10);

/// The providers in use.
#[derive(Debug)]
pub struct KeyService {
    providers: tokio::sync::Mutex<HashMap<String, Arc<KeyProvider>>>,
    clock: Arc<dyn Clock>,
}

impl Default for KeyService {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock::new()))
    }
}

impl KeyService {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            providers: tokio::sync::Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// The provider named `name`, built from the store if not yet in use.
    pub async fn provider(
        &self,
        store: &Arc<dyn Store>,
        name: &str,
    ) -> Result<Arc<KeyProvider>, ApiError> {
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(name) {
            return Ok(Arc::clone(p));
        }
        let n = name.to_owned();
        let (record, server) = store::run(store, move |s| {
            let Some(p) = s.get_key_provider(&n)? else {
                return Ok(None);
            };
            let server = s.get_key_server(&p.key_server)?;
            Ok(server.map(|k| (p, k)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key provider {name} not found")))?;
        let provider = Arc::new(self.build(&server, &record)?);
        providers.insert(name.to_owned(), Arc::clone(&provider));
        Ok(provider)
    }

    /// Forgets a provider (its configuration changed or it was deleted); its cached keys are
    /// zeroized when the last request using it ends.
    pub async fn forget(&self, name: &str) {
        self.providers.lock().await.remove(name);
    }

    /// A provider from its records (not kept).
    pub fn build(
        &self,
        server: &KeyServerRecord,
        record: &KeyProviderRecord,
    ) -> Result<KeyProvider, ApiError> {
        let kms = key_server(server)?;
        let wrapping = match record.wrapping {
            WrappingMode::Remote => Wrapping::Remote,
            WrappingMode::Local => Wrapping::Local {
                refresh_after: seconds(record.refresh_seconds),
                lifetime: seconds(record.lifetime_seconds),
            },
        };
        KeyProvider::new(
            ProviderConfig {
                name: record.name.clone(),
                key_server: server.name.clone(),
                primary: KeyRef {
                    id: record.primary_key_id.clone(),
                    version: record.primary_key_version,
                },
                retired: record
                    .retired
                    .iter()
                    .map(|k| KeyRef {
                        id: k.id.clone(),
                        version: k.version,
                    })
                    .collect(),
                wrapping,
            },
            kms,
            Arc::clone(&self.clock),
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

fn seconds(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Parses `host:port` or `[v6]:port`.
pub fn endpoint(s: &str) -> Result<Endpoint, ApiError> {
    let bad = || ApiError::BadRequest(format!("endpoint '{s}' is not host:port"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.len() > 253 || port == 0 {
        return Err(bad());
    }
    Ok(Endpoint::new(host, port))
}

/// The KMIP client of a key server record: KMIP 1.4 (AES-GCM needs its associated data and tag).
pub fn key_server(record: &KeyServerRecord) -> Result<KeyServer, ApiError> {
    let endpoints = record
        .endpoints
        .iter()
        .map(|e| endpoint(e))
        .collect::<Result<Vec<_>, _>>()?;
    KeyServer::new(
        endpoints,
        record.client_certificate.as_bytes(),
        record.client_key.as_bytes(),
        record.ca_certificates.as_bytes(),
    )
    .map(|k| {
        k.with_version(ProtocolVersion::V1_4)
            .with_timeout(KMIP_TIMEOUT)
    })
    .map_err(|e| ApiError::BadRequest(format!("key server {}: {e}", record.name)))
}

/// A key provider failure as an API answer: the kind is the error code, so a client tells
/// "key server unreachable" (503) from "key revoked" (409) without reading the text.
pub fn api_error(e: &vouch_keyprovider::Error) -> ApiError {
    use axum::http::StatusCode;
    use vouch_keyprovider::Error as E;
    let status = match e {
        E::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        E::KeyRevoked { .. } | E::KeyUnusable { .. } => StatusCode::CONFLICT,
        E::KeyServer { .. } => StatusCode::BAD_GATEWAY,
        E::UnknownKey { .. }
        | E::WrongProvider { .. }
        | E::Format(_)
        | E::Authentication
        | E::TooLarge(_) => StatusCode::BAD_REQUEST,
        _ => return ApiError::Internal(e.to_string()),
    };
    ApiError::KeyProvider {
        status,
        code: e.kind(),
        reason: e.to_string(),
    }
}

/// A KMIP failure outside a provider (creating a key): unreachable (503) or the key server's
/// error (502).
pub fn kmip_error(key_server: &str, e: &vouch_kmip::Error) -> ApiError {
    use axum::http::StatusCode;
    let (status, code) = if e.is_unavailable() {
        (StatusCode::SERVICE_UNAVAILABLE, "key_server_unreachable")
    } else {
        (StatusCode::BAD_GATEWAY, "key_server_error")
    };
    ApiError::KeyProvider {
        status,
        code,
        reason: format!("key server {key_server}: {e}"),
    }
}
