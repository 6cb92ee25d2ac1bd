//! vouch-tpm's command layer, end to end, on all three paths: swtpm's socket, the I2C model
//! through `I2cTransport` + `Tis`, the SPI model through `SpiTransport` + `Tis`.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use hil_tests::clock::SimClock;
use hil_tests::i2c_model::{I2cConfig, I2cTpm};
use hil_tests::spi_model::{SpiConfig, SpiTpm};
use hil_tests::swtpm::Swtpm;
use hil_tests::tis::TisConfig;
use hil_tests::tpm::alg;
use vouch_tpm::{AkKind, I2cTransport, SpiTransport, Tis, Tpm};

fn swtpm() -> Swtpm {
    Swtpm::start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn vouch_tpm_commands_over_the_socket() {
    let swtpm = swtpm();
    let mut tpm: Tpm<_> = Tpm::new(swtpm.connect().expect("connect"));
    let report = common::vouch_flow(&swtpm, &mut tpm, AkKind::Rsa2048);
    assert_eq!(report.banks, vec![alg::SHA1, alg::SHA256]);
}

/// libtpms (like the TCG reference code) answers the first authorization of a DA-protected
/// object after Startup with TPM_RC_RETRY, and any TPM may answer RETRY, YIELDED or TESTING;
/// TSS stacks resend the command. vouch-tpm's AK template is DA-protected (no `noDA`), so the
/// first ActivateCredential after Startup meets exactly this. The command layer must resend
/// by itself: this fails if it hands TPM_RC_RETRY (0x922) to the caller.
#[test]
fn vouch_tpm_resends_commands_the_tpm_asks_to_retry() {
    let swtpm = swtpm();
    let mut tpm: Tpm<_> = Tpm::new(swtpm.connect().expect("connect"));
    tpm.startup(vouch_tpm::StartupType::Clear).expect("startup");
    let ek = tpm.create_ek(vouch_tpm::EkKind::Rsa2048).expect("EK");
    let ak_obj = tpm.create_ak(ek.handle, AkKind::EccP256).expect("AK");
    let ak = tpm
        .load(ek.handle, vouch_tpm::Auth::EkPolicy, &ak_obj)
        .expect("load AK");
    let mut nonce = [0u8; 16];
    tpm.get_random(&mut nonce).expect("nonce");
    let sel = [vouch_tpm::PcrBank {
        alg: alg::SHA256,
        pcrs: 1 << 16,
    }];
    let first = tpm.quote(ak.handle, &nonce, &sel);
    assert!(
        first.is_ok(),
        "first use of the DA-protected AK after Startup: {first:?} (0x922 = TPM_RC_RETRY, which \
         the command layer should resend)"
    );
}

#[test]
fn vouch_tpm_commands_over_i2c() {
    let swtpm = swtpm();
    let cfg = I2cConfig {
        nack_probability: 0.1,
        seed: 11,
        tis: TisConfig {
            max_burst: 32,
            ..TisConfig::default()
        },
        ..I2cConfig::default()
    };
    let model = I2cTpm::new(swtpm.connect().expect("connect"), cfg);
    let probe = model.clone();
    let clock = SimClock::new();
    let mut tis = Tis::new(I2cTransport::new(model, clock.clone()), clock.clone());
    tis.init().expect("init");
    let mut tpm: Tpm<_> = Tpm::new(tis);
    common::vouch_flow(&swtpm, &mut tpm, AkKind::EccP256);
    assert!(probe.errors().is_empty(), "{:?}", probe.errors());
    assert!(probe.stats().injected_nacks > 0);
}

#[test]
fn vouch_tpm_commands_over_spi() {
    let swtpm = swtpm();
    let cfg = SpiConfig {
        wait_probability: 0.2,
        max_wait_states: 8,
        seed: 12,
        ..SpiConfig::default()
    };
    let (bus, cs) = SpiTpm::new(swtpm.connect().expect("connect"), cfg);
    let probe = bus.clone();
    let clock = SimClock::new();
    let mut tis = Tis::new(SpiTransport::new(bus, cs), clock.clone());
    tis.init().expect("init");
    let mut tpm: Tpm<_> = Tpm::new(tis);
    common::vouch_flow(&swtpm, &mut tpm, AkKind::Rsa2048);
    assert!(probe.errors().is_empty(), "{:?}", probe.errors());
    assert!(probe.stats().wait_states > 0);
}
