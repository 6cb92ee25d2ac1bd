//! One simulated agent on the agent link: the same `vouch-proto` frames a board sends, in the
//! same order (`Hello`, [`CheckIn`], EK certificate chunks, `Enroll`, `ActivationProof`, PCR
//! value and event log chunks, `Evidence`), from a source address of its own in 127.0.0.0/8.
//!
//! [`CheckIn`]: vouch_proto::wire::AgentMessage::CheckIn

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use heapless::Vec as HVec;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use vouch_proto::frame::{self, FrameReader, MAX_FRAME};
use vouch_proto::wire::{
    ActivationProof, AgentMessage, BlobKind, Enroll, Evidence, Hello, QuoteRequest, VerifierMessage,
};

use crate::hosts::{Boot, Host};
use crate::tpm::{self, Clock};

/// How long the agent waits for any one answer of the verifier before giving up on the session.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session failed, by kind (the keys of the report's `errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused or reset before the session began.
    Connect(String),
    /// No answer in time.
    Timeout,
    /// The verifier refused the agent (its short code).
    Refused(String),
    /// A verdict of not attested.
    NotAttested(String),
    /// The link broke mid-session.
    Io(String),
    /// The verifier said something out of order.
    Protocol(String),
    /// The software TPM failed.
    Tpm(String),
}

impl Failure {
    /// The kind, as the report counts it.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(_) => "connect".into(),
            Self::Timeout => "timeout".into(),
            Self::Refused(code) => format!("refused:{code}"),
            Self::NotAttested(_) => "not_attested".into(),
            Self::Io(_) => "io".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::Tpm(_) => "tpm".into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Timeout => write!(f, "no answer within {ANSWER_TIMEOUT:?}"),
            Self::Refused(code) => write!(f, "refused: {code}"),
            Self::NotAttested(reason) => write!(f, "not attested: {reason}"),
            Self::Io(e) => write!(f, "link: {e}"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
            Self::Tpm(e) => write!(f, "TPM: {e}"),
        }
    }
}

/// One attestation as the agent saw it.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// When the verdict arrived.
    pub at: Instant,
    /// From the quote request to the verdict.
    pub latency: Duration,
    /// How long the verdict is valid.
    pub valid_for: Duration,
    /// The nonce of the quote it judged (how the verifier's database names the result).
    pub nonce: Vec<u8>,
}

/// A link to the verifier.
pub struct Link {
    stream: TcpStream,
    reader: Box<FrameReader<MAX_FRAME>>,
    out: Vec<u8>,
    input: [u8; 2048],
    pending: std::collections::VecDeque<VerifierMessage>,
    /// The nonce of the last quote request answered.
    last_nonce: Vec<u8>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Link {
    /// Connects from `source` (port chosen by the kernel) to `server`.
    pub async fn connect(source: IpAddr, server: SocketAddr) -> Result<Self, Failure> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| Failure::Connect(e.to_string()))?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| Failure::Connect(format!("bind {source}: {e}")))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
            .await
            .map_err(|_| Failure::Connect("timed out".into()))?
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            reader: Box::default(),
            out: vec![0u8; MAX_FRAME],
            input: [0u8; 2048],
            pending: std::collections::VecDeque::new(),
            last_nonce: Vec::new(),
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &AgentMessage) -> Result<(), Failure> {
        let bytes = frame::encode(message, &mut self.out)
            .map_err(|e| Failure::Protocol(format!("encode: {e:?}")))?;
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| Failure::Io(e.to_string()))
    }

    /// Sends a payload as chunks.
    async fn send_blob(&mut self, blob: BlobKind, data: &[u8]) -> Result<(), Failure> {
        let chunks = vouch_proto::chunk::split(blob, data)
            .map_err(|e| Failure::Protocol(format!("chunk: {e:?}")))?;
        for chunk in chunks {
            self.send(&AgentMessage::Chunk(chunk)).await?;
        }
        Ok(())
    }

    /// The next message, waiting at most `timeout`; `None` when the verifier closed the link.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<VerifierMessage>, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(Some(m));
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.input))
                .await
                .map_err(|_| Failure::Timeout)?;
            let n = match read {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) => return Err(Failure::Io(e.to_string())),
            };
            for &byte in self.input.get(..n).unwrap_or_default() {
                if let Some(frame) = self.reader.push(byte) {
                    let message = frame
                        .and_then(frame::decode::<VerifierMessage>)
                        .map_err(|e| Failure::Protocol(format!("bad frame: {e:?}")))?;
                    self.pending.push_back(message);
                }
            }
        }
    }
}

/// A host's TPM clock: milliseconds since the epoch, so it never goes back across sessions.
fn clock() -> Clock {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Clock {
        clock_ms: ms,
        reset_count: 1,
        restart_count: 0,
    }
}

/// The agent's first words and its enrolment: `Hello`, `CheckIn` when `checkin`, the EK
/// certificate, `Enroll`. Returns the negotiated version.
pub async fn enroll(link: &mut Link, host: &Host, checkin: bool) -> Result<u16, Failure> {
    link.send(&AgentMessage::Hello(Hello {
        min_version: vouch_proto::MIN_VERSION,
        max_version: vouch_proto::CURRENT_VERSION,
        agent: heapless::String::try_from("vouch-fleet").unwrap_or_default(),
    }))
    .await?;
    let version = match link.recv(ANSWER_TIMEOUT).await? {
        Some(VerifierMessage::Welcome(w)) => w.version,
        Some(VerifierMessage::Refused(r)) => return Err(Failure::Refused(r.reason.to_string())),
        Some(other) => {
            return Err(Failure::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        None => return Err(Failure::Io("closed before Welcome".into())),
    };
    if checkin {
        if version < 3 {
            return Err(Failure::Protocol(format!(
                "the verifier speaks protocol v{version}, check-in needs v3"
            )));
        }
        link.send(&AgentMessage::CheckIn).await?;
    }
    link.send_blob(BlobKind::EkCertificate, &host.ek_certificate)
        .await?;
    let too_large = |_| Failure::Protocol("public area too large".into());
    link.send(&AgentMessage::Enroll(Enroll {
        ek_public: HVec::from_slice(&host.ek_public).map_err(too_large)?,
        ak_public: HVec::from_slice(&host.ak_public).map_err(too_large)?,
        has_ek_certificate: true,
    }))
    .await?;
    Ok(version)
}

/// Answers a quote request: PCR values, the event log, then the evidence.
async fn answer_quote(
    link: &mut Link,
    host: &Host,
    boot: &Boot,
    request: &QuoteRequest,
) -> Result<(), Failure> {
    let selection: Vec<(u16, u32)> = request
        .selection
        .iter()
        .map(|b| (b.hash_alg, b.pcrs))
        .collect();
    let values = boot.pcr_values(&selection);
    let attest = tpm::quote_attest(&host.ak_name, &request.nonce, clock(), &selection, &values);
    let signature = host
        .ak
        .sign(&attest)
        .map_err(|e| Failure::Tpm(e.to_string()))?;
    link.send_blob(BlobKind::PcrValues, &values).await?;
    link.send_blob(BlobKind::EventLog, &boot.event_log).await?;
    let too_large = |_| Failure::Tpm("quote too large".into());
    link.send(&AgentMessage::Evidence(Evidence {
        attest: HVec::from_slice(&attest).map_err(too_large)?,
        signature: HVec::from_slice(&signature).map_err(too_large)?,
    }))
    .await
}

/// What one step of a session produced.
#[derive(Debug)]
pub enum Event {
    /// A verdict of attested.
    Attested(Attestation),
    /// The verifier's next check-in time.
    NextCheckIn(Duration),
    /// The verifier closed the link.
    Closed,
}

/// Serves the verifier's messages until a verdict, a `NextCheckIn` or the end of the link; the
/// caller calls again for the next. `quote_sent` is when the last quote request was answered.
pub async fn next_event(
    link: &mut Link,
    host: &Host,
    boot: &Boot,
    quote_asked: &mut Option<Instant>,
    wait: Duration,
) -> Result<Event, Failure> {
    loop {
        let message = link.recv(wait).await?;
        match message {
            None => return Ok(Event::Closed),
            Some(VerifierMessage::CredentialChallenge(c)) => {
                let secret = host
                    .ek
                    .activate(&host.ak_name, &c.id_object, &c.encrypted_secret)
                    .map_err(|e| Failure::Tpm(e.to_string()))?;
                link.send(&AgentMessage::ActivationProof(ActivationProof {
                    secret: HVec::from_slice(&secret)
                        .map_err(|_| Failure::Tpm("secret too long".into()))?,
                }))
                .await?;
            }
            Some(VerifierMessage::QuoteRequest(request)) => {
                *quote_asked = Some(Instant::now());
                link.last_nonce = request.nonce.to_vec();
                answer_quote(link, host, boot, &request).await?;
            }
            Some(VerifierMessage::Verdict(v)) => {
                let now = Instant::now();
                if !v.attested {
                    return Err(Failure::NotAttested(v.reason.to_string()));
                }
                let latency = quote_asked.take().map_or(Duration::ZERO, |t| now - t);
                return Ok(Event::Attested(Attestation {
                    at: now,
                    latency,
                    valid_for: Duration::from_secs(u64::from(v.valid_for_secs)),
                    nonce: std::mem::take(&mut link.last_nonce),
                }));
            }
            Some(VerifierMessage::NextCheckIn(n)) => {
                return Ok(Event::NextCheckIn(Duration::from_secs(u64::from(
                    n.after_secs,
                ))));
            }
            Some(VerifierMessage::Refused(r)) => {
                return Err(Failure::Refused(r.reason.to_string()));
            }
            Some(other) => {
                return Err(Failure::Protocol(format!("unexpected {other:?}")));
            }
        }
    }
}

/// One check-in: connect, enrol (challenge only if the AK is not bound yet), quote, verdict,
/// the next check-in time. Returns the attestation and when to come back.
pub async fn check_in(
    source: IpAddr,
    server: SocketAddr,
    host: &Host,
    boot: &Boot,
) -> Result<(Attestation, Duration), Failure> {
    check_in_seen(source, server, host, boot, &mut None).await
}

/// [`check_in`], keeping in `verdict` an attested verdict received even when the session fails
/// after it (the verifier dies before `NextCheckIn`): the verdict was still received.
pub async fn check_in_seen(
    source: IpAddr,
    server: SocketAddr,
    host: &Host,
    boot: &Boot,
    verdict: &mut Option<Attestation>,
) -> Result<(Attestation, Duration), Failure> {
    let mut link = Link::connect(source, server).await?;
    enroll(&mut link, host, true).await?;
    let mut asked = None;
    let attestation = match next_event(&mut link, host, boot, &mut asked, ANSWER_TIMEOUT).await? {
        Event::Attested(a) => a,
        other => {
            return Err(Failure::Protocol(format!(
                "expected a verdict, got {other:?}"
            )));
        }
    };
    *verdict = Some(attestation.clone());
    let after = match next_event(&mut link, host, boot, &mut asked, ANSWER_TIMEOUT).await? {
        Event::NextCheckIn(after) => after,
        other => {
            return Err(Failure::Protocol(format!(
                "expected NextCheckIn, got {other:?}"
            )));
        }
    };
    Ok((attestation, after))
}
