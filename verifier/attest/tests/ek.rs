//! EK trust: the three modes, on swtpm's manufacturer-style chain, the 51
//! real vendor CA certificates, and chains made here with rcgen.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use vouch_attest::ek::{
    EkError, EkEvidence, EkKey, EkTrust, TrustMode, certificates_from_pem_or_der,
    check_ca_certificate, check_issued_by, verify_ek,
};
use vouch_attest::tpm::Public;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/ek/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}
fn pem(name: &str) -> Vec<u8> {
    certificates_from_pem_or_der(&data(name)).unwrap().remove(0)
}

/// 2027-01-01, inside the swtpm certificates' validity.
const NOW: i64 = 1_798_761_600;

fn mode1(cas: Vec<Vec<u8>>) -> EkTrust {
    EkTrust::Manufacturers { cas }
}

#[test]
fn swtpm_chain_mode1() {
    let ek = data("ek-rsa2048.crt");
    let inter = vec![pem("swtpm-localca-issuer.pem")];
    let public = Public::from_tpm2b(&data("ek-rsa2048.pub")).unwrap();
    let ev = EkEvidence {
        public: Some(&public),
        certificate: Some(&ek),
        intermediates: &inter,
    };
    let t = verify_ek(&mode1(vec![pem("swtpm-localca-root.pem")]), &ev, NOW).unwrap();
    assert_eq!(t.mode(), TrustMode::Manufacturer);
    let info = t.tpm_info().unwrap();
    assert_eq!(info.manufacturer.as_deref(), Some("id:00001014"));
    assert_eq!(info.model.as_deref(), Some("swtpm"));
    assert_eq!(info.version.as_deref(), Some("id:20191023"));
    assert_eq!(t.chain().len(), 3);
    // Trusting the issuing CA directly works too.
    let ev2 = EkEvidence {
        intermediates: &[],
        ..ev
    };
    verify_ek(&mode1(vec![pem("swtpm-localca-issuer.pem")]), &ev2, NOW).unwrap();
    // Without the intermediate, the root alone cannot reach the EK.
    let e = verify_ek(&mode1(vec![pem("swtpm-localca-root.pem")]), &ev2, NOW).unwrap_err();
    assert!(matches!(e, EkError::NoChain(_)), "{e}");
    assert!(e.to_string().contains("swtpm-localca"), "{e}");
}

#[test]
fn swtpm_ecc_ek_and_key_mismatch() {
    let ek = data("ek-secp384r1.crt");
    let inter = vec![pem("swtpm-localca-issuer.pem")];
    let trust = mode1(vec![pem("swtpm-localca-root.pem")]);
    let ev = EkEvidence {
        public: None,
        certificate: Some(&ek),
        intermediates: &inter,
    };
    let t = verify_ek(&trust, &ev, NOW).unwrap();
    assert!(matches!(t.key(), EkKey::Ecc { .. }));
    let wrong = Public::from_tpm2b(&data("ek-ecc256-not-the-certified-key.pub")).unwrap();
    let e = verify_ek(
        &trust,
        &EkEvidence {
            public: Some(&wrong),
            ..ev
        },
        NOW,
    )
    .unwrap_err();
    assert_eq!(e, EkError::KeyMismatch);
    // The RSA EK's public presented with the ECC certificate.
    let rsa = Public::from_tpm2b(&data("ek-rsa2048.pub")).unwrap();
    let e = verify_ek(
        &trust,
        &EkEvidence {
            public: Some(&rsa),
            ..ev
        },
        NOW,
    )
    .unwrap_err();
    assert_eq!(e, EkError::KeyMismatch);
}

#[test]
fn validity_is_checked_against_the_given_time() {
    let ek = data("ek-rsa2048.crt");
    let inter = vec![pem("swtpm-localca-issuer.pem")];
    let ev = EkEvidence {
        public: None,
        certificate: Some(&ek),
        intermediates: &inter,
    };
    let trust = mode1(vec![pem("swtpm-localca-root.pem")]);
    let e = verify_ek(&trust, &ev, 1_600_000_000).unwrap_err();
    assert!(e.to_string().contains("not valid before"), "{e}");
    let e = verify_ek(&trust, &ev, 253_402_300_800 + 10).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

#[test]
fn mode2_requires_the_individual_ek() {
    let ek = data("ek-rsa2048.crt");
    let inter = vec![pem("swtpm-localca-issuer.pem")];
    let ev = EkEvidence {
        public: None,
        certificate: Some(&ek),
        intermediates: &inter,
    };
    let cas = vec![pem("swtpm-localca-root.pem")];
    let listed = EkTrust::ManufacturersAndAllowList {
        cas: cas.clone(),
        allowed: vec![EkKey::from_certificate(&ek).unwrap()],
    };
    let t = verify_ek(&listed, &ev, NOW).unwrap();
    assert_eq!(t.mode(), TrustMode::ManufacturerAndAllowList);
    // Listed by its TPM public area instead of its certificate.
    let public = Public::from_tpm2b(&data("ek-rsa2048.pub")).unwrap();
    let by_key = EkTrust::ManufacturersAndAllowList {
        cas: cas.clone(),
        allowed: vec![EkKey::from_public(&public)],
    };
    verify_ek(&by_key, &ev, NOW).unwrap();
    // A valid chain but another TPM on the list.
    let other = EkTrust::ManufacturersAndAllowList {
        cas,
        allowed: vec![EkKey::from_certificate(&data("ek-secp384r1.crt")).unwrap()],
    };
    let e = verify_ek(&other, &ev, NOW).unwrap_err();
    assert!(matches!(e, EkError::NotListed(_)), "{e}");
}

#[test]
fn mode3_bare_public_keys() {
    let public = Public::from_tpm2b(&data("ek-rsa2048.pub")).unwrap();
    let trust = EkTrust::PublicKeys(vec![EkKey::from_public(&public)]);
    let ev = EkEvidence {
        public: Some(&public),
        certificate: None,
        intermediates: &[],
    };
    let t = verify_ek(&trust, &ev, NOW).unwrap();
    assert_eq!(t.mode(), TrustMode::PublicKey);
    let other = Public::from_tpm2b(&data("ek-ecc256-not-the-certified-key.pub")).unwrap();
    let e = verify_ek(
        &trust,
        &EkEvidence {
            public: Some(&other),
            ..ev
        },
        NOW,
    )
    .unwrap_err();
    assert!(matches!(e, EkError::NotListed(_)));
    // Mode 1 without a certificate says what to do.
    let e = verify_ek(&mode1(vec![pem("swtpm-localca-root.pem")]), &ev, NOW).unwrap_err();
    assert_eq!(e, EkError::NoCertificate);
}

#[test]
fn rsa_pss_signed_chain() {
    let ek = data("pss-ek.der");
    let ev = EkEvidence {
        public: None,
        certificate: Some(&ek),
        intermediates: &[],
    };
    verify_ek(&mode1(vec![pem("pss-root.pem")]), &ev, NOW).unwrap();
    // And not by another root.
    assert!(verify_ek(&mode1(vec![pem("swtpm-localca-root.pem")]), &ev, NOW).is_err());
}

fn vendor_cas() -> Vec<(String, Vec<u8>)> {
    let dir = format!(
        "{}/../../testdata/ek-ca/keylime-tpm_cert_store",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        for der in certificates_from_pem_or_der(&std::fs::read(&p).unwrap()).unwrap() {
            out.push((name.clone(), der));
        }
    }
    out.sort();
    out
}

#[test]
fn real_vendor_cas_parse_and_chain() {
    let cas = vendor_cas();
    assert_eq!(cas.len(), 51);
    // 2024-06-01: when every one of these CAs was valid.
    let when = 1_717_200_000;
    let mut self_signed_ok = 0;
    for (name, der) in &cas {
        match check_ca_certificate(der, when) {
            Ok(_) => self_signed_ok += 1,
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert_eq!(self_signed_ok, 51);
    // Every intermediate whose issuer is in the store verifies against it
    // (RSA PKCS#1 and ECDSA signatures by real manufacturers).
    let mut chained = Vec::new();
    for (name, der) in &cas {
        for (iname, ider) in &cas {
            if name != iname && check_issued_by(der, ider).is_ok() {
                chained.push(format!("{name} <- {iname}"));
            }
        }
    }
    for expected in [
        "IFX_RSA_01I.pem <- IFX_RSA_RT.pem",
        "IFX_RSA_08I.pem <- IFX_RSA_RT.pem",
        "INF_ECC_011.pem <- INF_ECC_010RT.pem",
        "INF_RSA_011.pem <- INF_RSA_010RT.pem",
        "INTEL_I.pem <- INTEL_RT.pem",
        "STM_ECC_01I.pem <- STM_ECC_01RT.pem",
        "STM_RSA_05I.pem <- STM_RSA_RT.pem",
    ] {
        assert!(
            chained.iter().any(|c| c == expected),
            "{expected} not in {chained:?}"
        );
    }
    assert!(chained.len() >= 20, "{chained:?}");
}

#[test]
fn swtpm_ek_is_refused_by_real_vendor_cas() {
    let ek = data("ek-rsa2048.crt");
    let trust = mode1(vendor_cas().into_iter().map(|(_, d)| d).collect());
    let ev = EkEvidence {
        public: None,
        certificate: Some(&ek),
        intermediates: &[],
    };
    let e = verify_ek(&trust, &ev, NOW).unwrap_err();
    assert!(
        e.to_string().contains("issued by 'CN=swtpm-localca'"),
        "{e}"
    );
}

// ---- chains made with rcgen ----

fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![u8::try_from(n).unwrap()]
    } else if n < 256 {
        vec![0x81, u8::try_from(n).unwrap()]
    } else {
        vec![
            0x82,
            u8::try_from(n >> 8).unwrap(),
            u8::try_from(n & 0xff).unwrap(),
        ]
    }
}
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(body.len()));
    v.extend_from_slice(body);
    v
}

/// SubjectAltName with a directoryName of TPM manufacturer, model, version.
fn tpm_san(manufacturer: &str, model: &str, version: &str) -> CustomExtension {
    let attr = |last: u8, v: &str| {
        let oid = tlv(0x06, &[0x67, 0x81, 0x05, 0x02, last]);
        let val = tlv(0x0c, v.as_bytes());
        tlv(0x31, &tlv(0x30, &[oid, val].concat()))
    };
    let name = tlv(
        0x30,
        &[attr(1, manufacturer), attr(2, model), attr(3, version)].concat(),
    );
    let san = tlv(0x30, &tlv(0xa4, &name));
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 17], san);
    ext.set_criticality(true);
    ext
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p
}

fn root(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let params = ca_params(cn);
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Ca { params, key, der }
}

fn sub_ca(
    cn: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    by: &Ca,
    params: Option<CertificateParams>,
) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let params = params.unwrap_or_else(|| ca_params(cn));
    let issuer = Issuer::from_params(&by.params, &by.key);
    let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
    Ca { params, key, der }
}

fn ek_params() -> CertificateParams {
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name = DistinguishedName::new(); // empty subject, as the TCG profile has it
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
    p.custom_extensions = vec![tpm_san("id:49465800", "SLB9670", "id:000F0001")];
    p.not_before = rcgen::date_time_ymd(2021, 1, 1);
    p.not_after = rcgen::date_time_ymd(2039, 1, 1);
    p
}

fn ek_cert(params: CertificateParams, alg: &'static rcgen::SignatureAlgorithm, by: &Ca) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let issuer = Issuer::from_params(&by.params, &by.key);
    params.signed_by(&key, &issuer).unwrap().der().to_vec()
}

fn check(ek: &[u8], inter: &[&Ca], root: &Ca) -> Result<vouch_attest::ek::TrustedEk, EkError> {
    let inter: Vec<Vec<u8>> = inter.iter().map(|c| c.der.clone()).collect();
    verify_ek(
        &mode1(vec![root.der.clone()]),
        &EkEvidence {
            public: None,
            certificate: Some(ek),
            intermediates: &inter,
        },
        NOW,
    )
}

#[test]
fn tcg_profile_ek_with_empty_subject_and_tpm_san() {
    for (root_alg, inter_alg) in [
        (
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ),
        (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        (&rcgen::PKCS_RSA_SHA256, &rcgen::PKCS_RSA_SHA384),
        (&rcgen::PKCS_RSA_SHA512, &rcgen::PKCS_ECDSA_P256_SHA256),
    ] {
        let r = root("Test TPM Root", root_alg);
        let i = sub_ca("Test TPM Intermediate", inter_alg, &r, None);
        let ek = ek_cert(ek_params(), &rcgen::PKCS_ECDSA_P256_SHA256, &i);
        let t = check(&ek, &[&i], &r).unwrap_or_else(|e| panic!("{e}"));
        let info = t.tpm_info().unwrap();
        assert_eq!(info.manufacturer.as_deref(), Some("id:49465800"));
        assert_eq!(info.manufacturer_ascii.as_deref(), Some("IFX"));
        assert_eq!(info.model.as_deref(), Some("SLB9670"));
        assert_eq!(info.version.as_deref(), Some("id:000F0001"));
    }
}

#[test]
fn refusals_say_why() {
    let r = root("Root", &rcgen::PKCS_ECDSA_P256_SHA256);
    let i = sub_ca("Intermediate", &rcgen::PKCS_ECDSA_P256_SHA256, &r, None);
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;

    let mut p = ek_params();
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let e = check(&ek_cert(p, alg, &i), &[&i], &r).unwrap_err();
    assert!(e.to_string().contains("keyAgreement"), "{e}");

    let mut p = ek_params();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let e = check(&ek_cert(p, alg, &i), &[&i], &r).unwrap_err();
    assert!(e.to_string().contains("2.23.133.8.1"), "{e}");

    let mut p = ek_params();
    let mut unknown = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
    unknown.set_criticality(true);
    p.custom_extensions.push(unknown);
    let e = check(&ek_cert(p, alg, &i), &[&i], &r).unwrap_err();
    assert!(e.to_string().contains("critical extension 1.2.3.4"), "{e}");

    let mut p = ek_params();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let e = check(&ek_cert(p, alg, &i), &[&i], &r).unwrap_err();
    assert!(e.to_string().contains("CA certificate"), "{e}");

    let mut p = ek_params();
    p.not_after = rcgen::date_time_ymd(2022, 1, 1);
    let e = check(&ek_cert(p, alg, &i), &[&i], &r).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    // An intermediate that is not a CA.
    let mut np = ca_params("Not a CA");
    np.is_ca = IsCa::ExplicitNoCa;
    let not_ca = sub_ca("Not a CA", alg, &r, Some(np));
    let e = check(&ek_cert(ek_params(), alg, &not_ca), &[&not_ca], &r).unwrap_err();
    assert!(e.to_string().contains("not a CA"), "{e}");

    // An expired intermediate.
    let mut xp = ca_params("Expired CA");
    xp.not_after = rcgen::date_time_ymd(2021, 6, 1);
    let expired = sub_ca("Expired CA", alg, &r, Some(xp));
    let e = check(&ek_cert(ek_params(), alg, &expired), &[&expired], &r).unwrap_err();
    assert!(
        e.to_string().contains("Expired CA") && e.to_string().contains("expired"),
        "{e}"
    );

    // An impostor CA with the same name but another key.
    let impostor = root("Root", &rcgen::PKCS_ECDSA_P256_SHA256);
    let e = check(&ek_cert(ek_params(), alg, &i), &[&i], &impostor).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");

    // Flipping bytes of the EK certificate is refused.
    let ek = ek_cert(ek_params(), alg, &i);
    check(&ek, &[&i], &r).unwrap();
    for k in 0..ek.len() {
        let mut b = ek.clone();
        b[k] ^= 0x01;
        assert!(check(&b, &[&i], &r).is_err(), "byte {k}");
    }
}

#[test]
fn flipping_any_byte_of_a_real_ek_certificate_is_refused() {
    for cert in ["ek-rsa2048.crt", "ek-secp384r1.crt"] {
        let ek = data(cert);
        let inter = vec![pem("swtpm-localca-issuer.pem")];
        let trust = mode1(vec![pem("swtpm-localca-root.pem")]);
        let ev = |c: &[u8]| {
            verify_ek(
                &trust,
                &EkEvidence {
                    public: None,
                    certificate: Some(c),
                    intermediates: &inter,
                },
                NOW,
            )
        };
        ev(&ek).unwrap();
        for k in 0..ek.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = ek.clone();
                b[k] ^= flip;
                assert!(ev(&b).is_err(), "{cert} byte {k} ^ {flip:#x}");
            }
        }
    }
}

/// A real STMicro ST33 EK certificate as its NV index holds it: 1,169 bytes of DER, then
/// 0xFF up to the index's 1,600 bytes (Keylime's test data). It is trusted through the real
/// STM RSA root and intermediate 05, alone or in the TCG NV header `10 01 00 <length>`; other
/// trailing bytes are still refused.
#[test]
fn a_real_st33_ek_certificate_with_its_ff_fill_is_trusted() {
    let nv = std::fs::read(format!(
        "{}/../../testdata/ek-certs/keylime-st33/st33-rsa-ek-nv.der",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(nv.len(), 1600);
    assert!(nv[1169..].iter().all(|&b| b == 0xFF));
    let cas = vendor_cas();
    let ca = |name: &str| {
        cas.iter()
            .find(|(n, _)| n == name)
            .map(|(_, der)| der.clone())
            .unwrap()
    };
    let trust = mode1(vec![ca("STM_RSA_RT.pem")]);
    let inter = vec![ca("STM_RSA_05I.pem")];
    let check = |cert: &[u8]| {
        verify_ek(
            &trust,
            &EkEvidence {
                public: None,
                certificate: Some(cert),
                intermediates: &inter,
            },
            NOW,
        )
    };
    let t = check(&nv).unwrap();
    assert_eq!(t.mode(), TrustMode::Manufacturer);
    assert_eq!(
        t.tpm_info().unwrap().model.as_deref(),
        Some("ST33HTPHAHB4"),
        "{:?}",
        t.tpm_info()
    );
    assert_eq!(*t.key(), EkKey::from_certificate(&nv[..1169]).unwrap());
    // Wrapped in the NV header.
    let mut wrapped = vec![0x10, 0x01, 0x00];
    wrapped.extend_from_slice(&1169u16.to_be_bytes());
    wrapped.extend_from_slice(&nv[..1169]);
    check(&wrapped).unwrap();
    // Trailing bytes that are not the fill are refused.
    let mut other = nv[..1169].to_vec();
    other.extend_from_slice(&[0x00, 0x01]);
    assert!(check(&other).is_err());
}
