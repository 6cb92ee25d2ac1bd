//! The verifier side of TPM2_MakeCredential: protect a secret so that only
//! the TPM holding the EK, and only for the AK with the given Name, can
//! recover it with TPM2_ActivateCredential (TPM 2.0 Part 1, "Credential
//! Protection"; Part 4 CryptSecretEncrypt).
//!
//! seed  = RSA-OAEP(EK, seed, label "IDENTITY\0")            (RSA EK)
//!       | KDFe(nameAlg, ECDH(eph, EK), "IDENTITY", eph.x, EK.x)  (ECC EK)
//! symKey = KDFa(nameAlg, seed, "STORAGE", AK Name, -, EK sym key bits)
//! encIdentity = AES-CFB(symKey, IV 0, TPM2B_DIGEST(credential))
//! hmacKey = KDFa(nameAlg, seed, "INTEGRITY", -, -, digest bits)
//! outerHMAC = HMAC(nameAlg, hmacKey, encIdentity ‖ AK Name)
//! TPM2B_ID_OBJECT = size ‖ TPM2B_DIGEST(outerHMAC) ‖ encIdentity

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::SecureRandom;
use num_bigint::BigUint;

use crate::alg::HashAlg;
use crate::tpm::{EccCurve, Public, PublicKey, alg_id, attr};

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The AK's attributes do not make it an attestation key.
    #[error("AK refused: {0}")]
    Ak(String),
    /// The EK cannot protect a credential.
    #[error("EK unusable for MakeCredential: {0}")]
    Ek(String),
    /// The credential is empty or longer than the EK's name digest.
    #[error("credential must be 1 to {max} bytes, not {len}")]
    CredentialSize {
        /// Given length.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A cryptographic primitive failed (bad key, RNG failure).
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// The result of MakeCredential, in the TPM's wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT, size prefix included.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET, size prefix included.
    pub encrypted_secret: Vec<u8>,
}

/// Checks that `ak` is an attestation key (restricted, sign, fixedTPM,
/// fixedParent, sensitiveDataOrigin, not decrypt) and returns its Name.
pub fn check_ak(ak: &Public) -> Result<Vec<u8>, CredentialError> {
    let need = [
        (attr::RESTRICTED, "restricted"),
        (attr::SIGN, "sign"),
        (attr::FIXED_TPM, "fixedTPM"),
        (attr::FIXED_PARENT, "fixedParent"),
        (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    ];
    let missing: Vec<&str> = need
        .iter()
        .filter(|(bit, _)| !ak.has(*bit))
        .map(|(_, n)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(CredentialError::Ak(format!(
            "attributes {} are not set",
            missing.join(", ")
        )));
    }
    if ak.has(attr::DECRYPT) {
        return Err(CredentialError::Ak(
            "the decrypt attribute is set; an AK must only sign".into(),
        ));
    }
    Ok(ak.name())
}

/// KDFa (SP 800-108 counter mode with HMAC), as the TPM computes it; the
/// label gets its terminating zero; odd bit counts mask the first byte.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let Some(alg) = hmac_alg(hash) else {
        return Vec::new();
    };
    let k = hmac::Key::new(alg, key);
    let bytes = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter = counter.wrapping_add(1);
    }
    finish_bits(out, bytes, bits)
}

/// KDFe (SP 800-56A concatenation KDF), as the TPM computes it.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let Some(d) = hash.hash(&[
            &counter.to_be_bytes(),
            z,
            label.as_bytes(),
            &[0],
            party_u,
            party_v,
        ]) else {
            return Vec::new();
        };
        out.extend_from_slice(&d);
        counter = counter.wrapping_add(1);
    }
    finish_bits(out, bytes, bits)
}

fn finish_bits(mut out: Vec<u8>, bytes: usize, bits: u32) -> Vec<u8> {
    out.truncate(bytes);
    let extra = bits % 8;
    if extra != 0
        && let Some(first) = out.first_mut()
    {
        *first &= (1u8 << extra) - 1;
    }
    out
}

fn hmac_alg(hash: HashAlg) -> Option<hmac::Algorithm> {
    match hash {
        HashAlg::Sha1 => Some(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
        HashAlg::Sha256 => Some(hmac::HMAC_SHA256),
        HashAlg::Sha384 => Some(hmac::HMAC_SHA384),
        HashAlg::Sha512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

fn mgf1(hash: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.size());
    let mut counter: u32 = 0;
    while out.len() < len {
        if let Some(d) = hash.hash(&[seed, &counter.to_be_bytes()]) {
            out.extend_from_slice(&d);
        } else {
            break;
        }
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// RSAES-OAEP encryption with an explicit OAEP seed (`oaep_seed`, hash
/// length), so known answers can be checked; the label is used as given.
pub fn rsa_oaep_encrypt(
    modulus: &[u8],
    exponent: u32,
    hash: HashAlg,
    label: &[u8],
    message: &[u8],
    oaep_seed: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let n = BigUint::from_bytes_be(modulus);
    let k = usize::try_from(n.bits().div_ceil(8)).unwrap_or(0);
    let h = hash.size();
    if oaep_seed.len() != h {
        return Err(CredentialError::Crypto(
            "OAEP seed length is not the hash length",
        ));
    }
    if k < 2 * h + 2 || message.len() > k - 2 * h - 2 {
        return Err(CredentialError::Crypto(
            "message too long for RSA-OAEP with this key",
        ));
    }
    let lhash = hash.hash(&[label]).ok_or(CredentialError::Crypto("hash"))?;
    let mut db = Vec::with_capacity(k - h - 1);
    db.extend_from_slice(&lhash);
    db.resize(k - h - 1 - message.len() - 1, 0);
    db.push(1);
    db.extend_from_slice(message);
    let db_mask = mgf1(hash, oaep_seed, db.len());
    let masked_db: Vec<u8> = db.iter().zip(&db_mask).map(|(a, b)| a ^ b).collect();
    let seed_mask = mgf1(hash, &masked_db, h);
    let masked_seed: Vec<u8> = oaep_seed
        .iter()
        .zip(&seed_mask)
        .map(|(a, b)| a ^ b)
        .collect();
    let mut em = Vec::with_capacity(k);
    em.push(0);
    em.extend_from_slice(&masked_seed);
    em.extend_from_slice(&masked_db);
    let c = BigUint::from_bytes_be(&em).modpow(&BigUint::from(exponent), &n);
    let c = c.to_bytes_be();
    let mut out = vec![0u8; k.saturating_sub(c.len())];
    out.extend_from_slice(&c);
    Ok(out)
}

fn ecdh_alg(curve: EccCurve) -> &'static agreement::Algorithm {
    match curve {
        EccCurve::P256 => &agreement::ECDH_P256,
        EccCurve::P384 => &agreement::ECDH_P384,
        EccCurve::P521 => &agreement::ECDH_P521,
    }
}

/// The secret-sharing step ("labeled encapsulation") for an RSA key: returns
/// the ciphertext of `seed` (raw, no size prefix).
pub fn encapsulate_rsa(
    key: &Public,
    label: &str,
    seed: &[u8],
    oaep_seed: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let PublicKey::Rsa {
        exponent,
        modulus,
        scheme,
        ..
    } = &key.key
    else {
        return Err(CredentialError::Ek("not an RSA key".into()));
    };
    let hash = match scheme {
        Some(s) if s.alg == alg_id::OAEP => s.hash.unwrap_or(key.name_alg),
        None => key.name_alg,
        Some(s) => {
            return Err(CredentialError::Ek(format!(
                "RSA scheme {:#06x} cannot encrypt a seed; only OAEP or none",
                s.alg
            )));
        }
    };
    let mut l = label.as_bytes().to_vec();
    l.push(0);
    rsa_oaep_encrypt(modulus, *exponent, hash, &l, seed, oaep_seed)
}

/// The secret-sharing step for an ECC key with an explicit ephemeral private
/// key: returns (seed, TPMS_ECC_POINT of the ephemeral public key).
pub fn encapsulate_ecc(
    key: &Public,
    label: &str,
    ephemeral_private: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let PublicKey::Ecc { curve, x, .. } = &key.key else {
        return Err(CredentialError::Ek("not an ECC key".into()));
    };
    let alg = ecdh_alg(*curve);
    let eph = PrivateKey::from_private_key(alg, ephemeral_private)
        .map_err(|_| CredentialError::Crypto("invalid ephemeral private key"))?;
    let eph_pub = eph
        .compute_public_key()
        .map_err(|_| CredentialError::Crypto("ephemeral public key"))?;
    let n = curve.size();
    let p = eph_pub.as_ref();
    let ex = p.get(1..=n).ok_or(CredentialError::Crypto("point"))?;
    let ey = p.get(1 + n..).ok_or(CredentialError::Crypto("point"))?;
    let point = key.ecc_point().ok_or(CredentialError::Crypto("point"))?;
    let z = agreement::agree(
        &eph,
        UnparsedPublicKey::new(alg, &point),
        CredentialError::Ek("the EK's point is not on its curve".into()),
        |z| Ok(z.to_vec()),
    )?;
    let bits = u32::try_from(key.name_alg.size() * 8).unwrap_or(0);
    let seed = kdfe(key.name_alg, &z, label, ex, x, bits);
    let mut out = Vec::with_capacity(4 + 2 * n);
    for c in [ex, ey] {
        out.extend_from_slice(&u16::try_from(c.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(c);
    }
    Ok((seed, out))
}

fn tpm2b(b: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(b.len()).unwrap_or(0).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// The EK's symmetric key size for credential protection (AES-CFB only).
fn ek_sym_bits(ek: &Public) -> Result<u32, CredentialError> {
    match ek.symmetric {
        Some(s)
            if s.alg == alg_id::AES && s.mode == alg_id::CFB && matches!(s.key_bits, 128 | 256) =>
        {
            Ok(u32::from(s.key_bits))
        }
        Some(s) => Err(CredentialError::Ek(format!(
            "symmetric algorithm {:#06x}/{} bits/mode {:#06x} is not AES-128/256-CFB",
            s.alg, s.key_bits, s.mode
        ))),
        None => Err(CredentialError::Ek(
            "it has no symmetric algorithm, so it is not a storage key".into(),
        )),
    }
}

/// MakeCredential with the seed material given: `seed` (RSA: the secret
/// seed, nameAlg length; ECC: the ephemeral private key) and `oaep_seed`
/// (RSA only). Deterministic, for known-answer tests and fuzzing.
pub fn make_credential_with(
    ek: &Public,
    ak_name: &[u8],
    credential: &[u8],
    seed_material: &[u8],
    oaep_seed: &[u8],
) -> Result<MadeCredential, CredentialError> {
    if !ek.has(attr::RESTRICTED | attr::DECRYPT) || ek.has(attr::SIGN) {
        return Err(CredentialError::Ek(
            "it is not a restricted decryption (storage) key".into(),
        ));
    }
    let hash = ek.name_alg;
    let max = hash.size();
    if credential.is_empty() || credential.len() > max {
        return Err(CredentialError::CredentialSize {
            len: credential.len(),
            max,
        });
    }
    let sym_bits = ek_sym_bits(ek)?;
    let (seed, secret) = match &ek.key {
        PublicKey::Rsa { .. } => (
            seed_material.to_vec(),
            encapsulate_rsa(ek, "IDENTITY", seed_material, oaep_seed)?,
        ),
        PublicKey::Ecc { .. } => encapsulate_ecc(ek, "IDENTITY", seed_material)?,
    };
    let sym_key = kdfa(hash, &seed, "STORAGE", ak_name, &[], sym_bits);
    let mut enc_identity = tpm2b(credential);
    let cipher_alg = if sym_bits == 128 { &AES_128 } else { &AES_256 };
    let key = UnboundCipherKey::new(cipher_alg, &sym_key)
        .map_err(|_| CredentialError::Crypto("AES key"))?;
    let enc = EncryptingKey::cfb128(key).map_err(|_| CredentialError::Crypto("AES-CFB"))?;
    enc.less_safe_encrypt(
        &mut enc_identity,
        EncryptionContext::Iv128(FixedLength::from([0u8; 16])),
    )
    .map_err(|_| CredentialError::Crypto("AES-CFB encrypt"))?;
    let bits = u32::try_from(hash.size() * 8).unwrap_or(0);
    let hmac_key = kdfa(hash, &seed, "INTEGRITY", &[], &[], bits);
    let alg = hmac_alg(hash).ok_or(CredentialError::Crypto("HMAC hash"))?;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(alg, &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer = ctx.sign();
    let mut id = tpm2b(outer.as_ref());
    id.extend_from_slice(&enc_identity);
    Ok(MadeCredential {
        id_object: tpm2b(&id),
        encrypted_secret: tpm2b(&secret),
    })
}

/// MakeCredential: protects `credential` for the AK `ak` under the EK `ek`.
/// The AK's attributes are checked first; randomness comes from `rng`.
pub fn make_credential(
    ek: &Public,
    ak: &Public,
    credential: &[u8],
    rng: &dyn SecureRandom,
) -> Result<MadeCredential, CredentialError> {
    let name = check_ak(ak)?;
    let h = ek.name_alg.size();
    let mut oaep_seed = vec![0u8; h];
    let mut seed = match &ek.key {
        PublicKey::Rsa { .. } => vec![0u8; h],
        PublicKey::Ecc { curve, .. } => vec![0u8; curve.size()],
    };
    for _ in 0..8 {
        rng.fill(&mut seed)
            .map_err(|_| CredentialError::Crypto("random number generator"))?;
        rng.fill(&mut oaep_seed)
            .map_err(|_| CredentialError::Crypto("random number generator"))?;
        if let PublicKey::Ecc {
            curve: EccCurve::P521,
            ..
        } = &ek.key
            && let Some(first) = seed.first_mut()
        {
            *first &= 1;
        }
        match make_credential_with(ek, &name, credential, &seed, &oaep_seed) {
            // A random scalar out of range: draw again.
            Err(CredentialError::Crypto("invalid ephemeral private key")) => continue,
            other => return other,
        }
    }
    Err(CredentialError::Crypto(
        "could not draw a valid ephemeral key",
    ))
}
