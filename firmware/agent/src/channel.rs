//! The agent's side of the key channel bound to the attestation (protocol v2; the layout is
//! `vouch_proto::channel`): an ephemeral P-256 key per session, created in the TPM (its
//! private key never leaves it) and hashed into every quote's qualifying data; ECDH with the
//! verifier's ephemeral key by TPM2_ECDH_ZGen and HKDF-SHA256 to an AES-256-GCM key; sealed
//! key requests and responses with per-direction counters. No heap, and no elliptic-curve code
//! on the MCU; the secrets are wiped on drop.

use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, Tag};
use hkdf::Hkdf;
use sha2::{Digest as _, Sha256};
use vouch_proto::channel::{self, Direction};
use vouch_proto::wire::{KeyRequest, KeyResponse, MAX_SEALED, P256_PUBLIC, SEALED_TAG, Sealed};
use vouch_tpm::{CommandError, CommandResult, Tpm, Transport};
use zeroize::Zeroize as _;

/// Whether this build has the key channel (feature `key-channel`).
pub const ENABLED: bool = true;

/// The agent's ephemeral key for one session: a transient ECDH key in the TPM.
#[derive(Debug)]
pub struct SessionKey {
    handle: u32,
    public: [u8; P256_PUBLIC],
}

/// SEC1's tag of an uncompressed point.
const UNCOMPRESSED: u8 = 0x04;
/// A P-256 coordinate's length.
const COORDINATE: usize = 32;

impl SessionKey {
    /// A fresh key in the TPM (TPM2_CreatePrimary in the NULL hierarchy, made unique with
    /// TPM2_GetRandom). [`SessionKey::flush`] removes it.
    ///
    /// # Errors
    /// The TPM's failure; [`CommandError::Capacity`] if the TPM returned a public key that is
    /// not a P-256 point.
    pub fn generate<T: Transport, const N: usize>(tpm: &mut Tpm<T, N>) -> CommandResult<Self, T> {
        let mut unique = [0u8; 32];
        tpm.get_random(&mut unique)?;
        let key = tpm.create_ecdh_key(&unique)?;
        let mut public = [0u8; P256_PUBLIC];
        let encoded = key.public.ecc_point().and_then(|(x, y)| {
            let (tag, xy) = public.split_first_mut()?;
            *tag = UNCOMPRESSED;
            let (px, py) = xy.split_at_mut(COORDINATE);
            left_pad(px, x)?;
            left_pad(py, y)
        });
        if encoded.is_none() {
            let _ = tpm.flush_context(key.handle);
            return Err(CommandError::Capacity);
        }
        Ok(Self {
            handle: key.handle,
            public,
        })
    }

    /// Removes the key from the TPM.
    ///
    /// # Errors
    /// The TPM's failure.
    pub fn flush<T: Transport, const N: usize>(&self, tpm: &mut Tpm<T, N>) -> CommandResult<(), T> {
        tpm.flush_context(self.handle)
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

    /// The channel with the verifier's ephemeral key (uncompressed SEC1); `salt` is the nonce
    /// of the attested quote. `Ok(None)` for a key that is not a point on the curve (the TPM
    /// checks: TPM_RC_ECC_POINT).
    ///
    /// # Errors
    /// Any other TPM failure.
    pub fn agree<T: Transport, const N: usize>(
        &self,
        tpm: &mut Tpm<T, N>,
        verifier_public: &[u8],
        salt: &[u8],
    ) -> CommandResult<Option<Channel>, T> {
        let Ok(verifier) = <&[u8; P256_PUBLIC]>::try_from(verifier_public) else {
            return Ok(None);
        };
        let Some((x, y)) = verifier
            .split_first()
            .filter(|(tag, _)| **tag == UNCOMPRESSED)
            .map(|(_, xy)| xy.split_at(COORDINATE))
        else {
            return Ok(None);
        };
        let mut shared = [0u8; COORDINATE];
        match tpm.ecdh_zgen(self.handle, x, y, &mut shared) {
            Ok(()) => {}
            // TPM_RC_ECC_POINT, any parameter: the verifier's key is not on the curve.
            Err(CommandError::Tpm(rc)) if rc.base() == 0x0A7 => return Ok(None),
            Err(e) => return Err(e),
        }
        let hk = Hkdf::<Sha256>::new(Some(salt), &shared);
        shared.zeroize();
        let mut key = [0u8; 32];
        let info = channel::info(&self.public, verifier);
        let cipher = hk
            .expand(&info, &mut key)
            .ok()
            .and_then(|()| Aes256Gcm::new_from_slice(&key).ok());
        key.zeroize();
        Ok(cipher.map(|cipher| Channel {
            cipher,
            send_seq: 0,
            recv_seq: 0,
        }))
    }
}

/// Copies big-endian `value` into `out`, left-padded with zeros; `None` if it is longer.
fn left_pad(out: &mut [u8], value: &[u8]) -> Option<()> {
    let pad = out.len().checked_sub(value.len())?;
    let (zeros, rest) = out.split_at_mut(pad);
    zeros.fill(0);
    rest.copy_from_slice(value);
    Some(())
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
