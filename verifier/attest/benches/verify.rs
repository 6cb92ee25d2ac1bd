//! Verification cost on one core (run under `taskset -c 0`):
//! the bare signature verification (aws-lc-rs, the same key and message: the
//! primitive under the quote check), the quote check alone (ECDSA P-256,
//! RSA-2048), and full evidence verification (quote, PCR digest, replay of a
//! real 112-event firmware log, software-version policy).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use criterion::{Criterion, criterion_group, criterion_main};
use vouch_attest::HashAlg;
use vouch_attest::eventlog;
use vouch_attest::evidence::verify_evidence;
use vouch_attest::policy::{Policy, SoftwareVersion};
use vouch_attest::quote::{AttestationKey, QuoteExpectations, verify_quote};
use vouch_attest::tpm::{Public, PublicKey, Signature};
use vouch_attest::tpm2_tools::parse_serialized_pcrs;

fn quotes(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/quotes/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn gce_log() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/eventlogs/tpm2-tools/event-gce-ubuntu-2104-log.bin"
    ))
    .unwrap()
}

/// Left-pads `b` with zeros to `n` bytes (an ECDSA coordinate or scalar).
fn fixed(b: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n.saturating_sub(b.len())];
    out.extend_from_slice(b);
    out
}

/// The AK of `public` parsed for aws-lc-rs and the quote's signature in the form aws-lc-rs
/// verifies, with nothing of vouch-attest in between: the primitive's cost.
fn bare(public: &Public, sig: &[u8]) -> (ParsedPublicKey, Vec<u8>) {
    match (&public.key, Signature::from_bytes(sig).unwrap()) {
        (PublicKey::Ecc { x, y, .. }, Signature::Ecdsa { hash, r, s }) => {
            assert_eq!(hash, HashAlg::Sha256);
            let point = [&[4u8][..], &fixed(x, 32), &fixed(y, 32)].concat();
            let key = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).unwrap();
            (key, [fixed(&r, 32), fixed(&s, 32)].concat())
        }
        (
            PublicKey::Rsa {
                exponent, modulus, ..
            },
            Signature::RsaSsa { hash, sig },
        ) => {
            assert_eq!(hash, HashAlg::Sha256);
            let e = exponent.to_be_bytes();
            let first = e.iter().position(|b| *b != 0).unwrap_or(e.len());
            let key = RsaPublicKeyComponents {
                n: modulus.as_slice(),
                e: &e[first..],
            }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .unwrap();
            (key, sig)
        }
        other => panic!("unexpected key and signature: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let log_bytes = gce_log();
    let log = eventlog::parse(&log_bytes).unwrap();
    let pcrs_list: Vec<u32> = (0..8).collect();
    let policy = Policy {
        accepted: vec![SoftwareVersion::from_event_log("gce", &log, &pcrs_list)],
        pcrs: pcrs_list,
        bank: HashAlg::Sha256,
    };
    for (label, name) in [("ecdsa_p256", "gce-ecc256"), ("rsa2048", "gce-rsa2048")] {
        let public = Public::from_tpm2b(&quotes(&format!("{name}.ak.pub"))).unwrap();
        let ak = AttestationKey::from_public(public.clone()).unwrap();
        let attest = quotes(&format!("{name}.quote"));
        let sig = quotes(&format!("{name}.sig"));
        let (bare_key, bare_sig) = bare(&public, &sig);
        bare_key.verify_sig(&attest, &bare_sig).unwrap();
        c.bench_function(&format!("signature_only/{label}"), |b| {
            b.iter(|| {
                bare_key
                    .verify_sig(black_box(&attest), black_box(&bare_sig))
                    .unwrap()
            })
        });
        let (sel, pcrs) = parse_serialized_pcrs(&quotes(&format!("{name}.pcrs"))).unwrap();
        let expect = QuoteExpectations {
            nonce: &[0x5e, 0xed],
            selection: Some(&sel),
            pcrs: &pcrs,
            last: None,
            hash: None,
        };
        verify_evidence(&ak, &attest, &sig, Some(&log_bytes), &expect, &policy).unwrap();
        c.bench_function(&format!("quote_check/{label}"), |b| {
            b.iter(|| verify_quote(&ak, black_box(&attest), black_box(&sig), &expect).unwrap())
        });
        c.bench_function(&format!("full_evidence_112_events/{label}"), |b| {
            b.iter(|| {
                verify_evidence(
                    &ak,
                    black_box(&attest),
                    black_box(&sig),
                    Some(black_box(&log_bytes)),
                    &expect,
                    &policy,
                )
                .unwrap()
            })
        });
    }
    c.bench_function("eventlog_parse_replay_112_events", |b| {
        b.iter(|| eventlog::parse(black_box(&log_bytes)).unwrap().replay())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
