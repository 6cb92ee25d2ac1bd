//! `vouch quote verify`: the checks of `tpm2_checkquote`, on the same files.

use std::path::PathBuf;

use clap::Args;
use vouch_attest::HashAlg;
use vouch_attest::codec::from_hex;
use vouch_attest::eventlog;
use vouch_attest::quote::{AttestationKey, QuoteError, QuoteExpectations, verify_quote};
use vouch_attest::tpm::{Attest, Public};
use vouch_attest::tpm2_tools::{parse_serialized_pcrs, parse_values_pcrs};

use crate::output;
use crate::{Failure, read_file};

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The AK public key: TPM2B_PUBLIC (`tpm2_createak -u`) or PEM (`tpm2_readpublic -f pem`).
    #[arg(long, short = 'u', value_name = "AK")]
    ak_public: PathBuf,
    /// The quote, TPMS_ATTEST (`tpm2_quote -m`).
    #[arg(long, short = 'm', value_name = "MSG")]
    quote: PathBuf,
    /// The signature, TPMT_SIGNATURE (`tpm2_quote -s`).
    #[arg(long, short = 's', value_name = "SIG")]
    signature: PathBuf,
    /// The PCR values: `tpm2_quote -o` (serialized) or `tpm2_pcrread -o` (values) file.
    #[arg(long, short = 'f', value_name = "PCRS")]
    pcrs: PathBuf,
    /// The nonce (qualifying data) the quote must carry, in hex. Without it freshness is not checked.
    #[arg(long, short = 'q', value_name = "HEX")]
    nonce: Option<String>,
    /// The hash the signature must use (sha1, sha256, sha384, sha512).
    #[arg(long, short = 'g', value_name = "ALG")]
    hash: Option<String>,
    /// A TCG event log whose replay must match the quoted PCRs.
    #[arg(long, value_name = "LOG")]
    eventlog: Option<PathBuf>,
}

fn load_ak(bytes: &[u8]) -> Result<AttestationKey, Failure> {
    let refused = |e: String| Failure::Refused(format!("AK check failed: {e}"));
    if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(bytes)
            .map_err(|e| Failure::Input(format!("--ak-public: not a PEM file: {e}")))?;
        AttestationKey::from_spki(&pem.contents).map_err(|e| refused(e.to_string()))
    } else {
        let public = Public::from_tpm2b(bytes).map_err(|e| {
            Failure::Input(format!("--ak-public: neither PEM nor a TPM2B_PUBLIC: {e}"))
        })?;
        AttestationKey::from_public(public).map_err(|e| Failure::Refused(e.to_string()))
    }
}

pub(crate) fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    let ak_bytes = read_file(&args.ak_public, "AK public key")?;
    let quote = read_file(&args.quote, "quote")?;
    let sig = read_file(&args.signature, "signature")?;
    let pcr_bytes = read_file(&args.pcrs, "PCR file")?;
    let hash = match &args.hash {
        None => None,
        Some(h) => Some(HashAlg::from_name(h).ok_or_else(|| {
            Failure::Input(format!(
                "--hash {h}: unknown algorithm; use sha1, sha256, sha384 or sha512"
            ))
        })?),
    };
    let ak = load_ak(&ak_bytes)?;
    let attest = Attest::from_bytes(&quote).map_err(|e| {
        Failure::Input(format!(
            "--quote {}: not a TPMS_ATTEST: {e}",
            args.quote.display()
        ))
    })?;
    let nonce = match &args.nonce {
        Some(n) => from_hex(n).ok_or_else(|| {
            Failure::Input(format!(
                "--nonce {n}: not hex; give the nonce as hex digits"
            ))
        })?,
        None => {
            output::stderr(
                "vouch: warning: no --nonce given, so the quote's freshness is not checked",
            );
            attest.extra_data.clone()
        }
    };
    let (selection, pcrs) = match parse_serialized_pcrs(&pcr_bytes) {
        Ok((sel, values)) => (Some(sel), values),
        Err(serialized_err) => match parse_values_pcrs(&pcr_bytes, &attest.pcr_select) {
            Ok(values) => (None, values),
            Err(_) => {
                return Err(Failure::Input(format!(
                    "--pcrs {}: neither a serialized PCR file ({serialized_err}) nor the {} values of the quoted selection {}",
                    args.pcrs.display(),
                    attest.pcr_select.len(),
                    attest.pcr_select
                )));
            }
        },
    };
    let expect = QuoteExpectations {
        nonce: &nonce,
        selection: selection.as_ref(),
        pcrs: &pcrs,
        last: None,
        hash,
    };
    let verified = verify_quote(&ak, &quote, &sig, &expect).map_err(|e| match e {
        QuoteError::MalformedSignature(e) => Failure::Input(format!(
            "--signature {}: not a TPMT_SIGNATURE: {e}",
            args.signature.display()
        )),
        e => Failure::Refused(format!("quote refused: {e}")),
    })?;
    if let Some(log_path) = &args.eventlog {
        let bytes = read_file(log_path, "event log")?;
        let log = eventlog::parse(&bytes).map_err(|e| {
            Failure::Input(format!(
                "--eventlog {}: not a valid TCG event log: {e}",
                log_path.display()
            ))
        })?;
        let banks: Vec<_> = verified.pcrs().banks.keys().copied().collect();
        let replay = log.replay_banks(Some(&banks));
        log.check_against(&replay, verified.pcrs())
            .map_err(|e| Failure::Refused(format!("quote refused: event-log check failed: {e}")))?;
    }
    output::stdout("valid\n")
}
