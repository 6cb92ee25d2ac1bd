//! What every hardware board runs around the agent: the boot flow, the session loop, the agent
//! link over a UART with an idle timeout, and the text the log shows.
//!
//! A board crate keeps only pins, clocks and HAL glue. It builds its TPM stack (a
//! [`vouch_tpm::Tis`] over SPI or I2C), a [`TimedLink`] over its link UART and a text log, then
//! calls [`bring_up`] once and [`serve_until_tpm_reset`], resetting the MCU when that returns
//! (the TPM was reset, so the boot must be measured again):
//!
//! ```text
//! vouch: <board>, <n> MHz system clock                  (the board's own line)
//! tpm: SPI TIS up, DID_VID 001b15d1                       bring_up
//! tpm: Startup(CLEAR) done
//! tpm: RSA EK certificate (NV 0x01c00002), 1177 bytes:
//! -----BEGIN CERTIFICATE----- ...
//! boot: measured 94620 bytes of flash into PCR 0, configuration into PCR 1; event log 1043 bytes
//! boot: PCR 0 (sha256) 5c1f...
//! boot: PCR 1 (sha256) 91ab...
//! agent: session with the verifier on UART0              serve_until_tpm_reset, each session
//! agent: session ended: activated true, 1 quote(s), verdict attested as software version pico-1
//! ```
//!
//! A failure during bring-up is logged as `board: FAILED: ...` and returned, for the board to
//! halt or report.

use crate::ek::EkChoice;
use crate::eventlog::EventLog;
use crate::log::{
    BootFailure, Hex, Hex32, Log, Pem, SessionFailure, TisCommandFailure, TisFailure, Verdict,
};
use crate::logln;
use crate::measure::BootImage;
use crate::measured_boot_into;
use crate::session::{self, AgentConfig, KeyClient, SessionError};
use embedded_hal_nb::nb;
use embedded_hal_nb::serial::{self, Error as _};
use vouch_tpm::{
    ALG_SHA256, Clock, CommandError, EkKind, PcrBank, RegisterAccess, ResponseCode, Startup,
    StartupType, Tis, Tpm, Transport,
};

/// Room for the EK certificate: real ones are 1–1.5 KiB.
pub const CERT_BUF: usize = 2048;

/// What the log says about the board's TPM wiring.
#[derive(Debug, Clone, Copy)]
pub struct BoardInfo<'a> {
    /// The TPM's bus, as in `tpm: SPI TIS up`: "SPI" or "I2C".
    pub bus: &'a str,
    /// Where the TPM should answer and what to check when it does not, as in
    /// `board: FAILED: no TPM answers on SPI0 (check wiring and power)`.
    pub tpm_at: &'a str,
    /// The agent link's name, as in `agent: session with the verifier on UART0`.
    pub link: &'a str,
}

/// Why [`bring_up`] stopped. `E` is the bus driver's error.
#[derive(Debug)]
#[non_exhaustive]
pub enum BringUpError<E> {
    /// No TPM answered the TIS initialisation.
    NoTpm(vouch_tpm::Error<E>),
    /// TPM2_Startup failed.
    Startup(CommandError<vouch_tpm::Error<E>>),
    /// TPM2_SelfTest failed.
    SelfTest(CommandError<vouch_tpm::Error<E>>),
    /// Looking for the EK certificates (TPM2_NV_ReadPublic) failed.
    Ek(CommandError<vouch_tpm::Error<E>>),
    /// Measured boot failed.
    MeasuredBoot(crate::BootError<vouch_tpm::Error<E>>),
}

/// Brings the TPM up and measures the boot: TIS initialisation, TPM2_Startup(CLEAR) (a TPM that
/// is already started is fine), TPM2_SelfTest, the EK chosen as `ek` says ([`crate::ek`]) and
/// its certificate printed as PEM for enrolment, [`measured_boot_into`] `event_log` (which the
/// sessions then send), and PCRs 0 and 1 (SHA-256) printed. Returns the EK the sessions use
/// ([`AgentConfig::ek`]).
///
/// # Errors
/// See [`BringUpError`]; the failure is also logged as `board: FAILED: ...` with its code. An
/// unreadable EK certificate is only logged (the verifier may trust the EK itself).
// Never inlined: its temporaries (the certificate buffer, measured boot's) would otherwise stay
// in the caller's stack frame under every session.
#[inline(never)]
pub fn bring_up<R, C, W, const N: usize, const M: usize>(
    tpm: &mut Tpm<Tis<R, C>, N>,
    info: &BoardInfo<'_>,
    boot: &BootImage<'_>,
    event_log: &mut EventLog<M>,
    ek: EkChoice,
    log: &mut W,
) -> Result<EkKind, BringUpError<R::BusError>>
where
    R: RegisterAccess,
    C: Clock,
    W: Log,
{
    let did_vid = match tpm.transport_mut().init() {
        Ok(id) => id,
        Err(e) => {
            logln!(
                log,
                "board: FAILED: no TPM answers on ",
                info.tpm_at,
                ": ",
                TisFailure(&e)
            );
            return Err(BringUpError::NoTpm(e));
        }
    };
    logln!(log, "tpm: ", info.bus, " TIS up, DID_VID ", Hex32(did_vid));
    match tpm.startup(StartupType::Clear) {
        Ok(Startup::Started) => logln!(log, "tpm: Startup(CLEAR) done"),
        Ok(_) => logln!(log, "tpm: already started"),
        Err(e) => {
            logln!(
                log,
                "board: FAILED: TPM2_Startup failed: ",
                TisCommandFailure(&e)
            );
            return Err(BringUpError::Startup(e));
        }
    }
    if let Err(e) = tpm.self_test(false) {
        logln!(
            log,
            "board: FAILED: TPM2_SelfTest failed: ",
            TisCommandFailure(&e)
        );
        return Err(BringUpError::SelfTest(e));
    }
    let ek = match crate::ek::choose(tpm, ek) {
        Ok(kind) => kind,
        Err(e) => {
            logln!(
                log,
                "board: FAILED: looking for the EK certificates failed: ",
                TisCommandFailure(&e)
            );
            return Err(BringUpError::Ek(e));
        }
    };
    print_ek_certificate(tpm, ek, log);

    if let Err(e) = measured_boot_into(tpm, boot, event_log) {
        logln!(
            log,
            "board: FAILED: measured boot failed: ",
            BootFailure(&e)
        );
        return Err(BringUpError::MeasuredBoot(e));
    }
    logln!(
        log,
        "boot: measured ",
        boot.image.iter().map(|s| s.len()).sum::<usize>(),
        " bytes of flash into PCR 0, configuration into PCR 1; event log ",
        event_log.as_bytes().len(),
        " bytes"
    );
    log_boot_pcrs(tpm, log);
    Ok(ek)
}

/// PCRs 0 and 1 of the SHA-256 bank, as `boot: PCR <n> (sha256) <hex>`.
pub fn log_boot_pcrs<T: Transport, const N: usize>(tpm: &mut Tpm<T, N>, log: &mut dyn Log) {
    let boot_pcrs = [PcrBank {
        alg: ALG_SHA256,
        pcrs: 0b11,
    }];
    if let Ok(values) = tpm.pcr_read(&boot_pcrs) {
        for (pcr, value) in (0u32..).zip(values.digests()) {
            logln!(log, "boot: PCR ", pcr, " (sha256) ", Hex(value));
        }
    }
}

/// The EK certificate of `kind` as PEM, for `vouch ek verify` and the cluster's trust.
#[inline(never)]
fn print_ek_certificate<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    kind: EkKind,
    log: &mut dyn Log,
) {
    let mut certificate = [0u8; CERT_BUF];
    let name = crate::ek::name(kind);
    match tpm.read_ek_certificate(kind, &mut certificate) {
        Ok(len) => logln!(
            log,
            "tpm: ",
            name,
            " EK certificate (NV 0x",
            Hex32(kind.certificate_index()),
            "), ",
            len,
            " bytes:\n",
            Pem(certificate.get(..len).unwrap_or_default()),
        ),
        Err(e) => logln!(
            log,
            "tpm: the ",
            name,
            " EK certificate is not readable: ",
            crate::log::CommandFailure(&e)
        ),
    }
}

/// The TPM was reset (power loss, a TPM firmware fault): it answered TPM_RC_INITIALIZE, so its
/// PCRs no longer hold this boot's measurements. Nothing but a restart of the board can measure
/// the image again: the caller resets the MCU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpmWasReset;

/// Runs sessions with the verifier one after another (with `pause` between them), logging
/// each outcome, until the TPM turns out to have been reset. Once attested over a v2 link,
/// each session asks `keys`'s requests over the key channel.
#[allow(
    clippy::too_many_arguments,
    reason = "the board's parts, each passed through once"
)]
pub fn serve_until_tpm_reset<T, L, W, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    link: &mut L,
    config: &AgentConfig<'_>,
    info: &BoardInfo<'_>,
    keys: &mut dyn KeyClient,
    log: &mut W,
    mut pause: impl FnMut(),
) -> TpmWasReset
where
    T: Transport,
    L: embedded_io::Read + embedded_io::Write,
    W: Log,
{
    loop {
        logln!(log, "agent: session with the verifier on ", info.link);
        match session::run_with_keys(tpm, event_log, link, config, keys) {
            Ok(o) => logln!(
                log,
                "agent: session ended: activated ",
                o.activated,
                ", ",
                o.quotes,
                " quote(s), verdict ",
                Verdict(o.last_verdict, o.software_version.as_str()),
            ),
            Err(SessionError::Tpm(CommandError::Tpm(ResponseCode::INITIALIZE))) => {
                logln!(
                    log,
                    "agent: the TPM was reset; restarting to measure the boot again"
                );
                return TpmWasReset;
            }
            Err(e) => logln!(log, "agent: session failed: ", SessionFailure(&e)),
        }
        pause();
    }
}

/// Why a [`TimedLink`] read or write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The verifier said nothing for the idle timeout.
    Silent,
    /// A framing, parity, noise, break or overrun error on the UART.
    Line(serial::ErrorKind),
}

impl embedded_io::Error for LinkError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Silent => embedded_io::ErrorKind::TimedOut,
            Self::Line(_) => embedded_io::ErrorKind::InvalidData,
        }
    }
}

/// The agent link: `embedded_io` over a non-blocking byte UART (embedded-hal-nb's
/// `serial::{Read, Write}`, which rp2040-hal and stm32f4xx-hal implement), where a read waits
/// for its first byte at most an idle timeout, so a verifier that goes silent ends the session
/// instead of hanging the board.
///
/// A read returns the first byte and whatever else has already arrived. A line error after
/// some bytes is reported by the next read, so those bytes are not lost. Writes block: a UART
/// without flow control always drains at its baud rate.
#[derive(Debug)]
pub struct TimedLink<U, C> {
    uart: U,
    clock: C,
    idle_timeout_us: u64,
    pending: Option<serial::ErrorKind>,
}

impl<U, C> TimedLink<U, C> {
    /// Wraps `uart`; `clock` times the reads.
    pub fn new(uart: U, clock: C, idle_timeout_us: u64) -> Self {
        Self {
            uart,
            clock,
            idle_timeout_us,
            pending: None,
        }
    }

    /// Gives the UART and the clock back.
    pub fn release(self) -> (U, C) {
        (self.uart, self.clock)
    }
}

impl<U, C> embedded_io::ErrorType for TimedLink<U, C> {
    type Error = LinkError;
}

impl<U: serial::Read<u8>, C: Clock> embedded_io::Read for TimedLink<U, C> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        if let Some(kind) = self.pending.take() {
            return Err(LinkError::Line(kind));
        }
        let deadline = self.clock.now_us().saturating_add(self.idle_timeout_us);
        loop {
            match self.uart.read() {
                Ok(byte) => {
                    *first = byte;
                    break;
                }
                Err(nb::Error::Other(e)) => return Err(LinkError::Line(e.kind())),
                Err(nb::Error::WouldBlock) => {}
            }
            if self.clock.now_us() > deadline {
                return Err(LinkError::Silent);
            }
        }
        let mut n = 1;
        for slot in rest {
            match self.uart.read() {
                Ok(byte) => *slot = byte,
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(e)) => {
                    self.pending = Some(e.kind());
                    break;
                }
            }
            n += 1;
        }
        Ok(n)
    }
}

impl<U: serial::Write<u8>, C> embedded_io::Write for TimedLink<U, C> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        for &byte in buf {
            nb::block!(self.uart.write(byte)).map_err(|e| LinkError::Line(e.kind()))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        nb::block!(self.uart.flush()).map_err(|e| LinkError::Line(e.kind()))
    }
}

/// A text log for serial terminals over any `core::fmt::Write` (a HAL's UART): `\n` is sent
/// as `\r\n`. Only `write_str` is used, never the formatting machinery.
#[derive(Debug)]
pub struct CrLf<W>(pub W);

impl<W: core::fmt::Write> Log for CrLf<W> {
    fn text(&mut self, s: &str) {
        let mut start = 0;
        for (i, byte) in s.bytes().enumerate() {
            if byte == b'\n' {
                let _ = self.0.write_str(s.get(start..i).unwrap_or_default());
                let _ = self.0.write_str("\r\n");
                start = i + 1;
            }
        }
        let _ = self.0.write_str(s.get(start..).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_io::{Read as _, Write as _};
    use std::collections::VecDeque;
    use std::string::String;
    use std::vec::Vec;

    /// A UART whose receive side plays a script: a byte, "nothing yet", or a line error.
    #[derive(Default)]
    struct FakeUart {
        rx: VecDeque<nb::Result<u8, serial::ErrorKind>>,
        tx: Vec<u8>,
        flushed: bool,
    }

    impl serial::ErrorType for FakeUart {
        type Error = serial::ErrorKind;
    }

    impl serial::Read<u8> for FakeUart {
        fn read(&mut self) -> nb::Result<u8, serial::ErrorKind> {
            self.rx.pop_front().unwrap_or(Err(nb::Error::WouldBlock))
        }
    }

    impl serial::Write<u8> for FakeUart {
        fn write(&mut self, byte: u8) -> nb::Result<(), serial::ErrorKind> {
            self.tx.push(byte);
            self.flushed = false;
            Ok(())
        }

        fn flush(&mut self) -> nb::Result<(), serial::ErrorKind> {
            self.flushed = true;
            Ok(())
        }
    }

    /// A clock that moves 100 µs every time it is read.
    struct FakeClock(u64);

    impl Clock for FakeClock {
        fn now_us(&mut self) -> u64 {
            self.0 += 100;
            self.0
        }

        fn delay_us(&mut self, us: u32) {
            self.0 += u64::from(us);
        }
    }

    fn link(rx: &[nb::Result<u8, serial::ErrorKind>]) -> TimedLink<FakeUart, FakeClock> {
        let uart = FakeUart {
            rx: rx.iter().cloned().collect(),
            ..FakeUart::default()
        };
        TimedLink::new(uart, FakeClock(0), 10_000)
    }

    const WAIT: nb::Result<u8, serial::ErrorKind> = Err(nb::Error::WouldBlock);

    #[test]
    fn read_waits_for_the_first_byte_then_takes_what_has_arrived() {
        let mut link = link(&[WAIT, WAIT, Ok(1), Ok(2), Ok(3), WAIT, Ok(4)]);
        let mut buf = [0; 8];
        assert_eq!(link.read(&mut buf).unwrap(), 3);
        assert_eq!(buf[..3], [1, 2, 3]);
        assert_eq!(link.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 4);
    }

    #[test]
    fn read_stops_at_the_end_of_the_buffer() {
        let mut link = link(&[Ok(1), Ok(2), Ok(3)]);
        let mut buf = [0; 2];
        assert_eq!(link.read(&mut buf).unwrap(), 2);
        assert_eq!(link.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 3);
    }

    #[test]
    fn a_silent_verifier_times_the_read_out() {
        let mut link = link(&[]);
        let mut buf = [0; 4];
        assert_eq!(link.read(&mut buf), Err(LinkError::Silent));
        let (_, clock) = link.release();
        // Given up just after the idle timeout, not before and not much later.
        assert!((10_000..=10_300).contains(&clock.0), "{}", clock.0);
    }

    #[test]
    fn an_empty_read_returns_at_once() {
        let mut link = link(&[]);
        assert_eq!(link.read(&mut []).unwrap(), 0);
        assert_eq!(link.release().1.0, 0);
    }

    #[test]
    fn a_line_error_on_the_first_byte_is_reported() {
        let mut link = link(&[Err(nb::Error::Other(serial::ErrorKind::FrameFormat)), Ok(7)]);
        let mut buf = [0; 4];
        assert_eq!(
            link.read(&mut buf),
            Err(LinkError::Line(serial::ErrorKind::FrameFormat))
        );
        assert_eq!(link.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 7);
    }

    #[test]
    fn a_line_error_after_some_bytes_is_reported_by_the_next_read() {
        let mut link = link(&[
            Ok(1),
            Ok(2),
            Err(nb::Error::Other(serial::ErrorKind::Overrun)),
            Ok(3),
        ]);
        let mut buf = [0; 8];
        assert_eq!(link.read(&mut buf).unwrap(), 2);
        assert_eq!(buf[..2], [1, 2]);
        assert_eq!(
            link.read(&mut buf),
            Err(LinkError::Line(serial::ErrorKind::Overrun))
        );
        assert_eq!(link.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 3);
    }

    #[test]
    fn writes_go_out_byte_by_byte_and_flush_drains() {
        let mut link = link(&[]);
        link.write_all(b"\x00frame\x00").unwrap();
        link.flush().unwrap();
        let (uart, _) = link.release();
        assert_eq!(uart.tx, b"\x00frame\x00");
        assert!(uart.flushed);
    }

    #[test]
    fn link_errors_map_to_io_kinds() {
        use embedded_io::Error as _;
        assert_eq!(LinkError::Silent.kind(), embedded_io::ErrorKind::TimedOut);
        assert_eq!(
            LinkError::Line(serial::ErrorKind::Parity).kind(),
            embedded_io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn crlf_ends_lines_for_serial_terminals() {
        let mut out = CrLf(String::new());
        out.text("a\nb\n\nc");
        logln!(&mut out, Hex(&[1]));
        assert_eq!(out.0, "a\r\nb\r\n\r\nc01\r\n");
    }
}
