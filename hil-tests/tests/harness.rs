//! The harness's own promises: a missing tool fails the test with the fix to apply, and the
//! `--ecc` option manufactures an ECC EK certificate too.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::Command;

use hil_tests::swtpm::{Swtpm, SwtpmOptions, require_tool};
use vouch_tpm::{EkKind, RH_OWNER, Startup, StartupType, Tpm};
use x509_parser::prelude::*;

const CHILD: &str = "VOUCH_HIL_TESTS_CHILD";

#[test]
fn a_missing_tool_fails_and_says_to_run_xtask_setup() {
    if std::env::var_os(CHILD).is_some() {
        // Child: PATH has no swtpm; this must panic with the hint.
        let err = Swtpm::start().expect_err("swtpm must not be found");
        panic!("{err}");
    }
    let err = require_tool("vouch-no-such-tool").expect_err("not installed");
    assert!(err.to_string().contains("cargo xtask setup"), "{err}");

    // Re-run this test in a child process whose PATH holds no swtpm: it must fail, not skip.
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "a_missing_tool_fails_and_says_to_run_xtask_setup",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("PATH", "/nonexistent")
        .output()
        .expect("run child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child passed without swtpm:\n{text}");
    assert!(
        text.contains("`swtpm` is not installed") && text.contains("cargo xtask setup"),
        "{text}"
    );
}

#[test]
fn ecc_option_adds_an_ecc_ek_certificate() {
    let swtpm = Swtpm::start_with(&SwtpmOptions {
        ecc: true,
        ..SwtpmOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut tpm: Tpm<_> = Tpm::new(swtpm.connect().expect("connect"));
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("startup"),
        Startup::Started
    );
    let mut der = vec![0u8; 4096];
    let n = tpm
        .nv_read(0x01C0_0016, RH_OWNER, &mut der)
        .expect("ECC EK cert");
    der.truncate(n);
    let (_, cert) = X509Certificate::from_der(&der).expect("X.509");
    match cert.public_key().parsed().expect("key") {
        x509_parser::public_key::PublicKey::EC(point) => {
            assert_eq!(point.key_size(), 384, "NIST P-384 by default")
        }
        other => panic!("not an EC key: {other:?}"),
    }
    let mut rsa = vec![0u8; 4096];
    let n = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut rsa)
        .expect("RSA EK cert");
    rsa.truncate(n);
    assert_ne!(der, rsa);
}
