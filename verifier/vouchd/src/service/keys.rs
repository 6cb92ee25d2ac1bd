//! The key provider service's runtime: a [`vouch_keyprovider::KeyProvider`] per configured
//! provider, built from the store on first use and kept (with its primary-key cache) until the
//! provider's configuration changes; and what each key request checks, kept in memory
//! ([`AuthCache`]) so that a request needs neither a signature verification nor a store read
//! while nothing changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vouch_keyprovider::{Clock, KeyProvider, KeyRef, ProviderConfig, SystemClock, Wrapping};
use vouch_kmip::{Endpoint, KeyServer, ProtocolVersion};

use super::auth::deny;
use super::{AppState, Error, KeyFailure};
use crate::jwt::{AttestationClaims, KeyRing};
use crate::store::{
    self, Host, HostState, KeyProviderRecord, KeyServerRecord, Store, WrappingMode,
};

/// How long vouchd waits for one key server replica.
pub const KMIP_TIMEOUT: Duration = Duration::from_secs(10);

/// The providers in use.
#[derive(Debug)]
pub struct KeyService {
    providers: Mutex<HashMap<String, Arc<KeyProvider>>>,
    /// Held while a provider is built from the store, so that one request builds it.
    building: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    /// What the key requests of attested hosts check.
    pub auth: AuthCache,
    /// Each provider's last failure (reason, when), for `provider status`. Only providers
    /// that exist are named, so it stays as small as the configuration.
    last_errors: Mutex<HashMap<String, (String, i64)>>,
}

impl Default for KeyService {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock::new()))
    }
}

impl KeyService {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            providers: Mutex::new(HashMap::new()),
            building: tokio::sync::Mutex::new(()),
            clock,
            auth: AuthCache::default(),
            last_errors: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `provider` (not the caller's fault: the key server's, or the
    /// key's).
    pub fn failed(&self, provider: &str, reason: &str, at: i64) {
        if let Ok(mut errors) = self.last_errors.lock() {
            errors.insert(provider.to_owned(), (reason.to_owned(), at));
        }
    }

    /// The last failure of `provider` and when, if any since vouchd started.
    pub fn last_error(&self, provider: &str) -> Option<(String, i64)> {
        self.last_errors.lock().ok()?.get(provider).cloned()
    }

    fn in_use(&self, name: &str) -> Option<Arc<KeyProvider>> {
        self.providers.lock().ok()?.get(name).map(Arc::clone)
    }

    /// The provider named `name`, built from the store if not yet in use.
    pub async fn provider(
        &self,
        store: &Arc<dyn Store>,
        name: &str,
    ) -> Result<Arc<KeyProvider>, Error> {
        if let Some(p) = self.in_use(name) {
            return Ok(p);
        }
        let _one = self.building.lock().await;
        if let Some(p) = self.in_use(name) {
            return Ok(p);
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
        self.providers
            .lock()
            .map_err(|_| Error::Internal("the key provider table is poisoned".into()))?
            .insert(name.to_owned(), Arc::clone(&provider));
        Ok(provider)
    }

    /// Forgets a provider (its configuration changed or it was deleted); its cached keys are
    /// zeroized when the last request using it ends.
    pub async fn forget(&self, name: &str) {
        let _one = self.building.lock().await;
        if let Ok(mut providers) = self.providers.lock() {
            providers.remove(name);
        }
        if let Ok(mut errors) = self.last_errors.lock() {
            errors.remove(name);
        }
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

/// Notes a provider's failure for `provider status` and the metrics, unless the caller was at
/// fault (a bad ciphertext, associated data or size): those say nothing of the provider.
pub fn note_failure(state: &AppState, provider: &str, e: &vouch_keyprovider::Error) {
    if let Error::KeyProvider { failure, .. } = provider_error(e)
        && failure == KeyFailure::BadRequest
    {
        return;
    }
    let now = crate::now();
    state.keys.failed(provider, &e.to_string(), now);
    state.metrics.key_servers.failed(provider, now);
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
    /// The cluster's default provider, if it has one.
    pub default_provider: Option<String>,
    /// Every provider the cluster is configured with (the default among them).
    pub providers: Vec<String>,
}

impl AttestedHost {
    /// The provider a request uses: the one it names, which must be one the host's cluster is
    /// configured with, or the cluster's default when it names none. Anything else is
    /// refused (fail closed): a host never reaches another cluster's provider.
    pub fn provider(&self, requested: Option<&str>) -> Result<&str, Error> {
        match requested {
            Some(name) => self
                .providers
                .iter()
                .find(|p| p.as_str() == name)
                .map(String::as_str)
                .ok_or_else(|| {
                    Error::Forbidden(format!(
                        "key provider {name} is not configured for cluster {}; a TrustedAdmin adds it with `vouch cluster add-provider {} {name}`",
                        self.host.cluster, self.host.cluster
                    ))
                }),
            None => self.default_provider.as_deref().ok_or_else(|| {
                Error::Forbidden(format!(
                    "cluster {} has no default key provider; name one in the request or set a default with `vouch cluster set-provider {} NAME`",
                    self.host.cluster, self.host.cluster
                ))
            }),
        }
    }
}

/// The most verified tokens, and the most hosts, [`AuthCache`] keeps.
pub const AUTH_CACHE_ENTRIES: usize = 65_536;

/// What [`authorise_host`] reads from the store for a host, as of one store generation.
#[derive(Debug)]
struct HostFacts {
    /// [`Store::changes`] before the facts were read.
    generation: u64,
    host: Option<Host>,
    /// The host's latest attestation: attested, its nonce and its software version.
    latest: Option<(bool, Option<String>, Option<String>)>,
    /// The default provider of the host's cluster.
    provider: Option<String>,
    /// Every provider of the host's cluster.
    providers: Vec<String>,
}

/// The key requests' checks, kept in memory:
/// - tokens whose signature verified, by their SHA-256, until they expire (the expiry is
///   checked again at every use);
/// - each host's facts from the store (the host, its latest attestation, its cluster's
///   provider), valid while the store reports no write since they were read
///   ([`Store::changes`]; a backend that does not count writes is read every time).
///
/// Every check of [`authorise_host`] still runs on every request, against the current time:
/// a host whose attestation lapsed is refused at once, and any write (a new result, a host
/// state change, a configuration change) makes the next request read the store again.
#[derive(Debug, Default)]
pub struct AuthCache {
    tokens: Mutex<HashMap<[u8; 32], Arc<AttestationClaims>>>,
    hosts: Mutex<HashMap<String, Arc<HostFacts>>>,
}

/// Inserts into a bounded table: when full, entries `stale` says may go are dropped first,
/// and everything when none may.
fn bounded_insert<V>(
    table: &Mutex<HashMap<[u8; 32], V>>,
    key: [u8; 32],
    value: V,
    stale: impl Fn(&V) -> bool,
) {
    if let Ok(mut table) = table.lock() {
        if table.len() >= AUTH_CACHE_ENTRIES {
            table.retain(|_, v| !stale(v));
            if table.len() >= AUTH_CACHE_ENTRIES {
                table.clear();
            }
        }
        table.insert(key, value);
    }
}

impl AuthCache {
    /// The token's claims: from the cache, or verified (and kept) now.
    fn claims(
        &self,
        signer: &KeyRing,
        token: &str,
        now: i64,
    ) -> Result<Arc<AttestationClaims>, String> {
        let key = crate::sha256(token.as_bytes());
        let known = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&key).map(Arc::clone));
        if let Some(claims) = known {
            if claims.exp <= now {
                return Err(format!("the token expired at {}", claims.exp));
            }
            return Ok(claims);
        }
        // A token of a retired key is usable until its key's grace period ends, if sooner
        // than its own expiry: the cached claims carry that bound as their `exp`.
        let (mut claims, usable_until) = signer.verify_until(token, now)?;
        claims.exp = usable_until;
        let claims = Arc::new(claims);
        bounded_insert(&self.tokens, key, Arc::clone(&claims), |c| c.exp <= now);
        Ok(claims)
    }

    /// The host's facts: from the cache while the store has not changed, else read.
    async fn facts(&self, store: &Arc<dyn Store>, ek_hash: &str) -> Result<Arc<HostFacts>, Error> {
        // The generation is read before the facts: a write in between makes it stale.
        let generation = store.changes();
        if let Some(generation) = generation {
            let known = self
                .hosts
                .lock()
                .ok()
                .and_then(|h| h.get(ek_hash).map(Arc::clone))
                .filter(|f| f.generation == generation);
            if let Some(facts) = known {
                return Ok(facts);
            }
            let facts = Arc::new(read_facts(store, ek_hash, generation).await?);
            if let Ok(mut hosts) = self.hosts.lock() {
                if hosts.len() >= AUTH_CACHE_ENTRIES {
                    hosts.retain(|_, f| f.generation == generation);
                    if hosts.len() >= AUTH_CACHE_ENTRIES {
                        hosts.clear();
                    }
                }
                hosts.insert(ek_hash.to_owned(), Arc::clone(&facts));
            }
            return Ok(facts);
        }
        Ok(Arc::new(read_facts(store, ek_hash, 0).await?))
    }
}

/// One trip to the store for everything [`authorise_host`] reads.
async fn read_facts(
    store: &Arc<dyn Store>,
    ek_hash: &str,
    generation: u64,
) -> Result<HostFacts, Error> {
    let ek = ek_hash.to_owned();
    Ok(store::run(store, move |s| {
        let Some(host) = s.get_host(&ek)? else {
            return Ok(HostFacts {
                generation,
                host: None,
                latest: None,
                provider: None,
                providers: Vec::new(),
            });
        };
        let latest = s
            .list_attestations(&ek, 1)?
            .into_iter()
            .next()
            .map(|a| (a.attested, a.nonce, a.software_version));
        let provider = s.cluster_key_provider(&host.cluster)?;
        let providers = s.cluster_providers(&host.cluster)?;
        Ok(HostFacts {
            generation,
            host: Some(host),
            latest,
            provider,
            providers,
        })
    })
    .await?)
}

/// The checks of [`AttestedHost`], from a token; the HTTP API and the agent link share them.
pub async fn authorise_host(
    state: &AppState,
    token: &str,
    what: &str,
) -> Result<AttestedHost, Error> {
    let now = crate::now();
    let claims = state
        .keys
        .auth
        .claims(&state.signer, token, now)
        .map_err(|why| {
            deny(
                state,
                "anonymous",
                what,
                Error::Unauthenticated(format!("attestation token refused: {why}")),
            )
        })?;
    let who = claims.sub.clone();
    let forbidden = |why: String| deny(state, &who, what, Error::Forbidden(why));
    let facts = state.keys.auth.facts(&state.store, &claims.sub).await?;
    let host = facts
        .host
        .as_ref()
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
    let current = facts
        .latest
        .as_ref()
        .is_some_and(|(attested, nonce, version)| {
            *attested
                && nonce.as_deref() == Some(claims.attestation.as_str())
                && version.as_deref() == Some(claims.software_version.as_str())
        });
    if !current {
        return Err(forbidden(format!(
            "the token of host {} is not from its current attestation",
            host.ek_hash
        )));
    }
    if facts.providers.is_empty() {
        return Err(forbidden(format!(
            "cluster {} is not configured with a key provider",
            host.cluster
        )));
    }
    Ok(AttestedHost {
        host: host.clone(),
        claims: Arc::unwrap_or_clone(claims),
        default_provider: facts.provider.clone(),
        providers: facts.providers.clone(),
    })
}
