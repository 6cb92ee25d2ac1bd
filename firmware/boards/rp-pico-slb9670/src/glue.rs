//! HAL glue: the TPM stack's clock from the RP2040's 1 MHz timer, the agent link as
//! `embedded_io` over UART0 with an idle timeout, and the text log on UART1.

use rp2040_hal::gpio::{FunctionUart, Pin, PullDown, bank0};
use rp2040_hal::uart::{Enabled, UartPeripheral};
use rp2040_hal::{Timer, pac};

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

type LinkUart = UartPeripheral<
    Enabled,
    pac::UART0,
    (
        Pin<bank0::Gpio0, FunctionUart, PullDown>,
        Pin<bank0::Gpio1, FunctionUart, PullDown>,
    ),
>;
type LogUart = UartPeripheral<
    Enabled,
    pac::UART1,
    (
        Pin<bank0::Gpio4, FunctionUart, PullDown>,
        Pin<bank0::Gpio5, FunctionUart, PullDown>,
    ),
>;

/// The agent link: reads wait for a byte up to an idle timeout, so a verifier that goes silent
/// ends the session instead of hanging the board.
pub struct Link {
    uart: LinkUart,
    clock: Micros,
    idle_timeout_us: u64,
}

/// Why a link read or write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The verifier said nothing for the idle timeout.
    Silent,
    /// A framing, parity, break or overrun error on the UART.
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
    pub fn new(uart: LinkUart, clock: Micros, idle_timeout_us: u64) -> Self {
        Self {
            uart,
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
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = vouch_tpm::Clock::now_us(&mut self.clock) + self.idle_timeout_us;
        loop {
            match self.uart.read_raw(buf) {
                Ok(n) => return Ok(n),
                Err(nb::Error::Other(e)) if !e.discarded.is_empty() => {
                    return Ok(e.discarded.len());
                }
                Err(nb::Error::Other(_)) => return Err(LinkError::Line),
                Err(nb::Error::WouldBlock) => {}
            }
            if vouch_tpm::Clock::now_us(&mut self.clock) > deadline {
                return Err(LinkError::Silent);
            }
        }
    }
}

impl embedded_io::Write for Link {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        // The UART has no flow control: the FIFO always drains at the baud rate.
        self.uart.write_full_blocking(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

/// The text log on UART1, with `\n` sent as `\r\n` for serial terminals.
pub struct Log(pub LogUart);

impl core::fmt::Write for Log {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for line in s.split_inclusive('\n') {
            match line.strip_suffix('\n') {
                Some(text) => {
                    self.0.write_full_blocking(text.as_bytes());
                    self.0.write_full_blocking(b"\r\n");
                }
                None => self.0.write_full_blocking(line.as_bytes()),
            }
        }
        Ok(())
    }
}

/// Writes to UART1's registers directly, for the panic and HardFault handlers, which cannot
/// reach the `Log` that `main` owns. UART1 is enabled by then unless the fault came first.
pub fn panic_log(args: core::fmt::Arguments<'_>) {
    struct Raw;
    impl core::fmt::Write for Raw {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            // SAFETY: the program is ending; nothing else writes UART1 any more.
            let uart = unsafe { pac::UART1::steal() };
            for &b in s.as_bytes() {
                for byte in if b == b'\n' {
                    &b"\r\n"[..]
                } else {
                    core::slice::from_ref(&b)
                } {
                    while uart.uartfr().read().txff().bit_is_set() {}
                    // SAFETY: any byte is a valid data register value.
                    uart.uartdr().write(|w| unsafe { w.data().bits(*byte) });
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
