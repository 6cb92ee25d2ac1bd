//! Endorsement-key trust, in the three modes of the trust authority:
//!
//! 1. [`EkTrust::Manufacturers`] (default): the EK certificate chains to a
//!    trusted TPM manufacturer CA.
//! 2. [`EkTrust::ManufacturersAndAllowList`]: as 1, and the EK must also be
//!    on a list of individual EKs (certificates or public keys).
//! 3. [`EkTrust::PublicKeys`]: bare EK public keys, for TPMs without a
//!    certificate.
//!
//! Signatures are verified here, over the TBS bytes, with aws-lc-rs (RSA
//! PKCS#1 v1.5, RSA-PSS, ECDSA P-256 / P-384). The TCG EK credential
//! profile's peculiarities are understood rather than refused: an empty
//! subject with a critical SubjectAltName directoryName carrying the TPM
//! manufacturer, model and version (2.23.133.2.1–3), the EK extended key
//! usage 2.23.133.8.1, the subject directory attributes. Time is passed in.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as Xpk;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use crate::codec::Reader;
use crate::tpm::{EccCurve, Public, PublicKey};

const OID_TPM_MANUFACTURER: &str = "2.23.133.2.1";
const OID_TPM_MODEL: &str = "2.23.133.2.2";
const OID_TPM_VERSION: &str = "2.23.133.2.3";
const OID_EK_CERTIFICATE: &str = "2.23.133.8.1";
/// Longest chain searched, EK included.
pub const MAX_CHAIN: usize = 6;

/// Why an EK is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EkError {
    /// A certificate could not be parsed.
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    Malformed {
        /// Which certificate.
        what: String,
        /// Parser's reason.
        reason: String,
    },
    /// The certificate breaks a rule of RFC 5280 or the TCG EK profile.
    #[error("{cert}: {reason}")]
    Profile {
        /// Subject of the certificate at fault.
        cert: String,
        /// The rule broken.
        reason: String,
    },
    /// No chain to a trusted CA could be built.
    #[error("no chain to a trusted CA: {0}")]
    NoChain(String),
    /// The EK public key the host presented is not the certificate's key.
    #[error("the EK public key presented by the host is not the key in its EK certificate")]
    KeyMismatch,
    /// Mode 2 or 3: the EK is not on the list of trusted EKs.
    #[error("the EK is not on this cluster's list of trusted EKs{0}")]
    NotListed(String),
    /// Mode 1 or 2 need a certificate and none was presented.
    #[error(
        "the host presented no EK certificate, and this cluster trusts EKs only through manufacturer CAs; add the EK's public key to trust it (mode 3)"
    )]
    NoCertificate,
    /// The trust configuration is unusable.
    #[error("trust configuration: {0}")]
    Config(String),
}

/// An EK public key, reduced to what identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EkKey {
    /// RSA: modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Exponent.
        e: Vec<u8>,
    },
    /// ECC: curve and the uncompressed point.
    Ecc {
        /// Curve.
        curve: EccCurve,
        /// 04 ‖ X ‖ Y.
        point: Vec<u8>,
    },
}

fn strip(b: &[u8]) -> Vec<u8> {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(i..).unwrap_or(&[]).to_vec()
}

impl EkKey {
    /// From a TPM public area.
    pub fn from_public(p: &Public) -> Self {
        match &p.key {
            PublicKey::Rsa {
                exponent, modulus, ..
            } => Self::Rsa {
                n: strip(modulus),
                e: strip(&exponent.to_be_bytes()),
            },
            PublicKey::Ecc { curve, .. } => Self::Ecc {
                curve: *curve,
                point: p.ecc_point().unwrap_or_default(),
            },
        }
    }

    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        match spki.parsed() {
            Ok(Xpk::RSA(rsa)) => Ok(Self::Rsa {
                n: strip(rsa.modulus),
                e: strip(rsa.exponent),
            }),
            Ok(Xpk::EC(point)) => Ok(Self::Ecc {
                curve: spki_curve(spki)?,
                point: point.data().to_vec(),
            }),
            _ => Err("the public key is neither RSA nor EC".into()),
        }
    }

    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, EkError> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|e| EkError::Malformed {
            what: "the public key".into(),
            reason: e.to_string(),
        })?;
        Self::from_spki(&spki).map_err(EkError::Config)
    }

    /// The key of a DER certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Self, EkError> {
        let cert = parse_cert(certificate_from_nv(der), "the listed EK certificate")?;
        Self::from_spki(cert.public_key()).map_err(EkError::Config)
    }
}

fn spki_curve(spki: &SubjectPublicKeyInfo<'_>) -> Result<EccCurve, String> {
    let oid = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match oid.as_deref() {
        Some("1.2.840.10045.3.1.7") => Ok(EccCurve::P256),
        Some("1.3.132.0.34") => Ok(EccCurve::P384),
        Some("1.3.132.0.35") => Ok(EccCurve::P521),
        other => Err(format!(
            "unsupported elliptic curve {}",
            other.unwrap_or("(none)")
        )),
    }
}

/// The DER certificate in the bytes of an EK certificate NV index, as TPMs store it: without
/// the TCG PC Client NV header `10 01 00 <u16 length>` if one wraps it (go-attestation strips
/// it too), and without the 0xFF fill after a complete DER certificate (STMicro ST33 parts
/// fill the whole index). Anything else after the certificate is left for the parser to
/// refuse.
#[must_use]
pub fn certificate_from_nv(nv: &[u8]) -> &[u8] {
    let der = match nv {
        [0x10, 0x01, 0x00, hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            rest.get(..len).unwrap_or(rest)
        }
        _ => nv,
    };
    let len = match der {
        [0x30, 0x82, a, b, ..] => 4 + usize::from(u16::from_be_bytes([*a, *b])),
        [0x30, 0x81, a, ..] => 3 + usize::from(*a),
        [0x30, a, ..] if *a < 0x80 => 2 + usize::from(*a),
        _ => return der,
    };
    match (der.get(..len), der.get(len..)) {
        (Some(cert), Some(fill)) if fill.iter().all(|&b| b == 0xFF) => cert,
        _ => der,
    }
}

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, EkError> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => Err(EkError::Malformed {
            what: what.into(),
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(EkError::Malformed {
            what: what.into(),
            reason: e.to_string(),
        }),
    }
}

/// The TPM identity from the EK certificate's SubjectAltName.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TpmInfo {
    /// TPM manufacturer (2.23.133.2.1), e.g. `id:49465800`.
    pub manufacturer: Option<String>,
    /// The manufacturer's four-letter vendor ID decoded, e.g. `IFX`.
    pub manufacturer_ascii: Option<String>,
    /// TPM model (2.23.133.2.2).
    pub model: Option<String>,
    /// TPM firmware version (2.23.133.2.3), e.g. `id:00010002`.
    pub version: Option<String>,
}

fn decode_vendor(id: &str) -> Option<String> {
    let hex = id.strip_prefix("id:").unwrap_or(id);
    let bytes = crate::codec::from_hex(hex)?;
    let s: String = bytes
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect();
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' '))
        .then(|| s.trim().to_string())
}

fn name_string(name: &X509Name<'_>) -> String {
    let s = name.to_string();
    if s.is_empty() {
        "(empty subject)".into()
    } else {
        s
    }
}

fn describe(cert: &X509Certificate<'_>) -> String {
    let subject = name_string(cert.subject());
    if cert.subject().as_raw().len() <= 2 {
        format!(
            "EK certificate (empty subject, serial {})",
            cert.raw_serial_as_string()
        )
    } else {
        format!("certificate '{subject}'")
    }
}

fn tpm_info(cert: &X509Certificate<'_>) -> TpmInfo {
    let mut info = TpmInfo::default();
    let mut names: Vec<&X509Name<'_>> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let GeneralName::DirectoryName(n) = gn {
                names.push(n);
            }
        }
    }
    for n in names {
        for attr in n.iter_attributes() {
            let v = attr
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|_| crate::codec::to_hex(attr.attr_value().data));
            match attr.attr_type().to_id_string().as_str() {
                OID_TPM_MANUFACTURER => {
                    info.manufacturer_ascii = decode_vendor(&v);
                    info.manufacturer = Some(v);
                }
                OID_TPM_MODEL => info.model = Some(v),
                OID_TPM_VERSION => info.version = Some(v),
                _ => {}
            }
        }
    }
    info
}

/// The role a certificate plays in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ek,
    Ca,
}

/// Checks validity, critical extensions, basic constraints and key usage.
fn check_profile(cert: &X509Certificate<'_>, role: Role, now: i64) -> Result<(), EkError> {
    let who = describe(cert);
    let fail = |reason: String| EkError::Profile {
        cert: who.clone(),
        reason,
    };
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        return Err(fail(format!("not valid before {}", v.not_before)));
    }
    if now > v.not_after.timestamp() {
        return Err(fail(format!("expired on {}", v.not_after)));
    }
    let version = cert.version().0;
    if role == Role::Ek && version != 2 {
        return Err(fail(format!(
            "is an X.509 v{} certificate; the TCG EK profile requires v3",
            version.saturating_add(1)
        )));
    }
    let mut basic = None;
    let mut key_usage = None;
    let mut eku_ok = None;
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => basic = Some(bc.clone()),
            ParsedExtension::KeyUsage(ku) => key_usage = Some(*ku),
            ParsedExtension::ExtendedKeyUsage(eku) => {
                eku_ok = Some(
                    eku.any
                        || eku
                            .other
                            .iter()
                            .any(|o| o.to_id_string() == OID_EK_CERTIFICATE),
                );
            }
            ParsedExtension::SubjectAlternativeName(_)
            | ParsedExtension::AuthorityKeyIdentifier(_)
            | ParsedExtension::SubjectKeyIdentifier(_)
            | ParsedExtension::CertificatePolicies(_)
            | ParsedExtension::CRLDistributionPoints(_)
            | ParsedExtension::AuthorityInfoAccess(_) => {}
            ParsedExtension::NameConstraints(_) | ParsedExtension::PolicyConstraints(_)
                if ext.critical =>
            {
                return Err(fail(format!(
                    "has a critical {oid} extension, which this verifier does not enforce"
                )));
            }
            ParsedExtension::ParseError { error } => {
                return Err(fail(format!("its extension {oid} is malformed: {error}")));
            }
            _ if ext.critical && oid != "2.5.29.9" => {
                // 2.5.29.9 subjectDirectoryAttributes (TPM specification) is informational.
                return Err(fail(format!(
                    "has a critical extension {oid} that this verifier does not understand"
                )));
            }
            _ => {}
        }
    }
    match role {
        Role::Ek => {
            if basic.as_ref().is_some_and(|b| b.ca) {
                return Err(fail(
                    "is a CA certificate (basicConstraints CA:TRUE), not an EK certificate".into(),
                ));
            }
            if eku_ok == Some(false) {
                return Err(fail(format!(
                    "its extended key usage does not include the EK certificate purpose {OID_EK_CERTIFICATE}"
                )));
            }
            if let Some(ku) = key_usage {
                let rsa = matches!(cert.public_key().parsed(), Ok(Xpk::RSA(_)));
                if rsa && !ku.key_encipherment() {
                    return Err(fail(
                        "is an RSA EK certificate whose key usage lacks keyEncipherment".into(),
                    ));
                }
                if !rsa && !ku.key_agreement() {
                    return Err(fail(
                        "is an ECC EK certificate whose key usage lacks keyAgreement".into(),
                    ));
                }
            }
            if cert.subject().as_raw().len() <= 2
                && cert.subject_alternative_name().ok().flatten().is_none()
            {
                return Err(fail("has neither a subject nor a SubjectAltName".into()));
            }
        }
        Role::Ca => {
            match &basic {
                Some(b) if b.ca => {}
                Some(_) => {
                    return Err(fail(
                        "is not a CA (basicConstraints CA:FALSE) but issued a certificate".into(),
                    ));
                }
                None if version < 2 => {} // an X.509 v1 CA certificate
                None => {
                    return Err(fail(
                        "has no basicConstraints, so it may not act as a CA".into(),
                    ));
                }
            }
            if let Some(ku) = key_usage
                && !ku.key_cert_sign()
            {
                return Err(fail("its key usage lacks keyCertSign".into()));
            }
        }
    }
    Ok(())
}

/// One DER TLV: (tag, whole encoding).
fn der_tlv<'a>(r: &mut Reader<'a>) -> Option<(u8, &'a [u8])> {
    let start = r.clone();
    let tag = r.u8("tag").ok()?;
    let first = r.u8("length").ok()?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2usize)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 {
            return None;
        }
        let mut len = 0usize;
        for _ in 0..n {
            len = (len << 8) | usize::from(r.u8("length").ok()?);
        }
        (len, 2 + n)
    };
    r.take(len, "content").ok()?;
    let whole = start.clone().take(hdr.checked_add(len)?, "tlv").ok()?;
    Some((tag, whole))
}

/// The unsigned outer structure is strict DER: SEQUENCE { tbs, algorithm,
/// BIT STRING } with nothing after, and (RFC 5280 4.1.1.2) the outer
/// signatureAlgorithm is the signed TBS `signature` field, byte for byte.
fn signature_algorithms_agree(cert: &X509Certificate<'_>) -> bool {
    let raw = cert.as_raw();
    let tbs = cert.tbs_certificate.as_ref();
    // The outer certificate is SEQUENCE { tbs, algorithm, signature }.
    let mut outer = Reader::new(raw);
    let Some((0x30, _)) = der_tlv(&mut outer.clone()) else {
        return false;
    };
    let _ = outer.u8("tag");
    let Ok(first) = outer.u8("length") else {
        return false;
    };
    if first >= 0x80 && outer.take(usize::from(first & 0x7f), "length").is_err() {
        return false;
    }
    let Some((_, t)) = der_tlv(&mut outer) else {
        return false;
    };
    if t != tbs {
        return false;
    }
    let Some((0x30, outer_alg)) = der_tlv(&mut outer) else {
        return false;
    };
    // Then the signature, a BIT STRING, and nothing more.
    let Some((0x03, _)) = der_tlv(&mut outer) else {
        return false;
    };
    if !outer.is_empty() {
        return false;
    }
    // Inside the TBS: [0] version (optional), serialNumber, signature.
    let mut r = Reader::new(tbs);
    let _ = r.u8("tag");
    let Ok(first) = r.u8("length") else {
        return false;
    };
    if first >= 0x80 && r.take(usize::from(first & 0x7f), "length").is_err() {
        return false;
    }
    let mut field = der_tlv(&mut r);
    if let Some((0xa0, _)) = field {
        field = der_tlv(&mut r);
    }
    let Some((0x02, _)) = field else {
        return false;
    };
    matches!(der_tlv(&mut r), Some((0x30, inner)) if inner == outer_alg)
}

/// Verifies that `issuer` signed `cert`.
fn verify_signed_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), String> {
    if cert.signature_value.unused_bits != 0 {
        return Err("its signature BIT STRING has unused bits".into());
    }
    if !signature_algorithms_agree(cert) {
        return Err(
            "its unsigned outer structure is malformed, or its outer signatureAlgorithm differs from the signed one (RFC 5280 4.1.1.2)".into(),
        );
    }
    let alg = SignatureAlgorithm::try_from(&cert.signature_algorithm)
        .map_err(|e| format!("unknown signature algorithm: {e}"))?;
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let spki = issuer.public_key();
    let key = spki.subject_public_key.data.as_ref();
    let tbs = cert.tbs_certificate.as_ref();
    let sig = cert.signature_value.data.as_ref();
    let params: &'static dyn signature::VerificationAlgorithm = match alg {
        SignatureAlgorithm::RSA => match oid.as_str() {
            "1.2.840.113549.1.1.5" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
            "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
            "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
            other => return Err(format!("unsupported RSA signature algorithm {other}")),
        },
        SignatureAlgorithm::RSASSA_PSS(p) => {
            let hash = p.hash_algorithm_oid().to_id_string();
            let (alg, len): (&'static dyn signature::VerificationAlgorithm, u32) =
                match hash.as_str() {
                    "2.16.840.1.101.3.4.2.1" => (&signature::RSA_PSS_2048_8192_SHA256, 32),
                    "2.16.840.1.101.3.4.2.2" => (&signature::RSA_PSS_2048_8192_SHA384, 48),
                    "2.16.840.1.101.3.4.2.3" => (&signature::RSA_PSS_2048_8192_SHA512, 64),
                    other => return Err(format!("unsupported RSA-PSS hash {other}")),
                };
            if p.salt_length() != len {
                return Err(format!(
                    "unsupported RSA-PSS salt length {} (only the digest length, {len})",
                    p.salt_length()
                ));
            }
            alg
        }
        SignatureAlgorithm::ECDSA => {
            let curve = spki_curve(spki)?;
            match (curve, oid.as_str()) {
                (EccCurve::P256, "1.2.840.10045.4.3.2") => &signature::ECDSA_P256_SHA256_ASN1,
                (EccCurve::P256, "1.2.840.10045.4.3.3") => &signature::ECDSA_P256_SHA384_ASN1,
                (EccCurve::P256, "1.2.840.10045.4.3.4") => &signature::ECDSA_P256_SHA512_ASN1,
                (EccCurve::P384, "1.2.840.10045.4.3.2") => &signature::ECDSA_P384_SHA256_ASN1,
                (EccCurve::P384, "1.2.840.10045.4.3.3") => &signature::ECDSA_P384_SHA384_ASN1,
                (EccCurve::P384, "1.2.840.10045.4.3.4") => &signature::ECDSA_P384_SHA512_ASN1,
                (EccCurve::P521, "1.2.840.10045.4.3.4") => &signature::ECDSA_P521_SHA512_ASN1,
                (c, o) => return Err(format!("unsupported ECDSA {o} with curve {c:?}")),
            }
        }
        _ => return Err(format!("unsupported signature algorithm {oid}")),
    };
    UnparsedPublicKey::new(params, key)
        .verify(tbs, sig)
        .map_err(|_| "the signature does not verify".to_string())
}

/// The trust a cluster places in EKs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EkTrust {
    /// Mode 1: trust TPM manufacturer CAs (DER certificates).
    Manufacturers {
        /// Trusted CA certificates, roots or intermediates.
        cas: Vec<Vec<u8>>,
    },
    /// Mode 2: a valid chain to a trusted CA, and the EK on the list.
    ManufacturersAndAllowList {
        /// Trusted CA certificates.
        cas: Vec<Vec<u8>>,
        /// The individual EKs trusted.
        allowed: Vec<EkKey>,
    },
    /// Mode 3: bare EK public keys, for TPMs without a certificate.
    PublicKeys(Vec<EkKey>),
}

/// What a host presents about its EK.
#[derive(Debug, Clone, Copy)]
pub struct EkEvidence<'a> {
    /// The EK public area read from the TPM.
    pub public: Option<&'a Public>,
    /// The EK certificate (DER), from the TPM's NV.
    pub certificate: Option<&'a [u8]>,
    /// Intermediate CA certificates the host supplies (DER).
    pub intermediates: &'a [Vec<u8>],
}

/// Which mode trusted the EK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustMode {
    /// Mode 1.
    Manufacturer,
    /// Mode 2.
    ManufacturerAndAllowList,
    /// Mode 3.
    PublicKey,
}

/// An EK that passed the cluster's trust. Only this crate constructs it.
#[derive(Debug, Clone)]
pub struct TrustedEk {
    key: EkKey,
    public: Option<Public>,
    mode: TrustMode,
    tpm: Option<TpmInfo>,
    chain: Vec<String>,
    valid_until: Option<i64>,
}

impl TrustedEk {
    /// The trusted key.
    pub fn key(&self) -> &EkKey {
        &self.key
    }
    /// The EK public area, when the host presented it.
    pub fn public(&self) -> Option<&Public> {
        self.public.as_ref()
    }
    /// The mode that trusted it.
    pub fn mode(&self) -> TrustMode {
        self.mode
    }
    /// TPM manufacturer, model and version from the certificate.
    pub fn tpm_info(&self) -> Option<&TpmInfo> {
        self.tpm.as_ref()
    }
    /// The chain, EK certificate first, the trusted CA last.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }
    /// Until when (Unix seconds) the decision holds as far as time goes: the earliest end of
    /// validity of the certificates in the chain. `None` when no certificate was involved
    /// (mode 3).
    pub fn valid_until(&self) -> Option<i64> {
        self.valid_until
    }
}

/// Builds and checks the chain from `ek` to one of `anchors`; returns the
/// subjects, EK first.
fn build_chain(
    ek_der: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: i64,
) -> Result<(TpmInfo, Vec<String>, EkKey, i64), EkError> {
    let ek = parse_cert(ek_der, "the EK certificate")?;
    check_profile(&ek, Role::Ek, now)?;
    let mut valid_until = ek.validity().not_after.timestamp();
    let key = EkKey::from_spki(ek.public_key()).map_err(|reason| EkError::Profile {
        cert: describe(&ek),
        reason,
    })?;
    let info = tpm_info(&ek);
    let mut parsed_anchors = Vec::with_capacity(anchors.len());
    for (i, der) in anchors.iter().enumerate() {
        parsed_anchors.push(parse_cert(
            der,
            &format!("trusted CA certificate #{}", i + 1),
        )?);
    }
    let mut parsed_inter = Vec::with_capacity(intermediates.len());
    for (i, der) in intermediates.iter().enumerate() {
        parsed_inter.push(parse_cert(
            der,
            &format!("intermediate certificate #{}", i + 1),
        )?);
    }
    let mut chain = vec![describe(&ek)];
    let mut problems: Vec<String> = Vec::new();
    let mut current = ek;
    for depth in 0..MAX_CHAIN {
        // A trusted CA that issued the current certificate ends the chain.
        let mut next: Option<X509Certificate<'_>> = None;
        for a in &parsed_anchors {
            if a.subject().as_raw() != current.issuer().as_raw() {
                continue;
            }
            match verify_signed_by(&current, a) {
                Ok(()) => {
                    check_profile(a, Role::Ca, now)?;
                    check_path_len(a, depth)?;
                    chain.push(format!("trusted CA '{}'", name_string(a.subject())));
                    let valid_until = valid_until.min(a.validity().not_after.timestamp());
                    return Ok((info, chain, key, valid_until));
                }
                Err(e) => problems.push(format!(
                    "trusted CA '{}' has the issuer's name, but {e}",
                    name_string(a.subject())
                )),
            }
        }
        for c in &parsed_inter {
            if c.subject().as_raw() == current.issuer().as_raw() && c.as_raw() != current.as_raw() {
                match verify_signed_by(&current, c) {
                    Ok(()) => {
                        check_profile(c, Role::Ca, now)?;
                        check_path_len(c, depth)?;
                        valid_until = valid_until.min(c.validity().not_after.timestamp());
                        next = Some(c.clone());
                        break;
                    }
                    Err(e) => problems.push(format!(
                        "intermediate '{}' has the issuer's name, but {e}",
                        name_string(c.subject())
                    )),
                }
            }
        }
        match next {
            Some(n) => {
                chain.push(format!("intermediate '{}'", name_string(n.subject())));
                current = n;
            }
            None => {
                let mut msg = format!(
                    "{} was issued by '{}', which is neither a trusted CA nor a supplied intermediate",
                    chain.last().map_or("the certificate", String::as_str),
                    name_string(current.issuer())
                );
                if !problems.is_empty() {
                    msg = format!("{msg} ({})", problems.join("; "));
                }
                msg.push_str("; add the manufacturer's CA certificate with --ca");
                return Err(EkError::NoChain(msg));
            }
        }
    }
    Err(EkError::NoChain(format!(
        "no trusted CA within {MAX_CHAIN} certificates"
    )))
}

fn check_path_len(ca: &X509Certificate<'_>, intermediates_below: usize) -> Result<(), EkError> {
    if let Ok(Some(bc)) = ca.basic_constraints()
        && let Some(max) = bc.value.path_len_constraint
        && intermediates_below > usize::try_from(max).unwrap_or(usize::MAX)
    {
        return Err(EkError::Profile {
            cert: describe(ca),
            reason: format!(
                "its pathLenConstraint {max} allows fewer intermediates than the {intermediates_below} below it"
            ),
        });
    }
    Ok(())
}

/// Decides whether the EK a host presents is trusted. `now` is Unix time
/// in seconds.
pub fn verify_ek(
    trust: &EkTrust,
    evidence: &EkEvidence<'_>,
    now: i64,
) -> Result<TrustedEk, EkError> {
    let presented = evidence.public.map(EkKey::from_public);
    let (cas, allowed, mode) = match trust {
        EkTrust::PublicKeys(keys) => {
            let key = match (&presented, evidence.certificate) {
                (Some(k), _) => k.clone(),
                (None, Some(der)) => EkKey::from_certificate(der)?,
                (None, None) => {
                    return Err(EkError::Config(
                        "the host presented neither an EK public key nor a certificate".into(),
                    ));
                }
            };
            if let (Some(p), Some(der)) = (&presented, evidence.certificate)
                && EkKey::from_certificate(der)? != *p
            {
                return Err(EkError::KeyMismatch);
            }
            if !keys.contains(&key) {
                return Err(EkError::NotListed(String::new()));
            }
            return Ok(TrustedEk {
                key,
                public: evidence.public.cloned(),
                mode: TrustMode::PublicKey,
                tpm: None,
                chain: Vec::new(),
                valid_until: None,
            });
        }
        EkTrust::Manufacturers { cas } => (cas, None, TrustMode::Manufacturer),
        EkTrust::ManufacturersAndAllowList { cas, allowed } => {
            (cas, Some(allowed), TrustMode::ManufacturerAndAllowList)
        }
    };
    if cas.is_empty() {
        return Err(EkError::Config(
            "no trusted CA certificates are configured".into(),
        ));
    }
    let der = certificate_from_nv(evidence.certificate.ok_or(EkError::NoCertificate)?);
    let (info, chain, key, valid_until) = build_chain(der, evidence.intermediates, cas, now)?;
    if let Some(p) = &presented
        && *p != key
    {
        return Err(EkError::KeyMismatch);
    }
    if let Some(allowed) = allowed
        && !allowed.contains(&key)
    {
        return Err(EkError::NotListed(
            " (its certificate chain is valid, but mode 2 also requires the individual EK)".into(),
        ));
    }
    Ok(TrustedEk {
        key,
        public: evidence.public.cloned(),
        mode,
        tpm: Some(info),
        chain,
        valid_until: Some(valid_until),
    })
}

/// Parses every certificate of a PEM or DER input into DER.
pub fn certificates_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, EkError> {
    if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        let mut out = Vec::new();
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| EkError::Malformed {
                what: "a PEM block".into(),
                reason: e.to_string(),
            })?;
            if pem.label == "CERTIFICATE" {
                out.push(pem.contents);
            }
        }
        Ok(out)
    } else {
        Ok(vec![bytes.to_vec()])
    }
}

/// Checks that a CA certificate parses and is itself signed correctly when
/// self-signed; used to vet a trust store.
pub fn check_ca_certificate(der: &[u8], now: i64) -> Result<String, EkError> {
    let c = parse_cert(der, "the CA certificate")?;
    check_profile(&c, Role::Ca, now)?;
    if c.subject().as_raw() == c.issuer().as_raw() {
        verify_signed_by(&c, &c).map_err(|reason| EkError::Profile {
            cert: describe(&c),
            reason: format!("self-signature: {reason}"),
        })?;
    }
    Ok(name_string(c.subject()))
}

/// Verifies that CA `issuer_der` signed CA `cert_der` (for trust stores).
pub fn check_issued_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), EkError> {
    let c = parse_cert(cert_der, "the certificate")?;
    let i = parse_cert(issuer_der, "the issuer")?;
    if c.issuer().as_raw() != i.subject().as_raw() {
        return Err(EkError::NoChain("names do not chain".into()));
    }
    verify_signed_by(&c, &i).map_err(|reason| EkError::Profile {
        cert: describe(&c),
        reason,
    })
}
