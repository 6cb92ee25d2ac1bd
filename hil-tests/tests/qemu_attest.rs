//! The headline flow: the firmware on QEMU's Cortex-M4 board measures itself, reaches the TPM
//! (swtpm behind QEMU's `tpm-tis-i2c`) over bit-banged I2C, and attests over its UART to a
//! real vouchd — enrollment through swtpm's manufacturer CA, AK activation, a quote with a
//! fresh nonce, the software version computed from the ELF by `vouch image add`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

use std::path::Path;
use std::time::Duration;

use hil_tests::qemu::{self, MPS2_AN386, Outcome, RunOptions};
use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::{Verifier, ca_pems, ek_certificate_pem, image_software_version};

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A manufactured TPM ready for QEMU, and its EK certificate (read once over the socket).
fn tpm_for_qemu() -> (Swtpm, String) {
    let mut swtpm = Swtpm::start().unwrap();
    let pem = ek_certificate_pem(&swtpm).unwrap();
    swtpm.restart(false).unwrap();
    (swtpm, pem)
}

fn attest_once(swtpm: &Swtpm, verifier: &Verifier, firmware: Option<&Path>) -> Outcome {
    let options = RunOptions {
        mode: Some("attest-once".into()),
        agent_link: Some(verifier.agent_addr()),
        firmware: firmware.map(Path::to_path_buf),
    };
    let outcome = qemu::run_with(&MPS2_AN386, swtpm, RUN_TIMEOUT, &options).unwrap();
    eprintln!("QEMU run in {:?}:\n{}", outcome.elapsed, outcome.log);
    outcome
}

#[test]
fn the_board_attests_to_vouchd_and_reuses_its_ak_and_a_changed_image_is_refused() {
    let elf = qemu::firmware_elf(&MPS2_AN386).unwrap();
    let (swtpm, ek_pem) = tpm_for_qemu();
    let verifier = Verifier::start(600).unwrap();
    verifier
        .trust_cluster("boards", &ca_pems(&swtpm).unwrap(), &[0, 1])
        .unwrap();
    verifier
        .accept(
            "boards",
            &image_software_version("qemu-fw-1", &elf).unwrap(),
        )
        .unwrap();
    let ek_hash = verifier.add_host("boards", "board-1", &ek_pem).unwrap();

    // First boot: enrollment, AK activation, a quote, attested.
    let first = attest_once(&swtpm, &verifier, None);
    assert!(first.passed(), "first boot failed:\n{}", first.log);
    assert!(
        first
            .log
            .contains("activated true, 1 quote(s), verdict attested"),
        "{}",
        first.log
    );
    assert!(
        first.log.contains("attested as software version qemu-fw-1"),
        "{}",
        first.log
    );
    let host = verifier.host(&ek_hash).unwrap();
    assert_eq!(host["state"], "attested", "{host}");
    assert_eq!(host["software_version"], "qemu-fw-1", "{host}");

    // Second boot: the AK persisted in the TPM and bound in vouchd is reused.
    let second = attest_once(&swtpm, &verifier, None);
    assert!(second.passed(), "second boot failed:\n{}", second.log);
    assert!(
        second
            .log
            .contains("activated false, 1 quote(s), verdict attested"),
        "{}",
        second.log
    );

    // An image with one byte changed (in the agent's version string, inside the measured
    // flash image) boots, but is not an accepted software version.
    let bytes = std::fs::read(&elf).unwrap();
    let marker = b"vouch-agent 0.1 (qemu)";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the version string is in the image");
    let mut changed = bytes.clone();
    changed[at + 6] ^= 0x01;
    let changed_elf = swtpm.dir().join("changed.elf");
    std::fs::write(&changed_elf, &changed).unwrap();
    let third = attest_once(&swtpm, &verifier, Some(&changed_elf));
    assert!(
        !third.passed(),
        "a changed image must not attest:\n{}",
        third.log
    );
    assert!(third.log.contains("verdict NOT attested"), "{}", third.log);
    let host = verifier.host(&ek_hash).unwrap();
    assert_eq!(host["state"], "not_attested", "{host}");
    let reason = host["recent"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("qemu-fw-1"),
        "the refusal names the version it compared: {host}"
    );
}

#[test]
fn a_tpm_lost_mid_session_ends_cleanly_and_the_next_boot_attests() {
    let elf = qemu::firmware_elf(&MPS2_AN386).unwrap();
    let (mut swtpm, ek_pem) = tpm_for_qemu();
    // The shortest interval vouchd allows: the open session is quoted again after 10 s.
    let verifier = Verifier::start(10).unwrap();
    verifier
        .trust_cluster("boards", &ca_pems(&swtpm).unwrap(), &[0, 1])
        .unwrap();
    verifier
        .accept(
            "boards",
            &image_software_version("qemu-fw-1", &elf).unwrap(),
        )
        .unwrap();
    let ek_hash = verifier.add_host("boards", "board-1", &ek_pem).unwrap();

    let pid = swtpm.pid().to_string();
    let outcome = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            let options = RunOptions {
                mode: Some("attest".into()),
                agent_link: Some(verifier.agent_addr()),
                firmware: None,
            };
            qemu::run_with(&MPS2_AN386, &swtpm, RUN_TIMEOUT, &options).unwrap()
        });
        verifier
            .wait_for_state(&ek_hash, "attested", Duration::from_secs(30))
            .unwrap();
        // Right after the verdict the board sets up the key channel, with TPM2_ECDH_ZGen; give
        // it that moment (quotes are 10 s apart), so the TPM is lost between two quotes.
        std::thread::sleep(Duration::from_secs(2));
        // The TPM loses power between two quotes.
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        run.join().unwrap()
    });
    eprintln!("QEMU run in {:?}:\n{}", outcome.elapsed, outcome.log);
    assert!(
        !outcome.passed(),
        "the board must report the lost TPM:\n{}",
        outcome.log
    );
    assert!(
        outcome.log.contains("session failed: the TPM failed"),
        "{}",
        outcome.log
    );
    // The board reported its TPM lost after attesting: vouchd fails closed at once, the host
    // is not attested (a result naming the TPM failure), without waiting for its expiry.
    verifier
        .wait_for_state(&ek_hash, "not_attested", Duration::from_secs(30))
        .unwrap();

    swtpm.restart(false).unwrap();
    let next = attest_once(&swtpm, &verifier, None);
    assert!(next.passed(), "the next boot attests:\n{}", next.log);
}
