//! A key server that misbehaves after the TLS handshake: the client answers with a typed error
//! and never waits forever or allocates what the peer claims.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions"
)]

mod common;

use common::{Reply, fake_server};
use std::time::Duration;
use vouch_kmip::message;
use vouch_kmip::ttlv::{DecodeErrorKind, MAX_MESSAGE_LEN};
use vouch_kmip::{Error, KeyServer, Operation, ProtocolVersion};

async fn ask(reply: Reply) -> Error {
    let pki = common::Pki::new();
    let endpoint = fake_server(&pki, reply).await;
    let kms = KeyServer::new(
        vec![endpoint],
        pki.client_cert.as_bytes(),
        pki.client_key.as_bytes(),
        pki.ca.as_bytes(),
    )
    .unwrap()
    .with_timeout(Duration::from_secs(1));
    let mut connection = kms.connect().await.unwrap();
    connection.get("1").await.unwrap_err()
}

#[tokio::test]
async fn a_huge_length_is_refused_before_reading_it() {
    // A Response Message header claiming almost 4 GiB.
    let err = ask(Reply::Bytes(vec![
        0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF0,
    ]))
    .await;
    let Error::Malformed { source, .. } = &err else {
        panic!("expected Malformed, got {err}");
    };
    assert!(
        matches!(source.kind, DecodeErrorKind::TooLarge { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn silence_is_a_timeout() {
    let err = ask(Reply::Silence).await;
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn an_answer_to_another_operation_is_a_protocol_error() {
    let reply = message::request(ProtocolVersion::V1_2, Operation::Get, vec![]);
    // A request message is not a response message.
    let err = ask(Reply::Bytes(reply.encode(MAX_MESSAGE_LEN).unwrap())).await;
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn bad_padding_is_malformed_with_its_offset() {
    // A structure holding an integer whose padding is not zero.
    let reply = vec![
        0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 16, //
        0x42, 0x00, 0x7F, 0x05, 0, 0, 0, 4, //
        0, 0, 0, 0, 0, 0, 0, 9,
    ];
    let err = ask(Reply::Bytes(reply)).await;
    let Error::Malformed { source, .. } = &err else {
        panic!("expected Malformed, got {err}");
    };
    assert_eq!(source.offset, 23);
    assert_eq!(source.kind, DecodeErrorKind::NonZeroPadding);
}

#[tokio::test]
async fn a_partial_header_then_silence_is_a_timeout() {
    let err = ask(Reply::Bytes(vec![0x42, 0x00, 0x7B])).await;
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn a_connection_closed_mid_message_is_an_io_error() {
    let err = ask(Reply::Close(vec![0x42, 0x00, 0x7B])).await;
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("connection to the key server"),
        "{err}"
    );
}
