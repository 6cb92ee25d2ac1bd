//! [`SpiTpm`] and [`SpiCs`]: a TPM on SPI, as an `embedded_hal::spi::SpiBus<u8>` plus its
//! chip-select `OutputPin`, backed by swtpm. QEMU has no SPI TPM, so this model is the only way
//! the SPI transport meets a real TPM 2.0 implementation.
//!
//! The protocol is the TCG SPI interface (PTP §6.4):
//! - A *frame* is every byte clocked between chip select going low and going high. It starts
//!   with a 4-byte header: byte 0 = bit 7 read (1) / write (0), bit 6 reserved (0),
//!   bits 0–5 = transfer length − 1 (1–64 bytes); bytes 1–3 = the 24-bit register address
//!   `0xD4_0000 + 0x1000 · locality + register`.
//! - Flow control: while the host clocks the 4th header byte the TPM drives MISO; bit 0 = 0
//!   means a wait state. The host then clocks single bytes, chip select held, until one has
//!   bit 0 = 1; the data phase starts with the next byte. The model inserts a seeded random
//!   number of wait states ([`SpiConfig::wait_probability`], 1..=[`SpiConfig::max_wait_states`]).
//! - Data phase: exactly `length` bytes; MISO carries the read data (MOSI is ignored), or MOSI
//!   carries the write data (MISO is 0). FIFO transfers (register 0x24–0x27) move `length`
//!   FIFO bytes; other registers read a snapshot of the register file taken at the first data
//!   byte, so one frame is one `TPM_STS` poll. A write takes effect when the frame ends.
//!
//! Registers per locality: `TPM_ACCESS` 0x00, `TPM_INT_ENABLE` 0x08 (0), `TPM_INTF_CAPABILITY`
//! 0x14 = 0x30000600 (interface version TIS 1.3 for TPM 2.0, 64-byte transfers, dynamic burst
//! count, no interrupts), `TPM_STS` 0x18–0x1B, `TPM_DATA_FIFO` 0x24, `TPM_DID_VID` 0xF00,
//! `TPM_RID` 0xF04; unimplemented addresses read 0xFF. The TIS behaviour behind them is the
//! shared [`Tis`] state machine.
//!
//! Driver bugs — a header not starting `0xD4`, a frame ended early, bytes clocked past the
//! data phase or with chip select high, chip select asserted twice — are recorded in
//! [`SpiTpm::errors`] (the test asserts it is empty); the bus calls themselves still succeed,
//! like a real bus would.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use embedded_hal::digital::OutputPin;
use embedded_hal::spi::{ErrorKind, ErrorType, SpiBus};

use crate::rng::Rng;
use crate::tis::{DID_VID, LOCALITIES, RID, Tis, TisConfig};

/// Register offsets within a locality's 4 KiB window.
pub mod reg {
    /// `TPM_ACCESS`.
    pub const ACCESS: u16 = 0x000;
    /// `TPM_INT_ENABLE`.
    pub const INT_ENABLE: u16 = 0x008;
    /// `TPM_INTF_CAPABILITY`.
    pub const INTF_CAPABILITY: u16 = 0x014;
    /// `TPM_STS`.
    pub const STS: u16 = 0x018;
    /// `TPM_DATA_FIFO`.
    pub const DATA_FIFO: u16 = 0x024;
    /// `TPM_DID_VID`.
    pub const DID_VID: u16 = 0xF00;
    /// `TPM_RID`.
    pub const RID: u16 = 0xF04;
}

/// `TPM_INTF_CAPABILITY` reported.
pub const INTF_CAPABILITY: u32 = 0x3000_0600;
/// The largest transfer of one frame.
pub const MAX_TRANSFER: usize = 64;

/// Tunables of the SPI model.
#[derive(Debug, Clone)]
pub struct SpiConfig {
    /// Probability that a frame gets wait states.
    pub wait_probability: f64,
    /// Most wait states in one frame.
    pub max_wait_states: u32,
    /// Seed of the wait-state draws.
    pub seed: u64,
    /// The TIS state machine's tunables.
    pub tis: TisConfig,
}

impl Default for SpiConfig {
    fn default() -> Self {
        Self {
            wait_probability: 0.0,
            max_wait_states: 3,
            seed: 1,
            tis: TisConfig::default(),
        }
    }
}

/// Counters a test can assert on.
#[derive(Debug, Clone, Default)]
pub struct SpiStats {
    /// Complete frames.
    pub frames: usize,
    /// Read frames.
    pub read_frames: usize,
    /// Write frames.
    pub write_frames: usize,
    /// Wait states inserted.
    pub wait_states: usize,
    /// Frames that had wait states.
    pub frames_with_waits: usize,
    /// Largest data phase seen.
    pub max_transfer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Chip select high.
    Idle,
    /// Header bytes collected so far.
    Header(usize),
    /// Wait states still to insert.
    Wait(u32),
    /// Data bytes done so far.
    Data(usize),
    /// The frame is broken; ignore bytes until chip select rises.
    Broken,
}

#[derive(Debug)]
struct Inner<T> {
    tis: Tis<T>,
    cfg: SpiConfig,
    rng: Rng,
    phase: Phase,
    header: [u8; 4],
    read: bool,
    len: usize,
    locality: usize,
    register: u16,
    snapshot: Vec<u8>,
    write_data: Vec<u8>,
    stats: SpiStats,
}

/// The bus half of the SPI TPM model; clones share one device.
#[derive(Debug)]
pub struct SpiTpm<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

/// The chip-select half of the SPI TPM model.
#[derive(Debug)]
pub struct SpiCs<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

impl<T> Clone for SpiTpm<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T: vouch_tpm::Transport> SpiTpm<T> {
    /// A TPM at reset forwarding commands to `backend`, and its chip-select pin.
    pub fn new(backend: T, cfg: SpiConfig) -> (Self, SpiCs<T>) {
        let inner = Rc::new(RefCell::new(Inner {
            tis: Tis::new(backend, cfg.tis.clone()),
            rng: Rng::new(cfg.seed),
            cfg,
            phase: Phase::Idle,
            header: [0; 4],
            read: false,
            len: 0,
            locality: 0,
            register: 0,
            snapshot: Vec::new(),
            write_data: Vec::new(),
            stats: SpiStats::default(),
        }));
        (
            Self {
                inner: inner.clone(),
            },
            SpiCs { inner },
        )
    }

    /// Bus-level counters.
    pub fn stats(&self) -> SpiStats {
        self.inner.borrow().stats.clone()
    }

    /// Runs `f` on the TIS state machine.
    pub fn with_tis<R>(&self, f: impl FnOnce(&mut Tis<T>) -> R) -> R {
        f(&mut self.inner.borrow_mut().tis)
    }

    /// Every protocol error recorded (TIS and bus level).
    pub fn errors(&self) -> Vec<String> {
        self.inner.borrow().tis.errors().to_vec()
    }

    /// A TPM reset on the register path ([`Tis::reset`]).
    pub fn reset_tpm(&self) {
        self.inner.borrow_mut().tis.reset();
    }
}

impl<T: vouch_tpm::Transport> Inner<T> {
    fn error(&mut self, message: String) {
        self.tis.record_error(message);
    }

    fn cs_low(&mut self) {
        if self.phase != Phase::Idle {
            self.error("chip select asserted while already asserted".to_owned());
        }
        self.phase = Phase::Header(0);
    }

    fn cs_high(&mut self) {
        match self.phase {
            Phase::Idle | Phase::Header(0) | Phase::Broken => {}
            Phase::Data(n) if n == self.len => {
                self.stats.frames += 1;
                if !self.read {
                    let data = std::mem::take(&mut self.write_data);
                    self.apply_write(&data);
                }
            }
            other => self.error(format!(
                "chip select raised mid-frame ({other:?}, header {:02x?})",
                self.header
            )),
        }
        self.phase = Phase::Idle;
    }

    fn register_byte(&mut self, offset: u16, sts: &mut Option<u32>) -> u8 {
        let byte = |v: u32, base: u16| v.to_le_bytes().get(usize::from(offset - base)).copied();
        let v = match offset {
            reg::ACCESS => Some(self.tis.read_access(self.locality)),
            0x008..=0x00B => Some(0),
            0x014..=0x017 => byte(INTF_CAPABILITY, reg::INTF_CAPABILITY),
            0x018..=0x01B => {
                let v = *sts.get_or_insert_with(|| self.tis.read_sts(self.locality));
                byte(v, reg::STS)
            }
            0xF00..=0xF03 => byte(DID_VID, reg::DID_VID),
            reg::RID => Some(RID),
            _ => None,
        };
        v.unwrap_or(0xFF)
    }

    fn is_fifo(&self) -> bool {
        (reg::DATA_FIFO..reg::DATA_FIFO + 4).contains(&self.register)
    }

    fn start_data(&mut self) {
        self.phase = Phase::Data(0);
        self.stats.max_transfer = self.stats.max_transfer.max(self.len);
        if self.read {
            self.stats.read_frames += 1;
            if !self.is_fifo() {
                let mut sts = None;
                let mut snap = Vec::with_capacity(self.len);
                for i in 0..self.len {
                    let off = self
                        .register
                        .wrapping_add(u16::try_from(i).unwrap_or(u16::MAX));
                    snap.push(self.register_byte(off, &mut sts));
                }
                self.snapshot = snap;
            }
        } else {
            self.stats.write_frames += 1;
            self.write_data.clear();
        }
    }

    fn apply_write(&mut self, data: &[u8]) {
        let Some(&first) = data.first() else { return };
        let loc = self.locality;
        if self.is_fifo() {
            for &b in data {
                self.tis.write_fifo(loc, b);
            }
            return;
        }
        match self.register {
            reg::ACCESS => self.tis.write_access(loc, first),
            reg::STS => self.tis.write_sts(loc, first),
            // Upper STS bytes (cancel, resetEstablishment), INT_ENABLE, read-only registers.
            _ => {}
        }
    }

    fn clock(&mut self, mosi: u8) -> u8 {
        match self.phase {
            Phase::Idle => {
                self.error(format!("byte {mosi:#04x} clocked with chip select high"));
                0xFF
            }
            Phase::Broken => 0xFF,
            Phase::Header(n) => {
                if let Some(h) = self.header.get_mut(n) {
                    *h = mosi;
                }
                if n < 3 {
                    self.phase = Phase::Header(n + 1);
                    return 0x00;
                }
                let [h0, h1, h2, h3] = self.header;
                self.read = h0 & 0x80 != 0;
                self.len = usize::from(h0 & 0x3F) + 1;
                let address = u16::from_be_bytes([h2, h3]);
                self.locality = usize::from(address >> 12);
                self.register = address & 0x0FFF;
                if h0 & 0x40 != 0 || h1 != 0xD4 || self.locality >= LOCALITIES {
                    self.error(format!("bad SPI header {:02x?}", self.header));
                    self.phase = Phase::Broken;
                    return 0x00;
                }
                let waits = if self.rng.chance(self.cfg.wait_probability) {
                    let extra = self.rng.below(u64::from(self.cfg.max_wait_states.max(1)));
                    1 + u32::try_from(extra).unwrap_or(0)
                } else {
                    0
                };
                if waits == 0 {
                    self.start_data();
                    0x01
                } else {
                    self.stats.frames_with_waits += 1;
                    self.stats.wait_states += usize::try_from(waits).unwrap_or(0);
                    self.phase = Phase::Wait(waits);
                    0x00
                }
            }
            Phase::Wait(left) => {
                if left <= 1 {
                    self.start_data();
                    0x01
                } else {
                    self.phase = Phase::Wait(left - 1);
                    0x00
                }
            }
            Phase::Data(n) if n < self.len => {
                self.phase = Phase::Data(n + 1);
                if !self.read {
                    self.write_data.push(mosi);
                    0x00
                } else if self.is_fifo() {
                    self.tis.read_fifo(self.locality)
                } else {
                    self.snapshot.get(n).copied().unwrap_or(0xFF)
                }
            }
            Phase::Data(_) => {
                self.error(format!(
                    "byte clocked past the {}-byte data phase (header {:02x?})",
                    self.len, self.header
                ));
                self.phase = Phase::Broken;
                0xFF
            }
        }
    }
}

impl<T> ErrorType for SpiTpm<T> {
    type Error = ErrorKind;
}

impl<T: vouch_tpm::Transport> SpiBus<u8> for SpiTpm<T> {
    fn read(&mut self, words: &mut [u8]) -> Result<(), ErrorKind> {
        let mut inner = self.inner.borrow_mut();
        for w in words.iter_mut() {
            *w = inner.clock(0x00);
        }
        Ok(())
    }

    fn write(&mut self, words: &[u8]) -> Result<(), ErrorKind> {
        let mut inner = self.inner.borrow_mut();
        for &w in words {
            inner.clock(w);
        }
        Ok(())
    }

    fn transfer(&mut self, read: &mut [u8], write: &[u8]) -> Result<(), ErrorKind> {
        let mut inner = self.inner.borrow_mut();
        for i in 0..read.len().max(write.len()) {
            let miso = inner.clock(write.get(i).copied().unwrap_or(0x00));
            if let Some(r) = read.get_mut(i) {
                *r = miso;
            }
        }
        Ok(())
    }

    fn transfer_in_place(&mut self, words: &mut [u8]) -> Result<(), ErrorKind> {
        let mut inner = self.inner.borrow_mut();
        for w in words.iter_mut() {
            *w = inner.clock(*w);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl<T> embedded_hal::digital::ErrorType for SpiCs<T> {
    type Error = Infallible;
}

impl<T: vouch_tpm::Transport> OutputPin for SpiCs<T> {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.inner.borrow_mut().cs_low();
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.inner.borrow_mut().cs_high();
        Ok(())
    }
}
