//! `cargo xtask demo`, step by step:
//! 1. manufactures a swtpm and shows what vouch-tpm reads from it over each path — swtpm's
//!    socket, the I2C bus model and the SPI bus model;
//! 2. starts vouchd, which trusts nothing yet;
//! 3. configures trust through its API: a trusted cluster, the TPM manufacturer's CA, the
//!    software version computed from the firmware image, the board as a host;
//! 4. boots the firmware in QEMU: it measures itself and attests over its UART;
//! 5. prints the board's state as vouchd sees it; then boots an image with one byte changed,
//!    which vouchd refuses;
//! 6. attests a Linux host with the hosted agent on a software TPM;
//! 7. the key provider service: a key server (a real PyKMIP), a primary key and a provider made
//!    with `vouch`, the cluster configured with it; the board boots, attests with its quote
//!    bound to its ephemeral key, and over the sealed channel gets a data key and makes an
//!    encrypt and decrypt round trip.
//!
//! `--board-only` (`cargo xtask qemu`) only boots the board in its probe mode.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hil_tests::clock::StdClock;
use hil_tests::i2c_model::{I2cConfig, I2cTpm};
use hil_tests::qemu::{self, MPS2_AN386, RunOptions};
use hil_tests::spi_model::{SpiConfig, SpiTpm};
use hil_tests::swtpm::{HarnessError, Swtpm, SwtpmOptions};
use hil_tests::tools::hex;
use hil_tests::verifier::{
    Verifier, ca_pems, ek_certificate_pem, image_software_version, workspace_binary,
};
use vouch_tpm::{EkKind, I2cTransport, SpiTransport, StartupType, Tis, Tpm, Transport};

/// vouch-kmip's PyKMIP harness (a real PyKMIP 0.11 from the venv `cargo xtask setup` installs;
/// the module allows its own test-code lints).
#[path = "../../../verifier/kmip/tests/common/mod.rs"]
mod pykmip;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouch-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    if std::env::args().any(|a| a == "--board-only") {
        return board();
    }
    if std::env::args().any(|a| a == "--measure-stack") {
        return measure_stack();
    }
    step(1, "the TPM stack: what it reads from a TPM over each bus");
    buses()?;
    attestation()
}

fn step(n: u32, title: &str) {
    println!("\n== {n}. {title} ==");
}

fn buses() -> Result<(), String> {
    let started = Instant::now();
    let swtpm = Swtpm::start().map_err(|e| e.to_string())?;
    println!(
        "swtpm manufactured in {:?} (state and CA in {})",
        started.elapsed(),
        swtpm.dir().display()
    );
    println!("manufacturer CA root: {}", swtpm.ca().root_cert.display());

    let socket = swtpm.connect().map_err(|e| e.to_string())?;
    show("socket", Tpm::new(socket))?;

    swtpm.power_cycle().map_err(|e| e.to_string())?;
    let model = I2cTpm::new(
        swtpm.connect().map_err(|e| e.to_string())?,
        I2cConfig {
            nack_probability: 0.1,
            ..I2cConfig::default()
        },
    );
    let probe = model.clone();
    let mut tis = Tis::new(I2cTransport::new(model, StdClock::new()), StdClock::new());
    let did_vid = tis.init().map_err(|e| format!("I2C init: {e:?}"))?;
    println!("I2C: DID_VID {did_vid:#010x}");
    show("I2C model", Tpm::new(tis))?;
    let s = probe.stats();
    println!(
        "  {} I2C transactions, {} address NACKs injected and retried",
        s.transactions, s.injected_nacks
    );
    // swtpm serves one command connection at a time: close this one first.
    drop(probe);

    swtpm.power_cycle().map_err(|e| e.to_string())?;
    let (bus, cs) = SpiTpm::new(
        swtpm.connect().map_err(|e| e.to_string())?,
        SpiConfig {
            wait_probability: 0.3,
            ..SpiConfig::default()
        },
    );
    let probe = bus.clone();
    let mut tis = Tis::new(SpiTransport::new(bus, cs), StdClock::new());
    let did_vid = tis.init().map_err(|e| format!("SPI init: {e:?}"))?;
    println!("SPI: DID_VID {did_vid:#010x}");
    show("SPI model", Tpm::new(tis))?;
    let s = probe.stats();
    println!(
        "  {} SPI frames, {} wait states in {} frames",
        s.frames, s.wait_states, s.frames_with_waits
    );
    Ok(())
}

/// Steps 2 to 5: vouchd, trust, the board attesting, the state.
fn attestation() -> Result<(), String> {
    let e = |e: HarnessError| e.to_string();
    let elf = qemu::firmware_elf(&MPS2_AN386).map_err(e)?;
    let mut swtpm = Swtpm::start().map_err(e)?;
    let ek_pem = ek_certificate_pem(&swtpm).map_err(e)?;
    swtpm.restart(false).map_err(e)?;

    step(2, "the verifier: vouchd, off by default");
    let verifier = Verifier::start_fresh(600).map_err(e)?;
    println!(
        "  vouchd is serving; agents connect to {}",
        verifier.agent_addr()
    );
    println!("  a fresh vouchd trusts no TPM and refuses every host");

    step(
        3,
        "trust, configured with the operator CLI `vouch` (TLS pinned to vouchd's certificate)",
    );
    let vouch = Vouch::new(&verifier)?;
    let work = swtpm.dir();
    let root = swtpm.ca().root_cert.display().to_string();
    let intermediate = swtpm.ca().intermediate_cert.display().to_string();
    let ek_file = work.join("board-1-ek.pem");
    std::fs::write(&ek_file, &ek_pem).map_err(|e| e.to_string())?;
    let key = work.join("mgmt-key.pem").display().to_string();
    let cert = work.join("mgmt-cert.pem").display().to_string();
    vouch.run(&["cluster", "add", "demo", "--pcrs", "0,1"])?;
    vouch.run(&["tpm-ca", "add", "--cluster", "demo", &root])?;
    vouch.run(&["tpm-ca", "add", "--cluster", "demo", &intermediate])?;
    let elf_path = elf.display().to_string();
    vouch.run(&[
        "image",
        "add",
        &elf_path,
        "--version",
        "qemu-fw-1",
        "--cluster",
        "demo",
    ])?;
    vouch.run(&[
        "management-server",
        "keygen",
        "mgmt-demo",
        "--key",
        &key,
        "--cert",
        &cert,
    ])?;
    vouch.run(&["management-server", "add", "mgmt-demo", &cert])?;
    let ek_path = ek_file.display().to_string();
    vouch.run(&[
        "host",
        "add",
        "board-1",
        "--cluster",
        "demo",
        "--ek-certificate",
        &ek_path,
        "--signing-key",
        &key,
        "--server-id",
        "mgmt-demo",
    ])?;

    step(
        4,
        "the board boots in QEMU, measures itself and attests over its UART",
    );
    let run = |firmware: Option<&Path>| {
        qemu::run_with(
            &MPS2_AN386,
            &swtpm,
            Duration::from_secs(90),
            &RunOptions {
                mode: Some("attest-once".into()),
                agent_link: Some(verifier.agent_addr()),
                firmware: firmware.map(Path::to_path_buf),
            },
        )
        .map_err(e)
    };
    let outcome = run(None)?;
    for line in outcome.log.lines() {
        println!("  | {line}");
    }
    if !outcome.passed() {
        return Err(format!(
            "the board did not attest (exit {:?})",
            outcome.exit_code
        ));
    }

    step(5, "the board's state in vouchd");
    vouch.run(&["status"])?;

    println!("\n  now an image with one byte changed boots on the same board:");
    let bytes = std::fs::read(&elf).map_err(|e| e.to_string())?;
    let marker = b"vouch-agent 0.1 (qemu)";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .ok_or("the agent's version string is not in the image")?;
    let mut changed = bytes;
    if let Some(byte) = changed.get_mut(at + 6) {
        *byte ^= 1;
    }
    let changed_elf = swtpm.dir().join("changed.elf");
    std::fs::write(&changed_elf, &changed).map_err(|e| e.to_string())?;
    let outcome = run(Some(&changed_elf))?;
    for line in outcome.log.lines().filter(|l| l.starts_with("agent:")) {
        println!("  | {line}");
    }
    vouch.run(&["status", "board-1"])?;

    step(
        6,
        "a Linux host: the hosted agent on a software TPM, in the same cluster",
    );
    let mut host_tpm = Swtpm::start().map_err(e)?;
    let host_ek = host_tpm.dir().join("linux-1-ek.pem");
    std::fs::write(&host_ek, ek_certificate_pem(&host_tpm).map_err(e)?)
        .map_err(|e| e.to_string())?;
    host_tpm.restart(true).map_err(e)?;
    let host_image = host_tpm.dir().join("host-image.bin");
    std::fs::write(
        &host_image,
        b"a host's boot image, measured by the hosted agent",
    )
    .map_err(|e| e.to_string())?;
    let host_image_path = host_image.display().to_string();
    // Another kind of hardware: its TPM manufacturer's CA joins the cluster.
    for ca in [&host_tpm.ca().root_cert, &host_tpm.ca().intermediate_cert] {
        vouch.run(&[
            "tpm-ca",
            "add",
            "--cluster",
            "demo",
            &ca.display().to_string(),
        ])?;
    }
    vouch.run(&[
        "image",
        "add",
        &host_image_path,
        "--version",
        "linux-host-1",
        "--agent-version",
        "vouch-hosted-agent",
        "--config",
        "",
        "--cluster",
        "demo",
    ])?;
    let host_ek_path = host_ek.display().to_string();
    vouch.run(&[
        "host",
        "add",
        "linux-1",
        "--cluster",
        "demo",
        "--ek-certificate",
        &host_ek_path,
        "--signing-key",
        &key,
        "--server-id",
        "mgmt-demo",
    ])?;
    let agent = workspace_binary("vouch-hosted-agent", "VOUCH_HOSTED_AGENT_BIN").map_err(e)?;
    let socket = format!("unix:{}", host_tpm.dir().join("data.sock").display());
    let link = verifier.agent_addr().to_string();
    println!(
        "  $ vouch-hosted-agent --verifier {link} --tpm {socket} --measure-image {host_image_path} --once"
    );
    let output = std::process::Command::new(agent)
        .args([
            "--verifier",
            &link,
            "--tpm",
            &socket,
            "--measure-image",
            &host_image_path,
            "--once",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("    {line}");
    }
    if !output.status.success() {
        return Err("the hosted agent did not attest".into());
    }
    vouch.run(&["status"])?;

    step(
        7,
        "the key provider service: a KMIP key server, a provider, and the board's data key",
    );
    let kms = pykmip::PyKmip::start_checked().map_err(|e| e.to_string())?;
    let kms_dir = swtpm.dir();
    let write = |name: &str, text: &str| -> Result<String, String> {
        let path = kms_dir.join(name);
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Ok(path.display().to_string())
    };
    let client_cert = write("kms-client.pem", &kms.pki.client_cert)?;
    let client_key = write("kms-client-key.pem", &kms.pki.client_key)?;
    let kms_ca = write("kms-ca.pem", &kms.pki.ca)?;
    let endpoint = format!("127.0.0.1:{}", kms.port);
    println!("  a PyKMIP key server listens on {endpoint}");
    vouch.run(&[
        "kms",
        "add",
        "kms-1",
        "--endpoint",
        &endpoint,
        "--client-cert",
        &client_cert,
        "--client-key",
        &client_key,
        "--kms-ca",
        &kms_ca,
    ])?;
    let created = vouch.output(&[
        "provider",
        "create-key",
        "--kms",
        "kms-1",
        "--name",
        "demo-primary",
        "--json",
    ])?;
    let key_id = serde_json::from_str::<serde_json::Value>(&created)
        .ok()
        .and_then(|v| v.get("key_id")?.as_str().map(str::to_owned))
        .ok_or("no key id from `vouch provider create-key`")?;
    vouch.run(&[
        "provider",
        "add",
        "provider-1",
        "--kms",
        "kms-1",
        "--key-id",
        &key_id,
        "--wrapping",
        "local",
    ])?;
    vouch.run(&["cluster", "set-provider", "demo", "provider-1"])?;
    let outcome = qemu::run_with(
        &MPS2_AN386,
        &swtpm,
        Duration::from_secs(90),
        &RunOptions {
            mode: Some("attest-keys".into()),
            agent_link: Some(verifier.agent_addr()),
            firmware: None,
        },
    )
    .map_err(e)?;
    for line in outcome
        .log
        .lines()
        .filter(|l| l.starts_with("agent:") || l.starts_with("keys:"))
    {
        println!("  | {line}");
    }
    if !outcome.passed() || !outcome.log.contains("round trip OK") {
        return Err(format!(
            "the board's key round trip failed (exit {:?})",
            outcome.exit_code
        ));
    }
    console(&verifier);
    println!("\ndemo: done");
    Ok(())
}

/// The last step: where the web console is and the token that signs in to it. With a terminal,
/// vouchd keeps serving until Enter is pressed; without one the demo ends here.
fn console(verifier: &Verifier) {
    use std::io::IsTerminal as _;
    println!("\n== the web console ==");
    println!("  {}/ui/", verifier.api_url());
    println!(
        "  (vouchd's self-signed certificate, SHA-256 {})",
        verifier.fingerprint()
    );
    println!("  sign in with the token: {}", verifier.admin_token());
    if std::io::stdin().is_terminal() {
        println!("  vouchd serves until you press Enter");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// `cargo xtask sizes`: the board's worst-case stack, measured over a full attestation (the
/// deepest path: enrollment, activation, a quote). Prints `stack <bytes>`.
fn measure_stack() -> Result<(), String> {
    let e = |e: HarnessError| e.to_string();
    let elf = qemu::firmware_elf(&MPS2_AN386).map_err(e)?;
    let mut swtpm = Swtpm::start().map_err(e)?;
    let ek_pem = ek_certificate_pem(&swtpm).map_err(e)?;
    swtpm.restart(false).map_err(e)?;
    let verifier = Verifier::start(600).map_err(e)?;
    verifier
        .trust_cluster("sizes", &ca_pems(&swtpm).map_err(e)?, &[0, 1])
        .map_err(e)?;
    verifier
        .accept("sizes", &image_software_version("sizes", &elf).map_err(e)?)
        .map_err(e)?;
    verifier.add_host("sizes", "board", &ek_pem).map_err(e)?;
    let outcome = qemu::run_with(
        &MPS2_AN386,
        &swtpm,
        Duration::from_secs(90),
        &RunOptions {
            mode: Some("attest-once".into()),
            agent_link: Some(verifier.agent_addr()),
            firmware: None,
        },
    )
    .map_err(e)?;
    if !outcome.passed() {
        return Err(format!("the board did not attest:\n{}", outcome.log));
    }
    let stack = outcome
        .log
        .lines()
        .find_map(|l| l.strip_prefix("board: stack high-water "))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("the board did not report its stack high-water mark")?;
    println!("stack {stack}");
    Ok(())
}

/// Boots the real firmware in QEMU against its own swtpm and shows its log.
fn board() -> Result<(), String> {
    let swtpm = Swtpm::start_with(&SwtpmOptions {
        data_socket: false,
        ..SwtpmOptions::default()
    })
    .map_err(|e| e.to_string())?;
    println!("QEMU mps2-an386 (Cortex-M4), TPM on I2C through QEMU's tpm-tis-i2c:");
    let outcome =
        qemu::run(&MPS2_AN386, &swtpm, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    for line in outcome.log.lines() {
        println!("  {line}");
    }
    if outcome.passed() {
        println!("  (firmware exited 0 after {:?})", outcome.elapsed);
        Ok(())
    } else {
        Err(format!(
            "the firmware failed (exit {:?})",
            outcome.exit_code
        ))
    }
}

fn show<T: Transport>(path: &str, mut tpm: Tpm<T>) -> Result<(), String> {
    let t0 = Instant::now();
    let started = tpm
        .startup(StartupType::Clear)
        .map_err(|e| format!("{path}: Startup: {e:?}"))?;
    let mut random = [0u8; 8];
    tpm.get_random(&mut random)
        .map_err(|e| format!("{path}: GetRandom: {e:?}"))?;
    let mut cert = vec![0u8; 4096];
    let n = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut cert)
        .map_err(|e| format!("{path}: EK certificate: {e:?}"))?;
    let t_cert = t0.elapsed();
    let ek = tpm
        .create_ek(EkKind::Rsa2048)
        .map_err(|e| format!("{path}: EK: {e:?}"))?;
    let modulus = ek.public.rsa_modulus().unwrap_or_default();
    tpm.flush_context(ek.handle)
        .map_err(|e| format!("{path}: flush: {e:?}"))?;
    let banks: Vec<String> = tpm
        .pcr_banks()
        .map_err(|e| format!("{path}: PCR banks: {e:?}"))?
        .active()
        .map(|b| format!("{:#06x}", b.alg))
        .collect();
    println!("{path}:");
    println!("  Startup: {started:?}; random {}", hex(&random));
    println!(
        "  EK certificate: {n} bytes from NV 0x01C00002 (in {t_cert:?}), starts {}",
        hex(cert.get(..8).unwrap_or_default())
    );
    println!(
        "  EK (CreatePrimary, TCG template L-1): RSA-{} modulus {}…",
        modulus.len() * 8,
        hex(modulus.get(..8).unwrap_or_default())
    );
    println!("  active PCR banks: {}", banks.join(", "));
    println!("  all in {:?}", t0.elapsed());
    Ok(())
}

/// The operator CLI, run as an operator would, against the demo's vouchd.
struct Vouch {
    binary: std::path::PathBuf,
    server: String,
    token: String,
    fingerprint: String,
}

impl Vouch {
    fn new(verifier: &Verifier) -> Result<Self, String> {
        let binary = std::env::var_os("VOUCH_BIN")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|dir| dir.join("vouch")))
            })
            .filter(|path| path.is_file())
            .ok_or("the `vouch` binary is not built: run `cargo build -p vouch` (cargo xtask demo does)")?;
        Ok(Self {
            binary,
            server: verifier.api_url(),
            token: verifier.admin_token().to_string(),
            fingerprint: verifier.fingerprint(),
        })
    }

    /// Runs `vouch args`, showing the command; returns its standard output.
    fn output(&self, args: &[&str]) -> Result<String, String> {
        println!("  $ vouch {}", args.join(" "));
        let output = std::process::Command::new(&self.binary)
            .args(args)
            .env("VOUCH_SERVER", &self.server)
            .env("VOUCH_TOKEN", &self.token)
            .env("VOUCH_FINGERPRINT", &self.fingerprint)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        for line in stdout.lines() {
            println!("    {line}");
        }
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`vouch {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Runs `vouch args`, showing the command and its output; fails when it fails.
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let shown: Vec<&str> = args
            .iter()
            .map(|a| if a.is_empty() { "''" } else { a })
            .collect();
        println!("  $ vouch {}", shown.join(" "));
        let output = std::process::Command::new(&self.binary)
            .args(args)
            .env("VOUCH_SERVER", &self.server)
            .env("VOUCH_TOKEN", &self.token)
            .env("VOUCH_FINGERPRINT", &self.fingerprint)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            println!("    {line}");
        }
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("    {line}");
        }
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`vouch {}` failed ({})",
                args.join(" "),
                output.status
            ))
        }
    }
}
