//! The QEMU board's `keys` mode: it attests to a real vouchd over its UART with a quote bound to
//! its ephemeral key, then, over the sealed channel, gets a data key and makes an encrypt and
//! decrypt round trip with a key provider on a real PyKMIP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

#[path = "../../verifier/kmip/tests/common/mod.rs"]
mod pykmip;

use std::time::Duration;

use hil_tests::qemu::{self, MPS2_AN386, RunOptions};
use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::{Verifier, ca_pems, ek_certificate_pem, image_software_version};
use serde_json::json;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn ok(verifier: &Verifier, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = verifier.call(method, path, Some(body)).unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {v}"
    );
    v
}

#[test]
fn the_board_gets_a_data_key_and_a_ciphertext_round_trip_over_the_bound_channel() {
    let elf = qemu::firmware_elf(&MPS2_AN386).unwrap();
    let mut swtpm = Swtpm::start().unwrap();
    let ek_pem = ek_certificate_pem(&swtpm).unwrap();
    swtpm.restart(false).unwrap();
    let kms = pykmip::PyKmip::start();
    let verifier = Verifier::start(600).unwrap();
    verifier
        .trust_cluster("boards", &ca_pems(&swtpm).unwrap(), &[0, 1])
        .unwrap();
    verifier
        .accept(
            "boards",
            &image_software_version("qemu-fw-1", &elf).unwrap(),
        )
        .unwrap();
    verifier.add_host("boards", "board-1", &ek_pem).unwrap();
    ok(
        &verifier,
        "POST",
        "/v1/key-servers",
        json!({
            "name": "kms-1",
            "endpoints": [format!("127.0.0.1:{}", kms.port)],
            "client_certificate_pem": kms.pki.client_cert,
            "client_key_pem": kms.pki.client_key,
            "ca_certificate_pem": kms.pki.ca,
        }),
    );
    let key = ok(&verifier, "POST", "/v1/key-servers/kms-1/keys", json!({}));
    ok(
        &verifier,
        "POST",
        "/v1/key-providers",
        json!({"name": "provider-1", "key_server": "kms-1", "primary_key_id": key["key_id"], "wrapping": "remote"}),
    );
    ok(
        &verifier,
        "PUT",
        "/v1/clusters/boards/key-provider",
        json!({"provider": "provider-1"}),
    );

    let options = RunOptions {
        mode: Some("attest-keys".into()),
        agent_link: Some(verifier.agent_addr()),
        firmware: None,
    };
    let outcome = qemu::run_with(&MPS2_AN386, &swtpm, RUN_TIMEOUT, &options).unwrap();
    eprintln!("QEMU run in {:?}:\n{}", outcome.elapsed, outcome.log);
    assert!(outcome.passed(), "{}", outcome.log);
    for line in [
        "verdict attested",
        "keys: data key",
        "keys: encrypted 24 bytes",
        "keys: decrypted 24 bytes: round trip OK",
    ] {
        assert!(
            outcome.log.contains(line),
            "{line:?} not in:\n{}",
            outcome.log
        );
    }
}
