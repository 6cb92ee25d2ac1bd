//! EK identity and a cluster's trust configuration as vouch-attest's [`EkTrust`].
//!
//! A host is known by its **EK hash**: SHA-256 over a canonical encoding of the EK public key
//! (not of a certificate or a TPM public area), so the same TPM has the same hash whether it is
//! named by its EK certificate, its SubjectPublicKeyInfo or its TPM2B_PUBLIC:
//! - RSA: `"rsa\0" ‖ u32be(len n) ‖ n ‖ u32be(len e) ‖ e`, big-endian without leading zeros;
//! - ECC: `"ecc\0" ‖ u16be(TPM_ECC_CURVE) ‖ 04 ‖ X ‖ Y`.

use vouch_attest::ek::{EkKey, EkTrust};

use crate::store::{CaCert, ClusterEk, EkEntryKind};

/// The EK hash, lowercase hex.
pub fn ek_hash(key: &EkKey) -> String {
    let mut buf = Vec::new();
    match key {
        EkKey::Rsa { n, e } => {
            buf.extend_from_slice(b"rsa\0");
            for part in [n, e] {
                buf.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                buf.extend_from_slice(part);
            }
        }
        EkKey::Ecc { curve, point } => {
            buf.extend_from_slice(b"ecc\0");
            buf.extend_from_slice(&curve.id().to_be_bytes());
            buf.extend_from_slice(point);
        }
    }
    crate::hex(&crate::sha256(&buf))
}

/// The key of a listed EK entry.
pub fn entry_key(entry: &ClusterEk) -> Result<EkKey, String> {
    match entry.kind {
        EkEntryKind::Certificate => EkKey::from_certificate(&entry.der),
        EkEntryKind::PublicKey | EkEntryKind::BarePublicKey => EkKey::from_spki_der(&entry.der),
    }
    .map_err(|e| e.to_string())
}

/// The trust a cluster places in a host that did (`has_certificate`) or did not present an EK
/// certificate:
/// - with a certificate: mode 2 (CAs and the individually listed certificates and public
///   keys) when the cluster lists any, otherwise mode 1 (CAs only);
/// - without: mode 3 (the bare public keys the cluster lists).
///
/// `None` when the cluster trusts nothing for such a host.
pub fn cluster_trust(
    cas: &[CaCert],
    eks: &[ClusterEk],
    has_certificate: bool,
) -> Result<Option<EkTrust>, String> {
    if has_certificate {
        if cas.is_empty() {
            return Ok(None);
        }
        let cas: Vec<Vec<u8>> = cas.iter().map(|c| c.der.clone()).collect();
        let allowed = eks
            .iter()
            .filter(|e| e.kind != EkEntryKind::BarePublicKey)
            .map(entry_key)
            .collect::<Result<Vec<_>, _>>()?;
        if allowed.is_empty() {
            Ok(Some(EkTrust::Manufacturers { cas }))
        } else {
            Ok(Some(EkTrust::ManufacturersAndAllowList { cas, allowed }))
        }
    } else {
        let bare = eks
            .iter()
            .filter(|e| e.kind == EkEntryKind::BarePublicKey)
            .map(entry_key)
            .collect::<Result<Vec<_>, _>>()?;
        if bare.is_empty() {
            Ok(None)
        } else {
            Ok(Some(EkTrust::PublicKeys(bare)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_attest::tpm::EccCurve;

    #[test]
    fn ek_hash_is_canonical_and_distinguishes_keys() {
        let a = EkKey::Rsa {
            n: vec![0xc0, 0xff, 0xee],
            e: vec![1, 0, 1],
        };
        let b = EkKey::Rsa {
            n: vec![0xc0, 0xff, 0xef],
            e: vec![1, 0, 1],
        };
        let c = EkKey::Ecc {
            curve: EccCurve::P256,
            point: vec![4; 65],
        };
        assert_eq!(ek_hash(&a), ek_hash(&a.clone()));
        assert_ne!(ek_hash(&a), ek_hash(&b));
        assert_ne!(ek_hash(&a), ek_hash(&c));
        assert_eq!(ek_hash(&a).len(), 64);
    }

    #[test]
    fn an_empty_cluster_trusts_nothing() {
        assert!(cluster_trust(&[], &[], true).unwrap().is_none());
        assert!(cluster_trust(&[], &[], false).unwrap().is_none());
    }

    #[test]
    fn modes_follow_the_configuration() {
        let ca = CaCert {
            id: "x".into(),
            cluster: "c".into(),
            subject: "CA".into(),
            der: vec![1, 2, 3],
            created_at: 0,
        };
        assert!(matches!(
            cluster_trust(std::slice::from_ref(&ca), &[], true).unwrap(),
            Some(EkTrust::Manufacturers { .. })
        ));
        // Without a certificate, CAs alone trust nothing (mode 3 needs listed bare keys).
        assert!(cluster_trust(&[ca], &[], false).unwrap().is_none());
    }
}
