//! The TCG SPI transport (PTP §6.4): 4-byte headers, at most 64-byte frames, wait states.
//!
//! Why it owns an [`SpiBus`] and a chip-select [`OutputPin`] instead of an `SpiDevice`: the TPM
//! may insert wait states, signalled in the MISO byte clocked during the 4th header byte. The
//! host must then clock single bytes, with chip select held, until one has bit 0 set.
//! embedded-hal's `SpiDevice::transaction` takes a fixed list of operations and cannot branch
//! on a byte read mid-transaction, so this transport drives chip select itself (as Linux's
//! tpm_tis_spi does). The bus must not be shared with other devices while it is in use.
//! Chip select is released on every path, including errors.

use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiBus;

use crate::error::{Error, TimeoutKind, UsageError};
use crate::regs::{Register, RegisterAccess, Sealed};

/// The longest SPI frame payload (PTP: 64 bytes).
pub const SPI_MAX_FRAME: usize = 64;
/// Wait-state bytes clocked before giving up.
pub const SPI_WAIT_STATE_RETRIES: usize = 100;
const BASE_ADDRESS: u32 = 0x00D4_0000;

/// A failure of the SPI bus or of the chip-select pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpiError<S, P> {
    /// The SPI bus failed.
    Spi(S),
    /// Driving chip select failed.
    ChipSelect(P),
}

/// TIS registers over the TCG SPI protocol.
#[derive(Debug)]
pub struct SpiTransport<SPI, CS> {
    spi: SPI,
    cs: CS,
}

impl<SPI: SpiBus, CS: OutputPin> SpiTransport<SPI, CS> {
    /// Takes the bus (SPI mode 0, at most the TPM's clock) and the chip-select pin, which
    /// should be high (inactive). No I/O.
    pub fn new(spi: SPI, cs: CS) -> Self {
        Self { spi, cs }
    }

    /// Gives back the bus and the chip-select pin.
    pub fn release(self) -> (SPI, CS) {
        (self.spi, self.cs)
    }

    /// The address of `reg` of `locality` in the TPM's SPI address space.
    #[must_use]
    pub fn address(locality: u8, reg: Register) -> u32 {
        let offset = match reg {
            Register::Access => 0x00,
            Register::InterfaceCapability => 0x14,
            Register::Sts => 0x18,
            Register::DataFifo => 0x24,
            Register::DidVid => 0xF00,
            Register::Rid => 0xF04,
        };
        BASE_ADDRESS + 0x1000 * u32::from(locality) + offset
    }

    fn frame(&mut self, locality: u8, reg: Register, data: Data<'_>) -> FrameResult<SPI, CS> {
        if locality > 4 {
            return Err(Error::Usage(UsageError::Locality(locality)));
        }
        let len = data.len();
        let len_code = match len.checked_sub(1).map(u8::try_from) {
            Some(Ok(code)) if len <= SPI_MAX_FRAME => code,
            _ => return Err(Error::Usage(UsageError::TransferTooLong(len))),
        };
        let read_bit = if matches!(data, Data::Read(_)) {
            0x80
        } else {
            0x00
        };
        let [_, a2, a1, a0] = Self::address(locality, reg).to_be_bytes();
        let header = [read_bit | len_code, a2, a1, a0];

        if let Err(e) = self.cs.set_low() {
            let _ = self.cs.set_high();
            return Err(Error::Bus(SpiError::ChipSelect(e)));
        }
        let result = self.frame_selected(header, data);
        let flushed = self.spi.flush();
        let released = self.cs.set_high();
        result?;
        flushed.map_err(|e| Error::Bus(SpiError::Spi(e)))?;
        released.map_err(|e| Error::Bus(SpiError::ChipSelect(e)))
    }

    /// The part of a frame with chip select asserted.
    fn frame_selected(&mut self, mut header: [u8; 4], data: Data<'_>) -> FrameResult<SPI, CS> {
        let bus = |e| Error::Bus(SpiError::Spi(e));
        self.spi.transfer_in_place(&mut header).map_err(bus)?;
        let [.., flow] = header;
        if flow & 1 == 0 {
            let mut ready = false;
            for _ in 0..SPI_WAIT_STATE_RETRIES {
                let mut b = [0u8; 1];
                self.spi.transfer_in_place(&mut b).map_err(bus)?;
                if b[0] & 1 == 1 {
                    ready = true;
                    break;
                }
            }
            if !ready {
                return Err(Error::Timeout(TimeoutKind::SpiWaitState));
            }
        }
        match data {
            Data::Read(buf) => self.spi.read(buf).map_err(bus),
            Data::Write(bytes) => self.spi.write(bytes).map_err(bus),
        }
    }
}

type FrameResult<SPI, CS> = Result<
    (),
    Error<
        SpiError<
            <SPI as embedded_hal::spi::ErrorType>::Error,
            <CS as embedded_hal::digital::ErrorType>::Error,
        >,
    >,
>;

enum Data<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::Read(b) => b.len(),
            Data::Write(b) => b.len(),
        }
    }
}

impl<SPI: SpiBus, CS: OutputPin> Sealed for SpiTransport<SPI, CS> {}

impl<SPI: SpiBus, CS: OutputPin> RegisterAccess for SpiTransport<SPI, CS> {
    type BusError = SpiError<SPI::Error, CS::Error>;

    fn max_transfer(&self) -> usize {
        SPI_MAX_FRAME
    }

    fn interface_capability_mbz(&self) -> u32 {
        0x0FFF_F000
    }

    fn read(
        &mut self,
        locality: u8,
        reg: Register,
        buf: &mut [u8],
    ) -> Result<(), Error<Self::BusError>> {
        self.frame(locality, reg, Data::Read(buf))
    }

    fn write(
        &mut self,
        locality: u8,
        reg: Register,
        data: &[u8],
    ) -> Result<(), Error<Self::BusError>> {
        self.frame(locality, reg, Data::Write(data))
    }
}
