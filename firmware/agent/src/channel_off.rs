//! The key channel when the `key-channel` feature is off: the agent speaks protocol v1 only,
//! so none of this is ever constructed (the types are uninhabited).

use vouch_proto::wire::{KeyRequest, KeyResponse, Sealed};
use vouch_tpm::{CommandError, CommandResult, Tpm, Transport};

/// Whether this build has the key channel (feature `key-channel`).
pub const ENABLED: bool = false;

/// Never constructed without the feature.
#[derive(Debug)]
pub enum SessionKey {}

/// Never constructed without the feature.
#[derive(Debug)]
pub enum Channel {}

impl SessionKey {
    /// Always fails: there is no key channel in this build.
    ///
    /// # Errors
    /// Always [`CommandError::Capacity`].
    pub fn generate<T: Transport, const N: usize>(_tpm: &mut Tpm<T, N>) -> CommandResult<Self, T> {
        Err(CommandError::Capacity)
    }

    #[must_use]
    pub fn public(&self) -> &[u8; vouch_proto::wire::P256_PUBLIC] {
        match *self {}
    }

    #[must_use]
    pub fn qualifying_data(&self, _nonce: &[u8]) -> [u8; 32] {
        match *self {}
    }

    /// Never called: there is no key in this build.
    ///
    /// # Errors
    /// None.
    pub fn agree<T: Transport, const N: usize>(
        &self,
        _tpm: &mut Tpm<T, N>,
        _verifier_public: &[u8],
        _salt: &[u8],
    ) -> CommandResult<Option<Channel>, T> {
        match *self {}
    }

    /// Never called: there is no key in this build.
    ///
    /// # Errors
    /// None.
    pub fn flush<T: Transport, const N: usize>(
        &self,
        _tpm: &mut Tpm<T, N>,
    ) -> CommandResult<(), T> {
        match *self {}
    }
}

impl Channel {
    #[must_use]
    pub fn seal_request(&mut self, _request: &KeyRequest) -> Option<Sealed> {
        match *self {}
    }

    #[must_use]
    pub fn open_response(&mut self, _sealed: &Sealed) -> Option<KeyResponse> {
        match *self {}
    }
}
