//! The TTLV decoder on arbitrary input: it never panics, and what it accepts re-encodes to the
//! same bytes; encoded items decode to themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions"
)]

use proptest::prelude::*;
use vouch_kmip::message::{self};
use vouch_kmip::ttlv::{self, Item, MAX_MESSAGE_LEN, Tag, Value};
use vouch_kmip::{Operation, ProtocolVersion, SymmetricKeyTemplate};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::Integer),
        any::<i64>().prop_map(Value::LongInteger),
        prop::collection::vec(any::<[u8; 8]>(), 0..3)
            .prop_map(|words| Value::BigInteger(words.concat())),
        any::<u32>().prop_map(Value::Enumeration),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,20}".prop_map(Value::TextString),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
        any::<i64>().prop_map(Value::DateTime),
        any::<u32>().prop_map(Value::Interval),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let tag = (0u32..=0x00FF_FFFF).prop_map(|t| Tag::new(t).unwrap());
    let leaf_item = (tag.clone(), leaf()).prop_map(|(tag, value)| Item::new(tag, value));
    leaf_item.prop_recursive(6, 64, 8, move |inner| {
        (tag.clone(), prop::collection::vec(inner, 0..8))
            .prop_map(|(tag, items)| Item::structure(tag, items))
    })
}

/// A real request, to mutate.
fn sample() -> Vec<u8> {
    message::request(
        ProtocolVersion::V1_4,
        Operation::Create,
        message::create_payload(&SymmetricKeyTemplate::aes_256(Some("name"))),
    )
    .encode(MAX_MESSAGE_LEN)
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(item) = ttlv::decode(&bytes) {
            prop_assert_eq!(item.encode(MAX_MESSAGE_LEN).unwrap(), bytes);
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sample();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let len = bytes.len();
        for input in [&bytes[..], &bytes[..cut.index(len)]] {
            match ttlv::decode(input) {
                Ok(item) => {
                    prop_assert_eq!(item.encode(MAX_MESSAGE_LEN).unwrap(), input.to_vec());
                    // Reading it as a response must not panic either.
                    let _ = message::response(item, Operation::Get);
                }
                Err(e) => prop_assert!(e.offset <= input.len()),
            }
        }
    }

    #[test]
    fn items_round_trip(item in item()) {
        let bytes = item.encode(MAX_MESSAGE_LEN).unwrap();
        prop_assert_eq!(bytes.len(), item.encoded_len());
        prop_assert_eq!(bytes.len() % 8, 0);
        prop_assert_eq!(ttlv::decode(&bytes).unwrap(), item);
    }
}
