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

/// A token as vouchd issues them, signed by `vouchd`'s current key.
fn token(vouchd: &vouchd::testing::TestVouchd) -> String {
    let now = vouchd::now();
    let claims = vouchd::jwt::AttestationClaims {
        iss: "vouchd".into(),
        sub: "ab".repeat(32),
        cluster: "prod".into(),
        software_version: "fw-1.0".into(),
        pcr_digest: "cd".repeat(32),
        nonce: "ef".repeat(16),
        attestation: "ef".repeat(16),
        iat: now,
        exp: now + 4 * 3600,
        jti: "01".into(),
    };
    vouchd.running.state.signer.sign(&claims).unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn jwks(vouchd: &vouchd::testing::TestVouchd) -> jsonwebtoken::jwk::JwkSet {
    vouchd
        .client
        .get(format!("{}/.well-known/jwks.json", vouchd.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Whether `token` verifies from `vouchd`'s published JWKS alone (an outside verifier).
async fn verifies_from_jwks(vouchd: &vouchd::testing::TestVouchd, token: &str) -> bool {
    let set = jwks(vouchd).await;
    let Some(jwk) = set.find(&kid(token)) else {
        return false;
    };
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&["vouchd"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
}

async fn rotate(vouchd: &vouchd::testing::TestVouchd, token: &str) -> (u16, serde_json::Value) {
    let response = vouchd
        .client
        .post(format!("{}/v1/signing-keys/rotate", vouchd.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Waits until `done` holds, polling.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let end = Instant::now() + DEADLINE;
    while !done().await {
        assert!(Instant::now() < end, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rotates through `a`, whose bootstrap token is `admin`, and checks `a` and `b` (another
/// replica on the same database, or `a` again).
async fn rotation(a: &vouchd::testing::TestVouchd, b: &vouchd::testing::TestVouchd, admin: &str) {
    let old_a = token(a);
    let old_b = token(b);
    let old_kid = kid(&old_a);
    assert_eq!(kid(&old_b), old_kid, "one key for every replica");

    let (status, keys) = rotate(a, admin).await;
    assert_eq!(status, 200, "{keys}");
    let new_kid = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(keys["keys"][1]["kid"], old_kid.as_str(), "{keys}");
    assert_eq!(
        kid(&token(a)),
        new_kid,
        "new tokens are signed with the new key"
    );
    // The other replica takes the new key within its reload period.
    eventually("the new key reaches the other replica", || async {
        b.running.state.signer.kid() == new_kid
    })
    .await;
    assert_eq!(kid(&token(b)), new_kid);

    // During the grace period: both keys published, tokens of either verify everywhere.
    for v in [a, b] {
        let set = jwks(v).await;
        assert!(set.find(&old_kid).is_some() && set.find(&new_kid).is_some());
        for t in [&old_a, &old_b, &token(a), &token(b)] {
            assert!(verifies_from_jwks(v, t).await);
            v.running.state.signer.verify(t, vouchd::now()).unwrap();
        }
    }
    // The deep health check and the metrics show when the old key leaves the JWKS.
    let deep: serde_json::Value = a
        .client
        .get(format!("{}/v1/health", a.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let what = format!("token-signing:{old_kid}");
    let retired = deep["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == what.as_str())
        .unwrap_or_else(|| panic!("{deep}"));
    assert_eq!(retired["not_after"], keys["keys"][1]["grace_until"]);
    let metrics = a.running.state.metrics.render();
    assert!(
        metrics.contains(&format!(
            "vouchd_certificate_expiry_timestamp_seconds{{kind=\"token-signing\",name=\"{old_kid}\""
        )),
        "{metrics}"
    );
    // Not again while the old key's tokens may be presented.
    let (status, body) = rotate(b, admin).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("grace period"), "{body}");

    // After it (vouchd's view at the end of the grace period; no test waits out a clock):
    // the old key is gone from the JWKS and its tokens are refused, the new key's verify.
    let after = keys["keys"][1]["grace_until"].as_i64().unwrap();
    assert_eq!(
        after,
        keys["keys"][1]["retired_at"].as_i64().unwrap() + i64::try_from(GRACE).unwrap()
    );
    for v in [a, b] {
        let ring = &v.running.state.signer;
        let before_end = ring.jwks_at(after - 1);
        assert_eq!(before_end.keys.len(), 2);
        let at_end = ring.jwks_at(after);
        assert_eq!(at_end.keys.len(), 1);
        assert_eq!(at_end.keys[0].kid, new_kid);
        for t in [&old_a, &old_b] {
            ring.verify(t, after - 1).unwrap();
            let refused = ring.verify(t, after).unwrap_err();
            assert!(refused.contains("grace period"), "{refused}");
        }
        ring.verify(&token(v), after).unwrap();
    }
    let events: serde_json::Value = a
        .client
        .get(format!("{}/v1/events", a.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events.to_string().contains("signing_key.rotated"),
        "{events}"
    );
}

/// The grace period the rotation tests configure, seconds: long enough that the checks within
/// it never race the clock; the end is checked at its computed time.
const GRACE: u64 = 3600;

#[tokio::test]
async fn the_signing_key_rotates_with_a_grace_period_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = vouchd::testing::loopback_config(dir.path());
    config.signing_key_grace_secs = Some(GRACE);
    let a = vouchd::testing::TestVouchd::start(config).await.unwrap();
    let admin = a.admin_token().unwrap().to_owned();
    rotation(&a, &a, &admin).await;
    // The keys are the database's: a restart signs with the rotated key.
    let kid = a.running.state.signer.kid();
    let mut config = vouchd::testing::loopback_config(dir.path());
    config.signing_key_grace_secs = Some(GRACE);
    drop(a);
    let again = vouchd::testing::TestVouchd::start(config).await.unwrap();
    assert_eq!(again.running.state.signer.kid(), kid);
}

#[tokio::test]
async fn the_signing_key_rotates_on_every_postgres_replica() {
    // The cluster's own client blocks: off the runtime's threads.
    let (cluster, url) = tokio::task::spawn_blocking(|| {
        let cluster = vouchd::testing::postgres::PgCluster::shared().unwrap();
        let url = cluster.create_database().unwrap();
        (cluster, url)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("key-encryption-key");
    std::fs::write(&kek, "37".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let replica = |name: &str| {
        let mut config = vouchd::testing::loopback_config(&dir.path().join(name));
        config.store = Some(url.clone());
        config.key_encryption_key_file = Some(kek.clone());
        config.signing_key_grace_secs = Some(GRACE);
        config
    };
    let a = vouchd::testing::TestVouchd::start(replica("a"))
        .await
        .unwrap();
    let b = vouchd::testing::TestVouchd::start(replica("b"))
        .await
        .unwrap();
    let admin = a.admin_token().unwrap().to_owned();
    rotation(&a, &b, &admin).await;
    drop((a, b));
    drop(cluster);
}

/// A key-encryption key file (64 hex digits, mode 0600) in `dir`.
fn kek(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{byte:02x}").repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[tokio::test]
async fn the_signing_keys_follow_a_key_encryption_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (kek(dir.path(), "old", 0x11), kek(dir.path(), "new", 0x22));
    let config = |current: &Path, previous: Option<&Path>| {
        let mut config = vouchd::testing::loopback_config(&dir.path().join("data"));
        config.key_encryption_key_file = Some(current.to_owned());
        config.previous_key_encryption_key_file = previous.map(Path::to_owned);
        config
    };
    let a = vouchd::testing::TestVouchd::start(config(&old, None))
        .await
        .unwrap();
    let admin = a.admin_token().unwrap().to_owned();
    assert_eq!(rotate(&a, &admin).await.0, 200);
    let kids = a.running.state.signer.kids();
    assert!(kids.1.is_some());
    drop(a);
    // Both signing keys are sealed again under the new key-encryption key ...
    let b = vouchd::testing::TestVouchd::start(config(&new, Some(&old)))
        .await
        .unwrap();
    assert_eq!(b.running.state.signer.kids(), kids);
    drop(b);
    // ... so that they open once the old one is gone.
    let c = vouchd::testing::TestVouchd::start(config(&new, None))
        .await
        .unwrap();
    assert_eq!(c.running.state.signer.kids(), kids);
}
