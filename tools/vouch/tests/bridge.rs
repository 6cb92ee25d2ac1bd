//! `vouch bridge` between a pseudo-terminal (standing in for the board's serial port) and a
//! local TCP listener (standing in for vouchd's agent port).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

const WAIT: Duration = Duration::from_secs(15);

/// The board's end of a pseudo-terminal, the path of the serial end, and a handle that keeps
/// the serial end open (so the board's end never sees a hang-up).
fn pty() -> (File, String, File) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    let slave = rustix::fs::open(
        name.as_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    // Raw before the bridge starts, so nothing the test sends is cooked in between.
    let mut tio = tcgetattr(&slave).unwrap();
    tio.make_raw();
    tcsetattr(&slave, OptionalActions::Now, &tio).unwrap();
    (File::from(master), name, File::from(slave))
}

/// Reads the board's end on a thread, so the test can wait with a deadline.
fn reader(mut board: File) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = board.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

fn receive(rx: &Receiver<Vec<u8>>, len: usize) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < len {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(_) => panic!("received {} of {len} bytes from the bridge", got.len()),
        }
    }
    got
}

fn accept(listener: &TcpListener, bridge: &mut Child) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = bridge.try_wait().unwrap() {
                    let mut err = String::new();
                    bridge
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("the bridge exited ({status}): {err}");
                }
                assert!(Instant::now() < deadline, "the bridge did not connect");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames as the agent link carries them: COBS, 0x00-delimited, and every byte a tty would
/// otherwise cook (CR, LF, ^C, ^D, XON, XOFF, DEL, 0xff).
fn frames(seed: u8) -> Vec<u8> {
    let mut v = vec![0x00, 0x03, 0x0d, 0x0a, 0x04, 0x11, 0x13, 0x7f, 0xff, 0x00];
    v.extend((0..=255u8).map(|b| b.wrapping_add(seed)));
    v.push(0x00);
    v
}

#[test]
fn bytes_cross_both_ways_unchanged_and_tcp_reconnects() {
    let (board, serial_path, _keep_open) = pty();
    let mut board_out = board.try_clone().unwrap();
    let from_bridge = reader(board);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args([
            "bridge",
            "--serial",
            &serial_path,
            "--baud",
            "115200",
            "--to",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bridge = Killed(child);

    for round in 0..2u8 {
        let mut vouchd = accept(&listener, &mut bridge.0);
        // vouchd → board. Its arrival also shows the bridge has the connection in place.
        let down = frames(round);
        vouchd.write_all(&down).unwrap();
        assert_eq!(receive(&from_bridge, down.len()), down, "round {round}");
        // board → vouchd.
        let up: Vec<u8> = frames(round.wrapping_add(100)).into_iter().rev().collect();
        board_out.write_all(&up).unwrap();
        let mut got = vec![0u8; up.len()];
        vouchd.read_exact(&mut got).unwrap();
        assert_eq!(got, up, "round {round}");
        // vouchd drops the connection; the bridge connects again, the serial port stays open.
        drop(vouchd);
    }
    assert!(bridge.0.try_wait().unwrap().is_none(), "the bridge exited");
}

/// Sends a round of frames both ways over the bridge through `vouchd`'s end.
fn exchange(
    vouchd: &mut TcpStream,
    board_out: &mut File,
    from_bridge: &Receiver<Vec<u8>>,
    round: u8,
) {
    let down = frames(round);
    vouchd.write_all(&down).unwrap();
    assert_eq!(receive(from_bridge, down.len()), down, "round {round}");
    let up: Vec<u8> = frames(round.wrapping_add(100)).into_iter().rev().collect();
    board_out.write_all(&up).unwrap();
    let mut got = vec![0u8; up.len()];
    vouchd.read_exact(&mut got).unwrap();
    assert_eq!(got, up, "round {round}");
}

#[test]
fn with_several_verifiers_the_bridge_moves_to_the_next_when_one_dies() {
    let (board, serial_path, _keep_open) = pty();
    let mut board_out = board.try_clone().unwrap();
    let from_bridge = reader(board);
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(["bridge", "--serial", &serial_path, "--retry", "1"])
        .args(["--to", &first.local_addr().unwrap().to_string()])
        .args(["--to", &second.local_addr().unwrap().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bridge = Killed(child);
    // The first in order takes the session.
    let mut vouchd = accept(&first, &mut bridge.0);
    exchange(&mut vouchd, &mut board_out, &from_bridge, 0);
    // The first replica dies: its connection drops and its port refuses from now on. The
    // bridge goes on with the second.
    drop(first);
    drop(vouchd);
    let mut vouchd = accept(&second, &mut bridge.0);
    exchange(&mut vouchd, &mut board_out, &from_bridge, 1);
    // The second drops the session: the first refuses, so the bridge comes back to the second.
    drop(vouchd);
    let mut vouchd = accept(&second, &mut bridge.0);
    exchange(&mut vouchd, &mut board_out, &from_bridge, 2);
    assert!(bridge.0.try_wait().unwrap().is_none(), "the bridge exited");
}

#[test]
fn the_bridge_ends_when_the_serial_port_goes_away() {
    let (board, serial_path, keep_open) = pty();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args([
            "bridge",
            "--serial",
            &serial_path,
            "--to",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bridge = Killed(child);
    // Connected: the serial port is open.
    let _vouchd = accept(&listener, &mut bridge.0);
    // The board goes away (the USB device is unplugged): the serial end hangs up.
    drop(board);
    drop(keep_open);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = bridge.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the bridge kept running");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    bridge
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("serial port"), "{err}");
}

#[test]
fn a_missing_serial_port_is_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args([
            "bridge",
            "--serial",
            "/nonexistent/ttyACM9",
            "--to",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the serial port"), "{err}");
}

#[test]
fn a_file_that_is_not_a_tty_is_refused() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args([
            "bridge",
            "--serial",
            file.path().to_str().unwrap(),
            "--to",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a serial port"), "{err}");
}
