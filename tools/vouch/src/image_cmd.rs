//! `vouch image add`: see [`vouch::image`].

use std::path::PathBuf;

use vouch::image::{Layout, layout_elf, software_version};
use vouch_agent::measure::BootImage;

use crate::client::{Api, ServerOpts};
use crate::{Failure, read_file};

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The firmware image: the board's ELF file, or a raw binary as flashed.
    file: PathBuf,
    /// The name of this software version (what a policy accepts).
    #[arg(long)]
    version: String,
    /// The agent version string the board records (read from the ELF when not given).
    #[arg(long)]
    agent_version: Option<String>,
    /// The board configuration the board records (read from the ELF when not given).
    #[arg(long)]
    config: Option<String>,
    /// The address the image is loaded at (raw binaries; an ELF says it itself).
    #[arg(long, default_value_t = 0)]
    base: u64,
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

pub fn add(args: &AddArgs, server: &ServerOpts) -> Result<(), Failure> {
    let bytes = read_file(&args.file, "firmware image")?;
    let layout = if bytes.starts_with(b"\x7fELF") {
        layout_elf(&bytes).map_err(|e| Failure::Input(format!("{}: {e}", args.file.display())))?
    } else {
        Layout {
            base: args.base,
            image: bytes,
            agent_version: None,
            config: None,
        }
    };
    let agent_version = pick(
        &args.agent_version,
        layout.agent_version.as_deref(),
        "--agent-version",
        "VOUCH_AGENT_VERSION",
    )?;
    let config = pick(
        &args.config,
        layout.config.as_deref(),
        "--config",
        "VOUCH_BOARD_CONFIG",
    )?;
    let parts: [&[u8]; 1] = [&layout.image];
    let boot = BootImage {
        version: &agent_version,
        image: &parts,
        base: layout.base,
        config: &config,
    };
    let version = software_version(&args.version, &boot).map_err(Failure::Input)?;
    publish_software_version(
        &version,
        args.output.as_deref(),
        args.cluster.as_deref(),
        args.replace,
        server,
    )
}

fn pick(
    flag: &Option<String>,
    found: Option<&[u8]>,
    flag_name: &str,
    symbol: &str,
) -> Result<Vec<u8>, Failure> {
    match (flag, found) {
        (Some(value), _) => Ok(value.as_bytes().to_vec()),
        (None, Some(bytes)) => Ok(bytes.to_vec()),
        (None, None) => Err(Failure::Input(format!(
            "the image does not carry {symbol}; give it with {flag_name}"
        ))),
    }
}

/// Prints a software version (or writes it to `output`), and uploads it to `cluster` when
/// one is given: what `image add` and `software from-eventlog` do with the version they derive.
pub fn publish_software_version(
    version: &impl serde::Serialize,
    output: Option<&std::path::Path>,
    cluster: Option<&str>,
    replace: bool,
    server: &ServerOpts,
) -> Result<(), Failure> {
    let json = serde_json::to_string_pretty(version)
        .map_err(|e| Failure::Input(format!("cannot encode the software version: {e}")))?;
    // Connect before writing anything, so that bad server options change nothing.
    let api = cluster.map(|_| Api::connect(server, true)).transpose()?;
    match output {
        Some(path) => std::fs::write(path, json.clone() + "\n")
            .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?,
        None if api.is_none() => crate::output::stdout_line(&json)?,
        None => {}
    }
    if let (Some(api), Some(cluster)) = (&api, cluster) {
        let body = serde_json::to_value(version)
            .map_err(|e| Failure::Input(format!("cannot encode the software version: {e}")))?;
        crate::manage::upload_software(api, cluster, body, None, replace)?;
    }
    Ok(())
}
