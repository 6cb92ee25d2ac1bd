//! A bounds-checked cursor over untrusted response bytes, a small writer for parameter areas,
//! and a fixed-capacity byte buffer. Nothing here can panic: reads past the end are errors
//! that carry the offset.

/// Why a response could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedKind {
    /// The bytes ended before a field did.
    Truncated,
    /// Bytes were left after the last field.
    TrailingData,
    /// The header's size field does not match the bytes received.
    SizeMismatch,
    /// The header tag is neither TPM_ST_NO_SESSIONS nor TPM_ST_SESSIONS, or does not fit the
    /// response code.
    BadTag,
    /// A value is longer than the buffer this crate keeps for it.
    TooLarge,
    /// A selector (algorithm, object type, capability) this crate does not decode.
    Unsupported,
    /// A value contradicts the request (e.g. another capability than asked for).
    Unexpected,
    /// tpm2-protocol rejected the frame structure (handle or authorization area).
    Frame,
}

/// A response that could not be decoded; fault: the TPM (or the bus that carried it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// Byte offset in the decoded area where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub kind: MalformedKind,
}

impl Malformed {
    pub(crate) const fn new(offset: usize, kind: MalformedKind) -> Self {
        Self { offset, kind }
    }
}

/// A cursor that reads big-endian TPM fields from a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) const fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn error(&self, kind: MalformedKind) -> Malformed {
        Malformed::new(self.pos, kind)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(self.error(MalformedKind::Truncated))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(self.error(MalformedKind::Truncated))?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        match self.take(1)? {
            &[a] => Ok(a),
            _ => Err(self.error(MalformedKind::Truncated)),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Malformed> {
        match self.take(2)? {
            &[a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(self.error(MalformedKind::Truncated)),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Malformed> {
        match self.take(4)? {
            &[a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(self.error(MalformedKind::Truncated)),
        }
    }

    /// A TPM2B: returns its contents (without the size prefix).
    pub(crate) fn tpm2b(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A TPM2B: returns its full wire bytes (with the size prefix).
    pub(crate) fn tpm2b_raw(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.pos;
        self.tpm2b()?;
        self.buf
            .get(start..self.pos)
            .ok_or(Malformed::new(start, MalformedKind::Truncated))
    }

    /// The bytes consumed since `start`.
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), Malformed> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.error(MalformedKind::TrailingData))
        }
    }
}

/// The writer ran out of space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// Writes big-endian TPM fields into a byte slice.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) const fn len(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let end = self.pos.checked_add(data.len()).ok_or(Overflow)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Overflow)?
            .copy_from_slice(data);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), Overflow> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), Overflow> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), Overflow> {
        self.bytes(&v.to_be_bytes())
    }

    /// Overwrites a big-endian `u32` already written at `at`.
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) -> Result<(), Overflow> {
        let end = at.checked_add(4).ok_or(Overflow)?;
        if end > self.pos {
            return Err(Overflow);
        }
        self.buf
            .get_mut(at..end)
            .ok_or(Overflow)?
            .copy_from_slice(&v.to_be_bytes());
        Ok(())
    }

    pub(crate) fn tpm2b(&mut self, data: &[u8]) -> Result<(), Overflow> {
        self.u16(u16::try_from(data.len()).map_err(|_| Overflow)?)?;
        self.bytes(data)
    }
}

/// A fixed-capacity byte buffer holding exact TPM bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Buf<const N: usize> {
    len: usize,
    data: [u8; N],
}

impl<const N: usize> Buf<N> {
    /// An empty buffer.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            len: 0,
            data: [0; N],
        }
    }

    /// A copy of `bytes`, or `None` if they do not fit.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut b = Self::new();
        b.data.get_mut(..bytes.len())?.copy_from_slice(bytes);
        b.len = bytes.len();
        Some(b)
    }

    pub(crate) fn copy(bytes: &[u8], offset: usize) -> Result<Self, Malformed> {
        Self::from_slice(bytes).ok_or(Malformed::new(offset, MalformedKind::TooLarge))
    }

    /// The bytes held.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or_default()
    }

    /// The number of bytes held.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are held.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::ops::Deref for Buf<N> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> core::fmt::Debug for Buf<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
