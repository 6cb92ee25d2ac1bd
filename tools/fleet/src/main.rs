//! `vouch-fleet`: run a fleet of simulated agents against vouchd (see the library docs);
//! `cargo xtask fleet` builds it and vouchd in release and runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vouch_fleet::run::{External, Mode, Options, run};

/// Run a fleet of simulated agents (software TPMs) against vouchd and report how it carried them.
#[derive(Debug, Parser)]
#[command(name = "vouch-fleet", version, about)]
struct Args {
    /// Simulated hosts.
    #[arg(long)]
    hosts: usize,
    /// vouchd's re-attestation interval (each host's check-in interval), seconds (at least 10).
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// The measured window, seconds, after every host was attested once.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// checkin (connect, prove, disconnect) or persistent (one session per host).
    #[arg(long, default_value = "checkin")]
    mode: Mode,
    /// Every host enrolls from scratch at once (a data centre powering on); `enroll_s` is the
    /// time until every host was attested once.
    #[arg(long)]
    cold: bool,
    /// Running vouchds' agent links, HOST:PORT,... (loopback), instead of starting one; needs
    /// --api, --api-cert and --token to configure trust.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<SocketAddr>,
    /// With --servers: the management API, HOST:PORT.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// With --servers: the API's TLS certificate (PEM).
    #[arg(long)]
    api_cert: Option<PathBuf>,
    /// With --servers: a file holding a TrustedAdmins token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The started vouchd's store: `postgres` starts a private PostgreSQL for the run (initdb
    /// in a temporary directory, loopback only, stopped at the end), `postgres://...` uses that
    /// database; default the data directory's SQLite.
    #[arg(long)]
    store: Option<String>,
    /// How many vouchd replicas to start on the one database (needs --store); agents are
    /// spread over them and each tries the others in order when its own fails.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Kill one replica with SIGKILL this many seconds into the measured window; failures of
    /// its sessions are then reported as `reconnects`, not `errors`.
    #[arg(long, value_name = "SECS")]
    kill_one_at: Option<u64>,
    /// The vouchd binary to start.
    #[arg(long, default_value = "target/release/vouchd")]
    vouchd: PathBuf,
    /// Where the started vouchd's data directory goes (a new one per run).
    #[arg(long, default_value = "target/fleet")]
    work_dir: PathBuf,
    /// Where RSA keys are cached between runs.
    #[arg(long, default_value = "target/fleet/rsa-keys")]
    rsa_cache: PathBuf,
    /// Print the report as one JSON line on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let external = if args.servers.is_empty() {
        None
    } else {
        match (&args.api, &args.api_cert, &args.token_file) {
            (Some(api), Some(cert), Some(token)) => {
                let token = match std::fs::read_to_string(token) {
                    Ok(t) => t.trim().to_owned(),
                    Err(e) => {
                        eprintln!("vouch-fleet: {}: {e}", token.display());
                        return ExitCode::from(2);
                    }
                };
                Some(External {
                    servers: args.servers.clone(),
                    api: *api,
                    api_certificate: cert.clone(),
                    token,
                })
            }
            _ => {
                eprintln!(
                    "vouch-fleet: --servers needs --api, --api-cert and --token-file to configure the fleet's trust"
                );
                return ExitCode::from(2);
            }
        }
    };
    if let Some(bad) = args
        .servers
        .iter()
        .chain(args.api.iter())
        .find(|a| !a.ip().is_loopback())
    {
        eprintln!(
            "vouch-fleet: {bad} is not a loopback address: the simulator only sends to loopback"
        );
        return ExitCode::from(2);
    }
    let options = Options {
        hosts: args.hosts,
        interval: Duration::from_secs(args.interval),
        duration: Duration::from_secs(args.duration),
        mode: args.mode,
        cold: args.cold,
        external,
        store: args.store.clone(),
        replicas: args.replicas,
        kill_one_at: args.kill_one_at.map(Duration::from_secs),
        vouchd: args.vouchd.clone(),
        work_dir: args.work_dir.clone(),
        rsa_cache: args.rsa_cache.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vouch-fleet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = Arc::new(|line: String| eprintln!("fleet: {line}"));
    match runtime.block_on(run(&options, progress)) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("vouch-fleet: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{report:#?}");
            }
            let errors: u64 = report.errors.values().sum();
            let lost = report.lost.unwrap_or(0);
            if report.attested == report.hosts && errors == 0 && lost == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "vouch-fleet: {} of {} hosts attested at the end, {errors} errors, {lost} \
                     verdicts received but not in the database",
                    report.attested, report.hosts
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vouch-fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
