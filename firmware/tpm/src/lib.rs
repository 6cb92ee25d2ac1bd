//! A `no_std`, allocation-free TPM 2.0 client.
//!
//! Layers, bottom up:
//! - [`RegisterAccess`]: read and write one TIS register of one locality. Implemented by the SPI
//!   and I2C transports; the TIS core never knows which bus it is on.
//! - The TIS/FIFO core: drives the commandReady / Expect / dataAvail handshake over a
//!   [`RegisterAccess`] and implements [`Transport`].
//! - The command layer: typed TPM 2.0 commands over any [`Transport`] (the TIS core on a bus, or
//!   a socket to a software TPM in tests).
#![cfg_attr(not(test), no_std)]

/// Moves one marshalled TPM command to the TPM and its response back.
///
/// A TPM response code is not an error at this level: any complete response frame is `Ok`.
pub trait Transport {
    /// A failure to deliver the command or receive the response.
    type Error: core::fmt::Debug;

    /// Sends `command` (a complete TPM command frame) and writes the complete response frame
    /// into `response`, returning its length.
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Monotonic time and busy-waiting, supplied by the board.
pub trait Clock {
    /// Microseconds since an arbitrary fixed point; never goes backwards.
    fn now_us(&mut self) -> u64;
    /// Waits at least `us` microseconds.
    fn delay_us(&mut self, us: u32);
}
