//! The attestation flow every path runs, written once over `vouch_tpm::Tpm` (the firmware's
//! command layer) on any `vouch_tpm::Transport`, and judged by tools outside the stack:
//! x509-parser and GnuTLS `certtool` for the EK certificate, `tpm2_makecredential` for the
//! credential, `tpm2_checkquote` for the quote, RustCrypto hashes for the PCR values.
// Test code: a failed step panics with what failed (clippy.toml allows this in #[test]
// functions; this module holds their shared body).
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]

use hil_tests::swtpm::Swtpm;
use hil_tests::tools::{self, QuoteFiles};
use sha2::Digest;
use vouch_tpm::{
    ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512, AkKind, Auth, CommandError, EkKind, PcrBank,
    Startup, StartupType, Tpm, Transport,
};
use x509_parser::prelude::*;

/// The PCR the flow extends (16 is the debug PCR: resettable, unused by firmware).
pub const PCR: u32 = 16;

/// A `Transport` that counts the frames it carries, so a bus test can prove every command
/// (TPM_RC_RETRY resends included) crossed its model.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    sent: usize,
}

impl<T> Counted<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, sent: 0 }
    }

    /// Command frames handed to the inner transport.
    pub fn sent(&self) -> usize {
        self.sent
    }
}

impl<T: Transport> Transport for Counted<T> {
    type Error = T::Error;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, T::Error> {
        self.sent += 1;
        self.inner.transact(command, response)
    }
}

/// What the flow saw, for path-specific assertions.
#[derive(Debug)]
pub struct FlowReport {
    pub ek_cert_len: usize,
    pub banks: Vec<u16>,
}

pub fn bank_name(alg: u16) -> &'static str {
    match alg {
        ALG_SHA1 => "sha1",
        ALG_SHA256 => "sha256",
        ALG_SHA384 => "sha384",
        ALG_SHA512 => "sha512",
        _ => "unknown",
    }
}

/// H(parts) in the bank `alg`, computed here (RustCrypto), not by the stack under test.
pub fn hash(alg: u16, parts: &[&[u8]]) -> Vec<u8> {
    fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        d.finalize().to_vec()
    }
    match alg {
        ALG_SHA1 => run::<sha1::Sha1>(parts),
        ALG_SHA256 => run::<sha2::Sha256>(parts),
        ALG_SHA384 => run::<sha2::Sha384>(parts),
        ALG_SHA512 => run::<sha2::Sha512>(parts),
        other => panic!("unexpected bank {other:#x}"),
    }
}

/// The digest extended into `alg`'s bank: SHA-512 of the measurement, cut to the bank's size.
fn measurement_digest(alg: u16) -> Option<Vec<u8>> {
    let len = match alg {
        ALG_SHA1 => 20,
        ALG_SHA256 => 32,
        ALG_SHA384 => 48,
        ALG_SHA512 => 64,
        _ => return None,
    };
    Some(sha2::Sha512::digest(b"vouch hil-tests measurement")[..len].to_vec())
}

/// PCR `pcr` of every bank in `banks`, read in one TPM2_PCR_Read.
pub fn read_pcr<T: Transport>(tpm: &mut Tpm<T>, banks: &[u16], pcr: u32) -> Vec<Vec<u8>> {
    let sel: Vec<PcrBank> = banks
        .iter()
        .map(|&alg| PcrBank {
            alg,
            pcrs: 1 << pcr,
        })
        .collect();
    let values = tpm.pcr_read(&sel).expect("PCR_Read");
    assert_eq!(
        values.selection.as_slice(),
        sel.as_slice(),
        "every requested PCR was read"
    );
    values.digests().iter().map(|d| d.to_vec()).collect()
}

/// Runs the whole flow: Startup (and a second one, which the TPM refuses), EK certificate from
/// NV checked against the manufacturer CA, EK re-created from the TCG template and matched
/// against the certificate, an AK of `ak_kind` created and loaded under the EK, a tpm2-tools
/// credential activated (and one for another Name refused), PCR 16 extended in every active
/// bank (each value recomputed), and a quote checked by `tpm2_checkquote` (and rejected with
/// the wrong nonce or stale PCR values).
pub fn attestation_flow<T: Transport>(
    swtpm: &Swtpm,
    tpm: &mut Tpm<T>,
    ak_kind: AkKind,
) -> FlowReport {
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("Startup"),
        Startup::Started,
        "TPM2_Startup(CLEAR) on a TPM nobody started"
    );
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("Startup"),
        Startup::AlreadyStarted,
        "a second Startup answers TPM_RC_INITIALIZE"
    );

    // EK certificate from NV, chained to the manufacturer CA.
    let mut cert = vec![0u8; 4096];
    let n = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut cert)
        .expect("read_ek_certificate");
    cert.truncate(n);
    let ek_cert = check_ek_certificate(swtpm, &cert);

    // Re-create the EK from the TCG template: same key as the certificate's.
    let ek = tpm.create_ek(EkKind::Rsa2048).expect("create_ek");
    let modulus = ek.public.rsa_modulus().expect("RSA EK");
    assert_eq!(modulus.len(), 256);
    assert_eq!(
        modulus,
        ek_cert.modulus.as_slice(),
        "EK public key == EK certificate key"
    );

    // AK under the EK.
    let ak_obj = tpm.create_ak(ek.handle, ak_kind).expect("create_ak");
    let ak = tpm
        .load(ek.handle, Auth::EkPolicy, &ak_obj)
        .expect("load AK");
    assert_eq!(
        ak.name.as_slice().len(),
        34,
        "Name = sha256 alg id + digest"
    );
    assert_eq!(&ak.name[..2], &ALG_SHA256.to_be_bytes());
    assert_eq!(
        &ak.name[2..],
        sha2::Sha256::digest(ak_obj.public.area()).as_slice(),
        "Name = H(TPMT_PUBLIC)"
    );

    // Credential activation with a credential made by tpm2-tools against the certificate's key.
    // The AK is DA-protected: on libtpms its first use after Startup answers TPM_RC_RETRY,
    // which vouch-tpm resends by itself.
    let secret = b"vouch credential secret 0123456";
    let cred = make_credential(swtpm, &ek_cert, &ak.name, secret);
    let recovered = tpm
        .activate_credential(
            ak.handle,
            ek.handle,
            &cred.id_object,
            &cred.encrypted_secret,
        )
        .expect("activate_credential");
    assert_eq!(
        recovered.as_slice(),
        secret,
        "ActivateCredential recovers the secret"
    );
    let mut wrong_name = ak.name.to_vec();
    wrong_name[5] ^= 1;
    let cred2 = make_credential(swtpm, &ek_cert, &wrong_name, secret);
    assert!(
        matches!(
            tpm.activate_credential(
                ak.handle,
                ek.handle,
                &cred2.id_object,
                &cred2.encrypted_secret
            ),
            Err(CommandError::Tpm(_))
        ),
        "a credential bound to another Name must be refused by the TPM"
    );

    // PCR 16 extended in every active bank; every bank's new value recomputed here.
    let banks: Vec<u16> = tpm
        .pcr_banks()
        .expect("pcr_banks")
        .active()
        .map(|b| b.alg)
        .collect();
    assert!(banks.contains(&ALG_SHA256), "sha256 bank active: {banks:?}");
    let before = read_pcr(tpm, &banks, PCR);
    tpm.pcr_extend_active_banks(PCR, |alg, out| {
        let d = measurement_digest(alg)?;
        out.get_mut(..d.len())?.copy_from_slice(&d);
        Some(d.len())
    })
    .expect("pcr_extend_active_banks");
    let after = read_pcr(tpm, &banks, PCR);
    for ((&bank, old), now) in banks.iter().zip(&before).zip(&after) {
        let name = bank_name(bank);
        assert_ne!(now, old, "{name} PCR {PCR} changed");
        let d = measurement_digest(bank).expect("known bank");
        assert_eq!(
            now,
            &hash(bank, &[old, &d]),
            "{name} PCR {PCR} = H(old || digest)"
        );
    }

    // Quote over sha256:PCR, checked by tpm2_checkquote.
    let sha256 = banks.iter().position(|&b| b == ALG_SHA256).expect("sha256");
    let mut nonce = [0u8; 20];
    tpm.get_random(&mut nonce).expect("get_random");
    let sel = [PcrBank {
        alg: ALG_SHA256,
        pcrs: 1 << PCR,
    }];
    let quote = tpm.quote(ak.handle, &nonce, &sel).expect("quote");
    check_quote(
        swtpm,
        ak_obj.public.as_tpm2b(),
        &quote.attest,
        &quote.signature,
        &nonce,
        &after[sha256],
        &before[sha256],
    );

    tpm.flush_context(ak.handle).expect("flush AK");
    tpm.flush_context(ek.handle).expect("flush EK");

    FlowReport {
        ek_cert_len: cert.len(),
        banks,
    }
}

/// An EK certificate that passed [`check_ek_certificate`].
pub struct EkCert {
    /// The RSA modulus, big-endian, without leading zeros.
    pub modulus: Vec<u8>,
    /// The SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
}

/// Parses the EK certificate, checks it is issued by the manufacturer CA's intermediate and
/// chains to its root (`certtool --verify`; and not without the intermediate), and returns
/// its RSA key.
pub fn check_ek_certificate(swtpm: &Swtpm, cert_der: &[u8]) -> EkCert {
    let dir = swtpm.dir();
    let (rest, cert) = X509Certificate::from_der(cert_der).expect("EK cert parses as X.509");
    assert!(rest.is_empty(), "trailing bytes after the EK certificate");
    let inter_pem = std::fs::read(&swtpm.ca().intermediate_cert).expect("intermediate");
    let (_, inter_pem) = parse_x509_pem(&inter_pem).expect("intermediate PEM");
    let inter = inter_pem.parse_x509().expect("intermediate X.509");
    assert_eq!(
        cert.issuer(),
        inter.subject(),
        "EK cert issued by the manufacturer CA"
    );
    let ek_cert_pem = dir.join("ek-cert.pem");
    std::fs::write(&ek_cert_pem, tools::pem("CERTIFICATE", cert_der)).expect("ek-cert.pem");
    let ca = swtpm.ca();
    let verify = tools::verify_chain(dir, &ca.root_cert, &[&ek_cert_pem, &ca.intermediate_cert])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        verify.success,
        "EK certificate does not chain to the manufacturer CA:\n{}",
        verify.output
    );
    let broken =
        tools::verify_chain(dir, &ca.root_cert, &[&ek_cert_pem]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !broken.success,
        "certtool accepted the EK certificate without its intermediate"
    );
    let modulus = match cert.public_key().parsed().expect("EK cert key") {
        x509_parser::public_key::PublicKey::RSA(rsa) => rsa.modulus.to_vec(),
        other => panic!("EK certificate key is not RSA: {other:?}"),
    };
    EkCert {
        modulus: modulus.into_iter().skip_while(|&b| b == 0).collect(),
        spki: cert.public_key().raw.to_vec(),
    }
}

/// `tpm2_makecredential` for the certificate's key and `name`.
pub fn make_credential(
    swtpm: &Swtpm,
    ek: &EkCert,
    name: &[u8],
    secret: &[u8],
) -> tools::Credential {
    let ek_pem = swtpm.dir().join("ek.pem");
    std::fs::write(&ek_pem, tools::pem("PUBLIC KEY", &ek.spki)).expect("ek.pem");
    tools::make_credential(swtpm.dir(), &ek_pem, name, secret).unwrap_or_else(|e| panic!("{e}"))
}

/// `tpm2_checkquote` accepts the quote with the right nonce and PCR value, and rejects it
/// with a wrong nonce or with `stale_pcr`.
pub fn check_quote(
    swtpm: &Swtpm,
    ak_tpm2b_public: &[u8],
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    pcr_value: &[u8],
    stale_pcr: &[u8],
) {
    let dir = swtpm.dir();
    let ak_pub = dir.join("ak.pub");
    let msg = dir.join("quote.msg");
    let sig = dir.join("quote.sig");
    let pcrs = dir.join("quote.pcrs");
    std::fs::write(&ak_pub, ak_tpm2b_public).expect("ak.pub");
    std::fs::write(&msg, attest).expect("msg");
    std::fs::write(&sig, signature).expect("sig");
    std::fs::write(&pcrs, pcr_value).expect("pcrs");
    let list = format!("sha256:{PCR}");
    let files = QuoteFiles {
        ak_public: &ak_pub,
        message: &msg,
        signature: &sig,
        pcrs: &pcrs,
        pcr_list: &list,
    };
    let ok = tools::check_quote(dir, &files, nonce).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok.success,
        "tpm2_checkquote rejected the quote:\n{}",
        ok.output
    );
    let mut bad_nonce = nonce.to_vec();
    bad_nonce[0] ^= 0xFF;
    let bad = tools::check_quote(dir, &files, &bad_nonce).unwrap_or_else(|e| panic!("{e}"));
    assert!(!bad.success, "tpm2_checkquote accepted a wrong nonce");
    std::fs::write(&pcrs, stale_pcr).expect("pcrs");
    let bad = tools::check_quote(dir, &files, nonce).unwrap_or_else(|e| panic!("{e}"));
    assert!(!bad.success, "tpm2_checkquote accepted stale PCR values");
}
