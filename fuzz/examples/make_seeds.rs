//! Writes the seed corpora: `cargo run --release --example make_seeds` (from `fuzz/`). Seeds
//! come from the project's test data and from the builders in `vouch_fuzz::seeds`.

use std::fs;
use std::path::Path;

/// Test data files that seed a target, relative to the repository root.
const FILES: &[(&str, &str)] = &[
    (
        "tpm_structures",
        "verifier/attest/tests/data/quotes/ecc256-sha256.quote",
    ),
    (
        "tpm_structures",
        "verifier/attest/tests/data/quotes/ecc384-sha384.sig",
    ),
    (
        "tpm_structures",
        "verifier/attest/tests/data/quotes/rsa2048-sha256.sig",
    ),
    (
        "tpm_structures",
        "verifier/attest/tests/data/quotes/rsapss2048-sha256.ak.pub",
    ),
    (
        "tpm_structures",
        "verifier/attest/tests/data/quotes/ecc384-sha384.ak.pub",
    ),
    (
        "tpm_structures",
        "verifier/attest/tests/data/ek/ek-rsa2048.pub",
    ),
    (
        "pcr_files",
        "verifier/attest/tests/data/quotes/ecc256-sha256.pcrs",
    ),
    (
        "pcr_files",
        "verifier/attest/tests/data/quotes/ecc384-sha384.pcrs",
    ),
    (
        "pcr_files",
        "verifier/attest/tests/data/quotes/rsapss2048-sha256.pcrs",
    ),
    (
        "ek_certificate",
        "verifier/attest/tests/data/ek/ek-rsa2048.crt",
    ),
    (
        "ek_certificate",
        "verifier/attest/tests/data/ek/ek-secp384r1.crt",
    ),
    ("ek_certificate", "verifier/attest/tests/data/ek/pss-ek.der"),
    (
        "ek_certificate",
        "verifier/attest/tests/data/ek/swtpm-localca-issuer.pem",
    ),
    (
        "ek_certificate",
        "verifier/attest/tests/data/ek/pss-root.pem",
    ),
];

fn main() -> std::io::Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.parent().unwrap_or(fuzz);
    let mut written = 0;
    for (target, path) in FILES {
        let name = Path::new(path).file_name().unwrap_or_default();
        let dir = fuzz.join("corpus").join(target);
        fs::create_dir_all(&dir)?;
        fs::copy(root.join(path), dir.join(name))?;
        written += 1;
    }
    // PyKMIP's encodings, pinned in vouch-kmip's golden tests.
    let golden = fs::read_to_string(root.join("verifier/kmip/tests/ttlv_golden.rs"))?;
    for line in golden.lines() {
        let Some((name, hex)) = line
            .strip_prefix("const PYKMIP_")
            .and_then(|rest| rest.split_once(": &str = \""))
        else {
            continue;
        };
        let hex = hex.trim_end_matches("\";");
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        let name = format!("pykmip-{}", name.to_lowercase().replace('_', "-"));
        for target in ["kmip_ttlv", "kmip_responses"] {
            let dir = fuzz.join("corpus").join(target);
            fs::create_dir_all(&dir)?;
            fs::write(dir.join(&name), &bytes)?;
            written += 1;
        }
    }
    for (target, name, bytes) in vouch_fuzz::seeds::generated() {
        let dir = fuzz.join("corpus").join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        written += 1;
    }
    println!(
        "wrote {written} seeds under {}",
        fuzz.join("corpus").display()
    );
    Ok(())
}
