//! Vouch's attestation agent: `no_std`, no heap, board-agnostic.
//!
//! - [`measure`]: what is measured at boot, identically on the board and in the operator's
//!   tools.
//! - [`eventlog`]: the TCG crypto-agile event log in a fixed buffer.
//! - [`measured_boot`]: extends every active PCR bank and logs each event.
//! - [`ek`]: which EK (RSA or ECC) identifies the TPM.
//! - [`session`]: one session with the verifier over any `embedded_io` byte link.
//!
//! The TPM comes in as a [`vouch_tpm::Tpm`] over any transport, the link as
//! `embedded_io::{Read, Write}`: boards supply both, and a hosted agent uses the same code with
//! a socket to swtpm and a TCP stream.
#![cfg_attr(not(test), no_std)]

pub mod board;
#[cfg(feature = "key-channel")]
pub mod channel;
#[cfg(not(feature = "key-channel"))]
#[path = "channel_off.rs"]
pub mod channel;
pub mod ek;
pub mod eventlog;
pub mod log;
pub mod measure;
pub mod session;

use eventlog::{EventLog, LogFull};
use measure::{BootImage, MAX_BANKS, boot_measurements, digest_size};
use vouch_tpm::{CommandError, Tpm, Transport};

/// Why measured boot stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootError<E> {
    /// A TPM command failed.
    Tpm(CommandError<E>),
    /// The event log buffer is full; nothing more was extended.
    LogFull,
    /// The TPM has no PCR bank with a hash this agent can compute.
    NoUsableBank,
    /// PCR 0 or 1 (SHA-256) is not at its reset value (all zeros): the TPM was not reset
    /// since an earlier boot measured into it ("already started"), so measuring again would
    /// extend on top and every quote would fail. Reset or power-cycle the TPM.
    AlreadyMeasured,
}

/// Extends each boot measurement into every active PCR bank, logging it first, and returns
/// the event log. Call once after TPM2_Startup(CLEAR), before anything else runs.
///
/// # Errors
/// See [`BootError`]; the TPM and the log agree up to the failing measurement.
pub fn measured_boot<T: Transport, const N: usize, const M: usize>(
    tpm: &mut Tpm<T, N>,
    boot: &BootImage<'_>,
) -> Result<EventLog<M>, BootError<T::Error>> {
    let mut log = EventLog::empty();
    measured_boot_into(tpm, boot, &mut log)?;
    Ok(log)
}

/// [`measured_boot`] into a log the caller holds (started afresh), so that the log is never
/// moved: on a small MCU each move of a kilobyte-sized value is one more copy on the stack.
///
/// # Errors
/// See [`BootError`]; the TPM and the log agree up to the failing measurement.
#[inline(never)]
pub fn measured_boot_into<T: Transport, const N: usize, const M: usize>(
    tpm: &mut Tpm<T, N>,
    boot: &BootImage<'_>,
    log: &mut EventLog<M>,
) -> Result<(), BootError<T::Error>> {
    // PCRs 0 and 1 must be at their reset value: the TPM was not started by an earlier boot
    // that measured into it.
    let boot_pcrs = [vouch_tpm::PcrBank {
        alg: vouch_tpm::ALG_SHA256,
        pcrs: 0b11,
    }];
    let values = tpm.pcr_read(&boot_pcrs).map_err(BootError::Tpm)?;
    if values
        .digests()
        .iter()
        .any(|d| d.as_slice().iter().any(|&b| b != 0))
    {
        return Err(BootError::AlreadyMeasured);
    }
    let active = tpm.pcr_banks().map_err(BootError::Tpm)?;
    let mut algs = [0u16; MAX_BANKS];
    let mut sizes = [(0u16, 0u16); MAX_BANKS];
    let mut count = 0;
    for bank in active.active() {
        let Some(size) = digest_size(bank.alg).and_then(|s| u16::try_from(s).ok()) else {
            continue;
        };
        if let (Some(a), Some(s)) = (algs.get_mut(count), sizes.get_mut(count)) {
            *a = bank.alg;
            *s = (bank.alg, size);
            count += 1;
        }
    }
    if count == 0 {
        return Err(BootError::NoUsableBank);
    }
    let algs = algs.get(..count).unwrap_or_default();
    let banks = sizes.get(..count).unwrap_or_default();
    log.start(banks).map_err(|LogFull| BootError::LogFull)?;
    for m in boot_measurements(boot, algs) {
        log.record(m.pcr, m.event_type, &m.digests, m.event_data())
            .map_err(|LogFull| BootError::LogFull)?;
        let mut digests = [(0u16, &[][..]); MAX_BANKS];
        for (slot, d) in digests.iter_mut().zip(m.digests.iter()) {
            *slot = d;
        }
        tpm.pcr_extend(m.pcr, digests.get(..m.digests.len()).unwrap_or_default())
            .map_err(BootError::Tpm)?;
    }
    Ok(())
}
