use super::*;
use crate::store::Store;

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        pcrs: vec![0, 1, 7],
        bank: "sha256".into(),
        created_at: 10,
    }
}

fn host(ek: &str, cluster: &str) -> Host {
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

fn token(id: &str, principal: &str) -> TokenInfo {
    TokenInfo {
        id: id.into(),
        principal: principal.into(),
        description: "d".into(),
        created_at: 1,
    }
}

#[test]
fn pragmas_and_migrations_are_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db.sqlite3")).unwrap();
    assert_eq!(s.pragma("journal_mode").unwrap(), "wal");
    // synchronous: 2 = FULL.
    assert_eq!(s.pragma("synchronous").unwrap(), "2");
    assert_eq!(s.pragma("foreign_keys").unwrap(), "1");
    assert_eq!(s.schema_version().unwrap(), 2);
}

#[test]
fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/db.sqlite3");
    {
        let s = SqliteStore::open(&path).unwrap();
        assert!(
            s.bootstrap("admin", "TrustedAdmins", &token("t1", "admin"), b"h1", 5)
                .unwrap()
        );
        s.create_cluster(&cluster("prod")).unwrap();
        s.add_host(&host("aa", "prod")).unwrap();
        s.add_event(5, "k", "s", &serde_json::json!({"x": 1}))
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.schema_version().unwrap(),
        2,
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

#[test]
fn principals_groups_and_tokens() {
    let s = SqliteStore::open_in_memory().unwrap();
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

#[test]
fn management_servers_and_replay_keys() {
    let s = SqliteStore::open_in_memory().unwrap();
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

#[test]
fn cluster_trust_configuration_cascades() {
    let s = SqliteStore::open_in_memory().unwrap();
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

#[test]
fn attestation_results_set_host_state() {
    let s = SqliteStore::open_in_memory().unwrap();
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
    };
    assert_eq!(s.record_attestation(&ok).unwrap(), HostState::Unknown);
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
    assert_eq!(s.record_attestation(&bad).unwrap(), HostState::Attested);
    assert_eq!(
        s.get_host("aa").unwrap().unwrap().state,
        HostState::NotAttested
    );
    assert_eq!(s.list_attestations("aa", 10).unwrap(), vec![bad, ok]);
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

#[test]
fn events_page_in_order() {
    let s = SqliteStore::open_in_memory().unwrap();
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

#[test]
fn key_servers_providers_and_cluster_providers() {
    let s = SqliteStore::open_in_memory().unwrap();
    let kms = KeyServerRecord {
        name: "kms-1".into(),
        endpoints: vec!["a:5696".into(), "b:5696".into()],
        client_certificate: "cert".into(),
        client_key: "key".into(),
        ca_certificates: "ca".into(),
        created_at: 1,
    };
    s.add_key_server(&kms).unwrap();
    assert!(matches!(
        s.add_key_server(&kms),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_key_server("kms-1").unwrap(), Some(kms.clone()));
    assert_eq!(s.list_key_servers().unwrap(), [kms]);
    let provider = KeyProviderRecord {
        name: "p1".into(),
        key_server: "kms-1".into(),
        primary_key_id: "7".into(),
        primary_key_version: 2,
        retired: vec![crate::store::RetiredKey {
            id: "3".into(),
            version: 1,
        }],
        wrapping: WrappingMode::Local,
        refresh_seconds: 60,
        lifetime_seconds: 600,
        created_at: 2,
    };
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
