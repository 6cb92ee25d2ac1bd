//! The configuration generation as a replica sees it: how an in-memory cache of configuration
//! (trust configuration, hosts, principals, key providers) learns that another replica changed
//! it.
//!
//! The database raises the generation in the same transaction as every configuration change
//! ([`Store::config_generation`]). A cache records the generation it loaded at and, before
//! each use, compares it with [`GenerationWatch::current`]; when they differ it reloads. This
//! is the one change signal of vouchd's configuration caches (the clusters' trust and software
//! versions the agent link checks against, [`crate::service::trust`]). How soon a change is
//! seen:
//! - SQLite: at once. The store reads the generation after each of its writes
//!   ([`Store::config_generation_now`]), so the next use of a cache after a change made
//!   through vouchd reloads it, with no database read in between (a change written into the
//!   file by another process is seen within [`CHECK_PERIOD`], as below).
//! - PostgreSQL (replicas sharing the database): the watch reads the database at most once per
//!   [`CHECK_PERIOD`], so a change committed through one replica is in force on every other
//!   within `CHECK_PERIOD` (1 s, plus the time of one read); on the replica that made it at
//!   once, since every changing API request ends with [`GenerationWatch::invalidate`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{self, Store, StoreResult};

/// The longest a replica uses a generation read from the database before reading it again:
/// the bound on how long a configuration change made through another replica takes to apply.
pub const CHECK_PERIOD: Duration = Duration::from_secs(1);

/// The last generation read, and when.
#[derive(Debug, Default)]
pub struct GenerationWatch {
    last: Mutex<Option<(i64, Instant)>>,
}

impl GenerationWatch {
    /// The configuration generation: the one read less than [`CHECK_PERIOD`] ago, or the
    /// database's now.
    pub async fn current(&self, store: &Arc<dyn Store>) -> StoreResult<i64> {
        self.current_at(store, Instant::now()).await
    }

    /// [`Self::current`] as of `now`.
    pub async fn current_at(&self, store: &Arc<dyn Store>, now: Instant) -> StoreResult<i64> {
        // The generation only grows: the larger of what this process knows now and what the
        // database said less than CHECK_PERIOD ago is the latest seen.
        let known = store.config_generation_now();
        let read = match self.fresh(now) {
            Some(generation) => generation,
            None => {
                let generation = store::run(store, |s| s.config_generation()).await?;
                if let Ok(mut last) = self.last.lock() {
                    *last = Some((generation, now));
                }
                generation
            }
        };
        Ok(known.map_or(read, |k| k.max(read)))
    }

    /// Forgets the generation read, so that the next [`Self::current`] reads the database
    /// (after this replica changed the configuration itself).
    pub fn invalidate(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = None;
        }
    }

    fn fresh(&self, now: Instant) -> Option<i64> {
        let last = *self.last.lock().ok()?;
        last.and_then(|(generation, at)| {
            (now.saturating_duration_since(at) < CHECK_PERIOD).then_some(generation)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cluster;
    use crate::store::sqlite::SqliteStore;

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            pcrs: vec![0],
            bank: "sha256".into(),
            created_at: 1,
            disabled_at: None,
            config_generation: 0,
        }
    }

    #[tokio::test]
    async fn a_change_elsewhere_is_seen_within_the_check_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        // Another writer of the same database (a replica; another process).
        let other = SqliteStore::open(&path).unwrap();
        let watch = GenerationWatch::default();
        let start = Instant::now();
        let first = watch.current_at(&store, start).await.unwrap();
        other.create_cluster(&cluster("prod")).unwrap();
        let soon = start + CHECK_PERIOD / 2;
        assert_eq!(watch.current_at(&store, soon).await.unwrap(), first);
        let later = start + CHECK_PERIOD;
        let seen = watch.current_at(&store, later).await.unwrap();
        assert!(seen > first, "{seen} after {first}");
        // A change through this store is seen at once, with no read of the database.
        store.delete_cluster("prod").unwrap();
        let own = watch.current_at(&store, later).await.unwrap();
        assert!(own > seen, "{own} after {seen}");
        // A replica that cannot know its own changes (PostgreSQL) invalidates after them.
        other.create_cluster(&cluster("test")).unwrap();
        watch.invalidate();
        assert!(watch.current_at(&store, later).await.unwrap() > own);
    }
}
