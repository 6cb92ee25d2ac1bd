//! A real vouchd for end-to-end tests: started in-process on loopback with SQLite in a
//! temporary directory, configured through its HTTPS management API exactly as an operator
//! would, including the management server's signature on host operations.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use vouch_api::signing::{SignatureHeader, signing_message};
use vouchd::config::Config;
use vouchd::server::Running;

use crate::swtpm::HarnessError;

/// The management server identity the harness registers and signs host operations with.
const MANAGEMENT_SERVER: &str = "mgmt-1";

/// A running vouchd and an authenticated client of its API.
pub struct Verifier {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
    client: reqwest::Client,
    base: String,
    admin: String,
    config: Config,
    signing_key: EcdsaKeyPair,
    /// The management server's key, PKCS#8 (replicas sign with the same).
    signing_pkcs8: Vec<u8>,
    /// Set when vouchd runs as its own process (the `vouchd` binary) rather than in-process.
    process: Option<Process>,
    _dir: Option<tempfile::TempDir>,
}

/// vouchd as a separate process, so that it can be killed with SIGKILL.
#[derive(Debug)]
struct Process {
    binary: PathBuf,
    child: Option<Child>,
    fingerprint: String,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if let Some(child) = self.process.as_mut().and_then(|p| p.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The workspace binary `name` beside this test or program (cargo builds the workspace's
/// binaries with its tests), or the path in the environment variable `env`.
pub fn workspace_binary(name: &str, env: &str) -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| failed("current executable", e))?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            failed(
                &format!("{name} binary"),
                format!("not built next to this program: run `cargo build -p {name}` or set {env}"),
            )
        })
}

fn vouchd_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary("vouchd", "VOUCHD_BIN")
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Failed {
        tool: "vouchd".into(),
        output: format!("{what}: {e}"),
    }
}

impl Verifier {
    /// Starts vouchd in a new temporary data directory, re-attesting every
    /// `reattest_interval_secs`, and registers a management server for host operations.
    pub fn start(reattest_interval_secs: u64) -> Result<Self, HarnessError> {
        Self::start_inner(reattest_interval_secs, None, |_| {})
    }

    /// As [`Verifier::start`], with `tune` applied to vouchd's configuration.
    pub fn start_with(
        reattest_interval_secs: u64,
        tune: impl FnOnce(&mut Config),
    ) -> Result<Self, HarnessError> {
        Self::start_inner(reattest_interval_secs, None, tune)
    }

    /// A vouchd as an operator first meets it: no management server registered yet (the
    /// harness's own signing helpers need [`Verifier::start`]).
    pub fn start_fresh(reattest_interval_secs: u64) -> Result<Self, HarnessError> {
        Self::start_unregistered(reattest_interval_secs, None, |_| {}).map(|(verifier, _)| verifier)
    }

    /// As [`Verifier::start`], with vouchd as its own process (the `vouchd` binary), which
    /// [`Verifier::kill`] can stop with SIGKILL.
    pub fn start_process(reattest_interval_secs: u64) -> Result<Self, HarnessError> {
        let process = Process {
            binary: vouchd_binary()?,
            child: None,
            fingerprint: String::new(),
        };
        Self::start_inner(reattest_interval_secs, Some(process), |_| {})
    }

    /// Starts `count` vouchd processes on the PostgreSQL database `store`, sharing the
    /// key-encryption key in `kek_file`, each with a data directory and ports of its own. The
    /// first bootstraps the database and registers the harness's management server; every one
    /// is called with the first's admin token and signs with the same management key.
    pub fn start_replicas(
        count: usize,
        reattest_interval_secs: u64,
        store: &str,
        kek_file: &Path,
    ) -> Result<Vec<Self>, HarnessError> {
        let binary = vouchd_binary()?;
        let process = || Process {
            binary: binary.clone(),
            child: None,
            fingerprint: String::new(),
        };
        let first = Self::start_inner(reattest_interval_secs, Some(process()), |c| {
            c.store = Some(store.to_owned());
            c.key_encryption_key_file = Some(kek_file.to_owned());
        })?;
        let mut replicas = Vec::with_capacity(count);
        for _ in 1..count {
            let dir = tempfile::Builder::new()
                .prefix("vouchd-")
                .tempdir()
                .map_err(|e| failed("temporary directory", e))?;
            let config = Config {
                data_dir: dir.path().join("data"),
                api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                agent_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..first.config.clone()
            };
            let signing_key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &first.signing_pkcs8)
                    .map_err(|e| failed("signing key", e))?;
            let mut replica = Self {
                runtime: None,
                running: None,
                client: reqwest::Client::new(),
                base: String::new(),
                admin: first.admin.clone(),
                config,
                signing_key,
                signing_pkcs8: first.signing_pkcs8.clone(),
                process: Some(process()),
                _dir: Some(dir),
            };
            if replica.boot()?.is_some() {
                return Err(failed(
                    "replica",
                    "bootstrapped a database already bootstrapped",
                ));
            }
            replicas.push(replica);
        }
        replicas.insert(0, first);
        Ok(replicas)
    }

    /// A GET of a text resource (such as `/metrics`) as the bootstrap admin.
    pub fn get_text(&self, path: &str) -> Result<String, HarnessError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| failed("call", "vouchd is stopped"))?;
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        runtime.block_on(async {
            let response = request.send().await.map_err(|e| failed(path, e))?;
            if !response.status().is_success() {
                return Err(failed(path, response.status()));
            }
            response.text().await.map_err(|e| failed(path, e))
        })
    }

    /// Starts vouchd and registers the harness's management server, whose key signs the
    /// harness's host operations.
    fn start_inner(
        reattest_interval_secs: u64,
        process: Option<Process>,
        tune: impl FnOnce(&mut Config),
    ) -> Result<Self, HarnessError> {
        let (verifier, certificate_pem) =
            Self::start_unregistered(reattest_interval_secs, process, tune)?;
        verifier.expect(
            "POST",
            "/v1/management-servers",
            Some(json!({"id": MANAGEMENT_SERVER, "certificate_pem": certificate_pem})),
            201,
        )?;
        Ok(verifier)
    }

    /// Starts vouchd on an existing data directory (a restored backup, say), calling its API
    /// with `admin`, a token valid in that database. Host operations need
    /// [`Verifier::start`]'s registered management server, which this one does not have.
    pub fn start_on(
        data_dir: PathBuf,
        admin: &str,
        reattest_interval_secs: u64,
    ) -> Result<Self, HarnessError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = Config {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            reattest_interval_secs,
            agent_idle_timeout_secs: 20,
            // Every result kept: the fault tests compare what agents received with the history.
            attestation_history_per_host: 0,
            ..Config::default()
        };
        let key_pair = rcgen::KeyPair::generate().map_err(|e| failed("key", e))?;
        let signing_pkcs8 = key_pair.serialize_der();
        let signing_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &signing_pkcs8)
            .map_err(|e| failed("signing key", e))?;
        let mut verifier = Self {
            runtime: None,
            running: None,
            client: reqwest::Client::new(),
            base: String::new(),
            admin: admin.to_owned(),
            config,
            signing_key,
            signing_pkcs8,
            process: None,
            _dir: None,
        };
        if verifier.boot()?.is_some() {
            return Err(failed(
                "start",
                "the data directory was empty: vouchd bootstrapped it anew",
            ));
        }
        Ok(verifier)
    }

    /// The directory holding the data directory: configuration files and logs go there.
    fn work_dir(&self) -> PathBuf {
        self.config
            .data_dir
            .parent()
            .unwrap_or(&self.config.data_dir)
            .to_path_buf()
    }

    /// Writes a configuration file for the `vouchd` binary's offline commands (`backup`,
    /// `admin`) naming this vouchd's data directory; returns its path.
    pub fn config_file(&self) -> Result<PathBuf, HarnessError> {
        let path = self.work_dir().join("vouchd-offline.toml");
        std::fs::write(
            &path,
            format!("data_dir = \"{}\"\n", self.config.data_dir.display()),
        )
        .map_err(|e| failed("config", e))?;
        Ok(path)
    }

    /// Runs the `vouchd` binary with `args`; returns its output, or its stderr on failure.
    pub fn vouchd(args: &[&std::ffi::OsStr]) -> Result<std::process::Output, HarnessError> {
        let output = Command::new(vouchd_binary()?)
            .args(args)
            .env_remove(vouchd::server::KEY_ENCRYPTION_KEY_ENV)
            .output()
            .map_err(|e| failed("vouchd", e))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(failed(
                &format!("vouchd {args:?}"),
                String::from_utf8_lossy(&output.stderr),
            ))
        }
    }

    /// Starts vouchd; returns it and the PEM certificate of the harness's management server,
    /// not yet registered.
    fn start_unregistered(
        reattest_interval_secs: u64,
        process: Option<Process>,
        tune: impl FnOnce(&mut Config),
    ) -> Result<(Self, String), HarnessError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("vouchd-")
            .tempdir()
            .map_err(|e| failed("temporary directory", e))?;
        let mut config = Config {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().join("data"),
            reattest_interval_secs,
            agent_idle_timeout_secs: 20,
            // A board in QEMU drives its TPM over a bit-banged bus: give its handshake time.
            agent_handshake_timeout_secs: 120,
            // Every result kept: the fault tests compare what agents received with the history.
            attestation_history_per_host: 0,
            ..Config::default()
        };
        tune(&mut config);
        let key_pair = rcgen::KeyPair::generate().map_err(|e| failed("key", e))?;
        let signing_pkcs8 = key_pair.serialize_der();
        let signing_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &signing_pkcs8)
            .map_err(|e| failed("signing key", e))?;
        let certificate =
            rcgen::CertificateParams::new(vec![format!("{MANAGEMENT_SERVER}.example")])
                .and_then(|p| p.self_signed(&key_pair))
                .map_err(|e| failed("management certificate", e))?;
        let mut verifier = Self {
            runtime: None,
            running: None,
            client: reqwest::Client::new(),
            base: String::new(),
            admin: String::new(),
            config,
            signing_key,
            signing_pkcs8,
            process,
            _dir: Some(dir),
        };
        verifier.admin = verifier
            .boot()?
            .ok_or_else(|| failed("first start", "no bootstrap token"))?;
        Ok((verifier, certificate.pem()))
    }

    /// Starts vouchd; returns the bootstrap token on the first start of the data directory.
    fn boot(&mut self) -> Result<Option<String>, HarnessError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| failed("tokio runtime", e))?;
        if self.process.is_some() {
            return self.boot_process(runtime);
        }
        // The shared harness: loopback, a client trusting the self-signed certificate.
        let vouchd::testing::TestVouchd {
            running,
            client,
            base,
        } = runtime
            .block_on(vouchd::testing::TestVouchd::start(self.config.clone()))
            .map_err(|e| failed("start", e))?;
        self.client = client;
        self.base = base;
        // Restarts keep the ports, so agents and QEMU can reconnect to the same address.
        self.config.api_listen = running.api_addr;
        self.config.agent_listen = running.agent_addr;
        let token = running.bootstrap_token.clone();
        self.running = Some(running);
        self.runtime = Some(runtime);
        Ok(token)
    }

    fn boot_process(
        &mut self,
        runtime: tokio::runtime::Runtime,
    ) -> Result<Option<String>, HarnessError> {
        // Fixed ports from the first start on, so agents reconnect to the same address.
        for addr in [&mut self.config.api_listen, &mut self.config.agent_listen] {
            if addr.port() == 0 {
                let probe =
                    std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| failed("port", e))?;
                *addr = probe.local_addr().map_err(|e| failed("port", e))?;
            }
        }
        let dir = self.work_dir();
        let config_file = dir.join("vouchd.toml");
        let toml = format!(
            "api_listen = \"{}\"\nagent_listen = \"{}\"\ndata_dir = \"{}\"\nreattest_interval_secs = {}\nagent_idle_timeout_secs = {}\nagent_handshake_timeout_secs = {}\nattestation_history_per_host = {}\n",
            self.config.api_listen,
            self.config.agent_listen,
            self.config.data_dir.display(),
            self.config.reattest_interval_secs,
            self.config.agent_idle_timeout_secs,
            self.config.agent_handshake_timeout_secs,
            self.config.attestation_history_per_host,
        );
        let mut toml = toml;
        if let Some(store) = &self.config.store {
            toml.push_str(&format!("store = \"{store}\"\n"));
        }
        if let Some(kek) = &self.config.key_encryption_key_file {
            toml.push_str(&format!(
                "key_encryption_key_file = \"{}\"\n",
                kek.display()
            ));
        }
        std::fs::write(&config_file, toml).map_err(|e| failed("config", e))?;
        let stdout_path = dir.join("vouchd.stdout");
        let stdout = std::fs::File::create(&stdout_path).map_err(|e| failed("stdout", e))?;
        let stderr =
            std::fs::File::create(dir.join("vouchd.stderr")).map_err(|e| failed("stderr", e))?;
        let process = self
            .process
            .as_mut()
            .ok_or_else(|| failed("boot", "no process"))?;
        let mut child = Command::new(&process.binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| failed(&format!("starting {}", process.binary.display()), e))?;
        let started = Instant::now();
        let text = loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&stdout_path) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains("agent link:") {
                break text;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(dir.join("vouchd.stderr")).unwrap_or_default();
                return Err(failed("vouchd exited", format!("{status}: {err}")));
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err(failed("vouchd", "not serving after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        process.child = Some(child);
        let after = |marker: &str| {
            text.lines().find_map(|l| {
                l.split_once(marker)
                    .map(|(_, rest)| rest.trim().to_string())
            })
        };
        if let Some(fp) = after("SHA-256 fingerprint: ") {
            process.fingerprint = fp;
        }
        let token = match after("written to ") {
            Some(_) => Some(
                std::fs::read_to_string(
                    self.config
                        .data_dir
                        .join(vouchd::server::BOOTSTRAP_TOKEN_FILE),
                )
                .map_err(|e| failed("bootstrap token file", e))?
                .trim()
                .to_owned(),
            ),
            None => None,
        };
        let pem = std::fs::read(self.config.data_dir.join("api-cert.pem"))
            .map_err(|e| failed("api-cert.pem", e))?;
        let certificate =
            reqwest::Certificate::from_pem(&pem).map_err(|e| failed("certificate", e))?;
        self.client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(certificate)
            .resolve("localhost", self.config.api_listen)
            .build()
            .map_err(|e| failed("HTTP client", e))?;
        self.base = format!("https://localhost:{}", self.config.api_listen.port());
        self.runtime = Some(runtime);
        Ok(token)
    }

    /// Kills a process-mode vouchd with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        let child = self
            .process
            .as_mut()
            .and_then(|p| p.child.as_mut())
            .ok_or_else(|| failed("kill", "vouchd does not run as a process"))?;
        child.kill().map_err(|e| failed("kill", e))?;
        child.wait().map_err(|e| failed("kill", e))?;
        Ok(())
    }

    /// The process id of a process-mode vouchd while it runs (for faults injected from
    /// another thread: `kill -KILL`, `kill -STOP`).
    pub fn pid(&self) -> Option<u32> {
        self.process
            .as_ref()
            .and_then(|p| p.child.as_ref())
            .map(Child::id)
    }

    /// Asks a process-mode vouchd to stop with SIGTERM (as systemd and container runtimes do)
    /// and waits up to `limit` for it to exit; returns its exit status.
    pub fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus, HarnessError> {
        let child = self
            .process
            .as_mut()
            .and_then(|p| p.child.as_mut())
            .ok_or_else(|| failed("terminate", "vouchd does not run as a process"))?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(|e| failed("kill -TERM", e))?;
        if !status.success() {
            return Err(failed("kill -TERM", status));
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| failed("wait", e))? {
                if let Some(p) = self.process.as_mut() {
                    p.child = None;
                }
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                return Err(failed(
                    "terminate",
                    format!("vouchd still runs after {limit:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops vouchd abruptly (every task dropped, nothing flushed beyond what was committed)
    /// and starts it again on the same data directory and ports.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.running = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        if self.process.as_ref().is_some_and(|p| p.child.is_some()) {
            self.kill()?;
        }
        self.boot().map(|_| ())
    }

    /// The management API's URL.
    pub fn api_url(&self) -> String {
        format!("https://localhost:{}", self.config.api_listen.port())
    }

    /// The SHA-256 fingerprint of the API's certificate, as vouchd prints it.
    pub fn fingerprint(&self) -> String {
        match (&self.running, &self.process) {
            (Some(r), _) => r.tls_fingerprint.clone(),
            (None, Some(p)) => p.fingerprint.clone(),
            (None, None) => String::new(),
        }
    }

    /// The bootstrap admin's bearer token (TrustedAdmins).
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// Where agents connect.
    pub fn agent_addr(&self) -> SocketAddr {
        self.config.agent_listen
    }

    /// The data directory (SQLite database, keys).
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// An API call as the bootstrap admin; returns the status and the JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), HarnessError> {
        self.send(&self.admin, method, path, body, false)
    }

    /// An API call with `bearer` as the token; returns the status and the JSON body.
    pub fn call_as(
        &self,
        bearer: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), HarnessError> {
        self.send(bearer, method, path, body, false)
    }

    /// A host operation signed once by the management server and sent to this vouchd, then
    /// the very same request (signature, timestamp, nonce) to `other` (a replay); returns both
    /// statuses.
    pub fn send_signed_then_replay(
        &self,
        other: &Self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<(u16, u16), HarnessError> {
        let bytes = serde_json::to_vec(body).map_err(|e| failed("JSON", e))?;
        let signature = self.signature(method, path, &bytes)?;
        let method_value =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| failed("method", e))?;
        let send = |target: &Self| -> Result<u16, HarnessError> {
            let runtime = target
                .runtime
                .as_ref()
                .ok_or_else(|| failed("call", "vouchd is stopped"))?;
            let request = target
                .client
                .request(method_value.clone(), format!("{}{path}", target.base))
                .bearer_auth(&target.admin)
                .header("content-type", "application/json")
                .header("vouch-signature", signature.clone())
                .body(bytes.clone());
            runtime.block_on(async {
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| failed(path, e))
            })
        };
        Ok((send(self)?, send(other)?))
    }

    fn send(
        &self,
        bearer: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        signed: bool,
    ) -> Result<(u16, Value), HarnessError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| failed("call", "vouchd is stopped"))?;
        let bytes = match &body {
            Some(b) => serde_json::to_vec(b).map_err(|e| failed("JSON", e))?,
            None => Vec::new(),
        };
        let method_value =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| failed("method", e))?;
        let mut request = self
            .client
            .request(method_value, format!("{}{path}", self.base))
            .bearer_auth(bearer);
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .body(bytes.clone());
        }
        if signed {
            request = request.header("vouch-signature", self.signature(method, path, &bytes)?);
        }
        runtime.block_on(async {
            let response = request.send().await.map_err(|e| failed(path, e))?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| failed(path, e))?;
            Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        })
    }

    fn signature(&self, method: &str, path: &str, body: &[u8]) -> Result<String, HarnessError> {
        let ts = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| failed("clock", e))?
                .as_secs(),
        )
        .map_err(|e| failed("clock", e))?;
        let nonce: String = crate::tools::hex(&rand_bytes()?);
        let message = signing_message(method, path, ts, &nonce, body);
        let sig = self
            .signing_key
            .sign(&SystemRandom::new(), &message)
            .map_err(|e| failed("signing", e))?;
        Ok(SignatureHeader {
            id: MANAGEMENT_SERVER.into(),
            ts,
            nonce,
            sig: sig.as_ref().to_vec(),
        }
        .render())
    }

    fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Result<Value, HarnessError> {
        let (got, value) = self.call(method, path, body)?;
        if got == status {
            Ok(value)
        } else {
            Err(failed(
                &format!("{method} {path}"),
                format!("status {got}: {value}"),
            ))
        }
    }

    /// Creates a trusted cluster that trusts `ca_pems` (manufacturer CA certificates) and
    /// compares `pcrs` of the SHA-256 bank against its accepted software versions.
    pub fn trust_cluster(
        &self,
        name: &str,
        ca_pems: &[String],
        pcrs: &[u32],
    ) -> Result<(), HarnessError> {
        self.expect(
            "POST",
            "/v1/clusters",
            Some(json!({"name": name, "pcrs": pcrs, "bank": "sha256"})),
            201,
        )?;
        for pem in ca_pems {
            self.expect(
                "POST",
                &format!("/v1/clusters/{name}/tpm-ca-certs"),
                Some(json!({"certificate_pem": pem})),
                201,
            )?;
        }
        Ok(())
    }

    /// Accepts a software version (as `vouch image add` prints it) in `cluster`.
    pub fn accept(&self, cluster: &str, version: &Value) -> Result<(), HarnessError> {
        let name = version["name"]
            .as_str()
            .ok_or_else(|| failed("software version", "no name"))?;
        let (status, body) = self.call(
            "PUT",
            &format!("/v1/clusters/{cluster}/software-versions/{name}"),
            Some(version.clone()),
        )?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(failed(
                "software version",
                format!("status {status}: {body}"),
            ))
        }
    }

    /// Adds a host (by its EK certificate, PEM) to `cluster`, signed by the management server;
    /// returns its EK hash.
    pub fn add_host(
        &self,
        cluster: &str,
        name: &str,
        ek_certificate_pem: &str,
    ) -> Result<String, HarnessError> {
        let (status, body) = self.send(
            &self.admin,
            "POST",
            &format!("/v1/clusters/{cluster}/hosts"),
            Some(json!({"name": name, "ek_certificate_pem": ek_certificate_pem})),
            true,
        )?;
        if status != 201 {
            return Err(failed("add host", format!("status {status}: {body}")));
        }
        body.get("ek_hash")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| failed("add host", format!("no ek_hash in {body}")))
    }

    /// Lists one individual EK in `cluster`: `kind` is `certificate`, `public_key` (trust mode
    /// 2, with the CA) or `bare_public_key` (mode 3); returns its EK hash.
    pub fn add_ek(&self, cluster: &str, kind: &str, pem: &str) -> Result<String, HarnessError> {
        let body = self.expect(
            "POST",
            &format!("/v1/clusters/{cluster}/eks"),
            Some(json!({"kind": kind, "pem": pem})),
            201,
        )?;
        body.get("ek_hash")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| failed("add EK", format!("no ek_hash in {body}")))
    }

    /// Adds a host by its EK hash (for TPMs without an EK certificate), signed by the
    /// management server.
    pub fn add_host_by_hash(
        &self,
        cluster: &str,
        name: &str,
        ek_hash: &str,
    ) -> Result<(), HarnessError> {
        let (status, body) = self.send(
            &self.admin,
            "POST",
            &format!("/v1/clusters/{cluster}/hosts"),
            Some(json!({"name": name, "ek_hash": ek_hash})),
            true,
        )?;
        if status == 201 {
            Ok(())
        } else {
            Err(failed("add host", format!("status {status}: {body}")))
        }
    }

    /// Registers key server `kms-1` with `endpoints` (`host:port`, tried in order), the client
    /// certificate and key vouchd presents and the CA that signs the server's certificate (PEM);
    /// makes a primary key on it; and gives `cluster` the key provider `provider-1` over that
    /// key, with `settings` (wrapping, refresh, lifetime) added to its definition.
    pub fn give_cluster_a_provider(
        &self,
        cluster: &str,
        endpoints: &[String],
        (client_certificate, client_key, ca): (&str, &str, &str),
        settings: &Value,
    ) -> Result<(), HarnessError> {
        let created = |(status, body): (u16, Value)| {
            if (200..300).contains(&status) {
                Ok(body)
            } else {
                Err(failed("key provider", format!("status {status}: {body}")))
            }
        };
        created(self.call(
            "POST",
            "/v1/key-servers",
            Some(json!({
                "name": "kms-1",
                "endpoints": endpoints,
                "client_certificate_pem": client_certificate,
                "client_key_pem": client_key,
                "ca_certificate_pem": ca,
            })),
        )?)?;
        let key = created(self.call("POST", "/v1/key-servers/kms-1/keys", Some(json!({})))?)?;
        let mut provider = json!({"name": "provider-1", "key_server": "kms-1", "primary_key_id": key.get("key_id")});
        if let (Some(p), Some(extra)) = (provider.as_object_mut(), settings.as_object()) {
            p.extend(extra.clone());
        }
        created(self.call("POST", "/v1/key-providers", Some(provider))?)?;
        created(self.call(
            "PUT",
            &format!("/v1/clusters/{cluster}/key-provider"),
            Some(json!({"provider": "provider-1"})),
        )?)?;
        Ok(())
    }

    /// The host's record: state, attested_at, valid_until, recent results.
    pub fn host(&self, ek_hash: &str) -> Result<Value, HarnessError> {
        self.expect("GET", &format!("/v1/hosts/{ek_hash}"), None, 200)
    }

    /// Waits until the host's state is `state`, for at most `timeout`.
    pub fn wait_for_state(
        &self,
        ek_hash: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<Value, HarnessError> {
        let start = Instant::now();
        loop {
            let host = self.host(ek_hash)?;
            if host.get("state").and_then(Value::as_str) == Some(state) {
                return Ok(host);
            }
            if start.elapsed() > timeout {
                return Err(failed(
                    "waiting for host state",
                    format!("not `{state}` after {timeout:?}: {host}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn rand_bytes() -> Result<[u8; 16], HarnessError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|e| failed("random", e))?;
    Ok(b)
}

/// PEM of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    crate::tools::pem("CERTIFICATE", der)
}

/// The manufacturer CA certificates (root and intermediate, PEM) a cluster trusts for
/// `swtpm`'s EK certificates.
pub fn ca_pems(swtpm: &crate::swtpm::Swtpm) -> Result<Vec<String>, HarnessError> {
    let ca = swtpm.ca();
    [&ca.root_cert, &ca.intermediate_cert]
        .iter()
        .map(|p| std::fs::read_to_string(p).map_err(|e| failed("reading the CA", e)))
        .collect()
}

/// Reads the RSA EK certificate (PEM) of a TPM over its command socket, starting it first.
pub fn ek_certificate_pem(swtpm: &crate::swtpm::Swtpm) -> Result<String, HarnessError> {
    ek_certificate_pem_of(swtpm, vouch_tpm::EkKind::Rsa2048)
}

/// Reads the EK certificate of `kind` (PEM) of a TPM over its command socket, starting it
/// first.
pub fn ek_certificate_pem_of(
    swtpm: &crate::swtpm::Swtpm,
    kind: vouch_tpm::EkKind,
) -> Result<String, HarnessError> {
    let mut tpm: vouch_tpm::Tpm<_> = vouch_tpm::Tpm::new(swtpm.connect()?);
    tpm.startup(vouch_tpm::StartupType::Clear)
        .map_err(|e| failed("TPM2_Startup", format!("{e:?}")))?;
    let mut der = vec![0u8; 4096];
    let n = tpm
        .read_ek_certificate(kind, &mut der)
        .map_err(|e| failed("reading the EK certificate", format!("{e:?}")))?;
    Ok(pem(der.get(..n).unwrap_or_default()))
}

/// The software version `vouch image add` computes for the firmware ELF at `elf`.
pub fn image_software_version(name: &str, elf: &Path) -> Result<Value, HarnessError> {
    let bytes = std::fs::read(elf).map_err(|e| failed("reading the image", e))?;
    let layout = vouch::image::layout_elf(&bytes).map_err(|e| failed("image", e))?;
    let parts: [&[u8]; 1] = [&layout.image];
    let boot = vouch_agent::measure::BootImage {
        version: layout.agent_version.as_deref().unwrap_or_default(),
        image: &parts,
        base: layout.base,
        config: layout.config.as_deref().unwrap_or_default(),
    };
    let version = vouch::image::software_version(name, &boot).map_err(|e| failed("image", e))?;
    serde_json::to_value(version).map_err(|e| failed("JSON", e))
}

/// The software version `linux-host-1` that `vouch-hosted-agent --measure-image` measures for
/// `image` (agent version `vouch-hosted-agent`, no configuration).
pub fn hosted_agent_software_version(image: &[u8]) -> Result<Value, HarnessError> {
    let parts: [&[u8]; 1] = [image];
    let boot = vouch_agent::measure::BootImage {
        version: b"vouch-hosted-agent",
        image: &parts,
        base: 0,
        config: b"",
    };
    let version =
        vouch::image::software_version("linux-host-1", &boot).map_err(|e| failed("image", e))?;
    serde_json::to_value(version).map_err(|e| failed("JSON", e))
}
