//! HAL glue: the TPM stack's clock from the RP2040's 1 MHz timer, and the raw log for the fault
//! handlers. The agent link is `vouch_agent::board::TimedLink` over UART0 and the text log
//! `vouch_agent::board::CrLf` over UART1, both through rp2040-hal's UART.

use rp2040_hal::{Timer, pac};
use vouch_agent::board::CrLf;

/// The RP2040's 64-bit microsecond timer (it never wraps in practice). Copies read the same
/// counter, so the TIS timeouts and the link each own one.
#[derive(Clone, Copy)]
pub struct Micros(pub Timer);

impl core::fmt::Debug for Micros {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Micros")
    }
}

impl vouch_tpm::Clock for Micros {
    fn now_us(&mut self) -> u64 {
        self.0.get_counter().ticks()
    }

    fn delay_us(&mut self, us: u32) {
        embedded_hal::delay::DelayNs::delay_us(&mut self.0, us);
    }
}

/// Writes to UART1's registers directly, for the panic and HardFault handlers, which cannot
/// reach the log that `main` owns. UART1 is enabled by then unless the fault came first.
pub struct FaultLog;

impl vouch_agent::log::Log for FaultLog {
    fn text(&mut self, s: &str) {
        struct Raw;
        impl core::fmt::Write for Raw {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                // SAFETY: the program is ending; nothing else writes UART1 any more.
                let uart = unsafe { pac::UART1::steal() };
                for &byte in s.as_bytes() {
                    while uart.uartfr().read().txff().bit_is_set() {}
                    // SAFETY: any byte is a valid data register value.
                    uart.uartdr().write(|w| unsafe { w.data().bits(byte) });
                }
                Ok(())
            }
        }
        CrLf(Raw).text(s);
    }
}
