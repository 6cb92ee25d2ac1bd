//! The TCG I2C transport (PTP §7): register address byte, LOC_SEL for the locality, guard
//! times, NACK retries and the TPM_DATA_CSUM checksum.
//!
//! A register read is a write of the register address, then a read (two transactions, as
//! Linux does). A register write is one write transaction `[reg, data...]` ending in STOP:
//! TPMs (and QEMU's model) only act on a write at STOP.
//!
//! Guard time: 250 µs after every transfer until [`Tis::init`](crate::Tis::init) has read
//! TPM_I2C_INTERFACE_CAPABILITY; then the advertised guard time after every transfer if any of
//! its guard flags is set (simpler than per-transition guards, never shorter), else none. After
//! a NACK the transport waits 250 µs and retries, up to [`I2C_NACK_RETRIES`] tries. The same
//! `init` enables TPM_DATA_CSUM and reads it back; when it sticks, the TIS core compares the
//! CRC-16/KERMIT of every command and response with TPM_DATA_CSUM (big-endian).

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c};

use crate::error::{Error, ProtocolError, TimeoutKind, UsageError};
use crate::regs::{Register, RegisterAccess, Sealed};

/// The TCG default 7-bit address.
pub const I2C_DEFAULT_ADDRESS: u8 = 0x2E;
/// The longest single register transfer.
pub const I2C_MAX_TRANSFER: usize = 64;
/// Tries per transfer while the TPM NACKs (it NACKs while waking, and Infineon and Nuvoton
/// parts while busy): Linux's `TPM_RETRY` (50) in `tpm_tis_i2c_retry_transfer_until_ack`,
/// tpm2-tss's `TCTI_I2C_HELPER_RETRY` (50). With the 250 µs pause that is ~12.5 ms.
pub const I2C_NACK_RETRIES: usize = 50;
/// The guard time used until I2C_INTERFACE_CAPABILITY has been read, and after a NACK (µs).
pub const I2C_DEFAULT_GUARD_US: u32 = 250;

const LOC_SEL: u8 = 0x00;
const CSUM_ENABLE: u8 = 0x40;
const CSUM: u8 = 0x44;
/// Guard-time flags of I2C_INTERFACE_CAPABILITY (read-read, read-write, write-read,
/// write-write).
const GUARD_FLAGS: u32 = 0x0010_0000 | 0x0008_0000 | 0x0004_0000 | 0x0002_0000;
const CAPABILITY_MBZ: u32 = 0x8000_0000;

/// TIS registers over the TCG I2C interface.
#[derive(Debug)]
pub struct I2cTransport<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
    guard_us: u32,
    locality: Option<u8>,
    want_checksum: bool,
    checksum: bool,
}

impl<I2C: I2c, D: DelayNs> I2cTransport<I2C, D> {
    /// Takes the bus and a delay source; address 0x2E, checksums on where supported. No I/O.
    pub fn new(i2c: I2C, delay: D) -> Self {
        Self {
            i2c,
            delay,
            address: I2C_DEFAULT_ADDRESS,
            guard_us: I2C_DEFAULT_GUARD_US,
            locality: None,
            want_checksum: true,
            checksum: false,
        }
    }

    /// Uses another 7-bit address.
    #[must_use]
    pub fn with_address(mut self, address: u8) -> Self {
        self.address = address;
        self
    }

    /// Does not enable or check TPM_DATA_CSUM.
    #[must_use]
    pub fn without_checksum(mut self) -> Self {
        self.want_checksum = false;
        self
    }

    /// Whether response and command checksums are verified (known after `init`).
    #[must_use]
    pub fn checksum_enabled(&self) -> bool {
        self.checksum
    }

    /// The guard time applied after each transfer, in µs.
    #[must_use]
    pub fn guard_time_us(&self) -> u32 {
        self.guard_us
    }

    /// Gives back the bus and the delay source.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }

    /// The I2C register address of `reg`.
    #[must_use]
    pub fn address_of(reg: Register) -> u8 {
        match reg {
            Register::Access => 0x04,
            Register::Sts => 0x18,
            Register::DataFifo => 0x24,
            Register::InterfaceCapability => 0x30,
            Register::DidVid => 0x48,
            Register::Rid => 0x4C,
        }
    }

    /// Runs one transfer, retrying while the TPM NACKs; applies the guard time after it.
    fn retry(
        &mut self,
        mut op: impl FnMut(&mut I2C, u8) -> Result<(), I2C::Error>,
    ) -> Result<(), Error<I2C::Error>> {
        for _ in 0..I2C_NACK_RETRIES {
            match op(&mut self.i2c, self.address) {
                Ok(()) => {
                    if self.guard_us > 0 {
                        self.delay.delay_us(self.guard_us);
                    }
                    return Ok(());
                }
                Err(e) if matches!(e.kind(), ErrorKind::NoAcknowledge(_)) => {
                    self.delay.delay_us(I2C_DEFAULT_GUARD_US);
                }
                Err(e) => return Err(Error::Bus(e)),
            }
        }
        Err(Error::Timeout(TimeoutKind::I2cNack))
    }

    fn write_raw(&mut self, reg: u8, data: &[u8]) -> Result<(), Error<I2C::Error>> {
        let mut frame = [0u8; I2C_MAX_TRANSFER + 1];
        let len = data.len();
        frame[0] = reg;
        let (_, body) = frame.split_at_mut(1);
        body.get_mut(..len)
            .ok_or(Error::Usage(UsageError::TransferTooLong(len)))?
            .copy_from_slice(data);
        let bytes = frame.get(..=len).unwrap_or_default();
        self.retry(|i2c, addr| i2c.write(addr, bytes))
    }

    fn read_raw(&mut self, reg: u8, buf: &mut [u8]) -> Result<(), Error<I2C::Error>> {
        if buf.len() > I2C_MAX_TRANSFER {
            return Err(Error::Usage(UsageError::TransferTooLong(buf.len())));
        }
        self.retry(|i2c, addr| i2c.write(addr, &[reg]))?;
        self.retry(|i2c, addr| i2c.read(addr, buf))
    }

    fn select(&mut self, locality: u8) -> Result<(), Error<I2C::Error>> {
        if locality > 4 {
            return Err(Error::Usage(UsageError::Locality(locality)));
        }
        if self.locality != Some(locality) {
            self.write_raw(LOC_SEL, &[locality])?;
            self.locality = Some(locality);
        }
        Ok(())
    }
}

impl<I2C: I2c, D: DelayNs> Sealed for I2cTransport<I2C, D> {}

impl<I2C: I2c, D: DelayNs> RegisterAccess for I2cTransport<I2C, D> {
    type BusError = I2C::Error;

    fn max_transfer(&self) -> usize {
        I2C_MAX_TRANSFER
    }

    fn interface_capability_mbz(&self) -> u32 {
        CAPABILITY_MBZ
    }

    fn read(
        &mut self,
        locality: u8,
        reg: Register,
        buf: &mut [u8],
    ) -> Result<(), Error<I2C::Error>> {
        self.select(locality)?;
        self.read_raw(Self::address_of(reg), buf)
    }

    fn write(&mut self, locality: u8, reg: Register, data: &[u8]) -> Result<(), Error<I2C::Error>> {
        self.select(locality)?;
        self.write_raw(Self::address_of(reg), data)
    }

    /// Reads I2C_INTERFACE_CAPABILITY for the guard time, then enables TPM_DATA_CSUM and reads
    /// TPM_DATA_CSUM_ENABLE back to learn whether the TPM supports it.
    fn init(&mut self, locality: u8) -> Result<(), Error<I2C::Error>> {
        self.select(locality)?;
        let mut cap = [0u8; 4];
        self.read_raw(Self::address_of(Register::InterfaceCapability), &mut cap)?;
        let cap = u32::from_le_bytes(cap);
        if cap & CAPABILITY_MBZ != 0 {
            return Err(Error::Protocol(ProtocolError::MustBeZero {
                register: Register::InterfaceCapability,
                value: cap,
            }));
        }
        self.guard_us = if cap & GUARD_FLAGS != 0 {
            (cap & 0x0001_FE00) >> 9
        } else {
            0
        };
        self.checksum = false;
        if self.want_checksum {
            self.write_raw(CSUM_ENABLE, &[1])?;
            let mut en = [0u8; 1];
            self.read_raw(CSUM_ENABLE, &mut en)?;
            self.checksum = en[0] & 1 == 1;
        }
        Ok(())
    }

    fn fifo_checksum(&mut self, locality: u8) -> Result<Option<u16>, Error<I2C::Error>> {
        if !self.checksum {
            return Ok(None);
        }
        self.select(locality)?;
        let mut b = [0u8; 2];
        self.read_raw(CSUM, &mut b)?;
        Ok(Some(u16::from_be_bytes(b)))
    }
}
