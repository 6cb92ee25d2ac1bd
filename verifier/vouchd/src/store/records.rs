//! How each record reads from a row, written once for every backend: [`from_rows!`] expands
//! to the `FromRow` impls of a backend's row reader, which offers `get` (a column as its Rust
//! type), `json` (a TEXT column holding JSON) and `name` (a TEXT column holding an enum's
//! name), each failing as [`StoreError::Corrupt`](super::StoreError::Corrupt).

use serde::de::DeserializeOwned;

use super::{PrincipalKind, StoreError, StoreResult};

/// What a backend's row reader gives for the readers every backend shares: a TEXT column, and
/// the error for a value that does not fit.
pub(crate) trait TextColumns {
    fn text(&self, column: &'static str) -> StoreResult<String>;
    /// A nullable TEXT column.
    fn text_or_null(&self, column: &'static str) -> StoreResult<Option<String>>;
    fn table(&self) -> &'static str;

    fn corrupt(&self, column: &'static str, reason: String) -> StoreError {
        StoreError::Corrupt {
            table: self.table(),
            column,
            reason,
        }
    }

    /// A TEXT column holding JSON.
    fn json<T: DeserializeOwned>(&self, column: &'static str) -> StoreResult<T> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, format!("bad JSON: {e}")))
    }

    /// A nullable TEXT column holding JSON.
    fn json_or_null<T: DeserializeOwned>(&self, column: &'static str) -> StoreResult<Option<T>> {
        self.text_or_null(column)?
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| self.corrupt(column, format!("bad JSON: {e}")))
            })
            .transpose()
    }

    /// A TEXT column holding one of an enum's names.
    fn name<T>(&self, column: &'static str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
        let text = self.text(column)?;
        parse(&text).ok_or_else(|| self.corrupt(column, format!("unknown value {text:?}")))
    }
}

/// A principal without its groups, which live in another table.
pub(crate) struct PrincipalRow {
    pub name: String,
    pub kind: PrincipalKind,
    pub created_at: i64,
}

/// The `FromRow` impls of every record for a backend: `$from_row` is its trait, `$columns`
/// its row reader.
macro_rules! from_rows {
    ($from_row:path, $columns:ty) => {
        impl $from_row for PrincipalRow {
            const TABLE: &'static str = "principals";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    name: r.get("name")?,
                    kind: r.name("kind", PrincipalKind::parse)?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for TokenInfo {
            const TABLE: &'static str = "tokens";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    id: r.get("id")?,
                    principal: r.get("principal")?,
                    description: r.get("description")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for ManagementServer {
            const TABLE: &'static str = "management_servers";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    id: r.get("id")?,
                    certificate: r.get("certificate")?,
                    subject: r.get("subject")?,
                    fingerprint: r.get("fingerprint")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for Cluster {
            const TABLE: &'static str = "clusters";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    name: r.get("name")?,
                    pcrs: r.json("pcrs")?,
                    bank: r.get("bank")?,
                    created_at: r.get("created_at")?,
                    disabled_at: r.get("disabled_at")?,
                    config_generation: r.get("config_generation")?,
                })
            }
        }

        impl $from_row for CaCert {
            const TABLE: &'static str = "cluster_ca_certs";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    id: r.get("id")?,
                    cluster: r.get("cluster")?,
                    subject: r.get("subject")?,
                    der: r.get("der")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for ClusterEk {
            const TABLE: &'static str = "cluster_eks";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    ek_hash: r.get("ek_hash")?,
                    cluster: r.get("cluster")?,
                    kind: r.name("kind", EkEntryKind::parse)?,
                    der: r.get("der")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for SoftwareVersionRecord {
            const TABLE: &'static str = "software_versions";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    cluster: r.get("cluster")?,
                    name: r.get("name")?,
                    reference: r.json("reference")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for Host {
            const TABLE: &'static str = "hosts";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    ek_hash: r.get("ek_hash")?,
                    cluster: r.get("cluster")?,
                    name: r.get("name")?,
                    added_by: r.get("added_by")?,
                    ak_public: r.get("ak_public")?,
                    state: r.name("state", HostState::parse)?,
                    attested_at: r.get("attested_at")?,
                    valid_until: r.get("valid_until")?,
                    software_version: r.get("software_version")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for AttestationRecord {
            const TABLE: &'static str = "attestations";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    ek_hash: r.get("ek_hash")?,
                    cluster: r.get("cluster")?,
                    at: r.get("at")?,
                    attested: r.get("attested")?,
                    software_version: r.get("software_version")?,
                    reason: r.get("reason")?,
                    pcr_digest: r.get("pcr_digest")?,
                    nonce: r.get("nonce")?,
                    valid_until: r.get("valid_until")?,
                    token: r.get("token")?,
                    presented: r.json_or_null("presented")?,
                    config_generation: r.get("config_generation")?,
                })
            }
        }

        impl $from_row for Event {
            const TABLE: &'static str = "events";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    id: r.get("id")?,
                    at: r.get("at")?,
                    kind: r.get("kind")?,
                    subject: r.get("subject")?,
                    detail: r.json("detail")?,
                })
            }
        }

        impl $from_row for KeyServerRecord {
            const TABLE: &'static str = "key_servers";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    name: r.get("name")?,
                    endpoints: r.json("endpoints")?,
                    client_certificate: r.get("client_certificate")?,
                    client_key: r.get("client_key")?,
                    ca_certificates: r.get("ca_certificates")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for KeyProviderRecord {
            const TABLE: &'static str = "key_providers";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    name: r.get("name")?,
                    key_server: r.get("key_server")?,
                    primary_key_id: r.get("primary_key_id")?,
                    primary_key_version: r.get("primary_key_version")?,
                    retired: r.json("retired_keys")?,
                    wrapping: r.name("wrapping", WrappingMode::parse)?,
                    refresh_seconds: r.get("refresh_seconds")?,
                    lifetime_seconds: r.get("lifetime_seconds")?,
                    created_at: r.get("created_at")?,
                })
            }
        }

        impl $from_row for AppliedMigration {
            const TABLE: &'static str = "schema_migrations";
            fn from_row(r: &$columns) -> StoreResult<Self> {
                Ok(Self {
                    version: r.get("version")?,
                    name: r.get("name")?,
                    checksum: r.get("checksum")?,
                    applied_at: r.get("applied_at")?,
                })
            }
        }
    };
}
pub(crate) use from_rows;
