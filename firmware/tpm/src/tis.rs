//! The TIS/FIFO core (TCG PC Client Platform TPM Profile): locality handling and the
//! commandReady / Expect / tpmGo / dataAvail handshake, over any [`RegisterAccess`].
//!
//! Every wait is bounded twice: by the [`Clock`] (the TCG timeouts in [`Timeouts`]) and by a
//! poll count derived from the same budget, so a broken clock cannot hang the core either.
//! After any failure the core aborts the command by writing commandReady.
//!
//! STS = 0 (stsValid clear) is not treated as a glitch: some TPMs (e.g. SLB9672) report it
//! while they initialise after reset, until they can take TPM2_Startup. The core keeps
//! polling for commandReady, with the longer [`Timeouts::first_command_us`] budget until the
//! first command has gone through.

use crate::crc::crc16_kermit;
use crate::error::{Error, ProtocolError, TimeoutKind, UsageError};
use crate::regs::{Register, RegisterAccess};
use crate::{Clock, Transport};

/// TPM_ACCESS bits.
mod access {
    pub const VALID: u8 = 0x80;
    pub const ACTIVE_LOCALITY: u8 = 0x20;
    pub const REQUEST_USE: u8 = 0x02;
    /// Reserved bit 6 and write-only Seize (bit 3) read as zero.
    pub const MBZ: u8 = 0x48;
}

/// TPM_STS bits (low byte) and the burstCount field.
mod sts {
    pub const VALID: u32 = 0x80;
    pub const COMMAND_READY: u32 = 0x40;
    pub const GO: u32 = 0x20;
    pub const DATA_AVAIL: u32 = 0x10;
    pub const EXPECT: u32 = 0x08;
    pub const RESPONSE_RETRY: u32 = 0x02;
    /// Reserved bit 0, write-only responseRetry and tpmGo read as zero.
    pub const MBZ: u32 = 0x23;

    pub fn burst_count(sts: u32) -> usize {
        ((sts >> 8) & 0xFFFF) as usize
    }
}

/// The largest command or response the core moves (TPM 2.0 TPM_PT_MAX_COMMAND_SIZE in practice).
pub const MAX_FRAME: usize = 4096;
const HEADER_LEN: usize = 10;
/// How often a glitching register read is repeated before giving up.
const GLITCH_RETRIES: usize = 3;
/// How often a command is sent again after its transfer failed before tpmGo (a checksum
/// mismatch, Expect out of step, stsValid that never came): Linux's `TPM_RETRY` (50) in
/// `tpm_tis_send_main`, from "tpm_tis: Resend command to recover from data transfer errors"
/// and the Infineon erratum workaround "tpm, tpm_tis: Workaround failed command reception on
/// Infineon devices" (Linux 6.5): the status of those parts can stick until commandReady, and
/// sending the whole command again recovers. Nothing has run before tpmGo, so this is safe.
pub const SEND_RETRIES: usize = 50;
/// How often a response is read again (responseRetry) after a checksum mismatch.
const CHECKSUM_RETRIES: usize = 3;
/// The longest pause between two polls for a response: Linux's `TPM_TIMEOUT_POLL` (1 ms) in
/// `tpm_try_transmit`. Polling starts at [`Timeouts::poll_us`] and doubles up to this, so a
/// fast command is seen at once and a key generation does not flood the bus (issue 12,
/// measured in `hil-tests/tests/parts.rs`).
pub const RESPONSE_POLL_MAX_US: u32 = 1_000;

/// The TCG timeouts and command durations, in microseconds. Defaults are Linux's
/// (`drivers/char/tpm/tpm.h`, `tpm2-cmd.c`), with TIMEOUT_B at the 4 s Infineon parts need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TIMEOUT_A: locality changes, ACCESS.valid after reset, burstCount stuck at 0 (750 ms;
    /// Linux waits TIMEOUT_A for a non-zero burstCount in `get_burstcount`).
    pub a_us: u32,
    /// TIMEOUT_B: commandReady (4 s: Linux's `TIS_TIMEOUT_B_MAX`, since `tpm_tis_core.h` set
    /// `TIS_LONG_TIMEOUT` to 4000 ms for Infineon parts that take up to ~2.25 s).
    pub b_us: u32,
    /// TIMEOUT_C: stsValid after a FIFO access (200 ms).
    pub c_us: u32,
    /// TIMEOUT_D (30 ms). Not used for burstCount any more (see `a_us`); kept for callers.
    pub d_us: u32,
    /// TPM2_DURATION_MEDIUM (750 ms).
    pub medium_us: u32,
    /// TPM2_DURATION_LONG (2 s).
    pub long_us: u32,
    /// TPM2_DURATION_LONG_LONG (300 s): key generation (CreatePrimary, Create,
    /// CreateLoaded) and VerifySignature. Infineon: RSA-2048 generation takes "up to ~1–2
    /// minutes on some of our TPMs".
    pub keygen_us: u32,
    /// TPM2_DURATION_DEFAULT (120 s): commands Linux's table does not name.
    pub default_us: u32,
    /// Pause between two polls of a register (100 µs, Linux's `TPM_TIMEOUT_USECS_MIN`).
    pub poll_us: u32,
    /// The commandReady budget before the first command after reset, while the TPM may still
    /// initialise and report STS = 0 (5 s).
    pub first_command_us: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            a_us: 750_000,
            b_us: 4_000_000,
            c_us: 200_000,
            d_us: 30_000,
            medium_us: 750_000,
            long_us: 2_000_000,
            keygen_us: 300_000_000,
            default_us: 120_000_000,
            poll_us: 100,
            first_command_us: 5_000_000,
        }
    }
}

/// How long a command may take, by command code: Linux's `tpm2_ordinal_duration_index`
/// (`drivers/char/tpm/tpm2-cmd.c`), whose table names few commands and gives every other one
/// TPM2_DURATION_DEFAULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    /// Startup, GetCapability, PCR_Extend, hash sequences (750 ms).
    Medium,
    /// SelfTest, GetRandom, NV_Read, HierarchyControl, HierarchyChangeAuth (2 s).
    Long,
    /// Key generation (CreatePrimary, Create, CreateLoaded) and VerifySignature (300 s).
    KeyGeneration,
    /// Everything else (120 s).
    Default,
}

impl Duration {
    /// The class of the command with code `cc`.
    #[must_use]
    pub fn of(cc: u32) -> Self {
        match cc {
            // Startup, SequenceUpdate, SequenceComplete, EventSequenceComplete,
            // HashSequenceStart, PCR_Extend, GetCapability
            0x144 | 0x15C | 0x13E | 0x185 | 0x186 | 0x182 | 0x17A => Self::Medium,
            // SelfTest, GetRandom, HierarchyControl, HierarchyChangeAuth, NV_Read
            0x143 | 0x17B | 0x121 | 0x129 | 0x14E => Self::Long,
            // CreatePrimary, Create, CreateLoaded, VerifySignature
            0x131 | 0x153 | 0x191 | 0x177 => Self::KeyGeneration,
            _ => Self::Default,
        }
    }
}

impl Timeouts {
    /// The time budget for the response of the command with code `cc`.
    #[must_use]
    pub fn duration_us(&self, cc: u32) -> u32 {
        match Duration::of(cc) {
            Duration::Medium => self.medium_us,
            Duration::Long => self.long_us,
            Duration::KeyGeneration => self.keygen_us,
            Duration::Default => self.default_us,
        }
    }
}

/// The TIS/FIFO protocol over a register transport; implements [`Transport`].
#[derive(Debug)]
pub struct Tis<R, C> {
    regs: R,
    clock: C,
    locality: u8,
    active: bool,
    timeouts: Timeouts,
    /// Whether a command has completed since construction.
    ready_seen: bool,
}

impl<R: RegisterAccess, C: Clock> Tis<R, C> {
    /// Wraps a register transport; uses locality 0 and the default [`Timeouts`]. No I/O.
    pub fn new(regs: R, clock: C) -> Self {
        Self {
            regs,
            clock,
            locality: 0,
            active: false,
            timeouts: Timeouts::default(),
            ready_seen: false,
        }
    }

    /// Replaces the timeouts.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Gives back the register transport and the clock.
    pub fn release(self) -> (R, C) {
        (self.regs, self.clock)
    }

    /// The register transport, e.g. to read vendor registers.
    pub fn regs_mut(&mut self) -> &mut R {
        &mut self.regs
    }

    /// The clock, e.g. for a board's reset sequence.
    pub fn clock_mut(&mut self) -> &mut C {
        &mut self.clock
    }

    /// Waits for TPM_ACCESS.tpmRegValidSts (TIMEOUT_A, as Linux's `wait_startup`), requests
    /// locality 0, runs the transport's set-up, checks the interface capability register and
    /// returns TPM_DID_VID. Call once before the first command.
    ///
    /// # Errors
    /// No TPM (DID_VID all zeros or ones), a glitching bus, or a locality that is not granted.
    pub fn init(&mut self) -> Result<u32, Error<R::BusError>> {
        self.request_locality(self.locality)?;
        self.regs.init(self.locality)?;
        let mbz = self.regs.interface_capability_mbz();
        self.read_u32_checked(Register::InterfaceCapability, mbz)?;
        let did_vid = self.read_u32(Register::DidVid)?;
        if did_vid == 0 || did_vid == u32::MAX {
            return Err(Error::Protocol(ProtocolError::NoDevice { did_vid }));
        }
        Ok(did_vid)
    }

    /// Makes `locality` (0..=4) the active locality: waits for ACCESS.valid, requests the
    /// locality and waits until it is granted, each up to TIMEOUT_A.
    ///
    /// # Errors
    /// The TPM did not grant the locality, or the bus failed.
    pub fn request_locality(&mut self, locality: u8) -> Result<(), Error<R::BusError>> {
        if locality > 4 {
            return Err(Error::Usage(UsageError::Locality(locality)));
        }
        if self.active && self.locality != locality {
            self.release_locality()?;
        }
        self.locality = locality;
        let a = self.timeouts.a_us;
        // After power-up ACCESS reads without tpmRegValidSts until the TPM has initialised;
        // a requestUse written before then is lost (Linux: `wait_startup` before
        // `request_locality`).
        let current = self.poll(a, TimeoutKind::Locality, |t| {
            let v = t.read_access()?;
            Ok((v & access::VALID != 0).then_some(v))
        })?;
        if !granted(current) {
            self.regs
                .write(locality, Register::Access, &[access::REQUEST_USE])?;
            self.poll(a, TimeoutKind::Locality, |t| {
                Ok(granted(t.read_access()?).then_some(()))
            })?;
        }
        self.active = true;
        Ok(())
    }

    /// Gives up the active locality (writes activeLocality to TPM_ACCESS).
    ///
    /// # Errors
    /// The bus failed.
    pub fn release_locality(&mut self) -> Result<(), Error<R::BusError>> {
        self.active = false;
        self.regs
            .write(self.locality, Register::Access, &[access::ACTIVE_LOCALITY])
    }

    /// Aborts any command in progress by writing commandReady. Errors are ignored: this is the
    /// clean-up path.
    pub fn abort(&mut self) {
        let _ = self.write_sts(sts::COMMAND_READY);
    }

    /// Makes sure our locality is still active before a command (one ACCESS read, as Linux's
    /// `check_locality` on every request). A TPM reset on the register path takes the
    /// locality away and, on I2C, resets TPM_DATA_CSUM_ENABLE: then the locality is requested
    /// again and the transport set up again, so the command reaches the TPM (which answers
    /// TPM_RC_INITIALIZE, the board's cue to restart).
    fn ensure_locality(&mut self) -> Result<(), Error<R::BusError>> {
        let had = self.active;
        if had && granted(self.read_access()?) {
            return Ok(());
        }
        self.active = false;
        self.request_locality(self.locality)?;
        if had {
            self.regs.init(self.locality)?;
        }
        Ok(())
    }

    fn read_access(&mut self) -> Result<u8, Error<R::BusError>> {
        let mut last = 0;
        for _ in 0..GLITCH_RETRIES {
            let mut b = [0u8; 1];
            self.regs.read(self.locality, Register::Access, &mut b)?;
            let [v] = b;
            if v & access::MBZ == 0 {
                return Ok(v);
            }
            last = v;
        }
        Err(Error::Protocol(ProtocolError::MustBeZero {
            register: Register::Access,
            value: u32::from(last),
        }))
    }

    fn read_u32(&mut self, reg: Register) -> Result<u32, Error<R::BusError>> {
        let mut b = [0u8; 4];
        self.regs.read(self.locality, reg, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u32_checked(&mut self, reg: Register, mbz: u32) -> Result<u32, Error<R::BusError>> {
        let mut last = 0;
        for _ in 0..GLITCH_RETRIES {
            let v = self.read_u32(reg)?;
            if v & mbz == 0 {
                return Ok(v);
            }
            last = v;
        }
        Err(Error::Protocol(ProtocolError::MustBeZero {
            register: reg,
            value: last,
        }))
    }

    fn read_sts(&mut self) -> Result<u32, Error<R::BusError>> {
        self.read_u32_checked(Register::Sts, sts::MBZ)
    }

    fn write_sts(&mut self, bits: u32) -> Result<(), Error<R::BusError>> {
        let [b0, ..] = bits.to_le_bytes();
        self.regs.write(self.locality, Register::Sts, &[b0])
    }

    /// Calls `f` until it returns `Some`, for at most `timeout_us` by the clock and a
    /// matching number of polls, pausing [`Timeouts::poll_us`] between calls.
    fn poll<T>(
        &mut self,
        timeout_us: u32,
        kind: TimeoutKind,
        f: impl FnMut(&mut Self) -> Result<Option<T>, Error<R::BusError>>,
    ) -> Result<T, Error<R::BusError>> {
        let poll_us = self.timeouts.poll_us;
        self.poll_growing(timeout_us, kind, poll_us, f)
    }

    /// [`Tis::poll`] with a pause that starts at [`Timeouts::poll_us`] and doubles up to
    /// `max_pause_us`. A bus error or a NACK / wait-state budget running out while polling
    /// means "not ready yet" until the deadline (Linux's and tpm2-tss's I2C drivers): a TPM
    /// busy generating a key may not answer its bus; at the deadline the last such error is
    /// returned.
    fn poll_growing<T>(
        &mut self,
        timeout_us: u32,
        kind: TimeoutKind,
        max_pause_us: u32,
        mut f: impl FnMut(&mut Self) -> Result<Option<T>, Error<R::BusError>>,
    ) -> Result<T, Error<R::BusError>> {
        let mut pause = self.timeouts.poll_us.max(1);
        let max_polls = (timeout_us / pause).saturating_mul(2).saturating_add(16);
        let start = self.clock.now_us();
        let mut last = Error::Timeout(kind);
        for _ in 0..max_polls {
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = Error::Timeout(kind),
                Err(
                    e @ (Error::Bus(_)
                    | Error::Timeout(TimeoutKind::I2cNack | TimeoutKind::SpiWaitState)),
                ) => last = e,
                Err(e) => return Err(e),
            }
            if self.clock.now_us().saturating_sub(start) >= u64::from(timeout_us) {
                break;
            }
            self.clock.delay_us(pause);
            pause = pause.saturating_mul(2).min(max_pause_us.max(pause));
        }
        Err(last)
    }

    /// Polls STS until `cond` holds.
    fn wait_sts(
        &mut self,
        timeout_us: u32,
        kind: TimeoutKind,
        cond: impl Fn(u32) -> bool,
    ) -> Result<u32, Error<R::BusError>> {
        self.poll(timeout_us, kind, |t| {
            let s = t.read_sts()?;
            Ok(cond(s).then_some(s))
        })
    }

    /// A usable burst count: from `status` if non-zero, else polled up to TIMEOUT_A (Linux's
    /// `get_burstcount`: parts report 0 for long stretches while they move data), clamped to
    /// the transport's transfer limit.
    fn burst(&mut self, status: u32) -> Result<usize, Error<R::BusError>> {
        let mut burst = sts::burst_count(status);
        if burst == 0 {
            let a = self.timeouts.a_us;
            let s = self.wait_sts(a, TimeoutKind::Status, |s| sts::burst_count(s) > 0)?;
            burst = sts::burst_count(s);
        }
        Ok(burst.clamp(1, self.regs.max_transfer().max(1)))
    }

    fn send(&mut self, command: &[u8]) -> Result<(), Error<R::BusError>> {
        let mut status = self.read_sts()?;
        if status & sts::COMMAND_READY == 0 {
            self.write_sts(sts::COMMAND_READY)?;
            let b = if self.ready_seen {
                self.timeouts.b_us
            } else {
                self.timeouts.b_us.max(self.timeouts.first_command_us)
            };
            status = self.wait_sts(b, TimeoutKind::CommandReady, |s| {
                s & sts::COMMAND_READY != 0
            })?;
        }
        let len = command.len();
        let mut written = 0;
        while written < len {
            // All but the last byte in bursts, then the last byte alone, so Expect can be
            // checked before it.
            let limit = if written + 1 < len { len - 1 } else { len };
            let n = self.burst(status)?.min(limit - written);
            let chunk = command
                .get(written..written + n)
                .ok_or(Error::Usage(UsageError::CommandSize(len)))?;
            self.regs.write(self.locality, Register::DataFifo, chunk)?;
            written += n;
            let c = self.timeouts.c_us;
            status = self.wait_sts(c, TimeoutKind::Status, |s| s & sts::VALID != 0)?;
            let expect = status & sts::EXPECT != 0;
            if written < len && !expect {
                return Err(Error::Protocol(ProtocolError::ExpectCleared { written }));
            }
            if written == len && expect {
                return Err(Error::Protocol(ProtocolError::ExpectStillSet));
            }
        }
        self.check_checksum(command)?;
        self.write_sts(sts::GO)
    }

    fn check_checksum(&mut self, data: &[u8]) -> Result<(), Error<R::BusError>> {
        if let Some(reported) = self.regs.fifo_checksum(self.locality)? {
            let computed = crc16_kermit(data);
            if computed != reported {
                return Err(Error::Protocol(ProtocolError::Checksum {
                    computed,
                    reported,
                }));
            }
        }
        Ok(())
    }

    fn read_fifo(&mut self, buf: &mut [u8]) -> Result<(), Error<R::BusError>> {
        let mut done = 0;
        while done < buf.len() {
            let c = self.timeouts.c_us;
            let want = sts::VALID | sts::DATA_AVAIL;
            let status = self.wait_sts(c, TimeoutKind::Status, |s| s & want == want)?;
            let n = self.burst(status)?.min(buf.len() - done);
            let chunk = buf
                .get_mut(done..done + n)
                .ok_or(Error::Usage(UsageError::TransferTooLong(n)))?;
            self.regs.read(self.locality, Register::DataFifo, chunk)?;
            done += n;
        }
        Ok(())
    }

    fn receive(&mut self, cc: u32, response: &mut [u8]) -> Result<usize, Error<R::BusError>> {
        let want = sts::VALID | sts::DATA_AVAIL;
        let duration = self.timeouts.duration_us(cc);
        self.poll_growing(duration, TimeoutKind::Response, RESPONSE_POLL_MAX_US, |t| {
            let s = t.read_sts()?;
            Ok((s & want == want).then_some(()))
        })?;
        let mut attempt = 0;
        loop {
            let header = response
                .get_mut(..HEADER_LEN)
                .ok_or(Error::Usage(UsageError::CommandSize(0)))?;
            self.read_fifo(header)?;
            let size = match header.get(2..6) {
                Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
                _ => 0,
            };
            let len = usize::try_from(size).unwrap_or(usize::MAX);
            let body = response
                .get_mut(HEADER_LEN..len)
                .ok_or(Error::Protocol(ProtocolError::ResponseSize { size }))?;
            self.read_fifo(body)?;
            let c = self.timeouts.c_us;
            let status = self.wait_sts(c, TimeoutKind::Status, |s| s & sts::VALID != 0)?;
            if status & sts::DATA_AVAIL != 0 {
                return Err(Error::Protocol(ProtocolError::ResponseTooLong));
            }
            let frame = response.get(..len).unwrap_or_default();
            match self.check_checksum(frame) {
                Err(Error::Protocol(ProtocolError::Checksum { .. }))
                    if attempt + 1 < CHECKSUM_RETRIES =>
                {
                    attempt += 1;
                    self.write_sts(sts::RESPONSE_RETRY)?;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    self.write_sts(sts::COMMAND_READY)?;
                    return Ok(len);
                }
            }
        }
    }

    /// Sends `command`, again after a transfer failure before tpmGo (see [`SEND_RETRIES`]).
    fn send_retrying(&mut self, command: &[u8]) -> Result<(), Error<R::BusError>> {
        let mut attempt = 0;
        loop {
            let e = match self.send(command) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            self.abort();
            attempt += 1;
            let transfer = matches!(
                e,
                Error::Protocol(
                    ProtocolError::Checksum { .. }
                        | ProtocolError::ExpectCleared { .. }
                        | ProtocolError::ExpectStillSet
                ) | Error::Timeout(TimeoutKind::Status)
            );
            if !transfer || attempt >= SEND_RETRIES {
                return Err(e);
            }
        }
    }
}

/// Whether TPM_ACCESS says the locality is ours: valid and active with no request of ours
/// still pending (Linux's `check_locality` also requires requestUse clear).
fn granted(a: u8) -> bool {
    a & (access::VALID | access::ACTIVE_LOCALITY | access::REQUEST_USE)
        == access::VALID | access::ACTIVE_LOCALITY
}

impl<R: RegisterAccess, C: Clock> Transport for Tis<R, C> {
    type Error = Error<R::BusError>;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        if command.len() < HEADER_LEN || command.len() > MAX_FRAME {
            return Err(Error::Usage(UsageError::CommandSize(command.len())));
        }
        if response.len() < HEADER_LEN {
            return Err(Error::Usage(UsageError::CommandSize(response.len())));
        }
        let cc = match command.get(6..10) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        };
        // A TPM reset during the command (its locality gone, STS all ones) is recovered from
        // once: the command goes again to the TPM, which then answers TPM_RC_INITIALIZE.
        let mut recovered = false;
        loop {
            self.ensure_locality()?;
            let result = match self.send_retrying(command) {
                Ok(()) => self.receive(cc, response).inspect_err(|_| self.abort()),
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    self.ready_seen = true;
                    return Ok(n);
                }
                Err(e) => {
                    let lost = !matches!(self.read_access(), Ok(a) if granted(a));
                    if recovered || !lost {
                        return Err(e);
                    }
                    recovered = true;
                }
            }
        }
    }

    fn back_off(&mut self, us: u32) {
        self.clock.delay_us(us);
    }
}
