//! `vouch software from-eventlog`: the reference values of a host, from the TCG event log of a
//! reference host that booted the software to accept.
//!
//! A host's quote is checked against the final PCR values of an accepted software version (or,
//! for a PCR the version gives no value for, against its event digests). Replaying the
//! reference host's log gives exactly the values its TPM held after boot, so the version is the
//! replay's values and the log's event digests, for the PCRs and banks asked for. Both log
//! formats are read: crypto-agile (TPM 2.0) and the SHA-1 format of TPM 1.2 era firmware.

use std::fmt;

use vouch_attest::eventlog::{self, EventLog};
use vouch_attest::policy::SoftwareVersion;
use vouch_attest::{DecodeError, HashAlg};

/// Why no software version could be derived from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The bytes are not a TCG event log.
    Malformed(DecodeError),
    /// The bank asked for is not in the log.
    BankNotInLog {
        bank: HashAlg,
        present: Vec<HashAlg>,
    },
    /// The bank is in the log but this verifier does not compute it (SM3).
    BankNotComputed(HashAlg),
    /// A PCR asked for is extended by no event of the log.
    PcrNotMeasured { pcr: u32, measured: Vec<u32> },
    /// The log extends no PCR in the bank asked for (in any bank Vouch computes when `None`).
    NothingMeasured(Option<HashAlg>),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "not a valid TCG event log: {e}"),
            Self::BankNotInLog { bank, present } => write!(
                f,
                "the log has no {bank} bank; it carries {}",
                names(present)
            ),
            Self::BankNotComputed(bank) => write!(
                f,
                "the log's {bank} bank cannot be replayed: Vouch does not compute {bank}; pick another with --bank"
            ),
            Self::PcrNotMeasured { pcr, measured } => write!(
                f,
                "no event of the log extends PCR {pcr}; it measures PCRs {}",
                measured
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Self::NothingMeasured(Some(bank)) => {
                write!(f, "no event of the log extends a PCR in its {bank} bank")
            }
            Self::NothingMeasured(None) => {
                write!(
                    f,
                    "no event of the log extends a PCR in a bank Vouch computes"
                )
            }
        }
    }
}

impl std::error::Error for ReferenceError {}

fn names(banks: &[HashAlg]) -> String {
    if banks.is_empty() {
        return "no bank".into();
    }
    banks
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The software version named `name` that a host which booted as the log records presents:
/// the final values and event digests of `pcrs` (every PCR the log extends when `None`) in
/// `bank` (every bank Vouch computes when `None`).
pub fn from_event_log(
    name: &str,
    bytes: &[u8],
    pcrs: Option<&[u32]>,
    bank: Option<HashAlg>,
) -> Result<SoftwareVersion, ReferenceError> {
    let log = eventlog::parse(bytes).map_err(ReferenceError::Malformed)?;
    let replay = log.replay();
    if let Some(bank) = bank {
        check_bank(&log, &replay.skipped_banks, bank)?;
    }
    let measured: Vec<u32> = replay
        .pcrs
        .banks
        .iter()
        .filter(|(alg, _)| bank.is_none_or(|b| b == **alg))
        .flat_map(|(_, values)| values.keys().copied())
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    if measured.is_empty() {
        return Err(ReferenceError::NothingMeasured(bank));
    }
    let pcrs = match pcrs {
        Some(pcrs) => {
            if let Some(&pcr) = pcrs.iter().find(|p| !measured.contains(p)) {
                return Err(ReferenceError::PcrNotMeasured { pcr, measured });
            }
            pcrs.to_vec()
        }
        None => measured,
    };
    let mut version = SoftwareVersion::from_event_log(name, &log, &pcrs);
    if let Some(bank) = bank {
        version.pcrs.retain(|alg, _| *alg == bank);
        version.events.retain(|alg, _| *alg == bank);
    }
    Ok(version)
}

/// The banks of `log`: those its header declares (crypto-agile), or SHA-1 (the legacy format).
fn check_bank(
    log: &EventLog<'_>,
    skipped: &[HashAlg],
    bank: HashAlg,
) -> Result<(), ReferenceError> {
    let present = log.banks();
    if !present.contains(&bank) {
        return Err(ReferenceError::BankNotInLog { bank, present });
    }
    if skipped.contains(&bank) || !bank.is_computable() {
        return Err(ReferenceError::BankNotComputed(bank));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use vouch_attest::policy::{Policy, evaluate};

    use super::*;

    fn log(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../testdata/eventlogs/tpm2-tools/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn the_host_that_booted_the_log_matches_its_version() {
        let bytes = log("event-gce-ubuntu-2104-log.bin");
        let version = from_event_log("ubuntu", &bytes, Some(&[0, 4, 7]), None).unwrap();
        assert_eq!(version.name, "ubuntu");
        let parsed = eventlog::parse(&bytes).unwrap();
        let quoted = parsed.replay().pcrs;
        for bank in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384] {
            assert_eq!(
                version.pcrs[&bank].keys().copied().collect::<Vec<_>>(),
                [0, 4, 7]
            );
            let policy = Policy {
                accepted: vec![version.clone()],
                pcrs: vec![0, 4, 7],
                bank,
            };
            assert_eq!(
                evaluate(&policy, &quoted, Some(&parsed)).unwrap().name(),
                "ubuntu"
            );
        }
    }

    #[test]
    fn one_bank_when_asked() {
        let version = from_event_log(
            "v",
            &log("event-gce-ubuntu-2104-log.bin"),
            None,
            Some(HashAlg::Sha256),
        )
        .unwrap();
        assert_eq!(
            version.pcrs.keys().copied().collect::<Vec<_>>(),
            [HashAlg::Sha256]
        );
        assert_eq!(
            version.events.keys().copied().collect::<Vec<_>>(),
            [HashAlg::Sha256]
        );
    }

    #[test]
    fn what_the_log_cannot_give_is_refused_with_the_reason() {
        let sha1_only = log("event-uefi-sha1-log.bin");
        let err = from_event_log("v", &sha1_only, None, Some(HashAlg::Sha256)).unwrap_err();
        assert_eq!(
            err,
            ReferenceError::BankNotInLog {
                bank: HashAlg::Sha256,
                present: vec![HashAlg::Sha1]
            }
        );
        assert_eq!(
            err.to_string(),
            "the log has no sha256 bank; it carries sha1"
        );
        let err = from_event_log("v", &sha1_only, Some(&[0, 12]), None).unwrap_err();
        assert!(matches!(
            err,
            ReferenceError::PcrNotMeasured { pcr: 12, .. }
        ));
        assert!(err.to_string().contains("0,1,2,3,4,5,6,7"), "{err}");
        let err = from_event_log("v", b"not a log", None, None).unwrap_err();
        assert!(matches!(err, ReferenceError::Malformed(_)));
    }
}
