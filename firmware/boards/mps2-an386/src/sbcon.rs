//! An embedded-hal 1.0 I2C master, bit-banged on the ARM SBCon two-wire controller.
//!
//! SBCon has one register pair: writing a 1 bit to `SET` (+0x00) releases a line (it floats
//! high), writing it to `CLEAR` (+0x04) drives the line low; reading `SET` gives the levels, bit 0
//! the SCL the master drives and bit 1 SDA as seen on the bus. QEMU's model updates SDA only when
//! the register is written, so SDA is sampled right after raising SCL. Under QEMU no delays are
//! needed between edges; a real SBCon would add a quarter-period delay per edge.

use core::ptr::{read_volatile, write_volatile};
use embedded_hal::i2c::{self, ErrorKind, NoAcknowledgeSource, Operation, SevenBitAddress};

const SCL: u32 = 1 << 0;
const SDA: u32 = 1 << 1;

/// The SBCon controller at `base`, as an I2C master.
#[derive(Debug)]
pub struct SbconI2c {
    base: usize,
}

/// What can go wrong on a bit-banged bus: only a missing acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack(NoAcknowledgeSource);

impl i2c::Error for Nack {
    fn kind(&self) -> ErrorKind {
        ErrorKind::NoAcknowledge(self.0)
    }
}

impl SbconI2c {
    /// Takes the controller at `base` and releases both lines.
    ///
    /// # Safety
    /// `base` must be the address of an SBCon controller that nothing else drives.
    pub unsafe fn new(base: usize) -> Self {
        let bus = Self { base };
        bus.release(SCL | SDA);
        bus
    }

    fn release(&self, lines: u32) {
        // SAFETY: `new`'s contract: `base` is an SBCon controller owned by `self`.
        unsafe { write_volatile(self.base as *mut u32, lines) }
    }

    fn drive_low(&self, lines: u32) {
        // SAFETY: as in `release`; CLEAR is the second register.
        unsafe { write_volatile((self.base + 4) as *mut u32, lines) }
    }

    fn sda(&self) -> bool {
        // SAFETY: as in `release`; reading SET returns the line levels.
        unsafe { read_volatile(self.base as *const u32) & SDA != 0 }
    }

    fn start(&self) {
        self.release(SDA);
        self.release(SCL);
        self.drive_low(SDA);
        self.drive_low(SCL);
    }

    fn stop(&self) {
        self.drive_low(SDA);
        self.release(SCL);
        self.release(SDA);
    }

    fn write_bit(&self, bit: bool) {
        if bit {
            self.release(SDA);
        } else {
            self.drive_low(SDA);
        }
        self.release(SCL);
        self.drive_low(SCL);
    }

    fn read_bit(&self) -> bool {
        self.release(SDA);
        self.release(SCL);
        let bit = self.sda();
        self.drive_low(SCL);
        bit
    }

    /// Sends one byte; true when the target acknowledged it.
    fn write_byte(&self, byte: u8) -> bool {
        for i in (0..8).rev() {
            self.write_bit(byte & (1 << i) != 0);
        }
        !self.read_bit()
    }

    fn read_byte(&self, ack: bool) -> u8 {
        let mut byte = 0u8;
        for _ in 0..8 {
            byte = (byte << 1) | u8::from(self.read_bit());
        }
        self.write_bit(!ack);
        byte
    }

    fn run(&self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), Nack> {
        let mut previous_was_read: Option<bool> = None;
        for index in 0..operations.len() {
            // Adjacent reads form one transfer: the last byte of a read is ACKed when another
            // read follows and NACKed to end the transfer otherwise.
            let next_is_read = matches!(operations.get(index + 1), Some(Operation::Read(_)));
            let Some(operation) = operations.get_mut(index) else {
                break;
            };
            let is_read = matches!(operation, Operation::Read(_));
            // A START (or repeated START) and the address whenever the direction changes.
            if previous_was_read != Some(is_read) {
                self.start();
                if !self.write_byte((address << 1) | u8::from(is_read)) {
                    return Err(Nack(NoAcknowledgeSource::Address));
                }
            }
            previous_was_read = Some(is_read);
            match operation {
                Operation::Write(bytes) => {
                    for &byte in bytes.iter() {
                        if !self.write_byte(byte) {
                            return Err(Nack(NoAcknowledgeSource::Data));
                        }
                    }
                }
                Operation::Read(buffer) => {
                    let len = buffer.len();
                    for (i, slot) in buffer.iter_mut().enumerate() {
                        let last = i + 1 == len;
                        *slot = self.read_byte(!last || next_is_read);
                    }
                }
            }
        }
        Ok(())
    }
}

impl i2c::ErrorType for SbconI2c {
    type Error = Nack;
}

impl i2c::I2c<SevenBitAddress> for SbconI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let result = self.run(address, operations);
        self.stop();
        result
    }
}
