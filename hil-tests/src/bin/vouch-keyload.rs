//! `vouch-keyload`: the key provider under load; `cargo xtask keyload` builds and runs it
//! pinned to CPU 1 (vouchd on CPU 0). See `hil_tests::keyload`.

use std::process::ExitCode;
use std::time::Duration;

use hil_tests::keyload::{self, Op, Options};

const HELP: &str = "\
vouch-keyload --op encrypt|decrypt|batch --concurrency N --duration SECS
              [--wrapping local|remote] [--no-pin] [--json]

Starts PyKMIP, vouchd (release, pinned to CPU 0 unless --no-pin) and a host attested by the
hosted agent on swtpm; configures a key server, a provider (key refresh every 5 s) and the
host's cluster; then N concurrent clients send the host's key requests over loopback TLS for
SECS seconds. Prints {\"op\",\"concurrency\",\"ops_per_s\",\"p50_ms\",\"p99_ms\",\"max_ms\",\"errors\",..}
(--json: one line); progress on stderr. A batch is 64 encryptions, each counted.
Exit status: 0 when the run had no errors, 1 when it had, 2 when it could not run.";

fn parse(args: &[String]) -> Result<(Options, bool), String> {
    let mut options = Options {
        op: Op::Encrypt,
        concurrency: 64,
        duration: Duration::from_secs(20),
        remote: false,
        pin_vouchd: true,
        progress: true,
    };
    let mut json = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--op" => {
                options.op = match value()? {
                    "encrypt" => Op::Encrypt,
                    "decrypt" => Op::Decrypt,
                    "batch" => Op::Batch,
                    other => return Err(format!("--op {other}: encrypt, decrypt or batch")),
                }
            }
            "--concurrency" => {
                options.concurrency = value()?
                    .parse()
                    .map_err(|_| "--concurrency takes a number".to_owned())?;
            }
            "--duration" => {
                options.duration = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|_| "--duration takes whole seconds".to_owned())?,
                );
            }
            "--wrapping" => {
                options.remote = match value()? {
                    "local" => false,
                    "remote" => true,
                    other => return Err(format!("--wrapping {other}: local or remote")),
                }
            }
            "--no-pin" => options.pin_vouchd = false,
            "--json" => json = true,
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}; see --help")),
        }
    }
    Ok((options, json))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, json) = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vouch-keyload: {e}");
            return ExitCode::from(2);
        }
    };
    match keyload::run(&options) {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                println!(
                    "{} x {} ({} wrapping), {:.1} s: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors; vouchd {:.0} us CPU per request",
                    report.concurrency,
                    report.op.name(),
                    report.wrapping,
                    report.duration_s,
                    report.ops_per_s,
                    report.p50_ms,
                    report.p99_ms,
                    report.max_ms,
                    report.errors,
                    report.vouchd_cpu_us_per_request
                );
            }
            if let (false, Some(ceiling)) = (json, report.key_server_ops_per_s) {
                println!("the key server alone (same client, no vouchd): {ceiling:.0} ops/s");
            }
            if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vouch-keyload: {e}");
            ExitCode::from(2)
        }
    }
}
