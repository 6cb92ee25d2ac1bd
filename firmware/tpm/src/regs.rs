//! The register-access layer: one small trait that the SPI and I2C transports implement.
//!
//! The TIS core names registers logically ([`Register`]); each transport maps them to its own
//! addresses (e.g. the interface capability is TPM_INTF_CAPABILITY 0x14 on SPI but
//! TPM_I2C_INTERFACE_CAPABILITY 0x30 on I2C) and selects the locality its own way (address
//! bits on SPI, the LOC_SEL register on I2C). The trait is sealed: the core relies on the
//! transports' framing guarantees.

use crate::error::Error;

/// A TIS register, named independently of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Register {
    /// TPM_ACCESS (1 byte): locality request and status.
    Access,
    /// TPM_STS (4 bytes, little-endian): status bits and burstCount.
    Sts,
    /// TPM_DATA_FIFO: command and response bytes.
    DataFifo,
    /// The interface capability register (TPM_INTF_CAPABILITY on SPI,
    /// TPM_I2C_INTERFACE_CAPABILITY on I2C; 4 bytes, little-endian).
    InterfaceCapability,
    /// TPM_DID_VID (4 bytes, little-endian): device and vendor id.
    DidVid,
    /// TPM_RID (1 byte): revision id.
    Rid,
}

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// Reads and writes the TIS registers of one locality over some bus.
///
/// Implemented by [`SpiTransport`](crate::SpiTransport) and [`I2cTransport`](crate::I2cTransport).
/// Every method is bounded: it returns an error rather than retrying forever.
pub trait RegisterAccess: Sealed {
    /// The bus driver's error.
    type BusError: core::fmt::Debug;

    /// The longest single register transfer the transport performs (e.g. 64 bytes on SPI).
    /// The TIS core never asks for more.
    fn max_transfer(&self) -> usize;

    /// Bits of the interface capability register that must read as zero on this bus.
    fn interface_capability_mbz(&self) -> u32;

    /// Reads `buf.len()` bytes (at most [`max_transfer`](Self::max_transfer)) from `reg` of
    /// `locality`.
    ///
    /// # Errors
    /// A bus failure, or a TPM that never answers (wait states, NACKs).
    fn read(
        &mut self,
        locality: u8,
        reg: Register,
        buf: &mut [u8],
    ) -> Result<(), Error<Self::BusError>>;

    /// Writes `data` (at most [`max_transfer`](Self::max_transfer) bytes) to `reg` of
    /// `locality`.
    ///
    /// # Errors
    /// A bus failure, or a TPM that never answers (wait states, NACKs).
    fn write(
        &mut self,
        locality: u8,
        reg: Register,
        data: &[u8],
    ) -> Result<(), Error<Self::BusError>>;

    /// Bus-specific set-up once the locality is active (I2C: guard times and checksums).
    ///
    /// # Errors
    /// A bus failure or a glitching register.
    fn init(&mut self, locality: u8) -> Result<(), Error<Self::BusError>> {
        let _ = locality;
        Ok(())
    }

    /// The transport's checksum over the FIFO bytes of the current command or response, if it
    /// has one (I2C TPM_DATA_CSUM). `None` if checksums are not in use.
    ///
    /// # Errors
    /// A bus failure.
    fn fifo_checksum(&mut self, locality: u8) -> Result<Option<u16>, Error<Self::BusError>> {
        let _ = locality;
        Ok(None)
    }
}
