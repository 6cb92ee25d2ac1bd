//! Why the verifier ends a session: one typed reason per refusal, grouped by the `RefusalKind`
//! sent on the wire, so the kind and the text cannot disagree. The text (`Display`) is what the
//! `Refused` message carries.

use vouch_attest::DecodeError;
use vouch_attest::credential::CredentialError;
use vouch_attest::ek::EkError;
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
            Self::Activation(_) => RefusalKind::Activation,
            Self::Unavailable => RefusalKind::Unavailable,
        }
    }

    /// A failure on the verifier's side: logged here, refused as `Unavailable` without detail.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "agent session: internal failure");
        Self::Unavailable
    }

    /// The `Refused` message: the kind and the text, cut to fit the wire.
    pub fn message(&self) -> vouch_proto::wire::Refused {
        vouch_proto::wire::Refused {
            kind: self.kind(),
            reason: super::bounded::<MAX_TEXT>(&self.to_string()),
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
    #[error("EK {} is not a host of any trusted cluster", short(ek_hash))]
    NotAHost {
        /// The EK's hash.
        ek_hash: String,
    },
    /// The host's cluster has no trust that could admit this TPM.
    #[error("cluster {cluster} has no trust configured for this TPM")]
    NoTrust {
        /// The cluster.
        cluster: String,
    },
    /// vouch-attest refused the EK under the cluster's trust.
    #[error(transparent)]
    Refused(#[from] EkError),
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

/// The first 16 characters of a hash, for messages.
fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
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
            "EK 0123456789abcdef is not a host of any trusted cluster"
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
    }
}
