//! Time from the CMSDK APB timer 0: a 32-bit down-counter at the 25 MHz system clock.

use core::ptr::{read_volatile, write_volatile};

const TIMER0: usize = 0x4000_0000;
const CTRL: usize = 0x00;
const VALUE: usize = 0x04;
const RELOAD: usize = 0x08;
const TICKS_PER_US: u64 = 25;

/// A free-running microsecond clock; `now_us` must be called at least once per wrap of the
/// counter (171 s), which every polling loop of the TPM stack does. Copies share the hardware
/// counter and keep their own running total, so the I2C guard times and the TIS timeouts can
/// each own one.
#[derive(Debug, Clone)]
pub struct Timer {
    last: u32,
    ticks: u64,
}

impl Timer {
    /// Starts timer 0 counting down from `u32::MAX`.
    pub fn start() -> Self {
        // SAFETY: timer 0 is a CMSDK APB timer on this machine and only this type uses it.
        unsafe {
            write_volatile((TIMER0 + RELOAD) as *mut u32, u32::MAX);
            write_volatile((TIMER0 + VALUE) as *mut u32, u32::MAX);
            write_volatile((TIMER0 + CTRL) as *mut u32, 1);
        }
        Self {
            last: u32::MAX,
            ticks: 0,
        }
    }

    fn ticks(&mut self) -> u64 {
        // SAFETY: as in `start`.
        let value = unsafe { read_volatile((TIMER0 + VALUE) as *const u32) };
        // The counter counts down; the wrapping difference is the time since the last read.
        self.ticks += u64::from(self.last.wrapping_sub(value));
        self.last = value;
        self.ticks
    }
}

impl vouch_tpm::Clock for Timer {
    fn now_us(&mut self) -> u64 {
        self.ticks() / TICKS_PER_US
    }

    fn delay_us(&mut self, us: u32) {
        let end = self.ticks() + u64::from(us) * TICKS_PER_US;
        while self.ticks() < end {}
    }
}

impl embedded_hal::delay::DelayNs for Timer {
    fn delay_ns(&mut self, ns: u32) {
        let end = self.ticks() + u64::from(ns).div_ceil(40);
        while self.ticks() < end {}
    }
}
