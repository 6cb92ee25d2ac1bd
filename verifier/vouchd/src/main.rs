//! `vouchd`: Vouch's verifier service.

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vouchd::config::Config;

/// Vouch's verifier service: TPM attestation of trusted hosts, management API, agent link.
#[derive(Debug, Parser)]
#[command(name = "vouchd", version, about)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of text. Filter with VOUCHD_LOG.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the management API (HTTPS) and the agent link (TCP).
    ///
    /// On the first start of a data directory, prints the bootstrap token of principal
    /// `admin` (TrustedAdmins) once, and the SHA-256 fingerprint of a generated self-signed
    /// TLS certificate.
    Serve {
        /// The configuration file (TOML); defaults apply when omitted.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Back up the data directory into a new file, while vouchd serves: a consistent snapshot
    /// of the database with the signing and TLS keys. Secrets stay sealed under the
    /// key-encryption key, which is not in the backup: keep it apart.
    Backup {
        /// The configuration file vouchd serves with (its data_dir is backed up).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The backup file to write (must not exist; mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print what the backup holds as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into an empty or missing data directory (never over a live one), then
    /// start `vouchd serve` on it.
    Restore {
        /// The configuration file the restored vouchd will serve with (its data_dir).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The key-encryption key of the backed-up vouchd (its data directory's
        /// key-encryption-key file), copied into the new data directory. Not needed when the
        /// configuration or VOUCHD_KEY_ENCRYPTION_KEY names the key.
        #[arg(long, value_name = "FILE")]
        key_encryption_key: Option<PathBuf>,
        /// Print what was restored as JSON.
        #[arg(long)]
        json: bool,
        /// The backup file (from `vouchd backup`).
        backup: PathBuf,
    },
    /// Administrative access, run on vouchd's host with access to its data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print vouchd's completion script for a shell, e.g. `vouchd completions bash`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write vouchd's man pages into DIR: vouchd.1 and one page per subcommand.
    Manpages {
        /// The directory (created if missing), e.g. /usr/share/man/man1.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Recover administrative access when every admin token is lost: a new token for a member
    /// of TrustedAdmins (made one if needed), written to <data_dir>/bootstrap-token (mode
    /// 0600) as on the first start, and an event `principal.bootstrap_reset`. Works while
    /// vouchd serves.
    ResetBootstrap {
        /// The configuration file vouchd serves with.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The principal that gets the token.
        #[arg(long, default_value = vouchd::service::auth::BOOTSTRAP_PRINCIPAL)]
        principal: String,
    },
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.validate()?;
    Ok(config)
}

fn print_summary(summary: &vouchd::backup::Summary, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        println!(
            "{verb} {}: schema {}, {} clusters, {} hosts, {} attestations, files: {}; secrets sealed under key-encryption key {}",
            summary.file.display(),
            summary.schema_version,
            summary.clusters,
            summary.hosts,
            summary.attestations,
            summary.files.join(", "),
            summary.key_encryption_key_id
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("VOUCHD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vouchd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The least number of threads for store calls (see `run`).
const BLOCKING_THREADS: usize = 32;

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            // The blocking pool runs only store calls (one SQLite connection, or a PostgreSQL
            // pool of at most `store_max_connections`): more threads than that only wait on the
            // store, and tokio's default of 512 grew to ~500 threads under a 100,000-host fleet:
            // their stacks and allocator caches cost ~175 MiB in a power-on storm.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(
                    BLOCKING_THREADS
                        .max(usize::try_from(config.store_max_connections).unwrap_or(0)),
                )
                .build()?;
            runtime.block_on(serve(config))
        }
        Command::Backup { config, out, json } => {
            let config = load(config.as_deref())?;
            let summary = vouchd::backup::backup(&config, &out)?;
            print_summary(&summary, json, "backed up into")
        }
        Command::Restore {
            config,
            key_encryption_key,
            json,
            backup,
        } => {
            let config = load(config.as_deref())?;
            let summary = vouchd::backup::restore(&config, &backup, key_encryption_key.as_deref())?;
            print_summary(&summary, json, "restored")
        }
        Command::Admin {
            command: AdminCommand::ResetBootstrap { config, principal },
        } => {
            let config = load(config.as_deref())?;
            let path = vouchd::server::reset_bootstrap(&config, &principal)?;
            println!(
                "new token for principal '{principal}' (TrustedAdmins) written to {} (mode 0600); delete the file once it is kept safe",
                path.display()
            );
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vouchd", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .map_err(|e| anyhow::anyhow!("cannot write man pages into {}: {e}", dir.display())),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = vouchd::server::start(config).await?;
    // Stdout carries only what an operator must know: where the bootstrap token was written
    // (once in the life of the data directory; the token itself never reaches stdout or a
    // journal) and the certificate fingerprint.
    if let Some(path) = &running.bootstrap_token_file {
        println!(
            "bootstrap token for principal 'admin' (TrustedAdmins) written to {} (mode 0600); delete the file once it is kept safe",
            path.display()
        );
    }
    if running.tls_generated {
        println!(
            "generated a self-signed TLS certificate; SHA-256 fingerprint: {}",
            running.tls_fingerprint
        );
    } else {
        println!(
            "TLS certificate SHA-256 fingerprint: {}",
            running.tls_fingerprint
        );
    }
    println!("management API: https://{}", running.api_addr);
    println!("agent link: {}", running.agent_addr);
    let grace = std::time::Duration::from_secs(running.state.config.shutdown_grace_secs);
    let signal = stop_signal()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut running = running;
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = running.wait() => {
                anyhow::bail!("a listener stopped unexpectedly; see the log above")
            }
            Some(()) = hangup.recv() => {
                // SIGHUP: reload the TLS certificate; an error keeps the old one (logged and
                // recorded as an event by reload_tls).
                tracing::info!("SIGHUP: reloading the API's TLS certificate");
                let _ = vouchd::service::certs::reload_tls(&running.state).await;
            }
            name = &mut signal => {
                tracing::info!(signal = name, ?grace, "stopping: finishing the work in flight");
                break;
            }
        }
    }
    let cut = running.shutdown(grace).await;
    tracing::info!(cut_off = cut, "stopped");
    Ok(())
}

/// Resolves with the signal's name on the first SIGTERM (systemd, containers) or SIGINT
/// (Ctrl-C).
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
