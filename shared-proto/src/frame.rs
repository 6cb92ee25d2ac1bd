//! Frames: a message's postcard encoding, COBS-encoded so it contains no `0x00`, followed by one
//! `0x00` delimiter. A reader that sees garbage loses at most the frame it is in and
//! resynchronises at the next delimiter.

use crate::wire::MAX_MESSAGE;
use serde::{Deserialize, Serialize};

/// The largest frame on the wire: COBS adds one byte per 254 and one more, plus the delimiter.
pub const MAX_FRAME: usize = MAX_MESSAGE + MAX_MESSAGE / 254 + 2;

/// Why bytes are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The output buffer is too small for the frame (a local bug: size it with [`MAX_FRAME`]).
    BufferTooSmall,
    /// A frame longer than [`MAX_FRAME`] arrived: the peer misbehaves; it was discarded.
    Oversized,
    /// The bytes between delimiters are not valid COBS.
    BadCobs,
    /// The decoded bytes are not a message of this protocol version.
    Malformed,
    /// A valid message followed by extra bytes.
    TrailingBytes,
    /// An empty frame (two delimiters in a row).
    Empty,
}

/// Encodes `message` as one frame into `out`, returning the frame (delimiter included).
pub fn encode<'a, T: Serialize>(
    message: &T,
    out: &'a mut [u8],
) -> Result<&'a mut [u8], FrameError> {
    postcard::to_slice_cobs(message, out).map_err(|_| FrameError::BufferTooSmall)
}

/// Decodes one frame's bytes (without its delimiter) in place into a message.
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = cobs_decode_in_place(frame)?;
    let bytes = frame.get(..len).ok_or(FrameError::BadCobs)?;
    let (message, rest) = postcard::take_from_bytes(bytes).map_err(|_| FrameError::Malformed)?;
    if rest.is_empty() {
        Ok(message)
    } else {
        Err(FrameError::TrailingBytes)
    }
}

/// Decodes COBS in place; returns the decoded length. `data` holds no delimiter.
fn cobs_decode_in_place(data: &mut [u8]) -> Result<usize, FrameError> {
    let mut read = 0;
    let mut write = 0;
    while read < data.len() {
        let code = usize::from(*data.get(read).ok_or(FrameError::BadCobs)?);
        if code == 0 {
            return Err(FrameError::BadCobs);
        }
        let end = read + code;
        if end > data.len() {
            return Err(FrameError::BadCobs);
        }
        data.copy_within(read + 1..end, write);
        write += code - 1;
        read = end;
        // A code below 0xFF means a zero followed, except at the very end of the frame.
        if code < 0xFF && read < data.len() {
            *data.get_mut(write).ok_or(FrameError::BadCobs)? = 0;
            write += 1;
        }
    }
    Ok(write)
}

/// Collects bytes from a stream into frames of at most `N` bytes.
///
/// `N` should be [`MAX_FRAME`]; a longer frame is dropped whole and reported once as
/// [`FrameError::Oversized`] when its delimiter arrives.
#[derive(Debug)]
pub struct FrameReader<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
}

impl<const N: usize> Default for FrameReader<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameReader<N> {
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflowed: false,
        }
    }

    /// Feeds one byte. Returns `Some` when it completed a frame: `Ok` with the frame's bytes
    /// (without the delimiter; pass them to [`decode`]) or the reason the frame was dropped.
    pub fn push(&mut self, byte: u8) -> Option<Result<&mut [u8], FrameError>> {
        if byte != 0 {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflowed = true,
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflowed) {
            return Some(Err(FrameError::Oversized));
        }
        if len == 0 {
            return Some(Err(FrameError::Empty));
        }
        Some(self.buf.get_mut(..len).ok_or(FrameError::Oversized))
    }

    /// Drops a partial frame (for example after a link reset).
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }
}
