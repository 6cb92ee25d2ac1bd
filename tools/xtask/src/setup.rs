//! `cargo xtask setup`: the system packages Vouch needs, installed idempotently.
//!
//! What and why (details in ARCHITECTURE.md, "Toolchain"):
//! - swtpm, swtpm-tools, tpm2-tools: the real TPM the tests and the demo talk to, and the
//!   reference tools that check our credentials and quotes.
//! - qemu-system-arm 10 from bookworm-backports: Debian 12's QEMU 7.2 has no `tpm-tis-i2c`.
//! - rustc-web, cargo-web, rust-web-src: a compiler whose library source builds `core` for
//!   bare-metal targets (build-std), since rustup cannot download targets here.

use crate::shell;
use std::path::{Path, PathBuf};
use std::process::Command;

const APT_PACKAGES: &[&str] = &[
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    "rustc-web",
    "cargo-web",
    "rust-web-src",
];
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-arm"];
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/vouch-backports.sources";
/// Where the sysroot of Debian's rustc looks for the library source.
const RUST_SRC_LINK: &str = "/usr/lib/rustlib/src/rust";
const MIN_QEMU_MAJOR: u32 = 10;

/// One missing piece and how to tell.
#[derive(Debug)]
struct Missing(String);

/// Everything that is missing now.
fn missing() -> Vec<Missing> {
    let mut missing = Vec::new();
    for program in [
        "swtpm",
        "swtpm_setup",
        "tpm2_checkquote",
        "tpm2_makecredential",
    ] {
        if !shell::on_path(program) {
            missing.push(Missing(format!(
                "`{program}` (swtpm, swtpm-tools, tpm2-tools)"
            )));
        }
    }
    match qemu_major() {
        Some(major) if major >= MIN_QEMU_MAJOR => {}
        Some(major) => missing.push(Missing(format!(
            "QEMU {MIN_QEMU_MAJOR} (found {major}; tpm-tis-i2c needs the backports build)"
        ))),
        None => missing.push(Missing("qemu-system-arm".into())),
    }
    if !Path::new(DEBIAN_RUSTC).is_file() || !Path::new(DEBIAN_CARGO).is_file() {
        missing.push(Missing("Debian's rustc-web / cargo-web".into()));
    }
    match rust_src() {
        None => missing.push(Missing("rust-web-src (/usr/src/rustc-*)".into())),
        Some(src) => {
            if std::fs::canonicalize(RUST_SRC_LINK).ok() != std::fs::canonicalize(&src).ok() {
                missing.push(Missing(format!(
                    "the link {RUST_SRC_LINK} -> {}",
                    src.display()
                )));
            }
        }
    }
    missing
}

/// Debian's compiler and cargo, used only for build-std cross builds.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";

fn qemu_major() -> Option<u32> {
    let text = shell::output(Command::new("qemu-system-arm").arg("--version")).ok()?;
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}

/// The newest `/usr/src/rustc-*` directory that holds the standard library source.
fn rust_src() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/src")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rustc-"))
                && p.join("library/core").is_dir()
        })
        .collect();
    found.sort();
    found.pop()
}

fn codename() -> Result<String, String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .map_err(|e| format!("cannot read /etc/os-release: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or_else(|| {
            "no VERSION_CODENAME in /etc/os-release; Vouch's setup supports Debian 12 (bookworm)"
                .into()
        })
}

/// The exact commands that install everything, as a root shell would run them.
fn commands(codename: &str) -> Vec<String> {
    let source = format!(
        "Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: {codename}-backports\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n"
    );
    vec![
        format!("printf '{source}' > {BACKPORTS_SOURCE}"),
        "apt-get update".into(),
        format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
            APT_PACKAGES.join(" ")
        ),
        format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -t {codename}-backports {}",
            BACKPORTS_PACKAGES.join(" ")
        ),
        format!(
            "mkdir -p /usr/lib/rustlib/src && ln -sfn \"$(ls -d /usr/src/rustc-* | sort | tail -n 1)\" {RUST_SRC_LINK}"
        ),
    ]
}

fn is_root() -> bool {
    shell::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// `cargo xtask setup`: install whatever is missing, then check again.
pub fn run() -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        println!("setup: everything Vouch needs is installed");
        return Ok(());
    }
    install(&missing)
}

/// Called by every verb that needs system packages: quiet when all is there.
pub fn ensure() -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    if std::env::var_os("VOUCH_NO_SETUP").is_some() {
        return Err(format!(
            "missing: {}; run `cargo xtask setup` (VOUCH_NO_SETUP is set, so not installing)",
            describe(&missing)
        ));
    }
    install(&missing)
}

fn describe(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| m.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn install(now_missing: &[Missing]) -> Result<(), String> {
    println!("setup: missing {}", describe(now_missing));
    let codename = codename()?;
    if codename != "bookworm" {
        println!("setup: warning: written for Debian 12 (bookworm), this is {codename}");
    }
    let commands = commands(&codename);
    if !is_root() {
        let mut text = String::from("setup needs root to install packages; run as root:\n");
        for command in &commands {
            text.push_str("    ");
            text.push_str(command);
            text.push('\n');
        }
        text.push_str("then run the command again");
        return Err(text);
    }
    for (i, command) in commands.iter().enumerate() {
        let title = format!("setup {}/{}: {command}", i + 1, commands.len());
        let result = shell::step(&title, Command::new("sh").arg("-c").arg(command));
        // A third-party repository that cannot be reached makes `apt-get update` fail while
        // Debian's own suites were refreshed; the install that follows is the real check.
        if let Err(e) = result {
            if command == "apt-get update" {
                println!("    warning: {e}; continuing");
            } else {
                return Err(e);
            }
        }
    }
    let still = missing();
    if still.is_empty() {
        println!("setup: done");
        Ok(())
    } else {
        Err(format!("still missing after install: {}", describe(&still)))
    }
}
