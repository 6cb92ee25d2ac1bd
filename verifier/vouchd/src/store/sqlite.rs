//! The embedded default store: one SQLite file in the data directory, in WAL mode with
//! `synchronous=FULL` so that a committed change survives a power cut, and the schema brought
//! up to date by [`migrate`](super::migrate) on open.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and every call is short.
//! Every statement is a literal run through the connection's statement cache; rows are read
//! by column name ([`rows`]).

mod rows;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{FromSql, Value};
use rusqlite::{Connection, Params, Transaction, params};

use self::rows::{FromRow, PrincipalRow, all, one, query};
use super::migrate::{self, AppliedMigration, MIGRATIONS, MigrationBackend};
use super::records::TextColumns as _;
use super::sealing::{self, SealingKey};
use super::{
    AttestationRecord, CaCert, Cluster, ClusterEk, Event, EventFilter, Host, HostCount, HostPage,
    HostQuery, HostState, KeyProviderRecord, KeyServerRecord, MAX_HOST_PAGE, ManagementServer,
    Principal, PrincipalKind, ResultWrite, SoftwareVersionRecord, Store, StoreError, StoreResult,
    StoredSigningKey, TokenInfo, open_signing_keys, rotation_rows,
};

const STATEMENT_CACHE_CAPACITY: usize = 128;

/// [`SqliteStore`]'s `config` when the generation could not be read after a write: nothing is
/// answered from memory until a later write reads it.
const GENERATION_UNKNOWN: i64 = i64::MIN;

const SELECT_GENERATION: &str = "SELECT value FROM generations WHERE name = 'config'";

/// The configuration generation in the database, or [`GENERATION_UNKNOWN`].
fn read_generation(conn: &Connection) -> i64 {
    conn.prepare_cached(SELECT_GENERATION)
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
        .unwrap_or(GENERATION_UNKNOWN)
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Counts the uses of the connection that changed rows ([`Store::changes`]).
    writes: AtomicU64,
    /// The configuration generation as of the last write ([`Store::config_generation_now`]),
    /// or [`GENERATION_UNKNOWN`] when it could not be read.
    config: AtomicI64,
    /// The key-encryption keys: the first seals, every one opens. None: secrets are stored as
    /// given (in-memory tests).
    sealing: Vec<SealingKey>,
    /// Results kept per host besides its state changes; 0 keeps every result.
    retention: u32,
}

/// The associated data of the sealed token-signing key.
const SIGNING_KEY_LABEL: &str = "signing_keys.sealed_key:current";

/// Stores the key a rotation retired.
const UPSERT_PREVIOUS_SIGNING_KEY: &str = "INSERT INTO signing_keys (id, sealed_key, created_at, retired_at) VALUES ('previous', ?1, ?2, ?3) \
     ON CONFLICT (id) DO UPDATE SET sealed_key = excluded.sealed_key, created_at = excluded.created_at, retired_at = excluded.retired_at";

/// The current and previous signing keys' rows, the current first.
fn signing_key_rows(conn: &Connection) -> StoreResult<Vec<super::SigningKeyRow>> {
    query(
        conn,
        "signing_keys",
        "SELECT id, sealed_key, created_at, retired_at FROM signing_keys WHERE id IN ('current', 'previous') ORDER BY id",
        [],
        |r| {
            Ok((
                r.get("id")?,
                r.get("sealed_key")?,
                r.get("created_at")?,
                r.get("retired_at")?,
            ))
        },
    )
}

/// The associated data of a key server's sealed client key.
fn client_key_label(name: &str) -> String {
    format!("key_servers.client_key:{name}")
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Maps a uniqueness violation to `Conflict(what)` and a foreign-key violation to
/// `NotFound(parent)`.
fn insert_error(e: rusqlite::Error, what: &str, parent: &str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                return StoreError::Conflict(what.to_owned());
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                return StoreError::NotFound(parent.to_owned());
            }
            _ => {}
        }
    }
    backend(e)
}

/// Maps a foreign-key violation on delete to `InUse`: `what` is still used by `users`.
fn in_use(e: rusqlite::Error, what: &str, users: &str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    {
        return StoreError::InUse(format!("{what} is used by {users}"));
    }
    backend(e)
}

fn one_changed(n: usize, what: &str) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::NotFound(what.to_owned()))
    } else {
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Runs one statement through the statement cache; returns how many rows it changed.
fn exec(conn: &Connection, sql: &str, params: impl Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Whether `sql` selects a row.
fn exists(conn: &Connection, sql: &str) -> StoreResult<bool> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.exists([]))
        .map_err(backend)
}

/// The principals of `rows`, each with its groups.
fn with_groups(conn: &Connection, rows: Vec<PrincipalRow>) -> StoreResult<Vec<Principal>> {
    rows.into_iter()
        .map(|p| {
            let groups = query(
                conn,
                "group_members",
                "SELECT group_name FROM group_members WHERE principal = ?1 ORDER BY group_name",
                [&p.name],
                |r| r.get("group_name"),
            )?;
            Ok(Principal {
                name: p.name,
                kind: p.kind,
                groups,
                created_at: p.created_at,
            })
        })
        .collect()
}

/// A host's state; `NotFound` without the host.
fn host_state(conn: &Connection, ek_hash: &str) -> StoreResult<HostState> {
    query(
        conn,
        "hosts",
        "SELECT state FROM hosts WHERE ek_hash = ?1",
        [ek_hash],
        |r| r.name("state", HostState::parse),
    )?
    .pop()
    .ok_or_else(|| StoreError::NotFound(format!("host with EK {ek_hash}")))
}

/// Stores a `host.state_changed` event (within the caller's transaction).
fn insert_state_changed(
    conn: &Connection,
    at: i64,
    ek_hash: &str,
    detail: serde_json::Value,
) -> StoreResult<Event> {
    let kind = "host.state_changed";
    let id = conn
        .prepare_cached("INSERT INTO events (at, kind, subject, detail) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.insert(params![at, kind, ek_hash, detail.to_string()]))
        .map_err(backend)?;
    Ok(Event {
        id,
        at,
        kind: kind.into(),
        subject: ek_hash.into(),
        detail,
    })
}

const INSERT_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)";

/// The runner's SQLite side.
impl MigrationBackend for Connection {
    fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>> {
        self.execute_batch(migrate::SCHEMA_MIGRATIONS_TABLE)
            .map_err(backend)?;
        upgrade_schema_migrations(self)?;
        all(self, "SELECT * FROM schema_migrations ORDER BY version", [])
    }

    fn apply(&mut self, sql: &str, record: &AppliedMigration) -> StoreResult<()> {
        let tx = self.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        exec(
            &tx,
            INSERT_MIGRATION,
            params![
                record.version,
                record.name,
                record.checksum,
                record.applied_at
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }
}

/// Databases made before the migrations were files have `schema_migrations (version,
/// applied_at)`, and their migrations ran exactly the SQL of today's files of the same version.
/// Rebuilds the table in today's layout, with the name and checksum of each migration this
/// build knows, in one transaction; a version it does not know keeps neither, and the runner
/// refuses it. SQLite only: PostgreSQL databases start with today's layout.
fn upgrade_schema_migrations(conn: &mut Connection) -> StoreResult<()> {
    if exists(
        conn,
        "SELECT 1 FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'",
    )? {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    tx.execute_batch("ALTER TABLE schema_migrations RENAME TO schema_migrations_unchecked")
        .map_err(backend)?;
    tx.execute_batch(migrate::SCHEMA_MIGRATIONS_TABLE)
        .map_err(backend)?;
    let old = query(
        &tx,
        "schema_migrations",
        "SELECT * FROM schema_migrations_unchecked ORDER BY version",
        [],
        |r| Ok((r.get::<i64>("version")?, r.get::<i64>("applied_at")?)),
    )?;
    for (version, applied_at) in old {
        let known = MIGRATIONS.iter().find(|m| m.version == version);
        let name = known.map_or("", |m| m.name);
        let checksum = known.map(migrate::Migration::checksum).unwrap_or_default();
        exec(
            &tx,
            INSERT_MIGRATION,
            params![version, name, checksum, applied_at],
        )
        .map_err(backend)?;
    }
    tx.execute_batch("DROP TABLE schema_migrations_unchecked")
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    tracing::info!("recorded the names and checksums of the migrations applied");
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        // Room for every statement the store runs (about seventy), so none is prepared twice.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        // journal_mode answers with a row; the others are plain settings.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        // FULL: a commit is fsynced to the WAL before it returns (it survives a power cut);
        // checkpoints every 1000 pages (SQLite's default, stated), truncated on `flush`.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 1000; PRAGMA foreign_keys = ON;",
        )
            .map_err(backend)?;
        migrate::migrate(&mut conn, MIGRATIONS, crate::now())?;
        let generation = read_generation(&conn);
        Ok(Self {
            conn: Mutex::new(conn),
            writes: AtomicU64::new(0),
            config: AtomicI64::new(generation),
            sealing: Vec::new(),
            retention: 0,
        })
    }

    /// Keeps, per host, only its last `results` attestation results and every result that
    /// changed its state (attested or not); older results go as new ones are recorded. 0 keeps
    /// every result.
    #[must_use]
    pub fn with_retention(mut self, results: u32) -> Self {
        self.retention = results;
        self
    }

    /// Seals secrets under `current` from now on; values sealed under `previous` (a rotation)
    /// still open. See [`super::sealing`].
    #[must_use]
    pub fn with_sealing(mut self, current: SealingKey, previous: Option<SealingKey>) -> Self {
        self.sealing = std::iter::once(current).chain(previous).collect();
        self
    }

    /// Seals under the current key every secret that is not (key servers' client keys and the
    /// token-signing keys): stored before sealing existed, or sealed under the previous key.
    /// Returns how many were sealed again.
    pub fn reseal_secrets(&self) -> StoreResult<usize> {
        let Some(current) = self.sealing.first() else {
            return Ok(0);
        };
        let conn = self.conn()?;
        let rows: Vec<(String, String)> = query(
            &conn,
            "key_servers",
            "SELECT name, client_key FROM key_servers",
            [],
            |r| Ok((r.get("name")?, r.get("client_key")?)),
        )?;
        let mut count: usize = 0;
        for (name, stored) in rows {
            if sealing::sealed_by(&stored, current) {
                continue;
            }
            let label = client_key_label(&name);
            let plain = sealing::open(&self.sealing, &label, &stored)?;
            let sealed = current.seal(&label, &plain)?;
            exec(
                &conn,
                "UPDATE key_servers SET client_key = ?1 WHERE name = ?2",
                params![sealed, name],
            )
            .map_err(backend)?;
            count = count.saturating_add(1);
        }
        // The token-signing keys (the current one and one a rotation retired).
        for (id, stored, _, _) in signing_key_rows(&conn)? {
            if sealing::sealed_by(&stored, current) {
                continue;
            }
            let label = super::signing_key_label(&id);
            let sealed = current.seal(&label, &sealing::open(&self.sealing, &label, &stored)?)?;
            exec(
                &conn,
                "UPDATE signing_keys SET sealed_key = ?1 WHERE id = ?2",
                params![sealed, id],
            )
            .map_err(backend)?;
            count = count.saturating_add(1);
        }
        Ok(count)
    }

    fn open_key_server(&self, mut record: KeyServerRecord) -> StoreResult<KeyServerRecord> {
        let label = client_key_label(&record.name);
        record.client_key = sealing::open(&self.sealing, &label, &record.client_key)?
            .as_str()
            .to_owned();
        Ok(record)
    }

    /// The connection, locked. Every use goes through here: when it changed rows, the write
    /// count moves before the lock is released.
    fn conn(&self) -> StoreResult<Locked<'_>> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("the database lock is poisoned".into()))?;
        let before = conn.total_changes();
        Ok(Locked {
            conn,
            before,
            writes: &self.writes,
            config: &self.config,
        })
    }

    /// Adds many hosts in one transaction: all or none (seeding a database for measurements,
    /// bulk imports). The store's `add_host` is one transaction per host.
    pub fn add_hosts(&self, hosts: &[Host]) -> StoreResult<()> {
        self.transaction(|tx| {
            let mut stmt = tx.prepare_cached(INSERT_HOST).map_err(backend)?;
            for h in hosts {
                stmt.execute(host_params(h)).map_err(|e| {
                    insert_error(
                        e,
                        &format!("host with EK {}", h.ek_hash),
                        &format!("cluster {}", h.cluster),
                    )
                })?;
            }
            Ok(())
        })
    }

    /// The schema version now in force.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.conn()?
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
    }

    /// A pragma's value, for tests and diagnostics.
    pub fn pragma(&self, name: &str) -> StoreResult<String> {
        let conn = self.conn()?;
        conn.pragma_query_value(None, name, |r| {
            r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
        })
        .map_err(backend)
    }

    /// Runs `f` in a transaction, committed when it succeeds.
    fn transaction<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(backend)?;
        let value = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }

    /// Runs one statement; `fail` says what a database error means. Returns the rows changed.
    fn execute(
        &self,
        sql: &str,
        params: impl Params,
        fail: impl FnOnce(rusqlite::Error) -> StoreError,
    ) -> StoreResult<usize> {
        exec(&*self.conn()?, sql, params).map_err(fail)
    }

    /// Inserts a row: a duplicate is `Conflict(what)`, a missing parent `NotFound(parent)`.
    fn insert(&self, sql: &str, params: impl Params, what: &str, parent: &str) -> StoreResult<()> {
        self.execute(sql, params, |e| insert_error(e, what, parent))
            .map(drop)
    }

    /// Updates or deletes one row: none is `NotFound(what)`.
    fn change_one(&self, sql: &str, params: impl Params, what: &str) -> StoreResult<()> {
        one_changed(self.execute(sql, params, backend)?, what)
    }

    fn all<T: FromRow>(&self, sql: &str, params: impl Params) -> StoreResult<Vec<T>> {
        all(&*self.conn()?, sql, params)
    }

    fn one<T: FromRow>(&self, sql: &str, params: impl Params) -> StoreResult<Option<T>> {
        one(&*self.conn()?, sql, params)
    }

    /// `column` of `table`, in the first row `sql` selects.
    fn column<T: FromSql>(
        &self,
        table: &'static str,
        column: &'static str,
        sql: &str,
        params: impl Params,
    ) -> StoreResult<Option<T>> {
        let values = query(&*self.conn()?, table, sql, params, |r| r.get(column))?;
        Ok(values.into_iter().next())
    }

    /// The principals `sql` selects, with their groups.
    fn principals(&self, sql: &str, params: impl Params) -> StoreResult<Vec<Principal>> {
        let conn = self.conn()?;
        let rows = all(&conn, sql, params)?;
        with_groups(&conn, rows)
    }
}

/// The locked connection; see [`SqliteStore::conn`].
struct Locked<'a> {
    conn: MutexGuard<'a, Connection>,
    before: u64,
    writes: &'a AtomicU64,
    config: &'a AtomicI64,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Runs before the guard (a field) unlocks.
        if self.conn.total_changes() != self.before {
            // What was committed (a transaction ended before this); a rolled-back change
            // leaves the generation as it was.
            self.config
                .store(read_generation(&self.conn), Ordering::SeqCst);
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One attestation's writes ([`ResultWrite`]) within a transaction.
fn write_result(
    conn: &Connection,
    retention: u32,
    w: &ResultWrite,
) -> StoreResult<super::Recorded> {
    if let Some(clock) = &w.clock {
        let n = exec(
            conn,
            "UPDATE hosts SET last_clock = ?1 WHERE ek_hash = ?2",
            params![clock, w.record.ek_hash],
        )
        .map_err(backend)?;
        one_changed(n, &format!("host with EK {}", w.record.ek_hash))?;
    }
    record_in(conn, retention, &w.record)
}

/// Stores a result and the host's state from it (and the event of a change) within a
/// transaction; `retention` as [`SqliteStore`]'s.
fn record_in(
    conn: &Connection,
    retention: u32,
    a: &AttestationRecord,
) -> StoreResult<super::Recorded> {
    let state = if a.attested {
        HostState::Attested
    } else {
        HostState::NotAttested
    };
    let before = host_state(conn, &a.ek_hash)?;
    exec(
            conn,
            "INSERT INTO attestations (ek_hash, cluster, at, attested, software_version, reason, pcr_digest, nonce, valid_until, token, presented, config_generation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                a.ek_hash,
                a.cluster,
                a.at,
                a.attested,
                a.software_version,
                a.reason,
                a.pcr_digest,
                a.nonce,
                a.valid_until,
                a.token,
                a.presented.as_ref().map(serde_json::Value::to_string),
                a.config_generation
            ],
        )
        .map_err(backend)?;
    exec(
            conn,
            "UPDATE hosts SET state = ?1, attested_at = ?2, valid_until = ?3, software_version = ?4 WHERE ek_hash = ?5",
            params![
                state.as_str(),
                a.attested.then_some(a.at),
                a.valid_until,
                a.software_version,
                a.ek_hash
            ],
        )
        .map_err(backend)?;
    if retention > 0 && before == state {
        // Retention: past the last N, a result that repeats the one before it goes;
        // the first result and every state change stay.
        exec(
            conn,
            "DELETE FROM attestations WHERE id IN (
                    SELECT id FROM (
                        SELECT id, attested,
                               LAG(attested) OVER (ORDER BY id) AS previous,
                               ROW_NUMBER() OVER (ORDER BY id DESC) AS newest
                        FROM attestations WHERE ek_hash = ?1
                    ) WHERE newest > ?2 AND previous = attested
                )",
            params![a.ek_hash, retention],
        )
        .map_err(backend)?;
    }
    let event = if before == state {
        None
    } else {
        let detail = super::state_change_detail(&a.cluster, before, state, a.reason.as_deref());
        Some(insert_state_changed(conn, a.at, &a.ek_hash, detail)?)
    };
    Ok(super::Recorded { before, event })
}

const INSERT_HOST: &str = "INSERT INTO hosts (ek_hash, cluster, name, added_by, ak_public, state, attested_at, valid_until, software_version, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

fn host_params(h: &Host) -> impl Params + '_ {
    (
        &h.ek_hash,
        &h.cluster,
        &h.name,
        &h.added_by,
        &h.ak_public,
        h.state.as_str(),
        h.attested_at,
        h.valid_until,
        &h.software_version,
        h.created_at,
    )
}

/// `s` with LIKE's wildcards and the escape character escaped (`ESCAPE '\\'`).
fn like_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// ` WHERE a AND b`, or nothing.
fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    }
}

/// The WHERE clause of a [`HostQuery`] and its parameters (`?1`, `?2`, ...). The search is a
/// prefix of `LOWER(name)` (an index on that expression) or of `ek_hash` (the primary key),
/// each as a range: from the prefix up to the prefix followed by the highest character, which
/// sorts after every continuation under SQLite's byte-wise (BINARY) order.
fn host_filter(q: &HostQuery) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(cluster) = &q.cluster {
        values.push(Value::Text(cluster.clone()));
        clauses.push(format!("cluster = ?{}", values.len()));
    }
    if let Some(state) = q.state {
        values.push(Value::Text(state.as_str().to_owned()));
        clauses.push(format!("state = ?{}", values.len()));
    }
    if let Some(version) = &q.software_version {
        values.push(Value::Text(version.clone()));
        clauses.push(format!("software_version = ?{}", values.len()));
    }
    if let Some(search) = &q.search {
        let low = search.to_ascii_lowercase();
        let high = format!("{low}{}", char::MAX);
        // Only hex can start an EK hash: other text is a name prefix alone, one index range
        // read in the page's order.
        let hex = low.bytes().all(|b| b.is_ascii_hexdigit());
        values.push(Value::Text(low));
        let from = values.len();
        values.push(Value::Text(high));
        let to = values.len();
        let name = format!("LOWER(name) >= ?{from} AND LOWER(name) < ?{to}");
        clauses.push(if hex {
            format!("(({name}) OR (ek_hash >= ?{from} AND ek_hash < ?{to}))")
        } else {
            name
        });
    }
    (where_clause(&clauses), values)
}

impl Store for SqliteStore {
    fn changes(&self) -> Option<u64> {
        Some(self.writes.load(Ordering::SeqCst))
    }

    /// vouchd is the only writer of its SQLite file, and every write goes through this
    /// store, which reads the generation after each one.
    fn config_generation_now(&self) -> Option<i64> {
        Some(self.config.load(Ordering::SeqCst)).filter(|g| *g != GENERATION_UNKNOWN)
    }

    fn flush(&self) -> StoreResult<()> {
        let conn = self.conn()?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(backend)
    }

    fn bootstrap(
        &self,
        principal: &str,
        group: &str,
        token: &TokenInfo,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<bool> {
        self.transaction(|tx| {
            if exists(tx, "SELECT 1 FROM meta WHERE key = 'bootstrapped'")? {
                return Ok(false);
            }
            exec(
                tx,
                "INSERT INTO principals (name, kind, created_at) VALUES (?1, ?2, ?3)",
                params![principal, PrincipalKind::Person.as_str(), now],
            )
            .map_err(|e| insert_error(e, &format!("principal {principal}"), ""))?;
            exec(
                tx,
                "INSERT INTO group_members (group_name, principal) VALUES (?1, ?2)",
                params![group, principal],
            )
            .map_err(backend)?;
            exec(
                tx,
                "INSERT INTO tokens (id, principal, hash, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.id, principal, token_hash, token.description, now],
            )
            .map_err(backend)?;
            exec(
                tx,
                "INSERT INTO meta (key, value) VALUES ('bootstrapped', ?1)",
                params![now.to_string()],
            )
            .map_err(backend)?;
            Ok(true)
        })
    }

    fn create_principal(&self, name: &str, kind: PrincipalKind, now: i64) -> StoreResult<()> {
        self.insert(
            "INSERT INTO principals (name, kind, created_at) VALUES (?1, ?2, ?3)",
            params![name, kind.as_str(), now],
            &format!("principal {name}"),
            "",
        )
    }

    fn get_principal(&self, name: &str) -> StoreResult<Option<Principal>> {
        Ok(self
            .principals("SELECT * FROM principals WHERE name = ?1", [name])?
            .pop())
    }

    fn list_principals(&self) -> StoreResult<Vec<Principal>> {
        self.principals("SELECT * FROM principals ORDER BY name", [])
    }

    fn delete_principal(&self, name: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM principals WHERE name = ?1",
            [name],
            &format!("principal {name}"),
        )
    }

    fn add_to_group(&self, principal: &str, group: &str) -> StoreResult<()> {
        // Adding twice is no error: the conflict does nothing, and only a missing principal
        // fails (its foreign key).
        self.insert(
            "INSERT INTO group_members (group_name, principal) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![group, principal],
            "",
            &format!("principal {principal}"),
        )
    }

    fn remove_from_group(&self, principal: &str, group: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM group_members WHERE group_name = ?1 AND principal = ?2",
            params![group, principal],
            &format!("membership of {principal} in {group}"),
        )
    }

    fn create_token(&self, token: &TokenInfo, hash: &[u8]) -> StoreResult<()> {
        self.insert(
            "INSERT INTO tokens (id, principal, hash, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.id, token.principal, hash, token.description, token.created_at],
            &format!("token {}", token.id),
            &format!("principal {}", token.principal),
        )
    }

    fn principal_for_token(&self, hash: &[u8]) -> StoreResult<Option<Principal>> {
        Ok(self
            .principals(
                "SELECT p.* FROM tokens t JOIN principals p ON p.name = t.principal WHERE t.hash = ?1",
                [hash],
            )?
            .pop())
    }

    fn list_tokens(&self, principal: &str) -> StoreResult<Vec<TokenInfo>> {
        self.all(
            "SELECT * FROM tokens WHERE principal = ?1 ORDER BY created_at, id",
            [principal],
        )
    }

    fn delete_token(&self, principal: &str, id: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM tokens WHERE principal = ?1 AND id = ?2",
            params![principal, id],
            &format!("token {id}"),
        )
    }

    fn add_management_server(&self, s: &ManagementServer) -> StoreResult<()> {
        self.insert(
            "INSERT INTO management_servers (id, certificate, subject, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.id, s.certificate, s.subject, s.fingerprint, s.created_at],
            &format!("management server {} (or its certificate)", s.id),
            "",
        )
    }

    fn get_management_server(&self, id: &str) -> StoreResult<Option<ManagementServer>> {
        self.one("SELECT * FROM management_servers WHERE id = ?1", [id])
    }

    fn list_management_servers(&self) -> StoreResult<Vec<ManagementServer>> {
        self.all("SELECT * FROM management_servers ORDER BY id", [])
    }

    fn delete_management_server(&self, id: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM management_servers WHERE id = ?1",
            [id],
            &format!("management server {id}"),
        )
    }

    fn record_request(&self, key: &str, now: i64, forget_before: i64) -> StoreResult<bool> {
        self.transaction(|tx| {
            exec(
                tx,
                "DELETE FROM seen_requests WHERE seen_at < ?1",
                [forget_before],
            )
            .map_err(backend)?;
            let n = exec(
                tx,
                "INSERT INTO seen_requests (key, seen_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![key, now],
            )
            .map_err(backend)?;
            Ok(n == 1)
        })
    }

    fn create_cluster(&self, c: &Cluster) -> StoreResult<()> {
        self.insert(
            "INSERT INTO clusters (name, pcrs, bank, created_at, disabled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.name, json(&c.pcrs)?, c.bank, c.created_at, c.disabled_at],
            &format!("cluster {}", c.name),
            "",
        )
    }

    fn get_cluster(&self, name: &str) -> StoreResult<Option<Cluster>> {
        self.one("SELECT * FROM clusters WHERE name = ?1", [name])
    }

    fn list_clusters(&self) -> StoreResult<Vec<Cluster>> {
        self.all("SELECT * FROM clusters ORDER BY name", [])
    }

    fn update_cluster(&self, c: &Cluster) -> StoreResult<()> {
        self.change_one(
            "UPDATE clusters SET pcrs = ?2, bank = ?3, disabled_at = ?4 WHERE name = ?1",
            params![c.name, json(&c.pcrs)?, c.bank, c.disabled_at],
            &format!("cluster {}", c.name),
        )
    }

    fn delete_cluster(&self, name: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM clusters WHERE name = ?1",
            [name],
            &format!("cluster {name}"),
        )
    }

    fn add_ca_cert(&self, c: &CaCert) -> StoreResult<()> {
        self.insert(
            "INSERT INTO cluster_ca_certs (cluster, id, subject, der, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.cluster, c.id, c.subject, c.der, c.created_at],
            &format!("CA certificate {}", c.id),
            &format!("cluster {}", c.cluster),
        )
    }

    fn list_ca_certs(&self, cluster: &str) -> StoreResult<Vec<CaCert>> {
        self.all(
            "SELECT * FROM cluster_ca_certs WHERE cluster = ?1 ORDER BY created_at, id",
            [cluster],
        )
    }

    fn delete_ca_cert(&self, cluster: &str, id: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM cluster_ca_certs WHERE cluster = ?1 AND id = ?2",
            params![cluster, id],
            &format!("CA certificate {id}"),
        )
    }

    fn add_cluster_ek(&self, ek: &ClusterEk) -> StoreResult<()> {
        self.insert(
            "INSERT INTO cluster_eks (cluster, ek_hash, kind, der, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ek.cluster, ek.ek_hash, ek.kind.as_str(), ek.der, ek.created_at],
            &format!("EK {}", ek.ek_hash),
            &format!("cluster {}", ek.cluster),
        )
    }

    fn list_cluster_eks(&self, cluster: &str) -> StoreResult<Vec<ClusterEk>> {
        self.all(
            "SELECT * FROM cluster_eks WHERE cluster = ?1 ORDER BY created_at, ek_hash",
            [cluster],
        )
    }

    fn delete_cluster_ek(&self, cluster: &str, ek_hash: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM cluster_eks WHERE cluster = ?1 AND ek_hash = ?2",
            params![cluster, ek_hash],
            &format!("EK {ek_hash}"),
        )
    }

    fn put_software_version(&self, v: &SoftwareVersionRecord) -> StoreResult<()> {
        self.insert(
            "INSERT INTO software_versions (cluster, name, reference, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (cluster, name) DO UPDATE SET reference = excluded.reference",
            params![v.cluster, v.name, json(&v.reference)?, v.created_at],
            &format!("software version {}", v.name),
            &format!("cluster {}", v.cluster),
        )
    }

    fn list_software_versions(&self, cluster: &str) -> StoreResult<Vec<SoftwareVersionRecord>> {
        self.all(
            "SELECT * FROM software_versions WHERE cluster = ?1 ORDER BY name",
            [cluster],
        )
    }

    fn delete_software_version(&self, cluster: &str, name: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM software_versions WHERE cluster = ?1 AND name = ?2",
            params![cluster, name],
            &format!("software version {name}"),
        )
    }

    fn add_host(&self, h: &Host) -> StoreResult<()> {
        self.insert(
            INSERT_HOST,
            host_params(h),
            &format!("host with EK {}", h.ek_hash),
            &format!("cluster {}", h.cluster),
        )
    }

    fn get_host(&self, ek_hash: &str) -> StoreResult<Option<Host>> {
        self.one("SELECT * FROM hosts WHERE ek_hash = ?1", [ek_hash])
    }

    fn list_hosts(&self, cluster: &str) -> StoreResult<Vec<Host>> {
        self.all(
            "SELECT * FROM hosts WHERE cluster = ?1 ORDER BY name, ek_hash",
            [cluster],
        )
    }

    fn list_all_hosts(&self) -> StoreResult<Vec<Host>> {
        self.all("SELECT * FROM hosts ORDER BY cluster, name, ek_hash", [])
    }

    fn delete_host(&self, cluster: &str, ek_hash: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM hosts WHERE cluster = ?1 AND ek_hash = ?2",
            params![cluster, ek_hash],
            &format!("host with EK {ek_hash}"),
        )
    }

    fn set_host_ak(&self, ek_hash: &str, ak_public: &[u8]) -> StoreResult<()> {
        self.change_one(
            "UPDATE hosts SET ak_public = ?1, last_clock = NULL WHERE ek_hash = ?2",
            params![ak_public, ek_hash],
            &format!("host with EK {ek_hash}"),
        )
    }

    fn host_clock(&self, ek_hash: &str) -> StoreResult<Option<String>> {
        let clock: Option<Option<String>> = self.column(
            "hosts",
            "last_clock",
            "SELECT last_clock FROM hosts WHERE ek_hash = ?1",
            [ek_hash],
        )?;
        Ok(clock.flatten())
    }

    fn set_host_clock(&self, ek_hash: &str, clock: &str) -> StoreResult<()> {
        self.change_one(
            "UPDATE hosts SET last_clock = ?1 WHERE ek_hash = ?2",
            params![clock, ek_hash],
            &format!("host with EK {ek_hash}"),
        )
    }

    fn record_attestation(&self, a: &AttestationRecord) -> StoreResult<super::Recorded> {
        self.transaction(|tx| record_in(tx, self.retention, a))
    }

    fn record_attestations(&self, writes: &[ResultWrite]) -> Vec<StoreResult<super::Recorded>> {
        let all = (|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction().map_err(backend)?;
            let mut answers = Vec::with_capacity(writes.len());
            for w in writes {
                // Each write all or none: a failed one rolls back to its savepoint (on drop)
                // and the others stay.
                let savepoint = tx.savepoint().map_err(backend)?;
                let answer = write_result(&savepoint, self.retention, w);
                if answer.is_ok() {
                    savepoint.commit().map_err(backend)?;
                }
                answers.push(answer);
            }
            tx.commit().map_err(backend)?;
            Ok::<_, StoreError>(answers)
        })();
        all.unwrap_or_else(|e| {
            let reason = e.to_string();
            writes
                .iter()
                .map(|_| Err(StoreError::Backend(reason.clone())))
                .collect()
        })
    }

    fn commits_in_groups(&self) -> bool {
        true
    }

    fn set_host_state(&self, ek_hash: &str, state: HostState) -> StoreResult<HostState> {
        self.transaction(|tx| {
            let before = host_state(tx, ek_hash)?;
            exec(
                tx,
                "UPDATE hosts SET state = ?1 WHERE ek_hash = ?2",
                params![state.as_str(), ek_hash],
            )
            .map_err(backend)?;
            Ok(before)
        })
    }

    fn expire_host(&self, ek_hash: &str, now: i64) -> StoreResult<Option<Event>> {
        self.transaction(|tx| {
            let (before, valid_until, cluster) = query(
                tx,
                "hosts",
                "SELECT state, valid_until, cluster FROM hosts WHERE ek_hash = ?1",
                [ek_hash],
                |r| {
                    Ok((
                        r.name("state", HostState::parse)?,
                        r.get::<Option<i64>>("valid_until")?,
                        r.get::<String>("cluster")?,
                    ))
                },
            )?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("host with EK {ek_hash}")))?;
            let expired = before == HostState::Attested && valid_until.is_some_and(|v| v < now);
            if !expired {
                return Ok(None);
            }
            let to = HostState::Unknown;
            exec(
                tx,
                "UPDATE hosts SET state = ?1 WHERE ek_hash = ?2",
                params![to.as_str(), ek_hash],
            )
            .map_err(backend)?;
            let detail =
                super::state_change_detail(&cluster, before, to, Some(super::EXPIRED_REASON));
            insert_state_changed(tx, now, ek_hash, detail).map(Some)
        })
    }

    fn list_attestations(&self, ek_hash: &str, limit: u32) -> StoreResult<Vec<AttestationRecord>> {
        self.all(
            "SELECT * FROM attestations WHERE ek_hash = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
            params![ek_hash, limit],
        )
    }

    fn query_hosts(&self, q: &HostQuery) -> StoreResult<HostPage> {
        let (filter, values) = host_filter(q);
        let conn = self.conn()?;
        let total: i64 = conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM hosts{filter}"))
            .and_then(|mut stmt| {
                stmt.query_row(rusqlite::params_from_iter(values.iter()), |r| r.get(0))
            })
            .map_err(backend)?;
        let mut page_values = values;
        page_values.push(Value::Integer(i64::from(q.limit.min(MAX_HOST_PAGE))));
        page_values.push(Value::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
        let n = page_values.len();
        let hosts = all(
            &conn,
            &format!(
                "SELECT * FROM hosts{filter} ORDER BY LOWER(name), name, ek_hash LIMIT ?{} OFFSET ?{n}",
                n - 1
            ),
            rusqlite::params_from_iter(page_values.iter()),
        )?;
        Ok(HostPage {
            hosts,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    fn count_hosts(&self) -> StoreResult<Vec<HostCount>> {
        query(
            &*self.conn()?,
            "hosts",
            "SELECT cluster, state, COUNT(*) AS n FROM hosts GROUP BY cluster, state ORDER BY cluster, state",
            [],
            |r| {
                let count: i64 = r.get("n")?;
                Ok(HostCount {
                    cluster: r.get("cluster")?,
                    state: r.name("state", HostState::parse)?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            },
        )
    }

    fn hosts_expiring(&self, before: i64, limit: u32) -> StoreResult<Vec<Host>> {
        self.all(
            "SELECT * FROM hosts WHERE valid_until < ?1 AND state = ?2 ORDER BY valid_until, ek_hash LIMIT ?3",
            params![before, HostState::Attested.as_str(), limit],
        )
    }

    fn query_events(&self, f: &EventFilter) -> StoreResult<Vec<Event>> {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        if let Some(kind) = &f.kind_prefix {
            values.push(Value::Text(format!("{}%", like_escaped(kind))));
            clauses.push(format!("kind LIKE ?{} ESCAPE '\\'", values.len()));
        }
        if let Some(subject) = &f.subject {
            values.push(Value::Text(subject.clone()));
            clauses.push(format!("subject = ?{}", values.len()));
        }
        if let Some(before) = f.before {
            values.push(Value::Integer(before));
            clauses.push(format!("id < ?{}", values.len()));
        }
        if let Some(after) = f.after {
            values.push(Value::Integer(after));
            clauses.push(format!("id > ?{}", values.len()));
        }
        values.push(Value::Integer(i64::from(f.limit)));
        let filter = where_clause(&clauses);
        self.all(
            &format!(
                "SELECT * FROM events{filter} ORDER BY id DESC LIMIT ?{}",
                values.len()
            ),
            rusqlite::params_from_iter(values.iter()),
        )
    }

    fn add_event(
        &self,
        at: i64,
        kind: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<i64> {
        self.conn()?
            .prepare_cached(
                "INSERT INTO events (at, kind, subject, detail) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| stmt.insert(params![at, kind, subject, detail.to_string()]))
            .map_err(backend)
    }

    fn list_events(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        self.all(
            "SELECT * FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after, limit],
        )
    }

    fn add_key_server(&self, k: &KeyServerRecord) -> StoreResult<()> {
        let client_key = match self.sealing.first() {
            Some(key) => key.seal(&client_key_label(&k.name), &k.client_key)?,
            None => k.client_key.clone(),
        };
        self.insert(
            "INSERT INTO key_servers (name, endpoints, client_certificate, client_key, ca_certificates, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![k.name, json(&k.endpoints)?, k.client_certificate, client_key, k.ca_certificates, k.created_at],
            &format!("key server {}", k.name),
            "",
        )
    }

    fn get_key_server(&self, name: &str) -> StoreResult<Option<KeyServerRecord>> {
        self.one("SELECT * FROM key_servers WHERE name = ?1", [name])?
            .map(|r| self.open_key_server(r))
            .transpose()
    }

    fn list_key_servers(&self) -> StoreResult<Vec<KeyServerRecord>> {
        self.all("SELECT * FROM key_servers ORDER BY name", [])?
            .into_iter()
            .map(|r| self.open_key_server(r))
            .collect()
    }

    fn delete_key_server(&self, name: &str) -> StoreResult<()> {
        let what = format!("key server {name}");
        let n = self.execute("DELETE FROM key_servers WHERE name = ?1", [name], |e| {
            in_use(e, &what, "key providers")
        })?;
        one_changed(n, &what)
    }

    fn add_key_provider(&self, p: &KeyProviderRecord) -> StoreResult<()> {
        self.insert(
            "INSERT INTO key_providers (name, key_server, primary_key_id, primary_key_version, retired_keys, wrapping, refresh_seconds, lifetime_seconds, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![p.name, p.key_server, p.primary_key_id, p.primary_key_version, json(&p.retired)?, p.wrapping.as_str(), p.refresh_seconds, p.lifetime_seconds, p.created_at],
            &format!("key provider {}", p.name),
            &format!("key server {}", p.key_server),
        )
    }

    fn get_key_provider(&self, name: &str) -> StoreResult<Option<KeyProviderRecord>> {
        self.one("SELECT * FROM key_providers WHERE name = ?1", [name])
    }

    fn list_key_providers(&self) -> StoreResult<Vec<KeyProviderRecord>> {
        self.all("SELECT * FROM key_providers ORDER BY name", [])
    }

    fn update_key_provider(&self, p: &KeyProviderRecord) -> StoreResult<()> {
        self.change_one(
            "UPDATE key_providers SET primary_key_id = ?2, primary_key_version = ?3, retired_keys = ?4 WHERE name = ?1",
            params![p.name, p.primary_key_id, p.primary_key_version, json(&p.retired)?],
            &format!("key provider {}", p.name),
        )
    }

    fn delete_key_provider(&self, name: &str) -> StoreResult<()> {
        let what = format!("key provider {name}");
        let n = self.execute("DELETE FROM key_providers WHERE name = ?1", [name], |e| {
            in_use(e, &what, "clusters")
        })?;
        one_changed(n, &what)
    }

    fn set_cluster_key_provider(&self, cluster: &str, provider: Option<&str>) -> StoreResult<()> {
        self.transaction(|tx| {
            match provider {
                Some(p) => {
                    let parent = format!("cluster {cluster} or key provider {p}");
                    exec(
                        tx,
                        "INSERT INTO cluster_providers (cluster, provider) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![cluster, p],
                    )
                    .map_err(|e| insert_error(e, "", &parent))?;
                    exec(
                        tx,
                        "INSERT INTO cluster_key_providers (cluster, provider) VALUES (?1, ?2) ON CONFLICT (cluster) DO UPDATE SET provider = excluded.provider",
                        params![cluster, p],
                    )
                    .map_err(|e| insert_error(e, "", &parent))?;
                }
                None => {
                    exec(
                        tx,
                        "DELETE FROM cluster_providers WHERE cluster = ?1 AND provider IN (SELECT provider FROM cluster_key_providers WHERE cluster = ?1)",
                        [cluster],
                    )
                    .map_err(backend)?;
                    exec(
                        tx,
                        "DELETE FROM cluster_key_providers WHERE cluster = ?1",
                        [cluster],
                    )
                    .map_err(backend)?;
                }
            }
            Ok(())
        })
    }

    fn add_cluster_provider(&self, cluster: &str, provider: &str) -> StoreResult<()> {
        self.insert(
            "INSERT INTO cluster_providers (cluster, provider) VALUES (?1, ?2)",
            params![cluster, provider],
            &format!("key provider {provider} of cluster {cluster}"),
            &format!("cluster {cluster} or key provider {provider}"),
        )
    }

    fn remove_cluster_provider(&self, cluster: &str, provider: &str) -> StoreResult<()> {
        self.transaction(|tx| {
            let default: Vec<String> = query(
                tx,
                "cluster_key_providers",
                "SELECT provider FROM cluster_key_providers WHERE cluster = ?1",
                [cluster],
                |r| r.get("provider"),
            )?;
            if default.iter().any(|d| d == provider) {
                return Err(StoreError::InUse(format!(
                    "key provider {provider} is cluster {cluster}'s default"
                )));
            }
            let n = exec(
                tx,
                "DELETE FROM cluster_providers WHERE cluster = ?1 AND provider = ?2",
                params![cluster, provider],
            )
            .map_err(backend)?;
            one_changed(n, &format!("key provider {provider} of cluster {cluster}"))
        })
    }

    fn cluster_providers(&self, cluster: &str) -> StoreResult<Vec<String>> {
        query(
            &*self.conn()?,
            "cluster_providers",
            "SELECT provider FROM cluster_providers WHERE cluster = ?1 ORDER BY provider",
            [cluster],
            |r| r.get("provider"),
        )
    }

    fn cluster_key_provider(&self, cluster: &str) -> StoreResult<Option<String>> {
        self.column(
            "cluster_key_providers",
            "provider",
            "SELECT provider FROM cluster_key_providers WHERE cluster = ?1",
            [cluster],
        )
    }

    fn signing_key(&self, candidate: &str, now: i64) -> StoreResult<String> {
        let sealed = match self.sealing.first() {
            Some(key) => key.seal(SIGNING_KEY_LABEL, candidate)?,
            None => candidate.to_owned(),
        };
        let stored: Option<String> = self.transaction(|tx| {
            exec(
                tx,
                "INSERT INTO signing_keys (id, sealed_key, created_at) VALUES ('current', ?1, ?2) ON CONFLICT DO NOTHING",
                params![sealed, now],
            )
            .map_err(backend)?;
            Ok(query(
                tx,
                "signing_keys",
                "SELECT sealed_key FROM signing_keys WHERE id = 'current'",
                [],
                |r| r.get("sealed_key"),
            )?
            .pop())
        })?;
        let stored = stored.ok_or_else(|| StoreError::NotFound("the signing key".into()))?;
        Ok(sealing::open(&self.sealing, SIGNING_KEY_LABEL, &stored)?
            .as_str()
            .to_owned())
    }

    fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
        let rows = signing_key_rows(&*self.conn()?)?;
        open_signing_keys(rows, &self.sealing)
    }

    fn rotate_signing_key(&self, candidate: &str, now: i64, grace: i64) -> StoreResult<()> {
        self.transaction(|tx| {
            let rows = signing_key_rows(tx)?;
            let (as_previous, created_at, new) =
                rotation_rows(&rows, &self.sealing, candidate, now, grace)?;
            exec(tx, UPSERT_PREVIOUS_SIGNING_KEY, params![as_previous, created_at, now])
                .map_err(backend)?;
            exec(
                tx,
                "UPDATE signing_keys SET sealed_key = ?1, created_at = ?2, retired_at = NULL WHERE id = 'current'",
                params![new, now],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn claim_sweep(
        &self,
        period: i64,
        replica: &str,
        now: i64,
        forget_before: i64,
    ) -> StoreResult<bool> {
        self.transaction(|tx| {
            exec(tx, "DELETE FROM sweeps WHERE period < ?1", [forget_before]).map_err(backend)?;
            let n = exec(
                tx,
                "INSERT INTO sweeps (period, replica, at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![period, replica, now],
            )
            .map_err(backend)?;
            Ok(n == 1)
        })
    }

    fn config_generation(&self) -> StoreResult<i64> {
        self.column(
            "generations",
            "value",
            "SELECT value FROM generations WHERE name = 'config'",
            [],
        )?
        .ok_or_else(|| StoreError::NotFound("the configuration generation".into()))
    }
}

#[cfg(test)]
mod tests;
