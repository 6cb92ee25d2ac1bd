//! Host operations (adding or removing a host) carry a management server's ECDSA P-256
//! signature in the `Vouch-Signature` header, over [`signing_message`]. This module is the one
//! definition of that string and that header, used by `vouch` to sign and by vouchd to check.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// The header carrying a management server's signature (HTTP header names are
/// case-insensitive).
pub const SIGNATURE_HEADER: &str = "vouch-signature";
/// How far a signed request's timestamp may be from the server's time, either way.
pub const MAX_SKEW_SECS: i64 = 300;
/// The longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 128;

/// The bytes a management server signs: a version tag, method, path and query, timestamp,
/// nonce and the SHA-256 of the body, one per line.
pub fn signing_message(
    method: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "vouch-host-op-v1\n{method}\n{path_and_query}\n{ts}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// A parsed `Vouch-Signature` header: `id=<server>; ts=<unix s>; nonce=<text>; sig=<base64 DER>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub id: String,
    pub ts: i64,
    pub nonce: String,
    pub sig: Vec<u8>,
}

impl SignatureHeader {
    /// Parses a header value; the error says which field is wrong.
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
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(format!("nonce must be 1 to {MAX_NONCE_LEN} characters"));
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
    fn signing_message_is_pinned() {
        let m = signing_message("POST", "/v1/clusters/c/hosts", 7, "n", b"");
        assert_eq!(
            String::from_utf8(m).unwrap_or_default(),
            "vouch-host-op-v1\nPOST\n/v1/clusters/c/hosts\n7\nn\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
