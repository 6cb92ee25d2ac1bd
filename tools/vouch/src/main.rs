//! `vouch`: the Vouch operator CLI for offline checks of TPM evidence.
//!
//! Exit codes: 0 success; 1 the evidence was checked and refused; 2 the
//! input could not be read or parsed, or the command line is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod credential;
mod ek;
mod eventlog;
mod image_cmd;
mod quote;

/// Offline checks of TPM evidence: event logs, quotes and EK certificates.
#[derive(Debug, Parser)]
#[command(name = "vouch", version, about, long_about = None)]
struct Cli {
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
    /// Verify endorsement-key certificates.
    #[command(subcommand)]
    Ek(EkCmd),
    /// Make credentials for AK activation (TPM2_MakeCredential).
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Firmware images: their reference measurements.
    #[command(subcommand)]
    Image(ImageCmd),
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Compute the software version (reference measurements of PCRs 0 and 1) a board running
    /// this image presents, exactly as the board measures itself; prints it as JSON.
    Add(image_cmd::AddArgs),
}

#[derive(Debug, Subcommand)]
enum CredentialCmd {
    /// Protect a secret for an AK under an EK; the TPM recovers it with `tpm2_activatecredential`.
    Make(credential::MakeArgs),
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
    /// Verify an EK certificate's chain to trusted TPM manufacturer CAs.
    Verify(ek::VerifyArgs),
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The evidence was checked and refused (exit 1).
    Refused(String),
    /// The input could not be read or parsed (exit 2).
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eventlog(EventlogCmd::Replay { file, json }) => eventlog::replay(&file, json),
        Command::Eventlog(EventlogCmd::Show { file }) => eventlog::show(&file),
        Command::Quote(QuoteCmd::Verify(args)) => quote::verify(&args),
        Command::Ek(EkCmd::Verify(args)) => ek::verify(&args),
        Command::Credential(CredentialCmd::Make(args)) => credential::make(&args),
        Command::Image(ImageCmd::Add(args)) => image_cmd::add(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(msg)) => {
            eprintln!("vouch: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Input(msg)) => {
            eprintln!("vouch: {msg}");
            ExitCode::from(2)
        }
    }
}
