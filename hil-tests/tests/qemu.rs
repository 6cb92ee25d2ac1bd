//! The real firmware: the mps2-an386 board image under QEMU 10, its TPM stack talking to swtpm
//! through QEMU's `tpm-tis-i2c` model (bit-banged SBCon I2C). Needs the image from
//! `cargo xtask firmware`; without it the test fails and says so.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hil_tests::qemu::{self, MPS2_AN386};
use hil_tests::swtpm::{Swtpm, SwtpmOptions};
use sha2::Digest;

#[test]
fn firmware_on_qemu_reads_the_tpm_over_i2c() {
    let swtpm = Swtpm::start_with(&SwtpmOptions {
        data_socket: false,
        ..SwtpmOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let outcome =
        qemu::run(&MPS2_AN386, &swtpm, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("QEMU run in {:?}:\n{}", outcome.elapsed, outcome.log);
    assert!(
        outcome.passed(),
        "firmware failed (exit {:?}):\n{}",
        outcome.exit_code,
        outcome.log
    );
    let log = &outcome.log;
    assert!(log.contains("DID_VID 00011014"), "{log}");
    assert!(
        log.contains("Startup(CLEAR) done"),
        "the firmware started the TPM: {log}"
    );
    assert!(
        log.contains("recreated EK matches the certificate (2048 bit RSA)"),
        "{log}"
    );
    assert!(log.contains("board: all steps passed"), "{log}");
    // The firmware extends PCR 16 with 0x5A bytes in every active bank; check the sha256
    // value it read back against our own computation.
    let expected = sha2::Sha256::new()
        .chain_update([0u8; 32])
        .chain_update([0x5Au8; 32])
        .finalize();
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        log.contains(&format!("PCR 16 (sha256) after extend {hex}")),
        "expected PCR 16 = {hex}:\n{log}"
    );

    // Measured boot: the PCR 0 and 1 values the board reads after measuring itself are the
    // ones `vouch image add` computes from the ELF without booting it.
    let elf = qemu::firmware_elf(&MPS2_AN386).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&elf).expect("the firmware image is readable");
    let layout = vouch::image::layout_elf(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let version_string = layout
        .agent_version
        .as_deref()
        .expect("VOUCH_AGENT_VERSION");
    let config = layout.config.as_deref().expect("VOUCH_BOARD_CONFIG");
    let parts: [&[u8]; 1] = [&layout.image];
    let boot = vouch_agent::measure::BootImage {
        version: version_string,
        image: &parts,
        base: layout.base,
        config,
    };
    let reference = vouch::image::software_version("qemu", &boot).unwrap_or_else(|e| panic!("{e}"));
    let sha256 = &reference.pcrs[&vouch_attest::HashAlg::Sha256];
    for pcr in [0u32, 1] {
        let expected: String = sha256[&pcr].0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            log.contains(&format!("boot: PCR {pcr} (sha256) {expected}")),
            "vouch image add says PCR {pcr} = {expected}:\n{log}"
        );
    }
}

#[test]
fn a_panic_on_the_board_reports_its_address_and_fails_the_run() {
    let swtpm = Swtpm::start_with(&SwtpmOptions {
        data_socket: false,
        ..SwtpmOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let options = qemu::RunOptions {
        mode: Some("fault".into()),
        agent_link: None,
        firmware: None,
    };
    let outcome = qemu::run_with(&MPS2_AN386, &swtpm, Duration::from_secs(60), &options)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = &outcome.log;
    assert!(log.contains("board: panicking on purpose"), "{log}");
    // The panic aborts at once (an undefined instruction): the HardFault handler reports the
    // faulting address and exits with failure.
    assert!(log.contains("board: HardFault at pc 0x"), "{log}");
    assert!(!log.contains("board: all steps passed"), "{log}");
    assert_eq!(outcome.exit_code, Some(1), "{log}");
}
