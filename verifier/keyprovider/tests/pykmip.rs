//! Key providers against real PyKMIP 0.11 servers (the harness of vouch-kmip's tests, shared by
//! path): three providers on two key servers, the check on add, revocation, a key server
//! stopped mid-run in both wrapping modes, tampering, rotation and batches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions"
)]

#[path = "../../kmip/tests/common/mod.rs"]
mod common;

use common::PyKmip;
use std::sync::Arc;
use std::time::Duration;
use vouch_keyprovider::ciphertext::Ciphertext;
use vouch_keyprovider::{
    Error, KeyProvider, KeyRef, ManualClock, ProviderConfig, Reply, Request, SystemClock, Wrapping,
};
use vouch_kmip::{
    CryptographicAlgorithm, KeyServer, ProtocolVersion, RevocationReasonCode, SymmetricKeyTemplate,
    spec::usage_mask,
};

const LOCAL: Wrapping = Wrapping::Local {
    refresh_after: Duration::from_secs(60),
    lifetime: Duration::from_secs(600),
};

async fn active_key(kms: &KeyServer, template: &SymmetricKeyTemplate) -> String {
    let mut c = kms.connect().await.unwrap();
    let id = c.create_symmetric_key(template).await.unwrap();
    c.activate(&id).await.unwrap();
    id
}

async fn aes_256(kms: &KeyServer) -> String {
    active_key(kms, &SymmetricKeyTemplate::aes_256(None)).await
}

fn provider(
    name: &str,
    key_server: &str,
    kms: &KeyServer,
    id: &str,
    wrapping: Wrapping,
    clock: Arc<dyn vouch_keyprovider::Clock>,
) -> KeyProvider {
    KeyProvider::new(
        ProviderConfig {
            name: name.into(),
            key_server: key_server.into(),
            primary: KeyRef {
                id: id.into(),
                version: 1,
            },
            retired: vec![],
            wrapping,
        },
        kms.clone(),
        clock,
    )
    .unwrap()
}

fn system() -> Arc<dyn vouch_keyprovider::Clock> {
    Arc::new(SystemClock::new())
}

/// The seed's figure: providers 1 and 2 on KMS-1 (one wrapping locally, one remotely),
/// provider 3 on KMS-2.
#[tokio::test]
async fn three_providers_on_two_key_servers() {
    let (s1, s2) = (PyKmip::start(), PyKmip::start());
    let kms1 = s1.key_server(ProtocolVersion::V1_4);
    let kms2 = s2.key_server(ProtocolVersion::V1_4);
    let (k1, k2, k3) = (
        aes_256(&kms1).await,
        aes_256(&kms1).await,
        aes_256(&kms2).await,
    );
    let providers = [
        provider("provider-1", "kms-1", &kms1, &k1, LOCAL, system()),
        provider(
            "provider-2",
            "kms-1",
            &kms1,
            &k2,
            Wrapping::Remote,
            system(),
        ),
        provider("provider-3", "kms-2", &kms2, &k3, LOCAL, system()),
    ];
    for p in &providers {
        p.check_primary().await.unwrap();
        let data_key = p.generate_key(b"host-1").await.unwrap();
        assert_ne!(*data_key.key, [0; 32]);
        let unwrapped = p.decrypt(&data_key.wrapped, b"host-1").await.unwrap();
        assert_eq!(unwrapped.as_slice(), data_key.key.as_slice());
        let header = Ciphertext::decode(&data_key.wrapped).unwrap().header;
        assert_eq!(header.provider, p.name());
        assert_eq!(header.key_id, p.config().primary.id);
        assert_eq!(header.key_version, 1);

        let ct = p.encrypt(b"a secret", b"ctx").await.unwrap();
        assert_eq!(
            p.decrypt(&ct, b"ctx").await.unwrap().as_slice(),
            b"a secret"
        );
        let empty = p.encrypt(b"", b"").await.unwrap();
        let header_len = 4 + 1 + 1 + p.name().len() + 1 + p.config().primary.id.len() + 4 + 12;
        assert_eq!(empty.len(), header_len + 16 + 4, "header, tag, body length");
    }
    // A provider's ciphertext is not another's, even on the same key server.
    let ct1 = providers[0].encrypt(b"x", b"").await.unwrap();
    assert!(matches!(
        providers[1].decrypt(&ct1, b"").await,
        Err(Error::WrongProvider { .. })
    ));
    // The key server's Encrypt and local AES-GCM write the same format: a local provider with
    // provider 2's key decrypts what the key server encrypted.
    let ct2 = providers[1].encrypt(b"remote", b"aad").await.unwrap();
    let local2 = provider("provider-2", "kms-1", &kms1, &k2, LOCAL, system());
    assert_eq!(
        local2.decrypt(&ct2, b"aad").await.unwrap().as_slice(),
        b"remote"
    );
    let back = local2.encrypt(b"local", b"aad").await.unwrap();
    assert_eq!(
        providers[1]
            .decrypt(&back, b"aad")
            .await
            .unwrap()
            .as_slice(),
        b"local"
    );
}

#[tokio::test]
async fn adding_checks_the_key() {
    let server = PyKmip::start();
    let kms = server.key_server(ProtocolVersion::V1_4);
    let mut c = kms.connect().await.unwrap();
    let pre_active = c
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(None))
        .await
        .unwrap();
    let aes_128 = active_key(
        &kms,
        &SymmetricKeyTemplate {
            length: 128,
            ..SymmetricKeyTemplate::aes_256(None)
        },
    )
    .await;
    let sign_only = active_key(
        &kms,
        &SymmetricKeyTemplate {
            usage_mask: usage_mask::SIGN,
            ..SymmetricKeyTemplate::aes_256(None)
        },
    )
    .await;
    let triple_des = active_key(
        &kms,
        &SymmetricKeyTemplate {
            algorithm: CryptographicAlgorithm::TripleDes,
            length: 192,
            ..SymmetricKeyTemplate::aes_256(None)
        },
    )
    .await;
    let revoked = aes_256(&kms).await;
    c.revoke(&revoked, RevocationReasonCode::KeyCompromise, None)
        .await
        .unwrap();
    for wrapping in [LOCAL, Wrapping::Remote] {
        for id in [
            &pre_active,
            &aes_128,
            &sign_only,
            &triple_des,
            &"999".to_string(),
        ] {
            let err = provider("p", "kms", &kms, id, wrapping, system())
                .check_primary()
                .await
                .unwrap_err();
            assert!(matches!(err, Error::KeyUnusable { .. }), "{id}: {err}");
        }
        let err = provider("p", "kms", &kms, &revoked, wrapping, system())
            .check_primary()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::KeyRevoked { .. }), "{err}");
        assert!(err.to_string().contains("revoked or destroyed"), "{err}");
    }
}

#[tokio::test]
async fn a_revoked_primary_key_refuses_new_encryption() {
    let server = PyKmip::start();
    let kms = server.key_server(ProtocolVersion::V1_4);
    let (k_local, k_remote) = (aes_256(&kms).await, aes_256(&kms).await);
    let clock = Arc::new(ManualClock::new());
    let local = provider("local", "kms", &kms, &k_local, LOCAL, clock.clone());
    let remote = provider("remote", "kms", &kms, &k_remote, Wrapping::Remote, system());
    let ct_local = local.encrypt(b"before", b"").await.unwrap();
    let ct_remote = remote.encrypt(b"before", b"").await.unwrap();

    let mut c = kms.connect().await.unwrap();
    for id in [&k_local, &k_remote] {
        c.revoke(id, RevocationReasonCode::KeyCompromise, Some("test"))
            .await
            .unwrap();
    }
    // Remote wrapping: at once.
    let err = remote.encrypt(b"after", b"").await.unwrap_err();
    assert!(matches!(err, Error::KeyRevoked { .. }), "{err}");
    assert!(matches!(
        remote.decrypt(&ct_remote, b"").await,
        Err(Error::KeyRevoked { .. })
    ));
    // Local wrapping: at the next refresh (documented: within `refresh_after`).
    clock.advance(Duration::from_secs(61));
    let err = local.encrypt(b"after", b"").await.unwrap_err();
    assert!(matches!(err, Error::KeyRevoked { .. }), "{err}");
    assert!(matches!(
        local.decrypt(&ct_local, b"").await,
        Err(Error::KeyRevoked { .. })
    ));
    assert_eq!(err.kind(), "key_revoked");
}

#[tokio::test]
async fn a_key_server_stopped_mid_run() {
    let server = PyKmip::start();
    let kms = server.key_server(ProtocolVersion::V1_4);
    let (k_local, k_remote) = (aes_256(&kms).await, aes_256(&kms).await);
    let clock = Arc::new(ManualClock::new());
    let local = provider("local", "kms", &kms, &k_local, LOCAL, clock.clone());
    let remote = provider("remote", "kms", &kms, &k_remote, Wrapping::Remote, system());
    let ct_local = local.encrypt(b"kept", b"a").await.unwrap();
    let ct_remote = remote.encrypt(b"kept", b"a").await.unwrap();

    drop(server); // killed, with its process group

    // Remote wrapping: every operation needs the key server.
    let err = remote.encrypt(b"x", b"").await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(matches!(
        remote.decrypt(&ct_remote, b"a").await,
        Err(Error::Unreachable { .. })
    ));
    // Local wrapping: the cached key serves, also past the refresh (the key server is tried
    // and found unreachable), until the lifetime ends.
    for at in [0, 120, 599] {
        if at > 0 {
            clock.advance(Duration::from_secs(if at == 120 { 120 } else { 479 }));
        }
        let ct = local.encrypt(b"new", b"b").await.unwrap();
        assert_eq!(local.decrypt(&ct, b"b").await.unwrap().as_slice(), b"new");
        assert_eq!(
            local.decrypt(&ct_local, b"a").await.unwrap().as_slice(),
            b"kept"
        );
        local.generate_key(b"h").await.unwrap();
    }
    clock.advance(Duration::from_secs(2));
    let err = local.encrypt(b"x", b"").await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert_eq!(err.kind(), "key_server_unreachable");
    assert!(matches!(
        local.decrypt(&ct_local, b"a").await,
        Err(Error::Unreachable { .. })
    ));
}

#[tokio::test]
async fn tampered_ciphertext_or_associated_data_is_refused() {
    let server = PyKmip::start();
    let kms = server.key_server(ProtocolVersion::V1_4);
    let (k1, k2) = (aes_256(&kms).await, aes_256(&kms).await);
    for p in [
        provider("local", "kms", &kms, &k1, LOCAL, system()),
        provider("remote", "kms", &kms, &k2, Wrapping::Remote, system()),
    ] {
        let ct = p.encrypt(b"the plaintext", b"host-7").await.unwrap();
        let err = p.decrypt(&ct, b"host-8").await.unwrap_err();
        assert!(matches!(err, Error::Authentication), "{err}");
        assert!(matches!(
            p.decrypt(&ct, b"").await,
            Err(Error::Authentication)
        ));
        // Every byte of the nonce, tag and body.
        let parsed = Ciphertext::decode(&ct).unwrap();
        let header_len = parsed.header.encode().unwrap().len();
        let start = header_len - 12;
        for i in (start..ct.len()).filter(|i| !(header_len + 16..header_len + 20).contains(i)) {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            let err = p.decrypt(&bad, b"host-7").await.unwrap_err();
            assert!(matches!(err, Error::Authentication), "byte {i}: {err}");
        }
        // The key version: not a key of the provider.
        let mut bad = ct.clone();
        bad[start - 1] ^= 0x01;
        assert!(matches!(
            p.decrypt(&bad, b"host-7").await,
            Err(Error::UnknownKey { .. })
        ));
        // Truncated: malformed.
        assert!(matches!(
            p.decrypt(&ct[..ct.len() - 1], b"host-7").await,
            Err(Error::Format(_))
        ));
        assert_eq!(
            p.decrypt(&ct, b"host-7").await.unwrap().as_slice(),
            b"the plaintext"
        );
    }
}

#[tokio::test]
async fn rotation_rewrap_and_batches() {
    let server = PyKmip::start();
    let kms = server.key_server(ProtocolVersion::V1_4);
    let (old, new) = (aes_256(&kms).await, aes_256(&kms).await);
    for wrapping in [LOCAL, Wrapping::Remote] {
        let before = provider("p", "kms", &kms, &old, wrapping, system());
        let ct = before.encrypt(b"long-lived", b"vm-1").await.unwrap();
        let after = KeyProvider::new(
            ProviderConfig {
                primary: KeyRef {
                    id: new.clone(),
                    version: 2,
                },
                retired: vec![before.config().primary.clone()],
                ..before.config().clone()
            },
            kms.clone(),
            system(),
        )
        .unwrap();
        let rewrapped = after.rewrap(&ct, b"vm-1").await.unwrap();
        let header = Ciphertext::decode(&rewrapped).unwrap().header;
        assert_eq!(
            (header.key_id.as_str(), header.key_version),
            (new.as_str(), 2)
        );
        assert_eq!(
            after.decrypt(&rewrapped, b"vm-1").await.unwrap().as_slice(),
            b"long-lived"
        );
        assert_eq!(
            after.decrypt(&ct, b"vm-1").await.unwrap().as_slice(),
            b"long-lived"
        );
        // The old provider does not know version 2.
        assert!(matches!(
            before.decrypt(&rewrapped, b"vm-1").await,
            Err(Error::UnknownKey { .. })
        ));

        let replies = after
            .batch(vec![
                Request::GenerateKey { aad: b"a".to_vec() },
                Request::Encrypt {
                    plaintext: b"p".to_vec().into(),
                    aad: vec![],
                },
                Request::Decrypt {
                    ciphertext: ct.clone(),
                    aad: b"wrong".to_vec(),
                },
                Request::Decrypt {
                    ciphertext: ct.clone(),
                    aad: b"vm-1".to_vec(),
                },
                Request::Rewrap {
                    ciphertext: ct.clone(),
                    aad: b"vm-1".to_vec(),
                },
            ])
            .await
            .unwrap();
        assert_eq!(replies.len(), 5);
        assert!(matches!(replies[0], Ok(Reply::GenerateKey(_))));
        assert!(matches!(replies[1], Ok(Reply::Encrypt(_))));
        assert!(matches!(replies[2], Err(Error::Authentication)));
        assert!(matches!(&replies[3], Ok(Reply::Decrypt(p)) if p.as_slice() == b"long-lived"));
        assert!(matches!(replies[4], Ok(Reply::Rewrap(_))));
        assert!(matches!(
            after
                .batch(vec![Request::GenerateKey { aad: vec![] }; 65])
                .await,
            Err(Error::TooLarge(_))
        ));
    }
}

/// A ciphertext bound to a context opens only in it, whatever the associated data; one
/// without a context (format version 1) still opens.
#[tokio::test]
async fn a_context_binds_the_ciphertext() {
    let server = PyKmip::start();
    let kms = server.key_server(ProtocolVersion::V1_4);
    let (k1, k2) = (aes_256(&kms).await, aes_256(&kms).await);
    for p in [
        provider("local", "kms", &kms, &k1, LOCAL, system()),
        provider("remote", "kms", &kms, &k2, Wrapping::Remote, system()),
    ] {
        let ct = p
            .encrypt_in(Some("prod"), b"the plaintext", b"vm")
            .await
            .unwrap();
        let parsed = Ciphertext::decode(&ct).unwrap();
        assert_eq!(parsed.header.context.as_deref(), Some("prod"));
        assert_eq!(ct[4], vouch_keyprovider::ciphertext::FORMAT_VERSION_CONTEXT);
        for (context, aad) in [
            (Some("staging"), &b"vm"[..]),
            (None, b"vm"),
            (Some("staging"), b""),
        ] {
            assert!(matches!(
                p.decrypt_in(context, &ct, aad).await,
                Err(Error::Authentication)
            ));
        }
        // The context in the header is authenticated: changed, the tag fails.
        let mut bad = ct.clone();
        let at = ct.windows(4).position(|w| w == b"prod").unwrap();
        bad[at + 3] = b'x';
        assert!(matches!(
            p.decrypt_in(Some("prox"), &bad, b"vm").await,
            Err(Error::Authentication)
        ));
        assert_eq!(
            p.decrypt_in(Some("prod"), &ct, b"vm")
                .await
                .unwrap()
                .as_slice(),
            b"the plaintext"
        );
        // A version-1 ciphertext keeps decrypting; rewrapped in a context it is bound.
        let old = p.encrypt(b"old", b"vm").await.unwrap();
        assert_eq!(old[4], vouch_keyprovider::ciphertext::FORMAT_VERSION);
        assert_eq!(
            p.decrypt_in(Some("prod"), &old, b"vm")
                .await
                .unwrap()
                .as_slice(),
            b"old"
        );
        let bound = p.rewrap_in(Some("prod"), &old, b"vm").await.unwrap();
        assert!(matches!(
            p.decrypt_in(Some("staging"), &bound, b"vm").await,
            Err(Error::Authentication)
        ));
    }
}

/// A TCP relay in front of a key server that counts the connections made through it; while
/// held, a new connection waits before it reaches the key server.
struct Relay {
    endpoint: vouch_kmip::Endpoint,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    hold: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: u16) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let (hold, held) = tokio::sync::watch::channel(false);
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut held = held.clone();
                tokio::spawn(async move {
                    if held.wait_for(|h| !*h).await.is_err() {
                        return;
                    }
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self {
            endpoint: vouch_kmip::Endpoint::new("127.0.0.1", port),
            connections,
            hold,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The refresh of a locally wrapped key ahead of its expiry: many concurrent requests across
/// it make exactly one fetch (one connection to the key server), and every one of them is
/// answered from the cached key while that fetch is still held up at the key server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_ahead_of_expiry_and_no_request_waits_on_it() {
    let server = PyKmip::start();
    let id = aes_256(&server.key_server(ProtocolVersion::V1_4)).await;
    let relay = Relay::start(server.port).await;
    let kms = server.key_server_with(vec![relay.endpoint.clone()], ProtocolVersion::V1_4);
    let clock = Arc::new(ManualClock::new());
    let p = Arc::new(provider("p", "kms", &kms, &id, LOCAL, clock.clone()));
    let first = p.encrypt(b"before", b"a").await.unwrap();
    assert_eq!((relay.connections(), p.fetches()), (1, 1));

    // 50 s into a 60 s refresh period: refreshes fall due (from 45 s on); the key server is
    // slow to answer.
    relay.hold.send(true).unwrap();
    clock.advance(Duration::from_secs(50));
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..64u32 {
        let (p, first) = (Arc::clone(&p), first.clone());
        requests.spawn(async move {
            for i in 0..20u32 {
                let aad = format!("{n}-{i}");
                let ct = p.encrypt(b"during", aad.as_bytes()).await?;
                assert_eq!(p.decrypt(&ct, aad.as_bytes()).await?.as_slice(), b"during");
                assert_eq!(p.decrypt(&first, b"a").await?.as_slice(), b"before");
            }
            Ok::<_, Error>(())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), requests.join_all())
        .await
        .expect("the requests are not waiting on the held refresh");
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    assert!(
        p.refreshing(),
        "the refresh is still held at the key server"
    );
    assert_eq!(relay.connections(), 2, "one refresh for 3,840 operations");
    assert_eq!(p.fetches(), 2);

    // Released: the refresh completes and the key it fetched serves past the first key's
    // refresh time without another fetch.
    relay.hold.send(false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while p.refreshing() {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(Duration::from_secs(15));
    let ct = p.encrypt(b"after", b"c").await.unwrap();
    assert_eq!(p.decrypt(&ct, b"c").await.unwrap().as_slice(), b"after");
    assert_eq!((relay.connections(), p.fetches()), (2, 2));
}

/// Remote wrapping reuses its KMIP connections: many operations, few connections.
#[tokio::test]
async fn remote_wrapping_reuses_connections() {
    let server = PyKmip::start();
    let id = aes_256(&server.key_server(ProtocolVersion::V1_4)).await;
    let relay = Relay::start(server.port).await;
    let kms = server.key_server_with(vec![relay.endpoint.clone()], ProtocolVersion::V1_4);
    let p = provider("r", "kms", &kms, &id, Wrapping::Remote, system());
    for i in 0..10u8 {
        let ct = p.encrypt(&[i; 8], b"x").await.unwrap();
        assert_eq!(p.decrypt(&ct, b"x").await.unwrap().as_slice(), &[i; 8]);
    }
    assert_eq!(
        relay.connections(),
        1,
        "20 operations over one pooled connection"
    );
}
