//! TLS for the management API: a configured certificate, or a self-signed one generated on
//! first start and kept in the data directory. (The listener itself is the HTTP edge's:
//! `api::https`.)
//!
//! The certificate is served through [`LiveCertificate`], a certificate resolver whose
//! certificate and key [`LiveCertificate::reload`] replaces from the same files (on SIGHUP):
//! new handshakes get the new certificate, connections already open keep theirs, and a new
//! pair that does not parse, does not match or is not valid now is refused, the old one staying
//! in service.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::config::Config;

/// The API's certificate and key, ready to serve.
#[derive(Debug)]
pub struct TlsIdentity {
    pub config: Arc<ServerConfig>,
    /// The leaf certificate, DER.
    pub certificate: CertificateDer<'static>,
    /// SHA-256 of the leaf certificate, lowercase hex.
    pub fingerprint: String,
    /// Whether it was generated now (first start).
    pub generated: bool,
    /// The certificate in service, replaceable while serving.
    pub live: Arc<LiveCertificate>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// What the certificate in service is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// SHA-256 of the leaf certificate, lowercase hex.
    pub fingerprint: String,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
    pub subject: String,
    /// notBefore and notAfter, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The certificate file it was read from.
    pub file: PathBuf,
}

/// A certificate and key read and checked, ready to swap in.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    info: CertificateInfo,
}

/// The management API's certificate resolver: one certificate and key, replaceable while
/// serving by [`Self::reload`].
#[derive(Debug)]
pub struct LiveCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    served: RwLock<Arc<Served>>,
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.served.read().ok().map(|s| Arc::clone(&s.key))
    }
}

impl LiveCertificate {
    /// The certificate in service.
    pub fn current(&self) -> Option<CertificateInfo> {
        self.served.read().ok().map(|s| s.info.clone())
    }

    /// Reads the certificate and key files again and serves them from the next handshake on,
    /// if they parse, the key is the certificate's, and the certificate is valid at `now`
    /// (Unix seconds). Otherwise the certificate in service stays and the error says why.
    pub fn reload(&self, now: i64) -> Result<CertificateInfo, TlsError> {
        let served = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        let info = &served.info;
        if info.not_after <= now {
            return Err(file_err(
                &self.cert_path,
                format!(
                    "the certificate expired at {} (notAfter, Unix seconds); the old certificate stays in service",
                    info.not_after
                ),
            ));
        }
        if info.not_before > now {
            return Err(file_err(
                &self.cert_path,
                format!(
                    "the certificate is not valid before {} (notBefore, Unix seconds); the old certificate stays in service",
                    info.not_before
                ),
            ));
        }
        let info = info.clone();
        let mut slot = self
            .served
            .write()
            .map_err(|_| TlsError::Tls("the certificate holder is poisoned".into()))?;
        *slot = Arc::new(served);
        Ok(info)
    }
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The leaf's fingerprint, serial, subject and validity.
pub fn describe(der: &[u8], file: &Path) -> Result<CertificateInfo, TlsError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| file_err(file, format!("the certificate does not parse: {e}")))?;
    Ok(CertificateInfo {
        fingerprint: crate::hex(&crate::sha256(der)),
        serial: crate::hex(cert.raw_serial()),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        file: file.to_owned(),
    })
}

/// Reads a PEM chain and key and checks that the key is the leaf's.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Served, TlsError> {
    let pem = std::fs::read(cert_path).map_err(|e| file_err(cert_path, e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert_path, e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| file_err(cert_path, "no certificate in the file"))?;
    let info = describe(leaf, cert_path)?;
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(key_path).map_err(|e| file_err(key_path, e))?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| file_err(key_path, e))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        file_err(
            key_path,
            format!("not the private key of {} ({e})", cert_path.display()),
        )
    })?;
    Ok(Served {
        key: Arc::new(key),
        info,
    })
}

/// The configured certificate, or the data directory's self-signed one (generated if missing).
pub fn load_or_create(config: &Config) -> Result<TlsIdentity, TlsError> {
    let (cert_path, key_path, generated) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => {
            let cert = config.data_dir.join("api-cert.pem");
            let key = config.data_dir.join("api-key.pem");
            let generated = !cert.exists();
            if generated {
                let ck = rcgen::generate_simple_self_signed(config.tls_self_signed_names.clone())
                    .map_err(|e| {
                    TlsError::Tls(format!("cannot generate a certificate: {e}"))
                })?;
                write_private(&key, ck.signing_key.serialize_pem().as_bytes())
                    .map_err(|e| file_err(&key, e))?;
                std::fs::write(&cert, ck.cert.pem()).map_err(|e| file_err(&cert, e))?;
            }
            (cert, key, generated)
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let served = read_pair(&cert_path, &key_path, &provider)?;
    let now = crate::now();
    if served.info.not_after <= now {
        tracing::warn!(
            file = %cert_path.display(),
            not_after = served.info.not_after,
            "the API's TLS certificate has expired: clients will refuse it; replace the files and send SIGHUP"
        );
    }
    let certificate = served
        .key
        .cert
        .first()
        .cloned()
        .ok_or_else(|| file_err(&cert_path, "no certificate in the file"))?;
    let fingerprint = served.info.fingerprint.clone();
    let live = Arc::new(LiveCertificate {
        cert_path,
        key_path,
        provider: Arc::clone(&provider),
        served: RwLock::new(Arc::new(served)),
    });
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&live) as Arc<dyn ResolvesServerCert>);
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        config: Arc::new(server),
        fingerprint,
        certificate,
        generated,
        live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let first = load_or_create(&config).unwrap();
        assert!(first.generated);
        assert_eq!(first.fingerprint.len(), 64);
        let second = load_or_create(&config).unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("api-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        }
    }

    /// A self-signed certificate for localhost valid from `from` to `to` (years), PEM, and its
    /// key, PEM.
    fn pair(from: i32, to: i32) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |(c, k): &(String, String)| {
            std::fs::write(&cert, c).unwrap();
            std::fs::write(&key, k).unwrap();
        };
        write(&pair(2020, 2090));
        let config = Config {
            data_dir: dir.path().to_owned(),
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..Config::default()
        };
        let identity = load_or_create(&config).unwrap();
        let first = identity.live.current().unwrap();
        assert_eq!(first.fingerprint, identity.fingerprint);
        let now = crate::now();

        let second = pair(2021, 2091);
        write(&second);
        let reloaded = identity.live.reload(now).unwrap();
        assert_ne!(reloaded.fingerprint, first.fingerprint);
        assert_eq!(identity.live.current().unwrap(), reloaded);

        // Each bad pair is refused and the second stays.
        let (third_cert, third_key) = pair(2021, 2091);
        for (c, k, why) in [
            ("garbage".to_owned(), second.1.clone(), "no certificate"),
            (third_cert.clone(), second.1.clone(), "not the private key"),
            (third_cert.clone(), "garbage".to_owned(), "k.pem"),
            (pair(2000, 2001).0, second.1.clone(), "not the private key"),
        ] {
            write(&(c, k));
            let err = identity.live.reload(now).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
            assert_eq!(identity.live.current().unwrap(), reloaded);
        }
        let expired = pair(2000, 2001);
        write(&expired);
        let err = identity.live.reload(now).unwrap_err().to_string();
        assert!(err.contains("expired"), "{err}");
        let future = pair(2080, 2090);
        write(&future);
        let err = identity.live.reload(now).unwrap_err().to_string();
        assert!(err.contains("not valid before"), "{err}");
        assert_eq!(identity.live.current().unwrap(), reloaded);
        write(&(third_cert, third_key));
        assert_ne!(identity.live.reload(now).unwrap(), reloaded);
    }
}
