//! TLS for the management API: a configured certificate, or a self-signed one generated on
//! first start and kept in the data directory. (The listener itself is the HTTP edge's:
//! `api::https`.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
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
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| file_err(&cert_path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&cert_path, e))?;
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| file_err(&cert_path, "no certificate in the file"))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_err(&key_path, e))?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Tls(e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        config: Arc::new(server),
        fingerprint: crate::hex(&crate::sha256(&leaf)),
        certificate: leaf,
        generated,
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
}
