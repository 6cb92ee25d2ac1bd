//! The agent's side of a session (`vouch_agent::session::run_with_keys`) against a fuzzed
//! verifier: the input is everything the verifier sends (frames of `VerifierMessage`s, or
//! garbage), the TPM is `vouch_fuzz::fake_tpm`. The agent must end with a result, never panic,
//! whatever arrives: a challenge, quote requests, verdicts, a channel key, sealed responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_agent::session::{self, AgentConfig, KeyClient};
use vouch_fuzz::fake_tpm::FakeTpm;
use vouch_fuzz::seeds::AGENT_EVENT_LOG;
use vouch_proto::wire::{KeyRequest, KeyResponse};
use vouch_tpm::{AkKind, EkKind, Tpm};

/// The verifier's bytes to read; what the agent writes is dropped.
struct Link<'a> {
    input: &'a [u8],
}

impl embedded_io::ErrorType for Link<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        embedded_io::Read::read(&mut self.input, buf)
    }
}

impl embedded_io::Write for Link<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Asks for two data keys.
struct TwoKeys(u8);

impl KeyClient for TwoKeys {
    fn next_request(&mut self) -> Option<KeyRequest> {
        self.0 = self.0.checked_sub(1)?;
        Some(KeyRequest::GenerateKey {
            aad: heapless::Vec::from_slice(b"fuzz").ok()?,
        })
    }
    fn response(&mut self, _response: KeyResponse) {}
}

fuzz_target!(|data: &[u8]| {
    let mut tpm: Tpm<FakeTpm> = Tpm::new(FakeTpm);
    let mut link = Link { input: data };
    let config = AgentConfig {
        agent: "fuzz",
        ek: EkKind::EccP256,
        ak: AkKind::EccP256,
        ak_handle: session::DEFAULT_AK_HANDLE,
        stop_after_verdicts: None,
    };
    let mut cert = [0u8; 2048];
    let _ = session::run_with_keys(
        &mut tpm,
        &AGENT_EVENT_LOG,
        &mut link,
        &config,
        &mut cert,
        &mut TwoKeys(2),
    );
});
