//! The web console's side of the core: its sign-in sessions and the read model its pages show
//! (fleet summary, hosts, a host's history with refusals explained, clusters). The HTTP edge
//! (`api::console`) renders these; like the API, it reaches the store only through here and
//! [`store::run`].
//!
//! A session is made by signing in with a bearer token of a TrustedAdmins member. It keeps
//! the SHA-256 of that token, not the principal: every request authenticates the token again,
//! so revoking the token, deleting the principal or removing it from TrustedAdmins ends its
//! sessions at once, exactly as for API calls. Sessions live in memory (a restart signs every
//! one out), at most [`MAX_SESSIONS`], each for [`SESSION_LIFETIME_SECS`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vouch_attest::policy::SoftwareVersion;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::auth::{Admin, authenticate, authorise_admin, deny, token_hash};
use super::{AppState, Error, Result};
use crate::store::{
    self, AttestationRecord, CaCert, Cluster, ClusterEk, EkEntryKind, Event, EventFilter, Host,
    HostPage, HostQuery, HostState, KeyProviderRecord, KeyServerRecord, SoftwareVersionRecord,
};

/// How long a console session lasts from sign-in.
pub const SESSION_LIFETIME_SECS: i64 = 8 * 3600;
/// The most sessions held at once; past it, the oldest is signed out.
pub const MAX_SESSIONS: usize = 10_000;
/// How far ahead the fleet page looks for attestations that expire.
pub const EXPIRING_WITHIN_SECS: i64 = 3600;
/// How long a key server endpoint may take to accept a TCP connection on the clusters page.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A signed-in console session.
#[derive(Debug, Clone)]
struct Session {
    token_hash: [u8; 32],
    csrf: String,
    expires_at: i64,
}

/// The console's sessions, by SHA-256 of the session id (the cookie's value).
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<[u8; 32], Session>>,
}

/// What a request's session proves: a TrustedAdmins member, and the session's CSRF token that
/// every form of the session carries.
#[derive(Debug, Clone)]
pub struct Signed {
    pub admin: Admin,
    pub csrf: String,
}

/// A fresh random value for ids and CSRF tokens.
fn secret() -> Result<String> {
    let bytes = crate::random::<32>().map_err(|_| Error::Internal("RNG failure".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>>> {
        self.by_id
            .lock()
            .map_err(|_| Error::Internal("console sessions poisoned".into()))
    }

    /// A new session for `token_hash`; returns its id (the cookie's value).
    fn open(&self, token_hash: [u8; 32], now: i64) -> Result<String> {
        let id = secret()?;
        let session = Session {
            token_hash,
            csrf: secret()?,
            expires_at: now.saturating_add(SESSION_LIFETIME_SECS),
        };
        let mut sessions = self.lock()?;
        sessions.retain(|_, s| s.expires_at > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(crate::sha256(id.as_bytes()), session);
        Ok(id)
    }

    fn get(&self, id: &str, now: i64) -> Result<Option<Session>> {
        let key = crate::sha256(id.as_bytes());
        let mut sessions = self.lock()?;
        match sessions.get(&key) {
            Some(s) if s.expires_at > now => Ok(Some(s.clone())),
            Some(_) => {
                sessions.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn close(&self, id: &str) -> Result<()> {
        self.lock()?.remove(&crate::sha256(id.as_bytes()));
        Ok(())
    }

    /// How many sessions are open (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.by_id.lock().map_or(0, |s| s.len())
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Signs in with a bearer token of a TrustedAdmins member; returns the new session's id.
pub async fn sign_in(state: &AppState, token: &str, what: &str) -> Result<String> {
    let token = token.trim();
    let principal = authenticate(state, token, what).await?;
    let admin = authorise_admin(state, principal, what.to_owned())?;
    let id = state
        .console_sessions
        .open(token_hash(token), crate::now())?;
    tracing::info!(principal = admin.name(), "console sign-in");
    Ok(id)
}

/// The session with id `id`, authenticated again (see the module's documentation).
pub async fn session(state: &AppState, id: Option<&str>, what: &str) -> Result<Signed> {
    let unauthenticated = |why: &str| {
        deny(
            state,
            "anonymous",
            what,
            Error::Unauthenticated(why.to_owned()),
        )
    };
    let id = id.ok_or_else(|| unauthenticated("no console session; sign in"))?;
    let session = state
        .console_sessions
        .get(id, crate::now())?
        .ok_or_else(|| unauthenticated("the console session is unknown or expired; sign in"))?;
    let hash = session.token_hash;
    let principal = store::run(&state.store, move |s| s.principal_for_token(&hash))
        .await?
        .ok_or_else(|| {
            let _ = state.console_sessions.close(id);
            unauthenticated("the token this session was opened with was revoked; sign in")
        })?;
    let admin = authorise_admin(state, principal, what.to_owned())?;
    Ok(Signed {
        admin,
        csrf: session.csrf,
    })
}

/// Ends a session.
pub fn sign_out(state: &AppState, id: &str) -> Result<()> {
    state.console_sessions.close(id)
}

// ---- The read model.

/// Host counts of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub cluster: String,
    pub attested: u64,
    pub not_attested: u64,
    pub unknown: u64,
}

impl ClusterCounts {
    pub fn total(&self) -> u64 {
        self.attested + self.not_attested + self.unknown
    }
}

/// A host state change, with the host's name when the host still exists.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub event: Event,
    pub name: Option<String>,
    pub from: String,
    pub to: String,
    pub reason: Option<String>,
}

impl StateChange {
    fn from_event(event: Event, name: Option<String>) -> Self {
        let text = |k: &str| {
            event
                .detail
                .get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Self {
            from: text("from").unwrap_or_default(),
            to: text("to").unwrap_or_default(),
            reason: text("reason"),
            name,
            event,
        }
    }
}

/// The fleet page.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub clusters: Vec<ClusterCounts>,
    pub changes: Vec<StateChange>,
    pub expiring: Vec<Host>,
}

/// Counts by state per cluster (every cluster, hosts or not), recent state changes, and
/// attestations that end within [`EXPIRING_WITHIN_SECS`].
pub async fn fleet(state: &AppState, now: i64) -> Result<Fleet> {
    Ok(store::run(&state.store, move |s| {
        let mut clusters: BTreeMap<String, ClusterCounts> = s
            .list_clusters()?
            .into_iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ClusterCounts {
                        cluster: c.name,
                        ..ClusterCounts::default()
                    },
                )
            })
            .collect();
        for count in s.count_hosts()? {
            let entry = clusters
                .entry(count.cluster.clone())
                .or_insert_with(|| ClusterCounts {
                    cluster: count.cluster.clone(),
                    ..ClusterCounts::default()
                });
            match count.state {
                HostState::Attested => entry.attested = count.count,
                HostState::NotAttested => entry.not_attested = count.count,
                HostState::Unknown => entry.unknown = count.count,
            }
        }
        let events = s.query_events(&EventFilter {
            kind_prefix: Some("host.state_changed".into()),
            limit: 20,
            ..EventFilter::default()
        })?;
        let changes = named_changes(s, events)?;
        let expiring = s.hosts_expiring(now.saturating_add(EXPIRING_WITHIN_SECS), 20)?;
        Ok(Fleet {
            clusters: clusters.into_values().collect(),
            changes,
            expiring,
        })
    })
    .await?)
}

fn named_changes(s: &dyn store::Store, events: Vec<Event>) -> store::StoreResult<Vec<StateChange>> {
    events
        .into_iter()
        .map(|e| {
            let name = s.get_host(&e.subject)?.map(|h| h.name);
            Ok(StateChange::from_event(e, name))
        })
        .collect()
}

/// The hosts page: one page, and what its filters can choose from.
#[derive(Debug, Clone)]
pub struct HostsPage {
    pub page: HostPage,
    pub clusters: Vec<String>,
    pub versions: Vec<String>,
}

/// One page of hosts.
pub async fn hosts(state: &AppState, query: HostQuery) -> Result<HostsPage> {
    Ok(store::run(&state.store, move |s| {
        let clusters: Vec<String> = s.list_clusters()?.into_iter().map(|c| c.name).collect();
        let mut versions = Vec::new();
        for c in &clusters {
            versions.extend(s.list_software_versions(c)?.into_iter().map(|v| v.name));
        }
        versions.sort();
        versions.dedup();
        Ok(HostsPage {
            page: s.query_hosts(&query)?,
            clusters,
            versions,
        })
    })
    .await?)
}

/// One PCR of a refused result compared with one accepted version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrRow {
    pub pcr: u32,
    /// The version's value (hex), or how it checks the PCR.
    pub expected: String,
    /// The host's value (hex), or that it sent none.
    pub presented: String,
    pub matches: bool,
}

/// One event position where a version's reference and the host's log differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub pcr: u32,
    /// The position among the PCR's events, from 0.
    pub position: usize,
    /// The event's number in the host's log, when it has one there.
    pub number: Option<u64>,
    pub expected: Option<String>,
    pub presented: Option<String>,
}

/// A refused result against one accepted version.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub version: String,
    pub bank: String,
    pub pcrs: Vec<PcrRow>,
    pub events: Vec<EventRow>,
}

/// A refused result's explanation: the reason, and the comparison with each version the
/// cluster accepts now (when the result kept what the host presented).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub at: i64,
    pub reason: String,
    pub comparisons: Vec<Comparison>,
    /// Whether the result kept what the host presented (results recorded before vouchd kept
    /// it did not).
    pub presented_kept: bool,
}

/// One line of a host's timeline.
#[derive(Debug, Clone)]
pub enum TimelineEntry {
    Result(AttestationRecord),
    Event(Event),
}

impl TimelineEntry {
    pub fn at(&self) -> i64 {
        match self {
            Self::Result(r) => r.at,
            Self::Event(e) => e.at,
        }
    }
}

/// The host page.
#[derive(Debug, Clone)]
pub struct HostDetail {
    pub host: Host,
    pub cluster: Option<Cluster>,
    /// Newest first: results and the host's events.
    pub timeline: Vec<TimelineEntry>,
    /// The latest result, when it was a refusal.
    pub refusal: Option<Refusal>,
}

/// How many results and events the host page shows.
pub const TIMELINE_LENGTH: u32 = 50;

/// A host with its history, and its latest refusal explained.
pub async fn host(state: &AppState, ek_hash: String) -> Result<HostDetail> {
    let wanted = ek_hash.clone();
    let found = store::run(&state.store, move |s| {
        let Some(host) = s.get_host(&wanted)? else {
            return Ok(None);
        };
        let results = s.list_attestations(&wanted, TIMELINE_LENGTH)?;
        let events = s.query_events(&EventFilter {
            subject: Some(wanted.clone()),
            limit: TIMELINE_LENGTH,
            ..EventFilter::default()
        })?;
        let cluster = s.get_cluster(&host.cluster)?;
        let versions = s.list_software_versions(&host.cluster)?;
        Ok(Some((host, results, events, cluster, versions)))
    })
    .await?;
    let (host, results, events, cluster, versions) =
        found.ok_or_else(|| Error::NotFound(format!("host with EK {ek_hash} not found")))?;
    let refusal = results.first().filter(|r| !r.attested).map(|r| {
        let pcrs = cluster.as_ref().map_or(&[][..], |c| c.pcrs.as_slice());
        let comparisons = r
            .presented
            .as_ref()
            .map(|p| compare(p, &versions, pcrs))
            .unwrap_or_default();
        Refusal {
            at: r.at,
            reason: r.reason.clone().unwrap_or_default(),
            comparisons,
            presented_kept: r.presented.is_some(),
        }
    });
    let mut timeline: Vec<TimelineEntry> = results
        .into_iter()
        .map(TimelineEntry::Result)
        .chain(events.into_iter().map(TimelineEntry::Event))
        .collect();
    timeline.sort_by_key(|e| std::cmp::Reverse(e.at()));
    Ok(HostDetail {
        host,
        cluster,
        timeline,
        refusal,
    })
}

/// Compares what a host presented (an [`AttestationRecord::presented`]) with each accepted
/// version over the cluster's `pcrs`: values side by side and, for versions that give event
/// digests, the positions where the host's log differs.
pub fn compare(
    presented: &serde_json::Value,
    versions: &[SoftwareVersionRecord],
    pcrs: &[u32],
) -> Vec<Comparison> {
    let bank_name = presented
        .get("bank")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("sha256")
        .to_owned();
    let bank: Option<vouch_attest::HashAlg> =
        serde_json::from_value(serde_json::Value::String(bank_name.clone())).ok();
    let value_of = |pcr: u32| {
        presented
            .get("pcrs")
            .and_then(|p| p.get(pcr.to_string()))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let events_of = |pcr: u32| -> Vec<(Option<u64>, String)> {
        presented
            .get("events")
            .and_then(|p| p.get(pcr.to_string()))
            .and_then(serde_json::Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| {
                        let digest = e.get("digest")?.as_str()?.to_owned();
                        Some((e.get("number").and_then(serde_json::Value::as_u64), digest))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    versions
        .iter()
        .filter_map(|record| {
            let version: SoftwareVersion = serde_json::from_value(record.reference.clone()).ok()?;
            let mut rows = Vec::new();
            let mut events = Vec::new();
            for &pcr in pcrs {
                let got = value_of(pcr);
                let by_value = bank
                    .and_then(|b| version.pcrs.get(&b))
                    .and_then(|b| b.get(&pcr))
                    .map(|v| crate::hex(&v.0));
                let by_events = bank
                    .and_then(|b| version.events.get(&b))
                    .and_then(|b| b.get(&pcr));
                let (expected, matches) = match (by_value, by_events) {
                    (Some(want), _) => {
                        let matches = got.as_deref() == Some(want.as_str());
                        (want, matches)
                    }
                    (None, Some(want)) => {
                        let have = events_of(pcr);
                        let len = want.len().max(have.len());
                        let mut same = true;
                        for position in 0..len {
                            let w = want.get(position).map(|d| crate::hex(&d.0));
                            let h = have.get(position);
                            if w.as_deref() != h.map(|(_, d)| d.as_str()) {
                                same = false;
                                events.push(EventRow {
                                    pcr,
                                    position,
                                    number: h.and_then(|(n, _)| *n),
                                    expected: w,
                                    presented: h.map(|(_, d)| d.clone()),
                                });
                            }
                        }
                        (format!("{} event digests", want.len()), same)
                    }
                    (None, None) => ("no reference".to_owned(), false),
                };
                rows.push(PcrRow {
                    pcr,
                    expected,
                    presented: got.unwrap_or_else(|| "not presented".into()),
                    matches,
                });
            }
            Some(Comparison {
                version: record.name.clone(),
                bank: bank_name.clone(),
                pcrs: rows,
                events,
            })
        })
        .collect()
}

/// A TPM CA certificate as the clusters page shows it.
#[derive(Debug, Clone)]
pub struct CaView {
    pub id: String,
    pub subject: String,
    /// The certificate's notAfter, Unix seconds, when it parses.
    pub not_after: Option<i64>,
}

impl From<&CaCert> for CaView {
    fn from(c: &CaCert) -> Self {
        let not_after = X509Certificate::from_der(&c.der)
            .ok()
            .map(|(_, cert)| cert.validity().not_after.timestamp());
        Self {
            id: c.id.clone(),
            subject: c.subject.clone(),
            not_after,
        }
    }
}

/// Whether a key server's endpoints accept connections now.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    pub endpoint: String,
    /// `None` when reachable; otherwise why not.
    pub problem: Option<String>,
}

/// A cluster's key provider and its key server's reachability.
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub provider: KeyProviderRecord,
    pub endpoints: Vec<EndpointHealth>,
}

/// A cluster as the clusters page shows it.
#[derive(Debug, Clone)]
pub struct ClusterDetail {
    pub cluster: Cluster,
    /// The EK trust modes in force, in words.
    pub trust: Vec<String>,
    pub cas: Vec<CaView>,
    pub eks: Vec<ClusterEk>,
    pub versions: Vec<String>,
    pub provider: Option<ProviderView>,
}

/// The EK trust modes a cluster's configuration puts in force (see [`crate::ek::cluster_trust`]).
pub fn trust_modes(cas: &[CaCert], eks: &[ClusterEk]) -> Vec<String> {
    let listed = eks
        .iter()
        .filter(|e| e.kind != EkEntryKind::BarePublicKey)
        .count();
    let bare = eks.len() - listed;
    let mut modes = Vec::new();
    match (cas.is_empty(), listed) {
        (false, 0) => modes.push(
            "Mode 1: hosts with an EK certificate chaining to a trusted TPM CA".to_owned(),
        ),
        (false, n) => modes.push(format!(
            "Mode 2: hosts with an EK certificate chaining to a trusted TPM CA and listed among the {n} EKs"
        )),
        (true, _) => {}
    }
    if bare > 0 {
        modes.push(format!(
            "Mode 3: hosts without an EK certificate whose EK public key is one of the {bare} listed"
        ));
    }
    if modes.is_empty() {
        modes.push("None: this cluster trusts no TPM yet, so every host is refused".to_owned());
    }
    modes
}

/// Every cluster with its trust configuration and key provider.
pub async fn clusters(state: &AppState) -> Result<Vec<ClusterDetail>> {
    type Loaded = (
        Cluster,
        Vec<CaCert>,
        Vec<ClusterEk>,
        Vec<String>,
        Option<(KeyProviderRecord, Option<KeyServerRecord>)>,
    );
    let loaded: Vec<Loaded> = store::run(&state.store, |s| {
        s.list_clusters()?
            .into_iter()
            .map(|c| {
                let cas = s.list_ca_certs(&c.name)?;
                let eks = s.list_cluster_eks(&c.name)?;
                let versions = s
                    .list_software_versions(&c.name)?
                    .into_iter()
                    .map(|v| v.name)
                    .collect();
                let provider = match s.cluster_key_provider(&c.name)? {
                    Some(p) => match s.get_key_provider(&p)? {
                        Some(p) => {
                            let server = s.get_key_server(&p.key_server)?;
                            Some((p, server))
                        }
                        None => None,
                    },
                    None => None,
                };
                Ok((c, cas, eks, versions, provider))
            })
            .collect()
    })
    .await?;
    let mut out = Vec::with_capacity(loaded.len());
    for (cluster, cas, eks, versions, provider) in loaded {
        let provider = match provider {
            Some((provider, server)) => {
                let endpoints = match server {
                    Some(server) => probe(&server.endpoints).await,
                    None => Vec::new(),
                };
                Some(ProviderView {
                    provider,
                    endpoints,
                })
            }
            None => None,
        };
        out.push(ClusterDetail {
            trust: trust_modes(&cas, &eks),
            cas: cas.iter().map(CaView::from).collect(),
            cluster,
            eks,
            versions,
            provider,
        });
    }
    Ok(out)
}

/// Tries a TCP connection to each `host:port`, all at once, each within [`PROBE_TIMEOUT`].
async fn probe(endpoints: &[String]) -> Vec<EndpointHealth> {
    let mut checks = tokio::task::JoinSet::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let endpoint = endpoint.clone();
        checks.spawn(async move {
            let problem = match tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::net::TcpStream::connect(&endpoint),
            )
            .await
            {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "no connection within {} s",
                    PROBE_TIMEOUT.as_secs()
                )),
            };
            (i, EndpointHealth { endpoint, problem })
        });
    }
    let mut results: Vec<(usize, EndpointHealth)> = checks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, h)| h).collect()
}

/// The event log page: newest first, filtered.
pub async fn events(state: &AppState, filter: EventFilter) -> Result<Vec<Event>> {
    Ok(store::run(&state.store, move |s| s.query_events(&filter)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str, reference: serde_json::Value) -> SoftwareVersionRecord {
        SoftwareVersionRecord {
            cluster: "c".into(),
            name: name.into(),
            reference,
            created_at: 0,
        }
    }

    #[test]
    fn a_refusal_compares_values_and_events_with_each_version() {
        let presented = serde_json::json!({
            "bank": "sha256",
            "pcrs": {"0": "aa".repeat(32), "7": "bb".repeat(32)},
            "events": {"7": [{"number": 3, "digest": "11".repeat(32)}, {"number": 9, "digest": "22".repeat(32)}]},
        });
        let by_value = version(
            "v1",
            serde_json::json!({"name": "v1", "pcrs": {"sha256": {"0": "aa".repeat(32), "7": "cc".repeat(32)}}}),
        );
        let by_events = version(
            "v2",
            serde_json::json!({"name": "v2",
                "pcrs": {"sha256": {"0": "aa".repeat(32)}},
                "events": {"sha256": {"7": ["11".repeat(32), "33".repeat(32)]}}}),
        );
        let c = compare(&presented, &[by_value, by_events], &[0, 7]);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0].pcrs,
            vec![
                PcrRow {
                    pcr: 0,
                    expected: "aa".repeat(32),
                    presented: "aa".repeat(32),
                    matches: true
                },
                PcrRow {
                    pcr: 7,
                    expected: "cc".repeat(32),
                    presented: "bb".repeat(32),
                    matches: false
                },
            ]
        );
        assert!(c[0].events.is_empty());
        assert!(!c[1].pcrs[1].matches);
        assert_eq!(
            c[1].events,
            vec![EventRow {
                pcr: 7,
                position: 1,
                number: Some(9),
                expected: Some("33".repeat(32)),
                presented: Some("22".repeat(32)),
            }]
        );
    }

    #[test]
    fn sessions_expire_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open([1; 32], 100).unwrap();
        assert!(sessions.get(&id, 101).unwrap().is_some());
        assert!(sessions.get("other", 101).unwrap().is_none());
        assert!(
            sessions
                .get(&id, 100 + SESSION_LIFETIME_SECS)
                .unwrap()
                .is_none()
        );
        let id = sessions.open([1; 32], 100).unwrap();
        sessions.close(&id).unwrap();
        assert!(sessions.get(&id, 101).unwrap().is_none());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn trust_modes_follow_the_configuration() {
        assert!(trust_modes(&[], &[])[0].starts_with("None"));
    }
}
