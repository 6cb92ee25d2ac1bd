//! Errors, by who is at fault: the network or the key server's availability, the key's state,
//! the key server's refusal, a key server that breaks the protocol, or our own configuration.

use crate::spec::{Operation, ResultReason, ResultStatus, State};
use crate::ttlv::{DecodeError, EncodeError};
use std::fmt;

/// One endpoint that could not be reached, and why.
#[derive(Debug)]
pub struct EndpointFailure {
    /// `host:port`.
    pub endpoint: String,
    pub reason: String,
}

impl fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.reason)
    }
}

/// Everything a KMIP exchange can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint of the key server could be connected to (TCP, TLS handshake or timeout), each
    /// tried in order.
    #[error("key server unreachable: {}", join(.attempts))]
    Unreachable { attempts: Vec<EndpointFailure> },

    /// The key exists but has been revoked or destroyed (State Deactivated, Compromised,
    /// Destroyed or Destroyed Compromised): the key server may still hand out its material
    /// (PyKMIP does), but it must not be used.
    #[error("key {id} is revoked or destroyed (state {state:?})")]
    KeyRevoked { id: String, state: State },

    /// The key exists but is not yet usable (State Pre-Active, or a state this client does not
    /// know).
    #[error("key {id} is not active (state {state:?})")]
    KeyNotActive { id: String, state: State },

    /// The key server has no object with this identifier (never created, or destroyed and
    /// forgotten, as PyKMIP does).
    #[error("key {id} not found on the key server")]
    KeyNotFound { id: String },

    /// The key server answered the request with a failure.
    #[error("the key server refused {operation:?}: {status:?}, {reason:?}: {}", message.as_deref().unwrap_or("no message"))]
    Refused {
        operation: Operation,
        status: ResultStatus,
        reason: Option<ResultReason>,
        message: Option<String>,
    },

    /// The key server sent bytes that are not TTLV.
    #[error("malformed message from the key server {endpoint}: {source}")]
    Malformed {
        endpoint: String,
        source: DecodeError,
    },

    /// The key server sent well-formed TTLV that breaks KMIP (a missing field, a wrong type, a
    /// reply to another operation, ...).
    #[error("the key server {endpoint} broke the KMIP protocol: {detail}")]
    Protocol { endpoint: String, detail: String },

    /// The connection failed in the middle of a request; connect again (another replica may
    /// answer).
    #[error("connection to the key server {endpoint} lost: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },

    /// The key server did not answer within the timeout.
    #[error("the key server {endpoint} did not answer within {seconds:.1} s")]
    Timeout { endpoint: String, seconds: f64 },

    /// The request could not be encoded (too large).
    #[error("request not sent: {0}")]
    Request(#[from] EncodeError),

    /// The client configuration is unusable (no endpoint, bad PEM, bad certificate, ...).
    #[error("KMIP client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether this says the key server (or the replica) is unavailable — unreachable, or the
    /// connection broke or went silent — rather than anything about the request or the key.
    #[must_use]
    pub const fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Io { .. } | Self::Timeout { .. }
        )
    }
}

fn join(attempts: &[EndpointFailure]) -> String {
    if attempts.is_empty() {
        return "no endpoint configured".into();
    }
    attempts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
