//! A trusted key provider: one primary key on one key server, wrapping locally (the key's
//! material cached in memory) or remotely (KMIP Encrypt / Decrypt).

use crate::Error;
use crate::ciphertext::{Ciphertext, Header, MAX_AAD, MAX_PLAINTEXT, NONCE_LEN, TAG_LEN};
use crate::clock::Clock;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// The most idle KMIP connections a remote-wrapping provider keeps open for reuse.
pub const MAX_POOLED_CONNECTIONS: usize = 64;
/// After the key server was found unreachable, how long the cached key serves before the key
/// server is tried again (within the key's lifetime), so that an outage does not make every
/// request wait on a connection attempt.
pub const RETRY_UNREACHABLE: Duration = Duration::from_secs(5);

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
    /// (zeroized when dropped). From three quarters of `refresh_after` on, one background task
    /// fetches the key again (state checked) while requests keep being served from the cache;
    /// a request that finds the key older than `refresh_after` (no refresh succeeded in time)
    /// waits for a fetch, so a revocation takes effect within `refresh_after`. When the key
    /// server is unreachable, the cached key keeps serving until `lifetime` after it was last
    /// fetched (the key server tried again every [`RETRY_UNREACHABLE`]).
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
    /// When the key server was last found unreachable for this key, if after `fetched`.
    unreachable_at: Option<Duration>,
}

/// A primary key's material, zeroized when dropped.
type Material = Zeroizing<[u8; KEY_LEN]>;

/// What a provider shares with its background refresh tasks.
struct Shared {
    config: ProviderConfig,
    kms: KeyServer,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, Cached>>,
    /// The keys whose background refresh is in flight (at most one each).
    refreshing: Mutex<HashSet<String>>,
    /// Held by every fetch of a key's material, so that at most one runs at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Idle connections for remote wrapping, reused instead of a new mTLS handshake each time.
    pool: Mutex<Vec<Connection>>,
    fetches: AtomicU64,
}

/// A trusted key provider, ready to serve. Cheap to share behind an `Arc`.
pub struct KeyProvider {
    config: ProviderConfig,
    shared: Arc<Shared>,
    rng: SystemRandom,
}

impl fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyProvider")
            .field("config", &self.config)
            .field("kms", &self.shared.kms)
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
            shared: Arc::new(Shared {
                config: config.clone(),
                kms,
                clock,
                cache: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                fetching: tokio::sync::Mutex::new(()),
                pool: Mutex::new(Vec::new()),
                fetches: AtomicU64::new(0),
            }),
            config,
            rng: SystemRandom::new(),
        })
    }

    /// How many times a primary key's material was fetched from the key server (for local
    /// wrapping), in the foreground or by a background refresh.
    #[must_use]
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::Relaxed)
    }

    /// Whether a background refresh is in flight.
    #[must_use]
    pub fn refreshing(&self) -> bool {
        self.shared
            .refreshing
            .lock()
            .map(|r| !r.is_empty())
            .unwrap_or(false)
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
        self.shared.kmip_error(key_id, e)
    }

    fn unusable(&self, key_id: &str, reason: String) -> Error {
        self.shared.unusable(key_id, reason)
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
        let attributes = failover(&self.shared.kms, |c| {
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
                let encrypted = self
                    .shared
                    .pooled(|c| {
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
                let result = self
                    .shared
                    .pooled(|c| {
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
        if let Ok(mut cache) = self.shared.cache.lock() {
            cache.clear();
        }
    }

    /// The material of `id` for local wrapping; see [`Wrapping::Local`].
    async fn local_key(&self, id: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
        let Wrapping::Local {
            refresh_after,
            lifetime,
        } = self.config.wrapping
        else {
            return Err(Error::Config("local key for a remote provider".into()));
        };
        let now = self.shared.clock.now();
        if let Some((material, refresh)) = self.shared.cached(id, now, refresh_after, lifetime)? {
            if refresh {
                Shared::refresh_in_background(&self.shared, id);
            }
            return Ok(material);
        }
        // Too old to serve without a check (or not cached): fetch, one at a time; a fetch that
        // finished while this request waited serves it.
        let _one = self.shared.fetching.lock().await;
        let now = self.shared.clock.now();
        if let Some((material, _)) = self.shared.cached(id, now, refresh_after, lifetime)? {
            return Ok(material);
        }
        self.shared.fetch(id, lifetime).await
    }
}

impl Shared {
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

    /// The cached material of `id` when it may serve now without waiting for a fetch, and
    /// whether a background refresh should start:
    /// - younger than `refresh_after`: it serves; from three quarters of `refresh_after` on,
    ///   it is refreshed in the background (ahead of expiry);
    /// - older, but younger than `lifetime` and the key server found unreachable since the
    ///   fetch: it serves (an outage is ridden out), the key server is tried again in the
    ///   background every [`RETRY_UNREACHABLE`].
    fn cached(
        &self,
        id: &str,
        now: Duration,
        refresh_after: Duration,
        lifetime: Duration,
    ) -> Result<Option<(Material, bool)>, Error> {
        let cache = self
            .cache
            .lock()
            .map_err(|_| Error::Crypto("key cache poisoned"))?;
        let Some(c) = cache.get(id) else {
            return Ok(None);
        };
        let age = now.saturating_sub(c.fetched);
        let retry_due = c
            .unreachable_at
            .is_none_or(|at| now.saturating_sub(at) >= RETRY_UNREACHABLE);
        let ahead = refresh_after.saturating_sub(refresh_after / 4);
        let serve = if age < refresh_after {
            Some(age >= ahead && retry_due)
        } else if age < lifetime && c.unreachable_at.is_some() {
            Some(retry_due)
        } else {
            None
        };
        Ok(serve.map(|refresh| (c.material.clone(), refresh)))
    }

    /// Starts the background refresh of `id` unless one is in flight (or no runtime runs).
    fn refresh_in_background(shared: &Arc<Self>, id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(mut refreshing) = shared.refreshing.lock() else {
            return;
        };
        if !refreshing.insert(id.to_owned()) {
            return;
        }
        drop(refreshing);
        let (shared, id) = (Arc::clone(shared), id.to_owned());
        runtime.spawn(async move {
            if let Wrapping::Local { lifetime, .. } = shared.config.wrapping {
                let _one = shared.fetching.lock().await;
                // A failure is the next request's to see: a revoked key was forgotten (the
                // next request fetches and is refused); an unreachable key server is retried.
                let _ = shared.fetch(&id, lifetime).await;
            }
            if let Ok(mut refreshing) = shared.refreshing.lock() {
                refreshing.remove(&id);
            }
        });
    }

    /// Fetches `id` from the key server (state checked) into the cache. When the key server
    /// is unreachable, the cached material serves until `lifetime` after its fetch.
    async fn fetch(&self, id: &str, lifetime: Duration) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
        let now = self.clock.now();
        self.fetches.fetch_add(1, Ordering::Relaxed);
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
                            unreachable_at: None,
                        },
                    );
                }
                Ok(material)
            }
            Err(e) if e.is_unavailable() => {
                let mut cache = self
                    .cache
                    .lock()
                    .map_err(|_| Error::Crypto("key cache poisoned"))?;
                match cache.get_mut(id) {
                    Some(c) if now.saturating_sub(c.fetched) < lifetime => {
                        c.unreachable_at = Some(now);
                        Ok(c.material.clone())
                    }
                    _ => {
                        cache.remove(id);
                        Err(self.kmip_error(id, e))
                    }
                }
            }
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

    /// `f` on an idle pooled connection when there is one, else under [`failover`] on a new
    /// one; the connection goes back to the pool when `f` succeeds. A pooled connection that
    /// turns out broken is dropped and `f` runs again on a new one (`f` is idempotent work).
    async fn pooled<T, F>(&self, mut f: F) -> Result<T, vouch_kmip::Error>
    where
        F: for<'c> FnMut(&'c mut Connection) -> KmipFuture<'c, T> + Send,
        T: Send,
    {
        let idle = self.pool.lock().ok().and_then(|mut p| p.pop());
        if let Some(mut connection) = idle {
            match f(&mut connection).await {
                Ok(value) => {
                    self.put_back(connection);
                    return Ok(value);
                }
                Err(e) if !e.is_unavailable() => return Err(e),
                Err(_) => {}
            }
        }
        let (value, connection) = failover_keeping(&self.kms, f).await?;
        self.put_back(connection);
        Ok(value)
    }

    fn put_back(&self, connection: Connection) {
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < MAX_POOLED_CONNECTIONS
        {
            pool.push(connection);
        }
    }
}

type KmipFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, vouch_kmip::Error>> + Send + 'c>>;

/// `vouch_kmip::KeyServer::with_failover` with `Send` futures (its async closure cannot promise
/// `Send`, which a service spawning these on tokio needs): `f` on the first replica that
/// answers; on an availability failure, again on the next.
async fn failover<T, F>(kms: &KeyServer, f: F) -> Result<T, vouch_kmip::Error>
where
    F: for<'c> FnMut(&'c mut Connection) -> KmipFuture<'c, T> + Send,
    T: Send,
{
    failover_keeping(kms, f).await.map(|(value, _)| value)
}

/// [`failover`], returning the connection `f` succeeded on.
async fn failover_keeping<T, F>(
    kms: &KeyServer,
    mut f: F,
) -> Result<(T, Connection), vouch_kmip::Error>
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
            Err(e) => return Err(e),
            Ok(value) => return Ok((value, connection)),
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
