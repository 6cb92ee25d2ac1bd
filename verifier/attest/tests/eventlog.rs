//! Every real log in the shared test data replays exactly to the PCR values
//! tpm2-tools' `tpm2_eventlog` computed for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

use vouch_attest::codec::{from_hex, to_hex};
use vouch_attest::eventlog::{self, LogFormat, ReplayMismatch};
use vouch_attest::{HashAlg, PcrValues};

fn logs_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/eventlogs/tpm2-tools"
    ))
}

/// The `pcrs:` section of tpm2_eventlog's YAML.
fn expected_pcrs(yaml: &str) -> PcrValues {
    let mut out = PcrValues::default();
    let mut in_pcrs = false;
    let mut bank = None;
    for line in yaml.lines() {
        if line.starts_with("pcrs:") {
            in_pcrs = true;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        let t = line.trim();
        if let Some(name) = t.strip_suffix(':') {
            bank = Some(HashAlg::from_name(name).unwrap());
        } else if let Some((idx, val)) = t.split_once(':') {
            out.insert(
                bank.unwrap(),
                idx.trim().parse().unwrap(),
                from_hex(val.trim()).unwrap(),
            );
        }
    }
    out
}

#[test]
fn every_real_log_replays_to_tpm2_tools_values() {
    let mut n = 0;
    for entry in std::fs::read_dir(logs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let yaml =
            std::fs::read_to_string(logs_dir().join("expected").join(format!("{name}.yaml")))
                .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let log = eventlog::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let replay = log.replay();
        let expected = expected_pcrs(&yaml);
        assert_eq!(replay.pcrs, expected, "{name}");
        // And the replay is consistent with itself as a quote.
        log.check_against(&replay, &expected).unwrap();
        n += 1;
    }
    assert_eq!(n, 11);
}

#[test]
fn sha1_format_log() {
    let bytes = std::fs::read(logs_dir().join("event-uefi-sha1-log.bin")).unwrap();
    let log = eventlog::parse(&bytes).unwrap();
    assert_eq!(log.format, LogFormat::Sha1);
    assert!(log.spec_id.is_none());
}

#[test]
fn crypto_agile_log_with_three_banks() {
    let bytes = std::fs::read(logs_dir().join("event-gce-ubuntu-2104-log.bin")).unwrap();
    let log = eventlog::parse(&bytes).unwrap();
    assert_eq!(log.format, LogFormat::CryptoAgile);
    assert_eq!(
        log.banks(),
        vec![HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384]
    );
    let replay = log.replay();
    assert_eq!(replay.pcrs.banks.len(), 3);
}

#[test]
fn every_truncation_is_an_error_with_offset_not_a_panic() {
    let bytes = std::fs::read(logs_dir().join("event-uefivar.bin")).unwrap();
    // A crypto-agile log can only end on a record boundary.
    let log = eventlog::parse(&bytes).unwrap();
    let boundaries: Vec<usize> = log.events.iter().map(|e| e.offset).collect();
    for cut in 1..bytes.len() {
        let r = eventlog::parse(&bytes[..cut]);
        if boundaries.contains(&cut) {
            assert!(r.is_ok(), "cut {cut}");
        } else {
            let e = r.unwrap_err();
            assert!(e.offset <= cut, "cut {cut}: offset {}", e.offset);
        }
    }
}

#[test]
fn hostile_sizes_are_refused() {
    let bytes = std::fs::read(logs_dir().join("event-uefivar.bin")).unwrap();
    let log = eventlog::parse(&bytes).unwrap();
    // Set the second event's digest count to 0xffffffff.
    let off = log.events[1].offset + 8;
    let mut bad = bytes.clone();
    bad[off..off + 4].copy_from_slice(&[0xff; 4]);
    let e = eventlog::parse(&bad).unwrap_err();
    assert_eq!(e.offset, off);
    assert!(e.to_string().contains("digest count"), "{e}");
    // Event data size beyond the end.
    let mut bad = bytes.clone();
    let ev = &log.events[1];
    let size_off = ev.offset + 12 + ev.digests.iter().map(|(_, d)| 2 + d.len()).sum::<usize>();
    bad[size_off..size_off + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    let e = eventlog::parse(&bad).unwrap_err();
    assert_eq!(e.offset, size_off + 4);
    // PCR index out of range.
    let mut bad = bytes.clone();
    bad[ev.offset] = 99;
    assert!(
        eventlog::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("PCR index")
    );
}

#[test]
fn mismatch_names_pcr_and_event() {
    let bytes = std::fs::read(logs_dir().join("event-gce-ubuntu-2104-log.bin")).unwrap();
    let log = eventlog::parse(&bytes).unwrap();
    let replay = log.replay();
    let mut quoted = replay.pcrs.clone();
    // The TPM saw one event fewer on PCR 4 than the log claims.
    let events: Vec<_> = log
        .events
        .iter()
        .filter(|e| e.pcr == 4 && e.event_type != eventlog::EV_NO_ACTION && e.number > 0)
        .collect();
    let mut v = vec![0u8; 32];
    for e in &events[..events.len() - 1] {
        v = HashAlg::Sha256
            .hash(&[&v, e.digest(HashAlg::Sha256).unwrap()])
            .unwrap();
    }
    quoted.banks.retain(|a, _| *a == HashAlg::Sha256);
    quoted.insert(HashAlg::Sha256, 4, v);
    match log.check_against(&replay, &quoted).unwrap_err() {
        ReplayMismatch::Pcr { pcr, event, .. } => {
            assert_eq!(pcr, 4);
            assert_eq!(event, Some(events.last().unwrap().number));
        }
        e => panic!("{e}"),
    }
    // A bank the log does not carry.
    let mut q = PcrValues::default();
    q.insert(HashAlg::Sha512, 0, vec![0; 64]);
    assert!(matches!(
        log.check_against(&replay, &q),
        Err(ReplayMismatch::MissingBank(HashAlg::Sha512))
    ));
    // A PCR the log never extends must hold its initial value.
    let mut q = PcrValues::default();
    q.insert(HashAlg::Sha256, 16, vec![0; 32]);
    log.check_against(&replay, &q).unwrap();
    q.insert(HashAlg::Sha256, 16, vec![1; 32]);
    assert!(log.check_against(&replay, &q).is_err());
    let _ = to_hex(&[]);
}

#[test]
fn startup_locality_sets_pcr0_initial_value() {
    // A crypto-agile log: Spec ID (sha256 only), StartupLocality 3, one event on PCR 0.
    let mut spec = Vec::new();
    spec.extend_from_slice(b"Spec ID Event03\0");
    spec.extend_from_slice(&0u32.to_le_bytes());
    spec.extend_from_slice(&[0, 2, 0, 2]);
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&0x000bu16.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0);
    let mut log = Vec::new();
    log.extend_from_slice(&0u32.to_le_bytes());
    log.extend_from_slice(&3u32.to_le_bytes());
    log.extend_from_slice(&[0; 20]);
    log.extend_from_slice(&u32::try_from(spec.len()).unwrap().to_le_bytes());
    log.extend_from_slice(&spec);
    let mut event2 = |pcr: u32, ty: u32, digest: [u8; 32], data: &[u8]| {
        log.extend_from_slice(&pcr.to_le_bytes());
        log.extend_from_slice(&ty.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0x000bu16.to_le_bytes());
        log.extend_from_slice(&digest);
        log.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        log.extend_from_slice(data);
    };
    event2(0, 3, [0; 32], b"StartupLocality\0\x03");
    event2(0, 8, [7; 32], b"crtm");
    let parsed = eventlog::parse(&log).unwrap();
    assert_eq!(parsed.startup_locality(), 3);
    let replay = parsed.replay();
    let mut init = [0u8; 32];
    init[31] = 3;
    let expected = HashAlg::Sha256.hash(&[&init, &[7; 32]]).unwrap();
    assert_eq!(
        replay.pcrs.get(HashAlg::Sha256, 0).unwrap(),
        expected.as_slice()
    );
}

#[test]
fn flipped_bytes_never_panic_and_change_the_replay_or_fail() {
    let bytes = std::fs::read(logs_dir().join("event-uefivar.bin")).unwrap();
    let good = eventlog::parse(&bytes).unwrap().replay();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            // Either refused, or parsed to something; never a panic.
            if let Ok(log) = eventlog::parse(&b) {
                let _ = log.replay();
            }
        }
    }
    let _ = good;
}
