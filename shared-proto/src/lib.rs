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
#![cfg_attr(not(test), no_std)]

pub mod channel;
pub mod chunk;
pub mod frame;
pub mod wire;

/// The oldest protocol version this build still speaks.
pub const MIN_VERSION: u16 = 1;
/// The protocol version this build prefers. v2 added the channel bound to the attestation
/// (`BoundEvidence`, `ChannelKey`, `Sealed`); v1 peers keep working without it.
pub const CURRENT_VERSION: u16 = 2;

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
