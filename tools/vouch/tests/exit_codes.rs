//! The exit codes of every offline command for every class of input, as `README.md` documents
//! them: 0 ok, 1 refused, 2 unreadable input or output. One table; every cell runs the built
//! binary. A cell that does not apply says why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where standard output and standard error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// Captured.
    Pipe,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose reader is closed: every write fails with EPIPE.
    Closed,
}

/// A class of input and where the output goes.
#[derive(Debug, Clone, Copy)]
enum Class {
    Ok,
    Refused,
    Malformed,
    Missing,
    /// The ok input, standard output on `/dev/full`.
    StdoutFull,
    /// The ok input, standard output a closed pipe.
    StdoutClosed,
    /// The malformed input, standard error a closed pipe.
    StderrClosed,
}

const CLASSES: [Class; 7] = [
    Class::Ok,
    Class::Refused,
    Class::Malformed,
    Class::Missing,
    Class::StdoutFull,
    Class::StdoutClosed,
    Class::StderrClosed,
];

/// A cell: the arguments, or why the class does not apply to the command.
enum Cell {
    Run(Vec<String>, i32),
    NotApplicable(&'static str),
}

fn repo(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn shared(rel: &str) -> String {
    format!("{}/../../testdata/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn quotes(rel: &str) -> String {
    repo(&format!("verifier/attest/tests/data/quotes/{rel}"))
}

fn ekdata(rel: &str) -> String {
    repo(&format!("verifier/attest/tests/data/ek/{rel}"))
}

/// 2027-01-01, when the swtpm EK certificates are valid.
const AT: &str = "1798761600";
const MISSING: &str = "/nonexistent/vouch-test-input";

struct Inputs {
    _dir: tempfile::TempDir,
    /// Bytes that are nothing: not X.509, not TPM structures, not an event log.
    garbage: String,
    /// An ELF header followed by garbage.
    bad_elf: String,
    /// A raw firmware image.
    raw_image: String,
    /// Where `credential make` writes.
    credential: String,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let garbage = path("garbage");
    std::fs::write(&garbage, b"this is not X.509 at all\n").unwrap();
    let bad_elf = path("bad.elf");
    std::fs::write(&bad_elf, b"\x7fELF\x01\x01\x01garbage").unwrap();
    let raw_image = path("image.bin");
    std::fs::write(&raw_image, [0x5A; 1024]).unwrap();
    let credential = path("credential.bin");
    Inputs {
        garbage,
        bad_elf,
        raw_image,
        credential,
        _dir: dir,
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn quote_verify(quote: &str, nonce: &str) -> Vec<String> {
    args(&[
        "quote",
        "verify",
        "--ak-public",
        &quotes("ecc256-sha256.ak.pub"),
        "--quote",
        quote,
        "--signature",
        &quotes("ecc256-sha256.sig"),
        "--pcrs",
        &quotes("ecc256-sha256.pcrs"),
        "--nonce",
        nonce,
    ])
}

fn ek_verify(cert: &str, at: &str, json: bool) -> Vec<String> {
    let mut a = args(&[
        "ek",
        "verify",
        cert,
        "--ca",
        &ekdata("swtpm-localca-root.pem"),
        "--intermediate",
        &ekdata("swtpm-localca-issuer.pem"),
        "--at",
        at,
    ]);
    if json {
        a.push("--json".into());
    }
    a
}

fn credential_make(ek: &str, ak: &str, out: &str) -> Vec<String> {
    args(&[
        "credential",
        "make",
        "--ek-public",
        ek,
        "--ak-public",
        ak,
        "--secret",
        "00112233445566778899aabbccddeeff",
        "-o",
        out,
    ])
}

fn image_add(file: &str) -> Vec<String> {
    args(&[
        "image",
        "add",
        file,
        "--version",
        "1.0",
        "--agent-version",
        "vouch 0.1.0",
        "--config",
        "board=test",
    ])
}

fn from_eventlog(file: &str) -> Vec<String> {
    args(&["software", "from-eventlog", file, "--version", "1.0"])
}

/// The table: for each command, its cell in each class.
fn table(i: &Inputs) -> Vec<(&'static str, Vec<Cell>)> {
    use Cell::{NotApplicable as Na, Run};
    let log = shared("eventlogs/tpm2-tools/event-uefiaction.bin");
    let no_check = "replay and show check nothing, so they refuse nothing";
    let eventlog = |sub: &str, json: bool| {
        let with = |file: &str| {
            let mut a = args(&["eventlog", sub, file]);
            if json {
                a.push("--json".into());
            }
            a
        };
        vec![
            Run(with(&log), 0),
            Na(no_check),
            Run(with(&i.garbage), 2),
            Run(with(MISSING), 2),
            Run(with(&log), 2),
            Run(with(&log), 2),
            Run(with(&i.garbage), 2),
        ]
    };
    let ok_quote = quotes("ecc256-sha256.quote");
    let ek_cert = ekdata("ek-rsa2048.crt");
    let ek_pub = quotes("ek-rsa.pub");
    let ak_pub = quotes("ecc256-sha256.ak.pub");
    let help = |a: &[&str]| {
        vec![
            Run(args(a), 0),
            Na("help and version take no input"),
            Na("help and version take no input"),
            Na("help and version take no input"),
            Run(args(a), 2),
            Run(args(a), 2),
            Na("help and version take no input"),
        ]
    };
    vec![
        ("eventlog replay", eventlog("replay", false)),
        ("eventlog replay --json", eventlog("replay", true)),
        ("eventlog show", eventlog("show", false)),
        (
            "quote verify",
            vec![
                Run(quote_verify(&ok_quote, "0011223344556677"), 0),
                Run(quote_verify(&ok_quote, "ffff"), 1),
                Run(quote_verify(&i.garbage, "0011223344556677"), 2),
                Run(quote_verify(MISSING, "0011223344556677"), 2),
                Run(quote_verify(&ok_quote, "0011223344556677"), 2),
                Run(quote_verify(&ok_quote, "0011223344556677"), 2),
                Run(quote_verify(&i.garbage, "0011223344556677"), 2),
            ],
        ),
        (
            "ek verify",
            vec![
                Run(ek_verify(&ek_cert, AT, false), 0),
                Run(ek_verify(&ek_cert, "1600000000", false), 1),
                Run(ek_verify(&i.garbage, AT, false), 2),
                Run(ek_verify(MISSING, AT, false), 2),
                Run(ek_verify(&ek_cert, AT, false), 2),
                Run(ek_verify(&ek_cert, AT, false), 2),
                Run(ek_verify(&i.garbage, AT, false), 2),
            ],
        ),
        (
            // With --json a refusal is printed too: on a full stdout that is exit 2.
            "ek verify --json",
            vec![
                Run(ek_verify(&ek_cert, AT, true), 0),
                Run(ek_verify(&ek_cert, "1600000000", true), 1),
                Run(ek_verify(&i.garbage, AT, true), 2),
                Run(ek_verify(MISSING, AT, true), 2),
                Run(ek_verify(&ek_cert, AT, true), 2),
                Run(ek_verify(&ek_cert, AT, true), 2),
                Run(ek_verify(&i.garbage, AT, true), 2),
            ],
        ),
        (
            // Writes its result to -o, not to standard output.
            "credential make",
            vec![
                Run(credential_make(&ek_pub, &ak_pub, &i.credential), 0),
                Run(credential_make(&ek_pub, &ek_pub, &i.credential), 1),
                Run(credential_make(&i.garbage, &ak_pub, &i.credential), 2),
                Run(credential_make(MISSING, &ak_pub, &i.credential), 2),
                Run(credential_make(&ek_pub, &ak_pub, "/dev/full"), 2),
                Run(credential_make(&ek_pub, &ak_pub, &i.credential), 0),
                Run(credential_make(&i.garbage, &ak_pub, &i.credential), 2),
            ],
        ),
        (
            "image add",
            vec![
                Run(image_add(&i.raw_image), 0),
                Na("image add computes measurements; it checks nothing against a policy"),
                Run(image_add(&i.bad_elf), 2),
                Run(image_add(MISSING), 2),
                Run(image_add(&i.raw_image), 2),
                Run(image_add(&i.raw_image), 2),
                Run(image_add(&i.bad_elf), 2),
            ],
        ),
        (
            "software from-eventlog",
            vec![
                Run(from_eventlog(&log), 0),
                Na("from-eventlog computes reference values; it checks nothing against a policy"),
                Run(from_eventlog(&i.garbage), 2),
                Run(from_eventlog(MISSING), 2),
                Run(from_eventlog(&log), 2),
                Run(from_eventlog(&log), 2),
                Run(from_eventlog(&i.garbage), 2),
            ],
        ),
        (
            "completions",
            vec![
                Run(args(&["completions", "bash"]), 0),
                Na("completions take no input"),
                Run(args(&["completions", "tcsh"]), 2),
                Na("completions take no input"),
                Run(args(&["completions", "bash"]), 2),
                Run(args(&["completions", "bash"]), 2),
                Run(args(&["completions", "tcsh"]), 2),
            ],
        ),
        ("--help", help(&["--help"])),
        ("--version", help(&["--version"])),
        ("quote verify --help", help(&["quote", "verify", "--help"])),
        (
            "usage error",
            vec![
                Run(args(&["quote", "verify"]), 2),
                Na("a usage error is refused before any input is read"),
                Run(args(&["eventlog", "replay", "--no-such-flag", "x"]), 2),
                Na("a usage error is refused before any input is read"),
                Run(args(&["quote", "verify"]), 2),
                Run(args(&["quote", "verify"]), 2),
                Run(args(&["quote", "verify"]), 2),
            ],
        ),
    ]
}

/// A pipe whose reading end is already closed.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

fn sink(s: Sink) -> Stdio {
    match s {
        Sink::Pipe => Stdio::piped(),
        Sink::Full => Stdio::from(File::options().write(true).open("/dev/full").unwrap()),
        Sink::Closed => closed_pipe(),
    }
}

fn sinks(class: Class) -> (Sink, Sink) {
    match class {
        Class::StdoutFull => (Sink::Full, Sink::Pipe),
        Class::StdoutClosed => (Sink::Closed, Sink::Pipe),
        Class::StderrClosed => (Sink::Pipe, Sink::Closed),
        _ => (Sink::Pipe, Sink::Pipe),
    }
}

#[test]
fn every_offline_command_exits_as_documented_for_every_input_class() {
    assert!(
        Path::new("/dev/full").exists(),
        "this test needs /dev/full (Linux)"
    );
    let inputs = inputs();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (command, cells) in table(&inputs) {
        assert_eq!(cells.len(), CLASSES.len(), "{command}: one cell per class");
        // Rows whose ok input succeeds print a result, which a full or closed stdout loses.
        let prints = matches!(cells.first(), Some(Cell::Run(_, 0)));
        for (class, cell) in CLASSES.iter().zip(cells) {
            let (args, expected) = match cell {
                Cell::Run(args, expected) => (args, expected),
                Cell::NotApplicable(why) => {
                    assert!(!why.is_empty(), "{command} / {class:?}: say why");
                    continue;
                }
            };
            let (out, err) = sinks(*class);
            let output = Command::new(env!("CARGO_BIN_EXE_vouch"))
                .args(&args)
                .stdin(Stdio::null())
                .stdout(sink(out))
                .stderr(sink(err))
                .output()
                .unwrap();
            ran += 1;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let code = output.status.code();
            if code != Some(expected) || stderr.contains("panicked") {
                failures.push(format!(
                    "{command} / {class:?}: exit {code:?}, expected {expected}; stderr: {stderr}"
                ));
            }
            if prints
                && matches!(class, Class::StdoutFull | Class::StdoutClosed)
                && expected == 2
                && !stderr.contains("cannot write")
            {
                failures.push(format!(
                    "{command} / {class:?}: stderr does not say the output failed: {stderr}"
                ));
            }
        }
    }
    assert!(ran > 60, "only {ran} cells ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
