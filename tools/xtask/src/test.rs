//! `cargo xtask test` (everything CI runs) and `cargo xtask demo`.

use crate::{firmware, setup, shell};
use std::time::Instant;

/// fmt, clippy, the firmware cross-build with its budget, then every host test including the
/// hil-tests (swtpm, bus models, QEMU), which find the firmware through `VOUCH_FIRMWARE_DIR`.
pub fn run() -> Result<(), String> {
    let started = Instant::now();
    setup::ensure()?;
    shell::step("fmt", shell::cargo().args(["fmt", "--all", "--check"]))
        .map_err(|e| format!("{e}; `cargo fmt --all` fixes the formatting"))?;
    // The boards are workspaces of their own, which `--all` does not reach.
    for board in firmware::BOARDS {
        let manifest = shell::root()
            .join("firmware/boards")
            .join(board.name)
            .join("Cargo.toml");
        shell::step(
            &format!("fmt: board {}", board.name),
            shell::cargo()
                .args(["fmt", "--check", "--manifest-path"])
                .arg(&manifest),
        )
        .map_err(|e| {
            format!(
                "{e}; `cargo fmt --manifest-path {}` fixes it",
                manifest.display()
            )
        })?;
    }
    shell::step(
        "clippy",
        shell::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    firmware::sizes(false)?;
    // The hil-tests run the workspace's programs (vouchd, vouch-hosted-agent) as their users
    // do; `cargo test` builds only the binaries of packages with integration tests.
    shell::step(
        "build the workspace's programs",
        shell::cargo().args(["build", "--workspace", "--bins", "--locked"]),
    )?;
    shell::step(
        "host tests and hil-tests",
        shell::cargo()
            .args(["test", "--workspace", "--locked"])
            .env("VOUCH_FIRMWARE_DIR", firmware::target_dir()),
    )?;
    eprintln!(
        "test: all passed in {:.0} s",
        started.elapsed().as_secs_f32()
    );
    Ok(())
}

/// Starts a manufactured swtpm and shows what the TPM stack reads from it over each path
/// (`args` are passed to the demo, e.g. `--board-only`).
pub fn demo(args: &[&str]) -> Result<(), String> {
    setup::ensure()?;
    firmware::build_all()?;
    // The demo runs the operator CLI and the hosted agent as their users would.
    shell::step(
        "build vouch and vouch-hosted-agent",
        shell::cargo().args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "vouch",
            "-p",
            "vouch-hosted-agent",
        ]),
    )?;
    shell::step(
        "demo",
        shell::cargo()
            .args([
                "run",
                "--quiet",
                "--locked",
                "-p",
                "hil-tests",
                "--bin",
                "vouch-demo",
                "--",
            ])
            .args(args)
            .env("VOUCH_FIRMWARE_DIR", firmware::target_dir()),
    )
}

/// `cargo xtask bench [criterion args]`: the attestation core's benchmarks on one core (the
/// figures the README records), through `taskset` when it is there.
pub fn bench(args: &[String]) -> Result<(), String> {
    let mut cmd = if shell::on_path("taskset") {
        let mut cmd = std::process::Command::new("taskset");
        cmd.current_dir(shell::root())
            .args(["-c", "0"])
            .arg(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd
    } else {
        eprintln!("bench: taskset not found; running unpinned");
        shell::cargo()
    };
    cmd.args([
        "bench",
        "--locked",
        "-p",
        "vouch-attest",
        "--bench",
        "verify",
        "--",
    ])
    .args(args);
    shell::step("bench (one core)", &mut cmd)
}

/// `cargo xtask fuzz [SECONDS]`: every target in `fuzz/` under libFuzzer for SECONDS each.
/// Installs cargo-fuzz when it is missing; runs on the stable toolchain with
/// `RUSTC_BOOTSTRAP=1` for the sanitizer flags cargo-fuzz passes.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds: u32 = match args.first() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("`{s}` is not a number of seconds"))?,
        None => 60,
    };
    let installed = shell::cargo().args(["fuzz", "--version"]).output();
    if !installed.is_ok_and(|o| o.status.success()) {
        shell::step(
            "install cargo-fuzz (once)",
            shell::cargo().args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    let fuzz_dir = shell::root().join("fuzz");
    let targets = shell::output(
        shell::cargo()
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "list"]),
    )?;
    for target in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        shell::step(
            &format!("fuzz {target} for {seconds} s"),
            shell::cargo()
                .current_dir(&fuzz_dir)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_DIR", shell::root().join("target/fuzz"))
                .args(["fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={seconds}")),
        )?;
    }
    Ok(())
}
