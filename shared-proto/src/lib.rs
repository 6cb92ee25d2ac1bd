//! The one wire contract between Vouch's agent (firmware or hosted) and the verifier.
//!
//! - [`wire`]: the message enums, one per direction, with every field bounded.
//! - [`frame`]: postcard encoding in COBS frames delimited by `0x00`, and a frame reader that
//!   resynchronises after garbage.
//! - [`channel`]: the layout of the key-operation channel bound to the attestation (qualifying
//!   data, key schedule labels, nonces); the cryptography is each side's.
//! - [`chunk`]: large payloads (EK certificate, event log, PCR values) split into chunks and
//!   reassembled into a bounded buffer.
//!
//! The crate is `no_std`, allocates nothing, does no I/O and knows no transport: the same bytes
//! cross a UART, a TCP socket or an in-memory pipe.
//!
//! # Versions and evolution rules
//! A session starts with [`wire::Hello`] carrying the agent's `[min, max]` protocol versions; the
//! verifier answers [`wire::Welcome`] with the version both use ([`negotiate`]) or refuses. To
//! keep old peers working:
//! 1. Never reorder, remove or change the type of an enum variant or a field: postcard encodes
//!    variants by index and fields by position.
//! 2. Add new messages or enum variants at the end only, and note the version that added them.
//! 3. A new field goes into a new message variant (postcard has no optional trailing fields);
//!    the old variant stays decodable until `MIN_VERSION` passes it.
//! 4. Bump [`CURRENT_VERSION`] with any change to the bytes; raise [`MIN_VERSION`] only when
//!    support for an old version is dropped. Golden tests pin the bytes of every version.
//!
//! # Persistent sessions and check-in
//! An agent attests in one of two ways on the same contract. A *persistent* session (v1) stays
//! open and the verifier sends a new `QuoteRequest` every re-attestation interval: the verifier
//! can attest at any moment, and a board behind a UART bridge or a small fleet needs nothing
//! else, but every host holds a connection (a socket and a task on the verifier) all the time.
//! A *check-in* session (v3, [`wire::AgentMessage::CheckIn`]) proves once — bound AK, fresh
//! nonce, quote, event log — receives the verdict and [`wire::NextCheckIn`], and disconnects:
//! the verifier holds nothing between attestations, so one verifier serves far more hosts than
//! it could hold sockets, and spreads their load by the jitter it puts in the next check-in
//! time. The price: the verifier cannot ask at an arbitrary moment; it pulls an attestation
//! early only by shortening the next interval it gives, and a host that goes silent is noticed
//! when its verdict's validity runs out. A check-in agent whose AK is already bound goes
//! straight from `Enroll` to the quote (no MakeCredential/ActivateCredential each time: the
//! verifier keeps the bound AK), so a check-in costs one quote.
#![cfg_attr(not(test), no_std)]

pub mod channel;
pub mod chunk;
pub mod frame;
pub mod wire;

/// The oldest protocol version this build still speaks.
pub const MIN_VERSION: u16 = 1;
/// The protocol version this build prefers. v2 added the channel bound to the attestation
/// (`BoundEvidence`, `ChannelKey`, `Sealed`); v3 added check-in attestation (`CheckIn`,
/// `NextCheckIn`). Older peers keep working without them: each addition is a message the
/// agent chooses to send, so a v3 verifier serves v1 and v2 agents as before.
pub const CURRENT_VERSION: u16 = 3;

/// Why two peers have no protocol version in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionError {
    /// The peer's range is empty (`min > max`): a malformed Hello.
    EmptyRange { min: u16, max: u16 },
    /// The peer only speaks versions older than ours: the peer must be updated.
    PeerTooOld { peer_max: u16 },
    /// The peer only speaks versions newer than ours: this side must be updated.
    PeerTooNew { peer_min: u16 },
}

/// The highest version both this build and a peer speaking `[peer_min, peer_max]` support.
pub fn negotiate(peer_min: u16, peer_max: u16) -> Result<u16, VersionError> {
    if peer_min > peer_max {
        return Err(VersionError::EmptyRange {
            min: peer_min,
            max: peer_max,
        });
    }
    if peer_max < MIN_VERSION {
        return Err(VersionError::PeerTooOld { peer_max });
    }
    if peer_min > CURRENT_VERSION {
        return Err(VersionError::PeerTooNew { peer_min });
    }
    Ok(peer_max.min(CURRENT_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(1, 1), Ok(1));
        assert_eq!(negotiate(1, 2), Ok(2));
        assert_eq!(negotiate(2, 2), Ok(2));
        assert_eq!(negotiate(1, 3), Ok(3));
        assert_eq!(negotiate(1, 7), Ok(CURRENT_VERSION));
        assert_eq!(
            negotiate(0, 0),
            Err(VersionError::PeerTooOld { peer_max: 0 })
        );
        assert_eq!(
            negotiate(9, 12),
            Err(VersionError::PeerTooNew { peer_min: 9 })
        );
        assert_eq!(
            negotiate(3, 2),
            Err(VersionError::EmptyRange { min: 3, max: 2 })
        );
    }
}
