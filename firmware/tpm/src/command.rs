//! The command layer: typed TPM 2.0 commands over any [`Transport`].
//!
//! This layer writes every command frame itself (header, handles, password or policy
//! authorization, parameters). Builds with debug assertions, which every host test is, also
//! have tpm2-protocol check each frame before it is sent: its `TpmCommand` view and, where the
//! owned struct is cheap enough, the command's owned struct decoding the handle and parameter
//! areas. Release firmware leaves the checks (and tpm2-protocol's command code) out.
//! Responses are checked and decoded by the pure functions in [`response`](crate::response).
//!
//! [`Tpm`] owns a command and a response buffer of `N` bytes each (default 4096, the usual
//! TPM_PT_MAX_COMMAND_SIZE), so it needs no heap; put it in a `static` or on a big enough stack.

use tpm2_protocol::frame::{self, TpmFrame, TpmUnmarshalBody};

use crate::Transport;
use crate::response::{self, ResponseCode, ResponseError};
use crate::types::{
    ALG_ECC, ALG_NULL, ALG_RSA, ALG_SHA256, Attestation, CreatedObject, CreatedPrimary, Digest,
    Loaded, NvPublic, PcrBanks, PcrValues, Public, ReadPublic,
};
use crate::wire::{Malformed, Overflow, Writer};

/// TPM_RH_OWNER.
pub const RH_OWNER: u32 = 0x4000_0001;
/// TPM_RH_NULL.
pub const RH_NULL: u32 = 0x4000_0007;
/// TPM_RS_PW: the password session.
pub const RS_PW: u32 = 0x4000_0009;
/// TPM_RH_ENDORSEMENT.
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
/// TPM_RH_PLATFORM.
pub const RH_PLATFORM: u32 = 0x4000_000C;
/// TPM_PT_NV_BUFFER_MAX.
pub const PT_NV_BUFFER_MAX: u32 = 0x12C;
/// The first pause before a command answered with TPM_RC_RETRY, TPM_RC_YIELDED or
/// TPM_RC_TESTING is sent again (20 ms); it doubles after every try, up to
/// [`RETRY_BACKOFF_LAST_US`]. Linux's `tpm_transmit_cmd` (`tpm-interface.c`): 20 ms
/// (TPM2_DURATION_SHORT) doubling; wolfTPM notes TPM_RC_RETRY while the TPM persists
/// `daUsed` on the first use of a DA-protected key.
pub const RETRY_BACKOFF_FIRST_US: u32 = 20_000;
/// The last pause (2.56 s): 20 + 40 + … + 2560 ms is ~5.1 s of waiting over 9 tries.
pub const RETRY_BACKOFF_LAST_US: u32 = 2_560_000;
/// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: the command did not run.
const RETRY_CODES: [u32; 3] = [0x922, 0x908, 0x90A];
/// TPM_RC_TESTING.
const RC_TESTING: u32 = 0x90A;
/// TPM_CC_SelfTest.
const CC_SELF_TEST: u32 = 0x143;
/// The largest EK certificate read from NV (bytes). Real ones are 0.9–1.6 KiB; the TCG
/// profile leaves room up to the NV index's size, which ST33 parts fill with 0xFF.
pub const MAX_EK_CERTIFICATE: usize = 4096;
/// The standard EK authPolicy: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256.
pub const EK_AUTH_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// TPMA_OBJECT of the EK templates: fixedTPM | fixedParent | sensitiveDataOrigin |
/// adminWithPolicy | restricted | decrypt.
pub const EK_ATTRIBUTES: u32 = 0x0003_00B2;
/// TPMA_OBJECT of the AK templates: fixedTPM | fixedParent | sensitiveDataOrigin |
/// userWithAuth | noDA | restricted | sign. noDA: the AK's empty password is no secret to
/// guard, and without it every unclean TPM reset after a quote counts as a failed
/// authorization until the TPM locks out (wolfTPM's AK templates set it too).
pub const AK_ATTRIBUTES: u32 = 0x0005_0472;
/// The AK attributes before noDA was added; AKs persisted with them are still used.
pub const AK_ATTRIBUTES_V1: u32 = 0x0005_0072;

/// TPMA_OBJECT of the ephemeral ECDH key: fixedTPM | fixedParent | sensitiveDataOrigin |
/// userWithAuth | noDA | decrypt (not restricted: TPM2_ECDH_ZGen takes any point).
pub const ECDH_ATTRIBUTES: u32 = 0x0002_0472;

/// Why a command did not yield a value. Says who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The transport failed to deliver the command or the response (see its error).
    Transport(E),
    /// The TPM refused the command with this response code. Data, not a bus failure.
    Tpm(ResponseCode),
    /// The response is not a valid answer to the command; fault: the TPM or the bus.
    Malformed(Malformed),
    /// tpm2-protocol rejected the command built from the caller's input (e.g. a value too long
    /// for its TPM2B); fault: the caller.
    Marshal,
    /// The data does not fit a buffer (the `N` of [`Tpm`], or the caller's output slice);
    /// fault: the caller's sizing.
    Capacity,
    /// No digest was supplied for this PCR bank's algorithm.
    UnsupportedAlgorithm(u16),
}

impl<E> From<ResponseError> for CommandError<E> {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::Tpm(rc) => Self::Tpm(rc),
            ResponseError::Malformed(m) => Self::Malformed(m),
        }
    }
}

impl<E> From<Malformed> for CommandError<E> {
    fn from(m: Malformed) -> Self {
        Self::Malformed(m)
    }
}

impl<E> From<Overflow> for CommandError<E> {
    fn from(_: Overflow) -> Self {
        Self::Capacity
    }
}

/// TPM2_Startup's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupType {
    /// TPM_SU_CLEAR: a fresh start (reset PCRs).
    Clear,
    /// TPM_SU_STATE: resume saved state.
    State,
}

/// What TPM2_Startup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// The TPM started now.
    Started,
    /// The TPM had already been started (it answered TPM_RC_INITIALIZE).
    AlreadyStarted,
}

/// Which TCG EK Credential Profile template to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkKind {
    /// RSA-2048, template L-1; certificate at NV index 0x01C00002.
    Rsa2048,
    /// ECC NIST P-256, template L-2; certificate at NV index 0x01C0000A.
    EccP256,
}

impl EkKind {
    /// The NV index of this EK's certificate.
    #[must_use]
    pub const fn certificate_index(self) -> u32 {
        match self {
            Self::Rsa2048 => 0x01C0_0002,
            Self::EccP256 => 0x01C0_000A,
        }
    }
}

/// Which attestation key template to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkKind {
    /// ECC NIST P-256 with ECDSA-SHA256.
    #[default]
    EccP256,
    /// RSA-2048 with RSASSA-SHA256.
    Rsa2048,
}

/// How to authorize the use of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth<'a> {
    /// A password session (TPM_RS_PW) with this password; `Password(&[])` for empty auth.
    Password(&'a [u8]),
    /// A policy session the caller has started and satisfied; used once (continueSession
    /// clear, so the TPM flushes it).
    PolicySession(u32),
    /// A fresh policy session satisfying the EK policy (PolicySecret(TPM_RH_ENDORSEMENT)),
    /// started for this command and flushed after it.
    EkPolicy,
}

/// An authorization area entry, resolved.
#[derive(Debug, Clone, Copy)]
struct Session<'a> {
    handle: u32,
    hmac: &'a [u8],
}

impl Session<'_> {
    const PASSWORD: Session<'static> = Session {
        handle: RS_PW,
        hmac: &[],
    };
}

/// A started policy session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySession {
    /// The session handle.
    pub handle: u32,
    /// The TPM's nonce.
    pub nonce_tpm: Digest,
}

/// Writes an empty TPM2B_SENSITIVE_CREATE (no userAuth, no data).
fn empty_sensitive(w: &mut Writer<'_>) -> Result<(), Overflow> {
    w.u16(4)?;
    w.u16(0)?;
    w.u16(0)
}

/// Writes the TPMT_PUBLIC of an EK template (TCG EK Credential Profile, templates L-1/L-2).
pub(crate) fn ek_template(kind: EkKind, w: &mut Writer<'_>) -> Result<(), Overflow> {
    let ty = match kind {
        EkKind::Rsa2048 => ALG_RSA,
        EkKind::EccP256 => ALG_ECC,
    };
    w.u16(ty)?;
    w.u16(ALG_SHA256)?;
    w.u32(EK_ATTRIBUTES)?;
    w.tpm2b(&EK_AUTH_POLICY)?;
    // symmetric: AES-128-CFB
    w.u16(0x0006)?;
    w.u16(128)?;
    w.u16(0x0043)?;
    // scheme: NULL
    w.u16(ALG_NULL)?;
    match kind {
        EkKind::Rsa2048 => {
            w.u16(2048)?; // keyBits
            w.u32(0)?; // exponent: default
            w.tpm2b(&[0u8; 256]) // unique: 256 zero bytes
        }
        EkKind::EccP256 => {
            w.u16(0x0003)?; // curveID: NIST P-256
            w.u16(ALG_NULL)?; // kdf: NULL
            w.tpm2b(&[0u8; 32])?; // unique.x
            w.tpm2b(&[0u8; 32]) // unique.y
        }
    }
}

/// Writes the TPMT_PUBLIC of an AK template (restricted signing key, SHA-256).
pub(crate) fn ak_template(kind: AkKind, w: &mut Writer<'_>) -> Result<(), Overflow> {
    let ty = match kind {
        AkKind::Rsa2048 => ALG_RSA,
        AkKind::EccP256 => ALG_ECC,
    };
    w.u16(ty)?;
    w.u16(ALG_SHA256)?;
    w.u32(AK_ATTRIBUTES)?;
    w.tpm2b(&[])?; // no authPolicy
    w.u16(ALG_NULL)?; // symmetric: NULL
    match kind {
        AkKind::Rsa2048 => {
            w.u16(0x0014)?; // RSASSA
            w.u16(ALG_SHA256)?;
            w.u16(2048)?;
            w.u32(0)?;
            w.tpm2b(&[])
        }
        AkKind::EccP256 => {
            w.u16(0x0018)?; // ECDSA
            w.u16(ALG_SHA256)?;
            w.u16(0x0003)?; // NIST P-256
            w.u16(ALG_NULL)?; // kdf
            w.tpm2b(&[])?;
            w.tpm2b(&[])
        }
    }
}

/// Writes a TPML_PCR_SELECTION.
fn pcr_selection(w: &mut Writer<'_>, banks: &[crate::types::PcrBank]) -> Result<(), Overflow> {
    w.u32(u32::try_from(banks.len()).map_err(|_| Overflow)?)?;
    for b in banks {
        w.u16(b.alg)?;
        let mask = b.pcrs.to_le_bytes();
        // At least 3 octets (PCR_SELECT_MIN); a 4th only if PCRs 24..31 are selected.
        let size = if b.pcrs > 0x00FF_FFFF { 4 } else { 3 };
        w.u8(size)?;
        w.bytes(mask.get(..usize::from(size)).ok_or(Overflow)?)?;
    }
    Ok(())
}

/// Where the DER certificate lies in an EK certificate NV index of `size` bytes whose first
/// bytes are `head` (at least 9 when the index has them): `(start, length)`. Skips the TCG
/// PC Client NV header `10 01 00 <u16 length>` if present; the DER SEQUENCE's length (short
/// form, or long form with 1–2 length bytes) must fit the index.
fn certificate_span(head: &[u8], size: usize) -> Option<(usize, usize)> {
    let (start, der) = match head {
        [0x10, 0x01, 0x00, _, _, rest @ ..] => (5, rest),
        _ => (0, head),
    };
    let (header, body) = match der {
        [0x30, 0x82, a, b, ..] => (4, usize::from(u16::from_be_bytes([*a, *b]))),
        [0x30, 0x81, a, ..] if *a >= 0x80 => (3, usize::from(*a)),
        [0x30, a, ..] if *a < 0x80 => (2, usize::from(*a)),
        _ => return None,
    };
    let len = header + body;
    (start + len <= size).then_some((start, len))
}

/// A TPM 2.0 client over a [`Transport`], with `N`-byte command and response buffers.
pub struct Tpm<T: Transport, const N: usize = 4096> {
    transport: T,
    cmd: [u8; N],
    rsp: [u8; N],
    nv_buffer_max: Option<u16>,
}

impl<T: Transport, const N: usize> core::fmt::Debug for Tpm<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tpm").field("buffer_size", &N).finish()
    }
}

/// The result of a command on transport `T`.
pub type CommandResult<V, T> = Result<V, CommandError<<T as Transport>::Error>>;

impl<T: Transport, const N: usize> Tpm<T, N> {
    /// Wraps a transport. No I/O.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            cmd: [0; N],
            rsp: [0; N],
            nv_buffer_max: None,
        }
    }

    /// Gives back the transport.
    pub fn release(self) -> T {
        self.transport
    }

    /// The transport, e.g. to change locality.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Writes and sends command `C` (code `cc`) with this crate's writer. In builds with debug
    /// assertions (every host test) the frame is also checked by tpm2-protocol before it is
    /// sent: its zero-copy `TpmCommand` view (tag, size, handle count for `cc`, authorization
    /// area) and `C`'s owned struct decoding the handle and parameter areas (every field
    /// against the TPM 2.0 types). Release firmware carries neither: the checks hold for
    /// every command these writers can produce, and the host tests run them all.
    fn run<C: TpmFrame + TpmUnmarshalBody>(
        &mut self,
        cc: u32,
        handles: &[u32],
        sessions: &[Session<'_>],
        params: impl FnOnce(&mut Writer<'_>) -> Result<(), Overflow>,
    ) -> CommandResult<usize, T> {
        let (len, params_at) = self.write_command(cc, handles, sessions, params)?;
        #[cfg(debug_assertions)]
        {
            let handles_at = 10;
            let handles_end = handles_at + 4 * handles.len();
            C::unmarshal_body(
                self.cmd.get(handles_at..handles_end).unwrap_or_default(),
                self.cmd.get(params_at..len).unwrap_or_default(),
            )
            .map_err(|_| CommandError::Marshal)?;
        }
        #[cfg(not(debug_assertions))]
        let _ = params_at;
        self.exchange(len)
    }

    /// Writes and sends the frame of command `cc`, for the commands without a `C` to check the
    /// parameters against (the crate docs, "Memory", say why); checked like [`Tpm::run`]'s
    /// frames by the `TpmCommand` view in builds with debug assertions.
    #[inline(never)]
    fn run_direct(
        &mut self,
        cc: u32,
        handles: &[u32],
        sessions: &[Session<'_>],
        params: impl FnOnce(&mut Writer<'_>) -> Result<(), Overflow>,
    ) -> CommandResult<usize, T> {
        let (len, _) = self.write_command(cc, handles, sessions, params)?;
        self.exchange(len)
    }

    /// Writes the frame of command `cc` into `self.cmd`; returns its length and where the
    /// parameter area starts.
    fn write_command(
        &mut self,
        cc: u32,
        handles: &[u32],
        sessions: &[Session<'_>],
        params: impl FnOnce(&mut Writer<'_>) -> Result<(), Overflow>,
    ) -> CommandResult<(usize, usize), T> {
        let mut w = Writer::new(&mut self.cmd);
        w.u16(if sessions.is_empty() { 0x8001 } else { 0x8002 })?;
        w.u32(0)?; // size, patched below
        w.u32(cc)?;
        for h in handles {
            w.u32(*h)?;
        }
        if !sessions.is_empty() {
            let auth_size_at = w.len();
            w.u32(0)?; // authorizationSize, patched below
            for s in sessions {
                w.u32(s.handle)?;
                w.tpm2b(&[])?; // nonceCaller
                w.u8(0)?; // sessionAttributes: continueSession clear
                w.tpm2b(s.hmac)?;
            }
            let auth_size = w.len().saturating_sub(auth_size_at + 4);
            let auth_size = u32::try_from(auth_size).map_err(|_| Overflow)?;
            w.patch_u32(auth_size_at, auth_size)?;
        }
        let params_at = w.len();
        params(&mut w)?;
        let len = w.len();
        w.patch_u32(2, u32::try_from(len).map_err(|_| Overflow)?)?;
        #[cfg(debug_assertions)]
        frame::TpmCommand::cast(self.cmd.get(..len).unwrap_or_default())
            .and_then(|c| c.validate())
            .map_err(|_| CommandError::Marshal)?;
        Ok((len, params_at))
    }

    /// Sends the `len`-byte command in `self.cmd`; returns the response length in `self.rsp`.
    /// TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING mean the command did not run: it is
    /// sent again after 20 ms, 40 ms, … up to 2.56 s (~5 s in all), as Linux does.
    /// TPM_RC_TESTING from SelfTest itself is returned at once (the TPM tests in the
    /// background; Linux does the same to shorten boot).
    fn exchange(&mut self, len: usize) -> CommandResult<usize, T> {
        let cmd = self.cmd.get(..len).unwrap_or_default();
        let cc = match cmd.get(6..10) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        };
        let mut pause = RETRY_BACKOFF_FIRST_US;
        loop {
            let n = self
                .transport
                .transact(cmd, &mut self.rsp)
                .map_err(CommandError::Transport)?;
            let rc = match self.rsp.get(6..10) {
                Some(&[a, b, c, d]) if n == 10 => u32::from_be_bytes([a, b, c, d]),
                _ => 0,
            };
            let self_testing = rc == RC_TESTING && cc == CC_SELF_TEST;
            if !RETRY_CODES.contains(&rc) || self_testing || pause > RETRY_BACKOFF_LAST_US {
                return Ok(n);
            }
            self.transport.back_off(pause);
            pause = pause.saturating_mul(2);
        }
    }

    fn response(&self, n: usize) -> &[u8] {
        self.rsp.get(..n).unwrap_or_default()
    }

    /// Resolves `auth`, starting an EK policy session if asked. Returns the session and the
    /// handle to flush if the command fails.
    fn session<'a>(&mut self, auth: Auth<'a>) -> CommandResult<(Session<'a>, Option<u32>), T> {
        Ok(match auth {
            Auth::Password(p) => (
                Session {
                    handle: RS_PW,
                    hmac: p,
                },
                None,
            ),
            Auth::PolicySession(h) => (
                Session {
                    handle: h,
                    hmac: &[],
                },
                None,
            ),
            Auth::EkPolicy => {
                let h = self.start_ek_policy_session()?;
                (
                    Session {
                        handle: h,
                        hmac: &[],
                    },
                    Some(h),
                )
            }
        })
    }

    /// Flushes a session this layer started, if the command using it failed (on success the
    /// TPM flushed it, continueSession being clear).
    fn cleanup<V>(
        &mut self,
        started: Option<u32>,
        result: CommandResult<V, T>,
    ) -> CommandResult<V, T> {
        if let (Some(h), Err(_)) = (started, &result) {
            let _ = self.flush_context(h);
        }
        result
    }

    /// TPM2_Startup. TPM_RC_INITIALIZE is reported as [`Startup::AlreadyStarted`].
    ///
    /// # Errors
    /// Any other response code, a transport failure or a malformed response.
    pub fn startup(&mut self, ty: StartupType) -> CommandResult<Startup, T> {
        let su = match ty {
            StartupType::Clear => 0,
            StartupType::State => 1,
        };
        let n = self.run::<frame::TpmStartupCommand>(0x144, &[], &[], |w| w.u16(su))?;
        match response::parse_empty(self.response(n), 0x144) {
            Ok(()) => Ok(Startup::Started),
            Err(ResponseError::Tpm(ResponseCode::INITIALIZE)) => Ok(Startup::AlreadyStarted),
            Err(e) => Err(e.into()),
        }
    }

    /// TPM2_SelfTest. TPM_RC_TESTING is success: the TPM runs the tests in the background
    /// and commands that need them answer TPM_RC_TESTING until done, which [`Tpm`] waits out
    /// (Linux's `tpm2_do_selftest` treats it the same way).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn self_test(&mut self, full: bool) -> CommandResult<(), T> {
        let n = self.run::<frame::TpmSelfTestCommand>(0x143, &[], &[], |w| w.u8(u8::from(full)))?;
        match response::parse_empty(self.response(n), 0x143) {
            Err(ResponseError::Tpm(ResponseCode(RC_TESTING))) => Ok(()),
            r => Ok(r?),
        }
    }

    /// TPM2_Shutdown(`ty`): an orderly shutdown, so the next TPM2_Startup does not count an
    /// unclean reset. Linux sends Shutdown(CLEAR) before every reboot and power-off
    /// (`tpm_chip_unregister` / `tpm_class_shutdown`), Shutdown(STATE) before suspend.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn shutdown(&mut self, ty: StartupType) -> CommandResult<(), T> {
        let su = match ty {
            StartupType::Clear => 0,
            StartupType::State => 1,
        };
        let n = self.run_direct(0x145, &[], &[], |w| w.u16(su))?;
        Ok(response::parse_empty(self.response(n), 0x145)?)
    }

    /// Flushes every loaded transient object and every session the TPM holds (TPM_CAP_HANDLES
    /// of the transient, HMAC/loaded-session and policy/saved-session ranges, then
    /// TPM2_FlushContext each), as a resource manager does when a client goes away. Handles
    /// leaked by a response that never arrived (a reset link, a cancelled command) otherwise
    /// fill the TPM's few slots until TPM_RC_OBJECT_MEMORY. Returns how many were flushed.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn flush_transients(&mut self) -> CommandResult<usize, T> {
        let mut flushed = 0;
        for first in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
            let mut handles = [0u32; 8];
            // More than 8 of a kind is more than any TPM here holds; one pass is enough.
            let (count, _) = self.handles(first, &mut handles)?;
            for &h in handles.get(..count).unwrap_or_default() {
                // Only the range asked for (GetCapability may run on into the next).
                if h >> 24 == first >> 24 && self.flush_context(h).is_ok() {
                    flushed += 1;
                }
            }
        }
        Ok(flushed)
    }

    /// Fills `out` with random bytes from TPM2_GetRandom (several calls if needed).
    ///
    /// # Errors
    /// A response code, a transport failure, a malformed or empty response.
    pub fn get_random(&mut self, out: &mut [u8]) -> CommandResult<(), T> {
        let mut done = 0;
        while done < out.len() {
            let want = u16::try_from((out.len() - done).min(48)).unwrap_or(48);
            let n = self.run::<frame::TpmGetRandomCommand>(0x17B, &[], &[], |w| w.u16(want))?;
            let bytes = response::parse_get_random(self.rsp.get(..n).unwrap_or_default())?;
            if bytes.is_empty() || bytes.len() > usize::from(want) {
                return Err(CommandError::Malformed(Malformed::new(
                    10,
                    crate::wire::MalformedKind::Unexpected,
                )));
            }
            let dst = out
                .get_mut(done..done + bytes.len())
                .ok_or(CommandError::Capacity)?;
            dst.copy_from_slice(bytes);
            done += bytes.len();
        }
        Ok(())
    }

    fn get_capability(&mut self, cap: u32, property: u32, count: u32) -> CommandResult<usize, T> {
        self.run::<frame::TpmGetCapabilityCommand>(0x17A, &[], &[], |w| {
            w.u32(cap)?;
            w.u32(property)?;
            w.u32(count)
        })
    }

    /// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) for one property (e.g. TPM_PT_NV_BUFFER_MAX
    /// 0x12C); `None` if the TPM does not report it.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn tpm_property(&mut self, property: u32) -> CommandResult<Option<u32>, T> {
        let n = self.get_capability(6, property, 1)?;
        Ok(response::parse_tpm_property(self.response(n), property)?)
    }

    /// TPM2_GetCapability(TPM_CAP_PCRS): the PCR banks and their allocated PCRs.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn pcr_banks(&mut self) -> CommandResult<PcrBanks, T> {
        let n = self.get_capability(5, 0, 1)?;
        Ok(response::parse_pcr_banks(self.response(n))?)
    }

    /// TPM2_GetCapability(TPM_CAP_HANDLES) from handle `first` (e.g. 0x81000000 for
    /// persistent objects); fills `out`, returns (count, moreData).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn handles(&mut self, first: u32, out: &mut [u32]) -> CommandResult<(usize, bool), T> {
        let count = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let n = self.get_capability(1, first, count)?;
        Ok(response::parse_handles(self.response(n), out)?)
    }

    /// TPM2_PCR_Read of `selection` (at most 8 digests come back per call; see
    /// [`PcrValues::selection`]).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn pcr_read(&mut self, selection: &[crate::types::PcrBank]) -> CommandResult<PcrValues, T> {
        let n =
            self.run::<frame::TpmPcrReadCommand>(0x17E, &[], &[], |w| pcr_selection(w, selection))?;
        Ok(response::parse_pcr_read(self.response(n))?)
    }

    /// TPM2_PCR_Extend of PCR `pcr` with one digest per bank, `(algorithm, digest)`, all at
    /// once (password auth, empty).
    ///
    /// # Errors
    /// A response code (e.g. a digest missing for an active bank is not an error here, but a
    /// wrong digest size is rejected as [`CommandError::Marshal`]).
    pub fn pcr_extend(&mut self, pcr: u32, digests: &[(u16, &[u8])]) -> CommandResult<(), T> {
        let n = self.run_direct(0x182, &[pcr], &[Session::PASSWORD], |w| {
            w.u32(u32::try_from(digests.len()).map_err(|_| Overflow)?)?;
            for (alg, d) in digests {
                w.u16(*alg)?;
                w.bytes(d)?;
            }
            Ok(())
        })?;
        Ok(response::parse_empty(self.response(n), 0x182)?)
    }

    /// Extends PCR `pcr` in every active bank at once: reads the banks, asks `hash` for each
    /// bank's digest (`hash(alg, out)` writes it and returns its length, or `None` if it
    /// cannot), then runs one TPM2_PCR_Extend.
    ///
    /// # Errors
    /// [`CommandError::UnsupportedAlgorithm`] if `hash` declines a bank; as [`Tpm::pcr_extend`].
    pub fn pcr_extend_active_banks(
        &mut self,
        pcr: u32,
        mut hash: impl FnMut(u16, &mut [u8; 64]) -> Option<usize>,
    ) -> CommandResult<(), T> {
        let banks = self.pcr_banks()?;
        let mut digests = [(0u16, [0u8; 64], 0usize); 8];
        let mut count = 0;
        for (slot, bank) in digests.iter_mut().zip(banks.active()) {
            let len =
                hash(bank.alg, &mut slot.1).ok_or(CommandError::UnsupportedAlgorithm(bank.alg))?;
            if len > 64 {
                return Err(CommandError::Capacity);
            }
            slot.0 = bank.alg;
            slot.2 = len;
            count += 1;
        }
        let mut refs: [(u16, &[u8]); 8] = [(0, &[]); 8];
        for (r, d) in refs.iter_mut().zip(digests.iter()) {
            *r = (d.0, d.1.get(..d.2).unwrap_or_default());
        }
        self.pcr_extend(pcr, refs.get(..count).unwrap_or_default())
    }

    /// TPM2_CreatePrimary in `hierarchy` (password auth, empty) with the TPMT_PUBLIC
    /// `template` (without size prefix).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn create_primary(
        &mut self,
        hierarchy: u32,
        template: &[u8],
    ) -> CommandResult<CreatedPrimary, T> {
        let n = self.run_direct(0x131, &[hierarchy], &[Session::PASSWORD], |w| {
            empty_sensitive(w)?;
            w.tpm2b(template)?;
            w.u16(0)?; // outsideInfo
            w.u32(0) // creationPCR
        })?;
        Ok(response::parse_create_primary(self.response(n))?)
    }

    /// Creates the endorsement key from the TCG default template `kind` in the endorsement
    /// hierarchy. Its public key matches the EK certificate's.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn create_ek(&mut self, kind: EkKind) -> CommandResult<CreatedPrimary, T> {
        let mut t = [0u8; 512];
        let mut w = Writer::new(&mut t);
        ek_template(kind, &mut w)?;
        let len = w.len();
        self.create_primary(RH_ENDORSEMENT, t.get(..len).unwrap_or_default())
    }

    /// An ephemeral NIST P-256 key for ECDH ([`Tpm::ecdh_zgen`]): TPM2_CreatePrimary in the
    /// NULL hierarchy, so the private key never leaves the TPM and is gone at its next reset at
    /// the latest; flush it when done. `unique` (fresh random bytes) makes the key new: a
    /// primary key is derived from the hierarchy's seed and its template.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn create_ecdh_key(&mut self, unique: &[u8; 32]) -> CommandResult<CreatedPrimary, T> {
        let mut template = [0u8; 64];
        let mut w = Writer::new(&mut template);
        w.u16(ALG_ECC)?;
        w.u16(ALG_SHA256)?; // nameAlg
        w.u32(ECDH_ATTRIBUTES)?;
        w.tpm2b(&[])?; // authPolicy
        w.u16(ALG_NULL)?; // symmetric
        w.u16(ALG_NULL)?; // scheme: any use the attributes allow
        w.u16(0x0003)?; // curveID: NIST P-256
        w.u16(ALG_NULL)?; // kdf
        w.tpm2b(unique)?; // unique.x
        w.tpm2b(&[])?; // unique.y
        let len = w.len();
        self.create_primary(RH_NULL, template.get(..len).unwrap_or_default())
    }

    /// TPM2_ECDH_ZGen: the x coordinate of `key`'s private scalar times the point (`x`, `y`)
    /// (big-endian coordinates), into `z`, left-padded to its length. The TPM checks that the
    /// point is on the key's curve (TPM_RC_ECC_POINT otherwise).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response;
    /// [`CommandError::Capacity`] if the coordinate is longer than `z`.
    #[inline(never)]
    pub fn ecdh_zgen(
        &mut self,
        key: u32,
        x: &[u8],
        y: &[u8],
        z: &mut [u8],
    ) -> CommandResult<(), T> {
        let n =
            self.run::<frame::TpmEcdhZGenCommand>(0x154, &[key], &[Session::PASSWORD], |w| {
                let size = x.len().saturating_add(y.len()).saturating_add(4);
                w.u16(u16::try_from(size).map_err(|_| Overflow)?)?;
                w.tpm2b(x)?;
                w.tpm2b(y)
            })?;
        let shared = response::parse_ecdh_zgen(self.response(n))?;
        let pad = z
            .len()
            .checked_sub(shared.len())
            .ok_or(CommandError::Capacity)?;
        let (zeros, rest) = z.split_at_mut(pad);
        zeros.fill(0);
        rest.copy_from_slice(shared);
        Ok(())
    }

    /// TPM2_ReadPublic.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn read_public(&mut self, handle: u32) -> CommandResult<ReadPublic, T> {
        let n = self.run::<frame::TpmReadPublicCommand>(0x173, &[handle], &[], |_| Ok(()))?;
        Ok(response::parse_read_public(self.response(n))?)
    }

    /// TPM2_NV_ReadPublic.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn nv_read_public(&mut self, index: u32) -> CommandResult<NvPublic, T> {
        let n = self.run::<frame::TpmNvReadPublicCommand>(0x169, &[index], &[], |_| Ok(()))?;
        Ok(response::parse_nv_read_public(self.response(n))?)
    }

    /// Reads the whole NV index `index` into `out` with TPM2_NV_Read in chunks of at most
    /// TPM_PT_NV_BUFFER_MAX, authorized by `auth_handle` (e.g. [`RH_OWNER`] or the index
    /// itself) with an empty password. Returns the size.
    ///
    /// # Errors
    /// [`CommandError::Capacity`] if `out` is too small; a response code, a transport failure
    /// or a malformed response.
    pub fn nv_read(
        &mut self,
        index: u32,
        auth_handle: u32,
        out: &mut [u8],
    ) -> CommandResult<usize, T> {
        let mut fits = true;
        let capacity = out.len();
        let size = self.nv_read_with(index, auth_handle, usize::MAX, |offset, total, data| {
            let dst = out
                .get_mut(offset..offset.saturating_add(data.len()))
                .filter(|_| total <= capacity);
            match dst {
                Some(dst) => dst.copy_from_slice(data),
                None => fits = false,
            }
            fits
        })?;
        if fits {
            Ok(size)
        } else {
            Err(CommandError::Capacity)
        }
    }

    /// Reads the whole NV index `index` in pieces of at most `max_piece` bytes (and
    /// TPM_PT_NV_BUFFER_MAX), handing each to `sink` as `(offset, total size, bytes)` in order,
    /// so no buffer holds all of it; `sink` returns `false` to stop. Authorized like
    /// [`Tpm::nv_read`]. Returns the index's size.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response. A stop by `sink` is not
    /// an error: the caller knows why it stopped.
    pub fn nv_read_with(
        &mut self,
        index: u32,
        auth_handle: u32,
        max_piece: usize,
        sink: impl FnMut(usize, usize, &[u8]) -> bool,
    ) -> CommandResult<usize, T> {
        let size = usize::from(self.nv_read_public(index)?.data_size);
        self.nv_read_range(index, auth_handle, 0, size, max_piece, sink)?;
        Ok(size)
    }

    /// Reads `len` bytes of NV index `index` from `start`, handing pieces to `sink` as
    /// `(offset from start, len, bytes)` like [`Tpm::nv_read_with`].
    fn nv_read_range(
        &mut self,
        index: u32,
        auth_handle: u32,
        start: usize,
        len: usize,
        max_piece: usize,
        mut sink: impl FnMut(usize, usize, &[u8]) -> bool,
    ) -> CommandResult<(), T> {
        let max = match self.nv_buffer_max {
            Some(m) => m,
            None => {
                let m = self.tpm_property(PT_NV_BUFFER_MAX)?.unwrap_or(512);
                let m = u16::try_from(m).unwrap_or(u16::MAX);
                self.nv_buffer_max = Some(m);
                m
            }
        };
        // Leave room for the response header and TPM2B size in our buffer.
        let limit = u16::try_from(N.saturating_sub(32)).unwrap_or(u16::MAX);
        let piece = u16::try_from(max_piece).unwrap_or(u16::MAX);
        let chunk = max.min(1024).min(limit).min(piece).max(1);
        let mut done = 0usize;
        while done < len {
            let want = u16::try_from(len.saturating_sub(done))
                .unwrap_or(u16::MAX)
                .min(chunk);
            let offset =
                u16::try_from(start.saturating_add(done)).map_err(|_| CommandError::Capacity)?;
            let n = self.run::<frame::TpmNvReadCommand>(
                0x14E,
                &[auth_handle, index],
                &[Session::PASSWORD],
                |w| {
                    w.u16(want)?;
                    w.u16(offset)
                },
            )?;
            let data = response::parse_nv_read(self.rsp.get(..n).unwrap_or_default())?;
            if data.len() != usize::from(want) {
                return Err(CommandError::Malformed(Malformed::new(
                    10,
                    crate::wire::MalformedKind::Unexpected,
                )));
            }
            if !sink(done, len, data) {
                break;
            }
            done = done.saturating_add(data.len());
        }
        Ok(())
    }

    /// Reads the EK certificate of `kind` from its TCG NV index into `out` (owner auth,
    /// empty): only the DER certificate, see [`Tpm::read_ek_certificate_with`]. Returns its
    /// length.
    ///
    /// # Errors
    /// As [`Tpm::read_ek_certificate_with`]; [`CommandError::Capacity`] if `out` is too small.
    pub fn read_ek_certificate(&mut self, kind: EkKind, out: &mut [u8]) -> CommandResult<usize, T> {
        let capacity = out.len();
        let mut fits = true;
        let len = self.read_ek_certificate_with(kind, usize::MAX, |offset, total, data| {
            let dst = out
                .get_mut(offset..offset.saturating_add(data.len()))
                .filter(|_| total <= capacity);
            match dst {
                Some(dst) => dst.copy_from_slice(data),
                None => fits = false,
            }
            fits
        })?;
        if fits {
            Ok(len)
        } else {
            Err(CommandError::Capacity)
        }
    }

    /// Reads the EK certificate of `kind` from its NV index in pieces, like
    /// [`Tpm::nv_read_with`], but only the DER certificate: the index may be bigger than the
    /// certificate (ST33 parts fill it with 0xFF) and may wrap it in the TCG PC Client
    /// `10 01 00 <length>` header, which go-attestation strips too. The certificate's length
    /// comes from its DER header and must fit the index and [`MAX_EK_CERTIFICATE`]. `sink`
    /// gets `(offset in the certificate, certificate length, bytes)`. Returns the length.
    ///
    /// # Errors
    /// A response code (TPM_RC_HANDLE-type codes if the index does not exist), a transport
    /// failure; [`CommandError::Malformed`] if the index does not start with a DER SEQUENCE
    /// that fits it; [`CommandError::Capacity`] above [`MAX_EK_CERTIFICATE`].
    pub fn read_ek_certificate_with(
        &mut self,
        kind: EkKind,
        max_piece: usize,
        sink: impl FnMut(usize, usize, &[u8]) -> bool,
    ) -> CommandResult<usize, T> {
        let index = kind.certificate_index();
        let size = usize::from(self.nv_read_public(index)?.data_size);
        let mut head = [0u8; 9];
        let head_len = head.len().min(size);
        let mut got = 0usize;
        self.nv_read_range(index, RH_OWNER, 0, head_len, usize::MAX, |_, _, data| {
            if let Some(dst) = head.get_mut(got..got.saturating_add(data.len())) {
                dst.copy_from_slice(data);
                got += data.len();
            }
            true
        })?;
        let (start, len) = certificate_span(head.get(..got).unwrap_or_default(), size).ok_or(
            CommandError::Malformed(Malformed::new(0, crate::wire::MalformedKind::Unexpected)),
        )?;
        if len > MAX_EK_CERTIFICATE {
            return Err(CommandError::Capacity);
        }
        self.nv_read_range(index, RH_OWNER, start, len, max_piece, sink)?;
        Ok(len)
    }

    /// TPM2_StartAuthSession: an unsalted, unbound SHA-256 policy session with `nonce_caller`
    /// (16 to 32 bytes).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn start_policy_session(&mut self, nonce_caller: &[u8]) -> CommandResult<PolicySession, T> {
        let n = self.run_direct(0x176, &[RH_NULL, RH_NULL], &[], |w| {
            w.tpm2b(nonce_caller)?;
            w.u16(0)?; // encryptedSalt
            w.u8(0x01)?; // TPM_SE_POLICY
            w.u16(ALG_NULL)?; // symmetric
            w.u16(ALG_SHA256)
        })?;
        let (handle, nonce_tpm) = response::parse_start_auth_session(self.response(n))?;
        Ok(PolicySession { handle, nonce_tpm })
    }

    /// TPM2_PolicySecret(`auth_handle`) on `session`, authorizing `auth_handle` with an empty
    /// password (no expiration, no cpHash, no policyRef).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn policy_secret(&mut self, session: u32, auth_handle: u32) -> CommandResult<(), T> {
        let n = self.run::<frame::TpmPolicySecretCommand>(
            0x151,
            &[auth_handle, session],
            &[Session::PASSWORD],
            |w| {
                w.u16(0)?;
                w.u16(0)?;
                w.u16(0)?;
                w.u32(0)
            },
        )?;
        Ok(response::parse_policy_secret(self.response(n))?)
    }

    /// Starts a policy session that satisfies the EK policy: StartAuthSession with a nonce
    /// from the TPM's RNG, then PolicySecret(TPM_RH_ENDORSEMENT). The session is flushed if
    /// PolicySecret fails.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn start_ek_policy_session(&mut self) -> CommandResult<u32, T> {
        let mut nonce = [0u8; 16];
        self.get_random(&mut nonce)?;
        let session = self.start_policy_session(&nonce)?;
        let r = self.policy_secret(session.handle, RH_ENDORSEMENT);
        self.cleanup(Some(session.handle), r)?;
        Ok(session.handle)
    }

    /// TPM2_Create under `parent` with the TPMT_PUBLIC `template`.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn create(
        &mut self,
        parent: u32,
        parent_auth: Auth<'_>,
        template: &[u8],
    ) -> CommandResult<CreatedObject, T> {
        let (session, started) = self.session(parent_auth)?;
        let r = self
            .run_direct(0x153, &[parent], &[session], |w| {
                empty_sensitive(w)?;
                w.tpm2b(template)?;
                w.u16(0)?;
                w.u32(0)
            })
            .and_then(|n| Ok(response::parse_create(self.response(n))?));
        self.cleanup(started, r)
    }

    /// Creates an attestation key of `kind` under the EK `ek`, authorized by a fresh EK policy
    /// session. Load it with [`Tpm::load`] and [`Auth::EkPolicy`].
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn create_ak(&mut self, ek: u32, kind: AkKind) -> CommandResult<CreatedObject, T> {
        let mut t = [0u8; 128];
        let mut w = Writer::new(&mut t);
        ak_template(kind, &mut w)?;
        let len = w.len();
        self.create(ek, Auth::EkPolicy, t.get(..len).unwrap_or_default())
    }

    /// TPM2_Load of `object` under `parent`.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn load(
        &mut self,
        parent: u32,
        parent_auth: Auth<'_>,
        object: &CreatedObject,
    ) -> CommandResult<Loaded, T> {
        let (session, started) = self.session(parent_auth)?;
        let r = self
            .run_direct(0x157, &[parent], &[session], |w| {
                w.bytes(object.private.as_slice())?;
                w.bytes(object.public.as_tpm2b())
            })
            .and_then(|n| Ok(response::parse_load(self.response(n))?));
        self.cleanup(started, r)
    }

    /// TPM2_ActivateCredential: recovers the credential that `tpm2_makecredential` (or a
    /// verifier) bound to the AK's Name and encrypted to the EK. `credential_blob` and `secret`
    /// are the contents of the TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET (see
    /// [`parse_tpm2_tools_credential`](crate::response::parse_tpm2_tools_credential)). The AK
    /// is authorized by an empty password, the EK by a fresh EK policy session.
    ///
    /// # Errors
    /// A response code (e.g. TPM_RC_INTEGRITY if the credential was made for another Name), a
    /// transport failure or a malformed response.
    #[inline(never)]
    pub fn activate_credential(
        &mut self,
        ak: u32,
        ek: u32,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> CommandResult<Digest, T> {
        let (ek_session, started) = self.session(Auth::EkPolicy)?;
        let r = self
            .run_direct(0x147, &[ak, ek], &[Session::PASSWORD, ek_session], |w| {
                w.tpm2b(credential_blob)?;
                w.tpm2b(secret)
            })
            .and_then(|n| Ok(response::parse_activate_credential(self.response(n))?));
        self.cleanup(started, r)
    }

    /// TPM2_Quote of the PCRs in `selection`, signed by `ak` (empty password, the key's own
    /// scheme), over `qualifying_data` (a verifier nonce, at most 64 bytes).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn quote(
        &mut self,
        ak: u32,
        qualifying_data: &[u8],
        selection: &[crate::types::PcrBank],
    ) -> CommandResult<Attestation, T> {
        let n = self.run::<frame::TpmQuoteCommand>(0x158, &[ak], &[Session::PASSWORD], |w| {
            w.tpm2b(qualifying_data)?;
            w.u16(ALG_NULL)?;
            pcr_selection(w, selection)
        })?;
        Ok(response::parse_quote(self.response(n))?)
    }

    /// TPM2_Certify of `object` (authorized by `object_auth`) by `signer` (empty password).
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    #[inline(never)]
    pub fn certify(
        &mut self,
        object: u32,
        object_auth: Auth<'_>,
        signer: u32,
        qualifying_data: &[u8],
    ) -> CommandResult<Attestation, T> {
        let (session, started) = self.session(object_auth)?;
        let r = self
            .run::<frame::TpmCertifyCommand>(
                0x148,
                &[object, signer],
                &[session, Session::PASSWORD],
                |w| {
                    w.tpm2b(qualifying_data)?;
                    w.u16(ALG_NULL)
                },
            )
            .and_then(|n| Ok(response::parse_certify(self.response(n))?));
        self.cleanup(started, r)
    }

    /// TPM2_EvictControl by the owner (empty password): makes `object` persistent at
    /// `persistent`, or evicts the persistent `object` when `persistent` equals it.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn evict_control(&mut self, object: u32, persistent: u32) -> CommandResult<(), T> {
        let n = self.run::<frame::TpmEvictControlCommand>(
            0x120,
            &[RH_OWNER, object],
            &[Session::PASSWORD],
            |w| w.u32(persistent),
        )?;
        Ok(response::parse_empty(self.response(n), 0x120)?)
    }

    /// TPM2_FlushContext.
    ///
    /// # Errors
    /// A response code, a transport failure or a malformed response.
    pub fn flush_context(&mut self, handle: u32) -> CommandResult<(), T> {
        let n = self.run::<frame::TpmFlushContextCommand>(0x165, &[], &[], |w| w.u32(handle))?;
        Ok(response::parse_empty(self.response(n), 0x165)?)
    }

    /// Returns the public area of an object, e.g. to compare an EK with its certificate.
    ///
    /// # Errors
    /// As [`Tpm::read_public`].
    pub fn public(&mut self, handle: u32) -> CommandResult<Public, T> {
        Ok(self.read_public(handle)?.public)
    }
}
