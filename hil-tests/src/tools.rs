//! tpm2-tools as an independent second opinion: `tpm2_makecredential` makes a credential for
//! the TPM to activate, `tpm2_checkquote` verifies a quote the TPM signed. Neither talks to a
//! TPM (`-T none` / offline), so they check the stack's outputs without sharing its code.
//! GnuTLS's `certtool` checks certificate chains.

use std::path::Path;
use std::process::Command;

use crate::swtpm::{HarnessError, io_err, require_tool};

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// PEM armour around `der` with `label` (e.g. "PUBLIC KEY").
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Lower-case hex.
pub fn hex(data: &[u8]) -> String {
    vouch_attest::codec::to_hex(data)
}

/// A tool's exit status and output.
#[derive(Debug)]
pub struct ToolOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// stdout + stderr.
    pub output: String,
}

/// Runs `tool` with `args` (in `dir`), failing only if it cannot be started.
pub fn run(tool: &str, args: &[&str], dir: &Path) -> Result<ToolOutput, HarnessError> {
    let path = require_tool(tool)?;
    let out = Command::new(path)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("TPM2TOOLS_TCTI", "none")
        .output()
        .map_err(io_err(format!("running {tool}")))?;
    Ok(ToolOutput {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// A credential as `tpm2_makecredential` writes it: magic 0xBADCC0DE, version 1, then a
/// `TPM2B_ID_OBJECT` and a `TPM2B_ENCRYPTED_SECRET`.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The `TPM2B_ID_OBJECT` payload.
    pub id_object: Vec<u8>,
    /// The `TPM2B_ENCRYPTED_SECRET` payload.
    pub encrypted_secret: Vec<u8>,
}

/// Runs `tpm2_makecredential -T none` for the EK whose public key is `ek_pem` (an RSA
/// `PUBLIC KEY` PEM file), the key named `name`, and `secret`; parses the result.
pub fn make_credential(
    dir: &Path,
    ek_pem: &Path,
    name: &[u8],
    secret: &[u8],
) -> Result<Credential, HarnessError> {
    let secret_path = dir.join("credential-secret.bin");
    let out_path = dir.join("credential.out");
    std::fs::write(&secret_path, secret).map_err(io_err("writing the secret"))?;
    let name_hex = hex(name);
    let args = [
        "-T",
        "none",
        "-u",
        path_str(ek_pem)?,
        "-G",
        "rsa",
        "-s",
        path_str(&secret_path)?,
        "-n",
        &name_hex,
        "-o",
        path_str(&out_path)?,
    ];
    let out = run("tpm2_makecredential", &args, dir)?;
    if !out.success {
        return Err(HarnessError::Failed {
            tool: "tpm2_makecredential".into(),
            output: out.output,
        });
    }
    let blob = std::fs::read(&out_path).map_err(io_err("reading the credential"))?;
    parse_credential(&blob).ok_or_else(|| HarnessError::Failed {
        tool: "tpm2_makecredential".into(),
        output: format!("unexpected credential file {blob:02x?}"),
    })
}

/// Parses tpm2-tools' credential file format (with vouch-tpm's parser, which boards use too).
pub fn parse_credential(blob: &[u8]) -> Option<Credential> {
    let (id_object, encrypted_secret) =
        vouch_tpm::response::parse_tpm2_tools_credential(blob).ok()?;
    Some(Credential {
        id_object: id_object.to_vec(),
        encrypted_secret: encrypted_secret.to_vec(),
    })
}

/// Files for `tpm2_checkquote`.
#[derive(Debug)]
pub struct QuoteFiles<'a> {
    /// The AK's public key: PEM or a marshalled `TPM2B_PUBLIC`.
    pub ak_public: &'a Path,
    /// The `TPMS_ATTEST` bytes.
    pub message: &'a Path,
    /// The `TPMT_SIGNATURE` bytes.
    pub signature: &'a Path,
    /// The PCR values, concatenated in selection order (as `tpm2_pcrread -o` writes them).
    pub pcrs: &'a Path,
    /// The selection the values belong to, e.g. "sha256:16".
    pub pcr_list: &'a str,
}

/// Runs `tpm2_checkquote -g sha256`; `Ok(output)` says whether it accepted.
pub fn check_quote(
    dir: &Path,
    files: &QuoteFiles<'_>,
    nonce: &[u8],
) -> Result<ToolOutput, HarnessError> {
    let nonce_hex = hex(nonce);
    let args = [
        "-u",
        path_str(files.ak_public)?,
        "-m",
        path_str(files.message)?,
        "-s",
        path_str(files.signature)?,
        "-f",
        path_str(files.pcrs)?,
        "-l",
        files.pcr_list,
        "-q",
        &nonce_hex,
        "-g",
        "sha256",
    ];
    run("tpm2_checkquote", &args, dir)
}

fn path_str(p: &Path) -> Result<&str, HarnessError> {
    p.to_str().ok_or_else(|| HarnessError::Failed {
        tool: "harness".into(),
        output: format!("non-UTF-8 path {}", p.display()),
    })
}

/// GnuTLS `certtool --verify` of the chain `chain` (PEM files, leaf first) against the
/// trust anchor `root`. certtool comes with gnutls-bin, which swtpm-tools depends on (its
/// `swtpm_localca` signs with it), so `cargo xtask setup` installs it.
pub fn verify_chain(dir: &Path, root: &Path, chain: &[&Path]) -> Result<ToolOutput, HarnessError> {
    let mut pem = String::new();
    for part in chain {
        pem.push_str(
            &std::fs::read_to_string(part)
                .map_err(io_err(format!("reading {}", part.display())))?,
        );
    }
    let chain_path = dir.join("chain.pem");
    std::fs::write(&chain_path, pem).map_err(io_err("writing chain.pem"))?;
    let args = [
        "--verify",
        "--load-ca-certificate",
        path_str(root)?,
        "--infile",
        path_str(&chain_path)?,
    ];
    run("certtool", &args, dir)
}
