//! The attack suite: one test per attack on vouchd, named after it. Each asserts the refusal
//! and that the victim — an attested host with a bound AK, a current attestation token and a
//! key provider — keeps its recorded state and its key access. The attacker holds everything
//! that crosses the agent link in clear (EK certificate, EK and AK public areas, old quotes)
//! but not the victim's TPM. SECURITY.md lists what each defence guarantees.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{AgentLink, Harness, config, harness};
use heapless::Vec as HVec;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use vouch_attest::ek::EkKey;
use vouch_attest::tpm::Public;
use vouch_proto::frame::MAX_FRAME;
use vouch_proto::wire::{
    ActivationProof, AgentMessage, BlobKind, Enroll, Evidence, Hello, RefusalKind, VerifierMessage,
};
use vouchd::config::Config;
use vouchd::jwt::AttestationClaims;
use vouchd::service::keys::authorise_host;
use vouchd::store::{
    AttestationRecord, CaCert, Cluster, Host, HostState, KeyProviderRecord, KeyServerRecord,
    SoftwareVersionRecord, WrappingMode,
};

const CLUSTER: &str = "prod";
/// The AK the victim's EK has bound (its recorded quotes are in vouch-attest's test data).
const VICTIM_AK: &str = "rsa2048-sha256";
/// The nonce of the victim's current attestation.
const VICTIM_NONCE: &str = "5151515151515151";

fn data(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../attest/tests/data/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The victim: a host of `prod` whose EK is the test data's, with its AK bound, attested now,
/// its cluster configured with a key provider; and its attestation token.
struct Victim {
    ek_hash: String,
    token: String,
}

fn victim(h: &Harness) -> Victim {
    victim_with(h, VICTIM_AK)
}

fn victim_with(h: &Harness, ak: &str) -> Victim {
    let store = &h.running.state.store;
    store
        .create_cluster(&Cluster {
            name: CLUSTER.into(),
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
                cluster: CLUSTER.into(),
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
            cluster: CLUSTER.into(),
            name: "victim".into(),
            added_by: "vc".into(),
            ak_public: Some(data(&format!("quotes/{ak}.ak.pub"))),
            state: HostState::Unknown,
            attested_at: None,
            valid_until: None,
            software_version: None,
            created_at: 0,
        })
        .unwrap();
    store
        .put_software_version(&SoftwareVersionRecord {
            cluster: CLUSTER.into(),
            name: "fw-1".into(),
            reference: serde_json::json!({"name": "fw-1", "pcrs": {"sha256": {"0": "00".repeat(32)}}}),
            created_at: 0,
        })
        .unwrap();
    let now = vouchd::now();
    store
        .record_attestation(&AttestationRecord {
            ek_hash: ek_hash.clone(),
            cluster: CLUSTER.into(),
            at: now,
            attested: true,
            software_version: Some("fw-1".into()),
            reason: None,
            pcr_digest: Some("00".repeat(32)),
            nonce: Some(VICTIM_NONCE.into()),
            valid_until: Some(now + 600),
            token: None,
            presented: None,
            config_generation: None,
        })
        .unwrap();
    store
        .add_key_server(&KeyServerRecord {
            name: "kms".into(),
            endpoints: vec!["127.0.0.1:1".into()],
            client_certificate: String::new(),
            client_key: String::new(),
            ca_certificates: String::new(),
            created_at: 0,
        })
        .unwrap();
    store
        .add_key_provider(&KeyProviderRecord {
            name: "kp".into(),
            key_server: "kms".into(),
            primary_key_id: "1".into(),
            primary_key_version: 1,
            retired: vec![],
            wrapping: WrappingMode::Local,
            refresh_seconds: 300,
            lifetime_seconds: 3600,
            created_at: 0,
        })
        .unwrap();
    store.set_cluster_key_provider(CLUSTER, Some("kp")).unwrap();
    let token = h
        .running
        .state
        .signer
        .sign(&claims(&ek_hash, CLUSTER, VICTIM_NONCE, now, now + 300))
        .unwrap();
    Victim { ek_hash, token }
}

fn claims(
    ek_hash: &str,
    cluster: &str,
    attestation: &str,
    iat: i64,
    exp: i64,
) -> AttestationClaims {
    AttestationClaims {
        iss: "vouchd".into(),
        sub: ek_hash.into(),
        cluster: cluster.into(),
        software_version: "fw-1".into(),
        pcr_digest: "00".repeat(32),
        nonce: attestation.into(),
        attestation: attestation.into(),
        iat,
        exp,
        jti: "01".into(),
    }
}

/// What the victim has that an attacker must not change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    host: Host,
    attestations: Vec<AttestationRecord>,
    state_changes: usize,
}

async fn snapshot(h: &Harness, victim: &Victim) -> Snapshot {
    let store = &h.running.state.store;
    Snapshot {
        host: store.get_host(&victim.ek_hash).unwrap().unwrap(),
        attestations: store.list_attestations(&victim.ek_hash, 100).unwrap(),
        state_changes: store
            .list_events(0, 1000)
            .unwrap()
            .iter()
            .filter(|e| e.kind.starts_with("host."))
            .count(),
    }
}

/// The victim's state is as before and its token still opens the key API.
async fn assert_untouched(h: &Harness, victim: &Victim, before: &Snapshot) {
    let after = snapshot(h, victim).await;
    assert_eq!(&after, before, "the victim's recorded state changed");
    assert_eq!(after.host.state, HostState::Attested);
    let authorised = authorise_host(&h.running.state, &victim.token, "keys/generate")
        .await
        .expect("the victim keeps its key access");
    assert_eq!(authorised.provider(None).unwrap(), "kp");
}

/// The attacker's agent link: a reset counts as the verifier closing the connection.
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
    async fn connect(addr: SocketAddr) -> Self {
        Self(AgentLink::connect(addr).await)
    }

    async fn recv(&mut self) -> Option<VerifierMessage> {
        self.0.next().await.unwrap_or(None)
    }

    /// Expects a refusal of `kind`; returns the reason the agent was told.
    async fn refused(&mut self, kind: RefusalKind) -> String {
        match self.recv().await {
            Some(VerifierMessage::Refused(r)) => {
                assert_eq!(r.kind, kind, "{r:?}");
                r.reason.to_string()
            }
            other => panic!("expected a {kind:?} refusal, got {other:?}"),
        }
    }

    /// Hello, the victim's EK certificate and `Enroll` with the victim's EK and `ak`.
    async fn claim_victim(&mut self, ak: &str) -> Option<VerifierMessage> {
        self.send(&AgentMessage::Hello(Hello {
            min_version: 1,
            max_version: 1,
            agent: "attacker".try_into().unwrap(),
        }))
        .await;
        assert!(matches!(
            self.recv().await,
            Some(VerifierMessage::Welcome(_))
        ));
        let cert = data("ek/ek-rsa2048.crt");
        for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &cert).unwrap() {
            self.send(&AgentMessage::Chunk(chunk)).await;
        }
        self.send(&AgentMessage::Enroll(Enroll {
            ek_public: HVec::from_slice(&data("ek/ek-rsa2048.pub")).unwrap(),
            ak_public: HVec::from_slice(&data(&format!("quotes/{ak}.ak.pub"))).unwrap(),
            has_ek_certificate: true,
        }))
        .await;
        self.recv().await
    }

    /// The recorded quote `name` with its PCR values and `event_log`.
    async fn send_recorded_quote(&mut self, name: &str, event_log: Option<&[u8]>) {
        let (sel, values) =
            vouch_attest::tpm2_tools::parse_serialized_pcrs(&data(&format!("quotes/{name}.pcrs")))
                .unwrap();
        let wire: Vec<u8> = sel
            .iter()
            .flat_map(|(alg, i)| values.get(alg, i).unwrap().to_vec())
            .collect();
        for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, &wire).unwrap() {
            self.send(&AgentMessage::Chunk(chunk)).await;
        }
        if let Some(log) = event_log {
            for chunk in vouch_proto::chunk::split(BlobKind::EventLog, log).unwrap() {
                self.send(&AgentMessage::Chunk(chunk)).await;
            }
        }
        self.send(&AgentMessage::Evidence(Evidence {
            attest: HVec::from_slice(&data(&format!("quotes/{name}.quote"))).unwrap(),
            signature: HVec::from_slice(&data(&format!("quotes/{name}.sig"))).unwrap(),
        }))
        .await;
    }
}

/// Claims the victim's EK with its bound AK and answers the quote request with a recorded
/// quote; expects the refusal `evidence-unproven` and the victim untouched.
async fn evidence_attack(bound_ak: &str, quote: &str, event_log: Option<&[u8]>) {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim_with(&h, bound_ak);
    let before = snapshot(&h, &victim).await;
    for _ in 0..3 {
        let mut a = Agent::connect(h.running.agent_addr).await;
        let Some(VerifierMessage::QuoteRequest(_)) = a.claim_victim(bound_ak).await else {
            panic!("a bound AK is asked for a quote");
        };
        a.send_recorded_quote(quote, event_log).await;
        assert_eq!(
            a.refused(RefusalKind::Activation).await,
            "evidence-unproven"
        );
        assert!(a.recv().await.is_none(), "closed after a refusal");
    }
    assert_untouched(&h, &victim, &before).await;
    let events = h.running.state.store.list_events(0, 1000).unwrap();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "agent.evidence_refused")
        .collect();
    assert_eq!(refused.len(), 3, "{events:?}");
    assert_eq!(refused[0].subject, victim.ek_hash);
    assert!(
        refused[0].detail["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        refused[0].detail["reason"]
            .as_str()
            .unwrap()
            .contains("does not prove possession"),
        "{refused:?}"
    );
}

/// Item 1: a peer with only the public parts of the victim's TPM cannot make it NOT ATTESTED.
#[tokio::test]
async fn forged_not_attested_without_the_tpm() {
    evidence_attack(VICTIM_AK, "ecc256-sha256", None).await;
}

/// A quote the bound AK once signed, replayed: its nonce is not the one just issued.
#[tokio::test]
async fn replayed_quote() {
    evidence_attack(VICTIM_AK, VICTIM_AK, None).await;
}

/// The older of two consecutive quotes of the bound AK: over an earlier request's nonce.
#[tokio::test]
async fn stale_nonce() {
    evidence_attack("ecc256-seq", "ecc256-seq1", None).await;
}

/// A quote signed by another AK than the one bound to the EK.
#[tokio::test]
async fn quote_by_another_ak() {
    evidence_attack(VICTIM_AK, "ecc384-sha384", None).await;
}

/// A tampered event log beside a quote.
#[tokio::test]
async fn tampered_event_log() {
    evidence_attack(VICTIM_AK, VICTIM_AK, Some(&[0xde, 0xad, 0xbe, 0xef])).await;
}

/// An EK no cluster lists: refused with a code that names nothing of the configuration.
#[tokio::test]
async fn foreign_ek() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let mut a = Agent::connect(h.running.agent_addr).await;
    a.send(&AgentMessage::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent: "attacker".try_into().unwrap(),
    }))
    .await;
    a.recv().await.unwrap();
    // The EK of another TPM of the test data, with no certificate.
    a.send(&AgentMessage::Enroll(Enroll {
        ek_public: HVec::from_slice(&data("ek/ek-secp384r1.pub")).unwrap(),
        ak_public: HVec::from_slice(&data(&format!("quotes/{VICTIM_AK}.ak.pub"))).unwrap(),
        has_ek_certificate: false,
    }))
    .await;
    assert_eq!(a.refused(RefusalKind::UntrustedEk).await, "untrusted-ek");
    assert_untouched(&h, &victim, &before).await;
}

/// Item 8: refusals tell the peer a short code; the operator gets the full reason.
#[tokio::test]
async fn refusals_tell_an_unauthenticated_peer_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    // The victim's cluster stops trusting its TPM: the reason names the cluster.
    for ca in h.running.state.store.list_ca_certs(CLUSTER).unwrap() {
        h.running
            .state
            .store
            .delete_ca_cert(CLUSTER, &ca.id)
            .unwrap();
    }
    let mut a = Agent::connect(h.running.agent_addr).await;
    let Some(VerifierMessage::Refused(r)) = a.claim_victim(VICTIM_AK).await else {
        panic!("expected a refusal");
    };
    assert_eq!(r.kind, RefusalKind::UntrustedEk);
    assert_eq!(r.reason.as_str(), "untrusted-ek");
    assert!(!r.reason.contains(CLUSTER) && !r.reason.contains(&victim.ek_hash[..16]));
    assert!(a.recv().await.is_none(), "closed after a refusal");
    let events = h.running.state.store.list_events(0, 100).unwrap();
    let event = events
        .iter()
        .find(|e| e.kind == "agent.refused")
        .expect("the operator sees the refusal");
    assert_eq!(event.detail["code"], "untrusted-ek");
    assert!(
        event.detail["reason"].as_str().unwrap().contains(CLUSTER),
        "{event:?}"
    );
}

/// Refusal events are bounded per address, so a peer cannot flood the event feed.
#[tokio::test]
async fn refusal_flood() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    for _ in 0..20 {
        let mut a = Agent::connect(h.running.agent_addr).await;
        a.send(&AgentMessage::Hello(Hello {
            min_version: 9,
            max_version: 9,
            agent: "attacker".try_into().unwrap(),
        }))
        .await;
        a.refused(RefusalKind::Version).await;
    }
    // Each event is stored as its session ends: wait for the sessions to finish.
    let limit = usize::try_from(Config::default().agent_refusal_events_per_minute).unwrap();
    let refused = || {
        let events = h.running.state.store.list_events(0, 1000).unwrap();
        events.iter().filter(|e| e.kind == "agent.refused").count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refused() < limit && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(refused(), limit);
}

/// An AK that is not the bound one: challenged, and without the TPM the proof is wrong; the
/// binding stays.
#[tokio::test]
async fn unbound_ak() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let mut a = Agent::connect(h.running.agent_addr).await;
    let Some(VerifierMessage::CredentialChallenge(_)) = a.claim_victim("ecc256-sha256").await
    else {
        panic!("a new AK is challenged");
    };
    a.send(&AgentMessage::ActivationProof(ActivationProof {
        secret: HVec::from_slice(&[0u8; 32]).unwrap(),
    }))
    .await;
    assert_eq!(a.refused(RefusalKind::Activation).await, "wrong-proof");
    assert_untouched(&h, &victim, &before).await;
}

/// Frames beyond the limit and bytes that are not frames.
#[tokio::test]
async fn oversized_frames() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let mut a = Agent::connect(h.running.agent_addr).await;
    a.tcp.write_all(&vec![0x01; MAX_FRAME * 4]).await.unwrap();
    a.tcp.write_all(&[0x00]).await.unwrap();
    assert_eq!(a.refused(RefusalKind::Protocol).await, "bad-frame");
    assert_untouched(&h, &victim, &before).await;
}

/// A connection from `source` (any 127.x address) to `addr`.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// Item 2: slow senders take every agent slot and dribble bytes to keep them; an honest agent
/// is still served, since an unproven session's whole handshake has a deadline.
#[tokio::test]
async fn slow_agents() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.agent_max_sessions = 16;
    cfg.agent_max_unproven_per_address = 4;
    let deadline = cfg.agent_handshake_timeout();
    let h = harness(cfg).await;
    let addr = h.running.agent_addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut attackers = Vec::new();
    for n in 0..4u8 {
        for _ in 0..5 {
            let stop = stop.clone();
            attackers.push(tokio::spawn(async move {
                // Reconnects whenever dropped, sending one byte of a frame a second.
                while !stop.is_cancelled() {
                    let Ok(mut tcp) = connect_from([127, 0, 1, n + 1], addr).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        if tcp.write_all(&[0x01]).await.is_err() {
                            break;
                        }
                    }
                }
            }));
        }
    }
    // Let the slow senders take every slot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let mut honest = Agent::connect(addr).await;
    honest
        .send(&AgentMessage::Hello(Hello {
            min_version: 1,
            max_version: 1,
            agent: "honest".try_into().unwrap(),
        }))
        .await;
    let mut byte = [0u8; 1];
    let first = tokio::time::timeout(Duration::from_secs(20), honest.tcp.read(&mut byte)).await;
    let served_after = started.elapsed();
    stop.cancel();
    for a in attackers {
        a.await.unwrap();
    }
    println!(
        "with every agent slot held by slow senders, an honest agent was served after {served_after:?}"
    );
    assert!(
        matches!(first, Ok(Ok(1))),
        "the honest agent was not served within 20 s"
    );
    assert!(
        served_after <= deadline + Duration::from_secs(2),
        "{served_after:?}"
    );
}

/// One address cannot hold more unproven sessions than its share.
#[tokio::test]
async fn one_address_takes_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.agent_max_unproven_per_address = 3;
    let h = harness(cfg).await;
    let addr = h.running.agent_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 2, 1], addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = connect_from([127, 0, 2, 1], addr).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
        .await
        .expect("the extra connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Another address is served.
    let mut other = Agent::connect(addr).await;
    other
        .send(&AgentMessage::Hello(Hello {
            min_version: 1,
            max_version: 1,
            agent: "other".try_into().unwrap(),
        }))
        .await;
    assert!(matches!(
        other.recv().await,
        Some(VerifierMessage::Welcome(_))
    ));
    drop(held);
}

/// Item 3: clients that connect and stall — before TLS, after it, halfway through headers,
/// halfway through a body — are all closed within 30 s.
#[tokio::test]
async fn slow_api_clients() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let addr = h.running.api_addr;
    let started = Instant::now();
    let mut stalled = Vec::new();
    let tls = tls_connector(&h);
    for n in 0..40u32 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream: Box<dyn Stalled> = match n % 4 {
            0 => Box::new(tcp),
            _ => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = tls.connect(name, tcp).await.unwrap();
                match n % 4 {
                    2 => s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap(),
                    3 => s
                        .write_all(
                            b"POST /v1/clusters HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
                        )
                        .await
                        .unwrap(),
                    _ => {}
                }
                s.flush().await.unwrap();
                Box::new(s)
            }
        };
        stalled.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; 512];
            // Reads until the server closes; the body senders keep dribbling a byte.
            loop {
                let read =
                    tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                match read {
                    Ok(Ok(0) | Err(_)) => return Instant::now(),
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        if n % 4 == 3 && stream.write_all(b" ").await.is_err() {
                            return Instant::now();
                        }
                    }
                }
                if started.elapsed() > Duration::from_secs(45) {
                    return Instant::now();
                }
            }
        }));
    }
    let mut longest = Duration::ZERO;
    for s in stalled {
        longest = longest.max(s.await.unwrap() - started);
    }
    println!("stalled API connections were all closed after {longest:?}");
    assert!(longest <= Duration::from_secs(30), "{longest:?}");
    // The API still serves.
    let (s, _) = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

trait Stalled: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stalled for T {}

fn tls_connector(h: &Harness) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            h.running.tls_certificate.clone(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Item 4: a token from before a host was removed does not work again once it is added back
/// and attested.
#[tokio::test]
async fn token_of_a_removed_host() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let store = &h.running.state.store;
    let host = store.get_host(&victim.ek_hash).unwrap().unwrap();
    store.delete_host(CLUSTER, &victim.ek_hash).unwrap();
    store.add_host(&host).unwrap();
    let now = vouchd::now();
    store
        .record_attestation(&AttestationRecord {
            ek_hash: victim.ek_hash.clone(),
            cluster: CLUSTER.into(),
            at: now,
            attested: true,
            software_version: Some("fw-1".into()),
            reason: None,
            pcr_digest: Some("00".repeat(32)),
            nonce: Some("7272727272727272".into()),
            valid_until: Some(now + 600),
            token: None,
            presented: None,
            config_generation: None,
        })
        .unwrap();
    let err = authorise_host(&h.running.state, &victim.token, "keys/generate")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("current attestation"), "{err}");
    // The new attestation's token works.
    let fresh = h
        .running
        .state
        .signer
        .sign(&claims(
            &victim.ek_hash,
            CLUSTER,
            "7272727272727272",
            now,
            now + 300,
        ))
        .unwrap();
    authorise_host(&h.running.state, &fresh, "keys/generate")
        .await
        .unwrap();
}

/// Forged, expired and other-cluster tokens are refused; the victim's works throughout.
#[tokio::test]
async fn forged_expired_or_other_cluster_token() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let now = vouchd::now();
    let other_dir = tempfile::tempdir().unwrap();
    let forger = vouchd::jwt::Signer::load_or_create(&other_dir.path().join("k.p8")).unwrap();
    let forged = forger
        .sign(&claims(
            &victim.ek_hash,
            CLUSTER,
            VICTIM_NONCE,
            now,
            now + 300,
        ))
        .unwrap();
    let signer = &h.running.state.signer;
    let expired = signer
        .sign(&claims(
            &victim.ek_hash,
            CLUSTER,
            VICTIM_NONCE,
            now - 600,
            now - 300,
        ))
        .unwrap();
    let other_cluster = signer
        .sign(&claims(
            &victim.ek_hash,
            "staging",
            VICTIM_NONCE,
            now,
            now + 300,
        ))
        .unwrap();
    for token in [forged, expired, other_cluster] {
        assert!(
            authorise_host(&h.running.state, &token, "keys/generate")
                .await
                .is_err()
        );
        let (s, _) = h
            .call(
                Method::POST,
                "/v1/keys/generate",
                Some(&token),
                Some(serde_json::json!({})),
            )
            .await;
        assert!(
            matches!(s, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
            "{s}"
        );
    }
    assert_untouched(&h, &victim, &before).await;
}

/// A principal outside TrustedAdmins changes no configuration.
#[tokio::test]
async fn non_admin_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let outsider = h.principal("mallory", &[]).await;
    let attempts = [
        (Method::DELETE, format!("/v1/clusters/{CLUSTER}"), None),
        (
            Method::POST,
            "/v1/clusters".to_owned(),
            Some(serde_json::json!({"name": "evil", "pcrs": [0], "bank": "sha256"})),
        ),
    ];
    for (method, path, body) in attempts {
        let (s, _) = h.call(method, &path, Some(&outsider), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    assert_untouched(&h, &victim, &before).await;
    assert!(h.running.state.store.get_cluster("evil").unwrap().is_none());
}

/// A host operation without a management server's signature changes nothing, even from a
/// TrustedAdmin.
#[tokio::test]
async fn unsigned_host_operation() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let admin = h.admin();
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/clusters/{CLUSTER}/hosts/{}", victim.ek_hash),
            Some(&admin),
            None,
        )
        .await;
    assert!(
        matches!(s, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{s}"
    );
    assert_untouched(&h, &victim, &before).await;
}

/// Item 6: a TrustedAdmin alone cannot remove a cluster's hosts by removing the cluster: it
/// needs force and a management server's signature, and every host removed is an event.
#[tokio::test]
async fn cluster_remove_without_signature() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let before = snapshot(&h, &victim).await;
    let admin = h.admin();
    let path = format!("/v1/clusters/{CLUSTER}");
    let (s, reply) = h.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{reply}");
    let forced = format!("{path}?force=true");
    let (s, _) = h.call(Method::DELETE, &forced, Some(&admin), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_untouched(&h, &victim, &before).await;

    // With a registered management server's signature, the cluster and its hosts go, each
    // host an event.
    let vc = common::ManagementKey::new("vc-1");
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/management-servers",
            Some(&admin),
            Some(serde_json::json!({"id": vc.id, "certificate_pem": vc.certificate_pem})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sig = vc.sign("DELETE", &forced, vouchd::now(), "rm-1", b"");
    let (s, _) = h
        .send(Method::DELETE, &forced, Some(&admin), None, Some(sig))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        h.running
            .state
            .store
            .get_host(&victim.ek_hash)
            .unwrap()
            .is_none()
    );
    let events = h.running.state.store.list_events(0, 1000).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "host.removed" && e.subject == victim.ek_hash),
        "{events:?}"
    );
}

/// Item 6: a TrustedAdmin alone cannot register a management server of their own once one is
/// registered (and so cannot sign host operations alone): it needs a registered one's
/// signature, as a host operation does.
#[tokio::test]
async fn rogue_management_server() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    let victim = victim(&h);
    let admin = h.admin();
    let vc = common::ManagementKey::new("vc-1");
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/management-servers",
            Some(&admin),
            Some(serde_json::json!({"id": vc.id, "certificate_pem": vc.certificate_pem})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the first is registered by a TrustedAdmin"
    );
    let before = snapshot(&h, &victim).await;
    let rogue = common::ManagementKey::new("rogue");
    let body = serde_json::json!({"id": rogue.id, "certificate_pem": rogue.certificate_pem});
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/management-servers",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Signed by itself: not registered, refused.
    let bytes = serde_json::to_vec(&body).unwrap();
    let sig = rogue.sign(
        "POST",
        "/v1/management-servers",
        vouchd::now(),
        "r-1",
        &bytes,
    );
    let (s, _) = h
        .send(
            Method::POST,
            "/v1/management-servers",
            Some(&admin),
            Some(body.clone()),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        h.running
            .state
            .store
            .get_management_server("rogue")
            .unwrap()
            .is_none()
    );
    // The rogue server cannot remove the victim.
    let path = format!("/v1/clusters/{CLUSTER}/hosts/{}", victim.ek_hash);
    let sig = rogue.sign("DELETE", &path, vouchd::now(), "r-2", b"");
    let (s, _) = h
        .send(Method::DELETE, &path, Some(&admin), None, Some(sig))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_untouched(&h, &victim, &before).await;
    // Signed by the registered server: accepted.
    let sig = vc.sign(
        "POST",
        "/v1/management-servers",
        vouchd::now(),
        "r-3",
        &bytes,
    );
    let (s, reply) = h
        .send(
            Method::POST,
            "/v1/management-servers",
            Some(&admin),
            Some(body),
            Some(sig),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reply}");
}

/// Item 7: the database, the key-encryption key and the bootstrap token are readable by their
/// owner only; the token is in a file, not on stdout; a key server's client key is sealed.
#[tokio::test]
async fn secrets_at_rest_readable_by_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    victim(&h);
    // A key server's client private key is sealed in the database and its WAL.
    h.running
        .state
        .store
        .add_key_server(&KeyServerRecord {
            name: "kms-secret".into(),
            endpoints: vec!["127.0.0.1:1".into()],
            client_certificate: String::new(),
            client_key: "-----BEGIN PRIVATE KEY----- the-client-key".into(),
            ca_certificates: String::new(),
            created_at: 0,
        })
        .unwrap();
    for name in ["", "-wal"] {
        let path = dir
            .path()
            .join(format!("{}{name}", vouchd::server::DATABASE_FILE));
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(14).any(|w| w == b"the-client-key"),
            "{} holds the client key in clear",
            path.display()
        );
    }
    let back = h
        .running
        .state
        .store
        .get_key_server("kms-secret")
        .unwrap()
        .unwrap();
    assert_eq!(
        back.client_key,
        "-----BEGIN PRIVATE KEY----- the-client-key"
    );
    let token_file = h.running.bootstrap_token_file.clone().unwrap();
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        h.admin()
    );
    for name in [
        vouchd::server::DATABASE_FILE.to_owned(),
        format!("{}-wal", vouchd::server::DATABASE_FILE),
        format!("{}-shm", vouchd::server::DATABASE_FILE),
        vouchd::server::BOOTSTRAP_TOKEN_FILE.to_owned(),
        vouchd::server::KEY_ENCRYPTION_KEY_FILE.to_owned(),
    ] {
        let path = dir.path().join(&name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
}
