//! The management API, in-process over TLS on loopback.

mod common;

use common::{ManagementKey, config, harness, tpm_ca_pem};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn bootstrap_token_is_shown_once_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let first = harness(config(dir.path())).await;
    let token = first.admin();
    assert!(first.running.tls_generated);
    let fingerprint = first.running.tls_fingerprint.clone();
    drop(first);

    let second = harness(config(dir.path())).await;
    assert!(second.running.bootstrap_token.is_none(), "shown once only");
    assert!(!second.running.tls_generated);
    assert_eq!(
        second.running.tls_fingerprint, fingerprint,
        "certificate persisted"
    );
    let (s, me) = second
        .call(Method::GET, "/v1/whoami", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["name"], "admin");
    assert_eq!(me["groups"], json!(["TrustedAdmins"]));
}

#[tokio::test]
async fn refusals_are_401_or_403_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;

    // No token.
    let (s, body) = h.call(Method::GET, "/v1/clusters", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthenticated");
    assert!(body["reason"].as_str().unwrap().contains("Authorization"));

    // An unknown token.
    let (s, body) = h
        .call(Method::GET, "/v1/clusters", Some("vouch_not-a-token"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body["reason"].as_str().unwrap().contains("unknown"));

    // A principal outside TrustedAdmins: authenticated, not allowed.
    let bob = h.principal("bob", &["Operators"]).await;
    let (s, me) = h.call(Method::GET, "/v1/whoami", Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["name"], "bob");
    let (s, body) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&bob),
            Some(json!({"name": "prod"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "forbidden");
    assert!(body["reason"].as_str().unwrap().contains("TrustedAdmins"));

    // A deleted principal's token stops working.
    let admin = h.admin();
    let (s, _) = h
        .call(Method::DELETE, "/v1/principals/bob", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call(Method::GET, "/v1/whoami", Some(&bob), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A revoked token stops working.
    let carol = h.principal("carol", &["TrustedAdmins"]).await;
    let (_, tokens) = h
        .call(
            Method::GET,
            "/v1/principals/carol/tokens",
            Some(&admin),
            None,
        )
        .await;
    let id = tokens[0]["id"].as_str().unwrap();
    let (s, _) = h
        .call(
            Method::GET,
            "/v1/principals/nobody/tokens",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(tokens[0].get("token").is_none(), "secrets are never listed");
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/principals/carol/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call(Method::GET, "/v1/whoami", Some(&carol), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The last TrustedAdmins member cannot be removed.
    let (s, _) = h
        .call(Method::DELETE, "/v1/principals/carol", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = h
        .call(Method::DELETE, "/v1/principals/admin", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    // Denials are counted.
    let (_, _) = h.call(Method::GET, "/healthz", None, None).await;
    let text = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("vouchd_auth_denials_total{kind=\"forbidden\"}"),
        "{text}"
    );
    assert!(text.contains("vouchd_auth_denials_total{kind=\"unauthenticated\"}"));
    assert!(text.contains("route=\"/v1/clusters\""));
}

#[tokio::test]
async fn host_operations_need_a_management_server_signature() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let admin = h.admin();
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "prod"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let vc = ManagementKey::new("vc-1");
    let (s, body) = h
        .call(
            Method::POST,
            "/v1/management-servers",
            Some(&admin),
            Some(json!({"id": vc.id, "certificate_pem": vc.certificate_pem})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let path = "/v1/clusters/prod/hosts";
    let ek = "ab".repeat(32);
    let body = json!({"name": "esx-01", "ek_hash": ek});
    let bytes = serde_json::to_vec(&body).unwrap();
    let now = vouchd::now();

    // A TrustedAdmins member without host permission cannot add hosts.
    let (s, reply) = h
        .call(Method::POST, path, Some(&admin), Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("host permission")
    );

    // A signature by an unregistered server.
    let stranger = ManagementKey::new("vc-9");
    let sig = stranger.sign("POST", path, now, "n0", &bytes);
    let (s, reply) = h
        .send(
            Method::POST,
            path,
            Some(&admin),
            Some(body.clone()),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(reply["reason"].as_str().unwrap().contains("not registered"));

    // A signature by a registered id but another key.
    let impostor = ManagementKey::new("vc-1");
    let sig = impostor.sign("POST", path, now, "n1", &bytes);
    let (s, _) = h
        .send(
            Method::POST,
            path,
            Some(&admin),
            Some(body.clone()),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A signature over another body.
    let sig = vc.sign("POST", path, now, "n2", b"{}");
    let (s, _) = h
        .send(
            Method::POST,
            path,
            Some(&admin),
            Some(body.clone()),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A stale signature.
    let sig = vc.sign("POST", path, now - 301, "n3", &bytes);
    let (s, reply) = h
        .send(
            Method::POST,
            path,
            Some(&admin),
            Some(body.clone()),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(reply["reason"].as_str().unwrap().contains("timestamp"));

    // A good signature, but no bearer token: still 401.
    let sig = vc.sign("POST", path, now, "n4", &bytes);
    let (s, _) = h
        .send(
            Method::POST,
            path,
            None,
            Some(body.clone()),
            Some(sig.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A good signature from a principal outside TrustedAdmins: 403.
    let op = h.principal("operator", &[]).await;
    let (s, _) = h
        .send(
            Method::POST,
            path,
            Some(&op),
            Some(body.clone()),
            Some(sig.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Accepted: TrustedAdmins and the management server's signature.
    let (s, host) = h
        .send(
            Method::POST,
            path,
            Some(&admin),
            Some(body.clone()),
            Some(sig.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{host}");
    assert_eq!(host["state"], "unknown");
    assert_eq!(host["added_by"], "vc-1");

    // The same signed request again is a replay.
    let (s, reply) = h
        .send(
            Method::POST,
            path,
            Some(&admin),
            Some(body.clone()),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(reply["reason"].as_str().unwrap().contains("replay"));

    // Status is visible; removal needs a signature too.
    let (s, status) = h
        .call(Method::GET, &format!("/v1/hosts/{ek}"), Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["state"], "unknown");
    assert_eq!(status["recent"], json!([]));
    let del = format!("/v1/clusters/prod/hosts/{ek}");
    let (s, _) = h.call(Method::DELETE, &del, Some(&admin), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let sig = vc.sign("DELETE", &del, vouchd::now(), "n5", b"");
    let (s, _) = h
        .send(Method::DELETE, &del, Some(&admin), None, Some(sig))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .call(Method::GET, &format!("/v1/hosts/{ek}"), Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Every change left an event.
    let (_, events) = h.call(Method::GET, "/v1/events", Some(&admin), None).await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"host.added"), "{kinds:?}");
    assert!(kinds.contains(&"host.removed"), "{kinds:?}");
}

#[tokio::test]
async fn trust_configuration_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let admin = h.admin();
    let a = Some(admin.as_str());

    // Off by default: nothing is trusted.
    let (_, clusters) = h.call(Method::GET, "/v1/clusters", a, None).await;
    assert_eq!(clusters, json!([]));

    let (s, c) = h
        .call(
            Method::POST,
            "/v1/clusters",
            a,
            Some(json!({"name": "prod", "pcrs": [0, 2, 4, 7]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(c["bank"], "sha256");
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters",
            a,
            Some(json!({"name": "prod"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters",
            a,
            Some(json!({"name": "x", "bank": "md5"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, body) = h
        .call(Method::POST, "/v1/clusters", a, Some(json!({"nam": "x"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");

    // TPM CA certificates, PEM, one per hardware type.
    let pem = format!(
        "{}{}",
        tpm_ca_pem("Vendor A EK CA"),
        tpm_ca_pem("Vendor B EK CA")
    );
    let (s, cas) = h
        .call(
            Method::POST,
            "/v1/clusters/prod/tpm-ca-certs",
            a,
            Some(json!({"certificate_pem": pem})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cas}");
    assert_eq!(cas.as_array().unwrap().len(), 2);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters/prod/tpm-ca-certs",
            a,
            Some(json!({"certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let id = cas[0]["id"].as_str().unwrap();
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/clusters/prod/tpm-ca-certs/{id}"),
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // A bare EK public key (mode 3).
    let ek_key = rcgen::KeyPair::generate().unwrap();
    let (s, ek) = h
        .call(
            Method::POST,
            "/v1/clusters/prod/eks",
            a,
            Some(json!({"kind": "bare_public_key", "pem": ek_key.public_key_pem()})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ek}");
    assert_eq!(ek["ek_hash"].as_str().unwrap().len(), 64);

    // Software versions are vouch-attest reference values.
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/clusters/prod/software-versions/fw-1.0",
            a,
            // A reference for every PCR the cluster compares (0, 2, 4, 7).
            Some(json!({"pcrs": {"sha256": {
                "0": "00".repeat(32),
                "2": "02".repeat(32),
                "4": "04".repeat(32),
                "7": "07".repeat(32),
            }}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reference"]["name"], "fw-1.0");
    let (s, _) = h
        .call(
            Method::PUT,
            "/v1/clusters/prod/software-versions/fw-2.0",
            a,
            Some(json!({"pcrs": {"sha256": {"0": "not hex"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, view) = h.call(Method::GET, "/v1/clusters/prod", a, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(view["tpm_ca_certs"], 1);
    assert_eq!(view["eks"], 1);
    assert_eq!(view["software_versions"], 1);
    assert_eq!(view["hosts"], 0);

    let (s, _) = h.call(Method::DELETE, "/v1/clusters/prod", a, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = h.call(Method::GET, "/v1/clusters/prod", a, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn every_described_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let admin = h.admin();
    let (s, doc) = h.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut described = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            described += 1;
            let concrete = path
                .replace("{ek_hash}", &"ab".repeat(32))
                .replace(['{', '}'], "");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(m, Method::POST | Method::PUT).then(|| json!({}));
            let (s, reply) = h.call(m, &concrete, Some(&admin), body).await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(reply["error"], "no_such_route", "{method} {path}");
        }
    }
    assert!(described >= 54, "only {described} operations described");
    // And an undescribed path is not served.
    let (s, reply) = h.call(Method::GET, "/v1/nothing", Some(&admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(reply["error"], "no_such_route");
    let (s, _) = h
        .call(Method::PATCH, "/v1/clusters", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

/// The served document passes an independent OpenAPI 3 validator (openapi-spec-validator,
/// which `cargo xtask setup` installs), and declares every operation's security.
#[tokio::test]
async fn openapi_document_validates() {
    const VALIDATOR: &str = "/opt/vouch/openapi-venv/bin/openapi-spec-validator";
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let (s, doc) = h.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    assert!(
        std::path::Path::new(VALIDATOR).is_file(),
        "{VALIDATOR} is missing: run `cargo xtask setup`"
    );
    let out = std::process::Command::new(VALIDATOR)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation but the public ones needs a credential.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let public = matches!(
                path.as_str(),
                "/healthz" | "/metrics" | "/openapi.json" | "/.well-known/jwks.json"
            );
            assert_eq!(
                op.get("security").is_none(),
                public,
                "{method} {path}: security {:?}",
                op.get("security")
            );
        }
    }
    // The schemas are the contract's.
    for name in [
        "Principal",
        "HostView",
        "HostStatus",
        "KeyProvider",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "schema {name} missing"
        );
    }
}

#[tokio::test]
async fn health_metrics_and_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let (s, body) = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let resp = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            "vouchd_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{text}"
    );

    // A token issued by this vouchd verifies against the JWKS it serves.
    let (s, jwks) = h
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let now = vouchd::now();
    let claims = vouchd::jwt::AttestationClaims {
        iss: "vouchd".into(),
        sub: "ab".repeat(32),
        cluster: "prod".into(),
        software_version: "fw-1.0".into(),
        pcr_digest: "cd".repeat(32),
        nonce: "ef".repeat(16),
        attestation: "ef".repeat(16),
        iat: now,
        exp: now + 60,
        jti: "1".into(),
    };
    let token = h.running.state.signer.sign(&claims).unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
    let data = jsonwebtoken::decode::<vouchd::jwt::AttestationClaims>(
        &token,
        &key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256),
    )
    .unwrap();
    assert_eq!(data.claims, claims);
}

#[tokio::test]
async fn events_are_posted_to_the_webhook() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let hook = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_url = Some(format!("http://{addr}/hook"));
    let h = harness(cfg).await;
    let admin = h.admin();
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "prod"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event["kind"], "cluster.created");
    assert_eq!(event["subject"], "prod");
    assert_eq!(event["detail"]["by"], "admin");
}
