//! KMIP TTLV (`vouch_kmip::ttlv`): whatever decodes must encode back to the same bytes and
//! decode again to the same item (the codec is strict: one encoding per item), and the length
//! the header announces (`item_len`, what the client reads before the body) must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_kmip::ttlv::{self, Limits};

fuzz_target!(|data: &[u8]| {
    let announced = ttlv::item_len(data, ttlv::MAX_MESSAGE_LEN);
    let Ok(item) = ttlv::decode(data) else {
        let _ = ttlv::decode_with_limits(
            data,
            Limits {
                max_len: 4096,
                max_depth: 3,
            },
        );
        return;
    };
    assert_eq!(
        announced.ok(),
        Some(data.len()),
        "item_len against a decoded item"
    );
    assert_eq!(item.encoded_len(), data.len());
    let encoded = match item.encode(ttlv::MAX_MESSAGE_LEN) {
        Ok(encoded) => encoded,
        Err(e) => panic!("a decoded item does not encode: {e:?}"),
    };
    assert_eq!(encoded, data, "decode then encode changed the bytes");
    let again = ttlv::decode(&encoded).ok();
    assert_eq!(again.as_ref(), Some(&item));
});
