//! The attestation flow over swtpm's socket, through vouch-tpm's command layer: proves the
//! flow and the harness before any bus is involved, with both AK kinds.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use hil_tests::swtpm::Swtpm;
use vouch_tpm::{ALG_SHA1, ALG_SHA256, AkKind, Auth, EkKind, PcrBank, Startup, StartupType, Tpm};

fn swtpm() -> Swtpm {
    Swtpm::start().unwrap_or_else(|e| panic!("{e}"))
}

fn flow_over_the_socket(ak: AkKind) {
    let swtpm = swtpm();
    let mut tpm: Tpm<_> = Tpm::new(swtpm.connect().unwrap_or_else(|e| panic!("{e}")));
    let report = common::attestation_flow(&swtpm, &mut tpm, ak);
    assert!(
        report.ek_cert_len > 500,
        "EK certificate of {} bytes",
        report.ek_cert_len
    );
    assert_eq!(report.banks, vec![ALG_SHA1, ALG_SHA256]);
}

#[test]
fn attestation_flow_over_the_socket_with_an_rsa_ak() {
    flow_over_the_socket(AkKind::Rsa2048);
}

#[test]
fn attestation_flow_over_the_socket_with_an_ecc_ak() {
    flow_over_the_socket(AkKind::EccP256);
}

/// libtpms (like the TCG reference code) answers the first authorization of a DA-protected
/// object after Startup with TPM_RC_RETRY, and any TPM may answer RETRY, YIELDED or TESTING;
/// TSS stacks resend the command. vouch-tpm's AK template is DA-protected (no `noDA`), so the
/// first use of the AK after Startup meets exactly this. The command layer must resend by
/// itself: this fails if it hands TPM_RC_RETRY (0x922) to the caller.
#[test]
fn vouch_tpm_resends_commands_the_tpm_asks_to_retry() {
    let swtpm = swtpm();
    let mut tpm: Tpm<_> = Tpm::new(swtpm.connect().expect("connect"));
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("startup"),
        Startup::Started
    );
    let ek = tpm.create_ek(EkKind::Rsa2048).expect("EK");
    let ak_obj = tpm.create_ak(ek.handle, AkKind::EccP256).expect("AK");
    let ak = tpm
        .load(ek.handle, Auth::EkPolicy, &ak_obj)
        .expect("load AK");
    let mut nonce = [0u8; 16];
    tpm.get_random(&mut nonce).expect("nonce");
    let sel = [PcrBank {
        alg: ALG_SHA256,
        pcrs: 1 << common::PCR,
    }];
    let first = tpm.quote(ak.handle, &nonce, &sel);
    assert!(
        first.is_ok(),
        "first use of the DA-protected AK after Startup: {first:?} (0x922 = TPM_RC_RETRY, which \
         the command layer should resend)"
    );
}
