//! A software TPM for one simulated host: an EK (RSA-2048 or ECC P-256, TCG templates L-1 and
//! L-2) and an AK (RSA-2048 RSASSA or ECC P-256 ECDSA, restricted signing), with the TPM's own
//! wire structures: TPM2B_PUBLIC, TPM2_ActivateCredential (TPM 2.0 Part 1 "Credential
//! Protection", the inverse of vouch-attest's MakeCredential), TPMS_ATTEST of a quote and its
//! TPMT_SIGNATURE. Nothing here is a shortcut the verifier could tell apart from a TPM.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{AES_128, DecryptingKey, DecryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    self, KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use vouch_attest::HashAlg;
use vouch_attest::credential::{kdfa, kdfe};

/// TPM_ALG_SHA256.
const SHA256: u16 = 0x000B;
/// TPMA_OBJECT of the TCG EK templates: fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00B2;
/// TPMA_OBJECT of an AK: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
/// restricted, sign.
const AK_ATTRIBUTES: u32 = 0x0005_0072;
/// The EK templates' policy: PolicySecret(TPM_RH_ENDORSEMENT).
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// Why the software TPM could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    /// A key could not be made or loaded.
    #[error("key: {0}")]
    Key(&'static str),
    /// The credential challenge did not open: it was not made for this EK and AK.
    #[error("ActivateCredential failed: {0}")]
    Activation(&'static str),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}

/// A key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA-2048.
    Rsa,
    /// ECC NIST P-256.
    Ecc,
}

/// An endorsement key: decrypts credential seeds.
#[derive(Debug)]
pub enum Ek {
    /// RSA-2048, OAEP SHA-256.
    Rsa {
        key: OaepPrivateDecryptingKey,
        modulus: Vec<u8>,
    },
    /// ECC P-256, ECDH.
    Ecc { key: PrivateKey, point: Vec<u8> },
}

/// An attestation key: signs quotes.
#[derive(Debug)]
pub enum Ak {
    /// RSA-2048, RSASSA-PKCS1-v1_5 SHA-256.
    Rsa { key: rsa::KeyPair, modulus: Vec<u8> },
    /// ECC P-256, ECDSA SHA-256.
    Ecc { key: EcdsaKeyPair },
}

/// RSA key pairs as PKCS#8, generated once and kept (RSA generation takes ~0.1 s each).
pub type RsaPkcs8 = Vec<u8>;

/// A new RSA-2048 key pair, PKCS#8.
pub fn generate_rsa() -> Result<RsaPkcs8, TpmError> {
    let key = rsa::KeyPair::generate(KeySize::Rsa2048).map_err(|_| TpmError::Key("RSA"))?;
    let der = key.as_der().map_err(|_| TpmError::Key("RSA PKCS#8"))?;
    Ok(der.as_ref().to_vec())
}

fn rsa_modulus(key: &rsa::KeyPair) -> Vec<u8> {
    key.public_key()
        .modulus()
        .big_endian_without_leading_zero()
        .to_vec()
}

impl Ek {
    /// A new ECC P-256 EK.
    pub fn ecc() -> Result<Self, TpmError> {
        let key = PrivateKey::generate(&agreement::ECDH_P256).map_err(|_| TpmError::Key("ECC"))?;
        let point = key
            .compute_public_key()
            .map_err(|_| TpmError::Key("ECC point"))?
            .as_ref()
            .to_vec();
        Ok(Self::Ecc { key, point })
    }

    /// An RSA-2048 EK from a PKCS#8 key pair.
    pub fn rsa(pkcs8: &[u8]) -> Result<Self, TpmError> {
        let pair = rsa::KeyPair::from_pkcs8(pkcs8).map_err(|_| TpmError::Key("RSA PKCS#8"))?;
        let modulus = rsa_modulus(&pair);
        let key = PrivateDecryptingKey::from_pkcs8(pkcs8)
            .and_then(|k| OaepPrivateDecryptingKey::new(k).map_err(Into::into))
            .map_err(|_| TpmError::Key("RSA decrypting key"))?;
        Ok(Self::Rsa { key, modulus })
    }

    /// The kind.
    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Rsa { .. } => KeyKind::Rsa,
            Self::Ecc { .. } => KeyKind::Ecc,
        }
    }

    /// The TPMT_PUBLIC of the TCG EK template (L-1 or L-2) with this key.
    pub fn tpmt_public(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(360);
        match self {
            Self::Rsa { modulus, .. } => {
                header(&mut out, 0x0001, EK_ATTRIBUTES, &EK_POLICY);
                // AES-128-CFB, scheme NULL, 2048 bits, default exponent.
                for v in [0x0006, 128, 0x0043, 0x0010, 2048] {
                    put16(&mut out, v);
                }
                put32(&mut out, 0);
                put2b(&mut out, modulus);
            }
            Self::Ecc { point, .. } => {
                header(&mut out, 0x0023, EK_ATTRIBUTES, &EK_POLICY);
                // AES-128-CFB, scheme NULL, NIST P-256, KDF NULL.
                for v in [0x0006, 128, 0x0043, 0x0010, 0x0003, 0x0010] {
                    put16(&mut out, v);
                }
                put_point(&mut out, point);
            }
        }
        out
    }

    /// The public key as the EK certificate's SubjectPublicKeyInfo carries it: an RSAPublicKey
    /// (PKCS#1) or an uncompressed point.
    pub fn certificate_key(&self) -> Vec<u8> {
        match self {
            Self::Rsa { modulus, .. } => rsa_public_key_der(modulus),
            Self::Ecc { point, .. } => point.clone(),
        }
    }

    /// The seed of a credential: RSA-OAEP decryption with label "IDENTITY", or ECDH with the
    /// ephemeral point and KDFe.
    fn seed(&self, encrypted_secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        match self {
            Self::Rsa { key, .. } => {
                let mut out = vec![0u8; key.min_output_size()];
                let seed = key
                    .decrypt(
                        &OAEP_SHA256_MGF1SHA256,
                        encrypted_secret,
                        &mut out,
                        Some(b"IDENTITY\0"),
                    )
                    .map_err(|_| TpmError::Activation("the seed does not decrypt"))?;
                Ok(seed.to_vec())
            }
            Self::Ecc { key, point } => {
                let mut r = Reader(encrypted_secret);
                let ex = r.tpm2b().ok_or(TpmError::Activation("ephemeral point"))?;
                let ey = r.tpm2b().ok_or(TpmError::Activation("ephemeral point"))?;
                let mut eph = vec![0x04];
                eph.extend_from_slice(ex);
                eph.extend_from_slice(ey);
                let z = agreement::agree(
                    key,
                    UnparsedPublicKey::new(&agreement::ECDH_P256, &eph),
                    TpmError::Activation("the ephemeral point is not on the curve"),
                    |z| Ok(z.to_vec()),
                )?;
                let ek_x = point.get(1..33).ok_or(TpmError::Key("EK point"))?;
                Ok(kdfe(HashAlg::Sha256, &z, "IDENTITY", ex, ek_x, 256))
            }
        }
    }

    /// TPM2_ActivateCredential: the secret of a credential challenge made for this EK and the
    /// AK named `ak_name`. `id_object` and `encrypted_secret` are the TPM2Bs' contents, as the
    /// wire carries them.
    pub fn activate(
        &self,
        ak_name: &[u8],
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let seed = self.seed(encrypted_secret)?;
        let mut r = Reader(id_object);
        let outer_hmac = r.tpm2b().ok_or(TpmError::Activation("credential blob"))?;
        let enc_identity = r.0;
        let hmac_key = kdfa(HashAlg::Sha256, &seed, "INTEGRITY", &[], &[], 256);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &hmac_key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(enc_identity);
        ctx.update(ak_name);
        if constant_time::verify_slices_are_equal(ctx.sign().as_ref(), outer_hmac).is_err() {
            return Err(TpmError::Activation(
                "the integrity HMAC does not match: not for this EK and AK",
            ));
        }
        let sym_key = kdfa(HashAlg::Sha256, &seed, "STORAGE", ak_name, &[], 128);
        let cipher = UnboundCipherKey::new(&AES_128, &sym_key)
            .and_then(DecryptingKey::cfb128)
            .map_err(|_| TpmError::Activation("AES key"))?;
        let mut plain = enc_identity.to_vec();
        let context = DecryptionContext::Iv128(FixedLength::from([0u8; 16]));
        let plain = cipher
            .decrypt(&mut plain, context)
            .map_err(|_| TpmError::Activation("AES-CFB"))?;
        let mut r = Reader(plain);
        let secret = r.tpm2b().ok_or(TpmError::Activation("credential digest"))?;
        Ok(secret.to_vec())
    }
}

impl Ak {
    /// A new ECC P-256 AK.
    pub fn ecc() -> Result<Self, TpmError> {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| TpmError::Key("ECDSA"))?;
        Ok(Self::Ecc { key })
    }

    /// An RSA-2048 AK from a PKCS#8 key pair.
    pub fn rsa(pkcs8: &[u8]) -> Result<Self, TpmError> {
        let key = rsa::KeyPair::from_pkcs8(pkcs8).map_err(|_| TpmError::Key("RSA PKCS#8"))?;
        let modulus = rsa_modulus(&key);
        Ok(Self::Rsa { key, modulus })
    }

    /// The AK's TPMT_PUBLIC: a restricted signing key, SHA-256.
    pub fn tpmt_public(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(300);
        match self {
            Self::Rsa { modulus, .. } => {
                header(&mut out, 0x0001, AK_ATTRIBUTES, &[]);
                // Symmetric NULL, RSASSA with SHA-256, 2048 bits, default exponent.
                for v in [0x0010, 0x0014, SHA256, 2048] {
                    put16(&mut out, v);
                }
                put32(&mut out, 0);
                put2b(&mut out, modulus);
            }
            Self::Ecc { key } => {
                header(&mut out, 0x0023, AK_ATTRIBUTES, &[]);
                // Symmetric NULL, ECDSA with SHA-256, NIST P-256, KDF NULL.
                for v in [0x0010, 0x0018, SHA256, 0x0003, 0x0010] {
                    put16(&mut out, v);
                }
                put_point(&mut out, key.public_key().as_ref());
            }
        }
        out
    }

    /// TPMT_SIGNATURE over `message` (a TPMS_ATTEST).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TpmError> {
        let rng = SystemRandom::new();
        let mut out = Vec::with_capacity(262);
        match self {
            Self::Rsa { key, .. } => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| TpmError::Sign)?;
                put16(&mut out, 0x0014);
                put16(&mut out, SHA256);
                put2b(&mut out, &sig);
            }
            Self::Ecc { key } => {
                let sig = key.sign(&rng, message).map_err(|_| TpmError::Sign)?;
                let (r, s) = sig.as_ref().split_at(32);
                put16(&mut out, 0x0018);
                put16(&mut out, SHA256);
                put2b(&mut out, r);
                put2b(&mut out, s);
            }
        }
        Ok(out)
    }
}

/// A TPM2B_PUBLIC around a TPMT_PUBLIC.
pub fn tpm2b_public(tpmt: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tpmt.len() + 2);
    put2b(&mut out, tpmt);
    out
}

/// The Name of an object: its name algorithm, then the digest of its TPMT_PUBLIC.
pub fn name(tpmt: &[u8]) -> Vec<u8> {
    let mut out = SHA256.to_be_bytes().to_vec();
    out.extend_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tpmt).as_ref());
    out
}

/// The TPM's clock and counters in a quote.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub clock_ms: u64,
    pub reset_count: u32,
    pub restart_count: u32,
}

/// TPMS_ATTEST of TPM2_Quote: `signer` the AK's Name, `extra_data` the qualifying data,
/// `selection` (hash algorithm, PCR bitmap) per bank, `pcr_values` the selected values in
/// order (their SHA-256 is the quoted digest).
pub fn quote_attest(
    signer: &[u8],
    extra_data: &[u8],
    clock: Clock,
    selection: &[(u16, u32)],
    pcr_values: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    put32(&mut out, 0xff54_4347);
    put16(&mut out, 0x8018);
    put2b(&mut out, signer);
    put2b(&mut out, extra_data);
    out.extend_from_slice(&clock.clock_ms.to_be_bytes());
    put32(&mut out, clock.reset_count);
    put32(&mut out, clock.restart_count);
    out.push(1); // safe
    out.extend_from_slice(&0x2023_0101_0000_0000u64.to_be_bytes()); // firmwareVersion
    put32(&mut out, u32::try_from(selection.len()).unwrap_or(0));
    for &(alg, bitmap) in selection {
        put16(&mut out, alg);
        out.push(3);
        out.extend_from_slice(&bitmap.to_le_bytes()[..3]);
    }
    put2b(
        &mut out,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pcr_values).as_ref(),
    );
    out
}

/// RSAPublicKey (PKCS#1) DER of a modulus with exponent 65537.
fn rsa_public_key_der(modulus: &[u8]) -> Vec<u8> {
    let mut n = Vec::with_capacity(modulus.len() + 1);
    if modulus.first().is_some_and(|b| b & 0x80 != 0) {
        n.push(0);
    }
    n.extend_from_slice(modulus);
    let mut body = der_tlv(0x02, &n);
    body.extend(der_tlv(0x02, &[0x01, 0x00, 0x01]));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else if len < 0x100 {
        out.extend([0x81, u8::try_from(len).unwrap_or(0)]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// The start of a TPMT_PUBLIC: type, name algorithm SHA-256, attributes, policy.
fn header(out: &mut Vec<u8>, kind: u16, attributes: u32, policy: &[u8]) {
    put16(out, kind);
    put16(out, SHA256);
    put32(out, attributes);
    put2b(out, policy);
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put2b(out: &mut Vec<u8>, bytes: &[u8]) {
    put16(out, u16::try_from(bytes.len()).unwrap_or(0));
    out.extend_from_slice(bytes);
}

/// TPMS_ECC_POINT of an uncompressed P-256 point (`04 || x || y`).
fn put_point(out: &mut Vec<u8>, point: &[u8]) {
    put2b(out, point.get(1..33).unwrap_or_default());
    put2b(out, point.get(33..65).unwrap_or_default());
}

/// Reads TPM2B fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn tpm2b(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (value, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_attest::tpm::Public;

    fn made(ek: &Ek, ak: &Ak, secret: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let ek_public = Public::from_tpmt(&ek.tpmt_public()).unwrap();
        let ak_public = Public::from_tpmt(&ak.tpmt_public()).unwrap();
        let made = vouch_attest::credential::make_credential(
            &ek_public,
            &ak_public,
            secret,
            &SystemRandom::new(),
        )
        .unwrap();
        // The wire carries the TPM2Bs' contents.
        (
            made.id_object[2..].to_vec(),
            made.encrypted_secret[2..].to_vec(),
        )
    }

    #[test]
    fn activation_opens_what_the_verifier_made() {
        let rsa = generate_rsa().unwrap();
        for ek in [Ek::ecc().unwrap(), Ek::rsa(&rsa).unwrap()] {
            for ak in [Ak::ecc().unwrap(), Ak::rsa(&rsa).unwrap()] {
                let ak_public = Public::from_tpmt(&ak.tpmt_public()).unwrap();
                vouch_attest::credential::check_ak(&ak_public).unwrap();
                assert_eq!(ak_public.name(), name(&ak.tpmt_public()));
                let (id, secret) = made(&ek, &ak, b"0123456789abcdef0123456789abcdef");
                let got = ek.activate(&name(&ak.tpmt_public()), &id, &secret).unwrap();
                assert_eq!(got, b"0123456789abcdef0123456789abcdef");
                // Another AK's name: the HMAC refuses.
                let other = Ak::ecc().unwrap();
                assert!(
                    ek.activate(&name(&other.tpmt_public()), &id, &secret)
                        .is_err()
                );
            }
        }
    }

    #[test]
    fn quotes_verify_with_the_ak() {
        let rsa = generate_rsa().unwrap();
        for ak in [Ak::ecc().unwrap(), Ak::rsa(&rsa).unwrap()] {
            let public = Public::from_tpmt(&ak.tpmt_public()).unwrap();
            let key = vouch_attest::quote::AttestationKey::from_public(public).unwrap();
            let attest = quote_attest(
                &name(&ak.tpmt_public()),
                b"nonce",
                Clock {
                    clock_ms: 5,
                    reset_count: 1,
                    restart_count: 0,
                },
                &[(SHA256, 0b11)],
                &[0u8; 64],
            );
            let parsed = vouch_attest::tpm::Attest::from_bytes(&attest).unwrap();
            assert_eq!(parsed.extra_data, b"nonce");
            let sig = ak.sign(&attest).unwrap();
            let sig = vouch_attest::tpm::Signature::from_bytes(&sig).unwrap();
            key.verify_signature(&attest, &sig).unwrap();
        }
    }
}
