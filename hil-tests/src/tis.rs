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

/// A response code the model answers instead of running a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The command code answered.
    pub cc: u32,
    /// The response code (e.g. TPM_RC_RETRY 0x922, TPM_RC_TESTING 0x90A, TPM_RC_YIELDED 0x908).
    pub rc: u32,
    /// How many times, counting down.
    pub times: u32,
}

/// How a real part differs from QEMU's model, in simulated time (see [`crate::parts`]). All
/// zero / empty by default. Everything timed needs [`Quirks::clock`].
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// The simulated clock the driver under test waits on; the model reads it to time
    /// execution and its quirks.
    pub clock: Option<crate::clock::SimClock>,
    /// How long a command runs, by command code, in simulated µs (replaces the poll count).
    pub duration_us: Option<fn(u32) -> u64>,
    /// How long after a commandReady request STS.commandReady comes up (µs).
    pub ready_delay_us: u64,
    /// After every FIFO byte and at completion, burstCount reads 0 for this long (µs).
    pub zero_burst_us: u64,
    /// The first this many commands stick after their last byte (the Infineon erratum Linux
    /// works around): STS reads without stsValid, tpmGo is ignored, until commandReady.
    pub sticky_commands: usize,
    /// Response codes answered instead of running commands.
    pub answers: Vec<Answer>,
    /// TPM_ACCESS reads 0 (no tpmRegValidSts) and ignores writes until this simulated time
    /// after power-up or a reset (µs).
    pub access_valid_after_us: u64,
}

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
    /// A real part's quirks (none by default).
    pub quirks: Quirks,
}

impl Default for TisConfig {
    fn default() -> Self {
        Self {
            buffer_size: 4096,
            max_burst: 4096,
            max_exec_polls: 5,
            seed: 1,
            quirks: Quirks::default(),
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
    /// `TPM_STS` reads (all states).
    pub sts_reads: usize,
    /// `TPM_STS` reads while a command was executing, by command code, in order.
    pub exec_polls_by_command: Vec<(u32, usize)>,
    /// Commands answered from [`Quirks::answers`] instead of running.
    pub answered: usize,
    /// Commands that stuck ([`Quirks::sticky_commands`]).
    pub stuck: usize,
    /// TPM resets on the register path ([`Tis::reset`]).
    pub resets: usize,
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
    /// Simulated time the running command completes ([`Quirks::duration_us`]).
    done_at: Option<u64>,
    /// Simulated time STS.commandReady comes up.
    ready_at: u64,
    /// Simulated time burstCount stops reading 0.
    burst_zero_until: u64,
    /// The received command stuck (erratum) until commandReady.
    stuck: bool,
    sticky_left: usize,
    /// Simulated time ACCESS becomes valid.
    valid_at: u64,
    /// The command code executing.
    executing_cc: u32,
}

impl<T: vouch_tpm::Transport> Tis<T> {
    /// A TPM at reset: no locality active, Idle.
    pub fn new(backend: T, cfg: TisConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        let mut tis = Self {
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
            done_at: None,
            ready_at: 0,
            burst_zero_until: 0,
            stuck: false,
            sticky_left: cfg.quirks.sticky_commands,
            valid_at: 0,
            executing_cc: 0,
            cfg,
        };
        tis.valid_at = tis
            .now()
            .saturating_add(tis.cfg.quirks.access_valid_after_us);
        tis
    }

    /// Simulated time (0 without a clock).
    fn now(&self) -> u64 {
        self.cfg
            .quirks
            .clock
            .as_ref()
            .map_or(0, crate::clock::SimClock::elapsed_us)
    }

    /// A TPM reset on the register path (the reset pin, a brown-out, a TPM firmware fault):
    /// no locality, Idle, any command and response lost, ACCESS invalid for
    /// [`Quirks::access_valid_after_us`] again. The backend (swtpm) is reset separately by
    /// the test (`Swtpm::power_cycle`), as the TPM's own state is.
    pub fn reset(&mut self) {
        self.active = None;
        self.pending = [false; LOCALITIES];
        self.enter_idle();
        self.done_at = None;
        self.stuck = false;
        self.stats.resets += 1;
        self.valid_at = self
            .now()
            .saturating_add(self.cfg.quirks.access_valid_after_us);
    }

    /// Whether a command is executing now (its simulated duration not over).
    pub fn executing(&self) -> bool {
        matches!(self.state, State::Execution { .. })
            && self.done_at.is_some_and(|t| self.now() < t)
    }

    /// The quirks, e.g. to add answers between commands.
    pub fn quirks_mut(&mut self) -> &mut Quirks {
        &mut self.cfg.quirks
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
        if self.now() < self.valid_at {
            return 0;
        }
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
        if self.now() < self.valid_at {
            self.errors.push(format!(
                "ACCESS write {value:#04x} before tpmRegValidSts dropped (the TPM is initialising)"
            ));
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
        self.stuck = false;
        self.state = State::Idle;
        self.status = 0;
        self.rw_offset = 0;
        self.buffer.clear();
    }

    /// `burstCount` now.
    fn burst_count(&self) -> u16 {
        if self.now() < self.burst_zero_until {
            return 0;
        }
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
        self.stats.sts_reads += 1;
        if self.stuck {
            return sts::FAMILY_TPM2;
        }
        if let State::Execution { polls_left } = self.state {
            let done = match self.done_at {
                Some(t) => self.now() >= t,
                None => polls_left == 0,
            };
            if done {
                self.state = State::Completion;
                self.status = sts::VALID | sts::DATA_AVAIL;
                self.rw_offset = 0;
                self.done_at = None;
                self.burst_zero_until = self.now().saturating_add(self.cfg.quirks.zero_burst_us);
            } else {
                self.state = State::Execution {
                    polls_left: polls_left.saturating_sub(1),
                };
                self.stats.exec_polls += 1;
                let cc = self.executing_cc;
                match self.stats.exec_polls_by_command.last_mut() {
                    Some((c, n)) if *c == cc => *n += 1,
                    _ => self.stats.exec_polls_by_command.push((cc, 1)),
                }
            }
        }
        if self.state == State::Ready && self.now() < self.ready_at {
            return sts::FAMILY_TPM2 | u32::from(sts::VALID);
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
                    self.stuck = false;
                    self.ready_at = self.now().saturating_add(self.cfg.quirks.ready_delay_us);
                }
                State::Ready => self.rw_offset = 0,
                State::Execution { .. } => {
                    // Aborting a running command: the response is discarded.
                    self.done_at = None;
                    self.state = State::Ready;
                    self.status = sts::COMMAND_READY;
                    self.buffer.clear();
                    self.rw_offset = 0;
                }
            },
            sts::GO => {
                if self.stuck {
                    self.errors
                        .push("tpmGo while the status is stuck ignored".to_owned());
                } else if self.state == State::Reception && self.status & sts::EXPECT == 0 {
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
        let cc = be_u32(command.get(6..10)).unwrap_or(0);
        self.executing_cc = cc;
        let mut response = vec![0u8; self.cfg.buffer_size];
        let answer = self
            .cfg
            .quirks
            .answers
            .iter_mut()
            .find(|a| a.cc == cc && a.times > 0);
        let answered = answer.map(|a| {
            a.times -= 1;
            a.rc
        });
        let result = match answered {
            Some(rc) => {
                self.stats.answered += 1;
                let [r0, r1, r2, r3] = rc.to_be_bytes();
                response.truncate(0);
                response.extend_from_slice(&[0x80, 0x01, 0, 0, 0, 10, r0, r1, r2, r3]);
                response.resize(self.cfg.buffer_size, 0);
                Ok(10)
            }
            None => self.backend.transact(&command, &mut response),
        };
        let len = match result {
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
        self.done_at = match (answered, self.cfg.quirks.duration_us) {
            (None, Some(f)) if self.cfg.quirks.clock.is_some() => {
                Some(self.now().saturating_add(f(cc)))
            }
            _ => None,
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
        self.burst_zero_until = self.now().saturating_add(self.cfg.quirks.zero_burst_us);
        if let Some(size) = be_u32(self.buffer.get(2..6))
            && usize::try_from(size).is_ok_and(|s| s <= self.buffer.len())
        {
            self.status = sts::VALID;
            if self.sticky_left > 0 {
                self.sticky_left -= 1;
                self.stuck = true;
                self.stats.stuck += 1;
            }
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
                self.burst_zero_until = self.now().saturating_add(self.cfg.quirks.zero_burst_us);
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
