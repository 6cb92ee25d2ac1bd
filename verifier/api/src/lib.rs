//! The contract of vouchd's HTTP APIs, shared by vouchd (which serves it and derives its
//! OpenAPI document from these types) and by the `vouch` CLI (which calls it).
//!
//! Invariant: this crate is data only — request and response types with their exact JSON
//! shapes, and the signing string of host operations. It does no I/O and knows neither axum
//! nor any HTTP client. A field's JSON name or type never changes; new fields are optional.

pub mod signing;
pub mod types;

pub use types::*;

use serde::{Deserialize, Serialize};

/// The group whose members may configure trust.
pub const TRUSTED_ADMINS: &str = "TrustedAdmins";

/// Every error answer: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// `unauthenticated`, `forbidden`, `bad_request`, `not_found`, `no_such_route`,
    /// `method_not_allowed`, `conflict`, `internal`, or a key provider's code.
    pub error: String,
    pub reason: String,
}
