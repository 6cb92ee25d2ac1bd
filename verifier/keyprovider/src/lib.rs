//! Vouch's key provider service, without the service: trusted key providers on KMIP key servers.
//!
//! A key server is a `vouch_kmip::KeyServer` (replicas tried in order, a client certificate, a
//! CA). A [`KeyProvider`] is a name and one primary key on a key server ([`ProviderConfig`]);
//! several providers may use different keys of one key server. It
//! - generates 256-bit data keys and returns them with their wrapped form;
//! - encrypts and decrypts with AES-256-GCM and caller-supplied associated data, into the
//!   self-describing [`ciphertext`] format (format version, provider, optionally a context,
//!   primary key id and version, nonce, tag), so decryption needs no other state; the `*_in`
//!   operations bind a ciphertext to a context (the caller's: vouchd uses the host's
//!   cluster), which only a decryption in the same context opens;
//! - rewraps to the current primary key after a rotation, and runs batches with a result per
//!   item.
//!
//! Wrapping is [`Wrapping::Local`] (the primary key got once, cached in memory, zeroized, with a
//! bounded lifetime: a key server outage is ridden out until the lifetime ends) or
//! [`Wrapping::Remote`] (KMIP Encrypt / Decrypt on the key server, KMIP 1.4 for GCM). Both write
//! the same format: the one key decrypts what the other mode encrypted.
//!
//! Errors keep [`Error::Unreachable`] (no replica answered) apart from [`Error::KeyRevoked`]
//! (revoked or destroyed on the key server); a changed ciphertext or associated data is
//! [`Error::Authentication`]. The crate knows nothing of attestation, hosts or clusters (a
//! context is an opaque name): who may ask is the service's decision.

pub mod ciphertext;
pub mod clock;
pub mod error;
pub mod provider;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use provider::{
    DataKey, KEY_LEN, KeyProvider, KeyRef, MAX_BATCH, ProviderConfig, Reply, Request, Wrapping,
};
