//! The key provider service over the agent link, against real parts: the agent (vouch-agent, as
//! the hosted agent runs it) on swtpm, a real vouchd, a real PyKMIP. The agent's ephemeral key
//! is bound into its quote; after the attested verdict, key requests and answers travel sealed
//! under the channel key; a host of a cluster without a provider is refused; a tampered
//! ciphertext is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

#[path = "../../verifier/kmip/tests/common/mod.rs"]
mod pykmip;

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use embedded_io_adapters::std::FromStd;
use heapless::Vec as HVec;
use hil_tests::socket::SwtpmSocket;
use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::{Verifier, pem};
use serde_json::json;
use vouch_agent::measure::BootImage;
use vouch_agent::session::{self, AgentConfig, DEFAULT_AK_HANDLE, KeyClient, Outcome};
use vouch_proto::wire::{KeyRefusal, KeyRequest, KeyResponse};
use vouch_tpm::{AkKind, EkKind, StartupType, Tpm, Transport};

#[derive(Clone)]
struct Shared(Arc<Mutex<SwtpmSocket>>);

impl Transport for Shared {
    type Error = <SwtpmSocket as Transport>::Error;
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.lock().unwrap().transact(command, response)
    }
}

const AGENT_VERSION: &[u8] = b"vouch-hosted-agent keys test";
const CONFIG: &[u8] = b"host=keys";
const IMAGE: &[u8] = &[0x5Au8; 2048];

struct Host {
    swtpm: Swtpm,
    tpm: Shared,
    event_log: Vec<u8>,
    certificate_pem: String,
}

fn boot() -> Host {
    boot_image(IMAGE)
}

fn boot_image(image: &[u8]) -> Host {
    let swtpm = Swtpm::start().unwrap();
    let tpm = Shared(Arc::new(Mutex::new(swtpm.connect().unwrap())));
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    t.startup(StartupType::Clear).unwrap();
    let parts: [&[u8]; 1] = [image];
    let image = BootImage {
        version: AGENT_VERSION,
        image: &parts,
        base: 0,
        config: CONFIG,
    };
    let log: vouch_agent::eventlog::EventLog<4096> =
        vouch_agent::measured_boot(&mut t, &image).unwrap();
    let mut der = vec![0u8; 4096];
    let n = t.read_ek_certificate(EkKind::Rsa2048, &mut der).unwrap();
    Host {
        tpm,
        event_log: log.as_bytes().to_vec(),
        certificate_pem: pem(&der[..n]),
        swtpm,
    }
}

/// Asks in turn: a data key, encrypt, decrypt of that ciphertext, decrypt of it tampered.
#[derive(Default)]
struct Script {
    step: usize,
    responses: Vec<KeyResponse>,
}

fn bytes<const N: usize>(b: &[u8]) -> HVec<u8, N> {
    HVec::from_slice(b).unwrap()
}

impl KeyClient for Script {
    fn next_request(&mut self) -> Option<KeyRequest> {
        self.step += 1;
        let ciphertext = || match self.responses.get(1) {
            Some(KeyResponse::Ciphertext(ct)) => ct.clone(),
            other => panic!("no ciphertext to decrypt: {other:?}"),
        };
        match self.step {
            1 => Some(KeyRequest::GenerateKey {
                aad: bytes(b"disk-1"),
            }),
            2 => Some(KeyRequest::Encrypt {
                plaintext: bytes(b"the secret"),
                aad: bytes(b"vm-7"),
            }),
            3 => Some(KeyRequest::Decrypt {
                ciphertext: ciphertext(),
                aad: bytes(b"vm-7"),
            }),
            4 => {
                let mut ct = ciphertext();
                let last = ct.len() - 1;
                ct[last] ^= 1;
                Some(KeyRequest::Decrypt {
                    ciphertext: ct,
                    aad: bytes(b"vm-7"),
                })
            }
            5 => match self.responses.first() {
                Some(KeyResponse::DataKey { wrapped, .. }) => Some(KeyRequest::Decrypt {
                    ciphertext: wrapped.clone(),
                    aad: bytes(b"disk-1"),
                }),
                other => panic!("no data key: {other:?}"),
            },
            _ => None,
        }
    }

    fn response(&mut self, response: KeyResponse) {
        self.responses.push(response);
    }
}

fn run_agent(verifier: &Verifier, host: &Host, keys: &mut dyn KeyClient) -> Outcome {
    let stream = TcpStream::connect(verifier.agent_addr()).unwrap();
    let mut tpm: Tpm<Shared> = Tpm::new(host.tpm.clone());
    let config = AgentConfig {
        agent: "hil-tests keys",
        ek: EkKind::Rsa2048,
        ak: AkKind::EccP256,
        ak_handle: DEFAULT_AK_HANDLE,
        stop_after_verdicts: Some(1),
    };
    session::run_with_keys(
        &mut tpm,
        &host.event_log,
        &mut FromStd::new(stream),
        &config,
        keys,
    )
    .unwrap()
}

fn software_version() -> serde_json::Value {
    let parts: [&[u8]; 1] = [IMAGE];
    serde_json::to_value(
        vouch::image::software_version(
            "fw-keys",
            &BootImage {
                version: AGENT_VERSION,
                image: &parts,
                base: 0,
                config: CONFIG,
            },
        )
        .unwrap(),
    )
    .unwrap()
}

fn ok(verifier: &Verifier, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = verifier.call(method, path, Some(body)).unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {v}"
    );
    v
}

/// Gives `cluster` a key provider on a key server with `replicas` as its endpoints.
fn give_cluster_a_provider(
    verifier: &Verifier,
    cluster: &str,
    replicas: &[&pykmip::PyKmip],
    settings: serde_json::Value,
) {
    let pki = &replicas[0].pki;
    let endpoints: Vec<String> = replicas
        .iter()
        .map(|r| format!("127.0.0.1:{}", r.port))
        .collect();
    verifier
        .give_cluster_a_provider(
            cluster,
            &endpoints,
            (&pki.client_cert, &pki.client_key, &pki.ca),
            &settings,
        )
        .unwrap();
}

#[test]
fn an_attested_hosted_agent_generates_encrypts_and_decrypts_over_the_bound_channel() {
    let started = Instant::now();
    let kms = pykmip::PyKmip::start();
    let verifier = Verifier::start(600).unwrap();
    let (a, b) = (boot(), boot());
    for (cluster, host) in [("lab", &a), ("bare", &b)] {
        verifier
            .trust_cluster(
                cluster,
                &hil_tests::verifier::ca_pems(&host.swtpm).unwrap(),
                &[0, 1],
            )
            .unwrap();
        verifier.accept(cluster, &software_version()).unwrap();
        verifier
            .add_host(cluster, &format!("{cluster}-host"), &host.certificate_pem)
            .unwrap();
    }
    // A host of lab that booted other software: not attested.
    let c = boot_image(&[0x11u8; 2048]);
    for pem in hil_tests::verifier::ca_pems(&c.swtpm).unwrap() {
        ok(
            &verifier,
            "POST",
            "/v1/clusters/lab/tpm-ca-certs",
            json!({ "certificate_pem": pem }),
        );
    }
    verifier
        .add_host("lab", "lab-other", &c.certificate_pem)
        .unwrap();
    give_cluster_a_provider(&verifier, "lab", &[&kms], json!({"wrapping": "local"}));

    // The attested host of lab: a data key, a round trip, a tampered ciphertext refused.
    let mut script = Script::default();
    let outcome = run_agent(&verifier, &a, &mut script);
    assert_eq!(outcome.version, vouch_proto::CURRENT_VERSION);
    assert_eq!(outcome.last_verdict, Some(true));
    assert!(
        outcome.channel,
        "the channel is set up after the attested verdict"
    );
    assert_eq!(outcome.key_responses, 5);
    let r = &script.responses;
    let KeyResponse::DataKey { key, wrapped } = &r[0] else {
        panic!("{:?}", r[0]);
    };
    assert_ne!(key, &[0u8; 32]);
    assert!(
        matches!(&r[1], KeyResponse::Ciphertext(ct) if ct.len() > 10),
        "{:?}",
        r[1]
    );
    assert!(
        matches!(&r[2], KeyResponse::Plaintext(p) if p.as_slice() == b"the secret"),
        "{:?}",
        r[2]
    );
    assert!(
        matches!(
            &r[3],
            KeyResponse::Refused {
                kind: KeyRefusal::BadCiphertext,
                ..
            }
        ),
        "{:?}",
        r[3]
    );
    assert!(
        matches!(&r[4], KeyResponse::Plaintext(p) if p.as_slice() == key),
        "{:?}",
        r[4]
    );
    assert!(
        !wrapped.windows(32).any(|w| w == key),
        "the wrapped key hides the key"
    );

    // An attested host of a cluster without a provider: refused, with the reason.
    let mut one = OneRequest(
        Some(KeyRequest::GenerateKey { aad: HVec::new() }),
        Vec::new(),
    );
    let outcome = run_agent(&verifier, &b, &mut one);
    assert_eq!(outcome.last_verdict, Some(true));
    match &one.1[..] {
        [
            KeyResponse::Refused {
                kind: KeyRefusal::NotAuthorised,
                reason,
            },
        ] => {
            assert!(reason.contains("key provider"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A host of lab running unaccepted software: not attested, so no channel and no key.
    let mut one = OneRequest(
        Some(KeyRequest::GenerateKey { aad: HVec::new() }),
        Vec::new(),
    );
    let outcome = run_agent(&verifier, &c, &mut one);
    assert_eq!(outcome.last_verdict, Some(false));
    assert!(
        !outcome.channel,
        "no channel for a host that is not attested"
    );
    assert_eq!(outcome.key_responses, 0);
    assert!(one.1.is_empty());
    eprintln!("key channel test took {:?}", started.elapsed());
}

struct OneRequest(Option<KeyRequest>, Vec<KeyResponse>);

impl KeyClient for OneRequest {
    fn next_request(&mut self) -> Option<KeyRequest> {
        self.0.take()
    }
    fn response(&mut self, response: KeyResponse) {
        self.1.push(response);
    }
}

/// Asks each of its requests in turn and keeps every answer.
#[derive(Default)]
struct Requests {
    queue: std::collections::VecDeque<KeyRequest>,
    answers: Vec<KeyResponse>,
}

impl KeyClient for Requests {
    fn next_request(&mut self) -> Option<KeyRequest> {
        self.queue.pop_front()
    }
    fn response(&mut self, response: KeyResponse) {
        self.answers.push(response);
    }
}

/// A key result the agent received: a ciphertext of `plaintext` under `aad` (an Encrypt), or a
/// data key `plaintext` wrapped as `ciphertext` (a GenerateKey).
#[derive(Debug, Clone)]
struct KeyAck {
    phase: &'static str,
    plaintext: Vec<u8>,
    aad: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// One agent session (an attestation and its key channel) asking for two ciphertexts and a
/// data key; every result received is added to `ledger`. Panics on a refusal.
fn make_ciphertexts(
    verifier: &Verifier,
    host: &Host,
    phase: &'static str,
    ledger: &mut Vec<KeyAck>,
) {
    let n = ledger.len();
    let plaintexts: Vec<Vec<u8>> = (0..2)
        .map(|i| format!("{phase} secret {n} {i}").into_bytes())
        .collect();
    let aad = format!("vm-{n}").into_bytes();
    let mut requests = Requests::default();
    for p in &plaintexts {
        requests.queue.push_back(KeyRequest::Encrypt {
            plaintext: bytes(p),
            aad: bytes(&aad),
        });
    }
    requests
        .queue
        .push_back(KeyRequest::GenerateKey { aad: bytes(&aad) });
    let outcome = run_agent(verifier, host, &mut requests);
    assert_eq!(outcome.last_verdict, Some(true), "{phase}");
    for (i, answer) in requests.answers.into_iter().enumerate() {
        let (plaintext, ciphertext) = match (answer, plaintexts.get(i)) {
            (KeyResponse::Ciphertext(ct), Some(p)) => (p.clone(), ct.to_vec()),
            (KeyResponse::DataKey { key, wrapped }, None) => (key.to_vec(), wrapped.to_vec()),
            (other, _) => panic!("{phase}: request {i} answered {other:?}"),
        };
        ledger.push(KeyAck {
            phase,
            plaintext,
            aad: aad.clone(),
            ciphertext,
        });
    }
    assert_eq!(ledger.len(), n + 3, "{phase}: every request answered");
}

/// Every ciphertext in `ledger` decrypts (in one agent session) to what it was made from.
fn decrypt_all(verifier: &Verifier, host: &Host, ledger: &[KeyAck]) {
    let mut requests = Requests::default();
    for ack in ledger {
        requests.queue.push_back(KeyRequest::Decrypt {
            ciphertext: bytes(&ack.ciphertext),
            aad: bytes(&ack.aad),
        });
    }
    let outcome = run_agent(verifier, host, &mut requests);
    assert_eq!(outcome.last_verdict, Some(true));
    assert_eq!(requests.answers.len(), ledger.len());
    for (ack, answer) in ledger.iter().zip(&requests.answers) {
        assert!(
            matches!(answer, KeyResponse::Plaintext(p) if p.as_slice() == ack.plaintext),
            "a ciphertext made {} does not decrypt: {answer:?}",
            ack.phase
        );
    }
}

/// Key server faults while a host encrypts: two PyKMIP replicas sharing one database behind
/// one key server (endpoints tried in order), a provider wrapping locally that checks the key
/// on the key server at every use (`refresh_seconds` 0). The first replica stops: the second
/// serves. Both stop: the cached key serves (local wrapping) within its lifetime. Both start
/// again with their database. Then vouchd restarts (its cache gone, the key fetched again from
/// the restarted key server) and every ciphertext and data key the agent received — before,
/// at failover, during the outage, after — decrypts to what it was made from.
#[test]
fn ciphertexts_made_across_key_server_failover_and_outage_all_decrypt_afterwards() {
    let mut first = pykmip::PyKmip::start();
    let mut second = first.replica();
    let mut verifier = Verifier::start(600).unwrap();
    let host = boot();
    verifier
        .trust_cluster(
            "lab",
            &hil_tests::verifier::ca_pems(&host.swtpm).unwrap(),
            &[0, 1],
        )
        .unwrap();
    verifier.accept("lab", &software_version()).unwrap();
    verifier
        .add_host("lab", "lab-host", &host.certificate_pem)
        .unwrap();
    give_cluster_a_provider(
        &verifier,
        "lab",
        &[&first, &second],
        json!({"wrapping": "local", "refresh_seconds": 0, "lifetime_seconds": 600}),
    );

    let mut ledger = Vec::new();
    make_ciphertexts(&verifier, &host, "before the faults", &mut ledger);

    // The first replica fails: the second one, on the same database, answers.
    first.stop();
    let second_log =
        || std::fs::read_to_string(second.dir().join("server.log")).unwrap_or_default();
    let served = second_log().matches("Processing operation").count();
    make_ciphertexts(
        &verifier,
        &host,
        "after the first replica failed",
        &mut ledger,
    );
    assert!(
        second_log().matches("Processing operation").count() > served,
        "the replica served nothing:\n{}",
        second.logs()
    );

    // Both fail: the cached key serves.
    second.stop();
    make_ciphertexts(
        &verifier,
        &host,
        "while no key server answered",
        &mut ledger,
    );

    // Both come back with their database; vouchd restarts and forgets its cache.
    first.restart();
    second.restart();
    make_ciphertexts(
        &verifier,
        &host,
        "after the key server came back",
        &mut ledger,
    );
    verifier.restart().unwrap();
    decrypt_all(&verifier, &host, &ledger);
}
