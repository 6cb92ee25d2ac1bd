//! Every decoder refuses garbage with an error, never a panic: random
//! inputs and random mutations of real inputs (a deterministic PRNG, so a
//! failure reproduces).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use vouch_attest::ek::{EkEvidence, EkTrust, verify_ek};
use vouch_attest::eventlog;
use vouch_attest::tpm::{Attest, PcrSelection, Public, Signature};
use vouch_attest::tpm2_tools::{parse_serialized_pcrs, parse_values_pcrs};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = u8::try_from(rng.next() & 0xff).unwrap();
            }
            1 if !b.is_empty() => b.truncate(rng.below(b.len())),
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, u8::try_from(rng.next() & 0xff).unwrap());
            }
            _ if b.len() > 2 => {
                // A size field set to a large value.
                let i = rng.below(b.len() - 1);
                b[i] = 0xff;
                b[i + 1] = 0xff;
            }
            _ => {}
        }
    }
    b
}

fn decode_all(b: &[u8]) {
    let _ = eventlog::parse(b).map(|l| l.replay());
    let _ = Public::from_tpm2b(b).map(|p| p.name());
    let _ = Public::from_tpmt(b);
    let _ = Attest::from_bytes(b);
    let _ = Signature::from_bytes(b);
    let _ = parse_serialized_pcrs(b);
    let _ = parse_values_pcrs(b, &PcrSelection::default());
}

fn file(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let seeds = [
        file("tests/data/quotes/ecc256-sha256.quote"),
        file("tests/data/quotes/rsa2048-sha256.sig"),
        file("tests/data/quotes/ecc256-sha256.sig"),
        file("tests/data/quotes/ecc384-sha384.ak.pub"),
        file("tests/data/quotes/rsa2048-sha256.ak.pub"),
        file("tests/data/quotes/rsapss2048-sha256.pcrs"),
        file("../../testdata/eventlogs/tpm2-tools/event-uefiaction.bin"),
        file("../../testdata/eventlogs/tpm2-tools/event-uefi-sha1-log.bin"),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..2000 {
        let len = rng.below(300);
        let b: Vec<u8> = (0..len)
            .map(|_| u8::try_from(rng.next() & 0xff).unwrap())
            .collect();
        decode_all(&b);
    }
    for seed in &seeds {
        for _ in 0..1500 {
            decode_all(&mutate(&mut rng, seed));
        }
    }
}

#[test]
fn mutated_certificates_never_panic() {
    let ek = file("tests/data/ek/ek-secp384r1.crt");
    let ca = file("tests/data/ek/swtpm-localca-issuer.pem");
    let ca = vouch_attest::ek::certificates_from_pem_or_der(&ca).unwrap();
    let trust = EkTrust::Manufacturers { cas: ca };
    let mut rng = Rng(42);
    for _ in 0..1500 {
        let b = mutate(&mut rng, &ek);
        let _ = verify_ek(
            &trust,
            &EkEvidence {
                public: None,
                certificate: Some(&b),
                intermediates: &[],
            },
            1_798_761_600,
        );
    }
}
