//! The API form of stored records that hold more than the API shows (certificates, keys, the
//! bound AK): the edge never serialises a store record itself.

use vouch_api::types as api;

use crate::store;

impl From<store::Host> for api::HostView {
    fn from(h: store::Host) -> Self {
        Self {
            ak_bound: h.ak_public.is_some(),
            ek_hash: h.ek_hash,
            cluster: h.cluster,
            name: h.name,
            added_by: h.added_by,
            state: h.state,
            attested_at: h.attested_at,
            valid_until: h.valid_until,
            software_version: h.software_version,
            created_at: h.created_at,
        }
    }
}

impl From<store::ManagementServer> for api::ManagementServer {
    fn from(m: store::ManagementServer) -> Self {
        Self {
            id: m.id,
            subject: m.subject,
            fingerprint: m.fingerprint,
            created_at: m.created_at,
        }
    }
}

/// DER as PEM with `label`, in lines of 64 characters.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl From<store::CaCert> for api::CaCert {
    fn from(c: store::CaCert) -> Self {
        Self {
            pem: pem("CERTIFICATE", &c.der),
            id: c.id,
            cluster: c.cluster,
            subject: c.subject,
            created_at: c.created_at,
        }
    }
}

impl From<store::ClusterEk> for api::ClusterEk {
    fn from(e: store::ClusterEk) -> Self {
        let label = match e.kind {
            store::EkEntryKind::Certificate => "CERTIFICATE",
            store::EkEntryKind::PublicKey | store::EkEntryKind::BarePublicKey => "PUBLIC KEY",
        };
        Self {
            pem: pem(label, &e.der),
            ek_hash: e.ek_hash,
            cluster: e.cluster,
            kind: e.kind,
            created_at: e.created_at,
        }
    }
}

impl From<store::KeyServerRecord> for api::KeyServer {
    fn from(k: store::KeyServerRecord) -> Self {
        Self {
            name: k.name,
            endpoints: k.endpoints,
            client_certificate: k.client_certificate,
            ca_certificates: k.ca_certificates,
            created_at: k.created_at,
        }
    }
}

/// Converts every record of a list.
pub fn all<R, A: From<R>>(records: Vec<R>) -> Vec<A> {
    records.into_iter().map(A::from).collect()
}
