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
