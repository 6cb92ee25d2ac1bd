//! The vouchd the fleet attests to: started as its own process on loopback with a data
//! directory of its own (or one already running), and configured through the management API
//! as an operator would: a management server, a cluster, the simulator's TPM CA, the software
//! version, and every host with a signed host operation.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use vouch_api::signing::{SIGNATURE_HEADER, SignatureHeader, signing_message};

/// The cluster the simulated hosts belong to.
pub const CLUSTER: &str = "fleet";
/// The management server that signs the simulator's host operations.
const MANAGEMENT_SERVER: &str = "fleet-simulator";

/// Why vouchd could not be started or configured.
#[derive(Debug, thiserror::Error)]
pub enum VouchdError {
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("vouchd exited before serving: {0}")]
    Exited(String),
    #[error("vouchd is not serving after {0:?}; see {1}")]
    NotServing(Duration, PathBuf),
    #[error("{0}")]
    Api(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VouchdError {
    let what = what.into();
    move |error| VouchdError::Io { what, error }
}

/// vouchd's settings the fleet depends on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `reattest_interval_secs`.
    pub interval_secs: u64,
    /// `agent_max_sessions`, when the fleet needs more than the default.
    pub max_sessions: Option<usize>,
    /// `store` (a PostgreSQL URL), when not the data directory's SQLite.
    pub store: Option<String>,
    /// More `vouchd.toml` lines (a replica's shared key-encryption key, its pool size, ...).
    pub extra_config: String,
    /// The admin token to configure with, for a vouchd that finds its database bootstrapped
    /// already (a replica after the first); `None`: the bootstrap token it writes.
    pub token: Option<String>,
}

/// A vouchd process started by the simulator; killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where agents connect.
    pub agent_addr: SocketAddr,
    /// The management API.
    pub api: Api,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr, VouchdError> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("probing a port"))?;
    probe.local_addr().map_err(io("probing a port"))
}

impl Process {
    /// Starts `binary serve` with its own configuration in `dir` (logging at `warn`, as an
    /// operator would run a fleet: one info line per session is 100,000 lines a minute).
    pub fn start(binary: &Path, dir: &Path, settings: &Settings) -> Result<Self, VouchdError> {
        let api_addr = free_port()?;
        let agent_addr = free_port()?;
        let data_dir = dir.join("data");
        let mut toml = format!(
            "api_listen = \"{api_addr}\"\nagent_listen = \"{agent_addr}\"\ndata_dir = \"{}\"\nreattest_interval_secs = {}\n",
            data_dir.display(),
            settings.interval_secs.max(10),
        );
        if let Some(n) = settings.max_sessions {
            toml.push_str(&format!("agent_max_sessions = {n}\n"));
        }
        if let Some(store) = &settings.store {
            toml.push_str(&format!("store = \"{store}\"\n"));
        }
        toml.push_str(&settings.extra_config);
        let config = dir.join("vouchd.toml");
        std::fs::write(&config, toml).map_err(io("writing vouchd.toml"))?;
        let stdout_path = dir.join("vouchd.stdout");
        let stderr_path = dir.join("vouchd.stderr");
        let stdout = std::fs::File::create(&stdout_path).map_err(io("vouchd.stdout"))?;
        let stderr = std::fs::File::create(&stderr_path).map_err(io("vouchd.stderr"))?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        let started = Instant::now();
        let limit = Duration::from_secs(60);
        loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&stdout_path) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains("agent link:") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(VouchdError::Exited(format!("{status}: {err}")));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VouchdError::NotServing(limit, stderr_path));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = match &settings.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(data_dir.join("bootstrap-token"))
                .map_err(io("reading the bootstrap token"))?,
        };
        let certificate =
            std::fs::read(data_dir.join("api-cert.pem")).map_err(io("reading api-cert.pem"))?;
        let api = Api::new(api_addr, &certificate, token.trim())?;
        Ok(Self {
            child,
            data_dir,
            agent_addr,
            api,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) -> Result<(), VouchdError> {
        self.child.kill().map_err(io("killing vouchd"))?;
        self.child.wait().map(drop).map_err(io("reaping vouchd"))
    }
}

/// Resident memory (MiB) and CPU time used so far (s) of process `pid`, from /proc.
pub fn usage(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kib / 1024.0, ticks / clock_ticks()))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Size of the SQLite database files (database, WAL, shared memory) under `data_dir`, MiB.
pub fn database_mib(data_dir: &Path) -> f64 {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return 0.0;
    };
    let bytes: u64 = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.contains(".sqlite")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    bytes as f64 / (1024.0 * 1024.0)
}

/// vouchd's management API, as the bootstrap admin, with the simulator's management server
/// key for host operations.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    signing_key: std::sync::Arc<EcdsaKeyPair>,
    management_pem: String,
}

impl Api {
    /// A client of the API at `addr` that trusts `certificate` (PEM) and sends `token`.
    pub fn new(addr: SocketAddr, certificate: &[u8], token: &str) -> Result<Self, VouchdError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let api = |e: &dyn std::fmt::Display| VouchdError::Api(e.to_string());
        let certificate = reqwest::Certificate::from_pem(certificate).map_err(|e| api(&e))?;
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(certificate)
            .resolve("localhost", addr)
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| api(&e))?;
        let key = rcgen::KeyPair::generate().map_err(|e| api(&e))?;
        let signing_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der())
                .map_err(|e| api(&e))?;
        let management_pem =
            rcgen::CertificateParams::new(vec![format!("{MANAGEMENT_SERVER}.example")])
                .and_then(|p| p.self_signed(&key))
                .map_err(|e| api(&e))?
                .pem();
        Ok(Self {
            client,
            base: format!("https://localhost:{}", addr.port()),
            token: token.to_owned(),
            signing_key: std::sync::Arc::new(signing_key),
            management_pem,
        })
    }

    /// The bearer token it sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        signed: bool,
    ) -> Result<(u16, Value), VouchdError> {
        let bytes = serde_json::to_vec(body).map_err(|e| VouchdError::Api(e.to_string()))?;
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json");
        if signed {
            request = request.header(
                SIGNATURE_HEADER,
                self.signature(method.as_str(), path, &bytes)?,
            );
        }
        let response = request
            .body(bytes)
            .send()
            .await
            .map_err(|e| VouchdError::Api(format!("{method} {path}: {e}")))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        signed: bool,
    ) -> Result<Value, VouchdError> {
        let (status, value) = self.call(method.clone(), path, &body, signed).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(VouchdError::Api(format!(
                "{method} {path}: status {status}: {value}"
            )))
        }
    }

    fn signature(&self, method: &str, path: &str, body: &[u8]) -> Result<String, VouchdError> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| VouchdError::Api("RNG".into()))?;
        let nonce = hex::encode(nonce);
        let message = signing_message(method, path, ts, &nonce, body);
        let sig = self
            .signing_key
            .sign(&SystemRandom::new(), &message)
            .map_err(|_| VouchdError::Api("signing".into()))?;
        Ok(SignatureHeader {
            id: MANAGEMENT_SERVER.into(),
            ts,
            nonce,
            sig: sig.as_ref().to_vec(),
        }
        .render())
    }

    /// The trust an operator configures for the fleet: the management server, the cluster
    /// comparing the boot PCRs, the TPM CA, the software version.
    pub async fn configure(
        &self,
        ca_pem: &str,
        version: &vouch_attest::policy::SoftwareVersion,
    ) -> Result<(), VouchdError> {
        use reqwest::Method;
        self.expect(
            Method::POST,
            "/v1/management-servers",
            json!({"id": MANAGEMENT_SERVER, "certificate_pem": self.management_pem}),
            false,
        )
        .await?;
        self.expect(
            Method::POST,
            "/v1/clusters",
            json!({"name": CLUSTER, "pcrs": crate::hosts::BOOT_PCRS, "bank": "sha256"}),
            false,
        )
        .await?;
        self.expect(
            Method::POST,
            &format!("/v1/clusters/{CLUSTER}/tpm-ca-certs"),
            json!({"certificate_pem": ca_pem}),
            false,
        )
        .await?;
        let version_json =
            serde_json::to_value(version).map_err(|e| VouchdError::Api(e.to_string()))?;
        self.expect(
            Method::PUT,
            &format!("/v1/clusters/{CLUSTER}/software-versions/{}", version.name),
            version_json,
            false,
        )
        .await?;
        Ok(())
    }

    /// Adds a host by its EK certificate, signed by the management server.
    pub async fn add_host(&self, name: &str, ek_certificate_der: &[u8]) -> Result<(), VouchdError> {
        self.expect(
            reqwest::Method::POST,
            &format!("/v1/clusters/{CLUSTER}/hosts"),
            json!({"name": name, "ek_certificate_pem": crate::hosts::pem(ek_certificate_der)}),
            true,
        )
        .await
        .map(|_| ())
    }
}
