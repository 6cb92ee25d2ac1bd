//! Full evidence verification: the quote (signature, nonce, selection, PCR
//! digest, clock), the event log's replay against the quoted PCRs, and the
//! software-version policy, in that order.

use crate::codec::DecodeError;
use crate::eventlog::{self, ReplayMismatch};
use crate::policy::{AcceptedVersion, Policy, PolicyRefusal, evaluate};
use crate::quote::{AttestationKey, QuoteError, QuoteExpectations, VerifiedQuote, verify_quote};

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The quote failed a check.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The event log is malformed.
    #[error("event log: {0}")]
    EventLog(DecodeError),
    /// The event log does not replay to the quoted PCRs.
    #[error("event log check failed: {0}")]
    Replay(#[from] ReplayMismatch),
    /// No accepted software version matches.
    #[error(transparent)]
    Policy(#[from] PolicyRefusal),
}

/// Evidence that passed every check. Only this crate constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedEvidence {
    quote: VerifiedQuote,
    version: AcceptedVersion,
}

impl VerifiedEvidence {
    /// The verified quote.
    pub fn quote(&self) -> &VerifiedQuote {
        &self.quote
    }
    /// The software version it matched.
    pub fn version(&self) -> &AcceptedVersion {
        &self.version
    }
}

/// Verifies a quote, replays the log against it and applies the policy.
pub fn verify_evidence(
    ak: &AttestationKey,
    attest: &[u8],
    signature: &[u8],
    event_log: Option<&[u8]>,
    expect: &QuoteExpectations<'_>,
    policy: &Policy,
) -> Result<VerifiedEvidence, EvidenceError> {
    let quote = verify_quote(ak, attest, signature, expect)?;
    let log = match event_log {
        Some(bytes) => {
            let log = eventlog::parse(bytes).map_err(EvidenceError::EventLog)?;
            let banks: Vec<_> = quote.pcrs().banks.keys().copied().collect();
            let replay = log.replay_banks(Some(&banks));
            log.check_against(&replay, quote.pcrs())?;
            Some(log)
        }
        None => None,
    };
    let version = evaluate(policy, quote.pcrs(), log.as_ref())?;
    Ok(VerifiedEvidence { quote, version })
}
