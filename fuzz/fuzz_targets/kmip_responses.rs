//! Every KMIP operation response the client reads (`vouch_kmip::message`): a decoded TTLV
//! message through the response envelope for each operation, then every payload reader, on
//! the envelope's payload and on the decoded item itself (so mutations reach the readers
//! without first building a whole Response Message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_kmip::Operation;
use vouch_kmip::message::{self, Response};
use vouch_kmip::ttlv::{self, Item};

const OPERATIONS: [Operation; 11] = [
    Operation::Create,
    Operation::Locate,
    Operation::Get,
    Operation::GetAttributes,
    Operation::Activate,
    Operation::Revoke,
    Operation::Destroy,
    Operation::Query,
    Operation::DiscoverVersions,
    Operation::Encrypt,
    Operation::Decrypt,
];

fn read_payload(payload: &Item) {
    let _ = message::identifier_response(payload);
    let _ = message::discover_versions_response(payload);
    let _ = message::query_response(payload);
    let _ = message::locate_response(payload);
    if let Ok(attributes) = message::get_attributes_response(payload) {
        let _ = message::state_of(&attributes);
        let _ = message::find_enumeration(&attributes, "Cryptographic Algorithm");
        let _ = message::find_integer(&attributes, "Cryptographic Length");
        for a in &attributes {
            let _ = (a.as_enumeration(), a.as_integer());
        }
    }
    let _ = message::get_symmetric_key_response(payload);
    let _ = message::encrypt_response(payload);
    let _ = message::decrypt_response(payload);
}

fuzz_target!(|data: &[u8]| {
    let Ok(item) = ttlv::decode(data) else {
        return;
    };
    read_payload(&item);
    for operation in OPERATIONS {
        if let Ok(Response {
            payload: Some(payload),
            ..
        }) = message::response(item.clone(), operation)
        {
            read_payload(&payload);
        }
    }
    let mut wiped = item;
    message::zeroize_item(&mut wiped);
});
