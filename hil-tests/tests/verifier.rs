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

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use embedded_io_adapters::std::FromStd;
use hil_tests::socket::SwtpmSocket;
use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::{Verifier, pem};
use serde_json::Value;
use vouch_agent::measure::BootImage;
use vouch_agent::session::{self, AgentConfig, DEFAULT_AK_HANDLE, Outcome};
use vouch_proto::wire::RefusalKind;
use vouch_tpm::{AkKind, EkKind, StartupType, Tpm, Transport};

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
            let config = AgentConfig {
                agent: "hil-tests",
                ek,
                ak,
                ak_handle: DEFAULT_AK_HANDLE,
                stop_after_verdicts,
            };
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

#[test]
fn vouchd_killed_mid_attestation_loses_no_enrollment_and_no_result() {
    let image = vec![8u8; 1024];
    let host = boot(&image);
    let mut verifier = Verifier::start_process(600).unwrap();
    let ek_hash = enroll(&verifier, &host, &image);
    let session = Session::open(&verifier, &host, AkKind::EccP256);
    let before = verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    session.close().unwrap();

    // SIGKILL while the next attestation is in flight.
    let session = Session::open(&verifier, &host, AkKind::EccP256);
    std::thread::sleep(Duration::from_millis(20));
    verifier.kill().unwrap();
    // The kernel closes the killed verifier's socket: the agent's session ends either way.
    let _ = session.join();

    verifier.restart().unwrap();
    let after = verifier.host(&ek_hash).unwrap();
    assert_eq!(after["ak_bound"], true, "{after}");
    assert_eq!(after["attested_at"], before["attested_at"], "{after}");
    assert!(
        after["recent"].as_array().is_some_and(|r| !r.is_empty()),
        "the recorded result survived: {after}"
    );
    let outcome = Session::open_once(&verifier, &host, AkKind::EccP256)
        .join()
        .unwrap();
    verifier.wait_for_state(&ek_hash, "attested", WAIT).unwrap();
    assert!(
        !outcome.activated,
        "the AK bound before the crash is reused"
    );
    assert_eq!(outcome.last_verdict, Some(true));
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
