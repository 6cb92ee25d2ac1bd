//! A `no_std`, allocation-free TPM 2.0 client.
//!
//! Layers, bottom up:
//! - [`RegisterAccess`]: read and write one TIS register of one locality. Implemented by the SPI
//!   and I2C transports; the TIS core never knows which bus it is on.
//!   - [`SpiTransport`]: the TCG SPI protocol (4-byte header, ≤ 64-byte frames, wait states
//!     polled with chip select held; it owns an `SpiBus` and the CS pin for that reason).
//!   - [`I2cTransport`]: the TCG I2C interface (LOC_SEL, guard times, NACK retries, CRC-16
//!     checksums of FIFO transfers).
//! - The TIS/FIFO core, [`Tis`]: drives the commandReady / Expect / tpmGo / dataAvail handshake
//!   over a [`RegisterAccess`] with the TCG timeouts ([`Timeouts`]) measured by a [`Clock`], and
//!   implements [`Transport`]. Every loop is bounded; any failure aborts with commandReady.
//! - The command layer, [`Tpm`]: typed TPM 2.0 commands over any [`Transport`] (the TIS core on
//!   a bus, or a socket to a software TPM in tests). Commands are marshalled with
//!   `tpm2-protocol`; responses are checked and decoded by the pure functions of [`response`],
//!   which keep the exact TPM2B_PUBLIC / TPMS_ATTEST / TPMT_SIGNATURE bytes.
//!
//! Errors say who is at fault: [`Error`] for the bus and TIS layers (bus, protocol, timeout,
//! usage), [`CommandError`] for commands, where a TPM response code is data
//! ([`CommandError::Tpm`]), distinct from transport failures and malformed responses.
//!
//! # Memory
//! No heap. [`Tpm`] holds two `N`-byte buffers (default 4096; `Tpm<_, 2048>` is enough for
//! every command here, checked against swtpm). Command frames are built one of two ways:
//! - through tpm2-protocol's owned command structs and `tpm_marshal_command` (Startup,
//!   SelfTest, GetCapability, GetRandom, PCR_Read, ReadPublic, NV_ReadPublic, NV_Read,
//!   PolicySecret, Quote, Certify, EvictControl, FlushContext: at most ~1.4 KiB of stack);
//! - with this crate's writer, then checked by tpm2-protocol's zero-copy `TpmCommand` view
//!   (CreatePrimary, Create, Load, ActivateCredential, PCR_Extend, StartAuthSession), because
//!   the owned-struct path costs too much stack for small MCUs: measured on thumbv7em
//!   (opt-level "z", LTO), building TPM2_Load that way took a 15 KiB frame plus 4.5 KiB in
//!   `Tpm2bPublic::unmarshal`; CreatePrimary/Create 5.6 KiB (+4.5 and 3 KiB in callees);
//!   ActivateCredential, PCR_Extend and StartAuthSession 4–4.5 KiB.
//!
//! Responses are checked by tpm2-protocol (`TpmResponse::cast` + `validate`) and decoded with
//! this crate's cursor, which keeps exact byte ranges (owned response structs are 1.2–2.5 KiB
//! and re-marshalling them would not guarantee the bytes a verifier checks). Returned values
//! are fixed-size: a [`CreatedObject`] is about 1.8 KiB, an [`Attestation`] 1.5 KiB.

//! # Example: attestation-key enrolment and a quote
//! ```
//! use vouch_tpm::{AkKind, Auth, CommandResult, EkKind, PcrBank, Startup, StartupType, Tpm,
//!     Transport, ALG_SHA256};
//!
//! fn enrol<T: Transport>(
//!     tpm: &mut Tpm<T>,
//!     cert: &mut [u8],
//!     credential: (&[u8], &[u8]),
//!     nonce: &[u8],
//! ) -> CommandResult<(), T> {
//!     // Startup may already have been done by earlier firmware.
//!     let _: Startup = tpm.startup(StartupType::Clear)?;
//!     // The EK certificate, and the EK itself (its public key matches the certificate's).
//!     let cert_len = tpm.read_ek_certificate(EkKind::Rsa2048, cert)?;
//!     let ek = tpm.create_ek(EkKind::Rsa2048)?;
//!     let _modulus = ek.public.rsa_modulus();
//!     // An AK under the EK; the EK's policy session is handled internally.
//!     let ak = tpm.create_ak(ek.handle, AkKind::EccP256)?;
//!     let ak = tpm.load(ek.handle, Auth::EkPolicy, &ak)?;
//!     // Prove the AK and EK are on the same TPM.
//!     let secret = tpm.activate_credential(ak.handle, ek.handle, credential.0, credential.1)?;
//!     // Measure, then quote.
//!     tpm.pcr_extend(16, &[(ALG_SHA256, &[0u8; 32])])?;
//!     let quote = tpm.quote(ak.handle, nonce, &[PcrBank { alg: ALG_SHA256, pcrs: 1 << 16 }])?;
//!     let (_attest, _sig) = (quote.attest.as_slice(), quote.signature.as_slice());
//!     tpm.flush_context(ak.handle)?;
//!     tpm.flush_context(ek.handle)?;
//!     let _ = (cert_len, secret);
//!     Ok(())
//! }
//! ```
//! On a board: `Tpm::<_>::new(Tis::new(SpiTransport::new(spi_bus, cs_pin), clock))`, call
//! `init()` on the [`Tis`] (via [`Tpm::transport_mut`]) once, then the commands above.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

mod command;
mod crc;
mod error;
mod i2c;
mod regs;
pub mod response;
mod spi;
mod tis;
mod types;
mod wire;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests_bus;
#[cfg(test)]
mod tests_cmd;

pub use command::{
    AK_ATTRIBUTES, AK_ATTRIBUTES_V1, AkKind, Auth, CommandError, CommandResult, ECDH_ATTRIBUTES,
    EK_ATTRIBUTES, EK_AUTH_POLICY, EkKind, MAX_EK_CERTIFICATE, PT_NV_BUFFER_MAX, PolicySession,
    RETRY_BACKOFF_FIRST_US, RETRY_BACKOFF_LAST_US, RH_ENDORSEMENT, RH_NULL, RH_OWNER, RH_PLATFORM,
    RS_PW, Startup, StartupType, Tpm,
};
pub use crc::crc16_kermit;
pub use error::{Error, ProtocolError, TimeoutKind, UsageError};
pub use i2c::{
    I2C_DEFAULT_ADDRESS, I2C_DEFAULT_GUARD_US, I2C_MAX_TRANSFER, I2C_NACK_RETRIES, I2cTransport,
};
pub use regs::{Register, RegisterAccess};
pub use response::{ResponseCode, ResponseError};
pub use spi::{SPI_MAX_FRAME, SPI_WAIT_STATE_RETRIES, SpiError, SpiTransport};
pub use tis::{Duration, MAX_FRAME, RESPONSE_POLL_MAX_US, SEND_RETRIES, Timeouts, Tis};
pub use types::*;
pub use wire::{Buf, Malformed, MalformedKind};

/// Moves one marshalled TPM command to the TPM and its response back.
///
/// A TPM response code is not an error at this level: any complete response frame is `Ok`.
pub trait Transport {
    /// A failure to deliver the command or receive the response.
    type Error: core::fmt::Debug;

    /// Sends `command` (a complete TPM command frame) and writes the complete response frame
    /// into `response`, returning its length.
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error>;

    /// Waits `us` microseconds before a command is sent again after TPM_RC_RETRY or
    /// TPM_RC_TESTING (the TIS core waits on its clock). The default does not wait: a software
    /// TPM behind a socket has nothing to wait for.
    fn back_off(&mut self, us: u32) {
        let _ = us;
    }
}

/// Monotonic time and busy-waiting, supplied by the board.
pub trait Clock {
    /// Microseconds since an arbitrary fixed point; never goes backwards.
    fn now_us(&mut self) -> u64;
    /// Waits at least `us` microseconds.
    fn delay_us(&mut self, us: u32);
}

/// Feeds `bytes` to every response parser and discards the results. For fuzzing and property
/// tests: it must never panic, whatever the bytes.
pub fn fuzz_all_parsers(bytes: &[u8]) {
    use response::*;
    let _ = envelope(bytes, 0x17B, 0);
    let _ = envelope(bytes, 0x131, 1);
    let _ = parse_empty(bytes, 0x144);
    let _ = parse_get_random(bytes);
    let _ = parse_tpm_property(bytes, PT_NV_BUFFER_MAX);
    let _ = parse_pcr_banks(bytes);
    let mut handles = [0u32; 8];
    let _ = parse_handles(bytes, &mut handles);
    let _ = parse_pcr_read(bytes);
    let _ = parse_create_primary(bytes);
    let _ = parse_create(bytes);
    let _ = parse_load(bytes);
    let _ = parse_read_public(bytes);
    let _ = parse_nv_read_public(bytes);
    let _ = parse_nv_read(bytes);
    let _ = parse_start_auth_session(bytes);
    let _ = parse_policy_secret(bytes);
    let _ = parse_activate_credential(bytes);
    let _ = parse_quote(bytes);
    let _ = parse_certify(bytes);
    let _ = parse_ecdh_zgen(bytes);
    let _ = parse_tpm2_tools_credential(bytes);
    if let Ok(p) = Public::from_tpm2b(bytes) {
        let _ = (p.parsed(), p.rsa_modulus(), p.ecc_point());
    }
    // Parameter-area decoders behind a valid envelope.
    let mut frame = [0u8; 4096];
    let len = bytes.len().min(frame.len() - 10);
    if let (Some(dst), Some(src), Ok(size)) = (
        frame.get_mut(10..10 + len),
        bytes.get(..len),
        u32::try_from(len + 10),
    ) {
        dst.copy_from_slice(src);
        let [s0, s1, s2, s3] = size.to_be_bytes();
        let header = [0x80, 0x01, s0, s1, s2, s3, 0, 0, 0, 0];
        if let Some(h) = frame.get_mut(..10) {
            h.copy_from_slice(&header);
        }
        let f = frame.get(..len + 10).unwrap_or_default();
        let _ = parse_get_random(f);
        let _ = parse_pcr_read(f);
        let _ = parse_pcr_banks(f);
        let _ = parse_read_public(f);
        let _ = parse_quote(f);
        let _ = parse_create(f);
        let _ = parse_nv_read_public(f);
        let _ = parse_create_primary(f);
    }
}
