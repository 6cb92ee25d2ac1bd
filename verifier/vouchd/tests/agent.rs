//! The agent link over real TCP: framing, negotiation, refusals and timeouts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::{AgentLink, config, harness};
use heapless::Vec as HVec;
use tokio::io::AsyncWriteExt as _;
use vouch_proto::frame::MAX_FRAME;
use vouch_proto::wire::{
    AgentMessage, BlobKind, Chunk, Enroll, Hello, RefusalKind, VerifierMessage, Welcome,
};

/// The agent link with a strict reader: a read error fails the test.
struct Agent(AgentLink);

impl std::ops::Deref for Agent {
    type Target = AgentLink;
    fn deref(&self) -> &AgentLink {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut AgentLink {
        &mut self.0
    }
}

impl Agent {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self(AgentLink::connect(addr).await)
    }

    /// The next message, or `None` when the verifier closed the connection.
    async fn recv(&mut self) -> Option<VerifierMessage> {
        self.0.next().await.unwrap()
    }

    async fn expect_refusal(&mut self, kind: RefusalKind) -> String {
        match self.recv().await {
            Some(VerifierMessage::Refused(r)) => {
                assert_eq!(r.kind, kind, "{r:?}");
                assert!(self.recv().await.is_none(), "closed after a refusal");
                r.reason.to_string()
            }
            other => panic!("expected a {kind:?} refusal, got {other:?}"),
        }
    }
}

fn hello(min: u16, max: u16) -> AgentMessage {
    AgentMessage::Hello(Hello {
        min_version: min,
        max_version: max,
        agent: "test-agent".try_into().unwrap(),
    })
}

fn data(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../attest/tests/data/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn hello_negotiates_a_version_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let mut a = Agent::connect(h.running.agent_addr).await;
    a.send(&hello(1, 7)).await;
    assert_eq!(
        a.recv().await,
        Some(VerifierMessage::Welcome(Welcome { version: 3 }))
    );
    // A v1 agent keeps working (v2 only added the key channel, v3 check-in).
    let mut old = Agent::connect(h.running.agent_addr).await;
    old.send(&hello(1, 1)).await;
    assert_eq!(
        old.recv().await,
        Some(VerifierMessage::Welcome(Welcome { version: 1 }))
    );

    let mut b = Agent::connect(h.running.agent_addr).await;
    b.send(&hello(9, 12)).await;
    b.expect_refusal(RefusalKind::Version).await;
}

#[tokio::test]
async fn out_of_order_and_malformed_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;

    // Enroll before Hello.
    let mut a = Agent::connect(h.running.agent_addr).await;
    a.send(&AgentMessage::Enroll(Enroll {
        ek_public: HVec::new(),
        ak_public: HVec::new(),
        has_ek_certificate: false,
    }))
    .await;
    a.expect_refusal(RefusalKind::Protocol).await;

    // A frame that is not a message.
    let mut b = Agent::connect(h.running.agent_addr).await;
    b.tcp
        .write_all(&[0x05, 0xff, 0xff, 0xff, 0xff, 0x00])
        .await
        .unwrap();
    b.expect_refusal(RefusalKind::Protocol).await;

    // An over-long frame.
    let mut c = Agent::connect(h.running.agent_addr).await;
    c.tcp.write_all(&vec![0x01; MAX_FRAME + 10]).await.unwrap();
    c.tcp.write_all(&[0x00]).await.unwrap();
    c.expect_refusal(RefusalKind::Protocol).await;

    // An EK certificate announced larger than the limit.
    let mut d = Agent::connect(h.running.agent_addr).await;
    d.send(&hello(1, 1)).await;
    d.recv().await.unwrap();
    d.send(&AgentMessage::Chunk(Chunk {
        blob: BlobKind::EkCertificate,
        total: 1 << 20,
        offset: 0,
        data: HVec::from_slice(&[0u8; 16]).unwrap(),
    }))
    .await;
    let reason = d.expect_refusal(RefusalKind::Protocol).await;
    assert_eq!(reason, "bad-chunk");
}

#[tokio::test]
async fn a_fresh_vouchd_refuses_every_ek() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let mut a = Agent::connect(h.running.agent_addr).await;
    a.send(&hello(1, 1)).await;
    a.recv().await.unwrap();
    let cert = data("ek/ek-rsa2048.crt");
    for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &cert).unwrap() {
        a.send(&AgentMessage::Chunk(chunk)).await;
    }
    a.send(&AgentMessage::Enroll(Enroll {
        ek_public: HVec::from_slice(&data("ek/ek-rsa2048.pub")).unwrap(),
        ak_public: HVec::from_slice(&data("quotes/rsa2048-sha256.ak.pub")).unwrap(),
        has_ek_certificate: true,
    }))
    .await;
    // The agent is told a code; the operator the reason.
    let reason = a.expect_refusal(RefusalKind::UntrustedEk).await;
    assert_eq!(reason, "untrusted-ek");
    // The session's end is counted just after the connection closes.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = h.running.state.metrics.render();
        if metrics.contains("vouchd_agent_sessions_ended_total{result=\"refused\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics.contains("vouchd_agent_sessions_ended_total{result=\"refused\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_silent_agent_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.agent_idle_timeout_secs = 1;
    let h = harness(cfg).await;
    let mut a = Agent::connect(h.running.agent_addr).await;
    let started = std::time::Instant::now();
    assert!(a.recv().await.is_none(), "closed without a word");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn many_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let addr = h.running.agent_addr;
    let mut tasks = Vec::new();
    // 200 agents on 50 addresses: one address may hold only a few sessions before they prove
    // possession of a TPM.
    for n in 0..200u8 {
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 3, 1 + n % 50], 0)))
                .unwrap();
            let mut a = Agent(AgentLink::over(socket.connect(addr).await.unwrap()));
            a.send(&hello(1, 1)).await;
            a.recv().await
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            Some(VerifierMessage::Welcome(Welcome { version: 1 }))
        );
    }
}

#[tokio::test]
async fn a_recorded_quote_over_tcp_changes_nothing_and_the_operator_sees_why() {
    use reqwest::Method;
    use vouch_attest::ek::EkKey;
    use vouch_attest::tpm::Public;
    use vouchd::store::{CaCert, Cluster, Host, HostState, SoftwareVersionRecord};

    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let store = h.running.state.store.clone();
    store
        .create_cluster(&Cluster {
            name: "prod".into(),
            pcrs: vec![0, 1, 2, 3, 4, 7],
            bank: "sha256".into(),
            created_at: 0,
            disabled_at: None,
            config_generation: 0,
        })
        .unwrap();
    for pem in ["ek/swtpm-localca-root.pem", "ek/swtpm-localca-issuer.pem"] {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let der = CertificateDer::from_pem_slice(&data(pem)).unwrap();
        store
            .add_ca_cert(&CaCert {
                id: vouchd::hex(&vouchd::sha256(&der)),
                cluster: "prod".into(),
                subject: pem.into(),
                der: der.to_vec(),
                created_at: 0,
            })
            .unwrap();
    }
    let ek = Public::from_tpm2b(&data("ek/ek-rsa2048.pub")).unwrap();
    let ek_hash = vouchd::ek::ek_hash(&EkKey::from_public(&ek));
    store
        .add_host(&Host {
            ek_hash: ek_hash.clone(),
            cluster: "prod".into(),
            name: "h1".into(),
            added_by: "vc".into(),
            ak_public: Some(data("quotes/rsa2048-sha256.ak.pub")),
            state: HostState::Unknown,
            attested_at: None,
            valid_until: None,
            software_version: None,
            created_at: 0,
        })
        .unwrap();
    store
        .put_software_version(&SoftwareVersionRecord {
            cluster: "prod".into(),
            name: "fw-1".into(),
            reference: serde_json::json!({"name": "fw-1", "pcrs": {"sha256": {"0": "00".repeat(32)}}}),
            created_at: 0,
        })
        .unwrap();

    let mut a = Agent::connect(h.running.agent_addr).await;
    a.send(&hello(1, 1)).await;
    a.recv().await.unwrap();
    let cert = data("ek/ek-rsa2048.crt");
    for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &cert).unwrap() {
        a.send(&AgentMessage::Chunk(chunk)).await;
    }
    a.send(&AgentMessage::Enroll(Enroll {
        ek_public: HVec::from_slice(&data("ek/ek-rsa2048.pub")).unwrap(),
        ak_public: HVec::from_slice(&data("quotes/rsa2048-sha256.ak.pub")).unwrap(),
        has_ek_certificate: true,
    }))
    .await;
    let Some(VerifierMessage::QuoteRequest(q)) = a.recv().await else {
        panic!("expected a quote request");
    };
    assert_eq!(q.nonce.len(), 32);
    // A recorded quote cannot answer a fresh nonce.
    let (sel, values) =
        vouch_attest::tpm2_tools::parse_serialized_pcrs(&data("quotes/rsa2048-sha256.pcrs"))
            .unwrap();
    let wire: Vec<u8> = sel
        .iter()
        .flat_map(|(alg, i)| values.get(alg, i).unwrap().to_vec())
        .collect();
    for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, &wire).unwrap() {
        a.send(&AgentMessage::Chunk(chunk)).await;
    }
    a.send(&AgentMessage::Evidence(vouch_proto::wire::Evidence {
        attest: HVec::from_slice(&data("quotes/rsa2048-sha256.quote")).unwrap(),
        signature: HVec::from_slice(&data("quotes/rsa2048-sha256.sig")).unwrap(),
    }))
    .await;
    // It proves no possession of the TPM: refused, and nothing is recorded of the host.
    assert_eq!(
        a.expect_refusal(RefusalKind::Activation).await,
        "evidence-unproven"
    );

    let admin = h.admin();
    let (s, status) = h
        .call(
            Method::GET,
            &format!("/v1/hosts/{ek_hash}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK);
    assert_eq!(status["state"], "unknown");
    assert_eq!(status["ak_bound"], true);
    assert_eq!(status["recent"], serde_json::json!([]));
    let (s, events) = h.call(Method::GET, "/v1/events", Some(&admin), None).await;
    assert_eq!(s, reqwest::StatusCode::OK);
    assert!(
        events.to_string().contains("agent.evidence_refused"),
        "{events}"
    );
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/v1/hosts/{ek_hash}/token"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        s,
        reqwest::StatusCode::NOT_FOUND,
        "no token without attestation"
    );
}

/// A real STMicro ST33 EK certificate as its NV index holds it (1,169 bytes of DER, then 0xFF
/// up to 1,600 bytes; Keylime's test data) enrolls: a cluster trusting STM's RSA root and
/// intermediate 05 and listing the host answers its Enroll with a credential challenge for
/// that EK. (Activation would need the ST33's private key; the TPM stack's part models show
/// the agent reading such an index.)
#[tokio::test]
async fn a_real_st33_ek_certificate_with_its_nv_fill_enrolls() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use vouch_attest::ek::EkKey;
    use vouch_attest::tpm::Public;
    use vouchd::store::{CaCert, Cluster, Host, HostState};

    let root = format!("{}/../../testdata", env!("CARGO_MANIFEST_DIR"));
    let nv = std::fs::read(format!("{root}/ek-certs/keylime-st33/st33-rsa-ek-nv.der")).unwrap();
    assert_eq!(nv.len(), 1600);
    assert!(nv[1169..].iter().all(|&b| b == 0xFF), "the index's fill");

    // The EK's public area: the TCG EK template L-1 (RSA-2048) with the certificate's modulus.
    let (_, cert) = x509_parser::parse_x509_certificate(&nv[..1169]).unwrap();
    let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = cert.public_key().parsed() else {
        panic!("an RSA EK");
    };
    let modulus: Vec<u8> = rsa
        .modulus
        .iter()
        .copied()
        .skip_while(|&b| b == 0)
        .collect();
    assert_eq!(modulus.len(), 256);
    let policy =
        hex::decode("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa").unwrap();
    let mut tpmt = Vec::new();
    tpmt.extend_from_slice(&0x0001u16.to_be_bytes()); // TPM_ALG_RSA
    tpmt.extend_from_slice(&0x000Bu16.to_be_bytes()); // SHA-256
    tpmt.extend_from_slice(&0x0003_00B2u32.to_be_bytes()); // the EK's attributes
    tpmt.extend_from_slice(&32u16.to_be_bytes());
    tpmt.extend_from_slice(&policy);
    for v in [0x0006u16, 128, 0x0043, 0x0010, 2048] {
        tpmt.extend_from_slice(&v.to_be_bytes()); // AES-128-CFB, scheme NULL, 2048 bits
    }
    tpmt.extend_from_slice(&0u32.to_be_bytes()); // the default exponent
    tpmt.extend_from_slice(&256u16.to_be_bytes());
    tpmt.extend_from_slice(&modulus);
    let mut ek_public = u16::try_from(tpmt.len()).unwrap().to_be_bytes().to_vec();
    ek_public.extend_from_slice(&tpmt);
    let ek = Public::from_tpm2b(&ek_public).unwrap();
    assert_eq!(
        EkKey::from_public(&ek),
        EkKey::from_certificate(&nv).unwrap()
    );
    let ek_hash = vouchd::ek::ek_hash(&EkKey::from_public(&ek));

    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let store = h.running.state.store.clone();
    store
        .create_cluster(&Cluster {
            name: "st33".into(),
            pcrs: vec![0, 1],
            bank: "sha256".into(),
            created_at: 0,
            disabled_at: None,
            config_generation: 0,
        })
        .unwrap();
    for name in ["STM_RSA_RT.pem", "STM_RSA_05I.pem"] {
        let pem = std::fs::read(format!("{root}/ek-ca/keylime-tpm_cert_store/{name}")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        store
            .add_ca_cert(&CaCert {
                id: vouchd::hex(&vouchd::sha256(&der)),
                cluster: "st33".into(),
                subject: name.into(),
                der: der.to_vec(),
                created_at: 0,
            })
            .unwrap();
    }
    store
        .add_host(&Host {
            ek_hash,
            cluster: "st33".into(),
            name: "st33-host".into(),
            added_by: "vc".into(),
            ak_public: None,
            state: HostState::Unknown,
            attested_at: None,
            valid_until: None,
            software_version: None,
            created_at: 0,
        })
        .unwrap();

    let mut a = Agent::connect(h.running.agent_addr).await;
    a.send(&hello(1, 1)).await;
    a.recv().await.unwrap();
    for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &nv).unwrap() {
        a.send(&AgentMessage::Chunk(chunk)).await;
    }
    a.send(&AgentMessage::Enroll(Enroll {
        ek_public: HVec::from_slice(&ek_public).unwrap(),
        ak_public: HVec::from_slice(&data("quotes/rsa2048-sha256.ak.pub")).unwrap(),
        has_ek_certificate: true,
    }))
    .await;
    match a.recv().await {
        Some(VerifierMessage::CredentialChallenge(c)) => {
            assert_eq!(
                c.encrypted_secret.len(),
                256,
                "RSA-OAEP to the ST33's 2048-bit EK"
            );
        }
        other => panic!("expected a credential challenge, got {other:?}"),
    }
}
