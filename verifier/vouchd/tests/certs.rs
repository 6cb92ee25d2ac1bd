//! Certificates while serving: the `vouchd serve` binary replaces its API's TLS certificate on
//! SIGHUP without dropping a connection, and keeps the old one when the new files are bad.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long anything here may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// A self-signed certificate for localhost (PEM) and its key (PEM).
fn pair() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A TLS client trusting `roots`.
fn client(roots: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(der(root)).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    // Full handshakes only: a resumed session shows the certificate of the session it resumes.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A finished handshake with `addr`.
fn connect(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::clone(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// The leaf certificate the server presented.
fn presented(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request on a kept-alive connection: the status and the body.
fn get(tls: &mut Tls, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").unwrap();
    tls.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0; length];
    tls.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// `vouchd serve`, its stderr lines on a channel.
struct Vouchd {
    child: Child,
    api: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Drop for Vouchd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vouchd {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vouchd"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut api = None;
        let mut line = String::new();
        while api.is_none() {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "vouchd ended before serving"
            );
            api = line
                .trim()
                .strip_prefix("management API: https://")
                .map(|a| a.parse().unwrap());
        }
        // Keep draining stdout so that vouchd never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Self {
            child,
            api: api.unwrap(),
            log,
        }
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }
}

#[test]
fn sighup_replaces_the_tls_certificate_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    let write = |(cert, key): &(String, String)| {
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
    };
    let (first, second) = (pair(), pair());
    write(&first);
    let config = dir.path().join("vouchd.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:0\"\nagent_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("data"),
            cert_path,
            key_path
        ),
    )
    .unwrap();
    let vouchd = Vouchd::start(&config);
    let trust = client(&[&first.0, &second.0]);

    let mut before = connect(&trust, vouchd.api);
    assert_eq!(presented(&before), der(&first.0));
    assert_eq!(get(&mut before, "/healthz", None).0, 200);

    // New files, SIGHUP: new connections get the new certificate.
    write(&second);
    vouchd.hangup();
    vouchd.wait_for_log("TLS certificate was reloaded");
    let mut after = connect(&trust, vouchd.api);
    assert_eq!(presented(&after), der(&second.0));
    assert_eq!(get(&mut after, "/healthz", None).0, 200);
    // The connection opened before carries on, with the certificate it began with.
    assert_eq!(get(&mut before, "/healthz", None).0, 200);
    assert_eq!(presented(&before), der(&first.0));

    // A key that is not the certificate's: refused, the second certificate stays.
    write(&(pair().0, second.1.clone()));
    vouchd.hangup();
    let line = vouchd.wait_for_log("was NOT reloaded");
    assert!(line.contains("not the private key"), "{line}");
    let mut kept = connect(&trust, vouchd.api);
    assert_eq!(presented(&kept), der(&second.0));

    // Both outcomes are events.
    let token = std::fs::read_to_string(dir.path().join("data/bootstrap-token")).unwrap();
    let (status, events) = get(&mut kept, "/v1/events", Some(token.trim()));
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("tls.reloaded"), "{events}");
    assert!(events.contains("tls.reload_failed"), "{events}");
}

/// The metrics line of the API's certificate.
fn tls_expiry_line(info: &vouchd::tls::CertificateInfo) -> String {
    format!(
        "vouchd_certificate_expiry_timestamp_seconds{{kind=\"tls\",name=\"api\",subject=\"{}\"}} {}",
        info.subject, info.not_after
    )
}

#[tokio::test]
async fn the_metrics_carry_the_certificate_in_service_and_the_health_components() {
    let dir = tempfile::tempdir().unwrap();
    let h = vouchd::testing::TestVouchd::start(vouchd::testing::loopback_config(dir.path()))
        .await
        .unwrap();
    let state = &h.running.state;
    let first = vouchd::tls::describe(&h.running.tls_certificate, dir.path()).unwrap();
    let metrics = || async {
        h.client
            .get(format!("{}/metrics", h.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // vouchd runs the check at start; wait for its first outcome.
    let end = Instant::now() + DEADLINE;
    let mut text = metrics().await;
    while !text.contains(&tls_expiry_line(&first)) {
        assert!(Instant::now() < end, "no TLS expiry in the metrics: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = metrics().await;
    }
    assert!(
        text.contains("vouchd_health_ok{component=\"store\",name=\"\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vouchd_health_ok{component=\"certificates\",name=\"\"} 1"),
        "{text}"
    );

    // A new self-signed certificate with another expiry, reloaded: the deep check and the
    // metrics follow the certificate in service.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2090, 6, 1);
    let cert = params.self_signed(&key).unwrap();
    let data = dir.path();
    std::fs::write(data.join("api-cert.pem"), cert.pem()).unwrap();
    std::fs::write(data.join("api-key.pem"), key.serialize_pem()).unwrap();
    let second = vouchd::service::certs::reload_tls(state).await.unwrap();
    assert_ne!(second.not_after, first.not_after);
    let token = h.admin_token().unwrap();
    let deep: serde_json::Value = h
        .client
        .get(format!("{}/v1/health", h.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tls = deep["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "tls")
        .unwrap();
    assert_eq!(tls["not_after"], second.not_after, "{deep}");
    let text = metrics().await;
    assert!(text.contains(&tls_expiry_line(&second)), "{text}");
    assert!(!text.contains(&tls_expiry_line(&first)), "{text}");
}
