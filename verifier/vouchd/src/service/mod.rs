//! The service core: the state every edge shares, the attestation and key services, the
//! principals' authorisation, events, and their typed [`Error`]. It knows nothing of HTTP or
//! of the agent link's framing: the two edges ([`crate::api`] and [`crate::agent`]) call into
//! it and translate its errors into their own answers.

pub mod auth;
pub mod certs;
pub mod console;
pub mod error;
pub mod events;
pub mod generation;
pub mod health;
pub mod keys;
pub mod results;
pub mod trust;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{Error, KeyFailure, Result};

use crate::config::Config;
use crate::jwt::{KeyRing, Signer};
use crate::metrics::Metrics;
use crate::store::Store;

/// Why the hosts of a disabled cluster are not attested, as their results say.
pub fn cluster_disabled_reason(cluster: &str) -> String {
    format!(
        "cluster {cluster} is disabled, so its hosts are not attested and get no keys; `vouch cluster enable {cluster}` enables it"
    )
}

/// What every request handler and agent session shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// The token-signing keys (see [`KeyRing`]).
    pub signer: Arc<KeyRing>,
    /// Where events are posted, if configured.
    pub webhook: Option<Arc<events::Webhook>>,
    /// The key providers in use.
    pub keys: Arc<keys::KeyService>,
    /// Cancelled when vouchd is asked to stop: listeners stop accepting, idle sessions and
    /// connections end, work in flight finishes. Behind an `Arc`: the state is cloned several
    /// times per request, and a token's own clone takes a lock.
    pub shutdown: Arc<CancellationToken>,
    /// Every session and connection task, so that a stop can wait for them.
    pub tasks: TaskTracker,
    /// Bounds the events recorded for refused agents, per address.
    pub refusal_events: Arc<events::RateLimit>,
    /// This vouchd among the replicas sharing its database: random, new at each start.
    pub replica: Arc<str>,
    /// The web console's signed-in sessions.
    pub console_sessions: Arc<console::Sessions>,
    /// The configuration generation, for caches of configuration (see [`generation`]).
    pub config_generation: Arc<generation::GenerationWatch>,
    /// The management API's certificate in service, replaceable while serving (set by
    /// [`crate::server::start`]; `None` in states built for tests without a listener).
    pub tls: Option<Arc<crate::tls::LiveCertificate>>,
    /// Where attestations' writes go (group commit on SQLite; see [`results`]).
    pub results: Arc<results::ResultsWriter>,
    /// The clusters' trust configurations the agent link checks against (see [`trust`]).
    pub trust: Arc<trust::TrustCache>,
}

impl AppState {
    /// The state of a vouchd that has not started stopping, with no key provider in use yet.
    pub fn new(
        store: Arc<dyn Store>,
        config: Config,
        signer: Signer,
        webhook: Option<events::Webhook>,
    ) -> Self {
        let grace = config.signing_key_grace_secs();
        Self {
            results: Arc::new(results::ResultsWriter::new(Arc::clone(&store))),
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            signer: Arc::new(KeyRing::new(signer, grace)),
            webhook: webhook.map(Arc::new),
            keys: Arc::default(),
            shutdown: Arc::new(CancellationToken::new()),
            tasks: TaskTracker::new(),
            refusal_events: Arc::default(),
            replica: crate::random::<8>()
                .map(|r| crate::hex(&r))
                .unwrap_or_else(|_| format!("pid-{}", std::process::id()))
                .into(),
            console_sessions: Arc::default(),
            config_generation: Arc::default(),
            tls: None,
            trust: Arc::default(),
        }
    }
}
