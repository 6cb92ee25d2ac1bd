//! `vouch software from-eventlog` on every real event log of the shared test data gives the PCR
//! values tpm2-tools' `tpm2_eventlog` reports for it (`expected/<log>.yaml`, its `pcrs:`
//! section), in every bank, for both log formats.
//!
//! `event-arch-linux.bin` carries an event whose digest does not match its payload
//! (`expected/event-arch-linux.bin.warn`, tpm2_eventlog's warning). A TPM extends the digest,
//! not the payload, so the reference values are the digests' replay there too, as
//! tpm2_eventlog's are.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn logs_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/eventlogs/tpm2-tools"
    ))
}

fn from_eventlog(log: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(["software", "from-eventlog"])
        .arg(log)
        .args(["--version", "reference"])
        .args(extra)
        .output()
        .unwrap()
}

type Banks = BTreeMap<String, BTreeMap<u32, String>>;

/// The `pcrs:` section of tpm2_eventlog's YAML: bank, PCR, lowercase hex without `0x`.
fn expected_pcrs(yaml: &str) -> Banks {
    let mut out = Banks::new();
    let mut bank = None;
    for line in yaml.lines().skip_while(|l| !l.starts_with("pcrs:")).skip(1) {
        let t = line.trim();
        if let Some(name) = t.strip_suffix(':') {
            bank = Some(name.to_string());
        } else if let Some((index, value)) = t.split_once(':') {
            let value = value.trim().trim_start_matches("0x").to_ascii_lowercase();
            out.entry(bank.clone().expect("a bank before its PCRs"))
                .or_default()
                .insert(index.trim().parse().unwrap(), value);
        }
    }
    out
}

/// The `pcrs` of the software version `vouch` printed.
fn printed_pcrs(stdout: &[u8]) -> Banks {
    let version: Value = serde_json::from_slice(stdout).unwrap();
    assert_eq!(version["name"], "reference");
    let mut out = Banks::new();
    for (bank, pcrs) in version["pcrs"].as_object().unwrap() {
        for (index, value) in pcrs.as_object().unwrap() {
            out.entry(bank.clone())
                .or_default()
                .insert(index.parse().unwrap(), value.as_str().unwrap().to_string());
        }
    }
    out
}

#[test]
fn every_real_log_gives_the_pcr_values_tpm2_eventlog_reports() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(logs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let yaml = logs_dir().join("expected").join(format!("{name}.yaml"));
        let expected = expected_pcrs(&std::fs::read_to_string(&yaml).unwrap());
        let out = from_eventlog(&path, &[]);
        if expected.is_empty() {
            // A log that extends no PCR (only its header): there is nothing to accept.
            assert_eq!(out.status.code(), Some(2), "{name}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("extends a PCR"),
                "{name}"
            );
        } else {
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(printed_pcrs(&out.stdout), expected, "{name}");
        }
        checked.push(name);
    }
    checked.sort();
    assert_eq!(checked.len(), 11, "{checked:?}");
    assert!(checked.contains(&"event-uefi-sha1-log.bin".to_string()));
    assert!(checked.contains(&"event-arch-linux.bin".to_string()));
}

#[test]
fn pcrs_and_bank_select_what_is_printed() {
    let log = logs_dir().join("event-gce-ubuntu-2104-log.bin");
    let yaml = logs_dir().join("expected/event-gce-ubuntu-2104-log.bin.yaml");
    let expected = expected_pcrs(&std::fs::read_to_string(yaml).unwrap());
    let out = from_eventlog(&log, &["--pcrs", "0,7", "--bank", "sha256"]);
    assert!(out.status.success());
    let printed = printed_pcrs(&out.stdout);
    let want: BTreeMap<u32, String> = [0, 7].map(|i| (i, expected["sha256"][&i].clone())).into();
    assert_eq!(printed, Banks::from([("sha256".to_string(), want)]));
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = version["events"].as_object().unwrap();
    assert_eq!(events.keys().collect::<Vec<_>>(), ["sha256"]);
    assert_eq!(
        events["sha256"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["0", "7"]
    );
}

#[test]
fn what_the_log_does_not_hold_is_bad_input_naming_it() {
    let sha1_log = logs_dir().join("event-uefi-sha1-log.bin");
    let out = from_eventlog(&sha1_log, &["--bank", "sha256"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sha256 bank; it carries sha1"));
    assert!(out.stdout.is_empty());
    let out = from_eventlog(&sha1_log, &["--pcrs", "0,15"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PCR 15"));
    let out = from_eventlog(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("Cargo.toml")
            .as_path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid TCG event log"));
}
