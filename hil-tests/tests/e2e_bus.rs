//! The attestation flow through vouch-tpm's command layer, TIS core and I2C and SPI
//! transports, against the bus models backed by swtpm — with bus faults (address NACKs, wait
//! states, small burst counts, slow execution, corrupted FIFO bytes, glitching registers)
//! switched on and off, and both AK kinds.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Instant;

use hil_tests::clock::SimClock;
use hil_tests::i2c_model::{I2cConfig, I2cTpm};
use hil_tests::spi_model::{SpiConfig, SpiTpm};
use hil_tests::swtpm::Swtpm;
use hil_tests::tis::TisConfig;
use vouch_tpm::{ALG_SHA1, ALG_SHA256, AkKind, I2cTransport, SpiTransport, Tis, Tpm};

use common::Counted;

fn swtpm() -> Swtpm {
    Swtpm::start().unwrap_or_else(|e| panic!("{e}"))
}

fn run_i2c(cfg: I2cConfig, ak: AkKind) -> hil_tests::i2c_model::I2cStats {
    let swtpm = swtpm();
    let model = I2cTpm::new(swtpm.connect().expect("connect"), cfg);
    let probe = model.clone();
    let clock = SimClock::new();
    let mut tis = Tis::new(I2cTransport::new(model, clock.clone()), clock.clone());
    assert_eq!(
        tis.init().expect("TIS init over I2C"),
        0x0001_1014,
        "DID_VID"
    );
    assert!(tis.regs_mut().checksum_enabled(), "checksums negotiated");
    let mut tpm: Tpm<_> = Tpm::new(Counted::new(tis));
    let start = Instant::now();
    let report = common::attestation_flow(&swtpm, &mut tpm, ak);
    let elapsed = start.elapsed();
    assert_eq!(report.banks, vec![ALG_SHA1, ALG_SHA256]);

    assert!(
        probe.errors().is_empty(),
        "driver broke the protocol: {:?}",
        probe.errors()
    );
    let stats = probe.with_tis(|t| t.stats().clone());
    assert_eq!(
        stats.commands,
        tpm.transport_mut().sent(),
        "every command crossed the I2C model"
    );
    assert_eq!(
        stats.command_codes.first(),
        Some(&0x144),
        "Startup first, sent by the stack"
    );
    let bus = probe.stats();
    eprintln!(
        "I2C: {} commands in {elapsed:?} ({} ms simulated bus time), {} transactions, {} injected NACKs, {} exec polls, \
         {} FIFO bytes out / {} in, DATA_CSUM reads {:?}, corrupted {}/{} (re-sent {}, \
         responseRetry {}), {} glitches",
        stats.commands,
        clock.elapsed_us() / 1000,
        bus.transactions,
        bus.injected_nacks,
        stats.exec_polls,
        stats.fifo_written,
        stats.fifo_read,
        bus.register_reads.iter().find(|(r, _)| *r == 0x44),
        bus.corrupted_writes,
        bus.corrupted_reads,
        stats.aborted_receptions,
        stats.response_retries,
        bus.glitches
    );
    assert_eq!(stats.fifo_read_past_end, 0, "driver read past the response");
    assert_eq!(
        stats.aborted_receptions, bus.corrupted_writes,
        "each corrupted command was abandoned and re-sent"
    );
    assert_eq!(
        stats.response_retries, bus.corrupted_reads,
        "each corrupted response was read again (responseRetry)"
    );
    assert!(
        bus.register_reads
            .iter()
            .any(|&(r, n)| r == 0x44 && n >= 2 * stats.commands),
        "DATA_CSUM checked for every command and response: {:?}",
        bus.register_reads
    );
    bus
}

#[test]
fn attestation_flow_over_i2c() {
    let bus = run_i2c(I2cConfig::default(), AkKind::Rsa2048);
    assert_eq!(bus.injected_nacks, 0);
}

#[test]
fn attestation_flow_over_i2c_with_nacks_small_bursts_and_slow_execution() {
    let cfg = I2cConfig {
        nack_probability: 0.2,
        max_consecutive_nacks: 4,
        seed: 0x5EED,
        tis: TisConfig {
            max_burst: 29,
            max_exec_polls: 8,
            seed: 9,
            ..TisConfig::default()
        },
        ..I2cConfig::default()
    };
    let bus = run_i2c(cfg, AkKind::EccP256);
    assert!(bus.injected_nacks > 100, "NACK retries exercised: {bus:?}");
}

fn run_spi(cfg: SpiConfig, ak: AkKind) -> hil_tests::spi_model::SpiStats {
    let swtpm = swtpm();
    let (bus, cs) = SpiTpm::new(swtpm.connect().expect("connect"), cfg);
    let probe = bus.clone();
    let clock = SimClock::new();
    let mut tis = Tis::new(SpiTransport::new(bus, cs), clock.clone());
    assert_eq!(
        tis.init().expect("TIS init over SPI"),
        0x0001_1014,
        "DID_VID"
    );
    let mut tpm: Tpm<_> = Tpm::new(Counted::new(tis));
    let start = Instant::now();
    let report = common::attestation_flow(&swtpm, &mut tpm, ak);
    let elapsed = start.elapsed();
    assert_eq!(report.banks, vec![ALG_SHA1, ALG_SHA256]);

    assert!(
        probe.errors().is_empty(),
        "driver broke the protocol: {:?}",
        probe.errors()
    );
    let stats = probe.with_tis(|t| t.stats().clone());
    assert_eq!(
        stats.commands,
        tpm.transport_mut().sent(),
        "every command crossed the SPI model"
    );
    assert_eq!(
        stats.command_codes.first(),
        Some(&0x144),
        "Startup first, sent by the stack"
    );
    assert_eq!(stats.fifo_read_past_end, 0, "driver read past the response");
    let spi = probe.stats();
    assert!(spi.max_transfer <= 64, "{spi:?}");
    eprintln!(
        "SPI: {} commands in {elapsed:?} ({} ms simulated), {} frames ({} with {} wait states), \
         {} exec polls",
        stats.commands,
        clock.elapsed_us() / 1000,
        spi.frames,
        spi.frames_with_waits,
        spi.wait_states,
        stats.exec_polls
    );
    spi
}

#[test]
fn attestation_flow_over_spi() {
    let spi = run_spi(SpiConfig::default(), AkKind::EccP256);
    assert_eq!(spi.wait_states, 0);
}

#[test]
fn attestation_flow_over_spi_with_wait_states_small_bursts_and_slow_execution() {
    let spi = run_spi(
        SpiConfig {
            wait_probability: 0.3,
            max_wait_states: 20,
            seed: 0xC0FFEE,
            tis: TisConfig {
                max_burst: 13,
                max_exec_polls: 8,
                seed: 5,
                ..TisConfig::default()
            },
        },
        AkKind::Rsa2048,
    );
    assert!(
        spi.frames_with_waits > 100,
        "wait states exercised: {spi:?}"
    );
}

#[test]
fn attestation_flow_over_i2c_with_corrupted_fifo_bytes_and_glitching_reads() {
    let bus = run_i2c(
        I2cConfig {
            corrupt_probability: 0.01,
            glitch_probability: 0.05,
            nack_probability: 0.05,
            seed: 0xBAD,
            ..I2cConfig::default()
        },
        AkKind::EccP256,
    );
    assert!(bus.corrupted_writes > 0, "{bus:?}");
    assert!(bus.corrupted_reads > 0, "{bus:?}");
    assert!(bus.glitches > 10, "{bus:?}");
}
