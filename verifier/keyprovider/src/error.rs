//! What a key provider operation fails with, by who is at fault.

use crate::ciphertext::FormatError;
use vouch_kmip::State;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No replica of the provider's key server answered (and, with local wrapping, no cached
    /// copy of the key is within its lifetime).
    #[error("key server {key_server} of provider {provider} unreachable: {detail}")]
    Unreachable {
        provider: String,
        key_server: String,
        detail: String,
    },

    /// The primary key is revoked or destroyed on the key server.
    #[error("key {key_id} of provider {provider} is revoked or destroyed (state {state:?})")]
    KeyRevoked {
        provider: String,
        key_id: String,
        state: State,
    },

    /// The key cannot be used: not found, not active yet, not AES-256, not usable for this
    /// wrapping mode.
    #[error("key {key_id} of provider {provider} is not usable: {reason}")]
    KeyUnusable {
        provider: String,
        key_id: String,
        reason: String,
    },

    /// The key server refused or broke the protocol.
    #[error("key server {key_server} of provider {provider}: {detail}")]
    KeyServer {
        provider: String,
        key_server: String,
        detail: String,
    },

    /// The ciphertext names a primary key this provider does not have (now or retired).
    #[error("provider {provider} has no key {key_id} version {key_version}")]
    UnknownKey {
        provider: String,
        key_id: String,
        key_version: u32,
    },

    /// The ciphertext was made by another provider.
    #[error("ciphertext of provider {found}, not of provider {expected}")]
    WrongProvider { expected: String, found: String },

    /// Not a ciphertext of this format.
    #[error("malformed ciphertext: {0}")]
    Format(#[from] FormatError),

    /// The GCM tag does not match: the ciphertext or its associated data was changed, or the
    /// wrong associated data was given.
    #[error("ciphertext authentication failed (tampered ciphertext or wrong associated data)")]
    Authentication,

    /// An input out of bounds (plaintext, associated data, batch).
    #[error("request too large: {0}")]
    TooLarge(String),

    /// The provider configuration is unusable.
    #[error("key provider configuration: {0}")]
    Config(String),

    /// The system's random generator or AES failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

impl Error {
    /// A short stable name of the kind, for APIs and metrics.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "key_server_unreachable",
            Self::KeyRevoked { .. } => "key_revoked",
            Self::KeyUnusable { .. } => "key_unusable",
            Self::KeyServer { .. } => "key_server_error",
            Self::UnknownKey { .. } => "unknown_key",
            Self::WrongProvider { .. } => "wrong_provider",
            Self::Format(_) => "malformed_ciphertext",
            Self::Authentication => "authentication_failed",
            Self::TooLarge(_) => "too_large",
            Self::Config(_) => "config",
            Self::Crypto(_) => "crypto",
        }
    }

    pub(crate) fn from_kmip(
        provider: &str,
        key_server: &str,
        key_id: &str,
        e: vouch_kmip::Error,
    ) -> Self {
        if e.is_unavailable() {
            return Self::Unreachable {
                provider: provider.into(),
                key_server: key_server.into(),
                detail: e.to_string(),
            };
        }
        match e {
            vouch_kmip::Error::KeyRevoked { state, .. } => Self::KeyRevoked {
                provider: provider.into(),
                key_id: key_id.into(),
                state,
            },
            vouch_kmip::Error::KeyNotActive { .. } | vouch_kmip::Error::KeyNotFound { .. } => {
                Self::KeyUnusable {
                    provider: provider.into(),
                    key_id: key_id.into(),
                    reason: e.to_string(),
                }
            }
            other => Self::KeyServer {
                provider: provider.into(),
                key_server: key_server.into(),
                detail: other.to_string(),
            },
        }
    }
}
