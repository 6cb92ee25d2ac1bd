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
use embedded_hal::i2c::I2c;

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

fn run() -> Result<(), &'static str> {
    let mut clock = timer::Timer::start();
    // SAFETY: 0x4002_A000 is the SBCon controller the TPM sits on; nothing else uses it.
    let mut bus = unsafe { sbcon::SbconI2c::new(TPM_I2C_BASE) };
    let _ = &mut clock;
    let mut did_vid = [0u8; 4];
    bus.write_read(TPM_ADDRESS, &[0x48], &mut did_vid)
        .map_err(|_| "no TPM answers at I2C address 0x2E")?;
    log!("tpm: DID_VID {:08x}", u32::from_le_bytes(did_vid));
    Ok(())
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
