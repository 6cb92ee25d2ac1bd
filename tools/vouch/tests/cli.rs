//! The `vouch` binary's interface, exactly as other tooling relies on it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn vouch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(args)
        .output()
        .unwrap()
}

fn shared(rel: &str) -> String {
    format!("{}/../../testdata/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn quotes(rel: &str) -> String {
    format!(
        "{}/../../verifier/attest/tests/data/quotes/{rel}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn eventlog_replay_json_matches_tpm2_tools() {
    let o = vouch(&[
        "eventlog",
        "replay",
        &shared("eventlogs/tpm2-tools/event-uefivar.bin"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["banks"]["sha256"]["7"],
        "e58ada1ba75f2e4722b539824598ad5e10c55f2e4aeab2033f3b0a8ee3f3eca6"
    );
    assert_eq!(
        v["banks"]["sha1"]["7"],
        "3a1ea200b8fafe60c290e903c5e6443cfef67f04"
    );
    assert_eq!(v.as_object().unwrap().len(), 1);
}

#[test]
fn eventlog_replay_every_bank_and_pcr() {
    let o = vouch(&[
        "eventlog",
        "replay",
        &shared("eventlogs/tpm2-tools/event-gce-ubuntu-2104-log.bin"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let banks = v["banks"].as_object().unwrap();
    assert_eq!(
        banks.keys().collect::<Vec<_>>(),
        vec!["sha1", "sha256", "sha384"]
    );
    for (_, b) in banks {
        let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            vec!["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "14"]
        );
    }
}

#[test]
fn malformed_log_exits_2_with_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(shared("eventlogs/tpm2-tools/event-uefivar.bin")).unwrap();
    let path = dir.path().join("cut.bin");
    std::fs::write(&path, &bytes[..100]).unwrap();
    let o = vouch(&["eventlog", "replay", path.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("byte offset 91"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let o = vouch(&["eventlog", "replay", "/nonexistent/log.bin"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn eventlog_show_prints_events() {
    let o = vouch(&[
        "eventlog",
        "show",
        &shared("eventlogs/tpm2-tools/event-uefiaction.bin"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(s.contains("EV_EFI_ACTION"), "{s}");
    assert!(s.contains("Calling EFI Application from Boot Option"));
    assert!(s.contains("crypto-agile"));
}

fn quote_args(name: &str) -> Vec<String> {
    vec![
        "quote".into(),
        "verify".into(),
        "--ak-public".into(),
        quotes(&format!("{name}.ak.pub")),
        "--quote".into(),
        quotes(&format!("{name}.quote")),
        "--signature".into(),
        quotes(&format!("{name}.sig")),
        "--pcrs".into(),
        quotes(&format!("{name}.pcrs")),
    ]
}

fn run(args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    vouch(&a)
}

#[test]
fn quote_verify_valid() {
    for name in [
        "ecc256-sha256",
        "ecc384-sha384",
        "rsa2048-sha256",
        "rsa2048-sha1",
        "rsapss2048-sha256",
    ] {
        let mut a = quote_args(name);
        a.extend(["--nonce".into(), "0011223344556677".into()]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        assert_eq!(stdout(&o), "valid\n");
    }
}

#[test]
fn quote_verify_pem_ak_and_hash() {
    let mut a = quote_args("ecc384-sha384");
    a[3] = quotes("ecc384-sha384.ak.pem");
    a.extend([
        "--nonce".into(),
        "0011223344556677".into(),
        "--hash".into(),
        "sha384".into(),
    ]);
    assert_eq!(run(&a).status.code(), Some(0));
    let n = a.len();
    a[n - 1] = "sha256".into();
    let o = run(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("signature scheme check failed"));
}

#[test]
fn quote_verify_names_the_failed_check() {
    let mut a = quote_args("ecc256-sha256");
    a.extend(["--nonce".into(), "ffff".into()]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nonce check failed"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());

    // Another TPM's PCR file.
    let mut a = quote_args("ecc256-sha256");
    a[9] = quotes("gce-ecc256.pcrs");
    let o = run(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("PCR"), "{}", stderr(&o));

    // A tampered signature.
    let dir = tempfile::tempdir().unwrap();
    let mut sig = std::fs::read(quotes("rsa2048-sha256.sig")).unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let p = dir.path().join("sig");
    std::fs::write(&p, sig).unwrap();
    let mut a = quote_args("rsa2048-sha256");
    a[7] = p.to_str().unwrap().into();
    let o = run(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("signature check failed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn quote_verify_with_real_event_log() {
    for ak in ["gce-ecc256", "gce-rsa2048"] {
        let mut a = quote_args(ak);
        a.extend([
            "--nonce".into(),
            "5eed".into(),
            "--eventlog".into(),
            shared("eventlogs/tpm2-tools/event-gce-ubuntu-2104-log.bin"),
        ]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "valid\n");
    }
    let mut a = quote_args("gce-ecc256");
    a.extend([
        "--nonce".into(),
        "5eed".into(),
        "--eventlog".into(),
        shared("eventlogs/tpm2-tools/event-bootorder.bin"),
    ]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("event-log check failed: PCR"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pcrread_values_file_is_accepted() {
    // tpm2_pcrread -o values of the same TPM as the rsapss quote.
    let mut a = quote_args("rsapss2048-sha256");
    a[9] = quotes("pcrread-sha1-sha256.pcrs");
    a.extend(["--nonce".into(), "0011223344556677".into()]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn help_and_usage() {
    let o = vouch(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("eventlog"));
    let o = vouch(&["quote", "verify"]);
    assert_eq!(o.status.code(), Some(2));
    let _ = PathBuf::new();
}

fn ekdata(rel: &str) -> String {
    format!(
        "{}/../../verifier/attest/tests/data/ek/{rel}",
        env!("CARGO_MANIFEST_DIR")
    )
}

const AT: &str = "1798761600"; // 2027-01-01

#[test]
fn ek_verify_swtpm_chain_json() {
    let o = vouch(&[
        "ek",
        "verify",
        &ekdata("ek-rsa2048.crt"),
        "--ca",
        &ekdata("swtpm-localca-root.pem"),
        "--intermediate",
        &ekdata("swtpm-localca-issuer.pem"),
        "--ek-public",
        &ekdata("ek-rsa2048.pub"),
        "--at",
        AT,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["manufacturer"], "id:00001014");
    assert_eq!(v["model"], "swtpm");
    assert_eq!(v["version"], "id:20191023");
}

#[test]
fn ek_verify_with_a_ca_directory_and_multiple_cas() {
    // The issuing CA trusted directly, among the real vendor CAs.
    let o = vouch(&[
        "ek",
        "verify",
        &ekdata("ek-secp384r1.crt"),
        "--ca",
        &shared("ek-ca/keylime-tpm_cert_store"),
        "--ca",
        &ekdata("swtpm-localca-issuer.pem"),
        "--at",
        AT,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("valid"));
}

#[test]
fn ek_verify_refusals_exit_1_with_reason() {
    // Not issued by any of the real vendor CAs.
    let o = vouch(&[
        "ek",
        "verify",
        &ekdata("ek-rsa2048.crt"),
        "--ca",
        &shared("ek-ca/keylime-tpm_cert_store"),
        "--at",
        AT,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no chain to a trusted CA"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--ca"), "{}", stderr(&o));
    // The presented EK public is not the certificate's key.
    let o = vouch(&[
        "ek",
        "verify",
        &ekdata("ek-secp384r1.crt"),
        "--ca",
        &ekdata("swtpm-localca-issuer.pem"),
        "--ek-public",
        &ekdata("ek-ecc256-not-the-certified-key.pub"),
        "--at",
        AT,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["reason"].as_str().unwrap().contains("not the key"));
    // Before the certificates' validity.
    let o = vouch(&[
        "ek",
        "verify",
        &ekdata("ek-rsa2048.crt"),
        "--ca",
        &ekdata("swtpm-localca-issuer.pem"),
        "--at",
        "1600000000",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not valid before"));
    // Missing --ca is a usage error.
    let o = vouch(&["ek", "verify", &ekdata("ek-rsa2048.crt")]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn credential_make_writes_tpm2_tools_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cred.bin");
    let o = vouch(&[
        "credential",
        "make",
        "--ek-public",
        &quotes("ek-rsa.pub"),
        "--ak-public",
        &quotes("ecc256-sha256.ak.pub"),
        "--secret",
        "00112233445566778899aabbccddeeff",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let b = std::fs::read(&out).unwrap();
    assert_eq!(&b[..8], &[0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1]);
    // TPM2B_ID_OBJECT (2 + 2 + 32 + 2 + 16) then TPM2B_ENCRYPTED_SECRET (2 + 256).
    assert_eq!(&b[8..10], &[0, 52]);
    assert_eq!(b.len(), 8 + 2 + 52 + 2 + 256);
    // An EK as the AK is refused.
    let o = vouch(&[
        "credential",
        "make",
        "--ek-public",
        &quotes("ek-rsa.pub"),
        "--ak-public",
        &quotes("ek-rsa.pub"),
        "--secret",
        "00",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("AK refused"), "{}", stderr(&o));
}

#[test]
fn version_completions_and_man_pages_come_from_the_command_line() {
    let o = vouch(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("vouch {}", env!("CARGO_PKG_VERSION"))
    );

    let o = vouch(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    assert!(script.contains("from-eventlog"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vouch.bash");
    std::fs::write(&file, &script).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(parsed.status.success(), "{}", stderr(&parsed));
    for shell in ["zsh", "fish"] {
        let o = vouch(&["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
    let o = vouch(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));

    let man = dir.path().join("man1");
    let o = vouch(&["manpages", man.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(man.join("vouch.1")).unwrap();
    assert!(page.contains(".TH vouch 1"), "{page}");
    let sub = std::fs::read_to_string(man.join("vouch-software-from-eventlog.1")).unwrap();
    assert!(sub.contains("\\-\\-bank"), "{sub}");
}
