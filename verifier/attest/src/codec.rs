//! A bounds-checked reader for untrusted bytes: every read returns a typed
//! error carrying the absolute byte offset, and nothing here can panic.

use core::fmt;

/// Why some bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeReason {
    /// The input ended `needed` bytes into a field that had only `available`.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// Bytes were left over after a structure that must fill its input.
    TrailingBytes(usize),
    /// A size field is larger than this field may ever be.
    TooLarge {
        /// What the size describes.
        what: &'static str,
        /// The size found.
        size: usize,
        /// The largest accepted.
        max: usize,
    },
    /// A magic or tag value is not the one required.
    Unexpected {
        /// What was being read.
        what: &'static str,
        /// The value found.
        found: u64,
        /// The value required.
        expected: u64,
    },
    /// An algorithm identifier this verifier does not implement.
    UnsupportedAlgorithm {
        /// What the algorithm was for.
        what: &'static str,
        /// The TCG algorithm identifier.
        id: u16,
    },
    /// Any other structural fault, described.
    Invalid(&'static str),
}

impl fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "truncated {what}: needs {needed} bytes, {available} left"
            ),
            Self::TrailingBytes(n) => write!(f, "{n} unexpected trailing bytes"),
            Self::TooLarge { what, size, max } => {
                write!(f, "{what} is {size}, larger than the maximum {max}")
            }
            Self::Unexpected {
                what,
                found,
                expected,
            } => write!(f, "{what} is {found:#x}, expected {expected:#x}"),
            Self::UnsupportedAlgorithm { what, id } => {
                write!(f, "unsupported {what} algorithm {id:#06x}")
            }
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

/// Malformed input: the bytes, not the verifier, are at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed input at byte offset {offset}: {reason}")]
pub struct DecodeError {
    /// Absolute offset in the input where the fault was found.
    pub offset: usize,
    /// What is wrong there.
    pub reason: DecodeReason,
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn err(&self, reason: DecodeReason) -> DecodeError {
        DecodeError {
            offset: self.offset(),
            reason,
        }
    }

    pub(crate) fn err_at(offset: usize, reason: DecodeReason) -> DecodeError {
        DecodeError { offset, reason }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end))) {
            Some((s, end)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(DecodeReason::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            })),
        }
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u16_be(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u32_be(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u64_be(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u16_le(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32_le(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A TPM2B: a big-endian u16 size, then that many bytes, at most `max`.
    pub(crate) fn tpm2b(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let at = self.offset();
        let size = usize::from(self.u16_be(what)?);
        if size > max {
            return Err(Self::err_at(at, DecodeReason::TooLarge { what, size, max }));
        }
        self.take(size, what)
    }

    /// A sub-reader over the next `n` bytes, keeping absolute offsets.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let base = self.offset();
        let buf = self.take(n, what)?;
        Ok(Reader { buf, pos: 0, base })
    }

    /// Rejects trailing bytes.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.err(DecodeReason::TrailingBytes(self.remaining())))
        }
    }
}

/// Lowercase hex (the `hex` crate; the one hex helper of the host crates).
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses hex (either case, optional `0x` prefix); `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_reports_offset() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_be("a").unwrap(), 0x0102);
        let e = r.u32_be("b").unwrap_err();
        assert_eq!(e.offset, 2);
    }

    #[test]
    fn tpm2b_bounds() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert!(r.clone().tpm2b("x", 4).is_err());
        assert!(r.tpm2b("x", 10).is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("0x00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(to_hex(&[0, 255, 16]), "00ff10");
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
