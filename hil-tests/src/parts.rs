//! Profiles of the discrete TPMs the boards name, for the bus models: how each part departs
//! from QEMU's always-ready model, in simulated time ([`crate::clock::SimClock`]), so a test
//! of a two-minute key generation takes a fraction of a second.
//!
//! | quirk | SLB9670 (SPI) | SLB9673 (I2C) | ST33KTPM2XI2C | NPCT75x (SPI/I2C) | source |
//! |---|---|---|---|---|---|
//! | RSA-2048 CreatePrimary/Create | 40 s | 90 s | 35 s | 60 s | Infineon: "up to ~1–2 minutes on some of our TPMs"; Linux allows TPM2_DURATION_LONG_LONG 300 s |
//! | Quote / Sign / ActivateCredential | 0.4 / 0.4 / 0.5 s | same | same | same | within TPM2_DURATION_LONG (2 s) |
//! | FlushContext, PCR_Read | 25 ms | 25 ms | 25 ms | 25 ms | above Linux's old 20 ms "short" class |
//! | commandReady after a request | 2.25 s | 2.25 s | 10 ms | 100 ms | Infineon, why Linux's TIMEOUT_B is 4 s |
//! | burstCount 0 after each FIFO byte | – | – | 100 ms | – | above TIMEOUT_D (30 ms), below TIMEOUT_A (750 ms) |
//! | status sticks (first commands) | 2 | 2 | – | – | Infineon erratum, Linux "Workaround failed command reception on Infineon devices" |
//! | NACK while executing (I2C) | – | yes | – | yes | Linux/tpm2-tss: read errors are "not ready" |
//! | ACCESS.valid after power-up | 60 ms | 60 ms | 30 ms | 30 ms | SLB9670 datasheet reset timing; U-Boot waits 30 ms |
//! | SelfTest answers TESTING once, first Quote RETRY once | yes | yes | yes | yes | Linux tpm2_do_selftest; wolfTPM (daUsed) |
//!
//! [`PaddedNv`] wraps a backend so an NV index reads bigger than its data, filled with 0xFF, as
//! STMicro ST33 parts store their EK certificates.

use crate::clock::SimClock;
use crate::tis::{Answer, Quirks, TisConfig};

/// A TPM part the boards name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Infineon OPTIGA SLB9670 (SPI), on the Pico board.
    Slb9670,
    /// Infineon OPTIGA SLB9673 (I2C).
    Slb9673,
    /// STMicro ST33KTPM2XI2C (I2C), on the Nucleo board.
    St33ktpm2xi2c,
    /// Nuvoton NPCT75x.
    Npct75x,
}

/// TPM_RC_RETRY.
pub const RC_RETRY: u32 = 0x922;
/// TPM_RC_TESTING.
pub const RC_TESTING: u32 = 0x90A;
/// TPM_RC_YIELDED.
pub const RC_YIELDED: u32 = 0x908;

fn keygen_us(part: Part) -> u64 {
    match part {
        Part::Slb9670 => 40_000_000,
        Part::Slb9673 => 90_000_000,
        Part::St33ktpm2xi2c => 35_000_000,
        Part::Npct75x => 60_000_000,
    }
}

/// Command durations common to the parts, keygen aside (µs).
fn common_duration_us(cc: u32) -> u64 {
    match cc {
        0x158 | 0x15D => 400_000,        // Quote, Sign
        0x147 => 500_000,                // ActivateCredential
        0x165 | 0x17E => 25_000,         // FlushContext, PCR_Read
        0x182 => 30_000,                 // PCR_Extend
        0x14E => 60_000,                 // NV_Read
        0x176 | 0x151 => 100_000,        // StartAuthSession, PolicySecret
        0x144 => 100_000,                // Startup
        0x17A | 0x173 | 0x169 => 10_000, // GetCapability, ReadPublic, NV_ReadPublic
        _ => 50_000,
    }
}

fn slb9670_us(cc: u32) -> u64 {
    duration(Part::Slb9670, cc)
}
fn slb9673_us(cc: u32) -> u64 {
    duration(Part::Slb9673, cc)
}
fn st33_us(cc: u32) -> u64 {
    duration(Part::St33ktpm2xi2c, cc)
}
fn npct_us(cc: u32) -> u64 {
    duration(Part::Npct75x, cc)
}

/// How long `part` runs command `cc` (simulated µs).
pub fn duration(part: Part, cc: u32) -> u64 {
    match cc {
        // CreatePrimary, Create, CreateLoaded
        0x131 | 0x153 | 0x191 => keygen_us(part),
        _ => common_duration_us(cc),
    }
}

impl Part {
    /// The TIS quirks of this part, timed by `clock`.
    pub fn quirks(self, clock: &SimClock) -> Quirks {
        let infineon = matches!(self, Self::Slb9670 | Self::Slb9673);
        Quirks {
            clock: Some(clock.clone()),
            duration_us: Some(match self {
                Self::Slb9670 => slb9670_us,
                Self::Slb9673 => slb9673_us,
                Self::St33ktpm2xi2c => st33_us,
                Self::Npct75x => npct_us,
            }),
            ready_delay_us: match self {
                Self::Slb9670 | Self::Slb9673 => 2_250_000,
                Self::St33ktpm2xi2c => 10_000,
                Self::Npct75x => 100_000,
            },
            zero_burst_us: if self == Self::St33ktpm2xi2c {
                100_000
            } else {
                0
            },
            sticky_commands: if infineon { 2 } else { 0 },
            answers: vec![
                Answer {
                    cc: 0x143,
                    rc: RC_TESTING,
                    times: 1,
                },
                Answer {
                    cc: 0x158,
                    rc: RC_RETRY,
                    times: 1,
                },
            ],
            access_valid_after_us: if infineon { 60_000 } else { 30_000 },
        }
    }

    /// The TIS state machine configured as this part.
    pub fn tis(self, clock: &SimClock) -> TisConfig {
        TisConfig {
            quirks: self.quirks(clock),
            ..TisConfig::default()
        }
    }

    /// Whether the part NACKs its I2C address while it executes a command.
    pub fn nacks_while_busy(self) -> bool {
        matches!(self, Self::Slb9673 | Self::Npct75x)
    }
}

/// A backend whose NV index `index` reads as `padded_size` bytes: its data, then 0xFF, as
/// ST33 parts fill the EK certificate index. TPM2_NV_ReadPublic reports the padded size;
/// TPM2_NV_Read past the data returns 0xFF (the part within it comes from the TPM).
#[derive(Debug)]
pub struct PaddedNv<T> {
    inner: T,
    index: u32,
    padded_size: u16,
    real_size: Option<u16>,
}

impl<T> PaddedNv<T> {
    /// Pads `index` of `inner` to `padded_size` bytes.
    pub fn new(inner: T, index: u32, padded_size: u16) -> Self {
        Self {
            inner,
            index,
            padded_size,
            real_size: None,
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<T: vouch_tpm::Transport> vouch_tpm::Transport for PaddedNv<T> {
    type Error = T::Error;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, T::Error> {
        let cc = be32(command, 6);
        match cc {
            // NV_ReadPublic(index): report the padded size.
            Some(0x169) if be32(command, 10) == Some(self.index) => {
                let n = self.inner.transact(command, response)?;
                // header 10, TPM2B size 2, nvIndex 4, nameAlg 2, attributes 4, authPolicy.
                if be32(response, 6) == Some(0)
                    && let Some(policy) = be16(response, 22)
                {
                    let at = 24 + usize::from(policy);
                    if let Some(real) = be16(response, at) {
                        self.real_size = Some(real);
                        if let Some(dst) = response.get_mut(at..at + 2) {
                            dst.copy_from_slice(&self.padded_size.to_be_bytes());
                        }
                    }
                }
                Ok(n)
            }
            // NV_Read(auth, index) ... size, offset (the last four bytes).
            Some(0x14E) if be32(command, 14) == Some(self.index) => {
                let real = self.real_size.unwrap_or(self.padded_size);
                let len = command.len();
                let (Some(size), Some(offset)) = (be16(command, len - 4), be16(command, len - 2))
                else {
                    return self.inner.transact(command, response);
                };
                if u32::from(offset) + u32::from(size) <= u32::from(real) {
                    return self.inner.transact(command, response);
                }
                let inside = real.saturating_sub(offset).min(size);
                let mut data = Vec::new();
                if inside > 0 {
                    let mut cmd = command.to_vec();
                    if let Some(dst) = cmd.get_mut(len - 4..len - 2) {
                        dst.copy_from_slice(&inside.to_be_bytes());
                    }
                    let n = self.inner.transact(&cmd, response)?;
                    if be32(response, 6) != Some(0) {
                        return Ok(n);
                    }
                    // header 10, parameterSize 4, TPM2B size 2, data.
                    data.extend_from_slice(
                        response
                            .get(16..16 + usize::from(inside))
                            .unwrap_or_default(),
                    );
                }
                data.resize(usize::from(size), 0xFF);
                let mut out = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
                out.extend_from_slice(&(u32::from(size) + 2).to_be_bytes());
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(&[0, 0, 0x01, 0, 0]); // password session response
                let total = u32::try_from(out.len()).unwrap_or(0);
                if let Some(dst) = out.get_mut(2..6) {
                    dst.copy_from_slice(&total.to_be_bytes());
                }
                let dst = response.get_mut(..out.len()).unwrap_or_default();
                let n = dst.len();
                dst.copy_from_slice(out.get(..n).unwrap_or_default());
                Ok(n)
            }
            _ => self.inner.transact(command, response),
        }
    }

    fn back_off(&mut self, us: u32) {
        self.inner.back_off(us);
    }
}
