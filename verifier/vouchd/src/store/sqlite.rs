//! The embedded default store: one SQLite file in the data directory, in WAL mode with
//! `synchronous=FULL` so that a committed change survives a power cut, and versioned
//! migrations recorded in `schema_migrations`.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and every call is short.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    AttestationRecord, CaCert, Cluster, ClusterEk, EkEntryKind, Event, Host, HostState,
    KeyProviderRecord, KeyServerRecord, ManagementServer, Principal, PrincipalKind,
    SoftwareVersionRecord, Store, StoreError, StoreResult, TokenInfo, WrappingMode,
};

/// The schema, one migration per entry, applied in order; never edit a released one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    principal TEXT NOT NULL REFERENCES principals(name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, principal)
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(name) ON DELETE CASCADE,
    hash BLOB NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE management_servers (
    id TEXT PRIMARY KEY,
    certificate BLOB NOT NULL,
    subject TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE seen_requests (
    key TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE TABLE clusters (
    name TEXT PRIMARY KEY,
    pcrs TEXT NOT NULL,
    bank TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE cluster_ca_certs (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    subject TEXT NOT NULL,
    der BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, id)
);
CREATE TABLE cluster_eks (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    ek_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    der BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, ek_hash)
);
CREATE TABLE software_versions (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, name)
);
CREATE TABLE hosts (
    ek_hash TEXT PRIMARY KEY,
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    added_by TEXT NOT NULL,
    ak_public BLOB,
    state TEXT NOT NULL,
    attested_at BIGINT,
    valid_until BIGINT,
    software_version TEXT,
    created_at BIGINT NOT NULL,
    last_clock TEXT
);
CREATE INDEX hosts_by_cluster ON hosts (cluster);
CREATE TABLE attestations (
    id INTEGER PRIMARY KEY,
    ek_hash TEXT NOT NULL REFERENCES hosts(ek_hash) ON DELETE CASCADE,
    cluster TEXT NOT NULL,
    at BIGINT NOT NULL,
    attested BOOLEAN NOT NULL,
    software_version TEXT,
    reason TEXT,
    pcr_digest TEXT,
    nonce TEXT,
    valid_until BIGINT,
    token TEXT
);
CREATE INDEX attestations_by_host ON attestations (ek_hash, at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
",
    ),
    (
        2,
        r"
CREATE TABLE key_servers (
    name TEXT PRIMARY KEY,
    endpoints TEXT NOT NULL,
    client_certificate TEXT NOT NULL,
    client_key TEXT NOT NULL,
    ca_certificates TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE key_providers (
    name TEXT PRIMARY KEY,
    key_server TEXT NOT NULL REFERENCES key_servers(name),
    primary_key_id TEXT NOT NULL,
    primary_key_version BIGINT NOT NULL,
    retired_keys TEXT NOT NULL,
    wrapping TEXT NOT NULL,
    refresh_seconds BIGINT NOT NULL,
    lifetime_seconds BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE cluster_key_providers (
    cluster TEXT PRIMARY KEY REFERENCES clusters(name) ON DELETE CASCADE,
    provider TEXT NOT NULL REFERENCES key_providers(name)
);
",
    ),
];

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
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

fn one_changed(n: usize, what: &str) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::NotFound(what.to_owned()))
    } else {
        Ok(())
    }
}

/// Maps a foreign-key violation on delete to `Conflict`: `what` is still used by `users`.
fn in_use(e: rusqlite::Error, what: &str, users: &str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    {
        return StoreError::InUse(format!("{what} is used by {users}"));
    }
    backend(e)
}

const PROVIDER_COLUMNS: &str = "name, key_server, primary_key_id, primary_key_version, retired_keys, wrapping, refresh_seconds, lifetime_seconds, created_at";

fn key_server_from(r: &Row<'_>) -> rusqlite::Result<KeyServerRecord> {
    let endpoints: String = r.get(1)?;
    Ok(KeyServerRecord {
        name: r.get(0)?,
        endpoints: serde_json::from_str(&endpoints).unwrap_or_default(),
        client_certificate: r.get(2)?,
        client_key: r.get(3)?,
        ca_certificates: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn key_provider_from(r: &Row<'_>) -> rusqlite::Result<KeyProviderRecord> {
    let retired: String = r.get(4)?;
    let wrapping: String = r.get(5)?;
    Ok(KeyProviderRecord {
        name: r.get(0)?,
        key_server: r.get(1)?,
        primary_key_id: r.get(2)?,
        primary_key_version: r.get(3)?,
        retired: serde_json::from_str(&retired).unwrap_or_default(),
        wrapping: WrappingMode::parse(&wrapping).unwrap_or(WrappingMode::Remote),
        refresh_seconds: r.get(6)?,
        lifetime_seconds: r.get(7)?,
        created_at: r.get(8)?,
    })
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
        // journal_mode answers with a row; the others are plain settings.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(backend)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("the database lock is poisoned".into()))
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
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .map_err(backend)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    let now = crate::now();
    for (version, sql) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, now],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

fn groups_of(conn: &Connection, principal: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT group_name FROM group_members WHERE principal = ?1 ORDER BY group_name",
    )?;
    stmt.query_map([principal], |r| r.get(0))?.collect()
}

fn principal_from(
    conn: &Connection,
    name: String,
    kind: String,
    created_at: i64,
) -> StoreResult<Principal> {
    let kind = PrincipalKind::parse(&kind)
        .ok_or_else(|| StoreError::Backend(format!("unknown principal kind {kind}")))?;
    let groups = groups_of(conn, &name).map_err(backend)?;
    Ok(Principal {
        name,
        kind,
        groups,
        created_at,
    })
}

fn host_from(r: &Row<'_>) -> rusqlite::Result<Host> {
    let state: String = r.get(5)?;
    Ok(Host {
        ek_hash: r.get(0)?,
        cluster: r.get(1)?,
        name: r.get(2)?,
        added_by: r.get(3)?,
        ak_public: r.get(4)?,
        state: HostState::parse(&state).unwrap_or(HostState::Unknown),
        attested_at: r.get(6)?,
        valid_until: r.get(7)?,
        software_version: r.get(8)?,
        created_at: r.get(9)?,
    })
}

const HOST_COLUMNS: &str = "ek_hash, cluster, name, added_by, ak_public, state, attested_at, valid_until, software_version, created_at";

fn cluster_from(r: &Row<'_>) -> rusqlite::Result<Cluster> {
    let pcrs: String = r.get(1)?;
    Ok(Cluster {
        name: r.get(0)?,
        pcrs: serde_json::from_str(&pcrs).unwrap_or_default(),
        bank: r.get(2)?,
        created_at: r.get(3)?,
    })
}

fn exists(conn: &Connection, sql: &str, key: &str) -> StoreResult<bool> {
    conn.query_row(sql, [key], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(backend)
}

impl Store for SqliteStore {
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
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(backend)?;
        let done = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'bootstrapped'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?;
        if done.is_some() {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO principals (name, kind, created_at) VALUES (?1, ?2, ?3)",
            params![principal, PrincipalKind::Person.as_str(), now],
        )
        .map_err(|e| insert_error(e, &format!("principal {principal}"), ""))?;
        tx.execute(
            "INSERT INTO group_members (group_name, principal) VALUES (?1, ?2)",
            params![group, principal],
        )
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO tokens (id, principal, hash, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.id, principal, token_hash, token.description, now],
        )
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('bootstrapped', ?1)",
            params![now.to_string()],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    fn create_principal(&self, name: &str, kind: PrincipalKind, now: i64) -> StoreResult<()> {
        self.conn()?
            .execute(
                "INSERT INTO principals (name, kind, created_at) VALUES (?1, ?2, ?3)",
                params![name, kind.as_str(), now],
            )
            .map_err(|e| insert_error(e, &format!("principal {name}"), ""))?;
        Ok(())
    }

    fn get_principal(&self, name: &str) -> StoreResult<Option<Principal>> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT name, kind, created_at FROM principals WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(backend)?;
        row.map(|(n, k, c)| principal_from(&conn, n, k, c))
            .transpose()
    }

    fn list_principals(&self) -> StoreResult<Vec<Principal>> {
        let conn = self.conn()?;
        let rows: Vec<(String, String, i64)> = {
            let mut stmt = conn
                .prepare("SELECT name, kind, created_at FROM principals ORDER BY name")
                .map_err(backend)?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<_>>()
                .map_err(backend)?
        };
        rows.into_iter()
            .map(|(n, k, c)| principal_from(&conn, n, k, c))
            .collect()
    }

    fn delete_principal(&self, name: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute("DELETE FROM principals WHERE name = ?1", [name])
            .map_err(backend)?;
        one_changed(n, &format!("principal {name}"))
    }

    fn add_to_group(&self, principal: &str, group: &str) -> StoreResult<()> {
        let conn = self.conn()?;
        if !exists(&conn, "SELECT 1 FROM principals WHERE name = ?1", principal)? {
            return Err(StoreError::NotFound(format!("principal {principal}")));
        }
        conn.execute(
            "INSERT INTO group_members (group_name, principal) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![group, principal],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn remove_from_group(&self, principal: &str, group: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM group_members WHERE group_name = ?1 AND principal = ?2",
                params![group, principal],
            )
            .map_err(backend)?;
        one_changed(n, &format!("membership of {principal} in {group}"))
    }

    fn create_token(&self, token: &TokenInfo, hash: &[u8]) -> StoreResult<()> {
        self.conn()?
            .execute(
                "INSERT INTO tokens (id, principal, hash, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.id, token.principal, hash, token.description, token.created_at],
            )
            .map_err(|e| {
                insert_error(e, &format!("token {}", token.id), &format!("principal {}", token.principal))
            })?;
        Ok(())
    }

    fn principal_for_token(&self, hash: &[u8]) -> StoreResult<Option<Principal>> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT p.name, p.kind, p.created_at FROM tokens t JOIN principals p ON p.name = t.principal WHERE t.hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(backend)?;
        row.map(|(n, k, c)| principal_from(&conn, n, k, c))
            .transpose()
    }

    fn list_tokens(&self, principal: &str) -> StoreResult<Vec<TokenInfo>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT id, principal, description, created_at FROM tokens WHERE principal = ?1 ORDER BY created_at, id")
            .map_err(backend)?;
        stmt.query_map([principal], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                principal: r.get(1)?,
                description: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)
    }

    fn delete_token(&self, principal: &str, id: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM tokens WHERE principal = ?1 AND id = ?2",
                params![principal, id],
            )
            .map_err(backend)?;
        one_changed(n, &format!("token {id}"))
    }

    fn add_management_server(&self, s: &ManagementServer) -> StoreResult<()> {
        self.conn()?
            .execute(
                "INSERT INTO management_servers (id, certificate, subject, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.id, s.certificate, s.subject, s.fingerprint, s.created_at],
            )
            .map_err(|e| insert_error(e, &format!("management server {} (or its certificate)", s.id), ""))?;
        Ok(())
    }

    fn get_management_server(&self, id: &str) -> StoreResult<Option<ManagementServer>> {
        self.conn()?
            .query_row(
                "SELECT id, certificate, subject, fingerprint, created_at FROM management_servers WHERE id = ?1",
                [id],
                |r| {
                    Ok(ManagementServer {
                        id: r.get(0)?,
                        certificate: r.get(1)?,
                        subject: r.get(2)?,
                        fingerprint: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
    }

    fn list_management_servers(&self) -> StoreResult<Vec<ManagementServer>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT id, certificate, subject, fingerprint, created_at FROM management_servers ORDER BY id")
            .map_err(backend)?;
        stmt.query_map([], |r| {
            Ok(ManagementServer {
                id: r.get(0)?,
                certificate: r.get(1)?,
                subject: r.get(2)?,
                fingerprint: r.get(3)?,
                created_at: r.get(4)?,
            })
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)
    }

    fn delete_management_server(&self, id: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute("DELETE FROM management_servers WHERE id = ?1", [id])
            .map_err(backend)?;
        one_changed(n, &format!("management server {id}"))
    }

    fn record_request(&self, key: &str, now: i64, forget_before: i64) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(backend)?;
        tx.execute(
            "DELETE FROM seen_requests WHERE seen_at < ?1",
            [forget_before],
        )
        .map_err(backend)?;
        let n = tx
            .execute(
                "INSERT INTO seen_requests (key, seen_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![key, now],
            )
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(n == 1)
    }

    fn create_cluster(&self, c: &Cluster) -> StoreResult<()> {
        let pcrs =
            serde_json::to_string(&c.pcrs).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.conn()?
            .execute(
                "INSERT INTO clusters (name, pcrs, bank, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![c.name, pcrs, c.bank, c.created_at],
            )
            .map_err(|e| insert_error(e, &format!("cluster {}", c.name), ""))?;
        Ok(())
    }

    fn get_cluster(&self, name: &str) -> StoreResult<Option<Cluster>> {
        self.conn()?
            .query_row(
                "SELECT name, pcrs, bank, created_at FROM clusters WHERE name = ?1",
                [name],
                cluster_from,
            )
            .optional()
            .map_err(backend)
    }

    fn list_clusters(&self) -> StoreResult<Vec<Cluster>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT name, pcrs, bank, created_at FROM clusters ORDER BY name")
            .map_err(backend)?;
        stmt.query_map([], cluster_from)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)
    }

    fn delete_cluster(&self, name: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute("DELETE FROM clusters WHERE name = ?1", [name])
            .map_err(backend)?;
        one_changed(n, &format!("cluster {name}"))
    }

    fn add_ca_cert(&self, c: &CaCert) -> StoreResult<()> {
        self.conn()?
            .execute(
                "INSERT INTO cluster_ca_certs (cluster, id, subject, der, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![c.cluster, c.id, c.subject, c.der, c.created_at],
            )
            .map_err(|e| insert_error(e, &format!("CA certificate {}", c.id), &format!("cluster {}", c.cluster)))?;
        Ok(())
    }

    fn list_ca_certs(&self, cluster: &str) -> StoreResult<Vec<CaCert>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT cluster, id, subject, der, created_at FROM cluster_ca_certs WHERE cluster = ?1 ORDER BY created_at, id")
            .map_err(backend)?;
        stmt.query_map([cluster], |r| {
            Ok(CaCert {
                cluster: r.get(0)?,
                id: r.get(1)?,
                subject: r.get(2)?,
                der: r.get(3)?,
                created_at: r.get(4)?,
            })
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)
    }

    fn delete_ca_cert(&self, cluster: &str, id: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM cluster_ca_certs WHERE cluster = ?1 AND id = ?2",
                params![cluster, id],
            )
            .map_err(backend)?;
        one_changed(n, &format!("CA certificate {id}"))
    }

    fn add_cluster_ek(&self, ek: &ClusterEk) -> StoreResult<()> {
        self.conn()?
            .execute(
                "INSERT INTO cluster_eks (cluster, ek_hash, kind, der, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ek.cluster, ek.ek_hash, ek.kind.as_str(), ek.der, ek.created_at],
            )
            .map_err(|e| insert_error(e, &format!("EK {}", ek.ek_hash), &format!("cluster {}", ek.cluster)))?;
        Ok(())
    }

    fn list_cluster_eks(&self, cluster: &str) -> StoreResult<Vec<ClusterEk>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT cluster, ek_hash, kind, der, created_at FROM cluster_eks WHERE cluster = ?1 ORDER BY created_at, ek_hash")
            .map_err(backend)?;
        let rows: Vec<(String, String, String, Vec<u8>, i64)> = stmt
            .query_map([cluster], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?;
        rows.into_iter()
            .map(|(cluster, ek_hash, kind, der, created_at)| {
                let kind = EkEntryKind::parse(&kind)
                    .ok_or_else(|| StoreError::Backend(format!("unknown EK kind {kind}")))?;
                Ok(ClusterEk {
                    ek_hash,
                    cluster,
                    kind,
                    der,
                    created_at,
                })
            })
            .collect()
    }

    fn delete_cluster_ek(&self, cluster: &str, ek_hash: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM cluster_eks WHERE cluster = ?1 AND ek_hash = ?2",
                params![cluster, ek_hash],
            )
            .map_err(backend)?;
        one_changed(n, &format!("EK {ek_hash}"))
    }

    fn put_software_version(&self, v: &SoftwareVersionRecord) -> StoreResult<()> {
        let reference =
            serde_json::to_string(&v.reference).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.conn()?
            .execute(
                "INSERT INTO software_versions (cluster, name, reference, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (cluster, name) DO UPDATE SET reference = excluded.reference",
                params![v.cluster, v.name, reference, v.created_at],
            )
            .map_err(|e| insert_error(e, &format!("software version {}", v.name), &format!("cluster {}", v.cluster)))?;
        Ok(())
    }

    fn list_software_versions(&self, cluster: &str) -> StoreResult<Vec<SoftwareVersionRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT cluster, name, reference, created_at FROM software_versions WHERE cluster = ?1 ORDER BY name")
            .map_err(backend)?;
        let rows: Vec<(String, String, String, i64)> = stmt
            .query_map([cluster], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?;
        rows.into_iter()
            .map(|(cluster, name, reference, created_at)| {
                Ok(SoftwareVersionRecord {
                    cluster,
                    name,
                    reference: serde_json::from_str(&reference)
                        .map_err(|e| StoreError::Backend(e.to_string()))?,
                    created_at,
                })
            })
            .collect()
    }

    fn delete_software_version(&self, cluster: &str, name: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM software_versions WHERE cluster = ?1 AND name = ?2",
                params![cluster, name],
            )
            .map_err(backend)?;
        one_changed(n, &format!("software version {name}"))
    }

    fn add_host(&self, h: &Host) -> StoreResult<()> {
        self.conn()?
            .execute(
                &format!("INSERT INTO hosts ({HOST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    h.ek_hash,
                    h.cluster,
                    h.name,
                    h.added_by,
                    h.ak_public,
                    h.state.as_str(),
                    h.attested_at,
                    h.valid_until,
                    h.software_version,
                    h.created_at
                ],
            )
            .map_err(|e| insert_error(e, &format!("host with EK {}", h.ek_hash), &format!("cluster {}", h.cluster)))?;
        Ok(())
    }

    fn get_host(&self, ek_hash: &str) -> StoreResult<Option<Host>> {
        self.conn()?
            .query_row(
                &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE ek_hash = ?1"),
                [ek_hash],
                host_from,
            )
            .optional()
            .map_err(backend)
    }

    fn list_hosts(&self, cluster: &str) -> StoreResult<Vec<Host>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {HOST_COLUMNS} FROM hosts WHERE cluster = ?1 ORDER BY name, ek_hash"
            ))
            .map_err(backend)?;
        stmt.query_map([cluster], host_from)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)
    }

    fn list_all_hosts(&self) -> StoreResult<Vec<Host>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {HOST_COLUMNS} FROM hosts ORDER BY cluster, name, ek_hash"
            ))
            .map_err(backend)?;
        stmt.query_map([], host_from)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)
    }

    fn delete_host(&self, cluster: &str, ek_hash: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM hosts WHERE cluster = ?1 AND ek_hash = ?2",
                params![cluster, ek_hash],
            )
            .map_err(backend)?;
        one_changed(n, &format!("host with EK {ek_hash}"))
    }

    fn set_host_ak(&self, ek_hash: &str, ak_public: &[u8]) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "UPDATE hosts SET ak_public = ?1, last_clock = NULL WHERE ek_hash = ?2",
                params![ak_public, ek_hash],
            )
            .map_err(backend)?;
        one_changed(n, &format!("host with EK {ek_hash}"))
    }

    fn host_clock(&self, ek_hash: &str) -> StoreResult<Option<String>> {
        self.conn()?
            .query_row(
                "SELECT last_clock FROM hosts WHERE ek_hash = ?1",
                [ek_hash],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(backend)
    }

    fn set_host_clock(&self, ek_hash: &str, clock: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute(
                "UPDATE hosts SET last_clock = ?1 WHERE ek_hash = ?2",
                params![clock, ek_hash],
            )
            .map_err(backend)?;
        one_changed(n, &format!("host with EK {ek_hash}"))
    }

    fn record_attestation(&self, a: &AttestationRecord) -> StoreResult<HostState> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(backend)?;
        let before: Option<String> = tx
            .query_row(
                "SELECT state FROM hosts WHERE ek_hash = ?1",
                [&a.ek_hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        let before =
            before.ok_or_else(|| StoreError::NotFound(format!("host with EK {}", a.ek_hash)))?;
        tx.execute(
            "INSERT INTO attestations (ek_hash, cluster, at, attested, software_version, reason, pcr_digest, nonce, valid_until, token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                a.token
            ],
        )
        .map_err(backend)?;
        let state = if a.attested {
            HostState::Attested
        } else {
            HostState::NotAttested
        };
        tx.execute(
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
        tx.commit().map_err(backend)?;
        Ok(HostState::parse(&before).unwrap_or(HostState::Unknown))
    }

    fn set_host_state(&self, ek_hash: &str, state: HostState) -> StoreResult<HostState> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(backend)?;
        let before: Option<String> = tx
            .query_row(
                "SELECT state FROM hosts WHERE ek_hash = ?1",
                [ek_hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        let before =
            before.ok_or_else(|| StoreError::NotFound(format!("host with EK {ek_hash}")))?;
        tx.execute(
            "UPDATE hosts SET state = ?1 WHERE ek_hash = ?2",
            params![state.as_str(), ek_hash],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(HostState::parse(&before).unwrap_or(HostState::Unknown))
    }

    fn list_attestations(&self, ek_hash: &str, limit: u32) -> StoreResult<Vec<AttestationRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT ek_hash, cluster, at, attested, software_version, reason, pcr_digest, nonce, valid_until, token
                 FROM attestations WHERE ek_hash = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
            )
            .map_err(backend)?;
        stmt.query_map(params![ek_hash, limit], |r| {
            Ok(AttestationRecord {
                ek_hash: r.get(0)?,
                cluster: r.get(1)?,
                at: r.get(2)?,
                attested: r.get(3)?,
                software_version: r.get(4)?,
                reason: r.get(5)?,
                pcr_digest: r.get(6)?,
                nonce: r.get(7)?,
                valid_until: r.get(8)?,
                token: r.get(9)?,
            })
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)
    }

    fn add_event(
        &self,
        at: i64,
        kind: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<i64> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO events (at, kind, subject, detail) VALUES (?1, ?2, ?3, ?4)",
            params![at, kind, subject, detail.to_string()],
        )
        .map_err(backend)?;
        Ok(conn.last_insert_rowid())
    }

    fn list_events(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT id, at, kind, subject, detail FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(backend)?;
        let rows: Vec<(i64, i64, String, String, String)> = stmt
            .query_map(params![after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(id, at, kind, subject, detail)| Event {
                id,
                at,
                kind,
                subject,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    fn add_key_server(&self, k: &KeyServerRecord) -> StoreResult<()> {
        let endpoints =
            serde_json::to_string(&k.endpoints).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.conn()?
            .execute(
                "INSERT INTO key_servers (name, endpoints, client_certificate, client_key, ca_certificates, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![k.name, endpoints, k.client_certificate, k.client_key, k.ca_certificates, k.created_at],
            )
            .map_err(|e| insert_error(e, &format!("key server {}", k.name), ""))?;
        Ok(())
    }

    fn get_key_server(&self, name: &str) -> StoreResult<Option<KeyServerRecord>> {
        self.conn()?
            .query_row(
                "SELECT name, endpoints, client_certificate, client_key, ca_certificates, created_at FROM key_servers WHERE name = ?1",
                [name],
                key_server_from,
            )
            .optional()
            .map_err(backend)
    }

    fn list_key_servers(&self) -> StoreResult<Vec<KeyServerRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT name, endpoints, client_certificate, client_key, ca_certificates, created_at FROM key_servers ORDER BY name")
            .map_err(backend)?;
        stmt.query_map([], key_server_from)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)
    }

    fn delete_key_server(&self, name: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute("DELETE FROM key_servers WHERE name = ?1", [name])
            .map_err(|e| in_use(e, &format!("key server {name}"), "key providers"))?;
        one_changed(n, &format!("key server {name}"))
    }

    fn add_key_provider(&self, p: &KeyProviderRecord) -> StoreResult<()> {
        let retired =
            serde_json::to_string(&p.retired).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.conn()?
            .execute(
                "INSERT INTO key_providers (name, key_server, primary_key_id, primary_key_version, retired_keys, wrapping, refresh_seconds, lifetime_seconds, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![p.name, p.key_server, p.primary_key_id, p.primary_key_version, retired, p.wrapping.as_str(), p.refresh_seconds, p.lifetime_seconds, p.created_at],
            )
            .map_err(|e| insert_error(e, &format!("key provider {}", p.name), &format!("key server {}", p.key_server)))?;
        Ok(())
    }

    fn get_key_provider(&self, name: &str) -> StoreResult<Option<KeyProviderRecord>> {
        self.conn()?
            .query_row(
                &format!("SELECT {PROVIDER_COLUMNS} FROM key_providers WHERE name = ?1"),
                [name],
                key_provider_from,
            )
            .optional()
            .map_err(backend)
    }

    fn list_key_providers(&self) -> StoreResult<Vec<KeyProviderRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {PROVIDER_COLUMNS} FROM key_providers ORDER BY name"
            ))
            .map_err(backend)?;
        stmt.query_map([], key_provider_from)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)
    }

    fn update_key_provider(&self, p: &KeyProviderRecord) -> StoreResult<()> {
        let retired =
            serde_json::to_string(&p.retired).map_err(|e| StoreError::Backend(e.to_string()))?;
        let n = self
            .conn()?
            .execute(
                "UPDATE key_providers SET primary_key_id = ?2, primary_key_version = ?3, retired_keys = ?4 WHERE name = ?1",
                params![p.name, p.primary_key_id, p.primary_key_version, retired],
            )
            .map_err(backend)?;
        one_changed(n, &format!("key provider {}", p.name))
    }

    fn delete_key_provider(&self, name: &str) -> StoreResult<()> {
        let n = self
            .conn()?
            .execute("DELETE FROM key_providers WHERE name = ?1", [name])
            .map_err(|e| in_use(e, &format!("key provider {name}"), "clusters"))?;
        one_changed(n, &format!("key provider {name}"))
    }

    fn set_cluster_key_provider(&self, cluster: &str, provider: Option<&str>) -> StoreResult<()> {
        let conn = self.conn()?;
        match provider {
            Some(p) => conn
                .execute(
                    "INSERT INTO cluster_key_providers (cluster, provider) VALUES (?1, ?2) ON CONFLICT (cluster) DO UPDATE SET provider = excluded.provider",
                    params![cluster, p],
                )
                .map(|_| ())
                .map_err(|e| insert_error(e, "", &format!("cluster {cluster} or key provider {p}"))),
            None => conn
                .execute("DELETE FROM cluster_key_providers WHERE cluster = ?1", [cluster])
                .map(|_| ())
                .map_err(backend),
        }
    }

    fn cluster_key_provider(&self, cluster: &str) -> StoreResult<Option<String>> {
        self.conn()?
            .query_row(
                "SELECT provider FROM cluster_key_providers WHERE cluster = ?1",
                [cluster],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests;
