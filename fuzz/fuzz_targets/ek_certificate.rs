//! EK certificates and chain building (`vouch_attest::ek`): the input as a PEM or DER
//! certificate in every place of a chain — the EK certificate, a supplied intermediate, a
//! trusted CA — next to swtpm's real chain (root, intermediate, RSA EK certificate).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vouch_attest::ek::{
    EkEvidence, EkKey, EkTrust, certificates_from_pem_or_der, check_ca_certificate,
    check_issued_by, verify_ek,
};
use vouch_attest::tpm::Public;
use vouch_fuzz::fixtures::{EK_RSA, EK_RSA_PUBLIC, ISSUER_PEM, NOW, ROOT_PEM};

fn der(pem: &[u8]) -> Vec<u8> {
    certificates_from_pem_or_der(pem)
        .ok()
        .and_then(|mut certs| certs.pop())
        .unwrap_or_default()
}

static ROOT: LazyLock<Vec<u8>> = LazyLock::new(|| der(ROOT_PEM));
static ISSUER: LazyLock<Vec<u8>> = LazyLock::new(|| der(ISSUER_PEM));
static EK_PUBLIC: LazyLock<Option<Public>> =
    LazyLock::new(|| Public::from_tpm2b(EK_RSA_PUBLIC).ok());

fuzz_target!(|data: &[u8]| {
    let (root, issuer, ek_public) = (&*ROOT, &*ISSUER, &*EK_PUBLIC);
    let manufacturers = EkTrust::Manufacturers {
        cas: vec![root.clone()],
    };

    let _ = EkKey::from_certificate(data);
    let _ = EkKey::from_spki_der(data);
    let _ = check_ca_certificate(data, NOW);
    let _ = check_issued_by(data, issuer);
    let _ = check_issued_by(EK_RSA, data);
    let Ok(certs) = certificates_from_pem_or_der(data) else {
        return;
    };

    // The input as the EK certificate, with the real intermediate; then with the public area
    // presented too, and in the allow-list and bare-key modes.
    for cert in &certs {
        let intermediates = [issuer.clone()];
        let mut evidence = EkEvidence {
            public: None,
            certificate: Some(cert),
            intermediates: &intermediates,
        };
        let _ = verify_ek(&manufacturers, &evidence, NOW);
        evidence.public = ek_public.as_ref();
        let _ = verify_ek(&manufacturers, &evidence, NOW);
        if let Some(public) = &ek_public {
            let allowed = vec![EkKey::from_public(public)];
            let mode2 = EkTrust::ManufacturersAndAllowList {
                cas: vec![root.clone()],
                allowed: allowed.clone(),
            };
            let _ = verify_ek(&mode2, &evidence, NOW);
            let _ = verify_ek(&EkTrust::PublicKeys(allowed), &evidence, NOW);
        }
    }

    // The input's certificates as the supplied intermediates of the real EK certificate, then
    // with the real intermediate after them.
    let mut intermediates = certs.clone();
    let evidence = EkEvidence {
        public: None,
        certificate: Some(EK_RSA),
        intermediates: &intermediates,
    };
    let _ = verify_ek(&manufacturers, &evidence, NOW);
    intermediates.push(issuer.clone());
    let evidence = EkEvidence {
        public: None,
        certificate: Some(EK_RSA),
        intermediates: &intermediates,
    };
    let _ = verify_ek(&manufacturers, &evidence, NOW);

    // The input's certificates as the trusted CAs.
    if !certs.is_empty() {
        let intermediates = [issuer.clone()];
        let evidence = EkEvidence {
            public: None,
            certificate: Some(EK_RSA),
            intermediates: &intermediates,
        };
        let _ = verify_ek(&EkTrust::Manufacturers { cas: certs }, &evidence, NOW);
    }
});
