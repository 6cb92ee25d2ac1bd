//! Backup and restore of a data directory (`vouchd backup`, `vouchd restore`).
//!
//! A backup is one SQLite file: a consistent snapshot of the database (`VACUUM INTO` on a
//! connection of its own, one read transaction, so vouchd keeps serving and writing while it
//! is taken), plus a table `vouchd_backup` with what else the data directory holds: the
//! attestation-token signing key and the API's generated TLS certificate and key. Secrets stay
//! sealed: the key servers' client keys as the database keeps them, the signing key and TLS key
//! sealed under the same key-encryption key (see [`crate::store::sealing`]). The
//! key-encryption key itself is never in a backup; a restore needs it.
//!
//! A restore goes into an empty (or missing) data directory only: it writes the database,
//! drops `vouchd_backup` from it, brings its schema up to date, checks that every sealed
//! secret opens under the key-encryption key given, and writes the files back (mode 0600).
//!
//! Both are for the single node's SQLite store. A PostgreSQL store (replicas) is the database
//! operator's to back up with PostgreSQL's own tools (`pg_dump`, base backups and WAL
//! archiving), which are consistent while replicas serve and give point-in-time recovery;
//! vouchd refuses with what to run instead (see docs/deploy.md). Nothing else a replica needs
//! is in its data directory: the signing key is in the database, the key-encryption key is the
//! operator's to keep apart, and the API's certificate is configured (`tls_cert`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::config::Config;
use crate::server::{
    DATABASE_FILE, KEY_ENCRYPTION_KEY_ENV, KEY_ENCRYPTION_KEY_FILE, SIGNING_KEY_FILE,
    key_encryption_key_path, owner_only, sealing_keys,
};
use crate::store::Store as _;
use crate::store::sealing::{self, SealingKey};
use crate::store::sqlite::SqliteStore;

/// The format a backup says it is in.
pub const FORMAT: &str = "vouchd-backup-v1";
/// The generated TLS certificate and key in the data directory (see [`crate::tls`]).
const TLS_CERT_FILE: &str = "api-cert.pem";
const TLS_KEY_FILE: &str = "api-key.pem";

/// The files besides the database a backup carries: (file, whether it is sealed).
const FILES: [(&str, bool); 3] = [
    (SIGNING_KEY_FILE, true),
    (TLS_CERT_FILE, false),
    (TLS_KEY_FILE, true),
];

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// The backup file.
    pub file: PathBuf,
    /// The id of the key-encryption key its secrets are sealed under.
    pub key_encryption_key_id: String,
    /// The database's schema version.
    pub schema_version: i64,
    pub clusters: i64,
    pub hosts: i64,
    pub attestations: i64,
    /// The files of the data directory it carries besides the database.
    pub files: Vec<String>,
}

/// The associated data of a sealed file in a backup.
fn file_label(name: &str) -> String {
    format!("vouchd_backup:{name}")
}

fn count(conn: &Connection, table: &str) -> anyhow::Result<i64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .with_context(|| format!("cannot count {table}"))
}

fn summary(
    conn: &Connection,
    file: &Path,
    kek: &str,
    files: Vec<String>,
) -> anyhow::Result<Summary> {
    Ok(Summary {
        file: file.to_owned(),
        key_encryption_key_id: kek.to_owned(),
        schema_version: conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .context("cannot read the schema version")?,
        clusters: count(conn, "clusters")?,
        hosts: count(conn, "hosts")?,
        attestations: count(conn, "attestations")?,
        files,
    })
}

/// Takes a backup of `config`'s data directory into the new file `out` (mode 0600), while
/// vouchd may be serving.
pub fn backup(config: &Config, out: &Path) -> anyhow::Result<Summary> {
    if config.store.is_some() {
        bail!(
            "this vouchd's store is PostgreSQL: `vouchd backup` copies a single node's SQLite \
             data directory. Back the database up with PostgreSQL's tools, consistent while \
             the replicas serve: `pg_dump -Fc -d <database> -f vouchd.dump` (or base backups \
             with WAL archiving), and keep the key-encryption key apart (docs/deploy.md, Backup)"
        );
    }
    let db = config.data_dir.join(DATABASE_FILE);
    if !db.is_file() {
        bail!(
            "{} does not exist: is data_dir in the configuration the one vouchd serves from?",
            db.display()
        );
    }
    let (kek, _) = sealing_keys(config, false).context(
        "a backup seals the signing and TLS keys under the key-encryption key, which cannot be read",
    )?;
    // VACUUM INTO needs a new or empty file: make it empty, the owner's only.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    owner_only(out, false)?;
    let written = write_backup(config, &db, out, &kek);
    if written.is_err() {
        let _ = std::fs::remove_file(out);
    }
    written
}

fn write_backup(
    config: &Config,
    db: &Path,
    out: &Path,
    kek: &SealingKey,
) -> anyhow::Result<Summary> {
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    let target = out
        .to_str()
        .with_context(|| format!("{} is not UTF-8", out.display()))?;
    source
        .execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("cannot copy {} into {}", db.display(), out.display()))?;
    drop(source);
    let conn = Connection::open(out).with_context(|| format!("cannot open {}", out.display()))?;
    conn.execute_batch("CREATE TABLE vouchd_backup (name TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    let put = |name: &str, value: &str| {
        conn.execute(
            "INSERT INTO vouchd_backup (name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map(|_| ())
    };
    put("format", FORMAT)?;
    put("vouchd_version", env!("CARGO_PKG_VERSION"))?;
    put("created_at", &crate::now().to_string())?;
    put("key_encryption_key_id", kek.id())?;
    let mut files = Vec::new();
    for (name, sealed) in FILES {
        let path = config.data_dir.join(name);
        if !path.exists() {
            continue;
        }
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        let text = zeroize::Zeroizing::new(crate::hex(&bytes));
        let value = if sealed {
            kek.seal(&file_label(name), &text)?
        } else {
            text.to_string()
        };
        put(&format!("file:{name}"), &value)?;
        files.push(name.to_owned());
    }
    let summary = summary(&conn, out, kek.id(), files)?;
    conn.close().map_err(|(_, e)| e)?;
    std::fs::File::open(out)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", out.display()))?;
    Ok(summary)
}

/// Whether `dir` is missing or an empty directory.
fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Restores `backup` into `config`'s data directory, which must be empty or missing. The
/// key-encryption key is the one `vouchd serve` would use (`VOUCHD_KEY_ENCRYPTION_KEY`,
/// `key_encryption_key_file`), or `key_file`, copied into the data directory.
pub fn restore(config: &Config, backup: &Path, key_file: Option<&Path>) -> anyhow::Result<Summary> {
    if config.store.is_some() {
        bail!(
            "this vouchd's store is PostgreSQL: `vouchd restore` restores a single node's SQLite \
             data directory. Restore the database with PostgreSQL's tools: `pg_restore -d \
             <empty database> vouchd.dump`, then start the replicas with the same \
             key-encryption key (docs/deploy.md, Backup)"
        );
    }
    let dir = &config.data_dir;
    if !is_empty_dir(dir)? {
        bail!(
            "{} is not empty: restore into a new data directory (set data_dir in the configuration), never over a live one",
            dir.display()
        );
    }
    let source = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", backup.display()))?;
    let entry = |name: &str| -> anyhow::Result<Option<String>> {
        source
            .query_row(
                "SELECT value FROM vouchd_backup WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .with_context(|| format!("{} is not a vouchd backup", backup.display()))
    };
    if entry("format")?.as_deref() != Some(FORMAT) {
        bail!("{} is not a {FORMAT} backup", backup.display());
    }
    let wanted = entry("key_encryption_key_id")?.unwrap_or_default();
    let existed = dir.exists();
    let restored = restore_into(config, backup, &source, key_file, &wanted);
    if restored.is_err() {
        // Leave the data directory as it was found, so the restore can be run again.
        let _ = std::fs::remove_dir_all(dir);
        if existed {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    restored
}

fn restore_into(
    config: &Config,
    backup: &Path,
    source: &Connection,
    key_file: Option<&Path>,
    wanted: &str,
) -> anyhow::Result<Summary> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let configured = std::env::var_os(KEY_ENCRYPTION_KEY_ENV).is_some()
        || config.key_encryption_key_file.is_some();
    match (key_file, configured) {
        (Some(_), true) => bail!(
            "--key-encryption-key is for a data directory that keeps its own key; this configuration names one already (key_encryption_key_file or {KEY_ENCRYPTION_KEY_ENV})"
        ),
        (Some(file), false) => {
            SealingKey::load(file, false)?;
            let text = zeroize::Zeroizing::new(
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?,
            );
            crate::tls::write_private(&key_encryption_key_path(config), &text)
                .context("cannot write the key-encryption key into the data directory")?;
        }
        (None, true) => {}
        (None, false) => bail!(
            "the backup's secrets are sealed under key-encryption key {wanted}: give its file with --key-encryption-key FILE (the {KEY_ENCRYPTION_KEY_FILE} of the backed-up data directory), set key_encryption_key_file, or set {KEY_ENCRYPTION_KEY_ENV}"
        ),
    }
    let (kek, _) = sealing_keys(config, false)?;
    if kek.id() != wanted {
        bail!(
            "the backup's secrets are sealed under key-encryption key {wanted}, not {} (the one given): give the backed-up vouchd's key",
            kek.id()
        );
    }
    let db = dir.join(DATABASE_FILE);
    owner_only(&db, true)?;
    std::fs::copy(backup, &db)
        .with_context(|| format!("cannot copy {} into {}", backup.display(), db.display()))?;
    owner_only(&db, false)?;
    Connection::open(&db)
        .and_then(|c| c.execute_batch("DROP TABLE vouchd_backup"))
        .with_context(|| format!("cannot open {}", db.display()))?;
    // Open as vouchd does: migrations, then every sealed secret must open.
    let store = SqliteStore::open(&db)?.with_sealing(kek, None);
    store
        .list_key_servers()
        .context("a sealed key-server client key does not open under the key given")?;
    store
        .signing_keys()
        .context("a sealed token-signing key does not open under the key given")?;
    store.flush()?;
    drop(store);
    let (kek, _) = sealing_keys(config, false)?;
    let mut files = Vec::new();
    for (name, sealed) in FILES {
        let key = format!("file:{name}");
        let Some(value) = source
            .query_row(
                "SELECT value FROM vouchd_backup WHERE name = ?1",
                [&key],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            continue;
        };
        let text = if sealed {
            sealing::open(std::slice::from_ref(&kek), &file_label(name), &value)?
        } else {
            zeroize::Zeroizing::new(value)
        };
        let bytes = zeroize::Zeroizing::new(
            crate::unhex(&text).with_context(|| format!("{key} in the backup is not hex"))?,
        );
        crate::tls::write_private(&dir.join(name), &bytes)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        files.push(name.to_owned());
    }
    for suffix in ["-wal", "-shm"] {
        owner_only(&dir.join(format!("{DATABASE_FILE}{suffix}")), false)?;
    }
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    summary(&conn, &db, kek.id(), files)
}
