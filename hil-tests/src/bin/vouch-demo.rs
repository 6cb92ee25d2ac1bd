//! `cargo xtask demo`: manufactures a swtpm and shows what vouch-tpm reads from it over each
//! path — swtpm's socket, the I2C bus model and the SPI bus model — with timings, then boots the
//! firmware in QEMU. `--board-only` (`cargo xtask qemu`) runs only the QEMU board.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hil_tests::clock::StdClock;
use hil_tests::i2c_model::{I2cConfig, I2cTpm};
use hil_tests::qemu::{self, MPS2_AN386};
use hil_tests::spi_model::{SpiConfig, SpiTpm};
use hil_tests::swtpm::{Swtpm, SwtpmOptions};
use hil_tests::tools::hex;
use vouch_tpm::{EkKind, I2cTransport, SpiTransport, StartupType, Tis, Tpm, Transport};

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
    board()
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
