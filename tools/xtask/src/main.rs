//! `cargo xtask <verb>`: every Vouch workflow has one entry point here.
//!
//! Verbs run what they need first: anything that uses swtpm, QEMU or the cross compiler calls
//! [`setup::ensure`], which installs missing system packages (as root) or prints the exact
//! commands to run (otherwise).

mod elf;
mod firmware;
mod setup;
mod shell;
mod test;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <verb> [options]

Verbs:
  setup              install every system package Vouch needs (idempotent; root)
  firmware           cross-build the no_std crates and board binaries, print sizes
  sizes [--json]     print each board's flash and RAM use, check the budget
  test               everything CI runs: fmt, clippy, host tests, firmware, hil-tests
  ci                 the same as `test`
  demo               start swtpm and show what the TPM stack reads over each bus
  qemu               build the firmware and boot the mps2-an386 board in QEMU with swtpm
  bench              the verifier's criterion benchmarks, pinned to one core
  help               this text

Environment:
  VOUCH_NO_SETUP=1   never install; fail with instructions when something is missing
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (verb, rest) = match args.split_first() {
        Some((verb, rest)) => (verb.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match verb {
        "setup" => setup::run(),
        "firmware" => firmware::build_all().map(|_| ()),
        "sizes" => firmware::sizes(rest.iter().any(|a| a == "--json")),
        "test" | "ci" => test::run(),
        "demo" => test::demo(&[]),
        "qemu" => test::demo(&["--board-only"]),
        "bench" => test::bench(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown verb `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
