//! A trusted key provider: one primary key on one key server, wrapping locally (the key's
//! material cached in memory) or remotely (KMIP Encrypt / Decrypt).

use crate::Error;
use crate::ciphertext::{Ciphertext, Header, MAX_AAD, MAX_PLAINTEXT, NONCE_LEN, TAG_LEN};
use crate::clock::Clock;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vouch_kmip::spec::{attribute, usage_mask};
use vouch_kmip::{
    CipherInput, Connection, CryptographicAlgorithm, CryptographicParameters, EndpointFailure,
    KeyServer, check_active,
};
use zeroize::Zeroizing;

/// A data key's length: AES-256.
pub const KEY_LEN: usize = 32;
/// The most items in one batch.
pub const MAX_BATCH: usize = 64;

/// One primary key of a provider: its id on the key server and the provider's version number
/// for it (1 for the first, incremented at each rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub id: String,
    pub version: u32,
}

/// How the primary key wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapping {
    /// Get the primary key's material and wrap in this process. The material is kept in memory
    /// (zeroized when dropped). After `refresh_after` the key's state is checked again on the
    /// key server (so a revocation takes effect within `refresh_after`); when the key server is
    /// unreachable, the cached key keeps serving until `lifetime` after it was last fetched.
    Local {
        refresh_after: Duration,
        lifetime: Duration,
    },
    /// Every wrap and unwrap is a KMIP Encrypt or Decrypt (AES-GCM, KMIP 1.4) on the key
    /// server, after a state check: the material never leaves the key server.
    Remote,
}

impl Wrapping {
    /// Local wrapping with a five-minute refresh and a one-hour lifetime.
    pub const LOCAL_DEFAULT: Self = Self::Local {
        refresh_after: Duration::from_secs(300),
        lifetime: Duration::from_secs(3600),
    };
}

/// A provider's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The provider's name, written into every ciphertext (1..=64 bytes).
    pub name: String,
    /// The key server's name, for messages.
    pub key_server: String,
    /// The key that encrypts now.
    pub primary: KeyRef,
    /// Earlier primary keys: they still decrypt (and so rewrap), never encrypt.
    pub retired: Vec<KeyRef>,
    pub wrapping: Wrapping,
}

/// A fresh data key and its wrapped form.
pub struct DataKey {
    pub key: Zeroizing<[u8; KEY_LEN]>,
    /// The key encrypted under the provider's primary key: a [`Ciphertext`].
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key", &"<redacted>")
            .field("wrapped", &format_args!("{} bytes", self.wrapped.len()))
            .finish()
    }
}

/// One item of a batch.
#[derive(Debug, Clone)]
pub enum Request {
    GenerateKey {
        aad: Vec<u8>,
    },
    Encrypt {
        plaintext: Zeroizing<Vec<u8>>,
        aad: Vec<u8>,
    },
    Decrypt {
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    },
    Rewrap {
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    },
}

/// One result of a batch.
#[derive(Debug)]
pub enum Reply {
    GenerateKey(DataKey),
    Encrypt(Vec<u8>),
    Decrypt(Zeroizing<Vec<u8>>),
    Rewrap(Vec<u8>),
}

struct Cached {
    material: Zeroizing<[u8; KEY_LEN]>,
    fetched: Duration,
}

/// A trusted key provider, ready to serve. Cheap to share behind an `Arc`.
pub struct KeyProvider {
    config: ProviderConfig,
    kms: KeyServer,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, Cached>>,
    rng: SystemRandom,
}

impl fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyProvider")
            .field("config", &self.config)
            .field("kms", &self.kms)
            .finish_non_exhaustive()
    }
}

impl KeyProvider {
    /// # Errors
    /// [`Error::Config`] for a name or key id out of bounds.
    pub fn new(
        config: ProviderConfig,
        kms: KeyServer,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let probe = Header {
            provider: config.name.clone(),
            context: None,
            key_id: config.primary.id.clone(),
            key_version: config.primary.version,
            nonce: [0; NONCE_LEN],
        };
        probe
            .encode()
            .map_err(|e| Error::Config(format!("provider {}: {e}", config.name)))?;
        Ok(Self {
            config,
            kms,
            clock,
            cache: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
        })
    }

    #[must_use]
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn kmip_error(&self, key_id: &str, e: vouch_kmip::Error) -> Error {
        Error::from_kmip(&self.config.name, &self.config.key_server, key_id, e)
    }

    fn unusable(&self, key_id: &str, reason: String) -> Error {
        Error::KeyUnusable {
            provider: self.config.name.clone(),
            key_id: key_id.into(),
            reason,
        }
    }

    /// The check made when the provider is added: the primary key exists, is Active, is an
    /// AES-256 key for encryption and decryption, and can be used in the configured mode (its
    /// material can be got for local wrapping; the key server encrypts and decrypts with it for
    /// remote wrapping).
    ///
    /// # Errors
    /// [`Error::KeyUnusable`], [`Error::KeyRevoked`], [`Error::Unreachable`], ...
    pub async fn check_primary(&self) -> Result<(), Error> {
        let id = self.config.primary.id.clone();
        let attributes = failover(&self.kms, |c| {
            let id = id.clone();
            Box::pin(async move {
                c.get_attributes(
                    &id,
                    &[
                        attribute::STATE,
                        attribute::CRYPTOGRAPHIC_ALGORITHM,
                        attribute::CRYPTOGRAPHIC_LENGTH,
                        attribute::CRYPTOGRAPHIC_USAGE_MASK,
                    ],
                )
                .await
            })
        })
        .await
        .map_err(|e| self.kmip_error(&id, e))?;
        let state =
            vouch_kmip::message::state_of(&attributes).map_err(|e| self.unusable(&id, e.0))?;
        check_active(&id, state).map_err(|e| self.kmip_error(&id, e))?;
        let algorithm =
            vouch_kmip::message::find_enumeration(&attributes, attribute::CRYPTOGRAPHIC_ALGORITHM)
                .map(CryptographicAlgorithm::from_value);
        let length =
            vouch_kmip::message::find_integer(&attributes, attribute::CRYPTOGRAPHIC_LENGTH);
        if algorithm != Some(CryptographicAlgorithm::Aes) || length != Some(256) {
            return Err(self.unusable(
                &id,
                format!("not an AES-256 key (algorithm {algorithm:?}, length {length:?})"),
            ));
        }
        let needed = usage_mask::ENCRYPT | usage_mask::DECRYPT;
        match vouch_kmip::message::find_integer(&attributes, attribute::CRYPTOGRAPHIC_USAGE_MASK) {
            Some(mask) if mask & needed == needed => {}
            other => {
                return Err(self.unusable(
                    &id,
                    format!("usage mask {other:?} does not allow encryption and decryption"),
                ));
            }
        }
        // Usable in the configured mode: a round trip through the real path.
        let sample = self.encrypt(b"vouch key provider check", b"check").await?;
        let back = self.decrypt(&sample, b"check").await?;
        if back.as_slice() != b"vouch key provider check" {
            return Err(self.unusable(&id, "the key server's round trip differs".into()));
        }
        Ok(())
    }

    /// A fresh 256-bit data key and its wrapped form (wrapped with `aad` as associated data).
    ///
    /// # Errors
    /// As [`Self::encrypt`].
    pub async fn generate_key(&self, aad: &[u8]) -> Result<DataKey, Error> {
        self.generate_key_in(None, aad).await
    }

    /// [`Self::generate_key`], the wrapped key bound to `context` (format version 2).
    ///
    /// # Errors
    /// As [`Self::encrypt`].
    pub async fn generate_key_in(
        &self,
        context: Option<&str>,
        aad: &[u8],
    ) -> Result<DataKey, Error> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        self.rng
            .fill(key.as_mut())
            .map_err(|_| Error::Crypto("random generator"))?;
        let wrapped = self.encrypt_in(context, key.as_ref(), aad).await?;
        Ok(DataKey { key, wrapped })
    }

    /// AES-256-GCM under the current primary key; returns a [`Ciphertext`]'s bytes.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Unreachable`], [`Error::KeyRevoked`], ...
    pub async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        self.encrypt_in(None, plaintext, aad).await
    }

    /// [`Self::encrypt`], bound to `context` when given: the context is in the ciphertext's
    /// header (format version 2) and so in the authenticated data, and only a decryption in
    /// the same context opens it, whatever associated data the caller passes.
    ///
    /// # Errors
    /// As [`Self::encrypt`].
    pub async fn encrypt_in(
        &self,
        context: Option<&str>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, Error> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(Error::TooLarge(format!(
                "plaintext of {} bytes (at most {MAX_PLAINTEXT})",
                plaintext.len()
            )));
        }
        check_aad(aad)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Crypto("random generator"))?;
        let primary = self.config.primary.clone();
        let header = Header {
            provider: self.config.name.clone(),
            context: context.map(str::to_owned),
            key_id: primary.id.clone(),
            key_version: primary.version,
            nonce,
        };
        let full_aad = header.associated_data(aad)?;
        let (body, tag) = match self.config.wrapping {
            Wrapping::Local { .. } => {
                let material = self.local_key(&primary.id).await?;
                let key = aead_key(&material)?;
                let mut body = plaintext.to_vec();
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(full_aad.as_slice()),
                        &mut body,
                    )
                    .map_err(|_| Error::Crypto("AES-GCM seal"))?;
                let tag: [u8; TAG_LEN] = tag
                    .as_ref()
                    .try_into()
                    .map_err(|_| Error::Crypto("AES-GCM tag length"))?;
                (body, tag)
            }
            Wrapping::Remote => {
                let id = primary.id.clone();
                let data = Zeroizing::new(plaintext.to_vec());
                let encrypted = failover(&self.kms, |c| {
                    let (id, data, aad) = (id.clone(), data.clone(), full_aad.clone());
                    Box::pin(async move {
                        check_active(&id, c.state(&id).await?)?;
                        c.encrypt(
                            &id,
                            &CipherInput {
                                parameters: CryptographicParameters::aes_gcm(),
                                data: &data,
                                iv: Some(&nonce),
                                aad: Some(&aad),
                                tag: None,
                            },
                        )
                        .await
                    })
                })
                .await
                .map_err(|e| self.kmip_error(&id, e))?;
                let tag = encrypted
                    .tag
                    .as_deref()
                    .and_then(|t| <[u8; TAG_LEN]>::try_from(t).ok())
                    .ok_or_else(|| Error::KeyServer {
                        provider: self.config.name.clone(),
                        key_server: self.config.key_server.clone(),
                        detail: "Encrypt returned no 16-byte GCM tag".into(),
                    })?;
                if encrypted.data.len() != plaintext.len() || encrypted.iv.is_some() {
                    return Err(Error::KeyServer {
                        provider: self.config.name.clone(),
                        key_server: self.config.key_server.clone(),
                        detail: "Encrypt returned an unexpected length or IV".into(),
                    });
                }
                (encrypted.data, tag)
            }
        };
        Ok(Ciphertext { header, tag, body }.encode()?)
    }

    /// Decrypts a [`Ciphertext`] of this provider, under the primary key (current or retired) it
    /// names.
    ///
    /// # Errors
    /// [`Error::Format`], [`Error::WrongProvider`], [`Error::UnknownKey`],
    /// [`Error::Authentication`], [`Error::Unreachable`], [`Error::KeyRevoked`], ...
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.decrypt_in(None, ciphertext, aad).await
    }

    /// [`Self::decrypt`] in `context`: a ciphertext bound to another context (or to one, when
    /// `context` is `None`) is [`Error::Authentication`]. A format-version-1 ciphertext has no
    /// context and decrypts in any (rewrap it to bind it).
    ///
    /// # Errors
    /// As [`Self::decrypt`].
    pub async fn decrypt_in(
        &self,
        context: Option<&str>,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        check_aad(aad)?;
        let ct = Ciphertext::decode(ciphertext)?;
        if ct.header.provider != self.config.name {
            return Err(Error::WrongProvider {
                expected: self.config.name.clone(),
                found: ct.header.provider,
            });
        }
        if let Some(bound) = &ct.header.context
            && context != Some(bound.as_str())
        {
            return Err(Error::Authentication);
        }
        let known = std::iter::once(&self.config.primary)
            .chain(&self.config.retired)
            .any(|k| k.id == ct.header.key_id && k.version == ct.header.key_version);
        if !known {
            return Err(Error::UnknownKey {
                provider: self.config.name.clone(),
                key_id: ct.header.key_id,
                key_version: ct.header.key_version,
            });
        }
        let full_aad = ct.header.associated_data(aad)?;
        let id = ct.header.key_id.clone();
        match self.config.wrapping {
            Wrapping::Local { .. } => {
                let material = self.local_key(&id).await?;
                let key = aead_key(&material)?;
                let mut buf = Zeroizing::new(ct.body);
                buf.extend_from_slice(&ct.tag);
                let len = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(ct.header.nonce),
                        Aad::from(full_aad.as_slice()),
                        &mut buf,
                    )
                    .map_err(|_| Error::Authentication)?
                    .len();
                buf.truncate(len);
                Ok(buf)
            }
            Wrapping::Remote => {
                let nonce = ct.header.nonce;
                let tag = ct.tag;
                let result = failover(&self.kms, |c| {
                    let (id, body, aad) = (id.clone(), ct.body.clone(), full_aad.clone());
                    Box::pin(async move {
                        check_active(&id, c.state(&id).await?)?;
                        c.decrypt(
                            &id,
                            &CipherInput {
                                parameters: CryptographicParameters::aes_gcm(),
                                data: &body,
                                iv: Some(&nonce),
                                aad: Some(&aad),
                                tag: Some(&tag),
                            },
                        )
                        .await
                    })
                })
                .await;
                match result {
                    Ok(plain) => Ok(plain),
                    // A tag that does not match: KMIP's Cryptographic Failure, or PyKMIP's
                    // General Failure (its InvalidTag is not mapped). The key's state was
                    // checked Active on this connection just before, and the inputs are AES-GCM
                    // within bounds, so a refused Decrypt is the tag.
                    Err(vouch_kmip::Error::Refused {
                        operation: vouch_kmip::Operation::Decrypt,
                        reason:
                            Some(
                                vouch_kmip::ResultReason::CryptographicFailure
                                | vouch_kmip::ResultReason::GeneralFailure,
                            ),
                        ..
                    }) => Err(Error::Authentication),
                    Err(e) => Err(self.kmip_error(&id, e)),
                }
            }
        }
    }

    /// Decrypts and encrypts again under the current primary key (after a rotation).
    ///
    /// # Errors
    /// As [`Self::decrypt`] and [`Self::encrypt`].
    pub async fn rewrap(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        self.rewrap_in(None, ciphertext, aad).await
    }

    /// [`Self::rewrap`] in `context`; the new ciphertext is bound to it.
    ///
    /// # Errors
    /// As [`Self::decrypt_in`] and [`Self::encrypt_in`].
    pub async fn rewrap_in(
        &self,
        context: Option<&str>,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let plain = self.decrypt_in(context, ciphertext, aad).await?;
        self.encrypt_in(context, &plain, aad).await
    }

    /// Runs each request in order; one result per item.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for more than [`MAX_BATCH`] items.
    pub async fn batch(&self, requests: Vec<Request>) -> Result<Vec<Result<Reply, Error>>, Error> {
        self.batch_in(None, requests).await
    }

    /// [`Self::batch`] in `context`.
    ///
    /// # Errors
    /// As [`Self::batch`].
    pub async fn batch_in(
        &self,
        context: Option<&str>,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Reply, Error>>, Error> {
        if requests.len() > MAX_BATCH {
            return Err(Error::TooLarge(format!(
                "batch of {} items (at most {MAX_BATCH})",
                requests.len()
            )));
        }
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(match request {
                Request::GenerateKey { aad } => self
                    .generate_key_in(context, &aad)
                    .await
                    .map(Reply::GenerateKey),
                Request::Encrypt { plaintext, aad } => self
                    .encrypt_in(context, &plaintext, &aad)
                    .await
                    .map(Reply::Encrypt),
                Request::Decrypt { ciphertext, aad } => self
                    .decrypt_in(context, &ciphertext, &aad)
                    .await
                    .map(Reply::Decrypt),
                Request::Rewrap { ciphertext, aad } => self
                    .rewrap_in(context, &ciphertext, &aad)
                    .await
                    .map(Reply::Rewrap),
            });
        }
        Ok(replies)
    }

    /// Forgets every cached key (zeroized).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// The material of `id` for local wrapping: from the cache while fresh; else from the key
    /// server (state checked); when the key server is unreachable, from the cache until its
    /// lifetime ends.
    async fn local_key(&self, id: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
        let Wrapping::Local {
            refresh_after,
            lifetime,
        } = self.config.wrapping
        else {
            return Err(Error::Config("local key for a remote provider".into()));
        };
        let now = self.clock.now();
        let cached = self
            .cache
            .lock()
            .map_err(|_| Error::Crypto("key cache poisoned"))?
            .get(id)
            .map(|c| (c.material.clone(), now.saturating_sub(c.fetched)));
        if let Some((material, age)) = &cached
            && *age < refresh_after
        {
            return Ok(material.clone());
        }
        let fetched = failover(&self.kms, |c| {
            let id = id.to_owned();
            Box::pin(async move { c.get_active_key(&id).await })
        })
        .await;
        match fetched {
            Ok(key) => {
                if key.algorithm != CryptographicAlgorithm::Aes || key.length != 256 {
                    self.forget(id);
                    return Err(self.unusable(
                        id,
                        format!(
                            "not an AES-256 key ({:?}, {} bits)",
                            key.algorithm, key.length
                        ),
                    ));
                }
                let mut material = Zeroizing::new([0u8; KEY_LEN]);
                if key.material.len() != KEY_LEN {
                    self.forget(id);
                    return Err(self.unusable(id, "key material is not 32 bytes".into()));
                }
                material.copy_from_slice(&key.material);
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(
                        id.to_owned(),
                        Cached {
                            material: material.clone(),
                            fetched: now,
                        },
                    );
                }
                Ok(material)
            }
            Err(e) if e.is_unavailable() => match cached {
                Some((material, age)) if age < lifetime => Ok(material),
                _ => {
                    self.forget(id);
                    Err(self.kmip_error(id, e))
                }
            },
            Err(e) => {
                self.forget(id);
                Err(self.kmip_error(id, e))
            }
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
    }
}

type KmipFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, vouch_kmip::Error>> + Send + 'c>>;

/// `vouch_kmip::KeyServer::with_failover` with `Send` futures (its async closure cannot promise
/// `Send`, which a service spawning these on tokio needs): `f` on the first replica that
/// answers; on an availability failure, again on the next.
async fn failover<T, F>(kms: &KeyServer, mut f: F) -> Result<T, vouch_kmip::Error>
where
    F: for<'c> FnMut(&'c mut Connection) -> KmipFuture<'c, T> + Send,
    T: Send,
{
    let mut attempts = Vec::new();
    for endpoint in kms.endpoints() {
        let mut connection = match kms.connect_replica(endpoint).await {
            Ok(c) => c,
            Err(failure) => {
                attempts.push(failure);
                continue;
            }
        };
        match f(&mut connection).await {
            Err(e) if e.is_unavailable() => attempts.push(EndpointFailure {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            }),
            other => return other,
        }
    }
    Err(vouch_kmip::Error::Unreachable { attempts })
}

fn check_aad(aad: &[u8]) -> Result<(), Error> {
    if aad.len() > MAX_AAD {
        return Err(Error::TooLarge(format!(
            "associated data of {} bytes (at most {MAX_AAD})",
            aad.len()
        )));
    }
    Ok(())
}

fn aead_key(material: &[u8; KEY_LEN]) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&AES_256_GCM, material)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto("AES-256-GCM key"))
}
