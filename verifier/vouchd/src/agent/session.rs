//! One agent session: the phase it is in, and the transitions that consume a phase, do the
//! I/O around vouch-attest's decisions (store, tokens, events) and build the next phase.

use aws_lc_rs::rand::SystemRandom;
use heapless::Vec as HVec;
use vouch_attest::HashAlg;
use vouch_attest::ek::{EkKey, TrustedEk};
use vouch_attest::evidence::VerifiedEvidence;
use vouch_attest::tpm::{ClockInfo, PcrSelection, Public};
use vouch_proto::wire::{
    self, AgentFailure, AgentMessage, CredentialChallenge, Hello, PcrBank, QuoteRequest,
    VerifierMessage, Welcome,
};
use zeroize::Zeroizing;

use super::NONCE_LEN;
use super::blob::Blob;
use super::refusal::{ActivationFailure, ProtocolViolation, Refusal, UntrustedEk};
use super::states::{
    AwaitingActivation, AwaitingEnroll, AwaitingQuote, Decided, Enrolled, KeyChannel, Phase,
    PhaseName, Secret, message_name,
};
use super::verdict::{self, Attested, Expected, Outcome, Submitted, Verdict};
use crate::jwt::AttestationClaims;
use crate::service::AppState;
use crate::store::{self, Cluster, Host};

/// The answers to a message, or the refusal that ends the session.
pub type Step = Result<Vec<VerifierMessage>, Refusal>;

/// A transition: the next phase and the answers.
type Transition = Result<(Phase, Vec<VerifierMessage>), Refusal>;

/// One agent session's state.
#[derive(Debug)]
pub struct Session {
    peer: String,
    state: AppState,
    phase: Phase,
    /// The EK hash the agent claimed, once it sent a valid EK public area.
    ek_hash: Option<String>,
    /// Whether the agent proved possession of the host's TPM in this session.
    proven: bool,
    /// Whether the agent asked for a check-in session (v3): one verdict, then the end.
    checkin: bool,
    /// Tests replay recorded quotes, whose nonce is fixed.
    #[cfg(test)]
    fixed_nonce: Option<Vec<u8>>,
}

impl Session {
    /// A new session with the agent at `peer`, awaiting its `Hello`.
    pub fn new(peer: &str, state: AppState) -> Self {
        Self {
            peer: peer.to_owned(),
            state,
            phase: Phase::AwaitingHello,
            ek_hash: None,
            proven: false,
            checkin: false,
            #[cfg(test)]
            fixed_nonce: None,
        }
    }

    /// The phase the session is in.
    pub fn phase(&self) -> PhaseName {
        self.phase.name()
    }

    /// The last verdict, once one was given and until the next is asked for.
    pub fn verdict(&self) -> Option<&Verdict> {
        match &self.phase {
            Phase::Decided(decided) => Some(&decided.verdict),
            _ => None,
        }
    }

    /// Whether the verifier waits for the agent (so the idle timeout applies).
    pub fn awaiting_agent(&self) -> bool {
        self.phase.awaits_agent()
    }

    /// The agent's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The service state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Whether the agent proved possession of the host's TPM in this session: a verdict was
    /// given on a quote its bound AK signed over a nonce of this session.
    pub fn proven(&self) -> bool {
        self.proven
    }

    /// Whether this is a check-in session that has given its verdict: the session is over.
    pub fn checked_in(&self) -> bool {
        self.checkin && matches!(self.phase, Phase::Decided(_))
    }

    /// The EK hash the agent claims, once its EK public area decoded (not a proof of anything
    /// before [`Session::proven`]).
    pub fn ek_hash(&self) -> Option<&str> {
        self.ek_hash.as_deref()
    }

    /// Handles one message from the agent; returns the answers, or a refusal that ends the
    /// session.
    pub async fn on_message(&mut self, message: AgentMessage) -> Step {
        if let AgentMessage::Enroll(enroll) = &message
            && let Ok(ek) = Public::from_tpm2b(&enroll.ek_public)
        {
            self.ek_hash = Some(crate::ek::ek_hash(&EkKey::from_public(&ek)));
        }
        if matches!(message, AgentMessage::CheckIn)
            && let Phase::AwaitingEnroll(enrolling) = &self.phase
            && enrolling.version >= 3
            && enrolling.is_untouched()
            && !self.checkin
        {
            self.checkin = true;
            return Ok(vec![]);
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Ended);
        let (next, mut answers) = self.step(phase, message).await?;
        if let Phase::Decided(decided) = &next {
            self.proven = true;
            if self.checkin {
                let after_secs = self.next_checkin(decided.verdict.token().is_some());
                answers.push(VerifierMessage::NextCheckIn(wire::NextCheckIn {
                    after_secs,
                }));
            }
        }
        self.phase = next;
        Ok(answers)
    }

    /// Seconds until a check-in agent should attest again: the re-attestation interval
    /// shortened by a random part of up to `checkin_jitter_percent` (never lengthened, so the
    /// verdict, valid for the interval plus the idle timeout, outlives the wait), or
    /// `checkin_retry_secs` after a verdict of not attested, to pull the next attestation early.
    fn next_checkin(&self, attested: bool) -> u32 {
        let config = &self.state.config;
        let interval = if attested {
            config.reattest_interval_secs
        } else {
            config.checkin_retry_secs.min(config.reattest_interval_secs)
        };
        let spread = interval.saturating_mul(u64::from(config.checkin_jitter_percent)) / 100;
        let random = crate::random::<8>().map_or(0, u64::from_le_bytes);
        let cut = random.checked_rem(spread.saturating_add(1)).unwrap_or(0);
        u32::try_from(interval.saturating_sub(cut).max(1)).unwrap_or(u32::MAX)
    }

    async fn step(&self, phase: Phase, message: AgentMessage) -> Transition {
        match (phase, message) {
            (phase, AgentMessage::Error(e)) => self.agent_failed(&phase, &e).await,
            (Phase::AwaitingHello, AgentMessage::Hello(hello)) => self.hello(&hello),
            (Phase::AwaitingEnroll(mut enrolling), AgentMessage::Chunk(chunk)) => {
                enrolling.chunk(&chunk)?;
                Ok((Phase::AwaitingEnroll(enrolling), vec![]))
            }
            (Phase::AwaitingEnroll(enrolling), AgentMessage::Enroll(enroll)) => {
                self.enroll(enrolling, &enroll).await
            }
            (Phase::AwaitingActivation(activating), AgentMessage::ActivationProof(proof)) => {
                self.activate(activating, &proof.secret).await
            }
            (Phase::AwaitingQuote(mut quoting), AgentMessage::Chunk(chunk)) => {
                quoting.chunk(&chunk, self.state.config.max_event_log)?;
                Ok((Phase::AwaitingQuote(quoting), vec![]))
            }
            (Phase::AwaitingQuote(quoting), AgentMessage::Evidence(evidence)) => {
                self.evidence(quoting, &evidence.attest, &evidence.signature, None)
                    .await
            }
            (Phase::AwaitingQuote(_), AgentMessage::BoundEvidence(_)) if self.checkin => {
                Err(ProtocolViolation::KeyChannel(
                    "a check-in session has no key channel; key operations need a persistent session"
                        .into(),
                )
                .into())
            }
            (Phase::AwaitingQuote(quoting), AgentMessage::BoundEvidence(evidence))
                if quoting.enrolled.version >= 2 =>
            {
                let public = Some(evidence.session_public.as_slice());
                self.evidence(quoting, &evidence.attest, &evidence.signature, public)
                    .await
            }
            (mut phase, AgentMessage::Sealed(sealed)) => match phase.keys() {
                Some(keys) => {
                    let answers = self.key_request(keys, &sealed).await?;
                    Ok((phase, answers))
                }
                None => Err(unexpected(&phase, "Sealed")),
            },
            (phase, message) => Err(unexpected(&phase, message_name(&message))),
        }
    }

    /// The agent reports a failure of its own: the session ends. A TPM failure in a session
    /// that proved possession of the host's TPM fails closed: the host gets a not-attested
    /// result at once (so its attested result, and the tokens issued for it, no longer stand)
    /// instead of staying attested until that result's validity ends. Before the proof the
    /// report changes nothing recorded (anyone can send one).
    async fn agent_failed(&self, phase: &Phase, e: &wire::AgentError) -> Transition {
        let tpm = matches!(
            e.failure,
            AgentFailure::TpmResponse(_) | AgentFailure::TpmUnreachable
        );
        let enrolled = match phase {
            Phase::Decided(decided) => Some(&decided.enrolled),
            Phase::AwaitingQuote(quoting) => Some(&quoting.enrolled),
            _ => None,
        };
        if let Some(enrolled) = enrolled.filter(|_| tpm && self.proven) {
            tracing::warn!(peer = %self.peer, ek_hash = %enrolled.ek_hash, failure = ?e.failure, "TPM failure after attesting");
            let verdict = Verdict {
                at: crate::now(),
                nonce: Vec::new(),
                outcome: Outcome::NotAttested(verdict::NotAttested::TpmFailure(format!(
                    "{:?}: {}",
                    e.failure, e.detail
                ))),
                presented: None,
            };
            self.record(enrolled, &verdict, None).await?;
        }
        Err(ProtocolViolation::AgentReported {
            failure: e.failure,
            detail: e.detail.to_string(),
        }
        .into())
    }

    fn hello(&self, hello: &Hello) -> Transition {
        let version = vouch_proto::negotiate(hello.min_version, hello.max_version)
            .map_err(Refusal::Version)?;
        tracing::debug!(peer = %self.peer, agent = %hello.agent, version, "agent hello");
        let next = AwaitingEnroll {
            version,
            chunks: Blob::default(),
            certificate: None,
        };
        Ok((
            Phase::AwaitingEnroll(next),
            vec![VerifierMessage::Welcome(Welcome { version })],
        ))
    }

    async fn enroll(&self, enrolling: AwaitingEnroll, enroll: &wire::Enroll) -> Transition {
        let ek = Public::from_tpm2b(&enroll.ek_public).map_err(ProtocolViolation::EkPublic)?;
        let certificate = match (enroll.has_ek_certificate, enrolling.certificate) {
            (true, Some(c)) => Some(c),
            (false, None) => None,
            (true, None) => return Err(ProtocolViolation::EkCertificateMissing.into()),
            (false, Some(_)) => return Err(ProtocolViolation::EkCertificateUnannounced.into()),
        };
        if enrolling.chunks.is_incomplete() {
            return Err(ProtocolViolation::IncompletePayload("Enroll").into());
        }
        let (host, cluster, trusted, clock) =
            self.check_trust(&ek, certificate.as_deref(), true).await?;

        let ak = Public::from_tpm2b(&enroll.ak_public).map_err(ActivationFailure::AkPublic)?;
        vouch_attest::credential::check_ak(&ak).map_err(ActivationFailure::Ak)?;
        let enrolled = Enrolled {
            version: enrolling.version,
            ek_hash: host.ek_hash,
            cluster,
            ek,
            trusted,
            ek_certificate: certificate,
            ak,
            ak_raw: enroll.ak_public.to_vec(),
        };
        if host.ak_public.as_deref() == Some(enroll.ak_public.as_slice()) {
            let last_clock: Option<ClockInfo> = clock.and_then(|c| serde_json::from_str(&c).ok());
            tracing::info!(peer = %self.peer, ek_hash = %enrolled.ek_hash, "AK already bound to this EK");
            return self.quote_request(enrolled, last_clock, None);
        }
        let secret =
            Zeroizing::new(crate::random::<32>().map_err(|_| Refusal::internal("RNG failure"))?);
        let made = vouch_attest::credential::make_credential(
            &enrolled.ek,
            &enrolled.ak,
            secret.as_slice(),
            &SystemRandom::new(),
        )
        .map_err(ActivationFailure::MakeCredential)?;
        // The wire carries the contents of the TPM2B structures, without their size fields.
        let challenge = CredentialChallenge {
            id_object: HVec::from_slice(tpm2b_contents(&made.id_object))
                .map_err(|()| ActivationFailure::CredentialTooLarge)?,
            encrypted_secret: HVec::from_slice(tpm2b_contents(&made.encrypted_secret))
                .map_err(|()| ActivationFailure::EncryptedSecretTooLarge)?,
        };
        let next = AwaitingActivation {
            enrolled,
            secret: Secret(secret),
        };
        Ok((
            Phase::AwaitingActivation(next),
            vec![VerifierMessage::CredentialChallenge(challenge)],
        ))
    }

    /// Looks the EK up: it must be a host of a trusted cluster and pass that cluster's trust
    /// configuration now. Run at enrolment and again before every re-attestation, so a change
    /// of configuration (a CA or EK removed, the host removed) takes effect on open sessions.
    /// With `with_clock`, also the TPM clock last accepted from the host (read with the host).
    async fn check_trust(
        &self,
        ek: &Public,
        certificate: Option<&[u8]>,
        with_clock: bool,
    ) -> Result<(Host, Cluster, std::sync::Arc<TrustedEk>, Option<String>), Refusal> {
        let ek_hash = crate::ek::ek_hash(&EkKey::from_public(ek));
        let hash = ek_hash.clone();
        let lookup = store::run(&self.state.store, move |s| {
            let Some(host) = s.get_host(&hash)? else {
                return Ok(None);
            };
            let clock = if with_clock {
                s.host_clock(&hash)?
            } else {
                None
            };
            Ok(Some((host, clock)))
        })
        .await
        .map_err(Refusal::internal)?;
        let cluster = match &lookup {
            Some((host, _)) => self
                .state
                .trust
                .get(&self.state, &host.cluster)
                .await
                .map_err(Refusal::internal)?,
            None => None,
        };
        let (Some((host, clock)), Some(cluster)) = (lookup, cluster) else {
            tracing::warn!(peer = %self.peer, %ek_hash, "refused: the EK is not a host of any trusted cluster");
            return Err(UntrustedEk::NotAHost { ek_hash }.into());
        };
        let trust = cluster
            .ek_trust(certificate.is_some())
            .map_err(Refusal::internal)?;
        let Some(trust) = trust else {
            tracing::warn!(peer = %self.peer, %ek_hash, cluster = %cluster.cluster.name, with_certificate = certificate.is_some(), "refused: the cluster trusts no such EK");
            return Err(UntrustedEk::NoTrust {
                cluster: cluster.cluster.name.clone(),
            }
            .into());
        };
        let trusted = cluster
            .verify_ek(trust, &ek_hash, ek, certificate, crate::now())
            .map_err(|e| {
                tracing::warn!(peer = %self.peer, %ek_hash, cluster = %cluster.cluster.name, reason = %e, "refused: EK not trusted");
                UntrustedEk::Refused {
                    cluster: cluster.cluster.name.clone(),
                    error: e,
                }
            })?;
        let cluster = cluster.cluster.clone();
        tracing::info!(peer = %self.peer, %ek_hash, cluster = %cluster.name, mode = ?trusted.mode(), "EK trusted");
        Ok((host, cluster, trusted, clock))
    }

    async fn activate(&self, activating: AwaitingActivation, proof: &[u8]) -> Transition {
        let AwaitingActivation { enrolled, secret } = activating;
        if !secret.matches(proof) {
            tracing::warn!(peer = %self.peer, ek_hash = %enrolled.ek_hash, "refused: wrong activation proof");
            return Err(ActivationFailure::WrongProof.into());
        }
        let (hash, ak) = (enrolled.ek_hash.clone(), enrolled.ak_raw.clone());
        store::run(&self.state.store, move |s| s.set_host_ak(&hash, &ak))
            .await
            .map_err(Refusal::internal)?;
        self.event(
            "host.ak_bound",
            &enrolled.ek_hash,
            serde_json::json!({"cluster": enrolled.cluster.name}),
        )
        .await;
        tracing::info!(peer = %self.peer, ek_hash = %enrolled.ek_hash, "AK activated and bound to the EK");
        self.quote_request(enrolled, None, None)
    }

    /// Asks for a quote with a fresh nonce over the cluster's selection.
    fn quote_request(
        &self,
        enrolled: Enrolled,
        last_clock: Option<ClockInfo>,
        keys: Option<KeyChannel>,
    ) -> Transition {
        let bank: HashAlg =
            serde_json::from_value(serde_json::Value::String(enrolled.cluster.bank.clone()))
                .map_err(|_| {
                    Refusal::internal(format!(
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
            .map_err(|_| Refusal::internal("RNG failure"))?
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
            .map_err(|_| Refusal::internal("selection"))?;
        let request = QuoteRequest {
            nonce: HVec::from_slice(&nonce).map_err(|()| Refusal::internal("nonce"))?,
            selection,
        };
        let next = AwaitingQuote {
            selection: PcrSelection::new(vec![(bank, enrolled.cluster.pcrs.clone())]),
            enrolled,
            last_clock,
            nonce,
            chunks: Blob::default(),
            pcr_values: None,
            event_log: None,
            keys,
        };
        Ok((
            Phase::AwaitingQuote(next),
            vec![VerifierMessage::QuoteRequest(request)],
        ))
    }

    /// Time for a re-attestation: the EK's trust and the AK's binding are checked again
    /// against the configuration as it is now, then a new quote request. Outside `Decided`,
    /// nothing to do.
    pub async fn reattest(&mut self) -> Step {
        let decided = match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Decided(decided) => decided,
            other => {
                self.phase = other;
                return Ok(vec![]);
            }
        };
        let Decided {
            mut enrolled,
            last_clock,
            keys,
            verdict: _,
        } = decided;
        let (host, cluster, trusted, _) = match self
            .check_trust(&enrolled.ek, enrolled.ek_certificate.as_deref(), false)
            .await
        {
            Ok(checked) => checked,
            Err(refusal) => {
                // This session proved possession of the host's TPM: the refusal is the host's
                // result, not only a log line. (Before that proof nothing is recorded of a
                // host, so that nobody holding its public EK can mark it refused.)
                self.record_refusal(&enrolled, &refusal).await;
                return Err(refusal);
            }
        };
        if host.ak_public.as_deref() != Some(enrolled.ak_raw.as_slice()) {
            return Err(ActivationFailure::NoLongerBound.into());
        }
        enrolled.cluster = cluster;
        enrolled.trusted = trusted;
        let (next, answers) = self.quote_request(enrolled, last_clock, keys)?;
        self.phase = next;
        Ok(answers)
    }

    /// The evidence for the outstanding quote request: verified, recorded, answered with the
    /// verdict; on an attested bound quote (v2), the key channel is opened.
    async fn evidence(
        &self,
        quoting: AwaitingQuote,
        attest: &[u8],
        signature: &[u8],
        session_public: Option<&[u8]>,
    ) -> Transition {
        if quoting.chunks.is_incomplete() {
            return Err(ProtocolViolation::IncompletePayload("Evidence").into());
        }
        // v2: a bound quote's qualifying data is SHA-256(nonce || agent session key).
        let qualifying_data = match session_public {
            Some(public) => crate::channel::qualifying_data(&quoting.nonce, public),
            None => quoting.nonce.clone(),
        };
        // Nothing is recorded of the host before the agent proves it holds the host's TPM.
        verdict::prove_possession(&quoting.enrolled, &qualifying_data, attest, signature).map_err(
            |reason| {
                tracing::warn!(peer = %self.peer, ek_hash = %quoting.enrolled.ek_hash, %reason, "refused: the evidence does not prove possession of the TPM");
                Refusal::Unproven(reason)
            },
        )?;
        let now = crate::now();
        let trust = self
            .state
            .trust
            .get(&self.state, &quoting.enrolled.cluster.name)
            .await
            .map_err(Refusal::internal)?;
        let versions = trust.as_ref().map_or(&[][..], |t| t.versions.as_slice());
        let expected = Expected {
            qualifying_data: &qualifying_data,
            selection: &quoting.selection,
            last_clock: quoting.last_clock.as_ref(),
        };
        let submitted = Submitted {
            attest,
            signature,
            pcr_values: quoting.pcr_values.as_deref(),
            event_log: quoting.event_log.as_deref(),
        };
        let checked = verdict::verify(&quoting.enrolled, &expected, &submitted, versions);
        let presented = checked
            .is_err()
            .then(|| verdict::presented(&expected, &submitted, &quoting.enrolled.cluster.pcrs));
        let AwaitingQuote {
            enrolled,
            mut last_clock,
            nonce,
            ..
        } = quoting;
        let mut clock_json = None;
        let outcome = match checked {
            Ok(evidence) => {
                let clock = evidence.quote().clock_info();
                last_clock = Some(clock);
                // Stored with the result, in its transaction.
                clock_json = Some(serde_json::to_string(&clock).map_err(Refusal::internal)?);
                Outcome::Attested(Box::new(self.issue(&enrolled, &nonce, evidence, now)?))
            }
            Err(reason) => {
                tracing::warn!(peer = %self.peer, ek_hash = %enrolled.ek_hash, %reason, "not attested");
                Outcome::NotAttested(reason)
            }
        };
        let verdict = Verdict {
            at: now,
            nonce,
            outcome,
            presented: presented.flatten(),
        };
        self.record(&enrolled, &verdict, clock_json).await?;

        let mut answers = vec![VerifierMessage::Verdict(verdict.message())];
        let keys = match (verdict.token(), session_public) {
            (Some(token), Some(public)) => {
                let (channel, ours) = crate::channel::establish(public, &verdict.nonce)
                    .map_err(ProtocolViolation::KeyChannel)?;
                answers.push(VerifierMessage::ChannelKey(wire::ChannelKey {
                    public: ours,
                }));
                Some(KeyChannel {
                    channel,
                    token: token.to_owned(),
                })
            }
            _ => None,
        };
        let next = Decided {
            enrolled,
            last_clock,
            verdict,
            keys,
        };
        Ok((Phase::Decided(next), answers))
    }

    /// Issues the attestation token for verified evidence.
    fn issue(
        &self,
        enrolled: &Enrolled,
        nonce: &[u8],
        evidence: VerifiedEvidence,
        now: i64,
    ) -> Result<Attested, Refusal> {
        let config = &self.state.config;
        let valid_for = config
            .reattest_interval_secs
            .saturating_add(config.agent_idle_timeout_secs);
        let claims = AttestationClaims {
            iss: "vouchd".into(),
            sub: enrolled.ek_hash.clone(),
            cluster: enrolled.cluster.name.clone(),
            software_version: evidence.version().name().to_owned(),
            pcr_digest: crate::hex(&evidence.quote().attest().pcr_digest),
            nonce: crate::hex(nonce),
            attestation: crate::hex(nonce),
            iat: now,
            exp: now.saturating_add(i64::try_from(config.token_lifetime_secs).unwrap_or(i64::MAX)),
            jti: crate::hex(&crate::random::<16>().map_err(|_| Refusal::internal("RNG failure"))?),
        };
        let token = self.state.signer.sign(&claims).map_err(Refusal::internal)?;
        self.state.metrics.tokens_issued.inc();
        Ok(Attested {
            evidence,
            token,
            valid_for,
        })
    }

    /// Records a trust refusal of a proven session's host as its not-attested result (the
    /// host's state changes now, with its event); a failure to record is logged.
    async fn record_refusal(&self, enrolled: &Enrolled, refusal: &Refusal) {
        if !matches!(refusal, Refusal::UntrustedEk(_)) {
            return;
        }
        let record = store::AttestationRecord {
            ek_hash: enrolled.ek_hash.clone(),
            cluster: enrolled.cluster.name.clone(),
            at: crate::now(),
            attested: false,
            software_version: None,
            reason: Some(refusal.to_string()),
            pcr_digest: None,
            nonce: None,
            valid_until: None,
            token: None,
            presented: None,
            config_generation: Some(enrolled.cluster.config_generation),
        };
        match store::run(&self.state.store, move |s| s.record_attestation(&record)).await {
            Ok(recorded) => {
                if let Some(event) = recorded.event {
                    crate::service::events::announce(&self.state, event);
                }
            }
            // The host was removed meanwhile: nothing to record it on.
            Err(store::StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(error = %e, ek_hash = %enrolled.ek_hash, "cannot record the refusal")
            }
        }
    }

    /// Records the verdict (with the TPM clock of its accepted quote, in the same transaction),
    /// counts it, and posts an event when the host's state changes. Returns once it is durable.
    async fn record(
        &self,
        enrolled: &Enrolled,
        verdict: &Verdict,
        clock: Option<String>,
    ) -> Result<(), Refusal> {
        let record = verdict.record(enrolled);
        let result = if record.attested {
            "attested"
        } else {
            "not_attested"
        };
        self.state
            .metrics
            .attestations
            .get_or_create(&crate::metrics::ResultLabels {
                result: result.into(),
            })
            .inc();
        let recorded = self
            .state
            .results
            .record(store::ResultWrite { record, clock })
            .await
            .map_err(Refusal::internal)?;
        // The state change's event was stored with the result, in the same transaction.
        if let Some(event) = recorded.event {
            crate::service::events::announce(&self.state, event);
        }
        Ok(())
    }

    /// A sealed key request over the channel: opened, authorised by the verdict's token,
    /// answered sealed.
    async fn key_request(&self, keys: &mut KeyChannel, sealed: &wire::Sealed) -> Step {
        let request = keys
            .channel
            .open(sealed)
            .map_err(ProtocolViolation::KeyChannel)?;
        let response = crate::channel::answer(&self.state, Some(&keys.token), request).await;
        let sealed = keys.channel.seal(&response).map_err(Refusal::internal)?;
        Ok(vec![VerifierMessage::Sealed(sealed)])
    }

    async fn event(&self, kind: &str, subject: &str, detail: serde_json::Value) {
        crate::service::events::record(&self.state, kind, subject, detail).await;
    }
}

/// The payload of a marshalled TPM2B (its 2-byte size field dropped); the whole input when the
/// size field does not describe it (the TPM then refuses the credential).
fn tpm2b_contents(tpm2b: &[u8]) -> &[u8] {
    match tpm2b.split_first_chunk::<2>() {
        Some((size, rest)) if usize::from(u16::from_be_bytes(*size)) == rest.len() => rest,
        _ => tpm2b,
    }
}

/// The refusal of a message `phase` does not expect.
fn unexpected(phase: &Phase, got: &'static str) -> Refusal {
    ProtocolViolation::Unexpected {
        expected: phase.expects(),
        phase: phase.name(),
        got,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use heapless::String as HString;
    use vouch_attest::policy::SoftwareVersion;
    use vouch_proto::wire::{BlobKind, RefusalKind};

    use super::*;
    use crate::config::Config;
    use crate::jwt::Signer;
    use crate::store::HostState;
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
        AppState::new(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Config {
                data_dir: dir.to_owned(),
                ..Config::default()
            },
            Signer::load_or_create(&dir.join("k.p8")).unwrap(),
            None,
        )
    }

    /// The rsa2048-sha256 quote fixture: PCR values in wire layout, and the reference
    /// values they match.
    fn fixture_pcrs() -> (Vec<u8>, SoftwareVersion) {
        fixture_pcrs_of("rsa2048-sha256")
    }

    fn fixture_pcrs_of(name: &str) -> (Vec<u8>, SoftwareVersion) {
        let (sel, values) =
            vouch_attest::tpm2_tools::parse_serialized_pcrs(&data(&format!("quotes/{name}.pcrs")))
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
                disabled_at: None,
                config_generation: 0,
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
        enrol_as(session, ak, false).await
    }

    /// Enrols as a v1 agent, or as a v3 check-in agent.
    async fn enrol_as(session: &mut Session, ak: &str, checkin: bool) -> Vec<VerifierMessage> {
        let version = if checkin { 3 } else { 1 };
        let hello = AgentMessage::Hello(Hello {
            min_version: 1,
            max_version: version,
            agent: HString::try_from("test").unwrap(),
        });
        assert_eq!(
            session.on_message(hello).await.unwrap(),
            vec![VerifierMessage::Welcome(Welcome { version })]
        );
        if checkin {
            assert_eq!(
                session.on_message(AgentMessage::CheckIn).await.unwrap(),
                vec![]
            );
        }
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

    async fn send_evidence(session: &mut Session, pcrs: &[u8]) -> wire::Verdict {
        send_evidence_of(session, pcrs, "rsa2048-sha256").await
    }

    async fn send_evidence_of(session: &mut Session, pcrs: &[u8], name: &str) -> wire::Verdict {
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

    fn tpm_error() -> AgentMessage {
        AgentMessage::Error(wire::AgentError {
            failure: AgentFailure::TpmResponse(0x101),
            detail: HString::try_from("TPM refused a command").unwrap(),
        })
    }

    /// A TPM failure reported after an attested verdict fails closed: a not-attested result,
    /// the host's state and its event at once. Reported before the session proved possession
    /// of the TPM, it changes nothing recorded.
    #[tokio::test]
    async fn a_tpm_failure_after_attesting_makes_the_host_not_attested() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let (pcrs, version) = fixture_pcrs();
        let ek_hash = configure(state.store.as_ref(), &version, true);
        let mut session = Session::new("test", state.clone());
        session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        enrol(&mut session).await;
        assert!(send_evidence(&mut session, &pcrs).await.attested);
        let events = state.store.list_events(0, 100).unwrap().len();

        // Unproven: another session, for the same host, reports a failure before any quote.
        let mut other = Session::new("test", state.clone());
        enrol(&mut other).await;
        assert!(other.on_message(tpm_error()).await.is_err());
        let host = state.store.get_host(&ek_hash).unwrap().unwrap();
        assert_eq!(
            host.state,
            HostState::Attested,
            "an unproven report changes nothing"
        );
        assert_eq!(
            state.store.list_attestations(&ek_hash, 10).unwrap().len(),
            1
        );

        // Proven: the attested session's agent reports its TPM failed (as while setting up
        // the key channel).
        let refusal = session.on_message(tpm_error()).await.unwrap_err();
        assert!(refusal.to_string().contains("TpmResponse"), "{refusal}");
        let host = state.store.get_host(&ek_hash).unwrap().unwrap();
        assert_eq!(host.state, HostState::NotAttested);
        let latest = state
            .store
            .list_attestations(&ek_hash, 1)
            .unwrap()
            .remove(0);
        assert!(!latest.attested);
        assert_eq!(latest.nonce, None, "no quote");
        assert_eq!(latest.token, None);
        let reason = latest.reason.unwrap();
        assert!(
            reason.contains("TPM failure") && reason.contains("TpmResponse(257)"),
            "{reason}"
        );
        let stored = state.store.list_events(0, 100).unwrap();
        assert_eq!(stored.len(), events + 1);
        let event = stored.last().unwrap();
        assert_eq!(event.kind, "host.state_changed");
        assert_eq!(event.detail["to"], "not_attested");
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
        // The database keeps the token's SHA-256 only; the token is the verdict's.
        let token = session.verdict().unwrap().token().unwrap().to_owned();
        assert_eq!(
            record.token.as_deref(),
            Some(crate::jwt::token_digest(&token).as_str())
        );
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(serde_json::to_value(state.signer.jwks()).unwrap()).unwrap();
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
        assert_eq!(err.kind(), RefusalKind::UntrustedEk, "{err:?}");
    }

    #[tokio::test]
    async fn a_check_in_ends_with_the_next_check_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let (pcrs, version) = fixture_pcrs();
        configure(state.store.as_ref(), &version, true);
        let mut session = Session::new("test", state.clone());
        session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        let out = enrol_as(&mut session, "rsa2048-sha256", true).await;
        // A bound AK: straight to the quote, no credential challenge.
        assert!(matches!(out.as_slice(), [VerifierMessage::QuoteRequest(_)]));
        for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, &pcrs).unwrap() {
            session
                .on_message(AgentMessage::Chunk(chunk))
                .await
                .unwrap();
        }
        let evidence = AgentMessage::Evidence(Evidence {
            attest: HVec::from_slice(&data("quotes/rsa2048-sha256.quote")).unwrap(),
            signature: HVec::from_slice(&data("quotes/rsa2048-sha256.sig")).unwrap(),
        });
        let out = session.on_message(evidence).await.unwrap();
        let [
            VerifierMessage::Verdict(v),
            VerifierMessage::NextCheckIn(next),
        ] = out.as_slice()
        else {
            panic!("expected a verdict and the next check-in, got {out:?}");
        };
        assert!(v.attested, "{v:?}");
        // The interval (600 s) shortened by at most 10 %: never past the verdict's validity.
        assert!((540..=600).contains(&next.after_secs), "{next:?}");
        assert!(next.after_secs <= v.valid_for_secs);
        assert!(session.checked_in());

        // CheckIn only right after Welcome, and only from v3.
        let mut session = Session::new("test", state.clone());
        enrol(&mut session).await;
        let err = session.on_message(AgentMessage::CheckIn).await.unwrap_err();
        assert_eq!(err.kind(), RefusalKind::Protocol);
        assert!(!session.checked_in());
    }

    /// One check-in of the fixture host: its verdict, or the refusal of its enrolment.
    async fn check_in(state: &AppState, pcrs: &[u8]) -> Result<wire::Verdict, Refusal> {
        let mut session = Session::new("test", state.clone());
        session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        let hello = AgentMessage::Hello(Hello {
            min_version: 1,
            max_version: 3,
            agent: HString::try_from("test").unwrap(),
        });
        session.on_message(hello).await?;
        session.on_message(AgentMessage::CheckIn).await?;
        let cert = data("ek/ek-rsa2048.crt");
        for chunk in vouch_proto::chunk::split(BlobKind::EkCertificate, &cert).unwrap() {
            session.on_message(AgentMessage::Chunk(chunk)).await?;
        }
        session
            .on_message(AgentMessage::Enroll(Enroll {
                ek_public: HVec::from_slice(&data("ek/ek-rsa2048.pub")).unwrap(),
                ak_public: HVec::from_slice(&data("quotes/rsa2048-sha256.ak.pub")).unwrap(),
                has_ek_certificate: true,
            }))
            .await?;
        for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, pcrs).unwrap() {
            session.on_message(AgentMessage::Chunk(chunk)).await?;
        }
        let out = session
            .on_message(AgentMessage::Evidence(Evidence {
                attest: HVec::from_slice(&data("quotes/rsa2048-sha256.quote")).unwrap(),
                signature: HVec::from_slice(&data("quotes/rsa2048-sha256.sig")).unwrap(),
            }))
            .await?;
        match out.first() {
            Some(VerifierMessage::Verdict(v)) => Ok(v.clone()),
            other => panic!("expected a verdict, got {other:?}"),
        }
    }

    /// The trust configuration is cached between check-ins; a change to it is in force on the
    /// very next check-in.
    #[tokio::test]
    async fn a_trust_change_takes_effect_on_the_next_check_in() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let (pcrs, version) = fixture_pcrs();
        configure(state.store.as_ref(), &version, true);
        assert!(check_in(&state, &pcrs).await.unwrap().attested);
        assert!(check_in(&state, &pcrs).await.unwrap().attested);

        // The software version removed: the next check-in is not attested.
        let record = state.store.list_software_versions("prod").unwrap();
        state.store.delete_software_version("prod", "fw-1").unwrap();
        let v = check_in(&state, &pcrs).await.unwrap();
        assert!(!v.attested, "{v:?}");
        // Put back: attested again.
        state.store.put_software_version(&record[0]).unwrap();
        assert!(check_in(&state, &pcrs).await.unwrap().attested);

        // The TPM CAs removed: the next check-in is refused.
        for ca in state.store.list_ca_certs("prod").unwrap() {
            state.store.delete_ca_cert("prod", &ca.id).unwrap();
        }
        let err = check_in(&state, &pcrs).await.unwrap_err();
        assert_eq!(err.kind(), RefusalKind::UntrustedEk, "{err:?}");
    }

    #[tokio::test]
    async fn a_check_in_that_is_not_attested_is_pulled_back_early() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let (pcrs, mut version) = fixture_pcrs();
        if let Some(bank) = version.pcrs.values_mut().next() {
            bank.insert(7, HexBytes(vec![0xee; 32]));
        }
        configure(state.store.as_ref(), &version, true);
        let mut session = Session::new("test", state.clone());
        session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        enrol_as(&mut session, "rsa2048-sha256", true).await;
        for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, &pcrs).unwrap() {
            session
                .on_message(AgentMessage::Chunk(chunk))
                .await
                .unwrap();
        }
        let evidence = AgentMessage::Evidence(Evidence {
            attest: HVec::from_slice(&data("quotes/rsa2048-sha256.quote")).unwrap(),
            signature: HVec::from_slice(&data("quotes/rsa2048-sha256.sig")).unwrap(),
        });
        let out = session.on_message(evidence).await.unwrap();
        let [
            VerifierMessage::Verdict(v),
            VerifierMessage::NextCheckIn(next),
        ] = out.as_slice()
        else {
            panic!("expected a verdict and the next check-in, got {out:?}");
        };
        assert!(!v.attested);
        // checkin_retry_secs (30) shortened by at most 10 %.
        assert!((27..=30).contains(&next.after_secs), "{next:?}");
    }

    #[tokio::test]
    async fn a_message_out_of_phase_is_refused_with_the_phase_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let mut session = Session::new("test", state.clone());
        let enroll = AgentMessage::Enroll(Enroll {
            ek_public: HVec::new(),
            ak_public: HVec::new(),
            has_ek_certificate: false,
        });
        let err = session.on_message(enroll).await.unwrap_err();
        assert_eq!(err.kind(), RefusalKind::Protocol);
        assert_eq!(
            err.to_string(),
            "expected Hello in phase AwaitingHello, got Enroll"
        );
        // A refused session accepts nothing more.
        assert_eq!(session.phase(), PhaseName::Ended);

        // Sealed without a key channel: a v1 session awaiting a quote, then after its verdict.
        let (pcrs, version) = fixture_pcrs();
        configure(state.store.as_ref(), &version, true);
        let mut session = Session::new("test", state.clone());
        session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        enrol(&mut session).await;
        assert_eq!(session.phase(), PhaseName::AwaitingQuote);
        let sealed = || {
            AgentMessage::Sealed(wire::Sealed {
                seq: 0,
                body: HVec::new(),
            })
        };
        let err = session.on_message(sealed()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected Chunk or Evidence in phase AwaitingQuote, got Sealed"
        );
        let mut session = Session::new("test", state.clone());
        session.fixed_nonce = Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        enrol(&mut session).await;
        assert!(send_evidence(&mut session, &pcrs).await.attested);
        let err = session.on_message(sealed()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected no message in phase Decided, got Sealed"
        );
    }

    #[tokio::test]
    async fn the_tpm_clock_may_not_go_back_across_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        // seq1 and seq2 are one AK's consecutive quotes (nonces aa, bb), same PCRs.
        let (pcrs, version) = fixture_pcrs_of("ecc256-seq1");
        let ek_hash = configure_with(state.store.as_ref(), &version, Some("ecc256-seq"), vec![0]);
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
        // The refusal keeps what the host presented: PCR 7 as quoted, not the version's.
        let stored = state.store.list_attestations(&ek_hash, 1).unwrap();
        let presented = stored[0].presented.as_ref().expect("what was presented");
        let pcr7 = presented["pcrs"]["7"].as_str().unwrap();
        assert_eq!(pcr7.len(), 64, "{presented}");
        assert_ne!(pcr7, "ee".repeat(32));
    }

    #[tokio::test]
    async fn a_fresh_nonce_refuses_a_replayed_quote() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let (pcrs, version) = fixture_pcrs();
        let ek_hash = configure(state.store.as_ref(), &version, true);
        let mut session = Session::new("test", state.clone());
        enrol(&mut session).await;
        for chunk in vouch_proto::chunk::split(BlobKind::PcrValues, &pcrs).unwrap() {
            session
                .on_message(AgentMessage::Chunk(chunk))
                .await
                .unwrap();
        }
        let evidence = AgentMessage::Evidence(Evidence {
            attest: HVec::from_slice(&data("quotes/rsa2048-sha256.quote")).unwrap(),
            signature: HVec::from_slice(&data("quotes/rsa2048-sha256.sig")).unwrap(),
        });
        // A quote that does not answer this session's nonce proves nothing: refused, and
        // nothing is recorded of the host.
        let err = session.on_message(evidence).await.unwrap_err();
        assert_eq!(err.kind(), RefusalKind::Activation);
        assert_eq!(err.code(), "evidence-unproven");
        assert!(err.to_string().contains("nonce"), "{err}");
        assert!(!session.proven());
        let host = state.store.get_host(&ek_hash).unwrap().unwrap();
        assert_eq!(host.state, HostState::Unknown);
        assert!(
            state
                .store
                .list_attestations(&ek_hash, 10)
                .unwrap()
                .is_empty()
        );
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
        assert_eq!(err.kind(), RefusalKind::Activation);
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
        let Phase::AwaitingActivation(activating) = &session.phase else {
            panic!("not activating");
        };
        let proof = AgentMessage::ActivationProof(ActivationProof {
            secret: HVec::from_slice(activating.secret.0.as_slice()).unwrap(),
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
        assert_eq!(err.kind(), RefusalKind::UntrustedEk, "{err:?}");
    }
}
