//! The one harness that starts an in-process vouchd for tests (feature `testing`): a data
//! directory of its own, both listeners on loopback, and an HTTPS client that trusts the
//! generated certificate. vouchd's own tests, the `vouch` CLI's and the hil-tests start vouchd
//! through it; each adds only the helpers its tests need.

use std::path::Path;

pub mod postgres;

use crate::config::Config;
use crate::server::{Running, start};

/// A configuration for tests: loopback listeners on free ports, data in `data_dir`.
pub fn loopback_config(data_dir: &Path) -> Config {
    Config {
        api_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        agent_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_owned(),
        ..Config::default()
    }
}

/// A vouchd serving on the current tokio runtime.
#[derive(Debug)]
pub struct TestVouchd {
    pub running: Running,
    /// A client trusting vouchd's certificate, with `localhost` resolving to the API.
    pub client: reqwest::Client,
    /// `https://localhost:PORT`.
    pub base: String,
}

impl TestVouchd {
    /// Starts vouchd with `config` on the current runtime.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let running = start(config).await?;
        let client = client_for(&running)?;
        let base = format!("https://localhost:{}", running.api_addr.port());
        Ok(Self {
            running,
            client,
            base,
        })
    }

    /// The bootstrap token of this data directory's first start.
    pub fn admin_token(&self) -> Option<&str> {
        self.running.bootstrap_token.as_deref()
    }
}

/// A vouchd with a runtime of its own, for synchronous tests. Fields drop in order: the server
/// before its runtime.
#[derive(Debug)]
pub struct BlockingVouchd {
    pub vouchd: TestVouchd,
    runtime: tokio::runtime::Runtime,
}

impl BlockingVouchd {
    /// Starts vouchd with `config` on a new two-thread runtime.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let vouchd = runtime.block_on(TestVouchd::start(config))?;
        Ok(Self { vouchd, runtime })
    }

    /// Runs a future on vouchd's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Stops the server and its runtime now (every task dropped, nothing flushed beyond what
    /// was committed).
    pub fn stop(self) {
        let Self { vouchd, runtime } = self;
        drop(vouchd);
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    }
}

/// An HTTPS client that trusts `running`'s certificate and resolves `localhost` to its API.
pub fn client_for(running: &Running) -> anyhow::Result<reqwest::Client> {
    let certificate = reqwest::Certificate::from_der(&running.tls_certificate)?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(certificate)
        .resolve("localhost", running.api_addr)
        .build()?)
}
