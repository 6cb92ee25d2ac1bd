//! TCG algorithm identifiers and hashing.

use core::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

/// A TCG hash algorithm (TPM_ALG_ID) that may name a PCR bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM_ALG_SHA512 (0x000D).
    Sha512,
    /// TPM_ALG_SM3_256 (0x0012): parsed, but not computed by this verifier.
    Sm3_256,
}

impl HashAlg {
    /// Every algorithm, in bank order.
    pub const ALL: [HashAlg; 5] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sm3_256,
    ];

    /// From a TPM_ALG_ID.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0004 => Some(Self::Sha1),
            0x000B => Some(Self::Sha256),
            0x000C => Some(Self::Sha384),
            0x000D => Some(Self::Sha512),
            0x0012 => Some(Self::Sm3_256),
            _ => None,
        }
    }

    /// The TPM_ALG_ID.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3_256 => 0x0012,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sm3_256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The name tpm2-tools uses (`sha256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Sm3_256 => "sm3_256",
        }
    }

    /// From the tpm2-tools name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn digest_alg(self) -> Option<&'static digest::Algorithm> {
        match self {
            Self::Sha1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            Self::Sha256 => Some(&digest::SHA256),
            Self::Sha384 => Some(&digest::SHA384),
            Self::Sha512 => Some(&digest::SHA512),
            Self::Sm3_256 => None,
        }
    }

    /// Whether this verifier can compute the hash.
    pub fn is_computable(self) -> bool {
        self.digest_alg().is_some()
    }

    /// Hashes the concatenation of `parts`; `None` for an algorithm this
    /// verifier does not compute (SM3).
    pub fn hash(self, parts: &[&[u8]]) -> Option<Vec<u8>> {
        let mut ctx = digest::Context::new(self.digest_alg()?);
        for p in parts {
            ctx.update(p);
        }
        Some(ctx.finish().as_ref().to_vec())
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
