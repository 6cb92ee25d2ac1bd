//! Shared helpers: an in-process vouchd on loopback, an HTTPS client that trusts its
//! self-signed certificate, and a management server's signing key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test helpers: a failure is a test failure"
)]

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use vouch_api::signing::{SignatureHeader, signing_message};
use vouchd::config::Config;
use vouchd::server::Running;
use vouchd::testing::TestVouchd;

pub struct Harness {
    pub running: Running,
    pub client: reqwest::Client,
    pub base: String,
}

pub fn config(dir: &Path) -> Config {
    vouchd::testing::loopback_config(dir)
}

pub async fn harness(config: Config) -> Harness {
    let TestVouchd {
        running,
        client,
        base,
    } = TestVouchd::start(config).await.unwrap();
    Harness {
        running,
        client,
        base,
    }
}

impl Harness {
    pub fn admin(&self) -> String {
        self.running.bootstrap_token.clone().unwrap()
    }

    /// Sends a request; returns the status and the JSON body (Null when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send(method, path, token, body, None).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        signature: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).unwrap());
        }
        if let Some(s) = signature {
            req = req.header("vouch-signature", s);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Makes a principal in `groups` and returns a token for it.
    pub async fn principal(&self, name: &str, groups: &[&str]) -> String {
        let admin = self.admin();
        let (s, _) = self
            .call(
                Method::POST,
                "/v1/principals",
                Some(&admin),
                Some(serde_json::json!({"name": name, "kind": "person", "groups": groups})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, body) = self
            .call(
                Method::POST,
                &format!("/v1/principals/{name}/tokens"),
                Some(&admin),
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        body["token"].as_str().unwrap().to_owned()
    }
}

/// A management server's signing identity.
pub struct ManagementKey {
    pub id: String,
    pub certificate_pem: String,
    key: EcdsaKeyPair,
}

impl ManagementKey {
    pub fn new(id: &str) -> Self {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![format!("{id}.example")])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key_pair.serialize_der())
                .unwrap();
        Self {
            id: id.into(),
            certificate_pem: cert.pem(),
            key,
        }
    }

    /// The Vouch-Signature header for a request.
    pub fn sign(&self, method: &str, path: &str, ts: i64, nonce: &str, body: &[u8]) -> String {
        let message = signing_message(method, path, ts, nonce, body);
        let sig = self.key.sign(&SystemRandom::new(), &message).unwrap();
        SignatureHeader {
            id: self.id.clone(),
            ts,
            nonce: nonce.into(),
            sig: sig.as_ref().to_vec(),
        }
        .render()
    }
}

/// A self-signed TPM manufacturer CA certificate, PEM.
pub fn tpm_ca_pem(name: &str) -> String {
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.self_signed(&key_pair).unwrap().pem()
}

/// An agent's end of the agent link over TCP: frames out, frames in.
pub struct AgentLink {
    pub tcp: tokio::net::TcpStream,
    reader: Box<vouch_proto::frame::FrameReader<{ vouch_proto::frame::MAX_FRAME }>>,
}

impl AgentLink {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        Self::over(tokio::net::TcpStream::connect(addr).await.unwrap())
    }

    /// The link over a connection made otherwise (from a chosen source address, say).
    pub fn over(tcp: tokio::net::TcpStream) -> Self {
        Self {
            tcp,
            reader: Box::default(),
        }
    }

    pub async fn send(&mut self, m: &vouch_proto::wire::AgentMessage) {
        use tokio::io::AsyncWriteExt as _;
        let mut buf = vec![0u8; vouch_proto::frame::MAX_FRAME];
        let bytes = vouch_proto::frame::encode(m, &mut buf).unwrap();
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The next message: `Ok(None)` when the verifier closed the connection, `Err` when
    /// reading failed (a reset). Waits at most 10 s.
    pub async fn next(&mut self) -> std::io::Result<Option<vouch_proto::wire::VerifierMessage>> {
        use tokio::io::AsyncReadExt as _;
        let mut byte = [0u8; 1];
        loop {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.tcp.read(&mut byte))
                    .await
                    .expect("the verifier answered in time")?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(f) = self.reader.push(byte[0]) {
                return Ok(Some(vouch_proto::frame::decode(f.unwrap()).unwrap()));
            }
        }
    }
}
