//! The service's typed error. The edges translate it: the HTTP API into a status and a JSON
//! body (`api::error`), the agent link into a refusal frame. Nothing here knows HTTP.

use crate::store::StoreError;

/// What went wrong with a key server, so that an edge can tell "unreachable" from "refused"
/// without reading text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFailure {
    /// The key server cannot be reached (HTTP 503).
    Unavailable,
    /// The key exists but may not be used now, e.g. revoked (409).
    Conflict,
    /// The key server answered with an error (502).
    KeyServer,
    /// The request or ciphertext is at fault (400).
    BadRequest,
}

/// A failure of a service operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No valid credential.
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    Forbidden(String),
    /// The request is malformed or asks for something invalid.
    BadRequest(String),
    /// The named resource does not exist.
    NotFound(String),
    /// The request conflicts with the current state.
    Conflict(String),
    /// A fault of vouchd or its database; the reason is logged, not shown.
    Internal(String),
    /// A key provider's or key server's failure, with its code (`key_server_unreachable`,
    /// `key_revoked`, `authentication_failed`, ...).
    KeyProvider {
        failure: KeyFailure,
        code: &'static str,
        reason: String,
    },
}

impl Error {
    /// The stable error code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Internal(_) => "internal",
            Self::KeyProvider { code, .. } => code,
        }
    }

    /// The reason shown to the caller (never the detail of an internal error).
    pub fn reason(&self) -> String {
        match self {
            Self::Unauthenticated(r)
            | Self::Forbidden(r)
            | Self::BadRequest(r)
            | Self::NotFound(r)
            | Self::Conflict(r)
            | Self::KeyProvider { reason: r, .. } => r.clone(),
            Self::Internal(_) => "internal error; see the server log".into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Internal(detail) => write!(f, "internal: {detail}"),
            other => write!(f, "{}: {}", other.code(), other.reason()),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => Self::Conflict(format!("{what} already exists")),
            StoreError::InUse(why) => Self::Conflict(why),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The result of a service operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
