//! `vouch-hosted-agent`: the agent the firmware runs, as a program on a host with a TPM.
//!
//! It opens the TPM (swtpm's socket, or `/dev/tpmrm0`), optionally performs the firmware's
//! measured boot of an image (for a software TPM that nothing measured), connects to vouchd's
//! agent port, enrolls, and answers every quote request until the verifier ends the session;
//! then it reconnects, so vouchd can re-attest it on its interval. With `--checkin` it attests
//! by check-in instead (protocol v3): connect, one attestation, disconnect, and come back when
//! the verifier said.

mod tpm;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use embedded_io_adapters::std::FromStd;
use tpm::{HostTpm, TpmAddress};
use vouch_agent::ek::{self, EkChoice};
use vouch_agent::eventlog::EventLog;
use vouch_agent::measure::BootImage;
use vouch_agent::session::{self, AgentConfig, DEFAULT_AK_HANDLE, Outcome, SessionError};
use vouch_tpm::{AkKind, CommandError, EkKind, ResponseCode, Startup, StartupType, Tpm};

/// Attest this host's TPM to a Vouch verifier.
#[derive(Debug, Parser)]
#[command(name = "vouch-hosted-agent", version, about)]
struct Args {
    /// vouchd's agent port, HOST:PORT. Give it once per replica (`--verifier A --verifier B`):
    /// each connection tries them in order and uses the first that answers.
    #[arg(long, required = true)]
    verifier: Vec<String>,
    /// The TPM: unix:PATH or tcp:HOST:PORT (swtpm's command socket), device:/dev/tpmrm0.
    #[arg(long, default_value = "device:/dev/tpmrm0")]
    tpm: TpmAddress,
    /// Start the TPM (TPM2_Startup(CLEAR)) and measure this image as the firmware measures
    /// itself: for a software TPM that nothing has measured.
    #[arg(long)]
    measure_image: Option<PathBuf>,
    /// The agent version string recorded when measuring (`--measure-image`).
    #[arg(long, default_value = "vouch-hosted-agent")]
    agent_version: String,
    /// The configuration recorded in PCR 1 when measuring (`--measure-image`).
    #[arg(long, default_value = "")]
    config: String,
    /// The TCG event log to send with quotes, when not measuring an image (e.g.
    /// /sys/kernel/security/tpm0/binary_bios_measurements).
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// The EK that identifies the TPM: `auto` takes the one the TPM has a certificate for in
    /// its NV (RSA-2048 at 0x01c00002, ECC P-256 at 0x01c0000a; RSA when it has both or
    /// neither), `rsa` or `ecc` insist on one (TCG EK templates L-1 and L-2).
    #[arg(long, value_parser = ["auto", "rsa", "ecc"], default_value = "auto")]
    ek: String,
    /// The AK's kind when one is created.
    #[arg(long, value_parser = ["ecc", "rsa"], default_value = "ecc")]
    ak: String,
    /// The persistent handle of the AK, in hex (default 0x81000a4b).
    #[arg(long, value_parser = parse_handle)]
    ak_handle: Option<u32>,
    /// End after the first verdict instead of serving re-attestations and reconnecting.
    #[arg(long)]
    once: bool,
    /// Close each connection after its verdict and connect again a second later (to the first
    /// `--verifier` that answers), instead of keeping the connection for re-attestations:
    /// spreads the agents again over replicas that come back or are added.
    #[arg(long, conflicts_with = "once")]
    reconnect_each_verdict: bool,
    /// Attest by check-in: disconnect after each verdict and connect again when the verifier
    /// says (instead of holding a session open for the verifier's quote requests).
    #[arg(long)]
    checkin: bool,
    /// With `--checkin`: when the verifier does not say when to come back (older than
    /// protocol v3), check in again after this many seconds.
    #[arg(long, default_value_t = 600)]
    checkin_interval: u64,
    /// Seconds the verifier may stay silent before the session is abandoned.
    #[arg(long, default_value_t = 120)]
    idle_timeout: u64,
}

fn parse_handle(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouch-hosted-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let ak_handle = args.ak_handle.unwrap_or(DEFAULT_AK_HANDLE);
    let device = HostTpm::open(&args.tpm)
        .map_err(|e| format!("cannot open the TPM at {:?}: {e}", args.tpm))?;
    let mut tpm: Tpm<HostTpm> = Tpm::new(device);
    let mut event_log = event_log(args, &mut tpm)?;
    let ek = choose_ek(&args.ek, &mut tpm)?;
    let config = AgentConfig {
        agent: "vouch-hosted-agent",
        ek,
        ak: if args.ak == "rsa" {
            AkKind::Rsa2048
        } else {
            AkKind::EccP256
        },
        ak_handle,
        stop_after_verdicts: (args.once || args.reconnect_each_verdict || args.checkin)
            .then_some(1),
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        match session_once(args, &mut tpm, &event_log, &config) {
            Ok(outcome) => {
                report(&outcome);
                backoff = Duration::from_secs(1);
                if args.checkin && !args.once {
                    let after = outcome
                        .next_checkin_secs
                        .map_or(args.checkin_interval, u64::from)
                        .min(MAX_CHECKIN_SECS);
                    eprintln!("vouch-hosted-agent: next check-in in {after} s");
                    std::thread::sleep(Duration::from_secs(after));
                    continue;
                }
                if args.once {
                    return if outcome.last_verdict == Some(true) {
                        Ok(())
                    } else {
                        Err("the verifier did not attest this host".into())
                    };
                }
            }
            Err(Failure::TpmReset) if args.measure_image.is_some() => {
                // The TPM's PCRs were cleared: measure the image into them again.
                eprintln!("vouch-hosted-agent: the TPM was reset; measuring again");
                event_log = self::event_log(args, &mut tpm)?;
                continue;
            }
            Err(Failure::TpmReset) => {
                return Err(
                    "the TPM was reset, so its PCRs no longer hold this host's boot \
                            measurements: restart the host"
                        .into(),
                );
            }
            Err(Failure::Other(e)) if args.once => return Err(e),
            Err(Failure::Other(e)) => {
                eprintln!("vouch-hosted-agent: {e}; reconnecting in {backoff:?}");
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// The EK `choice` (`--ek`) names on `tpm`, said on stderr.
fn choose_ek(choice: &str, tpm: &mut Tpm<HostTpm>) -> Result<EkKind, String> {
    let choice = EkChoice::from_name(choice)
        .ok_or_else(|| format!("--ek {choice}: expected auto, rsa or ecc"))?;
    let kind = ek::choose(tpm, choice).map_err(|e| {
        format!("cannot look for the EK certificates in the TPM's NV: {e:?}; name the EK with --ek rsa or --ek ecc")
    })?;
    eprintln!(
        "vouch-hosted-agent: {} EK (template {}, certificate at NV 0x{:08x})",
        ek::name(kind),
        match kind {
            EkKind::Rsa2048 => "L-1, RSA-2048",
            EkKind::EccP256 => "L-2, NIST P-256",
        },
        kind.certificate_index()
    );
    Ok(kind)
}

/// The longest wait between check-ins, whatever the verifier says (a day).
const MAX_CHECKIN_SECS: u64 = 86_400;

/// Why a session did not complete.
enum Failure {
    /// The TPM answered TPM_RC_INITIALIZE: it was reset since it was measured.
    TpmReset,
    Other(String),
}

fn session_once(
    args: &Args,
    tpm: &mut Tpm<HostTpm>,
    event_log: &[u8],
    config: &AgentConfig<'_>,
) -> Result<Outcome, Failure> {
    let (stream, verifier) = connect(&args.verifier).map_err(Failure::Other)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(args.idle_timeout)))
        .map_err(|e| Failure::Other(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    eprintln!("vouch-hosted-agent: connected to {verifier}");
    let mut link = FromStd::new(stream);
    let outcome = if args.checkin {
        session::check_in(tpm, event_log, &mut link, config)
    } else {
        session::run(tpm, event_log, &mut link, config)
    };
    outcome.map_err(|e| match e {
        SessionError::Tpm(CommandError::Tpm(ResponseCode::INITIALIZE)) => Failure::TpmReset,
        e => Failure::Other(format!("session failed: {e:?}")),
    })
}

/// A connection to the first of `verifiers` that accepts one, and its address.
fn connect(verifiers: &[String]) -> Result<(TcpStream, &str), String> {
    let mut refused = Vec::new();
    for verifier in verifiers {
        match TcpStream::connect(verifier) {
            Ok(stream) => return Ok((stream, verifier)),
            Err(e) => refused.push(format!("{verifier}: {e}")),
        }
    }
    Err(format!(
        "cannot reach a verifier ({}); check the --verifier addresses and that vouchd runs",
        refused.join("; ")
    ))
}

fn report(outcome: &Outcome) {
    let verdict = match outcome.last_verdict {
        Some(true) => format!("attested ({})", outcome.software_version),
        Some(false) => "NOT attested".into(),
        None => "no verdict".into(),
    };
    eprintln!(
        "vouch-hosted-agent: session ended: AK activated: {}, quotes: {}, {verdict}",
        outcome.activated, outcome.quotes
    );
}

/// The event log to send: measured now from `--measure-image`, or read from `--event-log`.
fn event_log(args: &Args, tpm: &mut Tpm<HostTpm>) -> Result<Vec<u8>, String> {
    if let Some(path) = &args.measure_image {
        let image =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match tpm.startup(StartupType::Clear) {
            Ok(Startup::Started) => {}
            Ok(_) => {
                return Err(
                    "the TPM was already started, so its PCRs may hold other measurements; \
                     measure only on a freshly started TPM (restart swtpm)"
                        .into(),
                );
            }
            Err(e) => return Err(format!("TPM2_Startup failed: {e:?}")),
        }
        let parts: [&[u8]; 1] = [&image];
        let boot = BootImage {
            version: args.agent_version.as_bytes(),
            image: &parts,
            base: 0,
            config: args.config.as_bytes(),
        };
        let log: EventLog<8192> = vouch_agent::measured_boot(tpm, &boot)
            .map_err(|e| format!("measured boot failed: {e:?}"))?;
        eprintln!(
            "vouch-hosted-agent: measured {} ({} bytes) into PCR 0 and 1",
            path.display(),
            image.len()
        );
        return Ok(log.as_bytes().to_vec());
    }
    match &args.event_log {
        Some(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        None => {
            Err("give --event-log FILE (the platform's TCG log) or --measure-image FILE".into())
        }
    }
}
