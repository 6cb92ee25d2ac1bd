//! The HTTP edge's answer to a service error: a status and a JSON body
//! `{"error": <code>, "reason": <text>}` (`vouch_api::ErrorBody`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vouch_api::ErrorBody;

use crate::service::{Error, KeyFailure};

/// The HTTP status of a service error.
pub fn status(error: &Error) -> StatusCode {
    match error {
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::KeyProvider { failure, .. } => match failure {
            KeyFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            KeyFailure::Conflict => StatusCode::CONFLICT,
            KeyFailure::KeyServer => StatusCode::BAD_GATEWAY,
            KeyFailure::BadRequest => StatusCode::BAD_REQUEST,
        },
    }
}

/// An answer in the API's error form.
pub fn answer(status: StatusCode, code: &str, reason: String) -> Response {
    let body = ErrorBody {
        error: code.to_owned(),
        reason,
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        answer(status(&self), self.code(), self.reason())
    }
}
