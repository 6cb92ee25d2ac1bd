//! The messages, one enum per direction. Every variable-length field has a fixed bound, so
//! each message has a compile-time maximum encoded size ([`MAX_MESSAGE`]).
//!
//! A session, agent (A) and verifier (V):
//! 1. A: [`AgentMessage::Hello`]; V: [`VerifierMessage::Welcome`] (or `Refused`).
//! 2. A: `Chunk`s of the EK certificate, then [`AgentMessage::Enroll`] with the EK and AK
//!    public areas; V: [`VerifierMessage::CredentialChallenge`] (or `Refused`, or
//!    `QuoteRequest` when this AK is already bound to this EK).
//! 3. A: [`AgentMessage::ActivationProof`]; V: `QuoteRequest`.
//! 4. A: `Chunk`s of the PCR values and the event log, then [`AgentMessage::Evidence`];
//!    V: [`VerifierMessage::Verdict`]. V may send another `QuoteRequest` at any later time.
//!
//! 5. (v2) The agent sends [`AgentMessage::BoundEvidence`] instead of `Evidence`; after an
//!    attested `Verdict` V sends [`VerifierMessage::ChannelKey`]. From then on A may send
//!    [`AgentMessage::Sealed`] key requests; V answers each with a `Sealed` key response.
//!    `QuoteRequest`s may come in between.
//!
//! 6. (v3) Check-in attestation: right after `Welcome` (before any chunk) the agent may send
//!    [`AgentMessage::CheckIn`]. The session then ends after its one verdict: V sends
//!    `Verdict`, then [`VerifierMessage::NextCheckIn`] (when to connect again) and closes the
//!    connection. A check-in session has no key channel (V refuses `BoundEvidence` in it). An
//!    agent that does not send `CheckIn` keeps the persistent session of steps 1–5.
//!
//! TPM structures travel as their exact TPM wire bytes (TPM2B_PUBLIC, TPMS_ATTEST,
//! TPMT_SIGNATURE, ...), because the verifier checks signatures and names over those bytes.

use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Largest marshalled TPM2B_PUBLIC carried (an RSA-4096 key with a policy fits).
pub const MAX_PUBLIC: usize = 640;
/// Largest TPM2B_ID_OBJECT contents (credential blob) carried.
pub const MAX_ID_OBJECT: usize = 256;
/// Largest TPM2B_ENCRYPTED_SECRET contents carried (RSA-4096).
pub const MAX_ENCRYPTED_SECRET: usize = 520;
/// Largest digest-sized value: credential secrets, nonces (SHA-512).
pub const MAX_DIGEST: usize = 64;
/// Largest TPMS_ATTEST carried.
pub const MAX_ATTEST: usize = 512;
/// Largest TPMT_SIGNATURE carried (RSA-4096).
pub const MAX_SIGNATURE: usize = 520;
/// Most PCR banks in one selection.
pub const MAX_BANKS: usize = 4;
/// Bytes of payload in one [`Chunk`].
pub const CHUNK_DATA: usize = 512;
/// Longest human-readable text field.
pub const MAX_TEXT: usize = 96;

/// An agent's first words: which protocol versions it speaks and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Hello {
    /// The oldest protocol version the agent speaks.
    pub min_version: u16,
    /// The newest protocol version the agent speaks.
    pub max_version: u16,
    /// The agent's own software version, for logs (not trusted: the quote says what booted).
    pub agent: String<32>,
}

/// The verifier's answer to [`Hello`]: the version used from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Welcome {
    pub version: u16,
}

/// Which large payload a [`Chunk`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum BlobKind {
    /// The EK certificate, DER, as read from the TPM's NV index.
    EkCertificate,
    /// The TCG crypto-agile event log, as kept by the agent.
    EventLog,
    /// PCR values for the requested selection, as [`crate::chunk`] documents.
    PcrValues,
}

/// A piece of a large payload; pieces arrive in order, see [`crate::chunk::Reassembler`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Chunk {
    pub blob: BlobKind,
    /// The payload's total length; the same in every chunk of one payload.
    pub total: u32,
    /// Where `data` starts within the payload.
    pub offset: u32,
    pub data: Vec<u8, CHUNK_DATA>,
}

/// The TPM's identity and the AK it asks the verifier to bind to it. An EK certificate, if
/// any, was sent as [`BlobKind::EkCertificate`] chunks just before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Enroll {
    /// The EK's TPM2B_PUBLIC.
    pub ek_public: Vec<u8, MAX_PUBLIC>,
    /// The AK's TPM2B_PUBLIC.
    pub ak_public: Vec<u8, MAX_PUBLIC>,
    /// Whether an EK certificate was sent before this message.
    pub has_ek_certificate: bool,
}

/// TPM2_MakeCredential's output for the agent's AK, to be opened with TPM2_ActivateCredential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct CredentialChallenge {
    /// The contents of the TPM2B_ID_OBJECT (without its size field).
    pub id_object: Vec<u8, MAX_ID_OBJECT>,
    /// The contents of the TPM2B_ENCRYPTED_SECRET (without its size field).
    pub encrypted_secret: Vec<u8, MAX_ENCRYPTED_SECRET>,
}

/// The secret TPM2_ActivateCredential recovered: proof that the AK lives beside the EK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct ActivationProof {
    pub secret: Vec<u8, MAX_DIGEST>,
}

/// PCRs of one bank: a TPM_ALG_ID and a bitmap (bit n = PCR n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct PcrBank {
    pub hash_alg: u16,
    pub pcrs: u32,
}

/// Asks for a quote over `selection` with `nonce` as its qualifying data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct QuoteRequest {
    pub nonce: Vec<u8, MAX_DIGEST>,
    pub selection: Vec<PcrBank, MAX_BANKS>,
}

/// A quote. The PCR values and the event log were sent as chunks just before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Evidence {
    /// TPMS_ATTEST, the bytes the AK signed.
    pub attest: Vec<u8, MAX_ATTEST>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8, MAX_SIGNATURE>,
}

/// The verifier's decision on one piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Verdict {
    pub attested: bool,
    /// The accepted software version that matched, when attested.
    pub software_version: String<32>,
    /// Seconds the result stays valid, when attested.
    pub valid_for_secs: u32,
    /// Why not, when not attested.
    pub reason: String<MAX_TEXT>,
}

/// Why the verifier ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum RefusalKind {
    /// No protocol version in common.
    Version,
    /// The EK is not trusted by any trusted cluster.
    UntrustedEk,
    /// The AK is not acceptable (attributes) or its activation proof was wrong.
    Activation,
    /// A message out of order or malformed.
    Protocol,
    /// The verifier cannot serve now; retry later.
    Unavailable,
}

/// The verifier ends the session, saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Refused {
    pub kind: RefusalKind,
    pub reason: String<MAX_TEXT>,
}

/// What failed on the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum AgentFailure {
    /// The TPM answered with this response code.
    TpmResponse(u32),
    /// The TPM did not answer, or answered garbage.
    TpmUnreachable,
    /// The request cannot be served by this agent (e.g. a PCR bank it lacks).
    Unsupported,
    /// A message from the verifier was malformed or out of order.
    Protocol,
}

/// The agent reports a failure instead of the expected answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct AgentError {
    pub failure: AgentFailure,
    pub detail: String<MAX_TEXT>,
}

/// Largest plaintext of a key operation over the agent link.
pub const MAX_KEY_DATA: usize = 128;
/// Largest associated data of a key operation over the agent link.
pub const MAX_KEY_AAD: usize = 64;
/// Largest key provider ciphertext over the agent link (its header is at most 235 bytes).
pub const MAX_KEY_CIPHERTEXT: usize = 384;
/// An uncompressed SEC1 P-256 public key: `04 || x || y`.
pub const P256_PUBLIC: usize = 65;
/// AES-256-GCM's tag.
pub const SEALED_TAG: usize = 16;

/// A quote bound to the agent's ephemeral P-256 key (since v2): the quote's qualifying data is
/// `SHA-256(nonce || session_public)` instead of the nonce, so the verifier knows the key belongs
/// to the attested device. The PCR values and the event log were sent as chunks just before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct BoundEvidence {
    /// TPMS_ATTEST, the bytes the AK signed.
    pub attest: Vec<u8, MAX_ATTEST>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8, MAX_SIGNATURE>,
    /// The agent's ephemeral P-256 public key, uncompressed SEC1.
    pub session_public: Vec<u8, P256_PUBLIC>,
}

/// The verifier's ephemeral P-256 public key (since v2), sent after an attested [`Verdict`] on
/// [`BoundEvidence`]: both sides derive the channel key from it (see [`crate::channel`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct ChannelKey {
    pub public: Vec<u8, P256_PUBLIC>,
}

/// A key operation an attested agent asks for, sealed in [`Sealed`] (since v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum KeyRequest {
    /// A fresh 256-bit data key and its wrapped form.
    GenerateKey { aad: Vec<u8, MAX_KEY_AAD> },
    Encrypt {
        plaintext: Vec<u8, MAX_KEY_DATA>,
        aad: Vec<u8, MAX_KEY_AAD>,
    },
    Decrypt {
        ciphertext: Vec<u8, MAX_KEY_CIPHERTEXT>,
        aad: Vec<u8, MAX_KEY_AAD>,
    },
    /// Decrypt and encrypt again under the provider's current primary key.
    Rewrap {
        ciphertext: Vec<u8, MAX_KEY_CIPHERTEXT>,
        aad: Vec<u8, MAX_KEY_AAD>,
    },
}

/// Why a key operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum KeyRefusal {
    /// The host is not attested now, its token expired, or its cluster has no key provider.
    NotAuthorised,
    /// No replica of the key server answered.
    KeyServerUnreachable,
    /// The primary key is revoked or destroyed.
    KeyRevoked,
    /// The ciphertext is malformed, of another provider, or fails authentication (tampered, or
    /// other associated data).
    BadCiphertext,
    /// Anything else; the reason says what.
    Other,
}

/// The answer to a [`KeyRequest`], sealed in [`Sealed`] (since v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum KeyResponse {
    DataKey {
        key: [u8; 32],
        wrapped: Vec<u8, MAX_KEY_CIPHERTEXT>,
    },
    Ciphertext(Vec<u8, MAX_KEY_CIPHERTEXT>),
    Plaintext(Vec<u8, MAX_KEY_DATA>),
    Refused {
        kind: KeyRefusal,
        reason: String<MAX_TEXT>,
    },
}

/// The largest sealed body: AES-256-GCM of the larger of a [`KeyRequest`] and a [`KeyResponse`].
pub const MAX_SEALED: usize = max(
    KeyRequest::POSTCARD_MAX_SIZE,
    KeyResponse::POSTCARD_MAX_SIZE,
) + SEALED_TAG;

/// A message that carries secrets (since v2): `body` is AES-256-GCM under the channel key of a
/// postcard [`KeyRequest`] (agent to verifier) or [`KeyResponse`] (verifier to agent), ciphertext
/// then tag; `seq` counts the sealed messages of one direction from 0 and is the nonce's tail
/// ([`crate::channel::nonce`]), so a replayed or reordered message fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Sealed {
    pub seq: u32,
    pub body: Vec<u8, MAX_SEALED>,
}

/// When a check-in agent should attest again (since v3), sent after the `Verdict` of a check-in
/// session, just before the verifier closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct NextCheckIn {
    /// Seconds from now until the agent's next check-in. The verifier spreads check-ins by
    /// jitter and may shorten this to pull an attestation early; the agent should not come
    /// back sooner (unless the host rebooted), and must not wait much longer: its verdict is
    /// valid for `Verdict::valid_for_secs` only.
    pub after_secs: u32,
}

/// Every message an agent sends. Variants are append-only (see the crate's evolution rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[allow(
    clippy::large_enum_variant,
    reason = "no heap to box into: one message lives in one static buffer"
)]
pub enum AgentMessage {
    /// Since v1.
    Hello(Hello),
    /// Since v1.
    Chunk(Chunk),
    /// Since v1.
    Enroll(Enroll),
    /// Since v1.
    ActivationProof(ActivationProof),
    /// Since v1.
    Evidence(Evidence),
    /// Since v1.
    Error(AgentError),
    /// Since v2.
    BoundEvidence(BoundEvidence),
    /// Since v2.
    Sealed(Sealed),
    /// Since v3: this session is a check-in (one attestation, then [`NextCheckIn`] and the
    /// end of the session). Only directly after `Welcome`.
    CheckIn,
}

/// Every message a verifier sends. Variants are append-only (see the crate's evolution rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[allow(
    clippy::large_enum_variant,
    reason = "no heap to box into: one message lives in one static buffer"
)]
pub enum VerifierMessage {
    /// Since v1.
    Welcome(Welcome),
    /// Since v1.
    CredentialChallenge(CredentialChallenge),
    /// Since v1.
    QuoteRequest(QuoteRequest),
    /// Since v1.
    Verdict(Verdict),
    /// Since v1.
    Refused(Refused),
    /// Since v2.
    ChannelKey(ChannelKey),
    /// Since v2.
    Sealed(Sealed),
    /// Since v3.
    NextCheckIn(NextCheckIn),
}

/// The largest postcard encoding of any message in either direction.
pub const MAX_MESSAGE: usize = max(
    AgentMessage::POSTCARD_MAX_SIZE,
    VerifierMessage::POSTCARD_MAX_SIZE,
);

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}
