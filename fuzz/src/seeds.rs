//! The seed inputs of every target, built from the project's own encoders and test data, so a
//! short run starts deep in each decoder. `cargo run --release --example make_seeds` writes them
//! to `corpus/<target>/`.

use std::sync::LazyLock;

use vouch_agent::eventlog::{EV_NO_ACTION, EV_S_CRTM_VERSION, EV_SEPARATOR, EventLog};
use vouch_agent::measure::{Digests, SHA1, SHA256};
use vouch_keyprovider::ciphertext::{Ciphertext, Header};
use vouch_kmip::spec::tag;
use vouch_kmip::ttlv::{Item, Tag, Value};
use vouch_proto::chunk;
use vouch_proto::frame;
use vouch_proto::wire::{
    BlobKind, ChannelKey, CredentialChallenge, PcrBank, QuoteRequest, Sealed, Verdict,
    VerifierMessage, Welcome,
};

/// A seed: the target, a file name, the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// A small crypto-agile log as the agent writes it (SHA-1 and SHA-256 banks).
pub static AGENT_EVENT_LOG: LazyLock<Vec<u8>> = LazyLock::new(|| agent_log(&[SHA1, SHA256]));

fn agent_log(banks: &[u16]) -> Vec<u8> {
    let sizes: Vec<(u16, u16)> = banks
        .iter()
        .map(|&b| (b, if b == SHA1 { 20 } else { 32 }))
        .collect();
    let Ok(mut log) = EventLog::<4096>::new(&sizes) else {
        return Vec::new();
    };
    let mut locality = b"StartupLocality\0".to_vec();
    locality.push(3);
    let events: [(u32, u32, &[u8]); 4] = [
        (0, EV_NO_ACTION, &locality),
        (0, EV_S_CRTM_VERSION, b"vouch 0.1.0"),
        (0, EV_SEPARATOR, &[0; 4]),
        (1, EV_SEPARATOR, &[0; 4]),
    ];
    for (pcr, event_type, data) in events {
        let _ = log.record(pcr, event_type, &Digests::of(banks, &[data]), data);
    }
    log.as_bytes().to_vec()
}

/// A log in the SHA-1 format of TPM 1.2 (TCG_PCClientPCREvent records).
fn sha1_log() -> Vec<u8> {
    let mut log = Vec::new();
    for (pcr, event_type, data) in [
        (0u32, 8u32, b"BIOS 1.0".as_slice()),
        (0, 4, &[0; 4]),
        (4, 0x8000_0003, b"bootloader"),
    ] {
        log.extend(pcr.to_le_bytes());
        log.extend(event_type.to_le_bytes());
        log.extend([0x11; 20]);
        log.extend(u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
        log.extend_from_slice(data);
    }
    log
}

fn frames(messages: &[VerifierMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; frame::MAX_FRAME];
    for m in messages {
        if let Ok(bytes) = frame::encode(m, &mut buf) {
            out.extend_from_slice(bytes);
        }
    }
    out
}

fn hv<const N: usize>(bytes: &[u8]) -> heapless::Vec<u8, N> {
    heapless::Vec::from_slice(bytes).unwrap_or_default()
}

fn hs<const N: usize>(text: &str) -> heapless::String<N> {
    let mut s = heapless::String::new();
    let _ = s.push_str(text);
    s
}

/// The uncompressed P-256 generator: a valid channel key.
const P256_G: [u8; 65] = [
    0x04, 0x6B, 0x17, 0xD1, 0xF2, 0xE1, 0x2C, 0x42, 0x47, 0xF8, 0xBC, 0xE6, 0xE5, 0x63, 0xA4, 0x40,
    0xF2, 0x77, 0x03, 0x7D, 0x81, 0x2D, 0xEB, 0x33, 0xA0, 0xF4, 0xA1, 0x39, 0x45, 0xD8, 0x98, 0xC2,
    0x96, 0x4F, 0xE3, 0x42, 0xE2, 0xFE, 0x1A, 0x7F, 0x9B, 0x8E, 0xE7, 0xEB, 0x4A, 0x7C, 0x0F, 0x9E,
    0x16, 0x2B, 0xCE, 0x33, 0x57, 0x6B, 0x31, 0x5E, 0xCE, 0xCB, 0xB6, 0x40, 0x68, 0x37, 0xBF, 0x51,
    0xF5,
];

/// A whole verifier side of a session of `version`.
fn verifier_session(version: u16) -> Vec<VerifierMessage> {
    let mut messages = vec![
        VerifierMessage::Welcome(Welcome { version }),
        VerifierMessage::CredentialChallenge(CredentialChallenge {
            id_object: hv(&[0x44; 68]),
            encrypted_secret: hv(&[0x55; 256]),
        }),
        VerifierMessage::QuoteRequest(QuoteRequest {
            nonce: hv(&[0x00, 0x11, 0x22, 0x33]),
            selection: heapless::Vec::from_slice(&[
                PcrBank {
                    hash_alg: SHA256,
                    pcrs: 0b11,
                },
                PcrBank {
                    hash_alg: SHA1,
                    pcrs: 0x3FF,
                },
            ])
            .unwrap_or_default(),
        }),
        VerifierMessage::Verdict(Verdict {
            attested: true,
            software_version: hs("1.0"),
            valid_for_secs: 300,
            reason: hs(""),
        }),
    ];
    if version >= 2 {
        messages.push(VerifierMessage::ChannelKey(ChannelKey {
            public: hv(&P256_G),
        }));
        messages.push(VerifierMessage::Sealed(Sealed {
            seq: 0,
            body: hv(&[0x66; 60]),
        }));
    }
    messages
}

fn kmip(t: u32, value: Value) -> Item {
    Item::new(Tag::new(t).unwrap_or(tag::DATA), value)
}

fn text(t: Tag, s: &str) -> Item {
    Item::new(t, Value::TextString(s.into()))
}

fn attribute(name: &str, value: Value) -> Item {
    Item::structure(
        tag::ATTRIBUTE,
        vec![
            text(tag::ATTRIBUTE_NAME, name),
            Item::new(tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

/// A KMIP 1.4 Response Message with one successful batch item answering `operation`.
fn kmip_response(operation: u32, payload: Vec<Item>) -> Vec<u8> {
    let version = |major, minor| {
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(major)),
                Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(minor)),
            ],
        )
    };
    let message = Item::structure(
        tag::RESPONSE_MESSAGE,
        vec![
            Item::structure(
                tag::RESPONSE_HEADER,
                vec![
                    version(1, 4),
                    Item::new(tag::TIME_STAMP, Value::DateTime(1_800_000_000)),
                    Item::new(tag::BATCH_COUNT, Value::Integer(1)),
                ],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::new(tag::OPERATION, Value::Enumeration(operation)),
                    Item::new(tag::RESULT_STATUS, Value::Enumeration(0)),
                    Item::structure(tag::RESPONSE_PAYLOAD, payload),
                ],
            ),
        ],
    );
    message.encode(1 << 20).unwrap_or_default()
}

fn kmip_seeds() -> Vec<Vec<u8>> {
    let id = || text(tag::UNIQUE_IDENTIFIER, "42");
    let version = |minor| {
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(1)),
                Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(minor)),
            ],
        )
    };
    let key = Item::structure(
        tag::SYMMETRIC_KEY,
        vec![Item::structure(
            tag::KEY_BLOCK,
            vec![
                Item::new(tag::KEY_FORMAT_TYPE, Value::Enumeration(1)),
                Item::structure(
                    tag::KEY_VALUE,
                    vec![Item::new(tag::KEY_MATERIAL, Value::ByteString(vec![7; 32]))],
                ),
                Item::new(tag::CRYPTOGRAPHIC_ALGORITHM, Value::Enumeration(3)),
                Item::new(tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(256)),
            ],
        )],
    );
    vec![
        kmip_response(
            0x01,
            vec![Item::new(tag::OBJECT_TYPE, Value::Enumeration(2)), id()],
        ),
        kmip_response(
            0x08,
            vec![
                kmip(0x42_00D5, Value::Integer(2)),
                id(),
                text(tag::UNIQUE_IDENTIFIER, "43"),
            ],
        ),
        kmip_response(
            0x0A,
            vec![
                Item::new(tag::OBJECT_TYPE, Value::Enumeration(2)),
                id(),
                key,
            ],
        ),
        kmip_response(
            0x0B,
            vec![
                id(),
                attribute("State", Value::Enumeration(2)),
                attribute("Cryptographic Algorithm", Value::Enumeration(3)),
                attribute("Cryptographic Length", Value::Integer(256)),
                attribute("Cryptographic Usage Mask", Value::Integer(12)),
            ],
        ),
        kmip_response(0x12, vec![id()]),
        kmip_response(0x13, vec![id()]),
        kmip_response(0x14, vec![id()]),
        kmip_response(
            0x18,
            vec![
                Item::new(tag::OPERATION, Value::Enumeration(0x01)),
                Item::new(tag::OPERATION, Value::Enumeration(0x1F)),
                Item::new(tag::OBJECT_TYPE, Value::Enumeration(2)),
                text(tag::VENDOR_IDENTIFICATION, "PyKMIP"),
            ],
        ),
        kmip_response(0x1E, vec![version(4), version(2)]),
        kmip_response(
            0x1F,
            vec![
                id(),
                Item::new(tag::DATA, Value::ByteString(vec![9; 40])),
                Item::new(tag::IV_COUNTER_NONCE, Value::ByteString(vec![1; 12])),
                Item::new(
                    tag::AUTHENTICATED_ENCRYPTION_TAG,
                    Value::ByteString(vec![2; 16]),
                ),
            ],
        ),
        kmip_response(
            0x20,
            vec![
                id(),
                Item::new(tag::DATA, Value::ByteString(b"plain".to_vec())),
            ],
        ),
    ]
}

fn chunk_input(blob: u8, total: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0u16;
    for part in payload.chunks(300) {
        out.push(blob);
        out.extend(total.to_be_bytes());
        out.extend(offset.to_be_bytes());
        out.extend(u16::try_from(part.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(part);
        offset = offset.saturating_add(u16::try_from(part.len()).unwrap_or(0));
    }
    out
}

fn ciphertext(provider: &str, body: &[u8]) -> Vec<u8> {
    Ciphertext {
        header: Header {
            provider: provider.into(),
            context: Some("cluster:prod".into()),
            key_id: "42".into(),
            key_version: 1,
            nonce: [3; 12],
        },
        tag: [4; 16],
        body: body.to_vec(),
    }
    .encode()
    .unwrap_or_default()
}

/// Every generated seed (the ones read from test data files are listed by `make_seeds`).
#[must_use]
pub fn generated() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_owned(), bytes));
    };
    // Responses of the fake TPM to commands with these codes (and an error frame).
    for (name, cc, tail) in [
        ("get-random", 0x17Bu32, &[0x00, 0x08][..]),
        ("quote", 0x158, &[]),
        ("create-primary", 0x131, &[]),
        ("read-public", 0x173, &[]),
        ("pcr-read", 0x17E, &[0, 0, 0, 1, 0, 0x0B, 3, 0x03, 0, 0]),
        ("nv-read-public-handle-error", 0x169, &[]),
    ] {
        let mut command = vec![0x80, 0x01, 0, 0, 0, 0];
        command.extend(cc.to_be_bytes());
        command.extend_from_slice(tail);
        add("tpm_response", name, crate::fake_tpm::answer(&command));
    }
    add(
        "tpm_response",
        "rc-initialize",
        vec![0x80, 0x01, 0, 0, 0, 0x0A, 0, 0, 0x01, 0x00],
    );
    add("eventlog", "agent-sha1-sha256.bin", AGENT_EVENT_LOG.clone());
    add("eventlog", "agent-sha256.bin", agent_log(&[SHA256]));
    add("eventlog", "sha1-format.bin", sha1_log());
    add("eventlog_agent_roundtrip", "two-banks", {
        let mut v = vec![0b0011];
        v.extend([0, 8, 5]);
        v.extend(b"vouch");
        v.extend([1, 4, 4, 0, 0, 0, 0]);
        v
    });
    add("eventlog_agent_roundtrip", "four-banks-locality", {
        let mut v = vec![0b1111, 0, 3, 17];
        v.extend(b"StartupLocality\0\x03");
        v.extend([7, 0x4A, 2, 0xAB, 0xCD]);
        v
    });
    add("agent_session", "session-v2", frames(&verifier_session(2)));
    add("agent_session", "session-v1", frames(&verifier_session(1)));
    let mut all = verifier_session(2);
    all.push(VerifierMessage::Refused(vouch_proto::wire::Refused {
        kind: vouch_proto::wire::RefusalKind::Protocol,
        reason: hs("no"),
    }));
    add("proto_frames", "verifier-messages", frames(&all));
    add("proto_frames", "garbage-then-welcome", {
        let mut v = vec![1, 2, 3, 0, 0xFF, 0xFF, 0];
        v.extend(frames(&[VerifierMessage::Welcome(Welcome { version: 2 })]));
        v
    });
    let log = AGENT_EVENT_LOG.clone();
    if let Ok(chunks) = chunk::split(BlobKind::EventLog, &log) {
        let mut buf = vec![0u8; frame::MAX_FRAME];
        let mut stream = Vec::new();
        for c in chunks {
            if let Ok(bytes) = frame::encode(&vouch_proto::wire::AgentMessage::Chunk(c), &mut buf) {
                stream.extend_from_slice(bytes);
            }
        }
        add("proto_frames", "agent-chunks", stream);
    }
    let total = u16::try_from(log.len()).unwrap_or(0);
    add("proto_chunks", "event-log", chunk_input(1, total, &log));
    add("proto_chunks", "two-payloads", {
        let mut v = chunk_input(0, 700, &[0x30; 700]);
        v.extend(chunk_input(2, 64, &[0; 64]));
        v
    });
    for (i, bytes) in kmip_seeds().into_iter().enumerate() {
        add("kmip_responses", &format!("response-{i:02}"), bytes.clone());
        add("kmip_ttlv", &format!("response-{i:02}"), bytes);
    }
    add("keyprovider_ciphertext", "short", ciphertext("p", b"x"));
    add(
        "keyprovider_ciphertext",
        "data-key",
        ciphertext("cluster-a", &[0x42; 48]),
    );
    // vouchd's reassembly: a limit, then chunks as proto_chunks lays them out.
    add("vouchd_blob", "event-log", {
        let mut v = 4096u16.to_be_bytes().to_vec();
        v.extend(chunk_input(1, total, &log));
        v
    });
    add("vouchd_blob", "over-the-limit-then-two", {
        let mut v = 512u16.to_be_bytes().to_vec();
        v.extend(chunk_input(0, 700, &[0x30; 700]));
        v.extend(chunk_input(2, 64, &[0; 64]));
        v
    });
    for (name, bytes) in api_body_seeds() {
        add("api_bodies", name, bytes);
    }
    seeds
}

/// A valid body for each of `api_bodies`'s routes, after the byte that picks the route (its
/// index in the target's table); host operations start with a signature header line.
fn api_body_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let bodies: [(&str, &str); 12] = [
        (
            "principal",
            r#"{"name":"alice","kind":"person","groups":["TrustedAdmins"]}"#,
        ),
        ("token", r#"{"description":"ci"}"#),
        (
            "management-server",
            r#"{"id":"vc-2","certificate_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}"#,
        ),
        (
            "cluster",
            r#"{"name":"prod","pcrs":[0,1,7],"bank":"sha384"}"#,
        ),
        (
            "ca-certs",
            r#"{"certificate_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}"#,
        ),
        (
            "ek",
            r#"{"kind":"bare_public_key","pem":"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"}"#,
        ),
        (
            "software-version",
            r#"{"name":"fw-1","pcrs":{"sha256":{"0":"00000000000000000000000000000000000000000000000000000000000000aa"}}}"#,
        ),
        (
            "host",
            "id=vc-1; ts=1; nonce=00; sig=AA==\n{\"name\":\"h1\",\"ek_hash\":\"aa\"}",
        ),
        (
            "remove-cluster",
            "id=vc-1; ts=1; nonce=00; sig=AA==\n{\"force\":true}",
        ),
        ("cluster-key-provider", r#"{"provider":"kp-1"}"#),
        ("encrypt", r#"{"plaintext":"aGk=","aad":"eA=="}"#),
        (
            "batch",
            r#"{"items":[{"op":"decrypt","ciphertext":"AA=="}]}"#,
        ),
    ];
    bodies
        .iter()
        .zip(0u8..)
        .map(|((name, body), route)| {
            let mut v = vec![route];
            v.extend(body.as_bytes());
            (*name, v)
        })
        .collect()
}
