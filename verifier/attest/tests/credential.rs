//! MakeCredential: known answers from go-tpm's vectors (validated against
//! the TCG reference implementation; some activated by a real TPM).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::Value;
use vouch_attest::HashAlg;
use vouch_attest::codec::from_hex;
use vouch_attest::credential::{
    CredentialError, check_ak, encapsulate_ecc, encapsulate_rsa, kdfa, kdfe, make_credential,
    make_credential_with,
};
use vouch_attest::tpm::{Public, attr};

fn vectors(name: &str) -> Vec<Value> {
    let p = format!(
        "{}/../../testdata/tpm-vectors/go-tpm/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn hex(v: &Value, k: &str) -> Vec<u8> {
    from_hex(v[k].as_str().unwrap()).unwrap()
}

fn hash(v: &Value) -> HashAlg {
    HashAlg::from_id(u16::try_from(v["HashAlg"].as_u64().unwrap()).unwrap()).unwrap()
}

#[test]
fn kdfa_known_answers() {
    let vs = vectors("kdfa.json");
    assert_eq!(vs.len(), 100);
    for v in &vs {
        let out = kdfa(
            hash(v),
            &hex(v, "Key"),
            v["Label"].as_str().unwrap(),
            &hex(v, "ContextU"),
            &hex(v, "ContextV"),
            u32::try_from(v["Bits"].as_u64().unwrap()).unwrap(),
        );
        assert_eq!(out, hex(v, "Result"), "{}", v["Name"]);
    }
}

#[test]
fn kdfe_known_answers() {
    let vs = vectors("kdfe.json");
    assert_eq!(vs.len(), 100);
    for v in &vs {
        let out = kdfe(
            hash(v),
            &hex(v, "Z"),
            v["Label"].as_str().unwrap(),
            &hex(v, "ContextU"),
            &hex(v, "ContextV"),
            u32::try_from(v["Bits"].as_u64().unwrap()).unwrap(),
        );
        assert_eq!(out, hex(v, "Result"), "{}", v["Name"]);
    }
}

#[test]
fn rsa_labeled_encapsulation_known_answers() {
    let vs = vectors("rsa_labeled_encaps.json");
    assert_eq!(vs.len(), 100);
    for v in &vs {
        let key = Public::from_tpmt(&hex(v, "PublicKey")).unwrap();
        let c = encapsulate_rsa(
            &key,
            v["Label"].as_str().unwrap(),
            &hex(v, "Secret"),
            &hex(v, "OAEPSalt"),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v["Name"]));
        assert_eq!(c, hex(v, "Ciphertext"), "{}", v["Name"]);
    }
}

#[test]
fn ecc_labeled_encapsulation_known_answers() {
    let vs = vectors("ecc_labeled_encaps.json");
    assert_eq!(vs.len(), 100);
    for v in &vs {
        let key = Public::from_tpmt(&hex(v, "PublicKey")).unwrap();
        let (seed, point) = encapsulate_ecc(
            &key,
            v["Label"].as_str().unwrap(),
            &hex(v, "EphemeralPrivate"),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v["Name"]));
        assert_eq!(point, hex(v, "Ciphertext"), "{}", v["Name"]);
        assert_eq!(seed, hex(v, "Secret"), "{}", v["Name"]);
    }
}

fn quote_data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn ak_attributes_and_name() {
    let ak = Public::from_tpm2b(&quote_data("quotes/ecc256-sha256.ak.pub")).unwrap();
    assert_eq!(
        check_ak(&ak).unwrap(),
        quote_data("quotes/ecc256-sha256.ak.name")
    );
    for (bit, name) in [
        (attr::RESTRICTED, "restricted"),
        (attr::SIGN, "sign"),
        (attr::FIXED_TPM, "fixedTPM"),
        (attr::FIXED_PARENT, "fixedParent"),
        (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    ] {
        let mut bad = ak.clone();
        bad.attributes &= !bit;
        let e = check_ak(&bad).unwrap_err();
        assert!(e.to_string().contains(name), "{e}");
    }
    let mut dec = ak.clone();
    dec.attributes |= attr::DECRYPT;
    assert!(check_ak(&dec).unwrap_err().to_string().contains("decrypt"));
    // An EK is not an AK.
    let ek = Public::from_tpm2b(&quote_data("ek/ek-rsa2048.pub")).unwrap();
    assert!(check_ak(&ek).is_err());
}

#[test]
fn make_credential_shapes_and_refusals() {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ak = Public::from_tpm2b(&quote_data("quotes/ecc256-sha256.ak.pub")).unwrap();
    for ek in [
        "ek/ek-rsa2048.pub",
        "ek/ek-secp384r1.pub",
        "quotes/ek-rsa.pub",
    ] {
        let ek = Public::from_tpm2b(&quote_data(ek)).unwrap();
        let c = make_credential(&ek, &ak, &[7u8; 32], &rng).unwrap();
        // TPM2B_ID_OBJECT: size, TPM2B_DIGEST(HMAC with nameAlg), encIdentity (2 + 32).
        assert_eq!(c.id_object.len(), 2 + 2 + ek.name_alg.size() + 2 + 32);
        assert_eq!(
            &c.id_object[..2],
            &u16::try_from(c.id_object.len() - 2).unwrap().to_be_bytes()
        );
        // Two runs differ (fresh seed).
        let c2 = make_credential(&ek, &ak, &[7u8; 32], &rng).unwrap();
        assert_ne!(c.encrypted_secret, c2.encrypted_secret);
    }
    let ek = Public::from_tpm2b(&quote_data("ek/ek-rsa2048.pub")).unwrap();
    assert!(matches!(
        make_credential(&ek, &ak, &[0u8; 33], &rng),
        Err(CredentialError::CredentialSize { .. })
    ));
    // The AK cannot stand in for the EK.
    assert!(matches!(
        make_credential(&ak, &ak, &[1], &rng),
        Err(CredentialError::Ek(_))
    ));
    // Deterministic given the seed material.
    let name = ak.name();
    let a = make_credential_with(&ek, &name, b"secret", &[1; 32], &[2; 32]).unwrap();
    let b = make_credential_with(&ek, &name, b"secret", &[1; 32], &[2; 32]).unwrap();
    assert_eq!(a, b);
}
