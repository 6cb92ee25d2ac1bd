//! The TIS/FIFO register state machine both bus models share.
//!
//! This is the part of a discrete TPM that the TCG PC Client Platform TPM Profile (PTP) calls
//! the FIFO interface: per-locality `TPM_ACCESS`, `TPM_STS` and `TPM_DATA_FIFO`, and the
//! command life cycle *Idle → Ready → Reception → Execution → Completion*. Its behaviour
//! follows QEMU's `hw/tpm/tpm_tis_common.c`, the model behind `tpm-tis-i2c` that the firmware
//! also runs against under emulation:
//!
//! - `TPM_ACCESS`: `tpmRegValidSts` (0x80) always; `tpmEstablishment` (0x01) reads 1 (no
//!   dynamic OS started). Writing `requestUse` (0x02) grants the locality at once when none is
//!   active, else marks the request pending (`pendingRequest` 0x04 reads on the others).
//!   Writing `activeLocality` (0x20) relinquishes; the highest pending request is granted.
//! - `TPM_STS` of the active locality: status byte, then `burstCount` (bytes 1–2, little-endian)
//!   and the TPM family (`01` in bits 26–27 for TPM 2.0). A locality that is not active reads
//!   all ones. Writes take one bit at a time: `commandReady` (0x40) moves Idle/Completion to
//!   Ready, aborts Reception; `tpmGo` (0x20) runs a complete command; `responseRetry` (0x02)
//!   rewinds the response. A write with several of these bits is ignored, as in QEMU.
//! - `TPM_DATA_FIFO`: in Ready/Reception each byte written is appended to the command; from
//!   the sixth byte the header's `commandSize` is known and `Expect` (0x08) stays set until it
//!   is satisfied; bytes beyond it are dropped (and recorded). In Completion each byte read
//!   pops the response; reading past its end gives 0xFF. `dataAvail` (0x10) stays set until
//!   the last byte is read.
//! - `burstCount`: free buffer space while receiving, remaining response bytes while
//!   completing, capped by [`TisConfig::max_burst`] to exercise a driver's chunking.
//! - Execution is asynchronous like a real TPM (and QEMU with swtpm): after `tpmGo` the model
//!   sends the command to the backend at once but shows `dataAvail` only after a seeded random
//!   number (0..=[`TisConfig::max_exec_polls`]) of `TPM_STS` reads.
//! - The checksum (`TPM_DATA_CSUM` on I2C) is CRC-16/KERMIT over the bytes of the buffer
//!   transferred so far: the command's while receiving, the response's while completing (it
//!   is 0 between `tpmGo` and the first response byte).
//!
//! Misuse that a correct driver never commits (a FIFO write while Idle, a command longer than
//! its header says, a FIFO read outside Completion) is recorded in [`Tis::errors`], for the
//! test to assert on; the model carries on as QEMU's would.

use crate::rng::Rng;

/// Localities 0–4.
pub const LOCALITIES: usize = 5;

/// `TPM_ACCESS` bits.
pub mod access {
    /// `tpmEstablishment`.
    pub const ESTABLISHMENT: u8 = 0x01;
    /// `requestUse`.
    pub const REQUEST_USE: u8 = 0x02;
    /// `pendingRequest`.
    pub const PENDING_REQUEST: u8 = 0x04;
    /// `activeLocality`.
    pub const ACTIVE_LOCALITY: u8 = 0x20;
    /// `tpmRegValidSts`.
    pub const VALID: u8 = 0x80;
}

/// `TPM_STS` status-byte bits.
pub mod sts {
    /// `stsValid`.
    pub const VALID: u8 = 0x80;
    /// `commandReady`.
    pub const COMMAND_READY: u8 = 0x40;
    /// `tpmGo`.
    pub const GO: u8 = 0x20;
    /// `dataAvail`.
    pub const DATA_AVAIL: u8 = 0x10;
    /// `Expect`.
    pub const EXPECT: u8 = 0x08;
    /// `responseRetry`.
    pub const RESPONSE_RETRY: u8 = 0x02;
    /// `TPM_STS` bits 26–27 = 01: TPM family 2.0.
    pub const FAMILY_TPM2: u32 = 0x0400_0000;
}

/// `TPM_DID_VID` (QEMU's: IBM vendor 0x1014, device 0x0001).
pub const DID_VID: u32 = 0x0001_1014;
/// `TPM_RID`.
pub const RID: u8 = 0x01;

/// Tunables of the state machine.
#[derive(Debug, Clone)]
pub struct TisConfig {
    /// The command/response buffer size (swtpm's and QEMU's: 4096).
    pub buffer_size: usize,
    /// The largest `burstCount` reported.
    pub max_burst: u16,
    /// The most `TPM_STS` reads during which a command stays executing.
    pub max_exec_polls: u32,
    /// Seed of the execution-delay draws.
    pub seed: u64,
}

impl Default for TisConfig {
    fn default() -> Self {
        Self {
            buffer_size: 4096,
            max_burst: 4096,
            max_exec_polls: 5,
            seed: 1,
        }
    }
}

/// Where the command life cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No command in progress; `commandReady` clear.
    Idle,
    /// `commandReady` set, buffer empty.
    Ready,
    /// Command bytes arriving.
    Reception,
    /// The TPM is executing; `polls_left` more `TPM_STS` reads until `dataAvail`.
    Execution {
        /// Reads left.
        polls_left: u32,
    },
    /// The response is readable.
    Completion,
}

/// Counters a test can assert on.
#[derive(Debug, Clone, Default)]
pub struct TisStats {
    /// Commands sent to the backend (on `tpmGo`).
    pub commands: usize,
    /// Command codes sent, in order.
    pub command_codes: Vec<u32>,
    /// `TPM_STS` reads that found the command still executing.
    pub exec_polls: usize,
    /// FIFO bytes written / read.
    pub fifo_written: usize,
    /// FIFO bytes read (including past-the-end 0xFF reads).
    pub fifo_read: usize,
    /// FIFO reads past the response's end.
    pub fifo_read_past_end: usize,
    /// Largest `burstCount` seen by the driver.
    pub max_burst_reported: u16,
    /// Commands abandoned in Reception by `commandReady` (e.g. after a checksum mismatch).
    pub aborted_receptions: usize,
    /// `responseRetry` writes honoured.
    pub response_retries: usize,
}

/// The TIS register state machine, forwarding complete commands to `backend`.
#[derive(Debug)]
pub struct Tis<T> {
    backend: T,
    cfg: TisConfig,
    rng: Rng,
    active: Option<usize>,
    pending: [bool; LOCALITIES],
    state: State,
    status: u8,
    buffer: Vec<u8>,
    rw_offset: usize,
    stats: TisStats,
    errors: Vec<String>,
}

impl<T: vouch_tpm::Transport> Tis<T> {
    /// A TPM at reset: no locality active, Idle.
    pub fn new(backend: T, cfg: TisConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        Self {
            backend,
            rng,
            active: None,
            pending: [false; LOCALITIES],
            state: State::Idle,
            status: 0,
            buffer: Vec::with_capacity(cfg.buffer_size),
            rw_offset: 0,
            stats: TisStats::default(),
            errors: Vec::new(),
            cfg,
        }
    }

    /// The command life-cycle state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The active locality.
    pub fn active_locality(&self) -> Option<usize> {
        self.active
    }

    /// Bytes of the current command received, or of the response read, so far.
    pub fn fifo_offset(&self) -> usize {
        self.rw_offset
    }

    /// Counters.
    pub fn stats(&self) -> &TisStats {
        &self.stats
    }

    /// Protocol misuse seen so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Takes the recorded errors, leaving none (for tests that provoke one on purpose).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Records a protocol error (used by the bus front-ends too).
    pub fn record_error(&mut self, message: String) {
        self.errors.push(message);
    }

    /// The backend, e.g. to power-cycle it.
    pub fn backend_mut(&mut self) -> &mut T {
        &mut self.backend
    }

    /// Reads `TPM_ACCESS` of `locality`.
    pub fn read_access(&self, locality: usize) -> u8 {
        let mut v = access::VALID | access::ESTABLISHMENT;
        if self.active == Some(locality) {
            v |= access::ACTIVE_LOCALITY;
        }
        if self.pending.get(locality).copied().unwrap_or(false) {
            v |= access::REQUEST_USE;
        }
        let others_pending = self
            .pending
            .iter()
            .enumerate()
            .any(|(l, &p)| p && l != locality);
        if others_pending {
            v |= access::PENDING_REQUEST;
        }
        v
    }

    /// Writes `TPM_ACCESS` of `locality`.
    pub fn write_access(&mut self, locality: usize, value: u8) {
        if locality >= LOCALITIES {
            return;
        }
        if value & access::ACTIVE_LOCALITY != 0 && self.active == Some(locality) {
            self.active = None;
            self.enter_idle();
            // Grant the highest pending request.
            if let Some((next, flag)) = self.pending.iter_mut().enumerate().rev().find(|(_, p)| **p)
            {
                *flag = false;
                self.active = Some(next);
            }
        }
        if value & access::REQUEST_USE != 0 {
            match self.active {
                None => self.active = Some(locality),
                Some(l) if l == locality => {}
                Some(_) => {
                    if let Some(p) = self.pending.get_mut(locality) {
                        *p = true;
                    }
                }
            }
        }
    }

    fn enter_idle(&mut self) {
        self.state = State::Idle;
        self.status = 0;
        self.rw_offset = 0;
        self.buffer.clear();
    }

    /// `burstCount` now.
    fn burst_count(&self) -> u16 {
        let avail = match self.state {
            State::Completion => self.buffer.len().saturating_sub(self.rw_offset),
            _ => self.cfg.buffer_size.saturating_sub(self.rw_offset),
        };
        u16::try_from(avail)
            .unwrap_or(u16::MAX)
            .min(self.cfg.max_burst)
    }

    /// Reads `TPM_STS` of `locality` (all four bytes; a read counts as one poll).
    pub fn read_sts(&mut self, locality: usize) -> u32 {
        if self.active != Some(locality) {
            return u32::MAX;
        }
        if let State::Execution { polls_left } = self.state {
            if polls_left == 0 {
                self.state = State::Completion;
                self.status = sts::VALID | sts::DATA_AVAIL;
                self.rw_offset = 0;
            } else {
                self.state = State::Execution {
                    polls_left: polls_left - 1,
                };
                self.stats.exec_polls += 1;
            }
        }
        let burst = self.burst_count();
        self.stats.max_burst_reported = self.stats.max_burst_reported.max(burst);
        sts::FAMILY_TPM2 | (u32::from(burst) << 8) | u32::from(self.status)
    }

    /// Writes the status byte of `TPM_STS` of `locality`.
    pub fn write_sts(&mut self, locality: usize, value: u8) {
        if self.active != Some(locality) {
            self.errors.push(format!(
                "STS write {value:#04x} to locality {locality}, which is not active"
            ));
            return;
        }
        let value = value & (sts::COMMAND_READY | sts::GO | sts::RESPONSE_RETRY);
        match value {
            sts::COMMAND_READY => match self.state {
                State::Idle | State::Completion | State::Reception => {
                    if self.state == State::Reception {
                        self.stats.aborted_receptions += 1;
                    }
                    self.state = State::Ready;
                    self.status = sts::COMMAND_READY;
                    self.buffer.clear();
                    self.rw_offset = 0;
                }
                State::Ready => self.rw_offset = 0,
                State::Execution { .. } => {
                    // Aborting a running command: the response is discarded.
                    self.state = State::Ready;
                    self.status = sts::COMMAND_READY;
                    self.buffer.clear();
                    self.rw_offset = 0;
                }
            },
            sts::GO => {
                if self.state == State::Reception && self.status & sts::EXPECT == 0 {
                    self.execute();
                } else {
                    self.errors
                        .push(format!("tpmGo in state {:?} ignored", self.state));
                }
            }
            sts::RESPONSE_RETRY if self.state == State::Completion => {
                self.stats.response_retries += 1;
                self.rw_offset = 0;
                self.status = sts::VALID | sts::DATA_AVAIL;
            }
            _ => {}
        }
    }

    fn execute(&mut self) {
        let command = std::mem::take(&mut self.buffer);
        self.stats.commands += 1;
        if let Some(cc) = be_u32(command.get(6..10)) {
            self.stats.command_codes.push(cc);
        }
        let mut response = vec![0u8; self.cfg.buffer_size];
        let len = match self.backend.transact(&command, &mut response) {
            Ok(len) => len,
            Err(e) => {
                self.errors.push(format!("backend failed: {e:?}"));
                // TPM_RC_FAILURE, as a TPM in failure mode answers.
                response.clear();
                response.extend_from_slice(&[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x01]);
                response.len()
            }
        };
        response.truncate(len);
        self.buffer = response;
        self.rw_offset = 0;
        let polls_left = self.rng.below(u64::from(self.cfg.max_exec_polls) + 1);
        self.state = State::Execution {
            polls_left: u32::try_from(polls_left).unwrap_or(0),
        };
        self.status = sts::VALID;
    }

    /// Writes one byte to `TPM_DATA_FIFO` of `locality`.
    pub fn write_fifo(&mut self, locality: usize, byte: u8) {
        if self.active != Some(locality) {
            self.errors.push(format!(
                "FIFO write to locality {locality}, which is not active"
            ));
            return;
        }
        match self.state {
            State::Ready | State::Reception => {}
            other => {
                self.errors
                    .push(format!("FIFO write in state {other:?} dropped"));
                return;
            }
        }
        if self.state == State::Ready {
            self.state = State::Reception;
            self.status = sts::VALID | sts::EXPECT;
        }
        if self.status & sts::EXPECT == 0 {
            self.errors.push(format!(
                "FIFO byte {byte:#04x} beyond the command's size field dropped"
            ));
            return;
        }
        if self.buffer.len() >= self.cfg.buffer_size {
            self.errors
                .push("command longer than the TPM's buffer".to_owned());
            self.status = sts::VALID;
            return;
        }
        self.buffer.push(byte);
        self.rw_offset = self.buffer.len();
        self.stats.fifo_written += 1;
        if let Some(size) = be_u32(self.buffer.get(2..6))
            && usize::try_from(size).is_ok_and(|s| s <= self.buffer.len())
        {
            self.status = sts::VALID;
        }
    }

    /// Reads one byte from `TPM_DATA_FIFO` of `locality`.
    pub fn read_fifo(&mut self, locality: usize) -> u8 {
        self.stats.fifo_read += 1;
        if self.active != Some(locality) {
            self.errors.push(format!(
                "FIFO read from locality {locality}, which is not active"
            ));
            return 0xFF;
        }
        if self.state != State::Completion {
            self.errors
                .push(format!("FIFO read in state {:?}", self.state));
            return 0xFF;
        }
        match self.buffer.get(self.rw_offset) {
            Some(&b) => {
                self.rw_offset += 1;
                if self.rw_offset >= self.buffer.len() {
                    self.status = sts::VALID;
                }
                b
            }
            None => {
                self.stats.fifo_read_past_end += 1;
                0xFF
            }
        }
    }

    /// CRC-16/KERMIT over the buffer bytes transferred so far in the current command or
    /// response.
    pub fn checksum(&self) -> u16 {
        let n = match self.state {
            State::Execution { .. } => 0,
            _ => self.rw_offset,
        };
        crate::crc::kermit(self.buffer.get(..n).unwrap_or_default())
    }
}

/// A big-endian `u32` from exactly four bytes.
pub(crate) fn be_u32(bytes: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_be_bytes(bytes?.try_into().ok()?))
}
