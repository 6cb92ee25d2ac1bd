//! The self-describing ciphertext: everything decryption needs besides the primary key itself.
//!
//! Format versions 1 and 2, all integers big-endian:
//!
//! | bytes        | field                                                        |
//! |--------------|--------------------------------------------------------------|
//! | 4            | magic `VKPC`                                                 |
//! | 1            | format version, `1` or `2`                                   |
//! | 1 + n        | provider name: length n (1..=64), UTF-8                      |
//! | 1 + n        | version 2 only: the context (vouchd: the host's cluster), length n (1..=64), UTF-8 |
//! | 1 + n        | primary key id on the key server: length n (1..=128), UTF-8  |
//! | 4            | primary key version (the provider's rotation counter)        |
//! | 12           | AES-GCM nonce                                                |
//! | 16           | AES-GCM tag                                                  |
//! | 4 + n        | encrypted body: length n (≤ [`MAX_PLAINTEXT`])               |
//!
//! Nothing may follow the body. The AES-256-GCM associated data is the header (magic through
//! nonce) followed by the caller's associated data, so neither the header (with the context)
//! nor the caller's context can be changed without the tag failing. Version 2 (added for the
//! context) is written whenever a context is given; version 1, without one, still decrypts.

/// `VKPC`: Vouch key provider ciphertext.
pub const MAGIC: [u8; 4] = *b"VKPC";
/// The format version without a context.
pub const FORMAT_VERSION: u8 = 1;
/// The format version with a context (the provider's caller binds every ciphertext to it).
pub const FORMAT_VERSION_CONTEXT: u8 = 2;
/// The longest context.
pub const MAX_CONTEXT: usize = 64;
/// The longest provider name.
pub const MAX_PROVIDER_NAME: usize = 64;
/// The longest key identifier.
pub const MAX_KEY_ID: usize = 128;
/// The largest plaintext (and so body) accepted.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// The largest caller-supplied associated data.
pub const MAX_AAD: usize = 4096;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// Why bytes are not a ciphertext of this format. Offsets are into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("not a Vouch key provider ciphertext (bad magic)")]
    Magic,
    #[error("unsupported ciphertext format version {0}")]
    Version(u8),
    #[error("ciphertext truncated at offset {offset}")]
    Truncated { offset: usize },
    #[error("ciphertext field {field} at offset {offset} has a bad length {len}")]
    Length {
        field: &'static str,
        offset: usize,
        len: usize,
    },
    #[error("ciphertext field {field} at offset {offset} is not UTF-8")]
    Utf8 { field: &'static str, offset: usize },
    #[error("{count} trailing bytes after the ciphertext at offset {offset}")]
    Trailing { offset: usize, count: usize },
}

/// The header: who encrypted, with which key, with which nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub provider: String,
    /// Who the ciphertext is bound to (format version 2); `None` in version 1.
    pub context: Option<String>,
    pub key_id: String,
    pub key_version: u32,
    pub nonce: [u8; NONCE_LEN],
}

/// A parsed ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    pub header: Header,
    pub tag: [u8; TAG_LEN],
    pub body: Vec<u8>,
}

impl Header {
    /// The header's bytes, which are also the first part of the GCM associated data.
    ///
    /// # Errors
    /// [`FormatError::Length`] when the provider name or key id is empty or too long.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let provider = short_string("provider", &self.provider, MAX_PROVIDER_NAME)?;
        let key_id = short_string("key id", &self.key_id, MAX_KEY_ID)?;
        let mut out = Vec::with_capacity(128 + self.provider.len() + self.key_id.len());
        out.extend_from_slice(&MAGIC);
        out.push(if self.context.is_some() {
            FORMAT_VERSION_CONTEXT
        } else {
            FORMAT_VERSION
        });
        out.push(provider);
        out.extend_from_slice(self.provider.as_bytes());
        if let Some(context) = &self.context {
            out.push(short_string("context", context, MAX_CONTEXT)?);
            out.extend_from_slice(context.as_bytes());
        }
        out.push(key_id);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        Ok(out)
    }

    /// The GCM associated data: the header, then the caller's data.
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub fn associated_data(&self, caller: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut aad = self.encode()?;
        aad.extend_from_slice(caller);
        Ok(aad)
    }
}

fn short_string(field: &'static str, s: &str, max: usize) -> Result<u8, FormatError> {
    match u8::try_from(s.len()) {
        Ok(len) if len > 0 && s.len() <= max => Ok(len),
        _ => Err(FormatError::Length {
            field,
            offset: 0,
            len: s.len(),
        }),
    }
}

impl Ciphertext {
    /// # Errors
    /// [`FormatError::Length`] for an out-of-bounds field.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = self.header.encode()?;
        let len = u32::try_from(self.body.len())
            .ok()
            .filter(|_| self.body.len() <= MAX_PLAINTEXT)
            .ok_or(FormatError::Length {
                field: "body",
                offset: out.len() + TAG_LEN,
                len: self.body.len(),
            })?;
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Parses untrusted bytes: bounded, never panics, rejects trailing bytes.
    ///
    /// # Errors
    /// See [`FormatError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader { bytes, offset: 0 };
        if r.array::<4>()? != MAGIC {
            return Err(FormatError::Magic);
        }
        let [version] = r.array::<1>()?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_CONTEXT {
            return Err(FormatError::Version(version));
        }
        let provider = r.string("provider", MAX_PROVIDER_NAME)?;
        let context = if version == FORMAT_VERSION_CONTEXT {
            Some(r.string("context", MAX_CONTEXT)?)
        } else {
            None
        };
        let key_id = r.string("key id", MAX_KEY_ID)?;
        let key_version = u32::from_be_bytes(r.array::<4>()?);
        let nonce = r.array::<NONCE_LEN>()?;
        let tag = r.array::<TAG_LEN>()?;
        let at = r.offset;
        let len = usize::try_from(u32::from_be_bytes(r.array::<4>()?)).unwrap_or(usize::MAX);
        if len > MAX_PLAINTEXT {
            return Err(FormatError::Length {
                field: "body",
                offset: at,
                len,
            });
        }
        let body = r.take(len)?.to_vec();
        if r.offset != bytes.len() {
            return Err(FormatError::Trailing {
                offset: r.offset,
                count: bytes.len().saturating_sub(r.offset),
            });
        }
        Ok(Self {
            header: Header {
                provider,
                context,
                key_id,
                key_version,
                nonce,
            },
            tag,
            body,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.offset.checked_add(n).ok_or(FormatError::Truncated {
            offset: self.offset,
        })?;
        let slice = self
            .bytes
            .get(self.offset..end)
            .ok_or(FormatError::Truncated {
                offset: self.offset,
            })?;
        self.offset = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let at = self.offset;
        self.take(N)?
            .try_into()
            .map_err(|_| FormatError::Truncated { offset: at })
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<String, FormatError> {
        let at = self.offset;
        let [len] = self.array::<1>()?;
        let len = usize::from(len);
        if len == 0 || len > max {
            return Err(FormatError::Length {
                field,
                offset: at,
                len,
            });
        }
        let start = self.offset;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FormatError::Utf8 {
                field,
                offset: start,
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn sample() -> Ciphertext {
        Ciphertext {
            header: Header {
                provider: "p1".into(),
                context: None,
                key_id: "42".into(),
                key_version: 3,
                nonce: [0xAA; NONCE_LEN],
            },
            tag: [0xBB; TAG_LEN],
            body: vec![1, 2, 3],
        }
    }

    /// The bytes of format version 1, pinned.
    #[test]
    fn golden_bytes() {
        let expected: Vec<u8> = [
            &b"VKPC"[..],
            &[1],
            &[2],
            b"p1",
            &[2],
            b"42",
            &[0, 0, 0, 3],
            &[0xAA; 12],
            &[0xBB; 16],
            &[0, 0, 0, 3],
            &[1, 2, 3],
        ]
        .concat();
        assert_eq!(sample().encode().unwrap(), expected);
        assert_eq!(Ciphertext::decode(&expected).unwrap(), sample());
        assert_eq!(
            sample().header.associated_data(b"ctx").unwrap(),
            [&expected[..27], b"ctx"].concat()
        );
    }

    /// The bytes of format version 2 (with a context), pinned.
    #[test]
    fn golden_bytes_with_a_context() {
        let mut with = sample();
        with.header.context = Some("prod".into());
        let expected: Vec<u8> = [
            &b"VKPC"[..],
            &[2],
            &[2],
            b"p1",
            &[4],
            b"prod",
            &[2],
            b"42",
            &[0, 0, 0, 3],
            &[0xAA; 12],
            &[0xBB; 16],
            &[0, 0, 0, 3],
            &[1, 2, 3],
        ]
        .concat();
        assert_eq!(with.encode().unwrap(), expected);
        assert_eq!(Ciphertext::decode(&expected).unwrap(), with);
        assert_eq!(
            with.header.associated_data(b"ctx").unwrap(),
            [&expected[..32], b"ctx"].concat()
        );
        for n in 0..expected.len() {
            assert!(Ciphertext::decode(&expected[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let bytes = sample().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Ciphertext::decode(&bytes[..n]).is_err(), "{n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Ciphertext::decode(&long),
            Err(FormatError::Trailing {
                offset: bytes.len(),
                count: 1
            })
        );
    }

    #[test]
    fn bad_fields_are_typed() {
        let bytes = sample().encode().unwrap();
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(Ciphertext::decode(&magic), Err(FormatError::Magic));
        let mut version = bytes.clone();
        version[4] = 3;
        assert_eq!(Ciphertext::decode(&version), Err(FormatError::Version(3)));
        let mut empty = bytes.clone();
        empty[5] = 0;
        assert!(matches!(
            Ciphertext::decode(&empty),
            Err(FormatError::Length { offset: 5, .. })
        ));
        let mut utf8 = bytes.clone();
        utf8[6] = 0xFF;
        assert_eq!(
            Ciphertext::decode(&utf8),
            Err(FormatError::Utf8 {
                field: "provider",
                offset: 6
            })
        );
        let mut huge = bytes;
        huge[27 + 16..27 + 20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Ciphertext::decode(&huge),
            Err(FormatError::Length { field: "body", .. })
        ));
        let mut too_long = sample();
        too_long.header.provider = "x".repeat(MAX_PROVIDER_NAME + 1);
        assert!(too_long.encode().is_err());
    }
}
