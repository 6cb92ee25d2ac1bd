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
}
