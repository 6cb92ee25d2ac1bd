//! Management authentication and authorisation, as proofs the edges obtain before they may
//! call a service operation.
//!
//! - **Bearer tokens**: 32 random bytes, base64url, prefixed `vouch_`; shown once when made,
//!   stored as SHA-256. A token belongs to a principal; deleting the principal deletes its
//!   tokens.
//! - **Bootstrap**: on the first start of a database, principal `admin` in TrustedAdmins gets a
//!   token, printed once.
//! - **TrustedAdmins**: every trust-configuration operation needs membership, proven by an
//!   [`Admin`] value that only [`authorise_admin`] makes.
//! - **Host permission**: adding or removing hosts also needs a request signed by a registered
//!   management server (ECDSA P-256, the key of the certificate imported for it), proven by a
//!   [`HostPermission`] that only [`check_host_permission`] makes. The header and the signed
//!   string are defined once, in `vouch_api::signing`. Timestamps more than five minutes off
//!   are stale; each signed message is accepted once.
//!
//! Every refusal is logged (who, what, why) and counted.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vouch_api::signing::{MAX_SKEW_SECS, SignatureHeader, signing_message};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{AppState, Error, Result};
use crate::store::{self, Principal, Store, StoreResult, TokenInfo};

pub use vouch_api::TRUSTED_ADMINS;
/// The principal created at bootstrap.
pub const BOOTSTRAP_PRINCIPAL: &str = "admin";
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
pub fn new_token(principal: &str, description: &str, now: i64) -> Result<NewToken> {
    let secret = crate::random::<32>().map_err(|_| Error::Internal("RNG failure".into()))?;
    let id = crate::random::<8>().map_err(|_| Error::Internal("RNG failure".into()))?;
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

/// The event a bootstrap reset records.
pub const BOOTSTRAP_RESET_EVENT: &str = "principal.bootstrap_reset";

/// Recovers administrative access (`vouchd admin reset-bootstrap`, run on vouchd's host):
/// makes `principal` a member of TrustedAdmins (creating it as a person if missing), gives it a
/// new token and records a [`BOOTSTRAP_RESET_EVENT`]. Returns the token to show, once. Its other
/// tokens stay valid: revoke them through the API once in again.
pub fn reset_bootstrap(store: &dyn Store, principal: &str, now: i64) -> StoreResult<String> {
    let token = new_token(principal, "bootstrap reset", now)
        .map_err(|e| store::StoreError::Backend(e.reason()))?;
    let existing = store.get_principal(principal)?;
    let created = existing.is_none();
    if created {
        store.create_principal(principal, store::PrincipalKind::Person, now)?;
    }
    let added = !existing.is_some_and(|p| p.groups.iter().any(|g| g == TRUSTED_ADMINS));
    if added {
        store.add_to_group(principal, TRUSTED_ADMINS)?;
    }
    store.create_token(&token.info, &token.hash)?;
    store.add_event(
        now,
        BOOTSTRAP_RESET_EVENT,
        principal,
        &serde_json::json!({
            "token_id": token.info.id,
            "principal_created": created,
            "added_to_trusted_admins": added,
        }),
    )?;
    Ok(token.secret)
}

/// Logs and counts a refusal; returns the error to answer.
pub fn deny(state: &AppState, who: &str, what: &str, error: Error) -> Error {
    tracing::warn!(who, what, why = %error.reason(), code = error.code(), "request denied");
    state.metrics.denied(error.code());
    error
}

/// The principal owning a bearer token (the token without its `Bearer ` scheme).
pub async fn authenticate(state: &AppState, secret: &str, what: &str) -> Result<Principal> {
    let hash = token_hash(secret);
    store::run(&state.store, move |s| s.principal_for_token(&hash))
        .await?
        .ok_or_else(|| {
            deny(
                state,
                "anonymous",
                what,
                Error::Unauthenticated("the bearer token is unknown or was revoked".into()),
            )
        })
}

/// Proof that the caller is a member of TrustedAdmins: only [`authorise_admin`] makes one, and
/// every trust-configuration operation takes one.
#[derive(Debug, Clone)]
pub struct Admin {
    principal: Principal,
    what: String,
}

impl Admin {
    /// The admin's principal name, for the audit trail.
    pub fn name(&self) -> &str {
        &self.principal.name
    }

    /// `METHOD path` of the request, for denial logs.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// Refuses unless `principal` is in TrustedAdmins.
pub fn authorise_admin(state: &AppState, principal: Principal, what: String) -> Result<Admin> {
    if principal.in_group(TRUSTED_ADMINS) {
        Ok(Admin { principal, what })
    } else {
        Err(deny(
            state,
            &principal.name,
            &what,
            Error::Forbidden(format!(
                "principal '{}' is not a member of {TRUSTED_ADMINS}",
                principal.name
            )),
        ))
    }
}

/// Checks that a certificate holds an ECDSA P-256 key; returns its subject and the key (the
/// uncompressed point).
pub fn management_certificate(der: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
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

/// Proof that a host operation was signed by a registered management server, and that this
/// signed request was not seen before.
#[derive(Debug, Clone)]
pub struct HostPermission {
    admin: Admin,
    server: String,
}

impl HostPermission {
    /// The admin who sent the request.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The management server that signed it.
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// A host operation's request as the edge received it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// The `Vouch-Signature` header's value, if any.
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Checks a host operation's management-server signature and records it against replay.
pub async fn check_host_permission(
    state: &AppState,
    admin: Admin,
    request: SignedRequest<'_>,
) -> Result<HostPermission> {
    let forbid = |why: String| {
        deny(
            state,
            admin.name(),
            admin.what(),
            Error::Forbidden(format!("host permission denied: {why}")),
        )
    };
    let value = request.signature.ok_or_else(|| {
        forbid("host operations need a request signed by a registered management server (Vouch-Signature header)".into())
    })?;
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
    let (_, key) = management_certificate(&server.certificate).map_err(Error::Internal)?;
    let message = signing_message(
        request.method,
        request.path_and_query,
        header.ts,
        &header.nonce,
        request.body,
    );
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
    Ok(HostPermission {
        admin,
        server: server.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
