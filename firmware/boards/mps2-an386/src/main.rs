//! Vouch on QEMU's mps2-an386: a Cortex-M4 talking to a TPM 2.0 on I2C.
//!
//! The TPM is QEMU's `tpm-tis-i2c` at address 0x2E on the SBCon controller at 0x4002_A000,
//! backed by swtpm. Output goes through semihosting; the exit code says whether every step
//! passed (0) or not (1), also after a panic or a HardFault.
#![no_std]
#![no_main]

mod sbcon;
mod stack;
mod timer;
mod uart;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hio};
use sbcon::SbconI2c;
use timer::Timer;
use uart::Uart;
use vouch_agent::board::log_boot_pcrs;
use vouch_agent::ek::{self, EkChoice};
use vouch_agent::eventlog::EventLog;
use vouch_agent::log::{BootFailure, Hex, Hex32, Log, SessionFailure, Verdict};
use vouch_agent::logln;
use vouch_agent::measure::{BootImage, digest_size};
use vouch_agent::measured_boot_into;
use vouch_agent::session::{self, AgentConfig, DEFAULT_AK_HANDLE, KeyClient};
use vouch_proto::wire::{KeyRequest, KeyResponse, MAX_KEY_CIPHERTEXT};
use vouch_tpm::{
    ALG_SHA256, AkKind, EkKind, I2cTransport, PcrBank, Startup, StartupType, Tis, Tpm,
};

const TPM_I2C_BASE: usize = 0x4002_A000;
const TPM_ADDRESS: u8 = 0x2E;

/// The log: QEMU's standard output through semihosting.
struct Console;

impl Log for Console {
    fn text(&mut self, s: &str) {
        if let Ok(mut out) = hio::hstdout() {
            let _ = out.write_all(s.as_bytes());
        }
    }
}

#[entry]
fn main() -> ! {
    stack::paint();
    let mut out = Console;
    let outcome = run(&mut out);
    logln!(
        &mut out,
        "board: stack high-water ",
        stack::high_water(),
        " bytes"
    );
    match outcome {
        Ok(()) => {
            logln!(&mut out, "board: all steps passed");
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(message) => {
            logln!(&mut out, "board: FAILED: ", message);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// The TPM stack over the board's I2C bus, with room for 1 KiB commands and responses (the
/// largest here, CreatePrimary's response for the RSA EK, is about 700 bytes).
type BoardTpm = Tpm<Tis<I2cTransport<SbconI2c, Timer>, Timer>, 1024>;

/// The agent's version, measured into PCR 0 as EV_S_CRTM_VERSION. `vouch image add` reads it
/// from the image by this symbol name.
#[unsafe(no_mangle)]
#[used]
static VOUCH_AGENT_VERSION: [u8; 22] = *b"vouch-agent 0.1 (qemu)";

/// The board's configuration, measured into PCR 1 as EV_PLATFORM_CONFIG_FLAGS. `vouch image add`
/// reads it from the image by this symbol name.
#[unsafe(no_mangle)]
#[used]
static VOUCH_BOARD_CONFIG: [u8; 43] = *b"board=mps2-an386;tpm=i2c:0x2e;link=uart0;v1";

/// What QEMU asks of this run, on the semihosting command line (`-append`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Show what the TPM stack reads (no verifier).
    Probe,
    /// Attest to the verifier on UART0, answering re-attestations until the link goes quiet.
    Attest,
    /// Attest once and exit with the verdict.
    AttestOnce,
    /// Attest once, then over the channel bound to the attestation: generate a data key,
    /// encrypt and decrypt with the key provider service, and print the result.
    Keys,
    /// Panic on purpose after bring-up, to prove a failure still reports a code on the log and
    /// a non-zero exit.
    Fault,
}

fn mode() -> Mode {
    // QEMU passes the kernel's path and then `-append`'s text.
    let mut buf = [0u8; 1024];
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: SYS_GET_CMDLINE writes at most `block[1]` bytes into `buf` and updates the length.
    let failed = unsafe {
        cortex_m_semihosting::syscall(cortex_m_semihosting::nr::GET_CMDLINE, &mut block) != 0
    };
    let line = buf.get(..block[1].min(buf.len())).unwrap_or_default();
    let has = |word: &[u8]| line.windows(word.len()).any(|w| w == word);
    match () {
        _ if failed => Mode::Probe,
        _ if has(b"attest-keys") => Mode::Keys,
        _ if has(b"attest-once") => Mode::AttestOnce,
        _ if has(b"attest") => Mode::Attest,
        _ if has(b"fault") => Mode::Fault,
        _ => Mode::Probe,
    }
}

/// The first word of flash (the initial stack pointer). Flash starts at address 0, which no
/// Rust reference may point to, so it is read with a plain load instruction.
fn flash_first_word() -> [u8; 4] {
    let word: u32;
    // SAFETY: address 0 is the start of flash on this machine: readable, never written.
    unsafe {
        core::arch::asm!("ldr {0}, [{1}]", out(reg) word, in(reg) FLASH_ORIGIN, options(nostack, readonly));
    }
    word.to_le_bytes()
}

/// The rest of the flash image as it was loaded: from address 4 to the end of `.data`'s initial
/// values, so that with [`flash_first_word`] it is exactly what `vouch image add` lays out from
/// the ELF.
fn flash_image_after_first_word() -> &'static [u8] {
    unsafe extern "C" {
        static __sidata: u32;
        static __sdata: u32;
        static __edata: u32;
    }
    // cortex-m-rt's linker script defines these symbols; only their addresses are used.
    let (sidata, sdata, edata) = (
        &raw const __sidata as usize,
        &raw const __sdata as usize,
        &raw const __edata as usize,
    );
    let end = sidata + (edata - sdata);
    let start = FLASH_ORIGIN + 4;
    // SAFETY: flash holds the loaded image from 0 to `end`, is never written while the program
    // runs, and `start` is not null.
    unsafe { core::slice::from_raw_parts(start as *const u8, end - start) }
}

const FLASH_ORIGIN: usize = 0;
const UART0: usize = 0x4000_4000;
/// How long the board waits for the verifier before giving up on the session.
const LINK_IDLE_TIMEOUT_US: u64 = 30_000_000;
/// Which EK identifies the TPM: `Auto` takes the one the TPM has a certificate for (RSA if it
/// has both); `Rsa` or `Ecc` to insist on one (see `vouch_agent::ek`).
const EK: EkChoice = EkChoice::Auto;

fn run(out: &mut Console) -> Result<(), &'static str> {
    let mode = mode();
    let clock = Timer::start();
    // SAFETY: 0x4002_A000 is the SBCon controller the TPM sits on; nothing else uses it.
    let bus = unsafe { SbconI2c::new(TPM_I2C_BASE) };
    let i2c = I2cTransport::new(bus, clock.clone()).with_address(TPM_ADDRESS);
    let mut tis = Tis::new(i2c, clock.clone());
    let did_vid = tis
        .init()
        .map_err(|_| "no TPM answers on the I2C bus at 0x2E")?;
    logln!(out, "tpm: I2C TIS up, DID_VID ", Hex32(did_vid));
    let mut tpm: BoardTpm = Tpm::new(tis);

    match tpm.startup(StartupType::Clear) {
        Ok(Startup::Started) => logln!(out, "tpm: Startup(CLEAR) done"),
        Ok(_) => logln!(out, "tpm: already started"),
        Err(_) => return Err("TPM2_Startup failed"),
    }
    tpm.self_test(false).map_err(|_| "TPM2_SelfTest failed")?;

    let first_word = flash_first_word();
    let rest = flash_image_after_first_word();
    let image: [&[u8]; 2] = [&first_word, rest];
    let boot = BootImage {
        version: &VOUCH_AGENT_VERSION,
        image: &image,
        base: FLASH_ORIGIN as u64,
        config: &VOUCH_BOARD_CONFIG,
    };
    // The one event log, borrowed by everything after.
    let mut log: EventLog<EVENT_LOG_SIZE> = EventLog::empty();
    if let Err(e) = measured_boot_into(&mut tpm, &boot, &mut log) {
        logln!(out, "boot: measured boot failed: ", BootFailure(&e));
        return Err("measured boot failed");
    }
    logln!(
        out,
        "boot: measured ",
        first_word.len() + rest.len(),
        " bytes of flash into PCR 0, configuration into PCR 1; event log ",
        log.as_bytes().len(),
        " bytes"
    );
    log_boot_pcrs(&mut tpm, out);

    match mode {
        Mode::Probe => probe(&mut tpm, out),
        Mode::Attest => attest(&mut tpm, &log, clock, None, &mut session::NoKeys, out),
        Mode::AttestOnce => attest(&mut tpm, &log, clock, Some(1), &mut session::NoKeys, out),
        Mode::Keys => {
            let mut keys = KeyRoundTrip::default();
            attest(&mut tpm, &log, clock, Some(1), &mut keys, out)?;
            keys.result()
        }
        Mode::Fault => {
            logln!(out, "board: panicking on purpose");
            // A panic aborts at once (an undefined instruction); the HardFault handler reports
            // where and exits with failure.
            #[allow(clippy::panic, reason = "the panic is the point of this mode")]
            if core::hint::black_box(true) {
                panic!();
            }
            Ok(())
        }
    }
}

/// The `keys` mode's requests: a data key, then its round trip through Encrypt and Decrypt.
#[derive(Default)]
struct KeyRoundTrip {
    step: u8,
    wrapped_len: usize,
    ciphertext: heapless::Vec<u8, MAX_KEY_CIPHERTEXT>,
    ok: bool,
}

/// What the board encrypts (and expects back).
const KEYS_PLAINTEXT: &[u8] = b"vouch data on mps2-an386";
const KEYS_AAD: &[u8] = b"mps2-an386 demo";

impl KeyRoundTrip {
    fn result(&self) -> Result<(), &'static str> {
        if self.ok {
            Ok(())
        } else {
            Err("the key round trip failed")
        }
    }
}

impl KeyClient for KeyRoundTrip {
    fn next_request(&mut self) -> Option<KeyRequest> {
        self.step += 1;
        let aad = heapless::Vec::from_slice(KEYS_AAD).ok()?;
        match self.step {
            1 => Some(KeyRequest::GenerateKey { aad }),
            2 => Some(KeyRequest::Encrypt {
                plaintext: heapless::Vec::from_slice(KEYS_PLAINTEXT).ok()?,
                aad,
            }),
            3 => Some(KeyRequest::Decrypt {
                ciphertext: self.ciphertext.clone(),
                aad,
            }),
            _ => None,
        }
    }

    fn response(&mut self, response: KeyResponse) {
        match (self.step, response) {
            (1, KeyResponse::DataKey { key, wrapped }) => {
                self.wrapped_len = wrapped.len();
                // Only a fingerprint of the key is shown: its first 4 bytes.
                logln!(
                    &mut Console,
                    "keys: data key ",
                    Hex(key.get(..4).unwrap_or_default()),
                    ".. (256 bits), wrapped in ",
                    self.wrapped_len,
                    " bytes"
                );
            }
            (2, KeyResponse::Ciphertext(ct)) => {
                logln!(
                    &mut Console,
                    "keys: encrypted ",
                    KEYS_PLAINTEXT.len(),
                    " bytes into ",
                    ct.len(),
                    " bytes"
                );
                self.ciphertext = ct;
            }
            (3, KeyResponse::Plaintext(p)) => {
                self.ok = p.as_slice() == KEYS_PLAINTEXT;
                logln!(
                    &mut Console,
                    "keys: decrypted ",
                    p.len(),
                    " bytes: ",
                    if self.ok { "round trip OK" } else { "MISMATCH" }
                );
            }
            (_, KeyResponse::Refused { reason, .. }) => {
                logln!(&mut Console, "keys: refused: ", reason.as_str());
                self.step = u8::MAX;
            }
            _ => {
                logln!(&mut Console, "keys: unexpected answer");
                self.step = u8::MAX;
            }
        }
    }
}

/// Attests over UART0 until the verifier ends the session.
// Never inlined, like the session steps: each mode's frame stays out of the others' way.
#[inline(never)]
fn attest(
    tpm: &mut BoardTpm,
    log: &EventLog<EVENT_LOG_SIZE>,
    clock: Timer,
    stop_after_verdicts: Option<u32>,
    keys: &mut dyn KeyClient,
    out: &mut Console,
) -> Result<(), &'static str> {
    // SAFETY: UART0 is the agent link and only this function uses it.
    let mut link = unsafe { Uart::new(UART0, clock, LINK_IDLE_TIMEOUT_US) };
    let ek = ek::choose(tpm, EK).map_err(|_| "looking for the EK certificates failed")?;
    logln!(
        out,
        "agent: ",
        ek::name(ek),
        " EK (certificate at NV 0x",
        Hex32(ek.certificate_index()),
        ")"
    );
    let config = AgentConfig {
        agent: "vouch-agent 0.1 mps2-an386",
        ek,
        ak: AkKind::EccP256,
        ak_handle: DEFAULT_AK_HANDLE,
        stop_after_verdicts,
    };
    logln!(out, "agent: session with the verifier on UART0");
    let outcome = session::run_with_keys(tpm, log.as_bytes(), &mut link, &config, keys);
    match outcome {
        Ok(outcome) => {
            logln!(
                out,
                "agent: session ended: activated ",
                outcome.activated,
                ", ",
                outcome.quotes,
                " quote(s), verdict ",
                Verdict(outcome.last_verdict, outcome.software_version.as_str())
            );
            if outcome.last_verdict == Some(true) {
                Ok(())
            } else {
                Err("the verifier did not attest this board")
            }
        }
        Err(e) => {
            logln!(out, "agent: session failed: ", SessionFailure(&e));
            Err("the attestation session failed")
        }
    }
}

/// Shows what the TPM stack reads: manufacturer, banks, randomness, the EK and its
/// certificate, and a PCR extend.
#[inline(never)]
fn probe(tpm: &mut BoardTpm, out: &mut Console) -> Result<(), &'static str> {
    let manufacturer = tpm
        .tpm_property(PT_MANUFACTURER)
        .map_err(|_| "GetCapability(TPM_PT_MANUFACTURER) failed")?
        .unwrap_or(0);
    let name = manufacturer.to_be_bytes();
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    logln!(
        out,
        "tpm: manufacturer ",
        core::str::from_utf8(name).unwrap_or("(not ASCII)")
    );

    let banks = tpm.pcr_banks().map_err(|_| "GetCapability(PCRS) failed")?;
    for bank in banks.active() {
        logln!(
            out,
            "tpm: PCR bank ",
            alg_name(bank.alg),
            " (0x",
            Hex(&bank.alg.to_be_bytes()),
            ")"
        );
    }

    let mut random = [0u8; 16];
    tpm.get_random(&mut random)
        .map_err(|_| "TPM2_GetRandom failed")?;
    logln!(out, "tpm: GetRandom ", Hex(&random));

    let mut certificate = [0u8; 2048];
    let cert_len = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut certificate)
        .map_err(|_| "reading the RSA EK certificate (NV 0x01C00002) failed")?;
    let certificate = certificate.get(..cert_len).unwrap_or_default();
    logln!(out, "tpm: EK certificate, ", cert_len, " bytes of DER");

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
    logln!(
        out,
        "tpm: recreated EK matches the certificate (",
        modulus.len().saturating_mul(8),
        " bit RSA)"
    );

    let measurement = [0x5Au8; 64];
    tpm.pcr_extend_active_banks(DEMO_PCR, |alg, out| {
        let len = digest_size(alg)?;
        out.get_mut(..len)?.copy_from_slice(measurement.get(..len)?);
        Some(len)
    })
    .map_err(|_| "TPM2_PCR_Extend failed")?;
    let selection = [PcrBank {
        alg: ALG_SHA256,
        pcrs: 1 << DEMO_PCR,
    }];
    let values = tpm
        .pcr_read(&selection)
        .map_err(|_| "TPM2_PCR_Read failed")?;
    let value = values
        .digests()
        .first()
        .ok_or("PCR_Read returned no digest")?;
    logln!(
        out,
        "tpm: PCR ",
        DEMO_PCR,
        " (sha256) after extend ",
        Hex(value)
    );
    Ok(())
}

/// Room for the Spec ID event and the boot events in all four banks (SHA-1, SHA-256, SHA-384,
/// SHA-512: about 1.2 KiB; two banks take about 550 bytes).
const EVENT_LOG_SIZE: usize = 1280;

/// The PCR the probe extends: 16 is the debug PCR, resettable and unused by boot.
const DEMO_PCR: u32 = 16;
const PT_MANUFACTURER: u32 = 0x105;

fn alg_name(alg: u16) -> &'static str {
    match alg {
        0x0004 => "sha1",
        0x000B => "sha256",
        0x000C => "sha384",
        0x000D => "sha512",
        _ => "other",
    }
}

/// A fault or a panic (which aborts at once with an undefined instruction, so it arrives
/// here too): the faulting address on the log, then a failed exit. `addr2line` on the ELF
/// names the place.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    logln!(&mut Console, "board: HardFault at pc 0x", Hex32(frame.pc()));
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // Not reached with `panic = "immediate-abort"`; kept for builds without it.
    logln!(&mut Console, "board: panic");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
