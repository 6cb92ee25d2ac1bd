//! TPM 2.0 structures, decoded from their big-endian wire form:
//! TPM2B_PUBLIC / TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE and
//! TPML_PCR_SELECTION.

use crate::alg::HashAlg;
use crate::codec::{DecodeError, DecodeReason, Reader};

/// TPM_ALG_ID values used here.
#[allow(missing_docs)]
pub mod alg_id {
    pub const RSA: u16 = 0x0001;
    pub const HMAC: u16 = 0x0005;
    pub const AES: u16 = 0x0006;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const XOR: u16 = 0x000A;
    pub const NULL: u16 = 0x0010;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const ECDAA: u16 = 0x001A;
    pub const SM2: u16 = 0x001B;
    pub const ECSCHNORR: u16 = 0x001C;
    pub const ECMQV: u16 = 0x001D;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const CFB: u16 = 0x0043;
}

/// TPMA_OBJECT bits.
#[allow(missing_docs)]
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// TPMS_ATTEST magic, TPM_GENERATED_VALUE.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// Largest RSA modulus accepted (bytes).
pub const MAX_RSA_BYTES: usize = 512;
/// Largest ECC coordinate accepted (bytes, P-521).
pub const MAX_ECC_BYTES: usize = 66;
/// Largest digest (SHA-512).
pub const MAX_DIGEST: usize = 64;

/// An elliptic curve (TPM_ECC_CURVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EccCurve {
    /// NIST P-256 (0x0003).
    P256,
    /// NIST P-384 (0x0004).
    P384,
    /// NIST P-521 (0x0005).
    P521,
}

impl EccCurve {
    /// From TPM_ECC_CURVE.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0003 => Some(Self::P256),
            0x0004 => Some(Self::P384),
            0x0005 => Some(Self::P521),
            _ => None,
        }
    }
    /// TPM_ECC_CURVE.
    pub fn id(self) -> u16 {
        match self {
            Self::P256 => 0x0003,
            Self::P384 => 0x0004,
            Self::P521 => 0x0005,
        }
    }
    /// Coordinate size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// A scheme with its hash (TPMT_RSA_SCHEME, TPMT_ECC_SCHEME,
/// TPMT_KDF_SCHEME); `None` for TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// TPM_ALG_ID of the scheme.
    pub alg: u16,
    /// Its hash; `None` for schemes without one (RSAES).
    pub hash: Option<HashAlg>,
}

/// TPMT_SYM_DEF_OBJECT; `None` for TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Algorithm (AES = 0x0006).
    pub alg: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Mode (CFB = 0x0043).
    pub mode: u16,
}

/// The key material of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    /// RSA.
    Rsa {
        /// Key size in bits.
        bits: u16,
        /// Public exponent (0 in the wire form means 65537; stored resolved).
        exponent: u32,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
        /// Scheme.
        scheme: Option<Scheme>,
    },
    /// ECC.
    Ecc {
        /// Curve.
        curve: EccCurve,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
        /// Signing / key-exchange scheme.
        scheme: Option<Scheme>,
        /// KDF scheme.
        kdf: Option<Scheme>,
    },
}

/// A decoded TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The TPMT_PUBLIC bytes, as hashed into the Name.
    pub raw: Vec<u8>,
    /// Name algorithm.
    pub name_alg: HashAlg,
    /// TPMA_OBJECT.
    pub attributes: u32,
    /// Authorisation policy digest.
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm of a storage / EK key.
    pub symmetric: Option<SymDef>,
    /// The key.
    pub key: PublicKey,
}

fn read_hash(r: &mut Reader<'_>, what: &'static str) -> Result<HashAlg, DecodeError> {
    let at = r.offset();
    let id = r.u16_be(what)?;
    match HashAlg::from_id(id) {
        Some(a) if a.is_computable() => Ok(a),
        _ => Err(Reader::err_at(
            at,
            DecodeReason::UnsupportedAlgorithm { what, id },
        )),
    }
}

fn read_sym(r: &mut Reader<'_>) -> Result<Option<SymDef>, DecodeError> {
    let alg = r.u16_be("symmetric algorithm")?;
    if alg == alg_id::NULL {
        return Ok(None);
    }
    if alg == alg_id::XOR {
        // XOR carries a hash, not a key size and mode.
        let _hash = r.u16_be("XOR hash")?;
        return Ok(Some(SymDef {
            alg,
            key_bits: 0,
            mode: alg_id::NULL,
        }));
    }
    let key_bits = r.u16_be("symmetric key bits")?;
    let mode = r.u16_be("symmetric mode")?;
    Ok(Some(SymDef {
        alg,
        key_bits,
        mode,
    }))
}

fn read_scheme(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Scheme>, DecodeError> {
    let alg = r.u16_be(what)?;
    match alg {
        alg_id::NULL => Ok(None),
        alg_id::RSAES => Ok(Some(Scheme { alg, hash: None })),
        alg_id::ECDAA => {
            let hash = read_hash(r, "scheme hash")?;
            let _count = r.u16_be("ECDAA count")?;
            Ok(Some(Scheme {
                alg,
                hash: Some(hash),
            }))
        }
        _ => Ok(Some(Scheme {
            alg,
            hash: Some(read_hash(r, "scheme hash")?),
        })),
    }
}

impl Public {
    /// Decodes a TPM2B_PUBLIC (size, then TPMT_PUBLIC), rejecting trailing bytes.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let size = usize::from(r.u16_be("TPM2B_PUBLIC size")?);
        let mut inner = r.sub(size, "TPMT_PUBLIC")?;
        r.finish()?;
        let p = Self::read(&mut inner)?;
        inner.finish()?;
        Ok(p)
    }

    /// Decodes a bare TPMT_PUBLIC, rejecting trailing bytes.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let p = Self::read(&mut r)?;
        r.finish()?;
        Ok(p)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.clone();
        let at = r.offset();
        let ty = r.u16_be("public type")?;
        let name_alg = read_hash(r, "name")?;
        let attributes = r.u32_be("object attributes")?;
        let auth_policy = r.tpm2b("auth policy", MAX_DIGEST)?.to_vec();
        let (symmetric, key) = match ty {
            alg_id::RSA => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r, "RSA scheme")?;
                let bits_at = r.offset();
                let bits = r.u16_be("RSA key bits")?;
                let exponent = match r.u32_be("RSA exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b("RSA modulus", MAX_RSA_BYTES)?.to_vec();
                if modulus.len().saturating_mul(8) != usize::from(bits) {
                    return Err(Reader::err_at(
                        bits_at,
                        DecodeReason::Invalid("RSA key bits do not match the modulus length"),
                    ));
                }
                (
                    symmetric,
                    PublicKey::Rsa {
                        bits,
                        exponent,
                        modulus,
                        scheme,
                    },
                )
            }
            alg_id::ECC => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r, "ECC scheme")?;
                let curve_at = r.offset();
                let curve_id = r.u16_be("ECC curve")?;
                let curve = EccCurve::from_id(curve_id).ok_or(Reader::err_at(
                    curve_at,
                    DecodeReason::UnsupportedAlgorithm {
                        what: "ECC curve",
                        id: curve_id,
                    },
                ))?;
                let kdf = read_scheme(r, "KDF scheme")?;
                let x_at = r.offset();
                let x = r.tpm2b("ECC x", MAX_ECC_BYTES)?.to_vec();
                let y = r.tpm2b("ECC y", MAX_ECC_BYTES)?.to_vec();
                if x.len() > curve.size() || y.len() > curve.size() {
                    return Err(Reader::err_at(
                        x_at,
                        DecodeReason::Invalid("ECC point larger than its curve"),
                    ));
                }
                (
                    symmetric,
                    PublicKey::Ecc {
                        curve,
                        x,
                        y,
                        scheme,
                        kdf,
                    },
                )
            }
            other => {
                return Err(Reader::err_at(
                    at,
                    DecodeReason::UnsupportedAlgorithm {
                        what: "public key type (only RSA and ECC keys)",
                        id: other,
                    },
                ));
            }
        };
        let len = r.offset().saturating_sub(at);
        let raw = start.clone().take(len, "TPMT_PUBLIC")?.to_vec();
        Ok(Self {
            raw,
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            key,
        })
    }

    /// The Name: nameAlg (big-endian) ‖ H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        let mut n = self.name_alg.id().to_be_bytes().to_vec();
        if let Some(h) = self.name_alg.hash(&[&self.raw]) {
            n.extend_from_slice(&h);
        }
        n
    }

    /// Whether every bit of `bits` is set.
    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }

    /// The uncompressed SEC1 point 04 ‖ X ‖ Y (coordinates left-padded), for ECC keys.
    pub fn ecc_point(&self) -> Option<Vec<u8>> {
        match &self.key {
            PublicKey::Ecc { curve, x, y, .. } => {
                let n = curve.size();
                let mut p = Vec::with_capacity(1 + 2 * n);
                p.push(4);
                p.resize(1 + n - x.len(), 0);
                p.extend_from_slice(x);
                p.resize(1 + 2 * n - y.len(), 0);
                p.extend_from_slice(y);
                Some(p)
            }
            PublicKey::Rsa { .. } => None,
        }
    }
}

/// TPML_PCR_SELECTION: banks in the quoted order, PCR indices ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrSelection {
    /// (bank, selected PCRs).
    pub banks: Vec<(HashAlg, Vec<u32>)>,
}

/// Most banks in one selection.
pub const MAX_BANKS: usize = 16;

impl PcrSelection {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let count = usize::try_from(r.u32_be("PCR selection count")?).unwrap_or(usize::MAX);
        if count > MAX_BANKS {
            return Err(Reader::err_at(
                at,
                DecodeReason::TooLarge {
                    what: "PCR selection count",
                    size: count,
                    max: MAX_BANKS,
                },
            ));
        }
        let mut banks: Vec<(HashAlg, Vec<u32>)> = Vec::with_capacity(count);
        for _ in 0..count {
            let at = r.offset();
            let id = r.u16_be("PCR bank")?;
            let alg = HashAlg::from_id(id).ok_or(Reader::err_at(
                at,
                DecodeReason::UnsupportedAlgorithm {
                    what: "PCR bank",
                    id,
                },
            ))?;
            let size_at = r.offset();
            let size = usize::from(r.u8("sizeofSelect")?);
            if size > 4 {
                return Err(Reader::err_at(
                    size_at,
                    DecodeReason::TooLarge {
                        what: "sizeofSelect",
                        size,
                        max: 4,
                    },
                ));
            }
            let bits = r.take(size, "pcrSelect")?;
            if banks.iter().any(|(a, _)| *a == alg) {
                return Err(Reader::err_at(
                    at,
                    DecodeReason::Invalid("a PCR bank is selected twice"),
                ));
            }
            banks.push((alg, bitmap_to_indices(bits)));
        }
        Ok(Self { banks })
    }

    /// From a bank → indices list.
    pub fn new(banks: Vec<(HashAlg, Vec<u32>)>) -> Self {
        let banks = banks
            .into_iter()
            .map(|(a, mut v)| {
                v.sort_unstable();
                v.dedup();
                (a, v)
            })
            .collect();
        Self { banks }
    }

    /// Drops empty banks, for comparing selections.
    pub fn normalized(&self) -> Self {
        Self {
            banks: self
                .banks
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// Number of selected PCRs over every bank.
    pub fn len(&self) -> usize {
        self.banks.iter().map(|(_, v)| v.len()).sum()
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (bank, index) in digest order.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u32)> + '_ {
        self.banks
            .iter()
            .flat_map(|(a, v)| v.iter().map(move |i| (*a, *i)))
    }
}

impl core::fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let parts: Vec<String> = self
            .banks
            .iter()
            .map(|(a, v)| {
                let idx: Vec<String> = v.iter().map(u32::to_string).collect();
                format!("{a}:{}", idx.join(","))
            })
            .collect();
        if parts.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&parts.join("+"))
        }
    }
}

pub(crate) fn bitmap_to_indices(bits: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    for (byte_index, byte) in (0u32..).zip(bits) {
        for bit in 0..8u32 {
            if byte & (1 << bit) != 0 {
                out.push(byte_index * 8 + bit);
            }
        }
    }
    out
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered, persistent across resets when safe.
    pub clock: u64,
    /// TPM resets (reboots) since the TPM was cleared.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernate) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` has never been rolled back.
    pub safe: bool,
}

/// A decoded TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// Qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// extraData: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// Clock state.
    pub clock_info: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// The quoted PCRs.
    pub pcr_select: PcrSelection,
    /// Digest of the selected PCR values, with the signing scheme's hash.
    pub pcr_digest: Vec<u8>,
}

impl Attest {
    /// Decodes a TPMS_ATTEST that must be a quote, rejecting trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let at = r.offset();
        let magic = r.u32_be("magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(Reader::err_at(
                at,
                DecodeReason::Unexpected {
                    what: "magic (TPM_GENERATED_VALUE)",
                    found: u64::from(magic),
                    expected: u64::from(TPM_GENERATED_VALUE),
                },
            ));
        }
        let at = r.offset();
        let ty = r.u16_be("attestation type")?;
        if ty != TPM_ST_ATTEST_QUOTE {
            return Err(Reader::err_at(
                at,
                DecodeReason::Unexpected {
                    what: "attestation type (TPM_ST_ATTEST_QUOTE)",
                    found: u64::from(ty),
                    expected: u64::from(TPM_ST_ATTEST_QUOTE),
                },
            ));
        }
        let qualified_signer = r.tpm2b("qualifiedSigner", 2 + MAX_DIGEST)?.to_vec();
        let extra_data = r.tpm2b("extraData", MAX_DIGEST)?.to_vec();
        let clock = r.u64_be("clock")?;
        let reset_count = r.u32_be("resetCount")?;
        let restart_count = r.u32_be("restartCount")?;
        let at = r.offset();
        let safe = match r.u8("safe")? {
            0 => false,
            1 => true,
            _ => {
                return Err(Reader::err_at(
                    at,
                    DecodeReason::Invalid("clockInfo.safe is neither YES nor NO"),
                ));
            }
        };
        let firmware_version = r.u64_be("firmwareVersion")?;
        let pcr_select = PcrSelection::read(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest", MAX_DIGEST)?.to_vec();
        r.finish()?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }
}

/// A decoded TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Hash.
        hash: HashAlg,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// RSASSA-PSS (salt as long as the digest, as the TPM signs).
    RsaPss {
        /// Hash.
        hash: HashAlg,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// Hash.
        hash: HashAlg,
        /// r.
        r: Vec<u8>,
        /// s.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Decodes a TPMT_SIGNATURE, rejecting trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let at = r.offset();
        let alg = r.u16_be("signature algorithm")?;
        let sig = match alg {
            alg_id::RSASSA | alg_id::RSAPSS => {
                let hash = read_hash(&mut r, "signature hash")?;
                let sig = r.tpm2b("RSA signature", MAX_RSA_BYTES)?.to_vec();
                if alg == alg_id::RSASSA {
                    Self::RsaSsa { hash, sig }
                } else {
                    Self::RsaPss { hash, sig }
                }
            }
            alg_id::ECDSA => {
                let hash = read_hash(&mut r, "signature hash")?;
                let sr = r.tpm2b("ECDSA r", MAX_ECC_BYTES)?.to_vec();
                let ss = r.tpm2b("ECDSA s", MAX_ECC_BYTES)?.to_vec();
                Self::Ecdsa { hash, r: sr, s: ss }
            }
            other => {
                return Err(Reader::err_at(
                    at,
                    DecodeReason::UnsupportedAlgorithm {
                        what: "signature (RSASSA, RSAPSS and ECDSA are supported)",
                        id: other,
                    },
                ));
            }
        };
        r.finish()?;
        Ok(sig)
    }

    /// The hash the signature was made over.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }

    /// The TPM_ALG_ID of the scheme.
    pub fn scheme(&self) -> u16 {
        match self {
            Self::RsaSsa { .. } => alg_id::RSASSA,
            Self::RsaPss { .. } => alg_id::RSAPSS,
            Self::Ecdsa { .. } => alg_id::ECDSA,
        }
    }
}
