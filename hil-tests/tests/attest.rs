//! Cross-crate proofs on a real TPM (swtpm): the verifier's attestation core (`vouch-attest`)
//! and the board agent (`vouch-agent`) agree with the firmware's TPM stack (`vouch-tpm`).
//!
//! - EK trust (mode 1): the EK certificate vouch-tpm reads verifies against the swtpm's
//!   manufacturer CA, and the EK vouch-tpm re-creates is the certificate's key; another
//!   manufacturer's CA, or another TPM's EK, is refused.
//! - MakeCredential: vouch-attest's credential for an AK (ECC and RSA) under an EK (RSA
//!   certificate EK, and the ECC P-256 EK) is activated by vouch-tpm; one made for another AK
//!   is refused by the TPM.
//! - Quote: vouch-tpm's quote verifies with vouch-attest; a wrong nonce is refused.
//! - Measured boot: vouch-agent's event log parses and replays in vouch-attest to the quoted
//!   PCRs, and a policy built from it accepts the evidence, and refuses a one-byte-changed image.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use hil_tests::socket::SwtpmSocket;
use hil_tests::swtpm::{ManufacturerCa, Swtpm, SwtpmOptions};
use sha2::Digest as _;
use vouch_agent::eventlog::EventLog as AgentLog;
use vouch_agent::measure::BootImage;
use vouch_agent::measured_boot;
use vouch_attest::credential::make_credential;
use vouch_attest::ek::{
    EkError, EkEvidence, EkKey, EkTrust, TrustMode, certificates_from_pem_or_der, verify_ek,
};
use vouch_attest::eventlog;
use vouch_attest::evidence::{EvidenceError, verify_evidence};
use vouch_attest::policy::{Policy, SoftwareVersion};
use vouch_attest::quote::{
    AttestationKey, ClockChange, QuoteError, QuoteExpectations, verify_quote,
};
use vouch_attest::tpm::EccCurve;
use vouch_attest::tpm::{PcrSelection, Public};
use vouch_attest::{HashAlg, PcrValues};
use vouch_tpm::{AkKind, Auth, CommandError, EkKind, PcrBank, RH_OWNER, Startup, StartupType, Tpm};

type SocketTpm = Tpm<SwtpmSocket>;

/// A swtpm, and vouch-tpm over its socket after TPM2_Startup(CLEAR).
fn started() -> (Swtpm, SocketTpm) {
    started_with(&SwtpmOptions::default())
}

fn started_with(options: &SwtpmOptions) -> (Swtpm, SocketTpm) {
    let swtpm = Swtpm::start_with(options).unwrap_or_else(|e| panic!("{e}"));
    let mut tpm: SocketTpm = Tpm::new(swtpm.connect().unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("Startup"),
        Startup::Started
    );
    (swtpm, tpm)
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("time fits i64")
}

/// The manufacturer CA's (root, intermediate) certificates, DER.
fn ca_der(ca: &ManufacturerCa) -> (Vec<u8>, Vec<u8>) {
    let one = |path: &std::path::Path| {
        let pem = std::fs::read(path).expect("CA certificate");
        let mut certs = certificates_from_pem_or_der(&pem).expect("CA PEM");
        assert_eq!(certs.len(), 1, "{}", path.display());
        certs.remove(0)
    };
    (one(&ca.root_cert), one(&ca.intermediate_cert))
}

/// vouch-tpm's public area (TPM2B_PUBLIC bytes) as vouch-attest decodes it.
fn attest_public(public: &vouch_tpm::Public) -> Public {
    Public::from_tpm2b(public.as_tpm2b()).expect("vouch-attest decodes vouch-tpm's TPM2B_PUBLIC")
}

fn read_rsa_ek_certificate(tpm: &mut SocketTpm) -> Vec<u8> {
    let mut cert = vec![0u8; 4096];
    let n = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut cert)
        .expect("read_ek_certificate");
    cert.truncate(n);
    cert
}

#[test]
fn ek_certificate_and_ek_are_trusted_by_vouch_attest() {
    let (swtpm, mut tpm) = started();
    let cert = read_rsa_ek_certificate(&mut tpm);
    let ek = tpm.create_ek(EkKind::Rsa2048).expect("create_ek");
    let public = attest_public(&ek.public);
    let (root, intermediate) = ca_der(swtpm.ca());
    let intermediates = vec![intermediate.clone()];
    let evidence = EkEvidence {
        public: Some(&public),
        certificate: Some(&cert),
        intermediates: &intermediates,
    };

    // Mode 1, the root trusted and the intermediate supplied by the host.
    let trust = EkTrust::Manufacturers {
        cas: vec![root.clone()],
    };
    let trusted = verify_ek(&trust, &evidence, now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trusted.mode(), TrustMode::Manufacturer);
    assert_eq!(
        trusted.chain().len(),
        3,
        "EK, intermediate, root: {:?}",
        trusted.chain()
    );
    // The EK vouch-tpm re-created is the certificate's key (verify_ek checks the presented
    // public area against it; here the same comparison is spelled out).
    assert_eq!(trusted.key(), &EkKey::from_public(&public));
    assert_eq!(
        trusted.key(),
        &EkKey::from_certificate(&cert).expect("certificate key")
    );

    // Mode 1 with both CA certificates trusted, nothing supplied by the host.
    let both = EkTrust::Manufacturers {
        cas: vec![root.clone(), intermediate],
    };
    let no_intermediates = EkEvidence {
        intermediates: &[],
        ..evidence
    };
    verify_ek(&both, &no_intermediates, now()).unwrap_or_else(|e| panic!("{e}"));
    // The root alone cannot be reached without the intermediate.
    assert!(
        matches!(
            verify_ek(&trust, &no_intermediates, now()),
            Err(EkError::NoChain(_))
        ),
        "a chain without its intermediate was accepted"
    );

    // Another manufacturer (another swtpm's CA) is refused, with or without its intermediate.
    let (other_swtpm, mut other_tpm) = started_with(&SwtpmOptions {
        ecc: true,
        ..SwtpmOptions::default()
    });
    let (other_root, other_intermediate) = ca_der(other_swtpm.ca());
    let other_trust = EkTrust::Manufacturers {
        cas: vec![other_root],
    };
    let other_intermediates = vec![other_intermediate];

    // That TPM's ECC EK certificate (NIST P-384, NV 0x01C00016: vouch-tpm has no template for
    // it, so it is read as a plain NV index) is trusted by its own manufacturer, not by ours.
    let mut ecc_cert = vec![0u8; 4096];
    let n = other_tpm
        .nv_read(0x01C0_0016, RH_OWNER, &mut ecc_cert)
        .expect("ECC EK certificate");
    ecc_cert.truncate(n);
    let ecc_evidence = EkEvidence {
        public: None,
        certificate: Some(&ecc_cert),
        intermediates: &other_intermediates,
    };
    let ecc = verify_ek(&other_trust, &ecc_evidence, now()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            ecc.key(),
            EkKey::Ecc {
                curve: EccCurve::P384,
                ..
            }
        ),
        "{:?}",
        ecc.key()
    );
    assert!(matches!(
        verify_ek(&trust, &ecc_evidence, now()),
        Err(EkError::NoChain(_))
    ));
    for supplied in [&intermediates, &other_intermediates] {
        let result = verify_ek(
            &other_trust,
            &EkEvidence {
                intermediates: supplied,
                ..evidence
            },
            now(),
        );
        assert!(
            matches!(result, Err(EkError::NoChain(_))),
            "another manufacturer's CA trusted this EK: {result:?}"
        );
    }

    // Another TPM's EK presented with this certificate is refused.
    let other_ek = other_tpm.create_ek(EkKind::Rsa2048).expect("create_ek");
    let other_public = attest_public(&other_ek.public);
    let result = verify_ek(
        &trust,
        &EkEvidence {
            public: Some(&other_public),
            ..evidence
        },
        now(),
    );
    assert!(
        matches!(result, Err(EkError::KeyMismatch)),
        "another TPM's EK was accepted: {result:?}"
    );
}

/// The contents of a TPM2B (vouch-attest's `MadeCredential` keeps the size prefix; vouch-tpm
/// and the wire contract take the contents).
fn tpm2b_contents(tpm2b: &[u8]) -> &[u8] {
    let (size, contents) = tpm2b.split_at(2);
    assert_eq!(
        usize::from(u16::from_be_bytes([size[0], size[1]])),
        contents.len(),
        "TPM2B size prefix"
    );
    contents
}

/// vouch-attest's MakeCredential for each AK kind under the EK of `ek_kind`, activated by
/// vouch-tpm; and a credential for the other AK refused by the TPM.
fn credential_round_trip(ek_kind: EkKind) {
    let (_swtpm, mut tpm) = started();
    let ek = tpm.create_ek(ek_kind).expect("create_ek");
    let ek_public = attest_public(&ek.public);
    let mut aks = Vec::new();
    for kind in [AkKind::EccP256, AkKind::Rsa2048] {
        let created = tpm.create_ak(ek.handle, kind).expect("create_ak");
        let loaded = tpm
            .load(ek.handle, Auth::EkPolicy, &created)
            .expect("load AK");
        let public = attest_public(&created.public);
        assert_eq!(
            public.name(),
            loaded.name.as_slice(),
            "vouch-attest's Name of the AK is the TPM's"
        );
        aks.push((kind, loaded.handle, public));
    }
    let rng = SystemRandom::new();
    for (i, (kind, handle, public)) in aks.iter().enumerate() {
        let secret = [0xA5 ^ u8::try_from(i).expect("index"); 32];
        let made = make_credential(&ek_public, public, &secret, &rng)
            .unwrap_or_else(|e| panic!("make_credential for the {kind:?} AK: {e}"));
        let recovered = tpm
            .activate_credential(
                *handle,
                ek.handle,
                tpm2b_contents(&made.id_object),
                tpm2b_contents(&made.encrypted_secret),
            )
            .unwrap_or_else(|e| panic!("activate_credential for the {kind:?} AK: {e:?}"));
        assert_eq!(
            recovered.as_slice(),
            secret,
            "{ek_kind:?} EK, {kind:?} AK: secret recovered"
        );

        // The credential made for this AK, presented with the other AK: refused by the TPM.
        let (other_kind, other_handle, _) = &aks[1 - i];
        let result = tpm.activate_credential(
            *other_handle,
            ek.handle,
            tpm2b_contents(&made.id_object),
            tpm2b_contents(&made.encrypted_secret),
        );
        assert!(
            matches!(result, Err(CommandError::Tpm(_))),
            "a credential for the {kind:?} AK was activated with the {other_kind:?} AK: {result:?}"
        );
    }
    for (_, handle, _) in aks {
        tpm.flush_context(handle).expect("flush AK");
    }
    tpm.flush_context(ek.handle).expect("flush EK");
}

#[test]
fn credential_made_by_vouch_attest_for_the_rsa_ek_is_activated_by_vouch_tpm() {
    credential_round_trip(EkKind::Rsa2048);
}

/// swtpm_setup (0.7) certifies only a NIST P-384 ECC EK (NV 0x01C00016), so the P-256 EK of
/// template L-2 has no certificate here; MakeCredential needs only its public area.
#[test]
fn credential_made_by_vouch_attest_for_the_ecc_p256_ek_is_activated_by_vouch_tpm() {
    credential_round_trip(EkKind::EccP256);
}

/// Every PCR in `mask` of every active bank.
fn every_bank<const N: usize>(tpm: &mut Tpm<SwtpmSocket, N>, mask: u32) -> Vec<PcrBank> {
    tpm.pcr_banks()
        .expect("pcr_banks")
        .active()
        .map(|b| PcrBank {
            alg: b.alg,
            pcrs: mask,
        })
        .collect()
}

/// vouch-tpm's selection and PCR_Read values in vouch-attest's types.
fn attest_pcrs<const N: usize>(
    tpm: &mut Tpm<SwtpmSocket, N>,
    sel: &[PcrBank],
) -> (PcrSelection, PcrValues) {
    let read = tpm.pcr_read(sel).expect("pcr_read");
    assert_eq!(
        read.selection.as_slice(),
        sel,
        "every selected PCR was read"
    );
    let selection = PcrSelection::new(
        sel.iter()
            .map(|b| {
                let alg = HashAlg::from_id(b.alg).expect("known bank");
                (alg, (0..32).filter(|i| b.pcrs & (1 << i) != 0).collect())
            })
            .collect(),
    );
    let mut values = PcrValues::default();
    let mut digests = read.digests().iter();
    for (alg, i) in selection.iter() {
        let d = digests.next().expect("a digest per selected PCR");
        values.insert(alg, i, d.to_vec());
    }
    assert!(digests.next().is_none(), "no digest left over");
    (selection, values)
}

#[test]
fn quotes_by_vouch_tpm_verify_with_vouch_attest() {
    let (_swtpm, mut tpm) = started();
    let ek = tpm.create_ek(EkKind::EccP256).expect("create_ek");
    tpm.pcr_extend_active_banks(16, |alg, out| {
        let len = match alg {
            vouch_tpm::ALG_SHA1 => 20,
            vouch_tpm::ALG_SHA256 => 32,
            _ => return None,
        };
        out[..len].fill(0x5A);
        Some(len)
    })
    .expect("pcr_extend");
    let sel = every_bank(&mut tpm, (1 << 16) | (1 << 0));
    for kind in [AkKind::EccP256, AkKind::Rsa2048] {
        let created = tpm.create_ak(ek.handle, kind).expect("create_ak");
        let ak = tpm
            .load(ek.handle, Auth::EkPolicy, &created)
            .expect("load AK");
        let key = AttestationKey::from_public(attest_public(&created.public))
            .unwrap_or_else(|e| panic!("{kind:?} AK refused: {e}"));
        let mut nonce = [0u8; 32];
        tpm.get_random(&mut nonce).expect("nonce");
        let quote = tpm.quote(ak.handle, &nonce, &sel).expect("quote");
        let (selection, values) = attest_pcrs(&mut tpm, &sel);
        let expect = QuoteExpectations {
            nonce: &nonce,
            selection: Some(&selection),
            pcrs: &values,
            last: None,
            hash: Some(HashAlg::Sha256),
        };
        let verified = verify_quote(&key, &quote.attest, &quote.signature, &expect)
            .unwrap_or_else(|e| panic!("{kind:?} AK: quote refused: {e}"));
        assert_eq!(verified.pcrs(), &values);
        assert_eq!(verified.clock_change(), ClockChange::First);

        // A second quote in the same boot, checked against the first one's clock.
        let quote2 = tpm.quote(ak.handle, &nonce, &sel).expect("quote");
        let last = verified.clock_info();
        let again = verify_quote(
            &key,
            &quote2.attest,
            &quote2.signature,
            &QuoteExpectations {
                last: Some(&last),
                ..expect
            },
        )
        .unwrap_or_else(|e| panic!("{kind:?} AK: second quote refused: {e}"));
        assert_eq!(again.clock_change(), ClockChange::SameBoot);

        // The wrong nonce is refused.
        let mut wrong = nonce;
        wrong[0] ^= 1;
        let result = verify_quote(
            &key,
            &quote.attest,
            &quote.signature,
            &QuoteExpectations {
                nonce: &wrong,
                ..expect
            },
        );
        assert!(
            matches!(result, Err(QuoteError::Nonce { .. })),
            "{kind:?} AK: a wrong nonce was accepted: {result:?}"
        );
        tpm.flush_context(ak.handle).expect("flush AK");
    }
    tpm.flush_context(ek.handle).expect("flush EK");
}

/// What a board presents after measured boot: its event log and a quote over PCRs 0 and 1 of
/// every active bank.
struct BootEvidence {
    log: Vec<u8>,
    ak: AttestationKey,
    nonce: [u8; 32],
    attest: Vec<u8>,
    signature: Vec<u8>,
    selection: PcrSelection,
    pcrs: PcrValues,
}

impl BootEvidence {
    fn expectations(&self) -> QuoteExpectations<'_> {
        QuoteExpectations {
            nonce: &self.nonce,
            selection: Some(&self.selection),
            pcrs: &self.pcrs,
            last: None,
            hash: None,
        }
    }
}

/// vouch-agent's measured boot of `image` on a fresh swtpm, then a quote by an AK; with the
/// board's 2 KiB command buffers and event log.
fn boot(image: &[u8]) -> BootEvidence {
    let swtpm = Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let mut tpm: Tpm<_, 2048> = Tpm::new(swtpm.connect().unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("Startup"),
        Startup::Started
    );
    // In two pieces, as a board whose flash starts at address 0 passes it.
    let (first_word, rest) = image.split_at(4);
    let boot = BootImage {
        version: b"vouch-agent hil-tests 1.0",
        image: &[first_word, rest],
        base: 0x0000_0000,
        config: b"board=hil-tests",
    };
    let log: AgentLog<2048> =
        measured_boot(&mut tpm, &boot).unwrap_or_else(|e| panic!("measured_boot: {e:?}"));
    let ek = tpm.create_ek(EkKind::EccP256).expect("create_ek");
    let created = tpm
        .create_ak(ek.handle, AkKind::EccP256)
        .expect("create_ak");
    let ak = tpm
        .load(ek.handle, Auth::EkPolicy, &created)
        .expect("load AK");
    let sel = every_bank(&mut tpm, 0b11);
    let mut nonce = [0u8; 32];
    tpm.get_random(&mut nonce).expect("nonce");
    let quote = tpm.quote(ak.handle, &nonce, &sel).expect("quote");
    let (selection, pcrs) = attest_pcrs(&mut tpm, &sel);
    BootEvidence {
        log: log.as_bytes().to_vec(),
        ak: AttestationKey::from_public(attest_public(&created.public)).expect("AK"),
        nonce,
        attest: quote.attest.as_slice().to_vec(),
        signature: quote.signature.as_slice().to_vec(),
        selection,
        pcrs,
    }
}

#[test]
fn measured_boot_by_vouch_agent_is_verified_by_vouch_attest() {
    let image: Vec<u8> = (0..4096u32)
        .map(|i| u8::try_from(i * 7 % 251).expect("< 251"))
        .collect();
    let mut changed = image.clone();
    changed[1234] ^= 0x01;
    let (good, bad) = std::thread::scope(|s| {
        let good = s.spawn(|| boot(&image));
        let bad = s.spawn(|| boot(&changed));
        (
            good.join().expect("boot thread"),
            bad.join().expect("boot thread"),
        )
    });

    // vouch-attest parses the agent's log; its replay is what the TPM quoted.
    let log = eventlog::parse(&good.log).unwrap_or_else(|e| panic!("agent's event log: {e}"));
    let replay = log.replay();
    assert!(
        replay.skipped_banks.is_empty(),
        "{:?}",
        replay.skipped_banks
    );
    let banks: Vec<HashAlg> = good.selection.banks.iter().map(|(a, _)| *a).collect();
    assert_eq!(log.banks(), banks, "the log declares every active bank");
    for (alg, pcr, quoted) in good.pcrs.iter() {
        assert_eq!(
            replay.pcrs.get(alg, pcr),
            Some(quoted),
            "replayed PCR {pcr} ({alg}) == quoted"
        );
    }
    log.check_against(&replay, &good.pcrs)
        .unwrap_or_else(|e| panic!("{e}"));
    // The firmware blob event (EV_EFI_PLATFORM_FIRMWARE_BLOB2) carries the digest of the whole
    // image, computed here in one piece.
    let blob = log
        .events
        .iter()
        .find(|e| e.event_type == 0x8000_000A)
        .expect("firmware blob event");
    assert_eq!(blob.pcr, 0);
    assert_eq!(
        blob.digest(HashAlg::Sha256),
        Some(sha2::Sha256::digest(&image).as_slice()),
        "the image's pieces are measured as one"
    );

    // A policy built from this log accepts the evidence, in every bank, and refuses the
    // evidence of the one-byte-changed image (whose quote and log are themselves sound).
    let version = SoftwareVersion::from_event_log("hil-tests image", &log, &[0, 1]);
    for bank in banks {
        let policy = Policy {
            accepted: vec![version.clone()],
            pcrs: vec![0, 1],
            bank,
        };
        let verified = verify_evidence(
            &good.ak,
            &good.attest,
            &good.signature,
            Some(&good.log),
            &good.expectations(),
            &policy,
        )
        .unwrap_or_else(|e| panic!("{bank}: evidence refused: {e}"));
        assert_eq!(verified.version().name(), "hil-tests image");

        let result = verify_evidence(
            &bad.ak,
            &bad.attest,
            &bad.signature,
            Some(&bad.log),
            &bad.expectations(),
            &policy,
        );
        assert!(
            matches!(result, Err(EvidenceError::Policy(_))),
            "{bank}: a changed image was accepted: {result:?}"
        );
        assert_ne!(
            good.pcrs.get(bank, 0),
            bad.pcrs.get(bank, 0),
            "PCR 0 differs"
        );
        assert_eq!(
            good.pcrs.get(bank, 1),
            bad.pcrs.get(bank, 1),
            "PCR 1 is equal"
        );
    }
}
