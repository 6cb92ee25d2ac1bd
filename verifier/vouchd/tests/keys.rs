//! The key provider service through vouchd's API, against real PyKMIP servers: key servers and
//! providers configured by TrustedAdmins (checked on add), the seed's figure (providers 1 and 2
//! on KMS-1, provider 3 on KMS-2), and host key operations authorised by the attestation token
//! and the host's current state.
//!
//! Hosts are put in the store and given tokens signed by vouchd's own signer: attestation
//! itself is tested elsewhere (tests/agent.rs, hil-tests); here the token is the input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;
#[path = "../../kmip/tests/common/mod.rs"]
mod pykmip;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Harness, config, harness};
use pykmip::PyKmip;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vouchd::jwt::AttestationClaims;
use vouchd::store::{AttestationRecord, Host, HostState};

async fn add_key_server(h: &Harness, name: &str, server: &PyKmip) {
    let (s, body) = h
        .call(
            Method::POST,
            "/v1/key-servers",
            Some(&h.admin()),
            Some(json!({
                "name": name,
                "endpoints": [format!("127.0.0.1:{}", server.port)],
                "client_certificate_pem": server.pki.client_cert,
                "client_key_pem": server.pki.client_key,
                "ca_certificate_pem": server.pki.ca,
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert!(body.get("client_key").is_none(), "the key is never shown");
}

async fn create_key(h: &Harness, kms: &str) -> String {
    let (s, body) = h
        .call(
            Method::POST,
            &format!("/v1/key-servers/{kms}/keys"),
            Some(&h.admin()),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["key_id"].as_str().unwrap().to_owned()
}

async fn add_provider(
    h: &Harness,
    name: &str,
    kms: &str,
    key: &str,
    wrapping: &str,
) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        "/v1/key-providers",
        Some(&h.admin()),
        Some(json!({"name": name, "key_server": kms, "primary_key_id": key, "wrapping": wrapping})),
    )
    .await
}

async fn cluster_with(h: &Harness, cluster: &str, provider: Option<&str>) {
    let (s, body) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&h.admin()),
            Some(json!({"name": cluster})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    if let Some(p) = provider {
        let (s, body) = h
            .call(
                Method::PUT,
                &format!("/v1/clusters/{cluster}/key-provider"),
                Some(&h.admin()),
                Some(json!({"provider": p})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
}

/// A host of `cluster` in the store, attested or not, and an attestation token for it.
fn host(h: &Harness, n: u8, cluster: &str, attested: bool, exp_in: i64) -> String {
    let store = &h.running.state.store;
    let ek_hash = format!("{n:02x}").repeat(32);
    let now = vouchd::now();
    store
        .add_host(&Host {
            ek_hash: ek_hash.clone(),
            cluster: cluster.into(),
            name: format!("host-{n}"),
            added_by: "test".into(),
            ak_public: None,
            state: HostState::Unknown,
            attested_at: None,
            valid_until: None,
            software_version: None,
            created_at: now,
        })
        .unwrap();
    store
        .record_attestation(&AttestationRecord {
            ek_hash: ek_hash.clone(),
            cluster: cluster.into(),
            at: now,
            attested,
            software_version: Some("fw-1".into()),
            reason: None,
            pcr_digest: None,
            nonce: Some("11".repeat(16)),
            valid_until: Some(now + 600),
            token: None,
            presented: None,
            config_generation: None,
        })
        .unwrap();
    h.running
        .state
        .signer
        .sign(&AttestationClaims {
            iss: "vouchd".into(),
            sub: ek_hash,
            cluster: cluster.into(),
            software_version: "fw-1".into(),
            pcr_digest: "00".repeat(32),
            nonce: "11".repeat(16),
            attestation: "11".repeat(16),
            iat: now,
            exp: now + exp_in,
            jti: format!("{n}"),
        })
        .unwrap()
}

async fn op(h: &Harness, token: &str, op: &str, body: Value) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        &format!("/v1/keys/{op}"),
        Some(token),
        Some(body),
    )
    .await
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

#[tokio::test]
async fn key_providers_for_attested_hosts_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let (kms1, kms2) = (PyKmip::start(), PyKmip::start());
    add_key_server(&h, "kms-1", &kms1).await;
    add_key_server(&h, "kms-2", &kms2).await;
    let (k1, k2, k3) = (
        create_key(&h, "kms-1").await,
        create_key(&h, "kms-1").await,
        create_key(&h, "kms-2").await,
    );

    // Adding checks the key: a missing key is refused with the reason.
    let (s, body) = add_provider(&h, "bad", "kms-1", "9999", "local").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "key_unusable");
    let (s, _) = add_provider(&h, "bad", "nope", &k1, "local").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (name, kms, key, wrapping) in [
        ("provider-1", "kms-1", &k1, "local"),
        ("provider-2", "kms-1", &k2, "remote"),
        ("provider-3", "kms-2", &k3, "local"),
    ] {
        let (s, body) = add_provider(&h, name, kms, key, wrapping).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let (s, list) = h
        .call(Method::GET, "/v1/key-providers", Some(&h.admin()), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    // In use: not removable.
    let (s, body) = as_admin(&h, Method::DELETE, "/v1/key-servers/kms-1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    cluster_with(&h, "prod", Some("provider-1")).await;
    cluster_with(&h, "remote", Some("provider-2")).await;
    cluster_with(&h, "other", Some("provider-3")).await;
    cluster_with(&h, "bare", None).await;
    let a = host(&h, 1, "prod", true, 300);
    let r = host(&h, 2, "remote", true, 300);
    let b = host(&h, 3, "other", true, 300);
    let bare = host(&h, 4, "bare", true, 300);
    let unattested = host(&h, 5, "prod", false, 300);
    let expired = host(&h, 6, "prod", true, -1);

    // An attested host of prod: generate, encrypt, decrypt, rewrap, batch.
    let (s, key) = op(&h, &a, "generate", json!({"aad": b64(b"vm-1")})).await;
    assert_eq!(s, StatusCode::OK, "{key}");
    assert_eq!(key["provider"], "provider-1");
    assert_eq!(B64.decode(key["key"].as_str().unwrap()).unwrap().len(), 32);
    let (s, back) = op(
        &h,
        &a,
        "decrypt",
        json!({"ciphertext": key["wrapped"], "aad": b64(b"vm-1")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{back}");
    assert_eq!(back["plaintext"], key["key"]);
    let (s, ct) = op(
        &h,
        &a,
        "encrypt",
        json!({"plaintext": b64(b"secret"), "aad": b64(b"ctx")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ct}");
    let (s, pt) = op(
        &h,
        &a,
        "decrypt",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"ctx")}),
    )
    .await;
    assert_eq!(
        (s, pt["plaintext"].clone()),
        (StatusCode::OK, json!(b64(b"secret")))
    );
    let (s, rw) = op(
        &h,
        &a,
        "rewrap",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"ctx")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rw}");
    let (s, batch) = op(
        &h,
        &a,
        "batch",
        json!({"items": [
            {"op": "generate"},
            {"op": "decrypt", "ciphertext": ct["ciphertext"], "aad": b64(b"ctx")},
            {"op": "decrypt", "ciphertext": ct["ciphertext"], "aad": b64(b"other")},
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{batch}");
    assert!(batch["results"][0]["wrapped"].is_string());
    assert_eq!(batch["results"][1]["plaintext"], b64(b"secret"));
    assert_eq!(batch["results"][2]["error"], "authentication_failed");

    // Tampered ciphertext or associated data.
    let mut tampered = B64.decode(ct["ciphertext"].as_str().unwrap()).unwrap();
    *tampered.last_mut().unwrap() ^= 1;
    let (s, body) = op(
        &h,
        &a,
        "decrypt",
        json!({"ciphertext": b64(&tampered), "aad": b64(b"ctx")}),
    )
    .await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("authentication_failed"))
    );
    let (s, body) = op(
        &h,
        &a,
        "decrypt",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"xtc")}),
    )
    .await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("authentication_failed"))
    );

    // Remote wrapping (provider 2) and KMS-2 (provider 3) serve their clusters.
    for t in [&r, &b] {
        let (s, ct) = op(&h, t, "encrypt", json!({"plaintext": b64(b"x")})).await;
        assert_eq!(s, StatusCode::OK, "{ct}");
        let (s, pt) = op(&h, t, "decrypt", json!({"ciphertext": ct["ciphertext"]})).await;
        assert_eq!(
            (s, pt["plaintext"].clone()),
            (StatusCode::OK, json!(b64(b"x")))
        );
    }

    // A host of another cluster: its provider refuses prod's ciphertext.
    let (s, body) = op(
        &h,
        &b,
        "decrypt",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"ctx")}),
    )
    .await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("wrong_provider")),
        "{body}"
    );
    // A cluster without a provider, an unattested host, an expired or foreign token.
    let (s, body) = op(&h, &bare, "generate", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("not configured with a key provider"),
        "{body}"
    );
    let (s, body) = op(&h, &unattested, "generate", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body["reason"].as_str().unwrap().contains("not attested"),
        "{body}"
    );
    let (s, body) = op(&h, &expired, "generate", json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        body["reason"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (s, _) = op(&h, &h.admin(), "generate", json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(Method::POST, "/v1/keys/generate", None, Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A host turning "not attested" loses access at once, with its token still unexpired.
    h.running
        .state
        .store
        .set_host_state(&"01".repeat(32), HostState::NotAttested)
        .unwrap();
    let (s, body) = op(
        &h,
        &a,
        "decrypt",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"ctx")}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");

    // A revoked primary key refuses new encryption (remote wrapping: at once).
    let mut c = kms1
        .key_server(vouch_kmip::ProtocolVersion::V1_4)
        .connect()
        .await
        .unwrap();
    c.revoke(&k2, vouch_kmip::RevocationReasonCode::KeyCompromise, None)
        .await
        .unwrap();
    let (s, body) = op(&h, &r, "encrypt", json!({"plaintext": b64(b"x")})).await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::CONFLICT, json!("key_revoked")),
        "{body}"
    );

    // KMS-2 stopped: provider 3 (local wrapping) serves from its cached key; a remote provider
    // there would be unreachable: provider 2's KMS-1 stopped shows it.
    drop(kms2);
    let (s, body) = op(&h, &b, "generate", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    drop(kms1);
    let (s, body) = op(&h, &r, "encrypt", json!({"plaintext": b64(b"x")})).await;
    assert_eq!(
        (s, body["error"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("key_server_unreachable")
        ),
        "{body}"
    );
    assert!(
        body["reason"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
}

/// Attack (item 5 of the security issue): a host of another cluster that shares the key
/// provider decrypts a ciphertext, whatever associated data it passes. Every ciphertext is
/// bound to its host's cluster; the victim keeps decrypting its own.
#[tokio::test]
async fn other_cluster_decrypts_a_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let kms = PyKmip::start();
    add_key_server(&h, "kms-1", &kms).await;
    let key = create_key(&h, "kms-1").await;
    for wrapping in ["local", "remote"] {
        let provider = format!("shared-{wrapping}");
        let (s, body) = add_provider(&h, &provider, "kms-1", &key, wrapping).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    for (n, wrapping) in [(0u8, "local"), (2, "remote")] {
        let (victim, attacker) = (format!("victim-{wrapping}"), format!("attacker-{wrapping}"));
        cluster_with(&h, &victim, Some(&format!("shared-{wrapping}"))).await;
        cluster_with(&h, &attacker, Some(&format!("shared-{wrapping}"))).await;
        let v = host(&h, 0x10 + n, &victim, true, 300);
        let a = host(&h, 0x11 + n, &attacker, true, 300);
        let (s, ct) = op(
            &h,
            &v,
            "encrypt",
            json!({"plaintext": b64(b"victim secret"), "aad": b64(b"vm-1")}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{ct}");
        let (s, key) = op(&h, &v, "generate", json!({"aad": b64(b"vm-1")})).await;
        assert_eq!(s, StatusCode::OK, "{key}");
        for (op_name, field, value) in [
            ("decrypt", "ciphertext", &ct["ciphertext"]),
            ("decrypt", "ciphertext", &key["wrapped"]),
            ("rewrap", "ciphertext", &ct["ciphertext"]),
        ] {
            for aad in [b64(b"vm-1"), b64(b""), b64(victim.as_bytes())] {
                let (s, body) = op(&h, &a, op_name, json!({field: value, "aad": aad})).await;
                assert_eq!(s, StatusCode::BAD_REQUEST, "{op_name}: {body}");
                assert_eq!(body["error"], "authentication_failed", "{body}");
            }
        }
        // The victim still opens its own.
        let (s, pt) = op(
            &h,
            &v,
            "decrypt",
            json!({"ciphertext": ct["ciphertext"], "aad": b64(b"vm-1")}),
        )
        .await;
        assert_eq!(
            (s, pt["plaintext"].clone()),
            (StatusCode::OK, json!(b64(b"victim secret")))
        );
    }
}

/// The key requests' checks are kept in memory between requests (verified tokens, the host's
/// facts from the store), and every change still reaches the next request: an attestation that
/// lapses, a token that expires, a new attestation, a host that fails one, a cluster whose
/// provider is removed.
#[tokio::test]
async fn cached_checks_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let kms = PyKmip::start();
    add_key_server(&h, "kms-1", &kms).await;
    let key = create_key(&h, "kms-1").await;
    let (s, body) = add_provider(&h, "p", "kms-1", &key, "local").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    cluster_with(&h, "c", Some("p")).await;
    let store = &h.running.state.store;
    let encrypt = |token: String| {
        let h = &h;
        async move { op(h, &token, "encrypt", json!({"plaintext": b64(b"x")})).await }
    };
    let attest = |n: u8, nonce: &str, attested: bool, valid_for: i64| {
        let now = vouchd::now();
        store
            .record_attestation(&AttestationRecord {
                ek_hash: format!("{n:02x}").repeat(32),
                cluster: "c".into(),
                at: now,
                attested,
                software_version: Some("fw-1".into()),
                reason: None,
                pcr_digest: None,
                nonce: Some(nonce.into()),
                valid_until: Some(now + valid_for),
                token: None,
                presented: None,
                config_generation: None,
            })
            .unwrap();
    };
    let token = |n: u8, nonce: &str, exp_in: i64| {
        let now = vouchd::now();
        h.running
            .state
            .signer
            .sign(&AttestationClaims {
                iss: "vouchd".into(),
                sub: format!("{n:02x}").repeat(32),
                cluster: "c".into(),
                software_version: "fw-1".into(),
                pcr_digest: "00".repeat(32),
                nonce: nonce.into(),
                attestation: nonce.into(),
                iat: now,
                exp: now + exp_in,
                jti: format!("{n}-{nonce}"),
            })
            .unwrap()
    };
    let lapsing = host(&h, 0x21, "c", true, 600);
    let expiring = host(&h, 0x22, "c", true, 2);
    let steady = host(&h, 0x23, "c", true, 600);
    // Host 0x21's attestation lapses in 2 s; host 0x22's token expires in 2 s.
    attest(0x21, &"11".repeat(16), true, 2);
    for t in [&lapsing, &expiring, &steady] {
        for _ in 0..3 {
            let (s, body) = encrypt(t.clone()).await;
            assert_eq!(s, StatusCode::OK, "{body}");
        }
    }
    let after = vouchd::now() + 3;
    while vouchd::now() < after {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, body) = encrypt(lapsing).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("not attested"),
        "{body}"
    );
    let (s, body) = encrypt(expiring).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (s, body) = encrypt(steady.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // A new attestation: the earlier token is refused, the new one serves.
    attest(0x23, &"22".repeat(16), true, 600);
    let (s, body) = encrypt(steady).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("current attestation"),
        "{body}"
    );
    let renewed = token(0x23, &"22".repeat(16), 600);
    let (s, body) = encrypt(renewed.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A failed attestation: refused at once.
    attest(0x23, &"33".repeat(16), false, 600);
    let (s, body) = encrypt(renewed).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // Attested again; then the cluster's provider removed: refused at once.
    attest(0x23, &"44".repeat(16), true, 600);
    let last = token(0x23, &"44".repeat(16), 600);
    let (s, body) = encrypt(last.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = as_admin(&h, Method::DELETE, "/v1/clusters/c/key-provider").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = encrypt(last).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("not configured with a key provider"),
        "{body}"
    );
}

/// The seed's "key provider 2": a cluster configured with two providers on two keys, one of
/// them its default. A host's request names a provider or gets the default; a provider its
/// cluster is not configured with (another cluster's, or none at all) is refused.
#[tokio::test]
async fn a_host_asks_a_named_provider() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let kms = PyKmip::start();
    add_key_server(&h, "kms-1", &kms).await;
    let (k1, k2) = (create_key(&h, "kms-1").await, create_key(&h, "kms-1").await);
    for (name, key) in [("p1", &k1), ("p2", &k2), ("p3", &k1)] {
        let (s, body) = add_provider(&h, name, "kms-1", key, "local").await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    cluster_with(&h, "prod", Some("p1")).await;
    cluster_with(&h, "lab", Some("p3")).await;
    let (s, body) = as_admin(&h, Method::PUT, "/v1/clusters/prod/key-providers/p2").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["provider"], "p1", "the default stays");
    assert_eq!(body["providers"], json!(["p1", "p2"]));
    let (s, body) = as_admin(&h, Method::PUT, "/v1/clusters/prod/key-providers/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let t = host(&h, 0x40, "prod", true, 300);

    // Provider 2, by name: encrypt and decrypt.
    let (s, ct) = op(
        &h,
        &t,
        "encrypt",
        json!({"plaintext": b64(b"disk key"), "aad": b64(b"vm-1"), "provider": "p2"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ct}");
    let (s, pt) = op(
        &h,
        &t,
        "decrypt",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"vm-1"), "provider": "p2"}),
    )
    .await;
    assert_eq!(
        (s, pt["plaintext"].clone()),
        (StatusCode::OK, json!(b64(b"disk key")))
    );
    // Without a name: the default, which did not make that ciphertext.
    let (s, body) = op(&h, &t, "generate", json!({})).await;
    assert_eq!((s, body["provider"].clone()), (StatusCode::OK, json!("p1")));
    let (s, body) = op(&h, &t, "generate", json!({"provider": "p2"})).await;
    assert_eq!((s, body["provider"].clone()), (StatusCode::OK, json!("p2")));
    let (s, body) = op(
        &h,
        &t,
        "decrypt",
        json!({"ciphertext": ct["ciphertext"], "aad": b64(b"vm-1")}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = op(
        &h,
        &t,
        "batch",
        json!({"provider": "p2", "items": [{"op": "decrypt", "ciphertext": ct["ciphertext"], "aad": b64(b"vm-1")}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["plaintext"], json!(b64(b"disk key")));

    // Another cluster's provider, and one that does not exist: refused, whatever the op.
    for provider in ["p3", "nope"] {
        for (name, body) in [
            ("generate", json!({"provider": provider})),
            (
                "encrypt",
                json!({"plaintext": b64(b"x"), "provider": provider}),
            ),
            (
                "decrypt",
                json!({"ciphertext": ct["ciphertext"], "aad": b64(b"vm-1"), "provider": provider}),
            ),
            ("batch", json!({"items": [], "provider": provider})),
        ] {
            let (s, answer) = op(&h, &t, name, body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{name} with {provider}: {answer}");
            assert_eq!(answer["error"], "forbidden", "{answer}");
            assert!(
                answer["reason"]
                    .as_str()
                    .unwrap()
                    .contains("not configured"),
                "{answer}"
            );
        }
    }

    // The default cannot be removed as one of the providers; provider 2 can, and is then
    // refused at once.
    let (s, body) = as_admin(&h, Method::DELETE, "/v1/clusters/prod/key-providers/p1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = as_admin(&h, Method::DELETE, "/v1/clusters/prod/key-providers/p2").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, body) = op(&h, &t, "generate", json!({"provider": "p2"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = as_admin(&h, Method::GET, "/v1/clusters/prod/key-provider").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["providers"], json!(["p1"]));
}

/// `GET /v1/key-providers/{name}/status` (`vouch provider status`) against a real PyKMIP: a
/// key server with a dead replica first and a live one is reported endpoint by endpoint, the
/// key active; with the key server stopped the key is not usable and the failure is the
/// provider's last error. The metrics carry the same.
#[tokio::test]
async fn provider_status_reports_each_replica_the_key_and_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let mut kms = PyKmip::start();
    // A loopback port nothing listens on: the replica that is down.
    let dead = format!("127.0.0.1:{}", pykmip::free_port());
    let live = format!("127.0.0.1:{}", kms.port);
    let (s, body) = h
        .call(
            Method::POST,
            "/v1/key-servers",
            Some(&h.admin()),
            Some(json!({
                "name": "kms-1",
                "endpoints": [dead, live],
                "client_certificate_pem": kms.pki.client_cert,
                "client_key_pem": kms.pki.client_key,
                "ca_certificate_pem": kms.pki.ca,
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let key = create_key(&h, "kms-1").await;
    let (s, body) = add_provider(&h, "p1", "kms-1", &key, "remote").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let v = provider_status(&h, "p1").await;
    assert_eq!(v["key_state"], "active", "{v}");
    assert_eq!(v["status"], "degraded", "a replica is down: {v}");
    assert_eq!(v["endpoints"][0]["endpoint"], dead.as_str());
    assert_eq!(v["endpoints"][0]["reachable"], false, "{v}");
    assert!(v["endpoints"][0]["error"].is_string(), "{v}");
    assert_eq!(v["endpoints"][1]["reachable"], true, "{v}");
    assert_eq!(v["last_error"], Value::Null, "{v}");

    // The key server stops: nothing answers, the key cannot be checked, and that is the
    // provider's last error, with its time.
    kms.stop();
    let before = vouchd::now();
    let v = provider_status(&h, "p1").await;
    assert_eq!(v["key_state"], "key_server_unreachable", "{v}");
    assert_eq!(v["endpoints"][1]["reachable"], false, "{v}");
    assert!(v["key_error"].is_string(), "{v}");
    assert!(v["last_error"].is_string(), "{v}");
    assert!(v["last_error_at"].as_i64().unwrap() >= before, "{v}");

    let text = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("vouchd_key_server_up{{kms=\"kms-1\",endpoint=\"{dead}\"}} 0"),
        format!("vouchd_key_server_up{{kms=\"kms-1\",endpoint=\"{live}\"}} 0"),
        "vouchd_key_provider_key_active{provider=\"p1\"} 0".to_owned(),
        "vouchd_key_provider_last_error_timestamp_seconds{provider=\"p1\"}".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in {text}");
    }
    let (s, body) = as_admin(&h, Method::GET, "/v1/key-providers/nope/status").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

async fn provider_status(h: &Harness, name: &str) -> Value {
    let (s, body) = as_admin(h, Method::GET, &format!("/v1/key-providers/{name}/status")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

/// A bodiless call as the bootstrap TrustedAdmin.
async fn as_admin(h: &Harness, method: Method, path: &str) -> (StatusCode, Value) {
    h.call(method, path, Some(&h.admin()), None).await
}
