//! The key provider's ciphertext format (`vouch_keyprovider::ciphertext`), which hosts send
//! back to be decrypted: whatever decodes must encode to the same bytes, and its header must be
//! the prefix of the GCM associated data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_keyprovider::ciphertext::Ciphertext;

fuzz_target!(|data: &[u8]| {
    let Ok(ciphertext) = Ciphertext::decode(data) else {
        return;
    };
    let encoded = ciphertext.encode();
    assert_eq!(
        encoded.as_deref().ok(),
        Some(data),
        "decode then encode changed the bytes"
    );
    let header = ciphertext
        .header
        .encode()
        .expect("a decoded header encodes");
    assert!(data.starts_with(&header));
    let aad = ciphertext
        .header
        .associated_data(b"caller")
        .expect("associated data");
    assert_eq!(aad.get(..header.len()), Some(header.as_slice()));
});
