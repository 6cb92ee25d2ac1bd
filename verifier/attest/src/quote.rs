//! Quote verification: the AK's signature over TPMS_ATTEST, the nonce, the
//! PCR selection and digest over the supplied PCR values, and the TPM clock
//! against the last quote accepted from the same AK.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};

use crate::alg::HashAlg;
use crate::codec::{DecodeError, to_hex};
use crate::pcr::PcrValues;
use crate::tpm::{
    Attest, ClockInfo, EccCurve, PcrSelection, Public, PublicKey, Signature, alg_id, attr,
};

/// Why a quote was refused; each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The quote (TPMS_ATTEST) is malformed.
    #[error("quote is malformed: {0}")]
    MalformedQuote(DecodeError),
    /// The signature (TPMT_SIGNATURE) is malformed.
    #[error("signature is malformed: {0}")]
    MalformedSignature(DecodeError),
    /// The AK may not sign quotes.
    #[error("AK check failed: {0}")]
    Ak(String),
    /// The signature's scheme or hash is not the one required.
    #[error("signature scheme check failed: {0}")]
    Scheme(String),
    /// The signature does not verify with the AK.
    #[error("signature check failed: the signature does not verify with the AK over the quote")]
    BadSignature,
    /// extraData is not the verifier's nonce.
    #[error("nonce check failed: the quote's extraData is {found}, expected {expected}")]
    Nonce {
        /// Hex of the nonce asked for.
        expected: String,
        /// Hex of extraData.
        found: String,
    },
    /// The quoted PCR selection is not the one asked for, or not the one supplied.
    #[error("PCR selection check failed: {0}")]
    Selection(String),
    /// A supplied PCR value is missing or has the wrong size.
    #[error("PCR values check failed: {0}")]
    PcrValues(String),
    /// The supplied PCR values do not hash to the quoted digest.
    #[error(
        "PCR digest check failed: the supplied PCR values hash to {computed}, the quote says {quoted}"
    )]
    PcrDigest {
        /// Hex of the digest over the supplied values.
        computed: String,
        /// Hex of the quoted digest.
        quoted: String,
    },
    /// The TPM clock or counters went backwards since the last accepted quote.
    #[error("clock check failed: {0}")]
    Clock(String),
}

impl QuoteError {
    /// Short name of the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Self::MalformedQuote(_) => "quote-format",
            Self::MalformedSignature(_) => "signature-format",
            Self::Ak(_) => "ak",
            Self::Scheme(_) => "signature-scheme",
            Self::BadSignature => "signature",
            Self::Nonce { .. } => "nonce",
            Self::Selection(_) => "pcr-selection",
            Self::PcrValues(_) => "pcr-values",
            Self::PcrDigest { .. } => "pcr-digest",
            Self::Clock(_) => "clock",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ecc { curve: EccCurve, point: Vec<u8> },
}

/// An attestation key ready to verify quotes. The key is parsed once, for
/// the AK's declared scheme, so a verification does no key parsing.
#[derive(Debug, Clone)]
pub struct AttestationKey {
    public: Option<Public>,
    material: KeyMaterial,
    parsed: Option<(u16, HashAlg, ParsedPublicKey)>,
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or(&[]).to_vec()
}

fn rsa_params(scheme: u16, hash: HashAlg) -> Option<&'static signature::RsaParameters> {
    match (scheme, hash) {
        (alg_id::RSASSA, HashAlg::Sha1) => {
            Some(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)
        }
        (alg_id::RSASSA, HashAlg::Sha256) => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        (alg_id::RSASSA, HashAlg::Sha384) => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        (alg_id::RSASSA, HashAlg::Sha512) => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        (alg_id::RSAPSS, HashAlg::Sha256) => Some(&signature::RSA_PSS_2048_8192_SHA256),
        (alg_id::RSAPSS, HashAlg::Sha384) => Some(&signature::RSA_PSS_2048_8192_SHA384),
        (alg_id::RSAPSS, HashAlg::Sha512) => Some(&signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

/// (algorithm, whether it takes the fixed r ‖ s form).
fn ecdsa_alg(
    curve: EccCurve,
    hash: HashAlg,
) -> Option<(&'static signature::EcdsaVerificationAlgorithm, bool)> {
    Some(match (curve, hash) {
        (EccCurve::P256, HashAlg::Sha256) => (&signature::ECDSA_P256_SHA256_FIXED, true),
        (EccCurve::P256, HashAlg::Sha1) => (&signature::ECDSA_P256_SHA1_ASN1, false),
        (EccCurve::P256, HashAlg::Sha384) => (&signature::ECDSA_P256_SHA384_ASN1, false),
        (EccCurve::P256, HashAlg::Sha512) => (&signature::ECDSA_P256_SHA512_ASN1, false),
        (EccCurve::P384, HashAlg::Sha384) => (&signature::ECDSA_P384_SHA384_FIXED, true),
        (EccCurve::P384, HashAlg::Sha256) => (&signature::ECDSA_P384_SHA256_ASN1, false),
        (EccCurve::P384, HashAlg::Sha512) => (&signature::ECDSA_P384_SHA512_ASN1, false),
        (EccCurve::P521, HashAlg::Sha1) => (&signature::ECDSA_P521_SHA1_FIXED, true),
        (EccCurve::P521, HashAlg::Sha256) => (&signature::ECDSA_P521_SHA256_FIXED, true),
        (EccCurve::P521, HashAlg::Sha384) => (&signature::ECDSA_P521_SHA384_FIXED, true),
        (EccCurve::P521, HashAlg::Sha512) => (&signature::ECDSA_P521_SHA512_FIXED, true),
        _ => return None,
    })
}

fn der_integer(out: &mut Vec<u8>, v: &[u8]) {
    let v = strip_zeros(v);
    let pad = v.first().is_none_or(|b| b & 0x80 != 0);
    out.push(0x02);
    out.push(u8::try_from(v.len() + usize::from(pad)).unwrap_or(0));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(&v);
}

/// Encodes (r, s) for the chosen algorithm; `None` if a value is too long.
fn ecdsa_sig_bytes(curve: EccCurve, fixed: bool, r: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    let n = curve.size();
    let (r, s) = (strip_zeros(r), strip_zeros(s));
    if r.len() > n || s.len() > n {
        return None;
    }
    if fixed {
        let mut out = vec![0u8; 2 * n];
        out.get_mut(n - r.len()..n)?.copy_from_slice(&r);
        out.get_mut(2 * n - s.len()..)?.copy_from_slice(&s);
        Some(out)
    } else {
        let mut body = Vec::with_capacity(2 * n + 6);
        der_integer(&mut body, &r);
        der_integer(&mut body, &s);
        let mut out = vec![0x30, u8::try_from(body.len()).ok()?];
        out.extend_from_slice(&body);
        Some(out)
    }
}

impl AttestationKey {
    /// From the AK's TPM public area. The AK must be a restricted signing
    /// key: a key that is not restricted could sign a forged TPMS_ATTEST.
    pub fn from_public(public: Public) -> Result<Self, QuoteError> {
        if !public.has(attr::RESTRICTED | attr::SIGN) {
            return Err(QuoteError::Ak(
                "the key is not a restricted signing key, so its signature does not prove a TPM made the quote".into(),
            ));
        }
        if public.has(attr::DECRYPT) {
            return Err(QuoteError::Ak(
                "the key is also a decryption key; an AK must only sign".into(),
            ));
        }
        let (material, scheme) = match &public.key {
            PublicKey::Rsa {
                exponent,
                modulus,
                scheme,
                ..
            } => (
                KeyMaterial::Rsa {
                    n: strip_zeros(modulus),
                    e: strip_zeros(&exponent.to_be_bytes()),
                },
                *scheme,
            ),
            PublicKey::Ecc { curve, scheme, .. } => (
                KeyMaterial::Ecc {
                    curve: *curve,
                    point: public.ecc_point().unwrap_or_default(),
                },
                *scheme,
            ),
        };
        let mut ak = Self {
            public: Some(public),
            material,
            parsed: None,
        };
        if let Some(crate::tpm::Scheme {
            alg,
            hash: Some(hash),
        }) = scheme
        {
            ak.parsed = ak.parse_for(alg, hash).map(|k| (alg, hash, k));
        }
        Ok(ak)
    }

    /// From a PEM or DER SubjectPublicKeyInfo (as `tpm2_readpublic -f pem`
    /// writes). Its TPM attributes are unknown, so it is only as good as
    /// the enrollment that vouched for it.
    pub fn from_spki(der: &[u8]) -> Result<Self, QuoteError> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as Xpk;
        use x509_parser::x509::SubjectPublicKeyInfo;
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| QuoteError::Ak(format!("not a SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(QuoteError::Ak("trailing bytes after the public key".into()));
        }
        let material = match spki.parsed() {
            Ok(Xpk::RSA(rsa)) => KeyMaterial::Rsa {
                n: strip_zeros(rsa.modulus),
                e: strip_zeros(rsa.exponent),
            },
            Ok(Xpk::EC(point)) => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                let curve = match curve_oid.as_deref() {
                    Some("1.2.840.10045.3.1.7") => EccCurve::P256,
                    Some("1.3.132.0.34") => EccCurve::P384,
                    Some("1.3.132.0.35") => EccCurve::P521,
                    other => {
                        return Err(QuoteError::Ak(format!(
                            "unsupported elliptic curve {}",
                            other.unwrap_or("(none)")
                        )));
                    }
                };
                KeyMaterial::Ecc {
                    curve,
                    point: point.data().to_vec(),
                }
            }
            _ => {
                return Err(QuoteError::Ak(
                    "the public key is neither RSA nor EC".into(),
                ));
            }
        };
        Ok(Self {
            public: None,
            material,
            parsed: None,
        })
    }

    /// The TPM public area, when the AK was given as one.
    pub fn public(&self) -> Option<&Public> {
        self.public.as_ref()
    }

    fn parse_for(&self, scheme: u16, hash: HashAlg) -> Option<ParsedPublicKey> {
        match &self.material {
            KeyMaterial::Rsa { n, e } => {
                let params = rsa_params(scheme, hash)?;
                RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(params)
                    .ok()
            }
            KeyMaterial::Ecc { curve, point } => {
                if scheme != alg_id::ECDSA {
                    return None;
                }
                let (alg, _) = ecdsa_alg(*curve, hash)?;
                ParsedPublicKey::new(alg, point).ok()
            }
        }
    }

    /// Verifies `sig` over `message`.
    pub fn verify_signature(&self, message: &[u8], sig: &Signature) -> Result<(), QuoteError> {
        let scheme = sig.scheme();
        let hash = sig.hash();
        if let Some(Public {
            key:
                PublicKey::Rsa {
                    scheme: Some(s), ..
                }
                | PublicKey::Ecc {
                    scheme: Some(s), ..
                },
            ..
        }) = &self.public
            && (s.alg != scheme || s.hash != Some(hash))
        {
            return Err(QuoteError::Scheme(format!(
                "the AK signs with scheme {:#06x}/{}, the signature claims {scheme:#06x}/{hash}",
                s.alg,
                s.hash.map_or("none", HashAlg::name)
            )));
        }
        let fresh;
        let key = match &self.parsed {
            Some((s, h, k)) if *s == scheme && *h == hash => k,
            _ => {
                fresh = self.parse_for(scheme, hash).ok_or_else(|| {
                    QuoteError::Scheme(format!(
                        "scheme {scheme:#06x} with {hash} is not supported for this key"
                    ))
                })?;
                &fresh
            }
        };
        let ok = match (sig, &self.material) {
            (
                Signature::RsaSsa { sig, .. } | Signature::RsaPss { sig, .. },
                KeyMaterial::Rsa { .. },
            ) => key.verify_sig(message, sig),
            (Signature::Ecdsa { r, s, .. }, KeyMaterial::Ecc { curve, .. }) => {
                let (_, fixed) = ecdsa_alg(*curve, hash).ok_or(QuoteError::BadSignature)?;
                let bytes = ecdsa_sig_bytes(*curve, fixed, r, s).ok_or(QuoteError::BadSignature)?;
                key.verify_sig(message, &bytes)
            }
            _ => {
                return Err(QuoteError::Scheme(
                    "the signature's algorithm does not match the AK's key type".into(),
                ));
            }
        };
        ok.map_err(|_| QuoteError::BadSignature)
    }
}

/// What the verifier expects of a quote.
#[derive(Debug, Clone, Copy)]
pub struct QuoteExpectations<'a> {
    /// The nonce sent in the challenge; must equal extraData.
    pub nonce: &'a [u8],
    /// The PCR selection asked for; `None` accepts the quote's own.
    pub selection: Option<&'a PcrSelection>,
    /// The PCR values the host supplied: must cover exactly the quoted selection.
    pub pcrs: &'a PcrValues,
    /// The clock state of the last quote accepted from this AK, if any.
    pub last: Option<&'a ClockInfo>,
    /// A required signature hash (`None`: whatever the AK signs with).
    pub hash: Option<HashAlg>,
}

/// What the clock check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChange {
    /// No earlier quote to compare with.
    First,
    /// Same boot, clock advanced or equal.
    SameBoot,
    /// The TPM was restarted (resumed) since.
    Restarted,
    /// The TPM was reset (rebooted) since.
    Rebooted,
}

/// A quote that passed every check. Only this crate constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedQuote {
    attest: Attest,
    pcrs: PcrValues,
    hash: HashAlg,
    clock_change: ClockChange,
}

impl VerifiedQuote {
    /// The decoded quote.
    pub fn attest(&self) -> &Attest {
        &self.attest
    }
    /// The PCR values the quote vouches for (exactly the quoted selection).
    pub fn pcrs(&self) -> &PcrValues {
        &self.pcrs
    }
    /// The signature hash.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }
    /// The clock state to store as this AK's last accepted quote.
    pub fn clock_info(&self) -> ClockInfo {
        self.attest.clock_info
    }
    /// What happened to the TPM since the last accepted quote.
    pub fn clock_change(&self) -> ClockChange {
        self.clock_change
    }
}

/// Checks the clock of a new quote against the last accepted one.
pub fn check_clock(now: &ClockInfo, last: Option<&ClockInfo>) -> Result<ClockChange, QuoteError> {
    let Some(last) = last else {
        return Ok(ClockChange::First);
    };
    use core::cmp::Ordering::{Equal, Greater, Less};
    match now.reset_count.cmp(&last.reset_count) {
        Less => Err(QuoteError::Clock(format!(
            "resetCount went back from {} to {}: a replayed quote or a TPM that was cleared",
            last.reset_count, now.reset_count
        ))),
        Greater => Ok(ClockChange::Rebooted),
        Equal => match now.restart_count.cmp(&last.restart_count) {
            Less => Err(QuoteError::Clock(format!(
                "restartCount went back from {} to {} within one boot",
                last.restart_count, now.restart_count
            ))),
            Greater => Ok(ClockChange::Restarted),
            Equal if now.clock < last.clock => Err(QuoteError::Clock(format!(
                "the TPM clock went back from {} ms to {} ms within one boot",
                last.clock, now.clock
            ))),
            Equal => Ok(ClockChange::SameBoot),
        },
    }
}

/// Verifies a quote: signature, nonce, selection, PCR digest, clock.
pub fn verify_quote(
    ak: &AttestationKey,
    attest_bytes: &[u8],
    signature_bytes: &[u8],
    expect: &QuoteExpectations<'_>,
) -> Result<VerifiedQuote, QuoteError> {
    let sig = Signature::from_bytes(signature_bytes).map_err(QuoteError::MalformedSignature)?;
    let attest = Attest::from_bytes(attest_bytes).map_err(QuoteError::MalformedQuote)?;
    if let Some(h) = expect.hash
        && sig.hash() != h
    {
        return Err(QuoteError::Scheme(format!(
            "the signature uses {}, {h} is required",
            sig.hash()
        )));
    }
    ak.verify_signature(attest_bytes, &sig)?;
    if attest.extra_data != expect.nonce {
        return Err(QuoteError::Nonce {
            expected: to_hex(expect.nonce),
            found: to_hex(&attest.extra_data),
        });
    }
    let quoted = attest.pcr_select.normalized();
    if let Some(want) = expect.selection
        && want.normalized() != quoted
    {
        return Err(QuoteError::Selection(format!(
            "the TPM quoted {quoted}, the verifier asked for {}",
            want.normalized()
        )));
    }
    let hash = sig.hash();
    let mut pcrs = PcrValues::default();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(quoted.len());
    for (alg, i) in quoted.iter() {
        let v = expect.pcrs.get(alg, i).ok_or_else(|| {
            QuoteError::PcrValues(format!("no value supplied for quoted PCR {i} ({alg})"))
        })?;
        if v.len() != alg.size() {
            return Err(QuoteError::PcrValues(format!(
                "the value supplied for PCR {i} ({alg}) is {} bytes, not {}",
                v.len(),
                alg.size()
            )));
        }
        parts.push(v);
        pcrs.insert(alg, i, v.to_vec());
    }
    if let Some((alg, i, _)) = expect
        .pcrs
        .iter()
        .find(|(a, i, _)| pcrs.get(*a, *i).is_none())
    {
        return Err(QuoteError::Selection(format!(
            "a value was supplied for PCR {i} ({alg}), which the TPM did not quote ({quoted})"
        )));
    }
    let computed = hash.hash(&parts).unwrap_or_default();
    if computed != attest.pcr_digest {
        return Err(QuoteError::PcrDigest {
            computed: to_hex(&computed),
            quoted: to_hex(&attest.pcr_digest),
        });
    }
    let clock_change = check_clock(&attest.clock_info, expect.last)?;
    Ok(VerifiedQuote {
        attest,
        pcrs,
        hash,
        clock_change,
    })
}
