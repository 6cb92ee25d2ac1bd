//! PostgreSQL rows read as records, by column name, with the same rules as SQLite's
//! ([`crate::store::sqlite`]'s `rows`): whatever does not fit its record is
//! [`StoreError::Corrupt`], naming the table and the column.

use crate::store::migrate::AppliedMigration;
pub(super) use crate::store::records::PrincipalRow;
use crate::store::records::TextColumns;
use crate::store::{
    AttestationRecord, CaCert, Cluster, ClusterEk, EkEntryKind, Event, Host, HostState,
    KeyProviderRecord, KeyServerRecord, ManagementServer, PrincipalKind, SoftwareVersionRecord,
    StoreError, StoreResult, TokenInfo, WrappingMode,
};
use postgres::Row;
use postgres::types::FromSql;

/// A Rust type a column is read as.
pub(super) trait Value: Sized {
    fn read(row: &Row, column: &str) -> Result<Self, String>;
}

/// Why reading `column` failed: a missing column is the query's fault (`Err(None)`), any
/// other failure the data's (`Err(Some(reason))`).
fn typed<T: for<'a> FromSql<'a>>(row: &Row, column: &str) -> Result<T, String> {
    row.try_get::<_, T>(column).map_err(|e| e.to_string())
}

macro_rules! values {
    ($($t:ty),*) => {
        $(impl Value for $t {
            fn read(row: &Row, column: &str) -> Result<Self, String> {
                typed(row, column)
            }
        })*
    };
}
values!(
    String,
    i64,
    bool,
    Vec<u8>,
    Option<String>,
    Option<i64>,
    Option<Vec<u8>>
);

/// PostgreSQL has no unsigned types: a `u32` is kept in a BIGINT.
impl Value for u32 {
    fn read(row: &Row, column: &str) -> Result<Self, String> {
        let n: i64 = typed(row, column)?;
        u32::try_from(n).map_err(|_| format!("{n} is out of range"))
    }
}

/// One row of `table`.
pub(super) struct Columns<'a> {
    pub(super) row: &'a Row,
    pub(super) table: &'static str,
}

impl Columns<'_> {
    /// The column's value as `T`.
    pub(super) fn get<T: Value>(&self, column: &'static str) -> StoreResult<T> {
        if self.row.columns().iter().all(|c| c.name() != column) {
            return Err(StoreError::Backend(format!(
                "the query on {} has no column {column}",
                self.table
            )));
        }
        T::read(self.row, column).map_err(|reason| self.corrupt(column, reason))
    }
}

/// A record stored as one row of [`FromRow::TABLE`].
pub(super) trait FromRow: Sized {
    const TABLE: &'static str;
    fn from_row(row: &Columns<'_>) -> StoreResult<Self>;
}

/// Every row of `rows` (from `table`), each read by `read`.
pub(super) fn read_all<T>(
    rows: &[Row],
    table: &'static str,
    mut read: impl FnMut(&Columns<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(|row| read(&Columns { row, table }))
        .collect()
}

crate::store::records::from_rows!(FromRow, Columns<'_>);

impl TextColumns for Columns<'_> {
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
