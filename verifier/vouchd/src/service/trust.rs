//! The clusters' trust configuration as the agent link checks against it — the cluster, its
//! EK trust (vouch-attest's [`EkTrust`], with and without an EK certificate) and its software
//! versions — kept in memory per cluster and read again from the store when the
//! configuration generation moved ([`super::generation`]: at once on SQLite, within its
//! `CHECK_PERIOD` on replicas over PostgreSQL). Every attestation used to read all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vouch_attest::ek::{EkEvidence, EkTrust, TrustedEk};
use vouch_attest::tpm::Public;

use super::AppState;
use crate::store::{self, Cluster, SoftwareVersionRecord, StoreResult};

/// One cluster's trust configuration as of one configuration generation.
#[derive(Debug)]
pub struct ClusterTrust {
    generation: i64,
    pub cluster: Cluster,
    /// For hosts that present an EK certificate (modes 1 and 2); `Err` when a listed EK does
    /// not parse (see [`crate::ek::cluster_trust`]).
    pub with_certificate: Result<Option<EkTrust>, String>,
    /// For hosts without one (mode 3).
    pub without_certificate: Result<Option<EkTrust>, String>,
    pub versions: Vec<SoftwareVersionRecord>,
    /// EKs with a certificate this configuration trusted, by SHA-256 of the EK hash and the
    /// certificate: vouch-attest's decision, reused until the chain's first certificate
    /// expires (at most [`MAX_VERIFIED_EKS`], then forgotten all at once). It goes with the
    /// configuration when the generation moves.
    verified: Mutex<HashMap<[u8; 32], Arc<TrustedEk>>>,
}

/// The most EK decisions one cluster's configuration keeps.
pub const MAX_VERIFIED_EKS: usize = 250_000;

impl ClusterTrust {
    /// Whether the EK of `ek_hash` (its public area `ek`) with `certificate` passes `trust`
    /// (this configuration's, [`Self::ek_trust`]) at `now`: vouch-attest's
    /// [`verify_ek`](vouch_attest::ek::verify_ek), or its earlier decision on the same EK and
    /// certificate while the chain is valid.
    pub fn verify_ek(
        &self,
        trust: &EkTrust,
        ek_hash: &str,
        ek: &Public,
        certificate: Option<&[u8]>,
        now: i64,
    ) -> Result<Arc<TrustedEk>, vouch_attest::ek::EkError> {
        let evidence = EkEvidence {
            public: Some(ek),
            certificate,
            intermediates: &[],
        };
        let Some(der) = certificate else {
            // Mode 3: a look-up in the listed keys, nothing worth keeping.
            return vouch_attest::ek::verify_ek(trust, &evidence, now).map(Arc::new);
        };
        let mut key_input = Vec::with_capacity(ek_hash.len().saturating_add(der.len()));
        key_input.extend_from_slice(ek_hash.as_bytes());
        key_input.extend_from_slice(der);
        let key = crate::sha256(&key_input);
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(&key).map(Arc::clone))
            .filter(|t| t.public() == Some(ek) && t.valid_until().is_some_and(|u| now <= u));
        if let Some(trusted) = known {
            return Ok(trusted);
        }
        let trusted = Arc::new(vouch_attest::ek::verify_ek(trust, &evidence, now)?);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_VERIFIED_EKS {
                verified.clear();
            }
            verified.insert(key, Arc::clone(&trusted));
        }
        Ok(trusted)
    }

    /// The EK trust for a host that did or did not present a certificate.
    pub fn ek_trust(&self, has_certificate: bool) -> Result<Option<&EkTrust>, &str> {
        let trust = if has_certificate {
            &self.with_certificate
        } else {
            &self.without_certificate
        };
        trust.as_ref().map(Option::as_ref).map_err(String::as_str)
    }
}

/// The clusters' trust configurations in use, by cluster name.
#[derive(Debug, Default)]
pub struct TrustCache {
    clusters: Mutex<HashMap<String, Arc<ClusterTrust>>>,
}

impl TrustCache {
    /// The trust configuration of cluster `name` as it is now; `None` when there is no such
    /// cluster.
    pub async fn get(
        &self,
        state: &AppState,
        name: &str,
    ) -> StoreResult<Option<Arc<ClusterTrust>>> {
        // The generation is read before the configuration: a change in between makes what is
        // read now stale at once, never the reverse.
        let generation = state.config_generation.current(&state.store).await?;
        let known = self
            .clusters
            .lock()
            .ok()
            .and_then(|c| c.get(name).map(Arc::clone))
            .filter(|t| t.generation == generation);
        if let Some(trust) = known {
            return Ok(Some(trust));
        }
        let owned = name.to_owned();
        let read = store::run(&state.store, move |s| {
            let Some(cluster) = s.get_cluster(&owned)? else {
                return Ok(None);
            };
            let cas = s.list_ca_certs(&owned)?;
            let eks = s.list_cluster_eks(&owned)?;
            let versions = s.list_software_versions(&owned)?;
            Ok(Some((cluster, cas, eks, versions)))
        })
        .await?;
        let Some((cluster, cas, eks, versions)) = read else {
            return Ok(None);
        };
        let trust = Arc::new(ClusterTrust {
            generation,
            cluster,
            with_certificate: crate::ek::cluster_trust(&cas, &eks, true),
            without_certificate: crate::ek::cluster_trust(&cas, &eks, false),
            versions,
            verified: Mutex::default(),
        });
        if let Ok(mut clusters) = self.clusters.lock() {
            // Configurations of an older generation are of no more use (and a deleted
            // cluster's goes with them).
            clusters.retain(|_, t| t.generation == generation);
            clusters.insert(name.to_owned(), Arc::clone(&trust));
        }
        Ok(Some(trust))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use vouch_attest::ek::EkKey;

    fn data(path: &str) -> Vec<u8> {
        let p = format!("{}/../attest/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// A decision on an EK certificate is reused only while its chain is valid.
    #[test]
    fn an_ek_decision_is_kept_only_while_the_chain_is_valid() {
        let cas: Vec<Vec<u8>> = ["ek/swtpm-localca-root.pem", "ek/swtpm-localca-issuer.pem"]
            .iter()
            .map(|pem| CertificateDer::from_pem_slice(&data(pem)).unwrap().to_vec())
            .collect();
        let trust = ClusterTrust {
            generation: 1,
            cluster: Cluster {
                name: "prod".into(),
                pcrs: vec![0],
                bank: "sha256".into(),
                created_at: 0,
                disabled_at: None,
                config_generation: 0,
            },
            with_certificate: Ok(Some(EkTrust::Manufacturers { cas })),
            without_certificate: Ok(None),
            versions: Vec::new(),
            verified: Mutex::default(),
        };
        let ek = Public::from_tpm2b(&data("ek/ek-rsa2048.pub")).unwrap();
        let ek_hash = crate::ek::ek_hash(&EkKey::from_public(&ek));
        let cert = data("ek/ek-rsa2048.crt");
        let mode = trust.ek_trust(true).unwrap().unwrap();
        let now = crate::now();
        let first = trust
            .verify_ek(mode, &ek_hash, &ek, Some(&cert), now)
            .unwrap();
        let until = first.valid_until().unwrap();
        assert!(until >= now);
        // Kept: the same decision.
        let again = trust
            .verify_ek(mode, &ek_hash, &ek, Some(&cert), now)
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Past the chain's validity, decided again: expired.
        let late = trust.verify_ek(mode, &ek_hash, &ek, Some(&cert), until + 1);
        assert!(late.is_err(), "{late:?}");
        // Another EK public area with this certificate is decided on its own (a mismatch).
        let other = Public::from_tpm2b(&data("ek/ek-ecc256-not-the-certified-key.pub")).unwrap();
        let mismatch = trust.verify_ek(mode, &ek_hash, &other, Some(&cert), now);
        assert!(mismatch.is_err(), "{mismatch:?}");
    }
}
