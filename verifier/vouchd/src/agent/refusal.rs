//! Why the verifier ends a session: one typed reason per refusal, grouped by the `RefusalKind`
//! sent on the wire, so the kind and the code cannot disagree. The agent link is not
//! authenticated before the agent proves possession of its TPM, so the `Refused` message
//! carries only the kind and a short code ([`Refusal::code`]); the full reason (`Display`),
//! which may name clusters, EK hashes or PCRs, goes to the operator: the log and an
//! `agent.refused` or `agent.evidence_refused` event.

use vouch_attest::DecodeError;
use vouch_attest::credential::CredentialError;
use vouch_attest::ek::EkError;
use vouch_attest::quote::QuoteError;
use vouch_proto::VersionError;
use vouch_proto::frame::FrameError;
use vouch_proto::wire::{AgentFailure, MAX_TEXT, RefusalKind};

use super::blob::ChunkError;
use super::states::PhaseName;

/// A refusal: it ends the session, and its kind and text go to the agent in `Refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No protocol version in common.
    #[error("no common protocol version: {0:?}")]
    Version(VersionError),
    /// The agent broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// The EK is not trusted.
    #[error(transparent)]
    UntrustedEk(#[from] UntrustedEk),
    /// The AK is not acceptable, or not beside the EK.
    #[error(transparent)]
    Activation(#[from] ActivationFailure),
    /// Evidence that does not prove possession of the host's TPM: not a quote signed by the
    /// bound AK over the nonce just issued. It changes nothing recorded of the host.
    #[error("the evidence does not prove possession of the host's TPM: {0}")]
    Unproven(QuoteError),
    /// The verifier failed on its side (logged where it happened); the agent may retry.
    #[error("the verifier cannot serve now")]
    Unavailable,
}

impl Refusal {
    /// The kind sent on the wire.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::Version(_) => RefusalKind::Version,
            Self::Protocol(_) => RefusalKind::Protocol,
            Self::UntrustedEk(_) => RefusalKind::UntrustedEk,
            Self::Activation(_) | Self::Unproven(_) => RefusalKind::Activation,
            Self::Unavailable => RefusalKind::Unavailable,
        }
    }

    /// The short code the agent is told: enough to act on, nothing about the configuration.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Version(_) => "version",
            Self::Protocol(p) => match p {
                ProtocolViolation::BadFrame(_) => "bad-frame",
                ProtocolViolation::Unexpected { .. } => "unexpected-message",
                ProtocolViolation::AgentReported { .. } => "agent-failure",
                ProtocolViolation::Chunk(_) => "bad-chunk",
                ProtocolViolation::KeyChannel(_) => "key-channel",
                _ => "protocol",
            },
            Self::UntrustedEk(_) => "untrusted-ek",
            Self::Activation(a) => match a {
                ActivationFailure::WrongProof => "wrong-proof",
                ActivationFailure::NoLongerBound => "ak-not-bound",
                _ => "bad-ak",
            },
            Self::Unproven(_) => "evidence-unproven",
            Self::Unavailable => "unavailable",
        }
    }

    /// The event an operator sees for it.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Self::Unproven(_) => "agent.evidence_refused",
            _ => "agent.refused",
        }
    }

    /// A failure on the verifier's side: logged here, refused as `Unavailable` without detail.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "agent session: internal failure");
        Self::Unavailable
    }

    /// The `Refused` message: the kind and the short code.
    pub fn message(&self) -> vouch_proto::wire::Refused {
        vouch_proto::wire::Refused {
            kind: self.kind(),
            reason: super::bounded::<MAX_TEXT>(self.code()),
        }
    }
}

/// A message out of order or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The bytes of a frame are not a message.
    #[error("bad frame: {0:?}")]
    BadFrame(FrameError),
    /// A message the current phase does not expect.
    #[error("expected {expected} in phase {phase:?}, got {got}")]
    Unexpected {
        /// What the phase expects.
        expected: &'static str,
        /// The phase.
        phase: PhaseName,
        /// The message that arrived.
        got: &'static str,
    },
    /// The agent reported a failure of its own.
    #[error("agent reported {failure:?}: {detail}")]
    AgentReported {
        /// What failed.
        failure: AgentFailure,
        /// The agent's words.
        detail: String,
    },
    /// A chunk of something other than the EK certificate before `Enroll`.
    #[error("only EK certificate chunks before Enroll")]
    ChunkBeforeEnroll,
    /// An EK certificate chunk once enrolled.
    #[error("an EK certificate chunk after enrolment")]
    EkCertificateAfterEnrolment,
    /// A chunk out of order, too large or interleaved.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// `Enroll` or `Evidence` while a payload is still arriving.
    #[error("an incomplete payload before {0}")]
    IncompletePayload(&'static str),
    /// The EK public area does not decode.
    #[error("EK public area: {0}")]
    EkPublic(DecodeError),
    /// `Enroll` announced an EK certificate that did not arrive complete.
    #[error("the EK certificate chunks are missing or incomplete")]
    EkCertificateMissing,
    /// An EK certificate arrived that `Enroll` did not announce.
    #[error("an EK certificate was sent but not announced")]
    EkCertificateUnannounced,
    /// The key channel could not be set up, or a sealed message did not open.
    #[error("{0}")]
    KeyChannel(String),
}

/// Why the EK is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UntrustedEk {
    /// No trusted cluster lists this EK as a host.
    #[error(
        "EK {ek_hash} is not a host of any trusted cluster; a management server adds it with `vouch host add --cluster CLUSTER --ek-hash {ek_hash}`"
    )]
    NotAHost {
        /// The EK's hash.
        ek_hash: String,
    },
    /// The host's cluster has no trust that could admit this TPM.
    #[error(
        "cluster {cluster} has no trust configured for this TPM: trust its manufacturer with `vouch tpm-ca add --cluster {cluster} CA.pem`, or for a TPM without an EK certificate list its EK with `vouch ek add --cluster {cluster} --bare-public-key EK.pem`"
    )]
    NoTrust {
        /// The cluster.
        cluster: String,
    },
    /// vouch-attest refused the EK under the cluster's trust.
    #[error(
        "cluster {cluster} does not trust this TPM's EK: {error}; check its manufacturer's CA (`vouch tpm-ca list --cluster {cluster}`, `vouch tpm-ca add`) and, in mode 2, its listed EKs (`vouch ek list --cluster {cluster}`, `vouch ek add`)"
    )]
    Refused {
        /// The cluster.
        cluster: String,
        /// Why vouch-attest refused it.
        error: EkError,
    },
}

/// Why the AK was not bound to the EK, or is no longer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationFailure {
    /// The AK public area does not decode.
    #[error("AK public area: {0}")]
    AkPublic(DecodeError),
    /// The AK's attributes do not make it an attestation key.
    #[error("AK: {0}")]
    Ak(CredentialError),
    /// MakeCredential failed.
    #[error("MakeCredential: {0}")]
    MakeCredential(CredentialError),
    /// The credential does not fit the wire.
    #[error("the credential blob is too large")]
    CredentialTooLarge,
    /// The encrypted secret does not fit the wire.
    #[error("the encrypted secret is too large")]
    EncryptedSecretTooLarge,
    /// The proof is not the secret: the AK is not in the EK's TPM.
    #[error("the activation proof is wrong: the AK is not beside this EK")]
    WrongProof,
    /// The host's bound AK changed since this session enrolled.
    #[error("the AK is no longer bound to this EK; enrol again")]
    NoLongerBound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_follows_the_reason() {
        let r = Refusal::from(UntrustedEk::NotAHost {
            ek_hash: "0123456789abcdef0123".into(),
        });
        assert_eq!(r.kind(), RefusalKind::UntrustedEk);
        assert_eq!(
            r.to_string(),
            "EK 0123456789abcdef0123 is not a host of any trusted cluster; a management server adds it with `vouch host add --cluster CLUSTER --ek-hash 0123456789abcdef0123`"
        );
        let r = Refusal::from(ProtocolViolation::Unexpected {
            expected: "Chunk, Evidence or BoundEvidence",
            phase: PhaseName::AwaitingQuote,
            got: "Sealed",
        });
        assert_eq!(r.kind(), RefusalKind::Protocol);
        assert_eq!(
            r.to_string(),
            "expected Chunk, Evidence or BoundEvidence in phase AwaitingQuote, got Sealed"
        );
        assert_eq!(r.message().kind, RefusalKind::Protocol);
        assert_eq!(r.message().reason.as_str(), "unexpected-message");
        // The agent is told no cluster, hash or PCR.
        let r = Refusal::from(UntrustedEk::NoTrust {
            cluster: "prod".into(),
        });
        assert_eq!(r.message().reason.as_str(), "untrusted-ek");
    }
}
