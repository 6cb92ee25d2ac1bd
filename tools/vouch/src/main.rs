//! `vouch`: the Vouch operator CLI: offline checks of TPM evidence, a client of vouchd's
//! management API, and a serial bridge from a board to vouchd's agent port.
//!
//! Exit codes: 0 success; 1 the evidence was checked and refused, or vouchd refused the
//! request (401/403/404/409, its reason printed); 2 the input could not be read or parsed,
//! the command line is wrong, vouchd cannot be reached, or the output cannot be written
//! (standard output closed or full; see `output`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod bridge;
mod client;
mod cluster_transfer;
mod credential;
mod ek;
mod eventlog;
mod image_cmd;
mod kms_csr;
mod manage;
mod output;
mod quote;
mod software_cmd;

use client::ServerOpts;
use manage::{
    ClusterArg, ClusterCmd, EkAddArgs, EventsArgs, HostCmd, KmsCmd, ManagementServerCmd,
    PrincipalCmd, ProviderCmd, SigningKeyCmd, SoftwareCmd, TokenCmd, TpmCaCmd,
};

/// The Vouch operator CLI: offline checks of TPM evidence, vouchd's management API, and a
/// serial bridge from a board to vouchd.
#[derive(Debug, Parser)]
#[command(name = "vouch", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    server: ServerOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and replay TCG PC Client event logs.
    #[command(subcommand)]
    Eventlog(EventlogCmd),
    /// Verify TPM quotes.
    #[command(subcommand)]
    Quote(QuoteCmd),
    /// Endorsement keys: verify certificates (offline); a cluster's individual EKs.
    #[command(subcommand)]
    Ek(EkCmd),
    /// Make credentials for AK activation (TPM2_MakeCredential).
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Firmware images: their reference measurements.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Check that vouchd answers and its certificate is the one trusted (no token needed).
    Health {
        /// Also check (TrustedAdmins) the store, each key server's endpoints and the expiry of
        /// every certificate vouchd depends on; exit 1 when degraded.
        #[arg(long)]
        deep: bool,
    },
    /// Show the principal the token belongs to.
    Whoami,
    /// Principals (people and service accounts) and their groups.
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Bearer tokens of principals.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Management servers, whose signatures host operations need.
    #[command(subcommand)]
    ManagementServer(ManagementServerCmd),
    /// Clusters: the trust configuration of a group of hosts.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// A cluster's trusted TPM manufacturer CA certificates.
    #[command(subcommand)]
    TpmCa(TpmCaCmd),
    /// A cluster's accepted software versions (reference measurements).
    #[command(subcommand)]
    Software(SoftwareCmd),
    /// A cluster's hosts.
    #[command(subcommand)]
    Host(HostCmd),
    /// Key servers (KMIP) for the key provider service.
    #[command(subcommand)]
    Kms(KmsCmd),
    /// Trusted key providers: a primary key on a key server.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// The keys that sign attestation tokens: show them, rotate to a new one.
    #[command(subcommand)]
    SigningKey(SigningKeyCmd),
    /// vouchd's own TLS certificate.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Attestation status: of every host as a table, or of one host (EK hash or name).
    Status {
        /// A host's EK hash or name.
        host: Option<String>,
    },
    /// The audit and attestation events.
    Events(EventsArgs),
    /// Copy bytes between a board's serial port and vouchd's agent port.
    Bridge(bridge::BridgeArgs),
    /// Print vouch's completion script for a shell, e.g. `vouch completions bash`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write vouch's man pages into DIR: vouch.1 and one page per subcommand (vouch-host-add.1).
    Manpages {
        /// The directory (created if missing), e.g. /usr/share/man/man1.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Compute the software version (reference measurements of PCRs 0 and 1) a board running
    /// this image presents, exactly as the board measures itself; prints it as JSON, or with
    /// --cluster uploads it to vouchd as an accepted software version of that cluster.
    Add(image_cmd::AddArgs),
}

#[derive(Debug, Subcommand)]
enum CredentialCmd {
    /// Protect a secret for an AK under an EK; the TPM recovers it with `tpm2_activatecredential`.
    Make(credential::MakeArgs),
}

#[derive(Debug, Subcommand)]
enum TlsCmd {
    /// Make vouchd read its TLS certificate and key files again (as SIGHUP does): new
    /// connections get the new certificate, open ones keep theirs; a pair that does not parse,
    /// does not match or is not valid now is refused (exit 1) and the old one stays.
    Reload,
}

#[derive(Debug, Subcommand)]
enum EventlogCmd {
    /// Replay a log and print the PCR values it produces, per bank.
    Replay {
        /// The binary event log (e.g. /sys/kernel/security/tpm0/binary_bios_measurements).
        file: PathBuf,
        /// Print JSON: {"banks":{"sha256":{"0":"<hex>",...},...}}.
        #[arg(long)]
        json: bool,
    },
    /// Print the events of a log for a person.
    Show {
        /// The binary event log.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum QuoteCmd {
    /// Verify a quote as `tpm2_checkquote` does; prints `valid` and exits 0, or exits 1 naming the failed check.
    Verify(quote::VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum EkCmd {
    /// Verify an EK certificate's chain to trusted TPM manufacturer CAs (offline).
    Verify(ek::VerifyArgs),
    /// List an individual EK in a cluster (certificate or public key, PEM).
    Add(EkAddArgs),
    /// List a cluster's individual EKs.
    List {
        #[command(flatten)]
        c: ClusterArg,
    },
    /// Remove an individual EK from a cluster.
    Remove {
        #[command(flatten)]
        c: ClusterArg,
        /// The EK hash.
        ek_hash: String,
    },
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The evidence was checked and refused, or vouchd refused the request (exit 1).
    Refused(String),
    /// The input could not be read or parsed, or vouchd could not be reached (exit 2).
    Input(String),
}

pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::Input(format!(
            "cannot read {what} {}: {e}; check the path",
            path.display()
        ))
    })
}

/// Prints the completion script for `shell`.
fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vouch", &mut script);
    output::stdout(&String::from_utf8_lossy(&script))
}

/// Writes the man pages of every command into `dir`.
fn manpages(dir: &Path) -> Result<(), Failure> {
    let failed = |e: std::io::Error| {
        Failure::Input(format!(
            "cannot write man pages into {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(failed)
}

/// Parses the command line. `--help` and `--version` print to standard output (exit 0, or 2
/// when it cannot be written); a usage error prints to standard error (exit 2).
fn parse_args() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    let e = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return match output::stdout(&e.render().to_string()) {
            Ok(()) => Err(ExitCode::SUCCESS),
            Err(Failure::Input(msg) | Failure::Refused(msg)) => {
                output::stderr(format_args!("vouch: {msg}"));
                Err(ExitCode::from(2))
            }
        };
    }
    output::stderr(e.render().to_string().trim_end());
    Err(ExitCode::from(2))
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let server = &cli.server;
    let result = match cli.command {
        Command::Eventlog(EventlogCmd::Replay { file, json }) => eventlog::replay(&file, json),
        Command::Eventlog(EventlogCmd::Show { file }) => eventlog::show(&file),
        Command::Quote(QuoteCmd::Verify(args)) => quote::verify(&args),
        Command::Ek(EkCmd::Verify(args)) => ek::verify(&args),
        Command::Ek(EkCmd::Add(args)) => manage::ek_add(server, &args),
        Command::Ek(EkCmd::List { c }) => manage::ek_list(server, &c),
        Command::Ek(EkCmd::Remove { c, ek_hash }) => manage::ek_remove(server, &c, &ek_hash),
        Command::Credential(CredentialCmd::Make(args)) => credential::make(&args),
        Command::Image(ImageCmd::Add(args)) => image_cmd::add(&args, server),
        Command::Health { deep } => manage::health(server, deep),
        Command::Whoami => manage::whoami(server),
        Command::Principal(cmd) => manage::principal(server, &cmd),
        Command::Token(cmd) => manage::token(server, &cmd),
        Command::ManagementServer(cmd) => manage::management_server(server, &cmd),
        Command::Cluster(cmd) => manage::cluster(server, &cmd),
        Command::TpmCa(cmd) => manage::tpm_ca(server, &cmd),
        Command::Software(cmd) => manage::software(server, &cmd),
        Command::Host(cmd) => manage::host(server, &cmd),
        Command::Kms(cmd) => manage::kms(server, &cmd),
        Command::Provider(cmd) => manage::provider(server, &cmd),
        Command::SigningKey(cmd) => manage::signing_key(server, &cmd),
        Command::Tls(TlsCmd::Reload) => manage::tls_reload(server),
        Command::Status { host } => manage::status(server, host.as_deref()),
        Command::Events(args) => manage::events(server, &args),
        Command::Bridge(args) => bridge::run(&args),
        Command::Completions { shell } => completions(shell),
        Command::Manpages { dir } => manpages(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(msg)) => {
            output::stderr(format_args!("vouch: {msg}"));
            ExitCode::from(1)
        }
        Err(Failure::Input(msg)) => {
            output::stderr(format_args!("vouch: {msg}"));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
