//! The attestation flow every path runs, written once over `vouch_tpm::Transport`.
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
use hil_tests::tpm::{self, PcrSelection, PublicArea, RH_ENDORSEMENT, Tpm, alg};
use sha2::Digest;
use vouch_tpm::Transport;
use x509_parser::prelude::*;

/// The PCR the flow extends (16 is the debug PCR: resettable, unused by firmware).
pub const PCR: u8 = 16;

/// What the flow saw, for path-specific assertions.
#[derive(Debug)]
pub struct FlowReport {
    pub ek_cert_len: usize,
    pub banks: Vec<u16>,
}

fn bank_name(hash: u16) -> &'static str {
    match hash {
        alg::SHA1 => "sha1",
        alg::SHA256 => "sha256",
        alg::SHA384 => "sha384",
        alg::SHA512 => "sha512",
        _ => "unknown",
    }
}

fn extend(hash: u16, old: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        alg::SHA1 => {
            // sha1 via the sha2 crate is not available; compute by the TPM's own read-back
            // instead (see the caller). Here only SHA-2 banks are computed.
            unreachable!("sha1 handled by caller")
        }
        alg::SHA256 => sha2::Sha256::new()
            .chain_update(old)
            .chain_update(data)
            .finalize()
            .to_vec(),
        alg::SHA384 => sha2::Sha384::new()
            .chain_update(old)
            .chain_update(data)
            .finalize()
            .to_vec(),
        alg::SHA512 => sha2::Sha512::new()
            .chain_update(old)
            .chain_update(data)
            .finalize()
            .to_vec(),
        other => panic!("unexpected bank {other:#x}"),
    }
}

/// Runs the whole flow: Startup, EK certificate from NV, EK re-created and matched against the
/// certificate (and the certificate against the manufacturer CA), AK created and loaded under
/// the EK, a tpm2-tools credential activated, PCR 16 extended in every active bank, and a
/// quote checked by `tpm2_checkquote` (and rejected with the wrong nonce).
pub fn attestation_flow<T: Transport>(swtpm: &Swtpm, tpm: &mut Tpm<T>) -> FlowReport {
    assert_eq!(
        tpm.startup_clear().expect("startup"),
        0,
        "TPM2_Startup(CLEAR)"
    );

    // EK certificate from NV, chained to the manufacturer CA.
    let cert_der = tpm
        .nv_read_all(tpm::NV_EK_CERT_RSA, 512)
        .expect("read EK cert");
    let ek_cert = check_ek_certificate(swtpm, &cert_der);
    let cert_modulus = ek_cert.modulus.clone();

    // Re-create the EK from the TCG template: same key as the certificate's.
    let (ek, ek_public) = tpm
        .create_primary(RH_ENDORSEMENT, &tpm::ek_rsa2048_template())
        .expect("CreatePrimary(EK)");
    let ek_area = PublicArea::parse(&ek_public).expect("EK public");
    assert_eq!(ek_area.rsa_modulus.len(), 256);
    assert_eq!(
        ek_area.rsa_modulus, cert_modulus,
        "EK public key == EK certificate key"
    );

    // AK under the EK.
    let ak_key = tpm
        .create_under_ek(ek, &tpm::ak_rsa2048_template())
        .expect("Create(AK) under the EK");
    let (ak, ak_name) = tpm.load_under_ek(ek, &ak_key).expect("Load(AK)");
    assert_eq!(ak_name.len(), 34, "AK name = sha256 alg id + digest");
    assert_eq!(&ak_name[..2], &alg::SHA256.to_be_bytes());
    let expected_name = sha2::Sha256::digest(&ak_key.public);
    assert_eq!(
        &ak_name[2..],
        expected_name.as_slice(),
        "name = H(TPMT_PUBLIC)"
    );

    // Credential activation with a credential made by tpm2-tools against the certificate's key.
    let secret = b"vouch credential secret 0123456";
    let cred = make_credential(swtpm, &ek_cert, &ak_name, secret);
    let recovered = tpm
        .activate_credential(ak, ek, &cred.id_object, &cred.encrypted_secret)
        .expect("ActivateCredential");
    assert_eq!(recovered, secret, "ActivateCredential recovers the secret");
    // A credential for another name must not activate.
    let mut wrong_name = ak_name.clone();
    wrong_name[5] ^= 1;
    let cred2 = make_credential(swtpm, &ek_cert, &wrong_name, secret);
    assert!(
        tpm.activate_credential(ak, ek, &cred2.id_object, &cred2.encrypted_secret)
            .is_err(),
        "a credential bound to another name must fail"
    );

    // PCR extend in every active bank.
    let banks = tpm.pcr_banks().expect("PCR banks");
    assert!(
        banks.contains(&alg::SHA256),
        "sha256 bank active: {banks:?}"
    );
    let measurement = b"vouch hil-tests measurement";
    let digests: Vec<(u16, Vec<u8>)> = banks
        .iter()
        .map(|&b| {
            let len = alg::digest_len(b).expect("known bank");
            let d: Vec<u8> = sha2::Sha512::digest(measurement)[..len].to_vec();
            (b, d)
        })
        .collect();
    let before: Vec<Vec<u8>> = banks
        .iter()
        .map(|&b| tpm.pcr_read(b, PCR).expect("PCR_Read"))
        .collect();
    tpm.pcr_extend(u32::from(PCR), &digests)
        .expect("PCR_Extend");
    for ((bank, digest), old) in digests.iter().zip(&before) {
        let now = tpm.pcr_read(*bank, PCR).expect("PCR_Read");
        assert_ne!(&now, old, "{} PCR {PCR} changed", bank_name(*bank));
        if *bank != alg::SHA1 {
            assert_eq!(
                now,
                extend(*bank, old, digest),
                "{} PCR {PCR} = H(old || digest)",
                bank_name(*bank)
            );
        }
    }

    // Quote over sha256:PCR, checked by tpm2_checkquote.
    let nonce = tpm.get_random(20).expect("nonce");
    let sel = [PcrSelection {
        hash: alg::SHA256,
        pcrs: vec![PCR],
    }];
    let quote = tpm.quote(ak, &nonce, &sel).expect("Quote");
    let pcr_value = tpm.pcr_read(alg::SHA256, PCR).expect("PCR_Read");
    let mut tpm2b_public = u16::try_from(ak_key.public.len())
        .expect("size")
        .to_be_bytes()
        .to_vec();
    tpm2b_public.extend_from_slice(&ak_key.public);
    let sha256_before = &before[banks
        .iter()
        .position(|&b| b == alg::SHA256)
        .expect("sha256")];
    check_quote(
        swtpm,
        &tpm2b_public,
        &quote.attest,
        &quote.signature,
        &nonce,
        &pcr_value,
        sha256_before,
    );

    tpm.flush(ak).expect("flush AK");
    tpm.flush(ek).expect("flush EK");

    FlowReport {
        ek_cert_len: cert_der.len(),
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

/// What [`vouch_flow`] observed.
#[derive(Debug)]
pub struct VouchReport {
    /// Active PCR banks.
    pub banks: Vec<u16>,
}

/// The same attestation flow through vouch-tpm's own command layer (`vouch_tpm::Tpm`), with
/// an AK of `ak_kind`, judged by the same outside tools: x509-parser + certtool for the EK
/// certificate, tpm2_makecredential for the credential, tpm2_checkquote for the quote.
pub fn vouch_flow<T: Transport>(
    swtpm: &Swtpm,
    tpm: &mut vouch_tpm::Tpm<T>,
    ak_kind: vouch_tpm::AkKind,
) -> VouchReport {
    use vouch_tpm::{Auth, EkKind, PcrBank, Startup, StartupType};

    assert_eq!(
        tpm.startup(StartupType::Clear).expect("Startup"),
        Startup::Started
    );
    assert_eq!(
        tpm.startup(StartupType::Clear).expect("Startup"),
        Startup::AlreadyStarted
    );

    let mut cert = vec![0u8; 4096];
    let n = tpm
        .read_ek_certificate(EkKind::Rsa2048, &mut cert)
        .expect("read_ek_certificate");
    cert.truncate(n);
    let ek_cert = check_ek_certificate(swtpm, &cert);

    let ek = tpm.create_ek(EkKind::Rsa2048).expect("create_ek");
    let modulus = ek.public.rsa_modulus().expect("RSA EK");
    assert_eq!(
        modulus,
        ek_cert.modulus.as_slice(),
        "EK == EK certificate key"
    );

    let ak_obj = tpm.create_ak(ek.handle, ak_kind).expect("create_ak");
    let ak = tpm
        .load(ek.handle, Auth::EkPolicy, &ak_obj)
        .expect("load AK");
    let expected_name = sha2::Sha256::digest(ak_obj.public.area());
    assert_eq!(&ak.name[..2], &alg::SHA256.to_be_bytes());
    assert_eq!(
        &ak.name[2..],
        expected_name.as_slice(),
        "Name = H(TPMT_PUBLIC)"
    );

    let secret = b"vouch credential secret 0123456";
    let cred = make_credential(swtpm, &ek_cert, &ak.name, secret);
    // The AK is DA-protected: on libtpms its first use after Startup answers TPM_RC_RETRY,
    // which vouch-tpm must resend by itself.
    let recovered = tpm
        .activate_credential(
            ak.handle,
            ek.handle,
            &cred.id_object,
            &cred.encrypted_secret,
        )
        .expect("activate_credential");
    assert_eq!(&recovered[..], secret, "credential secret recovered");
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
            Err(vouch_tpm::CommandError::Tpm(_))
        ),
        "a credential for another Name must be refused by the TPM"
    );

    let banks: Vec<u16> = tpm
        .pcr_banks()
        .expect("pcr_banks")
        .active()
        .map(|b| b.alg)
        .collect();
    let sel = [PcrBank {
        alg: alg::SHA256,
        pcrs: 1 << PCR,
    }];
    let before = tpm.pcr_read(&sel).expect("pcr_read").digests()[0].to_vec();
    let measurement = b"vouch hil-tests measurement";
    tpm.pcr_extend_active_banks(u32::from(PCR), |bank, out| {
        let len = alg::digest_len(bank)?;
        out.get_mut(..len)?
            .copy_from_slice(&sha2::Sha512::digest(measurement)[..len]);
        Some(len)
    })
    .expect("pcr_extend_active_banks");
    let after = tpm.pcr_read(&sel).expect("pcr_read").digests()[0].to_vec();
    let d = &sha2::Sha512::digest(measurement)[..32];
    assert_eq!(
        after,
        extend(alg::SHA256, &before, d),
        "sha256 PCR = H(old || digest)"
    );

    let mut nonce = [0u8; 20];
    tpm.get_random(&mut nonce).expect("get_random");
    let quote = tpm.quote(ak.handle, &nonce, &sel).expect("quote");
    check_quote(
        swtpm,
        ak_obj.public.as_tpm2b(),
        &quote.attest,
        &quote.signature,
        &nonce,
        &after,
        &before,
    );

    tpm.flush_context(ak.handle).expect("flush AK");
    tpm.flush_context(ek.handle).expect("flush EK");
    VouchReport { banks }
}
