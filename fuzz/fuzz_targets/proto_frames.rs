//! The wire contract's framing and messages (`vouch_proto::frame`, `wire`): a byte stream
//! through the `FrameReader`, each frame decoded as an agent and as a verifier message; the
//! sealed payloads (key requests and responses) decoded from the raw bytes. Whatever decodes
//! must encode and decode back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use vouch_proto::frame::{self, FrameReader, MAX_FRAME};
use vouch_proto::wire::{AgentMessage, KeyRequest, KeyResponse, VerifierMessage};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(frame_bytes: &[u8]) {
    let mut copy = frame_bytes.to_vec();
    let Ok(message) = frame::decode::<T>(&mut copy) else {
        return;
    };
    let mut out = vec![0u8; MAX_FRAME];
    let encoded = match frame::encode(&message, &mut out) {
        Ok(encoded) => encoded,
        Err(e) => panic!("a decoded message does not encode: {e:?} {message:?}"),
    };
    let (delimiter, body) = encoded
        .split_last_mut()
        .expect("a frame ends with its delimiter");
    assert_eq!(*delimiter, 0);
    assert!(!body.contains(&0), "a frame body holds no delimiter");
    let again = frame::decode::<T>(body);
    assert_eq!(again.as_ref().ok(), Some(&message));
}

fn sealed_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(message) = postcard::from_bytes::<T>(bytes) {
        let encoded = postcard::to_stdvec(&message).expect("a decoded message encodes");
        assert_eq!(postcard::from_bytes::<T>(&encoded).ok(), Some(message));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::<MAX_FRAME>::new();
    for &byte in data {
        if let Some(Ok(frame_bytes)) = reader.push(byte) {
            round_trip::<AgentMessage>(frame_bytes);
            round_trip::<VerifierMessage>(frame_bytes);
        }
    }
    // The bytes after the last delimiter, as one frame.
    let tail = data.rsplit(|&b| b == 0).next().unwrap_or_default();
    round_trip::<AgentMessage>(tail);
    round_trip::<VerifierMessage>(tail);
    sealed_round_trip::<KeyRequest>(data);
    sealed_round_trip::<KeyResponse>(data);
    let _ = vouch_proto::negotiate(
        u16::from(data.first().copied().unwrap_or(0)),
        u16::from(data.get(1).copied().unwrap_or(0)),
    );
});
