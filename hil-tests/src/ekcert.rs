//! The EK certificates of a manufactured swtpm beyond what `swtpm_setup` writes.
//!
//! swtpm 0.7's `swtpm_setup --create-ek-cert` certifies an RSA-2048 EK (NV 0x01C00002) and an
//! ECC NIST P-384 EK (NV 0x01C00016), never the TCG profile's ECC P-256 EK (template L-2,
//! NV 0x01C0000A) the agents use. So the harness does what a TPM manufacturer does for it:
//! creates the L-2 EK in the TPM, has the same local CA (`swtpm_localca`) certify its public
//! key, and stores the certificate at 0x01C0000A with platform authorization (TPM2_NV_DefineSpace
//! and TPM2_NV_Write, marshalled here: vouch-tpm does not write NV). It can also remove the RSA
//! certificate (TPM2_NV_UndefineSpace), for a TPM that carries an ECC EK certificate only.

use std::path::Path;
use std::process::Command;

use vouch_tpm::{EkKind, StartupType, Tpm, Transport};

use crate::socket::SwtpmSocket;
use crate::swtpm::{HarnessError, io_err};

/// TPM_RH_PLATFORM.
const RH_PLATFORM: u32 = 0x4000_000C;
/// TPM_RS_PW.
const RS_PW: u32 = 0x4000_0009;
/// TPM_CC_NV_DefineSpace, TPM_CC_NV_Write, TPM_CC_NV_UndefineSpace.
const CC_NV_DEFINE_SPACE: u32 = 0x12A;
const CC_NV_WRITE: u32 = 0x137;
const CC_NV_UNDEFINE_SPACE: u32 = 0x122;
/// The certificate index's TPMA_NV, as swtpm_setup gives its own: PPWRITE | PPREAD | OWNERREAD |
/// AUTHREAD | NO_DA | PLATFORMCREATE (an ordinary index).
const CERT_NV_ATTRIBUTES: u32 = 0x4207_0001;
/// Bytes per TPM2_NV_Write (below swtpm's TPM_PT_NV_BUFFER_MAX of 1024).
const NV_WRITE_CHUNK: usize = 512;

/// How to run the test's local CA: the tool and the files `swtpm_setup` was given.
pub(crate) struct LocalCa<'a> {
    pub tool: &'a Path,
    pub config: &'a Path,
    pub options: &'a Path,
    /// The test's directory (the CA's working files and log go here).
    pub root: &'a Path,
}

/// Starts the TPM on `socket` and gives it the EK certificates asked for: a P-256 EK
/// certificate at 0x01C0000A when `ecc_p256`, the RSA one removed unless `keep_rsa`. Shuts the
/// TPM down after.
pub(crate) fn provision(
    socket: SwtpmSocket,
    ca: &LocalCa<'_>,
    ecc_p256: bool,
    keep_rsa: bool,
) -> Result<(), HarnessError> {
    let mut tpm: Tpm<SwtpmSocket> = Tpm::new(socket);
    tpm.startup(StartupType::Clear)
        .map_err(|e| failed("TPM2_Startup", e))?;
    if ecc_p256 {
        let ek = tpm
            .create_ek(EkKind::EccP256)
            .map_err(|e| failed("TPM2_CreatePrimary (EK template L-2)", e))?;
        let point = ek.public.ecc_point().map(|(x, y)| (x.to_vec(), y.to_vec()));
        tpm.flush_context(ek.handle)
            .map_err(|e| failed("TPM2_FlushContext", e))?;
        let (x, y) = point.ok_or_else(|| failed("the L-2 EK", "it is not an ECC key"))?;
        let der = certify_p256(ca, &x, &y)?;
        let index = EkKind::EccP256.certificate_index();
        let size = u16::try_from(der.len()).map_err(|_| failed("the certificate", "too big"))?;
        let mut public = Vec::new();
        public.extend_from_slice(&14u16.to_be_bytes());
        public.extend_from_slice(&index.to_be_bytes());
        public.extend_from_slice(&0x000Bu16.to_be_bytes()); // nameAlg: SHA-256
        public.extend_from_slice(&CERT_NV_ATTRIBUTES.to_be_bytes());
        public.extend_from_slice(&0u16.to_be_bytes()); // authPolicy: empty
        public.extend_from_slice(&size.to_be_bytes());
        let mut params = 0u16.to_be_bytes().to_vec(); // auth: empty
        params.extend_from_slice(&public);
        platform_command(
            &mut tpm,
            "TPM2_NV_DefineSpace",
            CC_NV_DEFINE_SPACE,
            &[RH_PLATFORM],
            &params,
        )?;
        for (n, piece) in der.chunks(NV_WRITE_CHUNK).enumerate() {
            let offset = u16::try_from(n * NV_WRITE_CHUNK)
                .map_err(|_| failed("the certificate", "too big"))?;
            let len = u16::try_from(piece.len()).map_err(|_| failed("NV_Write", "too big"))?;
            let mut params = len.to_be_bytes().to_vec();
            params.extend_from_slice(piece);
            params.extend_from_slice(&offset.to_be_bytes());
            platform_command(
                &mut tpm,
                "TPM2_NV_Write",
                CC_NV_WRITE,
                &[RH_PLATFORM, index],
                &params,
            )?;
        }
    }
    if !keep_rsa {
        platform_command(
            &mut tpm,
            "TPM2_NV_UndefineSpace",
            CC_NV_UNDEFINE_SPACE,
            &[RH_PLATFORM, EkKind::Rsa2048.certificate_index()],
            &[],
        )?;
    }
    tpm.shutdown(StartupType::Clear)
        .map_err(|e| failed("TPM2_Shutdown", e))
}

/// The local CA's certificate (DER) for the P-256 EK with public point (`x`, `y`), made as
/// `swtpm_setup` has it make the RSA EK's.
fn certify_p256(ca: &LocalCa<'_>, x: &[u8], y: &[u8]) -> Result<Vec<u8>, HarnessError> {
    let out = ca.root.join("ek-p256");
    std::fs::create_dir_all(&out).map_err(io_err("creating the certificate directory"))?;
    let log = ca.root.join("swtpm_localca-p256.log");
    let ek = format!("x={},y={},id=secp256r1", hex32(x), hex32(y));
    let mut command = Command::new(ca.tool);
    command
        .args(["--type", "ek", "--ek", &ek, "--dir"])
        .arg(&out)
        .arg("--logfile")
        .arg(&log)
        .args([
            "--tpm-spec-family",
            "2.0",
            "--tpm-spec-level",
            "0",
            "--tpm-spec-revision",
            "164",
            "--tpm-manufacturer",
            "id:00001014",
            "--tpm-model",
            "swtpm",
            "--tpm-version",
            "id:20191023",
            "--tpm2",
            "--configfile",
        ])
        .arg(ca.config)
        .arg("--optsfile")
        .arg(ca.options);
    crate::swtpm::hermetic_env(&mut command, ca.root, &ca.root.join("tmp"));
    let run = command.output().map_err(io_err("running swtpm_localca"))?;
    let cert = out.join("ek.cert");
    if !run.status.success() || !cert.is_file() {
        return Err(HarnessError::Failed {
            tool: "swtpm_localca".into(),
            output: format!(
                "certifying the P-256 EK: {}\n{}\n{}",
                run.status,
                String::from_utf8_lossy(&run.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        });
    }
    std::fs::read(&cert).map_err(io_err("reading the P-256 EK certificate"))
}

/// A P-256 coordinate as 64 hex digits (left-padded, as the TPM may drop leading zeros).
fn hex32(coordinate: &[u8]) -> String {
    let digits: String = coordinate.iter().map(|b| format!("{b:02x}")).collect();
    format!("{digits:0>64}")
}

/// Sends `cc` with `handles` and `params`, authorized by the platform hierarchy's empty
/// password, and checks that the TPM answered TPM_RC_SUCCESS.
fn platform_command(
    tpm: &mut Tpm<SwtpmSocket>,
    what: &str,
    cc: u32,
    handles: &[u32],
    params: &[u8],
) -> Result<(), HarnessError> {
    let mut command = Vec::new();
    command.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    command.extend_from_slice(&0u32.to_be_bytes()); // size, below
    command.extend_from_slice(&cc.to_be_bytes());
    for handle in handles {
        command.extend_from_slice(&handle.to_be_bytes());
    }
    command.extend_from_slice(&9u32.to_be_bytes()); // authorizationSize
    command.extend_from_slice(&RS_PW.to_be_bytes());
    command.extend_from_slice(&0u16.to_be_bytes()); // nonce
    command.push(0); // sessionAttributes
    command.extend_from_slice(&0u16.to_be_bytes()); // hmac: the empty password
    command.extend_from_slice(params);
    let size = u32::try_from(command.len()).map_err(|_| failed(what, "too big"))?;
    if let Some(field) = command.get_mut(2..6) {
        field.copy_from_slice(&size.to_be_bytes());
    }
    let mut response = [0u8; 256];
    let n = tpm
        .transport_mut()
        .transact(&command, &mut response)
        .map_err(|e| failed(what, e))?;
    match response.get(6..10) {
        Some([0, 0, 0, 0]) => Ok(()),
        _ => Err(failed(
            what,
            format!(
                "answered {:02x?}",
                response.get(..n.min(response.len())).unwrap_or_default()
            ),
        )),
    }
}

fn failed(what: &str, e: impl std::fmt::Debug) -> HarnessError {
    HarnessError::Failed {
        tool: "swtpm (EK certificate provisioning)".into(),
        output: format!("{what}: {e:?}"),
    }
}
