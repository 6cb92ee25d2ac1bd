//! The schema as versioned SQL files (`verifier/vouchd/migrations/NNNN_name.sql`, embedded in
//! the binary) and the runner that applies them, shared by every backend.
//!
//! A database records each migration applied in `schema_migrations` (version, name, SHA-256 of
//! the file, when). On open, the runner compares that record with the migrations this build
//! knows and refuses a database that has a migration it does not know (made by a newer vouchd)
//! or one whose file has changed since it was applied; then it applies the missing ones in
//! order, each in its own transaction. A backend only provides [`MigrationBackend`].
//!
//! One version, one migration, for every backend. `NNNN_name.sql` is written for SQLite and
//! is what every backend runs, as long as PostgreSQL accepts it too (the rule: write portable
//! SQL). Where the dialects differ (an auto-numbered key, a binary type, triggers), the
//! version also has `NNNN_name.postgres.sql`, with the same tables, columns and meaning in
//! PostgreSQL's words, and PostgreSQL runs that file instead. Each database records the
//! checksum of the file it ran.

use super::{StoreError, StoreResult};

/// One schema change. Released migrations never change: a change is a new migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// `NNNN_name.sql`: SQLite's, and every backend's without a file of its own.
    pub sql: &'static str,
    /// `NNNN_name.postgres.sql`, when PostgreSQL needs other words.
    pub postgres: Option<&'static str>,
}

/// The SQL dialect of a backend: which file of a migration it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Migration {
    /// The SQL `dialect` runs.
    pub fn sql_for(&self, dialect: Dialect) -> &'static str {
        match (dialect, self.postgres) {
            (Dialect::Postgres, Some(sql)) => sql,
            _ => self.sql,
        }
    }

    /// SHA-256 of the SQLite file, hex: what SQLite's `schema_migrations` records.
    pub fn checksum(&self) -> String {
        self.checksum_for(Dialect::Sqlite)
    }

    /// SHA-256 of the SQL `dialect` runs, hex.
    pub fn checksum_for(&self, dialect: Dialect) -> String {
        crate::hex(&crate::sha256(self.sql_for(dialect).as_bytes()))
    }
}

/// Every migration, in order; version `N` is the file `migrations/NNNN_name.sql`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/0001_initial.sql"),
        postgres: Some(include_str!("../../migrations/0001_initial.postgres.sql")),
    },
    Migration {
        version: 2,
        name: "key_providers",
        sql: include_str!("../../migrations/0002_key_providers.sql"),
        postgres: None,
    },
    Migration {
        version: 3,
        name: "replicas",
        sql: include_str!("../../migrations/0003_replicas.sql"),
        postgres: Some(include_str!("../../migrations/0003_replicas.postgres.sql")),
    },
    Migration {
        version: 4,
        name: "cluster_disabled",
        sql: include_str!("../../migrations/0004_cluster_disabled.sql"),
        postgres: None,
    },
    Migration {
        version: 5,
        name: "console",
        sql: include_str!("../../migrations/0005_console.sql"),
        postgres: None,
    },
    Migration {
        version: 6,
        name: "signing_key_rotation",
        sql: include_str!("../../migrations/0006_signing_key_rotation.sql"),
        postgres: None,
    },
    Migration {
        version: 7,
        name: "providers",
        sql: include_str!("../../migrations/0007_providers.sql"),
        postgres: Some(include_str!("../../migrations/0007_providers.postgres.sql")),
    },
    Migration {
        version: 8,
        name: "seen_requests_index",
        sql: include_str!("../../migrations/0008_seen_requests_index.sql"),
        postgres: None,
    },
];

/// The bookkeeping table, created by the backend before it reads it. Portable SQL.
pub const SCHEMA_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: i64,
}

/// What the runner needs from a database.
pub trait MigrationBackend {
    /// Which file of each migration this database runs.
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// The rows of `schema_migrations`, creating the table ([`SCHEMA_MIGRATIONS_TABLE`]) when
    /// it does not exist.
    fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>>;

    /// Runs `sql` (any number of statements) and inserts `record` into `schema_migrations`,
    /// in one transaction: both happen or neither.
    fn apply(&mut self, sql: &str, record: &AppliedMigration) -> StoreResult<()>;
}

/// Checks what the database has applied against `known` and applies the rest, in order;
/// returns the versions applied now.
pub fn migrate(
    db: &mut impl MigrationBackend,
    known: &[Migration],
    now: i64,
) -> StoreResult<Vec<i64>> {
    let dialect = db.dialect();
    let applied = db.applied()?;
    for done in &applied {
        check(done, known, dialect)?;
    }
    let mut versions = Vec::new();
    for m in known {
        if applied.iter().any(|done| done.version == m.version) {
            continue;
        }
        let record = AppliedMigration {
            version: m.version,
            name: m.name.to_owned(),
            checksum: m.checksum_for(dialect),
            applied_at: now,
        };
        db.apply(m.sql_for(dialect), &record)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied database migration"
        );
        versions.push(m.version);
    }
    Ok(versions)
}

/// An applied migration must be one of `known`, unchanged.
fn check(done: &AppliedMigration, known: &[Migration], dialect: Dialect) -> StoreResult<()> {
    let newest = known.iter().map(|m| m.version).max().unwrap_or(0);
    let Some(m) = known.iter().find(|m| m.version == done.version) else {
        return Err(StoreError::Schema(format!(
            "the database has migration {} ({}), which this vouchd does not know (it knows up \
             to {newest}): it was written by a newer vouchd; run that version or a later one",
            done.version, done.name
        )));
    };
    let checksum = m.checksum_for(dialect);
    if done.checksum != checksum {
        return Err(StoreError::Schema(format!(
            "migration {} ({}) was applied with checksum {} but this vouchd's has checksum \
             {checksum}: a released migration was edited; restore it and add a new migration",
            done.version, done.name, done.checksum
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in memory, to test the runner alone.
    #[derive(Default)]
    struct Fake {
        rows: Vec<AppliedMigration>,
        ran: Vec<String>,
        fail_on: Option<i64>,
    }

    impl MigrationBackend for Fake {
        fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>> {
            Ok(self.rows.clone())
        }

        fn apply(&mut self, sql: &str, record: &AppliedMigration) -> StoreResult<()> {
            if self.fail_on == Some(record.version) {
                return Err(StoreError::Backend("syntax error".into()));
            }
            self.ran.push(sql.to_owned());
            self.rows.push(record.clone());
            Ok(())
        }
    }

    const KNOWN: &[Migration] = &[
        Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x TEXT);",
            postgres: None,
        },
        Migration {
            version: 2,
            name: "two",
            sql: "CREATE TABLE b (y TEXT);",
            postgres: None,
        },
    ];

    fn record(m: &Migration) -> AppliedMigration {
        AppliedMigration {
            version: m.version,
            name: m.name.into(),
            checksum: m.checksum(),
            applied_at: 1,
        }
    }

    #[test]
    fn applies_what_is_missing_in_order_once() {
        let mut db = Fake::default();
        assert_eq!(migrate(&mut db, &KNOWN[..1], 5).unwrap(), [1]);
        assert_eq!(migrate(&mut db, KNOWN, 6).unwrap(), [2]);
        assert_eq!(migrate(&mut db, KNOWN, 7).unwrap(), Vec::<i64>::new());
        assert_eq!(db.ran, [KNOWN[0].sql, KNOWN[1].sql]);
        assert_eq!(db.rows[1].applied_at, 6);
        assert_eq!(db.rows[1].name, "two");
    }

    #[test]
    fn refuses_a_migration_it_does_not_know() {
        let mut db = Fake {
            rows: KNOWN.iter().map(record).collect(),
            ..Fake::default()
        };
        let err = migrate(&mut db, &KNOWN[..1], 5).unwrap_err();
        assert!(
            matches!(&err, StoreError::Schema(m) if m.contains("migration 2 (two)") && m.contains("newer vouchd")),
            "{err}"
        );
        assert!(db.ran.is_empty());
    }

    #[test]
    fn refuses_a_changed_migration() {
        let mut db = Fake {
            rows: vec![AppliedMigration {
                checksum: "00".into(),
                ..record(&KNOWN[0])
            }],
            ..Fake::default()
        };
        let err = migrate(&mut db, KNOWN, 5).unwrap_err();
        assert!(
            matches!(&err, StoreError::Schema(m) if m.contains("migration 1 (one) was applied with checksum 00")),
            "{err}"
        );
        assert!(db.ran.is_empty(), "nothing runs on a database refused");
    }

    #[test]
    fn a_failed_migration_stops_the_run() {
        let mut db = Fake {
            fail_on: Some(1),
            ..Fake::default()
        };
        assert!(migrate(&mut db, KNOWN, 5).is_err());
        assert!(db.rows.is_empty());
    }

    /// Every file in `migrations/` is embedded, under its version and name, in order.
    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        let mut embedded: Vec<(String, &str)> = Vec::new();
        for m in MIGRATIONS {
            embedded.push((format!("{:04}_{}.sql", m.version, m.name), m.sql));
            if let Some(sql) = m.postgres {
                embedded.push((format!("{:04}_{}.postgres.sql", m.version, m.name), sql));
            }
        }
        embedded.sort();
        let names: Vec<&String> = embedded.iter().map(|(name, _)| name).collect();
        assert_eq!(files.iter().collect::<Vec<_>>(), names);
        for (name, sql) in &embedded {
            assert_eq!(&std::fs::read_to_string(dir.join(name)).unwrap(), sql);
        }
        // Versions count from 1 and only grow (numbers are handed out ahead, so one may be
        // missing until its migration is merged; the runner applies them in order either way).
        assert_eq!(MIGRATIONS.first().map(|m| m.version), Some(1));
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version, "versions only grow");
        }
    }
}
