//! The verifier's side of the key channel bound to the attestation (protocol v2; the layout is
//! `vouch_proto::channel`): after an attested verdict on a quote whose qualifying data was
//! `SHA-256(nonce || agent key)`, an ephemeral P-256 key, ECDH, HKDF-SHA256 to an AES-256-GCM
//! key; sealed key requests are opened, authorised like the HTTPS key routes (the session's
//! attestation token, the host's current state, its cluster's provider) and answered sealed.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::SystemRandom;
use heapless::{String as HString, Vec as HVec};
use vouch_proto::channel::{self, Direction};
use vouch_proto::wire::{
    KeyRefusal, KeyRequest, KeyResponse, MAX_SEALED, MAX_TEXT, P256_PUBLIC, SEALED_TAG, Sealed,
};
use zeroize::Zeroizing;

use crate::service::AppState;

/// The quote's expected qualifying data for a bound quote.
pub fn qualifying_data(nonce: &[u8], agent_public: &[u8]) -> Vec<u8> {
    let mut input = nonce.to_vec();
    input.extend_from_slice(agent_public);
    crate::sha256(&input).to_vec()
}

/// An established channel.
pub struct ServerChannel {
    key: LessSafeKey,
    send_seq: u32,
    recv_seq: u32,
}

impl std::fmt::Debug for ServerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChannel")
            .field("send_seq", &self.send_seq)
            .field("recv_seq", &self.recv_seq)
            .finish_non_exhaustive()
    }
}

/// A new channel with the agent's key; returns it and the verifier's public key to send.
pub fn establish(
    agent_public: &[u8],
    nonce: &[u8],
) -> Result<(ServerChannel, HVec<u8, P256_PUBLIC>), String> {
    let agent: [u8; P256_PUBLIC] = agent_public
        .try_into()
        .map_err(|_| "the agent's session key is not an uncompressed P-256 point".to_owned())?;
    let private = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new())
        .map_err(|_| "ephemeral key generation failed".to_owned())?;
    let public = private
        .compute_public_key()
        .map_err(|_| "ephemeral public key failed".to_owned())?;
    let ours: [u8; P256_PUBLIC] = public
        .as_ref()
        .try_into()
        .map_err(|_| "unexpected public key encoding".to_owned())?;
    let info = channel::info(&agent, &ours);
    let key = agree_ephemeral(
        private,
        UnparsedPublicKey::new(&ECDH_P256, agent_public),
        "the agent's session key is not on P-256",
        |shared| {
            let prk = Salt::new(HKDF_SHA256, nonce).extract(shared);
            let info: [&[u8]; 1] = [&info];
            let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| "HKDF failed")?;
            Ok(UnboundKey::from(okm))
        },
    )
    .map_err(|e: &str| e.to_owned())?;
    let public = HVec::from_slice(&ours).map_err(|()| "public key length".to_owned())?;
    Ok((
        ServerChannel {
            key: LessSafeKey::new(key),
            send_seq: 0,
            recv_seq: 0,
        },
        public,
    ))
}

impl ServerChannel {
    /// Opens a sealed request: the next counter, authentic, a `KeyRequest`.
    pub fn open(&mut self, sealed: &Sealed) -> Result<KeyRequest, String> {
        if sealed.seq != self.recv_seq {
            return Err(format!(
                "sealed message {} where {} was due (replayed or reordered)",
                sealed.seq, self.recv_seq
            ));
        }
        let mut buf = Zeroizing::new(sealed.body.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(channel::nonce(
                    Direction::AgentToVerifier,
                    sealed.seq,
                )),
                Aad::from(Direction::AgentToVerifier.aad()),
                &mut buf,
            )
            .map_err(|_| "a sealed message does not authenticate".to_owned())?;
        let request = postcard::from_bytes(plain).map_err(|e| format!("sealed request: {e}"))?;
        self.recv_seq = self.recv_seq.saturating_add(1);
        Ok(request)
    }

    /// Seals a response with the next counter.
    pub fn seal(&mut self, response: &KeyResponse) -> Result<Sealed, String> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_SEALED]);
        let len = postcard::to_slice(response, &mut buf)
            .map_err(|e| format!("response: {e}"))?
            .len();
        buf.truncate(len);
        let seq = self.send_seq;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(channel::nonce(Direction::VerifierToAgent, seq)),
                Aad::from(Direction::VerifierToAgent.aad()),
                &mut buf,
            )
            .map_err(|_| "seal failed".to_owned())?;
        let mut body = HVec::new();
        body.extend_from_slice(&buf)
            .and_then(|()| body.extend_from_slice(tag.as_ref()))
            .map_err(|()| "sealed response too large".to_owned())?;
        debug_assert!(body.len() <= MAX_SEALED && tag.as_ref().len() == SEALED_TAG);
        self.send_seq = seq.saturating_add(1);
        Ok(Sealed { seq, body })
    }
}

fn refused(kind: KeyRefusal, reason: &str) -> KeyResponse {
    let mut text = HString::<MAX_TEXT>::new();
    for c in reason.chars() {
        if text.push(c).is_err() {
            break;
        }
    }
    KeyResponse::Refused { kind, reason: text }
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the answer sent, built once per request"
)]
fn bounded<const N: usize>(bytes: &[u8], what: &str) -> Result<HVec<u8, N>, KeyResponse> {
    HVec::from_slice(bytes).map_err(|()| {
        refused(
            KeyRefusal::Other,
            &format!("{what} of {} bytes does not fit the link", bytes.len()),
        )
    })
}

/// The refusal of a provider's failure, noted for `provider status` and the metrics.
fn provider_refusal(state: &AppState, provider: &str, e: &vouch_keyprovider::Error) -> KeyResponse {
    use vouch_keyprovider::Error as E;
    crate::service::keys::note_failure(state, provider, e);
    let kind = match e {
        E::Unreachable { .. } => KeyRefusal::KeyServerUnreachable,
        E::KeyRevoked { .. } => KeyRefusal::KeyRevoked,
        E::Format(_) | E::Authentication | E::WrongProvider { .. } | E::UnknownKey { .. } => {
            KeyRefusal::BadCiphertext
        }
        _ => KeyRefusal::Other,
    };
    refused(kind, &e.to_string())
}

/// Answers one key request of an agent whose session holds `token`.
pub async fn answer(state: &AppState, token: Option<&str>, request: KeyRequest) -> KeyResponse {
    let what = "agent link key request";
    let Some(token) = token else {
        return refused(KeyRefusal::NotAuthorised, "this session is not attested");
    };
    let host = match crate::service::keys::authorise_host(state, token, what).await {
        Ok(host) => host,
        Err(e) => return refused(KeyRefusal::NotAuthorised, &e.reason()),
    };
    // Boards name no provider: the cluster's default.
    let name = match host.provider(None) {
        Ok(name) => name,
        Err(e) => return refused(KeyRefusal::NotAuthorised, &e.reason()),
    };
    let provider = match state.keys.provider(&state.store, name).await {
        Ok(p) => p,
        Err(e) => return refused(KeyRefusal::Other, &e.reason()),
    };
    // Every ciphertext is bound to the host's cluster: another cluster's host cannot open it.
    let cluster = Some(host.host.cluster.as_str());
    let result = match request {
        KeyRequest::GenerateKey { aad } => match provider.generate_key_in(cluster, &aad).await {
            Ok(k) => bounded(&k.wrapped, "wrapped key").map(|wrapped| KeyResponse::DataKey {
                key: *k.key,
                wrapped,
            }),
            Err(e) => Err(provider_refusal(state, name, &e)),
        },
        KeyRequest::Encrypt { plaintext, aad } => {
            match provider.encrypt_in(cluster, &plaintext, &aad).await {
                Ok(ct) => bounded(&ct, "ciphertext").map(KeyResponse::Ciphertext),
                Err(e) => Err(provider_refusal(state, name, &e)),
            }
        }
        KeyRequest::Decrypt { ciphertext, aad } => {
            match provider.decrypt_in(cluster, &ciphertext, &aad).await {
                Ok(p) => bounded(&p, "plaintext").map(KeyResponse::Plaintext),
                Err(e) => Err(provider_refusal(state, name, &e)),
            }
        }
        KeyRequest::Rewrap { ciphertext, aad } => {
            match provider.rewrap_in(cluster, &ciphertext, &aad).await {
                Ok(ct) => bounded(&ct, "ciphertext").map(KeyResponse::Ciphertext),
                Err(e) => Err(provider_refusal(state, name, &e)),
            }
        }
    };
    let response = result.unwrap_or_else(|refusal| refusal);
    if let KeyResponse::Refused { kind, reason } = &response {
        tracing::warn!(who = %host.host.ek_hash, what, ?kind, %reason, "key request refused");
    }
    response
}
