//! Values returned by the command layer. Each keeps the exact wire bytes the verifier needs
//! (in fixed-capacity [`Buf`]s) and offers parsed accessors.

use crate::wire::{Buf, Malformed, MalformedKind, Reader};

// Sized for what an agent handles, not for the TPM 2.0 maxima: these values are returned and
// held on small MCUs' stacks, and none can carry more than the wire contract's bounds
// (`vouch_proto::wire::MAX_PUBLIC`, `MAX_ATTEST`, `MAX_SIGNATURE`) anyway.

/// Capacity of a TPM2B_PUBLIC (with its size prefix): an RSA-4096 key with a SHA-512 policy
/// (602 bytes) fits.
pub const PUBLIC_MAX: usize = 640;
/// Capacity of a TPM2B_PRIVATE (with its size prefix): an RSA-2048 or ECC P-256 key takes
/// 200–300 bytes.
pub const PRIVATE_MAX: usize = 512;
/// Capacity of a TPMS_ATTEST: a quote over four banks with 64-byte qualifying data takes
/// under 300 bytes.
pub const ATTEST_MAX: usize = 512;
/// Capacity of a TPMT_SIGNATURE: an RSA-4096 signature fits.
pub const SIGNATURE_MAX: usize = 520;

/// A digest or nonce (at most 64 bytes).
pub type Digest = Buf<64>;
/// An object Name: nameAlg followed by the digest (at most 2 + 64 bytes).
pub type Name = Buf<66>;
/// The exact TPMT_SIGNATURE wire bytes.
pub type Signature = Buf<SIGNATURE_MAX>;

/// TPM_ALG_RSA.
pub const ALG_RSA: u16 = 0x0001;
/// TPM_ALG_SHA1.
pub const ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const ALG_SHA512: u16 = 0x000D;
/// TPM_ALG_ECC.
pub const ALG_ECC: u16 = 0x0023;
/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;

/// A TPM2B_PUBLIC, kept as its exact wire bytes (size prefix included).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Public {
    bytes: Buf<PUBLIC_MAX>,
}

/// The public key in a public area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey<'a> {
    /// An RSA key.
    Rsa {
        /// The modulus, big-endian.
        modulus: &'a [u8],
        /// The public exponent (0 means 65537).
        exponent: u32,
        /// The key size in bits.
        bits: u16,
    },
    /// An ECC key.
    Ecc {
        /// The TPM_ECC_CURVE (0x0003 = NIST P-256).
        curve: u16,
        /// The x coordinate, big-endian.
        x: &'a [u8],
        /// The y coordinate, big-endian.
        y: &'a [u8],
    },
    /// A keyed-hash or symmetric object: its unique digest.
    Other {
        /// The TPMU_PUBLIC_ID digest.
        unique: &'a [u8],
    },
}

/// A decoded view of a TPMT_PUBLIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicArea<'a> {
    /// The TPMI_ALG_PUBLIC object type.
    pub object_type: u16,
    /// The Name algorithm.
    pub name_alg: u16,
    /// TPMA_OBJECT bits.
    pub attributes: u32,
    /// The authPolicy digest.
    pub auth_policy: &'a [u8],
    /// The public key.
    pub key: PublicKey<'a>,
}

/// Skips a TPMT_SYM_DEF_OBJECT.
fn sym_def(r: &mut Reader<'_>) -> Result<(), Malformed> {
    if r.u16()? != ALG_NULL {
        r.u16()?;
        r.u16()?;
    }
    Ok(())
}

/// Decodes a TPMT_PUBLIC (no size prefix).
fn parse_public_area(area: &[u8]) -> Result<PublicArea<'_>, Malformed> {
    let mut r = Reader::new(area);
    let object_type = r.u16()?;
    let name_alg = r.u16()?;
    let attributes = r.u32()?;
    let auth_policy = r.tpm2b()?;
    let key = match object_type {
        ALG_RSA => {
            sym_def(&mut r)?;
            let scheme = r.u16()?;
            // Every RSA scheme but RSAES (0x0015) and NULL carries a hash.
            if scheme != ALG_NULL && scheme != 0x0015 {
                r.u16()?;
            }
            let bits = r.u16()?;
            let exponent = r.u32()?;
            let modulus = r.tpm2b()?;
            PublicKey::Rsa {
                modulus,
                exponent,
                bits,
            }
        }
        ALG_ECC => {
            sym_def(&mut r)?;
            let scheme = r.u16()?;
            if scheme != ALG_NULL {
                r.u16()?;
                // ECDAA carries a count.
                if scheme == 0x001A {
                    r.u16()?;
                }
            }
            let curve = r.u16()?;
            if r.u16()? != ALG_NULL {
                r.u16()?;
            }
            let x = r.tpm2b()?;
            let y = r.tpm2b()?;
            PublicKey::Ecc { curve, x, y }
        }
        // KEYEDHASH: scheme (HMAC: hash; XOR: hash, kdf)
        0x0008 => {
            match r.u16()? {
                ALG_NULL => {}
                0x000A => {
                    r.u16()?;
                    r.u16()?;
                }
                _ => {
                    r.u16()?;
                }
            }
            PublicKey::Other { unique: r.tpm2b()? }
        }
        // SYMCIPHER
        0x0025 => {
            sym_def(&mut r)?;
            PublicKey::Other { unique: r.tpm2b()? }
        }
        _ => return Err(Malformed::new(0, MalformedKind::Unsupported)),
    };
    r.finish()?;
    Ok(PublicArea {
        object_type,
        name_alg,
        attributes,
        auth_policy,
        key,
    })
}

impl Public {
    /// Checks and copies a TPM2B_PUBLIC (size prefix included).
    ///
    /// # Errors
    /// Undecodable or oversized bytes.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let area = r.tpm2b()?;
        r.finish()?;
        parse_public_area(area).map_err(|m| Malformed::new(m.offset + 2, m.kind))?;
        Ok(Self {
            bytes: Buf::copy(bytes, 0)?,
        })
    }

    /// The exact TPM2B_PUBLIC wire bytes (size prefix included), as a TPM returned them.
    #[must_use]
    pub fn as_tpm2b(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The TPMT_PUBLIC bytes (without the size prefix): what the Name is a digest of.
    #[must_use]
    pub fn area(&self) -> &[u8] {
        self.bytes.as_slice().get(2..).unwrap_or_default()
    }

    /// The decoded public area.
    #[must_use]
    pub fn parsed(&self) -> PublicArea<'_> {
        // Checked in `from_tpm2b`; the fallback is unreachable but keeps this panic-free.
        parse_public_area(self.area()).unwrap_or(PublicArea {
            object_type: ALG_NULL,
            name_alg: ALG_NULL,
            attributes: 0,
            auth_policy: &[],
            key: PublicKey::Other { unique: &[] },
        })
    }

    /// The RSA modulus, if this is an RSA key.
    #[must_use]
    pub fn rsa_modulus(&self) -> Option<&[u8]> {
        match self.parsed().key {
            PublicKey::Rsa { modulus, .. } => Some(modulus),
            _ => None,
        }
    }

    /// The ECC point (x, y), if this is an ECC key.
    #[must_use]
    pub fn ecc_point(&self) -> Option<(&[u8], &[u8])> {
        match self.parsed().key {
            PublicKey::Ecc { x, y, .. } => Some((x, y)),
            _ => None,
        }
    }
}

impl core::fmt::Debug for Public {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Public")
            .field("area", &self.parsed())
            .finish()
    }
}

/// A primary object created by TPM2_CreatePrimary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedPrimary {
    /// The transient handle.
    pub handle: u32,
    /// The public area.
    pub public: Public,
    /// The Name.
    pub name: Name,
}

/// An object created by TPM2_Create, to be loaded with TPM2_Load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedObject {
    /// The exact TPM2B_PRIVATE bytes (size prefix included).
    pub private: Buf<PRIVATE_MAX>,
    /// The public area.
    pub public: Public,
}

/// An object loaded by TPM2_Load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// The transient handle.
    pub handle: u32,
    /// The Name.
    pub name: Name,
}

/// The result of TPM2_ReadPublic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPublic {
    /// The public area.
    pub public: Public,
    /// The Name.
    pub name: Name,
    /// The qualified Name.
    pub qualified_name: Name,
}

/// The public area of an NV index (TPM2_NV_ReadPublic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvPublic {
    /// The index handle.
    pub index: u32,
    /// The Name algorithm.
    pub name_alg: u16,
    /// TPMA_NV bits.
    pub attributes: u32,
    /// The data size in bytes.
    pub data_size: u16,
    /// The index's Name.
    pub name: Name,
}

/// A signed attestation (TPM2_Quote, TPM2_Certify): the exact bytes the verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attestation {
    /// The TPMS_ATTEST bytes (the contents of the TPM2B_ATTEST: what was signed).
    pub attest: Buf<ATTEST_MAX>,
    /// The TPMT_SIGNATURE bytes.
    pub signature: Signature,
}

/// One PCR bank: a hash algorithm and a bit mask of PCRs 0..=31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcrBank {
    /// The TPM_ALG_ID of the bank.
    pub alg: u16,
    /// Bit n set means PCR n is selected (or allocated).
    pub pcrs: u32,
}

/// Up to 8 PCR banks (a TPML_PCR_SELECTION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcrBanks {
    banks: [PcrBank; 8],
    len: usize,
}

impl PcrBanks {
    /// A selection of `banks` (at most 8; extra ones are ignored).
    #[must_use]
    pub fn from_slice(banks: &[PcrBank]) -> Self {
        let mut s = Self::default();
        for b in banks {
            let _ = s.push(*b);
        }
        s
    }

    pub(crate) fn push(&mut self, bank: PcrBank) -> Result<(), ()> {
        let slot = self.banks.get_mut(self.len).ok_or(())?;
        *slot = bank;
        self.len += 1;
        Ok(())
    }

    /// The banks.
    #[must_use]
    pub fn as_slice(&self) -> &[PcrBank] {
        self.banks.get(..self.len).unwrap_or_default()
    }

    /// The banks with at least one PCR allocated.
    pub fn active(&self) -> impl Iterator<Item = &PcrBank> {
        self.as_slice().iter().filter(|b| b.pcrs != 0)
    }
}

/// The result of TPM2_PCR_Read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcrValues {
    /// The PCR update counter.
    pub update_counter: u32,
    /// The PCRs actually read (may be fewer than requested: at most 8 digests per call).
    pub selection: PcrBanks,
    digests: [Digest; 8],
    len: usize,
}

impl PcrValues {
    pub(crate) fn new(update_counter: u32, selection: PcrBanks) -> Self {
        Self {
            update_counter,
            selection,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, d: Digest) -> Result<(), ()> {
        let slot = self.digests.get_mut(self.len).ok_or(())?;
        *slot = d;
        self.len += 1;
        Ok(())
    }

    /// The digests, in selection order (bank by bank, PCR by PCR ascending).
    #[must_use]
    pub fn digests(&self) -> &[Digest] {
        self.digests.get(..self.len).unwrap_or_default()
    }
}
