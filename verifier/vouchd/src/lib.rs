//! `vouchd`, Vouch's verifier service: the management API (HTTPS/JSON), the agent link (TCP,
//! vouch-proto frames), storage, token issuing and the re-attestation scheduler.
//!
//! Entry point: [`server::start`], which `vouchd serve` calls and integration tests call
//! in-process. The decisions themselves (EK trust, credential, quote, replay, policy) live in
//! `vouch-attest`; this crate does the I/O around them.
//!
//! Invariant: this is the only crate with tokio, sockets and the database. It is off by
//! default: a fresh database trusts no TPM and refuses every host until a member of
//! TrustedAdmins configures a trusted cluster.

pub mod agent;
pub mod api;
pub mod backup;
pub mod channel;
pub mod config;
pub mod ek;
pub mod jwt;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses hex (either case); `None` for odd lengths or other characters.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

/// Fresh random bytes from the system's CSPRNG.
pub fn random<const N: usize>() -> Result<[u8; N], aws_lc_rs::error::Unspecified> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00AB10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
