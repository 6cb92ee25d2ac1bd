//! The store tests every backend passes: each case takes a [`Backend`] that opens stores on
//! one fresh database, and [`store_tests!`] runs every case against SQLite (a file in a
//! temporary directory) and PostgreSQL (a database of its own in a private cluster, see
//! [`crate::testing::postgres`]).

use std::sync::Arc;

use super::migrate::MIGRATIONS;
use super::postgres::{PgOptions, PostgresStore};
use super::sqlite::SqliteStore;
use super::{
    AttestationRecord, CaCert, Cluster, ClusterEk, EkEntryKind, Host, HostState, KeyProviderRecord,
    KeyServerRecord, ManagementServer, PrincipalKind, RetiredKey, SoftwareVersionRecord, Store,
    StoreError, TokenInfo, WrappingMode,
};
use crate::testing::postgres::PgCluster;

/// One fresh database of a backend.
pub(crate) trait Backend {
    /// A new store on the database (a reopen, or another replica).
    fn open(&self) -> Box<dyn Store>;
    /// A new store on the database that keeps `results` results per host (retention).
    fn open_with_retention(&self, results: u32) -> Box<dyn Store>;
    /// The schema version in force.
    fn schema_version(&self) -> i64;
}

/// A SQLite file in a temporary directory (in a directory not made yet: open makes it).
pub(crate) struct Sqlite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Sqlite {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/db.sqlite3");
        Self { _dir: dir, path }
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.path).unwrap())
    }

    fn open_with_retention(&self, results: u32) -> Box<dyn Store> {
        Box::new(
            SqliteStore::open(&self.path)
                .unwrap()
                .with_retention(results),
        )
    }

    fn schema_version(&self) -> i64 {
        SqliteStore::open(&self.path)
            .unwrap()
            .schema_version()
            .unwrap()
    }
}

/// A database of its own in the process's shared private cluster.
pub(crate) struct Postgres {
    url: String,
    _cluster: Arc<PgCluster>,
}

impl Postgres {
    pub(crate) fn new() -> Self {
        let cluster = PgCluster::shared().unwrap();
        let url = cluster.create_database().unwrap();
        Self {
            url,
            _cluster: cluster,
        }
    }

    pub(crate) fn store(&self) -> PostgresStore {
        PostgresStore::open(&PgOptions {
            url: self.url.clone(),
            max_connections: 4,
            ..PgOptions::default()
        })
        .unwrap()
    }
}

impl Backend for Postgres {
    fn open(&self) -> Box<dyn Store> {
        Box::new(self.store())
    }

    fn open_with_retention(&self, results: u32) -> Box<dyn Store> {
        Box::new(self.store().with_retention(results))
    }

    fn schema_version(&self) -> i64 {
        self.store().schema_version().unwrap()
    }
}

/// A test per case and backend: `sqlite::CASE` and `postgres::CASE`.
macro_rules! store_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                super::$case(&super::Sqlite::new());
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() {
                super::$case(&super::Postgres::new());
            })*
        }
    };
}

store_tests!(
    data_survives_close_and_reopen,
    principals_groups_and_tokens,
    management_servers_and_replay_keys,
    cluster_trust_configuration_cascades,
    attestation_results_set_host_state,
    events_page_in_order,
    key_servers_providers_and_cluster_providers,
    one_signing_key_for_every_replica,
    signing_keys_rotate_with_a_grace_period,
    a_sweep_period_is_claimed_once,
    a_request_seen_by_one_replica_is_a_replay_on_another,
    the_configuration_generation_follows_changes,
    concurrent_events_are_followed_without_gaps,
    an_expiry_changes_the_state_once_and_spares_a_newer_result,
    a_cluster_is_updated_and_disabled,
    retention_keeps_the_last_results_and_every_state_change,
    a_cluster_has_several_key_providers_and_one_default,
    the_cluster_configuration_generation_follows_its_trust,
    results_are_stored_with_their_clock_each_all_or_none,
);

pub(crate) fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        pcrs: vec![0, 1, 7],
        bank: "sha256".into(),
        created_at: 10,
        disabled_at: None,
        config_generation: 0,
    }
}

pub(crate) fn host(ek: &str, cluster: &str) -> Host {
    Host {
        ek_hash: ek.into(),
        cluster: cluster.into(),
        name: format!("host-{ek}"),
        added_by: "vc".into(),
        ak_public: None,
        state: HostState::Unknown,
        attested_at: None,
        valid_until: None,
        software_version: None,
        created_at: 11,
    }
}

pub(crate) fn token(id: &str, principal: &str) -> TokenInfo {
    TokenInfo {
        id: id.into(),
        principal: principal.into(),
        description: "d".into(),
        created_at: 1,
    }
}

pub(crate) fn key_server(name: &str) -> KeyServerRecord {
    KeyServerRecord {
        name: name.into(),
        endpoints: vec!["a:5696".into(), "b:5696".into()],
        client_certificate: "cert".into(),
        client_key: "key".into(),
        ca_certificates: "ca".into(),
        created_at: 1,
    }
}

pub(crate) fn key_provider(name: &str, key_server: &str) -> KeyProviderRecord {
    KeyProviderRecord {
        name: name.into(),
        key_server: key_server.into(),
        primary_key_id: "7".into(),
        primary_key_version: 2,
        retired: vec![RetiredKey {
            id: "3".into(),
            version: 1,
        }],
        wrapping: WrappingMode::Local,
        refresh_seconds: 60,
        lifetime_seconds: 600,
        created_at: 2,
    }
}

pub(super) fn principals_groups_and_tokens(b: &dyn Backend) {
    let s = b.open();
    s.create_principal("alice", PrincipalKind::Person, 1)
        .unwrap();
    assert!(matches!(
        s.create_principal("alice", PrincipalKind::Service, 1),
        Err(StoreError::Conflict(_))
    ));
    s.add_to_group("alice", "TrustedAdmins").unwrap();
    s.add_to_group("alice", "TrustedAdmins").unwrap();
    s.add_to_group("alice", "Auditors").unwrap();
    assert!(matches!(
        s.add_to_group("bob", "X"),
        Err(StoreError::NotFound(_))
    ));
    let alice = s.get_principal("alice").unwrap().unwrap();
    assert_eq!(alice.groups, vec!["Auditors", "TrustedAdmins"]);
    s.remove_from_group("alice", "Auditors").unwrap();
    assert!(matches!(
        s.remove_from_group("alice", "Auditors"),
        Err(StoreError::NotFound(_))
    ));

    s.create_token(&token("t1", "alice"), b"hash-1").unwrap();
    assert!(matches!(
        s.create_token(&token("t2", "nobody"), b"hash-2"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.principal_for_token(b"hash-1").unwrap().unwrap().name,
        "alice"
    );
    assert_eq!(s.list_tokens("alice").unwrap(), vec![token("t1", "alice")]);
    s.delete_token("alice", "t1").unwrap();
    assert!(s.principal_for_token(b"hash-1").unwrap().is_none());

    // Deleting a principal deletes its tokens and memberships.
    s.create_token(&token("t3", "alice"), b"hash-3").unwrap();
    s.delete_principal("alice").unwrap();
    assert!(s.principal_for_token(b"hash-3").unwrap().is_none());
    s.create_principal("alice", PrincipalKind::Person, 2)
        .unwrap();
    assert!(s.get_principal("alice").unwrap().unwrap().groups.is_empty());
}

pub(super) fn management_servers_and_replay_keys(b: &dyn Backend) {
    let s = b.open();
    let m = ManagementServer {
        id: "vc-1".into(),
        certificate: vec![1, 2],
        subject: "CN=vc".into(),
        fingerprint: "ff".into(),
        created_at: 3,
    };
    s.add_management_server(&m).unwrap();
    assert!(matches!(
        s.add_management_server(&m),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_management_server("vc-1").unwrap(), Some(m.clone()));
    assert_eq!(s.list_management_servers().unwrap(), vec![m]);
    assert!(s.record_request("k1", 100, 0).unwrap());
    assert!(!s.record_request("k1", 101, 0).unwrap());
    // Forgotten once older than the window.
    assert!(s.record_request("k1", 1000, 500).unwrap());
    s.delete_management_server("vc-1").unwrap();
    assert!(s.get_management_server("vc-1").unwrap().is_none());
}

pub(super) fn cluster_trust_configuration_cascades(b: &dyn Backend) {
    let s = b.open();
    s.create_cluster(&cluster("prod")).unwrap();
    assert!(matches!(
        s.create_cluster(&cluster("prod")),
        Err(StoreError::Conflict(_))
    ));
    let ca = CaCert {
        id: "c1".into(),
        cluster: "prod".into(),
        subject: "CN=TPM CA".into(),
        der: vec![9],
        created_at: 1,
    };
    s.add_ca_cert(&ca).unwrap();
    assert!(matches!(
        s.add_ca_cert(&CaCert {
            cluster: "nope".into(),
            ..ca.clone()
        }),
        Err(StoreError::NotFound(_))
    ));
    let ek = ClusterEk {
        ek_hash: "e1".into(),
        cluster: "prod".into(),
        kind: EkEntryKind::BarePublicKey,
        der: vec![7],
        created_at: 2,
    };
    s.add_cluster_ek(&ek).unwrap();
    let v = SoftwareVersionRecord {
        cluster: "prod".into(),
        name: "fw-1".into(),
        reference: serde_json::json!({"name": "fw-1"}),
        created_at: 3,
    };
    s.put_software_version(&v).unwrap();
    let v2 = SoftwareVersionRecord {
        reference: serde_json::json!({"name": "fw-1", "pcrs": {}}),
        ..v.clone()
    };
    s.put_software_version(&v2).unwrap();
    assert_eq!(s.list_software_versions("prod").unwrap(), vec![v2]);
    assert_eq!(s.list_ca_certs("prod").unwrap(), vec![ca]);
    assert_eq!(s.list_cluster_eks("prod").unwrap(), vec![ek]);
    s.add_host(&host("aa", "prod")).unwrap();
    assert!(matches!(
        s.add_host(&host("aa", "prod")),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_host(&host("bb", "none")),
        Err(StoreError::NotFound(_))
    ));

    s.delete_cluster("prod").unwrap();
    assert!(s.list_ca_certs("prod").unwrap().is_empty());
    assert!(s.list_cluster_eks("prod").unwrap().is_empty());
    assert!(s.list_software_versions("prod").unwrap().is_empty());
    assert!(s.get_host("aa").unwrap().is_none());
    assert!(matches!(
        s.delete_cluster("prod"),
        Err(StoreError::NotFound(_))
    ));
}

pub(super) fn attestation_results_set_host_state(b: &dyn Backend) {
    let s = b.open();
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    s.set_host_ak("aa", b"ak").unwrap();
    assert_eq!(s.host_clock("aa").unwrap(), None);
    s.set_host_clock("aa", "{}").unwrap();
    assert_eq!(s.host_clock("aa").unwrap().as_deref(), Some("{}"));
    s.set_host_ak("aa", b"ak").unwrap();
    assert_eq!(
        s.host_clock("aa").unwrap(),
        None,
        "a new AK starts a new clock history"
    );
    let ok = AttestationRecord {
        ek_hash: "aa".into(),
        cluster: "prod".into(),
        at: 100,
        attested: true,
        software_version: Some("fw-1".into()),
        reason: None,
        pcr_digest: Some("00".into()),
        nonce: Some("11".into()),
        valid_until: Some(700),
        token: Some("jwt".into()),
        presented: None,
        config_generation: None,
    };
    let recorded = s.record_attestation(&ok).unwrap();
    assert_eq!(recorded.before, HostState::Unknown);
    // The state change's event is stored with the result, in the same transaction.
    let event = recorded.event.unwrap();
    assert_eq!(event.kind, "host.state_changed");
    assert_eq!(event.subject, "aa");
    assert_eq!(event.detail["from"], "unknown");
    assert_eq!(event.detail["to"], "attested");
    assert_eq!(s.list_events(0, 10).unwrap(), vec![event]);
    let h = s.get_host("aa").unwrap().unwrap();
    assert_eq!(h.state, HostState::Attested);
    assert_eq!(h.attested_at, Some(100));
    assert_eq!(h.valid_until, Some(700));
    assert_eq!(h.ak_public.as_deref(), Some(&b"ak"[..]));
    let bad = AttestationRecord {
        at: 200,
        attested: false,
        software_version: None,
        reason: Some("PCR 7 differs".into()),
        valid_until: None,
        token: None,
        ..ok.clone()
    };
    let recorded = s.record_attestation(&bad).unwrap();
    assert_eq!(recorded.before, HostState::Attested);
    assert_eq!(recorded.event.unwrap().detail["reason"], "PCR 7 differs");
    // The same state again: no event.
    let again = AttestationRecord {
        at: 201,
        ..bad.clone()
    };
    assert_eq!(s.record_attestation(&again).unwrap().event, None);
    assert_eq!(s.list_events(0, 10).unwrap().len(), 2);
    assert_eq!(
        s.get_host("aa").unwrap().unwrap().state,
        HostState::NotAttested
    );
    assert_eq!(s.list_attestations("aa", 10).unwrap(), vec![again, bad, ok]);
    assert_eq!(
        s.set_host_state("aa", HostState::Unknown).unwrap(),
        HostState::NotAttested
    );
    assert!(matches!(
        s.set_host_state("zz", HostState::Unknown),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.list_all_hosts().unwrap().len(), 1);
}

pub(super) fn events_page_in_order(b: &dyn Backend) {
    let s = b.open();
    let ids: Vec<i64> = (0..5)
        .map(|i| {
            s.add_event(i, "k", &format!("s{i}"), &serde_json::json!({}))
                .unwrap()
        })
        .collect();
    let page = s.list_events(ids[1], 2).unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].subject, "s2");
    assert_eq!(page[1].subject, "s3");
}

pub(super) fn key_servers_providers_and_cluster_providers(b: &dyn Backend) {
    let s = b.open();
    let kms = key_server("kms-1");
    s.add_key_server(&kms).unwrap();
    assert!(matches!(
        s.add_key_server(&kms),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_key_server("kms-1").unwrap(), Some(kms.clone()));
    assert_eq!(s.list_key_servers().unwrap(), [kms]);
    let provider = key_provider("p1", "kms-1");
    s.add_key_provider(&provider).unwrap();
    assert!(matches!(
        s.add_key_provider(&KeyProviderRecord {
            name: "p2".into(),
            key_server: "nope".into(),
            ..provider.clone()
        }),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.get_key_provider("p1").unwrap(), Some(provider.clone()));
    assert_eq!(s.list_key_providers().unwrap(), [provider]);
    assert!(matches!(
        s.delete_key_server("kms-1"),
        Err(StoreError::InUse(_))
    ));

    s.create_cluster(&cluster("prod")).unwrap();
    assert_eq!(s.cluster_key_provider("prod").unwrap(), None);
    assert!(matches!(
        s.set_cluster_key_provider("prod", Some("nope")),
        Err(StoreError::NotFound(_))
    ));
    s.set_cluster_key_provider("prod", Some("p1")).unwrap();
    s.set_cluster_key_provider("prod", Some("p1")).unwrap();
    assert_eq!(
        s.cluster_key_provider("prod").unwrap().as_deref(),
        Some("p1")
    );
    assert!(matches!(
        s.delete_key_provider("p1"),
        Err(StoreError::InUse(_))
    ));
    s.set_cluster_key_provider("prod", None).unwrap();
    assert_eq!(s.cluster_key_provider("prod").unwrap(), None);
    s.set_cluster_key_provider("prod", Some("p1")).unwrap();
    // Deleting the cluster releases the provider.
    s.delete_cluster("prod").unwrap();
    s.delete_key_provider("p1").unwrap();
    s.delete_key_server("kms-1").unwrap();
    assert!(matches!(
        s.delete_key_server("kms-1"),
        Err(StoreError::NotFound(_))
    ));
}

pub(super) fn data_survives_close_and_reopen(b: &dyn Backend) {
    {
        let s = b.open();
        assert!(
            s.bootstrap("admin", "TrustedAdmins", &token("t1", "admin"), b"h1", 5)
                .unwrap()
        );
        s.create_cluster(&cluster("prod")).unwrap();
        s.add_host(&host("aa", "prod")).unwrap();
        s.add_event(5, "k", "s", &serde_json::json!({"x": 1}))
            .unwrap();
    }
    let s = b.open();
    assert_eq!(
        b.schema_version(),
        MIGRATIONS.last().unwrap().version,
        "migrations are not re-applied"
    );
    // Bootstrap happens once in the life of the database.
    assert!(
        !s.bootstrap("admin2", "TrustedAdmins", &token("t2", "admin2"), b"h2", 6)
            .unwrap()
    );
    let admin = s.principal_for_token(b"h1").unwrap().unwrap();
    assert_eq!(admin.name, "admin");
    assert_eq!(admin.groups, vec!["TrustedAdmins".to_string()]);
    assert!(s.get_principal("admin2").unwrap().is_none());
    assert_eq!(s.get_cluster("prod").unwrap(), Some(cluster("prod")));
    assert_eq!(s.get_host("aa").unwrap(), Some(host("aa", "prod")));
    assert_eq!(s.list_events(0, 10).unwrap().len(), 1);
}

/// Two stores on one database (two replicas) share one signing key: the first stored wins,
/// sealed under the key-encryption key.
pub(super) fn one_signing_key_for_every_replica(b: &dyn Backend) {
    let a = b.open();
    let c = b.open();
    assert_eq!(a.signing_key("first", 1).unwrap(), "first");
    assert_eq!(c.signing_key("second", 2).unwrap(), "first");
    assert_eq!(a.signing_key("third", 3).unwrap(), "first");
}

/// Each sweep period is claimed once, whichever replica asks first; old claims are dropped.
pub(super) fn a_sweep_period_is_claimed_once(b: &dyn Backend) {
    let a = b.open();
    let c = b.open();
    assert!(a.claim_sweep(10, "a", 100, 0).unwrap());
    assert!(!c.claim_sweep(10, "c", 101, 0).unwrap());
    assert!(!a.claim_sweep(10, "a", 102, 0).unwrap());
    assert!(c.claim_sweep(11, "c", 110, 0).unwrap());
    // Period 10 forgotten: it could be claimed again (the sweeper never asks for the past).
    assert!(c.claim_sweep(12, "c", 120, 11).unwrap());
    assert!(a.claim_sweep(10, "a", 121, 0).unwrap());
}

/// Every configuration change moves the generation, as seen from another store on the same
/// database; attestation results and events do not.
pub(super) fn the_configuration_generation_follows_changes(b: &dyn Backend) {
    let s = b.open();
    let other = b.open();
    let mut last = other.config_generation().unwrap();
    let mut changed = |what: &str| {
        let now = other.config_generation().unwrap();
        assert!(now > last, "{what}: the generation stayed at {last}");
        last = now;
    };
    s.create_cluster(&cluster("prod")).unwrap();
    changed("cluster created");
    s.add_ca_cert(&CaCert {
        id: "c1".into(),
        cluster: "prod".into(),
        subject: "CN=TPM CA".into(),
        der: vec![9],
        created_at: 1,
    })
    .unwrap();
    changed("CA added");
    s.put_software_version(&SoftwareVersionRecord {
        cluster: "prod".into(),
        name: "fw-1".into(),
        reference: serde_json::json!({}),
        created_at: 3,
    })
    .unwrap();
    changed("version added");
    s.add_host(&host("aa", "prod")).unwrap();
    changed("host added");
    s.set_host_ak("aa", b"ak").unwrap();
    changed("AK bound");
    s.create_principal("p", PrincipalKind::Service, 1).unwrap();
    changed("principal created");
    s.add_key_server(&key_server("kms-1")).unwrap();
    changed("key server added");
    let quiet = other.config_generation().unwrap();
    s.record_attestation(&AttestationRecord {
        ek_hash: "aa".into(),
        cluster: "prod".into(),
        at: 100,
        attested: true,
        software_version: Some("fw-1".into()),
        reason: None,
        pcr_digest: None,
        nonce: None,
        valid_until: Some(700),
        token: None,
        presented: None,
        config_generation: None,
    })
    .unwrap();
    s.set_host_clock("aa", "{}").unwrap();
    s.add_event(1, "k", "s", &serde_json::json!({})).unwrap();
    assert!(s.record_request("k1", 1, 0).unwrap());
    assert_eq!(
        other.config_generation().unwrap(),
        quiet,
        "results, clocks, events and replay keys are not configuration"
    );
    s.delete_cluster("prod").unwrap();
    changed("cluster deleted");
}

/// Events written at once by many writers on two stores come out of `list_events` in id
/// order with no id ever appearing behind one already read: a follower misses none.
pub(super) fn concurrent_events_are_followed_without_gaps(b: &dyn Backend) {
    const WRITERS: usize = 4;
    const EACH: usize = 25;
    let stores: Vec<std::sync::Arc<dyn Store>> = (0..2).map(|_| b.open().into()).collect();
    let reader = b.open();
    let mut seen: Vec<i64> = Vec::new();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = std::sync::Arc::clone(&stores[w % 2]);
                scope.spawn(move || {
                    for i in 0..EACH {
                        store
                            .add_event(1, "k", &format!("{w}-{i}"), &serde_json::json!({}))
                            .unwrap();
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < WRITERS * EACH && std::time::Instant::now() < deadline {
            let after = seen.last().copied().unwrap_or(0);
            for e in reader.list_events(after, 1000).unwrap() {
                seen.push(e.id);
            }
        }
        for w in writers {
            w.join().unwrap();
        }
    });
    let all: Vec<i64> = reader
        .list_events(0, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), WRITERS * EACH);
    assert_eq!(seen, all, "the follower saw every event, in order");
}

/// The replay record is the database's: a signed request seen through one store is a replay
/// through another, even when both record it at the same moment.
pub(super) fn a_request_seen_by_one_replica_is_a_replay_on_another(b: &dyn Backend) {
    let a = b.open();
    let c = b.open();
    assert!(a.record_request("op-1", 100, 0).unwrap());
    assert!(!c.record_request("op-1", 101, 0).unwrap());
    let stores: Vec<Arc<dyn Store>> = vec![a.into(), c.into()];
    let firsts: usize = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                scope.spawn(move || store.record_request("op-2", 200, 0).unwrap())
            })
            .collect();
        racers
            .into_iter()
            .map(|r| usize::from(r.join().unwrap()))
            .sum()
    });
    assert_eq!(
        firsts, 1,
        "exactly one of the racing replicas accepts the request"
    );
}

/// The sweeper's expiry on every backend: once, with its event, and never over a newer result.
pub(super) fn an_expiry_changes_the_state_once_and_spares_a_newer_result(b: &dyn Backend) {
    let s = b.open();
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    let ok = AttestationRecord {
        ek_hash: "aa".into(),
        cluster: "prod".into(),
        at: 100,
        attested: true,
        software_version: Some("fw-1".into()),
        reason: None,
        pcr_digest: None,
        nonce: Some("11".into()),
        valid_until: Some(700),
        token: None,
        presented: None,
        config_generation: None,
    };
    s.record_attestation(&ok).unwrap();
    assert_eq!(s.expire_host("aa", 700).unwrap(), None, "valid until 700");
    assert!(matches!(
        s.expire_host("zz", 800),
        Err(StoreError::NotFound(_))
    ));
    let before = s.list_events(0, 100).unwrap().len();
    let event = s.expire_host("aa", 800).unwrap().unwrap();
    assert_eq!(event.kind, "host.state_changed");
    assert_eq!((event.at, event.subject.as_str()), (800, "aa"));
    assert_eq!(event.detail["from"], "attested");
    assert_eq!(event.detail["to"], "unknown");
    assert_eq!(event.detail["cluster"], "prod");
    assert_eq!(event.detail["reason"], crate::store::EXPIRED_REASON);
    let stored = s.list_events(0, 100).unwrap();
    assert_eq!(stored.len(), before + 1);
    assert_eq!(stored.last(), Some(&event));
    assert_eq!(s.get_host("aa").unwrap().unwrap().state, HostState::Unknown);
    assert_eq!(s.expire_host("aa", 900).unwrap(), None, "expired once");
    s.record_attestation(&AttestationRecord {
        at: 850,
        valid_until: Some(2000),
        ..ok
    })
    .unwrap();
    let events = s.list_events(0, 100).unwrap().len();
    assert_eq!(s.expire_host("aa", 900).unwrap(), None);
    assert_eq!(
        s.get_host("aa").unwrap().unwrap().state,
        HostState::Attested
    );
    assert_eq!(s.list_events(0, 100).unwrap().len(), events);
}

pub(super) fn a_cluster_is_updated_and_disabled(b: &dyn Backend) {
    let s = b.open();
    s.create_cluster(&cluster("prod")).unwrap();
    let mut c = cluster("prod");
    c.pcrs = vec![0, 1];
    c.bank = "sha384".into();
    c.disabled_at = Some(20);
    s.update_cluster(&c).unwrap();
    // A new selection is a new configuration of the cluster.
    c.config_generation = 1;
    assert_eq!(s.get_cluster("prod").unwrap(), Some(c.clone()));
    c.disabled_at = None;
    s.update_cluster(&c).unwrap();
    assert_eq!(s.get_cluster("prod").unwrap(), Some(c));
    assert!(matches!(
        s.update_cluster(&cluster("other")),
        Err(StoreError::NotFound(_))
    ));
}

pub(super) fn retention_keeps_the_last_results_and_every_state_change(b: &dyn Backend) {
    let s = b.open_with_retention(3);
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    s.add_host(&host("bb", "prod")).unwrap();
    let result = |ek: &str, at: i64, attested: bool| AttestationRecord {
        ek_hash: ek.into(),
        cluster: "prod".into(),
        at,
        attested,
        software_version: attested.then(|| "fw-1".into()),
        reason: (!attested).then(|| "PCR 7 differs".into()),
        pcr_digest: None,
        nonce: None,
        valid_until: None,
        token: None,
        presented: None,
        config_generation: None,
    };
    // aa: attested at 1..=5, not at 6 and 7, attested again at 8..=12.
    for at in 1..=12 {
        s.record_attestation(&result("aa", at, !(6..=7).contains(&at)))
            .unwrap();
        s.record_attestation(&result("bb", at, true)).unwrap();
    }
    let kept: Vec<i64> = s
        .list_attestations("aa", 100)
        .unwrap()
        .iter()
        .map(|a| a.at)
        .collect();
    // The last three, and the changes: the first result (1), to not attested (6), back (8).
    assert_eq!(kept, vec![12, 11, 10, 8, 6, 1]);
    // Another host's history is its own.
    let kept: Vec<i64> = s
        .list_attestations("bb", 100)
        .unwrap()
        .iter()
        .map(|a| a.at)
        .collect();
    assert_eq!(kept, vec![12, 11, 10, 1]);
    // Without retention, everything stays.
    let all = b.open();
    all.add_host(&host("cc", "prod")).unwrap();
    for at in 1..=12 {
        all.record_attestation(&result("cc", at, true)).unwrap();
    }
    assert_eq!(all.list_attestations("cc", 100).unwrap().len(), 12);
}

pub(super) fn signing_keys_rotate_with_a_grace_period(b: &dyn Backend) {
    let (a, c) = (b.open(), b.open());
    let keys = |s: &dyn Store| -> Vec<(String, i64, Option<i64>)> {
        s.signing_keys()
            .unwrap()
            .into_iter()
            .map(|k| (k.pkcs8_hex.to_string(), k.created_at, k.retired_at))
            .collect()
    };
    assert!(matches!(
        a.rotate_signing_key("k0", 1, 0),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(a.signing_key("k1", 10).unwrap(), "k1");
    assert_eq!(keys(&*c), vec![("k1".into(), 10, None)]);

    a.rotate_signing_key("k2", 20, 100).unwrap();
    let rotated = vec![("k2".into(), 20, None), ("k1".into(), 10, Some(20))];
    assert_eq!(keys(&*c), rotated);
    assert_eq!(c.signing_key("other", 30).unwrap(), "k2");

    // Not while k1's tokens may still be presented.
    match c.rotate_signing_key("k3", 119, 100) {
        Err(StoreError::Conflict(why)) => assert!(why.contains("grace period until 120"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(keys(&*a), rotated);
    c.rotate_signing_key("k3", 120, 100).unwrap();
    assert_eq!(
        keys(&*a),
        vec![("k3".into(), 120, None), ("k2".into(), 20, Some(120))]
    );
}

pub(super) fn a_cluster_has_several_key_providers_and_one_default(b: &dyn Backend) {
    let s = b.open();
    s.add_key_server(&key_server("kms-1")).unwrap();
    for p in ["p1", "p2", "p3"] {
        s.add_key_provider(&key_provider(p, "kms-1")).unwrap();
    }
    s.create_cluster(&cluster("prod")).unwrap();
    s.create_cluster(&cluster("lab")).unwrap();
    assert!(s.cluster_providers("prod").unwrap().is_empty());
    // The default is one of the cluster's providers.
    s.set_cluster_key_provider("prod", Some("p1")).unwrap();
    assert_eq!(s.cluster_providers("prod").unwrap(), ["p1"]);
    s.add_cluster_provider("prod", "p2").unwrap();
    assert!(matches!(
        s.add_cluster_provider("prod", "p2"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_cluster_provider("prod", "nope"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.add_cluster_provider("nope", "p2"),
        Err(StoreError::NotFound(_))
    ));
    s.add_cluster_provider("lab", "p3").unwrap();
    assert_eq!(s.cluster_providers("prod").unwrap(), ["p1", "p2"]);
    assert_eq!(s.cluster_providers("lab").unwrap(), ["p3"]);
    assert_eq!(s.cluster_key_provider("lab").unwrap(), None);
    // A provider in use by a cluster cannot be deleted, default or not.
    assert!(matches!(
        s.delete_key_provider("p2"),
        Err(StoreError::InUse(_))
    ));
    // The default cannot be removed as a mere provider.
    assert!(matches!(
        s.remove_cluster_provider("prod", "p1"),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        s.remove_cluster_provider("prod", "p3"),
        Err(StoreError::NotFound(_))
    ));
    // Switching the default keeps the old one configured.
    s.set_cluster_key_provider("prod", Some("p2")).unwrap();
    assert_eq!(
        s.cluster_key_provider("prod").unwrap().as_deref(),
        Some("p2")
    );
    assert_eq!(s.cluster_providers("prod").unwrap(), ["p1", "p2"]);
    s.remove_cluster_provider("prod", "p1").unwrap();
    assert_eq!(s.cluster_providers("prod").unwrap(), ["p2"]);
    // Clearing the default removes it from the cluster.
    s.add_cluster_provider("prod", "p1").unwrap();
    s.set_cluster_key_provider("prod", None).unwrap();
    assert_eq!(s.cluster_key_provider("prod").unwrap(), None);
    assert_eq!(s.cluster_providers("prod").unwrap(), ["p1"]);
    // Deleting a cluster releases its providers.
    s.delete_cluster("prod").unwrap();
    s.delete_key_provider("p1").unwrap();
    s.delete_key_provider("p2").unwrap();
    assert!(matches!(
        s.delete_key_provider("p3"),
        Err(StoreError::InUse(_))
    ));
}

pub(super) fn the_cluster_configuration_generation_follows_its_trust(b: &dyn Backend) {
    let s = b.open();
    s.create_cluster(&cluster("prod")).unwrap();
    s.create_cluster(&cluster("lab")).unwrap();
    let generation = |name: &str| s.get_cluster(name).unwrap().unwrap().config_generation;
    let mut last = generation("prod");
    let mut changed = |what: &str, s: &dyn Store| {
        let now = s.get_cluster("prod").unwrap().unwrap().config_generation;
        assert!(now > last, "{what}: {now} after {last}");
        last = now;
    };
    let v = SoftwareVersionRecord {
        cluster: "prod".into(),
        name: "fw-1".into(),
        reference: serde_json::json!({"name": "fw-1"}),
        created_at: 3,
    };
    s.put_software_version(&v).unwrap();
    changed("a version added", s.as_ref());
    s.put_software_version(&SoftwareVersionRecord {
        reference: serde_json::json!({"name": "fw-1", "pcrs": {}}),
        ..v.clone()
    })
    .unwrap();
    changed("a version replaced", s.as_ref());
    s.delete_software_version("prod", "fw-1").unwrap();
    changed("a version removed", s.as_ref());
    s.add_ca_cert(&CaCert {
        id: "c1".into(),
        cluster: "prod".into(),
        subject: "CN=TPM CA".into(),
        der: vec![9],
        created_at: 1,
    })
    .unwrap();
    changed("a CA added", s.as_ref());
    s.delete_ca_cert("prod", "c1").unwrap();
    changed("a CA removed", s.as_ref());
    s.add_cluster_ek(&ClusterEk {
        ek_hash: "e1".into(),
        cluster: "prod".into(),
        kind: EkEntryKind::BarePublicKey,
        der: vec![7],
        created_at: 2,
    })
    .unwrap();
    changed("an EK added", s.as_ref());
    s.delete_cluster_ek("prod", "e1").unwrap();
    changed("an EK removed", s.as_ref());
    let mut c = s.get_cluster("prod").unwrap().unwrap();
    c.pcrs = vec![0, 1];
    s.update_cluster(&c).unwrap();
    changed("the PCR selection", s.as_ref());
    c.bank = "sha384".into();
    s.update_cluster(&c).unwrap();
    changed("the bank", s.as_ref());
    // Neither disabling nor another cluster's change is a change of what prod attests against.
    let unchanged = generation("prod");
    c.disabled_at = Some(5);
    s.update_cluster(&c).unwrap();
    s.put_software_version(&SoftwareVersionRecord {
        cluster: "lab".into(),
        ..v.clone()
    })
    .unwrap();
    assert_eq!(generation("prod"), unchanged);
    assert!(generation("lab") > 0);
    // A result keeps the generation it was verified against.
    s.add_host(&host("aa", "prod")).unwrap();
    s.record_attestation(&AttestationRecord {
        ek_hash: "aa".into(),
        cluster: "prod".into(),
        at: 10,
        attested: true,
        software_version: Some("fw-1".into()),
        reason: None,
        pcr_digest: None,
        nonce: None,
        valid_until: Some(20),
        token: None,
        presented: None,
        config_generation: Some(unchanged),
    })
    .unwrap();
    assert_eq!(
        s.list_attestations("aa", 1).unwrap()[0].config_generation,
        Some(unchanged)
    );
    // Deleting the cluster with its configuration works with the triggers in place.
    s.delete_cluster("prod").unwrap();
}

/// Several attestations' writes at once: each stores its host's TPM clock with its result;
/// one for a host that is gone fails alone, storing nothing.
pub(super) fn results_are_stored_with_their_clock_each_all_or_none(b: &dyn Backend) {
    let s = b.open();
    s.create_cluster(&cluster("prod")).unwrap();
    for ek in ["aa", "bb"] {
        s.add_host(&host(ek, "prod")).unwrap();
        s.set_host_ak(ek, b"ak").unwrap();
    }
    let write = |ek: &str, clock: &str| super::ResultWrite {
        record: AttestationRecord {
            ek_hash: ek.into(),
            cluster: "prod".into(),
            at: 100,
            attested: true,
            software_version: Some("fw-1".into()),
            reason: None,
            pcr_digest: Some("00".into()),
            nonce: Some("11".into()),
            valid_until: Some(700),
            token: None,
            presented: None,
            config_generation: None,
        },
        clock: Some(clock.into()),
    };
    let answers = s.record_attestations(&[
        write("aa", "{\"c\":1}"),
        write("gone", "{}"),
        write("bb", "{\"c\":2}"),
    ]);
    assert_eq!(answers.len(), 3);
    for (ek, answer) in [("aa", &answers[0]), ("bb", &answers[2])] {
        let recorded = answer.as_ref().unwrap();
        assert_eq!(recorded.before, HostState::Unknown);
        assert!(recorded.event.is_some());
        assert_eq!(s.get_host(ek).unwrap().unwrap().state, HostState::Attested);
        assert_eq!(s.list_attestations(ek, 10).unwrap().len(), 1);
    }
    assert!(
        matches!(answers[1], Err(StoreError::NotFound(_))),
        "{:?}",
        answers[1]
    );
    assert!(s.list_attestations("gone", 10).unwrap().is_empty());
    assert_eq!(s.host_clock("aa").unwrap().as_deref(), Some("{\"c\":1}"));
    assert_eq!(s.host_clock("bb").unwrap().as_deref(), Some("{\"c\":2}"));
}
