//! The agent's side of the key channel bound to the attestation (protocol v2; the layout is
//! `vouch_proto::channel`): an ephemeral P-256 key per session from the TPM's random generator,
//! hashed into every quote's qualifying data; ECDH with the verifier's ephemeral key and
//! HKDF-SHA256 to an AES-256-GCM key; sealed key requests and responses with per-direction
//! counters. No heap; the secrets are wiped on drop.

use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, Tag};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::{PublicKey, SecretKey};
use sha2::{Digest as _, Sha256};
use vouch_proto::channel::{self, Direction};
use vouch_proto::wire::{KeyRequest, KeyResponse, MAX_SEALED, P256_PUBLIC, SEALED_TAG, Sealed};
use vouch_tpm::{CommandError, CommandResult, Tpm, Transport};
use zeroize::Zeroize as _;

/// Whether this build has the key channel (feature `key-channel`).
pub const ENABLED: bool = true;

/// The agent's ephemeral key for one session.
pub struct SessionKey {
    secret: SecretKey,
    public: [u8; P256_PUBLIC],
}

impl core::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionKey").finish_non_exhaustive()
    }
}

impl SessionKey {
    /// A fresh key from TPM2_GetRandom.
    ///
    /// # Errors
    /// The TPM's failure; [`CommandError::Capacity`] if eight draws are all out of range
    /// (probability about 2^-256).
    pub fn generate<T: Transport, const N: usize>(tpm: &mut Tpm<T, N>) -> CommandResult<Self, T> {
        let mut bytes = [0u8; 32];
        for _ in 0..8 {
            tpm.get_random(&mut bytes)?;
            let secret = SecretKey::from_bytes(&bytes.into());
            bytes.zeroize();
            if let Ok(secret) = secret {
                let point = secret.public_key().to_encoded_point(false);
                let mut public = [0u8; P256_PUBLIC];
                let encoded = point.as_bytes();
                if encoded.len() != P256_PUBLIC {
                    return Err(CommandError::Capacity);
                }
                public.copy_from_slice(encoded);
                return Ok(Self { secret, public });
            }
        }
        Err(CommandError::Capacity)
    }

    /// The public key, uncompressed SEC1.
    #[must_use]
    pub fn public(&self) -> &[u8; P256_PUBLIC] {
        &self.public
    }

    /// The quote's qualifying data: SHA-256(nonce || public key).
    #[must_use]
    pub fn qualifying_data(&self, nonce: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(nonce);
        h.update(self.public);
        h.finalize().into()
    }

    /// The channel with the verifier's ephemeral key; `salt` is the nonce of the attested quote.
    /// `None` for a public key that is not on the curve.
    #[must_use]
    pub fn agree(&self, verifier_public: &[u8], salt: &[u8]) -> Option<Channel> {
        let peer = PublicKey::from_sec1_bytes(verifier_public).ok()?;
        let verifier: [u8; P256_PUBLIC] = verifier_public.try_into().ok()?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.as_affine());
        let hk = Hkdf::<Sha256>::new(Some(salt), shared.raw_secret_bytes());
        let mut key = [0u8; 32];
        hk.expand(&channel::info(&self.public, &verifier), &mut key)
            .ok()?;
        let cipher = Aes256Gcm::new_from_slice(&key).ok();
        key.zeroize();
        Some(Channel {
            cipher: cipher?,
            send_seq: 0,
            recv_seq: 0,
        })
    }
}

/// An established channel: the AES-256-GCM key and the two counters.
pub struct Channel {
    cipher: Aes256Gcm,
    send_seq: u32,
    recv_seq: u32,
}

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("send_seq", &self.send_seq)
            .field("recv_seq", &self.recv_seq)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Seals a request with the next send counter.
    #[must_use]
    pub fn seal_request(&mut self, request: &KeyRequest) -> Option<Sealed> {
        let mut buf = [0u8; MAX_SEALED];
        let len = postcard::to_slice(request, &mut buf).ok()?.len();
        let seq = self.send_seq;
        let nonce = channel::nonce(Direction::AgentToVerifier, seq);
        let plain = buf.get_mut(..len)?;
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &Direction::AgentToVerifier.aad(),
                plain,
            )
            .ok()?;
        let mut body = heapless::Vec::new();
        body.extend_from_slice(buf.get(..len)?).ok()?;
        body.extend_from_slice(&tag).ok()?;
        buf.zeroize();
        self.send_seq = seq.checked_add(1)?;
        Some(Sealed { seq, body })
    }

    /// Opens a response: it must carry the next receive counter and authenticate.
    #[must_use]
    pub fn open_response(&mut self, sealed: &Sealed) -> Option<KeyResponse> {
        if sealed.seq != self.recv_seq {
            return None;
        }
        let split = sealed.body.len().checked_sub(SEALED_TAG)?;
        let (ct, tag) = sealed.body.split_at(split);
        let mut buf = [0u8; MAX_SEALED];
        let plain = buf.get_mut(..ct.len())?;
        plain.copy_from_slice(ct);
        let nonce = channel::nonce(Direction::VerifierToAgent, sealed.seq);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &Direction::VerifierToAgent.aad(),
                plain,
                Tag::from_slice(tag),
            )
            .ok()?;
        let response = postcard::from_bytes(plain).ok();
        buf.zeroize();
        self.recv_seq = self.recv_seq.checked_add(1)?;
        response
    }
}
