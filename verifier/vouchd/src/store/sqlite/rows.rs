//! Rows read as records, by column name. Whatever does not fit its record (an unknown enum
//! text, bad JSON, a value of the wrong type, NULL where none is allowed) is
//! [`StoreError::Corrupt`], naming the table and the column; nothing becomes a default.
//!
//! Queries select `*`: columns are found by name, so their order and any column a record does
//! not use do not matter.

use super::backend;
use crate::store::migrate::AppliedMigration;
pub(super) use crate::store::records::PrincipalRow;
use crate::store::records::TextColumns;
use crate::store::{
    AttestationRecord, CaCert, Cluster, ClusterEk, EkEntryKind, Event, Host, HostState,
    KeyProviderRecord, KeyServerRecord, ManagementServer, PrincipalKind, SoftwareVersionRecord,
    StoreError, StoreResult, TokenInfo, WrappingMode,
};
use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};

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

crate::store::records::from_rows!(FromRow, Columns<'_, '_>);

impl TextColumns for Columns<'_, '_> {
    fn text(&self, column: &'static str) -> StoreResult<String> {
        self.get(column)
    }

    fn text_or_null(&self, column: &'static str) -> StoreResult<Option<String>> {
        self.get(column)
    }

    fn table(&self) -> &'static str {
        self.table
    }
}
