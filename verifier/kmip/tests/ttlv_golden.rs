//! Golden bytes for the TTLV codec and the KMIP messages.
//!
//! Provenance:
//! - `spec_*`: the encoding examples of the KMIP 1.2 / 1.4 specification, section 9.1.2
//!   ("Examples"), byte for byte.
//! - `pykmip_*`: the same messages encoded by PyKMIP 0.11 (`kmip.core.messages`, an independent
//!   implementation), captured once and pinned here; requests must be byte-identical to ours,
//!   responses must be read as PyKMIP's server would send them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions"
)]

use vouch_kmip::message::{self, CipherInput};
use vouch_kmip::spec::tag;
use vouch_kmip::ttlv::{
    self, DecodeErrorKind, Item, ItemType, Limits, MAX_MESSAGE_LEN, Tag, Value,
};
use vouch_kmip::{
    CryptographicAlgorithm, CryptographicParameters, Operation, ProtocolVersion, ResultReason,
    ResultStatus, SymmetricKeyTemplate,
};

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        })
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

const T: Tag = match Tag::new(0x42_0020) {
    Some(t) => t,
    None => panic!(),
};

fn tag(value: u32) -> Tag {
    Tag::new(value).unwrap()
}

/// Encodes `item`, checks the bytes, and checks they decode back to `item`.
fn golden(item: &Item, expected: &str) {
    let bytes = item.encode(MAX_MESSAGE_LEN).unwrap();
    assert_eq!(bytes, hex(expected), "encoding of {item:?}");
    assert_eq!(&ttlv::decode(&bytes).unwrap(), item);
}

#[test]
fn spec_integer() {
    golden(
        &Item::new(T, Value::Integer(8)),
        "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
    );
}

#[test]
fn spec_long_integer() {
    golden(
        &Item::new(T, Value::LongInteger(123_456_789_000_000_000)),
        "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
    );
}

#[test]
fn spec_big_integer() {
    // 1234567890000000000000000000, sign-extended to a multiple of 8 bytes.
    golden(
        &Item::new(
            T,
            Value::BigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")),
        ),
        "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
    );
}

#[test]
fn spec_enumeration() {
    golden(
        &Item::new(T, Value::Enumeration(255)),
        "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
    );
}

#[test]
fn spec_boolean() {
    golden(
        &Item::new(T, Value::Boolean(true)),
        "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
    );
}

#[test]
fn spec_text_string() {
    golden(
        &Item::new(T, Value::TextString("Hello World".into())),
        "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
    );
}

#[test]
fn spec_byte_string() {
    golden(
        &Item::new(T, Value::ByteString(vec![1, 2, 3])),
        "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
    );
}

#[test]
fn spec_date_time() {
    // Friday, March 14, 2008, 11:56:40 GMT.
    golden(
        &Item::new(T, Value::DateTime(0x47DA_67F8)),
        "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
    );
}

#[test]
fn spec_interval() {
    // 10 days.
    golden(
        &Item::new(T, Value::Interval(10 * 24 * 3600)),
        "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
    );
}

#[test]
fn spec_structure() {
    golden(
        &Item::structure(
            T,
            vec![
                Item::new(tag(0x42_0004), Value::Enumeration(254)),
                Item::new(tag(0x42_0005), Value::Integer(255)),
            ],
        ),
        "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | \
         42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
    );
}

#[test]
fn empty_strings_and_structures_have_no_value_bytes() {
    golden(
        &Item::new(T, Value::TextString(String::new())),
        "42 00 20 07 00 00 00 00",
    );
    golden(
        &Item::new(T, Value::ByteString(vec![])),
        "42 00 20 08 00 00 00 00",
    );
    golden(&Item::structure(T, vec![]), "42 00 20 01 00 00 00 00");
}

const PYKMIP_DISCOVER_VERSIONS_1_2: &str = "42007801000000b04200770100000038420069010000002042006a0200000004000000010000000042006b0200000004000000020000000042000d0200000004000000010000000042000f010000006842005c05000000040000001e000000004200790100000050420069010000002042006a0200000004000000010000000042006b02000000040000000400000000420069010000002042006a0200000004000000010000000042006b02000000040000000200000000";

const PYKMIP_CREATE_AES_256_1_2: &str = "42007801000001684200770100000038420069010000002042006a0200000004000000010000000042006b0200000004000000020000000042000d0200000004000000010000000042000f010000012042005c0500000004000000010000000042007901000001084200570500000004000000020000000042009101000000f0420008010000003042000a070000001743727970746f6772617068696320416c676f726974686d0042000b05000000040000000300000000420008010000003042000a070000001443727970746f67726170686963204c656e6774680000000042000b02000000040000010000000000420008010000003042000a070000001843727970746f67726170686963205573616765204d61736b42000b02000000040000000c00000000420008010000004042000a07000000044e616d650000000042000b0100000028420055070000000a766f7563682d7465737400000000000042005405000000040000000100000000";

const PYKMIP_ENCRYPT_GCM_1_4: &str = "42007801000000e04200770100000038420069010000002042006a0200000004000000010000000042006b0200000004000000040000000042000d0200000004000000010000000042000f010000009842005c05000000040000001f0000000042007901000000804200940700000001370000000000000042002b010000003042001105000000040000000900000000420028050000000400000003000000004200ce020000000400000010000000004200c20800000005766f75636800000042003d080000000c000000000000000000000000000000004200fe08000000036161640000000000";

/// A Get response for key "7": AES-256, Raw, material 00..1f.
const PYKMIP_GET_RESPONSE: &str = "42007b010000011042007a0100000048420069010000002042006a0200000004000000010000000042006b020000000400000002000000004200920900000008000000005f5e100042000d0200000004000000010000000042000f01000000b842005c05000000040000000a0000000042007f0500000004000000000000000042007c0100000090420057050000000400000002000000004200940700000001370000000000000042008f010000006842004001000000604200420500000004000000010000000042004501000000284200430800000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f4200280500000004000000030000000042002a02000000040000010000000000";

/// A failed Get: Operation Failed, Item Not Found.
const PYKMIP_GET_FAILED: &str = "42007b01000000b042007a0100000048420069010000002042006a0200000004000000010000000042006b020000000400000002000000004200920900000008000000005f5e100042000d0200000004000000010000000042000f010000005842005c05000000040000000a0000000042007f0500000004000000010000000042007e0500000004000000010000000042007d070000001a436f756c64206e6f74206c6f63617465206f626a6563743a2039000000000000";

#[test]
fn pykmip_discover_versions_request() {
    let request = message::request(
        ProtocolVersion::V1_2,
        Operation::DiscoverVersions,
        message::discover_versions_payload(&[ProtocolVersion::V1_4, ProtocolVersion::V1_2]),
    );
    assert_eq!(
        request.encode(MAX_MESSAGE_LEN).unwrap(),
        hex(PYKMIP_DISCOVER_VERSIONS_1_2)
    );
}

#[test]
fn pykmip_create_request() {
    let request = message::request(
        ProtocolVersion::V1_2,
        Operation::Create,
        message::create_payload(&SymmetricKeyTemplate::aes_256(Some("vouch-test"))),
    );
    assert_eq!(
        request.encode(MAX_MESSAGE_LEN).unwrap(),
        hex(PYKMIP_CREATE_AES_256_1_2)
    );
}

#[test]
fn pykmip_encrypt_request() {
    let input = CipherInput {
        parameters: CryptographicParameters::aes_gcm(),
        data: b"vouch",
        iv: Some(&[0; 12]),
        aad: Some(b"aad"),
        tag: None,
    };
    let request = message::request(
        ProtocolVersion::V1_4,
        Operation::Encrypt,
        message::cipher_payload("7", &input),
    );
    assert_eq!(
        request.encode(MAX_MESSAGE_LEN).unwrap(),
        hex(PYKMIP_ENCRYPT_GCM_1_4)
    );
}

#[test]
fn pykmip_get_response() {
    let item = ttlv::decode(&hex(PYKMIP_GET_RESPONSE)).unwrap();
    let response = message::response(item, Operation::Get).unwrap();
    assert_eq!(response.status, ResultStatus::Success);
    let key = message::get_symmetric_key_response(&response.payload.unwrap()).unwrap();
    assert_eq!(key.id, "7");
    assert_eq!(key.algorithm, CryptographicAlgorithm::Aes);
    assert_eq!(key.length, 256);
    assert_eq!(*key.material, (0u8..32).collect::<Vec<_>>());
    assert!(
        !format!("{key:?}").contains("0, 1, 2"),
        "Debug shows key material"
    );
}

#[test]
fn pykmip_failed_response() {
    let item = ttlv::decode(&hex(PYKMIP_GET_FAILED)).unwrap();
    let response = message::response(item, Operation::Get).unwrap();
    assert_eq!(response.status, ResultStatus::OperationFailed);
    assert_eq!(response.reason, Some(ResultReason::ItemNotFound));
    assert_eq!(
        response.message.as_deref(),
        Some("Could not locate object: 9")
    );
    assert!(response.payload.is_none());
}

#[test]
fn a_response_to_another_operation_is_a_violation() {
    let item = ttlv::decode(&hex(PYKMIP_GET_RESPONSE)).unwrap();
    let err = message::response(item, Operation::Destroy).unwrap_err();
    assert!(err.0.contains("Destroy"), "{err:?}");
}

#[test]
fn item_len_frames_a_stream() {
    let bytes = hex(PYKMIP_GET_RESPONSE);
    assert_eq!(
        ttlv::item_len(&bytes[..8], MAX_MESSAGE_LEN).unwrap(),
        bytes.len()
    );
    let err = ttlv::item_len(&bytes[..8], 64).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::TooLarge { .. }));
    let err = ttlv::item_len(&bytes[..5], MAX_MESSAGE_LEN).unwrap_err();
    assert!(matches!(
        err.kind,
        DecodeErrorKind::Truncated { missing: 3 }
    ));
}

/// Decodes `bytes` expecting an error of `kind` at `offset`.
fn refused(bytes: &str, offset: usize, kind: DecodeErrorKind) {
    let err = ttlv::decode(&hex(bytes)).unwrap_err();
    assert_eq!((err.offset, err.kind), (offset, kind), "{bytes}");
}

#[test]
fn decode_errors_name_the_offset() {
    refused(
        "42 00 20 02 00 00",
        4,
        DecodeErrorKind::Truncated { missing: 2 },
    );
    refused(
        "42 00 20 0B 00 00 00 04",
        3,
        DecodeErrorKind::UnknownType(0x0B),
    );
    refused(
        "42 00 20 02 00 00 00 08 00 00 00 08 00 00 00 00",
        4,
        DecodeErrorKind::BadLength {
            item_type: ItemType::Integer,
            len: 8,
        },
    );
    refused(
        "42 00 20 02 00 00 00 04 00 00 00 08 00 00 01 00",
        14,
        DecodeErrorKind::NonZeroPadding,
    );
    refused(
        "42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02",
        8,
        DecodeErrorKind::BadBoolean,
    );
    refused(
        "42 00 20 07 00 00 00 02 C3 28 00 00 00 00 00 00",
        8,
        DecodeErrorKind::BadUtf8,
    );
    refused(
        "42 00 20 08 00 00 00 01 AA 00 00 00 00 00 00 00 | 00",
        16,
        DecodeErrorKind::TrailingBytes(1),
    );
    // A string claiming 4 GiB in a 16-byte input.
    refused(
        "42 00 20 08 FF FF FF FF 00 00 00 00 00 00 00 00",
        4,
        DecodeErrorKind::Truncated {
            missing: 0x1_0000_0000 - 8,
        },
    );
    // A structure of 8 bytes whose child claims 8 bytes of value: it overruns its parent.
    refused(
        "42 00 20 01 00 00 00 08 | 42 00 04 02 00 00 00 04 | 00 00 00 01 00 00 00 00",
        12,
        DecodeErrorKind::Overrun,
    );
    refused(
        "42 00 20 01 00 00 00 04 00 00 00 00 00 00 00 00",
        4,
        DecodeErrorKind::BadLength {
            item_type: ItemType::Structure,
            len: 4,
        },
    );
}

#[test]
fn the_size_limit_holds() {
    let bytes = Item::new(T, Value::ByteString(vec![7; 100]))
        .encode(MAX_MESSAGE_LEN)
        .unwrap();
    let limits = Limits {
        max_len: 64,
        ..Limits::default()
    };
    let err = ttlv::decode_with_limits(&bytes, limits).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::TooLarge { len: 112, max: 64 });
    let err = Item::new(T, Value::ByteString(vec![7; 100]))
        .encode(64)
        .unwrap_err();
    assert!(matches!(
        err,
        ttlv::EncodeError::TooLarge { len: 112, max: 64 }
    ));
}

#[test]
fn response_header_is_required() {
    let message = Item::structure(
        tag::RESPONSE_MESSAGE,
        vec![Item::structure(tag::BATCH_ITEM, vec![])],
    );
    assert!(message::response(message, Operation::Get).is_err());
}
