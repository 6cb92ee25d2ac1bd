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

/// Marks expired hosts `unknown`; returns how many changed.
pub async fn sweep_once(state: &AppState, now: i64) -> Result<usize, store::StoreError> {
    let hosts = store::run(&state.store, |s| s.list_all_hosts()).await?;
    let mut changed = 0;
    for host in hosts {
        let expired =
            host.state == HostState::Attested && host.valid_until.is_some_and(|v| v < now);
        if !expired {
            continue;
        }
        let hash = host.ek_hash.clone();
        let before = store::run(&state.store, move |s| {
            s.set_host_state(&hash, HostState::Unknown)
        })
        .await?;
        if before != HostState::Unknown {
            changed += 1;
            let detail = serde_json::json!({
                "cluster": host.cluster,
                "from": before,
                "to": HostState::Unknown,
                "reason": "the last attestation expired without a new one",
            });
            tracing::warn!(ek_hash = %host.ek_hash, cluster = %host.cluster, "attestation expired");
            let subject = host.ek_hash.clone();
            store::run(&state.store, move |s| {
                s.add_event(now, "host.state_changed", &subject, &detail)
            })
            .await?;
        }
    }
    Ok(changed)
}

/// Runs the sweeper until `state.shutdown` is cancelled.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(sweep_period(state.config.reattest_interval()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        if let Err(e) = sweep_once(&state, crate::now()).await {
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
        assert_eq!(events[0].subject, "a");
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
