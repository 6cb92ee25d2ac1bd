//! Authorisation as extractors: a handler states what it needs in its arguments and cannot
//! forget the check. [`TrustedAdmin`] for trust configuration, [`HostOperation`] for adding
//! and removing hosts (TrustedAdmins plus a management server's signature), and
//! [`AttestedHost`] for the key operations of an attested host.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::service::auth::{
    self, Admin, HostPermission, SignedRequest, authenticate, authorise_admin, deny,
};
use crate::service::keys::{AttestedHost, authorise_host};
use crate::service::{AppState, Error};
use crate::store::Principal;

/// `METHOD path` of a request, for denial logs.
fn what(parts: &Parts) -> String {
    format!("{} {}", parts.method, parts.uri.path())
}

/// The bearer token of a request, or why there is none.
fn bearer(parts: &Parts) -> Result<&str, &'static str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or("no Authorization header; send 'Bearer <token>'")?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("the Authorization header is not 'Bearer <token>'")
}

/// The authenticated caller: the principal owning the request's bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// `METHOD path`, for denial logs.
    pub what: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let what = what(parts);
        let secret = bearer(parts).map_err(|why| {
            deny(
                state,
                "anonymous",
                &what,
                Error::Unauthenticated(why.into()),
            )
        })?;
        let principal = authenticate(state, secret, &what).await?;
        Ok(Self { principal, what })
    }
}

/// A caller proven to be in TrustedAdmins.
#[derive(Debug, Clone)]
pub struct TrustedAdmin(pub Admin);

impl TrustedAdmin {
    pub fn name(&self) -> &str {
        self.0.name()
    }
}

impl FromRequestParts<AppState> for TrustedAdmin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let caller = Caller::from_request_parts(parts, state).await?;
        authorise_admin(state, caller.principal, caller.what).map(Self)
    }
}

/// A host operation: a TrustedAdmin's request signed by a registered management server, seen
/// for the first time; the body is the signed bytes.
#[derive(Debug)]
pub struct HostOperation {
    pub permission: HostPermission,
    pub body: Bytes,
}

impl HostOperation {
    /// The signed body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
    }
}

impl FromRequest<AppState> for HostOperation {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Error> {
        let (mut parts, body) = request.into_parts();
        let TrustedAdmin(admin) = TrustedAdmin::from_request_parts(&mut parts, state).await?;
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| Error::BadRequest(format!("cannot read the body: {e}")))?;
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let signature = parts
            .headers
            .get(vouch_api::signing::SIGNATURE_HEADER)
            .map(|v| v.to_str().unwrap_or(""));
        let permission = auth::check_host_permission(
            state,
            admin,
            SignedRequest {
                method: parts.method.as_str(),
                path_and_query: path,
                signature,
                body: &body,
            },
        )
        .await?;
        Ok(Self { permission, body })
    }
}

impl FromRequestParts<AppState> for AttestedHost {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let what = what(parts);
        let token = bearer(parts).map_err(|_| {
            deny(
                state,
                "anonymous",
                &what,
                Error::Unauthenticated(
                    "send the host's attestation token as 'Bearer <jwt>'".into(),
                ),
            )
        })?;
        authorise_host(state, token, &what).await
    }
}
