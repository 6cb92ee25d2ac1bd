//! Response parsing: pure functions from a complete response frame to typed values.
//!
//! The envelope (tag, size, response code, handle and authorization areas) is checked by
//! [`envelope`] (and, in builds with debug assertions such as every host test and fuzz run,
//! also by tpm2-protocol's `TpmResponse::cast` + `validate`, which must agree); the
//! parameters are then decoded with this crate's bounds-checked cursor, which keeps the exact
//! wire bytes of TPM2B_PUBLIC, TPMS_ATTEST and TPMT_SIGNATURE (see the crate docs for why).
//! Every parser accepts arbitrary bytes without panicking.

use crate::types::{
    Attestation, CreatedObject, CreatedPrimary, Digest, Loaded, Name, NvPublic, PcrBank, PcrBanks,
    PcrValues, Public, ReadPublic, Signature,
};
use crate::wire::{Buf, Malformed, MalformedKind, Reader};

/// A TPM response code other than TPM_RC_SUCCESS: the TPM refused the command. Data, not a
/// transport failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// TPM_RC_INITIALIZE: TPM2_Startup was already run.
    pub const INITIALIZE: Self = Self(0x100);
    /// TPM_RC_FAILURE: the TPM is in failure mode.
    pub const FAILURE: Self = Self(0x101);
    /// TPM_RC_RETRY: try the command again.
    pub const RETRY: Self = Self(0x922);
    /// TPM_RC_TESTING: self-tests are running.
    pub const TESTING: Self = Self(0x90A);

    /// Whether this is a format-one code (bit 7), which names a handle, session or parameter.
    #[must_use]
    pub const fn is_format_one(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// The code with the handle/session/parameter number removed (format one: bits 0..5 and
    /// bit 7; format zero: unchanged).
    #[must_use]
    pub const fn base(self) -> u32 {
        if self.is_format_one() {
            self.0 & 0xBF
        } else {
            self.0
        }
    }
}

impl core::fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ResponseCode({:#x})", self.0)
    }
}

/// Why a response frame did not yield a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// A well-formed response with a non-success response code.
    Tpm(ResponseCode),
    /// The bytes are not a valid response to the command.
    Malformed(Malformed),
}

impl From<Malformed> for ResponseError {
    fn from(m: Malformed) -> Self {
        Self::Malformed(m)
    }
}

/// The handle and parameter areas of a successful response.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The response handle area.
    pub handles: &'a [u8],
    /// The response parameter area.
    pub parameters: &'a [u8],
}

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;

/// tpm2-protocol's view of a successful response frame, where debug assertions are on.
#[cfg(debug_assertions)]
fn tpm2_protocol_check(frame: &[u8], cc: u32) -> Result<(), Malformed> {
    use tpm2_protocol::data::TpmCc;
    use tpm2_protocol::frame::TpmResponse;
    let cc = TpmCc::try_from(cc).map_err(|_| Malformed::new(6, MalformedKind::Unsupported))?;
    TpmResponse::cast(frame)
        .and_then(|resp| resp.validate(cc))
        .map_err(|_| Malformed::new(0, MalformedKind::Frame))
}

/// Checks a response frame to the command with code `cc`, which returns `handles` handles,
/// and splits off its handle and parameter areas.
///
/// # Errors
/// [`ResponseError::Tpm`] for a non-success response code, [`ResponseError::Malformed`] for a
/// short frame, a size field that differs from the frame length, a bad tag, or broken
/// handle/authorization areas.
pub fn envelope(frame: &[u8], cc: u32, handles: usize) -> Result<Envelope<'_>, ResponseError> {
    let mut r = Reader::new(frame);
    let tag = r.u16()?;
    let size = r.u32()?;
    let rc = r.u32()?;
    if usize::try_from(size).ok() != Some(frame.len()) {
        return Err(Malformed::new(2, MalformedKind::SizeMismatch).into());
    }
    if rc != 0 {
        if tag != TPM_ST_NO_SESSIONS || frame.len() != 10 {
            return Err(Malformed::new(0, MalformedKind::BadTag).into());
        }
        return Err(ResponseError::Tpm(ResponseCode(rc)));
    }
    if tag != TPM_ST_NO_SESSIONS && tag != TPM_ST_SESSIONS {
        return Err(Malformed::new(0, MalformedKind::BadTag).into());
    }
    #[cfg(debug_assertions)]
    tpm2_protocol_check(frame, cc)?;
    #[cfg(not(debug_assertions))]
    let _ = cc;
    let handle_len = handles
        .checked_mul(4)
        .ok_or(Malformed::new(10, MalformedKind::Truncated))?;
    let handle_area = r.take(handle_len)?;
    let parameters = if tag == TPM_ST_SESSIONS {
        let n = r.u32()?;
        let parameters = r.take(usize::try_from(n).unwrap_or(usize::MAX))?;
        // The authorization area: whole TPMS_AUTH_RESPONSEs (nonceTPM, sessionAttributes,
        // hmac) up to the end of the frame, at least one.
        loop {
            r.tpm2b()?;
            r.u8()?;
            r.tpm2b()?;
            if r.pos() >= frame.len() {
                break;
            }
        }
        parameters
    } else {
        r.take(frame.len().saturating_sub(r.pos()))?
    };
    Ok(Envelope {
        handles: handle_area,
        parameters,
    })
}

fn first_handle(e: &Envelope<'_>) -> Result<u32, Malformed> {
    Reader::new(e.handles).u32()
}

/// A response with no parameters (Startup, SelfTest, PCR_Extend, EvictControl, FlushContext,
/// ...).
///
/// # Errors
/// See [`envelope`]; also trailing parameter bytes.
pub fn parse_empty(frame: &[u8], cc: u32) -> Result<(), ResponseError> {
    let e = envelope(frame, cc, 0)?;
    Reader::new(e.parameters).finish()?;
    Ok(())
}

/// TPM2_GetRandom: the random bytes.
///
/// # Errors
/// See [`envelope`].
pub fn parse_get_random(frame: &[u8]) -> Result<&[u8], ResponseError> {
    let e = envelope(frame, 0x17B, 0)?;
    let mut r = Reader::new(e.parameters);
    let bytes = r.tpm2b()?;
    r.finish()?;
    Ok(bytes)
}

/// TPM2_GetCapability: `moreData` and the TPMS_CAPABILITY_DATA after checking that it is for
/// capability `cap`; returns the bytes after the capability selector.
fn capability(frame: &[u8], cap: u32) -> Result<(bool, Reader<'_>), ResponseError> {
    let e = envelope(frame, 0x17A, 0)?;
    let mut r = Reader::new(e.parameters);
    let more = r.u8()? != 0;
    if r.u32()? != cap {
        return Err(r.error(MalformedKind::Unexpected).into());
    }
    Ok((more, r))
}

/// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES): the value of `property` if the first returned
/// property is it.
///
/// # Errors
/// See [`envelope`]; a capability other than TPM_CAP_TPM_PROPERTIES.
pub fn parse_tpm_property(frame: &[u8], property: u32) -> Result<Option<u32>, ResponseError> {
    let (_, mut r) = capability(frame, 6)?;
    let count = r.u32()?;
    let mut found = None;
    for _ in 0..count {
        let (tag, value) = (r.u32()?, r.u32()?);
        if tag == property && found.is_none() {
            found = Some(value);
        }
    }
    r.finish()?;
    Ok(found)
}

/// Reads a TPML_PCR_SELECTION into banks.
fn pcr_selection(r: &mut Reader<'_>) -> Result<PcrBanks, Malformed> {
    let count = r.u32()?;
    let mut banks = PcrBanks::default();
    for _ in 0..count {
        let alg = r.u16()?;
        let size = r.u8()?;
        if size > 4 {
            return Err(r.error(MalformedKind::Unsupported));
        }
        let mut mask = [0u8; 4];
        let select = r.take(usize::from(size))?;
        for (m, s) in mask.iter_mut().zip(select) {
            *m = *s;
        }
        let bank = PcrBank {
            alg,
            pcrs: u32::from_le_bytes(mask),
        };
        banks
            .push(bank)
            .map_err(|()| r.error(MalformedKind::TooLarge))?;
    }
    Ok(banks)
}

/// TPM2_GetCapability(TPM_CAP_PCRS): the PCR banks and which PCRs each has allocated.
///
/// # Errors
/// See [`envelope`]; more than 8 banks or more than 32 PCRs.
pub fn parse_pcr_banks(frame: &[u8]) -> Result<PcrBanks, ResponseError> {
    let (_, mut r) = capability(frame, 5)?;
    let banks = pcr_selection(&mut r)?;
    r.finish()?;
    Ok(banks)
}

/// TPM2_GetCapability(TPM_CAP_HANDLES): fills `out` with handles, returns (count, moreData).
///
/// # Errors
/// See [`envelope`]; more handles than `out` holds.
pub fn parse_handles(frame: &[u8], out: &mut [u32]) -> Result<(usize, bool), ResponseError> {
    let (more, mut r) = capability(frame, 1)?;
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if count > out.len() {
        return Err(r.error(MalformedKind::TooLarge).into());
    }
    for slot in out.iter_mut().take(count) {
        *slot = r.u32()?;
    }
    r.finish()?;
    Ok((count, more))
}

/// TPM2_PCR_Read: update counter, the selection read and the digests.
///
/// # Errors
/// See [`envelope`]; more than 8 digests or digests over 64 bytes.
pub fn parse_pcr_read(frame: &[u8]) -> Result<PcrValues, ResponseError> {
    let e = envelope(frame, 0x17E, 0)?;
    let mut r = Reader::new(e.parameters);
    let update_counter = r.u32()?;
    let selection = pcr_selection(&mut r)?;
    let count = r.u32()?;
    let mut values = PcrValues::new(update_counter, selection);
    for _ in 0..count {
        let at = r.pos();
        let d = Digest::copy(r.tpm2b()?, at)?;
        values
            .push(d)
            .map_err(|()| Malformed::new(at, MalformedKind::TooLarge))?;
    }
    r.finish()?;
    Ok(values)
}

/// Skips TPM2B_CREATION_DATA, TPM2B_DIGEST creationHash and TPMT_TK_CREATION.
fn skip_creation(r: &mut Reader<'_>) -> Result<(), Malformed> {
    r.tpm2b()?;
    r.tpm2b()?;
    r.u16()?;
    r.u32()?;
    r.tpm2b()?;
    Ok(())
}

fn public(r: &mut Reader<'_>) -> Result<Public, Malformed> {
    let at = r.pos();
    Public::from_tpm2b(r.tpm2b_raw()?).map_err(|m| Malformed::new(at + m.offset, m.kind))
}

fn read_name(r: &mut Reader<'_>) -> Result<Name, Malformed> {
    let at = r.pos();
    Name::copy(r.tpm2b()?, at)
}

/// TPM2_CreatePrimary: the object handle, its public area and its Name.
///
/// # Errors
/// See [`envelope`]; an undecodable public area.
pub fn parse_create_primary(frame: &[u8]) -> Result<CreatedPrimary, ResponseError> {
    let e = envelope(frame, 0x131, 1)?;
    let handle = first_handle(&e)?;
    let mut r = Reader::new(e.parameters);
    let public = public(&mut r)?;
    skip_creation(&mut r)?;
    let name = read_name(&mut r)?;
    r.finish()?;
    Ok(CreatedPrimary {
        handle,
        public,
        name,
    })
}

/// TPM2_ECDH_ZGen: the x coordinate of the shared point (TPM2B_ECC_POINT outPoint).
///
/// # Errors
/// See [`envelope`]; an undecodable point.
pub fn parse_ecdh_zgen(frame: &[u8]) -> Result<&[u8], ResponseError> {
    let e = envelope(frame, 0x154, 0)?;
    let mut r = Reader::new(e.parameters);
    let point = r.tpm2b()?;
    r.finish()?;
    // Offsets below are within the TPMS_ECC_POINT.
    let mut p = Reader::new(point);
    let x = p.tpm2b()?;
    p.tpm2b()?;
    p.finish()?;
    Ok(x)
}

/// TPM2_Create: the private and public areas of the new object.
///
/// # Errors
/// See [`envelope`]; an undecodable public area or an oversized private area.
pub fn parse_create(frame: &[u8]) -> Result<CreatedObject, ResponseError> {
    let e = envelope(frame, 0x153, 0)?;
    let mut r = Reader::new(e.parameters);
    let at = r.pos();
    let private = Buf::copy(r.tpm2b_raw()?, at)?;
    let public = public(&mut r)?;
    skip_creation(&mut r)?;
    r.finish()?;
    Ok(CreatedObject { private, public })
}

/// TPM2_Load: the loaded object's handle and Name.
///
/// # Errors
/// See [`envelope`].
pub fn parse_load(frame: &[u8]) -> Result<Loaded, ResponseError> {
    let e = envelope(frame, 0x157, 1)?;
    let handle = first_handle(&e)?;
    let mut r = Reader::new(e.parameters);
    let name = read_name(&mut r)?;
    r.finish()?;
    Ok(Loaded { handle, name })
}

/// TPM2_ReadPublic: the public area, Name and qualified Name.
///
/// # Errors
/// See [`envelope`]; an undecodable public area.
pub fn parse_read_public(frame: &[u8]) -> Result<ReadPublic, ResponseError> {
    let e = envelope(frame, 0x173, 0)?;
    let mut r = Reader::new(e.parameters);
    let public = public(&mut r)?;
    let name = read_name(&mut r)?;
    let qualified_name = read_name(&mut r)?;
    r.finish()?;
    Ok(ReadPublic {
        public,
        name,
        qualified_name,
    })
}

/// TPM2_NV_ReadPublic: the index's public area and Name.
///
/// # Errors
/// See [`envelope`].
pub fn parse_nv_read_public(frame: &[u8]) -> Result<NvPublic, ResponseError> {
    let e = envelope(frame, 0x169, 0)?;
    let mut r = Reader::new(e.parameters);
    let inner = r.tpm2b()?;
    let mut p = Reader::new(inner);
    let index = p.u32()?;
    let name_alg = p.u16()?;
    let attributes = p.u32()?;
    p.tpm2b()?;
    let data_size = p.u16()?;
    p.finish()?;
    let name = read_name(&mut r)?;
    r.finish()?;
    Ok(NvPublic {
        index,
        name_alg,
        attributes,
        data_size,
        name,
    })
}

/// TPM2_NV_Read: the data read.
///
/// # Errors
/// See [`envelope`].
pub fn parse_nv_read(frame: &[u8]) -> Result<&[u8], ResponseError> {
    let e = envelope(frame, 0x14E, 0)?;
    let mut r = Reader::new(e.parameters);
    let data = r.tpm2b()?;
    r.finish()?;
    Ok(data)
}

/// TPM2_StartAuthSession: the session handle and nonceTPM.
///
/// # Errors
/// See [`envelope`].
pub fn parse_start_auth_session(frame: &[u8]) -> Result<(u32, Digest), ResponseError> {
    let e = envelope(frame, 0x176, 1)?;
    let handle = first_handle(&e)?;
    let mut r = Reader::new(e.parameters);
    let at = r.pos();
    let nonce = Digest::copy(r.tpm2b()?, at)?;
    r.finish()?;
    Ok((handle, nonce))
}

/// TPM2_PolicySecret: checks the response (timeout and ticket are not used).
///
/// # Errors
/// See [`envelope`].
pub fn parse_policy_secret(frame: &[u8]) -> Result<(), ResponseError> {
    let e = envelope(frame, 0x151, 0)?;
    let mut r = Reader::new(e.parameters);
    r.tpm2b()?;
    r.u16()?;
    r.u32()?;
    r.tpm2b()?;
    r.finish()?;
    Ok(())
}

/// TPM2_ActivateCredential: the recovered credential (certInfo).
///
/// # Errors
/// See [`envelope`].
pub fn parse_activate_credential(frame: &[u8]) -> Result<Digest, ResponseError> {
    let e = envelope(frame, 0x147, 0)?;
    let mut r = Reader::new(e.parameters);
    let at = r.pos();
    let d = Digest::copy(r.tpm2b()?, at)?;
    r.finish()?;
    Ok(d)
}

/// Reads a TPMT_SIGNATURE and returns its exact wire bytes.
fn signature(r: &mut Reader<'_>) -> Result<Signature, Malformed> {
    let start = r.pos();
    let alg = r.u16()?;
    match alg {
        // TPM_ALG_NULL
        0x0010 => {}
        // RSASSA, RSAPSS: hash, TPM2B signature
        0x0014 | 0x0016 => {
            r.u16()?;
            r.tpm2b()?;
        }
        // ECDSA, ECDAA, SM2, ECSCHNORR: hash, TPM2B r, TPM2B s
        0x0018 | 0x001A | 0x001B | 0x001C => {
            r.u16()?;
            r.tpm2b()?;
            r.tpm2b()?;
        }
        _ => return Err(Malformed::new(start, MalformedKind::Unsupported)),
    }
    Signature::copy(r.since(start), start)
}

/// TPM2_Quote and TPM2_Certify: TPM2B_ATTEST contents (TPMS_ATTEST) and TPMT_SIGNATURE.
fn attestation(frame: &[u8], cc: u32) -> Result<Attestation, ResponseError> {
    let e = envelope(frame, cc, 0)?;
    let mut r = Reader::new(e.parameters);
    let at = r.pos();
    let attest = Buf::copy(r.tpm2b()?, at)?;
    let signature = signature(&mut r)?;
    r.finish()?;
    Ok(Attestation { attest, signature })
}

/// TPM2_Quote: the TPMS_ATTEST bytes and the TPMT_SIGNATURE bytes.
///
/// # Errors
/// See [`envelope`]; an unsupported signature algorithm.
pub fn parse_quote(frame: &[u8]) -> Result<Attestation, ResponseError> {
    attestation(frame, 0x158)
}

/// TPM2_Certify: the TPMS_ATTEST bytes and the TPMT_SIGNATURE bytes.
///
/// # Errors
/// See [`envelope`]; an unsupported signature algorithm.
pub fn parse_certify(frame: &[u8]) -> Result<Attestation, ResponseError> {
    attestation(frame, 0x148)
}

/// Splits a `tpm2_makecredential` output file (magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET) into the contents of its two TPM2Bs: (credentialBlob, secret).
///
/// # Errors
/// A wrong magic or version, or truncated or trailing bytes.
pub fn parse_tpm2_tools_credential(file: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let mut r = Reader::new(file);
    if r.u32()? != 0xBADC_C0DE {
        return Err(Malformed::new(0, MalformedKind::Unexpected));
    }
    if r.u32()? != 1 {
        return Err(Malformed::new(4, MalformedKind::Unsupported));
    }
    let blob = r.tpm2b()?;
    let secret = r.tpm2b()?;
    r.finish()?;
    Ok((blob, secret))
}
