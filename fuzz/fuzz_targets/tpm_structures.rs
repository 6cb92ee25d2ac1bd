//! TPM structures as the verifier decodes them: TPM2B_PUBLIC / TPMT_PUBLIC (and the AK built
//! from one), TPMS_ATTEST and TPMT_SIGNATURE, then a whole quote check with the input split into
//! the attestation and the signature. None may panic; a decoded public area must give a Name.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vouch_attest::PcrValues;
use vouch_attest::quote::{AttestationKey, QuoteExpectations, verify_quote};
use vouch_attest::tpm::{Attest, Public, Signature};
use vouch_fuzz::{fixtures, split2};

/// The ECC and the RSA AK of the quote fixtures.
static AKS: LazyLock<Vec<AttestationKey>> = LazyLock::new(|| {
    [fixtures::AK_ECC, fixtures::AK_RSA]
        .into_iter()
        .filter_map(|ak| Public::from_tpm2b(ak).ok())
        .filter_map(|ak| AttestationKey::from_public(ak).ok())
        .collect()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(public) = Public::from_tpm2b(data) {
        let _ = public.name();
        let _ = public.ecc_point();
        let _ = AttestationKey::from_public(public);
    }
    let _ = Public::from_tpmt(data);
    let _ = AttestationKey::from_spki(data);
    if let Ok(attest) = Attest::from_bytes(data) {
        let _ = attest.pcr_select.normalized().to_string();
    }
    if let Ok(sig) = Signature::from_bytes(data) {
        let _ = (sig.hash(), sig.scheme());
    }

    let (attest, signature) = split2(data);
    let pcrs = PcrValues::default();
    let expect = QuoteExpectations {
        nonce: &[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77],
        selection: None,
        pcrs: &pcrs,
        last: None,
        hash: None,
    };
    for ak in AKS.iter() {
        let _ = verify_quote(ak, attest, signature, &expect);
    }
});
