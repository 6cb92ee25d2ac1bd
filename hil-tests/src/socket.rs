//! [`SwtpmSocket`]: `vouch_tpm::Transport` over swtpm's command socket.
//!
//! swtpm's `--server` socket carries raw TPM 2.0 frames: the client writes one command frame,
//! swtpm answers with one response frame. A response starts with the 10-byte header
//! `tag: u16, size: u32, responseCode: u32` (big-endian); `size` counts the whole frame, so the
//! reader takes the header, checks `size` against bounds, then reads exactly the rest.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::swtpm::{HarnessError, io_err};

/// A TPM response header's length.
pub const HEADER_LEN: usize = 10;
/// The largest response accepted (swtpm's buffer is 4096 bytes).
pub const MAX_RESPONSE: usize = 8192;

/// A failure to move a frame over the socket.
#[derive(Debug)]
#[non_exhaustive]
pub enum SocketError {
    /// The socket failed or timed out.
    Io(std::io::Error),
    /// The response header's size field is below the header length or above [`MAX_RESPONSE`].
    BadSize(u32),
    /// The response does not fit the caller's buffer.
    TooLarge {
        /// The response's size.
        size: usize,
        /// The caller's buffer length.
        capacity: usize,
    },
}

/// A connection to swtpm's command socket.
#[derive(Debug)]
pub struct SwtpmSocket {
    stream: UnixStream,
}

impl SwtpmSocket {
    /// Connects to the command socket at `path`, with a 60 s read timeout (RSA key generation in
    /// swtpm takes well under a second; the bound only catches a hung TPM).
    pub fn connect(path: &Path) -> Result<Self, HarnessError> {
        let stream = UnixStream::connect(path)
            .map_err(io_err(format!("connecting to {}", path.display())))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io_err("setting the socket timeout"))?;
        Ok(Self { stream })
    }
}

impl vouch_tpm::Transport for SwtpmSocket {
    type Error = SocketError;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, SocketError> {
        self.stream.write_all(command).map_err(SocketError::Io)?;
        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .map_err(SocketError::Io)?;
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let len = usize::try_from(size).map_err(|_| SocketError::BadSize(size))?;
        if !(HEADER_LEN..=MAX_RESPONSE).contains(&len) {
            return Err(SocketError::BadSize(size));
        }
        let capacity = response.len();
        let Some(out) = response.get_mut(..len) else {
            // Drain the frame so the next command starts on a frame boundary.
            let mut sink = vec![0u8; len - HEADER_LEN];
            self.stream.read_exact(&mut sink).map_err(SocketError::Io)?;
            return Err(SocketError::TooLarge {
                size: len,
                capacity,
            });
        };
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&header);
        self.stream.read_exact(rest).map_err(SocketError::Io)?;
        Ok(len)
    }
}

/// A [`SwtpmSocket`] shared by several `Tpm`s (an agent's sessions and the test's own
/// commands), and replaceable after swtpm restarts.
#[derive(Debug, Clone)]
pub struct SharedSocket(pub std::sync::Arc<std::sync::Mutex<SwtpmSocket>>);

impl SharedSocket {
    /// Shares `socket`.
    pub fn new(socket: SwtpmSocket) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(socket)))
    }

    /// Replaces the socket (after swtpm restarted).
    pub fn replace(&self, socket: SwtpmSocket) {
        if let Ok(mut s) = self.0.lock() {
            *s = socket;
        }
    }
}

impl vouch_tpm::Transport for SharedSocket {
    type Error = SocketError;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, SocketError> {
        match self.0.lock() {
            Ok(mut s) => s.transact(command, response),
            Err(_) => Err(SocketError::Io(std::io::Error::other(
                "socket lock poisoned",
            ))),
        }
    }
}
