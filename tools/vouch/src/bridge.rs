//! `vouch bridge`: a board's serial port to vouchd's agent port. Bytes are copied unchanged
//! both ways (vouch-proto frames are COBS with 0x00 delimiters, so the tty is put in raw mode:
//! no echo, no line editing, no CR/LF translation, no flow-control characters). The serial
//! port stays open for the bridge's life; the TCP side is reconnected whenever it drops.
//! Given several verifiers (`--to A --to B`, replicas sharing one database), the bridge tries
//! them in order: when one refuses the connection or drops it, the next one is tried, round
//! the list, waiting `--retry` only once every one has refused.
//! Bytes the board sends while no connection is up are dropped (and counted): a new
//! connection is a new agent session, and the receivers resynchronise on the next 0x00.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::termios::{self, OptionalActions, SpecialCodeIndex};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct BridgeArgs {
    /// The board's serial device, e.g. /dev/ttyACM0.
    #[arg(long, value_name = "DEVICE")]
    serial: PathBuf,
    /// The serial line speed.
    #[arg(long, default_value_t = 115_200, value_parser = clap::value_parser!(u32).range(1..))]
    baud: u32,
    /// vouchd's agent port, HOST:PORT. Give it once per replica (`--to A --to B`): the bridge
    /// tries them in order, moving to the next when one refuses or drops the connection.
    #[arg(long, value_name = "HOST:PORT", required = true)]
    to: Vec<String>,
    /// Seconds to wait before connecting again after the TCP side drops or is refused.
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    retry: u64,
}

/// The connection the serial reader writes to, when there is one.
type Current = Arc<Mutex<Option<TcpStream>>>;

/// Opens the serial port in raw mode at `baud`.
pub fn open_serial(path: &std::path::Path, baud: u32) -> Result<File, Failure> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Failure::Input(format!(
            "cannot open the serial port {}: {e}; check the device name and your permission (the dialout group)",
            path.display()
        ))
    })?;
    let not_a_tty = |e: rustix::io::Errno| {
        Failure::Input(format!(
            "{} is not a serial port (terminal settings: {e})",
            path.display()
        ))
    };
    let mut tio = termios::tcgetattr(&fd).map_err(not_a_tty)?;
    tio.make_raw();
    tio.set_speed(baud).map_err(|e| {
        Failure::Input(format!(
            "{}: cannot set {baud} baud: {e}; pass a standard speed with --baud",
            path.display()
        ))
    })?;
    // Ignore modem control lines, enable the receiver; reads block until a byte arrives.
    tio.control_modes |= termios::ControlModes::CLOCAL | termios::ControlModes::CREAD;
    tio.control_modes -= termios::ControlModes::CRTSCTS;
    tio.input_modes -= termios::InputModes::IXON | termios::InputModes::IXOFF;
    tio.special_codes[SpecialCodeIndex::VMIN] = 1;
    tio.special_codes[SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(&fd, OptionalActions::Now, &tio).map_err(not_a_tty)?;
    // Whatever the board sent before the bridge started belongs to no session.
    let _ = termios::tcflush(&fd, termios::QueueSelector::IFlush);
    Ok(File::from(fd))
}

/// A connection to the first of `verifiers`, from `start` on and round the list, that accepts
/// one: its index and the stream; every refusal when none does.
fn connect(verifiers: &[String], start: usize) -> Result<(usize, TcpStream), Vec<String>> {
    let mut refused = Vec::new();
    for offset in 0..verifiers.len() {
        let index = (start + offset) % verifiers.len();
        let Some(verifier) = verifiers.get(index) else {
            continue;
        };
        match TcpStream::connect(verifier.as_str()) {
            Ok(stream) => return Ok((index, stream)),
            Err(e) => refused.push(format!("{verifier}: {e}")),
        }
    }
    Err(refused)
}

pub fn run(args: &BridgeArgs) -> Result<(), Failure> {
    for to in &args.to {
        let addr = to.to_socket_addrs().map_err(|e| {
            Failure::Input(format!(
                "--to {to}: {e}; give vouchd's agent port as HOST:PORT"
            ))
        })?;
        if addr.len() == 0 {
            return Err(Failure::Input(format!("--to {to}: no address")));
        }
    }
    let serial = open_serial(&args.serial, args.baud)?;
    let writer = serial
        .try_clone()
        .map_err(|e| Failure::Input(format!("{}: {e}", args.serial.display())))?;
    let current: Current = Arc::new(Mutex::new(None));
    let reader = {
        let current = current.clone();
        thread::Builder::new()
            .name("serial-to-tcp".into())
            .spawn(move || serial_to_tcp(serial, &current))
            .map_err(|e| Failure::Input(format!("cannot start a thread: {e}")))?
    };
    crate::output::stderr(format_args!(
        "vouch bridge: {} at {} baud <-> {}",
        args.serial.display(),
        args.baud,
        args.to.join(", ")
    ));
    let mut writer = writer;
    let retry = Duration::from_secs(args.retry.max(1));
    let mut announced_failure = false;
    // The verifier to try first: the one after the last that dropped the connection.
    let mut next = 0usize;
    loop {
        if reader.is_finished() {
            return Err(Failure::Input(format!(
                "the serial port {} failed or closed; check the board's connection",
                args.serial.display()
            )));
        }
        let (index, stream) = match connect(&args.to, next) {
            Ok(connected) => connected,
            Err(refused) => {
                if !announced_failure {
                    crate::output::stderr(format_args!(
                        "vouch bridge: cannot connect ({}); retrying every {} s",
                        refused.join("; "),
                        retry.as_secs()
                    ));
                    announced_failure = true;
                }
                thread::sleep(retry);
                continue;
            }
        };
        announced_failure = false;
        let to = args.to.get(index).map_or("", String::as_str);
        next = (index + 1) % args.to.len().max(1);
        let _ = stream.set_nodelay(true);
        let Ok(for_serial_reader) = stream.try_clone() else {
            thread::sleep(retry);
            continue;
        };
        crate::output::stderr(format_args!("vouch bridge: connected to {to}"));
        *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(for_serial_reader);
        let why = tcp_to_serial(&stream, &mut writer);
        if let Some(s) = current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        match why {
            Ok(()) => crate::output::stderr(format_args!(
                "vouch bridge: {to} closed the connection; reconnecting"
            )),
            Err(Side::Tcp(e)) => crate::output::stderr(format_args!(
                "vouch bridge: connection to {to} lost: {e}; reconnecting"
            )),
            Err(Side::Serial(e)) => {
                return Err(Failure::Input(format!(
                    "cannot write to the serial port {}: {e}; check the board's connection",
                    args.serial.display()
                )));
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

enum Side {
    Tcp(io::Error),
    Serial(io::Error),
}

/// Copies from the connection to the serial port until the connection ends.
fn tcp_to_serial(mut stream: &TcpStream, serial: &mut File) -> Result<(), Side> {
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Side::Tcp(e)),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        serial.write_all(chunk).map_err(Side::Serial)?;
    }
}

/// Copies from the serial port to the current connection, for the bridge's life; when the
/// serial port fails, closes the connection so that the bridge stops.
fn serial_to_tcp(serial: File, current: &Current) {
    copy_serial(serial, current);
    if let Some(s) = current
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn copy_serial(mut serial: File, current: &Current) {
    let mut buf = [0u8; 4096];
    let mut dropped: u64 = 0;
    loop {
        let n = match serial.read(&mut buf) {
            // A tty in raw mode with VMIN=1 returns 0 only when the device is gone.
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::output::stderr(format_args!(
                    "vouch bridge: reading the serial port failed: {e}"
                ));
                return;
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let mut guard = current.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(stream) => {
                if dropped > 0 {
                    crate::output::stderr(format_args!(
                        "vouch bridge: dropped {dropped} bytes from the board while not connected"
                    ));
                    dropped = 0;
                }
                if stream.write_all(chunk).is_err() {
                    // The TCP reader sees the failure too and reconnects.
                    let _ = stream.shutdown(Shutdown::Both);
                    *guard = None;
                }
            }
            None => dropped = dropped.saturating_add(u64::try_from(n).unwrap_or(u64::MAX)),
        }
    }
}
