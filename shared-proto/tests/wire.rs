//! Golden bytes pin the wire format of protocol v1; round trips and arbitrary input check the
//! codec's bounds.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is a test failure"
)]

use heapless::{String, Vec};
use proptest::prelude::*;
use vouch_proto::chunk::{self, ChunkError, Progress, Reassembler};
use vouch_proto::frame::{self, FrameError, FrameReader, MAX_FRAME};
use vouch_proto::wire::*;

fn hex(bytes: &[u8]) -> std::string::String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame_of<T: serde::Serialize>(message: &T) -> std::vec::Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    frame::encode(message, &mut buf).unwrap().to_vec()
}

fn decode_frame<T: for<'a> serde::Deserialize<'a>>(bytes: &[u8]) -> Result<T, FrameError> {
    let mut copy = bytes.to_vec();
    let without_delimiter = copy.len() - 1;
    assert_eq!(copy[without_delimiter], 0, "a frame ends in its delimiter");
    frame::decode(&mut copy[..without_delimiter])
}

fn hello() -> AgentMessage {
    AgentMessage::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent: String::try_from("vouch-agent 0.1").unwrap(),
    })
}

#[test]
fn golden_v1_hello() {
    // Variant 0, min 1, max 1, string of 15 bytes; COBS replaces the zeros.
    assert_eq!(
        hex(&frame_of(&hello())),
        "01130101 0f766f7563682d6167656e7420302e3100".replace(' ', "")
    );
}

#[test]
fn golden_v1_quote_request() {
    let message = VerifierMessage::QuoteRequest(QuoteRequest {
        nonce: Vec::from_slice(&[0xAA, 0x00, 0xBB]).unwrap(),
        selection: Vec::from_slice(&[PcrBank {
            hash_alg: 0x000B,
            pcrs: 0b11,
        }])
        .unwrap(),
    });
    assert_eq!(
        hex(&frame_of(&message)),
        "0402 03aa 05bb 010b 0300".replace(' ', "")
    );
}

#[test]
fn golden_v1_chunk_and_verdict() {
    let chunk = AgentMessage::Chunk(Chunk {
        blob: BlobKind::EventLog,
        total: 300,
        offset: 0,
        data: Vec::from_slice(&[1, 2]).unwrap(),
    });
    // Variant 1, blob 1, total 300 as varint ac 02, offset 0, 2 bytes.
    assert_eq!(
        hex(&frame_of(&chunk)),
        "050101ac02 04020102 00".replace(' ', "")
    );
    let verdict = VerifierMessage::Verdict(Verdict {
        attested: true,
        software_version: String::try_from("1.0").unwrap(),
        valid_for_secs: 600,
        reason: String::new(),
    });
    assert_eq!(
        hex(&frame_of(&verdict)),
        "09030103312e30d80401 00".replace(' ', "")
    );
}

#[test]
fn round_trip_of_the_largest_messages() {
    let enroll = AgentMessage::Enroll(Enroll {
        ek_public: Vec::from_slice(&[0u8; MAX_PUBLIC]).unwrap(),
        ak_public: Vec::from_slice(&[0xFFu8; MAX_PUBLIC]).unwrap(),
        has_ek_certificate: true,
    });
    let bytes = frame_of(&enroll);
    assert!(bytes.len() <= MAX_FRAME);
    assert_eq!(decode_frame::<AgentMessage>(&bytes), Ok(enroll));
    let challenge = VerifierMessage::CredentialChallenge(CredentialChallenge {
        id_object: Vec::from_slice(&[7u8; MAX_ID_OBJECT]).unwrap(),
        encrypted_secret: Vec::from_slice(&[0u8; MAX_ENCRYPTED_SECRET]).unwrap(),
    });
    assert_eq!(
        decode_frame::<VerifierMessage>(&frame_of(&challenge)),
        Ok(challenge)
    );
}

#[test]
fn decoding_refuses_bad_frames_with_the_reason() {
    let good = frame_of(&hello());
    // A COBS code pointing past the end.
    assert_eq!(
        decode_frame::<AgentMessage>(&[0x09, 0x01, 0x00]),
        Err(FrameError::BadCobs)
    );
    // An unknown variant.
    assert_eq!(
        decode_frame::<AgentMessage>(&[0x02, 0x3F, 0x00]),
        Err(FrameError::Malformed)
    );
    // Truncated: the string is shorter than its length says.
    let mut cut = good[..good.len() - 4].to_vec();
    cut.push(0);
    assert!(decode_frame::<AgentMessage>(&cut).is_err());
    // A valid message with one byte more.
    let mut buf = [0u8; 64];
    let mut raw = postcard::to_slice(&hello(), &mut buf).unwrap().to_vec();
    raw.push(0x05);
    let mut framed = [0u8; 64];
    let n = cobs_encode(&raw, &mut framed);
    assert_eq!(
        decode_frame::<AgentMessage>(&framed[..n]),
        Err(FrameError::TrailingBytes)
    );
    // Empty.
    assert_eq!(
        frame::decode::<AgentMessage>(&mut []),
        Err(FrameError::Empty)
    );
}

/// A plain COBS encoder for building test frames (delimiter included).
fn cobs_encode(data: &[u8], out: &mut [u8]) -> usize {
    let mut code_at = 0;
    let mut w = 1;
    let mut code = 1u8;
    for &b in data {
        if b == 0 {
            out[code_at] = code;
            code_at = w;
            w += 1;
            code = 1;
        } else {
            out[w] = b;
            w += 1;
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = w;
                w += 1;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out[w] = 0;
    w + 1
}

#[test]
fn reader_resynchronises_after_garbage_and_oversized_frames() {
    let mut reader = FrameReader::<MAX_FRAME>::new();
    let mut results = std::vec::Vec::new();
    let mut stream = vec![0x13, 0x37, 0x00]; // garbage: a COBS code past the end
    stream.extend(std::iter::repeat_n(0x55, MAX_FRAME + 10)); // oversized
    stream.push(0x00);
    stream.push(0x00); // empty
    stream.extend(frame_of(&hello()));
    for byte in stream {
        if let Some(frame) = reader.push(byte) {
            results.push(frame.and_then(frame::decode::<AgentMessage>));
        }
    }
    assert_eq!(
        results,
        vec![
            Err(FrameError::BadCobs),
            Err(FrameError::Oversized),
            Err(FrameError::Empty),
            Ok(hello())
        ]
    );
}

#[test]
fn chunks_reassemble_in_order_only() {
    let payload: std::vec::Vec<u8> = (0..1300u32).map(|i| (i % 251) as u8).collect();
    let chunks: std::vec::Vec<Chunk> = chunk::split(BlobKind::EventLog, &payload)
        .unwrap()
        .collect();
    assert_eq!(chunks.len(), 3);
    let mut r = Reassembler::<2048>::new();
    assert_eq!(
        r.push(&chunks[0]),
        Ok(Progress::Partial {
            received: 512,
            total: 1300
        })
    );
    // Out of order: the partial payload is dropped.
    assert_eq!(
        r.push(&chunks[2]),
        Err(ChunkError::OutOfOrder {
            expected: 512,
            got: 1024
        })
    );
    assert!(r.complete().is_none());
    for c in &chunks[..2] {
        r.push(c).unwrap();
    }
    assert_eq!(
        r.push(&chunks[2]),
        Ok(Progress::Complete(BlobKind::EventLog))
    );
    assert_eq!(r.complete(), Some((BlobKind::EventLog, payload.as_slice())));
    r.reset();

    // Too large for this side.
    let mut small = Reassembler::<1000>::new();
    assert_eq!(
        small.push(&chunks[0]),
        Err(ChunkError::TooLarge {
            total: 1300,
            limit: 1000
        })
    );
    // Another payload interleaved.
    let cert = chunk::split(BlobKind::EkCertificate, &payload)
        .unwrap()
        .next()
        .unwrap();
    r.push(&chunks[0]).unwrap();
    assert!(matches!(r.push(&cert), Err(ChunkError::Interleaved { .. })));
    // A total that changes, and a chunk past the total.
    r.push(&chunks[0]).unwrap();
    let mut changed = chunks[1].clone();
    changed.total = 2000;
    assert_eq!(
        r.push(&changed),
        Err(ChunkError::TotalChanged {
            was: 1300,
            now: 2000
        })
    );
    let overrun = Chunk {
        blob: BlobKind::PcrValues,
        total: 4,
        offset: 0,
        data: Vec::from_slice(&[1, 2, 3, 4, 5]).unwrap(),
    };
    assert_eq!(r.push(&overrun), Err(ChunkError::Overrun));
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = frame::decode::<AgentMessage>(&mut bytes.clone());
        let _ = frame::decode::<VerifierMessage>(&mut bytes);
    }

    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut reader = FrameReader::<MAX_FRAME>::new();
        for b in bytes {
            if let Some(Ok(frame)) = reader.push(b) {
                let _ = frame::decode::<AgentMessage>(frame);
            }
        }
    }

    #[test]
    fn every_chunk_split_reassembles(payload in proptest::collection::vec(any::<u8>(), 1..3000)) {
        let mut r = Reassembler::<3000>::new();
        let mut done = false;
        for c in chunk::split(BlobKind::EkCertificate, &payload).unwrap() {
            let framed = frame_of(&AgentMessage::Chunk(c.clone()));
            prop_assert!(framed.len() <= MAX_FRAME);
            done = matches!(r.push(&c).unwrap(), Progress::Complete(_));
        }
        prop_assert!(done);
        prop_assert_eq!(r.complete().unwrap().1, payload.as_slice());
    }
}

#[test]
fn golden_v2_channel_messages() {
    // VerifierMessage variant 5, a 3-byte key (a real one has 65).
    let key = VerifierMessage::ChannelKey(ChannelKey {
        public: Vec::from_slice(&[4, 1, 2]).unwrap(),
    });
    assert_eq!(hex(&frame_of(&key)), "0605030401 0200".replace(' ', ""));
    // VerifierMessage variant 6 and AgentMessage variant 7: seq 1, a 2-byte body.
    let sealed = Sealed {
        seq: 1,
        body: Vec::from_slice(&[0xAA, 0x00]).unwrap(),
    };
    assert_eq!(
        hex(&frame_of(&VerifierMessage::Sealed(sealed.clone()))),
        "0506 0102aa 0100".replace(' ', "")
    );
    assert_eq!(
        hex(&frame_of(&AgentMessage::Sealed(sealed))),
        "0507 0102aa 0100".replace(' ', "")
    );
    // AgentMessage variant 6: attest, signature, session key.
    let bound = AgentMessage::BoundEvidence(BoundEvidence {
        attest: Vec::from_slice(&[1]).unwrap(),
        signature: Vec::from_slice(&[2]).unwrap(),
        session_public: Vec::from_slice(&[4]).unwrap(),
    });
    assert_eq!(
        hex(&frame_of(&bound)),
        "08060101 01020104 00".replace(' ', "")
    );
}

#[test]
fn golden_v2_key_requests_and_responses() {
    let mut buf = [0u8; 600];
    let request = KeyRequest::Encrypt {
        plaintext: Vec::from_slice(b"hi").unwrap(),
        aad: Vec::from_slice(&[7]).unwrap(),
    };
    assert_eq!(
        hex(postcard::to_slice(&request, &mut buf).unwrap()),
        "01 02 6869 01 07".replace(' ', "")
    );
    let response = KeyResponse::Refused {
        kind: KeyRefusal::KeyServerUnreachable,
        reason: String::try_from("down").unwrap(),
    };
    assert_eq!(
        hex(postcard::to_slice(&response, &mut buf).unwrap()),
        "03 01 04 646f776e".replace(' ', "")
    );
    let largest = KeyResponse::Ciphertext(Vec::from_slice(&[0xFF; MAX_KEY_CIPHERTEXT]).unwrap());
    let len = postcard::to_slice(&largest, &mut buf).unwrap().len();
    assert!(len + SEALED_TAG <= MAX_SEALED, "{len}");
    let back: KeyResponse = postcard::from_bytes(&buf[..len]).unwrap();
    assert_eq!(back, largest);
}

#[test]
fn v2_messages_fit_the_v1_frame_budget() {
    use postcard::experimental::max_size::MaxSize as _;
    // The channel must not grow the firmware's frame buffer.
    const {
        assert!(AgentMessage::POSTCARD_MAX_SIZE <= MAX_MESSAGE);
        assert!(BoundEvidence::POSTCARD_MAX_SIZE < Enroll::POSTCARD_MAX_SIZE);
        assert!(Sealed::POSTCARD_MAX_SIZE < Enroll::POSTCARD_MAX_SIZE);
    }
}

#[test]
fn golden_v3_check_in_messages() {
    // AgentMessage variant 8, a unit variant: one byte.
    assert_eq!(hex(&frame_of(&AgentMessage::CheckIn)), "020800");
    // VerifierMessage variant 7, after_secs 300 as a varint (ac 02).
    let next = VerifierMessage::NextCheckIn(NextCheckIn { after_secs: 300 });
    assert_eq!(hex(&frame_of(&next)), "0407ac0200");
    let back: VerifierMessage = decode_frame(&frame_of(&next)).unwrap();
    assert_eq!(back, next);
    let back: AgentMessage = decode_frame(&frame_of(&AgentMessage::CheckIn)).unwrap();
    assert_eq!(back, AgentMessage::CheckIn);
}
