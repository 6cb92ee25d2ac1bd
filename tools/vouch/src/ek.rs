//! `vouch ek verify`: the EK certificate's chain to trusted manufacturer CAs.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use vouch_attest::ek::{EkError, EkEvidence, EkTrust, certificates_from_pem_or_der, verify_ek};
use vouch_attest::tpm::Public;

use crate::output;
use crate::{Failure, read_file};

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The EK certificate (DER or PEM). Further PEM certificates in the file are used as intermediates.
    cert: PathBuf,
    /// A trusted CA certificate file (PEM or DER), or a directory of them. Repeatable.
    #[arg(long = "ca", value_name = "FILE_OR_DIR", required = true)]
    ca: Vec<PathBuf>,
    /// The EK public key the host presents (TPM2B_PUBLIC, `tpm2_createek -u` / `tpm2_readpublic -o`); must be the certificate's key.
    #[arg(long, value_name = "FILE")]
    ek_public: Option<PathBuf>,
    /// Intermediate CA certificates the host supplies (not trusted by themselves). Repeatable.
    #[arg(long, value_name = "FILE")]
    intermediate: Vec<PathBuf>,
    /// Verify as of this Unix time in seconds instead of now.
    #[arg(long, value_name = "SECONDS")]
    at: Option<i64>,
    /// Print the result as JSON, with the TPM manufacturer, model and version.
    #[arg(long)]
    json: bool,
}

fn load_certs(path: &Path, out: &mut Vec<Vec<u8>>) -> Result<(), Failure> {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| {
            Failure::Input(format!("cannot read directory {}: {e}", path.display()))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "pem" | "crt" | "cer" | "der"))
            })
            .collect();
        files.sort();
        for f in files {
            load_certs(&f, out)?;
        }
        return Ok(());
    }
    let bytes = read_file(path, "CA certificate")?;
    let certs = certificates_from_pem_or_der(&bytes)
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    out.extend(certs);
    Ok(())
}

pub(crate) fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    let mut cas = Vec::new();
    for p in &args.ca {
        load_certs(p, &mut cas)?;
    }
    if cas.is_empty() {
        return Err(Failure::Input(
            "no CA certificates found under --ca; give PEM/DER files or a directory of *.pem/*.crt/*.cer/*.der".into(),
        ));
    }
    let bytes = read_file(&args.cert, "EK certificate")?;
    let mut certs = certificates_from_pem_or_der(&bytes)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.cert.display())))?;
    if certs.is_empty() {
        return Err(Failure::Input(format!(
            "{}: no certificate in the file",
            args.cert.display()
        )));
    }
    let ek = certs.remove(0);
    let mut intermediates = certs;
    for p in &args.intermediate {
        load_certs(p, &mut intermediates)?;
    }
    let public =
        match &args.ek_public {
            Some(p) => {
                let b = read_file(p, "EK public key")?;
                Some(Public::from_tpm2b(&b).map_err(|e| {
                    Failure::Input(format!("{}: not a TPM2B_PUBLIC: {e}", p.display()))
                })?)
            }
            None => None,
        };
    let now = match args.at {
        Some(t) => t,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    };
    let result = verify_ek(
        &EkTrust::Manufacturers { cas },
        &EkEvidence {
            public: public.as_ref(),
            certificate: Some(&ek),
            intermediates: &intermediates,
        },
        now,
    );
    match result {
        Ok(t) => {
            if args.json {
                let info = t.tpm_info().cloned().unwrap_or_default();
                let v = serde_json::json!({
                    "valid": true,
                    "manufacturer": info.manufacturer,
                    "manufacturer_ascii": info.manufacturer_ascii,
                    "model": info.model,
                    "version": info.version,
                    "chain": t.chain(),
                    "ek_public_checked": public.is_some(),
                });
                output::stdout_line(v)
            } else {
                let mut out = String::from("valid\n");
                for c in t.chain() {
                    out.push_str(&format!("  {c}\n"));
                }
                output::stdout(&out)
            }
        }
        // A certificate that is not X.509 at all is unreadable input, not a refusal.
        Err(e @ EkError::Malformed { .. }) => Err(Failure::Input(e.to_string())),
        Err(e) => {
            if args.json {
                output::stdout_line(serde_json::json!({"valid": false, "reason": e.to_string()}))?;
            }
            Err(Failure::Refused(format!("EK refused: {e}")))
        }
    }
}
