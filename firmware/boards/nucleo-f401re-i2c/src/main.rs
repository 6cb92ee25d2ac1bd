//! Vouch on an ST NUCLEO-F401RE (STM32F401RE, Cortex-M4F) with a TPM 2.0 on I2C1 at 400 kHz:
//! an Infineon OPTIGA SLB 9673 or an ST33KTPM2XI2C. README.md has the wiring, flashing and
//! enrolment steps.
//!
//! Boot: clocks, TPM reset pulse, TIS init (the I2C transport reads the TPM's guard times and
//! retries its wake-up NACKs), Startup(CLEAR), SelfTest, then measured boot of this image (flash
//! from 0x0800_0000 to the end of `.data`'s load image) into PCRs 0 and 1. Then, forever: one
//! verifier session over USART2 (the ST-LINK virtual COM port), a pause, the next session.
//! Progress is logged as text on USART1 (PA9, Arduino D8); USART2 carries only the agent's frames.
#![no_std]
#![no_main]

mod glue;

use embedded_hal::delay::DelayNs as _;
use glue::Micros;
use stm32f4xx_hal::gpio::GpioExt as _;
use stm32f4xx_hal::i2c::{DutyCycle, I2c, Mode};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::{pac, rcc};
use vouch_agent::board::{self, BoardInfo, CrLf, TimedLink};
use vouch_agent::ek::EkChoice;
use vouch_agent::eventlog::EventLog;
use vouch_agent::log::Hex32;
use vouch_agent::logln;
use vouch_agent::measure::BootImage;
use vouch_agent::session::{AgentConfig, BootDataKey, DEFAULT_AK_HANDLE};
use vouch_tpm::{AkKind, I2cTransport, Tis, Tpm};

const SYSCLK_MHZ: u32 = 84;
/// I2C fast mode: both the SLB 9673 and the ST33KTPM2XI2C take 400 kHz (the SLB 9673 up to 1 MHz).
const I2C_KHZ: u32 = 400;
/// The TCG default I2C address of both parts.
const TPM_ADDRESS: u8 = vouch_tpm::I2C_DEFAULT_ADDRESS;
const UART_BAUD: u32 = 115_200;
/// Which EK identifies the TPM: `Auto` takes the one the TPM has a certificate for (RSA if it
/// has both); `Rsa` or `Ecc` to insist on one (see `vouch_agent::ek`).
const EK: EkChoice = EkChoice::Auto;
/// How long a link read waits for the verifier before the session is given up.
const LINK_IDLE_TIMEOUT_US: u64 = 30_000_000;
/// How long RST# is released before the first bus access. The TCG profile leaves it to the
/// part; 100 ms covers both vendors' start-up, and the TPM stack retries early NACKs and waits
/// for the locality (TIMEOUT_A) besides.
const TPM_RESET_SETTLE_MS: u32 = 100;
/// Pause between verifier sessions.
const SESSION_PAUSE_MS: u32 = 5_000;
const FLASH_ORIGIN: usize = 0x0800_0000;
/// Room for the Spec ID event and the boot events in all four banks (SHA-1, SHA-256, SHA-384,
/// SHA-512: about 1.2 KiB; two banks take about 550 bytes).
const EVENT_LOG_SIZE: usize = 1280;

/// The agent's version, measured into PCR 0 (EV_S_CRTM_VERSION); `vouch image add` reads it.
#[unsafe(no_mangle)]
#[used]
static VOUCH_AGENT_VERSION: [u8; 25] = *b"vouch-agent 0.1 (stm32f4)";

/// The board's configuration, measured into PCR 1 (EV_PLATFORM_CONFIG_FLAGS).
#[unsafe(no_mangle)]
#[used]
static VOUCH_BOARD_CONFIG: [u8; 66] =
    *b"board=nucleo-f401re-i2c;tpm=i2c1:0x2e:400khz;link=usart2:115200;v1";

/// The TPM stack over I2C1 with room for 1 KiB commands and responses.
type BoardTpm = Tpm<Tis<I2cTransport<I2c<pac::I2C1>, Micros>, Micros>, 1024>;

const INFO: BoardInfo<'static> = BoardInfo {
    bus: "I2C",
    tpm_at: "I2C1 at 0x2e (check wiring, pull-ups, power)",
    link: "USART2",
};

#[cortex_m_rt::entry]
fn main() -> ! {
    let Some(dp) = pac::Peripherals::take() else {
        halt()
    };
    // The 16 MHz HSI through the PLL: no dependence on the ST-LINK's 8 MHz MCO solder bridges.
    let mut rcc = dp.RCC.freeze(rcc::Config::hsi().sysclk(SYSCLK_MHZ.MHz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);
    let mut clock = Micros::start(dp.TIM2, &mut rcc);

    // USART1 TX on PA9 (Arduino D8): the human-readable log.
    let Ok(tx) = dp.USART1.tx(gpioa.pa9, UART_BAUD.bps(), &mut rcc) else {
        halt()
    };
    let mut out = CrLf(tx);
    logln!(
        &mut out,
        "\nvouch: nucleo-f401re-i2c, ",
        rcc.clocks.sysclk().to_MHz(),
        " MHz system clock"
    );

    // USART2 on PA2 (TX) / PA3 (RX): the ST-LINK virtual COM port, the agent link.
    let Ok(serial) = dp
        .USART2
        .serial((gpioa.pa2, gpioa.pa3), UART_BAUD.bps(), &mut rcc)
    else {
        halt()
    };
    let mut link = TimedLink::new(serial, clock.clone(), LINK_IDLE_TIMEOUT_US);

    // The TPM's reset line (PB5, Arduino D4, to RST#): hold it low, release, and give the TPM
    // time to run its start-up self tests before the first access.
    let mut tpm_reset = gpiob.pb5.into_push_pull_output();
    tpm_reset.set_low();
    clock.delay_ms(2);
    tpm_reset.set_high();
    clock.delay_ms(TPM_RESET_SETTLE_MS);

    // I2C1: SCL PB8 (Arduino D15), SDA PB9 (D14), open drain; the TPM module has the pull-ups.
    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb8, gpiob.pb9),
        Mode::fast(I2C_KHZ.kHz(), DutyCycle::Ratio2to1),
        &mut rcc,
    );
    let transport = I2cTransport::new(i2c, clock.clone()).with_address(TPM_ADDRESS);
    let mut tpm: BoardTpm = Tpm::new(Tis::new(transport, clock.clone()));
    let image = [flash_image()];
    let boot = BootImage {
        version: &VOUCH_AGENT_VERSION,
        image: &image,
        base: FLASH_ORIGIN as u64,
        config: &VOUCH_BOARD_CONFIG,
    };
    // The one event log, filled in place and borrowed by every session.
    let mut event_log: EventLog<EVENT_LOG_SIZE> = EventLog::empty();
    // Logs `board: FAILED: ...` when it fails.
    let Ok(ek) = board::bring_up(&mut tpm, &INFO, &boot, &mut event_log, EK, &mut out) else {
        halt()
    };

    let config = AgentConfig {
        agent: "vouch-agent 0.1 nucleo-f401re-i2c",
        ek,
        ak: AkKind::EccP256,
        ak_handle: DEFAULT_AK_HANDLE,
        // Continuous attestation: answer quote requests until the verifier closes the link.
        stop_after_verdicts: None,
    };
    let _reset = board::serve_until_tpm_reset(
        &mut tpm,
        event_log.as_bytes(),
        &mut link,
        &config,
        &INFO,
        // The key channel is set up with every attestation; the board's data key (bound to
        // the board's name) comes over it for the application.
        &mut BootDataKey::new(b"nucleo-f401re-i2c"),
        &mut out,
        || clock.delay_ms(SESSION_PAUSE_MS),
    );
    // The TPM lost this boot's measurements: boot again, which measures the image again.
    cortex_m::peripheral::SCB::sys_reset()
}

/// This image as flash holds it: from the start of flash (the vector table) to the end of
/// `.data`'s initial values, which is what `vouch image add` lays out from the ELF.
fn flash_image() -> &'static [u8] {
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
    // SAFETY: flash holds the loaded image from FLASH_ORIGIN to `end` and is never written while
    // the program runs.
    unsafe { core::slice::from_raw_parts(FLASH_ORIGIN as *const u8, end - FLASH_ORIGIN) }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

/// A fault or a panic (which aborts at once with an undefined instruction, so it arrives
/// here too): the faulting address on the log, then a halt. `addr2line` on the ELF names the
/// place.
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    logln!(
        &mut glue::FaultLog,
        "board: HardFault at pc 0x",
        Hex32(frame.pc())
    );
    halt()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // Not reached with `panic = "immediate-abort"`; kept for builds without it.
    logln!(&mut glue::FaultLog, "board: panic");
    halt()
}
