//! Vouch on a Raspberry Pi Pico (RP2040, Cortex-M0+) with an Infineon OPTIGA SLB9670 TPM 2.0 on
//! SPI0. README.md has the wiring, flashing and enrolment steps.
//!
//! Boot: clocks, TPM reset pulse, TIS init, Startup(CLEAR), SelfTest, then measured boot of this
//! image (flash from 0x1000_0000, boot2 included, to the end of `.data`'s load image) into
//! PCRs 0 and 1. Then, forever: one verifier session over UART0, a pause, the next session.
//! Progress is logged as text on UART1; UART0 carries only the agent's frames.
#![no_std]
#![no_main]

mod glue;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use fugit::RateExtU32;
use glue::Micros;
use rp2040_hal::{self as hal, Clock as _, gpio, pac, uart};
use vouch_agent::board::{self, BoardInfo, CrLf, TimedLink};
use vouch_agent::ek::EkChoice;
use vouch_agent::eventlog::EventLog;
use vouch_agent::log::Hex32;
use vouch_agent::logln;
use vouch_agent::measure::BootImage;
use vouch_agent::session::{AgentConfig, BootDataKey, DEFAULT_AK_HANDLE};
use vouch_tpm::{AkKind, SpiTransport, Tis, Tpm};

/// The Pico's W25Q16JV flash needs this second-stage bootloader in the first 256 bytes.
#[unsafe(link_section = ".boot2")]
#[used]
pub static BOOT2_FIRMWARE: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

const XTAL_HZ: u32 = 12_000_000;
/// SPI clock. The SLB9670 takes up to 43 MHz; 10 MHz (10.4 MHz from the 125 MHz peripheral
/// clock) leaves margin for 10–15 cm jumper wires. Infineon parts insert no wait states.
const SPI_HZ: u32 = 10_000_000;
const UART_BAUD: u32 = 115_200;
/// Which EK identifies the TPM: `Auto` takes the one the TPM has a certificate for (RSA if it
/// has both); `Rsa` or `Ecc` to insist on one (see `vouch_agent::ek`).
const EK: EkChoice = EkChoice::Auto;
/// How long a link read waits for the verifier before the session is given up.
const LINK_IDLE_TIMEOUT_US: u64 = 30_000_000;
/// SLB9670 reset timing (datasheet; Linux's `tpm_tis_spi_slb9670.c` and SLB9670 reset driver):
/// RST# asserted at least t_WRST (2 µs; 2 ms here), then deasserted t_RSTIN (60 ms) before the
/// next step; the sequence is done twice.
const TPM_RESET_PULSE_MS: u32 = 2;
/// t_RSTIN: RST# deasserted this long after each pulse.
const TPM_RESET_SETTLE_MS: u32 = 60;
/// Pause between verifier sessions.
const SESSION_PAUSE_MS: u32 = 5_000;
const FLASH_ORIGIN: usize = 0x1000_0000;
/// Room for the Spec ID event and the boot events in all four banks (SHA-1, SHA-256, SHA-384,
/// SHA-512: about 1.2 KiB; two banks take about 550 bytes).
const EVENT_LOG_SIZE: usize = 1280;

/// The agent's version, measured into PCR 0 (EV_S_CRTM_VERSION); `vouch image add` reads it.
#[unsafe(no_mangle)]
#[used]
static VOUCH_AGENT_VERSION: [u8; 22] = *b"vouch-agent 0.1 (pico)";

/// The board's configuration, measured into PCR 1 (EV_PLATFORM_CONFIG_FLAGS).
#[unsafe(no_mangle)]
#[used]
static VOUCH_BOARD_CONFIG: [u8; 62] =
    *b"board=rp-pico-slb9670;tpm=spi0:gp17:10mhz;link=uart0:115200;v1";

type Spi = hal::Spi<
    hal::spi::Enabled,
    pac::SPI0,
    (
        gpio::Pin<gpio::bank0::Gpio19, gpio::FunctionSpi, gpio::PullDown>,
        gpio::Pin<gpio::bank0::Gpio16, gpio::FunctionSpi, gpio::PullDown>,
        gpio::Pin<gpio::bank0::Gpio18, gpio::FunctionSpi, gpio::PullDown>,
    ),
>;
type ChipSelect = gpio::Pin<gpio::bank0::Gpio17, gpio::FunctionSioOutput, gpio::PullDown>;
/// The TPM stack over SPI0 with room for 1 KiB commands and responses.
type BoardTpm = Tpm<Tis<SpiTransport<Spi, ChipSelect>, Micros>, 1024>;

const INFO: BoardInfo<'static> = BoardInfo {
    bus: "SPI",
    tpm_at: "SPI0 (check wiring and power)",
    link: "UART0",
};

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut p = pac::Peripherals::take().unwrap_or_else(|| halt());
    let mut watchdog = hal::Watchdog::new(p.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_HZ,
        p.XOSC,
        p.CLOCKS,
        p.PLL_SYS,
        p.PLL_USB,
        &mut p.RESETS,
        &mut watchdog,
    ) else {
        halt()
    };
    let sio = hal::Sio::new(p.SIO);
    let pins = gpio::Pins::new(p.IO_BANK0, p.PADS_BANK0, sio.gpio_bank0, &mut p.RESETS);
    let mut timer = hal::Timer::new(p.TIMER, &mut p.RESETS, &clocks);
    let peri_hz = clocks.peripheral_clock.freq();
    let uart_config = || {
        uart::UartConfig::new(
            UART_BAUD.Hz(),
            uart::DataBits::Eight,
            None,
            uart::StopBits::One,
        )
    };

    // UART1 on GP4 (TX) / GP5 (RX): the human-readable log.
    let log_pins = (pins.gpio4.into_function(), pins.gpio5.into_function());
    let mut out = match uart::UartPeripheral::new(p.UART1, log_pins, &mut p.RESETS)
        .enable(uart_config(), peri_hz)
    {
        Ok(uart) => CrLf(uart),
        Err(_) => halt(),
    };
    logln!(
        &mut out,
        "\nvouch: rp-pico-slb9670, ",
        clocks.system_clock.freq().to_MHz(),
        " MHz system clock"
    );

    // UART0 on GP0 (TX) / GP1 (RX): the agent link to the verifier.
    let link_pins = (pins.gpio0.into_function(), pins.gpio1.into_function());
    let Ok(link_uart) =
        uart::UartPeripheral::new(p.UART0, link_pins, &mut p.RESETS).enable(uart_config(), peri_hz)
    else {
        halt()
    };
    let mut link = TimedLink::new(link_uart, Micros(timer), LINK_IDLE_TIMEOUT_US);

    // SPI0: SCK GP18, MOSI GP19, MISO GP16, mode 0. Chip select GP17 is a plain GPIO that
    // the SPI transport holds low from header through wait states and data. It is driven
    // high before the TPM's reset: a chip select low (the pad's default pull-down) while the
    // TPM leaves reset is an access it may misread.
    let cs: ChipSelect = pins
        .gpio17
        .into_push_pull_output_in_state(gpio::PinState::High);

    // The TPM's reset line (GP20 to RST#): the SLB9670 datasheet's sequence, also Linux's
    // for this part: pulse, t_RSTIN (60 ms), pulse again, t_RSTIN. The TIS init then waits
    // for ACCESS.valid and the locality (TIMEOUT_A each).
    let mut tpm_reset = pins
        .gpio20
        .into_push_pull_output_in_state(gpio::PinState::Low);
    for _ in 0..2 {
        let _ = tpm_reset.set_low();
        timer.delay_ms(TPM_RESET_PULSE_MS);
        let _ = tpm_reset.set_high();
        timer.delay_ms(TPM_RESET_SETTLE_MS);
    }
    let spi_pins = (
        pins.gpio19.into_function(),
        pins.gpio16.into_function(),
        pins.gpio18.into_function(),
    );
    let spi: Spi = hal::Spi::<_, _, _, 8>::new(p.SPI0, spi_pins).init(
        &mut p.RESETS,
        peri_hz,
        SPI_HZ.Hz(),
        embedded_hal::spi::MODE_0,
    );

    let mut tpm: BoardTpm = Tpm::new(Tis::new(SpiTransport::new(spi, cs), Micros(timer)));
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
        agent: "vouch-agent 0.1 rp-pico-slb9670",
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
        &mut BootDataKey::new(b"rp-pico-slb9670"),
        &mut out,
        || timer.delay_ms(SESSION_PAUSE_MS),
    );
    // The TPM lost this boot's measurements: boot again, which measures the image again.
    cortex_m::peripheral::SCB::sys_reset()
}

/// This image as flash holds it: from the start of flash (boot2 included) to the end of
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
    // SAFETY: XIP flash maps the loaded image from FLASH_ORIGIN to `end`; nothing writes flash
    // while the program runs.
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
