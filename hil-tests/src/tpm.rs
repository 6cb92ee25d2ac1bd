//! A small TPM 2.0 command client over any [`vouch_tpm::Transport`]: the reference the
//! end-to-end tests use to drive a transport through an attestation flow (EK certificate, EK
//! re-creation, AK, credential activation, PCR extend, quote).
//!
//! Test code, std only: marshalling into `Vec`s, parsing through a bounds-checked [`Reader`]
//! that returns [`TpmError::Malformed`] instead of panicking. A non-zero response code is
//! [`TpmError::Rc`], carrying the command code and the code.

use std::fmt;

/// `TPM_ST_NO_SESSIONS`.
pub const ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`.
pub const ST_SESSIONS: u16 = 0x8002;
/// `TPM_RS_PW`: the password session.
pub const RS_PW: u32 = 0x4000_0009;
/// `TPM_RH_ENDORSEMENT`.
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
/// `TPM_RH_NULL`.
pub const RH_NULL: u32 = 0x4000_0007;
/// `TPM_RH_OWNER`.
pub const RH_OWNER: u32 = 0x4000_0001;
/// NV index of the RSA-2048 EK certificate.
pub const NV_EK_CERT_RSA: u32 = 0x01C0_0002;

/// Algorithm identifiers.
pub mod alg {
    /// `TPM_ALG_RSA`.
    pub const RSA: u16 = 0x0001;
    /// `TPM_ALG_SHA1`.
    pub const SHA1: u16 = 0x0004;
    /// `TPM_ALG_AES`.
    pub const AES: u16 = 0x0006;
    /// `TPM_ALG_SHA256`.
    pub const SHA256: u16 = 0x000B;
    /// `TPM_ALG_SHA384`.
    pub const SHA384: u16 = 0x000C;
    /// `TPM_ALG_SHA512`.
    pub const SHA512: u16 = 0x000D;
    /// `TPM_ALG_NULL`.
    pub const NULL: u16 = 0x0010;
    /// `TPM_ALG_RSASSA`.
    pub const RSASSA: u16 = 0x0014;
    /// `TPM_ALG_CFB`.
    pub const CFB: u16 = 0x0043;

    /// Digest length of a hash algorithm.
    pub fn digest_len(hash: u16) -> Option<usize> {
        match hash {
            SHA1 => Some(20),
            SHA256 => Some(32),
            SHA384 => Some(48),
            SHA512 => Some(64),
            _ => None,
        }
    }
}

/// Command codes.
pub mod cc {
    /// `TPM2_NV_Read`.
    pub const NV_READ: u32 = 0x14E;
    /// `TPM2_Startup`.
    pub const STARTUP: u32 = 0x144;
    /// `TPM2_ActivateCredential`.
    pub const ACTIVATE_CREDENTIAL: u32 = 0x147;
    /// `TPM2_PolicySecret`.
    pub const POLICY_SECRET: u32 = 0x151;
    /// `TPM2_Create`.
    pub const CREATE: u32 = 0x153;
    /// `TPM2_Load`.
    pub const LOAD: u32 = 0x157;
    /// `TPM2_Quote`.
    pub const QUOTE: u32 = 0x158;
    /// `TPM2_FlushContext`.
    pub const FLUSH_CONTEXT: u32 = 0x165;
    /// `TPM2_NV_ReadPublic`.
    pub const NV_READ_PUBLIC: u32 = 0x169;
    /// `TPM2_StartAuthSession`.
    pub const START_AUTH_SESSION: u32 = 0x176;
    /// `TPM2_GetCapability`.
    pub const GET_CAPABILITY: u32 = 0x17A;
    /// `TPM2_GetRandom`.
    pub const GET_RANDOM: u32 = 0x17B;
    /// `TPM2_PCR_Read`.
    pub const PCR_READ: u32 = 0x17E;
    /// `TPM2_PCR_Extend`.
    pub const PCR_EXTEND: u32 = 0x182;
    /// `TPM2_CreatePrimary`.
    pub const CREATE_PRIMARY: u32 = 0x131;
}

/// `TPM_RC_INITIALIZE`: a command before `TPM2_Startup`, or a second Startup.
pub const RC_INITIALIZE: u32 = 0x100;

/// `TPM_RC_RETRY`.
pub const RC_RETRY: u32 = 0x922;
/// `TPM_RC_YIELDED`.
pub const RC_YIELDED: u32 = 0x908;
/// `TPM_RC_TESTING`.
pub const RC_TESTING: u32 = 0x90A;

/// The EK authorization policy of the TCG EK Credential Profile: `PolicySecret(TPM_RH_ENDORSEMENT)`.
pub const EK_AUTH_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TpmError {
    /// The transport failed (its error, formatted).
    Transport(String),
    /// The TPM answered command `cc` with response code `rc`.
    Rc {
        /// Command code.
        cc: u32,
        /// Response code.
        rc: u32,
    },
    /// The response could not be parsed: what, and at which offset.
    Malformed(&'static str, usize),
}

impl fmt::Display for TpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport: {e}"),
            Self::Rc { cc, rc } => write!(f, "command {cc:#x} failed with rc {rc:#x}"),
            Self::Malformed(what, at) => write!(f, "malformed response: {what} at {at}"),
        }
    }
}

impl std::error::Error for TpmError {}

/// A bounds-checked big-endian reader.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    /// `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(TpmError::Malformed("length", self.pos))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(TpmError::Malformed("truncated", self.pos))?;
        self.pos = end;
        Ok(s)
    }
    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, TpmError> {
        let at = self.pos;
        let b = self.take(2)?;
        Ok(u16::from_be_bytes(
            b.try_into().map_err(|_| TpmError::Malformed("u16", at))?,
        ))
    }
    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, TpmError> {
        let at = self.pos;
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| TpmError::Malformed("u32", at))?,
        ))
    }
    /// A `TPM2B_*`: `u16` size, then that many bytes.
    pub fn tpm2b(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    /// The bytes not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.pos..).unwrap_or_default();
        self.pos = self.data.len();
        r
    }
    /// Fails unless everything was read.
    pub fn end(&self) -> Result<(), TpmError> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(TpmError::Malformed("trailing bytes", self.pos))
        }
    }
}

/// Appends a `TPM2B`.
pub fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    let n = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(data);
}

/// An authorization for one handle.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The password session with this password.
    Password(Vec<u8>),
    /// A policy session (its policy already satisfied), without HMAC.
    Policy(u32),
}

impl Auth {
    /// The empty password.
    pub fn empty() -> Self {
        Self::Password(Vec::new())
    }

    fn marshal(&self, out: &mut Vec<u8>) {
        match self {
            Self::Password(pw) => {
                out.extend_from_slice(&RS_PW.to_be_bytes());
                put_tpm2b(out, &[]);
                out.push(0x01); // continueSession
                put_tpm2b(out, pw);
            }
            Self::Policy(handle) => {
                out.extend_from_slice(&handle.to_be_bytes());
                put_tpm2b(out, &[0x5A; 32]); // nonceCaller
                out.push(0x00); // not continued: flushed after use
                put_tpm2b(out, &[]);
            }
        }
    }
}

/// A PCR selection in one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm.
    pub hash: u16,
    /// The selected PCR indices.
    pub pcrs: Vec<u8>,
}

fn put_pcr_selection(out: &mut Vec<u8>, sel: &[PcrSelection]) {
    out.extend_from_slice(&u32::try_from(sel.len()).unwrap_or(0).to_be_bytes());
    for s in sel {
        out.extend_from_slice(&s.hash.to_be_bytes());
        out.push(3);
        let mut bits = [0u8; 3];
        for &p in &s.pcrs {
            if let Some(b) = bits.get_mut(usize::from(p / 8)) {
                *b |= 1 << (p % 8);
            }
        }
        out.extend_from_slice(&bits);
    }
}

fn get_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, TpmError> {
    let count = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let hash = r.u16()?;
        let n = r.u8()?;
        let bits = r.take(usize::from(n))?;
        let mut pcrs = Vec::new();
        for (i, b) in bits.iter().enumerate() {
            for bit in 0..8u8 {
                if b & (1 << bit) != 0 {
                    pcrs.push(u8::try_from(i * 8).unwrap_or(0) + bit);
                }
            }
        }
        out.push(PcrSelection { hash, pcrs });
    }
    Ok(out)
}

/// The parts of a `TPMT_PUBLIC` the tests need.
#[derive(Debug, Clone)]
pub struct PublicArea {
    /// `type`.
    pub kind: u16,
    /// `nameAlg`.
    pub name_alg: u16,
    /// `objectAttributes`.
    pub attributes: u32,
    /// RSA modulus (`unique`), big-endian.
    pub rsa_modulus: Vec<u8>,
    /// RSA exponent (0 means 65537).
    pub rsa_exponent: u32,
}

impl PublicArea {
    /// Parses an RSA `TPMT_PUBLIC` (the payload of a `TPM2B_PUBLIC`).
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let kind = r.u16()?;
        let name_alg = r.u16()?;
        let attributes = r.u32()?;
        let _policy = r.tpm2b()?;
        if kind != alg::RSA {
            return Err(TpmError::Malformed("not an RSA key", 0));
        }
        let sym = r.u16()?;
        if sym != alg::NULL {
            r.u16()?;
            r.u16()?;
        }
        let scheme = r.u16()?;
        if scheme != alg::NULL {
            r.u16()?;
        }
        let _bits = r.u16()?;
        let rsa_exponent = r.u32()?;
        let rsa_modulus = r.tpm2b()?.to_vec();
        r.end()?;
        Ok(Self {
            kind,
            name_alg,
            attributes,
            rsa_modulus,
            rsa_exponent,
        })
    }
}

/// The RSA-2048 EK template of the TCG EK Credential Profile (template L-1): a restricted
/// decryption key, AES-128-CFB, policy `PolicySecret(TPM_RH_ENDORSEMENT)`, 256 zero bytes of
/// `unique`. Returns the `TPMT_PUBLIC`.
pub fn ek_rsa2048_template() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&alg::RSA.to_be_bytes());
    t.extend_from_slice(&alg::SHA256.to_be_bytes());
    t.extend_from_slice(&0x0003_00B2u32.to_be_bytes());
    put_tpm2b(&mut t, &EK_AUTH_POLICY);
    t.extend_from_slice(&alg::AES.to_be_bytes());
    t.extend_from_slice(&128u16.to_be_bytes());
    t.extend_from_slice(&alg::CFB.to_be_bytes());
    t.extend_from_slice(&alg::NULL.to_be_bytes());
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    put_tpm2b(&mut t, &[0u8; 256]);
    t
}

/// An RSA-2048 attestation key: restricted signing, RSASSA-SHA256, `userWithAuth`,
/// `adminWithPolicy` clear so the empty password serves the ADMIN role ActivateCredential
/// needs, `noDA`
/// (a DA-protected key's first use answers `TPM_RC_RETRY` on libtpms).
pub fn ak_rsa2048_template() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&alg::RSA.to_be_bytes());
    t.extend_from_slice(&alg::SHA256.to_be_bytes());
    // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | restricted | sign;
    // adminWithPolicy (0x80) clear, so the ADMIN role takes the password.
    t.extend_from_slice(&0x0005_0472u32.to_be_bytes());
    put_tpm2b(&mut t, &[]);
    t.extend_from_slice(&alg::NULL.to_be_bytes());
    t.extend_from_slice(&alg::RSASSA.to_be_bytes());
    t.extend_from_slice(&alg::SHA256.to_be_bytes());
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    put_tpm2b(&mut t, &[]);
    t
}

/// A created key: its `TPM2B_PRIVATE` and `TPM2B_PUBLIC` payloads.
#[derive(Debug, Clone)]
pub struct Created {
    /// `outPrivate` payload.
    pub private: Vec<u8>,
    /// `outPublic` payload (a `TPMT_PUBLIC`).
    pub public: Vec<u8>,
}

/// A quote: `TPMS_ATTEST` bytes and the `TPMT_SIGNATURE` bytes.
#[derive(Debug, Clone)]
pub struct Quote {
    /// The `TPM2B_ATTEST` payload (what was signed).
    pub attest: Vec<u8>,
    /// The whole `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
}

/// The client: a transport and a response buffer.
#[derive(Debug)]
pub struct Tpm<T> {
    transport: T,
    response: Vec<u8>,
    retries: usize,
    sent: usize,
}

impl<T: vouch_tpm::Transport> Tpm<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            response: vec![0; 4096],
            retries: 0,
            sent: 0,
        }
    }

    /// Commands resent because the TPM answered `TPM_RC_RETRY`/`YIELDED`/`TESTING`.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// Command frames handed to the transport so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }

    /// Sends a raw command and returns the raw response frame (any response code).
    pub fn raw(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.sent += 1;
        let n = self
            .transport
            .transact(command, &mut self.response)
            .map_err(|e| TpmError::Transport(format!("{e:?}")))?;
        Ok(self.response.get(..n).unwrap_or_default().to_vec())
    }

    /// Runs command `code` with `handles`, one authorization per entry of `auths` (sessions
    /// tag when non-empty), and `params`. Returns `(response handles area + parameters)`:
    /// for session responses the `parameterSize` field is removed and the auth area dropped.
    fn command(
        &mut self,
        code: u32,
        handles: &[u32],
        auths: &[Auth],
        params: &[u8],
        response_handles: usize,
    ) -> Result<(Vec<u32>, Vec<u8>), TpmError> {
        let mut body = Vec::new();
        for h in handles {
            body.extend_from_slice(&h.to_be_bytes());
        }
        if !auths.is_empty() {
            let mut area = Vec::new();
            for a in auths {
                a.marshal(&mut area);
            }
            body.extend_from_slice(&u32::try_from(area.len()).unwrap_or(0).to_be_bytes());
            body.extend_from_slice(&area);
        }
        body.extend_from_slice(params);
        let tag = if auths.is_empty() {
            ST_NO_SESSIONS
        } else {
            ST_SESSIONS
        };
        let mut cmd = Vec::with_capacity(10 + body.len());
        cmd.extend_from_slice(&tag.to_be_bytes());
        cmd.extend_from_slice(&u32::try_from(10 + body.len()).unwrap_or(0).to_be_bytes());
        cmd.extend_from_slice(&code.to_be_bytes());
        cmd.extend_from_slice(&body);

        // TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING ask for the same command again.
        let mut attempts = 0;
        let rsp = loop {
            let rsp = self.raw(&cmd)?;
            let rc = crate::tis::be_u32(rsp.get(6..10));
            attempts += 1;
            if attempts < 10 && matches!(rc, Some(RC_RETRY | RC_YIELDED | RC_TESTING)) {
                self.retries += 1;
                continue;
            }
            break rsp;
        };
        let mut r = Reader::new(&rsp);
        let rtag = r.u16()?;
        let size = r.u32()?;
        let rc = r.u32()?;
        if usize::try_from(size).ok() != Some(rsp.len()) {
            return Err(TpmError::Malformed("size field", 2));
        }
        if rc != 0 {
            return Err(TpmError::Rc { cc: code, rc });
        }
        let mut out_handles = Vec::new();
        for _ in 0..response_handles {
            out_handles.push(r.u32()?);
        }
        let params = if rtag == ST_SESSIONS {
            let n = r.u32()?;
            r.take(usize::try_from(n).unwrap_or(usize::MAX))?.to_vec()
        } else {
            r.rest().to_vec()
        };
        Ok((out_handles, params))
    }

    /// `TPM2_Startup(CLEAR)`; returns the response code (0, or `TPM_RC_INITIALIZE` when the
    /// TPM was already started).
    pub fn startup_clear(&mut self) -> Result<u32, TpmError> {
        match self.command(cc::STARTUP, &[], &[], &0u16.to_be_bytes(), 0) {
            Ok(_) => Ok(0),
            Err(TpmError::Rc { rc, .. }) => Ok(rc),
            Err(e) => Err(e),
        }
    }

    /// `TPM2_GetRandom(n)`.
    pub fn get_random(&mut self, n: u16) -> Result<Vec<u8>, TpmError> {
        let (_, p) = self.command(cc::GET_RANDOM, &[], &[], &n.to_be_bytes(), 0)?;
        let mut r = Reader::new(&p);
        let bytes = r.tpm2b()?.to_vec();
        r.end()?;
        Ok(bytes)
    }

    /// The active PCR banks (`TPM2_GetCapability(TPM_CAP_PCRS)`), those with any PCR allocated.
    pub fn pcr_banks(&mut self) -> Result<Vec<u16>, TpmError> {
        let mut p = Vec::new();
        p.extend_from_slice(&5u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        let (_, rsp) = self.command(cc::GET_CAPABILITY, &[], &[], &p, 0)?;
        let mut r = Reader::new(&rsp);
        let _more = r.u8()?;
        if r.u32()? != 5 {
            return Err(TpmError::Malformed("capability", 1));
        }
        let sel = get_pcr_selection(&mut r)?;
        Ok(sel
            .into_iter()
            .filter(|s| !s.pcrs.is_empty())
            .map(|s| s.hash)
            .collect())
    }

    /// Reads a whole NV index with its own (empty) authorization, in chunks of `chunk` bytes.
    pub fn nv_read_all(&mut self, index: u32, chunk: u16) -> Result<Vec<u8>, TpmError> {
        let (_, p) = self.command(cc::NV_READ_PUBLIC, &[index], &[], &[], 0)?;
        let mut r = Reader::new(&p);
        let public = r.tpm2b()?;
        let mut pr = Reader::new(public);
        let _idx = pr.u32()?;
        let _alg = pr.u16()?;
        let _attrs = pr.u32()?;
        let _policy = pr.tpm2b()?;
        let size = pr.u16()?;
        let mut out = Vec::with_capacity(usize::from(size));
        while out.len() < usize::from(size) {
            let offset = u16::try_from(out.len()).unwrap_or(u16::MAX);
            let n = chunk.min(size - offset);
            let mut params = n.to_be_bytes().to_vec();
            params.extend_from_slice(&offset.to_be_bytes());
            let (_, p) =
                self.command(cc::NV_READ, &[index, index], &[Auth::empty()], &params, 0)?;
            let mut r = Reader::new(&p);
            let data = r.tpm2b()?;
            if data.is_empty() {
                return Err(TpmError::Malformed("empty NV chunk", 0));
            }
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    /// `TPM2_CreatePrimary` under `hierarchy` (empty auth) from `template` (a `TPMT_PUBLIC`).
    /// Returns the handle and the `TPMT_PUBLIC` created.
    pub fn create_primary(
        &mut self,
        hierarchy: u32,
        template: &[u8],
    ) -> Result<(u32, Vec<u8>), TpmError> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, &[0, 0, 0, 0]); // inSensitive: empty userAuth and data
        put_tpm2b(&mut p, template);
        put_tpm2b(&mut p, &[]); // outsideInfo
        p.extend_from_slice(&0u32.to_be_bytes()); // creationPCR: none
        let (h, rsp) = self.command(cc::CREATE_PRIMARY, &[hierarchy], &[Auth::empty()], &p, 1)?;
        let mut r = Reader::new(&rsp);
        let public = r.tpm2b()?.to_vec();
        Ok((h.first().copied().unwrap_or(0), public))
    }

    /// A policy session satisfying `PolicySecret(TPM_RH_ENDORSEMENT)`: the EK's policy.
    pub fn ek_policy_session(&mut self) -> Result<u32, TpmError> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, &[0xA5; 32]); // nonceCaller
        put_tpm2b(&mut p, &[]); // encryptedSalt
        p.push(0x01); // TPM_SE_POLICY
        p.extend_from_slice(&alg::NULL.to_be_bytes()); // symmetric
        p.extend_from_slice(&alg::SHA256.to_be_bytes());
        let (h, _) = self.command(cc::START_AUTH_SESSION, &[RH_NULL, RH_NULL], &[], &p, 1)?;
        let session = h.first().copied().unwrap_or(0);
        let mut p = Vec::new();
        put_tpm2b(&mut p, &[]); // nonceTPM
        put_tpm2b(&mut p, &[]); // cpHashA
        put_tpm2b(&mut p, &[]); // policyRef
        p.extend_from_slice(&0i32.to_be_bytes());
        self.command(
            cc::POLICY_SECRET,
            &[RH_ENDORSEMENT, session],
            &[Auth::empty()],
            &p,
            0,
        )?;
        Ok(session)
    }

    /// `TPM2_Create` under the EK (authorized by a fresh EK policy session).
    pub fn create_under_ek(&mut self, ek: u32, template: &[u8]) -> Result<Created, TpmError> {
        let session = self.ek_policy_session()?;
        let mut p = Vec::new();
        put_tpm2b(&mut p, &[0, 0, 0, 0]);
        put_tpm2b(&mut p, template);
        put_tpm2b(&mut p, &[]);
        p.extend_from_slice(&0u32.to_be_bytes());
        let (_, rsp) = self.command(cc::CREATE, &[ek], &[Auth::Policy(session)], &p, 0)?;
        let mut r = Reader::new(&rsp);
        let private = r.tpm2b()?.to_vec();
        let public = r.tpm2b()?.to_vec();
        Ok(Created { private, public })
    }

    /// `TPM2_Load` under the EK; returns the handle and the object's name.
    pub fn load_under_ek(&mut self, ek: u32, key: &Created) -> Result<(u32, Vec<u8>), TpmError> {
        let session = self.ek_policy_session()?;
        let mut p = Vec::new();
        put_tpm2b(&mut p, &key.private);
        put_tpm2b(&mut p, &key.public);
        let (h, rsp) = self.command(cc::LOAD, &[ek], &[Auth::Policy(session)], &p, 1)?;
        let mut r = Reader::new(&rsp);
        let name = r.tpm2b()?.to_vec();
        r.end()?;
        Ok((h.first().copied().unwrap_or(0), name))
    }

    /// `TPM2_ActivateCredential`: `id_object` and `secret` are `TPM2B` payloads.
    pub fn activate_credential(
        &mut self,
        ak: u32,
        ek: u32,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let session = self.ek_policy_session()?;
        let mut p = Vec::new();
        put_tpm2b(&mut p, id_object);
        put_tpm2b(&mut p, encrypted_secret);
        let (_, rsp) = self.command(
            cc::ACTIVATE_CREDENTIAL,
            &[ak, ek],
            &[Auth::empty(), Auth::Policy(session)],
            &p,
            0,
        )?;
        let mut r = Reader::new(&rsp);
        let secret = r.tpm2b()?.to_vec();
        r.end()?;
        Ok(secret)
    }

    /// `TPM2_PCR_Extend(pcr)` with one digest per `(bank, digest)`.
    pub fn pcr_extend(&mut self, pcr: u32, digests: &[(u16, Vec<u8>)]) -> Result<(), TpmError> {
        let mut p = Vec::new();
        p.extend_from_slice(&u32::try_from(digests.len()).unwrap_or(0).to_be_bytes());
        for (hash, d) in digests {
            p.extend_from_slice(&hash.to_be_bytes());
            p.extend_from_slice(d);
        }
        self.command(cc::PCR_EXTEND, &[pcr], &[Auth::empty()], &p, 0)?;
        Ok(())
    }

    /// `TPM2_PCR_Read` of one PCR in one bank.
    pub fn pcr_read(&mut self, hash: u16, pcr: u8) -> Result<Vec<u8>, TpmError> {
        let mut p = Vec::new();
        put_pcr_selection(
            &mut p,
            &[PcrSelection {
                hash,
                pcrs: vec![pcr],
            }],
        );
        let (_, rsp) = self.command(cc::PCR_READ, &[], &[], &p, 0)?;
        let mut r = Reader::new(&rsp);
        let _counter = r.u32()?;
        let _sel = get_pcr_selection(&mut r)?;
        let n = r.u32()?;
        if n != 1 {
            return Err(TpmError::Malformed("PCR count", 0));
        }
        Ok(r.tpm2b()?.to_vec())
    }

    /// `TPM2_Quote` with the key's own scheme.
    pub fn quote(
        &mut self,
        key: u32,
        nonce: &[u8],
        selection: &[PcrSelection],
    ) -> Result<Quote, TpmError> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, nonce);
        p.extend_from_slice(&alg::NULL.to_be_bytes());
        put_pcr_selection(&mut p, selection);
        let (_, rsp) = self.command(cc::QUOTE, &[key], &[Auth::empty()], &p, 0)?;
        let mut r = Reader::new(&rsp);
        let attest = r.tpm2b()?.to_vec();
        let signature = r.rest().to_vec();
        Ok(Quote { attest, signature })
    }

    /// `TPM2_FlushContext`.
    pub fn flush(&mut self, handle: u32) -> Result<(), TpmError> {
        self.command(cc::FLUSH_CONTEXT, &[], &[], &handle.to_be_bytes(), 0)?;
        Ok(())
    }
}
