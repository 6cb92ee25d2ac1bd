//! The agent link: a TCP listener speaking vouch-proto (postcard messages in COBS frames). One
//! connection is one device session, served by its own task; a semaphore bounds how many run
//! at once.
//!
//! A session, as `vouch_proto::wire` describes it:
//! 1. `Hello` → `Welcome` with the negotiated version (or `Refused(Version)`).
//! 2. `Chunk`s of the EK certificate, then `Enroll` (EK and AK public areas). The EK must be a
//!    host of a trusted cluster and pass that cluster's trust (the three modes, decided by
//!    vouch-attest) — otherwise `Refused(UntrustedEk)`: a fresh vouchd refuses every host.
//!    If this AK is already bound to this EK, straight to step 4; otherwise
//! 3. `CredentialChallenge` (MakeCredential for the AK under the EK) → `ActivationProof`; on
//!    the right secret the AK is stored, bound to the EK.
//! 4. `QuoteRequest` (fresh nonce, the cluster's PCR selection) → `Chunk`s of PCR values and
//!    the event log, then `Evidence` → vouch-attest verifies quote, replay and policy →
//!    `Verdict`; the result is recorded and, when attested, an attestation token issued.
//! 5. The session stays open; every re-attestation interval the verifier sends a new
//!    `QuoteRequest` (continuous attestation). Or, when the agent sent `CheckIn` right after
//!    `Welcome` (v3), the verifier sends `NextCheckIn` after the verdict and closes: the agent
//!    comes back by itself, at the re-attestation interval shortened by up to
//!    `checkin_jitter_percent` (spreading the fleet's load), or after `checkin_retry_secs` when
//!    it was not attested (the verifier pulls that attestation early).
//!
//! Nothing the agent says changes what is recorded of a host until it proves possession of
//! that host's TPM: a quote the host's bound AK signed over the nonce just issued
//! (`verdict::prove_possession`). Evidence that fails this is refused (`evidence-unproven`)
//! and becomes a rate-limited `agent.evidence_refused` event; only verdicts on proven quotes
//! are recorded as the host's result. The credential challenge binds an AK to the EK once; a
//! bound AK is not challenged again, since every session proves possession with its quote.
//!
//! Limits before that proof: the whole handshake, from connecting to the first verdict, must
//! end within `agent_handshake_timeout` (a deadline, not a per-read timeout, so a slow sender
//! cannot keep its slot); one address holds at most `agent_max_unproven_per_address` unproven
//! sessions (more connections are closed at once). After it, an agent silent for
//! `agent_idle_timeout` while the verifier waits for an answer is dropped. Every length is
//! bounded: frames by `vouch_proto::frame::MAX_FRAME`, the EK certificate and PCR values by
//! fixed limits, the event log by `max_event_log`. The agent is told a short code for a
//! refusal; the operator gets the full reason (log and a rate-limited event).
//!
//! The code: `states` holds the phases, each owning exactly its data (a message a phase does
//! not expect is refused with the phase named); `session` the transitions between them, which
//! consume a phase and do the I/O around vouch-attest's decisions; `verdict` the checks over
//! the evidence and the verdict, which holds vouch-attest's `VerifiedEvidence` when attested;
//! `refusal` why a session ends, typed and grouped by the `RefusalKind` sent on the wire;
//! `blob` the reassembly of chunked payloads. This file is the I/O: the listener and the loop
//! reading frames, with its timeouts.

mod blob;
mod refusal;
mod session;
mod states;
mod verdict;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heapless::String as HString;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vouch_proto::frame::{self, FrameReader, MAX_FRAME};
use vouch_proto::wire::{AgentFailure, AgentMessage, VerifierMessage};

use crate::service::AppState;

pub use blob::{Blob, ChunkError};
pub use refusal::{ActivationFailure, ProtocolViolation, Refusal, UntrustedEk};
pub use session::{Session, Step};
pub use states::PhaseName;
pub use verdict::{Attested, NotAttested, Outcome, PcrValuesError, Verdict, pcr_values};

/// Largest EK certificate accepted.
pub const MAX_EK_CERTIFICATE: usize = 4096;
/// Largest PCR-values payload accepted (four banks of 24 SHA-512 PCRs).
pub const MAX_PCR_VALUES: usize = 4 * 24 * 64;
/// Bytes of the nonce in a `QuoteRequest`.
pub const NONCE_LEN: usize = 32;

/// Serves agent sessions on `listener` until `state.shutdown` is cancelled; sessions run on
/// `state.tasks`.
pub async fn serve(listener: TcpListener, state: AppState) {
    let slots = Arc::new(Semaphore::new(session_limit(&state.config)));
    let per_address = Arc::new(UnprovenSessions::default());
    let max_unproven = state.config.agent_max_unproven_per_address;
    loop {
        let accepted = tokio::select! {
            () = state.shutdown.cancelled() => return,
            accepted = async {
                let permit = Arc::clone(&slots).acquire_owned().await;
                (permit, listener.accept().await)
            } => accepted,
        };
        let (Ok(permit), accepted) = accepted else {
            return;
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "agent accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(unproven) = UnprovenSlot::take(&per_address, peer.ip(), max_unproven) else {
            tracing::warn!(%peer, "agent refused: too many unproven sessions from this address");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        state.tasks.clone().spawn(async move {
            state.metrics.agent_sessions.inc();
            state.metrics.agent_sessions_total.inc();
            let end = run(tcp, &peer.to_string(), &state, Some(unproven)).await;
            state.metrics.agent_sessions.dec();
            state.metrics.session_ended(end.label());
            tracing::info!(%peer, end = ?end, "agent session ended");
            drop(permit);
        });
    }
}

/// Open files kept for everything but agent sessions and API connections: the database and
/// its journal, the listeners, outgoing connections (webhook, key servers), the runtime.
const RESERVED_FILES: u64 = 256;

/// How many agent sessions run at once: `agent_max_sessions`, or (0) as many as the process's
/// open-file limit allows once raised to its hard limit, less the API's connections and
/// [`RESERVED_FILES`]. A configured number above that is capped, with a warning saying why.
pub fn session_limit(config: &crate::config::Config) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let files = limit.current.unwrap_or(u64::MAX);
    let api = u64::try_from(config.api_max_connections).unwrap_or(u64::MAX);
    let available = usize::try_from(files.saturating_sub(RESERVED_FILES.saturating_add(api)))
        .unwrap_or(usize::MAX)
        .max(1);
    let configured = config.agent_max_sessions;
    if configured == 0 {
        tracing::info!(
            sessions = available,
            open_file_limit = files,
            "agent sessions at once: as many as the open-file limit allows"
        );
        return available;
    }
    if configured > available {
        tracing::warn!(
            configured,
            sessions = available,
            open_file_limit = files,
            "agent_max_sessions is capped by the process's open-file limit (RLIMIT_NOFILE); raise the limit (e.g. LimitNOFILE= in the service unit) to serve more sessions at once"
        );
        return available;
    }
    configured
}

/// How many sessions each address holds open before proving possession of a TPM.
#[derive(Debug, Default)]
struct UnprovenSessions(Mutex<HashMap<IpAddr, usize>>);

/// One unproven session of an address; dropping it (on proof, or when the session ends)
/// frees its place.
#[derive(Debug)]
pub struct UnprovenSlot {
    table: Arc<UnprovenSessions>,
    ip: IpAddr,
}

impl UnprovenSlot {
    /// A place for one more unproven session of `ip`, unless it holds `max` already.
    fn take(table: &Arc<UnprovenSessions>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut held = table.0.lock().ok()?;
        let count = held.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count = count.saturating_add(1);
        Some(Self {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for UnprovenSlot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.table.0.lock()
            && let Some(count) = held.get_mut(&self.ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The agent closed the connection.
    Closed,
    /// A check-in session gave its verdict and the next check-in time, and closed.
    CheckedIn,
    /// The agent sent nothing in time.
    TimedOut,
    /// The verifier refused the agent (the `Refused` was sent).
    Refused(Refusal),
    /// The agent reported a failure.
    AgentError {
        /// What failed.
        failure: AgentFailure,
        /// The agent's words.
        detail: String,
    },
    /// Reading or writing failed.
    Io(String),
    /// vouchd is stopping; the session was between attestations.
    Shutdown,
}

impl SessionEnd {
    fn label(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::CheckedIn => "checked_in",
            Self::TimedOut => "timeout",
            Self::Refused(..) => "refused",
            Self::AgentError { .. } => "agent_error",
            Self::Io(_) => "io_error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The longest prefix of `s` that fits `N` bytes, cut at a character boundary.
fn bounded<const N: usize>(s: &str) -> HString<N> {
    let mut out = HString::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &VerifierMessage,
) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_FRAME];
    let bytes = frame::encode(message, &mut buf).map_err(|e| format!("encode: {e:?}"))?;
    stream.write_all(bytes).await.map_err(|e| e.to_string())
}

/// Serves one session over any byte stream until it ends.
pub async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: &str,
    state: &AppState,
) -> SessionEnd {
    run(stream, peer, state, None).await
}

/// Bytes read at once while the agent is sending evidence.
const READ_BUFFER: usize = 4096;
/// Bytes read at once between attestations (persistent sessions hold this while idle).
const IDLE_READ_BUFFER: usize = 256;

/// Serves one session; `unproven` is released once the agent proves possession of its TPM.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: &str,
    state: &AppState,
    mut unproven: Option<UnprovenSlot>,
) -> SessionEnd {
    let idle = state.config.agent_idle_timeout();
    let handshake_deadline = tokio::time::Instant::now() + state.config.agent_handshake_timeout();
    let interval = state.config.reattest_interval();
    let mut session = Session::new(peer, state.clone());
    let mut reader: Box<FrameReader<MAX_FRAME>> = Box::default();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut next_attestation: Option<tokio::time::Instant> = None;
    loop {
        let read = if session.awaiting_agent() {
            next_attestation = None;
            if buf.len() < READ_BUFFER {
                buf = vec![0u8; READ_BUFFER];
            }
            let mut until = tokio::time::Instant::now() + idle;
            if !session.proven() {
                until = until.min(handshake_deadline);
            }
            match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return SessionEnd::TimedOut,
            }
        } else {
            let due =
                *next_attestation.get_or_insert_with(|| tokio::time::Instant::now() + interval);
            if buf.len() > IDLE_READ_BUFFER {
                // Between attestations the agent sends little (key requests): the session
                // holds a small buffer while it waits.
                buf = vec![0u8; IDLE_READ_BUFFER];
            }
            tokio::select! {
                r = stream.read(&mut buf) => r,
                // Between attestations a stop ends the session; an attestation in flight
                // (awaiting the agent, above) finishes first.
                () = state.shutdown.cancelled() => return SessionEnd::Shutdown,
                () = tokio::time::sleep_until(due) => {
                    next_attestation = None;
                    match Box::pin(session.reattest()).await {
                        Ok(out) => {
                            for m in &out {
                                if let Err(e) = send(&mut stream, m).await {
                                    return SessionEnd::Io(e);
                                }
                            }
                        }
                        Err(refusal) => {
                            return Box::pin(refuse_and_end(&mut stream, &session, refusal)).await;
                        }
                    }
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) => return SessionEnd::Closed,
            Ok(n) => n,
            Err(e) => return SessionEnd::Io(e.to_string()),
        };
        for &byte in buf.get(..n).unwrap_or_default() {
            let Some(frame) = reader.push(byte) else {
                continue;
            };
            let message = match frame.and_then(frame::decode::<AgentMessage>) {
                Ok(m) => m,
                Err(e) => {
                    let refusal = ProtocolViolation::BadFrame(e).into();
                    return Box::pin(refuse_and_end(&mut stream, &session, refusal)).await;
                }
            };
            if let AgentMessage::Error(e) = &message {
                tracing::warn!(%peer, failure = ?e.failure, detail = %e.detail, "agent reported a failure");
                let end = SessionEnd::AgentError {
                    failure: e.failure,
                    detail: e.detail.to_string(),
                };
                // The session records what it means for the host (a TPM failure after
                // attesting fails closed) and ends.
                let _ = Box::pin(session.on_message(message)).await;
                return end;
            }
            match Box::pin(session.on_message(message)).await {
                Ok(out) => {
                    if session.proven() {
                        // Proven: the address's place for unproven sessions is free again.
                        drop(unproven.take());
                    }
                    for m in &out {
                        if let Err(e) = send(&mut stream, m).await {
                            return SessionEnd::Io(e);
                        }
                    }
                    if session.checked_in() {
                        let _ = stream.shutdown().await;
                        return SessionEnd::CheckedIn;
                    }
                }
                Err(refusal) => {
                    return Box::pin(refuse_and_end(&mut stream, &session, refusal)).await;
                }
            }
        }
    }
}

/// Sends the refusal's short code, tells the operator the full reason (a rate-limited event
/// per address), and ends the session.
async fn refuse_and_end<S: AsyncWrite + Unpin>(
    stream: &mut S,
    session: &Session,
    refusal: Refusal,
) -> SessionEnd {
    let _ = send(stream, &VerifierMessage::Refused(refusal.message())).await;
    if refusal != Refusal::Unavailable {
        let state = session.state();
        let peer = session.peer();
        let address = peer
            .parse::<std::net::SocketAddr>()
            .map_or_else(|_| peer.to_owned(), |a| a.ip().to_string());
        let per_minute = state.config.agent_refusal_events_per_minute;
        if state
            .refusal_events
            .allow(&address, per_minute, crate::now())
        {
            let subject = session.ek_hash().unwrap_or("agent");
            let detail = serde_json::json!({
                "peer": peer,
                "code": refusal.code(),
                "reason": refusal.to_string(),
                "proven": session.proven(),
            });
            crate::service::events::record(state, refusal.event_kind(), subject, detail).await;
        }
    }
    let _ = stream.shutdown().await;
    SessionEnd::Refused(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_cuts_at_a_character() {
        let s: HString<4> = bounded("abcé");
        assert_eq!(s.as_str(), "abc");
    }
}
