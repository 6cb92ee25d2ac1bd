//! Log lines without `core::fmt`: text, decimal and hex numbers, and error codes.
//!
//! `core::fmt`'s formatting machinery costs about 8 KiB of flash on a Cortex-M, more than the
//! whole event log code; a board's log needs only strings and numbers. A [`Log`] is anything
//! that takes text; [`logln!`](crate::logln) writes one line from [`Piece`]s:
//!
//! ```
//! use vouch_agent::log::{Hex, Hex32, Log};
//! struct Out(std::string::String);
//! impl Log for Out {
//!     fn text(&mut self, s: &str) {
//!         self.0.push_str(s);
//!     }
//! }
//! let mut out = Out(std::string::String::new());
//! vouch_agent::logln!(&mut out, "tpm: DID_VID ", Hex32(0x0001_1014), ", ", 3u32, " bytes ", Hex(&[0xab]));
//! assert_eq!(out.0, "tpm: DID_VID 00011014, 3 bytes ab\n");
//! ```
//!
//! Errors are logged as a short phrase and a code (a TPM response code, a byte offset, a
//! variant number) rather than their `Debug` form.

use crate::BootError;
use crate::session::SessionError;
use vouch_tpm::{CommandError, MalformedKind};

/// A text sink for the board's log. Writing a log never fails the caller.
pub trait Log {
    /// Writes `s` as is.
    fn text(&mut self, s: &str);
}

impl<L: Log + ?Sized> Log for &mut L {
    fn text(&mut self, s: &str) {
        (**self).text(s);
    }
}

/// Something a log line is made of.
pub trait Piece {
    /// Writes itself to `out`.
    fn put(&self, out: &mut dyn Log);
}

/// Writes a log line: each argument is a [`Piece`], then a newline.
#[macro_export]
macro_rules! logln {
    ($out:expr $(, $piece:expr)* $(,)?) => {{
        let out: &mut dyn $crate::log::Log = &mut *$out;
        $( $crate::log::Piece::put(&$piece, out); )*
        out.text("\n");
    }};
}

impl Piece for &str {
    fn put(&self, out: &mut dyn Log) {
        out.text(self);
    }
}

fn put_ascii(out: &mut dyn Log, digits: &[u8]) {
    out.text(core::str::from_utf8(digits).unwrap_or("?"));
}

impl Piece for u64 {
    fn put(&self, out: &mut dyn Log) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = *self;
        loop {
            at = at.saturating_sub(1);
            if let Some(d) = digits.get_mut(at) {
                // A decimal digit: `n % 10` is below 10.
                *d = b'0' | u8::try_from(n % 10).unwrap_or(0);
            }
            n /= 10;
            if n == 0 {
                break;
            }
        }
        put_ascii(out, digits.get(at..).unwrap_or_default());
    }
}

impl Piece for u32 {
    fn put(&self, out: &mut dyn Log) {
        u64::from(*self).put(out);
    }
}

impl Piece for usize {
    fn put(&self, out: &mut dyn Log) {
        u64::try_from(*self).unwrap_or(u64::MAX).put(out);
    }
}

impl Piece for bool {
    fn put(&self, out: &mut dyn Log) {
        out.text(if *self { "true" } else { "false" });
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(v: u32) -> u8 {
    HEX.get(usize::try_from(v & 0xF).unwrap_or(0))
        .copied()
        .unwrap_or(b'?')
}

/// Lowercase hex of bytes, two digits each.
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl Piece for Hex<'_> {
    fn put(&self, out: &mut dyn Log) {
        for chunk in self.0.chunks(32) {
            let mut digits = [0u8; 64];
            for (pair, &byte) in digits.chunks_mut(2).zip(chunk) {
                if let [hi, lo] = pair {
                    *hi = hex_digit(u32::from(byte >> 4));
                    *lo = hex_digit(u32::from(byte));
                }
            }
            put_ascii(out, digits.get(..chunk.len() * 2).unwrap_or_default());
        }
    }
}

/// A 32-bit value as eight lowercase hex digits, without a prefix.
#[derive(Debug, Clone, Copy)]
pub struct Hex32(pub u32);

impl Piece for Hex32 {
    fn put(&self, out: &mut dyn Log) {
        Hex(&self.0.to_be_bytes()).put(out);
    }
}

/// `attested as software version <v>`, `NOT attested` or `none`, from the last verdict and
/// the software version it named.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a>(pub Option<bool>, pub &'a str);

impl Piece for Verdict<'_> {
    fn put(&self, out: &mut dyn Log) {
        match self.0 {
            Some(true) => {
                out.text("attested as software version ");
                out.text(self.1);
            }
            Some(false) => out.text("NOT attested"),
            None => out.text("none"),
        }
    }
}

/// A DER certificate as PEM (64-character lines, no trailing newline), for copying from the
/// log into `vouch ek verify`.
#[derive(Debug, Clone, Copy)]
pub struct Pem<'a>(pub &'a [u8]);

impl Piece for Pem<'_> {
    fn put(&self, out: &mut dyn Log) {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let digit = |v: u32| {
            ALPHABET
                .get(usize::try_from(v & 63).unwrap_or_default())
                .copied()
                .unwrap_or(b'=')
        };
        out.text("-----BEGIN CERTIFICATE-----\n");
        // 48 bytes make one 64-character line.
        for chunk in self.0.chunks(48) {
            let mut line = [0u8; 65];
            let mut len = 0;
            for group in chunk.chunks(3) {
                let [a, b, c] = [0, 1, 2].map(|i| group.get(i).copied().map_or(0, u32::from));
                let v = a << 16 | b << 8 | c;
                let d2 = if group.len() > 1 { digit(v >> 6) } else { b'=' };
                let d3 = if group.len() > 2 { digit(v) } else { b'=' };
                for d in [digit(v >> 18), digit(v >> 12), d2, d3] {
                    if let Some(slot) = line.get_mut(len) {
                        *slot = d;
                        len += 1;
                    }
                }
            }
            if let Some(slot) = line.get_mut(len) {
                *slot = b'\n';
                len += 1;
            }
            put_ascii(out, line.get(..len).unwrap_or_default());
        }
        out.text("-----END CERTIFICATE-----");
    }
}

/// A TIS-layer failure as a phrase and a code: `bus`, `protocol <n>`, `timeout <n>` or
/// `usage <n>`, where `n` numbers the variant in [`vouch_tpm::ProtocolError`],
/// [`vouch_tpm::TimeoutKind`] or [`vouch_tpm::UsageError`] (from 0, in declaration order).
#[derive(Debug, Clone, Copy)]
pub struct TisFailure<'a, E>(pub &'a vouch_tpm::Error<E>);

impl<E> Piece for TisFailure<'_, E> {
    fn put(&self, out: &mut dyn Log) {
        use vouch_tpm::{Error, ProtocolError as P, TimeoutKind as T, UsageError as U};
        let (what, code): (&str, u32) = match self.0 {
            Error::Bus(_) => ("bus driver error", 0),
            Error::Protocol(p) => (
                "protocol ",
                match p {
                    P::MustBeZero { .. } => 0,
                    P::ExpectCleared { .. } => 1,
                    P::ExpectStillSet => 2,
                    P::ResponseSize { .. } => 3,
                    P::ResponseTooLong => 4,
                    P::Checksum { .. } => 5,
                    P::NoDevice { .. } => 6,
                    _ => 99,
                },
            ),
            Error::Timeout(t) => (
                "timeout ",
                match t {
                    T::Locality => 0,
                    T::CommandReady => 1,
                    T::Status => 2,
                    T::Response => 3,
                    T::SpiWaitState => 4,
                    T::I2cNack => 5,
                    _ => 99,
                },
            ),
            Error::Usage(u) => (
                "usage ",
                match u {
                    U::CommandSize(_) => 0,
                    U::Locality(_) => 1,
                    U::TransferTooLong(_) => 2,
                    _ => 99,
                },
            ),
            _ => ("unknown ", 99),
        };
        out.text(what);
        if !matches!(self.0, Error::Bus(_)) {
            code.put(out);
        }
    }
}

/// A command failure as a phrase and a code: `TPM rc 0x<rc>`, `malformed response <kind> at
/// byte <offset>`, `transport`, `marshalling`, `capacity` or `algorithm 0x<alg>`.
#[derive(Debug, Clone, Copy)]
pub struct CommandFailure<'a, E>(pub &'a CommandError<E>);

impl<E> Piece for CommandFailure<'_, E> {
    fn put(&self, out: &mut dyn Log) {
        match self.0 {
            CommandError::Transport(_) => out.text("transport failed"),
            CommandError::Tpm(rc) => {
                out.text("TPM rc 0x");
                Hex32(rc.0).put(out);
                if rc.0 == 0x921 {
                    out.text(
                        " (TPM_RC_LOCKOUT: dictionary-attack lockout; wait out its recovery \
                         time or clear it with the lockout auth: tpm2_dictionarylockout -c)",
                    );
                }
            }
            CommandError::Malformed(m) => {
                out.text("malformed response ");
                let kind: u32 = match m.kind {
                    MalformedKind::Truncated => 0,
                    MalformedKind::TrailingData => 1,
                    MalformedKind::SizeMismatch => 2,
                    MalformedKind::BadTag => 3,
                    MalformedKind::TooLarge => 4,
                    MalformedKind::Unsupported => 5,
                    MalformedKind::Unexpected => 6,
                    MalformedKind::Frame => 7,
                    _ => 99,
                };
                kind.put(out);
                out.text(" at byte ");
                m.offset.put(out);
            }
            CommandError::Marshal => out.text("marshalling"),
            CommandError::Capacity => out.text("capacity"),
            CommandError::UnsupportedAlgorithm(alg) => {
                out.text("algorithm 0x");
                Hex32(u32::from(*alg)).put(out);
            }
            _ => out.text("unknown"),
        }
    }
}

/// A TPM command failure of the TIS stack, with the TIS layer's code when the transport failed.
#[derive(Debug, Clone, Copy)]
pub struct TisCommandFailure<'a, E>(pub &'a CommandError<vouch_tpm::Error<E>>);

impl<E> Piece for TisCommandFailure<'_, E> {
    fn put(&self, out: &mut dyn Log) {
        match self.0 {
            CommandError::Transport(e) => TisFailure(e).put(out),
            other => CommandFailure(other).put(out),
        }
    }
}

/// Why measured boot failed, with the TPM's code.
#[derive(Debug, Clone, Copy)]
pub struct BootFailure<'a, E>(pub &'a BootError<E>);

impl<E> Piece for BootFailure<'_, E> {
    fn put(&self, out: &mut dyn Log) {
        match self.0 {
            BootError::Tpm(e) => {
                out.text("a TPM command failed: ");
                CommandFailure(e).put(out);
            }
            BootError::LogFull => out.text("the event log buffer is full"),
            BootError::NoUsableBank => out.text("no PCR bank with a known hash"),
            BootError::AlreadyMeasured => out.text(
                "PCR 0/1 already hold an earlier boot's measurements (the TPM was not reset): \
                 power-cycle the board or reset its TPM",
            ),
        }
    }
}

/// Why a session ended early, in a few words and a code.
#[derive(Debug, Clone, Copy)]
pub struct SessionFailure<'a, TE, LE>(pub &'a SessionError<TE, LE>);

impl<TE, LE> Piece for SessionFailure<'_, TE, LE> {
    fn put(&self, out: &mut dyn Log) {
        match self.0 {
            SessionError::Tpm(e) => {
                out.text("the TPM failed: ");
                CommandFailure(e).put(out);
            }
            SessionError::Link(_) => out.text("the link failed or went silent"),
            SessionError::Closed => out.text("the verifier closed the link"),
            SessionError::Frame(_) => out.text("the verifier sent a malformed frame"),
            SessionError::Protocol(what) | SessionError::TooLarge(what) => out.text(what),
            SessionError::Refused(_, reason) => {
                out.text("the verifier refused this board: ");
                out.text(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    impl Log for String {
        fn text(&mut self, s: &str) {
            self.push_str(s);
        }
    }

    fn show(piece: &dyn Piece) -> String {
        let mut out = String::new();
        piece.put(&mut out);
        out
    }

    #[test]
    fn numbers_are_decimal() {
        assert_eq!(show(&0u32), "0");
        assert_eq!(show(&7u32), "7");
        assert_eq!(show(&94_620usize), "94620");
        assert_eq!(show(&u64::MAX), "18446744073709551615");
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(show(&Hex(&[0x00, 0x0f, 0xab, 0xff])), "000fabff");
        assert_eq!(show(&Hex(&[])), "");
        let long: Vec<u8> = (0..70).collect();
        let text = show(&Hex(&long));
        assert_eq!(text.len(), 140);
        assert!(text.ends_with("4445"));
        assert_eq!(show(&Hex32(0x0001_1014)), "00011014");
    }

    #[test]
    fn a_line_ends_with_a_newline() {
        let mut out = String::new();
        crate::logln!(&mut out, "a ", 1u32, " ", true);
        crate::logln!(&mut out);
        assert_eq!(out, "a 1 true\n\n");
    }

    #[test]
    fn verdicts_read_as_the_logs_say() {
        assert_eq!(
            show(&Verdict(Some(true), "pico-1")),
            "attested as software version pico-1"
        );
        assert_eq!(show(&Verdict(Some(false), "pico-1")), "NOT attested");
        assert_eq!(show(&Verdict(None, "")), "none");
    }

    fn pem_body(der: &[u8]) -> String {
        let pem = show(&Pem(der));
        let body = pem
            .strip_prefix("-----BEGIN CERTIFICATE-----\n")
            .and_then(|p| p.strip_suffix("-----END CERTIFICATE-----"))
            .unwrap();
        body.into()
    }

    #[test]
    fn pem_pads_the_last_group() {
        // RFC 4648's test vectors.
        assert_eq!(pem_body(b""), "");
        assert_eq!(pem_body(b"f"), "Zg==\n");
        assert_eq!(pem_body(b"fo"), "Zm8=\n");
        assert_eq!(pem_body(b"foo"), "Zm9v\n");
        assert_eq!(pem_body(b"foob"), "Zm9vYg==\n");
        assert_eq!(pem_body(b"fooba"), "Zm9vYmE=\n");
        assert_eq!(pem_body(b"foobar"), "Zm9vYmFy\n");
    }

    #[test]
    fn pem_lines_hold_64_characters() {
        let der: Vec<u8> = (0..=255).collect();
        let body = pem_body(&der);
        let lines: Vec<&str> = body.lines().collect();
        // 256 bytes: five full 48-byte lines and 16 bytes (22 characters and "==").
        assert_eq!(lines.len(), 6);
        assert!(lines[..5].iter().all(|l| l.len() == 64));
        assert_eq!(lines[5].len(), 24);
        assert!(lines[5].ends_with("=="));
        assert_eq!(
            lines[0],
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"
        );
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=\n".contains(&b))
        );
    }

    #[test]
    fn errors_read_as_a_phrase_and_a_code() {
        let rc: CommandError<()> = CommandError::Tpm(vouch_tpm::ResponseCode(0x18B));
        assert_eq!(show(&CommandFailure(&rc)), "TPM rc 0x0000018b");
        let timeout: CommandError<vouch_tpm::Error<()>> =
            CommandError::Transport(vouch_tpm::Error::Timeout(vouch_tpm::TimeoutKind::Response));
        assert_eq!(show(&TisCommandFailure(&timeout)), "timeout 3");
        let bus: vouch_tpm::Error<()> = vouch_tpm::Error::Bus(());
        assert_eq!(show(&TisFailure(&bus)), "bus driver error");
        let full: BootError<()> = BootError::LogFull;
        assert_eq!(show(&BootFailure(&full)), "the event log buffer is full");
        let closed: SessionError<(), ()> = SessionError::Closed;
        assert_eq!(
            show(&SessionFailure(&closed)),
            "the verifier closed the link"
        );
    }
}
