//! The phases of a session, each holding exactly what it needs. A transition consumes its
//! phase and builds the next, so data of one phase cannot leak into another.
//!
//! ```text
//! AwaitingHello ─Hello→ AwaitingEnroll ─Enroll→ AwaitingActivation ─ActivationProof→ AwaitingQuote
//!                              └──────────Enroll (AK already bound)─────────────────→ AwaitingQuote
//! AwaitingQuote ─Evidence/BoundEvidence→ Decided ─re-attestation→ AwaitingQuote
//! ```
//! A refusal ends the session in `Ended`.

use aws_lc_rs::constant_time;
use vouch_attest::ek::TrustedEk;
use vouch_attest::tpm::{ClockInfo, PcrSelection, Public};
use vouch_proto::wire::{AgentMessage, BlobKind, Chunk};
use zeroize::Zeroizing;

use super::blob::Blob;
use super::refusal::ProtocolViolation;
use super::verdict::Verdict;
use super::{MAX_EK_CERTIFICATE, MAX_PCR_VALUES};
use crate::channel::ServerChannel;
use crate::store::Cluster;

/// A phase's name, as refusals give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    /// Before `Hello`.
    AwaitingHello,
    /// Before `Enroll`.
    AwaitingEnroll,
    /// A credential challenge is outstanding.
    AwaitingActivation,
    /// A quote request is outstanding.
    AwaitingQuote,
    /// A verdict was given; waiting to ask again.
    Decided,
    /// The session was refused.
    Ended,
}

/// Where a session is.
#[derive(Debug)]
pub enum Phase {
    /// Before `Hello`.
    AwaitingHello,
    /// Version agreed; EK certificate chunks and then `Enroll` are due.
    AwaitingEnroll(AwaitingEnroll),
    /// The EK is trusted; the proof of a new AK's activation is due.
    AwaitingActivation(AwaitingActivation),
    /// The AK is bound; the evidence for a quote request is due.
    AwaitingQuote(AwaitingQuote),
    /// A verdict was given; the verifier asks again when re-attestation is due.
    Decided(Decided),
    /// The session was refused; nothing more is accepted.
    Ended,
}

impl Phase {
    /// Its name.
    pub fn name(&self) -> PhaseName {
        match self {
            Self::AwaitingHello => PhaseName::AwaitingHello,
            Self::AwaitingEnroll(_) => PhaseName::AwaitingEnroll,
            Self::AwaitingActivation(_) => PhaseName::AwaitingActivation,
            Self::AwaitingQuote(_) => PhaseName::AwaitingQuote,
            Self::Decided(_) => PhaseName::Decided,
            Self::Ended => PhaseName::Ended,
        }
    }

    /// The messages it accepts, for refusals.
    pub fn expects(&self) -> &'static str {
        match self {
            Self::AwaitingHello => "Hello",
            Self::AwaitingEnroll(_) => "Chunk or Enroll",
            Self::AwaitingActivation(_) => "ActivationProof",
            Self::AwaitingQuote(q) => match (q.enrolled.version >= 2, q.keys.is_some()) {
                (false, _) => "Chunk or Evidence",
                (true, false) => "Chunk, Evidence or BoundEvidence",
                (true, true) => "Chunk, Evidence, BoundEvidence or Sealed",
            },
            Self::Decided(d) if d.keys.is_some() => "Sealed",
            Self::Decided(_) | Self::Ended => "no message",
        }
    }

    /// Whether the verifier waits for the agent (so the idle timeout applies).
    pub fn awaits_agent(&self) -> bool {
        !matches!(self, Self::Decided(_))
    }

    /// The key channel of the verdict in force, if any.
    pub fn keys(&mut self) -> Option<&mut KeyChannel> {
        match self {
            Self::AwaitingQuote(AwaitingQuote { keys, .. })
            | Self::Decided(Decided { keys, .. }) => keys.as_mut(),
            _ => None,
        }
    }
}

/// After `Welcome`: the EK certificate arrives in chunks, then `Enroll`.
#[derive(Debug)]
pub struct AwaitingEnroll {
    /// The negotiated protocol version.
    pub version: u16,
    /// EK certificate chunks being received.
    pub chunks: Blob,
    /// The EK certificate, once complete.
    pub certificate: Option<Vec<u8>>,
}

impl AwaitingEnroll {
    /// Whether nothing arrived since `Welcome` (a `CheckIn` is only accepted then).
    pub fn is_untouched(&self) -> bool {
        self.certificate.is_none() && !self.chunks.is_incomplete()
    }

    /// Takes a chunk of the EK certificate.
    pub fn chunk(&mut self, chunk: &Chunk) -> Result<(), ProtocolViolation> {
        if chunk.blob != BlobKind::EkCertificate {
            return Err(ProtocolViolation::ChunkBeforeEnroll);
        }
        if let Some(certificate) = self.chunks.push(chunk, MAX_EK_CERTIFICATE)? {
            self.certificate = Some(certificate);
        }
        Ok(())
    }
}

/// What the session knows once the EK is trusted: who the agent is and the AK it enrolled.
#[derive(Debug)]
pub struct Enrolled {
    /// The negotiated protocol version.
    pub version: u16,
    /// The EK's hash: the host's identity.
    pub ek_hash: String,
    /// The host's cluster, as of the last trust check.
    pub cluster: Cluster,
    /// The EK public area.
    pub ek: Public,
    /// The EK's trust, as vouch-attest established it at the last check.
    pub trusted: std::sync::Arc<TrustedEk>,
    /// The EK certificate the agent sent, if any.
    pub ek_certificate: Option<Vec<u8>>,
    /// The AK public area.
    pub ak: Public,
    /// The AK public area as the agent sent it (TPM2B): what the host's binding stores.
    pub ak_raw: Vec<u8>,
}

/// A credential challenge is outstanding.
#[derive(Debug)]
pub struct AwaitingActivation {
    /// The enrolled EK and the AK to bind.
    pub enrolled: Enrolled,
    /// The secret the challenge protects: the proof must equal it.
    pub secret: Secret,
}

/// The credential's secret, wiped when dropped.
pub struct Secret(pub Zeroizing<[u8; 32]>);

impl Secret {
    /// Whether `proof` is the secret (in constant time).
    pub fn matches(&self, proof: &[u8]) -> bool {
        constant_time::verify_slices_are_equal(proof, self.0.as_slice()).is_ok()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A quote request is outstanding: PCR values and the event log arrive in chunks, then the
/// evidence.
#[derive(Debug)]
pub struct AwaitingQuote {
    /// The enrolled EK and bound AK.
    pub enrolled: Enrolled,
    /// The clock of the last quote accepted from this AK.
    pub last_clock: Option<ClockInfo>,
    /// The nonce asked for.
    pub nonce: Vec<u8>,
    /// The PCR selection asked for.
    pub selection: PcrSelection,
    /// PCR value and event log chunks being received.
    pub chunks: Blob,
    /// The PCR values, once complete.
    pub pcr_values: Option<Vec<u8>>,
    /// The event log, once complete.
    pub event_log: Option<Vec<u8>>,
    /// The key channel of the verdict in force, which stays open while the verifier asks again.
    pub keys: Option<KeyChannel>,
}

impl AwaitingQuote {
    /// Takes a chunk of the PCR values or the event log, at most `max_event_log` bytes of log.
    pub fn chunk(&mut self, chunk: &Chunk, max_event_log: usize) -> Result<(), ProtocolViolation> {
        let limit = match chunk.blob {
            BlobKind::PcrValues => MAX_PCR_VALUES,
            BlobKind::EventLog => max_event_log,
            BlobKind::EkCertificate => return Err(ProtocolViolation::EkCertificateAfterEnrolment),
        };
        if let Some(data) = self.chunks.push(chunk, limit)? {
            match chunk.blob {
                BlobKind::PcrValues => self.pcr_values = Some(data),
                _ => self.event_log = Some(data),
            }
        }
        Ok(())
    }
}

/// A verdict was given.
#[derive(Debug)]
pub struct Decided {
    /// The enrolled EK and bound AK.
    pub enrolled: Enrolled,
    /// The clock of the last quote accepted from this AK.
    pub last_clock: Option<ClockInfo>,
    /// The verdict, with the evidence it rests on.
    pub verdict: Verdict,
    /// The key channel, when the verdict is attested on a bound quote (protocol v2).
    pub keys: Option<KeyChannel>,
}

/// The key channel of an attested verdict: key requests are opened with it and authorised by
/// the verdict's attestation token.
#[derive(Debug)]
pub struct KeyChannel {
    /// The channel.
    pub channel: ServerChannel,
    /// The attestation token of the verdict that opened it.
    pub token: String,
}

/// The name of an agent's message, for refusals.
pub fn message_name(m: &AgentMessage) -> &'static str {
    match m {
        AgentMessage::Hello(_) => "Hello",
        AgentMessage::Chunk(_) => "Chunk",
        AgentMessage::Enroll(_) => "Enroll",
        AgentMessage::ActivationProof(_) => "ActivationProof",
        AgentMessage::Evidence(_) => "Evidence",
        AgentMessage::Error(_) => "Error",
        AgentMessage::BoundEvidence(_) => "BoundEvidence",
        AgentMessage::Sealed(_) => "Sealed",
        AgentMessage::CheckIn => "CheckIn",
    }
}
