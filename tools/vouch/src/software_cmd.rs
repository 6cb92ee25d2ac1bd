//! `vouch software from-eventlog`: see [`vouch::reference`].

use std::path::PathBuf;

use vouch::reference::from_event_log;
use vouch_attest::HashAlg;

use crate::client::ServerOpts;
use crate::{Failure, read_file};

#[derive(Debug, clap::Args)]
pub struct FromEventlogArgs {
    /// The reference host's binary event log, e.g. a copy of
    /// /sys/kernel/security/tpm0/binary_bios_measurements (crypto-agile or SHA-1 format).
    log: PathBuf,
    /// The name of this software version (what a policy accepts).
    #[arg(long)]
    version: String,
    /// The PCRs to take (default: every PCR the log extends), e.g. --pcrs 0,2,4,7.
    #[arg(long, value_delimiter = ',')]
    pcrs: Option<Vec<u32>>,
    /// The one bank to take (default: every bank of the log Vouch computes).
    #[arg(long, value_parser = parse_bank)]
    bank: Option<HashAlg>,
    /// Write the software version here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Upload it to vouchd as an accepted software version of this cluster (see `--server`).
    #[arg(long)]
    cluster: Option<String>,
    /// With --cluster: replace an accepted version of the same name (without it, refused).
    #[arg(long, requires = "cluster")]
    replace: bool,
}

fn parse_bank(name: &str) -> Result<HashAlg, String> {
    HashAlg::from_name(name)
        .ok_or_else(|| format!("`{name}` is not a PCR bank; one of sha1, sha256, sha384, sha512"))
}

pub fn from_eventlog(args: &FromEventlogArgs, server: &ServerOpts) -> Result<(), Failure> {
    let bytes = read_file(&args.log, "event log")?;
    let version = from_event_log(&args.version, &bytes, args.pcrs.as_deref(), args.bank)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.log.display())))?;
    crate::image_cmd::publish_software_version(
        &version,
        args.output.as_deref(),
        args.cluster.as_deref(),
        args.replace,
        server,
    )
}
