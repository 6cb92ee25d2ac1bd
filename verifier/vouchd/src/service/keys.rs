//! The key provider service's runtime: a [`vouch_keyprovider::KeyProvider`] per configured
//! provider, built from the store on first use and kept (with its primary-key cache) until the
//! provider's configuration changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vouch_keyprovider::{Clock, KeyProvider, KeyRef, ProviderConfig, SystemClock, Wrapping};
use vouch_kmip::{Endpoint, KeyServer, ProtocolVersion};

use super::auth::deny;
use super::{AppState, Error, KeyFailure};
use crate::jwt::AttestationClaims;
use crate::store::{
    self, Host, HostState, KeyProviderRecord, KeyServerRecord, Store, WrappingMode,
};

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
    ) -> Result<Arc<KeyProvider>, Error> {
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
        .ok_or_else(|| Error::NotFound(format!("key provider {name} not found")))?;
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
    ) -> Result<KeyProvider, Error> {
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
        .map_err(|e| Error::BadRequest(e.to_string()))
    }
}

fn seconds(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Parses `host:port` or `[v6]:port`.
pub fn endpoint(s: &str) -> Result<Endpoint, Error> {
    let bad = || Error::BadRequest(format!("endpoint '{s}' is not host:port"));
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
pub fn key_server(record: &KeyServerRecord) -> Result<KeyServer, Error> {
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
    .map_err(|e| Error::BadRequest(format!("key server {}: {e}", record.name)))
}

/// A key provider failure as the service's error: the kind is the error code, so a client
/// tells "key server unreachable" from "key revoked" without reading the text.
pub fn provider_error(e: &vouch_keyprovider::Error) -> Error {
    use vouch_keyprovider::Error as E;
    let failure = match e {
        E::Unreachable { .. } => KeyFailure::Unavailable,
        E::KeyRevoked { .. } | E::KeyUnusable { .. } => KeyFailure::Conflict,
        E::KeyServer { .. } => KeyFailure::KeyServer,
        E::UnknownKey { .. }
        | E::WrongProvider { .. }
        | E::Format(_)
        | E::Authentication
        | E::TooLarge(_) => KeyFailure::BadRequest,
        _ => return Error::Internal(e.to_string()),
    };
    Error::KeyProvider {
        failure,
        code: e.kind(),
        reason: e.to_string(),
    }
}

/// A KMIP failure outside a provider (creating a key): unreachable or the key server's error.
pub fn kmip_error(key_server: &str, e: &vouch_kmip::Error) -> Error {
    let (failure, code) = if e.is_unavailable() {
        (KeyFailure::Unavailable, "key_server_unreachable")
    } else {
        (KeyFailure::KeyServer, "key_server_error")
    };
    Error::KeyProvider {
        failure,
        code,
        reason: format!("key server {key_server}: {e}"),
    }
}

/// Proof that a host may use keys now: its attestation token (a JWT this vouchd signed,
/// unexpired), the host still attested in the store with the token's attestation as its
/// latest, and its cluster configured with a key provider. Only [`authorise_host`] makes one.
#[derive(Debug)]
pub struct AttestedHost {
    pub host: Host,
    pub claims: AttestationClaims,
    pub provider: String,
}

/// The checks of [`AttestedHost`], from a token; the HTTP API and the agent link share them.
pub async fn authorise_host(
    state: &AppState,
    token: &str,
    what: &str,
) -> Result<AttestedHost, Error> {
    let now = crate::now();
    let claims = state.signer.verify(token, now).map_err(|why| {
        deny(
            state,
            "anonymous",
            what,
            Error::Unauthenticated(format!("attestation token refused: {why}")),
        )
    })?;
    let who = claims.sub.clone();
    let forbidden = |why: String| deny(state, &who, what, Error::Forbidden(why));
    let ek = claims.sub.clone();
    let host = store::run(&state.store, move |s| s.get_host(&ek))
        .await?
        .ok_or_else(|| forbidden(format!("host {} is not known", claims.sub)))?;
    if host.cluster != claims.cluster {
        return Err(forbidden(format!(
            "host {} is no longer in cluster {}",
            host.ek_hash, claims.cluster
        )));
    }
    if host.state != HostState::Attested || host.valid_until.is_some_and(|t| t <= now) {
        return Err(forbidden(format!(
            "host {} is not attested now (state {})",
            host.ek_hash,
            host.state.as_str()
        )));
    }
    // The token must come from the host's latest attestation: a token of an earlier one (of
    // a host since removed and added again, or attested since) is refused.
    let ek = host.ek_hash.clone();
    let latest = store::run(&state.store, move |s| s.list_attestations(&ek, 1))
        .await?
        .into_iter()
        .next();
    let current = latest.is_some_and(|a| {
        a.attested
            && a.nonce.as_deref() == Some(claims.attestation.as_str())
            && a.software_version.as_deref() == Some(claims.software_version.as_str())
    });
    if !current {
        return Err(forbidden(format!(
            "the token of host {} is not from its current attestation",
            host.ek_hash
        )));
    }
    let c = host.cluster.clone();
    let provider = store::run(&state.store, move |s| s.cluster_key_provider(&c))
        .await?
        .ok_or_else(|| {
            forbidden(format!(
                "cluster {} is not configured with a key provider",
                host.cluster
            ))
        })?;
    Ok(AttestedHost {
        host,
        claims,
        provider,
    })
}
