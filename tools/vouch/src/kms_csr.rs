//! `vouch kms csr`: vouchd's KMIP client key and a PKCS#10 certificate signing request for the
//! key server's CA to sign. The key is written readable by its owner only (mode 0600) and never
//! leaves this machine; the CSR goes to the key server's administrator, and the certificate
//! that comes back is `vouch kms add --client-cert`, the key `--client-key`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData as _;
use serde::Serialize;

use crate::Failure;

/// The key types a KMIP client key can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256, signing with SHA-256.
    EcdsaP256,
    /// RSA with a 2048-bit modulus, PKCS#1 v1.5 signatures with SHA-256 (for key servers that
    /// take no ECDSA client certificates).
    Rsa2048,
}

/// What `vouch kms csr` is asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct CsrArgs {
    /// The certificate's subject common name: how the key server knows vouchd (e.g. the
    /// KMIP user name the key server's administrator gives it).
    #[arg(long)]
    pub common_name: String,
    /// Where the private key is written (PEM, PKCS#8, mode 0600).
    #[arg(long, default_value = "vouchd-kmip-client.key", value_name = "FILE")]
    pub key_out: PathBuf,
    /// Where the CSR is written (PEM).
    #[arg(long, default_value = "vouchd-kmip-client.csr", value_name = "FILE")]
    pub csr_out: PathBuf,
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// A DNS name for the certificate's subject alternative names (repeatable; most key
    /// servers need none for a client).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// Overwrite the key and CSR files if they exist (the old key is lost).
    #[arg(long)]
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct CsrOutput {
    pub key: PathBuf,
    pub csr: PathBuf,
    pub key_type: KeyType,
    pub common_name: String,
    /// SHA-256 of the public key (SubjectPublicKeyInfo DER), hex: matches the certificate the
    /// CA returns.
    pub public_key_sha256: String,
}

/// Makes the key and the CSR and writes them.
pub fn make(args: &CsrArgs) -> Result<CsrOutput, Failure> {
    if args.common_name.trim().is_empty() || args.common_name.len() > 64 {
        return Err(Failure::Input(
            "--common-name must be 1 to 64 characters (X.509's upper bound)".into(),
        ));
    }
    if args.key_out == args.csr_out {
        return Err(Failure::Input(
            "--key-out and --csr-out must be different files".into(),
        ));
    }
    if !args.force {
        for path in [&args.key_out, &args.csr_out] {
            if path.exists() {
                return Err(Failure::Input(format!(
                    "{} exists; choose another path with --key-out/--csr-out, or --force to overwrite it (an overwritten key is lost)",
                    path.display()
                )));
            }
        }
    }
    let key = match args.key_type {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::Rsa2048 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
    }
    .map_err(|e| Failure::Input(format!("cannot generate the key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(args.dns_names.clone())
        .map_err(|e| Failure::Input(format!("--dns-name: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, args.common_name.clone());
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Failure::Input(format!("cannot make the CSR: {e}")))?;
    let key_pem = key.serialize_pem();
    write_private(&args.key_out, key_pem.as_bytes(), args.force)?;
    write_file(&args.csr_out, csr.as_bytes(), args.force, 0o644)?;
    Ok(CsrOutput {
        key: args.key_out.clone(),
        csr: args.csr_out.clone(),
        key_type: args.key_type,
        common_name: args.common_name.clone(),
        public_key_sha256: hex(&aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &key.subject_public_key_info(),
        )),
    })
}

fn hex(digest: &aws_lc_rs::digest::Digest) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, data: &[u8], force: bool) -> Result<(), Failure> {
    write_file(path, data, force, 0o600)
}

/// Writes a new file with `mode`; with `force`, an existing one is removed first (so that it
/// never keeps wider permissions than `mode`).
fn write_file(path: &Path, data: &[u8], force: bool, mode: u32) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::Input(format!(
            "cannot write {}: {e}; check the directory",
            path.display()
        ))
    };
    if force && path.exists() {
        std::fs::remove_file(path).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(data).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// `vouch kms csr`.
pub fn run(args: &CsrArgs, json: bool) -> Result<(), Failure> {
    let out = make(args)?;
    if json {
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Failure::Input(format!("cannot encode the output: {e}")))?;
        crate::output::emit_line(text);
    } else {
        crate::output::emit_line(format_args!(
            "wrote the key {} (mode 0600; keep it on vouchd's host) and the CSR {} (CN={}); have the key server's CA sign the CSR, then `vouch kms add NAME --client-cert CERT --client-key {} --kms-ca CA --endpoint HOST:PORT`",
            out.key.display(),
            out.csr.display(),
            out.common_name,
            out.key.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer as _, X509CertificationRequest};

    fn args(dir: &Path, key_type: KeyType) -> CsrArgs {
        CsrArgs {
            common_name: "vouchd-lab".into(),
            key_out: dir.join("client.key"),
            csr_out: dir.join("client.csr"),
            key_type,
            dns_names: vec![],
            force: false,
        }
    }

    /// The CSR parses, names the common name, is signed by the key written, and that key is
    /// owner-only; a second run refuses to overwrite unless forced.
    #[test]
    fn key_and_csr_match_and_are_not_overwritten() {
        for (key_type, verify) in [
            (
                KeyType::EcdsaP256,
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1
                    as &dyn aws_lc_rs::signature::VerificationAlgorithm,
            ),
            (
                KeyType::Rsa2048,
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let args = args(dir.path(), key_type);
            let out = make(&args).unwrap();

            let pem = std::fs::read_to_string(&out.csr).unwrap();
            let der = rustls::pki_types::CertificateSigningRequestDer::from(
                rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                    .map(|d: rustls::pki_types::CertificateSigningRequestDer<'_>| {
                        d.as_ref().to_vec()
                    })
                    .unwrap(),
            );
            let (rest, csr) = X509CertificationRequest::from_der(der.as_ref()).unwrap();
            assert!(rest.is_empty());
            let info = &csr.certification_request_info;
            let cn = info
                .subject
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap();
            assert_eq!(cn, "vouchd-lab");
            // The signature over the request info verifies with the request's own key.
            aws_lc_rs::signature::UnparsedPublicKey::new(
                verify,
                &info.subject_pki.subject_public_key.data,
            )
            .verify(info.raw, &csr.signature_value.data)
            .unwrap();
            // The key written is the request's key.
            let key =
                rcgen::KeyPair::from_pem(&std::fs::read_to_string(&out.key).unwrap()).unwrap();
            assert_eq!(key.subject_public_key_info(), info.subject_pki.raw);
            assert_eq!(
                out.public_key_sha256,
                hex(&aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    info.subject_pki.raw
                ))
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&out.key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }

            let again = make(&args).map(drop).unwrap_err();
            assert!(
                matches!(&again, Failure::Input(m) if m.contains("--force")),
                "{again:?}"
            );
            let kept = std::fs::read(&out.key).unwrap();
            let forced = make(&CsrArgs {
                force: true,
                ..args
            })
            .unwrap();
            assert_ne!(std::fs::read(&forced.key).unwrap(), kept);
        }
    }

    #[test]
    fn bad_requests_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = args(dir.path(), KeyType::EcdsaP256);
        bad.common_name = String::new();
        assert!(make(&bad).is_err());
        let mut same = args(dir.path(), KeyType::EcdsaP256);
        same.csr_out = same.key_out.clone();
        assert!(make(&same).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
