//! Management authentication and authorisation.
//!
//! - **Bearer tokens**: 32 random bytes, base64url, prefixed `vouch_`; shown once when made,
//!   stored as SHA-256. A token belongs to a principal; deleting the principal deletes its
//!   tokens.
//! - **Bootstrap**: on the first start of a database, principal `admin` in TrustedAdmins gets a
//!   token, printed once.
//! - **TrustedAdmins**: every trust-configuration operation needs membership.
//! - **Host permission**: adding or removing hosts also needs a request signed by a registered
//!   management server (ECDSA P-256, the key of the certificate imported for it). The header
//!   `Vouch-Signature: id=<server id>; ts=<unix seconds>; nonce=<text>; sig=<base64 DER>` signs
//!   [`signing_message`]: method, path and query, timestamp, nonce and the SHA-256 of the body.
//!   Timestamps more than five minutes off are stale; each signed message is accepted once.
//!
//! Every refusal is logged (who, what, why) and counted, and answered 401 or 403 with a JSON
//! reason.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::store::{self, Principal, Store, StoreResult, TokenInfo};

/// The group whose members may configure trust.
pub const TRUSTED_ADMINS: &str = "TrustedAdmins";
/// The principal created at bootstrap.
pub const BOOTSTRAP_PRINCIPAL: &str = "admin";
/// The header carrying a management server's signature.
pub const SIGNATURE_HEADER: &str = "vouch-signature";
/// How far a signed request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 300;
const TOKEN_PREFIX: &str = "vouch_";

/// A token as made: the secret (to show once) and what is stored.
#[derive(Debug)]
pub struct NewToken {
    pub secret: String,
    pub info: TokenInfo,
    pub hash: [u8; 32],
}

/// SHA-256 of a bearer token, as stored.
pub fn token_hash(secret: &str) -> [u8; 32] {
    crate::sha256(secret.as_bytes())
}

/// Makes a fresh token for `principal`.
pub fn new_token(principal: &str, description: &str, now: i64) -> Result<NewToken, ApiError> {
    let secret = crate::random::<32>().map_err(|_| ApiError::Internal("RNG failure".into()))?;
    let id = crate::random::<8>().map_err(|_| ApiError::Internal("RNG failure".into()))?;
    let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    Ok(NewToken {
        hash: token_hash(&secret),
        secret,
        info: TokenInfo {
            id: crate::hex(&id),
            principal: principal.to_owned(),
            description: description.to_owned(),
            created_at: now,
        },
    })
}

/// Creates the bootstrap principal and token unless the database was bootstrapped before.
/// Returns the token to show, once.
pub fn bootstrap(store: &dyn Store, now: i64) -> StoreResult<Option<String>> {
    let token = new_token(BOOTSTRAP_PRINCIPAL, "bootstrap", now)
        .map_err(|e| store::StoreError::Backend(e.reason()))?;
    let made = store.bootstrap(
        BOOTSTRAP_PRINCIPAL,
        TRUSTED_ADMINS,
        &token.info,
        &token.hash,
        now,
    )?;
    Ok(made.then_some(token.secret))
}

/// Logs and counts a refusal; returns the error to answer.
pub fn deny(state: &AppState, who: &str, what: &str, error: ApiError) -> ApiError {
    tracing::warn!(
        who,
        what,
        why = %error.reason(),
        status = error.status().as_u16(),
        "request denied"
    );
    state.metrics.denied(error.code());
    error
}

/// The authenticated caller: the principal owning the request's bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// `METHOD path`, for denial logs.
    pub what: String,
}

impl Caller {
    /// Refuses unless the caller is in TrustedAdmins.
    pub fn require_trusted_admin(&self, state: &AppState) -> Result<(), ApiError> {
        if self.principal.in_group(TRUSTED_ADMINS) {
            Ok(())
        } else {
            Err(deny(
                state,
                &self.principal.name,
                &self.what,
                ApiError::Forbidden(format!(
                    "principal '{}' is not a member of {TRUSTED_ADMINS}",
                    self.principal.name
                )),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let what = format!("{} {}", parts.method, parts.uri.path());
        let unauthenticated = |why: &str| {
            deny(
                state,
                "anonymous",
                &what,
                ApiError::Unauthenticated(why.into()),
            )
        };
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthenticated("no Authorization header; send 'Bearer <token>'"))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header is not 'Bearer <token>'"))?;
        let hash = token_hash(secret);
        let principal = store::run(&state.store, move |s| s.principal_for_token(&hash))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| unauthenticated("the bearer token is unknown or was revoked"))?;
        Ok(Self { principal, what })
    }
}

/// The bytes a management server signs.
pub fn signing_message(
    method: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "vouch-host-op-v1\n{method}\n{path_and_query}\n{ts}\n{nonce}\n{}",
        crate::hex(&crate::sha256(body))
    )
    .into_bytes()
}

/// A parsed `Vouch-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub id: String,
    pub ts: i64,
    pub nonce: String,
    pub sig: Vec<u8>,
}

impl SignatureHeader {
    pub fn parse(value: &str) -> Result<Self, String> {
        let (mut id, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in value.split(';') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| format!("'{}' is not key=value", part.trim()))?;
            match k.trim() {
                "id" => id = Some(v.trim().to_owned()),
                "ts" => {
                    ts = Some(
                        v.trim()
                            .parse::<i64>()
                            .map_err(|_| "ts is not an integer")?,
                    )
                }
                "nonce" => nonce = Some(v.trim().to_owned()),
                "sig" => {
                    sig = Some(STANDARD.decode(v.trim()).map_err(|_| "sig is not base64")?);
                }
                other => return Err(format!("unknown field '{other}'")),
            }
        }
        let nonce = nonce.ok_or("nonce is missing")?;
        if nonce.is_empty() || nonce.len() > 128 {
            return Err("nonce must be 1 to 128 characters".into());
        }
        Ok(Self {
            id: id.ok_or("id is missing")?,
            ts: ts.ok_or("ts is missing")?,
            nonce,
            sig: sig.ok_or("sig is missing")?,
        })
    }

    /// The header value for these fields.
    pub fn render(&self) -> String {
        format!(
            "id={}; ts={}; nonce={}; sig={}",
            self.id,
            self.ts,
            self.nonce,
            STANDARD.encode(&self.sig)
        )
    }
}

/// Checks that a certificate holds an ECDSA P-256 key; returns its subject and the key (the
/// uncompressed point).
pub fn management_certificate(der: &[u8]) -> Result<(String, Vec<u8>), String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let spki = cert.public_key();
    let is_ec = spki.algorithm.algorithm.to_id_string() == "1.2.840.10045.2.1";
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if !is_ec || curve.as_deref() != Some("1.2.840.10045.3.1.7") {
        return Err("the certificate's key is not ECDSA P-256".into());
    }
    Ok((
        cert.subject().to_string(),
        spki.subject_public_key.data.to_vec(),
    ))
}

/// Checks a host operation's management-server signature; returns the server's id.
pub async fn check_host_permission(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, ApiError> {
    let forbid = |why: String| {
        deny(
            state,
            &caller.principal.name,
            &caller.what,
            ApiError::Forbidden(format!("host permission denied: {why}")),
        )
    };
    let value = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| {
            forbid("host operations need a request signed by a registered management server (Vouch-Signature header)".into())
        })?
        .to_str()
        .map_err(|_| forbid("the Vouch-Signature header is not text".into()))?;
    let header =
        SignatureHeader::parse(value).map_err(|e| forbid(format!("Vouch-Signature: {e}")))?;
    let now = crate::now();
    if (now - header.ts).abs() > MAX_SKEW_SECS {
        return Err(forbid(format!(
            "the signature's timestamp {} is more than {MAX_SKEW_SECS} s from the server's time {now}",
            header.ts
        )));
    }
    let id = header.id.clone();
    let server = store::run(&state.store, move |s| s.get_management_server(&id))
        .await?
        .ok_or_else(|| {
            forbid(format!(
                "management server '{}' is not registered",
                header.id
            ))
        })?;
    let (_, key) = management_certificate(&server.certificate).map_err(ApiError::Internal)?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let message = signing_message(method.as_str(), path, header.ts, &header.nonce, body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key)
        .verify(&message, &header.sig)
        .map_err(|_| {
            forbid(format!(
                "the signature does not verify with management server '{}''s certificate",
                header.id
            ))
        })?;
    let mut keyed = header.id.as_bytes().to_vec();
    keyed.push(b'\n');
    keyed.extend_from_slice(&message);
    let replay_key = crate::hex(&crate::sha256(&keyed));
    let fresh = store::run(&state.store, move |s| {
        s.record_request(&replay_key, now, now - 2 * MAX_SKEW_SECS)
    })
    .await?;
    if !fresh {
        return Err(forbid(
            "this signed request was already used (replay)".into(),
        ));
    }
    Ok(server.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_header_round_trips() {
        let h = SignatureHeader {
            id: "vc-1".into(),
            ts: 1_700_000_000,
            nonce: "n1".into(),
            sig: vec![0x30, 0x44, 0xff],
        };
        assert_eq!(SignatureHeader::parse(&h.render()), Ok(h));
    }

    #[test]
    fn signature_header_rejects_garbage() {
        assert!(SignatureHeader::parse("").is_err());
        assert!(SignatureHeader::parse("id=a; ts=x; nonce=n; sig=AA==").is_err());
        assert!(SignatureHeader::parse("id=a; ts=1; sig=AA==").is_err());
        assert!(SignatureHeader::parse("id=a; ts=1; nonce=n; sig=AA==; extra=1").is_err());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token("p", "", 0).unwrap();
        let b = new_token("p", "", 0).unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(a.hash, token_hash(&a.secret));
        assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 43);
    }
}
