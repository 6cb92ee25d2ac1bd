//! [`I2cTpm`]: a TPM on I2C, as an `embedded_hal::i2c::I2c` device backed by swtpm.
//!
//! The register map is the TCG I2C interface's (PTP §7, "TCG TPM I2C Interface Specification"):
//!
//! | reg  | name                         | model                                              |
//! |------|------------------------------|----------------------------------------------------|
//! | 0x00 | `TPM_LOC_SEL`                | selects the locality of later accesses (0–4)       |
//! | 0x04 | `TPM_ACCESS`                 | [`Tis::read_access`] / [`Tis::write_access`]       |
//! | 0x08 | `TPM_INT_ENABLE`             | stored, no interrupts raised                       |
//! | 0x14 | `TPM_INT_CAPABILITY`         | 0: no interrupts                                   |
//! | 0x18 | `TPM_STS` (0x18–0x1B)        | [`Tis::read_sts`] with bits 26–31 masked to 0      |
//! | 0x24 | `TPM_DATA_FIFO`              | one FIFO byte per data byte, no length limit       |
//! | 0x30 | `TPM_I2C_INTERFACE_CAPABILITY` | 0x02600082, as QEMU: FIFO, TPM 2.0, localities 0–4, dynamic burst count, guard times 0 |
//! | 0x38 | `TPM_I2C_DEVICE_ADDRESS`     | NACKed: address change unsupported (as QEMU)       |
//! | 0x40 | `TPM_DATA_CSUM_ENABLE`       | stored (bit 0); the checksum is readable either way |
//! | 0x44 | `TPM_DATA_CSUM`              | CRC-16/KERMIT of the current command/response, big-endian |
//! | 0x48 | `TPM_DID_VID`                | 0x00011014                                         |
//! | 0x4C | `TPM_RID`                    | 0x01                                               |
//!
//! Bus behaviour, as QEMU's `tpm-tis-i2c` (hw/tpm/tpm_tis_i2c.c) and the I2C spec:
//! - The device answers at [`I2cConfig::address`] (0x2E); other addresses NACK. To exercise the
//!   driver's bounded retry, the address byte is also NACKed at random (seeded,
//!   [`I2cConfig::nack_probability`], never more than [`I2cConfig::max_consecutive_nacks`] in a
//!   row), as TPMs do while waking.
//! - A write message is `[register, data…]`. Unknown registers NACK the register byte. FIFO
//!   data goes to the TIS byte by byte; other registers buffer up to 4 data bytes (the 5th
//!   NACKs) and take effect at STOP, i.e. at the end of the `transaction`. A write followed by
//!   a repeated START (a read in the same transaction) is dropped, as on QEMU — and recorded,
//!   since a driver that does it has a bug.
//! - A read returns the selected register's bytes (a 4-byte snapshot taken at the first byte,
//!   0x00 beyond) or, for the FIFO, successive FIFO bytes (0xFF past the response's end).
//!   A read works after a STOP or a repeated START: a write of the register byte alone keeps
//!   it selected across STOP (QEMU acts on a write only if it carried data), and a read
//!   forgets it. A read with no register selected returns zeros and is recorded.
//! - Consecutive operations of one direction form one message (embedded-hal's contract).
//!
//! Fault injection beyond QEMU, all seeded and bounded so a correct driver always recovers:
//! address NACKs (above), FIFO bytes corrupted on the wire ([`I2cConfig::corrupt_probability`]:
//! the TPM's checksum then disagrees with the host's, which must re-send the command or ask
//! for the response again with `responseRetry`), and `TPM_ACCESS`/`TPM_STS` reads glitching to
//! all ones ([`I2cConfig::glitch_probability`]: caught by the read-must-be-zero bits).

use std::cell::RefCell;
use std::rc::Rc;

use embedded_hal::i2c::{
    ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation, SevenBitAddress,
};

use crate::rng::Rng;
use crate::tis::{DID_VID, LOCALITIES, RID, Tis, TisConfig};

/// I2C register addresses.
pub mod reg {
    /// `TPM_LOC_SEL`.
    pub const LOC_SEL: u8 = 0x00;
    /// `TPM_ACCESS`.
    pub const ACCESS: u8 = 0x04;
    /// `TPM_INT_ENABLE`.
    pub const INT_ENABLE: u8 = 0x08;
    /// `TPM_INT_CAPABILITY`.
    pub const INT_CAPABILITY: u8 = 0x14;
    /// `TPM_STS` (4 bytes, 0x18–0x1B).
    pub const STS: u8 = 0x18;
    /// `TPM_DATA_FIFO`.
    pub const DATA_FIFO: u8 = 0x24;
    /// `TPM_I2C_INTERFACE_CAPABILITY`.
    pub const I2C_INTERFACE_CAPABILITY: u8 = 0x30;
    /// `TPM_I2C_DEVICE_ADDRESS`.
    pub const I2C_DEVICE_ADDRESS: u8 = 0x38;
    /// `TPM_DATA_CSUM_ENABLE`.
    pub const DATA_CSUM_ENABLE: u8 = 0x40;
    /// `TPM_DATA_CSUM`.
    pub const DATA_CSUM: u8 = 0x44;
    /// `TPM_DID_VID`.
    pub const DID_VID: u8 = 0x48;
    /// `TPM_RID`.
    pub const RID: u8 = 0x4C;
}

/// `TPM_I2C_INTERFACE_CAPABILITY` as QEMU reports it.
pub const I2C_INTERFACE_CAPABILITY: u32 = 0x0260_0082;
/// `TPM_STS` bits readable over I2C (bits 26–31 are reserved there).
pub const STS_READ_MASK: u32 = 0x03FF_FFFF;

/// Tunables of the I2C model.
#[derive(Debug, Clone)]
pub struct I2cConfig {
    /// The 7-bit address (0x2E).
    pub address: u8,
    /// Probability that an address byte is NACKed.
    pub nack_probability: f64,
    /// Bound on consecutive injected NACKs, so a driver retrying more often always gets through.
    pub max_consecutive_nacks: u32,
    /// Probability that a FIFO byte past the 10-byte header is corrupted on the wire (one bit
    /// flipped), at most once per command and once per response, so the TPM_DATA_CSUM check
    /// and its recovery (re-send; `responseRetry`) are exercised. Header bytes are spared:
    /// a corrupted size field is a different failure (a protocol error, not a retry).
    pub corrupt_probability: f64,
    /// Probability that a `TPM_ACCESS` or `TPM_STS` read returns all ones, as a glitching or
    /// floating bus does (caught by the read-must-be-zero bits), never twice in a row.
    pub glitch_probability: f64,
    /// Seed of the NACK, corruption and glitch draws.
    pub seed: u64,
    /// NACK every transfer while a command executes (Infineon and Nuvoton parts do while
    /// busy); needs the TIS quirks' clock and durations.
    pub nack_while_executing: bool,
    /// The TIS state machine's tunables.
    pub tis: TisConfig,
}

impl Default for I2cConfig {
    fn default() -> Self {
        Self {
            address: 0x2E,
            nack_probability: 0.0,
            max_consecutive_nacks: 3,
            corrupt_probability: 0.0,
            glitch_probability: 0.0,
            seed: 1,
            nack_while_executing: false,
            tis: TisConfig::default(),
        }
    }
}

/// Counters a test can assert on.
#[derive(Debug, Clone, Default)]
pub struct I2cStats {
    /// `transaction` calls.
    pub transactions: usize,
    /// Address bytes NACKed by injection.
    pub injected_nacks: usize,
    /// Transactions to another address.
    pub wrong_address: usize,
    /// Register or data bytes NACKed.
    pub data_nacks: usize,
    /// Register reads, by register, in order of first use: `(register, count)`.
    pub register_reads: Vec<(u8, usize)>,
    /// FIFO bytes corrupted on the way to the TPM.
    pub corrupted_writes: usize,
    /// FIFO bytes corrupted on the way to the host.
    pub corrupted_reads: usize,
    /// Register reads answered with all ones.
    pub glitches: usize,
}

#[derive(Debug)]
struct Inner<T> {
    tis: Tis<T>,
    cfg: I2cConfig,
    rng: Rng,
    consecutive_nacks: u32,
    loc_sel: u8,
    csum_enable: u8,
    int_enable: u32,
    /// The register a write `[reg]` without data selected; survives STOP until a read.
    selected: Option<u8>,
    /// The command number (TIS `commands` counter) whose write / read was last corrupted.
    corrupted_write_for: Option<usize>,
    corrupted_read_for: Option<usize>,
    last_was_glitch: bool,
    stats: I2cStats,
}

/// The I2C TPM model. Clones share one device (one is the bus handed to the driver, another
/// the test's probe).
#[derive(Debug)]
pub struct I2cTpm<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

impl<T> Clone for I2cTpm<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T: vouch_tpm::Transport> I2cTpm<T> {
    /// A TPM at reset, forwarding commands to `backend`.
    pub fn new(backend: T, cfg: I2cConfig) -> Self {
        let inner = Inner {
            tis: Tis::new(backend, cfg.tis.clone()),
            rng: Rng::new(cfg.seed),
            cfg,
            consecutive_nacks: 0,
            loc_sel: 0,
            csum_enable: 0,
            int_enable: 0,
            selected: None,
            corrupted_write_for: None,
            corrupted_read_for: None,
            last_was_glitch: false,
            stats: I2cStats::default(),
        };
        Self {
            inner: Rc::new(RefCell::new(inner)),
        }
    }

    /// Bus-level counters.
    pub fn stats(&self) -> I2cStats {
        self.inner.borrow().stats.clone()
    }

    /// Runs `f` on the TIS state machine (stats, errors, state).
    pub fn with_tis<R>(&self, f: impl FnOnce(&mut Tis<T>) -> R) -> R {
        f(&mut self.inner.borrow_mut().tis)
    }

    /// Every protocol error recorded (TIS and bus level).
    pub fn errors(&self) -> Vec<String> {
        self.inner.borrow().tis.errors().to_vec()
    }

    /// A TPM reset on the register path: the TIS loses its locality and any command
    /// ([`Tis::reset`]), LOC_SEL goes back to 0 and TPM_DATA_CSUM_ENABLE to 0.
    pub fn reset_tpm(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.tis.reset();
        inner.loc_sel = 0;
        inner.csum_enable = 0;
        inner.selected = None;
    }

    /// TPM_DATA_CSUM_ENABLE as the TPM holds it.
    pub fn checksum_enabled(&self) -> bool {
        self.inner.borrow().csum_enable == 1
    }
}

/// One message: the operations between two (repeated) STARTs.
enum Message {
    Write(Vec<u8>),
    Read(usize),
}

impl<T: vouch_tpm::Transport> Inner<T> {
    fn locality(&self) -> usize {
        usize::from(self.loc_sel)
    }

    fn known(register: u8) -> bool {
        matches!(
            register,
            reg::LOC_SEL
                | reg::ACCESS
                | reg::INT_ENABLE
                | reg::INT_CAPABILITY
                | reg::DATA_FIFO
                | reg::I2C_INTERFACE_CAPABILITY
                | reg::DATA_CSUM_ENABLE
                | reg::DATA_CSUM
                | reg::DID_VID
                | reg::RID
        ) || (reg::STS..=reg::STS + 3).contains(&register)
    }

    /// The 4 bytes a read of `register` returns (taken at the read's first byte).
    fn snapshot(&mut self, register: u8) -> [u8; 4] {
        let loc = self.locality();
        let value: u32 = match register {
            reg::LOC_SEL => u32::from(self.loc_sel),
            reg::ACCESS => u32::from(self.tis.read_access(loc)),
            reg::INT_ENABLE => self.int_enable,
            reg::INT_CAPABILITY => 0,
            r if (reg::STS..=reg::STS + 3).contains(&r) => {
                (self.tis.read_sts(loc) & STS_READ_MASK) >> (8 * u32::from(r - reg::STS))
            }
            reg::I2C_INTERFACE_CAPABILITY => I2C_INTERFACE_CAPABILITY,
            reg::DATA_CSUM_ENABLE => u32::from(self.csum_enable),
            reg::DATA_CSUM => {
                let [hi, lo] = self.tis.checksum().to_be_bytes();
                return [hi, lo, 0, 0];
            }
            reg::DID_VID => DID_VID,
            reg::RID => u32::from(RID),
            _ => 0,
        };
        value.to_le_bytes()
    }

    /// Applies a buffered non-FIFO write at STOP.
    fn apply(&mut self, register: u8, data: &[u8]) {
        let Some(&first) = data.first() else { return };
        let loc = self.locality();
        match register {
            reg::LOC_SEL if usize::from(first) < LOCALITIES => self.loc_sel = first,
            reg::ACCESS => self.tis.write_access(loc, first),
            reg::INT_ENABLE => {
                let mut b = [0u8; 4];
                for (d, s) in b.iter_mut().zip(data) {
                    *d = *s;
                }
                self.int_enable = u32::from_le_bytes(b);
            }
            reg::STS => self.tis.write_sts(loc, first),
            reg::DATA_CSUM_ENABLE => self.csum_enable = first & 1,
            // Bytes 1–3 of STS and read-only registers: ignored, as QEMU does.
            _ => {}
        }
    }

    fn maybe_corrupt_write(&mut self, byte: u8) -> u8 {
        let command = self.tis.stats().commands;
        if self.tis.fifo_offset() >= 10
            && self.corrupted_write_for != Some(command)
            && self.rng.chance(self.cfg.corrupt_probability)
        {
            self.corrupted_write_for = Some(command);
            self.stats.corrupted_writes += 1;
            return byte ^ 0x01;
        }
        byte
    }

    fn maybe_corrupt_read(&mut self, byte: u8) -> u8 {
        // The byte just read was at offset fifo_offset() - 1.
        let command = self.tis.stats().commands;
        if self.tis.fifo_offset() > 10
            && self.corrupted_read_for != Some(command)
            && self.rng.chance(self.cfg.corrupt_probability)
        {
            self.corrupted_read_for = Some(command);
            self.stats.corrupted_reads += 1;
            return byte ^ 0x80;
        }
        byte
    }

    fn count_read(&mut self, register: u8) {
        match self
            .stats
            .register_reads
            .iter_mut()
            .find(|(r, _)| *r == register)
        {
            Some((_, n)) => *n += 1,
            None => self.stats.register_reads.push((register, 1)),
        }
    }

    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        self.stats.transactions += 1;
        if address != self.cfg.address {
            self.stats.wrong_address += 1;
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        if self.cfg.nack_while_executing && self.tis.executing() {
            self.stats.injected_nacks += 1;
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        if self.consecutive_nacks < self.cfg.max_consecutive_nacks
            && self.rng.chance(self.cfg.nack_probability)
        {
            self.consecutive_nacks += 1;
            self.stats.injected_nacks += 1;
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        self.consecutive_nacks = 0;

        // Group into messages.
        let mut messages: Vec<Message> = Vec::new();
        for op in operations.iter() {
            match (op, messages.last_mut()) {
                (Operation::Write(b), Some(Message::Write(buf))) => buf.extend_from_slice(b),
                (Operation::Write(b), _) => messages.push(Message::Write(b.to_vec())),
                (Operation::Read(b), Some(Message::Read(n))) => *n += b.len(),
                (Operation::Read(b), _) => messages.push(Message::Read(b.len())),
            }
        }

        // A register selected by an earlier `[reg]` write (ended by STOP) is still selected.
        let mut selected: Option<u8> = self.selected.take();
        let mut last_was_read = false;
        // A non-FIFO write waiting for STOP.
        let mut pending: Option<(u8, Vec<u8>)> = None;
        let mut read_bytes: Vec<u8> = Vec::new();
        let mut result = Ok(());
        'messages: for message in messages {
            match message {
                Message::Write(bytes) => {
                    last_was_read = false;
                    if let Some((r, data)) = pending.take() {
                        self.tis.record_error(format!(
                            "write of {data:02x?} to register {r:#04x} dropped by a repeated START"
                        ));
                    }
                    let Some((&register, data)) = bytes.split_first() else {
                        continue;
                    };
                    if !Self::known(register) {
                        selected = None;
                        self.stats.data_nacks += 1;
                        result = Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data));
                        break 'messages;
                    }
                    selected = Some(register);
                    if register == reg::DATA_FIFO {
                        let loc = self.locality();
                        for &b in data {
                            let b = self.maybe_corrupt_write(b);
                            self.tis.write_fifo(loc, b);
                        }
                    } else {
                        let (taken, rest) = data.split_at(data.len().min(4));
                        pending = Some((register, taken.to_vec()));
                        if !rest.is_empty() {
                            self.stats.data_nacks += 1;
                            result = Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data));
                            break 'messages;
                        }
                    }
                }
                Message::Read(n) => {
                    last_was_read = true;
                    if let Some((r, data)) = pending.take()
                        && !data.is_empty()
                    {
                        self.tis.record_error(format!(
                            "write of {data:02x?} to register {r:#04x} dropped by a repeated START"
                        ));
                    }
                    let Some(register) = selected else {
                        self.tis
                            .record_error("I2C read with no register selected".to_owned());
                        read_bytes.extend(std::iter::repeat_n(0u8, n));
                        continue;
                    };
                    self.count_read(register);
                    if register == reg::DATA_FIFO {
                        let loc = self.locality();
                        for _ in 0..n {
                            let b = self.tis.read_fifo(loc);
                            read_bytes.push(self.maybe_corrupt_read(b));
                        }
                    } else {
                        let glitchable = register == reg::ACCESS
                            || (reg::STS..=reg::STS + 3).contains(&register);
                        let snap = if glitchable
                            && !self.last_was_glitch
                            && self.rng.chance(self.cfg.glitch_probability)
                        {
                            self.last_was_glitch = true;
                            self.stats.glitches += 1;
                            [0xFF; 4]
                        } else {
                            self.last_was_glitch = false;
                            self.snapshot(register)
                        };
                        read_bytes.extend((0..n).map(|i| snap.get(i).copied().unwrap_or(0)));
                    }
                }
            }
        }
        // STOP: a buffered write takes effect; a bare `[reg]` write stays selected for a
        // read in the next transaction (QEMU keeps it), a read forgets it.
        match pending {
            Some((register, data)) if !data.is_empty() => self.apply(register, &data),
            Some((register, _)) => self.selected = Some(register),
            None if !last_was_read => self.selected = selected,
            None => {}
        }
        // Hand read bytes back in operation order.
        let mut it = read_bytes.into_iter();
        for op in operations.iter_mut() {
            if let Operation::Read(buf) = op {
                for b in buf.iter_mut() {
                    *b = it.next().unwrap_or(0xFF);
                }
            }
        }
        result
    }
}

impl<T> ErrorType for I2cTpm<T> {
    type Error = ErrorKind;
}

impl<T: vouch_tpm::Transport> I2c<SevenBitAddress> for I2cTpm<T> {
    fn transaction(
        &mut self,
        address: SevenBitAddress,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.inner.borrow_mut().transaction(address, operations)
    }
}
