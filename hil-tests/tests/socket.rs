//! The harness alone: swtpm manufactured per test, raw frames over its socket.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use hil_tests::swtpm::Swtpm;
use vouch_tpm::{CommandError, ResponseCode, Startup, StartupType, Tpm, Transport};

#[test]
fn startup_and_get_random_over_the_socket() {
    let swtpm = Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let mut socket = swtpm.connect().unwrap_or_else(|e| panic!("{e}"));

    // Raw frames, no client: TPM2_Startup(CLEAR), then TPM2_GetRandom(16).
    let mut rsp = [0u8; 64];
    let n = socket
        .transact(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0], &mut rsp)
        .expect("startup");
    assert_eq!(
        &rsp[..n],
        &[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0],
        "Startup must succeed"
    );
    let n = socket
        .transact(
            &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 16],
            &mut rsp,
        )
        .expect("get random");
    assert_eq!(n, 10 + 2 + 16);
    assert_eq!(
        &rsp[6..12],
        &[0, 0, 0, 0, 0, 16],
        "rc 0 and 16 random bytes"
    );

    // A second Startup is refused with TPM_RC_INITIALIZE: the TPM really was started by us,
    // not by swtpm.
    let n = socket
        .transact(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0], &mut rsp)
        .expect("second startup");
    assert_eq!(
        &rsp[..n],
        &[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x00],
        "a second Startup answers TPM_RC_INITIALIZE"
    );

    // vouch-tpm's command layer over the same socket.
    let mut tpm: Tpm<_> = Tpm::new(socket);
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("startup"),
        Startup::AlreadyStarted
    );
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    tpm.get_random(&mut a).expect("random");
    tpm.get_random(&mut b).expect("random");
    assert_ne!(a, b, "two GetRandom calls returned the same bytes");
}

#[test]
fn power_cycle_requires_a_new_startup() {
    let swtpm = Swtpm::start().expect("swtpm");
    let mut tpm: Tpm<_> = Tpm::new(swtpm.connect().expect("connect"));
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("startup"),
        Startup::Started
    );
    swtpm.power_cycle().expect("power cycle");
    let mut random = [0u8; 8];
    let err = tpm
        .get_random(&mut random)
        .expect_err("GetRandom before Startup must fail");
    assert!(
        matches!(err, CommandError::Tpm(ResponseCode::INITIALIZE)),
        "{err:?}"
    );
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("startup"),
        Startup::Started
    );
    tpm.get_random(&mut random).expect("random");
}

#[test]
fn manufacturer_ca_and_state_stay_in_the_temp_dir() {
    let swtpm = Swtpm::start().expect("swtpm");
    let dir = swtpm.dir().to_path_buf();
    let ca = swtpm.ca().clone();
    assert!(ca.root_cert.starts_with(&dir) && ca.intermediate_cert.starts_with(&dir));
    let root = std::fs::read_to_string(&ca.root_cert).expect("root");
    let inter = std::fs::read_to_string(&ca.intermediate_cert).expect("intermediate");
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    assert!(inter.starts_with("-----BEGIN CERTIFICATE-----"), "{inter}");
    assert_ne!(root, inter);
    drop(swtpm);
    assert!(!dir.exists(), "temp dir removed on drop");
}
