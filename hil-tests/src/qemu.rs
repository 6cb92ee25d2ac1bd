//! Runs a board's firmware under QEMU with a swtpm behind QEMU's own TPM device model.
//!
//! The launch configuration is the project's `qemu/<board>.args` (one argument per line,
//! `#` comments, `${FIRMWARE}` and `${TPM_SOCKET}` substituted), so what the tests run is what
//! `cargo xtask qemu` runs. The firmware reports through semihosting: its log on QEMU's
//! stdout, pass/fail as QEMU's exit code. The ELF comes from `VOUCH_FIRMWARE_DIR` (set by
//! `cargo xtask test`) or the workspace's `target/firmware`; a missing ELF is a failure that
//! says to run `cargo xtask firmware`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::swtpm::{HarnessError, Swtpm, io_err, require_tool};

/// A board QEMU can run.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// The board crate's (and binary's) name, also the name of its `qemu/<name>.args`.
    pub name: &'static str,
    /// Its Rust target.
    pub target: &'static str,
}

/// QEMU's `mps2-an386` (Cortex-M4), TPM on I2C via `tpm-tis-i2c`.
pub const MPS2_AN386: Board = Board {
    name: "mps2-an386",
    target: "thumbv7em-none-eabihf",
};

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit code (the firmware's semihosting exit status); `None` if killed.
    pub exit_code: Option<i32>,
    /// Everything QEMU printed (the firmware's semihosting log, QEMU's own errors).
    pub log: String,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the firmware exited with success.
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The board's release ELF.
pub fn firmware_elf(board: &Board) -> Result<PathBuf, HarnessError> {
    let dir = std::env::var_os("VOUCH_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/firmware"));
    let elf = dir.join(board.target).join("release").join(board.name);
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(HarnessError::Failed {
            tool: "firmware".into(),
            output: format!(
                "no firmware image at {}: run `cargo xtask firmware` (or `cargo xtask test`)",
                elf.display()
            ),
        })
    }
}

/// What a run does beyond booting the board.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The firmware's mode (its command line): `probe` when `None`.
    pub mode: Option<String>,
    /// Where UART0 connects (vouchd's agent port); unconnected when `None`.
    pub agent_link: Option<std::net::SocketAddr>,
    /// Another image than the board's build output (e.g. one with a byte changed).
    pub firmware: Option<PathBuf>,
}

/// QEMU's arguments from `qemu/<board>.args`.
pub fn arguments(
    board: &Board,
    firmware: &Path,
    tpm_socket: &Path,
    options: &RunOptions,
) -> Result<Vec<String>, HarnessError> {
    let serial = options
        .agent_link
        .map_or_else(|| "none".to_string(), |addr| format!("tcp:{addr}"));
    let mode = options.mode.as_deref().unwrap_or("probe");
    let file = workspace_root()
        .join("qemu")
        .join(format!("{}.args", board.name));
    let text =
        std::fs::read_to_string(&file).map_err(io_err(format!("reading {}", file.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("${FIRMWARE}", &firmware.to_string_lossy())
                .replace("${TPM_SOCKET}", &tpm_socket.to_string_lossy())
                .replace("${SERIAL}", &serial)
                .replace("${MODE}", mode)
        })
        .collect())
}

/// Boots `board` against `swtpm` (which must have been started with `data_socket: false`)
/// and waits for the firmware to exit, killing QEMU after `timeout`.
pub fn run(board: &Board, swtpm: &Swtpm, timeout: Duration) -> Result<Outcome, HarnessError> {
    run_with(board, swtpm, timeout, &RunOptions::default())
}

/// [`run`] with a mode, an agent link and optionally another image.
pub fn run_with(
    board: &Board,
    swtpm: &Swtpm,
    timeout: Duration,
    options: &RunOptions,
) -> Result<Outcome, HarnessError> {
    let qemu = require_tool("qemu-system-arm")?;
    let elf = match &options.firmware {
        Some(path) => path.clone(),
        None => firmware_elf(board)?,
    };
    let args = arguments(board, &elf, swtpm.ctrl_socket(), options)?;
    let log_path = swtpm.dir().join(format!("qemu-{}.log", board.name));
    let log_file = std::fs::File::create(&log_path).map_err(io_err("creating the QEMU log"))?;
    let err_file = log_file
        .try_clone()
        .map_err(io_err("duplicating the QEMU log"))?;
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .map_err(io_err("starting qemu-system-arm"))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_err("waiting for QEMU"))? {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let mut log = String::new();
    std::fs::File::open(&log_path)
        .and_then(|mut f| f.read_to_string(&mut log))
        .map_err(io_err("reading the QEMU log"))?;
    Ok(Outcome {
        exit_code: status.and_then(|s| s.code()),
        log,
        elapsed,
    })
}
