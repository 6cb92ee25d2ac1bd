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
//!    `QuoteRequest` (continuous attestation).
//!
//! Timeouts: while the verifier waits for an answer, an agent silent for `agent_idle_timeout`
//! is dropped. Every length is bounded: frames by `vouch_proto::frame::MAX_FRAME`, the EK
//! certificate and PCR values by fixed limits, the event log by `max_event_log`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use heapless::{String as HString, Vec as HVec};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vouch_attest::HashAlg;
use vouch_attest::ek::{EkEvidence, EkKey};
use vouch_attest::pcr::PcrValues;
use vouch_attest::policy::{Policy, SoftwareVersion};
use vouch_attest::quote::{AttestationKey, QuoteExpectations};
use vouch_attest::tpm::{ClockInfo, PcrSelection, Public};
use vouch_proto::frame::{self, FrameReader, MAX_FRAME};
use vouch_proto::wire::{
    self, AgentMessage, BlobKind, Chunk, CredentialChallenge, PcrBank, QuoteRequest, RefusalKind,
    Refused, Verdict, VerifierMessage, Welcome,
};

use crate::api::AppState;
use crate::jwt::AttestationClaims;
use crate::store::{self, AttestationRecord, Cluster, Host, HostState};

/// Largest EK certificate accepted.
pub const MAX_EK_CERTIFICATE: usize = 4096;
/// Largest PCR-values payload accepted (four banks of 24 SHA-512 PCRs).
pub const MAX_PCR_VALUES: usize = 4 * 24 * 64;
/// Bytes of the nonce in a `QuoteRequest`.
pub const NONCE_LEN: usize = 32;

/// The payload of a marshalled TPM2B (its 2-byte size field dropped); the whole input when the
/// size field does not describe it (the TPM then refuses the credential).
fn tpm2b_contents(tpm2b: &[u8]) -> &[u8] {
    match tpm2b.split_first_chunk::<2>() {
        Some((size, rest)) if usize::from(u16::from_be_bytes(*size)) == rest.len() => rest,
        _ => tpm2b,
    }
}

/// Serves agent sessions on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AppState) {
    let slots = Arc::new(Semaphore::new(state.config.agent_max_sessions));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "agent accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            state.metrics.agent_sessions.inc();
            state.metrics.agent_sessions_total.inc();
            let end = run_session(tcp, &peer.to_string(), &state).await;
            state.metrics.agent_sessions.dec();
            state.metrics.session_ended(end.label());
            tracing::info!(%peer, end = ?end, "agent session ended");
            drop(permit);
        });
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The agent closed the connection.
    Closed,
    /// The agent sent nothing in time.
    TimedOut,
    /// The verifier refused the agent (the `Refused` was sent).
    Refused(RefusalKind, String),
    /// The agent reported a failure.
    AgentError(String),
    /// Reading or writing failed.
    Io(String),
}

impl SessionEnd {
    fn label(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::TimedOut => "timeout",
            Self::Refused(..) => "refused",
            Self::AgentError(_) => "agent_error",
            Self::Io(_) => "io_error",
        }
    }
}

/// A large payload arriving in chunks: in order, one at a time, bounded.
#[derive(Debug, Default)]
struct Blob {
    kind: Option<BlobKind>,
    total: usize,
    data: Vec<u8>,
}

impl Blob {
    /// Takes one chunk; `Ok(true)` when the payload is complete.
    fn push(&mut self, chunk: &Chunk, limit: usize) -> Result<bool, String> {
        let total = usize::try_from(chunk.total).map_err(|_| "chunk total too large")?;
        match self.kind {
            None => {
                if total > limit {
                    return Err(format!(
                        "{:?} of {total} bytes exceeds the limit of {limit}",
                        chunk.blob
                    ));
                }
                self.kind = Some(chunk.blob);
                self.total = total;
                self.data = Vec::with_capacity(total);
            }
            Some(kind) if kind != chunk.blob => {
                return Err(format!(
                    "a {:?} chunk arrived while {kind:?} was incomplete",
                    chunk.blob
                ));
            }
            Some(_) if total != self.total => return Err("the chunk total changed".into()),
            Some(_) => {}
        }
        if usize::try_from(chunk.offset).ok() != Some(self.data.len()) {
            return Err(format!(
                "chunk at offset {} out of order (expected {})",
                chunk.offset,
                self.data.len()
            ));
        }
        if self.data.len() + chunk.data.len() > self.total {
            return Err("a chunk reaches past the announced total".into());
        }
        self.data.extend_from_slice(&chunk.data);
        Ok(self.data.len() == self.total)
    }

    fn take(&mut self) -> Vec<u8> {
        self.kind = None;
        self.total = 0;
        std::mem::take(&mut self.data)
    }
}

/// What the session knows once the EK is trusted.
#[derive(Debug, Clone)]
struct Enrolled {
    ek_hash: String,
    cluster: Cluster,
    ek: Public,
    ek_certificate: Option<Vec<u8>>,
    ak: Public,
    ak_raw: Vec<u8>,
}

#[derive(Debug)]
enum Phase {
    Hello,
    Enroll,
    Activate {
        enrolled: Enrolled,
        secret: Vec<u8>,
    },
    Evidence {
        enrolled: Enrolled,
        nonce: Vec<u8>,
        selection: PcrSelection,
    },
    /// Attested (or not); waiting to ask again.
    Waiting {
        enrolled: Enrolled,
    },
}

/// One agent session's state.
#[derive(Debug)]
pub struct Session {
    peer: String,
    state: AppState,
    phase: Phase,
    version: u16,
    blob: Blob,
    ek_certificate: Option<Vec<u8>>,
    pcr_values: Option<Vec<u8>>,
    event_log: Option<Vec<u8>>,
    /// The clock of the last quote accepted in this session.
    last_clock: Option<ClockInfo>,
    /// v2: the agent's session key from its last `BoundEvidence`.
    agent_public: Option<Vec<u8>>,
    /// v2: the key channel, once attested on a bound quote.
    channel: Option<crate::channel::ServerChannel>,
    /// The attestation token of the last attested verdict: what key requests are authorised by.
    token: Option<String>,
    /// Tests replay recorded quotes, whose nonce is fixed.
    #[cfg(test)]
    fixed_nonce: Option<Vec<u8>>,
}

type Step = Result<Vec<VerifierMessage>, (RefusalKind, String)>;

fn refuse<T>(kind: RefusalKind, reason: impl Into<String>) -> Result<T, (RefusalKind, String)> {
    Err((kind, reason.into()))
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

fn internal(e: impl std::fmt::Display) -> (RefusalKind, String) {
    tracing::error!(error = %e, "agent session: internal failure");
    (
        RefusalKind::Unavailable,
        "the verifier cannot serve now".into(),
    )
}

impl Session {
    pub fn new(peer: &str, state: AppState) -> Self {
        Self {
            peer: peer.to_owned(),
            state,
            phase: Phase::Hello,
            version: 0,
            blob: Blob::default(),
            ek_certificate: None,
            pcr_values: None,
            event_log: None,
            last_clock: None,
            agent_public: None,
            channel: None,
            token: None,
            #[cfg(test)]
            fixed_nonce: None,
        }
    }

    /// Whether the verifier waits for the agent (so the idle timeout applies).
    pub fn awaiting_agent(&self) -> bool {
        !matches!(self.phase, Phase::Waiting { .. })
    }

    /// Handles one message from the agent; returns the answers, or a refusal that ends the
    /// session.
    pub async fn on_message(&mut self, message: AgentMessage) -> Step {
        match (message, &self.phase) {
            (AgentMessage::Hello(hello), Phase::Hello) => {
                match vouch_proto::negotiate(hello.min_version, hello.max_version) {
                    Ok(version) => {
                        self.version = version;
                        self.phase = Phase::Enroll;
                        tracing::debug!(peer = %self.peer, agent = %hello.agent, version, "agent hello");
                        Ok(vec![VerifierMessage::Welcome(Welcome { version })])
                    }
                    Err(e) => refuse(
                        RefusalKind::Version,
                        format!("no common protocol version: {e:?}"),
                    ),
                }
            }
            (AgentMessage::Chunk(chunk), Phase::Enroll) => {
                if chunk.blob != BlobKind::EkCertificate {
                    return refuse(
                        RefusalKind::Protocol,
                        "only EK certificate chunks before Enroll",
                    );
                }
                if self
                    .blob
                    .push(&chunk, MAX_EK_CERTIFICATE)
                    .map_err(|e| (RefusalKind::Protocol, e))?
                {
                    self.ek_certificate = Some(self.blob.take());
                }
                Ok(vec![])
            }
            (AgentMessage::Enroll(enroll), Phase::Enroll) => self.enroll(&enroll).await,
            (AgentMessage::ActivationProof(proof), Phase::Activate { .. }) => {
                self.activate(&proof.secret).await
            }
            (AgentMessage::Chunk(chunk), Phase::Evidence { .. }) => {
                let limit = match chunk.blob {
                    BlobKind::PcrValues => MAX_PCR_VALUES,
                    BlobKind::EventLog => self.state.config.max_event_log,
                    BlobKind::EkCertificate => {
                        return refuse(
                            RefusalKind::Protocol,
                            "an EK certificate chunk after enrolment",
                        );
                    }
                };
                if self
                    .blob
                    .push(&chunk, limit)
                    .map_err(|e| (RefusalKind::Protocol, e))?
                {
                    let data = self.blob.take();
                    match chunk.blob {
                        BlobKind::PcrValues => self.pcr_values = Some(data),
                        _ => self.event_log = Some(data),
                    }
                }
                Ok(vec![])
            }
            (AgentMessage::Evidence(evidence), Phase::Evidence { .. }) => {
                self.agent_public = None;
                self.evidence(&evidence.attest, &evidence.signature).await
            }
            (AgentMessage::BoundEvidence(evidence), Phase::Evidence { .. })
                if self.version >= 2 =>
            {
                self.agent_public = Some(evidence.session_public.to_vec());
                self.evidence(&evidence.attest, &evidence.signature).await
            }
            (AgentMessage::Sealed(sealed), _) if self.channel.is_some() => {
                self.key_request(&sealed).await
            }
            (AgentMessage::Error(e), _) => refuse(
                RefusalKind::Protocol,
                format!("agent reported {:?}: {}", e.failure, e.detail),
            ),
            (m, phase) => refuse(
                RefusalKind::Protocol,
                format!(
                    "unexpected {} in phase {}",
                    message_name(&m),
                    phase_name(phase)
                ),
            ),
        }
    }

    async fn enroll(&mut self, enroll: &wire::Enroll) -> Step {
        let ek = Public::from_tpm2b(&enroll.ek_public)
            .map_err(|e| (RefusalKind::Protocol, format!("EK public area: {e}")))?;
        let certificate = match (enroll.has_ek_certificate, self.ek_certificate.take()) {
            (true, Some(c)) => Some(c),
            (false, None) => None,
            (true, None) => {
                return refuse(
                    RefusalKind::Protocol,
                    "the EK certificate chunks are missing or incomplete",
                );
            }
            (false, Some(_)) => {
                return refuse(
                    RefusalKind::Protocol,
                    "an EK certificate was sent but not announced",
                );
            }
        };
        if self.blob.kind.is_some() {
            return refuse(RefusalKind::Protocol, "an incomplete payload before Enroll");
        }
        let (host, cluster) = self.check_trust(&ek, certificate.as_deref()).await?;
        let ek_hash = host.ek_hash.clone();

        let ak = Public::from_tpm2b(&enroll.ak_public)
            .map_err(|e| (RefusalKind::Activation, format!("AK public area: {e}")))?;
        vouch_attest::credential::check_ak(&ak)
            .map_err(|e| (RefusalKind::Activation, format!("AK: {e}")))?;
        let enrolled = Enrolled {
            ek_hash,
            cluster,
            ek: ek.clone(),
            ek_certificate: certificate,
            ak,
            ak_raw: enroll.ak_public.to_vec(),
        };
        if host.ak_public.as_deref() == Some(enroll.ak_public.as_slice()) {
            let hash = enrolled.ek_hash.clone();
            let clock = store::run(&self.state.store, move |s| s.host_clock(&hash))
                .await
                .map_err(internal)?;
            self.last_clock = clock.and_then(|c| serde_json::from_str(&c).ok());
            tracing::info!(peer = %self.peer, ek_hash = %enrolled.ek_hash, "AK already bound to this EK");
            return self.quote_request(enrolled);
        }
        let secret = crate::random::<32>().map_err(|_| internal("RNG failure"))?;
        let made = vouch_attest::credential::make_credential(
            &ek,
            &enrolled.ak,
            &secret,
            &SystemRandom::new(),
        )
        .map_err(|e| (RefusalKind::Activation, format!("MakeCredential: {e}")))?;
        // The wire carries the contents of the TPM2B structures, without their size fields.
        let challenge = CredentialChallenge {
            id_object: HVec::from_slice(tpm2b_contents(&made.id_object)).map_err(|()| {
                (
                    RefusalKind::Activation,
                    "the credential blob is too large".to_string(),
                )
            })?,
            encrypted_secret: HVec::from_slice(tpm2b_contents(&made.encrypted_secret)).map_err(
                |()| {
                    (
                        RefusalKind::Activation,
                        "the encrypted secret is too large".to_string(),
                    )
                },
            )?,
        };
        self.phase = Phase::Activate {
            enrolled,
            secret: secret.to_vec(),
        };
        Ok(vec![VerifierMessage::CredentialChallenge(challenge)])
    }

    /// Looks the EK up: it must be a host of a trusted cluster and pass that cluster's trust
    /// configuration now. Run at enrolment and again before every re-attestation, so a change
    /// of configuration (a CA or EK removed, the host removed) takes effect on open sessions.
    async fn check_trust(
        &self,
        ek: &Public,
        certificate: Option<&[u8]>,
    ) -> Result<(Host, Cluster), (RefusalKind, String)> {
        let ek_hash = crate::ek::ek_hash(&EkKey::from_public(ek));
        let hash = ek_hash.clone();
        let lookup = store::run(&self.state.store, move |s| {
            let Some(host) = s.get_host(&hash)? else {
                return Ok(None);
            };
            let Some(cluster) = s.get_cluster(&host.cluster)? else {
                return Ok(None);
            };
            let cas = s.list_ca_certs(&cluster.name)?;
            let eks = s.list_cluster_eks(&cluster.name)?;
            Ok(Some((host, cluster, cas, eks)))
        })
        .await
        .map_err(internal)?;
        let Some((host, cluster, cas, eks)) = lookup else {
            tracing::warn!(peer = %self.peer, %ek_hash, "refused: the EK is not a host of any trusted cluster");
            return refuse(
                RefusalKind::UntrustedEk,
                format!(
                    "EK {} is not a host of any trusted cluster",
                    short(&ek_hash)
                ),
            );
        };
        let trust =
            crate::ek::cluster_trust(&cas, &eks, certificate.is_some()).map_err(internal)?;
        let Some(trust) = trust else {
            tracing::warn!(peer = %self.peer, %ek_hash, cluster = %cluster.name, with_certificate = certificate.is_some(), "refused: the cluster trusts no such EK");
            return refuse(
                RefusalKind::UntrustedEk,
                format!(
                    "cluster {} has no trust configured for this TPM",
                    cluster.name
                ),
            );
        };
        let evidence = EkEvidence {
            public: Some(ek),
            certificate,
            intermediates: &[],
        };
        let trusted = vouch_attest::ek::verify_ek(&trust, &evidence, crate::now()).map_err(|e| {
            tracing::warn!(peer = %self.peer, %ek_hash, cluster = %cluster.name, reason = %e, "refused: EK not trusted");
            (RefusalKind::UntrustedEk, e.to_string())
        })?;
        tracing::info!(peer = %self.peer, %ek_hash, cluster = %cluster.name, mode = ?trusted.mode(), "EK trusted");
        Ok((host, cluster))
    }

    async fn activate(&mut self, proof: &[u8]) -> Step {
        let Phase::Activate { enrolled, secret } =
            std::mem::replace(&mut self.phase, Phase::Enroll)
        else {
            return refuse(RefusalKind::Protocol, "no credential challenge outstanding");
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(proof, &secret).is_err() {
            tracing::warn!(peer = %self.peer, ek_hash = %enrolled.ek_hash, "refused: wrong activation proof");
            return refuse(
                RefusalKind::Activation,
                "the activation proof is wrong: the AK is not beside this EK",
            );
        }
        let (hash, ak) = (enrolled.ek_hash.clone(), enrolled.ak_raw.clone());
        store::run(&self.state.store, move |s| s.set_host_ak(&hash, &ak))
            .await
            .map_err(internal)?;
        self.event(
            "host.ak_bound",
            &enrolled.ek_hash,
            serde_json::json!({"cluster": enrolled.cluster.name}),
        )
        .await;
        tracing::info!(peer = %self.peer, ek_hash = %enrolled.ek_hash, "AK activated and bound to the EK");
        self.quote_request(enrolled)
    }

    /// Asks for a quote with a fresh nonce over the cluster's selection.
    fn quote_request(&mut self, enrolled: Enrolled) -> Step {
        let bank: HashAlg =
            serde_json::from_value(serde_json::Value::String(enrolled.cluster.bank.clone()))
                .map_err(|_| {
                    internal(format!(
                        "cluster {} has an unknown bank",
                        enrolled.cluster.name
                    ))
                })?;
        let bitmap = enrolled
            .cluster
            .pcrs
            .iter()
            .filter(|p| **p < 32)
            .fold(0u32, |m, p| m | (1 << p));
        #[allow(unused_mut, reason = "tests may replace the nonce")]
        let mut nonce = crate::random::<NONCE_LEN>()
            .map_err(|_| internal("RNG failure"))?
            .to_vec();
        #[cfg(test)]
        if let Some(n) = &self.fixed_nonce {
            nonce.clone_from(n);
        }
        let mut selection = HVec::new();
        selection
            .push(PcrBank {
                hash_alg: bank.id(),
                pcrs: bitmap,
            })
            .map_err(|_| internal("selection"))?;
        let request = QuoteRequest {
            nonce: HVec::from_slice(&nonce).map_err(|()| internal("nonce"))?,
            selection,
        };
        self.pcr_values = None;
        self.event_log = None;
        self.phase = Phase::Evidence {
            selection: PcrSelection::new(vec![(bank, enrolled.cluster.pcrs.clone())]),
            enrolled,
            nonce,
        };
        Ok(vec![VerifierMessage::QuoteRequest(request)])
    }

    /// Time for a re-attestation: the EK's trust and the AK's binding are checked again
    /// against the configuration as it is now, then a new quote request.
    pub async fn reattest(&mut self) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Enroll) {
            Phase::Waiting { mut enrolled } => {
                let (host, cluster) = self
                    .check_trust(&enrolled.ek, enrolled.ek_certificate.as_deref())
                    .await?;
                if host.ak_public.as_deref() != Some(enrolled.ak_raw.as_slice()) {
                    return refuse(
                        RefusalKind::Activation,
                        "the AK is no longer bound to this EK; enrol again",
                    );
                }
                enrolled.cluster = cluster;
                self.quote_request(enrolled)
            }
            other => {
                self.phase = other;
                Ok(vec![])
            }
        }
    }

    async fn evidence(&mut self, attest: &[u8], signature: &[u8]) -> Step {
        let Phase::Evidence {
            enrolled,
            nonce,
            selection,
        } = std::mem::replace(&mut self.phase, Phase::Enroll)
        else {
            return refuse(RefusalKind::Protocol, "no quote request outstanding");
        };
        if self.blob.kind.is_some() {
            return refuse(
                RefusalKind::Protocol,
                "an incomplete payload before Evidence",
            );
        }
        let now = crate::now();
        let name = enrolled.cluster.name.clone();
        let versions = store::run(&self.state.store, move |s| s.list_software_versions(&name))
            .await
            .map_err(internal)?;
        // v2: a bound quote's qualifying data is SHA-256(nonce || agent session key).
        let expected = match &self.agent_public {
            Some(public) => crate::channel::qualifying_data(&nonce, public),
            None => nonce.clone(),
        };
        let outcome = self.verify(
            &enrolled, &expected, &selection, attest, signature, &versions,
        );
        let config = &self.state.config;
        let (verdict, record) = match outcome {
            Ok((version, pcr_digest, clock)) => {
                self.last_clock = Some(clock);
                if let Ok(json) = serde_json::to_string(&clock) {
                    let hash = enrolled.ek_hash.clone();
                    store::run(&self.state.store, move |s| s.set_host_clock(&hash, &json))
                        .await
                        .map_err(internal)?;
                }
                let valid_for = config
                    .reattest_interval_secs
                    .saturating_add(config.agent_idle_timeout_secs);
                let valid_until = now.saturating_add(i64::try_from(valid_for).unwrap_or(i64::MAX));
                let claims = AttestationClaims {
                    iss: "vouchd".into(),
                    sub: enrolled.ek_hash.clone(),
                    cluster: enrolled.cluster.name.clone(),
                    software_version: version.clone(),
                    pcr_digest: crate::hex(&pcr_digest),
                    nonce: crate::hex(&nonce),
                    iat: now,
                    exp: now.saturating_add(
                        i64::try_from(config.token_lifetime_secs).unwrap_or(i64::MAX),
                    ),
                    jti: crate::hex(&crate::random::<16>().map_err(|_| internal("RNG failure"))?),
                };
                let token = self.state.signer.sign(&claims).map_err(internal)?;
                self.state.metrics.tokens_issued.inc();
                (
                    Verdict {
                        attested: true,
                        software_version: bounded(&version),
                        valid_for_secs: u32::try_from(valid_for).unwrap_or(u32::MAX),
                        reason: HString::new(),
                    },
                    AttestationRecord {
                        ek_hash: enrolled.ek_hash.clone(),
                        cluster: enrolled.cluster.name.clone(),
                        at: now,
                        attested: true,
                        software_version: Some(version),
                        reason: None,
                        pcr_digest: Some(crate::hex(&pcr_digest)),
                        nonce: Some(crate::hex(&nonce)),
                        valid_until: Some(valid_until),
                        token: Some(token),
                    },
                )
            }
            Err(reason) => {
                tracing::warn!(peer = %self.peer, ek_hash = %enrolled.ek_hash, %reason, "not attested");
                (
                    Verdict {
                        attested: false,
                        software_version: HString::new(),
                        valid_for_secs: 0,
                        reason: bounded(&reason),
                    },
                    AttestationRecord {
                        ek_hash: enrolled.ek_hash.clone(),
                        cluster: enrolled.cluster.name.clone(),
                        at: now,
                        attested: false,
                        software_version: None,
                        reason: Some(reason),
                        pcr_digest: None,
                        nonce: Some(crate::hex(&nonce)),
                        valid_until: None,
                        token: None,
                    },
                )
            }
        };
        self.state
            .metrics
            .attestations
            .get_or_create(&crate::metrics::ResultLabels {
                result: if record.attested {
                    "attested"
                } else {
                    "not_attested"
                }
                .into(),
            })
            .inc();
        let r2 = record.clone();
        let before = store::run(&self.state.store, move |s| s.record_attestation(&r2))
            .await
            .map_err(internal)?;
        let after = if record.attested {
            HostState::Attested
        } else {
            HostState::NotAttested
        };
        if before != after {
            self.event(
                "host.state_changed",
                &record.ek_hash,
                serde_json::json!({"cluster": record.cluster, "from": before, "to": after, "reason": record.reason}),
            )
            .await;
        }
        self.phase = Phase::Waiting { enrolled };
        let mut answers = vec![VerifierMessage::Verdict(verdict)];
        self.channel = None;
        self.token.clone_from(&record.token);
        if let (true, Some(public)) = (record.attested, &self.agent_public) {
            let (channel, ours) = crate::channel::establish(public, &nonce)
                .map_err(|e| (RefusalKind::Protocol, e))?;
            self.channel = Some(channel);
            answers.push(VerifierMessage::ChannelKey(wire::ChannelKey {
                public: ours,
            }));
        }
        Ok(answers)
    }

    /// A sealed key request over the channel: opened, authorised, answered sealed.
    async fn key_request(&mut self, sealed: &wire::Sealed) -> Step {
        let channel = self
            .channel
            .as_mut()
            .ok_or((RefusalKind::Protocol, "no key channel".to_owned()))?;
        let request = channel
            .open(sealed)
            .map_err(|e| (RefusalKind::Protocol, e))?;
        let response = crate::channel::answer(&self.state, self.token.as_deref(), request).await;
        let channel = self
            .channel
            .as_mut()
            .ok_or((RefusalKind::Protocol, "no key channel".to_owned()))?;
        let sealed = channel.seal(&response).map_err(internal)?;
        Ok(vec![VerifierMessage::Sealed(sealed)])
    }

    /// Runs vouch-attest over the evidence; the matched version, the PCR digest and the clock,
    /// or why not.
    fn verify(
        &self,
        enrolled: &Enrolled,
        nonce: &[u8],
        selection: &PcrSelection,
        attest: &[u8],
        signature: &[u8],
        versions: &[store::SoftwareVersionRecord],
    ) -> Result<(String, Vec<u8>, ClockInfo), String> {
        let raw = self
            .pcr_values
            .as_deref()
            .ok_or("no PCR values were sent")?;
        let pcrs = pcr_values(selection, raw)?;
        let accepted = versions
            .iter()
            .map(|v| serde_json::from_value::<SoftwareVersion>(v.reference.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a stored software version does not parse: {e}"))?;
        if accepted.is_empty() {
            return Err(format!(
                "cluster {} accepts no software version yet",
                enrolled.cluster.name
            ));
        }
        let bank = selection
            .banks
            .first()
            .map(|(a, _)| *a)
            .ok_or("empty selection")?;
        let policy = Policy {
            accepted,
            pcrs: enrolled.cluster.pcrs.clone(),
            bank,
        };
        let ak = AttestationKey::from_public(enrolled.ak.clone()).map_err(|e| e.to_string())?;
        let expect = QuoteExpectations {
            nonce,
            selection: Some(selection),
            pcrs: &pcrs,
            last: self.last_clock.as_ref(),
            hash: None,
        };
        let verified = vouch_attest::evidence::verify_evidence(
            &ak,
            attest,
            signature,
            self.event_log.as_deref(),
            &expect,
            &policy,
        )
        .map_err(|e| e.to_string())?;
        Ok((
            verified.version().name().to_owned(),
            verified.quote().attest().pcr_digest.clone(),
            verified.quote().clock_info(),
        ))
    }

    async fn event(&self, kind: &str, subject: &str, detail: serde_json::Value) {
        crate::events::record(&self.state, kind, subject, detail).await;
    }
}

/// PCR values in the wire layout: for each bank of the selection in order, the digests of its
/// selected PCRs in ascending order, concatenated.
pub fn pcr_values(selection: &PcrSelection, raw: &[u8]) -> Result<PcrValues, String> {
    let mut values = PcrValues::default();
    let mut rest = raw;
    for (alg, index) in selection.iter() {
        let size = alg.size();
        if rest.len() < size {
            return Err(format!("the PCR values end before {alg:?} PCR {index}"));
        }
        let (value, tail) = rest.split_at(size);
        values.insert(alg, index, value.to_vec());
        rest = tail;
    }
    if rest.is_empty() {
        Ok(values)
    } else {
        Err(format!(
            "{} bytes of PCR values beyond the selection",
            rest.len()
        ))
    }
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

fn message_name(m: &AgentMessage) -> &'static str {
    match m {
        AgentMessage::Hello(_) => "Hello",
        AgentMessage::Chunk(_) => "Chunk",
        AgentMessage::Enroll(_) => "Enroll",
        AgentMessage::ActivationProof(_) => "ActivationProof",
        AgentMessage::Evidence(_) => "Evidence",
        AgentMessage::Error(_) => "Error",
        AgentMessage::BoundEvidence(_) => "BoundEvidence",
        AgentMessage::Sealed(_) => "Sealed",
    }
}

fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Hello => "hello",
        Phase::Enroll => "enrolment",
        Phase::Activate { .. } => "activation",
        Phase::Evidence { .. } => "evidence",
        Phase::Waiting { .. } => "waiting",
    }
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
    mut stream: S,
    peer: &str,
    state: &AppState,
) -> SessionEnd {
    let idle = state.config.agent_idle_timeout();
    let interval = state.config.reattest_interval();
    let mut session = Session::new(peer, state.clone());
    let mut reader: Box<FrameReader<MAX_FRAME>> = Box::default();
    let mut buf = vec![0u8; 4096];
    let mut next_attestation: Option<tokio::time::Instant> = None;
    loop {
        let read = if session.awaiting_agent() {
            next_attestation = None;
            match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return SessionEnd::TimedOut,
            }
        } else {
            let due =
                *next_attestation.get_or_insert_with(|| tokio::time::Instant::now() + interval);
            tokio::select! {
                r = stream.read(&mut buf) => r,
                () = tokio::time::sleep_until(due) => {
                    next_attestation = None;
                    match session.reattest().await {
                        Ok(out) => {
                            for m in &out {
                                if let Err(e) = send(&mut stream, m).await {
                                    return SessionEnd::Io(e);
                                }
                            }
                        }
                        Err((kind, reason)) => return refuse_and_end(&mut stream, kind, reason).await,
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
                    return refuse_and_end(
                        &mut stream,
                        RefusalKind::Protocol,
                        format!("bad frame: {e:?}"),
                    )
                    .await;
                }
            };
            if let AgentMessage::Error(e) = &message {
                tracing::warn!(%peer, failure = ?e.failure, detail = %e.detail, "agent reported a failure");
                return SessionEnd::AgentError(format!("{:?}: {}", e.failure, e.detail));
            }
            match session.on_message(message).await {
                Ok(out) => {
                    for m in &out {
                        if let Err(e) = send(&mut stream, m).await {
                            return SessionEnd::Io(e);
                        }
                    }
                }
                Err((kind, reason)) => return refuse_and_end(&mut stream, kind, reason).await,
            }
        }
    }
}

async fn refuse_and_end<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: RefusalKind,
    reason: String,
) -> SessionEnd {
    let refusal = VerifierMessage::Refused(Refused {
        kind,
        reason: bounded(&reason),
    });
    let _ = send(stream, &refusal).await;
    let _ = stream.shutdown().await;
    SessionEnd::Refused(kind, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_reassembly_is_ordered_and_bounded() {
        let chunk = |offset: u32, total: u32, data: &[u8]| Chunk {
            blob: BlobKind::EventLog,
            total,
            offset,
            data: HVec::from_slice(data).unwrap(),
        };
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 4, b"ab"), 10), Ok(false));
        assert!(b.push(&chunk(0, 4, b"ab"), 10).is_err(), "out of order");
        let mut b = Blob::default();
        assert!(b.push(&chunk(0, 11, b"ab"), 10).is_err(), "over the limit");
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 4, b"ab"), 10), Ok(false));
        assert!(b.push(&chunk(2, 5, b"cd"), 10).is_err(), "total changed");
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 3, b"ab"), 10), Ok(false));
        assert!(b.push(&chunk(2, 3, b"cd"), 10).is_err(), "past the total");
        let mut b = Blob::default();
        assert_eq!(b.push(&chunk(0, 4, b"ab"), 10), Ok(false));
        assert_eq!(b.push(&chunk(2, 4, b"cd"), 10), Ok(true));
        assert_eq!(b.take(), b"abcd");
        assert!(b.kind.is_none());
    }

    #[test]
    fn pcr_values_follow_the_selection() {
        let sel = PcrSelection::new(vec![
            (HashAlg::Sha256, vec![0, 7]),
            (HashAlg::Sha1, vec![1]),
        ]);
        let mut raw = vec![1u8; 32];
        raw.extend([7u8; 32]);
        raw.extend([2u8; 20]);
        let v = pcr_values(&sel, &raw).unwrap();
        assert_eq!(v.get(HashAlg::Sha256, 7), Some(&[7u8; 32][..]));
        assert_eq!(v.get(HashAlg::Sha1, 1), Some(&[2u8; 20][..]));
        assert!(pcr_values(&sel, raw.get(..70).unwrap()).is_err());
        raw.push(0);
        assert!(pcr_values(&sel, &raw).is_err());
    }

    mod flow {
        use super::*;
        use crate::config::Config;
        use crate::jwt::Signer;
        use crate::metrics::Metrics;
        use crate::store::sqlite::SqliteStore;
        use crate::store::{CaCert, Host, SoftwareVersionRecord, Store};
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        use vouch_attest::policy::HexBytes;
        use vouch_proto::wire::{ActivationProof, Enroll, Evidence, Hello};

        fn data(path: &str) -> Vec<u8> {
            let p = format!("{}/../attest/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
        }

        fn state(dir: &std::path::Path) -> AppState {
            AppState {
                store: Arc::new(SqliteStore::open_in_memory().unwrap()),
                config: Arc::new(Config {
                    data_dir: dir.to_owned(),
                    ..Config::default()
                }),
                metrics: Arc::new(Metrics::new()),
                signer: Arc::new(Signer::load_or_create(&dir.join("k.p8")).unwrap()),
                webhook: None,
                keys: Arc::default(),
            }
        }

        /// The rsa2048-sha256 quote fixture: PCR values in wire layout, and the reference
        /// values they match.
        fn fixture_pcrs() -> (Vec<u8>, SoftwareVersion) {
            fixture_pcrs_of("rsa2048-sha256")
        }

        fn fixture_pcrs_of(name: &str) -> (Vec<u8>, SoftwareVersion) {
            let (sel, values) = vouch_attest::tpm2_tools::parse_serialized_pcrs(&data(&format!(
                "quotes/{name}.pcrs"
            )))
            .unwrap();
            let mut wire = Vec::new();
            let mut reference = SoftwareVersion {
                name: "fw-1".into(),
                ..SoftwareVersion::default()
            };
            for (alg, i) in sel.iter() {
                let v = values.get(alg, i).unwrap();
                wire.extend_from_slice(v);
                reference
                    .pcrs
                    .entry(alg)
                    .or_default()
                    .insert(i, HexBytes(v.to_vec()));
            }
            (wire, reference)
        }

        /// A cluster trusting swtpm's CA (mode 1), the fixture EK as a host, and `version`
        /// accepted; returns the EK hash.
        fn configure(store: &dyn Store, version: &SoftwareVersion, ak_bound: bool) -> String {
            configure_with(
                store,
                version,
                ak_bound.then_some("rsa2048-sha256"),
                vec![0, 1, 2, 3, 4, 7],
            )
        }

        fn configure_with(
            store: &dyn Store,
            version: &SoftwareVersion,
            bound_ak: Option<&str>,
            pcrs: Vec<u32>,
        ) -> String {
            store
                .create_cluster(&Cluster {
                    name: "prod".into(),
                    pcrs,
                    bank: "sha256".into(),
                    created_at: 0,
                })
                .unwrap();
            for pem in ["ek/swtpm-localca-root.pem", "ek/swtpm-localca-issuer.pem"] {
                let der = CertificateDer::from_pem_slice(&data(pem)).unwrap();
                store
                    .add_ca_cert(&CaCert {
                        id: crate::hex(&crate::sha256(&der)),
                        cluster: "prod".into(),
                        subject: pem.into(),
                        der: der.to_vec(),
                        created_at: 0,
                    })
                    .unwrap();
            }
            let ek = Public::from_tpm2b(&data("ek/ek-rsa2048.pub")).unwrap();
            let ek_hash = crate::ek::ek_hash(&EkKey::from_public(&ek));
            store
                .add_host(&Host {
                    ek_hash: ek_hash.clone(),
                    cluster: "prod".into(),
                    name: "h1".into(),
                    added_by: "vc".into(),
                    ak_public: bound_ak.map(|ak| data(&format!("quotes/{ak}.ak.pub"))),
                    state: HostState::Unknown,
                    attested_at: None,
                    valid_until: None,
                    software_version: None,
                    created_at: 0,
                })
                .unwrap();
            store
                .put_software_version(&SoftwareVersionRecord {
                    cluster: "prod".into(),
                    name: version.name.clone(),
                    reference: serde_json::to_value(version).unwrap(),
                    created_at: 0,
                })
                .unwrap();
            ek_hash
        }

        async fn enrol(session: &mut Session) -> Vec<VerifierMessage> {
            enrol_with(session, "rsa2048-sha256").await
        }

        async fn enrol_with(session: &mut Session, ak: &str) -> Vec<VerifierMessage> {
            let hello = AgentMessage::Hello(Hello {
                min_version: 1,
                max_version: 1,
                agent: HString::try_from("test").unwrap(),
            });
            assert_eq!(
                session.on_message(hello).await.unwrap(),
                vec![VerifierMessage::Welcome(Welcome { version: 1 })]
            );
            let cert = data("ek/ek-rsa2048.crt");
            for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &cert).unwrap() {
                assert_eq!(
                    session
                        .on_message(AgentMessage::Chunk(chunk))
                        .await
                        .unwrap(),
                    vec![]
                );
            }
            let enroll = AgentMessage::Enroll(Enroll {
                ek_public: HVec::from_slice(&data("ek/ek-rsa2048.pub")).unwrap(),
                ak_public: HVec::from_slice(&data(&format!("quotes/{ak}.ak.pub"))).unwrap(),
                has_ek_certificate: true,
            });
            session.on_message(enroll).await.unwrap()
        }

        async fn send_evidence(session: &mut Session, pcrs: &[u8]) -> Verdict {
            send_evidence_of(session, pcrs, "rsa2048-sha256").await
        }

        async fn send_evidence_of(session: &mut Session, pcrs: &[u8], name: &str) -> Verdict {
            for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, pcrs).unwrap() {
                assert_eq!(
                    session
                        .on_message(AgentMessage::Chunk(chunk))
                        .await
                        .unwrap(),
                    vec![]
                );
            }
            let evidence = AgentMessage::Evidence(Evidence {
                attest: HVec::from_slice(&data(&format!("quotes/{name}.quote"))).unwrap(),
                signature: HVec::from_slice(&data(&format!("quotes/{name}.sig"))).unwrap(),
            });
            match session.on_message(evidence).await.unwrap().as_slice() {
                [VerifierMessage::Verdict(v)] => v.clone(),
                other => panic!("expected a verdict, got {other:?}"),
            }
        }

        #[tokio::test]
        async fn bound_ak_goes_straight_to_a_quote_and_is_attested() {
            let dir = tempfile::tempdir().unwrap();
            let state = state(dir.path());
            let (pcrs, version) = fixture_pcrs();
            let ek_hash = configure(state.store.as_ref(), &version, true);
            let mut session = Session::new("test", state.clone());
            session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
            let out = enrol(&mut session).await;
            let [VerifierMessage::QuoteRequest(q)] = out.as_slice() else {
                panic!("expected a quote request, got {out:?}");
            };
            assert_eq!(
                q.selection.as_slice(),
                &[PcrBank {
                    hash_alg: 0x000B,
                    pcrs: 0b1001_1111
                }]
            );
            let verdict = send_evidence(&mut session, &pcrs).await;
            assert!(verdict.attested, "{verdict:?}");
            assert_eq!(verdict.software_version.as_str(), "fw-1");

            let host = state.store.get_host(&ek_hash).unwrap().unwrap();
            assert_eq!(host.state, HostState::Attested);
            assert_eq!(host.software_version.as_deref(), Some("fw-1"));
            let record = state
                .store
                .list_attestations(&ek_hash, 1)
                .unwrap()
                .remove(0);
            let token = record.token.unwrap();
            let jwks: jsonwebtoken::jwk::JwkSet =
                serde_json::from_value(state.signer.jwks()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
            let claims = jsonwebtoken::decode::<AttestationClaims>(
                &token,
                &key,
                &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256),
            )
            .unwrap()
            .claims;
            assert_eq!(claims.sub, ek_hash);
            assert_eq!(claims.cluster, "prod");
            assert_eq!(claims.software_version, "fw-1");
            assert_eq!(claims.nonce, "0011223344556677");
            assert_eq!(claims.exp - claims.iat, 300);
            let events = state.store.list_events(0, 10).unwrap();
            assert!(events.iter().any(|e| e.kind == "host.state_changed"));

            // Re-attestation asks again. (The test reuses the fixed nonce, so the recorded
            // quote passes again: same clock, same boot.)
            let again = session.reattest().await.unwrap();
            assert!(matches!(
                again.as_slice(),
                [VerifierMessage::QuoteRequest(_)]
            ));
            assert!(send_evidence(&mut session, &pcrs).await.attested);

            // Trust is checked again before each re-attestation: without the CAs, refused.
            for ca in state.store.list_ca_certs("prod").unwrap() {
                state.store.delete_ca_cert("prod", &ca.id).unwrap();
            }
            let err = session.reattest().await.unwrap_err();
            assert_eq!(err.0, RefusalKind::UntrustedEk, "{err:?}");
        }

        #[tokio::test]
        async fn the_tpm_clock_may_not_go_back_across_sessions() {
            let dir = tempfile::tempdir().unwrap();
            let state = state(dir.path());
            // seq1 and seq2 are one AK's consecutive quotes (nonces aa, bb), same PCRs.
            let (pcrs, version) = fixture_pcrs_of("ecc256-seq1");
            let ek_hash =
                configure_with(state.store.as_ref(), &version, Some("ecc256-seq"), vec![0]);
            let mut session = Session::new("one", state.clone());
            session.fixed_nonce = Some(vec![0xbb]);
            enrol_with(&mut session, "ecc256-seq").await;
            assert!(
                send_evidence_of(&mut session, &pcrs, "ecc256-seq2")
                    .await
                    .attested
            );
            assert!(state.store.host_clock(&ek_hash).unwrap().is_some());
            drop(session);

            // A later session replaying the older quote: its clock is behind the stored one.
            let mut session = Session::new("two", state.clone());
            session.fixed_nonce = Some(vec![0xaa]);
            enrol_with(&mut session, "ecc256-seq").await;
            let verdict = send_evidence_of(&mut session, &pcrs, "ecc256-seq1").await;
            assert!(!verdict.attested);
            assert!(verdict.reason.contains("clock"), "{verdict:?}");
        }

        #[tokio::test]
        async fn evidence_of_another_version_is_not_attested() {
            let dir = tempfile::tempdir().unwrap();
            let state = state(dir.path());
            let (pcrs, mut version) = fixture_pcrs();
            if let Some(bank) = version.pcrs.values_mut().next() {
                bank.insert(7, HexBytes(vec![0xee; 32]));
            }
            let ek_hash = configure(state.store.as_ref(), &version, true);
            let mut session = Session::new("test", state.clone());
            session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
            enrol(&mut session).await;
            let verdict = send_evidence(&mut session, &pcrs).await;
            assert!(!verdict.attested);
            assert!(!verdict.reason.is_empty());
            assert_eq!(
                state.store.get_host(&ek_hash).unwrap().unwrap().state,
                HostState::NotAttested
            );
        }

        #[tokio::test]
        async fn a_fresh_nonce_refuses_a_replayed_quote() {
            let dir = tempfile::tempdir().unwrap();
            let state = state(dir.path());
            let (pcrs, version) = fixture_pcrs();
            configure(state.store.as_ref(), &version, true);
            let mut session = Session::new("test", state.clone());
            enrol(&mut session).await;
            let verdict = send_evidence(&mut session, &pcrs).await;
            assert!(!verdict.attested);
            assert!(verdict.reason.contains("nonce"), "{verdict:?}");
        }

        #[tokio::test]
        async fn a_new_ak_is_challenged_and_bound_on_the_right_proof() {
            let dir = tempfile::tempdir().unwrap();
            let state = state(dir.path());
            let (_, version) = fixture_pcrs();
            let ek_hash = configure(state.store.as_ref(), &version, false);

            // The wrong proof ends the session.
            let mut session = Session::new("test", state.clone());
            let out = enrol(&mut session).await;
            let [VerifierMessage::CredentialChallenge(c)] = out.as_slice() else {
                panic!("expected a challenge, got {out:?}");
            };
            assert!(!c.id_object.is_empty() && !c.encrypted_secret.is_empty());
            let wrong = AgentMessage::ActivationProof(ActivationProof {
                secret: HVec::from_slice(&[0u8; 32]).unwrap(),
            });
            let err = session.on_message(wrong).await.unwrap_err();
            assert_eq!(err.0, RefusalKind::Activation);
            assert!(
                state
                    .store
                    .get_host(&ek_hash)
                    .unwrap()
                    .unwrap()
                    .ak_public
                    .is_none()
            );

            // The right secret (what ActivateCredential recovers) binds the AK.
            let mut session = Session::new("test", state.clone());
            enrol(&mut session).await;
            let Phase::Activate { secret, .. } = &session.phase else {
                panic!("not activating");
            };
            let proof = AgentMessage::ActivationProof(ActivationProof {
                secret: HVec::from_slice(secret).unwrap(),
            });
            let out = session.on_message(proof).await.unwrap();
            assert!(matches!(out.as_slice(), [VerifierMessage::QuoteRequest(_)]));
            assert_eq!(
                state.store.get_host(&ek_hash).unwrap().unwrap().ak_public,
                Some(data("quotes/rsa2048-sha256.ak.pub"))
            );
            // Next time the bound AK skips the challenge.
            let mut session = Session::new("test", state.clone());
            let out = enrol(&mut session).await;
            assert!(matches!(out.as_slice(), [VerifierMessage::QuoteRequest(_)]));
        }

        #[tokio::test]
        async fn mode_two_needs_the_individual_ek() {
            let dir = tempfile::tempdir().unwrap();
            let state = state(dir.path());
            let (_, version) = fixture_pcrs();
            configure(state.store.as_ref(), &version, true);
            // List another EK individually: the fixture's EK is no longer enough.
            let other = rcgen::KeyPair::generate().unwrap();
            state
                .store
                .add_cluster_ek(&crate::store::ClusterEk {
                    ek_hash: "00".repeat(32),
                    cluster: "prod".into(),
                    kind: crate::store::EkEntryKind::PublicKey,
                    der: rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(
                        other.public_key_pem().as_bytes(),
                    )
                    .unwrap()
                    .to_vec(),
                    created_at: 0,
                })
                .unwrap();
            let mut session = Session::new("test", state.clone());
            let hello = AgentMessage::Hello(Hello {
                min_version: 1,
                max_version: 1,
                agent: HString::new(),
            });
            session.on_message(hello).await.unwrap();
            let cert = data("ek/ek-rsa2048.crt");
            for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &cert).unwrap() {
                session
                    .on_message(AgentMessage::Chunk(chunk))
                    .await
                    .unwrap();
            }
            let enroll = AgentMessage::Enroll(Enroll {
                ek_public: HVec::from_slice(&data("ek/ek-rsa2048.pub")).unwrap(),
                ak_public: HVec::from_slice(&data("quotes/rsa2048-sha256.ak.pub")).unwrap(),
                has_ek_certificate: true,
            });
            let err = session.on_message(enroll).await.unwrap_err();
            assert_eq!(err.0, RefusalKind::UntrustedEk, "{err:?}");
        }
    }

    #[test]
    fn bounded_text_cuts_at_a_character() {
        let s: HString<4> = bounded("abcé");
        assert_eq!(s.as_str(), "abc");
    }
}
