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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(config))
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
    let mut running = running;
    tokio::select! {
        () = running.wait() => {
            anyhow::bail!("a listener stopped unexpectedly; see the log above")
        }
        name = signal => {
            tracing::info!(signal = name, ?grace, "stopping: finishing the work in flight");
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
