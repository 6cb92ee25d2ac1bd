//! TPM faults against swtpm and a real vouchd: unclean resets in a row, power cycles with and
//! without TPM2_Shutdown, the dictionary-attack counter and lockout, leaked handles, and a
//! TPM restarted without a reset of the measurements. Findings 2, 10 and 11 of the "ready for
//! real TPMs" review; each test's doc says what failed before.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use embedded_io_adapters::std::FromStd;
use hil_tests::socket::SwtpmSocket;
use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::{Verifier, pem};
use vouch_agent::measure::BootImage;
use vouch_agent::session::{self, AgentConfig, DEFAULT_AK_HANDLE, NoKeys};
use vouch_agent::{BootError, eventlog::EventLog};
use vouch_tpm::{
    AK_ATTRIBUTES_V1, ALG_SHA256, AkKind, Auth, CommandError, EkKind, PcrBank, ResponseCode,
    StartupType, Tpm, Transport,
};

#[derive(Clone)]
struct Shared(Arc<Mutex<SwtpmSocket>>);

impl Transport for Shared {
    type Error = <SwtpmSocket as Transport>::Error;
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.lock().unwrap().transact(command, response)
    }
}

const AGENT_VERSION: &[u8] = b"vouch-hosted-agent faults test";
const CONFIG: &[u8] = b"host=faults";
const IMAGE: &[u8] = &[0x3Cu8; 2048];
/// TPM_PT_LOCKOUT_COUNTER.
const PT_LOCKOUT_COUNTER: u32 = 0x20E;

fn image() -> BootImage<'static> {
    static PARTS: [&[u8]; 1] = [IMAGE];
    BootImage {
        version: AGENT_VERSION,
        image: &PARTS,
        base: 0,
        config: CONFIG,
    }
}

/// Startup(CLEAR) and measured boot, as a board does after a reset; the event log.
fn boot(tpm: &Shared) -> Vec<u8> {
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    t.startup(StartupType::Clear).unwrap();
    let log: EventLog<4096> = vouch_agent::measured_boot(&mut t, &image()).unwrap();
    log.as_bytes().to_vec()
}

fn lockout_counter(tpm: &Shared) -> u32 {
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    t.tpm_property(PT_LOCKOUT_COUNTER).unwrap().unwrap()
}

fn attested(verifier: &Verifier, tpm: &Shared, event_log: &[u8]) -> bool {
    let stream = TcpStream::connect(verifier.agent_addr()).unwrap();
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    let config = AgentConfig {
        agent: "hil-tests faults",
        ek: EkKind::Rsa2048,
        ak: AkKind::EccP256,
        ak_handle: DEFAULT_AK_HANDLE,
        stop_after_verdicts: Some(1),
    };
    let outcome = session::run_with_keys(
        &mut t,
        event_log,
        &mut FromStd::new(stream),
        &config,
        &mut NoKeys,
    )
    .unwrap();
    outcome.last_verdict == Some(true)
}

fn verifier_for(swtpm: &Swtpm, tpm: &Shared) -> Verifier {
    let verifier = Verifier::start(600).unwrap();
    verifier
        .trust_cluster(
            "lab",
            &hil_tests::verifier::ca_pems(swtpm).unwrap(),
            &[0, 1],
        )
        .unwrap();
    let version =
        serde_json::to_value(vouch::image::software_version("fw-faults", &image()).unwrap())
            .unwrap();
    verifier.accept("lab", &version).unwrap();
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    t.startup(StartupType::Clear).unwrap();
    let mut der = vec![0u8; 4096];
    let n = t.read_ek_certificate(EkKind::Rsa2048, &mut der).unwrap();
    verifier
        .add_host("lab", "lab-host", &pem(&der[..n]))
        .unwrap();
    verifier
}

/// Findings 2, 10, 11: five unclean TPM resets in a row (power cycles without Shutdown, each
/// after a quote) and the agent still attests, with the dictionary-attack counter at 0 (the
/// AK has noDA; before, the third such reset locked the TPM out: TPM_RC_LOCKOUT). Before the
/// first session three transient objects are leaked: the session flushes them (before:
/// TPM_RC_OBJECT_MEMORY). Measuring again without a reset is refused (before: the
/// measurements were extended on top and every quote failed).
#[test]
fn five_unclean_resets_in_a_row_and_the_agent_still_attests() {
    let swtpm = Swtpm::start().unwrap();
    let tpm = Shared(Arc::new(Mutex::new(swtpm.connect().unwrap())));
    let verifier = verifier_for(&swtpm, &tpm);
    swtpm.power_cycle().unwrap();
    let mut log = boot(&tpm);
    {
        let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
        for i in 0..3u8 {
            t.create_ecdh_key(&[i; 32]).unwrap();
        }
        let mut handles = [0u32; 8];
        assert_eq!(t.handles(0x8000_0000, &mut handles).unwrap().0, 3);
        let mut t2: Tpm<Shared> = Tpm::new(tpm.clone());
        assert!(
            matches!(
                vouch_agent::measured_boot::<_, 4096, 4096>(&mut t2, &image()),
                Err(BootError::AlreadyMeasured)
            ),
            "measuring without a reset is refused"
        );
    }
    for round in 0..6 {
        assert!(attested(&verifier, &tpm, &log), "round {round} attested");
        if round < 5 {
            swtpm.power_cycle().unwrap();
            log = boot(&tpm);
        }
    }
    assert_eq!(lockout_counter(&tpm), 0, "no failed tries counted");
}

/// An AK without noDA, as agents created before: the template of `AkKind::EccP256` with the
/// old attributes.
fn da_protected_ak(t: &mut Tpm<Shared>, ek: u32) -> u32 {
    let mut template = vec![0x00, 0x23, 0x00, 0x0B];
    template.extend_from_slice(&AK_ATTRIBUTES_V1.to_be_bytes());
    template.extend_from_slice(&[
        0x00, 0x00, // authPolicy
        0x00, 0x10, // symmetric NULL
        0x00, 0x18, 0x00, 0x0B, // ECDSA SHA-256
        0x00, 0x03, 0x00, 0x10, // P-256, kdf NULL
        0x00, 0x00, 0x00, 0x00, // unique
    ]);
    let created = t.create(ek, Auth::EkPolicy, &template).unwrap();
    t.load(ek, Auth::EkPolicy, &created).unwrap().handle
}

/// Finding 2, the mechanism: a DA-protected key used before a power cycle without
/// TPM2_Shutdown counts a failed try; with Shutdown(CLEAR) first, it does not; a noDA key
/// never does. Until lockout: the agent's log names TPM_RC_LOCKOUT and what to do.
#[test]
fn power_cycles_with_and_without_shutdown_and_the_lockout_message() {
    let swtpm = Swtpm::start().unwrap();
    let tpm = Shared(Arc::new(Mutex::new(swtpm.connect().unwrap())));
    let mut t: Tpm<Shared> = Tpm::new(tpm.clone());
    let cycle = |t: &mut Tpm<Shared>, shutdown: bool| {
        if shutdown {
            t.shutdown(StartupType::Clear).unwrap();
        }
        swtpm.power_cycle().unwrap();
        t.startup(StartupType::Clear).unwrap();
    };
    t.startup(StartupType::Clear).unwrap();
    let use_key = |t: &mut Tpm<Shared>, noda: bool| {
        let ek = t.create_ek(EkKind::Rsa2048).unwrap();
        let ak = if noda {
            let created = t.create_ak(ek.handle, AkKind::EccP256).unwrap();
            t.load(ek.handle, Auth::EkPolicy, &created).unwrap().handle
        } else {
            da_protected_ak(t, ek.handle)
        };
        let r = t.quote(
            ak,
            b"nonce",
            &[PcrBank {
                alg: ALG_SHA256,
                pcrs: 1,
            }],
        );
        let _ = t.flush_context(ak);
        let _ = t.flush_context(ek.handle);
        r.map(|_| ())
    };
    use_key(&mut t, false).unwrap();
    cycle(&mut t, true);
    assert_eq!(lockout_counter(&tpm), 0, "orderly: nothing counted");
    use_key(&mut t, true).unwrap();
    cycle(&mut t, false);
    assert_eq!(lockout_counter(&tpm), 0, "noDA key: nothing counted");
    use_key(&mut t, false).unwrap();
    cycle(&mut t, false);
    assert_eq!(lockout_counter(&tpm), 1, "unclean after a DA key: one try");
    // Until lockout.
    let mut locked = None;
    for _ in 0..10 {
        match use_key(&mut t, false) {
            Ok(()) => cycle(&mut t, false),
            Err(e) => {
                locked = Some(e);
                break;
            }
        }
    }
    let e = locked.expect("the TPM locked out");
    assert!(matches!(e, CommandError::Tpm(ResponseCode(0x921))), "{e:?}");
    let mut text = vouch_agent::board::CrLf(String::new());
    vouch_agent::logln!(&mut text, vouch_agent::log::CommandFailure(&e));
    let text = text.0;
    assert!(
        text.contains("TPM_RC_LOCKOUT") && text.contains("tpm2_dictionarylockout"),
        "{text}"
    );
    // The noDA AK is still usable in lockout.
    use_key(&mut t, true).unwrap();
}

/// swtpm killed in the middle of a Quote and of a CreatePrimary: the command fails with a
/// transport error, the TPM comes back (restarted on its state, as after a power loss) and
/// the agent attests after the board's boot.
#[test]
fn swtpm_killed_mid_quote_and_mid_create_primary() {
    let mut swtpm = Swtpm::start().unwrap();
    let tpm = Shared(Arc::new(Mutex::new(swtpm.connect().unwrap())));
    let verifier = verifier_for(&swtpm, &tpm);
    for cc in [0x158u32, 0x131] {
        swtpm.power_cycle().unwrap();
        let log = boot(&tpm);
        let pid = swtpm.pid();
        let killer = Killer {
            inner: tpm.clone(),
            cc,
            pid,
            killed: false,
        };
        let stream = TcpStream::connect(verifier.agent_addr()).unwrap();
        let mut t: Tpm<Killer> = Tpm::new(killer);
        let config = AgentConfig {
            agent: "hil-tests faults",
            ek: EkKind::Rsa2048,
            ak: AkKind::EccP256,
            ak_handle: DEFAULT_AK_HANDLE,
            stop_after_verdicts: Some(1),
        };
        let r = session::run_with_keys(
            &mut t,
            &log,
            &mut FromStd::new(stream),
            &config,
            &mut NoKeys,
        );
        assert!(r.is_err(), "the session failed with the TPM");
        assert!(t.release().killed, "killed during {cc:#x}");
        swtpm.restart(true).unwrap();
        *tpm.0.lock().unwrap() = swtpm.connect().unwrap();
        let log = boot(&tpm);
        assert!(
            attested(&verifier, &tpm, &log),
            "attested after the kill in {cc:#x}"
        );
    }
}

/// Kills swtpm (SIGKILL) when command `cc` is sent.
struct Killer {
    inner: Shared,
    cc: u32,
    pid: u32,
    killed: bool,
}

impl Transport for Killer {
    type Error = <SwtpmSocket as Transport>::Error;
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        if !self.killed && command.get(6..10) == Some(&self.cc.to_be_bytes()[..]) {
            self.killed = true;
            let status = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .status()
                .unwrap();
            assert!(status.success());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.inner.transact(command, response)
    }
}
