//! Errors of the bus and TIS layers.
//!
//! Each variant says who is at fault: the bus driver ([`Error::Bus`]), the TPM or a glitching
//! bus breaking the interface protocol ([`Error::Protocol`]), the TPM not answering in time
//! ([`Error::Timeout`]), or the caller ([`Error::Usage`]).

use crate::regs::Register;

/// An error of a [`RegisterAccess`](crate::RegisterAccess) transport or of the TIS core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// The bus driver (HAL) failed; fault: the bus, its wiring or its driver.
    Bus(E),
    /// The TPM broke the TIS/FIFO protocol (or the bus corrupted what it said); fault: the TPM
    /// or signal integrity.
    Protocol(ProtocolError),
    /// The TPM did not reach the awaited state within its time or retry budget; fault: the TPM
    /// (busy, hung or absent).
    Timeout(TimeoutKind),
    /// The caller asked for something this layer cannot do; fault: the caller.
    Usage(UsageError),
}

/// How the TPM broke the interface protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A register read had bits set that must read as zero: a bus glitch or a floating bus.
    MustBeZero {
        /// The register read.
        register: Register,
        /// The value read.
        value: u32,
    },
    /// The TPM stopped expecting command bytes before the whole command was written.
    ExpectCleared {
        /// Command bytes written when Expect was seen clear.
        written: usize,
    },
    /// The TPM still expected bytes after the whole command was written.
    ExpectStillSet,
    /// The response header's size field is below 10 or above the response buffer.
    ResponseSize {
        /// The size field read.
        size: u32,
    },
    /// The TPM still had data available after the response size announced in its header.
    ResponseTooLong,
    /// The transfer checksum did not match the bytes transferred (I2C only).
    Checksum {
        /// The CRC-16 computed over the transferred bytes.
        computed: u16,
        /// The checksum the TPM reported.
        reported: u16,
    },
    /// DID_VID read as all zeros or all ones: no TPM answers.
    NoDevice {
        /// The DID_VID value read.
        did_vid: u32,
    },
}

/// What the TPM failed to do in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The requested locality did not become active (TIMEOUT_A).
    Locality,
    /// STS.commandReady did not come up (TIMEOUT_B).
    CommandReady,
    /// STS.stsValid did not come up, or burstCount stayed 0 (TIMEOUT_C / TIMEOUT_D).
    Status,
    /// The response (STS.dataAvail) did not come within the command's duration.
    Response,
    /// SPI: the TPM kept inserting wait states beyond the retry budget.
    SpiWaitState,
    /// I2C: the TPM kept NACKing beyond the retry budget.
    I2cNack,
}

/// A request this layer refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// The command is shorter than a TPM header or longer than the TPM accepts.
    CommandSize(usize),
    /// The locality is above 4.
    Locality(u8),
    /// A single register transfer was longer than the transport allows.
    TransferTooLong(usize),
}
