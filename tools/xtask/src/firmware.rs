//! `cargo xtask firmware` and `cargo xtask sizes`: cross builds with build-std.
//!
//! rustup cannot download bare-metal targets here, so these builds use Debian's rustc and cargo
//! (`rustc-web`), whose library source builds `core` for any built-in target. rustup's own
//! `rust-lld` links. Everything lands in `target/firmware`.

use crate::{elf, setup, shell, stack};
use std::path::PathBuf;
use std::process::Command;

/// A board binary, its target and the budget CI holds it to.
#[derive(Debug)]
pub struct Board {
    pub name: &'static str,
    pub target: &'static str,
    /// Flash budget in bytes.
    pub flash_budget: u64,
    /// RAM budget in bytes: `.data` + `.bss` + the worst-case stack.
    pub ram_budget: u64,
    /// How `cargo xtask flash` programs it; `None` for boards that only run in QEMU.
    pub flash: Option<Flash>,
}

/// How a hardware board is programmed.
#[derive(Debug)]
pub struct Flash {
    /// probe-rs's name for the chip (`probe-rs chip list`).
    pub chip: &'static str,
    /// The UF2 family ID of the board's drag-and-drop bootloader, when it has one.
    pub uf2_family: Option<u32>,
}

/// Every board's flash budget: the whole agent, key channel included.
pub const FLASH_BUDGET: u64 = 64 * 1024;
/// Every board's RAM budget: static data and the worst-case stack.
pub const RAM_BUDGET: u64 = 24 * 1024;

/// Every board, each a crate in `firmware/boards/<name>`.
pub const BOARDS: &[Board] = &[
    Board {
        name: "mps2-an386",
        target: "thumbv7em-none-eabihf",
        flash_budget: FLASH_BUDGET,
        ram_budget: RAM_BUDGET,
        flash: None,
    },
    Board {
        name: "rp-pico-slb9670",
        target: "thumbv6m-none-eabi",
        flash_budget: FLASH_BUDGET,
        ram_budget: RAM_BUDGET,
        flash: Some(Flash {
            chip: "RP2040",
            uf2_family: Some(uf2::FAMILY_RP2040),
        }),
    },
    Board {
        name: "nucleo-f401re-i2c",
        target: "thumbv7em-none-eabihf",
        flash_budget: FLASH_BUDGET,
        ram_budget: RAM_BUDGET,
        flash: Some(Flash {
            chip: "STM32F401RETx",
            uf2_family: None,
        }),
    },
];

/// The board named `name`, or an error listing the boards.
pub fn board(name: &str) -> Result<&'static Board, String> {
    BOARDS.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        format!("no board `{name}`; boards: {}", names.join(", "))
    })
}

/// The boards `--board NAME` selects (all of them without the flag).
pub fn select(args: &[String]) -> Result<Vec<&'static Board>, String> {
    match args.iter().position(|a| a == "--board") {
        None => Ok(BOARDS.iter().collect()),
        Some(i) => {
            let name = args
                .get(i + 1)
                .ok_or("--board needs a board name (see `cargo xtask help`)")?;
            Ok(vec![board(name)?])
        }
    }
}

/// The no_std library crates, cross-built for each target listed.
const NO_STD_CRATES: &[(&str, &[&str])] = &[
    (
        "vouch-tpm",
        &["thumbv7em-none-eabihf", "thumbv6m-none-eabi"],
    ),
    (
        "vouch-agent",
        &["thumbv7em-none-eabihf", "thumbv6m-none-eabi"],
    ),
    (
        "vouch-proto",
        &["thumbv7em-none-eabihf", "thumbv6m-none-eabi"],
    ),
];

const BUILD_STD: &[&str] = &[
    "-Zbuild-std=core,compiler_builtins",
    "-Zbuild-std-features=compiler-builtins-mem",
];

pub fn target_dir() -> PathBuf {
    shell::root().join("target/firmware")
}

/// rustup's `rust-lld`, beside the host compiler.
fn rust_lld() -> Result<PathBuf, String> {
    let sysroot = shell::output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let lld =
        PathBuf::from(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    if lld.is_file() {
        Ok(lld)
    } else {
        Err(format!(
            "no rust-lld at {}; the rustup toolchain ships it (rustup component add rust-src is not needed)",
            lld.display()
        ))
    }
}

/// Debian's cargo, with Debian's rustc and nightly features unlocked for build-std.
fn cross_cargo(target: &str) -> Result<Command, String> {
    let mut cmd = Command::new(setup::DEBIAN_CARGO);
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    );
    cmd.env("RUSTC", setup::DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir())
        .env(linker_var, rust_lld()?)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    Ok(cmd)
}

/// Where a board's release ELF lands.
pub fn board_elf(board: &Board) -> PathBuf {
    target_dir()
        .join(board.target)
        .join("release")
        .join(board.name)
}

/// Builds every no_std crate and board; returns the boards' sizes.
pub fn build_all() -> Result<Vec<(&'static Board, elf::Sizes)>, String> {
    build(&BOARDS.iter().collect::<Vec<_>>())
}

/// Builds the no_std crates for the targets of `boards` (all targets when every board is
/// built), then `boards`; returns their sizes.
pub fn build(boards: &[&'static Board]) -> Result<Vec<(&'static Board, elf::Sizes)>, String> {
    setup::ensure()?;
    let every = boards.len() == BOARDS.len();
    for (krate, targets) in NO_STD_CRATES {
        for target in targets
            .iter()
            .filter(|t| every || boards.iter().any(|b| b.target == **t))
        {
            let mut cmd = cross_cargo(target)?;
            cmd.current_dir(shell::root())
                .args([
                    "build",
                    "--locked",
                    "--release",
                    "-p",
                    krate,
                    "--target",
                    target,
                ])
                .args(BUILD_STD);
            shell::step(&format!("firmware: {krate} for {target}"), &mut cmd)?;
        }
    }
    let mut all = Vec::new();
    for board in boards {
        let mut cmd = cross_cargo(board.target)?;
        cmd.current_dir(shell::root().join("firmware/boards").join(board.name))
            .args(["build", "--release", "--target", board.target])
            .args(BUILD_STD)
            // A panic is an undefined instruction, which the board's HardFault handler reports
            // (unstable, so not in the boards' manifests, which stable cargo reads too).
            .args([
                "-Zpanic-immediate-abort",
                "--config",
                "profile.release.panic=\"immediate-abort\"",
            ]);
        shell::step(&format!("firmware: board {}", board.name), &mut cmd)?;
        let sizes = board_sizes(board)?;
        let bound = stack_bound(board)?;
        eprintln!(
            "    {}: flash {} bytes (budget {}), static RAM {} bytes, static stack bound {} bytes",
            board.name,
            sizes.flash,
            board.flash_budget,
            sizes.ram_static,
            bound
                .bytes
                .map_or_else(|| "none (recursion)".to_string(), |b| b.to_string())
        );
        report_bound(board, &bound);
        all.push((*board, sizes));
    }
    Ok(all)
}

fn board_sizes(board: &Board) -> Result<elf::Sizes, String> {
    let path = board_elf(board);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; run `cargo xtask firmware`",
            path.display()
        )
    })?;
    elf::sizes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// `cargo xtask sizes [--json]`: build every board, print each one's use, fail over budget.
pub fn sizes(json: bool) -> Result<(), String> {
    sizes_of(&BOARDS.iter().collect::<Vec<_>>(), json)
}

/// What the stack bound followed and what it could not see.
fn report_bound(board: &Board, bound: &stack::StackBound) {
    eprintln!(
        "    {}: deepest path {}; {} indirect call site(s), each followed to all {} address-taken function(s); frames unknown (counted as 0): {}{}",
        board.name,
        bound.path.join(" > "),
        bound.indirect_calls,
        bound.address_taken,
        if bound.unknown_frames.is_empty() {
            "none".to_string()
        } else {
            bound.unknown_frames.join(", ")
        },
        if bound.cycle.is_empty() {
            String::new()
        } else {
            format!("; recursion, so no bound: {}", bound.cycle.join(" > "))
        }
    );
}

/// The static stack bound of a built board, from its call graph.
fn stack_bound(board: &Board) -> Result<stack::StackBound, String> {
    let path = board_elf(board);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The targets with an FPU stack its registers too on an exception.
    let fpu = board.target.ends_with("eabihf");
    stack::bound(&bytes, fpu).map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds `boards`, prints each one's use (one JSON object per line with `json`), and fails
/// when any is over its budget. RAM is the static data plus the stack measured in QEMU;
/// `stack_bound` is the static bound from the call graph (null when it found recursion), and
/// the static data plus it must fit the RAM budget too.
pub fn sizes_of(boards: &[&'static Board], json: bool) -> Result<(), String> {
    let all = build(boards)?;
    let stack = measured_stack()?;
    let mut over = Vec::new();
    for (board, sizes) in &all {
        let ram = sizes.ram_static + stack;
        let bound = stack_bound(board)?;
        let bound_json = bound
            .bytes
            .map_or_else(|| "null".to_string(), |b| b.to_string());
        if json {
            println!(
                "{{\"board\":\"{}\",\"flash\":{},\"ram\":{ram},\"stack\":{stack},\"stack_bound\":{bound_json}}}",
                board.name, sizes.flash
            );
        } else {
            println!(
                "{}: flash {} bytes, RAM {ram} bytes ({} static + {stack} stack measured in QEMU); static stack bound {bound_json} bytes",
                board.name, sizes.flash, sizes.ram_static
            );
        }
        if sizes.flash > board.flash_budget {
            over.push(format!(
                "{} flash {} > {}",
                board.name, sizes.flash, board.flash_budget
            ));
        }
        if ram > board.ram_budget {
            over.push(format!(
                "{} RAM {ram} (static {} + stack {stack}) > {}",
                board.name, sizes.ram_static, board.ram_budget
            ));
        }
        // The static bound is held to the same budget: a path the QEMU run did not take must
        // fit too.
        match bound.bytes {
            Some(b) if sizes.ram_static + b > board.ram_budget => over.push(format!(
                "{} static RAM {} + stack bound {b} > {}",
                board.name, sizes.ram_static, board.ram_budget
            )),
            None => over.push(format!(
                "{}: no stack bound (recursion: {})",
                board.name,
                bound.cycle.join(" > ")
            )),
            Some(_) => {}
        }
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(format!("over budget: {}", over.join("; ")))
    }
}

/// The agent's worst-case stack: the QEMU board paints its stack at reset and reports the
/// high-water mark after a full attestation against a real vouchd (enrollment, activation, a
/// quote: the deepest path). Every board runs the same agent and TPM stack over its own thin
/// HAL glue, so this measurement is the figure used for each board.
fn measured_stack() -> Result<u64, String> {
    let qemu_board = BOARDS
        .iter()
        .find(|b| b.flash.is_none())
        .ok_or("no QEMU board to measure the stack on")?;
    build(&[qemu_board])?;
    eprintln!("==> sizes: measuring the agent's stack in QEMU (a full attestation)");
    let out = shell::output(
        shell::cargo()
            .args([
                "run",
                "--quiet",
                "--locked",
                "-p",
                "hil-tests",
                "--bin",
                "vouch-demo",
            ])
            .args(["--", "--measure-stack"])
            .env("VOUCH_FIRMWARE_DIR", target_dir()),
    )?;
    out.lines()
        .find_map(|line| line.strip_prefix("stack "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("the stack measurement printed no `stack N` line: {out}"))
}

/// `cargo xtask flash --board NAME [--no-probe]`: builds the board, writes the image as flashed
/// (`<name>.bin`, and `<name>.uf2` for a UF2 bootloader) beside its ELF, then programs it
/// through probe-rs when a debug probe is attached.
pub fn flash(args: &[String]) -> Result<(), String> {
    if !args.iter().any(|a| a == "--board") {
        return Err(format!(
            "say which board: cargo xtask flash --board NAME (hardware boards: {})",
            hardware_boards()
        ));
    }
    let boards = select(args)?;
    let board = *boards.first().ok_or("no board selected")?;
    let how = board.flash.as_ref().ok_or_else(|| {
        format!(
            "{} runs in QEMU (`cargo xtask qemu`), not on hardware; hardware boards: {}",
            board.name,
            hardware_boards()
        )
    })?;
    build(&[board])?;
    let elf_path = board_elf(board);
    let elf_bytes =
        std::fs::read(&elf_path).map_err(|e| format!("cannot read {}: {e}", elf_path.display()))?;
    let image = uf2::flash_image(&elf_bytes).map_err(|e| format!("{}: {e}", elf_path.display()))?;
    let bin = elf_path.with_extension("bin");
    std::fs::write(&bin, &image.bytes).map_err(|e| format!("{}: {e}", bin.display()))?;
    eprintln!(
        "    {}: {} bytes at {:#010x}",
        bin.display(),
        image.bytes.len(),
        image.base
    );
    let uf2_path = match how.uf2_family {
        Some(family) => {
            let path = elf_path.with_extension("uf2");
            std::fs::write(&path, uf2::encode(&image, family)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "    {}: for the drag-and-drop bootloader (hold BOOTSEL while plugging in USB, copy the file to the RPI-RP2 drive)",
                path.display()
            );
            Some(path)
        }
        None => None,
    };
    if args.iter().any(|a| a == "--no-probe") {
        return Ok(());
    }
    let probe_rs = ensure_probe_rs()?;
    let probes = shell::output(Command::new(&probe_rs).arg("list")).unwrap_or_default();
    if probes.contains("No debug probes") || probes.trim().is_empty() {
        return match uf2_path {
            Some(path) => {
                eprintln!(
                    "flash: no debug probe attached; copy {} to the board's RPI-RP2 drive instead",
                    path.display()
                );
                Ok(())
            }
            None => Err(format!(
                "no debug probe attached (`probe-rs list` found none): plug in the board's ST-LINK USB, or copy {} to its NODE_* drive",
                bin.display()
            )),
        };
    }
    // The flat image, not the ELF: flash then holds exactly the bytes `vouch image add` lays
    // out (gaps between sections zero-filled), so the board's PCR 0 matches the reference.
    let base = format!("{:#x}", image.base);
    shell::step(
        &format!("flash: {} through probe-rs", board.name),
        Command::new(&probe_rs)
            .args(["download", "--chip", how.chip, "--binary-format", "bin"])
            .args(["--base-address", &base])
            .arg(&bin),
    )?;
    shell::step(
        &format!("flash: reset {}", board.name),
        Command::new(&probe_rs).args(["reset", "--chip", how.chip]),
    )
}

fn hardware_boards() -> String {
    let names: Vec<&str> = BOARDS
        .iter()
        .filter(|b| b.flash.is_some())
        .map(|b| b.name)
        .collect();
    names.join(", ")
}

/// probe-rs on PATH or in cargo's bin directory; installed from crates.io when missing (only
/// `cargo xtask flash` asks for it, never CI).
fn ensure_probe_rs() -> Result<PathBuf, String> {
    if shell::on_path("probe-rs") {
        return Ok(PathBuf::from("probe-rs"));
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin/probe-rs"));
    if let Some(path) = cargo_bin.filter(|p| p.is_file()) {
        return Ok(path);
    }
    if std::env::var_os("VOUCH_NO_SETUP").is_some() {
        return Err(
            "probe-rs is not installed: run `cargo install probe-rs-tools --locked`".into(),
        );
    }
    eprintln!(
        "flash: probe-rs is not installed; installing it now with `cargo install probe-rs-tools --locked` (a few minutes, once; needs libudev-dev: apt-get install libudev-dev pkg-config)"
    );
    shell::step(
        "install probe-rs",
        shell::cargo().args(["install", "probe-rs-tools", "--locked"]),
    )?;
    Ok(PathBuf::from("probe-rs"))
}

/// `cargo xtask hil-board`: the boot path on a real board, checked from its log port. The board
/// is named by `VOUCH_HIL_BOARD`, its log port by `VOUCH_HIL_PORT`; without them it fails,
/// saying so, because nothing was tested.
pub fn hil_board() -> Result<(), String> {
    let (Ok(name), Ok(port)) = (
        std::env::var("VOUCH_HIL_BOARD"),
        std::env::var("VOUCH_HIL_PORT"),
    ) else {
        return Err(format!(
            "not run: no board attached. Set VOUCH_HIL_BOARD (one of: {}) and VOUCH_HIL_PORT (the board's log UART, e.g. /dev/ttyACM0 or /dev/ttyUSB0), e.g.\n  VOUCH_HIL_BOARD=rp-pico-slb9670 VOUCH_HIL_PORT=/dev/ttyUSB0 cargo xtask hil-board\nThe board's README.md says which port is the log.",
            hardware_boards()
        ));
    };
    let board = board(&name)?;
    if board.flash.is_none() {
        return Err(format!(
            "{name} is a QEMU board; its tests are the hil-tests (`cargo xtask test`)"
        ));
    }
    shell::step(
        &format!("hil-board: configure {port}"),
        Command::new("stty").args(["-F", &port, "115200", "raw", "-echo"]),
    )?;
    let log = std::fs::File::open(&port).map_err(|e| format!("cannot open {port}: {e}"))?;
    flash(&["--board".into(), name.clone()])?;
    eprintln!(
        "hil-board: reading {port} for up to 60 s (press the board's reset if nothing comes)"
    );
    let expected = [
        "TIS up, DID_VID",
        "tpm: Startup(CLEAR) done",
        "boot: measured",
        "boot: PCR 0 (sha256)",
        "agent: session with the verifier",
    ];
    let seen = hil::read_until(log, &expected, std::time::Duration::from_secs(60));
    if seen == expected.len() {
        eprintln!(
            "hil-board: {name} booted, measured itself and opened a verifier session; attach the link port to vouchd for the attestation itself (README.md)"
        );
        Ok(())
    } else {
        Err(format!(
            "hil-board: {name} did not log `{}` within 60 s",
            expected.get(seen).copied().unwrap_or_default()
        ))
    }
}

mod hil {
    use std::io::BufRead;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Reads lines from `port` (echoing them) until every pattern was seen in order or
    /// `timeout` passed; returns how many were seen.
    pub fn read_until(port: std::fs::File, patterns: &[&str], timeout: Duration) -> usize {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(port);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        while seen < patterns.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                break;
            };
            eprint!("    | {line}");
            if patterns.get(seen).is_some_and(|p| line.contains(p)) {
                seen += 1;
            }
        }
        seen
    }
}

/// Flat flash images and UF2 files from a board's ELF.
///
/// UF2 (Microsoft's USB flashing format, as the RP2040 boot ROM reads it): 512-byte blocks,
/// each carrying 256 bytes of payload for one flash address, with the family ID that tells the
/// bootloader the file is meant for its chip.
pub mod uf2 {
    /// The RP2040's UF2 family ID.
    pub const FAMILY_RP2040: u32 = 0xE48B_FF56;
    const MAGIC_START0: u32 = 0x0A32_4655;
    const MAGIC_START1: u32 = 0x9E5D_5157;
    const MAGIC_END: u32 = 0x0AB1_6F30;
    const FLAG_FAMILY_ID_PRESENT: u32 = 0x0000_2000;
    /// Payload bytes per block.
    pub const PAYLOAD: usize = PAYLOAD_U32 as usize;
    const PAYLOAD_U32: u32 = 256;
    /// Bytes per block.
    pub const BLOCK: usize = 512;
    const PT_LOAD: u32 = 1;
    /// More than any board here has flash: a bigger span means the ELF is not a firmware image.
    const MAX_SPAN: u64 = 16 * 1024 * 1024;

    /// Flash contents from `base` on: every loadable segment at its load address, gaps
    /// zero-filled (as `vouch image add` lays out the image it measures).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FlashImage {
        pub base: u32,
        pub bytes: Vec<u8>,
    }

    fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    }

    /// Lays out the loadable contents of a 32-bit little-endian ELF file as flash holds them.
    pub fn flash_image(elf: &[u8]) -> Result<FlashImage, String> {
        if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4..6) != Some(&[1, 1]) {
            return Err("not a 32-bit little-endian ELF file".into());
        }
        let bad = || "truncated ELF program header table".to_string();
        let phoff = u32_at(elf, 0x1C).ok_or_else(bad)? as usize;
        let phentsize = usize::from(u16_at(elf, 0x2A).ok_or_else(bad)?);
        let phnum = usize::from(u16_at(elf, 0x2C).ok_or_else(bad)?);
        let mut segments = Vec::new();
        for i in 0..phnum {
            let header = phoff + i * phentsize;
            let kind = u32_at(elf, header).ok_or_else(bad)?;
            let offset = u32_at(elf, header + 4).ok_or_else(bad)? as usize;
            let paddr = u32_at(elf, header + 12).ok_or_else(bad)?;
            let filesz = u32_at(elf, header + 16).ok_or_else(bad)? as usize;
            if kind != PT_LOAD || filesz == 0 {
                continue;
            }
            let data = elf
                .get(offset..offset + filesz)
                .ok_or("a segment's contents lie past the end of the file")?;
            segments.push((paddr, data));
        }
        segments.sort_by_key(|(address, _)| *address);
        let base = segments
            .first()
            .ok_or("the ELF file has nothing to load")?
            .0;
        let end = segments
            .iter()
            .map(|(address, data)| u64::from(*address) + data.len() as u64)
            .max()
            .unwrap_or(u64::from(base));
        if end - u64::from(base) > MAX_SPAN {
            return Err(format!(
                "the loadable contents span {} bytes: is this a firmware image?",
                end - u64::from(base)
            ));
        }
        let span = usize::try_from(end - u64::from(base)).map_err(|e| e.to_string())?;
        let mut bytes = vec![0u8; span];
        for (address, data) in segments {
            let start = (address - base) as usize;
            bytes
                .get_mut(start..start + data.len())
                .ok_or("segment outside the image")?
                .copy_from_slice(data);
        }
        Ok(FlashImage { base, bytes })
    }

    /// The UF2 file that writes `image`, in 256-byte blocks from its base (which must be
    /// 256-byte aligned, as flash pages are); the last block is zero-padded.
    pub fn encode(image: &FlashImage, family: u32) -> Result<Vec<u8>, String> {
        if !image.base.is_multiple_of(PAYLOAD_U32) {
            return Err(format!(
                "the image starts at {:#x}, not on a 256-byte flash page",
                image.base
            ));
        }
        let blocks = image.bytes.len().div_ceil(PAYLOAD);
        let count = u32::try_from(blocks).map_err(|_| "image too large for UF2")?;
        let mut out = Vec::with_capacity(blocks * BLOCK);
        for (index, chunk) in (0u32..).zip(image.bytes.chunks(PAYLOAD)) {
            let address = index
                .checked_mul(PAYLOAD_U32)
                .and_then(|offset| image.base.checked_add(offset))
                .ok_or("image runs past the 32-bit address space")?;
            let words = [
                MAGIC_START0,
                MAGIC_START1,
                FLAG_FAMILY_ID_PRESENT,
                address,
                PAYLOAD_U32,
                index,
                count,
                family,
            ];
            let start = out.len();
            for word in words {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(chunk);
            out.resize(start + BLOCK - 4, 0);
            out.extend_from_slice(&MAGIC_END.to_le_bytes());
        }
        Ok(out)
    }

    #[cfg(test)]
    #[allow(clippy::cast_possible_truncation)]
    mod tests {
        use super::*;

        fn word(bytes: &[u8], at: usize) -> u32 {
            u32_at(bytes, at).expect("in range")
        }

        /// A minimal ELF32 little-endian file with the given (type, paddr, contents, memsz)
        /// program headers.
        fn elf(segments: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
            let phoff = 0x34usize;
            let mut file = vec![0u8; phoff + 32 * segments.len()];
            file[..6].copy_from_slice(b"\x7fELF\x01\x01");
            file[0x1C..0x20].copy_from_slice(&(phoff as u32).to_le_bytes());
            file[0x2A..0x2C].copy_from_slice(&32u16.to_le_bytes());
            file[0x2C..0x2E].copy_from_slice(&(segments.len() as u16).to_le_bytes());
            for (i, (kind, paddr, data, memsz)) in segments.iter().enumerate() {
                let offset = file.len() as u32;
                file.extend_from_slice(data);
                let h = phoff + 32 * i;
                let fields = [*kind, offset, *paddr, *paddr, data.len() as u32, *memsz];
                for (j, f) in fields.iter().enumerate() {
                    file[h + 4 * j..h + 4 * j + 4].copy_from_slice(&f.to_le_bytes());
                }
            }
            file
        }

        #[test]
        fn lays_out_segments_at_their_load_addresses_with_zero_gaps() {
            let file = elf(&[
                (PT_LOAD, 0x1000_0100, &[3, 4], 2),
                (PT_LOAD, 0x1000_0000, &[1, 2], 2),
                // .bss: no file contents, in RAM.
                (PT_LOAD, 0x2000_0000, &[], 64),
                // Not loadable.
                (4, 0x3000_0000, &[9, 9], 2),
            ]);
            let image = flash_image(&file).expect("valid ELF");
            assert_eq!(image.base, 0x1000_0000);
            assert_eq!(image.bytes.len(), 0x102);
            assert_eq!(&image.bytes[..2], &[1, 2]);
            assert!(image.bytes[2..0x100].iter().all(|&b| b == 0));
            assert_eq!(&image.bytes[0x100..], &[3, 4]);
        }

        #[test]
        fn rejects_what_is_not_a_loadable_elf32() {
            assert!(flash_image(b"hello").is_err());
            assert!(flash_image(b"\x7fELF\x02\x01").is_err());
            assert!(flash_image(&elf(&[])).is_err());
            let mut truncated = elf(&[(PT_LOAD, 0, &[1, 2, 3], 3)]);
            truncated.truncate(truncated.len() - 1);
            assert!(flash_image(&truncated).is_err());
        }

        #[test]
        fn encodes_256_byte_payloads_in_512_byte_blocks() {
            let bytes: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
            let image = FlashImage {
                base: 0x1000_0000,
                bytes: bytes.clone(),
            };
            let uf2 = encode(&image, FAMILY_RP2040).expect("encodes");
            assert_eq!(uf2.len(), 3 * BLOCK);
            let mut payload = Vec::new();
            for (i, block) in uf2.chunks(BLOCK).enumerate() {
                assert_eq!(word(block, 0), 0x0A32_4655);
                assert_eq!(word(block, 4), 0x9E5D_5157);
                assert_eq!(word(block, 8), 0x0000_2000, "familyID present");
                assert_eq!(word(block, 12), 0x1000_0000 + 256 * i as u32);
                assert_eq!(word(block, 16), 256);
                assert_eq!(word(block, 20), i as u32);
                assert_eq!(word(block, 24), 3);
                assert_eq!(word(block, 28), 0xE48B_FF56);
                assert_eq!(word(block, 508), 0x0AB1_6F30);
                assert!(block[32 + 256..508].iter().all(|&b| b == 0));
                payload.extend_from_slice(&block[32..32 + 256]);
            }
            assert_eq!(&payload[..600], &bytes[..]);
            assert!(
                payload[600..].iter().all(|&b| b == 0),
                "last block zero-padded"
            );
        }

        #[test]
        fn refuses_an_image_off_a_flash_page() {
            let image = FlashImage {
                base: 0x1000_0004,
                bytes: vec![1; 4],
            };
            assert!(encode(&image, FAMILY_RP2040).is_err());
        }

        #[test]
        fn an_exact_multiple_of_256_needs_no_padding_block() {
            let image = FlashImage {
                base: 0x1000_0000,
                bytes: vec![0xA5; 512],
            };
            assert_eq!(
                encode(&image, FAMILY_RP2040).expect("encodes").len(),
                2 * BLOCK
            );
        }
    }
}
