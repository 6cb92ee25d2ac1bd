//! The attestation flow over swtpm's socket: proves the flow and the harness before any bus
//! is involved.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

mod common;

use hil_tests::swtpm::Swtpm;
use hil_tests::tpm::{Tpm, alg};

#[test]
fn attestation_flow_over_the_socket() {
    let swtpm = Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let mut tpm = Tpm::new(swtpm.connect().unwrap_or_else(|e| panic!("{e}")));
    let report = common::attestation_flow(&swtpm, &mut tpm);
    assert!(
        report.ek_cert_len > 500,
        "EK certificate of {} bytes",
        report.ek_cert_len
    );
    assert_eq!(report.banks, vec![alg::SHA1, alg::SHA256]);
}
