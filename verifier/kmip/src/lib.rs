//! A KMIP 1.2 / 1.4 client for Vouch's key provider: TTLV over TLS (tokio + rustls).
//!
//! Layers, bottom up:
//! - [`ttlv`]: the binary encoding. The decoder takes untrusted bytes: it never panics, bounds
//!   every length by [`ttlv::Limits`] and reports typed errors with the offset.
//! - [`spec`]: the tags and enumerations of the specification this client uses.
//! - [`message`]: request messages and payloads, and reading responses (pure, no I/O).
//! - [`client`]: a [`KeyServer`] (replicas tried in order, client certificate, CA;
//!   [`KeyServer::with_failover`]) and a [`Connection`] with one method per operation: DiscoverVersions, Query, Locate, Get,
//!   GetAttributes, Create, Activate, Encrypt, Decrypt, Revoke, Destroy.
//!
//! Two errors the key provider must tell apart: [`Error::Unreachable`] (no replica answered)
//! and [`Error::KeyRevoked`] (the key's State says revoked or destroyed). A server may still
//! serve Get on a revoked key — PyKMIP does — so [`Connection::get_active_key`] checks the State
//! before it gets the material.
//!
//! ```no_run
//! # async fn example(chain: &[u8], key: &[u8], ca: &[u8]) -> Result<(), vouch_kmip::Error> {
//! use vouch_kmip::{Endpoint, KeyServer, ProtocolVersion};
//! let kms = KeyServer::new(
//!     vec![Endpoint::new("kms-a.example", 5696), Endpoint::new("kms-b.example", 5696)],
//!     chain, key, ca,
//! )?
//! .with_version(ProtocolVersion::V1_4);
//! // State check, then Get; a replica that cannot be reached or goes silent hands over to
//! // the next one.
//! let key = kms.get_active_key("42").await?;
//! # drop(key);
//! // Or one connection for several operations.
//! let mut connection = kms.connect().await?;
//! let versions = connection.discover_versions(&[]).await?;
//! # drop(versions);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod error;
pub mod message;
pub mod spec;
pub mod ttlv;

pub use client::{Connection, DEFAULT_TIMEOUT, Endpoint, KeyServer, check_active};
pub use error::{EndpointFailure, Error};
pub use message::{
    Attribute, CipherInput, CryptographicParameters, Encrypted, ProtocolVersion, QueryResult,
    SymmetricKey, SymmetricKeyTemplate,
};
pub use spec::{
    BlockCipherMode, CryptographicAlgorithm, ObjectType, Operation, PaddingMethod, QueryFunction,
    ResultReason, ResultStatus, RevocationReasonCode, State,
};
