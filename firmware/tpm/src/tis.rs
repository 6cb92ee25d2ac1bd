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
/// How often a command is re-sent after a checksum mismatch.
const CHECKSUM_RETRIES: usize = 3;

/// The TCG timeouts and command durations, in microseconds. Defaults are Linux's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TIMEOUT_A: locality changes (750 ms).
    pub a_us: u32,
    /// TIMEOUT_B: commandReady (2 s; vendors ask for 4 s on slow parts).
    pub b_us: u32,
    /// TIMEOUT_C: stsValid after a FIFO access (200 ms).
    pub c_us: u32,
    /// TIMEOUT_D: burstCount becoming non-zero (30 ms).
    pub d_us: u32,
    /// Duration of short commands (20 ms).
    pub short_us: u32,
    /// Duration of medium commands (750 ms).
    pub medium_us: u32,
    /// Duration of long commands (2 s).
    pub long_us: u32,
    /// Duration of key generation and full self-tests (30 s: RSA key generation is slow).
    pub keygen_us: u32,
    /// Pause between two polls of a register (100 µs).
    pub poll_us: u32,
    /// The commandReady budget before the first command after reset, while the TPM may still
    /// initialise and report STS = 0 (5 s).
    pub first_command_us: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            a_us: 750_000,
            b_us: 2_000_000,
            c_us: 200_000,
            d_us: 30_000,
            short_us: 20_000,
            medium_us: 750_000,
            long_us: 2_000_000,
            keygen_us: 30_000_000,
            poll_us: 100,
            first_command_us: 5_000_000,
        }
    }
}

/// How long a command may take, by command code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    /// Table look-ups (e.g. PCR_Read, FlushContext).
    Short,
    /// Simple commands (e.g. Startup, GetCapability, PCR_Extend, ReadPublic).
    Medium,
    /// Signing, decryption, NV access, GetRandom and anything unknown.
    Long,
    /// Key generation (CreatePrimary, Create, CreateLoaded) and SelfTest.
    KeyGeneration,
}

impl Duration {
    /// The class of the command with code `cc`.
    #[must_use]
    pub fn of(cc: u32) -> Self {
        match cc {
            // FlushContext, PCR_Read, ReadClock
            0x165 | 0x17E | 0x181 => Self::Short,
            // Startup, Shutdown, GetCapability, PCR_Extend, ReadPublic, NV_ReadPublic,
            // StartAuthSession, PolicySecret
            0x144 | 0x145 | 0x17A | 0x182 | 0x173 | 0x169 | 0x176 | 0x151 => Self::Medium,
            // CreatePrimary, Create, CreateLoaded, SelfTest
            0x131 | 0x153 | 0x191 | 0x143 => Self::KeyGeneration,
            _ => Self::Long,
        }
    }
}

impl Timeouts {
    /// The time budget for the response of the command with code `cc`.
    #[must_use]
    pub fn duration_us(&self, cc: u32) -> u32 {
        match Duration::of(cc) {
            Duration::Short => self.short_us,
            Duration::Medium => self.medium_us,
            Duration::Long => self.long_us,
            Duration::KeyGeneration => self.keygen_us,
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

    /// Requests locality 0, runs the transport's set-up, checks the interface capability
    /// register and returns TPM_DID_VID. Call once before the first command (some TPMs need
    /// ~30 ms after reset before they answer).
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

    /// Makes `locality` (0..=4) the active locality, requesting it and waiting up to TIMEOUT_A.
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
        let granted = |a: u8| {
            a & (access::VALID | access::ACTIVE_LOCALITY) == access::VALID | access::ACTIVE_LOCALITY
        };
        if granted(self.read_access()?) {
            self.active = true;
            return Ok(());
        }
        self.regs
            .write(locality, Register::Access, &[access::REQUEST_USE])?;
        let timeout = self.timeouts.a_us;
        self.poll(timeout, TimeoutKind::Locality, |t| {
            Ok(granted(t.read_access()?).then_some(()))
        })?;
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
    /// matching number of polls.
    fn poll<T>(
        &mut self,
        timeout_us: u32,
        kind: TimeoutKind,
        mut f: impl FnMut(&mut Self) -> Result<Option<T>, Error<R::BusError>>,
    ) -> Result<T, Error<R::BusError>> {
        let poll_us = self.timeouts.poll_us.max(1);
        let max_polls = (timeout_us / poll_us).saturating_mul(2).saturating_add(16);
        let start = self.clock.now_us();
        for _ in 0..max_polls {
            if let Some(v) = f(self)? {
                return Ok(v);
            }
            if self.clock.now_us().saturating_sub(start) >= u64::from(timeout_us) {
                break;
            }
            self.clock.delay_us(poll_us);
        }
        Err(Error::Timeout(kind))
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

    /// A usable burst count: from `status` if non-zero, else polled (TIMEOUT_D), clamped to
    /// the transport's transfer limit.
    fn burst(&mut self, status: u32) -> Result<usize, Error<R::BusError>> {
        let mut burst = sts::burst_count(status);
        if burst == 0 {
            let d = self.timeouts.d_us;
            let s = self.wait_sts(d, TimeoutKind::Status, |s| sts::burst_count(s) > 0)?;
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
        self.wait_sts(duration, TimeoutKind::Response, |s| s & want == want)?;
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
        if !self.active {
            self.request_locality(self.locality)?;
        }
        // A command whose checksum mismatches has not run yet (no tpmGo): send it again.
        let mut attempt = 0;
        loop {
            match self.send(command) {
                Ok(()) => break,
                Err(e) => {
                    self.abort();
                    attempt += 1;
                    let checksum = matches!(e, Error::Protocol(ProtocolError::Checksum { .. }));
                    if !checksum || attempt >= CHECKSUM_RETRIES {
                        return Err(e);
                    }
                }
            }
        }
        let n = self.receive(cc, response).inspect_err(|_| self.abort())?;
        self.ready_seen = true;
        Ok(n)
    }
}
