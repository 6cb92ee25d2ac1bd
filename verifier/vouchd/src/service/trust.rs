//! The clusters' trust configuration as the agent link checks against it — the cluster, its
//! EK trust (vouch-attest's [`EkTrust`], with and without an EK certificate) and its software
//! versions — kept in memory per cluster and read again from the store when the
//! configuration generation moved ([`super::generation`]: at once on SQLite, within its
//! `CHECK_PERIOD` on replicas over PostgreSQL). Every attestation used to read all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vouch_attest::ek::EkTrust;

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
}

impl ClusterTrust {
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
