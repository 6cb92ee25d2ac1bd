//! HAL glue: the TPM stack's clock from the 32-bit timer TIM2 counting microseconds, and a raw
//! log for the fault handlers. The agent link is `vouch_agent::board::TimedLink` over USART2 and
//! the text log `vouch_agent::board::CrLf` over USART1's transmitter, through stm32f4xx-hal.

use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Rcc;
use vouch_agent::board::CrLf;

/// A microsecond clock on TIM2 (32 bits, prescaled to 1 MHz, wrapping every 71 minutes). Copies
/// read the same counter and each keep a 64-bit running total, so the I2C guard times, the TIS
/// timeouts and the link can each own one; `now_us` must run at least once per wrap, which every
/// polling loop does.
#[derive(Debug, Clone)]
pub struct Micros {
    last: u32,
    total: u64,
}

impl Micros {
    /// Starts TIM2 free-running at 1 MHz over its full 32-bit range.
    pub fn start(tim2: pac::TIM2, rcc: &mut Rcc) -> Self {
        let mut counter = tim2.counter_us(rcc);
        // Enables TIM2's clock, sets the prescaler for 1 MHz and starts the timer; the reload
        // is widened to the full 32 bits below.
        let _ = counter.start(1_000_000.micros());
        // SAFETY: TIM2 was just configured and is owned by `counter`, which is kept running
        // (forgotten) for the life of the program; only `now_us` reads it afterwards.
        let regs = unsafe { &*pac::TIM2::ptr() };
        regs.arr().write(|w| w.arr().set(u32::MAX));
        // Load the new reload value now (the HAL enables reload preloading, which would apply
        // it only after the first 1 s period, making the counter wrap once at 1_000_000).
        regs.egr().write(|w| w.ug().set_bit());
        core::mem::forget(counter);
        Self {
            last: regs.cnt().read().bits(),
            total: 0,
        }
    }
}

impl vouch_tpm::Clock for Micros {
    fn now_us(&mut self) -> u64 {
        // SAFETY: a read of the free-running counter.
        let now = unsafe { (*pac::TIM2::ptr()).cnt().read().bits() };
        self.total += u64::from(now.wrapping_sub(self.last));
        self.last = now;
        self.total
    }

    fn delay_us(&mut self, us: u32) {
        let end = self.now_us() + u64::from(us);
        while self.now_us() < end {}
    }
}

impl embedded_hal::delay::DelayNs for Micros {
    fn delay_ns(&mut self, ns: u32) {
        vouch_tpm::Clock::delay_us(self, ns.div_ceil(1000));
    }
}

/// Writes to USART1's registers directly, for the panic and HardFault handlers, which cannot
/// reach the log that `main` owns. USART1 is enabled by then unless the fault came first.
pub struct FaultLog;

impl vouch_agent::log::Log for FaultLog {
    fn text(&mut self, s: &str) {
        struct Raw;
        impl core::fmt::Write for Raw {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                // SAFETY: the program is ending; nothing else writes USART1 any more.
                let usart = unsafe { &*pac::USART1::ptr() };
                for &byte in s.as_bytes() {
                    while usart.sr().read().txe().bit_is_clear() {}
                    usart.dr().write(|w| w.dr().set(u16::from(byte)));
                }
                Ok(())
            }
        }
        CrLf(Raw).text(s);
    }
}
