//! Continuous attestation, server side: open agent sessions re-attest on the configured
//! interval (see [`crate::agent`]); this sweeper turns hosts whose last result expired without
//! a new one back to `unknown`, with an event.

use std::time::Duration;

use crate::service::AppState;
use crate::store::{self, HostState};

/// How often the sweeper looks, given the re-attestation interval.
pub fn sweep_period(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Marks expired hosts `unknown`, each with its event in the same transaction; returns how
/// many changed.
pub async fn sweep_once(state: &AppState, now: i64) -> Result<usize, store::StoreError> {
    let hosts = store::run(&state.store, |s| s.list_all_hosts()).await?;
    let mut changed = 0;
    for host in hosts {
        let expired =
            host.state == HostState::Attested && host.valid_until.is_some_and(|v| v < now);
        if !expired {
            continue;
        }
        // The store checks again: a result recorded since the listing stands.
        let hash = host.ek_hash.clone();
        let event = store::run(&state.store, move |s| s.expire_host(&hash, now)).await?;
        if let Some(event) = event {
            changed += 1;
            tracing::warn!(ek_hash = %host.ek_hash, cluster = %host.cluster, "attestation expired");
            crate::service::events::announce(state, event);
        }
    }
    Ok(changed)
}

/// How many sweep claims a database keeps (older ones are dropped).
const SWEEPS_KEPT: i64 = 10_000;

/// Sweeps once if this replica is the first to claim the period `now` falls in (replicas
/// sharing a database sweep each period once between them); returns whether it swept.
pub async fn sweep_if_claimed(
    state: &AppState,
    period: Duration,
    now: i64,
) -> Result<bool, store::StoreError> {
    let secs = i64::try_from(period.as_secs().max(1)).unwrap_or(i64::MAX);
    let index = now.div_euclid(secs);
    let replica = state.replica.to_string();
    let claimed = store::run(&state.store, move |s| {
        s.claim_sweep(index, &replica, now, index.saturating_sub(SWEEPS_KEPT))
    })
    .await?;
    if !claimed {
        return Ok(false);
    }
    state.metrics.swept(&state.replica);
    sweep_once(state, now).await?;
    Ok(true)
}

/// Runs the sweeper until `state.shutdown` is cancelled.
pub async fn run(state: AppState) {
    let period = sweep_period(state.config.reattest_interval());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        if let Err(e) = sweep_if_claimed(&state, period, crate::now()).await {
            tracing::error!(error = %e, "attestation sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::jwt::Signer;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{AttestationRecord, Cluster, Host, Store};
    use std::sync::Arc;

    #[tokio::test]
    async fn expired_hosts_become_unknown_with_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .create_cluster(&Cluster {
                name: "c".into(),
                pcrs: vec![0],
                bank: "sha256".into(),
                created_at: 0,
                disabled_at: None,
                config_generation: 0,
            })
            .unwrap();
        for (ek, valid_until) in [("a", 100), ("b", 1000)] {
            store
                .add_host(&Host {
                    ek_hash: ek.into(),
                    cluster: "c".into(),
                    name: ek.into(),
                    added_by: "vc".into(),
                    ak_public: None,
                    state: HostState::Unknown,
                    attested_at: None,
                    valid_until: None,
                    software_version: None,
                    created_at: 0,
                })
                .unwrap();
            store
                .record_attestation(&AttestationRecord {
                    ek_hash: ek.into(),
                    cluster: "c".into(),
                    at: 50,
                    attested: true,
                    software_version: Some("v".into()),
                    reason: None,
                    pcr_digest: None,
                    nonce: None,
                    valid_until: Some(valid_until),
                    token: None,
                    presented: None,
                    config_generation: None,
                })
                .unwrap();
        }
        let state = AppState::new(
            Arc::new(store),
            Config::default(),
            Signer::load_or_create(&dir.path().join("k")).unwrap(),
            None,
        );
        let recorded = state.store.list_events(0, 100).unwrap().len();
        assert_eq!(sweep_once(&state, 500).await.unwrap(), 1);
        assert_eq!(sweep_once(&state, 500).await.unwrap(), 0);
        let a = state.store.get_host("a").unwrap().unwrap();
        assert_eq!(a.state, HostState::Unknown);
        assert_eq!(
            state.store.get_host("b").unwrap().unwrap().state,
            HostState::Attested
        );
        let events = state.store.list_events(0, 100).unwrap();
        assert_eq!(events.len() - recorded, 1, "one event for the one expiry");
        let expiry = events.last().unwrap();
        assert_eq!(expiry.subject, "a");
        assert_eq!(expiry.detail["reason"], store::EXPIRED_REASON);
    }

    /// Two replicas on one database: each period is swept by the first to claim it.
    #[tokio::test]
    async fn each_period_is_swept_by_one_replica() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let replica = || {
            AppState::new(
                Arc::clone(&store),
                Config::default(),
                Signer::load_or_create(&dir.path().join("k")).unwrap(),
                None,
            )
        };
        let (a, b) = (replica(), replica());
        assert_ne!(a.replica, b.replica);
        let period = Duration::from_secs(5);
        assert!(sweep_if_claimed(&a, period, 100).await.unwrap());
        assert!(!sweep_if_claimed(&b, period, 101).await.unwrap());
        assert!(!sweep_if_claimed(&a, period, 104).await.unwrap());
        assert!(sweep_if_claimed(&b, period, 105).await.unwrap());
        for r in [&a, &b] {
            let text = r.metrics.render();
            let line = format!("vouchd_expiry_sweeps_total{{replica=\"{}\"}} 1", r.replica);
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn sweep_period_is_bounded() {
        assert_eq!(
            sweep_period(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
    }
}
