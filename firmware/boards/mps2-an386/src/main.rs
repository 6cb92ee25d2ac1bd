//! Vouch on QEMU's mps2-an386: a Cortex-M4 talking to a TPM 2.0 on I2C.
//!
//! The TPM is QEMU's `tpm-tis-i2c` at address 0x2E on the SBCon controller at 0x4002_A000,
//! backed by swtpm. Output goes through semihosting; the exit code says whether every step
//! passed (0) or not (1), also after a panic or a HardFault.
#![no_std]
#![no_main]

mod sbcon;
mod timer;

use core::fmt::Write as _;
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hio};
use sbcon::SbconI2c;
use timer::Timer;
use vouch_tpm::{
    ALG_SHA256, EkKind, I2cTransport, PcrBank, Startup, StartupType, Tis, Tpm,
};

const TPM_I2C_BASE: usize = 0x4002_A000;
const TPM_ADDRESS: u8 = 0x2E;

fn log(args: core::fmt::Arguments<'_>) {
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_fmt(args);
        let _ = out.write_str("\n");
    }
}

macro_rules! log {
    ($($arg:tt)*) => { log(format_args!($($arg)*)) };
}

#[entry]
fn main() -> ! {
    let outcome = run();
    match outcome {
        Ok(()) => {
            log!("board: all steps passed");
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(message) => {
            log!("board: FAILED: {message}");
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// The TPM stack over the board's I2C bus, with room for 2 KiB commands and responses.
type BoardTpm = Tpm<Tis<I2cTransport<SbconI2c, Timer>, Timer>, 2048>;

fn run() -> Result<(), &'static str> {
    let clock = Timer::start();
    // SAFETY: 0x4002_A000 is the SBCon controller the TPM sits on; nothing else uses it.
    let bus = unsafe { SbconI2c::new(TPM_I2C_BASE) };
    let i2c = I2cTransport::new(bus, clock.clone()).with_address(TPM_ADDRESS);
    let mut tis = Tis::new(i2c, clock);
    let did_vid = tis.init().map_err(|_| "no TPM answers on the I2C bus at 0x2E")?;
    log!("tpm: I2C TIS up, DID_VID {did_vid:08x}");
    let mut tpm: BoardTpm = Tpm::new(tis);

    match tpm.startup(StartupType::Clear) {
        Ok(Startup::Started) => log!("tpm: Startup(CLEAR) done"),
        Ok(_) => log!("tpm: already started"),
        Err(_) => return Err("TPM2_Startup failed"),
    }
    tpm.self_test(false).map_err(|_| "TPM2_SelfTest failed")?;

    let manufacturer = tpm
        .tpm_property(PT_MANUFACTURER)
        .map_err(|_| "GetCapability(TPM_PT_MANUFACTURER) failed")?
        .unwrap_or(0);
    let name = manufacturer.to_be_bytes();
    log!(
        "tpm: manufacturer {}",
        core::str::from_utf8(&name).unwrap_or("(not ASCII)")
    );

    let banks = tpm.pcr_banks().map_err(|_| "GetCapability(PCRS) failed")?;
    for bank in banks.active() {
        log!("tpm: PCR bank {} ({:#06x})", alg_name(bank.alg), bank.alg);
    }

    let mut random = [0u8; 16];
    tpm.get_random(&mut random).map_err(|_| "TPM2_GetRandom failed")?;
    log!("tpm: GetRandom {}", Hex(&random));

    let mut certificate = [0u8; 2048];
    let cert_len = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut certificate)
        .map_err(|_| "reading the RSA EK certificate (NV 0x01C00002) failed")?;
    let certificate = certificate.get(..cert_len).unwrap_or_default();
    log!("tpm: EK certificate, {cert_len} bytes of DER");

    let ek = tpm
        .create_ek(EkKind::Rsa2048)
        .map_err(|_| "CreatePrimary(EK template L-1) failed")?;
    let modulus = ek.public.rsa_modulus().unwrap_or_default();
    // The certificate's SubjectPublicKeyInfo carries the same modulus byte for byte.
    let matches = !modulus.is_empty() && certificate.windows(modulus.len()).any(|w| w == modulus);
    let _ = tpm.flush_context(ek.handle);
    if !matches {
        return Err("the recreated EK's public key is not the certificate's");
    }
    log!("tpm: recreated EK matches the certificate ({} bit RSA)", modulus.len() * 8);

    let measurement = [0x5Au8; 64];
    tpm.pcr_extend_active_banks(DEMO_PCR, |alg, out| {
        let len = digest_len(alg)?;
        out.get_mut(..len)?.copy_from_slice(measurement.get(..len)?);
        Some(len)
    })
    .map_err(|_| "TPM2_PCR_Extend failed")?;
    let selection = [PcrBank {
        alg: ALG_SHA256,
        pcrs: 1 << DEMO_PCR,
    }];
    let values = tpm.pcr_read(&selection).map_err(|_| "TPM2_PCR_Read failed")?;
    let value = values.digests().first().ok_or("PCR_Read returned no digest")?;
    log!("tpm: PCR {DEMO_PCR} (sha256) after extend {}", Hex(value));
    Ok(())
}

/// The PCR the probe extends: 16 is the debug PCR, resettable and unused by boot.
const DEMO_PCR: u32 = 16;
const PT_MANUFACTURER: u32 = 0x105;

fn digest_len(alg: u16) -> Option<usize> {
    match alg {
        0x0004 => Some(20),
        0x000B => Some(32),
        0x000C => Some(48),
        0x000D => Some(64),
        _ => None,
    }
}

fn alg_name(alg: u16) -> &'static str {
    match alg {
        0x0004 => "sha1",
        0x000B => "sha256",
        0x000C => "sha384",
        0x000D => "sha512",
        _ => "other",
    }
}

/// Lowercase hex for the log.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    log!("board: HardFault at pc {:#010x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log!("board: panic: {info}");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
