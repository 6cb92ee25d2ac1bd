//! TPMs a host reaches: swtpm's command socket (Unix or TCP) and the kernel's resource manager
//! (`/dev/tpmrm0`). All three carry raw TPM command and response frames.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vouch_tpm::Transport;

/// The largest response accepted (TPM_PT_MAX_RESPONSE_SIZE of real TPMs is 4 KiB).
pub const MAX_RESPONSE: usize = 8192;
/// How long a command may take before the TPM is considered gone (RSA key generation on
/// slow TPMs takes seconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the TPM is, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmAddress {
    /// `unix:PATH`: swtpm's `--server type=unixio,path=PATH`.
    Unix(String),
    /// `tcp:HOST:PORT`: swtpm's `--server type=tcp,port=PORT`.
    Tcp(String),
    /// `device:PATH`: a TPM character device, e.g. `/dev/tpmrm0`.
    Device(String),
}

impl std::str::FromStr for TpmAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("unix", path)) if !path.is_empty() => Ok(Self::Unix(path.into())),
            Some(("tcp", addr)) if !addr.is_empty() => Ok(Self::Tcp(addr.into())),
            Some(("device", path)) if !path.is_empty() => Ok(Self::Device(path.into())),
            _ => Err(format!(
                "`{s}` is not a TPM address; use unix:PATH, tcp:HOST:PORT or device:/dev/tpmrm0"
            )),
        }
    }
}

/// A connection to a TPM that exchanges whole frames.
#[derive(Debug)]
pub enum HostTpm {
    Unix(UnixStream),
    Tcp(TcpStream),
    Device(File),
}

impl HostTpm {
    /// Opens the TPM at `address`.
    pub fn open(address: &TpmAddress) -> io::Result<Self> {
        match address {
            TpmAddress::Unix(path) => {
                let s = UnixStream::connect(Path::new(path))?;
                s.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                Ok(Self::Unix(s))
            }
            TpmAddress::Tcp(addr) => {
                let s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                s.set_nodelay(true)?;
                Ok(Self::Tcp(s))
            }
            TpmAddress::Device(path) => OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(Self::Device),
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Self::Unix(s) => s,
            Self::Tcp(s) => s,
            Self::Device(f) => f,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Transport for HostTpm {
    type Error = io::Error;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> io::Result<usize> {
        let device = matches!(self, Self::Device(_));
        let stream = self.stream();
        stream.write_all(command)?;
        if device {
            // A TPM device answers one read with the whole response.
            let n = stream.read(response)?;
            return check_frame(response, n);
        }
        let header = response
            .get_mut(..10)
            .ok_or_else(|| invalid("response buffer under 10 bytes"))?;
        stream.read_exact(header)?;
        let size = frame_size(header)?;
        if !(10..=response.len().min(MAX_RESPONSE)).contains(&size) {
            return Err(invalid(&format!(
                "the TPM announced a {size}-byte response"
            )));
        }
        stream.read_exact(response.get_mut(10..size).unwrap_or_default())?;
        Ok(size)
    }
}

/// The size field of a response header.
fn frame_size(frame: &[u8]) -> io::Result<usize> {
    let field: [u8; 4] = frame
        .get(2..6)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("a response shorter than its header"))?;
    usize::try_from(u32::from_be_bytes(field)).map_err(|_| invalid("response size"))
}

fn check_frame(response: &[u8], n: usize) -> io::Result<usize> {
    let size = frame_size(response.get(..n).unwrap_or_default())?;
    if size == n {
        Ok(n)
    } else {
        Err(invalid(&format!(
            "the TPM sent {n} bytes of a {size}-byte response"
        )))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_expected() {
        assert_eq!("unix:/tmp/s".parse(), Ok(TpmAddress::Unix("/tmp/s".into())));
        assert_eq!(
            "tcp:127.0.0.1:2321".parse(),
            Ok(TpmAddress::Tcp("127.0.0.1:2321".into()))
        );
        assert_eq!(
            "device:/dev/tpmrm0".parse(),
            Ok(TpmAddress::Device("/dev/tpmrm0".into()))
        );
        let err = "/dev/tpm0".parse::<TpmAddress>().unwrap_err();
        assert!(err.contains("device:/dev/tpmrm0"), "{err}");
        assert!("unix:".parse::<TpmAddress>().is_err());
    }

    #[test]
    fn frames_from_a_socket_are_bounded_by_their_header() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut tpm = HostTpm::Unix(a);
        // A response claiming 9 bytes: below the header size.
        b.write_all(&[0x80, 0x01, 0, 0, 0, 9, 0, 0, 0, 0]).unwrap();
        let mut rsp = [0u8; 64];
        let err = tpm.transact(&[0; 10], &mut rsp).unwrap_err();
        assert!(err.to_string().contains("9-byte"), "{err}");
        // A well-formed 12-byte response.
        b.write_all(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xAB, 0xCD])
            .unwrap();
        assert_eq!(tpm.transact(&[0; 10], &mut rsp).unwrap(), 12);
        assert_eq!(&rsp[10..12], &[0xAB, 0xCD]);
        // Larger than the caller's buffer.
        b.write_all(&[0x80, 0x01, 0, 0, 0x10, 0, 0, 0, 0, 0])
            .unwrap();
        assert!(tpm.transact(&[0; 10], &mut rsp).is_err());
    }
}
