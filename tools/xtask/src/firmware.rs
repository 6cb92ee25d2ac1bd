//! `cargo xtask firmware` and `cargo xtask sizes`: cross builds with build-std.
//!
//! rustup cannot download bare-metal targets here, so these builds use Debian's rustc and cargo
//! (`rustc-web`), whose library source builds `core` for any built-in target. rustup's own
//! `rust-lld` links. Everything lands in `target/firmware`.

use crate::{elf, setup, shell};
use std::path::PathBuf;
use std::process::Command;

/// A board binary, its target and the budget CI holds it to.
#[derive(Debug)]
pub struct Board {
    pub name: &'static str,
    pub target: &'static str,
    /// Flash budget in bytes.
    pub flash_budget: u64,
    /// Static RAM budget in bytes (`.data` + `.bss`).
    pub ram_budget: u64,
}

/// Every board, each a crate in `firmware/boards/<name>`.
pub const BOARDS: &[Board] = &[Board {
    name: "mps2-an386",
    target: "thumbv7em-none-eabihf",
    flash_budget: 128 * 1024,
    ram_budget: 48 * 1024,
}];

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
    setup::ensure()?;
    for (krate, targets) in NO_STD_CRATES {
        for target in *targets {
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
    for board in BOARDS {
        let mut cmd = cross_cargo(board.target)?;
        cmd.current_dir(shell::root().join("firmware/boards").join(board.name))
            .args(["build", "--release", "--target", board.target])
            .args(BUILD_STD);
        shell::step(&format!("firmware: board {}", board.name), &mut cmd)?;
        let sizes = board_sizes(board)?;
        eprintln!(
            "    {}: flash {} bytes (budget {}), static RAM {} bytes (budget {})",
            board.name, sizes.flash, board.flash_budget, sizes.ram_static, board.ram_budget
        );
        all.push((board, sizes));
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

/// `cargo xtask sizes [--json]`: build, print each board's use, and fail over budget.
pub fn sizes(json: bool) -> Result<(), String> {
    let all = build_all()?;
    let mut over = Vec::new();
    for (board, sizes) in &all {
        if json {
            println!(
                "{{\"board\":\"{}\",\"flash\":{},\"ram\":{}}}",
                board.name, sizes.flash, sizes.ram_static
            );
        }
        if sizes.flash > board.flash_budget {
            over.push(format!(
                "{} flash {} > {}",
                board.name, sizes.flash, board.flash_budget
            ));
        }
        if sizes.ram_static > board.ram_budget {
            over.push(format!(
                "{} RAM {} > {}",
                board.name, sizes.ram_static, board.ram_budget
            ));
        }
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(format!("over budget: {}", over.join("; ")))
    }
}
