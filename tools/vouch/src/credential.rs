//! `vouch credential make`: TPM2_MakeCredential on the verifier side.

use std::path::PathBuf;

use clap::Args;
use vouch_attest::codec::from_hex;
use vouch_attest::credential::make_credential;
use vouch_attest::tpm::Public;

use crate::{Failure, read_file};

#[derive(Debug, Args)]
pub(crate) struct MakeArgs {
    /// The EK public key (TPM2B_PUBLIC, `tpm2_createek -u`).
    #[arg(long, value_name = "FILE")]
    ek_public: PathBuf,
    /// The AK public key (TPM2B_PUBLIC, `tpm2_createak -u`); its attributes are checked and its Name computed.
    #[arg(long, value_name = "FILE")]
    ak_public: PathBuf,
    /// The secret to protect, hex, at most the EK's name-digest size.
    #[arg(long, value_name = "HEX")]
    secret: String,
    /// Where to write the credential in `tpm2_makecredential -o` format (for `tpm2_activatecredential -i`).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
}

pub(crate) fn make(args: &MakeArgs) -> Result<(), Failure> {
    let ek = Public::from_tpm2b(&read_file(&args.ek_public, "EK public key")?)
        .map_err(|e| Failure::Input(format!("--ek-public: not a TPM2B_PUBLIC: {e}")))?;
    let ak = Public::from_tpm2b(&read_file(&args.ak_public, "AK public key")?)
        .map_err(|e| Failure::Input(format!("--ak-public: not a TPM2B_PUBLIC: {e}")))?;
    let secret =
        from_hex(&args.secret).ok_or_else(|| Failure::Input("--secret: not hex".into()))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let made =
        make_credential(&ek, &ak, &secret, &rng).map_err(|e| Failure::Refused(e.to_string()))?;
    // tpm2-tools' credential file: magic, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    let mut out = 0xBADC_C0DEu32.to_be_bytes().to_vec();
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&made.id_object);
    out.extend_from_slice(&made.encrypted_secret);
    std::fs::write(&args.output, out)
        .map_err(|e| Failure::Input(format!("cannot write {}: {e}", args.output.display())))?;
    Ok(())
}
