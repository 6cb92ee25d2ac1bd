//! `cargo xtask test` (everything CI runs) and `cargo xtask demo`.

use crate::{firmware, setup, shell};
use std::time::Instant;

/// fmt, clippy, the firmware cross-build with its budget, then every host test including the
/// hil-tests (swtpm, bus models, QEMU), which find the firmware through `VOUCH_FIRMWARE_DIR`,
/// then every fuzz target for a few seconds.
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
    fuzz_smoke()?;
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
    let (keylime, criterion_args) = match args {
        [flag, what, rest @ ..] if flag == "--compare" && what == "keylime" => (true, rest),
        [flag, ..] if flag == "--compare" => {
            return Err("--compare takes `keylime`: cargo xtask bench --compare keylime".into());
        }
        _ => (false, args),
    };
    if keylime {
        setup::ensure_keylime()?;
    }
    let mut cmd = pinned(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "bench",
        "--locked",
        "-p",
        "vouch-attest",
        "--bench",
        "verify",
        "--",
    ])
    .args(criterion_args);
    shell::step("bench (one core)", &mut cmd)?;
    // The web console's hosts page over 100,000 hosts (README: "Web console").
    shell::step(
        "console hosts page over 100,000 hosts",
        shell::cargo().args([
            "run",
            "--quiet",
            "--release",
            "--locked",
            "-p",
            "vouchd",
            "--example",
            "console_hosts",
        ]),
    )?;
    if keylime {
        compare_keylime()?;
    }
    Ok(())
}

/// `program` pinned to CPU 0 with taskset when there is one.
fn pinned(program: &str) -> std::process::Command {
    if shell::on_path("taskset") {
        let mut cmd = std::process::Command::new("taskset");
        cmd.current_dir(shell::root())
            .args(["-c", "0"])
            .arg(program);
        cmd
    } else {
        eprintln!("bench: taskset not found; running unpinned");
        let mut cmd = std::process::Command::new(program);
        cmd.current_dir(shell::root());
        cmd
    }
}

/// The checks compared: Vouch's criterion benchmark, Keylime's figure of the same name, and
/// what each side does.
const COMPARED: &[(&str, &str, &str)] = &[
    (
        "quote_check/ecdsa_p256",
        "quote_check/ecdsa_p256",
        "quote check, ECDSA P-256 AK",
    ),
    (
        "quote_check/rsa2048",
        "quote_check/rsa2048",
        "quote check, RSA-2048 AK",
    ),
    (
        "eventlog_parse_replay_112_events",
        "eventlog_parse_112_events",
        "measured-boot log, 112 events (Vouch: parse + replay; Keylime: tpm2_eventlog, YAML, enrich)",
    ),
];

/// The number after `"key":` in flat JSON text (criterion's estimates, the comparison's output).
fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text
        .get(at + key.len() + 2..)?
        .trim_start()
        .strip_prefix(':')?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest.get(..end)?.trim().parse().ok()
}

/// The median of criterion's last run of `name`, in microseconds.
fn criterion_median_us(name: &str) -> Option<f64> {
    let path = shell::root()
        .join("target/criterion")
        .join(name)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let median = text.get(text.find("\"median\"")?..)?;
    json_number(median, "point_estimate").map(|ns| ns / 1000.0)
}

/// Runs Keylime's own checks on the same files, pinned to the same core, and prints both
/// tools' medians and the ratios.
fn compare_keylime() -> Result<(), String> {
    let root = shell::root();
    let python = format!("{}/bin/python", setup::KEYLIME_VENV);
    let mut cmd = pinned(&python);
    cmd.arg(root.join("tools/xtask/keylime-compare.py"))
        .arg(root.join("verifier/attest/tests/data/quotes"))
        .arg(root.join("testdata/eventlogs/tpm2-tools/event-gce-ubuntu-2104-log.bin"));
    println!("==> Keylime's checkquote and measured-boot log parse (one core)");
    let output = cmd
        .output()
        .map_err(|e| format!("{python}: {e}; run `cargo xtask bench --compare keylime` as root"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "Keylime's comparison failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    println!(
        "\n{:<92} {:>12} {:>12} {:>9}",
        "median per check (same files, one core)", "Vouch us", "Keylime us", "ratio"
    );
    for &(ours, theirs, what) in COMPARED {
        let vouch = criterion_median_us(ours)
            .ok_or_else(|| format!("no criterion result for {ours} in target/criterion"))?;
        let keylime = json_number(&text, theirs)
            .ok_or_else(|| format!("no Keylime figure for {theirs} in: {text}"))?;
        println!(
            "{what:<92} {vouch:>12.1} {keylime:>12.1} {:>8.1}x",
            keylime / vouch
        );
    }
    for label in ["ecdsa_p256", "rsa2048"] {
        let bare = criterion_median_us(&format!("signature_only/{label}"));
        let quote = criterion_median_us(&format!("quote_check/{label}"));
        if let (Some(bare), Some(quote)) = (bare, quote) {
            println!(
                "Vouch's quote check over the bare aws-lc-rs signature verification ({label}): {quote:.1} us vs {bare:.1} us (+{:.1} us)",
                quote - bare
            );
        }
    }
    Ok(())
}

/// `cargo xtask keyload ...`: builds vouchd, the hosted agent and `vouch-keyload` in
/// release, then runs `vouch-keyload` pinned to CPU 1 (it pins vouchd to CPU 0).
pub fn keyload(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        let mut cmd =
            std::process::Command::new(shell::root().join("target/release/vouch-keyload"));
        if cmd.arg("--help").status().is_ok_and(|s| s.success()) {
            return Ok(());
        }
    }
    setup::ensure()?;
    shell::step(
        "build vouchd, vouch-hosted-agent and vouch-keyload (release)",
        shell::cargo().args([
            "build",
            "--locked",
            "--release",
            "-p",
            "vouchd",
            "-p",
            "vouch-hosted-agent",
            "-p",
            "hil-tests",
            "--bin",
            "vouchd",
            "--bin",
            "vouch-hosted-agent",
            "--bin",
            "vouch-keyload",
        ]),
    )?;
    if !shell::on_path("taskset") {
        return Err("taskset not found: run `cargo xtask setup` (util-linux)".into());
    }
    let status = std::process::Command::new("taskset")
        .current_dir(shell::root())
        .args(["-c", "1"])
        .arg(shell::root().join("target/release/vouch-keyload"))
        .args(args)
        .status()
        .map_err(|e| format!("vouch-keyload: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => Err("keyload: the run had errors (see above)".into()),
        _ => Err(format!("keyload: {status}")),
    }
}

/// `cargo xtask fuzz [SECONDS]`: every target in `fuzz/` under libFuzzer for SECONDS each.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds: u32 = match args.first() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("`{s}` is not a number of seconds"))?,
        None => 60,
    };
    run_fuzz_targets(seconds, false)
}

/// Seconds each fuzz target runs in `cargo xtask test`, after its seed corpus.
const FUZZ_SMOKE_SECONDS: u32 = 5;

/// Part of `cargo xtask test`: every fuzz target built, run over its committed seeds, then
/// fuzzed for a few seconds, so that none of them rots.
fn fuzz_smoke() -> Result<(), String> {
    run_fuzz_targets(FUZZ_SMOKE_SECONDS, true)
}

/// Builds every target of `fuzz/` in one `cargo fuzz build` (installing cargo-fuzz when it is
/// missing; stable toolchain with `RUSTC_BOOTSTRAP=1` for the sanitizer flags cargo-fuzz
/// passes), then runs each binary for `seconds`: over its committed seeds in
/// `fuzz/corpus/<target>` with its dictionary `fuzz/dict/<target>.dict` if any; new inputs go
/// to `fuzz/target/corpus/<target>`. `quiet` keeps libFuzzer's output for failures only.
fn run_fuzz_targets(seconds: u32, quiet: bool) -> Result<(), String> {
    let installed = shell::cargo().args(["fuzz", "--version"]).output();
    if !installed.is_ok_and(|o| o.status.success()) {
        shell::step(
            "install cargo-fuzz (once)",
            shell::cargo().args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    let fuzz_dir = shell::root().join("fuzz");
    let cargo_fuzz = |args: &[&str]| {
        let mut cmd = shell::cargo();
        cmd.current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .arg("fuzz")
            .args(args);
        cmd
    };
    shell::step(
        "fmt: fuzz",
        shell::cargo()
            .current_dir(&fuzz_dir)
            .args(["fmt", "--check"]),
    )
    .map_err(|e| format!("{e}; `cd fuzz && cargo fmt` fixes it"))?;
    shell::step("build the fuzz targets", &mut cargo_fuzz(&["build"]))?;
    let host = shell::output(std::process::Command::new("rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("`rustc -vV` names no host")?;
    let bin_dir = fuzz_dir.join("target").join(host).join("release");
    let artifacts = fuzz_dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)
        .map_err(|e| format!("cannot create {}: {e}", artifacts.display()))?;
    let targets = shell::output(&mut cargo_fuzz(&["list"]))?;
    for target in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        let seeds = fuzz_dir.join("corpus").join(target);
        let found = fuzz_dir.join("target/corpus").join(target);
        std::fs::create_dir_all(&found)
            .map_err(|e| format!("cannot create {}: {e}", found.display()))?;
        let mut cmd = std::process::Command::new(bin_dir.join(target));
        cmd.arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&found);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        } else if quiet {
            return Err(format!("{target} has no seeds in {}", seeds.display()));
        }
        let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
        if dict.is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        let title = format!("fuzz {target} for {seconds} s");
        if quiet {
            let out = cmd
                .output()
                .map_err(|e| format!("{title}: cannot start {}: {e}", target))?;
            let log = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                return Err(format!("{title} failed ({}):\n{log}", out.status));
            }
            let last = log.lines().rev().find(|l| l.contains("cov:")).unwrap_or("");
            eprintln!("    {title}: ok {}", last.trim());
        } else {
            shell::step(&title, &mut cmd)?;
        }
    }
    Ok(())
}
