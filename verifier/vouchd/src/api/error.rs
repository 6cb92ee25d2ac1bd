//! API errors: a status and a JSON body `{"error": <code>, "reason": <text>}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An API failure, answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 401: no valid bearer token.
    Unauthenticated(String),
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 400.
    BadRequest(String),
    /// 404: the resource does not exist.
    NotFound(String),
    /// 404: no route has this path (distinct from a missing resource).
    NoSuchRoute(String),
    /// 405.
    MethodNotAllowed,
    /// 409.
    Conflict(String),
    /// 500; the reason is logged, not shown.
    Internal(String),
    /// A key provider's failure, with its own status and code (`key_server_unreachable` 503,
    /// `key_revoked` 409, `authentication_failed` 400, ...).
    KeyProvider {
        status: StatusCode,
        code: &'static str,
        reason: String,
    },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::NoSuchRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::KeyProvider { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::NoSuchRoute(_) => "no_such_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Internal(_) => "internal",
            Self::KeyProvider { code, .. } => code,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Self::Unauthenticated(r)
            | Self::Forbidden(r)
            | Self::BadRequest(r)
            | Self::NotFound(r)
            | Self::NoSuchRoute(r)
            | Self::Conflict(r)
            | Self::KeyProvider { reason: r, .. } => r.clone(),
            Self::MethodNotAllowed => "this route does not accept this method".into(),
            Self::Internal(_) => "internal error; see the server log".into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => Self::Conflict(format!("{what} already exists")),
            StoreError::InUse(why) => Self::Conflict(why),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = serde_json::json!({"error": self.code(), "reason": self.reason()});
        (self.status(), Json(body)).into_response()
    }
}
