//! A management server's signature on host operations, the `Vouch-Signature` scheme vouchd
//! verifies; the header and the signed string are defined once, in `vouch_api::signing`:
//!
//! ```text
//! Vouch-Signature: id=<server id>; ts=<unix seconds>; nonce=<1-128 chars>; sig=<base64 DER ECDSA>
//! ```
//!
//! over `"vouch-host-op-v1\n" METHOD "\n" path-and-query "\n" ts "\n" nonce "\n"
//! hex(SHA-256(body))`, with the management server's ECDSA P-256 key.

use std::path::Path;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

/// The header's name.
pub use vouch_api::signing::SIGNATURE_HEADER as HEADER;
use vouch_api::signing::{SignatureHeader, signing_message};

/// A management server's signing identity: its registered id and its ECDSA P-256 key.
#[derive(Debug)]
pub struct HostSigner {
    id: String,
    key: EcdsaKeyPair,
}

impl HostSigner {
    /// Reads a PEM private key (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, P-256).
    pub fn load(path: &Path, id: &str) -> Result<Self, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read signing key {}: {e}", path.display()))?;
        Self::from_pem(&pem, id).map_err(|e| format!("signing key {}: {e}", path.display()))
    }

    pub fn from_pem(pem: &[u8], id: &str) -> Result<Self, String> {
        let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
        let key = match PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("no PEM private key: {e}"))?
        {
            PrivateKeyDer::Pkcs8(k) => EcdsaKeyPair::from_pkcs8(alg, k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => EcdsaKeyPair::from_private_key_der(alg, k.secret_sec1_der()),
            _ => return Err("not an ECDSA key; management servers sign with ECDSA P-256".into()),
        }
        .map_err(|e| format!("not an ECDSA P-256 private key: {e}"))?;
        if id.is_empty() {
            return Err("the management server id is empty".into());
        }
        Ok(Self {
            id: id.to_owned(),
            key,
        })
    }

    /// The header value signing a request made now.
    pub fn header(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<String, String> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970".to_owned())?
            .as_secs();
        let ts = i64::try_from(ts).map_err(|_| "the clock is out of range".to_owned())?;
        let rng = SystemRandom::new();
        let mut nonce = [0u8; 16];
        rng.fill(&mut nonce)
            .map_err(|_| "no randomness for the nonce".to_owned())?;
        self.header_at(method, path_and_query, body, ts, &hex::encode(nonce))
    }

    /// The header value for a given timestamp and nonce.
    pub fn header_at(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        ts: i64,
        nonce: &str,
    ) -> Result<String, String> {
        let message = signing_message(method, path_and_query, ts, nonce, body);
        let sig = self
            .key
            .sign(&SystemRandom::new(), &message)
            .map_err(|_| "signing failed".to_owned())?;
        Ok(SignatureHeader {
            id: self.id.clone(),
            ts,
            nonce: nonce.to_owned(),
            sig: sig.as_ref().to_vec(),
        }
        .render())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The message and header are exactly what vouchd parses and verifies.
    #[test]
    fn vouchd_verifies_what_we_sign() {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ms.example".to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let signer = HostSigner::from_pem(key_pair.serialize_pem().as_bytes(), "ms-1").unwrap();
        let body = br#"{"name":"h"}"#;
        let path = "/v1/clusters/lab/hosts?x=1";
        let header = signer.header("POST", path, body).unwrap();
        let parsed = SignatureHeader::parse(&header).unwrap();
        assert_eq!(parsed.id, "ms-1");
        let (_, public) = vouchd::service::auth::management_certificate(cert.der()).unwrap();
        let message = signing_message("POST", path, parsed.ts, &parsed.nonce, body);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &public,
        )
        .verify(&message, &parsed.sig)
        .unwrap();
    }
}
