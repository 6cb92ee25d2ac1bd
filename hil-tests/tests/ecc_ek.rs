//! ECC endorsement keys: which EK the agents choose (`vouch_agent::ek`) on TPMs with the RSA
//! EK certificate, the ECC P-256 one, both or neither, and the hosted agent enrolling through
//! the ECC P-256 EK (template L-2, certificate at NV 0x01C0000A signed by swtpm's local CA) —
//! credential activation with an ECDH-derived seed — and attesting to a real vouchd.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

use hil_tests::socket::SwtpmSocket;
use hil_tests::swtpm::{Swtpm, SwtpmOptions};
use hil_tests::verifier::{Verifier, ca_pems, ek_certificate_pem_of};
use vouch_agent::ek::{self, EkChoice};
use vouch_tpm::{EkKind, StartupType, Tpm};

/// A TPM with the RSA EK certificate (`rsa`) and the ECC P-256 one (`ecc`) as asked.
fn tpm_with(rsa: bool, ecc: bool) -> Swtpm {
    Swtpm::start_with(&SwtpmOptions {
        rsa_ek_certificate: rsa,
        ecc_p256_ek_certificate: ecc,
        ..SwtpmOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What each configuration chooses on `swtpm`: (auto, rsa, ecc).
fn choices(swtpm: &Swtpm) -> (EkKind, EkKind, EkKind) {
    let mut tpm: Tpm<SwtpmSocket> = Tpm::new(swtpm.connect().unwrap());
    tpm.startup(StartupType::Clear).unwrap();
    (
        ek::choose(&mut tpm, EkChoice::Auto).unwrap(),
        ek::choose(&mut tpm, EkChoice::Rsa).unwrap(),
        ek::choose(&mut tpm, EkChoice::Ecc).unwrap(),
    )
}

#[test]
fn auto_takes_the_rsa_ek_on_a_tpm_with_only_its_certificate() {
    let swtpm = tpm_with(true, false);
    let (auto, rsa, ecc) = choices(&swtpm);
    assert_eq!(auto, EkKind::Rsa2048);
    assert_eq!((rsa, ecc), (EkKind::Rsa2048, EkKind::EccP256));
}

#[test]
fn auto_takes_the_ecc_ek_on_a_tpm_with_only_its_certificate() {
    let swtpm = tpm_with(false, true);
    let (auto, rsa, ecc) = choices(&swtpm);
    assert_eq!(auto, EkKind::EccP256);
    // Configured, the agent insists even on the EK without a certificate.
    assert_eq!((rsa, ecc), (EkKind::Rsa2048, EkKind::EccP256));
}

#[test]
fn auto_prefers_the_rsa_ek_on_a_tpm_with_both_certificates_and_rsa_without_any() {
    let both = tpm_with(true, true);
    assert_eq!(choices(&both).0, EkKind::Rsa2048);
    let neither = tpm_with(false, false);
    assert_eq!(choices(&neither).0, EkKind::Rsa2048);
}

/// The ECC P-256 EK the TPM recreates from template L-2 is the key its certificate names, and
/// the certificate chains to swtpm's local CA like the RSA one.
#[test]
fn the_p256_ek_certificate_names_the_l2_ek_and_chains_to_the_local_ca() {
    let swtpm = tpm_with(true, true);
    let ecc_pem = ek_certificate_pem_of(&swtpm, EkKind::EccP256).unwrap();
    let der = pem_der(&ecc_pem);
    let mut tpm: Tpm<SwtpmSocket> = Tpm::new(swtpm.connect().unwrap());
    tpm.startup(StartupType::Clear).unwrap();
    let ek = tpm.create_ek(EkKind::EccP256).unwrap();
    let (x, y) = ek.public.ecc_point().unwrap();
    let mut point = vec![0x04];
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    tpm.flush_context(ek.handle).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        point.as_slice(),
        "the certificate is for the L-2 EK"
    );
    let ca = swtpm.ca();
    let ecc_file = swtpm.dir().join("ek-p256.pem");
    std::fs::write(&ecc_file, &ecc_pem).unwrap();
    let verify = hil_tests::tools::verify_chain(
        swtpm.dir(),
        &ca.root_cert,
        &[&ecc_file, &ca.intermediate_cert],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        verify.success,
        "the P-256 EK certificate chains to the local CA:\n{}",
        verify.output
    );
}

fn pem_der(pem: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    block.contents
}

/// A vouchd whose cluster trusts `swtpm`'s local CA, accepts `version` and lists one host by
/// `ek_pem`; and that host's EK hash.
fn verifier_listing(
    swtpm: &Swtpm,
    version: &serde_json::Value,
    ek_pem: &str,
) -> (Verifier, String) {
    let verifier = Verifier::start(600).unwrap();
    verifier
        .trust_cluster("lab", &ca_pems(swtpm).unwrap(), &[0, 1])
        .unwrap();
    verifier.accept("lab", version).unwrap();
    let ek_hash = verifier.add_host("lab", "ecc-host", ek_pem).unwrap();
    (verifier, ek_hash)
}

/// `vouch-hosted-agent` with `args` against a vouchd whose cluster trusts swtpm's CA and lists
/// the host by its ECC EK certificate; returns the agent's stderr and the host's record.
fn hosted_agent_enrolls(swtpm: &mut Swtpm, args: &[&str]) -> (String, serde_json::Value) {
    let ek_pem = ek_certificate_pem_of(swtpm, EkKind::EccP256).unwrap();
    // The agent starts the TPM and measures the image itself.
    swtpm.restart(true).unwrap();
    let image = [0xECu8; 2500];
    let image_file = swtpm.dir().join("image.bin");
    std::fs::write(&image_file, image).unwrap();
    let version = hil_tests::verifier::hosted_agent_software_version(&image).unwrap();
    let (verifier, ek_hash) = verifier_listing(swtpm, &version, &ek_pem);
    let agent =
        hil_tests::verifier::workspace_binary("vouch-hosted-agent", "VOUCH_HOSTED_AGENT_BIN")
            .unwrap();
    let output = std::process::Command::new(agent)
        .arg("--verifier")
        .arg(verifier.agent_addr().to_string())
        .arg("--tpm")
        .arg(format!("unix:{}", swtpm.dir().join("data.sock").display()))
        .arg("--measure-image")
        .arg(&image_file)
        .arg("--once")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (stderr, verifier.host(&ek_hash).unwrap())
}

#[test]
fn the_hosted_agent_enrolls_through_the_ecc_ek_it_finds_and_is_attested() {
    // A TPM whose only profile EK certificate is the ECC P-256 one: `--ek auto` (the default)
    // takes it.
    let mut swtpm = tpm_with(false, true);
    let (stderr, host) = hosted_agent_enrolls(&mut swtpm, &[]);
    assert!(
        stderr.contains("ECC EK (template L-2, NIST P-256, certificate at NV 0x01c0000a)"),
        "{stderr}"
    );
    assert!(stderr.contains("AK activated: true"), "{stderr}");
    assert!(stderr.contains("attested (linux-host-1)"), "{stderr}");
    assert_eq!(host["state"], "attested", "{host}");
}

#[test]
fn the_hosted_agent_told_to_use_the_ecc_ek_uses_it_on_a_tpm_with_both() {
    let mut swtpm = tpm_with(true, true);
    let (stderr, host) = hosted_agent_enrolls(&mut swtpm, &["--ek", "ecc", "--ak", "rsa"]);
    assert!(stderr.contains("ECC EK (template L-2"), "{stderr}");
    assert!(stderr.contains("attested (linux-host-1)"), "{stderr}");
    assert_eq!(host["state"], "attested", "{host}");
}

/// The QEMU board (its `EK` is `Auto`) on a TPM whose only profile EK certificate is the ECC
/// P-256 one: it enrolls through that EK over its UART and is attested.
#[test]
fn the_qemu_board_enrolls_through_the_ecc_ek_and_is_attested() {
    use hil_tests::qemu::{self, MPS2_AN386, RunOptions};
    let elf = qemu::firmware_elf(&MPS2_AN386).unwrap();
    let mut swtpm = tpm_with(false, true);
    let ek_pem = ek_certificate_pem_of(&swtpm, EkKind::EccP256).unwrap();
    swtpm.restart(false).unwrap();
    let version = hil_tests::verifier::image_software_version("qemu-fw-1", &elf).unwrap();
    let (verifier, ek_hash) = verifier_listing(&swtpm, &version, &ek_pem);
    let options = RunOptions {
        mode: Some("attest-once".into()),
        agent_link: Some(verifier.agent_addr()),
        firmware: None,
    };
    let outcome = qemu::run_with(
        &MPS2_AN386,
        &swtpm,
        std::time::Duration::from_secs(90),
        &options,
    )
    .unwrap();
    let log = &outcome.log;
    assert!(outcome.passed(), "the board failed:\n{log}");
    assert!(
        log.contains("agent: ECC EK (certificate at NV 0x01c0000a)"),
        "{log}"
    );
    assert!(
        log.contains("activated true, 1 quote(s), verdict attested"),
        "{log}"
    );
    let host = verifier.host(&ek_hash).unwrap();
    assert_eq!(host["state"], "attested", "{host}");
}
