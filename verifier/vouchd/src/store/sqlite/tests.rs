use super::*;
use crate::store::migrate::Migration;
use crate::store::tests::{cluster, host, key_provider, key_server, token};
use crate::store::{EkEntryKind, Store};

#[test]
fn pragmas_and_migrations_are_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db.sqlite3")).unwrap();
    assert_eq!(s.pragma("journal_mode").unwrap(), "wal");
    // synchronous: 2 = FULL.
    assert_eq!(s.pragma("synchronous").unwrap(), "2");
    // Checkpoints: automatic every 1000 pages (what the README promises).
    assert_eq!(s.pragma("wal_autocheckpoint").unwrap(), "1000");
    assert_eq!(s.pragma("foreign_keys").unwrap(), "1");
    assert_eq!(s.schema_version().unwrap(), latest());
}

/// The schema as SQLite describes it: every table and index with its SQL.
fn schema(conn: &Connection) -> Vec<(String, String)> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Writes a database as vouchd wrote it before the migrations were files: the same SQL,
/// recorded in `schema_migrations (version, applied_at)` only; plus `more` versions.
fn write_unchecked_database(path: &Path, more: &[i64]) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .unwrap();
    let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    for m in MIGRATIONS {
        conn.execute_batch(m.sql).unwrap();
    }
    for v in versions.iter().chain(more) {
        conn.execute("INSERT INTO schema_migrations VALUES (?1, 7)", [v])
            .unwrap();
    }
    conn.execute(
        "INSERT INTO clusters (name, pcrs, bank, created_at) VALUES ('prod', '[0,1,7]', 'sha256', 10)",
        [],
    )
    .unwrap();
}

#[test]
fn a_database_from_before_the_migration_files_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    write_unchecked_database(&path, &[]);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), latest());
    assert_eq!(s.get_cluster("prod").unwrap(), Some(cluster("prod")));
    let applied = s.conn().unwrap().applied().unwrap();
    let expected: Vec<AppliedMigration> = MIGRATIONS
        .iter()
        .map(|m| AppliedMigration {
            version: m.version,
            name: m.name.into(),
            checksum: m.checksum(),
            applied_at: 7,
        })
        .collect();
    assert_eq!(
        applied, expected,
        "names and checksums recorded, times kept"
    );
    let fresh = SqliteStore::open_in_memory().unwrap();
    assert_eq!(
        schema(&s.conn().unwrap()),
        schema(&fresh.conn().unwrap()),
        "the same schema as a new database"
    );
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.conn().unwrap().applied().unwrap(), expected);
}

#[test]
fn an_unknown_version_in_an_old_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let unknown = latest() + 1;
    write_unchecked_database(&path, &[unknown]);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains(&format!("migration {unknown}"))),
        "{err}"
    );
}

/// Opens a new database file, changes its record of migrations with `sql`, and opens it again.
fn reopen_after(sql: &str) -> StoreResult<SqliteStore> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    SqliteStore::open(&path)
        .unwrap()
        .conn()
        .unwrap()
        .execute_batch(sql)
        .unwrap();
    SqliteStore::open(&path)
}

/// The newest migration this build knows.
fn latest() -> i64 {
    crate::store::migrate::MIGRATIONS
        .last()
        .map_or(0, |m| m.version)
}

#[test]
fn a_newer_database_is_refused() {
    let future = latest() + 1;
    let err = reopen_after(&format!(
        "INSERT INTO schema_migrations VALUES ({future}, 'future', 'ff', 9)"
    ))
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains(&format!("migration {future} (future)")) && m.contains(&format!("knows up to {}", latest()))),
        "{err}"
    );
}

#[test]
fn a_changed_migration_is_refused() {
    let err =
        reopen_after("UPDATE schema_migrations SET checksum = 'ff' WHERE version = 1").unwrap_err();
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains("migration 1 (initial) was applied with checksum ff")),
        "{err}"
    );
}

#[test]
fn a_failed_migration_leaves_nothing() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.applied().unwrap();
    let broken = Migration {
        version: 1,
        name: "broken",
        sql: "CREATE TABLE a (x TEXT); CREATE TABLE a (x TEXT);",
        postgres: None,
    };
    assert!(migrate::migrate(&mut conn, &[broken], 1).is_err());
    assert_eq!(conn.applied().unwrap(), []);
    assert!(
        schema(&conn).iter().all(|(name, _)| name != "a"),
        "the first statement was rolled back"
    );
}

/// A store with a row in every table.
fn populated() -> SqliteStore {
    let s = SqliteStore::open_in_memory().unwrap();
    s.bootstrap("admin", "TrustedAdmins", &token("t1", "admin"), b"h1", 5)
        .unwrap();
    s.add_management_server(&ManagementServer {
        id: "vc-1".into(),
        certificate: vec![1, 2],
        subject: "CN=vc".into(),
        fingerprint: "ff".into(),
        created_at: 3,
    })
    .unwrap();
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_ca_cert(&CaCert {
        id: "c1".into(),
        cluster: "prod".into(),
        subject: "CN=TPM CA".into(),
        der: vec![9],
        created_at: 1,
    })
    .unwrap();
    s.add_cluster_ek(&ClusterEk {
        ek_hash: "e1".into(),
        cluster: "prod".into(),
        kind: EkEntryKind::Certificate,
        der: vec![7],
        created_at: 2,
    })
    .unwrap();
    s.put_software_version(&SoftwareVersionRecord {
        cluster: "prod".into(),
        name: "fw-1".into(),
        reference: serde_json::json!({"name": "fw-1"}),
        created_at: 3,
    })
    .unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    s.set_host_clock("aa", "{}").unwrap();
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
    s.add_event(5, "k", "s", &serde_json::json!({})).unwrap();
    s.add_key_server(&key_server("kms-1")).unwrap();
    s.add_key_provider(&key_provider("p1", "kms-1")).unwrap();
    s.set_cluster_key_provider("prod", Some("p1")).unwrap();
    s
}

type Read = fn(&SqliteStore) -> StoreResult<()>;

#[test]
fn a_corrupt_row_is_an_error_in_every_table() {
    // The table and column corrupted and blamed, the value written there, how it is read.
    let cases: &[(&str, &str, &str, Read)] = &[
        ("principals", "kind", "'robot'", |s| {
            s.get_principal("admin").map(drop)
        }),
        ("principals", "created_at", "'yesterday'", |s| {
            s.list_principals().map(drop)
        }),
        ("group_members", "group_name", "x'00'", |s| {
            s.principal_for_token(b"h1").map(drop)
        }),
        ("tokens", "description", "x'00'", |s| {
            s.list_tokens("admin").map(drop)
        }),
        ("management_servers", "certificate", "'pem'", |s| {
            s.get_management_server("vc-1").map(drop)
        }),
        ("clusters", "pcrs", "'[0, -1]'", |s| {
            s.list_clusters().map(drop)
        }),
        ("cluster_ca_certs", "der", "'pem'", |s| {
            s.list_ca_certs("prod").map(drop)
        }),
        ("cluster_eks", "kind", "'fingerprint'", |s| {
            s.list_cluster_eks("prod").map(drop)
        }),
        ("software_versions", "reference", "'{'", |s| {
            s.list_software_versions("prod").map(drop)
        }),
        ("hosts", "state", "'asleep'", |s| s.get_host("aa").map(drop)),
        ("hosts", "state", "'asleep'", |s| {
            s.set_host_state("aa", HostState::Unknown).map(drop)
        }),
        ("hosts", "attested_at", "'soon'", |s| {
            s.list_all_hosts().map(drop)
        }),
        ("hosts", "last_clock", "x'00'", |s| {
            s.host_clock("aa").map(drop)
        }),
        ("attestations", "attested", "'yes'", |s| {
            s.list_attestations("aa", 10).map(drop)
        }),
        ("events", "detail", "'not json'", |s| {
            s.list_events(0, 10).map(drop)
        }),
        ("key_servers", "endpoints", r#"'["a:5696", 1]'"#, |s| {
            s.get_key_server("kms-1").map(drop)
        }),
        ("key_providers", "wrapping", "'cloud'", |s| {
            s.list_key_providers().map(drop)
        }),
        ("key_providers", "primary_key_version", "-1", |s| {
            s.get_key_provider("p1").map(drop)
        }),
        ("cluster_key_providers", "provider", "x'00'", |s| {
            s.cluster_key_provider("prod").map(drop)
        }),
    ];
    for &(table, column, value, read) in cases {
        let sql = format!("PRAGMA foreign_keys = OFF; UPDATE {table} SET {column} = {value}");
        let s = populated();
        read(&s).unwrap();
        s.conn().unwrap().execute_batch(&sql).unwrap();
        match read(&s) {
            Err(StoreError::Corrupt {
                table: t,
                column: c,
                ..
            }) if t == table && c == column => {}
            other => panic!("{sql}: expected a corrupt {table}.{column}, got {other:?}"),
        }
    }
}

/// NULL in a column that must hold a value (the schema forbids it; a hand-edited or
/// differently created database may not).
#[test]
fn null_where_a_value_is_needed_is_corrupt() {
    let s = SqliteStore::open_in_memory().unwrap();
    let conn = s.conn().unwrap();
    let err = rows::all::<TokenInfo>(
        &conn,
        "SELECT 't1' AS id, NULL AS principal, '' AS description, 1 AS created_at",
        [],
    )
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { table: "tokens", column: "principal", reason } if reason.contains("Null")),
        "{err}"
    );
    // A column missing from the query is the query's fault, not the data's.
    let err = rows::all::<TokenInfo>(&conn, "SELECT 't1' AS id", []).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
}

/// The sweeper's expiry is one transaction: when its event cannot be stored, the state does
/// not change either. (What an expiry does is `store::tests::an_expiry_changes_the_state_once_
/// and_spares_a_newer_result`, on every backend.)
#[test]
fn an_expiry_changes_the_state_and_stores_its_event_together() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    s.record_attestation(&AttestationRecord {
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
    })
    .unwrap();
    let events = s.list_events(0, 10).unwrap().len();
    s.conn()
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
    assert!(s.expire_host("aa", 800).is_err());
    assert_eq!(
        s.get_host("aa").unwrap().unwrap().state,
        HostState::Attested
    );
    s.conn()
        .unwrap()
        .execute_batch("DROP TRIGGER no_events;")
        .unwrap();
    assert_eq!(s.list_events(0, 10).unwrap().len(), events);
    let event = s.expire_host("aa", 800).unwrap().unwrap();
    assert_eq!(s.list_events(0, 10).unwrap().last(), Some(&event));
    assert_eq!(s.get_host("aa").unwrap().unwrap().state, HostState::Unknown);
}

/// The console's queries answer as their reference filters (`HostQuery::matches`,
/// `EventFilter::matches`) do over every row, pages included.
#[test]
fn console_queries_agree_with_their_reference() {
    use crate::store::{EventFilter, HostQuery};
    let s = SqliteStore::open_in_memory().unwrap();
    s.create_cluster(&cluster("prod")).unwrap();
    s.create_cluster(&cluster("lab")).unwrap();
    let hosts: Vec<Host> = (0u32..40)
        .map(|i| {
            let mut h = host(
                &format!("{i:02x}{}", "ab".repeat(31)),
                if i % 2 == 0 { "prod" } else { "lab" },
            );
            h.name = format!("{}-{i:02}", if i % 5 == 0 { "ESX_Big" } else { "esx" });
            h.state = [
                HostState::Attested,
                HostState::NotAttested,
                HostState::Unknown,
            ][i as usize % 3];
            if h.state == HostState::Attested {
                h.valid_until = Some(1000 + i64::from(i));
                h.software_version = Some(format!("v{}", i % 2));
            }
            h
        })
        .collect();
    s.add_hosts(&hosts).unwrap();
    // A failed bulk insert changes nothing.
    assert!(matches!(
        s.add_hosts(&[host("ff", "prod"), hosts[0].clone()]),
        Err(StoreError::Conflict(_))
    ));
    assert!(s.get_host("ff").unwrap().is_none());

    let queries = [
        HostQuery {
            limit: 10,
            ..HostQuery::default()
        },
        HostQuery {
            limit: 10,
            offset: 35,
            ..HostQuery::default()
        },
        HostQuery {
            cluster: Some("prod".into()),
            state: Some(HostState::Attested),
            limit: 50,
            ..HostQuery::default()
        },
        HostQuery {
            software_version: Some("v1".into()),
            limit: 50,
            ..HostQuery::default()
        },
        HostQuery {
            search: Some("esx_b".into()),
            limit: 50,
            ..HostQuery::default()
        },
        HostQuery {
            search: Some("%".into()),
            limit: 50,
            ..HostQuery::default()
        },
        HostQuery {
            search: Some("0A".into()),
            limit: 50,
            ..HostQuery::default()
        },
        HostQuery {
            search: Some("esx_big-1".into()),
            state: Some(HostState::Unknown),
            limit: 50,
            ..HostQuery::default()
        },
    ];
    for q in &queries {
        let mut want: Vec<Host> = s
            .list_all_hosts()
            .unwrap()
            .into_iter()
            .filter(|h| q.matches(h))
            .collect();
        want.sort_by(|a, b| HostQuery::order(a).cmp(&HostQuery::order(b)));
        let total = want.len() as u64;
        let want: Vec<Host> = want
            .into_iter()
            .skip(usize::try_from(q.offset).unwrap())
            .take(q.limit as usize)
            .collect();
        let got = s.query_hosts(q).unwrap();
        assert_eq!(got.total, total, "{q:?}");
        assert_eq!(got.hosts, want, "{q:?}");
    }
    assert_eq!(
        s.query_hosts(&queries[4]).unwrap().total,
        8,
        "case-insensitive name search"
    );
    assert_eq!(s.query_hosts(&queries[5]).unwrap().total, 0, "% is literal");
    assert_eq!(
        s.query_hosts(&queries[6]).unwrap().total,
        1,
        "EK prefix in any case"
    );

    let counts = s.count_hosts().unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 40);
    let prod_attested = counts
        .iter()
        .find(|c| c.cluster == "prod" && c.state == HostState::Attested)
        .unwrap();
    assert_eq!(
        prod_attested.count,
        hosts
            .iter()
            .filter(|h| h.cluster == "prod" && h.state == HostState::Attested)
            .count() as u64
    );

    let expiring = s.hosts_expiring(1010, 100).unwrap();
    assert!(
        expiring
            .iter()
            .all(|h| h.state == HostState::Attested && h.valid_until.unwrap() < 1010)
    );
    assert_eq!(expiring.len(), 4);
    assert!(
        expiring
            .windows(2)
            .all(|w| w[0].valid_until <= w[1].valid_until)
    );

    for i in 0..30 {
        let kind = if i % 3 == 0 {
            "host.state_changed"
        } else {
            "cluster.created"
        };
        s.add_event(i, kind, &format!("s{}", i % 4), &serde_json::json!({}))
            .unwrap();
    }
    let filters = [
        EventFilter {
            limit: 5,
            ..EventFilter::default()
        },
        EventFilter {
            kind_prefix: Some("host.".into()),
            limit: 100,
            ..EventFilter::default()
        },
        EventFilter {
            kind_prefix: Some("host_".into()),
            limit: 100,
            ..EventFilter::default()
        },
        EventFilter {
            subject: Some("s1".into()),
            before: Some(20),
            limit: 3,
            ..EventFilter::default()
        },
        EventFilter {
            after: Some(25),
            limit: 100,
            ..EventFilter::default()
        },
    ];
    for f in &filters {
        let mut want: Vec<Event> = s
            .list_events(0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| f.matches(e))
            .collect();
        want.reverse();
        want.truncate(f.limit as usize);
        assert_eq!(s.query_events(f).unwrap(), want, "{f:?}");
    }
    assert_eq!(s.query_events(&filters[1]).unwrap().len(), 10);
    assert!(
        s.query_events(&filters[2]).unwrap().is_empty(),
        "_ is literal"
    );
}

#[test]
fn a_refused_result_keeps_what_the_host_presented() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    let presented = serde_json::json!({"bank": "sha256", "pcrs": {"7": "bb"}, "events": {}});
    let record = AttestationRecord {
        ek_hash: "aa".into(),
        cluster: "prod".into(),
        at: 5,
        attested: false,
        software_version: None,
        reason: Some("PCR 7 differs".into()),
        pcr_digest: None,
        nonce: None,
        valid_until: None,
        token: None,
        presented: Some(presented),
        config_generation: None,
    };
    s.record_attestation(&record).unwrap();
    assert_eq!(s.list_attestations("aa", 1).unwrap(), vec![record]);
}

/// Every signed host operation prunes the replay records: through an index on `seen_at`, not
/// a scan of every record kept (which slowed registering a large fleet down as it grew).
#[test]
fn pruning_the_replay_records_uses_an_index() {
    let s = SqliteStore::open_in_memory().unwrap();
    let conn = s.conn().unwrap();
    let plan: Vec<String> = conn
        .prepare("EXPLAIN QUERY PLAN DELETE FROM seen_requests WHERE seen_at < ?1")
        .unwrap()
        .query_map([0], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("seen_requests_by_seen_at")),
        "{plan:?}"
    );
}
