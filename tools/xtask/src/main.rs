//! `cargo xtask <verb>`: every Vouch workflow has one entry point here.
//!
//! Verbs run what they need first: anything that uses swtpm, QEMU or the cross compiler calls
//! [`setup::ensure`], which installs missing system packages (as root) or prints the exact
//! commands to run (otherwise).

mod deb;
mod elf;
mod firmware;
mod setup;
mod shell;
mod stack;
mod test;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <verb> [options]

Verbs:
  setup              install every system package Vouch needs (idempotent; root)
  firmware [--board NAME]
                     cross-build the no_std crates and board binaries (one board with
                     --board), print sizes
  sizes [--json] [--board NAME]
                     print each board's flash, RAM (static + measured stack) and static
                     stack bound (--json: one object per line), check the budgets
  flash --board NAME [--no-probe]
                     build a hardware board, write its .bin (and .uf2 for the Pico) beside
                     the ELF in target/firmware, and program it through probe-rs when a
                     probe is attached (installs probe-rs-tools with cargo when missing)
  hil-board          boot checks on a real board: set VOUCH_HIL_BOARD and VOUCH_HIL_PORT
  test               everything CI runs: fmt, clippy, host tests, firmware, hil-tests
  ci                 the same as `test`
  demo               start swtpm and show what the TPM stack reads over each bus
  qemu               build the firmware and boot the mps2-an386 board in QEMU with swtpm
  bench [--compare keylime]
                     the verifier's criterion benchmarks, pinned to one core (the bare
                     signature verification beside the quote check), and the web console's
                     hosts page timed over 100,000 hosts; --compare keylime also
                     runs Keylime's checkquote and measured-boot log parse on the same files
                     (Keylime from PyPI in /opt/vouch/keylime-venv, created then) and prints
                     both medians and the ratios
  keyload --op encrypt|decrypt|batch --concurrency N --duration SECS
          [--wrapping local|remote] [--json]
                     the key provider under load: release vouchd pinned to CPU 0, PyKMIP,
                     a host attested on swtpm, N clients on CPU 1 over loopback TLS; prints
                     ops_per_s, p50/p99/max latency and errors (README, Performance)
  fuzz [SECONDS]      run every cargo-fuzz target (fuzz/) for SECONDS each (default 60)
  deb [--debug] [--bin-dir DIR] [--out DIR]
                     build the Debian packages vouchd and vouch (release build unless
                     --debug; --bin-dir: package these binaries, no build) into
                     target/debian (or --out); prints their paths (packaging/README.md)
  help               this text

Boards: mps2-an386 (QEMU), rp-pico-slb9670, nucleo-f401re-i2c (firmware/boards/<name>/README.md)

Environment:
  VOUCH_NO_SETUP=1   never install; fail with instructions when something is missing
  VOUCH_HIL_BOARD    the board attached for `hil-board`, e.g. rp-pico-slb9670
  VOUCH_HIL_PORT     that board's log port, e.g. /dev/ttyUSB0
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (verb, rest) = match args.split_first() {
        Some((verb, rest)) => (verb.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match verb {
        "setup" => setup::run(),
        "firmware" => firmware::select(rest).and_then(|b| firmware::build(&b).map(|_| ())),
        "sizes" => firmware::select(rest)
            .and_then(|b| firmware::sizes_of(&b, rest.iter().any(|a| a == "--json"))),
        "flash" => firmware::flash(rest),
        "hil-board" => firmware::hil_board(),
        "test" | "ci" => test::run(),
        "demo" => test::demo(&[]),
        "qemu" => test::demo(&["--board-only"]),
        "bench" => test::bench(rest),
        "keyload" => test::keyload(rest),
        "fuzz" => test::fuzz(rest),
        "deb" => deb::run(rest),
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
