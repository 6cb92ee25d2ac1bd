//! The client against a real PyKMIP 0.11 server (see `common`): every operation, both protocol
//! versions, the state check, replica failover and the unreachable error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions"
)]

mod common;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use common::{PyKmip, Reply, fake_server, free_port};
use std::time::Duration;
use vouch_kmip::spec::attribute;
use vouch_kmip::{
    CipherInput, CryptographicAlgorithm, CryptographicParameters, Endpoint, Error, ObjectType,
    Operation, ProtocolVersion, QueryFunction, RevocationReasonCode, State, SymmetricKeyTemplate,
};

#[tokio::test]
async fn discover_versions_and_query() {
    let server = PyKmip::start();
    let mut kms = server
        .key_server(ProtocolVersion::V1_2)
        .connect()
        .await
        .unwrap();

    let all = kms.discover_versions(&[]).await.unwrap();
    assert!(all.contains(&ProtocolVersion::V1_2), "{all:?}");
    assert!(all.contains(&ProtocolVersion::V1_4), "{all:?}");
    let ours = kms
        .discover_versions(&[ProtocolVersion::V1_4, ProtocolVersion::V1_2])
        .await
        .unwrap();
    assert_eq!(ours, [ProtocolVersion::V1_4, ProtocolVersion::V1_2]);

    let query = kms
        .query(&[
            QueryFunction::QueryOperations,
            QueryFunction::QueryObjects,
            QueryFunction::QueryServerInformation,
        ])
        .await
        .unwrap();
    for op in [
        Operation::Create,
        Operation::Get,
        Operation::GetAttributes,
        Operation::Locate,
        Operation::Activate,
        Operation::Revoke,
        Operation::Destroy,
        Operation::Query,
        Operation::DiscoverVersions,
        Operation::Encrypt,
        Operation::Decrypt,
    ] {
        assert!(query.operations.contains(&op), "{op:?} not in {query:?}");
    }
    // PyKMIP answers Query Objects with an empty list.
    assert!(
        query.object_types.is_empty() || query.object_types.contains(&ObjectType::SymmetricKey)
    );
    assert_eq!(
        query.vendor_identification.as_deref(),
        Some("PyKMIP 0.11.0 Software Server")
    );
}

/// Create, Activate, GetAttributes, Get, Locate, Revoke (the state check refuses the key while
/// PyKMIP still serves Get), Destroy.
async fn life_cycle(version: ProtocolVersion) {
    let server = PyKmip::start();
    let mut kms = server.key_server(version).connect().await.unwrap();
    let name = format!("vouch-cluster-key-{version}");

    let id = kms
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(Some(&name)))
        .await
        .unwrap();
    assert_eq!(kms.state(&id).await.unwrap(), State::PreActive);
    assert!(matches!(
        kms.get_active_key(&id).await,
        Err(Error::KeyNotActive {
            state: State::PreActive,
            ..
        })
    ));

    kms.activate(&id).await.unwrap();
    let attributes = kms
        .get_attributes(
            &id,
            &[
                attribute::STATE,
                attribute::CRYPTOGRAPHIC_ALGORITHM,
                attribute::CRYPTOGRAPHIC_LENGTH,
            ],
        )
        .await
        .unwrap();
    let find = |name: &str| attributes.iter().find(|a| a.name == name).unwrap();
    assert_eq!(
        find(attribute::STATE).as_enumeration(),
        Some(State::Active.value())
    );
    assert_eq!(
        find(attribute::CRYPTOGRAPHIC_ALGORITHM).as_enumeration(),
        Some(CryptographicAlgorithm::Aes.value())
    );
    assert_eq!(
        find(attribute::CRYPTOGRAPHIC_LENGTH).as_integer(),
        Some(256)
    );

    let key = kms.get_active_key(&id).await.unwrap();
    assert_eq!(key.id, id);
    assert_eq!(key.algorithm, CryptographicAlgorithm::Aes);
    assert_eq!(key.length, 256);
    assert_eq!(key.material.len(), 32);
    assert_eq!(kms.get(&id).await.unwrap(), key);

    // A second key, so Locate has to choose.
    let other = kms
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(Some("another")))
        .await
        .unwrap();
    assert_eq!(
        kms.locate_by_name(&name).await.unwrap(),
        std::slice::from_ref(&id)
    );
    assert_eq!(kms.locate_by_name("another").await.unwrap(), [other]);
    assert!(kms.locate_by_name("nobody").await.unwrap().is_empty());

    kms.revoke(
        &id,
        RevocationReasonCode::CessationOfOperation,
        Some("cluster retired"),
    )
    .await
    .unwrap();
    assert_eq!(kms.state(&id).await.unwrap(), State::Deactivated);
    // PyKMIP still hands out the material of a revoked key...
    assert_eq!(kms.get(&id).await.unwrap().material, key.material);
    // ...so the state check is what refuses it.
    let err = kms.get_active_key(&id).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::KeyRevoked {
                state: State::Deactivated,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("revoked or destroyed"), "{err}");

    kms.destroy(&id).await.unwrap();
    // PyKMIP forgets a destroyed object: not found, by Get and by the state check.
    assert!(matches!(
        kms.get_active_key(&id).await,
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(kms.get(&id).await, Err(Error::KeyNotFound { .. })));
    assert!(kms.locate_by_name(&name).await.unwrap().is_empty());
}

#[tokio::test]
async fn key_life_cycle_kmip_1_2() {
    life_cycle(ProtocolVersion::V1_2).await;
}

#[tokio::test]
async fn key_life_cycle_kmip_1_4() {
    life_cycle(ProtocolVersion::V1_4).await;
}

#[tokio::test]
async fn active_key_cannot_be_destroyed_and_unknown_keys_are_not_found() {
    let server = PyKmip::start();
    let mut kms = server
        .key_server(ProtocolVersion::V1_2)
        .connect()
        .await
        .unwrap();
    let id = kms
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(None))
        .await
        .unwrap();
    kms.activate(&id).await.unwrap();
    let err = kms.destroy(&id).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                operation: Operation::Destroy,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        kms.get_active_key("999").await,
        Err(Error::KeyNotFound { .. })
    ));
}

/// AES-256-GCM by the server (KMIP 1.4: AAD and tag), checked against aws-lc-rs with the
/// material from Get: what the server encrypts, the key provider can decrypt locally.
#[tokio::test]
async fn encrypt_decrypt_aes_gcm_kmip_1_4() {
    let server = PyKmip::start();
    let mut kms = server
        .key_server(ProtocolVersion::V1_4)
        .connect()
        .await
        .unwrap();
    let id = kms
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(None))
        .await
        .unwrap();
    kms.activate(&id).await.unwrap();

    let iv = [7u8; 12];
    let plaintext = b"a data encryption key for host 42";
    let encrypted = kms
        .encrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_gcm(),
                data: plaintext,
                iv: Some(&iv),
                aad: Some(b"host-42"),
                tag: None,
            },
        )
        .await
        .unwrap();
    let tag = encrypted.tag.clone().expect("GCM returns a tag");
    assert_eq!(tag.len(), 16);
    assert_eq!(encrypted.data.len(), plaintext.len());
    assert!(encrypted.iv.is_none(), "the server made an IV we gave");

    let decrypted = kms
        .decrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_gcm(),
                data: &encrypted.data,
                iv: Some(&iv),
                aad: Some(b"host-42"),
                tag: Some(&tag),
            },
        )
        .await
        .unwrap();
    assert_eq!(decrypted.as_slice(), plaintext);

    // A wrong AAD fails authentication on the server.
    let err = kms
        .decrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_gcm(),
                data: &encrypted.data,
                iv: Some(&iv),
                aad: Some(b"host-43"),
                tag: Some(&tag),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");

    // The same ciphertext opens locally with the key's material.
    let key = kms.get_active_key(&id).await.unwrap();
    let local = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.material).unwrap());
    let mut sealed = [encrypted.data.as_slice(), tag.as_slice()].concat();
    let opened = local
        .open_in_place(
            Nonce::assume_unique_for_key(iv),
            Aad::from(b"host-42"),
            &mut sealed,
        )
        .unwrap();
    assert_eq!(opened, plaintext);

    // A revoked key no longer encrypts.
    kms.revoke(&id, RevocationReasonCode::KeyCompromise, None)
        .await
        .unwrap();
    let err = kms
        .encrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_gcm(),
                data: plaintext,
                iv: Some(&iv),
                aad: None,
                tag: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(matches!(
        kms.get_active_key(&id).await,
        Err(Error::KeyRevoked {
            state: State::Compromised,
            ..
        })
    ));
}

/// AES-256-CBC with PKCS#5 padding, KMIP 1.2; the server makes the IV.
#[tokio::test]
async fn encrypt_decrypt_aes_cbc_kmip_1_2() {
    let server = PyKmip::start();
    let mut kms = server
        .key_server(ProtocolVersion::V1_2)
        .connect()
        .await
        .unwrap();
    let id = kms
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(None))
        .await
        .unwrap();
    kms.activate(&id).await.unwrap();
    let plaintext = b"seventeen bytes!!";
    let encrypted = kms
        .encrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_cbc_pkcs5(),
                data: plaintext,
                iv: None,
                aad: None,
                tag: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(encrypted.data.len(), 32, "padded to two blocks");
    let iv = encrypted.iv.clone().expect("the server made an IV");
    assert_eq!(iv.len(), 16);
    let decrypted = kms
        .decrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_cbc_pkcs5(),
                data: &encrypted.data,
                iv: Some(&iv),
                aad: None,
                tag: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(decrypted.as_slice(), plaintext);

    // AAD needs KMIP 1.4: refused before anything is sent.
    let err = kms
        .encrypt(
            &id,
            &CipherInput {
                parameters: CryptographicParameters::aes_gcm(),
                data: plaintext,
                iv: None,
                aad: Some(b"x"),
                tag: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn a_dead_first_replica_falls_over_to_the_second() {
    let server = PyKmip::start();
    let dead = Endpoint::new("127.0.0.1", free_port());
    let kms = server.key_server_with(vec![dead, server.endpoint()], ProtocolVersion::V1_4);
    let mut connection = kms.connect().await.unwrap();
    assert_eq!(connection.endpoint(), &server.endpoint());
    assert!(!connection.discover_versions(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn all_replicas_dead_is_unreachable() {
    let server = PyKmip::start();
    let dead = [free_port(), free_port()].map(|p| Endpoint::new("127.0.0.1", p));
    let kms = server.key_server_with(dead.to_vec(), ProtocolVersion::V1_2);
    let err = kms.connect().await.unwrap_err();
    let Error::Unreachable { attempts } = &err else {
        panic!("expected Unreachable, got {err}");
    };
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].endpoint, dead[0].to_string());
    assert!(attempts[0].reason.contains("TCP connect"), "{err}");
    assert!(
        err.to_string().starts_with("key server unreachable"),
        "{err}"
    );
}

/// A replica whose certificate the CA did not sign counts as unreachable: it is not ours.
#[tokio::test]
async fn a_replica_with_an_untrusted_certificate_is_unreachable() {
    let server = PyKmip::start();
    let other_pki = common::Pki::new();
    let kms = vouch_kmip::KeyServer::new(
        vec![server.endpoint()],
        server.pki.client_cert.as_bytes(),
        server.pki.client_key.as_bytes(),
        other_pki.ca.as_bytes(),
    )
    .unwrap()
    .with_timeout(Duration::from_secs(5));
    let err = kms.connect().await.unwrap_err();
    let Error::Unreachable { attempts } = &err else {
        panic!("expected Unreachable, got {err}");
    };
    assert!(attempts[0].reason.contains("TLS handshake"), "{err}");
}

/// A replica that completes TLS and then goes silent: the request times out there and runs
/// again on the next replica.
#[tokio::test]
async fn a_silent_replica_falls_over_mid_request() {
    let server = PyKmip::start();
    let mut kms = server
        .key_server(ProtocolVersion::V1_4)
        .connect()
        .await
        .unwrap();
    let id = kms
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(None))
        .await
        .unwrap();
    kms.activate(&id).await.unwrap();
    let expected = kms.get(&id).await.unwrap();

    let silent = fake_server(&server.pki, Reply::Silence).await;
    let replicas = server
        .key_server_with(vec![silent, server.endpoint()], ProtocolVersion::V1_4)
        .with_timeout(Duration::from_secs(1));
    assert_eq!(replicas.get_active_key(&id).await.unwrap(), expected);

    // Not an availability problem: returned as is, not retried into "unreachable".
    kms.revoke(&id, RevocationReasonCode::Superseded, None)
        .await
        .unwrap();
    let replicas = server.key_server_with(
        vec![server.endpoint(), Endpoint::new("127.0.0.1", free_port())],
        ProtocolVersion::V1_4,
    );
    let err = replicas.get_active_key(&id).await.unwrap_err();
    assert!(matches!(err, Error::KeyRevoked { .. }), "{err}");

    // Every replica silent or dead: unreachable, each named.
    let silent = fake_server(&server.pki, Reply::Silence).await;
    let dead = Endpoint::new("127.0.0.1", free_port());
    let replicas = server
        .key_server_with(vec![silent, dead], ProtocolVersion::V1_4)
        .with_timeout(Duration::from_secs(1));
    let err = replicas.get_active_key(&id).await.unwrap_err();
    let Error::Unreachable { attempts } = &err else {
        panic!("expected Unreachable, got {err}");
    };
    assert!(attempts[0].reason.contains("did not answer"), "{err}");
    assert!(attempts[1].reason.contains("TCP connect"), "{err}");
}
