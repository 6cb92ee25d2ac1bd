//! The simulated fleet: a TPM manufacturer CA, the firmware every host booted (its TCG event log
//! and the software version an operator accepts for it), and the hosts, each with its own
//! software TPM and an EK certificate from the CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SignatureAlgorithm,
};
use vouch_agent::measure::BootImage;
use vouch_attest::HashAlg;
use vouch_attest::policy::SoftwareVersion;

use crate::tpm::{self, Ak, Ek, KeyKind, RsaPkcs8};

/// The PCRs the fleet's cluster compares: the firmware image and its configuration.
pub const BOOT_PCRS: [u32; 2] = vouch::image::BOOT_PCRS;
/// The name of the software version the fleet runs.
pub const SOFTWARE_VERSION: &str = "fleet-fw-1";

/// Why the fleet could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TPM: {0}")]
    Tpm(#[from] tpm::TpmError),
    #[error("event log: {0}")]
    EventLog(String),
    #[error("RSA key cache {}: {error}", path.display())]
    Cache {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The TPM manufacturer CA that issues the simulated EK certificates.
#[derive(Debug)]
pub struct Manufacturer {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM, for the cluster's trust.
    pub certificate_pem: String,
}

impl Manufacturer {
    /// A new self-signed CA (ECDSA P-256).
    pub fn new() -> Result<Self, FleetError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Vouch Fleet Simulator TPM CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let certificate_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            params,
            key,
            certificate_pem,
        })
    }

    /// An EK certificate in the TCG profile (empty subject, critical SubjectAltName with the
    /// TPM's manufacturer, model and version, the EK certificate purpose) for `ek`; DER.
    pub fn ek_certificate(&self, ek: &Ek, serial: u64) -> Result<Vec<u8>, FleetError> {
        let mut p = CertificateParams::new(vec![])?;
        p.distinguished_name = DistinguishedName::new();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![match ek.kind() {
            KeyKind::Rsa => KeyUsagePurpose::KeyEncipherment,
            KeyKind::Ecc => KeyUsagePurpose::KeyAgreement,
        }];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
        p.custom_extensions = vec![tpm_san("id:56534D31", "VouchSim", "id:00010000")];
        p.serial_number = Some(serial.to_be_bytes().to_vec().into());
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let key = EkPublicKey {
            der: ek.certificate_key(),
            alg: match ek.kind() {
                KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
                KeyKind::Ecc => &rcgen::PKCS_ECDSA_P256_SHA256,
            },
        };
        Ok(p.signed_by(&key, &issuer)?.der().to_vec())
    }
}

/// An EK's public key for rcgen.
struct EkPublicKey {
    der: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for EkPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

fn der_len(n: usize) -> Vec<u8> {
    match u8::try_from(n) {
        Ok(b) if b < 0x80 => vec![b],
        Ok(b) => vec![0x81, b],
        Err(_) => {
            let mut v = vec![0x82];
            v.extend_from_slice(&u16::try_from(n).unwrap_or(0).to_be_bytes());
            v
        }
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(body.len()));
    v.extend_from_slice(body);
    v
}

/// SubjectAltName with a directoryName of TPM manufacturer, model and version (2.23.133.2.1–3).
fn tpm_san(manufacturer: &str, model: &str, version: &str) -> CustomExtension {
    let attr = |last: u8, v: &str| {
        let oid = tlv(0x06, &[0x67, 0x81, 0x05, 0x02, last]);
        let val = tlv(0x0c, v.as_bytes());
        tlv(0x31, &tlv(0x30, &[oid, val].concat()))
    };
    let name = tlv(
        0x30,
        &[attr(1, manufacturer), attr(2, model), attr(3, version)].concat(),
    );
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 17], tlv(0x30, &tlv(0xa4, &name)));
    ext.set_criticality(true);
    ext
}

/// What every host booted: its event log, the PCR values it replays to, and the software
/// version an operator accepts for it.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The TCG crypto-agile event log (SHA-1, SHA-256 and SHA-384 banks).
    pub event_log: Vec<u8>,
    /// The replayed values of the log.
    pub pcrs: vouch_attest::PcrValues,
    /// The reference values, as `vouch image add` derives them.
    pub version: SoftwareVersion,
}

impl Boot {
    /// The firmware's measured boot, as the agent performs it.
    pub fn new() -> Result<Self, FleetError> {
        let image: &[u8] = b"vouch fleet simulator firmware image 1";
        let parts: [&[u8]; 1] = [image];
        let boot = BootImage {
            version: b"vouch-fleet 1",
            image: &parts,
            base: 0x1000_0000,
            config: b"fleet=1",
        };
        let event_log = vouch::image::boot_event_log(&boot).map_err(FleetError::EventLog)?;
        let parsed = vouch_attest::eventlog::parse(&event_log)
            .map_err(|e| FleetError::EventLog(e.to_string()))?;
        let pcrs = parsed.replay().pcrs;
        let version = SoftwareVersion::from_event_log(SOFTWARE_VERSION, &parsed, &BOOT_PCRS);
        Ok(Self {
            event_log,
            pcrs,
            version,
        })
    }

    /// The PCR-values payload for a selection: per bank in order, the selected PCRs ascending.
    pub fn pcr_values(&self, selection: &[(u16, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(alg, bitmap) in selection {
            let Some(hash) = HashAlg::from_id(alg) else {
                continue;
            };
            for pcr in (0..24u32).filter(|p| bitmap & (1 << p) != 0) {
                match self.pcrs.get(hash, pcr) {
                    Some(v) => out.extend_from_slice(v),
                    None => out.extend(vouch_attest::pcr::initial_value(hash, pcr, 0)),
                }
            }
        }
        out
    }
}

/// One simulated host.
#[derive(Debug)]
pub struct Host {
    /// `host-N`.
    pub name: String,
    pub ek: Ek,
    pub ak: Ak,
    /// The EK's TPM2B_PUBLIC.
    pub ek_public: Vec<u8>,
    /// The AK's TPM2B_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The AK's Name.
    pub ak_name: Vec<u8>,
    /// The EK certificate, DER.
    pub ek_certificate: Vec<u8>,
}

/// RSA key pairs generated once and kept under a directory (PKCS#8 files), since generating
/// one takes ~0.1 s: a fleet of 100,000 would spend minutes on it.
#[derive(Debug)]
pub struct RsaCache {
    keys: Vec<RsaPkcs8>,
}

impl RsaCache {
    /// At least `count` RSA-2048 key pairs from `dir` (made and saved when missing).
    pub fn load(dir: &Path, count: usize) -> Result<Self, FleetError> {
        let cache = |error| FleetError::Cache {
            path: dir.to_owned(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(cache)?;
        let mut keys = Vec::with_capacity(count);
        for i in 0..count {
            let path = dir.join(format!("rsa2048-{i}.pk8"));
            match std::fs::read(&path) {
                Ok(der) if tpm::Ak::rsa(&der).is_ok() => keys.push(der),
                _ => {
                    let der = tpm::generate_rsa()?;
                    std::fs::write(&path, &der).map_err(cache)?;
                    keys.push(der);
                }
            }
        }
        Ok(Self { keys })
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.keys.get(i).map(Vec::as_slice)
    }
}

/// How many hosts have an RSA EK (and, separately, an RSA AK): one in 20, at most the cache.
pub fn rsa_hosts(hosts: usize, cache_size: usize) -> usize {
    (hosts / 20).min(cache_size)
}

/// Host `index` of the fleet: an RSA EK for the first `rsa` hosts, an RSA AK for the last
/// `rsa` (so the mix has every combination once the fleet has 40 hosts), ECC otherwise.
pub fn host(
    index: usize,
    hosts: usize,
    rsa: &RsaCache,
    rsa_count: usize,
    ca: &Manufacturer,
) -> Result<Host, FleetError> {
    let ek = match rsa.get(index).filter(|_| index < rsa_count) {
        Some(der) => Ek::rsa(der)?,
        None => Ek::ecc()?,
    };
    let from_end = hosts.saturating_sub(index + 1);
    // The AK uses the cache from its other end, so no host has the same RSA key twice.
    let ak = match rsa
        .keys
        .len()
        .checked_sub(from_end + 1)
        .and_then(|i| rsa.get(i))
        .filter(|_| from_end < rsa_count)
    {
        Some(der) => Ak::rsa(der)?,
        None => Ak::ecc()?,
    };
    let ek_tpmt = ek.tpmt_public();
    let ak_tpmt = ak.tpmt_public();
    let ek_certificate = ca.ek_certificate(&ek, u64::try_from(index).unwrap_or(0) + 1)?;
    Ok(Host {
        name: format!("host-{index}"),
        ek_public: tpm::tpm2b_public(&ek_tpmt),
        ak_public: tpm::tpm2b_public(&ak_tpmt),
        ak_name: tpm::name(&ak_tpmt),
        ek_certificate,
        ek,
        ak,
    })
}

/// PEM of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
