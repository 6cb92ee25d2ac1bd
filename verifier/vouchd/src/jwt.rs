//! Attestation tokens: JWTs signed with ES256 (ECDSA P-256, SHA-256, the signature as
//! `r ‖ s`) with aws-lc-rs (the key parsed once: `jsonwebtoken` parses and checks the PKCS#8
//! key again at every signature, which doubled the cost of a token) and verified by
//! `jsonwebtoken`, and the JWKS that publishes the public key at
//! `/.well-known/jwks.json`.
//!
//! The signing key is generated on first start and kept (PKCS#8 DER, mode 0600) in the data
//! directory. Its `kid` is the key's RFC 7638 JWK thumbprint.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use vouch_api::types::{AttestationRecord, Jwk, Jwks};

/// The claims of an attestation token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationClaims {
    /// Always `vouchd`.
    pub iss: String,
    /// The host: its EK hash.
    pub sub: String,
    /// The trusted cluster.
    pub cluster: String,
    /// The accepted software version that matched.
    pub software_version: String,
    /// SHA-256 over the quoted PCR values (the quote's PCR digest), hex.
    pub pcr_digest: String,
    /// The nonce of the challenge, hex.
    pub nonce: String,
    /// The attestation this token came from: the id of the host's attestation record (the
    /// nonce of its quote request, hex). Together with `sub` (the host's EK hash) and
    /// `software_version` it binds the token to that attestation: the key API accepts it only
    /// while it is the host's latest.
    pub attestation: String,
    pub iat: i64,
    pub exp: i64,
    /// A unique id for this token, hex.
    pub jti: String,
}

impl AttestationClaims {
    /// The claims of a token for an attested result: the host, its cluster, the software
    /// version, the PCR digest and the attestation (the nonce of its quote request), valid from
    /// `iat` for `lifetime` seconds. `None` for a result that is not attested.
    pub fn for_result(
        record: &AttestationRecord,
        iat: i64,
        lifetime: u64,
        jti: &[u8],
    ) -> Option<Self> {
        if !record.attested {
            return None;
        }
        let nonce = record.nonce.clone()?;
        Some(Self {
            iss: "vouchd".into(),
            sub: record.ek_hash.clone(),
            cluster: record.cluster.clone(),
            software_version: record.software_version.clone()?,
            pcr_digest: record.pcr_digest.clone()?,
            attestation: nonce.clone(),
            nonce,
            iat,
            exp: iat.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
            jti: crate::hex(jti),
        })
    }
}

/// What the database keeps of an issued token: its SHA-256, hex (never the token).
pub fn token_digest(token: &str) -> String {
    crate::hex(&crate::sha256(token.as_bytes()))
}

/// Why the signing key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
    #[error("signing failed")]
    Sign,
    #[error("signing key generation failed")]
    Generate,
    #[error("cannot encode claims: {0}")]
    Claims(String),
}

/// The token signer: ES256 through `jsonwebtoken`, with the P-256 key kept in the data
/// directory.
pub struct Signer {
    key: EcdsaKeyPair,
    /// The JWS header of every token, base64url.
    header: String,
    decoding: DecodingKey,
    kid: String,
    x: String,
    y: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A new P-256 signing key, PKCS#8 DER.
pub fn generate_pkcs8() -> Result<Vec<u8>, JwtError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| JwtError::Generate)
}

impl Signer {
    /// Loads the key at `path`, or generates and stores one there.
    pub fn load_or_create(path: &Path) -> Result<Self, JwtError> {
        let err = |reason: String| JwtError::Key {
            path: path.display().to_string(),
            reason,
        };
        let pkcs8 = if path.exists() {
            std::fs::read(path).map_err(|e| err(e.to_string()))?
        } else {
            let doc = generate_pkcs8().map_err(|e| err(e.to_string()))?;
            crate::tls::write_private(path, &doc).map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated the attestation-token signing key");
            doc
        };
        Self::from_pkcs8(&pkcs8).map_err(err)
    }

    /// From a PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        let point = key.public_key().as_ref();
        let (x, y) = match point {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => return Err("unexpected public key encoding".into()),
        };
        let x = B64.encode(x);
        let y = B64.encode(y);
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = B64.encode(crate::sha256(thumbprint_input.as_bytes()));
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| format!("the public key is not usable: {e}"))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        let header = serde_json::to_vec(&header)
            .map(|h| B64.encode(h))
            .map_err(|e| format!("the token header: {e}"))?;
        Ok(Self {
            key,
            header,
            decoding,
            kid,
            x,
            y,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS (ES256, this key's `kid`) over `claims`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, JwtError> {
        let claims = serde_json::to_vec(claims).map_err(|e| JwtError::Claims(e.to_string()))?;
        let mut token = String::with_capacity(
            self.header
                .len()
                .saturating_add(claims.len().saturating_mul(4) / 3)
                .saturating_add(90),
        );
        token.push_str(&self.header);
        token.push('.');
        B64.encode_string(&claims, &mut token);
        let signature = self
            .key
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| JwtError::Sign)?;
        token.push('.');
        B64.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// Checks a token made by [`Self::sign`]: header `ES256` with this key's `kid`, the
    /// signature, issuer `vouchd`, and `exp` after `now` (vouchd's clock, not the library's,
    /// so that tests and the sweeper agree). Returns the claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<AttestationClaims, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("not a JWS this vouchd made: {e}"))?;
        if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err("the token was not signed by this vouchd (alg or kid)".into());
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&["vouchd"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<AttestationClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
                ErrorKind::InvalidIssuer => "the token's issuer is not vouchd".to_owned(),
                other => format!("the token is not a valid attestation token: {other:?}"),
            })?
            .claims;
        if claims.exp <= now {
            return Err(format!("the token expired at {}", claims.exp));
        }
        Ok(claims)
    }

    /// The JWK Set with this key.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![Jwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x: self.x.clone(),
                y: self.y.clone(),
                use_: "sig".into(),
                alg: "ES256".into(),
                kid: self.kid.clone(),
            }],
        }
    }
}

/// The token-signing keys in use: the current key signs; the previous one (after a
/// rotation) stays in the JWKS, and its tokens verify, until its grace period ends.
///
/// Replicas sharing a database load the same keys from it ([`crate::store::Store::signing_keys`])
/// and reload them periodically ([`crate::service::certs::follow_signing_keys`]).
#[derive(Debug)]
pub struct KeyRing {
    keys: std::sync::RwLock<Arc<RingKeys>>,
    /// How long a retired key stays in the JWKS, seconds.
    grace: i64,
}

/// The keys of a [`KeyRing`] at one time.
#[derive(Debug)]
struct RingKeys {
    current: Arc<Signer>,
    /// The key the current one replaced, and when it did.
    previous: Option<(Arc<Signer>, i64)>,
}

/// A signing key as a [`KeyRing`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    /// When it stopped signing; None for the current key.
    pub retired_at: Option<i64>,
    /// When it leaves the JWKS and its tokens stop verifying; None for the current key.
    pub grace_until: Option<i64>,
}

impl KeyRing {
    /// A ring with one key and the given grace period (seconds).
    pub fn new(current: Signer, grace: u64) -> Self {
        Self {
            keys: std::sync::RwLock::new(Arc::new(RingKeys {
                current: Arc::new(current),
                previous: None,
            })),
            grace: i64::try_from(grace).unwrap_or(i64::MAX),
        }
    }

    fn keys(&self) -> Arc<RingKeys> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The current key and the previous one while it is in its grace period at `now`.
    fn usable(&self, now: i64) -> (Arc<Signer>, Option<(Arc<Signer>, i64)>) {
        let keys = self.keys();
        let previous = keys
            .previous
            .as_ref()
            .filter(|(_, retired)| retired.saturating_add(self.grace) > now)
            .map(|(signer, retired)| (Arc::clone(signer), retired.saturating_add(self.grace)));
        (Arc::clone(&keys.current), previous)
    }

    /// Replaces the keys (after a rotation, or with the database's).
    pub fn replace(&self, current: Signer, previous: Option<(Signer, i64)>) {
        let keys = Arc::new(RingKeys {
            current: Arc::new(current),
            previous: previous.map(|(s, at)| (Arc::new(s), at)),
        });
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// Sets the key the current one replaced, and when it did (the database's, at start).
    pub fn set_previous(&self, previous: Option<(Signer, i64)>) {
        let current = Arc::clone(&self.keys().current);
        let keys = Arc::new(RingKeys {
            current,
            previous: previous.map(|(s, at)| (Arc::new(s), at)),
        });
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// The kids of the keys held: the current one and the previous one, if any.
    pub fn kids(&self) -> (String, Option<String>) {
        let keys = self.keys();
        (
            keys.current.kid().to_owned(),
            keys.previous.as_ref().map(|(s, _)| s.kid().to_owned()),
        )
    }

    /// The current key's kid.
    pub fn kid(&self) -> String {
        self.keys().current.kid().to_owned()
    }

    /// The keys held: the current one, then the previous one if held (past its grace period
    /// too, until the next reload drops it).
    pub fn describe(&self) -> Vec<KeyInfo> {
        let keys = self.keys();
        let mut out = vec![KeyInfo {
            kid: keys.current.kid().to_owned(),
            retired_at: None,
            grace_until: None,
        }];
        if let Some((signer, retired)) = &keys.previous {
            out.push(KeyInfo {
                kid: signer.kid().to_owned(),
                retired_at: Some(*retired),
                grace_until: Some(retired.saturating_add(self.grace)),
            });
        }
        out
    }

    /// Signs with the current key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, JwtError> {
        self.keys().current.sign(claims)
    }

    /// Checks a token made by any usable key (see [`Signer::verify`]). Returns the claims and
    /// until when the token is usable: its `exp`, or the end of its key's grace period if
    /// sooner.
    pub fn verify_until(&self, token: &str, now: i64) -> Result<(AttestationClaims, i64), String> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("not a JWS this vouchd made: {e}"))?
            .kid;
        let (current, previous) = self.usable(now);
        if kid.as_deref() == Some(current.kid()) {
            let claims = current.verify(token, now)?;
            let exp = claims.exp;
            return Ok((claims, exp));
        }
        match previous {
            Some((signer, until)) if kid.as_deref() == Some(signer.kid()) => {
                let claims = signer.verify(token, now)?;
                let exp = claims.exp.min(until);
                Ok((claims, exp))
            }
            _ => Err(
                "the token was not signed by a key of this vouchd (its kid is unknown or past its grace period)"
                    .into(),
            ),
        }
    }

    /// Checks a token made by any usable key; returns its claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<AttestationClaims, String> {
        self.verify_until(token, now).map(|(claims, _)| claims)
    }

    /// The JWK Set at `now`: the current key and the previous one during its grace period.
    pub fn jwks_at(&self, now: i64) -> Jwks {
        let (current, previous) = self.usable(now);
        let mut jwks = current.jwks();
        if let Some((signer, _)) = previous {
            jwks.keys.extend(signer.jwks().keys);
        }
        jwks
    }

    /// The JWK Set now.
    pub fn jwks(&self) -> Jwks {
        self.jwks_at(crate::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.p8");
        let a = Signer::load_or_create(&path).unwrap();
        let b = Signer::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks(), b.jwks());
    }

    #[test]
    fn token_verifies_against_the_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(&dir.path().join("jwt.p8")).unwrap();
        let now = crate::now();
        let claims = AttestationClaims {
            iss: "vouchd".into(),
            sub: "ab".repeat(32),
            cluster: "prod".into(),
            software_version: "fw-1.0".into(),
            pcr_digest: "cd".repeat(32),
            nonce: "ef".repeat(16),
            attestation: "ef".repeat(16),
            iat: now,
            exp: now + 300,
            jti: "01".into(),
        };
        let token = signer.sign(&claims).unwrap();

        // Verify with an independent implementation, from the published JWKS alone.
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(serde_json::to_value(signer.jwks()).unwrap()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_issuer(&["vouchd"]);
        let data = jsonwebtoken::decode::<AttestationClaims>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims, claims);

        assert_eq!(signer.verify(&token, now).unwrap(), claims);
        assert!(
            signer
                .verify(&token, now + 300)
                .unwrap_err()
                .contains("expired")
        );
        let other = Signer::load_or_create(&dir.path().join("other.p8")).unwrap();
        assert!(other.verify(&token, now).is_err());

        // A tampered token does not verify.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = B64.encode(br#"{"iss":"vouchd","sub":"x"}"#);
        parts[1] = &other;
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&parts.join("."), &key, &validation).is_err()
        );
        assert!(signer.verify(&parts.join("."), now).is_err());
    }

    #[test]
    fn the_ring_honours_the_grace_period_of_a_retired_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = Signer::load_or_create(&dir.path().join("old.p8")).unwrap();
        let claims = |exp: i64| AttestationClaims {
            iss: "vouchd".into(),
            sub: "ab".repeat(32),
            cluster: "prod".into(),
            software_version: "fw-1.0".into(),
            pcr_digest: "cd".repeat(32),
            nonce: "ef".repeat(16),
            attestation: "ef".repeat(16),
            iat: 0,
            exp,
            jti: "01".into(),
        };
        let ring = KeyRing::new(old, 10);
        let old_token = ring.sign(&claims(1000)).unwrap();
        let old_kid = ring.kid();
        let stranger = Signer::load_or_create(&dir.path().join("other.p8")).unwrap();
        let stranger_token = stranger.sign(&claims(1000)).unwrap();

        let new = Signer::load_or_create(&dir.path().join("new.p8")).unwrap();
        let old = Signer::load_or_create(&dir.path().join("old.p8")).unwrap();
        ring.replace(new, Some((old, 100)));
        assert_ne!(ring.kid(), old_kid);
        let new_token = ring.sign(&claims(1000)).unwrap();
        // Usable until the grace period ends (exp bounded by it), then refused.
        assert_eq!(ring.verify_until(&old_token, 109).unwrap().1, 110);
        assert_eq!(ring.verify_until(&new_token, 109).unwrap().1, 1000);
        assert!(ring.verify(&old_token, 110).unwrap_err().contains("grace"));
        assert!(ring.verify(&new_token, 110).is_ok());
        assert!(ring.verify(&stranger_token, 105).is_err());
        assert_eq!(ring.jwks_at(109).keys.len(), 2);
        let after = ring.jwks_at(110);
        assert_eq!(after.keys.len(), 1);
        assert_eq!(after.keys[0].kid, ring.kid());
        assert_eq!(ring.describe()[1].grace_until, Some(110));
    }
}
