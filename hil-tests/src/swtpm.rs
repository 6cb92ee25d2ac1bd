//! A software TPM manufactured per test: `swtpm_setup` in a temporary directory, then
//! `swtpm socket` serving it on Unix sockets inside that directory.
//!
//! Everything a run writes stays in the test's [`tempfile::TempDir`]: the TPM state, the local
//! certificate authority that signs the EK and platform certificates (`swtpm_localca`, configured
//! through a `swtpm_setup.conf` and a `swtpm-localca.conf` written next to it), the logs and the
//! sockets. `HOME`, `XDG_CONFIG_HOME` and `TMPDIR` point into the directory too, so no user or
//! system configuration is read or written. Tests can run in parallel.
//!
//! swtpm is started *without* `--flags startup-clear`: the stacks under test send
//! `TPM2_Startup(CLEAR)` themselves, as firmware must on a real board (and as QEMU's TPM devices
//! require). `not-need-init` lets commands through without a control-channel `INIT`.

use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::socket::SwtpmSocket;

/// What to tell someone whose machine lacks a tool.
pub const INSTALL_HINT: &str = "run `cargo xtask setup` (installs swtpm, swtpm-tools, tpm2-tools)";

/// How long swtpm may take to create its sockets and answer on the control channel.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure of the harness itself (not of the code under test).
#[derive(Debug)]
#[non_exhaustive]
pub enum HarnessError {
    /// A required program is not installed.
    Missing {
        /// The program's name.
        tool: String,
    },
    /// An I/O operation failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A program ran but failed; `output` holds its stderr/log.
    Failed {
        /// The program's name.
        tool: String,
        /// Its diagnostic output.
        output: String,
    },
    /// swtpm did not become ready in time.
    Timeout(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { tool } => write!(f, "`{tool}` is not installed: {INSTALL_HINT}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Failed { tool, output } => write!(f, "`{tool}` failed:\n{output}"),
            Self::Timeout(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for HarnessError {}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// Finds `tool` on `PATH`, or fails with [`HarnessError::Missing`] (which says to run
/// `cargo xtask setup`).
pub fn require_tool(tool: &str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| HarnessError::Missing {
            tool: tool.to_owned(),
        })
}

/// Options for manufacturing a TPM.
#[derive(Debug, Clone)]
pub struct SwtpmOptions {
    /// Pass `--ecc` to `swtpm_setup` (an ECC storage primary key). swtpm 0.7 certifies an ECC
    /// NIST P-384 EK at NV 0x01C00016 either way.
    pub ecc: bool,
    /// Also certify the TCG profile's ECC NIST P-256 EK (template L-2) by the same local CA and
    /// store its certificate at NV 0x01C0000A (see [`crate::ekcert`]).
    pub ecc_p256_ek_certificate: bool,
    /// Keep the RSA-2048 EK certificate at NV 0x01C00002; `false` removes it (with
    /// `ecc_p256_ek_certificate`, a TPM whose only profile EK certificate is the ECC one).
    pub rsa_ek_certificate: bool,
    /// PCR banks to activate, comma-separated, as `swtpm_setup --pcr-banks` takes them.
    pub pcr_banks: String,
    /// Serve a command socket ([`Swtpm::connect`]). QEMU's `-tpmdev emulator` needs it off:
    /// it hands swtpm its own data channel through the control socket (`CMD_SET_DATAFD`),
    /// which swtpm refuses when it already has one.
    pub data_socket: bool,
}

impl Default for SwtpmOptions {
    fn default() -> Self {
        Self {
            ecc: false,
            ecc_p256_ek_certificate: false,
            rsa_ek_certificate: true,
            pcr_banks: "sha1,sha256".to_owned(),
            data_socket: true,
        }
    }
}

/// The certificate authority that signed this TPM's EK certificate: what a verifier trusts as
/// "the TPM manufacturer".
#[derive(Debug, Clone)]
pub struct ManufacturerCa {
    /// The self-signed root certificate (PEM).
    pub root_cert: PathBuf,
    /// The intermediate certificate that signs EK certificates (PEM).
    pub intermediate_cert: PathBuf,
}

/// A running swtpm with its own state, CA and sockets; killed on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    data_path: Option<PathBuf>,
    ctrl_path: PathBuf,
    ca: ManufacturerCa,
    // Last field: dropped after the child is killed.
    dir: tempfile::TempDir,
}

/// Starts `swtpm socket` on the TPM state in `state`, its control socket at `ctrl`, and a
/// command socket at `data` when given.
fn spawn(
    swtpm: &Path,
    root: &Path,
    state: &Path,
    ctrl: &Path,
    data: Option<&Path>,
) -> Result<Child, HarnessError> {
    let log = root.join("swtpm.log");
    // A file, not a pipe: nobody drains a pipe while the test runs.
    let stderr = std::fs::File::create(root.join("swtpm.stderr"))
        .map_err(io_err("creating swtpm.stderr"))?;
    let mut cmd = Command::new(swtpm);
    cmd.arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(kv("dir=", state))
        .arg("--ctrl")
        .arg(kv("type=unixio,path=", ctrl))
        .arg("--flags")
        .arg("not-need-init")
        .arg("--log")
        .arg(kv("file=", &log))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(data) = data {
        cmd.arg("--server").arg(kv("type=unixio,path=", data));
    }
    hermetic_env(&mut cmd, root, &root.join("tmp"));
    cmd.spawn().map_err(io_err("starting swtpm"))
}

impl Swtpm {
    /// Manufactures a TPM with an RSA-2048 EK and certificates and starts it.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&SwtpmOptions::default())
    }

    /// Manufactures a TPM as `options` say and starts it.
    pub fn start_with(options: &SwtpmOptions) -> Result<Self, HarnessError> {
        let swtpm = require_tool("swtpm")?;
        let swtpm_setup = require_tool("swtpm_setup")?;
        let localca = require_tool("swtpm_localca")?;

        let dir = tempfile::Builder::new()
            .prefix("vouch-swtpm-")
            .tempdir()
            .map_err(io_err("creating the swtpm temp dir"))?;
        let root = dir.path().to_path_buf();
        let state = root.join("state");
        let ca_dir = root.join("ca");
        let tmp = root.join("tmp");
        for d in [&state, &ca_dir, &tmp] {
            std::fs::create_dir(d).map_err(io_err(format!("creating {}", d.display())))?;
        }

        let localca_conf = root.join("swtpm-localca.conf");
        let localca_opts = root.join("swtpm-localca.options");
        let setup_conf = root.join("swtpm_setup.conf");
        write(
            &localca_conf,
            &format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca_dir.display()
            ),
        )?;
        write(
            &localca_opts,
            "--platform-manufacturer Vouch\n--platform-version 2.1\n--platform-model hil-tests\n",
        )?;
        write(
            &setup_conf,
            &format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = {}\n",
                localca.display(),
                localca_conf.display(),
                localca_opts.display(),
                options.pcr_banks
            ),
        )?;

        let setup_log = root.join("swtpm_setup.log");
        let mut setup = Command::new(&swtpm_setup);
        setup
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&state)
            .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
            .arg("--pcr-banks")
            .arg(&options.pcr_banks)
            .arg("--config")
            .arg(&setup_conf)
            .arg("--logfile")
            .arg(&setup_log);
        if options.ecc {
            setup.arg("--ecc");
        }
        hermetic_env(&mut setup, &root, &tmp);
        let out = setup.output().map_err(io_err("running swtpm_setup"))?;
        if !out.status.success() {
            return Err(HarnessError::Failed {
                tool: "swtpm_setup".into(),
                output: format!(
                    "{}\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(&setup_log).unwrap_or_default()
                ),
            });
        }

        let ca = ManufacturerCa {
            root_cert: ca_dir.join("swtpm-localca-rootca-cert.pem"),
            intermediate_cert: ca_dir.join("issuercert.pem"),
        };
        for cert in [&ca.root_cert, &ca.intermediate_cert] {
            if !cert.is_file() {
                return Err(HarnessError::Failed {
                    tool: "swtpm_localca".into(),
                    output: format!("expected CA certificate {} was not written", cert.display()),
                });
            }
        }

        let ctrl_path = root.join("ctrl.sock");
        let child = spawn(&swtpm, &root, &state, &ctrl_path, None)?;
        let mut me = Self {
            child,
            data_path: None,
            ctrl_path,
            ca,
            dir,
        };
        me.wait_ready()?;
        if options.ecc_p256_ek_certificate || !options.rsa_ek_certificate {
            me.restart(true)?;
            let local_ca = crate::ekcert::LocalCa {
                tool: &localca,
                config: &localca_conf,
                options: &localca_opts,
                root: &root,
            };
            crate::ekcert::provision(
                me.connect()?,
                &local_ca,
                options.ecc_p256_ek_certificate,
                options.rsa_ek_certificate,
            )?;
            // Started by the provisioning: restarted, it needs TPM2_Startup again.
            me.restart(options.data_socket)?;
        } else if options.data_socket {
            me.restart(true)?;
        }
        Ok(me)
    }

    /// Stops swtpm (SIGKILL, as a TPM losing power) and starts it again on the same state,
    /// with or without a command socket (QEMU needs it without). The TPM then needs
    /// `TPM2_Startup`; persistent objects and NV survive.
    pub fn restart(&mut self, data_socket: bool) -> Result<(), HarnessError> {
        self.kill();
        let swtpm = require_tool("swtpm")?;
        let root = self.dir.path().to_path_buf();
        let data_path = data_socket.then(|| root.join("data.sock"));
        for stale in [Some(&self.ctrl_path), data_path.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_file(stale);
        }
        self.child = spawn(
            &swtpm,
            &root,
            &root.join("state"),
            &self.ctrl_path,
            data_path.as_deref(),
        )?;
        self.data_path = data_path;
        self.wait_ready()
    }

    /// The swtpm process's id (to kill it from another thread while QEMU uses it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills swtpm now, as a TPM that loses power mid-command.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let stderr = std::fs::read_to_string(self.dir.path().join("swtpm.stderr"))
                    .unwrap_or_default();
                return Err(HarnessError::Failed {
                    tool: "swtpm".into(),
                    output: format!(
                        "exited with {status} before becoming ready\n{stderr}\n{}",
                        std::fs::read_to_string(self.dir.path().join("swtpm.log"))
                            .unwrap_or_default()
                    ),
                });
            }
            let data_ready = self.data_path.as_ref().is_none_or(|p| p.exists());
            if data_ready && self.ctrl(CMD_GET_CAPABILITY, &[]).is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::Timeout(format!(
                    "swtpm sockets in {} not ready after {READY_TIMEOUT:?}",
                    self.dir.path().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Opens a connection to the TPM's command socket. swtpm serves one connection at a
    /// time: drop the previous one (and every model holding it) before opening the next.
    pub fn connect(&self) -> Result<SwtpmSocket, HarnessError> {
        match &self.data_path {
            Some(path) => SwtpmSocket::connect(path),
            None => Err(HarnessError::Failed {
                tool: "harness".into(),
                output: "this swtpm was started without a command socket (data_socket: false)"
                    .into(),
            }),
        }
    }

    /// The control socket (what QEMU's `-chardev socket,path=...` connects to).
    pub fn ctrl_socket(&self) -> &Path {
        &self.ctrl_path
    }

    /// The manufacturer CA that signed the EK certificate.
    pub fn ca(&self) -> &ManufacturerCa {
        &self.ca
    }

    /// The test's private directory (for files handed to tpm2-tools, say).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Power-cycles the TPM through the control channel (`CMD_INIT`): it then needs
    /// `TPM2_Startup` again, as after a board reset. Open command connections stay usable.
    pub fn power_cycle(&self) -> Result<(), HarnessError> {
        let reply = self.ctrl(CMD_INIT, &0u32.to_be_bytes())?;
        check_ctrl_result("CMD_INIT", &reply)
    }

    /// Sends one control-channel command (a big-endian `u32` code and its payload) and returns
    /// the reply; see swtpm's `man swtpm-ioctls` for the layouts.
    fn ctrl(&self, code: u32, payload: &[u8]) -> Result<Vec<u8>, HarnessError> {
        let mut s = UnixStream::connect(&self.ctrl_path).map_err(io_err("connecting ctrl"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io_err("ctrl timeout"))?;
        let mut msg = code.to_be_bytes().to_vec();
        msg.extend_from_slice(payload);
        s.write_all(&msg).map_err(io_err("writing ctrl"))?;
        let mut reply = [0u8; 64];
        let n = s.read(&mut reply).map_err(io_err("reading ctrl"))?;
        Ok(reply.get(..n).unwrap_or_default().to_vec())
    }
}

const CMD_GET_CAPABILITY: u32 = 1;
const CMD_INIT: u32 = 2;

fn check_ctrl_result(what: &str, reply: &[u8]) -> Result<(), HarnessError> {
    match reply.get(..4) {
        Some([0, 0, 0, 0]) => Ok(()),
        _ => Err(HarnessError::Failed {
            tool: "swtpm".into(),
            output: format!("{what} answered {reply:02x?}"),
        }),
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) -> Result<(), HarnessError> {
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
}

fn kv(key: &str, path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(key);
    s.push(path.as_os_str());
    s
}

pub(crate) fn hermetic_env(cmd: &mut Command, root: &Path, tmp: &Path) {
    cmd.env("HOME", root)
        .env("XDG_CONFIG_HOME", root)
        .env("TMPDIR", tmp)
        .env_remove(OsStr::new("SWTPM_ROOTCA_PASSWORD"));
}
