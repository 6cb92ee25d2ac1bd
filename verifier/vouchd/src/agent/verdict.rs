//! The verdict on one quote: vouch-attest's checks over what the agent sent, and what is
//! recorded and answered. An attested verdict holds the `VerifiedEvidence` it rests on, which
//! only vouch-attest can construct; a refused one holds the typed reason.

use heapless::String as HString;
use vouch_attest::HashAlg;
use vouch_attest::evidence::{EvidenceError, VerifiedEvidence};
use vouch_attest::pcr::PcrValues;
use vouch_attest::policy::{Policy, SoftwareVersion};
use vouch_attest::quote::{AttestationKey, QuoteError, QuoteExpectations};
use vouch_attest::tpm::{Attest, ClockInfo, PcrSelection, Signature};
use vouch_proto::wire;

use super::bounded;
use super::states::Enrolled;
use crate::store::{AttestationRecord, SoftwareVersionRecord};

/// Why evidence was not attested: the reason the verdict gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotAttested {
    /// The agent sent evidence without PCR values.
    #[error("no PCR values were sent")]
    NoPcrValues,
    /// The PCR values do not fit the selection.
    #[error(transparent)]
    PcrValues(#[from] PcrValuesError),
    /// A software version in the store is not a valid reference.
    #[error("a stored software version does not parse: {0}")]
    StoredVersion(String),
    /// The cluster accepts no version, so nothing can match.
    #[error("cluster {cluster} accepts no software version yet")]
    NoAcceptedVersion {
        /// The cluster.
        cluster: String,
    },
    /// The host's cluster is disabled: none of its hosts is attested.
    #[error("{}", crate::service::cluster_disabled_reason(cluster))]
    ClusterDisabled {
        /// The cluster.
        cluster: String,
    },
    /// The quote request selected no bank.
    #[error("empty selection")]
    EmptySelection,
    /// The bound AK cannot verify quotes.
    #[error(transparent)]
    Ak(QuoteError),
    /// vouch-attest refused the quote, the event log or the policy.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The agent reported a failure of the host's TPM after proving possession of it in this
    /// session (no quote: the host fails closed).
    #[error("the agent reported a TPM failure after attesting: {0}")]
    TpmFailure(String),
}

impl NotAttested {
    /// The short code the agent is told; the full reason is the host's recorded result.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoPcrValues => "no-pcr-values",
            Self::PcrValues(_) => "pcr-values",
            Self::StoredVersion(_) | Self::EmptySelection => "verifier-configuration",
            Self::NoAcceptedVersion { .. } => "no-accepted-version",
            Self::ClusterDisabled { .. } => "cluster-disabled",
            Self::Ak(_) => "ak",
            Self::Evidence(EvidenceError::Quote(q)) => q.check(),
            Self::Evidence(EvidenceError::EventLog(_)) => "event-log",
            Self::Evidence(EvidenceError::Replay(_)) => "event-log-replay",
            Self::Evidence(_) => "policy",
            Self::TpmFailure(_) => "tpm-failure",
        }
    }
}

/// Whether the quote proves possession of the host's TPM: it decodes, the bound AK signed it,
/// and its qualifying data is the one just asked for (the nonce, or for a bound quote
/// SHA-256(nonce || session key)). Only evidence that passes this may change what is recorded
/// of the host; anyone who has read the EK and AK public areas off the link can send the rest.
pub fn prove_possession(
    enrolled: &Enrolled,
    qualifying_data: &[u8],
    attest: &[u8],
    signature: &[u8],
) -> Result<(), QuoteError> {
    let ak = AttestationKey::from_public(enrolled.ak.clone())?;
    let sig = Signature::from_bytes(signature).map_err(QuoteError::MalformedSignature)?;
    let quote = Attest::from_bytes(attest).map_err(QuoteError::MalformedQuote)?;
    ak.verify_signature(attest, &sig)?;
    if quote.extra_data != qualifying_data {
        return Err(QuoteError::Nonce {
            expected: crate::hex(qualifying_data),
            found: crate::hex(&quote.extra_data),
        });
    }
    Ok(())
}

/// PCR values that do not fit the selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcrValuesError {
    /// Too few bytes.
    #[error("the PCR values end before {alg:?} PCR {index}")]
    Short {
        /// The bank of the first missing value.
        alg: HashAlg,
        /// Its PCR.
        index: u32,
    },
    /// Bytes left over.
    #[error("{0} bytes of PCR values beyond the selection")]
    Trailing(usize),
}

/// PCR values in the wire layout: for each bank of the selection in order, the digests of its
/// selected PCRs in ascending order, concatenated.
pub fn pcr_values(selection: &PcrSelection, raw: &[u8]) -> Result<PcrValues, PcrValuesError> {
    let mut values = PcrValues::default();
    let mut rest = raw;
    for (alg, index) in selection.iter() {
        let Some((value, tail)) = rest.split_at_checked(alg.size()) else {
            return Err(PcrValuesError::Short { alg, index });
        };
        values.insert(alg, index, value.to_vec());
        rest = tail;
    }
    if rest.is_empty() {
        Ok(values)
    } else {
        Err(PcrValuesError::Trailing(rest.len()))
    }
}

/// What the agent sent for one quote request.
#[derive(Debug, Clone, Copy)]
pub struct Submitted<'a> {
    /// TPMS_ATTEST.
    pub attest: &'a [u8],
    /// TPMT_SIGNATURE.
    pub signature: &'a [u8],
    /// The PCR values in wire layout, if sent.
    pub pcr_values: Option<&'a [u8]>,
    /// The event log, if sent.
    pub event_log: Option<&'a [u8]>,
}

/// What the quote must show.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The qualifying data: the nonce, or for a bound quote SHA-256(nonce || session key).
    pub qualifying_data: &'a [u8],
    /// The selection asked for.
    pub selection: &'a PcrSelection,
    /// The clock of the last quote accepted from this AK.
    pub last_clock: Option<&'a ClockInfo>,
}

/// Runs vouch-attest over the evidence: quote, event log replay and the cluster's policy over
/// `versions`.
pub fn verify(
    enrolled: &Enrolled,
    expected: &Expected<'_>,
    submitted: &Submitted<'_>,
    versions: &[SoftwareVersionRecord],
) -> Result<VerifiedEvidence, NotAttested> {
    if enrolled.cluster.disabled_at.is_some() {
        return Err(NotAttested::ClusterDisabled {
            cluster: enrolled.cluster.name.clone(),
        });
    }
    let raw = submitted.pcr_values.ok_or(NotAttested::NoPcrValues)?;
    let pcrs = pcr_values(expected.selection, raw)?;
    let accepted = versions
        .iter()
        .map(|v| serde_json::from_value::<SoftwareVersion>(v.reference.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NotAttested::StoredVersion(e.to_string()))?;
    if accepted.is_empty() {
        return Err(NotAttested::NoAcceptedVersion {
            cluster: enrolled.cluster.name.clone(),
        });
    }
    let bank = expected
        .selection
        .banks
        .first()
        .map(|(alg, _)| *alg)
        .ok_or(NotAttested::EmptySelection)?;
    let policy = Policy {
        accepted,
        pcrs: enrolled.cluster.pcrs.clone(),
        bank,
    };
    let ak = AttestationKey::from_public(enrolled.ak.clone()).map_err(NotAttested::Ak)?;
    let expect = QuoteExpectations {
        nonce: expected.qualifying_data,
        selection: Some(expected.selection),
        pcrs: &pcrs,
        last: expected.last_clock,
        hash: None,
    };
    Ok(vouch_attest::evidence::verify_evidence(
        &ak,
        submitted.attest,
        submitted.signature,
        submitted.event_log,
        &expect,
        &policy,
    )?)
}

/// The most events per PCR kept of what a host presented.
const MAX_PRESENTED_EVENTS: usize = 256;

/// What the host presented for the cluster's policy PCRs, kept with a refusal (the record's
/// `presented`): the quoted values in the compared bank and, when the host sent an event log,
/// the digests of the events that extend them. `None` when the values do not fit the
/// selection (the reason says so). The values are the host's claims: a refusal means at
/// least one check on them failed.
pub fn presented(
    expected: &Expected<'_>,
    submitted: &Submitted<'_>,
    policy_pcrs: &[u32],
) -> Option<serde_json::Value> {
    let pcrs = pcr_values(expected.selection, submitted.pcr_values?).ok()?;
    let (bank, _) = expected.selection.banks.first()?;
    let bank = *bank;
    let mut values = serde_json::Map::new();
    for &pcr in policy_pcrs {
        if let Some(v) = pcrs.get(bank, pcr) {
            values.insert(pcr.to_string(), crate::hex(v).into());
        }
    }
    let mut events = serde_json::Map::new();
    if let Some(log) = submitted
        .event_log
        .and_then(|l| vouch_attest::eventlog::parse(l).ok())
    {
        let skip = usize::from(log.spec_id.is_some());
        for &pcr in policy_pcrs {
            let list: Vec<serde_json::Value> = log
                .events
                .iter()
                .skip(skip)
                .filter(|e| e.pcr == pcr && e.event_type != vouch_attest::eventlog::EV_NO_ACTION)
                .filter_map(|e| {
                    e.digest(bank)
                        .map(|d| serde_json::json!({"number": e.number, "digest": crate::hex(d)}))
                })
                .take(MAX_PRESENTED_EVENTS)
                .collect();
            if !list.is_empty() {
                events.insert(pcr.to_string(), list.into());
            }
        }
    }
    Some(serde_json::json!({"bank": bank.name(), "pcrs": values, "events": events}))
}

/// The verdict on one quote request.
#[derive(Debug)]
pub struct Verdict {
    /// When it was given (Unix seconds).
    pub at: i64,
    /// The nonce of the quote request (empty when there is no quote).
    pub nonce: Vec<u8>,
    /// Attested, with the evidence, or not, with the reason.
    pub outcome: Outcome,
    /// What the host presented, kept with a refusal (see [`presented`]).
    pub presented: Option<serde_json::Value>,
}

/// Attested or not.
#[derive(Debug)]
pub enum Outcome {
    /// Every check passed.
    Attested(Box<Attested>),
    /// A check failed.
    NotAttested(NotAttested),
}

/// An attested verdict: the evidence it rests on and the token issued for it.
#[derive(Debug)]
pub struct Attested {
    /// The evidence, as vouch-attest verified it.
    pub evidence: VerifiedEvidence,
    /// The attestation token.
    pub token: String,
    /// For how long the verdict holds (seconds).
    pub valid_for: u64,
}

impl Verdict {
    /// The attestation token, when attested.
    pub fn token(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Attested(a) => Some(&a.token),
            Outcome::NotAttested(_) => None,
        }
    }

    /// The `Verdict` message for the agent.
    pub fn message(&self) -> wire::Verdict {
        match &self.outcome {
            Outcome::Attested(a) => wire::Verdict {
                attested: true,
                software_version: bounded(a.evidence.version().name()),
                valid_for_secs: u32::try_from(a.valid_for).unwrap_or(u32::MAX),
                reason: HString::new(),
            },
            Outcome::NotAttested(reason) => wire::Verdict {
                attested: false,
                software_version: HString::new(),
                valid_for_secs: 0,
                reason: bounded(reason.code()),
            },
        }
    }

    /// What the store records of it.
    pub fn record(&self, enrolled: &Enrolled) -> AttestationRecord {
        let (software_version, reason, pcr_digest, valid_until, token) = match &self.outcome {
            Outcome::Attested(a) => (
                Some(a.evidence.version().name().to_owned()),
                None,
                Some(crate::hex(&a.evidence.quote().attest().pcr_digest)),
                Some(
                    self.at
                        .saturating_add(i64::try_from(a.valid_for).unwrap_or(i64::MAX)),
                ),
                Some(crate::jwt::token_digest(&a.token)),
            ),
            Outcome::NotAttested(reason) => (None, Some(reason.to_string()), None, None, None),
        };
        AttestationRecord {
            ek_hash: enrolled.ek_hash.clone(),
            cluster: enrolled.cluster.name.clone(),
            at: self.at,
            attested: matches!(self.outcome, Outcome::Attested(_)),
            software_version,
            reason,
            pcr_digest,
            // No nonce: a result without a quote (a TPM failure reported by the agent).
            nonce: (!self.nonce.is_empty()).then(|| crate::hex(&self.nonce)),
            valid_until,
            token,
            presented: match self.outcome {
                Outcome::Attested(_) => None,
                Outcome::NotAttested(_) => self.presented.clone(),
            },
            config_generation: Some(enrolled.cluster.config_generation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_values_follow_the_selection() {
        let sel = PcrSelection::new(vec![
            (HashAlg::Sha256, vec![0, 7]),
            (HashAlg::Sha1, vec![1]),
        ]);
        let mut raw = vec![1u8; 32];
        raw.extend([7u8; 32]);
        raw.extend([2u8; 20]);
        let v = pcr_values(&sel, &raw).unwrap();
        assert_eq!(v.get(HashAlg::Sha256, 7), Some(&[7u8; 32][..]));
        assert_eq!(v.get(HashAlg::Sha1, 1), Some(&[2u8; 20][..]));
        assert_eq!(
            pcr_values(&sel, &raw[..70]),
            Err(PcrValuesError::Short {
                alg: HashAlg::Sha1,
                index: 1
            })
        );
        raw.push(0);
        assert_eq!(pcr_values(&sel, &raw), Err(PcrValuesError::Trailing(1)));
        assert_eq!(
            PcrValuesError::Trailing(1).to_string(),
            "1 bytes of PCR values beyond the selection"
        );
    }
}
