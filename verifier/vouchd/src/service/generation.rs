//! The configuration generation as a replica sees it: how an in-memory cache of configuration
//! (trust configuration, hosts, principals, key providers) learns that another replica changed
//! it.
//!
//! The database raises the generation in the same transaction as every configuration change
//! ([`Store::config_generation`]). A cache records the generation it loaded at and, before
//! each use, compares it with [`GenerationWatch::current`]; when they differ it reloads. The
//! watch reads the database at most once per [`CHECK_PERIOD`], so a change committed through
//! any replica is in force on every other within `CHECK_PERIOD` (plus the time of one read),
//! and a replica's own changes at once if it calls [`GenerationWatch::invalidate`] after them.

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
        if let Some(generation) = self.fresh(now) {
            return Ok(generation);
        }
        let generation = store::run(store, |s| s.config_generation()).await?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((generation, now));
        }
        Ok(generation)
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

    #[tokio::test]
    async fn a_change_elsewhere_is_seen_within_the_check_period() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let watch = GenerationWatch::default();
        let start = Instant::now();
        let first = watch.current_at(&store, start).await.unwrap();
        // Another replica changes the configuration (the same database).
        store
            .create_cluster(&Cluster {
                name: "prod".into(),
                pcrs: vec![0],
                bank: "sha256".into(),
                created_at: 1,
                disabled_at: None,
                config_generation: 0,
            })
            .unwrap();
        let soon = start + CHECK_PERIOD / 2;
        assert_eq!(watch.current_at(&store, soon).await.unwrap(), first);
        let later = start + CHECK_PERIOD;
        let seen = watch.current_at(&store, later).await.unwrap();
        assert!(seen > first, "{seen} after {first}");
        // A replica's own change: invalidate, and the next read is the database's.
        store.delete_cluster("prod").unwrap();
        watch.invalidate();
        assert!(watch.current_at(&store, later).await.unwrap() > seen);
    }
}
