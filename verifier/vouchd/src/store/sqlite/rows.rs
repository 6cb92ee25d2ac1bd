//! Rows read as records, by column name. Whatever does not fit its record (an unknown enum
//! text, bad JSON, a value of the wrong type, NULL where none is allowed) is
//! [`StoreError::Corrupt`], naming the table and the column; nothing becomes a default.
//!
//! Queries select `*`: columns are found by name, so their order and any column a record does
//! not use do not matter.

use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};
use serde::de::DeserializeOwned;

use super::backend;
use crate::store::migrate::AppliedMigration;
use crate::store::{
    AttestationRecord, CaCert, Cluster, ClusterEk, EkEntryKind, Event, Host, HostState,
    KeyProviderRecord, KeyServerRecord, ManagementServer, PrincipalKind, SoftwareVersionRecord,
    StoreError, StoreResult, TokenInfo, WrappingMode,
};

/// One row of `table`.
pub(super) struct Columns<'a, 'stmt> {
    row: &'a Row<'stmt>,
    table: &'static str,
}

impl Columns<'_, '_> {
    /// The column's value as `T`.
    pub(super) fn get<T: FromSql>(&self, column: &'static str) -> StoreResult<T> {
        self.row.get(column).map_err(|e| self.error(column, e))
    }

    /// A TEXT column holding JSON.
    pub(super) fn json<T: DeserializeOwned>(&self, column: &'static str) -> StoreResult<T> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, format!("bad JSON: {e}")))
    }

    /// A nullable TEXT column holding JSON.
    pub(super) fn json_or_null<T: DeserializeOwned>(
        &self,
        column: &'static str,
    ) -> StoreResult<Option<T>> {
        let text: Option<String> = self.get(column)?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| self.corrupt(column, format!("bad JSON: {e}")))
        })
        .transpose()
    }

    /// A TEXT column holding one of an enum's names.
    pub(super) fn name<T>(
        &self,
        column: &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> StoreResult<T> {
        let text: String = self.get(column)?;
        parse(&text).ok_or_else(|| self.corrupt(column, format!("unknown value {text:?}")))
    }

    fn corrupt(&self, column: &'static str, reason: String) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            column,
            reason,
        }
    }

    /// A value that does not convert is corrupt; anything else (a column missing from the
    /// query) is a fault of the query, not of the data.
    fn error(&self, column: &'static str, e: rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::InvalidColumnType(_, _, found) => {
                self.corrupt(column, format!("unexpected {found} value"))
            }
            rusqlite::Error::IntegralValueOutOfRange(_, n) => {
                self.corrupt(column, format!("{n} is out of range"))
            }
            rusqlite::Error::FromSqlConversionFailure(_, _, err) => {
                self.corrupt(column, err.to_string())
            }
            other => backend(other),
        }
    }
}

/// A record stored as one row of [`FromRow::TABLE`].
pub(super) trait FromRow: Sized {
    const TABLE: &'static str;
    fn from_row(row: &Columns<'_, '_>) -> StoreResult<Self>;
}

/// Every row `sql` selects from `table`, each read by `read`, through the statement cache.
pub(super) fn query<T>(
    conn: &Connection,
    table: &'static str,
    sql: &str,
    params: impl Params,
    mut read: impl FnMut(&Columns<'_, '_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(params).map_err(backend)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        records.push(read(&Columns { row, table })?);
    }
    Ok(records)
}

/// Every record `sql` selects.
pub(super) fn all<T: FromRow>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> StoreResult<Vec<T>> {
    query(conn, T::TABLE, sql, params, T::from_row)
}

/// The record `sql` selects, if any (the first, if several).
pub(super) fn one<T: FromRow>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> StoreResult<Option<T>> {
    Ok(all(conn, sql, params)?.into_iter().next())
}

/// A principal without its groups, which live in another table.
pub(super) struct PrincipalRow {
    pub name: String,
    pub kind: PrincipalKind,
    pub created_at: i64,
}

impl FromRow for PrincipalRow {
    const TABLE: &'static str = "principals";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            name: r.get("name")?,
            kind: r.name("kind", PrincipalKind::parse)?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for TokenInfo {
    const TABLE: &'static str = "tokens";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            id: r.get("id")?,
            principal: r.get("principal")?,
            description: r.get("description")?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for ManagementServer {
    const TABLE: &'static str = "management_servers";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            id: r.get("id")?,
            certificate: r.get("certificate")?,
            subject: r.get("subject")?,
            fingerprint: r.get("fingerprint")?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for Cluster {
    const TABLE: &'static str = "clusters";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            name: r.get("name")?,
            pcrs: r.json("pcrs")?,
            bank: r.get("bank")?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for CaCert {
    const TABLE: &'static str = "cluster_ca_certs";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            id: r.get("id")?,
            cluster: r.get("cluster")?,
            subject: r.get("subject")?,
            der: r.get("der")?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for ClusterEk {
    const TABLE: &'static str = "cluster_eks";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            ek_hash: r.get("ek_hash")?,
            cluster: r.get("cluster")?,
            kind: r.name("kind", EkEntryKind::parse)?,
            der: r.get("der")?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for SoftwareVersionRecord {
    const TABLE: &'static str = "software_versions";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            cluster: r.get("cluster")?,
            name: r.get("name")?,
            reference: r.json("reference")?,
            created_at: r.get("created_at")?,
        })
    }
}

impl FromRow for Host {
    const TABLE: &'static str = "hosts";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
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

impl FromRow for AttestationRecord {
    const TABLE: &'static str = "attestations";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
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
        })
    }
}

impl FromRow for Event {
    const TABLE: &'static str = "events";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            id: r.get("id")?,
            at: r.get("at")?,
            kind: r.get("kind")?,
            subject: r.get("subject")?,
            detail: r.json("detail")?,
        })
    }
}

impl FromRow for KeyServerRecord {
    const TABLE: &'static str = "key_servers";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
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

impl FromRow for KeyProviderRecord {
    const TABLE: &'static str = "key_providers";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
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

impl FromRow for AppliedMigration {
    const TABLE: &'static str = "schema_migrations";
    fn from_row(r: &Columns<'_, '_>) -> StoreResult<Self> {
        Ok(Self {
            version: r.get("version")?,
            name: r.get("name")?,
            checksum: r.get("checksum")?,
            applied_at: r.get("applied_at")?,
        })
    }
}
