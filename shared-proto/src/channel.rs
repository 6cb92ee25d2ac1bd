//! The key-operation channel bound to the attestation (protocol v2): what both sides compute,
//! written down once. The cryptography itself is each side's (RustCrypto on the agent, aws-lc-rs
//! in vouchd); this module only fixes the bytes.
//!
//! 1. The agent makes an ephemeral P-256 key pair per session and quotes with qualifying data
//!    `SHA-256(nonce || agent_public)` ([`qualifying_data_input`]), sending `agent_public` in
//!    `BoundEvidence`. A verifier that accepts the quote knows the key is the attested device's.
//! 2. After an attested verdict the verifier sends its own ephemeral public key (`ChannelKey`).
//! 3. Both compute the ECDH shared secret (the x-coordinate, 32 bytes) and
//!    `key = HKDF-SHA256(salt = nonce, ikm = shared, info = INFO || agent_public ||
//!    verifier_public)`, 32 bytes: an AES-256-GCM key.
//! 4. A `Sealed` message is AES-256-GCM with nonce [`nonce`]`(direction, seq)` and associated
//!    data `[direction]`; each direction counts from 0, and a receiver accepts only the next
//!    `seq`. A new `ChannelKey` (after a re-attestation) starts a new key and new counters.

use crate::wire::P256_PUBLIC;

/// The HKDF info prefix.
pub const INFO: &[u8] = b"vouch key channel v1";

/// Which way a sealed message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    AgentToVerifier = 0,
    VerifierToAgent = 1,
}

impl Direction {
    /// The associated data of a sealed message.
    #[must_use]
    pub const fn aad(self) -> [u8; 1] {
        [self as u8]
    }
}

/// The AES-GCM nonce of sealed message `seq` in `direction`: the direction, seven zeros, `seq`
/// big-endian.
#[must_use]
pub const fn nonce(direction: Direction, seq: u32) -> [u8; 12] {
    let s = seq.to_be_bytes();
    [direction as u8, 0, 0, 0, 0, 0, 0, 0, s[0], s[1], s[2], s[3]]
}

/// The bytes hashed (SHA-256) into the quote's qualifying data: the nonce, then the agent's
/// public key. Returns the length written; `None` when `out` is too small.
pub fn qualifying_data_input(
    nonce: &[u8],
    agent_public: &[u8; P256_PUBLIC],
    out: &mut [u8],
) -> Option<usize> {
    let len = nonce.len().checked_add(P256_PUBLIC)?;
    let dest = out.get_mut(..len)?;
    let (n, p) = dest.split_at_mut(nonce.len());
    n.copy_from_slice(nonce);
    p.copy_from_slice(agent_public);
    Some(len)
}

/// The HKDF info: [`INFO`], the agent's public key, the verifier's public key.
pub const INFO_LEN: usize = INFO.len() + 2 * P256_PUBLIC;

#[must_use]
pub fn info(
    agent_public: &[u8; P256_PUBLIC],
    verifier_public: &[u8; P256_PUBLIC],
) -> [u8; INFO_LEN] {
    let mut out = [0u8; INFO_LEN];
    let (a, rest) = out.split_at_mut(INFO.len());
    a.copy_from_slice(INFO);
    let (b, c) = rest.split_at_mut(P256_PUBLIC);
    b.copy_from_slice(agent_public);
    c.copy_from_slice(verifier_public);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(
            nonce(Direction::VerifierToAgent, 0x0102_0304),
            [1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(Direction::AgentToVerifier.aad(), [0]);
        let mut out = [0u8; 80];
        let public = [4u8; P256_PUBLIC];
        assert_eq!(qualifying_data_input(&[9, 9], &public, &mut out), Some(67));
        assert_eq!(out[..3], [9, 9, 4]);
        assert_eq!(qualifying_data_input(&[0; 16], &public, &mut out), None);
        let i = info(&[1; P256_PUBLIC], &[2; P256_PUBLIC]);
        assert_eq!(&i[..INFO.len()], INFO);
        assert_eq!(i[INFO.len()], 1);
        assert_eq!(i[INFO_LEN - 1], 2);
    }
}
