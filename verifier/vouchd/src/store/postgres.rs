//! The PostgreSQL store, for several vouchd replicas sharing one database (`store =
//! "postgres://..."` in the configuration).
//!
//! Blocking, like the trait: the `postgres` crate (tokio-postgres behind a small runtime of
//! its own per connection) with an r2d2 pool of connections, called on tokio's blocking pool
//! through [`super::run`] like SQLite. That keeps one sync [`Store`] trait and one way of
//! calling it for both backends, and each call holds one pooled connection for its few
//! statements; an async client would need the trait made async first.
//!
//! TLS to the database: rustls, verifying the server against the system's roots plus an
//! optional CA file, whenever the URL's `sslmode` asks for it (`require`; the default `prefer`
//! uses TLS when the server offers it). The password comes from [`PgOptions::password`] (a
//! file or the environment), never from logs: only the host and database are logged.
//!
//! What replicas share goes through the database: the replay record of signed requests
//! ([`Store::record_request`]: the insert of a key seen concurrently by two replicas blocks
//! on the other's and then does nothing), the signing key ([`Store::signing_key`]), one sweep
//! per period ([`Store::claim_sweep`]), the configuration generation (triggers of migration
//! 0003) and the events, whose ids are handed out under a transaction-level advisory lock so
//! that they commit in id order and a follower reading "after id N" never skips one.

mod rows;

use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{GenericClient, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::rows::{FromRow, PrincipalRow, read_all};
use super::migrate::{self, AppliedMigration, Dialect, MIGRATIONS, MigrationBackend};
use super::records::TextColumns as _;
use super::sealing::{self, SealingKey};
use super::{
    AttestationRecord, CaCert, Cluster, ClusterEk, Event, Host, HostState, KeyProviderRecord,
    KeyServerRecord, ManagementServer, Principal, PrincipalKind, SoftwareVersionRecord, Store,
    StoreError, StoreResult, StoredSigningKey, TokenInfo, open_signing_keys, rotation_rows,
    signing_key_label,
};

type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Advisory lock keys (one namespace per database): the migrations, bootstrap, event ids.
const MIGRATION_LOCK: i64 = 0x766f_7563_6801;
const BOOTSTRAP_LOCK: i64 = 0x766f_7563_6802;
const EVENTS_LOCK: i64 = 0x766f_7563_6803;

/// How to reach the database.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `postgres://user@host:port/database?sslmode=...` (libpq's URL form).
    pub url: String,
    /// The password, when not in the URL.
    pub password: Option<String>,
    /// A PEM file of CA certificates trusted for the server, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The most connections this process keeps open.
    pub max_connections: u32,
}

/// The PostgreSQL store.
pub struct PostgresStore {
    /// Always set; taken only when the store is dropped (see its `Drop`).
    pool: Option<Pool>,
    /// `host/database`, for logs and errors.
    target: String,
    /// The key-encryption keys: the first seals, every one opens.
    sealing: Vec<SealingKey>,
    /// Results kept per host besides the state changes (0: every one); see
    /// [`super::sqlite::SqliteStore::with_retention`].
    retention: u32,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing a connection blocks on the client's own small runtime, which tokio refuses
        // on a runtime's thread (a panic): there, the pool is closed on a thread of its own.
        if let Some(pool) = self.pool.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("vouchd-pg-close".into())
                .spawn(move || drop(pool));
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;

fn backend(e: postgres::Error) -> StoreError {
    // The error's text names neither the password nor the URL.
    StoreError::Backend(e.to_string())
}

fn pool_error(e: r2d2::Error) -> StoreError {
    StoreError::Backend(format!("no database connection: {e}"))
}

/// A uniqueness violation is `Conflict(what)`, a foreign-key violation `NotFound(parent)`.
fn insert_error(e: postgres::Error, what: &str, parent: &str) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(what.to_owned()),
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound(parent.to_owned()),
        _ => backend(e),
    }
}

/// A foreign-key violation on delete is `InUse`: `what` is still used by `users`.
fn in_use(e: postgres::Error, what: &str, users: &str) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::InUse(format!("{what} is used by {users}"))
        }
        _ => backend(e),
    }
}

fn one_changed(n: u64, what: &str) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::NotFound(what.to_owned()))
    } else {
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn client_key_label(name: &str) -> String {
    format!("key_servers.client_key:{name}")
}

const SIGNING_KEY_LABEL: &str = "signing_keys.sealed_key:current";

/// The current and previous signing keys' rows, the current first; `lock` is appended to the
/// query (" FOR UPDATE" in a rotation).
fn signing_key_rows(
    c: &mut impl GenericClient,
    lock: &str,
) -> StoreResult<Vec<super::SigningKeyRow>> {
    let found = c
        .query(
            &format!("SELECT id, sealed_key, created_at, retired_at FROM signing_keys WHERE id IN ('current', 'previous') ORDER BY id{lock}"),
            &[],
        )
        .map_err(backend)?;
    read_all(&found, "signing_keys", |r| {
        Ok((
            r.get("id")?,
            r.get("sealed_key")?,
            r.get("created_at")?,
            r.get("retired_at")?,
        ))
    })
}

fn all<T: FromRow>(
    c: &mut impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<T>> {
    let rows = c.query(sql, params).map_err(backend)?;
    read_all(&rows, T::TABLE, T::from_row)
}

fn one<T: FromRow>(
    c: &mut impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<T>> {
    Ok(all(c, sql, params)?.into_iter().next())
}

fn exec(c: &mut impl GenericClient, sql: &str, params: Params<'_>) -> StoreResult<u64> {
    c.execute(sql, params).map_err(backend)
}

/// The principals of `rows`, each with its groups.
fn with_groups(c: &mut impl GenericClient, rows: Vec<PrincipalRow>) -> StoreResult<Vec<Principal>> {
    rows.into_iter()
        .map(|p| {
            let found = c
                .query(
                    "SELECT group_name FROM group_members WHERE principal = $1 ORDER BY group_name",
                    &[&p.name],
                )
                .map_err(backend)?;
            let groups = read_all(&found, "group_members", |r| r.get("group_name"))?;
            Ok(Principal {
                name: p.name,
                kind: p.kind,
                groups,
                created_at: p.created_at,
            })
        })
        .collect()
}

/// A host's state, the row locked for the transaction; `NotFound` without the host.
fn host_state(tx: &mut Transaction<'_>, ek_hash: &str) -> StoreResult<HostState> {
    let found = tx
        .query(
            "SELECT state FROM hosts WHERE ek_hash = $1 FOR UPDATE",
            &[&ek_hash],
        )
        .map_err(backend)?;
    read_all(&found, "hosts", |r| r.name("state", HostState::parse))?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("host with EK {ek_hash}")))
}

/// Inserts an event under the events lock (ids commit in order); returns its id.
fn insert_event(
    tx: &mut Transaction<'_>,
    at: i64,
    kind: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> StoreResult<i64> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])
        .map_err(backend)?;
    let row = tx
        .query_one(
            "INSERT INTO events (at, kind, subject, detail) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&at, &kind, &subject, &detail.to_string()],
        )
        .map_err(backend)?;
    row.try_get("id").map_err(backend)
}

/// The rustls configuration for TLS to the database: the system's roots and `ca_file`'s.
fn tls(ca_file: Option<&PathBuf>) -> StoreResult<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, as every rustls client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| StoreError::Backend(format!("store_ca_file {}: {e}", path.display())))?;
        let mut added = 0_usize;
        for cert in rustls_pemfile_certs(&pem, path)? {
            roots.add(cert).map_err(|e| {
                StoreError::Backend(format!("store_ca_file {}: {e}", path.display()))
            })?;
            added = added.saturating_add(1);
        }
        if added == 0 {
            return Err(StoreError::Backend(format!(
                "store_ca_file {}: no certificate in it",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(
    pem: &[u8],
    path: &std::path::Path,
) -> StoreResult<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Backend(format!("store_ca_file {}: {e}", path.display())))
}

/// The runner's PostgreSQL side.
struct Migrations<'a>(&'a mut postgres::Client);

const INSERT_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)";

impl MigrationBackend for Migrations<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>> {
        self.0
            .batch_execute(migrate::SCHEMA_MIGRATIONS_TABLE)
            .map_err(backend)?;
        all(
            self.0,
            "SELECT * FROM schema_migrations ORDER BY version",
            &[],
        )
    }

    fn apply(&mut self, sql: &str, record: &AppliedMigration) -> StoreResult<()> {
        let mut tx = self.0.transaction().map_err(backend)?;
        tx.batch_execute(sql).map_err(backend)?;
        exec(
            &mut tx,
            INSERT_MIGRATION,
            &[
                &record.version,
                &record.name,
                &record.checksum,
                &record.applied_at,
            ],
        )?;
        tx.commit().map_err(backend)
    }
}

impl PostgresStore {
    /// Connects, and brings the schema up to date (one replica at a time: the others wait on
    /// an advisory lock, then find nothing left to do).
    pub fn open(options: &PgOptions) -> StoreResult<Self> {
        let mut config = postgres::Config::from_str(&options.url)
            .map_err(|e| StoreError::Backend(format!("the store URL does not parse: {e}")))?;
        if let Some(password) = &options.password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let target = format!(
            "{}/{}",
            config
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(name) => name.clone(),
                    postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_default(),
            config.get_dbname().unwrap_or_default()
        );
        let manager = PostgresConnectionManager::new(config, tls(options.ca_file.as_ref())?);
        // One connection first, so that a wrong address, password or certificate fails now
        // with its own reason rather than after the pool's timeout.
        r2d2::ManageConnection::connect(&manager)
            .map_err(|e| StoreError::Backend(format!("cannot connect to {target}: {e}")))?;
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(|e| StoreError::Backend(format!("cannot connect to {target}: {e}")))?;
        let store = Self {
            pool: Some(pool),
            target,
            sealing: Vec::new(),
            retention: 0,
        };
        store.migrate()?;
        let tls = store.uses_tls()?;
        tracing::info!(database = %store.target, tls, "opened the PostgreSQL store");
        Ok(store)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(backend)?;
        let result = migrate::migrate(&mut Migrations(&mut conn), MIGRATIONS, crate::now());
        let unlocked = conn
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .map_err(backend);
        result?;
        unlocked.map(drop)
    }

    /// Seals under `current` from now on; see [`super::sqlite::SqliteStore::with_sealing`].
    #[must_use]
    pub fn with_sealing(mut self, current: SealingKey, previous: Option<SealingKey>) -> Self {
        self.sealing = std::iter::once(current).chain(previous).collect();
        self
    }

    /// Keeps, per host, the last `results` results and every state change (0: every result),
    /// as [`super::sqlite::SqliteStore::with_retention`] does.
    #[must_use]
    pub fn with_retention(mut self, results: u32) -> Self {
        self.retention = results;
        self
    }

    /// Seals under the current key every secret that is not; returns how many.
    pub fn reseal_secrets(&self) -> StoreResult<usize> {
        let Some(current) = self.sealing.first() else {
            return Ok(0);
        };
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(backend)?;
        let found = tx
            .query("SELECT name, client_key FROM key_servers FOR UPDATE", &[])
            .map_err(backend)?;
        let mut secrets: Vec<(String, String, String)> = read_all(&found, "key_servers", |r| {
            let name: String = r.get("name")?;
            Ok((client_key_label(&name), r.get("client_key")?, name))
        })?;
        let found = tx
            .query(
                "SELECT id, sealed_key FROM signing_keys WHERE id IN ('current', 'previous') FOR UPDATE",
                &[],
            )
            .map_err(backend)?;
        let signing: Vec<(String, String)> = read_all(&found, "signing_keys", |r| {
            Ok((r.get("id")?, r.get("sealed_key")?))
        })?;
        for (id, stored) in signing {
            secrets.push((signing_key_label(&id), stored, String::new()));
        }

        let mut count: usize = 0;
        for (label, stored, name) in secrets {
            if sealing::sealed_by(&stored, current) {
                continue;
            }
            let sealed = current.seal(&label, &sealing::open(&self.sealing, &label, &stored)?)?;
            if name.is_empty() {
                let id = label.rsplit(':').next().unwrap_or("current").to_owned();
                exec(
                    &mut tx,
                    "UPDATE signing_keys SET sealed_key = $1 WHERE id = $2",
                    &[&sealed, &id],
                )?;
            } else {
                exec(
                    &mut tx,
                    "UPDATE key_servers SET client_key = $1 WHERE name = $2",
                    &[&sealed, &name],
                )?;
            }
            count = count.saturating_add(1);
        }
        tx.commit().map_err(backend)?;
        Ok(count)
    }

    fn conn(
        &self,
    ) -> StoreResult<r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closed".into()))?
            .get()
            .map_err(pool_error)
    }

    /// Whether this store's connections to the server are encrypted (TLS).
    pub fn uses_tls(&self) -> StoreResult<bool> {
        let row = self
            .conn()?
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .map_err(backend)?;
        row.try_get("ssl").map_err(backend)
    }

    /// The schema version now in force.
    pub fn schema_version(&self) -> StoreResult<i64> {
        let row = self
            .conn()?
            .query_one(
                "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations",
                &[],
            )
            .map_err(backend)?;
        row.try_get("v").map_err(backend)
    }

    /// Runs `f` in a transaction, committed when it succeeds.
    fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(backend)?;
        let value = f(&mut tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }

    fn execute(
        &self,
        sql: &str,
        params: Params<'_>,
        fail: impl FnOnce(postgres::Error) -> StoreError,
    ) -> StoreResult<u64> {
        self.conn()?.execute(sql, params).map_err(fail)
    }

    fn insert(&self, sql: &str, params: Params<'_>, what: &str, parent: &str) -> StoreResult<()> {
        self.execute(sql, params, |e| insert_error(e, what, parent))
            .map(drop)
    }

    fn change_one(&self, sql: &str, params: Params<'_>, what: &str) -> StoreResult<()> {
        one_changed(self.execute(sql, params, backend)?, what)
    }

    fn all<T: FromRow>(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<T>> {
        all(&mut *self.conn()?, sql, params)
    }

    fn one<T: FromRow>(&self, sql: &str, params: Params<'_>) -> StoreResult<Option<T>> {
        one(&mut *self.conn()?, sql, params)
    }

    fn principals(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Principal>> {
        let mut conn = self.conn()?;
        let rows = all(&mut *conn, sql, params)?;
        with_groups(&mut *conn, rows)
    }

    fn open_key_server(&self, mut record: KeyServerRecord) -> StoreResult<KeyServerRecord> {
        let label = client_key_label(&record.name);
        record.client_key = sealing::open(&self.sealing, &label, &record.client_key)?
            .as_str()
            .to_owned();
        Ok(record)
    }

    /// Runs `sql` as it is, for tests that break rows on purpose.
    pub fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        self.conn()?.batch_execute(sql).map_err(backend)
    }
}

impl Store for PostgresStore {
    fn bootstrap(
        &self,
        principal: &str,
        group: &str,
        token: &TokenInfo,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<bool> {
        self.transaction(|tx| {
            // Replicas starting together: one bootstraps, the others wait and see it done.
            exec(tx, "SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])?;
            if !tx
                .query("SELECT 1 FROM meta WHERE key = 'bootstrapped'", &[])
                .map_err(backend)?
                .is_empty()
            {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO principals (name, kind, created_at) VALUES ($1, $2, $3)",
                &[&principal, &PrincipalKind::Person.as_str(), &now],
            )
            .map_err(|e| insert_error(e, &format!("principal {principal}"), ""))?;
            exec(
                tx,
                "INSERT INTO group_members (group_name, principal) VALUES ($1, $2)",
                &[&group, &principal],
            )?;
            exec(
                tx,
                "INSERT INTO tokens (id, principal, hash, description, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&token.id, &principal, &token_hash, &token.description, &now],
            )?;
            exec(
                tx,
                "INSERT INTO meta (key, value) VALUES ('bootstrapped', $1)",
                &[&now.to_string()],
            )?;
            Ok(true)
        })
    }

    fn create_principal(&self, name: &str, kind: PrincipalKind, now: i64) -> StoreResult<()> {
        self.insert(
            "INSERT INTO principals (name, kind, created_at) VALUES ($1, $2, $3)",
            &[&name, &kind.as_str(), &now],
            &format!("principal {name}"),
            "",
        )
    }

    fn get_principal(&self, name: &str) -> StoreResult<Option<Principal>> {
        Ok(self
            .principals("SELECT * FROM principals WHERE name = $1", &[&name])?
            .pop())
    }

    fn list_principals(&self) -> StoreResult<Vec<Principal>> {
        self.principals("SELECT * FROM principals ORDER BY name", &[])
    }

    fn delete_principal(&self, name: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM principals WHERE name = $1",
            &[&name],
            &format!("principal {name}"),
        )
    }

    fn add_to_group(&self, principal: &str, group: &str) -> StoreResult<()> {
        self.insert(
            "INSERT INTO group_members (group_name, principal) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&group, &principal],
            "",
            &format!("principal {principal}"),
        )
    }

    fn remove_from_group(&self, principal: &str, group: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM group_members WHERE group_name = $1 AND principal = $2",
            &[&group, &principal],
            &format!("membership of {principal} in {group}"),
        )
    }

    fn create_token(&self, token: &TokenInfo, hash: &[u8]) -> StoreResult<()> {
        self.insert(
            "INSERT INTO tokens (id, principal, hash, description, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&token.id, &token.principal, &hash, &token.description, &token.created_at],
            &format!("token {}", token.id),
            &format!("principal {}", token.principal),
        )
    }

    fn principal_for_token(&self, hash: &[u8]) -> StoreResult<Option<Principal>> {
        Ok(self
            .principals(
                "SELECT p.* FROM tokens t JOIN principals p ON p.name = t.principal WHERE t.hash = $1",
                &[&hash],
            )?
            .pop())
    }

    fn list_tokens(&self, principal: &str) -> StoreResult<Vec<TokenInfo>> {
        self.all(
            "SELECT * FROM tokens WHERE principal = $1 ORDER BY created_at, id",
            &[&principal],
        )
    }

    fn delete_token(&self, principal: &str, id: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM tokens WHERE principal = $1 AND id = $2",
            &[&principal, &id],
            &format!("token {id}"),
        )
    }

    fn add_management_server(&self, s: &ManagementServer) -> StoreResult<()> {
        self.insert(
            "INSERT INTO management_servers (id, certificate, subject, fingerprint, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&s.id, &s.certificate, &s.subject, &s.fingerprint, &s.created_at],
            &format!("management server {} (or its certificate)", s.id),
            "",
        )
    }

    fn get_management_server(&self, id: &str) -> StoreResult<Option<ManagementServer>> {
        self.one("SELECT * FROM management_servers WHERE id = $1", &[&id])
    }

    fn list_management_servers(&self) -> StoreResult<Vec<ManagementServer>> {
        self.all("SELECT * FROM management_servers ORDER BY id", &[])
    }

    fn delete_management_server(&self, id: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM management_servers WHERE id = $1",
            &[&id],
            &format!("management server {id}"),
        )
    }

    fn record_request(&self, key: &str, now: i64, forget_before: i64) -> StoreResult<bool> {
        self.transaction(|tx| {
            exec(
                tx,
                "DELETE FROM seen_requests WHERE seen_at < $1",
                &[&forget_before],
            )?;
            let n = exec(
                tx,
                "INSERT INTO seen_requests (key, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&key, &now],
            )?;
            Ok(n == 1)
        })
    }

    fn create_cluster(&self, c: &Cluster) -> StoreResult<()> {
        self.insert(
            "INSERT INTO clusters (name, pcrs, bank, created_at, disabled_at) VALUES ($1, $2, $3, $4, $5)",
            &[&c.name, &json(&c.pcrs)?, &c.bank, &c.created_at, &c.disabled_at],
            &format!("cluster {}", c.name),
            "",
        )
    }

    fn get_cluster(&self, name: &str) -> StoreResult<Option<Cluster>> {
        self.one("SELECT * FROM clusters WHERE name = $1", &[&name])
    }

    fn update_cluster(&self, c: &Cluster) -> StoreResult<()> {
        self.change_one(
            "UPDATE clusters SET pcrs = $2, bank = $3, disabled_at = $4 WHERE name = $1",
            &[&c.name, &json(&c.pcrs)?, &c.bank, &c.disabled_at],
            &format!("cluster {}", c.name),
        )
    }

    fn list_clusters(&self) -> StoreResult<Vec<Cluster>> {
        self.all("SELECT * FROM clusters ORDER BY name", &[])
    }

    fn delete_cluster(&self, name: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM clusters WHERE name = $1",
            &[&name],
            &format!("cluster {name}"),
        )
    }

    fn add_ca_cert(&self, c: &CaCert) -> StoreResult<()> {
        self.insert(
            "INSERT INTO cluster_ca_certs (cluster, id, subject, der, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&c.cluster, &c.id, &c.subject, &c.der, &c.created_at],
            &format!("CA certificate {}", c.id),
            &format!("cluster {}", c.cluster),
        )
    }

    fn list_ca_certs(&self, cluster: &str) -> StoreResult<Vec<CaCert>> {
        self.all(
            "SELECT * FROM cluster_ca_certs WHERE cluster = $1 ORDER BY created_at, id",
            &[&cluster],
        )
    }

    fn delete_ca_cert(&self, cluster: &str, id: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM cluster_ca_certs WHERE cluster = $1 AND id = $2",
            &[&cluster, &id],
            &format!("CA certificate {id}"),
        )
    }

    fn add_cluster_ek(&self, ek: &ClusterEk) -> StoreResult<()> {
        self.insert(
            "INSERT INTO cluster_eks (cluster, ek_hash, kind, der, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&ek.cluster, &ek.ek_hash, &ek.kind.as_str(), &ek.der, &ek.created_at],
            &format!("EK {}", ek.ek_hash),
            &format!("cluster {}", ek.cluster),
        )
    }

    fn list_cluster_eks(&self, cluster: &str) -> StoreResult<Vec<ClusterEk>> {
        self.all(
            "SELECT * FROM cluster_eks WHERE cluster = $1 ORDER BY created_at, ek_hash",
            &[&cluster],
        )
    }

    fn delete_cluster_ek(&self, cluster: &str, ek_hash: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM cluster_eks WHERE cluster = $1 AND ek_hash = $2",
            &[&cluster, &ek_hash],
            &format!("EK {ek_hash}"),
        )
    }

    fn put_software_version(&self, v: &SoftwareVersionRecord) -> StoreResult<()> {
        self.insert(
            "INSERT INTO software_versions (cluster, name, reference, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (cluster, name) DO UPDATE SET reference = excluded.reference",
            &[&v.cluster, &v.name, &json(&v.reference)?, &v.created_at],
            &format!("software version {}", v.name),
            &format!("cluster {}", v.cluster),
        )
    }

    fn list_software_versions(&self, cluster: &str) -> StoreResult<Vec<SoftwareVersionRecord>> {
        self.all(
            "SELECT * FROM software_versions WHERE cluster = $1 ORDER BY name",
            &[&cluster],
        )
    }

    fn delete_software_version(&self, cluster: &str, name: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM software_versions WHERE cluster = $1 AND name = $2",
            &[&cluster, &name],
            &format!("software version {name}"),
        )
    }

    fn add_host(&self, h: &Host) -> StoreResult<()> {
        self.insert(
            "INSERT INTO hosts (ek_hash, cluster, name, added_by, ak_public, state, attested_at, valid_until, software_version, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &h.ek_hash,
                &h.cluster,
                &h.name,
                &h.added_by,
                &h.ak_public,
                &h.state.as_str(),
                &h.attested_at,
                &h.valid_until,
                &h.software_version,
                &h.created_at,
            ],
            &format!("host with EK {}", h.ek_hash),
            &format!("cluster {}", h.cluster),
        )
    }

    fn get_host(&self, ek_hash: &str) -> StoreResult<Option<Host>> {
        self.one("SELECT * FROM hosts WHERE ek_hash = $1", &[&ek_hash])
    }

    fn list_hosts(&self, cluster: &str) -> StoreResult<Vec<Host>> {
        self.all(
            "SELECT * FROM hosts WHERE cluster = $1 ORDER BY name, ek_hash",
            &[&cluster],
        )
    }

    fn list_all_hosts(&self) -> StoreResult<Vec<Host>> {
        self.all("SELECT * FROM hosts ORDER BY cluster, name, ek_hash", &[])
    }

    fn delete_host(&self, cluster: &str, ek_hash: &str) -> StoreResult<()> {
        self.change_one(
            "DELETE FROM hosts WHERE cluster = $1 AND ek_hash = $2",
            &[&cluster, &ek_hash],
            &format!("host with EK {ek_hash}"),
        )
    }

    fn set_host_ak(&self, ek_hash: &str, ak_public: &[u8]) -> StoreResult<()> {
        self.change_one(
            "UPDATE hosts SET ak_public = $1, last_clock = NULL WHERE ek_hash = $2",
            &[&ak_public, &ek_hash],
            &format!("host with EK {ek_hash}"),
        )
    }

    fn host_clock(&self, ek_hash: &str) -> StoreResult<Option<String>> {
        let found = self
            .conn()?
            .query(
                "SELECT last_clock FROM hosts WHERE ek_hash = $1",
                &[&ek_hash],
            )
            .map_err(backend)?;
        let clock: Vec<Option<String>> = read_all(&found, "hosts", |r| r.get("last_clock"))?;
        Ok(clock.into_iter().next().flatten())
    }

    fn set_host_clock(&self, ek_hash: &str, clock: &str) -> StoreResult<()> {
        self.change_one(
            "UPDATE hosts SET last_clock = $1 WHERE ek_hash = $2",
            &[&clock, &ek_hash],
            &format!("host with EK {ek_hash}"),
        )
    }

    fn record_attestation(&self, a: &AttestationRecord) -> StoreResult<super::Recorded> {
        let state = if a.attested {
            HostState::Attested
        } else {
            HostState::NotAttested
        };
        self.transaction(|tx| {
            let before = host_state(tx, &a.ek_hash)?;
            exec(
                tx,
                "INSERT INTO attestations (ek_hash, cluster, at, attested, software_version, reason, pcr_digest, nonce, valid_until, token, presented, config_generation)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &a.ek_hash,
                    &a.cluster,
                    &a.at,
                    &a.attested,
                    &a.software_version,
                    &a.reason,
                    &a.pcr_digest,
                    &a.nonce,
                    &a.valid_until,
                    &a.token,
                    &a.presented.as_ref().map(serde_json::Value::to_string),
                    &a.config_generation,
                ],
            )?;
            exec(
                tx,
                "UPDATE hosts SET state = $1, attested_at = $2, valid_until = $3, software_version = $4 WHERE ek_hash = $5",
                &[
                    &state.as_str(),
                    &a.attested.then_some(a.at),
                    &a.valid_until,
                    &a.software_version,
                    &a.ek_hash,
                ],
            )?;
            if self.retention > 0 && before == state {
                // Retention: past the last N, a result that repeats the one before it goes;
                // the first result and every state change stay.
                exec(
                    tx,
                    "DELETE FROM attestations WHERE id IN (
                        SELECT id FROM (
                            SELECT id, attested,
                                   LAG(attested) OVER (ORDER BY id) AS previous,
                                   ROW_NUMBER() OVER (ORDER BY id DESC) AS newest
                            FROM attestations WHERE ek_hash = $1
                        ) AS history WHERE newest > $2 AND previous = attested
                    )",
                    &[&a.ek_hash, &i64::from(self.retention)],
                )?;
            }
            let event = if before == state {
                None
            } else {
                let detail =
                    super::state_change_detail(&a.cluster, before, state, a.reason.as_deref());
                let kind = "host.state_changed";
                let id = insert_event(tx, a.at, kind, &a.ek_hash, &detail)?;
                Some(Event {
                    id,
                    at: a.at,
                    kind: kind.into(),
                    subject: a.ek_hash.clone(),
                    detail,
                })
            };
            Ok(super::Recorded { before, event })
        })
    }

    fn set_host_state(&self, ek_hash: &str, state: HostState) -> StoreResult<HostState> {
        self.transaction(|tx| {
            let before = host_state(tx, ek_hash)?;
            exec(
                tx,
                "UPDATE hosts SET state = $1 WHERE ek_hash = $2",
                &[&state.as_str(), &ek_hash],
            )?;
            Ok(before)
        })
    }

    fn expire_host(&self, ek_hash: &str, now: i64) -> StoreResult<Option<Event>> {
        self.transaction(|tx| {
            let found = tx
                .query(
                    "SELECT state, valid_until, cluster FROM hosts WHERE ek_hash = $1 FOR UPDATE",
                    &[&ek_hash],
                )
                .map_err(backend)?;
            let (before, valid_until, cluster) = read_all(&found, "hosts", |r| {
                Ok((
                    r.name("state", HostState::parse)?,
                    r.get::<Option<i64>>("valid_until")?,
                    r.get::<String>("cluster")?,
                ))
            })?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("host with EK {ek_hash}")))?;
            let expired = before == HostState::Attested && valid_until.is_some_and(|v| v < now);
            if !expired {
                return Ok(None);
            }
            let to = HostState::Unknown;
            exec(
                tx,
                "UPDATE hosts SET state = $1 WHERE ek_hash = $2",
                &[&to.as_str(), &ek_hash],
            )?;
            let detail =
                super::state_change_detail(&cluster, before, to, Some(super::EXPIRED_REASON));
            let kind = "host.state_changed";
            let id = insert_event(tx, now, kind, ek_hash, &detail)?;
            Ok(Some(Event {
                id,
                at: now,
                kind: kind.into(),
                subject: ek_hash.into(),
                detail,
            }))
        })
    }

    fn list_attestations(&self, ek_hash: &str, limit: u32) -> StoreResult<Vec<AttestationRecord>> {
        self.all(
            "SELECT * FROM attestations WHERE ek_hash = $1 ORDER BY at DESC, id DESC LIMIT $2",
            &[&ek_hash, &i64::from(limit)],
        )
    }

    fn add_event(
        &self,
        at: i64,
        kind: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<i64> {
        self.transaction(|tx| insert_event(tx, at, kind, subject, detail))
    }

    fn list_events(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        self.all(
            "SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &i64::from(limit)],
        )
    }

    fn add_key_server(&self, k: &KeyServerRecord) -> StoreResult<()> {
        let client_key = match self.sealing.first() {
            Some(key) => key.seal(&client_key_label(&k.name), &k.client_key)?,
            None => k.client_key.clone(),
        };
        self.insert(
            "INSERT INTO key_servers (name, endpoints, client_certificate, client_key, ca_certificates, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&k.name, &json(&k.endpoints)?, &k.client_certificate, &client_key, &k.ca_certificates, &k.created_at],
            &format!("key server {}", k.name),
            "",
        )
    }

    fn get_key_server(&self, name: &str) -> StoreResult<Option<KeyServerRecord>> {
        self.one("SELECT * FROM key_servers WHERE name = $1", &[&name])?
            .map(|r| self.open_key_server(r))
            .transpose()
    }

    fn list_key_servers(&self) -> StoreResult<Vec<KeyServerRecord>> {
        self.all("SELECT * FROM key_servers ORDER BY name", &[])?
            .into_iter()
            .map(|r| self.open_key_server(r))
            .collect()
    }

    fn delete_key_server(&self, name: &str) -> StoreResult<()> {
        let what = format!("key server {name}");
        let n = self.execute("DELETE FROM key_servers WHERE name = $1", &[&name], |e| {
            in_use(e, &what, "key providers")
        })?;
        one_changed(n, &what)
    }

    fn add_key_provider(&self, p: &KeyProviderRecord) -> StoreResult<()> {
        self.insert(
            "INSERT INTO key_providers (name, key_server, primary_key_id, primary_key_version, retired_keys, wrapping, refresh_seconds, lifetime_seconds, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&p.name, &p.key_server, &p.primary_key_id, &i64::from(p.primary_key_version), &json(&p.retired)?, &p.wrapping.as_str(), &p.refresh_seconds, &p.lifetime_seconds, &p.created_at],
            &format!("key provider {}", p.name),
            &format!("key server {}", p.key_server),
        )
    }

    fn get_key_provider(&self, name: &str) -> StoreResult<Option<KeyProviderRecord>> {
        self.one("SELECT * FROM key_providers WHERE name = $1", &[&name])
    }

    fn list_key_providers(&self) -> StoreResult<Vec<KeyProviderRecord>> {
        self.all("SELECT * FROM key_providers ORDER BY name", &[])
    }

    fn update_key_provider(&self, p: &KeyProviderRecord) -> StoreResult<()> {
        self.change_one(
            "UPDATE key_providers SET primary_key_id = $2, primary_key_version = $3, retired_keys = $4 WHERE name = $1",
            &[&p.name, &p.primary_key_id, &i64::from(p.primary_key_version), &json(&p.retired)?],
            &format!("key provider {}", p.name),
        )
    }

    fn delete_key_provider(&self, name: &str) -> StoreResult<()> {
        let what = format!("key provider {name}");
        let n = self.execute("DELETE FROM key_providers WHERE name = $1", &[&name], |e| {
            in_use(e, &what, "clusters")
        })?;
        one_changed(n, &what)
    }

    fn set_cluster_key_provider(&self, cluster: &str, provider: Option<&str>) -> StoreResult<()> {
        self.transaction(|tx| {
            match provider {
                Some(p) => {
                    let parent = format!("cluster {cluster} or key provider {p}");
                    tx.execute(
                        "INSERT INTO cluster_providers (cluster, provider) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&cluster, &p],
                    )
                    .map_err(|e| insert_error(e, "", &parent))?;
                    tx.execute(
                        "INSERT INTO cluster_key_providers (cluster, provider) VALUES ($1, $2) ON CONFLICT (cluster) DO UPDATE SET provider = excluded.provider",
                        &[&cluster, &p],
                    )
                    .map_err(|e| insert_error(e, "", &parent))?;
                }
                None => {
                    exec(
                        tx,
                        "DELETE FROM cluster_providers WHERE cluster = $1 AND provider IN (SELECT provider FROM cluster_key_providers WHERE cluster = $1)",
                        &[&cluster],
                    )?;
                    exec(
                        tx,
                        "DELETE FROM cluster_key_providers WHERE cluster = $1",
                        &[&cluster],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn add_cluster_provider(&self, cluster: &str, provider: &str) -> StoreResult<()> {
        self.insert(
            "INSERT INTO cluster_providers (cluster, provider) VALUES ($1, $2)",
            &[&cluster, &provider],
            &format!("key provider {provider} of cluster {cluster}"),
            &format!("cluster {cluster} or key provider {provider}"),
        )
    }

    fn remove_cluster_provider(&self, cluster: &str, provider: &str) -> StoreResult<()> {
        self.transaction(|tx| {
            let found = tx
                .query(
                    "SELECT provider FROM cluster_key_providers WHERE cluster = $1",
                    &[&cluster],
                )
                .map_err(backend)?;
            let default: Vec<String> =
                read_all(&found, "cluster_key_providers", |r| r.get("provider"))?;
            if default.iter().any(|d| d == provider) {
                return Err(StoreError::InUse(format!(
                    "key provider {provider} is cluster {cluster}'s default"
                )));
            }
            let n = exec(
                tx,
                "DELETE FROM cluster_providers WHERE cluster = $1 AND provider = $2",
                &[&cluster, &provider],
            )?;
            one_changed(n, &format!("key provider {provider} of cluster {cluster}"))
        })
    }

    fn cluster_providers(&self, cluster: &str) -> StoreResult<Vec<String>> {
        let found = self
            .conn()?
            .query(
                "SELECT provider FROM cluster_providers WHERE cluster = $1 ORDER BY provider",
                &[&cluster],
            )
            .map_err(backend)?;
        read_all(&found, "cluster_providers", |r| r.get("provider"))
    }

    fn cluster_key_provider(&self, cluster: &str) -> StoreResult<Option<String>> {
        let found = self
            .conn()?
            .query(
                "SELECT provider FROM cluster_key_providers WHERE cluster = $1",
                &[&cluster],
            )
            .map_err(backend)?;
        Ok(
            read_all(&found, "cluster_key_providers", |r| r.get("provider"))?
                .into_iter()
                .next(),
        )
    }

    fn signing_key(&self, candidate: &str, now: i64) -> StoreResult<String> {
        let sealed = match self.sealing.first() {
            Some(key) => key.seal(SIGNING_KEY_LABEL, candidate)?,
            None => candidate.to_owned(),
        };
        let stored: String = self.transaction(|tx| {
            exec(
                tx,
                "INSERT INTO signing_keys (id, sealed_key, created_at) VALUES ('current', $1, $2) ON CONFLICT DO NOTHING",
                &[&sealed, &now],
            )?;
            let found = tx
                .query("SELECT sealed_key FROM signing_keys WHERE id = 'current'", &[])
                .map_err(backend)?;
            read_all(&found, "signing_keys", |r| r.get("sealed_key"))?
                .pop()
                .ok_or_else(|| StoreError::NotFound("the signing key".into()))
        })?;
        Ok(sealing::open(&self.sealing, SIGNING_KEY_LABEL, &stored)?
            .as_str()
            .to_owned())
    }

    fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
        let rows = signing_key_rows(&mut *self.conn()?, "")?;
        open_signing_keys(rows, &self.sealing)
    }

    fn rotate_signing_key(&self, candidate: &str, now: i64, grace: i64) -> StoreResult<()> {
        self.transaction(|tx| {
            // Locks both rows: two rotations at once run one after the other, and the second
            // sees the first's previous key in its grace period.
            let rows = signing_key_rows(tx, " FOR UPDATE")?;
            let (as_previous, created_at, new) =
                rotation_rows(&rows, &self.sealing, candidate, now, grace)?;
            exec(
                tx,
                "INSERT INTO signing_keys (id, sealed_key, created_at, retired_at) VALUES ('previous', $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET sealed_key = excluded.sealed_key, created_at = excluded.created_at, retired_at = excluded.retired_at",
                &[&as_previous, &created_at, &now],
            )?;
            exec(
                tx,
                "UPDATE signing_keys SET sealed_key = $1, created_at = $2, retired_at = NULL WHERE id = 'current'",
                &[&new, &now],
            )?;
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
            exec(tx, "DELETE FROM sweeps WHERE period < $1", &[&forget_before])?;
            let n = exec(
                tx,
                "INSERT INTO sweeps (period, replica, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&period, &replica, &now],
            )?;
            Ok(n == 1)
        })
    }

    fn config_generation(&self) -> StoreResult<i64> {
        let found = self
            .conn()?
            .query("SELECT value FROM generations WHERE name = 'config'", &[])
            .map_err(backend)?;
        read_all(&found, "generations", |r| r.get("value"))?
            .pop()
            .ok_or_else(|| StoreError::NotFound("the configuration generation".into()))
    }
}
