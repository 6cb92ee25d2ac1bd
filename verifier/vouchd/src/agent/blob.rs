//! Reassembly of a large payload arriving in chunks: in order, one payload at a time, bounded.

use vouch_proto::wire::{BlobKind, Chunk};

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The announced total does not fit this platform's `usize`.
    #[error("chunk total too large")]
    TotalTooLarge,
    /// The announced total is above what the verifier accepts for this kind of payload.
    #[error("{kind:?} of {total} bytes exceeds the limit of {limit}")]
    OverLimit {
        /// The payload announced.
        kind: BlobKind,
        /// Its announced size.
        total: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// A chunk of another payload arrived before the current one was complete.
    #[error("a {arrived:?} chunk arrived while {incomplete:?} was incomplete")]
    Interleaved {
        /// The payload of the chunk.
        arrived: BlobKind,
        /// The payload still incomplete.
        incomplete: BlobKind,
    },
    /// A chunk announced another total than the first.
    #[error("the chunk total changed")]
    TotalChanged,
    /// A chunk is not the next one.
    #[error("chunk at offset {offset} out of order (expected {expected})")]
    OutOfOrder {
        /// The chunk's offset.
        offset: u32,
        /// The offset due.
        expected: usize,
    },
    /// A chunk ends beyond the announced total.
    #[error("a chunk reaches past the announced total")]
    PastTotal,
}

/// A payload being received: empty, or a kind with its announced total and the bytes so far.
#[derive(Debug, Default)]
pub struct Blob {
    incoming: Option<Incoming>,
}

#[derive(Debug)]
struct Incoming {
    kind: BlobKind,
    total: usize,
    data: Vec<u8>,
}

impl Blob {
    /// Takes one chunk, at most `limit` bytes in all; the whole payload once complete (and the
    /// blob is empty again).
    pub fn push(&mut self, chunk: &Chunk, limit: usize) -> Result<Option<Vec<u8>>, ChunkError> {
        let total = usize::try_from(chunk.total).map_err(|_| ChunkError::TotalTooLarge)?;
        let incoming = match &mut self.incoming {
            None => {
                if total > limit {
                    return Err(ChunkError::OverLimit {
                        kind: chunk.blob,
                        total,
                        limit,
                    });
                }
                self.incoming.insert(Incoming {
                    kind: chunk.blob,
                    total,
                    data: Vec::with_capacity(total),
                })
            }
            Some(incoming) if incoming.kind != chunk.blob => {
                return Err(ChunkError::Interleaved {
                    arrived: chunk.blob,
                    incomplete: incoming.kind,
                });
            }
            Some(incoming) if incoming.total != total => return Err(ChunkError::TotalChanged),
            Some(incoming) => incoming,
        };
        if usize::try_from(chunk.offset).ok() != Some(incoming.data.len()) {
            return Err(ChunkError::OutOfOrder {
                offset: chunk.offset,
                expected: incoming.data.len(),
            });
        }
        if incoming.data.len() + chunk.data.len() > incoming.total {
            return Err(ChunkError::PastTotal);
        }
        incoming.data.extend_from_slice(&chunk.data);
        if incoming.data.len() < incoming.total {
            return Ok(None);
        }
        Ok(self.incoming.take().map(|done| done.data))
    }

    /// Whether a payload has begun and is not complete.
    pub fn is_incomplete(&self) -> bool {
        self.incoming.is_some()
    }
}

#[cfg(test)]
mod tests {
    use heapless::Vec as HVec;

    use super::*;

    fn chunk(offset: u32, total: u32, data: &[u8]) -> Chunk {
        Chunk {
            blob: BlobKind::EventLog,
            total,
            offset,
            data: HVec::from_slice(data).unwrap(),
        }
    }

    #[test]
    fn reassembly_is_ordered_and_bounded() {
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 4, b"ab"), 10), Ok(None));
        assert_eq!(
            b.push(&chunk(0, 4, b"ab"), 10),
            Err(ChunkError::OutOfOrder {
                offset: 0,
                expected: 2
            })
        );
        let mut b = Blob::default();
        assert!(
            matches!(
                b.push(&chunk(0, 11, b"ab"), 10),
                Err(ChunkError::OverLimit { .. })
            ),
            "over the limit"
        );
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 4, b"ab"), 10), Ok(None));
        assert_eq!(
            b.push(&chunk(2, 5, b"cd"), 10),
            Err(ChunkError::TotalChanged)
        );
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 3, b"ab"), 10), Ok(None));
        assert_eq!(b.push(&chunk(2, 3, b"cd"), 10), Err(ChunkError::PastTotal));
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 4, b"ab"), 10), Ok(None));
        assert!(b.is_incomplete());
        assert_eq!(b.push(&chunk(2, 4, b"cd"), 10), Ok(Some(b"abcd".to_vec())));
        assert!(!b.is_incomplete());
    }

    #[test]
    fn the_texts_say_what_is_wrong() {
        let mut b = Blob::default();
        let err = b.push(&chunk(0, 1 << 20, b"ab"), 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "EventLog of 1048576 bytes exceeds the limit of 4096"
        );
    }
}
