//! `vouch cluster export` and `vouch cluster import`: one cluster's trust configuration as a
//! JSON file, so that a lab's configuration can be promoted to production. It holds what
//! decides trust — the PCRs and bank, whether the cluster is enabled, the TPM CA certificates,
//! the listed EKs, the accepted software versions and the key provider's name — and nothing of
//! the hosts or their history (hosts are added with a management server's signature).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vouch_api::{
    CaCert, Cluster, ClusterChange, ClusterEk, ClusterKeyProvider, EkEntryKind, NewCaCerts,
    NewCluster, NewClusterEk, SetClusterKeyProvider, SoftwareVersionBody, SoftwareVersionRecord,
};

use crate::Failure;
use crate::client::{Api, seg};

/// The format an export says it is in.
pub const FORMAT: &str = "vouch-cluster-v1";

/// One cluster's trust configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterExport {
    /// [`FORMAT`].
    pub format: String,
    pub name: String,
    pub pcrs: Vec<u32>,
    pub bank: String,
    pub enabled: bool,
    /// TPM manufacturer CA certificates, PEM.
    pub tpm_ca_certs: Vec<String>,
    /// Individual EKs: their kind and PEM.
    pub eks: Vec<ExportedEk>,
    /// Accepted software versions: vouch-attest reference values, each with its `name`.
    pub software_versions: Vec<Value>,
    /// The key provider's name; the provider itself (a key on a key server) is configured on
    /// each vouchd and must exist where the file is imported.
    pub key_provider: Option<String>,
    /// The cluster's other key providers (besides the default), which its hosts' requests
    /// may name; like the default, they must exist where the file is imported. Absent when
    /// there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_key_providers: Vec<String>,
}

/// An individual EK of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEk {
    pub kind: EkEntryKind,
    pub pem: String,
}

/// Reads `name`'s trust configuration from vouchd.
pub fn export(api: &Api, name: &str) -> Result<ClusterExport, Failure> {
    let base = format!("/v1/clusters/{}", seg(name));
    let cluster: Cluster = api.get(&base)?;
    let cas: Vec<CaCert> = api.get(&format!("{base}/tpm-ca-certs"))?;
    let eks: Vec<ClusterEk> = api.get(&format!("{base}/eks"))?;
    let versions: Vec<SoftwareVersionRecord> = api.get(&format!("{base}/software-versions"))?;
    let provider: ClusterKeyProvider = api.get(&format!("{base}/key-provider"))?;
    if cas.iter().any(|c| c.pem.is_empty()) || eks.iter().any(|e| e.pem.is_empty()) {
        return Err(Failure::Input(
            "this vouchd does not return certificates and EKs as PEM: upgrade it to export".into(),
        ));
    }
    Ok(ClusterExport {
        format: FORMAT.into(),
        name: cluster.name,
        pcrs: cluster.pcrs,
        bank: cluster.bank,
        enabled: cluster.disabled_at.is_none(),
        tpm_ca_certs: cas.into_iter().map(|c| c.pem).collect(),
        eks: eks
            .into_iter()
            .map(|e| ExportedEk {
                kind: e.kind,
                pem: e.pem,
            })
            .collect(),
        software_versions: versions.into_iter().map(|v| v.reference).collect(),
        other_key_providers: provider
            .providers
            .into_iter()
            .filter(|p| provider.provider.as_ref() != Some(p))
            .collect(),
        key_provider: provider.provider,
    })
}

/// Reads an export file.
pub fn read(path: &Path) -> Result<ClusterExport, Failure> {
    let bytes = crate::read_file(path, "cluster export")?;
    let export: ClusterExport = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Input(format!(
            "{}: not a cluster export ({e}); give the file `vouch cluster export` writes",
            path.display()
        ))
    })?;
    if export.format != FORMAT {
        return Err(Failure::Input(format!(
            "{}: format {:?}, this vouch reads {FORMAT}",
            path.display(),
            export.format
        )));
    }
    Ok(export)
}

/// Creates the cluster `name` (the export's own name unless given) from `export`. The cluster
/// must not exist; if any part is refused, the cluster made is removed again, so an import is
/// all or nothing.
pub fn import(api: &Api, export: &ClusterExport, name: &str) -> Result<Cluster, Failure> {
    let created: Cluster = api.post(
        "/v1/clusters",
        &NewCluster {
            name: name.to_owned(),
            pcrs: Some(export.pcrs.clone()),
            bank: Some(export.bank.clone()),
        },
    )?;
    match fill(api, export, name) {
        Ok(Some(cluster)) => Ok(cluster),
        Ok(None) => Ok(created),
        Err(e) => {
            let undo = api.delete(&format!("/v1/clusters/{}", seg(name)));
            let what = match e {
                Failure::Refused(m) | Failure::Input(m) => m,
            };
            let message = match undo {
                Ok(()) => format!("{what}; the import was undone (cluster {name} removed)"),
                Err(_) => format!(
                    "{what}; cluster {name} was created in part: remove it (`vouch cluster remove {name}`) and import again"
                ),
            };
            Err(Failure::Refused(message))
        }
    }
}

/// Adds the trust configuration to the new cluster; returns it when a change was made to its
/// settings (disabled).
fn fill(api: &Api, export: &ClusterExport, name: &str) -> Result<Option<Cluster>, Failure> {
    let base = format!("/v1/clusters/{}", seg(name));
    if !export.tpm_ca_certs.is_empty() {
        let _: Vec<CaCert> = api.post(
            &format!("{base}/tpm-ca-certs"),
            &NewCaCerts {
                certificate_pem: export.tpm_ca_certs.concat(),
            },
        )?;
    }
    for ek in &export.eks {
        let _: ClusterEk = api.post(
            &format!("{base}/eks"),
            &NewClusterEk {
                kind: ek.kind,
                pem: ek.pem.clone(),
            },
        )?;
    }
    for version in &export.software_versions {
        let version_name = version
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::Input("a software version has no name".into()))?;
        let _: SoftwareVersionRecord = api.put(
            &format!("{base}/software-versions/{}", seg(version_name)),
            &SoftwareVersionBody(version.clone()),
        )?;
    }
    if let Some(provider) = &export.key_provider {
        let _: ClusterKeyProvider = api.put(
            &format!("{base}/key-provider"),
            &SetClusterKeyProvider {
                provider: provider.clone(),
            },
        )?;
    }
    for provider in &export.other_key_providers {
        let _: ClusterKeyProvider = api.put(
            &format!("{base}/key-providers/{}", seg(provider)),
            &serde_json::json!({}),
        )?;
    }
    if export.enabled {
        return Ok(None);
    }
    let disabled: Cluster = api.patch(
        &base,
        &ClusterChange {
            enabled: Some(false),
            ..ClusterChange::default()
        },
    )?;
    Ok(Some(disabled))
}
