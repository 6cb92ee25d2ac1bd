//! One session with the verifier over a byte link, as `vouch_proto::wire` describes it:
//! Hello → EK certificate and Enroll → credential challenge → quotes, until the verifier closes
//! the link.
//!
//! The agent never leaves a transient object or session behind: the EK it recreates is flushed
//! on every exit path, and the command layer flushes the sessions it starts.

use crate::measure::digest_size;
use embedded_io::{Read, Write};
use heapless::{String, Vec};
use vouch_proto::chunk;
use vouch_proto::frame::{self, FrameError, FrameReader, MAX_FRAME};
use vouch_proto::wire::{
    ActivationProof, AgentError, AgentFailure, AgentMessage, BlobKind, BoundEvidence, CHUNK_DATA,
    Chunk, CredentialChallenge, Enroll, Evidence, Hello, KeyRequest, KeyResponse, MAX_ATTEST,
    MAX_DIGEST, MAX_PUBLIC, MAX_SIGNATURE, MAX_TEXT, QuoteRequest, RefusalKind, VerifierMessage,
};
use vouch_proto::{CURRENT_VERSION, MIN_VERSION};
use vouch_tpm::{
    AK_ATTRIBUTES, AK_ATTRIBUTES_V1, AkKind, Auth, CommandError, EkKind, PcrBank, Public,
    PublicKey, ResponseCode, Tpm, Transport,
};

/// How the agent runs its sessions.
#[derive(Debug, Clone, Copy)]
pub struct AgentConfig<'a> {
    /// Sent in Hello, for the verifier's logs.
    pub agent: &'a str,
    /// Which EK (and EK certificate) identifies the TPM: the configured kind, or the one
    /// [`crate::ek::choose`] picked.
    pub ek: EkKind,
    /// The AK's kind when one has to be created.
    pub ak: AkKind,
    /// The persistent handle the AK lives at (owner hierarchy range), reused across boots.
    pub ak_handle: u32,
    /// End the session after this many verdicts; `None` answers quote requests until the
    /// verifier closes the link (continuous attestation).
    pub stop_after_verdicts: Option<u32>,
}

/// Where Vouch keeps its AK unless configured otherwise: an owner-range persistent handle.
pub const DEFAULT_AK_HANDLE: u32 = 0x8100_0A4B;

/// Why a session ended early. Says who is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError<TE, LE> {
    /// The TPM failed or refused a command.
    Tpm(CommandError<TE>),
    /// The link failed.
    Link(LE),
    /// The verifier closed the link before the session was complete.
    Closed,
    /// The verifier sent bytes that are not a message.
    Frame(FrameError),
    /// The verifier sent a message out of order.
    Protocol(&'static str),
    /// The verifier refused this agent.
    Refused(RefusalKind, String<MAX_TEXT>),
    /// A payload does not fit the wire contract's bounds.
    TooLarge(&'static str),
}

/// What a completed session did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether a credential challenge was answered (a new AK was bound to the EK).
    pub activated: bool,
    /// Quotes sent.
    pub quotes: u32,
    /// Verdicts received.
    pub verdicts: u32,
    /// The last verdict: `Some(true)` when attested.
    pub last_verdict: Option<bool>,
    /// The software version the last positive verdict named.
    pub software_version: String<32>,
    /// The protocol version the verifier chose.
    pub version: u16,
    /// Whether a key channel bound to the attestation was set up (v2, attested).
    pub channel: bool,
    /// Key responses received over the channel.
    pub key_responses: u32,
    /// A check-in session (v3): when the verifier wants the next check-in, in seconds.
    pub next_checkin_secs: Option<u32>,
}

/// What the agent asks of the key provider service once attested (protocol v2): requests go
/// out sealed one at a time, each answer comes back before the next request.
pub trait KeyClient {
    /// The next request, or `None` when done.
    fn next_request(&mut self) -> Option<KeyRequest>;
    /// The answer to the last request.
    fn response(&mut self, response: KeyResponse);
}

/// A [`KeyClient`] with nothing to ask.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeys;

impl KeyClient for NoKeys {
    fn next_request(&mut self) -> Option<KeyRequest> {
        None
    }

    fn response(&mut self, _response: KeyResponse) {}
}

/// A [`KeyClient`] for a board application: once attested, it asks once for a data key bound
/// to `aad` and keeps the key and its wrapped form for the application (the key server's
/// answer, over the channel bound to the attestation).
#[derive(Debug, Clone)]
pub struct BootDataKey {
    aad: &'static [u8],
    asked: bool,
    /// The data key and its wrapped form, once the verifier answered.
    pub key: Option<(
        [u8; 32],
        heapless::Vec<u8, { vouch_proto::wire::MAX_KEY_CIPHERTEXT }>,
    )>,
}

impl BootDataKey {
    /// A client asking for one data key bound to `aad` (at most 64 bytes).
    #[must_use]
    pub const fn new(aad: &'static [u8]) -> Self {
        Self {
            aad,
            asked: false,
            key: None,
        }
    }
}

impl KeyClient for BootDataKey {
    fn next_request(&mut self) -> Option<KeyRequest> {
        if self.asked {
            return None;
        }
        self.asked = true;
        Some(KeyRequest::GenerateKey {
            aad: heapless::Vec::from_slice(self.aad).ok()?,
        })
    }

    fn response(&mut self, response: KeyResponse) {
        if let KeyResponse::DataKey { key, wrapped } = response {
            self.key = Some((key, wrapped));
        }
    }
}

type Result<V, T, L> = core::result::Result<
    V,
    SessionError<<T as Transport>::Error, <L as embedded_io::ErrorType>::Error>,
>;

/// The framed link: a reader that resynchronises on garbage and an output frame buffer.
struct Conn<'l, L> {
    link: &'l mut L,
    reader: FrameReader<MAX_FRAME>,
    out: [u8; MAX_FRAME],
    input: [u8; 64],
    pos: usize,
    filled: usize,
}

impl<L: Read + Write> Conn<'_, L> {
    fn send<TE>(
        &mut self,
        message: &AgentMessage,
    ) -> core::result::Result<(), SessionError<TE, L::Error>> {
        let bytes = frame::encode(message, &mut self.out).map_err(SessionError::Frame)?;
        self.link.write_all(bytes).map_err(SessionError::Link)?;
        self.link.flush().map_err(SessionError::Link)
    }

    /// The next message from the verifier; `Ok(None)` when the link closed between messages.
    fn recv<TE>(
        &mut self,
    ) -> core::result::Result<Option<VerifierMessage>, SessionError<TE, L::Error>> {
        loop {
            while self.pos < self.filled {
                let byte = self.input.get(self.pos).copied().unwrap_or(0);
                self.pos += 1;
                if let Some(frame) = self.reader.push(byte) {
                    return frame
                        .and_then(frame::decode::<VerifierMessage>)
                        .map(Some)
                        .map_err(SessionError::Frame);
                }
            }
            let n = self
                .link
                .read(&mut self.input)
                .map_err(SessionError::Link)?;
            if n == 0 {
                return Ok(None);
            }
            self.pos = 0;
            self.filled = n;
        }
    }

    fn send_blob<TE>(
        &mut self,
        blob: BlobKind,
        data: &[u8],
    ) -> core::result::Result<(), SessionError<TE, L::Error>> {
        let chunks = chunk::split(blob, data).map_err(|_| SessionError::TooLarge("payload"))?;
        for chunk in chunks {
            self.send(&AgentMessage::Chunk(chunk))?;
        }
        Ok(())
    }

    fn report<TE>(&mut self, failure: AgentFailure, detail: &str) {
        let mut text = String::new();
        let _ = text.push_str(detail.get(..detail.len().min(MAX_TEXT)).unwrap_or(""));
        let _ = self.send::<TE>(&AgentMessage::Error(AgentError {
            failure,
            detail: text,
        }));
    }
}

/// Runs one session: enrolls the TPM (EK, EK certificate, AK), answers the credential challenge
/// and every quote request, until the verifier closes the link.
///
/// `event_log` is the TCG event log sent with every quote (the one [`crate::measured_boot`]
/// kept, or a platform's). The EK certificate goes from the TPM's NV to the link chunk by
/// chunk, never whole in memory.
///
/// # Errors
/// See [`SessionError`]. A TPM failure is also reported to the verifier before returning.
pub fn run<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    link: &mut L,
    config: &AgentConfig<'_>,
) -> Result<Outcome, T, L> {
    run_with_keys(tpm, event_log, link, config, &mut NoKeys)
}

/// [`run`], and once attested over a v2 link, the key requests of `keys` over the channel bound
/// to the attestation ([`crate::channel`]). With `stop_after_verdicts`, the session ends after
/// that many verdicts and, when attested, after the last key response.
///
/// # Errors
/// See [`SessionError`].
pub fn run_with_keys<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    link: &mut L,
    config: &AgentConfig<'_>,
    keys: &mut dyn KeyClient,
) -> Result<Outcome, T, L> {
    session(tpm, event_log, link, config, keys, false)
}

/// A check-in (protocol v3): one attestation, then the verifier says when to come back
/// ([`Outcome::next_checkin_secs`]) and closes the link; the caller disconnects and connects
/// again then. There is no key channel in a check-in. A verifier older than v3 serves it as a
/// persistent session: the caller should then set `stop_after_verdicts` to 1 and come back on
/// its own interval.
///
/// # Errors
/// See [`SessionError`].
pub fn check_in<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    link: &mut L,
    config: &AgentConfig<'_>,
) -> Result<Outcome, T, L> {
    session(tpm, event_log, link, config, &mut NoKeys, true)
}

fn session<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    link: &mut L,
    config: &AgentConfig<'_>,
    keys: &mut dyn KeyClient,
    checkin: bool,
) -> Result<Outcome, T, L> {
    let mut conn = Conn {
        link,
        reader: FrameReader::new(),
        out: [0; MAX_FRAME],
        input: [0; 64],
        pos: 0,
        filled: 0,
    };
    let mut agent = String::new();
    let _ = agent.push_str(config.agent.get(..config.agent.len().min(32)).unwrap_or(""));
    conn.send(&AgentMessage::Hello(Hello {
        min_version: MIN_VERSION,
        max_version: if crate::channel::ENABLED {
            CURRENT_VERSION
        } else {
            1
        },
        agent,
    }))?;
    let version = match conn.recv()? {
        Some(VerifierMessage::Welcome(w)) => w.version,
        Some(VerifierMessage::Refused(r)) => return Err(SessionError::Refused(r.kind, r.reason)),
        Some(_) => return Err(SessionError::Protocol("expected Welcome")),
        None => return Err(SessionError::Closed),
    };
    let checkin = checkin && version >= 3;
    if checkin {
        conn.send(&AgentMessage::CheckIn)?;
    }

    // Objects and sessions an earlier session leaked (a response lost to a reset link, a
    // cancelled command) would fill the TPM's few slots: flush them first.
    if let Err(e) = tpm.flush_transients() {
        return Err(tpm_failure(&mut conn, e));
    }
    let ek = match tpm.create_ek(config.ek) {
        Ok(ek) => ek,
        Err(e) => return Err(tpm_failure(&mut conn, e)),
    };
    let result = enrolled_session(
        tpm, event_log, &mut conn, config, ek.handle, &ek.public, version, checkin, keys,
    );
    let _ = tpm.flush_context(ek.handle);
    result
}

// Each step of the session is its own frame, never inlined into its caller: the values one
// step holds (a created object, a quote, a message being encoded) are then on the stack only
// while that step runs, instead of all at once in one merged frame.
#[allow(
    clippy::too_many_arguments,
    reason = "one private step of run_with_keys, which holds them all"
)]
#[inline(never)]
fn enrolled_session<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    ek: u32,
    ek_public: &Public,
    version: u16,
    checkin: bool,
    keys: &mut dyn KeyClient,
) -> Result<Outcome, T, L> {
    let has_ek_certificate = send_ek_certificate(tpm, conn, config.ek)?;
    enroll(tpm, conn, config, ek, ek_public, has_ek_certificate)?;
    attest(tpm, event_log, conn, config, ek, version, checkin, keys)
}

/// After enrollment: the credential challenge, quotes and the key channel, with the session's
/// state in this frame (not under enrollment's).
#[allow(
    clippy::too_many_arguments,
    reason = "one private step of run_with_keys, which holds them all"
)]
#[inline(never)]
fn attest<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    ek: u32,
    version: u16,
    checkin: bool,
    keys: &mut dyn KeyClient,
) -> Result<Outcome, T, L> {
    let mut state = State {
        outcome: Outcome {
            version,
            ..Outcome::default()
        },
        session_key: None,
        last_nonce: Vec::new(),
        channel: None,
        keys_done: false,
        checkin,
    };
    // v2: an ephemeral key bound into every quote of this session (a check-in has no channel).
    if version >= 2 && crate::channel::ENABLED && !checkin {
        match crate::channel::SessionKey::generate(tpm) {
            Ok(key) => state.session_key = Some(key),
            Err(e) => return Err(tpm_failure(conn, e)),
        }
    }
    let result = serve(tpm, event_log, conn, config, ek, &mut state, keys);
    if let Some(key) = &state.session_key {
        let _ = key.flush(tpm);
    }
    result.map(|()| state.outcome)
}

/// Answers the verifier's messages until it closes the link or the session is complete.
#[allow(
    clippy::too_many_arguments,
    reason = "one private step of run_with_keys, which holds them all"
)]
fn serve<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    ek: u32,
    state: &mut State,
    keys: &mut dyn KeyClient,
) -> Result<(), T, L> {
    loop {
        let Some(message) = conn.recv()? else {
            return Ok(());
        };
        if let Step::Done = step(tpm, event_log, conn, config, ek, state, keys, &message)? {
            return Ok(());
        }
    }
}

/// What a session holds between messages.
struct State {
    outcome: Outcome,
    /// v2: the ephemeral key bound into every quote of this session.
    session_key: Option<crate::channel::SessionKey>,
    /// The nonce of the last quote: the salt of the channel key.
    last_nonce: Vec<u8, MAX_DIGEST>,
    channel: Option<crate::channel::Channel>,
    keys_done: bool,
    /// A check-in session (v3): `NextCheckIn` after the verdict ends it.
    checkin: bool,
}

impl State {
    fn stop(&self, config: &AgentConfig<'_>) -> bool {
        config
            .stop_after_verdicts
            .is_some_and(|n| self.outcome.verdicts >= n)
    }
}

/// Whether the session goes on after a message.
enum Step {
    Continue,
    Done,
}

/// Answers one message from the verifier.
#[allow(
    clippy::too_many_arguments,
    reason = "one private step of run_with_keys, which holds them all"
)]
#[inline(never)]
fn step<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    ek: u32,
    state: &mut State,
    keys: &mut dyn KeyClient,
    message: &VerifierMessage,
) -> Result<Step, T, L> {
    match message {
        VerifierMessage::CredentialChallenge(challenge) => {
            answer_challenge(tpm, conn, config, ek, challenge)?;
            state.outcome.activated = true;
        }
        VerifierMessage::QuoteRequest(request) => {
            send_evidence(
                tpm,
                event_log,
                conn,
                config.ak_handle,
                request,
                state.session_key.as_ref(),
            )?;
            state.last_nonce.clone_from(&request.nonce);
            state.outcome.quotes += 1;
        }
        VerifierMessage::Verdict(verdict) => {
            let outcome = &mut state.outcome;
            outcome.verdicts += 1;
            outcome.last_verdict = Some(verdict.attested);
            outcome
                .software_version
                .clone_from(&verdict.software_version);
            // Attested on a v2 link: a ChannelKey follows; wait for it unless done.
            let channel_follows =
                verdict.attested && state.session_key.is_some() && !state.keys_done;
            if state.stop(config) && !channel_follows && !state.checkin {
                return Ok(Step::Done);
            }
        }
        VerifierMessage::ChannelKey(key) => {
            return on_channel_key(tpm, conn, config, state, keys, key);
        }
        VerifierMessage::Sealed(sealed) => return on_sealed(conn, config, state, keys, sealed),
        VerifierMessage::Refused(r) => {
            return Err(SessionError::Refused(r.kind, r.reason.clone()));
        }
        VerifierMessage::Welcome(_) => {
            return Err(protocol_failure(conn, "Welcome after the handshake"));
        }
        VerifierMessage::NextCheckIn(next) => {
            state.outcome.next_checkin_secs = Some(next.after_secs);
            return Ok(Step::Done);
        }
    }
    Ok(Step::Continue)
}

// The steps below hold the larger values (an AES-GCM key schedule, a sealed message, an
// activation proof) in frames of their own, so a quote's path never carries them.

/// TPM2_ActivateCredential on the verifier's challenge, and the proof.
#[inline(never)]
fn answer_challenge<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    ek: u32,
    challenge: &CredentialChallenge,
) -> Result<(), T, L> {
    let secret = match activate(tpm, ek, config.ak_handle, challenge) {
        Ok(secret) => secret,
        Err(e) => return Err(tpm_failure(conn, e)),
    };
    conn.send(&AgentMessage::ActivationProof(ActivationProof { secret }))
}

/// The verifier's channel key: the channel, and the first key request over it.
#[inline(never)]
fn on_channel_key<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    state: &mut State,
    keys: &mut dyn KeyClient,
    key: &vouch_proto::wire::ChannelKey,
) -> Result<Step, T, L> {
    let Some(ours) = state.session_key.as_ref() else {
        return Err(protocol_failure(conn, "ChannelKey on a v1 link"));
    };
    state.channel = match ours.agree(tpm, &key.public, &state.last_nonce) {
        Ok(channel) => channel,
        Err(e) => return Err(tpm_failure(conn, e)),
    };
    let Some(channel) = state.channel.as_mut() else {
        return Err(protocol_failure(conn, "bad channel key"));
    };
    state.outcome.channel = true;
    if !send_next_key_request(conn, channel, keys, &mut state.keys_done)? && state.stop(config) {
        return Ok(Step::Done);
    }
    Ok(Step::Continue)
}

/// A sealed key response: opened, handed to `keys`, and the next request.
#[inline(never)]
fn on_sealed<TE, L: Read + Write>(
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    state: &mut State,
    keys: &mut dyn KeyClient,
    sealed: &vouch_proto::wire::Sealed,
) -> core::result::Result<Step, SessionError<TE, L::Error>> {
    let Some(channel) = state.channel.as_mut() else {
        return Err(protocol_failure(conn, "Sealed without a channel"));
    };
    let Some(response) = channel.open_response(sealed) else {
        return Err(protocol_failure(conn, "sealed response refused"));
    };
    state.outcome.key_responses += 1;
    keys.response(response);
    if !send_next_key_request(conn, channel, keys, &mut state.keys_done)? && state.stop(config) {
        return Ok(Step::Done);
    }
    Ok(Step::Continue)
}

/// Reports the verifier's protocol violation to it and returns it as the session's error.
fn protocol_failure<TE, L: Read + Write>(
    conn: &mut Conn<'_, L>,
    what: &'static str,
) -> SessionError<TE, L::Error> {
    conn.report::<TE>(AgentFailure::Protocol, what);
    SessionError::Protocol(what)
}

/// Sends the EK certificate from the TPM's NV index in chunks as it is read; `Ok(false)` when
/// the TPM has none (trust mode 3: an EK certificate is optional).
///
/// # Errors
/// A TPM failure once part of the certificate was sent; a link failure.
#[inline(never)]
fn send_ek_certificate<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    conn: &mut Conn<'_, L>,
    kind: EkKind,
) -> Result<bool, T, L> {
    let mut sent = Ok(0usize);
    let read = tpm.read_ek_certificate_with(kind, CHUNK_DATA, |offset, total, data| {
        let chunk = (|| {
            Some(Chunk {
                blob: BlobKind::EkCertificate,
                total: u32::try_from(total).ok()?,
                offset: u32::try_from(offset).ok()?,
                data: Vec::from_slice(data).ok()?,
            })
        })();
        sent = match chunk {
            Some(chunk) => conn
                .send(&AgentMessage::Chunk(chunk))
                .map(|()| offset.saturating_add(data.len())),
            None => Err(SessionError::TooLarge("EK certificate")),
        };
        sent.is_ok()
    });
    let sent = sent?;
    match read {
        Ok(size) if size > 0 && sent == size => Ok(true),
        Ok(_) => Ok(false),
        // The index does not exist (TPM_RC_HANDLE): the TPM has no certificate.
        Err(CommandError::Tpm(rc)) if sent == 0 && crate::ek::is_no_such_index(rc) => Ok(false),
        // Anything else (an index that is not a certificate or too big, a TPM failure) is
        // said, not taken for "no certificate".
        Err(e) => Err(tpm_failure(conn, e)),
    }
}

/// The AK (created and made persistent on first use) and the Enroll message.
#[inline(never)]
fn enroll<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    conn: &mut Conn<'_, L>,
    config: &AgentConfig<'_>,
    ek: u32,
    ek_public: &Public,
    has_ek_certificate: bool,
) -> Result<(), T, L> {
    // The message is built in place: the AK's public area goes straight into it.
    let mut message = AgentMessage::Enroll(Enroll {
        ek_public: Vec::from_slice(ek_public.as_tpm2b())
            .map_err(|_| SessionError::TooLarge("EK public area"))?,
        ak_public: Vec::new(),
        has_ek_certificate,
    });
    if let AgentMessage::Enroll(enroll) = &mut message {
        match ensure_ak(tpm, ek, config, &mut enroll.ak_public) {
            Ok(true) => {}
            Ok(false) => return Err(SessionError::TooLarge("AK public area")),
            Err(e) => return Err(tpm_failure(conn, e)),
        }
    }
    conn.send(&message)
}

/// Reports a TPM failure to the verifier and returns it as the session's error.
fn tpm_failure<TE, L: Read + Write>(
    conn: &mut Conn<'_, L>,
    e: CommandError<TE>,
) -> SessionError<TE, L::Error> {
    match &e {
        CommandError::Tpm(ResponseCode(rc)) => {
            conn.report::<TE>(AgentFailure::TpmResponse(*rc), "TPM refused a command");
        }
        _ => conn.report::<TE>(AgentFailure::TpmUnreachable, "TPM failed"),
    }
    SessionError::Tpm(e)
}

/// Whether `public` is an AK this agent would have created: a restricted signing key bound to
/// this TPM, of the configured kind.
fn is_our_ak(public: &Public, kind: AkKind) -> bool {
    let area = public.parsed();
    let kind_matches = matches!(
        (area.key, kind),
        (PublicKey::Ecc { .. }, AkKind::EccP256) | (PublicKey::Rsa { .. }, AkKind::Rsa2048)
    );
    // AKs persisted before noDA was added keep being used.
    (area.attributes == AK_ATTRIBUTES || area.attributes == AK_ATTRIBUTES_V1) && kind_matches
}

/// The persistent AK's TPM2B_PUBLIC into `public`: created under the EK and made persistent on
/// first use, reused after. `Ok(false)` if it does not fit `public`.
#[inline(never)]
fn ensure_ak<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    ek: u32,
    config: &AgentConfig<'_>,
    public: &mut Vec<u8, MAX_PUBLIC>,
) -> core::result::Result<bool, CommandError<T::Error>> {
    if reuse_ak(tpm, config, public)? {
        return Ok(true);
    }
    create_ak(tpm, ek, config, public)
}

/// The AK already persisted at our handle, if it is ours (its public area into `public`);
/// something else at the handle is evicted.
#[inline(never)]
fn reuse_ak<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    config: &AgentConfig<'_>,
    public: &mut Vec<u8, MAX_PUBLIC>,
) -> core::result::Result<bool, CommandError<T::Error>> {
    match tpm.read_public(config.ak_handle) {
        Ok(existing) if is_our_ak(&existing.public, config.ak) => {
            return Ok(public.extend_from_slice(existing.public.as_tpm2b()).is_ok());
        }
        // Something else sits at our handle: evict it and start over.
        Ok(_) => tpm.evict_control(config.ak_handle, config.ak_handle)?,
        // TPM_RC_HANDLE (format-one, any parameter number): nothing persisted yet.
        Err(CommandError::Tpm(rc)) if rc.is_format_one() && rc.base() == 0x08B => {}
        Err(e) => return Err(e),
    }
    Ok(false)
}

/// A new AK under the EK, made persistent at our handle (its public area into `public`).
#[inline(never)]
fn create_ak<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    ek: u32,
    config: &AgentConfig<'_>,
    public: &mut Vec<u8, MAX_PUBLIC>,
) -> core::result::Result<bool, CommandError<T::Error>> {
    let created = tpm.create_ak(ek, config.ak)?;
    let loaded = tpm.load(ek, Auth::EkPolicy, &created)?;
    let persisted = tpm.evict_control(loaded.handle, config.ak_handle);
    let _ = tpm.flush_context(loaded.handle);
    persisted?;
    Ok(public.extend_from_slice(created.public.as_tpm2b()).is_ok())
}

#[inline(never)]
fn activate<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    ek: u32,
    ak: u32,
    challenge: &CredentialChallenge,
) -> core::result::Result<Vec<u8, { vouch_proto::wire::MAX_DIGEST }>, CommandError<T::Error>> {
    let secret =
        tpm.activate_credential(ak, ek, &challenge.id_object, &challenge.encrypted_secret)?;
    Vec::from_slice(secret.as_slice()).map_err(|_| CommandError::Capacity)
}

/// Quotes, then sends the PCR values and the event log as chunks, then the quote itself.
#[inline(never)]
fn send_evidence<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    event_log: &[u8],
    conn: &mut Conn<'_, L>,
    ak: u32,
    request: &QuoteRequest,
    session_key: Option<&crate::channel::SessionKey>,
) -> Result<(), T, L> {
    let mut selection = [PcrBank::default(); vouch_proto::wire::MAX_BANKS];
    for (slot, bank) in selection.iter_mut().zip(request.selection.iter()) {
        *slot = PcrBank {
            alg: bank.hash_alg,
            pcrs: bank.pcrs,
        };
    }
    let selection = selection.get(..request.selection.len()).unwrap_or_default();
    // v2: the quote's qualifying data binds the session key to this attestation.
    let bound = session_key.map(|k| k.qualifying_data(&request.nonce));
    let qualifying: &[u8] = match &bound {
        Some(q) => q,
        None => &request.nonce,
    };
    // The message is built first and the quote's bytes go straight into it.
    let mut message = match session_key {
        Some(key) => AgentMessage::BoundEvidence(BoundEvidence {
            attest: Vec::new(),
            signature: Vec::new(),
            session_public: Vec::from_slice(key.public())
                .map_err(|_| SessionError::TooLarge("session key"))?,
        }),
        None => AgentMessage::Evidence(Evidence {
            attest: Vec::new(),
            signature: Vec::new(),
        }),
    };
    let (attest, signature) = match &mut message {
        AgentMessage::BoundEvidence(e) => (&mut e.attest, &mut e.signature),
        AgentMessage::Evidence(e) => (&mut e.attest, &mut e.signature),
        _ => return Err(SessionError::Protocol("evidence message")),
    };
    match quote_into(tpm, ak, qualifying, selection, attest, signature) {
        Ok(true) => {}
        Ok(false) => return Err(SessionError::TooLarge("TPMS_ATTEST or TPMT_SIGNATURE")),
        Err(e) => return Err(tpm_failure(conn, e)),
    }
    if let Err(e) = send_pcr_values(tpm, conn, selection) {
        return Err(match e {
            PcrSendError::Tpm(e) => tpm_failure(conn, e),
            PcrSendError::Session(e) => e,
        });
    }
    conn.send_blob(BlobKind::EventLog, event_log)?;
    conn.send(&message)
}

/// TPM2_Quote, its TPMS_ATTEST and TPMT_SIGNATURE into `attest` and `signature`; `Ok(false)`
/// if they do not fit.
#[inline(never)]
fn quote_into<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    ak: u32,
    qualifying: &[u8],
    selection: &[PcrBank],
    attest: &mut Vec<u8, MAX_ATTEST>,
    signature: &mut Vec<u8, MAX_SIGNATURE>,
) -> core::result::Result<bool, CommandError<T::Error>> {
    let quote = tpm.quote(ak, qualifying, selection)?;
    Ok(attest.extend_from_slice(quote.attest.as_slice()).is_ok()
        && signature
            .extend_from_slice(quote.signature.as_slice())
            .is_ok())
}

/// Sends the next key request sealed; `Ok(false)` when there is none (and marks the work done).
fn send_next_key_request<TE, L: Read + Write>(
    conn: &mut Conn<'_, L>,
    channel: &mut crate::channel::Channel,
    keys: &mut dyn KeyClient,
    done: &mut bool,
) -> core::result::Result<bool, SessionError<TE, L::Error>> {
    let Some(request) = keys.next_request() else {
        *done = true;
        return Ok(false);
    };
    let sealed = channel
        .seal_request(&request)
        .ok_or(SessionError::TooLarge("key request"))?;
    conn.send(&AgentMessage::Sealed(sealed))?;
    Ok(true)
}

enum PcrSendError<TE, LE> {
    Tpm(CommandError<TE>),
    Session(SessionError<TE, LE>),
}

/// Streams the selected PCR values (bank by bank, PCRs ascending) as one chunked payload,
/// reading at most eight PCRs per TPM2_PCR_Read.
#[inline(never)]
fn send_pcr_values<T: Transport, L: Read + Write, const N: usize>(
    tpm: &mut Tpm<T, N>,
    conn: &mut Conn<'_, L>,
    selection: &[PcrBank],
) -> core::result::Result<(), PcrSendError<T::Error, L::Error>> {
    let mut total = 0usize;
    for bank in selection {
        let size = digest_size(bank.alg).ok_or(PcrSendError::Session(SessionError::Protocol(
            "quote request names a hash this agent does not know",
        )))?;
        total += size * bank.pcrs.count_ones() as usize;
    }
    let total = u32::try_from(total)
        .map_err(|_| PcrSendError::Session(SessionError::TooLarge("PCR values")))?;
    let mut chunk = Chunk {
        blob: BlobKind::PcrValues,
        total,
        offset: 0,
        data: Vec::new(),
    };
    for bank in selection {
        let mut remaining = bank.pcrs;
        while remaining != 0 {
            // The next (up to) eight selected PCRs of this bank.
            let mut part = 0u32;
            for _ in 0..8 {
                if remaining == 0 {
                    break;
                }
                let lowest = remaining & remaining.wrapping_neg();
                part |= lowest;
                remaining &= !lowest;
            }
            let values = tpm
                .pcr_read(&[PcrBank {
                    alg: bank.alg,
                    pcrs: part,
                }])
                .map_err(PcrSendError::Tpm)?;
            if values.selection.as_slice()
                != [PcrBank {
                    alg: bank.alg,
                    pcrs: part,
                }]
            {
                return Err(PcrSendError::Session(SessionError::Protocol(
                    "the TPM read other PCRs than asked",
                )));
            }
            for digest in values.digests() {
                for &byte in digest.as_slice() {
                    if chunk.data.push(byte).is_err() {
                        flush_chunk(conn, &mut chunk).map_err(PcrSendError::Session)?;
                        let _ = chunk.data.push(byte);
                    }
                }
            }
        }
    }
    if !chunk.data.is_empty() {
        flush_chunk(conn, &mut chunk).map_err(PcrSendError::Session)?;
    }
    Ok(())
}

fn flush_chunk<TE, L: Read + Write>(
    conn: &mut Conn<'_, L>,
    chunk: &mut Chunk,
) -> core::result::Result<(), SessionError<TE, L::Error>> {
    conn.send(&AgentMessage::Chunk(chunk.clone()))?;
    chunk.offset = chunk
        .offset
        .saturating_add(u32::try_from(chunk.data.len()).unwrap_or(u32::MAX));
    chunk.data.clear();
    Ok(())
}
