//! Large payloads in order-checked chunks, reassembled into a bounded buffer.
//!
//! Payloads: the EK certificate (DER), the event log (TCG crypto-agile format) and PCR values
//! (for each bank of the quote's selection in order, the digests of its selected PCRs in
//! ascending PCR order, concatenated).

use crate::wire::{BlobKind, CHUNK_DATA, Chunk};
use heapless::Vec;

/// Why a chunk was refused. Every case is the sender's fault; the partial payload is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The payload is larger than this side accepts.
    TooLarge { total: u32, limit: usize },
    /// A chunk did not start where the previous one ended.
    OutOfOrder { expected: u32, got: u32 },
    /// A chunk of another payload arrived before this one was complete.
    Interleaved { current: BlobKind, got: BlobKind },
    /// The total length changed between chunks of one payload.
    TotalChanged { was: u32, now: u32 },
    /// A chunk reaches past the announced total.
    Overrun,
    /// The payload to send does not fit the protocol's 32-bit lengths.
    Unsendable,
}

/// Splits `data` into chunks of at most [`CHUNK_DATA`] bytes.
pub fn split(blob: BlobKind, data: &[u8]) -> Result<Split<'_>, ChunkError> {
    let total = u32::try_from(data.len()).map_err(|_| ChunkError::Unsendable)?;
    Ok(Split {
        blob,
        total,
        rest: data,
        offset: 0,
    })
}

/// The chunks of one payload, in order; see [`split`].
#[derive(Debug)]
pub struct Split<'a> {
    blob: BlobKind,
    total: u32,
    rest: &'a [u8],
    offset: u32,
}

impl Iterator for Split<'_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.rest.is_empty() {
            return None;
        }
        let (head, tail) = self.rest.split_at(self.rest.len().min(CHUNK_DATA));
        let chunk = Chunk {
            blob: self.blob,
            total: self.total,
            offset: self.offset,
            data: Vec::from_slice(head).ok()?,
        };
        self.rest = tail;
        // `head.len()` is at most CHUNK_DATA, and the total fits u32.
        self.offset = self
            .offset
            .saturating_add(u32::try_from(head.len()).unwrap_or(u32::MAX));
        Some(chunk)
    }
}

/// Where a payload stands after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More chunks are expected.
    Partial { received: u32, total: u32 },
    /// The payload is complete; [`Reassembler::complete`] returns it.
    Complete(BlobKind),
}

/// Collects one payload at a time, of at most `N` bytes.
#[derive(Debug)]
pub struct Reassembler<const N: usize> {
    current: Option<(BlobKind, u32)>,
    buf: Vec<u8, N>,
}

impl<const N: usize> Default for Reassembler<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Reassembler<N> {
    pub const fn new() -> Self {
        Self {
            current: None,
            buf: Vec::new(),
        }
    }

    /// Adds a chunk. Any error drops the partial payload, so the next payload starts clean.
    pub fn push(&mut self, chunk: &Chunk) -> Result<Progress, ChunkError> {
        let result = self.accept(chunk);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn accept(&mut self, chunk: &Chunk) -> Result<Progress, ChunkError> {
        let (blob, total) = match self.current {
            None => {
                if usize::try_from(chunk.total).map_or(true, |t| t > N) {
                    return Err(ChunkError::TooLarge {
                        total: chunk.total,
                        limit: N,
                    });
                }
                self.current = Some((chunk.blob, chunk.total));
                (chunk.blob, chunk.total)
            }
            Some(current) => current,
        };
        if chunk.blob != blob {
            return Err(ChunkError::Interleaved {
                current: blob,
                got: chunk.blob,
            });
        }
        if chunk.total != total {
            return Err(ChunkError::TotalChanged {
                was: total,
                now: chunk.total,
            });
        }
        let received = self.received();
        if chunk.offset != received {
            return Err(ChunkError::OutOfOrder {
                expected: received,
                got: chunk.offset,
            });
        }
        let fits = u32::try_from(self.buf.len() + chunk.data.len()).is_ok_and(|end| end <= total);
        if !fits || self.buf.extend_from_slice(&chunk.data).is_err() {
            return Err(ChunkError::Overrun);
        }
        let received = self.received();
        if received == total {
            Ok(Progress::Complete(blob))
        } else {
            Ok(Progress::Partial { received, total })
        }
    }

    fn received(&self) -> u32 {
        // The buffer never exceeds the announced u32 total.
        u32::try_from(self.buf.len()).unwrap_or(u32::MAX)
    }

    /// The completed payload, if the last chunk completed one. Call [`Reassembler::reset`]
    /// once it has been used, before the next payload.
    pub fn complete(&self) -> Option<(BlobKind, &[u8])> {
        match self.current {
            Some((blob, total)) if self.received() == total => Some((blob, &self.buf)),
            _ => None,
        }
    }

    /// Forgets any partial or complete payload.
    pub fn reset(&mut self) {
        self.current = None;
        self.buf.clear();
    }
}
