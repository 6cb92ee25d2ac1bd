//! Chunk reassembly (`vouch_proto::chunk`): a sequence of chunks from the input pushed into a
//! bounded `Reassembler`, checked against a model of what it should hold; and any payload split
//! by `chunk::split` reassembles to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_fuzz::blob_kind;
use vouch_proto::chunk::{self, Progress, Reassembler};
use vouch_proto::wire::{BlobKind, CHUNK_DATA, Chunk};

const LIMIT: usize = 2048;

fuzz_target!(|data: &[u8]| {
    // Each chunk: blob (one byte), total and offset (two bytes each, big-endian), data length
    // (two bytes), data.
    let mut reassembler = Reassembler::<LIMIT>::new();
    let mut model: Vec<u8> = Vec::new();
    let mut rest = data;
    while let [kind, t0, t1, o0, o1, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])) % (CHUNK_DATA + 1);
        let len = len.min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Ok(data) = heapless::Vec::from_slice(bytes) else {
            continue;
        };
        let chunk = Chunk {
            blob: blob_kind(*kind),
            total: u32::from(u16::from_be_bytes([*t0, *t1])),
            offset: u32::from(u16::from_be_bytes([*o0, *o1])),
            data,
        };
        match reassembler.push(&chunk) {
            Ok(Progress::Partial { received, total }) => {
                model.extend_from_slice(bytes);
                assert_eq!(usize::try_from(received).ok(), Some(model.len()));
                assert!(received < total);
                assert!(reassembler.complete().is_none());
            }
            Ok(Progress::Complete(kind)) => {
                model.extend_from_slice(bytes);
                assert_eq!(kind, chunk.blob);
                assert_eq!(usize::try_from(chunk.total).ok(), Some(model.len()));
                assert_eq!(reassembler.complete(), Some((kind, model.as_slice())));
                reassembler.reset();
                model.clear();
            }
            Err(_) => {
                model.clear();
                assert!(reassembler.complete().is_none());
            }
        }
    }

    let mut whole = Reassembler::<8192>::new();
    let Ok(chunks) = chunk::split(BlobKind::EventLog, data) else {
        return;
    };
    let mut done = data.is_empty();
    for c in chunks {
        assert!(!done, "a chunk after the payload completed");
        match whole.push(&c) {
            Ok(Progress::Complete(_)) => done = true,
            Ok(Progress::Partial { .. }) => {}
            Err(e) => {
                assert!(data.len() > 8192, "split then reassemble: {e:?}");
                return;
            }
        }
    }
    if !data.is_empty() && data.len() <= 8192 {
        assert_eq!(whole.complete(), Some((BlobKind::EventLog, data)));
    }
});
