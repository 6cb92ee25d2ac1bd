//! Quote verification on real quotes made by swtpm (tests/data/quotes).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use vouch_attest::HashAlg;
use vouch_attest::codec::from_hex;
use vouch_attest::quote::{
    AttestationKey, ClockChange, QuoteError, QuoteExpectations, verify_quote,
};
use vouch_attest::tpm::{PcrSelection, Public, attr};
use vouch_attest::tpm2_tools::{parse_serialized_pcrs, parse_values_pcrs};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/quotes/").to_string() + name)
        .unwrap()
}

const NONCE: &[u8] = &[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
const ALL: [&str; 5] = [
    "ecc256-sha256",
    "ecc384-sha384",
    "rsa2048-sha256",
    "rsa2048-sha1",
    "rsapss2048-sha256",
];

fn ak(name: &str) -> AttestationKey {
    AttestationKey::from_public(Public::from_tpm2b(&data(&format!("{name}.ak.pub"))).unwrap())
        .unwrap()
}

fn check(name: &str, ak: &AttestationKey, nonce: &[u8]) -> Result<ClockChange, QuoteError> {
    let (sel, pcrs) = parse_serialized_pcrs(&data(&format!("{name}.pcrs"))).unwrap();
    let e = QuoteExpectations {
        nonce,
        selection: Some(&sel),
        pcrs: &pcrs,
        last: None,
        hash: None,
    };
    verify_quote(
        ak,
        &data(&format!("{name}.quote")),
        &data(&format!("{name}.sig")),
        &e,
    )
    .map(|v| v.clock_change())
}

#[test]
fn every_algorithm_verifies() {
    for name in ALL {
        check(name, &ak(name), NONCE).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn pem_aks_verify_too() {
    for name in ALL {
        let pem = data(&format!("{name}.ak.pem"));
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let ak = AttestationKey::from_spki(&pem.contents).unwrap();
        check(name, &ak, NONCE).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn names_match_tpm2_tools() {
    for name in ALL {
        let p = Public::from_tpm2b(&data(&format!("{name}.ak.pub"))).unwrap();
        assert_eq!(p.name(), data(&format!("{name}.ak.name")), "{name}");
    }
}

#[test]
fn wrong_nonce_is_refused() {
    let e = check("ecc256-sha256", &ak("ecc256-sha256"), &[1, 2, 3]).unwrap_err();
    assert_eq!(e.check(), "nonce");
}

#[test]
fn wrong_pcr_value_selection_and_extra_values_are_refused() {
    let name = "rsa2048-sha256";
    let ak = ak(name);
    let (sel, pcrs) = parse_serialized_pcrs(&data(&format!("{name}.pcrs"))).unwrap();
    let q = data(&format!("{name}.quote"));
    let s = data(&format!("{name}.sig"));
    let run = |sel: &PcrSelection, pcrs: &vouch_attest::PcrValues| {
        verify_quote(
            &ak,
            &q,
            &s,
            &QuoteExpectations {
                nonce: NONCE,
                selection: Some(sel),
                pcrs,
                last: None,
                hash: None,
            },
        )
    };
    let mut bad = pcrs.clone();
    bad.insert(HashAlg::Sha256, 7, vec![0; 32]);
    assert_eq!(run(&sel, &bad).unwrap_err().check(), "pcr-digest");
    let mut extra = pcrs.clone();
    extra.insert(HashAlg::Sha256, 9, vec![0; 32]);
    assert_eq!(run(&sel, &extra).unwrap_err().check(), "pcr-selection");
    let mut missing = pcrs.clone();
    missing.banks.get_mut(&HashAlg::Sha256).unwrap().remove(&0);
    assert_eq!(run(&sel, &missing).unwrap_err().check(), "pcr-values");
    let other = PcrSelection::new(vec![(HashAlg::Sha256, vec![0, 1, 2])]);
    assert_eq!(run(&other, &pcrs).unwrap_err().check(), "pcr-selection");
    let mut short = pcrs.clone();
    short.insert(HashAlg::Sha256, 7, vec![0; 20]);
    assert_eq!(run(&sel, &short).unwrap_err().check(), "pcr-values");
    // Required hash.
    let e = verify_quote(
        &ak,
        &q,
        &s,
        &QuoteExpectations {
            nonce: NONCE,
            selection: None,
            pcrs: &pcrs,
            last: None,
            hash: Some(HashAlg::Sha384),
        },
    )
    .unwrap_err();
    assert_eq!(e.check(), "signature-scheme");
}

#[test]
fn another_aks_quote_is_refused() {
    let e = check("rsa2048-sha256", &ak("rsapss2048-sha256"), NONCE).unwrap_err();
    assert_eq!(e.check(), "signature-scheme");
    // Same scheme, different key.
    let e = check("gce-ecc256", &ak("ecc256-sha256"), &[0x5e, 0xed]).unwrap_err();
    assert_eq!(e.check(), "signature");
}

#[test]
fn non_restricted_ak_is_refused() {
    let mut p = Public::from_tpm2b(&data("ecc256-sha256.ak.pub")).unwrap();
    p.attributes &= !attr::RESTRICTED;
    assert_eq!(AttestationKey::from_public(p).unwrap_err().check(), "ak");
}

#[test]
fn clock_must_not_go_back() {
    let ak = AttestationKey::from_public(Public::from_tpm2b(&data("ecc256-seq.ak.pub")).unwrap())
        .unwrap();
    let run = |n: &str, nonce: &[u8], last: Option<vouch_attest::tpm::ClockInfo>| {
        let (_, pcrs) = parse_serialized_pcrs(&data(&format!("{n}.pcrs"))).unwrap();
        verify_quote(
            &ak,
            &data(&format!("{n}.quote")),
            &data(&format!("{n}.sig")),
            &QuoteExpectations {
                nonce,
                selection: None,
                pcrs: &pcrs,
                last: last.as_ref(),
                hash: Some(HashAlg::Sha256),
            },
        )
    };
    let first = run("ecc256-seq1", &[0xaa], None).unwrap();
    assert_eq!(first.clock_change(), ClockChange::First);
    let second = run("ecc256-seq2", &[0xbb], Some(first.clock_info())).unwrap();
    assert_eq!(second.clock_change(), ClockChange::SameBoot);
    assert!(second.clock_info().clock > first.clock_info().clock);
    let e = run("ecc256-seq1", &[0xaa], Some(second.clock_info())).unwrap_err();
    assert_eq!(e.check(), "clock");
    let mut rebooted = first.clock_info();
    rebooted.reset_count += 1;
    assert_eq!(
        run("ecc256-seq2", &[0xbb], Some(rebooted))
            .unwrap_err()
            .check(),
        "clock"
    );
    let mut restarted = first.clock_info();
    restarted.restart_count += 1;
    assert_eq!(
        run("ecc256-seq2", &[0xbb], Some(restarted))
            .unwrap_err()
            .check(),
        "clock"
    );
}

/// Flipping any bit pattern of any byte of a quote or signature is refused.
#[test]
fn flipping_any_byte_is_refused() {
    for name in ALL {
        let ak = ak(name);
        let (sel, pcrs) = parse_serialized_pcrs(&data(&format!("{name}.pcrs"))).unwrap();
        let q = data(&format!("{name}.quote"));
        let s = data(&format!("{name}.sig"));
        let e = QuoteExpectations {
            nonce: NONCE,
            selection: Some(&sel),
            pcrs: &pcrs,
            last: None,
            hash: None,
        };
        verify_quote(&ak, &q, &s, &e).unwrap();
        for i in 0..q.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = q.clone();
                b[i] ^= flip;
                assert!(
                    verify_quote(&ak, &b, &s, &e).is_err(),
                    "{name} quote byte {i}"
                );
            }
        }
        for i in 0..s.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = s.clone();
                b[i] ^= flip;
                assert!(
                    verify_quote(&ak, &q, &b, &e).is_err(),
                    "{name} sig byte {i}"
                );
            }
        }
        // Truncation and extension too.
        for cut in 0..q.len() {
            assert!(verify_quote(&ak, &q[..cut], &s, &e).is_err());
        }
        let mut longer = q.clone();
        longer.push(0);
        assert!(verify_quote(&ak, &longer, &s, &e).is_err());
    }
}

#[test]
fn pcrread_values_file_matches_its_yaml_and_quote_file_matches_pcrread() {
    // tpm2_pcrread -o writes the "values" format by default.
    let sel = PcrSelection::new(vec![
        (HashAlg::Sha1, (0..=10).collect()),
        (HashAlg::Sha256, (0..=10).collect()),
    ]);
    let values = parse_values_pcrs(&data("pcrread-sha1-sha256.pcrs"), &sel).unwrap();
    let yaml = String::from_utf8(data("pcrread-sha1-sha256.yaml")).unwrap();
    let mut bank = None;
    let mut n = 0;
    for line in yaml.lines() {
        let t = line.trim();
        if let Some(b) = t.strip_suffix(':') {
            bank = HashAlg::from_name(b);
        } else if let Some((i, v)) = t.split_once(':') {
            let i: u32 = i.trim().parse().unwrap();
            assert_eq!(values.get(bank.unwrap(), i).unwrap(), from_hex(v).unwrap());
            n += 1;
        }
    }
    assert_eq!(n, 22);
    // tpm2_quote -o writes the serialized format: same TPM, same values.
    let (qsel, qvalues) = parse_serialized_pcrs(&data("rsapss2048-sha256.pcrs")).unwrap();
    assert_eq!(qsel, sel);
    assert_eq!(qvalues, values);
    assert!(parse_values_pcrs(&data("pcrread-sha1-sha256.pcrs")[1..], &sel).is_err());
}

#[test]
fn pcr_file_truncations_are_errors() {
    let b = data("rsapss2048-sha256.pcrs");
    for cut in 0..b.len() {
        assert!(parse_serialized_pcrs(&b[..cut]).is_err());
    }
}
