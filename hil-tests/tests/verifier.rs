//! The whole attestation flow against real parts: swtpm as the TPM, the agent (vouch-agent, as
//! the hosted agent runs it) on the TPM's socket, and a real vouchd configured through its
//! management API — enrollment, credential activation, quotes, policy, re-attestation and a
//! verifier restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

#[path = "../../verifier/kmip/tests/common/mod.rs"]
mod pykmip;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use embedded_io_adapters::std::FromStd;
use heapless::Vec as HVec;
use hil_tests::socket::{SocketError, SwtpmSocket};
use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::{Verifier, pem};
use serde_json::{Value, json};
use vouch_agent::measure::BootImage;
use vouch_agent::session::{self, AgentConfig, DEFAULT_AK_HANDLE, KeyClient, Outcome};
use vouch_proto::frame::{self, FrameReader, MAX_FRAME};
use vouch_proto::wire::{KeyRequest, KeyResponse, RefusalKind, VerifierMessage};
use vouch_tpm::{AkKind, EkKind, StartupType, Tpm, Transport};
use vouchd::store::Store as _;

const WAIT: Duration = Duration::from_secs(30);

/// One TPM connection shared by the agent's session and the test (swtpm serves one client).
#[derive(Clone)]
struct Shared(Arc<Mutex<SwtpmSocket>>);

impl Transport for Shared {
    type Error = <SwtpmSocket as Transport>::Error;
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.lock().unwrap().transact(command, response)
    }
}

/// A booted host: a swtpm that measured `image` like the firmware does.
struct Host {
    swtpm: Swtpm,
    tpm: Shared,
    event_log: Vec<u8>,
    certificate_pem: String,
}

const AGENT_VERSION: &[u8] = b"vouch-hosted-agent test";
const CONFIG: &[u8] = b"host=test";

fn boot(image: &[u8]) -> Host {
    let swtpm = Swtpm::start().unwrap();
    let tpm = Shared(Arc::new(Mutex::new(swtpm.connect().unwrap())));
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    t.startup(StartupType::Clear).unwrap();
    let parts: [&[u8]; 1] = [image];
    let log: vouch_agent::eventlog::EventLog<4096> = vouch_agent::measured_boot(
        &mut t,
        &BootImage {
            version: AGENT_VERSION,
            image: &parts,
            base: 0,
            config: CONFIG,
        },
    )
    .unwrap();
    let mut der = vec![0u8; 4096];
    let n = t.read_ek_certificate(EkKind::Rsa2048, &mut der).unwrap();
    Host {
        tpm,
        event_log: log.as_bytes().to_vec(),
        certificate_pem: pem(&der[..n]),
        swtpm,
    }
}

/// The software version an operator computes for `image` with `vouch image add`.
fn software_version(name: &str, image: &[u8]) -> Value {
    let parts: [&[u8]; 1] = [image];
    let v = vouch::image::software_version(
        name,
        &BootImage {
            version: AGENT_VERSION,
            image: &parts,
            base: 0,
            config: CONFIG,
        },
    )
    .unwrap();
    serde_json::to_value(v).unwrap()
}

fn ca_pems(swtpm: &Swtpm) -> Vec<String> {
    hil_tests::verifier::ca_pems(swtpm).unwrap()
}

/// Configures cluster `lab` to trust `host`'s manufacturer CA and accept `image` as `fw-1.0`,
/// and adds `host` to it as `host-1`; returns its EK hash.
fn enroll(verifier: &Verifier, host: &Host, image: &[u8]) -> String {
    verifier
        .trust_cluster("lab", &ca_pems(&host.swtpm), &[0, 1])
        .unwrap();
    verifier
        .accept("lab", &software_version("fw-1.0", image))
        .unwrap();
    verifier
        .add_host("lab", "host-1", &host.certificate_pem)
        .unwrap()
}

/// The agent's configuration in these tests.
fn agent_config(ek: EkKind, ak: AkKind, stop_after_verdicts: Option<u32>) -> AgentConfig<'static> {
    AgentConfig {
        agent: "hil-tests",
        ek,
        ak,
        ak_handle: DEFAULT_AK_HANDLE,
        stop_after_verdicts,
    }
}

/// An agent session in a thread; the test ends it by closing the connection.
struct Session {
    stream: TcpStream,
    thread: JoinHandle<Result<Outcome, String>>,
}

impl Session {
    fn open(verifier: &Verifier, host: &Host, ak: AkKind) -> Self {
        Self::open_with_ek(verifier, host, ak, EkKind::Rsa2048)
    }

    /// A session that ends by itself after its first verdict (and the key channel's setup).
    fn open_once(verifier: &Verifier, host: &Host, ak: AkKind) -> Self {
        Self::open_until(verifier, host, ak, EkKind::Rsa2048, Some(1))
    }

    fn open_with_ek(verifier: &Verifier, host: &Host, ak: AkKind, ek: EkKind) -> Self {
        Self::open_until(verifier, host, ak, ek, None)
    }

    fn open_until(
        verifier: &Verifier,
        host: &Host,
        ak: AkKind,
        ek: EkKind,
        stop_after_verdicts: Option<u32>,
    ) -> Self {
        let stream = TcpStream::connect(verifier.agent_addr()).unwrap();
        let theirs = stream.try_clone().unwrap();
        let tpm = host.tpm.clone();
        let log = host.event_log.clone();
        let thread = std::thread::spawn(move || {
            let mut tpm: Tpm<Shared> = Tpm::new(tpm);
            let config = agent_config(ek, ak, stop_after_verdicts);
            session::run(&mut tpm, &log, &mut FromStd::new(theirs), &config)
                .map_err(|e| format!("{e:?}"))
        });
        Self { stream, thread }
    }

    /// Closes the link from the agent's side and returns what the session did.
    fn close(self) -> Result<Outcome, String> {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.thread.join().unwrap()
    }

    /// Waits for the session to end by itself (a refusal).
    fn join(self) -> Result<Outcome, String> {
        self.thread.join().unwrap()
    }
}

#[test]
fn a_host_enrolls_attests_and_reuses_its_ak() {
    let image = vec![0xA5u8; 4096];
    let host = boot(&image);
    let verifier = Verifier::start(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);

    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    let record = verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    assert!(outcome.activated, "a new AK is activated against the EK");
    assert_eq!(outcome.quotes, 1);
    assert_eq!(outcome.last_verdict, Some(true));
    assert_eq!(outcome.software_version.as_str(), "fw-1.0");
    assert!(
        record["valid_until"].as_i64() > record["attested_at"].as_i64(),
        "{record}"
    );

    // The next session reuses the AK bound to this EK: no new credential challenge.
    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    let before = verifier.host(&ek_hash).unwrap();
    assert!(!outcome.activated, "the bound AK is reused: {before}");
    assert_eq!(outcome.last_verdict, Some(true));
}

#[test]
fn a_fresh_verifier_trusts_nobody() {
    let image = vec![1u8; 512];
    let host = boot(&image);
    let verifier = Verifier::start(600).unwrap();
    let err = Session::open(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap_err();
    assert!(err.contains("UntrustedEk"), "{err}");
}

#[test]
fn a_tpm_from_another_manufacturer_ca_is_refused() {
    let image = vec![2u8; 512];
    let host = boot(&image);
    let other = Swtpm::start().unwrap();
    let verifier = Verifier::start(600).unwrap();
    // The cluster trusts another CA; the host is listed, but its EK chain does not verify.
    verifier
        .trust_cluster("lab", &ca_pems(&other), &[0, 1])
        .unwrap();
    verifier
        .add_host("lab", "host-1", &host.certificate_pem)
        .unwrap();
    let err = Session::open(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap_err();
    assert!(
        err.contains(&format!("{:?}", RefusalKind::UntrustedEk)),
        "{err}"
    );
}

#[test]
fn unaccepted_software_is_refused_with_the_reason() {
    let image = vec![3u8; 2048];
    let mut accepted = image.clone();
    accepted[1000] ^= 1; // the operator accepted an image one byte away from what booted
    let host = boot(&image);
    let verifier = Verifier::start(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &accepted);
    let outcome = Session::open_once(&verifier, &host, AkKind::Rsa2048)
        .join()
        .unwrap();
    let record = verifier
        .wait_for_state(&ek_hash, "not_attested", WAIT)
        .unwrap();
    assert_eq!(outcome.last_verdict, Some(false));
    let text = record.to_string();
    assert!(text.contains("fw-1.0") && text.contains("PCR 0"), "{text}");
}

#[test]
fn a_pcr_changed_after_enrollment_is_caught_by_reattestation() {
    let image = vec![4u8; 1024];
    let host = boot(&image);
    // The shortest re-attestation interval vouchd allows.
    let verifier = Verifier::start(10).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    let session = Session::open_until(&verifier, &host, AkKind::EccP256, EkKind::Rsa2048, Some(2));
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();

    // Something else gets measured into PCR 0 on the running host.
    let mut tpm: Tpm<Shared> = Tpm::new(host.tpm.clone());
    tpm.pcr_extend(0, &[(0x000B, &[0x66; 32]), (0x0004, &[0x66; 20])])
        .unwrap();
    // Within one interval the open session is quoted again and the change refused.
    let outcome = session.join().unwrap();
    verifier
        .wait_for_state(&ek_hash, "not_attested", Duration::from_secs(20))
        .unwrap();
    assert!(outcome.quotes >= 2, "{outcome:?}");
    assert_eq!(outcome.last_verdict, Some(false));
}

/// Trust withdrawn while a host's session is open (its manufacturer's CA removed): the next
/// re-attestation refuses the EK, and the refusal is the host's result (NOT ATTESTED, with a
/// reason naming the command that fixes it), not only a log line.
#[test]
fn a_host_whose_trust_is_withdrawn_is_recorded_refused() {
    let image = vec![17u8; 1024];
    let host = boot(&image);
    // The shortest re-attestation interval vouchd allows.
    let verifier = Verifier::start(10).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    let session = Session::open(&verifier, &host, AkKind::EccP256);
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();

    let (status, cas) = verifier
        .call("GET", "/v1/clusters/lab/tpm-ca-certs", None)
        .unwrap();
    assert_eq!(status, 200, "{cas}");
    for ca in cas.as_array().unwrap() {
        let id = ca["id"].as_str().unwrap();
        let (status, body) = verifier
            .call(
                "DELETE",
                &format!("/v1/clusters/lab/tpm-ca-certs/{id}"),
                None,
            )
            .unwrap();
        assert_eq!(status, 204, "{body}");
    }
    let refused = verifier
        .wait_for_state(&ek_hash, "not_attested", Duration::from_secs(40))
        .unwrap();
    let reason = refused["recent"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cluster lab has no trust configured")
            && reason.contains("vouch tpm-ca add --cluster lab"),
        "{refused}"
    );
    let ended = session.join().unwrap_err();
    assert!(ended.contains("UntrustedEk"), "{ended}");
}

#[test]
fn a_restarted_verifier_keeps_enrollments_and_results() {
    let image = vec![5u8; 1024];
    let host = boot(&image);
    let mut verifier = Verifier::start(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    let session = Session::open(&verifier, &host, AkKind::EccP256);
    let before = verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    session.close().unwrap();

    verifier.restart().unwrap();
    let after = verifier.host(&ek_hash).unwrap();
    assert_eq!(after["state"], "attested", "{after}");
    assert_eq!(after["attested_at"], before["attested_at"]);
    // The AK bound before the restart is still bound: no new challenge.
    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    assert!(!outcome.activated);
    assert_eq!(outcome.last_verdict, Some(true));
}

/// A host booted with an image of `fill` bytes, enrolled in cluster `lab` of a new verifier and
/// attested once; with its EK hash.
fn attested_host(fill: u8) -> (Host, Verifier, String) {
    let image = vec![fill; 1024];
    let host = boot(&image);
    let verifier = Verifier::start(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    (host, verifier, ek_hash)
}

/// A backup taken (`vouchd backup`, its own process) while a host attests, restored
/// (`vouchd restore`) into a new data directory: the restored vouchd attests the same host
/// with the AK bound before the backup, and the old admin token works there.
#[test]
fn a_backup_taken_while_a_host_attests_restores_and_the_host_attests_again() {
    use std::ffi::OsStr;
    let (host, verifier, ek_hash) = attested_host(15);

    // The backup runs while another attestation of the host is under way.
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("vouchd.backup");
    let session = Session::open_once(&verifier, &host, AkKind::EccP256);
    let config = verifier.config_file().unwrap();
    Verifier::vouchd(&[
        OsStr::new("backup"),
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--out"),
        backup.as_os_str(),
    ])
    .unwrap();
    assert_eq!(session.join().unwrap().last_verdict, Some(true));
    let admin = verifier.admin_token().to_owned();
    // The key-encryption key is kept apart from backups; the old data directory goes.
    let kek = dir.path().join("kek");
    std::fs::copy(verifier.data_dir().join("key-encryption-key"), &kek).unwrap();
    drop(verifier);

    let restored = dir.path().join("restored");
    let restored_config = dir.path().join("restored.toml");
    std::fs::write(
        &restored_config,
        format!("data_dir = \"{}\"\n", restored.display()),
    )
    .unwrap();
    Verifier::vouchd(&[
        OsStr::new("restore"),
        OsStr::new("--config"),
        restored_config.as_os_str(),
        OsStr::new("--key-encryption-key"),
        kek.as_os_str(),
        backup.as_os_str(),
    ])
    .unwrap();
    let verifier = Verifier::start_on(restored, &admin, 600).unwrap();
    let before = verifier.host(&ek_hash).unwrap();
    assert_eq!(before["name"], "host-1", "{before}");
    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    assert!(
        !outcome.activated,
        "the AK bound before the backup is still bound"
    );
    assert_eq!(outcome.last_verdict, Some(true));
    let after = verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    assert_eq!(after["state"], "attested", "{after}");
}

/// A disabled cluster: its attested host loses that state at once (so it gets no keys), is
/// not attested while the cluster stays disabled, with the reason naming the command that
/// enables it, and is attested again once it is enabled.
#[test]
fn a_disabled_clusters_host_is_not_attested_until_it_is_enabled() {
    let (host, verifier, ek_hash) = attested_host(16);

    let patch = |enabled: bool| {
        let (status, body) = verifier
            .call(
                "PATCH",
                "/v1/clusters/lab",
                Some(serde_json::json!({"enabled": enabled})),
            )
            .unwrap();
        assert_eq!(status, 200, "{body}");
    };
    patch(false);
    let now = verifier.host(&ek_hash).unwrap();
    assert_eq!(now["state"], "not_attested", "{now}");
    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    assert_eq!(outcome.last_verdict, Some(false));
    let now = verifier.host(&ek_hash).unwrap();
    let reason = now["recent"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("vouch cluster enable lab"),
        "{reason}: {now}"
    );

    patch(true);
    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    assert_eq!(outcome.last_verdict, Some(true));
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
}

#[test]
fn trust_mode_2_admits_listed_tpms_only() {
    let image = vec![6u8; 1024];
    let listed = boot(&image);
    let unlisted = boot(&image);
    let verifier = Verifier::start(600).unwrap();
    // Both TPMs chain to a trusted CA, but only the first one's EK is on the cluster's list.
    let mut cas = ca_pems(&listed.swtpm);
    cas.extend(ca_pems(&unlisted.swtpm));
    verifier.trust_cluster("strict", &cas, &[0, 1]).unwrap();
    verifier
        .add_ek("strict", "certificate", &listed.certificate_pem)
        .unwrap();
    verifier
        .accept("strict", &software_version("fw-1.0", &image))
        .unwrap();
    let listed_hash = verifier
        .add_host("strict", "listed", &listed.certificate_pem)
        .unwrap();
    verifier
        .add_host("strict", "unlisted", &unlisted.certificate_pem)
        .unwrap();

    let outcome = Session::open_once(&verifier, &listed, AkKind::EccP256)
        .join()
        .unwrap();
    assert_eq!(outcome.last_verdict, Some(true));
    verifier
        .wait_for_state(&listed_hash, "attested", WAIT)
        .unwrap();
    let err = Session::open(&verifier, &unlisted, AkKind::EccP256)
        .join()
        .unwrap_err();
    assert!(err.contains("UntrustedEk"), "{err}");
}

#[test]
fn trust_mode_3_admits_a_bare_ek_public_key() {
    let image = vec![7u8; 1024];
    let host = boot(&image);
    // The ECC P-256 EK has no certificate on this TPM: the agent sends none.
    let point = {
        let mut tpm: Tpm<Shared> = Tpm::new(host.tpm.clone());
        let ek = tpm.create_ek(EkKind::EccP256).unwrap();
        tpm.flush_context(ek.handle).unwrap();
        let (x, y) = ek.public.ecc_point().unwrap();
        [x, y].concat()
    };
    let verifier = Verifier::start(600).unwrap();
    verifier.trust_cluster("bare", &[], &[0, 1]).unwrap();
    let ek_hash = verifier
        .add_ek("bare", "bare_public_key", &p256_spki_pem(&point))
        .unwrap();
    verifier
        .accept("bare", &software_version("fw-1.0", &image))
        .unwrap();
    verifier
        .add_host_by_hash("bare", "no-cert", &ek_hash)
        .unwrap();

    let outcome = Session::open_until(&verifier, &host, AkKind::EccP256, EkKind::EccP256, Some(1))
        .join()
        .unwrap();
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    assert!(
        outcome.activated,
        "the AK was activated against the ECC EK (KDFe path)"
    );
    assert_eq!(outcome.last_verdict, Some(true));
}

/// A NIST P-256 SubjectPublicKeyInfo, PEM, for the uncompressed point `x || y`.
fn p256_spki_pem(xy: &[u8]) -> String {
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
    ];
    der.extend_from_slice(xy);
    hil_tests::tools::pem("PUBLIC KEY", &der)
}

/// One verdict an agent received: the host, the nonce of the quote request it answers (hex,
/// as vouchd stores it), and the verdict.
#[derive(Debug, Clone)]
struct Ack {
    host: usize,
    nonce: String,
    attested: bool,
}

/// Everything the agents were told, in the order they were told it.
#[derive(Debug, Clone, Default)]
struct Ledger(Arc<Mutex<Vec<Ack>>>);

impl Ledger {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn acks(&self) -> Vec<Ack> {
        self.0.lock().unwrap().clone()
    }
}

/// The agent's end of the link, tapped: every verdict the agent reads is written to the ledger
/// (the moment it arrives is the moment the verifier acknowledged the result), with the nonce of
/// the quote request before it.
struct Tapped<L> {
    inner: L,
    frames: Box<FrameReader<MAX_FRAME>>,
    nonce: String,
    host: usize,
    ledger: Ledger,
}

impl<L> Tapped<L> {
    fn new(inner: L, host: usize, ledger: Ledger) -> Self {
        Self {
            inner,
            frames: Box::new(FrameReader::new()),
            nonce: String::new(),
            host,
            ledger,
        }
    }
}

impl<L: embedded_io::ErrorType> embedded_io::ErrorType for Tapped<L> {
    type Error = L::Error;
}

impl<L: embedded_io::Read> embedded_io::Read for Tapped<L> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            let Some(Ok(bytes)) = self.frames.push(byte) else {
                continue;
            };
            match frame::decode::<VerifierMessage>(bytes) {
                Ok(VerifierMessage::QuoteRequest(q)) => {
                    self.nonce = hil_tests::tools::hex(&q.nonce);
                }
                Ok(VerifierMessage::Verdict(v)) => self.ledger.0.lock().unwrap().push(Ack {
                    host: self.host,
                    nonce: std::mem::take(&mut self.nonce),
                    attested: v.attested,
                }),
                _ => {}
            }
        }
        Ok(n)
    }
}

impl<L: embedded_io::Write> embedded_io::Write for Tapped<L> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

/// `hosts` booted with `image`, enrolled in cluster `lab` of `verifier` as `host-0`, `host-1`,
/// …; returns their EK hashes.
fn enroll_all(verifier: &Verifier, hosts: &[Host], image: &[u8]) -> Vec<String> {
    let cas: Vec<String> = hosts.iter().flat_map(|h| ca_pems(&h.swtpm)).collect();
    verifier.trust_cluster("lab", &cas, &[0, 1]).unwrap();
    verifier
        .accept("lab", &software_version("fw-1.0", image))
        .unwrap();
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            verifier
                .add_host("lab", &format!("host-{i}"), &h.certificate_pem)
                .unwrap()
        })
        .collect()
}

/// Sustained attestation: an agent per host opening one session after the other (each ends
/// after its verdict), reconnecting while vouchd is down, until `stop`. Verdicts go to `ledger`.
fn attest_continuously(
    verifier: &Verifier,
    hosts: &[Host],
    ledger: &Ledger,
    keys: Option<&KeyLedger>,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<u32>> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let (tpm, log, ledger, keys, stop) = (
                host.tpm.clone(),
                host.event_log.clone(),
                ledger.clone(),
                keys.cloned(),
                Arc::clone(stop),
            );
            let addr = verifier.agent_addr();
            std::thread::spawn(move || {
                let mut tpm: Tpm<Shared> = Tpm::new(tpm);
                let config = agent_config(EkKind::Rsa2048, AkKind::EccP256, Some(1));
                let mut sessions = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    stream.set_read_timeout(Some(WAIT)).unwrap();
                    let mut link = Tapped::new(FromStd::new(stream), i, ledger.clone());
                    // A session cut by a kill ends with a link error: the agent starts another.
                    // With a key ledger, each session also encrypts one secret of its own.
                    let mut client = EncryptOnce {
                        plaintext: format!("host-{i} session-{sessions}").into_bytes(),
                        asked: false,
                        ledger: keys.clone(),
                    };
                    let _ = session::run_with_keys(&mut tpm, &log, &mut link, &config, &mut client);
                    sessions += 1;
                }
                sessions
            })
        })
        .collect()
}

/// Ciphertexts the agents received: (plaintext, ciphertext), made under the associated data
/// [`KEY_AAD`].
#[derive(Debug, Clone, Default)]
struct KeyLedger(Arc<Mutex<Vec<Encrypted>>>);

/// (plaintext, ciphertext)
type Encrypted = (Vec<u8>, Vec<u8>);

const KEY_AAD: &[u8] = b"durability";

/// Asks to encrypt one plaintext (when it has a ledger) and writes the ciphertext it receives
/// to the ledger.
struct EncryptOnce {
    plaintext: Vec<u8>,
    asked: bool,
    ledger: Option<KeyLedger>,
}

impl KeyClient for EncryptOnce {
    fn next_request(&mut self) -> Option<KeyRequest> {
        if self.asked || self.ledger.is_none() {
            return None;
        }
        self.asked = true;
        Some(KeyRequest::Encrypt {
            plaintext: HVec::from_slice(&self.plaintext).unwrap(),
            aad: HVec::from_slice(KEY_AAD).unwrap(),
        })
    }

    fn response(&mut self, response: KeyResponse) {
        if let (Some(ledger), KeyResponse::Ciphertext(ct)) = (&self.ledger, response) {
            ledger
                .0
                .lock()
                .unwrap()
                .push((self.plaintext.clone(), ct.to_vec()));
        }
    }
}

/// Asks to decrypt each ciphertext in turn (under [`KEY_AAD`]) and keeps the answers.
struct Decrypts {
    queue: std::collections::VecDeque<Vec<u8>>,
    answers: Vec<KeyResponse>,
}

impl KeyClient for Decrypts {
    fn next_request(&mut self) -> Option<KeyRequest> {
        let ciphertext = self.queue.pop_front()?;
        Some(KeyRequest::Decrypt {
            ciphertext: HVec::from_slice(&ciphertext).unwrap(),
            aad: HVec::from_slice(KEY_AAD).unwrap(),
        })
    }

    fn response(&mut self, response: KeyResponse) {
        self.answers.push(response);
    }
}

/// Configuration changes acknowledged over the API (a 2xx): principals, and a token of each.
#[derive(Debug, Default)]
struct ApiLedger {
    principals: Vec<String>,
    /// (principal, token id, secret)
    tokens: Vec<(String, String, String)>,
}

impl ApiLedger {
    /// Creates a principal and a token for it; records what was acknowledged. `false` once a
    /// call fails (vouchd is gone).
    fn change(&mut self, verifier: &Verifier, name: &str) -> bool {
        let body = json!({"name": name, "kind": "service", "groups": []});
        match verifier.call("POST", "/v1/principals", Some(body)) {
            Ok((201, _)) => self.principals.push(name.to_owned()),
            _ => return false,
        }
        let body = json!({"description": "durability"});
        match verifier.call("POST", &format!("/v1/principals/{name}/tokens"), Some(body)) {
            Ok((201, token)) => {
                let text = |k: &str| token[k].as_str().unwrap().to_owned();
                self.tokens
                    .push((name.to_owned(), text("id"), text("token")));
                true
            }
            _ => false,
        }
    }
}

/// A seed for fault injection: `VOUCH_FAULT_SEED` to repeat a run, else the clock's.
fn fault_seed() -> u64 {
    let seed = std::env::var("VOUCH_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            now.as_secs() ^ u64::from(now.subsec_nanos())
        });
    println!("fault injection seed: {seed} (VOUCH_FAULT_SEED repeats it)");
    seed
}

/// Every event vouchd stored, oldest first.
fn all_events(verifier: &Verifier) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e["id"].as_i64().unwrap());
        let (status, page) = verifier
            .call("GET", &format!("/v1/events?after={after}&limit=1000"), None)
            .unwrap();
        assert_eq!(status, 200, "{page}");
        let page = page.as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// Waits until the ledger holds more than `count` verdicts.
fn wait_for_verdicts(ledger: &Ledger, count: usize, what: &str) {
    let start = std::time::Instant::now();
    while ledger.len() <= count {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no verdict {what} within 90 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fault: vouchd SIGKILLed again and again, at random offsets, while hosts attest without pause
/// and an operator changes the configuration. Afterwards every verdict an agent received is
/// among the stored results (matched by the quote's nonce, with the same verdict), every host
/// is in the state of its latest result with its `host.state_changed` event, and every change
/// the API acknowledged is there: principals, tokens that still authenticate, and their audit
/// events. Every ciphertext an agent received over its key channel decrypts to its secret.
/// The AK bound before the faults is still bound.
#[test]
fn vouchd_killed_again_and_again_loses_nothing_it_acknowledged() {
    const HOSTS: usize = 3;
    const KILLS: usize = 8;
    let image = vec![8u8; 1024];
    let hosts: Vec<Host> = (0..HOSTS).map(|_| boot(&image)).collect();
    let kms = pykmip::PyKmip::start();
    let mut verifier = Verifier::start_process(600).unwrap();
    let ek_hashes = enroll_all(&verifier, &hosts, &image);
    verifier
        .give_cluster_a_provider(
            "lab",
            &[format!("127.0.0.1:{}", kms.port)],
            (&kms.pki.client_cert, &kms.pki.client_key, &kms.pki.ca),
            &json!({"wrapping": "local"}),
        )
        .unwrap();
    let mut rng = hil_tests::rng::Rng::new(fault_seed());

    let ledger = Ledger::default();
    let keys = KeyLedger::default();
    let stop = Arc::new(AtomicBool::new(false));
    let agents = attest_continuously(&verifier, &hosts, &ledger, Some(&keys), &stop);
    let mut api = ApiLedger::default();
    let mut changes = 0;
    for round in 0..KILLS {
        // Attestation is under way against this vouchd: its first verdict arrived.
        wait_for_verdicts(&ledger, ledger.len(), &format!("before kill {round}"));
        let pid = verifier.pid().unwrap();
        let offset = Duration::from_millis(rng.below(400));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(offset);
            signal(pid, "-KILL");
        });
        // Configuration changes until the kill lands.
        while !killer.is_finished() {
            changes += 1;
            if !api.change(&verifier, &format!("svc-{changes}")) {
                break;
            }
        }
        killer.join().unwrap();
        verifier.restart().unwrap();
    }
    // Some attestation after the last restart, then the agents stop.
    wait_for_verdicts(&ledger, ledger.len(), "after the last restart");
    stop.store(true, Ordering::Relaxed);
    let sessions: u32 = agents.into_iter().map(|a| a.join().unwrap()).sum();
    let acks = ledger.acks();
    let ciphertexts = keys.0.lock().unwrap().clone();
    println!(
        "{KILLS} kills: {} verdicts and {} ciphertexts received in {sessions} sessions, {} principals and {} tokens acknowledged",
        acks.len(),
        ciphertexts.len(),
        api.principals.len(),
        api.tokens.len()
    );

    // What the API acknowledged is there.
    let (_, listed) = verifier.call("GET", "/v1/principals", None).unwrap();
    let events = all_events(&verifier);
    let has_event = |kind: &str, subject: &str| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["subject"] == subject)
    };
    for name in &api.principals {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == name.as_str()),
            "acknowledged principal {name} is missing"
        );
        assert!(
            has_event("principal.created", name),
            "no audit event for {name}"
        );
    }
    for (name, id, secret) in &api.tokens {
        let (status, me) = verifier.call_as(secret, "GET", "/v1/whoami", None).unwrap();
        assert_eq!(status, 200, "acknowledged token {id} of {name}: {me}");
        assert_eq!(me["name"], name.as_str());
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "token.created" && e["detail"]["id"] == id.as_str()),
            "no audit event for token {id}"
        );
    }
    // Every host: attested, with its event and a token for the current result.
    for (i, ek_hash) in ek_hashes.iter().enumerate() {
        let host = verifier.host(ek_hash).unwrap();
        assert_eq!(host["state"], "attested", "host-{i}: {host}");
        assert_eq!(host["ak_bound"], true, "{host}");
        assert!(
            has_event("host.state_changed", ek_hash),
            "host-{i}: no state change event"
        );
        let (status, token) = verifier
            .call("GET", &format!("/v1/hosts/{ek_hash}/token"), None)
            .unwrap();
        assert_eq!(status, 200, "host-{i}: {token}");
    }
    // The AK bound before the faults is reused, and every ciphertext received decrypts.
    assert!(!ciphertexts.is_empty(), "no ciphertext was received");
    let mut decrypt = Decrypts {
        queue: ciphertexts.iter().map(|(_, ct)| ct.clone()).collect(),
        answers: Vec::new(),
    };
    let stream = TcpStream::connect(verifier.agent_addr()).unwrap();
    let mut tpm: Tpm<Shared> = Tpm::new(hosts[0].tpm.clone());
    let outcome = session::run_with_keys(
        &mut tpm,
        &hosts[0].event_log,
        &mut FromStd::new(stream),
        &agent_config(EkKind::Rsa2048, AkKind::EccP256, Some(1)),
        &mut decrypt,
    )
    .unwrap();
    assert!(!outcome.activated, "{outcome:?}");
    assert_eq!(outcome.last_verdict, Some(true));
    assert_eq!(decrypt.answers.len(), ciphertexts.len());
    for ((plaintext, _), answer) in ciphertexts.iter().zip(&decrypt.answers) {
        assert!(
            matches!(answer, KeyResponse::Plaintext(p) if p.as_slice() == plaintext.as_slice()),
            "the ciphertext of {:?} does not decrypt: {answer:?}",
            String::from_utf8_lossy(plaintext)
        );
    }

    // Every verdict received is a stored result, the latest at most as new as the host's.
    verifier.kill().unwrap();
    let store = vouchd::store::sqlite::SqliteStore::open(
        &verifier.data_dir().join(vouchd::server::DATABASE_FILE),
    )
    .unwrap();
    assert_verdicts_stored(&store, &ek_hashes, &acks);
    api.assert_stored(&store);
    for ek_hash in &ek_hashes {
        let host = store.get_host(ek_hash).unwrap().unwrap();
        let latest = store.list_attestations(ek_hash, 1).unwrap();
        assert_eq!(host.state, vouchd::store::HostState::Attested, "{host:?}");
        assert_eq!(host.attested_at, latest.first().map(|r| r.at), "{host:?}");
    }
}

/// Every verdict in `acks` (for the hosts `ek_hashes`, by index) is a stored result with the
/// same verdict, matched by the quote's nonce; each host's latest stored result is at least as
/// new as the last verdict it received.
fn assert_verdicts_stored(store: &dyn vouchd::store::Store, ek_hashes: &[String], acks: &[Ack]) {
    for (i, ek_hash) in ek_hashes.iter().enumerate() {
        let stored = store.list_attestations(ek_hash, 100_000).unwrap();
        let find = |ack: &Ack| {
            stored
                .iter()
                .find(|r| r.nonce.as_deref() == Some(ack.nonce.as_str()))
                .unwrap_or_else(|| panic!("host-{i}: acknowledged verdict {ack:?} is not stored"))
        };
        let mut last_at = None;
        for ack in acks.iter().filter(|a| a.host == i) {
            let result = find(ack);
            assert_eq!(result.attested, ack.attested, "{result:?}");
            last_at = Some(result.at);
        }
        assert!(
            stored.first().map(|r| r.at) >= last_at,
            "host-{i}: the latest result is older than the last verdict received"
        );
    }
}

impl ApiLedger {
    /// Every acknowledged principal is in `store`, every acknowledged token authenticates it.
    fn assert_stored(&self, store: &dyn vouchd::store::Store) {
        for name in &self.principals {
            assert!(
                store.get_principal(name).unwrap().is_some(),
                "acknowledged principal {name} is missing"
            );
        }
        for (name, id, secret) in &self.tokens {
            let hash = vouchd::service::auth::token_hash(secret);
            let owner = store.principal_for_token(&hash).unwrap();
            assert_eq!(
                owner.map(|p| p.name).as_deref(),
                Some(name.as_str()),
                "acknowledged token {id} of {name}"
            );
        }
    }

    /// What was acknowledged so far (a snapshot).
    fn snapshot(&self) -> Self {
        Self {
            principals: self.principals.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

/// Waits until every thread of process `pid` is stopped (state `T` in /proc): `kill` returns
/// once the signal is sent, not once it has taken effect.
fn wait_until_stopped(pid: u32) {
    let start = std::time::Instant::now();
    let tasks = format!("/proc/{pid}/task");
    loop {
        let stopped = std::fs::read_dir(&tasks).unwrap().all(|task| {
            let stat =
                std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
            // After "pid (comm) ": the state letter.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        });
        if stopped {
            return;
        }
        assert!(start.elapsed() < WAIT, "vouchd ({pid}) did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// Power loss, modelled: vouchd frozen with SIGSTOP at random instants while hosts attest and
/// an operator changes the configuration, its database files (`vouchd.sqlite3`, `-wal`,
/// `-shm`) copied at that instant, and vouchd let go on. Each copy opens as a consistent
/// database (`PRAGMA integrity_check`) holding every write acknowledged before its instant:
/// the verdicts the agents had read, the principals and tokens the API had answered 2xx.
#[test]
fn database_files_copied_while_vouchd_is_frozen_hold_everything_acknowledged() {
    const HOSTS: usize = 2;
    const STOPS: usize = 5;
    let image = vec![12u8; 1024];
    let hosts: Vec<Host> = (0..HOSTS).map(|_| boot(&image)).collect();
    let verifier = Verifier::start_process(600).unwrap();
    let ek_hashes = enroll_all(&verifier, &hosts, &image);
    let mut rng = hil_tests::rng::Rng::new(fault_seed());
    let ledger = Ledger::default();
    let stop = Arc::new(AtomicBool::new(false));
    let agents = attest_continuously(&verifier, &hosts, &ledger, None, &stop);
    let api = Mutex::new(ApiLedger::default());
    let copies = tempfile::tempdir().unwrap();
    let database = verifier.data_dir().join(vouchd::server::DATABASE_FILE);
    let pid = verifier.pid().unwrap();

    // (copy, verdicts and configuration changes acknowledged before its instant)
    let snapshots = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut ledger = ApiLedger::default();
                assert!(
                    ledger.change(&verifier, &format!("svc-{n}")),
                    "a configuration change failed"
                );
                let mut api = api.lock().unwrap();
                api.principals.extend(ledger.principals);
                api.tokens.extend(ledger.tokens);
            }
        });
        let mut snapshots = Vec::new();
        for round in 0..STOPS {
            wait_for_verdicts(&ledger, ledger.len(), &format!("before stop {round}"));
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            signal(pid, "-STOP");
            wait_until_stopped(pid);
            // Read after the stop: acknowledged before it.
            let acks = ledger.acks();
            let changes = api.lock().unwrap().snapshot();
            let dir = copies.path().join(format!("stop-{round}"));
            std::fs::create_dir(&dir).unwrap();
            for suffix in ["", "-wal", "-shm"] {
                let from = std::path::PathBuf::from(format!("{}{suffix}", database.display()));
                let to = dir.join(format!("{}{suffix}", vouchd::server::DATABASE_FILE));
                if from.exists() {
                    std::fs::copy(&from, &to).unwrap();
                }
            }
            signal(pid, "-CONT");
            snapshots.push((dir, acks, changes));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        snapshots
    });
    for agent in agents {
        agent.join().unwrap();
    }

    for (dir, acks, changes) in &snapshots {
        let store =
            vouchd::store::sqlite::SqliteStore::open(&dir.join(vouchd::server::DATABASE_FILE))
                .unwrap();
        assert_eq!(
            store.pragma("integrity_check").unwrap(),
            "ok",
            "{}",
            dir.display()
        );
        assert_verdicts_stored(&store, &ek_hashes, acks);
        changes.assert_stored(&store);
        println!(
            "{}: {} verdicts, {} principals, {} tokens acknowledged, all there",
            dir.display(),
            acks.len(),
            changes.principals.len(),
            changes.tokens.len()
        );
    }
}

/// The host's TPM, stopping to answer once `ledger` holds a verdict (as if it failed right
/// then).
#[derive(Clone)]
struct FailsAfterVerdict {
    tpm: Shared,
    ledger: Ledger,
}

impl Transport for FailsAfterVerdict {
    type Error = SocketError;
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        if self.ledger.len() > 0 {
            return Err(SocketError::Io(std::io::Error::other(
                "the TPM stopped answering",
            )));
        }
        self.tpm.transact(command, response)
    }
}

/// The agent's TPM fails while it sets up the key channel, right after an attested verdict:
/// the host does not stay attested until that verdict's validity ends, it is not attested at
/// once (with the reason), and no token is issued for it.
#[test]
fn a_tpm_failing_as_the_key_channel_is_set_up_makes_the_host_not_attested() {
    let image = vec![13u8; 1024];
    let host = boot(&image);
    let verifier = Verifier::start(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    let ledger = Ledger::default();
    let stream = TcpStream::connect(verifier.agent_addr()).unwrap();
    let mut link = Tapped::new(FromStd::new(stream), 0, ledger.clone());
    let mut tpm: Tpm<FailsAfterVerdict> = Tpm::new(FailsAfterVerdict {
        tpm: host.tpm.clone(),
        ledger: ledger.clone(),
    });
    let config = agent_config(EkKind::Rsa2048, AkKind::EccP256, Some(1));
    let err = session::run(&mut tpm, &host.event_log, &mut link, &config).unwrap_err();
    assert!(format!("{err:?}").contains("stopped answering"), "{err:?}");
    let acks = ledger.acks();
    assert!(
        acks.len() == 1 && acks[0].attested,
        "attested first: {acks:?}"
    );

    let record = verifier
        .wait_for_state(&ek_hash, "not_attested", WAIT)
        .unwrap();
    let recent = record["recent"].as_array().unwrap();
    assert_eq!(recent[0]["attested"], false, "{record}");
    let reason = recent[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("TPM failure") && reason.contains("TpmUnreachable"),
        "{reason}"
    );
    assert_eq!(recent[1]["attested"], true, "{record}");
    assert_eq!(recent[1]["nonce"], acks[0].nonce.as_str(), "{record}");
    let (status, body) = verifier
        .call("GET", &format!("/v1/hosts/{ek_hash}/token"), None)
        .unwrap();
    assert_ne!(status, 200, "a token for a host whose TPM failed: {body}");
}

/// How many results vouchd shows for a host (at most 10).
fn recorded(verifier: &Verifier, ek_hash: &str) -> Vec<Value> {
    verifier.host(ek_hash).unwrap()["recent"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// SIGTERM at several points of an attestation: vouchd exits 0 within its grace period, and
/// the attestation it had begun either completed and was recorded whole (attested result,
/// host attested), or left no trace; a verdict the agent received is always recorded.
#[test]
fn vouchd_stopped_with_sigterm_mid_attestation_exits_0_and_records_whole_attestations() {
    let image = vec![9u8; 1024];
    let host = boot(&image);
    let mut verifier = Verifier::start_process(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    let session = Session::open(&verifier, &host, AkKind::EccP256);
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    session.close().unwrap();

    let mut completed = 0;
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 200] {
        let before = recorded(&verifier, &ek_hash);
        let session = Session::open(&verifier, &host, AkKind::EccP256);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let status = verifier.terminate(Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(0), "after {delay_ms} ms: {status}");
        // vouchd closed the link on its way out.
        let outcome = session.join();
        verifier.restart().unwrap();
        let after = recorded(&verifier, &ek_hash);
        let new = after.len() - before.len();
        assert!(
            new <= 1,
            "after {delay_ms} ms: {new} results for one attestation"
        );
        if new == 1 {
            completed += 1;
            let result = after.first().unwrap();
            assert_eq!(result["attested"], true, "a whole result: {result}");
            let host_now = verifier.host(&ek_hash).unwrap();
            assert_eq!(host_now["state"], "attested", "{host_now}");
            assert_eq!(host_now["attested_at"], result["at"], "{host_now}");
        }
        if let Ok(outcome) = &outcome
            && outcome.verdicts > 0
        {
            assert_eq!(
                new, 1,
                "the verdict the agent got after {delay_ms} ms is recorded"
            );
        }
    }
    // With 200 ms the attestation had long begun: at least that one completed.
    assert!(completed >= 1, "no attestation completed across a stop");
}

/// A host for the `vouch-hosted-agent` program: a swtpm reset since its EK certificate was
/// read (the program starts and measures it itself), `image` on disk, and a verifier
/// (re-attesting every `interval` seconds) that accepts what the program measures.
struct HostedSetup {
    swtpm: Swtpm,
    verifier: Verifier,
    ek_hash: String,
    image_file: std::path::PathBuf,
}

fn hosted_setup(image: &[u8], interval: u64) -> HostedSetup {
    hosted_setup_with(image, interval, |_| {})
}

fn hosted_setup_with(
    image: &[u8],
    interval: u64,
    tune: impl FnOnce(&mut vouchd::config::Config),
) -> HostedSetup {
    let mut swtpm = Swtpm::start().unwrap();
    let ek_pem = hil_tests::verifier::ek_certificate_pem(&swtpm).unwrap();
    swtpm.restart(true).unwrap();
    let image_file = swtpm.dir().join("image.bin");
    std::fs::write(&image_file, image).unwrap();
    let verifier = Verifier::start_with(interval, tune).unwrap();
    verifier
        .trust_cluster("lab", &ca_pems(&swtpm), &[0, 1])
        .unwrap();
    let version = hil_tests::verifier::hosted_agent_software_version(image).unwrap();
    verifier.accept("lab", &version).unwrap();
    let ek_hash = verifier.add_host("lab", "linux-1", &ek_pem).unwrap();
    HostedSetup {
        swtpm,
        verifier,
        ek_hash,
        image_file,
    }
}

/// `vouch-hosted-agent` pointed at `setup`'s TPM and verifier, measuring its image.
fn hosted_agent(setup: &HostedSetup) -> std::process::Command {
    let agent =
        hil_tests::verifier::workspace_binary("vouch-hosted-agent", "VOUCH_HOSTED_AGENT_BIN")
            .unwrap();
    let mut command = std::process::Command::new(agent);
    command
        .arg("--verifier")
        .arg(setup.verifier.agent_addr().to_string())
        .arg("--tpm")
        .arg(format!(
            "unix:{}",
            setup.swtpm.dir().join("data.sock").display()
        ))
        .arg("--measure-image")
        .arg(&setup.image_file);
    command
}

#[test]
fn the_hosted_agent_program_attests_a_host() {
    let setup = hosted_setup(&[9u8; 3000], 600);
    let output = hosted_agent(&setup).arg("--once").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("attested (linux-host-1)"), "{stderr}");
    let host = setup.verifier.host(&setup.ek_hash).unwrap();
    assert_eq!(host["state"], "attested", "{host}");
}

/// Attack (slow agents): slow senders hold every agent slot, dribbling a byte a second to keep
/// it; the honest hosted agent on a real TPM still attests, since an unproven session's whole
/// handshake has a deadline (the default, 15 s).
#[test]
fn slow_agents_hold_every_slot_while_an_honest_agent_attests() {
    let setup = hosted_setup_with(&[11u8; 2000], 600, |c| {
        c.agent_max_sessions = 16;
        c.agent_max_unproven_per_address = 64;
        c.agent_handshake_timeout_secs =
            vouchd::config::Config::default().agent_handshake_timeout_secs;
    });
    let addr = setup.verifier.agent_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..20)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                use std::io::Write as _;
                use std::sync::atomic::Ordering;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) && tcp.write_all(&[0x01]).is_ok() {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let output = hosted_agent(&setup).arg("--once").output().unwrap();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "with every agent slot held by slow senders, the honest agent attested after {took:?}"
    );
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("attested (linux-host-1)"), "{stderr}");
    assert!(took <= Duration::from_secs(20), "{took:?}");
    let host = setup.verifier.host(&setup.ek_hash).unwrap();
    assert_eq!(host["state"], "attested", "{host}");
}

#[test]
fn the_hosted_agent_measures_again_after_a_tpm_reset() {
    // The shortest interval vouchd allows: the open session is quoted again after 10 s.
    let setup = hosted_setup(&[10u8; 2000], 10);
    let (verifier, ek_hash) = (&setup.verifier, &setup.ek_hash);
    let log = setup.swtpm.dir().join("agent.log");
    let mut child = hosted_agent(&setup)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let first = verifier.wait_for_state(ek_hash, "attested", WAIT).unwrap();

    // The TPM loses power: its PCRs are cleared and it needs TPM2_Startup again. At the next
    // re-attestation the agent finds out, measures the image again and attests again.
    setup.swtpm.power_cycle().unwrap();
    let start = std::time::Instant::now();
    let again = loop {
        let host = verifier.host(ek_hash).unwrap();
        if host["state"] == "attested" && host["attested_at"] != first["attested_at"] {
            break Some(host);
        }
        if start.elapsed() > Duration::from_secs(40) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        again.is_some(),
        "not attested again after the TPM reset:\n{text}"
    );
    assert!(
        text.contains("the TPM was reset; measuring again"),
        "{text}"
    );
}

/// Desired vs applied: `GET /v1/clusters/{name}` (what `vouch cluster show` prints) tells, per
/// host, whether its last attestation used the cluster's current configuration. A software
/// version accepted after the attestation makes it outdated; the next attestation is current.
#[test]
fn cluster_show_tells_whether_the_last_attestation_used_the_current_configuration() {
    let (host, verifier, ek_hash) = attested_host(17);
    let applied = || -> Value {
        let (status, body) = verifier.call("GET", "/v1/clusters/lab", None).unwrap();
        assert_eq!(status, 200, "{body}");
        body["applied"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["ek_hash"] == ek_hash.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("the host is not listed: {body}"))
    };
    let first = applied();
    assert_eq!(first["configuration"], "current", "{first}");

    verifier
        .accept("lab", &software_version("fw-next", &[0x99; 1024]))
        .unwrap();
    let outdated = applied();
    assert_eq!(outdated["configuration"], "outdated", "{outdated}");
    assert_eq!(outdated["config_generation"], first["config_generation"]);

    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    assert_eq!(outcome.last_verdict, Some(true));
    // The verdict reaches the agent after the result is stored.
    let current = applied();
    assert_eq!(current["configuration"], "current", "{current}");
    assert!(
        current["config_generation"].as_i64() > first["config_generation"].as_i64(),
        "{current}"
    );
}
