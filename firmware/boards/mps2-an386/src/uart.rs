//! The agent link: CMSDK APB UART0 at 0x4000_4000, as an `embedded_io` byte stream.
//!
//! Registers: DATA (+0x00), STATE (+0x04: bit 0 TX full, bit 1 RX full), CTRL (+0x08: bit 0 TX
//! enable, bit 1 RX enable), BAUDDIV (+0x10, at least 16). Reads wait for a byte up to an idle
//! timeout, so a verifier that goes silent ends the session instead of hanging the board.

use crate::timer::Timer;
use core::ptr::{read_volatile, write_volatile};
use vouch_tpm::Clock;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const TX_FULL: u32 = 1 << 0;
const RX_FULL: u32 = 1 << 1;

/// The UART, with the longest silence a read tolerates.
#[derive(Debug)]
pub struct Uart {
    base: usize,
    clock: Timer,
    idle_timeout_us: u64,
}

/// The verifier said nothing for the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silent;

impl embedded_io::Error for Silent {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::TimedOut
    }
}

impl Uart {
    /// Enables transmit and receive on the UART at `base`.
    ///
    /// # Safety
    /// `base` must be a CMSDK APB UART that nothing else uses.
    pub unsafe fn new(base: usize, clock: Timer, idle_timeout_us: u64) -> Self {
        let uart = Self {
            base,
            clock,
            idle_timeout_us,
        };
        uart.write_reg(BAUDDIV, 16);
        uart.write_reg(CTRL, 0b11);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: `base` is a CMSDK UART owned by `self`.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Silent;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Silent> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.clock.now_us() + self.idle_timeout_us;
        while self.read_reg(STATE) & RX_FULL == 0 {
            if self.clock.now_us() > deadline {
                return Err(Silent);
            }
        }
        let mut n = 0;
        for slot in buf.iter_mut() {
            if self.read_reg(STATE) & RX_FULL == 0 {
                break;
            }
            *slot = (self.read_reg(DATA) & 0xFF) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Silent> {
        for &byte in buf {
            let deadline = self.clock.now_us() + self.idle_timeout_us;
            while self.read_reg(STATE) & TX_FULL != 0 {
                if self.clock.now_us() > deadline {
                    return Err(Silent);
                }
            }
            self.write_reg(DATA, u32::from(byte));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Silent> {
        Ok(())
    }
}
