//! Accepted software versions (reference values) and the policy that says
//! which a cluster accepts.
//!
//! A [`SoftwareVersion`] is a named set of reference measurements produced
//! from an image: the expected event digests per bank and PCR, or the
//! expected final PCR values (or both). A [`Policy`] lists the versions a
//! cluster accepts and which PCRs must match. Evidence that matches no
//! version is refused with each version's reason. Types serialize to JSON
//! with digests as lowercase hex.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::alg::HashAlg;
use crate::codec::{from_hex, to_hex};
use crate::eventlog::{EV_NO_ACTION, EventLog};
use crate::pcr::PcrValues;

/// A digest, serialized as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        from_hex(&s)
            .map(HexBytes)
            .ok_or_else(|| serde::de::Error::custom(format!("not hex: {s}")))
    }
}

/// Reference measurements of one software version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareVersion {
    /// Name, e.g. `esxi-8.0u3-24022510`.
    pub name: String,
    /// Expected final PCR values, per bank and PCR.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pcrs: BTreeMap<HashAlg, BTreeMap<u32, HexBytes>>,
    /// Expected event digests, in order, per bank and PCR.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<HashAlg, BTreeMap<u32, Vec<HexBytes>>>,
}

impl SoftwareVersion {
    /// Reference values from an image's measured-boot log: the event digests
    /// and the final values of `pcrs` in every computable bank.
    pub fn from_event_log(name: &str, log: &EventLog<'_>, pcrs: &[u32]) -> Self {
        let replay = log.replay();
        let mut v = Self {
            name: name.to_string(),
            ..Self::default()
        };
        for (alg, bank) in &replay.pcrs.banks {
            for (i, value) in bank {
                if pcrs.contains(i) {
                    v.pcrs
                        .entry(*alg)
                        .or_default()
                        .insert(*i, HexBytes(value.clone()));
                }
            }
        }
        for e in measured(log) {
            if !pcrs.contains(&e.pcr) {
                continue;
            }
            for (alg, d) in &e.digests {
                if alg.is_computable() {
                    v.events
                        .entry(*alg)
                        .or_default()
                        .entry(e.pcr)
                        .or_default()
                        .push(HexBytes(d.to_vec()));
                }
            }
        }
        v
    }
}

fn measured<'l, 'a>(log: &'l EventLog<'a>) -> impl Iterator<Item = &'l crate::eventlog::Event<'a>> {
    let skip = usize::from(log.spec_id.is_some());
    log.events
        .iter()
        .skip(skip)
        .filter(|e| e.event_type != EV_NO_ACTION)
}

/// Which versions a cluster accepts, and what must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The accepted versions.
    pub accepted: Vec<SoftwareVersion>,
    /// PCRs that must match a version's references.
    pub pcrs: Vec<u32>,
    /// The bank compared.
    pub bank: HashAlg,
}

/// Evidence matched no accepted version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the evidence matches no accepted software version: {}", .reasons.iter().map(|(v, r)| format!("{v}: {r}")).collect::<Vec<_>>().join("; "))]
pub struct PolicyRefusal {
    /// For each accepted version, why it does not match.
    pub reasons: Vec<(String, String)>,
}

/// The version the evidence matched. Only this crate constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedVersion {
    name: String,
}

impl AcceptedVersion {
    /// The version's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn check_version(
    v: &SoftwareVersion,
    policy: &Policy,
    quoted: &PcrValues,
    log: Option<&EventLog<'_>>,
) -> Result<(), String> {
    let bank = policy.bank;
    for &pcr in &policy.pcrs {
        let Some(actual) = quoted.get(bank, pcr) else {
            return Err(format!("PCR {pcr} ({bank}) was not quoted"));
        };
        if let Some(expected) = v.pcrs.get(&bank).and_then(|b| b.get(&pcr)) {
            if expected.0 != actual {
                return Err(format!(
                    "PCR {pcr} ({bank}) is {}, the version expects {}",
                    to_hex(actual),
                    to_hex(&expected.0)
                ));
            }
            continue;
        }
        let Some(expected) = v.events.get(&bank).and_then(|b| b.get(&pcr)) else {
            return Err(format!(
                "the version has no reference for PCR {pcr} ({bank})"
            ));
        };
        let Some(log) = log else {
            return Err(format!(
                "the version gives event digests for PCR {pcr}, but no event log was supplied"
            ));
        };
        let got: Vec<(usize, &[u8])> = measured(log)
            .filter(|e| e.pcr == pcr)
            .filter_map(|e| e.digest(bank).map(|d| (e.number, d)))
            .collect();
        for (k, want) in expected.iter().enumerate() {
            match got.get(k) {
                Some((_, d)) if *d == want.0.as_slice() => {}
                Some((n, d)) => {
                    return Err(format!(
                        "PCR {pcr} ({bank}): event {n} has digest {}, the version's event {k} is {}",
                        to_hex(d),
                        to_hex(&want.0)
                    ));
                }
                None => {
                    return Err(format!(
                        "PCR {pcr} ({bank}): the log has {} events, the version expects {}",
                        got.len(),
                        expected.len()
                    ));
                }
            }
        }
        if let Some((n, _)) = got.get(expected.len()) {
            return Err(format!(
                "PCR {pcr} ({bank}): event {n} is not in the version's {} events",
                expected.len()
            ));
        }
    }
    Ok(())
}

/// Finds the first accepted version that the (verified) PCR values and
/// (replay-checked) event log match.
pub fn evaluate(
    policy: &Policy,
    quoted: &PcrValues,
    log: Option<&EventLog<'_>>,
) -> Result<AcceptedVersion, PolicyRefusal> {
    let mut reasons = Vec::new();
    for v in &policy.accepted {
        match check_version(v, policy, quoted, log) {
            Ok(()) => {
                return Ok(AcceptedVersion {
                    name: v.name.clone(),
                });
            }
            Err(r) => reasons.push((v.name.clone(), r)),
        }
    }
    if policy.accepted.is_empty() {
        reasons.push(("(policy)".into(), "no software version is accepted".into()));
    }
    Err(PolicyRefusal { reasons })
}
