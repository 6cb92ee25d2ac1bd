//! Storage behind one trait, [`Store`], so that backends can sit side by side: the embedded
//! SQLite file ([`sqlite::SqliteStore`], the default) and PostgreSQL
//! ([`postgres::PostgresStore`], for several replicas sharing one database).
//!
//! The trait is synchronous and object-safe: the service holds an `Arc<dyn Store>` and runs
//! every call on tokio's blocking pool ([`run`]), so a backend is plain blocking code. The SQL
//! is kept to what SQLite and PostgreSQL both accept (no `INSERT OR REPLACE`, no `AUTOINCREMENT`
//! in queries; upserts use `ON CONFLICT ... DO UPDATE`). Times are Unix seconds, passed in by the
//! caller so that the store reads no clock.

pub mod migrate;
pub mod postgres;
mod records;
pub mod sealing;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Records whose stored form is exactly their API form.
pub use vouch_api::types::{
    AttestationRecord, Cluster, EkEntryKind, Event, HostState, KeyProvider as KeyProviderRecord,
    Principal, PrincipalKind, RetiredKey, SoftwareVersionRecord, TokenInfo, WrappingMode,
};

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named thing exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The named thing is still referenced and cannot be deleted; the message says by what.
    #[error("{0}")]
    InUse(String),
    /// The database failed; details in the message.
    #[error("storage failure: {0}")]
    Backend(String),
    /// A stored row does not read as its record: an unknown enum text, bad JSON, a value of
    /// the wrong type, or NULL where none is allowed.
    #[error("corrupt row in {table}: column {column}: {reason}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        reason: String,
    },
    /// The database's schema is not one this build can use (see [`migrate`]).
    #[error("database schema: {0}")]
    Schema(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A management server allowed to perform host operations: its ECDSA P-256 signing
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagementServer {
    pub id: String,
    /// The certificate, DER.
    #[serde(skip)]
    pub certificate: Vec<u8>,
    /// The certificate's subject, for people.
    pub subject: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    pub created_at: i64,
}

/// A TPM manufacturer CA certificate trusted by a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaCert {
    /// SHA-256 of the DER certificate, hex.
    pub id: String,
    pub cluster: String,
    pub subject: String,
    #[serde(skip)]
    pub der: Vec<u8>,
    pub created_at: i64,
}

/// An individual EK listed by a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEk {
    /// The EK hash (see [`crate::ek::ek_hash`]), hex.
    pub ek_hash: String,
    pub cluster: String,
    pub kind: EkEntryKind,
    /// The certificate or SubjectPublicKeyInfo, DER.
    #[serde(skip)]
    pub der: Vec<u8>,
    pub created_at: i64,
}

/// A host of a trusted cluster, identified by its EK hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub ek_hash: String,
    pub cluster: String,
    pub name: String,
    /// The management server that added it.
    pub added_by: String,
    /// The AK bound to the EK (TPM2B_PUBLIC), once activated.
    #[serde(skip)]
    pub ak_public: Option<Vec<u8>>,
    pub state: HostState,
    pub attested_at: Option<i64>,
    pub valid_until: Option<i64>,
    pub software_version: Option<String>,
    pub created_at: i64,
}

/// A key server (KMS): KMIP endpoints tried in order, the client certificate and key vouchd
/// presents, the CA certificates that sign the key server's certificate. PEM throughout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyServerRecord {
    pub name: String,
    /// `host:port`, in the order tried.
    pub endpoints: Vec<String>,
    pub client_certificate: String,
    /// Never shown by the API.
    #[serde(skip)]
    pub client_key: String,
    pub ca_certificates: String,
    pub created_at: i64,
}

/// What one attestation writes: the host's TPM clock as of the accepted quote (`None` when
/// the quote was not accepted) and the result ([`Store::record_attestations`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultWrite {
    pub record: AttestationRecord,
    /// vouch-attest `ClockInfo`, JSON ([`Store::set_host_clock`]).
    pub clock: Option<String>,
}

/// What recording a result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The host's state before.
    pub before: HostState,
    /// The `host.state_changed` event stored with the result, when the state changed.
    pub event: Option<Event>,
}

/// The detail of a `host.state_changed` event.
pub fn state_change_detail(
    cluster: &str,
    from: HostState,
    to: HostState,
    reason: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({"cluster": cluster, "from": from, "to": to, "reason": reason})
}

/// The reason of the `host.state_changed` event of an expiry.
pub const EXPIRED_REASON: &str = "the last attestation expired without a new one";
/// The most hosts one [`HostQuery`] page holds.
pub const MAX_HOST_PAGE: u32 = 500;

/// A page of the hosts table: filters (all optional, all must hold); the order is by name
/// in any case (ASCII), then name, then EK hash ([`HostQuery::order`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostQuery {
    pub cluster: Option<String>,
    pub state: Option<HostState>,
    pub software_version: Option<String>,
    /// The start of the name or of the EK hash, in any case (ASCII): a prefix, so that an
    /// index answers it at any fleet size.
    pub search: Option<String>,
    pub offset: u64,
    /// At most [`MAX_HOST_PAGE`].
    pub limit: u32,
}

impl HostQuery {
    /// The sort key of the hosts table: `(LOWER(name), name, ek_hash)`.
    pub fn order(host: &Host) -> (String, &str, &str) {
        (host.name.to_ascii_lowercase(), &host.name, &host.ek_hash)
    }

    /// Whether `host` passes the filters (the reference the backends' SQL must agree with).
    pub fn matches(&self, host: &Host) -> bool {
        let search = self.search.as_deref().map(str::to_ascii_lowercase);
        self.cluster.as_ref().is_none_or(|c| *c == host.cluster)
            && self.state.is_none_or(|s| s == host.state)
            && self
                .software_version
                .as_ref()
                .is_none_or(|v| host.software_version.as_ref() == Some(v))
            && search.is_none_or(|q| {
                host.name.to_ascii_lowercase().starts_with(&q) || host.ek_hash.starts_with(&q)
            })
    }
}

/// One page of hosts and how many pass the filters in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPage {
    pub hosts: Vec<Host>,
    pub total: u64,
}

/// How many hosts of a cluster are in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCount {
    pub cluster: String,
    pub state: HostState,
    pub count: u64,
}

/// A filter over the event log, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Kinds starting with this (`host.` for every host event).
    pub kind_prefix: Option<String>,
    /// Exactly this subject.
    pub subject: Option<String>,
    /// Only events with a smaller id (the next page).
    pub before: Option<i64>,
    /// Only events with a larger id (what is new).
    pub after: Option<i64>,
    pub limit: u32,
}

impl EventFilter {
    /// Whether `event` passes the filter (the reference the backends' SQL must agree with).
    pub fn matches(&self, event: &Event) -> bool {
        self.kind_prefix
            .as_ref()
            .is_none_or(|k| event.kind.starts_with(k.as_str()))
            && self.subject.as_ref().is_none_or(|s| *s == event.subject)
            && self.before.is_none_or(|b| event.id < b)
            && self.after.is_none_or(|a| event.id > a)
    }
}

/// Everything vouchd keeps. Implementations are blocking; call them through [`run`].
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Makes every committed write durable in the main database file (SQLite: a WAL
    /// checkpoint); called when vouchd stops.
    /// A number that changes after every write (rows inserted, updated or deleted, committed
    /// or not) and before the lock that guards it is released, so that what was read while it
    /// stayed the same is still current (vouchd's in-memory caches rely on it). `None` (the
    /// default) when the backend does not count: nothing read from it is cached.
    fn changes(&self) -> Option<u64> {
        None
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The configuration generation ([`Store::config_generation`]) without reading the
    /// database, when this process makes every change to it and so knows it (SQLite: vouchd
    /// is the only writer of its file); `None` (the default) when other processes share the
    /// database (PostgreSQL replicas).
    fn config_generation_now(&self) -> Option<i64> {
        None
    }

    // Bootstrap and metadata.
    /// Creates the first principal, in `group`, with one token, unless bootstrap already
    /// happened. Returns whether it happened now. Runs once in the life of a database.
    fn bootstrap(
        &self,
        principal: &str,
        group: &str,
        token: &TokenInfo,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<bool>;

    // Principals, groups and tokens.
    fn create_principal(&self, name: &str, kind: PrincipalKind, now: i64) -> StoreResult<()>;
    fn get_principal(&self, name: &str) -> StoreResult<Option<Principal>>;
    fn list_principals(&self) -> StoreResult<Vec<Principal>>;
    /// Deletes a principal with its group memberships and tokens.
    fn delete_principal(&self, name: &str) -> StoreResult<()>;
    fn add_to_group(&self, principal: &str, group: &str) -> StoreResult<()>;
    fn remove_from_group(&self, principal: &str, group: &str) -> StoreResult<()>;
    fn create_token(&self, token: &TokenInfo, hash: &[u8]) -> StoreResult<()>;
    /// The principal owning the token with this SHA-256, if any.
    fn principal_for_token(&self, hash: &[u8]) -> StoreResult<Option<Principal>>;
    fn list_tokens(&self, principal: &str) -> StoreResult<Vec<TokenInfo>>;
    fn delete_token(&self, principal: &str, id: &str) -> StoreResult<()>;

    // Management servers and replay protection.
    fn add_management_server(&self, server: &ManagementServer) -> StoreResult<()>;
    fn get_management_server(&self, id: &str) -> StoreResult<Option<ManagementServer>>;
    fn list_management_servers(&self) -> StoreResult<Vec<ManagementServer>>;
    fn delete_management_server(&self, id: &str) -> StoreResult<()>;
    /// Records a signed request's key; `false` when it was seen before (a replay). Keys older
    /// than `forget_before` are dropped.
    fn record_request(&self, key: &str, now: i64, forget_before: i64) -> StoreResult<bool>;

    // Clusters and their trust configuration.
    fn create_cluster(&self, cluster: &Cluster) -> StoreResult<()>;
    fn get_cluster(&self, name: &str) -> StoreResult<Option<Cluster>>;
    fn list_clusters(&self) -> StoreResult<Vec<Cluster>>;
    /// Sets a cluster's PCRs, bank and `disabled_at` (its name and creation time stay).
    fn update_cluster(&self, cluster: &Cluster) -> StoreResult<()>;
    /// Deletes a cluster with its trust configuration and hosts.
    fn delete_cluster(&self, name: &str) -> StoreResult<()>;
    fn add_ca_cert(&self, cert: &CaCert) -> StoreResult<()>;
    fn list_ca_certs(&self, cluster: &str) -> StoreResult<Vec<CaCert>>;
    fn delete_ca_cert(&self, cluster: &str, id: &str) -> StoreResult<()>;
    fn add_cluster_ek(&self, ek: &ClusterEk) -> StoreResult<()>;
    fn list_cluster_eks(&self, cluster: &str) -> StoreResult<Vec<ClusterEk>>;
    fn delete_cluster_ek(&self, cluster: &str, ek_hash: &str) -> StoreResult<()>;
    /// Adds or replaces a version.
    fn put_software_version(&self, version: &SoftwareVersionRecord) -> StoreResult<()>;
    fn list_software_versions(&self, cluster: &str) -> StoreResult<Vec<SoftwareVersionRecord>>;
    fn delete_software_version(&self, cluster: &str, name: &str) -> StoreResult<()>;

    // Hosts and attestation.
    fn add_host(&self, host: &Host) -> StoreResult<()>;
    fn get_host(&self, ek_hash: &str) -> StoreResult<Option<Host>>;
    fn list_hosts(&self, cluster: &str) -> StoreResult<Vec<Host>>;
    fn list_all_hosts(&self) -> StoreResult<Vec<Host>>;
    fn delete_host(&self, cluster: &str, ek_hash: &str) -> StoreResult<()>;
    /// Binds an activated AK to the host's EK.
    fn set_host_ak(&self, ek_hash: &str, ak_public: &[u8]) -> StoreResult<()>;
    /// The TPM clock (vouch-attest `ClockInfo`, JSON) of the last quote accepted from the
    /// host's AK; cleared when a new AK is bound.
    fn host_clock(&self, ek_hash: &str) -> StoreResult<Option<String>>;
    fn set_host_clock(&self, ek_hash: &str, clock: &str) -> StoreResult<()>;
    /// Stores a result, sets the host's state from it and, when the state changes, stores the
    /// `host.state_changed` event — all in one transaction, so a crash keeps all or none.
    fn record_attestation(&self, record: &AttestationRecord) -> StoreResult<Recorded>;
    /// Stores several attestations' writes, each as one [`ResultWrite`]: the host's TPM clock
    /// (when given) and the result as [`Store::record_attestation`] stores it, all or none of
    /// each write. The answers are in the order of `writes`; every `Ok` is durable when this
    /// returns. The default stores them one after the other; a backend that commits them all
    /// at once (SQLite: one transaction, one sync for many results) says so with
    /// [`Store::commits_in_groups`].
    fn record_attestations(&self, writes: &[ResultWrite]) -> Vec<StoreResult<Recorded>> {
        writes
            .iter()
            .map(|w| {
                if let Some(clock) = &w.clock {
                    self.set_host_clock(&w.record.ek_hash, clock)?;
                }
                self.record_attestation(&w.record)
            })
            .collect()
    }
    /// Whether [`Store::record_attestations`] commits many writes at once, so that vouchd
    /// hands results to one writer thread that gathers them (a group commit).
    fn commits_in_groups(&self) -> bool {
        false
    }
    /// Sets a host's state without a new result; returns the state before.
    fn set_host_state(&self, ek_hash: &str, state: HostState) -> StoreResult<HostState>;
    /// Turns the host `unknown` when it is still `attested` with a result valid until before
    /// `now`, and stores the `host.state_changed` event (at `now`, with [`EXPIRED_REASON`]) —
    /// check, change and event in one transaction, so a crash keeps all or none and a result
    /// recorded since the caller looked is never overwritten. Returns the event, or `None`
    /// when nothing expired.
    fn expire_host(&self, ek_hash: &str, now: i64) -> StoreResult<Option<Event>>;
    fn list_attestations(&self, ek_hash: &str, limit: u32) -> StoreResult<Vec<AttestationRecord>>;

    // The console's read model. The default bodies are correct but read every host or event;
    // a backend answers them with indexed queries (SQLite: migration 0005's indexes).
    /// One page of hosts passing `query`'s filters, in [`HostQuery::order`], and their total.
    fn query_hosts(&self, query: &HostQuery) -> StoreResult<HostPage> {
        let mut hosts: Vec<Host> = self
            .list_all_hosts()?
            .into_iter()
            .filter(|h| query.matches(h))
            .collect();
        hosts.sort_by(|a, b| HostQuery::order(a).cmp(&HostQuery::order(b)));
        let total = u64::try_from(hosts.len()).unwrap_or(u64::MAX);
        let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(query.limit.min(MAX_HOST_PAGE)).unwrap_or(0);
        Ok(HostPage {
            hosts: hosts.into_iter().skip(offset).take(limit).collect(),
            total,
        })
    }
    /// The number of hosts per cluster and state (pairs with none left out), by cluster.
    fn count_hosts(&self) -> StoreResult<Vec<HostCount>> {
        let mut counts: std::collections::BTreeMap<(String, &'static str), HostCount> =
            std::collections::BTreeMap::new();
        for h in self.list_all_hosts()? {
            counts
                .entry((h.cluster.clone(), h.state.as_str()))
                .or_insert_with(|| HostCount {
                    cluster: h.cluster.clone(),
                    state: h.state,
                    count: 0,
                })
                .count += 1;
        }
        Ok(counts.into_values().collect())
    }
    /// Attested hosts whose attestation ends before `before`, soonest first.
    fn hosts_expiring(&self, before: i64, limit: u32) -> StoreResult<Vec<Host>> {
        let mut hosts: Vec<Host> = self
            .list_all_hosts()?
            .into_iter()
            .filter(|h| h.state == HostState::Attested && h.valid_until.is_some_and(|v| v < before))
            .collect();
        hosts.sort_by_key(|h| (h.valid_until, h.ek_hash.clone()));
        hosts.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(hosts)
    }
    /// Events passing `filter`, newest first.
    fn query_events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.list_events(after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            all.extend(page.into_iter().filter(|e| filter.matches(e)));
        }
        all.reverse();
        all.truncate(usize::try_from(filter.limit).unwrap_or(0));
        Ok(all)
    }

    // Key servers, key providers, and the provider of each cluster.
    fn add_key_server(&self, server: &KeyServerRecord) -> StoreResult<()>;
    fn get_key_server(&self, name: &str) -> StoreResult<Option<KeyServerRecord>>;
    fn list_key_servers(&self) -> StoreResult<Vec<KeyServerRecord>>;
    /// [`StoreError::InUse`] while a provider uses it.
    fn delete_key_server(&self, name: &str) -> StoreResult<()>;
    fn add_key_provider(&self, provider: &KeyProviderRecord) -> StoreResult<()>;
    fn get_key_provider(&self, name: &str) -> StoreResult<Option<KeyProviderRecord>>;
    fn list_key_providers(&self) -> StoreResult<Vec<KeyProviderRecord>>;
    /// Replaces the primary key, its version and the retired keys (a rotation).
    fn update_key_provider(&self, provider: &KeyProviderRecord) -> StoreResult<()>;
    /// [`StoreError::InUse`] while a cluster uses it.
    fn delete_key_provider(&self, name: &str) -> StoreResult<()>;
    /// Sets a cluster's default key provider, configuring the cluster with it if it was not;
    /// or, with `None`, removes the default from the cluster (the other providers stay, and a
    /// request that names none is refused until a default is set again).
    fn set_cluster_key_provider(&self, cluster: &str, provider: Option<&str>) -> StoreResult<()>;
    /// The cluster's default key provider.
    fn cluster_key_provider(&self, cluster: &str) -> StoreResult<Option<String>>;
    /// Configures a cluster with one more key provider; [`StoreError::Conflict`] when it is
    /// already, [`StoreError::NotFound`] when the cluster or the provider does not exist.
    fn add_cluster_provider(&self, cluster: &str, provider: &str) -> StoreResult<()>;
    /// Removes a key provider from a cluster: [`StoreError::InUse`] while it is the default,
    /// [`StoreError::NotFound`] when the cluster is not configured with it.
    fn remove_cluster_provider(&self, cluster: &str, provider: &str) -> StoreResult<()>;
    /// Every key provider the cluster is configured with, by name.
    fn cluster_providers(&self, cluster: &str) -> StoreResult<Vec<String>>;

    // Events.
    fn add_event(
        &self,
        at: i64,
        kind: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<i64>;
    /// Events with an id greater than `after`, oldest first. Ids are handed out in commit
    /// order, so a follower that reads "after the last id seen" misses none.
    fn list_events(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>>;

    // What replicas sharing the database agree on.
    /// The token-signing key (PKCS#8, hex) every replica signs with: the one stored, or
    /// `candidate` stored now when there is none (the first replica's wins). Sealed under
    /// the key-encryption key in the database.
    fn signing_key(&self, candidate: &str, now: i64) -> StoreResult<String>;
    /// The token-signing keys: the current one first (`retired_at` None), then the one it
    /// replaced, if any (see [`Self::rotate_signing_key`]).
    fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>>;
    /// Replaces the current signing key with `candidate` (PKCS#8, hex): the current one
    /// becomes the previous one, retired at `now`, replacing any older previous key. Refused
    /// (`Conflict`) while the previous key is in its grace period (retired less than `grace`
    /// seconds before `now`): its tokens must stay verifiable until then.
    fn rotate_signing_key(&self, candidate: &str, now: i64, grace: i64) -> StoreResult<()>;
    /// Claims the expiry sweep of `period` (a number of sweep periods since the epoch) for
    /// `replica`: `true` for the one caller that gets it, `false` for every other. Claims of
    /// periods before `forget_before` are dropped.
    fn claim_sweep(
        &self,
        period: i64,
        replica: &str,
        now: i64,
        forget_before: i64,
    ) -> StoreResult<bool>;
    /// The configuration generation: it grows in the same transaction as every change to
    /// principals, management servers, clusters and their trust configuration, hosts added,
    /// removed or given an AK, key servers and key providers. A replica caching any of those
    /// reloads when it differs from the value it loaded with.
    fn config_generation(&self) -> StoreResult<i64>;
}

/// Runs a blocking store call on tokio's blocking pool.
pub async fn run<T, F>(store: &Arc<dyn Store>, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
}

/// A token-signing key as the store keeps it (opened from its seal).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// PKCS#8, hex.
    pub pkcs8_hex: zeroize::Zeroizing<String>,
    pub created_at: i64,
    /// When it stopped signing; None for the current key.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// The seal label of the signing key row `id` (`current` or `previous`).
pub(crate) fn signing_key_label(id: &str) -> String {
    format!("signing_keys.sealed_key:{id}")
}

/// Whether a rotation may retire the current key now: not while the previous one is in its
/// grace period.
fn check_rotation(previous_retired_at: Option<i64>, now: i64, grace: i64) -> StoreResult<()> {
    match previous_retired_at {
        Some(at) if at.saturating_add(grace) > now => Err(StoreError::Conflict(format!(
            "the previous signing key is in its grace period until {} (Unix seconds): its tokens must stay verifiable; rotate again after that",
            at.saturating_add(grace)
        ))),
        _ => Ok(()),
    }
}

/// A row of `signing_keys`: id, sealed key, created_at, retired_at.
pub(crate) type SigningKeyRow = (String, String, i64, Option<i64>);

/// What a rotation writes, from the rows it read (locked): the current key sealed as the
/// previous one with its created_at, and `candidate` sealed as the current one. Refused while
/// the previous key is in its grace period.
pub(crate) fn rotation_rows(
    rows: &[SigningKeyRow],
    keys: &[sealing::SealingKey],
    candidate: &str,
    now: i64,
    grace: i64,
) -> StoreResult<(String, i64, String)> {
    let previous = rows.iter().find(|r| r.0 == "previous").and_then(|r| r.3);
    check_rotation(previous, now, grace)?;
    let (_, sealed, created_at, _) = rows
        .iter()
        .find(|r| r.0 == "current")
        .ok_or_else(|| StoreError::NotFound("the signing key".into()))?;
    let current = sealing::open(keys, &signing_key_label("current"), sealed)?;
    let as_previous = sealing::seal_current(keys, &signing_key_label("previous"), &current)?;
    let new = sealing::seal_current(keys, &signing_key_label("current"), candidate)?;
    Ok((as_previous, *created_at, new))
}

/// The stored keys of `rows`, opened.
pub(crate) fn open_signing_keys(
    rows: Vec<SigningKeyRow>,
    keys: &[sealing::SealingKey],
) -> StoreResult<Vec<StoredSigningKey>> {
    rows.into_iter()
        .map(|(id, sealed, created_at, retired_at)| {
            Ok(StoredSigningKey {
                pkcs8_hex: sealing::open(keys, &signing_key_label(&id), &sealed)?,
                created_at,
                retired_at,
            })
        })
        .collect()
}
