//! vouchd's own reassembly of agent payloads (`vouchd::agent::Blob`): a sequence of chunks from
//! the input pushed into it under a limit, checked against a model of what it should hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_fuzz::blob_kind;
use vouch_proto::wire::{BlobKind, CHUNK_DATA, Chunk};
use vouchd::agent::Blob;

fuzz_target!(|data: &[u8]| {
    // The limit (two bytes), then each chunk: blob (one byte), total and offset (two bytes
    // each, big-endian), data length (two bytes), data.
    let [l0, l1, chunks @ ..] = data else {
        return;
    };
    let mut rest = chunks;
    let limit = usize::from(u16::from_be_bytes([*l0, *l1]));
    let mut blob_under_test = Blob::default();
    // The model: the payload begun (kind, total) and the bytes accepted so far.
    let mut model: Option<(BlobKind, usize, Vec<u8>)> = None;
    while let [kind, t0, t1, o0, o1, n0, n1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*n0, *n1])) % (CHUNK_DATA + 1);
        let len = len.min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let chunk = Chunk {
            blob: blob_kind(*kind),
            total: u32::from(u16::from_be_bytes([*t0, *t1])),
            offset: u32::from(u16::from_be_bytes([*o0, *o1])),
            data: heapless::Vec::from_slice(bytes).unwrap(),
        };
        let total = chunk.total as usize;
        let offset = chunk.offset as usize;
        // What the model accepts: a first chunk within the limit, then the same kind and
        // total, in order, never past the total.
        let accepted = match &model {
            None => total <= limit && offset == 0 && len <= total,
            Some((k, t, got)) => {
                *k == chunk.blob && *t == total && offset == got.len() && got.len() + len <= total
            }
        };
        let result = blob_under_test.push(&chunk, limit);
        if !accepted {
            assert!(
                result.is_err(),
                "accepted {chunk:?} against the model {model:?}"
            );
            // A refusal ends the session: start over, as vouchd does.
            blob_under_test = Blob::default();
            model = None;
            continue;
        }
        let (kind, total, mut got) = model.take().unwrap_or((chunk.blob, total, Vec::new()));
        got.extend_from_slice(bytes);
        match result {
            Ok(Some(payload)) => {
                assert_eq!(got.len(), total, "completed early");
                assert_eq!(payload, got);
                assert!(payload.len() <= limit);
                assert!(!blob_under_test.is_incomplete());
            }
            Ok(None) => {
                assert!(got.len() < total, "complete but not returned");
                assert!(blob_under_test.is_incomplete());
                model = Some((kind, total, got));
            }
            Err(e) => panic!("refused {chunk:?} the model accepts: {e}"),
        }
    }
});
