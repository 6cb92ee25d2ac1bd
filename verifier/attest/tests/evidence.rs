//! Full evidence: a real quote over a TPM that measured a real 112-event
//! firmware log, replay, and the software-version policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use vouch_attest::HashAlg;
use vouch_attest::eventlog;
use vouch_attest::evidence::{EvidenceError, verify_evidence};
use vouch_attest::policy::{HexBytes, Policy, SoftwareVersion, evaluate};
use vouch_attest::quote::{AttestationKey, QuoteExpectations};
use vouch_attest::tpm::Public;
use vouch_attest::tpm2_tools::parse_serialized_pcrs;

fn quotes(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/quotes/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}
fn log(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../testdata/eventlogs/tpm2-tools/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const PCRS: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

fn gce_version(name: &str, finals: bool, events: bool) -> SoftwareVersion {
    let bytes = log("event-gce-ubuntu-2104-log.bin");
    let l = eventlog::parse(&bytes).unwrap();
    let mut v = SoftwareVersion::from_event_log(name, &l, &PCRS);
    if !finals {
        v.pcrs.clear();
    }
    if !events {
        v.events.clear();
    }
    v
}

fn run(policy: &Policy, ak: &str, log_bytes: Option<&[u8]>) -> Result<String, EvidenceError> {
    let ak =
        AttestationKey::from_public(Public::from_tpm2b(&quotes(&format!("{ak}.ak.pub"))).unwrap())
            .unwrap();
    let (sel, pcrs) = parse_serialized_pcrs(&quotes("gce-ecc256.pcrs")).unwrap();
    let expect = QuoteExpectations {
        nonce: &[0x5e, 0xed],
        selection: Some(&sel),
        pcrs: &pcrs,
        last: None,
        hash: None,
    };
    verify_evidence(
        &ak,
        &quotes(&format!("{ak_name}.quote", ak_name = "gce-ecc256")),
        &quotes("gce-ecc256.sig"),
        log_bytes,
        &expect,
        policy,
    )
    .map(|v| v.version().name().to_string())
}

fn policy(accepted: Vec<SoftwareVersion>) -> Policy {
    Policy {
        accepted,
        pcrs: PCRS.to_vec(),
        bank: HashAlg::Sha256,
    }
}

#[test]
fn real_evidence_is_accepted_by_event_digests_and_by_final_values() {
    let l = log("event-gce-ubuntu-2104-log.bin");
    let by_events = policy(vec![gce_version("gce-events", false, true)]);
    assert_eq!(
        run(&by_events, "gce-ecc256", Some(&l)).unwrap(),
        "gce-events"
    );
    let by_values = policy(vec![gce_version("gce-values", true, false)]);
    assert_eq!(
        run(&by_values, "gce-ecc256", Some(&l)).unwrap(),
        "gce-values"
    );
    // Final values need no log.
    assert_eq!(run(&by_values, "gce-ecc256", None).unwrap(), "gce-values");
    // Event digests do.
    let e = run(&by_events, "gce-ecc256", None).unwrap_err();
    assert!(e.to_string().contains("no event log"), "{e}");
}

#[test]
fn the_first_matching_version_wins_and_refusals_name_each_version() {
    let l = log("event-gce-ubuntu-2104-log.bin");
    let mut old = gce_version("v1-old", false, true);
    // The old version measured a different bootloader into PCR 4.
    old.events
        .get_mut(&HashAlg::Sha256)
        .unwrap()
        .get_mut(&4)
        .unwrap()[1] = HexBytes(vec![0xab; 32]);
    let p = policy(vec![old.clone(), gce_version("v2", false, true)]);
    assert_eq!(run(&p, "gce-ecc256", Some(&l)).unwrap(), "v2");
    let p = policy(vec![old]);
    let e = run(&p, "gce-ecc256", Some(&l)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EvidenceError::Policy(_)));
    assert!(
        msg.contains("v1-old") && msg.contains("PCR 4") && msg.contains("event "),
        "{msg}"
    );
    let mut wrong_final = gce_version("v3", true, false);
    wrong_final
        .pcrs
        .get_mut(&HashAlg::Sha256)
        .unwrap()
        .insert(7, HexBytes(vec![0; 32]));
    let e = run(&policy(vec![wrong_final]), "gce-ecc256", Some(&l)).unwrap_err();
    assert!(e.to_string().contains("PCR 7"), "{e}");
    let e = run(&policy(vec![]), "gce-ecc256", Some(&l)).unwrap_err();
    assert!(e.to_string().contains("no software version"), "{e}");
}

#[test]
fn a_log_that_does_not_match_the_quote_is_refused() {
    let p = policy(vec![gce_version("gce", true, false)]);
    let e = run(&p, "gce-ecc256", Some(&log("event-bootorder.bin"))).unwrap_err();
    assert!(matches!(e, EvidenceError::Replay(_)), "{e}");
    let e = run(&p, "gce-ecc256", Some(&[1, 2, 3])).unwrap_err();
    assert!(matches!(e, EvidenceError::EventLog(_)), "{e}");
    // And the quote itself is checked first.
    let e = run(
        &p,
        "gce-rsa2048",
        Some(&log("event-gce-ubuntu-2104-log.bin")),
    )
    .unwrap_err();
    assert!(matches!(e, EvidenceError::Quote(_)), "{e}");
}

#[test]
fn policy_json_round_trip() {
    let p = policy(vec![gce_version("gce", true, true)]);
    let json = serde_json::to_string_pretty(&p).unwrap();
    assert!(json.contains("\"sha256\""));
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    // A hand-written policy.
    let hand =
        r#"{"accepted":[{"name":"x","pcrs":{"sha256":{"0":"00"}}}],"pcrs":[0],"bank":"sha256"}"#;
    let p: Policy = serde_json::from_str(hand).unwrap();
    assert_eq!(p.accepted[0].pcrs[&HashAlg::Sha256][&0], HexBytes(vec![0]));
    assert!(serde_json::from_str::<Policy>(&hand.replace("\"00\"", "\"zz\"")).is_err());
    let _ = evaluate;
}
