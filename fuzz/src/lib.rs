//! What several fuzz targets share: splitting one input into parts, the fixtures they decode
//! against, and the fake TPM the agent target runs on. The seed corpora under `corpus/` are
//! written by `cargo run --release --example make_seeds` from the builders here.

pub mod fake_tpm;
pub mod seeds;

/// Splits `data` in two: the first byte says where (as a fraction of the rest), so a mutation
/// of one byte moves the boundary and every other byte stays in its part.
#[must_use]
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let at = rest.len() * usize::from(first) / 255;
    rest.split_at(at.min(rest.len()))
}

/// A payload kind from one input byte (the chunk reassembly targets).
#[must_use]
pub fn blob_kind(b: u8) -> vouch_proto::wire::BlobKind {
    use vouch_proto::wire::BlobKind;
    match b % 3 {
        0 => BlobKind::EkCertificate,
        1 => BlobKind::EventLog,
        _ => BlobKind::PcrValues,
    }
}

/// The attestation core's fixtures, from `verifier/attest/tests/data`.
pub mod fixtures {
    /// swtpm's local CA root (PEM), which issued `ISSUER`.
    pub const ROOT_PEM: &[u8] =
        include_bytes!("../../verifier/attest/tests/data/ek/swtpm-localca-root.pem");
    /// swtpm's local CA intermediate (PEM), which issued `EK_RSA`.
    pub const ISSUER_PEM: &[u8] =
        include_bytes!("../../verifier/attest/tests/data/ek/swtpm-localca-issuer.pem");
    /// An RSA-2048 EK certificate (DER) issued by `ISSUER_PEM`.
    pub const EK_RSA: &[u8] = include_bytes!("../../verifier/attest/tests/data/ek/ek-rsa2048.crt");
    /// The TPM2B_PUBLIC of the key `EK_RSA` certifies.
    pub const EK_RSA_PUBLIC: &[u8] =
        include_bytes!("../../verifier/attest/tests/data/ek/ek-rsa2048.pub");
    /// A time at which the swtpm certificates are valid (2027-01-01).
    pub const NOW: i64 = 1_798_761_600;
    /// An ECC P-256 AK (TPM2B_PUBLIC) and a quote it signed.
    pub const AK_ECC: &[u8] =
        include_bytes!("../../verifier/attest/tests/data/quotes/ecc256-sha256.ak.pub");
    /// An RSA-2048 AK (TPM2B_PUBLIC).
    pub const AK_RSA: &[u8] =
        include_bytes!("../../verifier/attest/tests/data/quotes/rsa2048-sha256.ak.pub");
}
