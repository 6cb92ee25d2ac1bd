//! What only the PostgreSQL store has: a password from outside the URL, TLS verified against
//! the configured CA, errors that never show the password.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::{PgOptions, PostgresStore};
use crate::store::{Store, StoreError};
use crate::testing::postgres::{PgCluster, PgClusterOptions};

const PASSWORD: &str = "correct horse 7f3a";

/// A CA and a server certificate it signs for 127.0.0.1: (CA PEM, server PEM, server key PEM).
fn server_identity() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

fn open(
    url: String,
    password: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> Result<PostgresStore, StoreError> {
    PostgresStore::open(&PgOptions {
        url,
        password: password.map(str::to_owned),
        ca_file: ca_file.map(std::path::Path::to_path_buf),
        max_connections: 2,
    })
}

#[test]
fn tls_against_the_configured_ca_with_a_password_from_outside_the_url() {
    let (ca, cert, key) = server_identity();
    let cluster = PgCluster::start_with(&PgClusterOptions {
        password: Some(PASSWORD.into()),
        tls: Some((cert, key)),
    })
    .unwrap();
    let url = cluster.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();

    let store = open(
        format!("{url}?sslmode=require"),
        Some(PASSWORD),
        Some(&ca_file),
    )
    .unwrap();
    assert!(store.uses_tls().unwrap(), "sslmode=require: encrypted");
    assert_eq!(store.config_generation().unwrap(), 0);
    let plain = open(format!("{url}?sslmode=disable"), Some(PASSWORD), None).unwrap();
    assert!(!plain.uses_tls().unwrap());

    // A server whose CA is not trusted is refused when TLS is required.
    let err = open(format!("{url}?sslmode=require"), Some(PASSWORD), None).unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("cannot connect") && !m.contains(PASSWORD)),
        "{err}"
    );
    // A wrong or missing password fails without showing either.
    for password in [Some("wrong password 1"), None] {
        let err = open(url.clone(), password, Some(&ca_file)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot connect"), "{text}");
        assert!(
            !text.contains(PASSWORD) && !text.contains("wrong password 1"),
            "{text}"
        );
    }
    // A CA file that holds no certificate is a clear error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = open(url, Some(PASSWORD), Some(&empty)).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}

type Read = fn(&PostgresStore) -> crate::store::StoreResult<()>;

/// A value PostgreSQL's types let through but the record does not take (an unknown enum
/// name, bad JSON, a number out of range, NULL where a value is needed) is `Corrupt`, naming
/// the table and the column, never a default.
#[test]
fn a_corrupt_row_is_an_error_naming_its_table_and_column() {
    use crate::store::tests::{cluster, host, key_provider, key_server, token};
    let cases: &[(&str, &str, &str, Read)] = &[
        (
            "principals",
            "kind",
            "UPDATE principals SET kind = 'robot'",
            |s| s.get_principal("admin").map(drop),
        ),
        (
            "tokens",
            "description",
            "ALTER TABLE tokens ALTER COLUMN description DROP NOT NULL; UPDATE tokens SET description = NULL",
            |s| s.list_tokens("admin").map(drop),
        ),
        (
            "clusters",
            "pcrs",
            "UPDATE clusters SET pcrs = '[0, -1]'",
            |s| s.list_clusters().map(drop),
        ),
        (
            "hosts",
            "state",
            "UPDATE hosts SET state = 'asleep' WHERE ek_hash = 'aa'",
            |s| s.get_host("aa").map(drop),
        ),
        (
            "hosts",
            "state",
            "UPDATE hosts SET state = 'asleep' WHERE ek_hash = 'bb'",
            |s| {
                s.set_host_state("bb", crate::store::HostState::Unknown)
                    .map(drop)
            },
        ),
        (
            "events",
            "detail",
            "UPDATE events SET detail = 'not json'",
            |s| s.list_events(0, 10).map(drop),
        ),
        (
            "key_providers",
            "primary_key_version",
            "UPDATE key_providers SET primary_key_version = -1 WHERE name = 'p1'",
            |s| s.get_key_provider("p1").map(drop),
        ),
        (
            "key_providers",
            "wrapping",
            "UPDATE key_providers SET wrapping = 'cloud' WHERE name = 'p2'",
            |s| s.get_key_provider("p2").map(drop),
        ),
    ];
    // One database; each case corrupts a row only its own read touches.
    let b = crate::store::tests::Postgres::new();
    let s = b.store();
    s.bootstrap("admin", "TrustedAdmins", &token("t1", "admin"), b"h1", 5)
        .unwrap();
    s.create_cluster(&cluster("prod")).unwrap();
    s.add_host(&host("aa", "prod")).unwrap();
    s.add_host(&host("bb", "prod")).unwrap();
    s.add_event(5, "k", "s", &serde_json::json!({})).unwrap();
    s.add_key_server(&key_server("kms-1")).unwrap();
    s.add_key_provider(&key_provider("p1", "kms-1")).unwrap();
    s.add_key_provider(&key_provider("p2", "kms-1")).unwrap();
    for &(table, column, sql, read) in cases {
        read(&s).unwrap();
        s.execute_batch(sql).unwrap();
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
