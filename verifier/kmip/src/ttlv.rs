//! TTLV, KMIP's binary encoding (KMIP 1.2 / 1.4 specification, section 9.1).
//!
//! Every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and the value, padded
//! with zeros to a multiple of 8 bytes. A structure's value is its items, one after the other.
//!
//! The decoder reads untrusted bytes from the key server: it never panics, reads through a
//! cursor that cannot index out of bounds, checks every length against the bytes present and
//! against [`Limits`], and reports the offset of the first byte it refused. It is strict where
//! the specification is: fixed-size types must carry their exact length, padding must be zero,
//! a boolean is 0 or 1, text is UTF-8, and nothing may follow the top-level item.

use std::fmt;

/// The largest message this crate sends or accepts by default (1 MiB): far above any key or
/// attribute list the key provider handles, far below what could exhaust memory.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// The deepest nesting of structures accepted by default. KMIP 1.x messages nest at most about
/// eight deep (message, batch item, payload, object, key block, key value, ...).
pub const MAX_DEPTH: usize = 16;

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest encoding, header included, in bytes.
    pub max_len: usize,
    /// The deepest nesting of structures; the top-level item is depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_len: MAX_MESSAGE_LEN,
            max_depth: MAX_DEPTH,
        }
    }
}

/// A KMIP tag: 24 bits, `0x42xxxx` for the tags the specification defines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u32);

impl Tag {
    /// A tag from its 24-bit value; `None` when it does not fit in three bytes.
    #[must_use]
    pub const fn new(value: u32) -> Option<Self> {
        if value <= 0x00FF_FFFF {
            Some(Self(value))
        } else {
            None
        }
    }

    /// For the constants in [`crate::spec::tag`]: the value must fit in 24 bits (checked by a
    /// unit test over every constant).
    pub(crate) const fn known(value: u32) -> Self {
        Self(value & 0x00FF_FFFF)
    }

    /// The 24-bit value.
    #[must_use]
    pub const fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag(0x{:06X})", self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06X}", self.0)
    }
}

/// The item types of TTLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ItemType {
    Structure,
    Integer,
    LongInteger,
    BigInteger,
    Enumeration,
    Boolean,
    TextString,
    ByteString,
    DateTime,
    Interval,
}

impl ItemType {
    /// The type byte on the wire.
    #[must_use]
    pub const fn byte(self) -> u8 {
        match self {
            Self::Structure => 0x01,
            Self::Integer => 0x02,
            Self::LongInteger => 0x03,
            Self::BigInteger => 0x04,
            Self::Enumeration => 0x05,
            Self::Boolean => 0x06,
            Self::TextString => 0x07,
            Self::ByteString => 0x08,
            Self::DateTime => 0x09,
            Self::Interval => 0x0A,
        }
    }

    /// The type of a type byte; `None` for bytes KMIP 1.x does not define.
    #[must_use]
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Structure,
            0x02 => Self::Integer,
            0x03 => Self::LongInteger,
            0x04 => Self::BigInteger,
            0x05 => Self::Enumeration,
            0x06 => Self::Boolean,
            0x07 => Self::TextString,
            0x08 => Self::ByteString,
            0x09 => Self::DateTime,
            0x0A => Self::Interval,
            _ => return None,
        })
    }
}

/// A value of one of the TTLV types.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Items in order.
    Structure(Vec<Item>),
    /// 32-bit signed.
    Integer(i32),
    /// 64-bit signed.
    LongInteger(i64),
    /// Two's complement, big-endian; its length must be a multiple of 8 on the wire.
    BigInteger(Vec<u8>),
    /// 32-bit unsigned.
    Enumeration(u32),
    Boolean(bool),
    /// UTF-8.
    TextString(String),
    ByteString(Vec<u8>),
    /// Seconds since the Unix epoch, signed 64-bit.
    DateTime(i64),
    /// Seconds, unsigned 32-bit.
    Interval(u32),
}

impl Value {
    /// This value's type.
    #[must_use]
    pub const fn item_type(&self) -> ItemType {
        match self {
            Self::Structure(_) => ItemType::Structure,
            Self::Integer(_) => ItemType::Integer,
            Self::LongInteger(_) => ItemType::LongInteger,
            Self::BigInteger(_) => ItemType::BigInteger,
            Self::Enumeration(_) => ItemType::Enumeration,
            Self::Boolean(_) => ItemType::Boolean,
            Self::TextString(_) => ItemType::TextString,
            Self::ByteString(_) => ItemType::ByteString,
            Self::DateTime(_) => ItemType::DateTime,
            Self::Interval(_) => ItemType::Interval,
        }
    }
}

impl fmt::Debug for Value {
    // Byte strings may hold key material: show their length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(items) => f.debug_list().entries(items).finish(),
            Self::Integer(v) => write!(f, "Integer({v})"),
            Self::LongInteger(v) => write!(f, "LongInteger({v})"),
            Self::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Self::Enumeration(v) => write!(f, "Enumeration(0x{v:08X})"),
            Self::Boolean(v) => write!(f, "Boolean({v})"),
            Self::TextString(v) => write!(f, "TextString({v:?})"),
            Self::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Self::DateTime(v) => write!(f, "DateTime({v})"),
            Self::Interval(v) => write!(f, "Interval({v})"),
        }
    }
}

/// One tagged item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: Tag,
    pub value: Value,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.tag, self.value)
    }
}

impl Item {
    #[must_use]
    pub const fn new(tag: Tag, value: Value) -> Self {
        Self { tag, value }
    }

    #[must_use]
    pub const fn structure(tag: Tag, items: Vec<Item>) -> Self {
        Self::new(tag, Value::Structure(items))
    }

    /// The items of a structure; `None` for any other type.
    #[must_use]
    pub fn items(&self) -> Option<&[Item]> {
        match &self.value {
            Value::Structure(items) => Some(items),
            _ => None,
        }
    }

    /// The first child with `tag`, when this is a structure.
    #[must_use]
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.items()?.iter().find(|i| i.tag == tag)
    }

    /// Every child with `tag`, in order (none when this is not a structure).
    pub fn children(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.items()
            .unwrap_or_default()
            .iter()
            .filter(move |i| i.tag == tag)
    }

    /// The length of this item's encoding, header and padding included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(padded(self.value_len()))
    }

    /// The value's length as written in the header (without padding).
    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(items) => items
                .iter()
                .fold(0usize, |sum, i| sum.saturating_add(i.encoded_len())),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
            Value::BigInteger(b) | Value::ByteString(b) => b.len(),
            Value::TextString(s) => s.len(),
        }
    }

    /// Encodes this item, refusing anything larger than `max_len` bytes.
    ///
    /// # Errors
    /// [`EncodeError`] when the encoding would exceed `max_len` (or 4 GiB), or a big integer's
    /// length is not a multiple of 8.
    pub fn encode(&self, max_len: usize) -> Result<Vec<u8>, EncodeError> {
        let len = self.encoded_len();
        if len > max_len || u32::try_from(len).is_err() {
            return Err(EncodeError::TooLarge { len, max: max_len });
        }
        let mut out = Vec::with_capacity(len);
        self.write(&mut out)?;
        Ok(out)
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let tag = self.tag.value().to_be_bytes();
        out.extend_from_slice(tag.get(1..).unwrap_or_default());
        out.push(self.value.item_type().byte());
        let len = self.value_len();
        let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLarge {
            len,
            max: u32::MAX as usize,
        })?;
        out.extend_from_slice(&len32.to_be_bytes());
        match &self.value {
            Value::Structure(items) => {
                for item in items {
                    item.write(out)?;
                }
            }
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::BigInteger(b) => {
                if b.len() % 8 != 0 {
                    return Err(EncodeError::BigIntegerLength(b.len()));
                }
                out.extend_from_slice(b);
            }
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
            Value::ByteString(b) => out.extend_from_slice(b),
        }
        out.resize(out.len().saturating_add(padded(len).saturating_sub(len)), 0);
        Ok(())
    }
}

/// The tag, type and length in front of every value.
pub const HEADER_LEN: usize = 8;

/// `len` rounded up to a multiple of 8.
const fn padded(len: usize) -> usize {
    len.saturating_add(7) & !7
}

/// Why an item could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("the encoding would take {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("a big integer of {0} bytes: TTLV needs a multiple of 8")]
    BigIntegerLength(usize),
}

/// Why bytes could not be decoded, and where: `offset` is the position of the first byte
/// refused, counted from the start of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed TTLV at byte {offset}: {kind}")]
pub struct DecodeError {
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    #[error("the input ends {missing} bytes early")]
    Truncated { missing: usize },
    #[error("an item of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("structures nest deeper than {max}")]
    TooDeep { max: usize },
    #[error("unknown item type 0x{0:02X}")]
    UnknownType(u8),
    #[error("a {item_type:?} cannot be {len} bytes long")]
    BadLength { item_type: ItemType, len: usize },
    #[error("non-zero padding")]
    NonZeroPadding,
    #[error("a boolean must be 0 or 1")]
    BadBoolean,
    #[error("a text string that is not UTF-8")]
    BadUtf8,
    #[error("an item inside a structure runs past the structure's end")]
    Overrun,
    #[error("{0} bytes after the message")]
    TrailingBytes(usize),
}

/// Decodes exactly one item from `bytes` with the default [`Limits`].
///
/// # Errors
/// [`DecodeError`] with the offset of the first byte refused.
pub fn decode(bytes: &[u8]) -> Result<Item, DecodeError> {
    decode_with_limits(bytes, Limits::default())
}

/// Decodes exactly one item from `bytes`: nothing may follow it.
///
/// # Errors
/// [`DecodeError`] with the offset of the first byte refused.
pub fn decode_with_limits(bytes: &[u8], limits: Limits) -> Result<Item, DecodeError> {
    if bytes.len() > limits.max_len {
        return Err(DecodeError {
            offset: 0,
            kind: DecodeErrorKind::TooLarge {
                len: bytes.len(),
                max: limits.max_len,
            },
        });
    }
    let mut reader = Reader {
        bytes,
        pos: 0,
        max_depth: limits.max_depth,
    };
    let item = reader.item(1)?;
    let rest = bytes.len().saturating_sub(reader.pos);
    if rest != 0 {
        return Err(reader.error(DecodeErrorKind::TrailingBytes(rest)));
    }
    Ok(item)
}

/// Reads the header of the item at the start of `bytes` and returns the length of the whole
/// item (header, value and padding), for framing a stream: read [`HEADER_LEN`] bytes, ask this,
/// read the rest.
///
/// # Errors
/// Too few bytes, an unknown type, or an item larger than `max_len`.
pub fn item_len(header: &[u8], max_len: usize) -> Result<usize, DecodeError> {
    let mut reader = Reader {
        bytes: header,
        pos: 0,
        max_depth: 1,
    };
    let (_, _, len) = reader.header()?;
    let total = HEADER_LEN.saturating_add(padded(len));
    if total > max_len {
        return Err(DecodeError {
            offset: 4,
            kind: DecodeErrorKind::TooLarge {
                len: total,
                max: max_len,
            },
        });
    }
    Ok(total)
}

/// A cursor over the input that cannot read out of bounds.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.pos,
            kind,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos = self.pos.saturating_add(n);
                Ok(slice)
            }
            None => Err(self.error(DecodeErrorKind::Truncated {
                missing: n.saturating_sub(self.bytes.len().saturating_sub(self.pos)),
            })),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn header(&mut self) -> Result<(Tag, ItemType, usize), DecodeError> {
        let [t0, t1, t2, type_byte] = self.array::<4>()?;
        let tag = Tag(u32::from_be_bytes([0, t0, t1, t2]));
        let Some(item_type) = ItemType::from_byte(type_byte) else {
            self.pos = self.pos.saturating_sub(1);
            return Err(self.error(DecodeErrorKind::UnknownType(type_byte)));
        };
        let len = u32::from_be_bytes(self.array::<4>()?) as usize;
        Ok((tag, item_type, len))
    }

    /// Decodes the item at the cursor, which sits at nesting `depth` (the top level is 1).
    fn item(&mut self, depth: usize) -> Result<Item, DecodeError> {
        let start = self.pos;
        if depth > self.max_depth {
            return Err(self.error(DecodeErrorKind::TooDeep {
                max: self.max_depth,
            }));
        }
        let (tag, item_type, len) = self.header()?;
        let value_start = self.pos;
        let bad_length = || DecodeError {
            offset: start.saturating_add(4),
            kind: DecodeErrorKind::BadLength { item_type, len },
        };
        // Check the whole padded value is present before looking inside it.
        let available = self.bytes.len().saturating_sub(self.pos);
        if padded(len) > available {
            return Err(DecodeError {
                offset: start.saturating_add(4),
                kind: DecodeErrorKind::Truncated {
                    missing: padded(len).saturating_sub(available),
                },
            });
        }
        let value = match item_type {
            ItemType::Structure => {
                if len % 8 != 0 {
                    return Err(bad_length());
                }
                let end = value_start.saturating_add(len);
                let mut items = Vec::new();
                while self.pos < end {
                    // A child must fit inside its parent: decode it from the parent's bytes only.
                    let mut inner = Reader {
                        bytes: self.bytes.get(..end).unwrap_or_default(),
                        pos: self.pos,
                        max_depth: self.max_depth,
                    };
                    let item = inner
                        .item(depth.saturating_add(1))
                        .map_err(|e| match e.kind {
                            DecodeErrorKind::Truncated { .. } => DecodeError {
                                offset: e.offset,
                                kind: DecodeErrorKind::Overrun,
                            },
                            _ => e,
                        })?;
                    self.pos = inner.pos;
                    items.push(item);
                }
                Value::Structure(items)
            }
            ItemType::Integer => {
                if len != 4 {
                    return Err(bad_length());
                }
                Value::Integer(i32::from_be_bytes(self.array::<4>()?))
            }
            ItemType::Enumeration => {
                if len != 4 {
                    return Err(bad_length());
                }
                Value::Enumeration(u32::from_be_bytes(self.array::<4>()?))
            }
            ItemType::Interval => {
                if len != 4 {
                    return Err(bad_length());
                }
                Value::Interval(u32::from_be_bytes(self.array::<4>()?))
            }
            ItemType::LongInteger => {
                if len != 8 {
                    return Err(bad_length());
                }
                Value::LongInteger(i64::from_be_bytes(self.array::<8>()?))
            }
            ItemType::DateTime => {
                if len != 8 {
                    return Err(bad_length());
                }
                Value::DateTime(i64::from_be_bytes(self.array::<8>()?))
            }
            ItemType::Boolean => {
                if len != 8 {
                    return Err(bad_length());
                }
                let at = self.pos;
                match u64::from_be_bytes(self.array::<8>()?) {
                    0 => Value::Boolean(false),
                    1 => Value::Boolean(true),
                    _ => {
                        return Err(DecodeError {
                            offset: at,
                            kind: DecodeErrorKind::BadBoolean,
                        });
                    }
                }
            }
            ItemType::BigInteger => {
                if len % 8 != 0 {
                    return Err(bad_length());
                }
                Value::BigInteger(self.take(len)?.to_vec())
            }
            ItemType::ByteString => Value::ByteString(self.take(len)?.to_vec()),
            ItemType::TextString => {
                let at = self.pos;
                let text = std::str::from_utf8(self.take(len)?).map_err(|e| DecodeError {
                    offset: at.saturating_add(e.valid_up_to()),
                    kind: DecodeErrorKind::BadUtf8,
                })?;
                Value::TextString(text.to_owned())
            }
        };
        let pad_start = self.pos;
        let padding = self.take(padded(len).saturating_sub(len))?;
        if let Some(i) = padding.iter().position(|b| *b != 0) {
            return Err(DecodeError {
                offset: pad_start.saturating_add(i),
                kind: DecodeErrorKind::NonZeroPadding,
            });
        }
        Ok(Item { tag, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rounds_up_to_eight() {
        assert_eq!(padded(0), 0);
        assert_eq!(padded(1), 8);
        assert_eq!(padded(8), 8);
        assert_eq!(padded(11), 16);
    }

    #[test]
    fn tag_must_fit_in_three_bytes() {
        assert!(Tag::new(0x42_0069).is_some());
        assert!(Tag::new(0x0100_0000).is_none());
    }

    #[test]
    fn depth_limit_is_enforced() {
        // 21 nested empty structures: the 17th is one too deep.
        let mut item = Item::structure(Tag(0x42_0001), vec![]);
        for _ in 0..20 {
            item = Item::structure(Tag(0x42_0001), vec![item]);
        }
        let bytes = item.encode(MAX_MESSAGE_LEN).unwrap();
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::TooDeep { .. }), "{err}");
        assert_eq!(err.offset, 8 * MAX_DEPTH);
    }
}
