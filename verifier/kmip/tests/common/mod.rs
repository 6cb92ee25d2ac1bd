//! A real PyKMIP server per test: its own temporary directory, configuration, SQLite database
//! and certificates (a CA, an ECDSA P-256 server certificate — PyKMIP's TLS 1.2 suites with an
//! RSA certificate are all CBC, which rustls refuses — and a client certificate, which PyKMIP
//! requires), on a free port of 127.0.0.1, killed with its process group on drop. A server
//! can be stopped and started again on its database, and a replica started on the same
//! database (for key server faults).
//!
//! The server comes from the virtualenv `cargo xtask setup` installs (`setup::PYKMIP_VENV`);
//! `VOUCH_PYKMIP_VENV` names another. A missing venv fails the test: never a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test harness outside #[test] functions"
)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vouch_kmip::ttlv::{self, MAX_MESSAGE_LEN};
use vouch_kmip::{Endpoint, KeyServer, ProtocolVersion};

/// Where `cargo xtask setup` puts the venv (tools/xtask/src/setup.rs, `PYKMIP_VENV`).
const PYKMIP_VENV: &str = "/opt/vouch/pykmip-venv";

/// How long the server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn venv() -> PathBuf {
    std::env::var_os("VOUCH_PYKMIP_VENV").map_or_else(|| PathBuf::from(PYKMIP_VENV), PathBuf::from)
}

/// The test PKI, in PEM.
#[derive(Clone)]
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = p256();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "Vouch KMIP test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = p256();
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let client_key = p256();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        // PyKMIP takes the client's identity (the owner of the objects it creates) from the CN.
        client
            .distinguished_name
            .push(DnType::CommonName, "vouch-key-provider");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();

        Self {
            ca: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        }
    }
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running PyKMIP server.
pub struct PyKmip {
    child: Child,
    /// Whether `child` runs (it is not signalled again once stopped: its pid may be reused).
    running: bool,
    dir: tempfile::TempDir,
    pub port: u16,
    pub pki: Pki,
}

impl PyKmip {
    /// [`Self::start`], or why not when the venv is missing (for the demo, which reports
    /// instead of panicking).
    pub fn start_checked() -> Result<Self, String> {
        let server = venv().join("bin/pykmip-server");
        if !server.is_file() {
            return Err(format!(
                "PyKMIP not found at {}: run `cargo xtask setup` (it installs the PyKMIP virtualenv)",
                server.display()
            ));
        }
        Ok(Self::start())
    }

    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("pykmip.db");
        Self::launch(dir, Pki::new(), &database)
    }

    /// A replica of this server: another pykmip-server on its own port, with the same
    /// certificates, sharing this server's database (so it serves the same keys).
    pub fn replica(&self) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::launch(dir, self.pki.clone(), &self.database())
    }

    /// The server's SQLite database.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("pykmip.db")
    }

    fn launch(dir: tempfile::TempDir, pki: Pki, database: &Path) -> Self {
        let server = venv().join("bin/pykmip-server");
        assert!(
            server.is_file(),
            "PyKMIP not found at {}: run `cargo xtask setup` (it installs the PyKMIP virtualenv)",
            server.display()
        );
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), &pki.ca).unwrap();
        std::fs::write(path("server.pem"), &pki.server_cert).unwrap();
        std::fs::write(path("server.key"), &pki.server_key).unwrap();
        std::fs::create_dir(path("policies")).unwrap();
        let port = free_port();
        let config = format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
             ca_path={}\nauth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=True\n\
             database_path={}\nlogging_level=DEBUG\n",
            path("server.pem").display(),
            path("server.key").display(),
            path("ca.pem").display(),
            path("policies").display(),
            database.display(),
        );
        std::fs::write(path("server.conf"), config).unwrap();
        let child = Self::spawn(dir.path());
        let mut server = Self {
            child,
            running: true,
            dir,
            port,
            pki,
        };
        server.wait_listening();
        server
    }

    /// Runs pykmip-server on the configuration in `dir`.
    fn spawn(dir: &Path) -> Child {
        let server = venv().join("bin/pykmip-server");
        let path = |name: &str| dir.join(name);
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path("output.txt"))
            .unwrap();
        Command::new(&server)
            .arg("-f")
            .arg(path("server.conf"))
            .arg("-l")
            .arg(path("server.log"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            // Its own process group: PyKMIP forks a multiprocessing manager and a policy
            // monitor, which must die with it.
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// Stops the server (SIGKILL to its process group), keeping its directory, configuration
    /// and database.
    pub fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again: the same port, configuration and database.
    pub fn restart(&mut self) {
        assert!(!self.running, "restart a stopped server");
        self.child = Self::spawn(self.dir.path());
        self.running = true;
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "pykmip-server exited ({status}) before listening:\n{}",
                    self.logs()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "pykmip-server not listening on {addr} after {START_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's output and log, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- output ---\n{}\n--- server.log ---\n{}",
            read("output.txt"),
            read("server.log")
        )
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new("127.0.0.1", self.port)
    }

    /// A key server with this server as its only replica.
    pub fn key_server(&self, version: ProtocolVersion) -> KeyServer {
        self.key_server_with(vec![self.endpoint()], version)
    }

    pub fn key_server_with(&self, endpoints: Vec<Endpoint>, version: ProtocolVersion) -> KeyServer {
        KeyServer::new(
            endpoints,
            self.pki.client_cert.as_bytes(),
            self.pki.client_key.as_bytes(),
            self.pki.ca.as_bytes(),
        )
        .unwrap()
        .with_version(version)
        .with_timeout(Duration::from_secs(10))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PyKmip {
    fn drop(&mut self) {
        // The whole group, by its id (the server's pid).
        self.stop();
    }
}

/// What the fake server does after reading the request.
pub enum Reply {
    /// Sends these bytes, then holds the connection open.
    Bytes(Vec<u8>),
    /// Sends nothing and holds the connection open.
    Silence,
    /// Sends these bytes and closes the connection.
    Close(Vec<u8>),
}

/// A fake replica with the PKI's server certificate: serves one TLS connection, reads one
/// request, then replies.
pub async fn fake_server(pki: &Pki, reply: Reply) -> Endpoint {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut header = [0u8; 8];
        tls.read_exact(&mut header).await.unwrap();
        let mut body = vec![0u8; ttlv::item_len(&header, MAX_MESSAGE_LEN).unwrap() - 8];
        tls.read_exact(&mut body).await.unwrap();
        match reply {
            Reply::Bytes(bytes) => {
                tls.write_all(&bytes).await.unwrap();
                tls.flush().await.unwrap();
            }
            Reply::Silence => {}
            Reply::Close(bytes) => {
                tls.write_all(&bytes).await.unwrap();
                tls.shutdown().await.unwrap();
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    Endpoint::new("127.0.0.1", port)
}
