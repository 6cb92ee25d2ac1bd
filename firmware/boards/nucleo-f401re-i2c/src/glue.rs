//! HAL glue: the TPM stack's clock from the 32-bit timer TIM2 counting microseconds, the agent
//! link as `embedded_io` over USART2 with an idle timeout, and a raw log for fault handlers.

use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Rcc;
use stm32f4xx_hal::serial::{Serial, Tx};

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

/// The agent link: reads wait for a byte up to an idle timeout, so a verifier that goes silent
/// ends the session instead of hanging the board.
pub struct Link {
    serial: Serial<pac::USART2>,
    clock: Micros,
    idle_timeout_us: u64,
}

/// Why a link read or write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The verifier said nothing for the idle timeout.
    Silent,
    /// A framing, parity, noise or overrun error on the UART.
    Line,
}

impl embedded_io::Error for LinkError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Silent => embedded_io::ErrorKind::TimedOut,
            Self::Line => embedded_io::ErrorKind::InvalidData,
        }
    }
}

impl Link {
    pub fn new(serial: Serial<pac::USART2>, clock: Micros, idle_timeout_us: u64) -> Self {
        Self {
            serial,
            clock,
            idle_timeout_us,
        }
    }
}

impl embedded_io::ErrorType for Link {
    type Error = LinkError;
}

impl embedded_io::Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        let deadline = vouch_tpm::Clock::now_us(&mut self.clock) + self.idle_timeout_us;
        loop {
            match embedded_hal_nb::serial::Read::read(&mut self.serial) {
                Ok(byte) => {
                    *first = byte;
                    break;
                }
                Err(nb::Error::Other(_)) => return Err(LinkError::Line),
                Err(nb::Error::WouldBlock) => {}
            }
            if vouch_tpm::Clock::now_us(&mut self.clock) > deadline {
                return Err(LinkError::Silent);
            }
        }
        // Whatever else has already arrived (the USART holds one byte; take what is there).
        let mut n = 1;
        for slot in rest {
            match embedded_hal_nb::serial::Read::read(&mut self.serial) {
                Ok(byte) => *slot = byte,
                Err(_) => break,
            }
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Link {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        for &byte in buf {
            // The USART has no flow control: the data register always drains at the baud rate.
            nb::block!(embedded_hal_nb::serial::Write::write(
                &mut self.serial,
                byte
            ))
            .map_err(|_| LinkError::Line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        nb::block!(embedded_hal_nb::serial::Write::flush(&mut self.serial))
            .map_err(|_| LinkError::Line)
    }
}

/// The text log on USART1, with `\n` sent as `\r\n` for serial terminals.
pub struct Log(pub Tx<pac::USART1>);

impl core::fmt::Write for Log {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for line in s.split_inclusive('\n') {
            match line.strip_suffix('\n') {
                Some(text) => {
                    self.0.write_str(text)?;
                    self.0.write_str("\r\n")?;
                }
                None => self.0.write_str(line)?,
            }
        }
        Ok(())
    }
}

/// Writes to USART1's registers directly, for the panic and HardFault handlers, which cannot
/// reach the log that `main` owns. USART1 is enabled by then unless the fault came first.
pub fn panic_log(args: core::fmt::Arguments<'_>) {
    struct Raw;
    impl core::fmt::Write for Raw {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            // SAFETY: the program is ending; nothing else writes USART1 any more.
            let usart = unsafe { &*pac::USART1::ptr() };
            for &b in s.as_bytes() {
                for byte in if b == b'\n' {
                    &b"\r\n"[..]
                } else {
                    core::slice::from_ref(&b)
                } {
                    while usart.sr().read().txe().bit_is_clear() {}
                    usart.dr().write(|w| w.dr().set(u16::from(*byte)));
                }
            }
            Ok(())
        }
    }
    let _ = core::fmt::Write::write_fmt(&mut Raw, format_args!("{args}\n"));
}

/// "attested as software version <v>", "NOT attested" or "none".
pub struct Verdict<'a>(pub Option<bool>, pub &'a str);

impl core::fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(true) => write!(f, "attested as software version {}", self.1),
            Some(false) => f.write_str("NOT attested"),
            None => f.write_str("none"),
        }
    }
}

/// Lowercase hex for the log.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A DER certificate as PEM, for copying from the log into `vouch ek verify`.
pub struct Pem<'a>(pub &'a [u8]);

impl core::fmt::Display for Pem<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let digit = |v: u32| char::from(ALPHABET[(v & 63) as usize]);
        f.write_str("-----BEGIN CERTIFICATE-----\n")?;
        // 48 bytes make one 64-character line.
        for line in self.0.chunks(48) {
            for group in line.chunks(3) {
                let [a, b, c] = [0, 1, 2].map(|i| group.get(i).copied().map_or(0, u32::from));
                let v = a << 16 | b << 8 | c;
                let (d0, d1) = (digit(v >> 18), digit(v >> 12));
                let d2 = if group.len() > 1 { digit(v >> 6) } else { '=' };
                let d3 = if group.len() > 2 { digit(v) } else { '=' };
                write!(f, "{d0}{d1}{d2}{d3}")?;
            }
            f.write_str("\n")?;
        }
        f.write_str("-----END CERTIFICATE-----")
    }
}
