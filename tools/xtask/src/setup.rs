//! `cargo xtask setup`: the system packages Vouch needs, installed idempotently.
//!
//! What and why (details in ARCHITECTURE.md, "Toolchain"):
//! - swtpm, swtpm-tools, tpm2-tools: the real TPM the tests and the demo talk to, and the
//!   reference tools that check our credentials and quotes.
//! - qemu-system-arm 10 from bookworm-backports: Debian 12's QEMU 7.2 has no `tpm-tis-i2c`.
//! - rustc-web, cargo-web, rust-web-src: a compiler whose library source builds `core` for
//!   bare-metal targets (build-std), since rustup cannot download targets here.
//! - A PyKMIP server in a virtualenv at [`PYKMIP_VENV`], with every Python package pinned
//!   ([`PYKMIP_PINS`]): the real KMIP server `vouch-kmip`'s tests talk to. Created with Debian's
//!   `/usr/bin/python3` (python3-venv), not whatever `python3` is first on PATH (a pyenv build,
//!   say), so that a fresh Debian 12 machine gets the same interpreter.
//! - postgresql: the real PostgreSQL the store and replica tests run against, each in a private
//!   cluster of its own (initdb + pg_ctl in a temporary directory, as the `postgres` user, on a
//!   loopback port; see `vouchd::testing::postgres`). Installing it starts no service.
//! - chromium, chromium-driver: the web console's browser tests (vouchd's tests/console.rs)
//!   drive Debian's headless Chromium over WebDriver; nothing is downloaded at run time.
//! - openapi-spec-validator in a virtualenv at [`OPENAPI_VENV`], pinned ([`OPENAPI_PINS`]): an
//!   independent OpenAPI 3 validator for the document vouchd serves.
//! - Only for `cargo xtask bench --compare keylime` ([`ensure_keylime`]): Keylime in a
//!   virtualenv at [`KEYLIME_VENV`], pinned ([`KEYLIME_PINS`]), and libefivar1, which Keylime's
//!   measured-boot log parser loads (it also runs `tpm2_eventlog`, from tpm2-tools).

use crate::shell;
use std::path::{Path, PathBuf};
use std::process::Command;

const APT_PACKAGES: &[&str] = &[
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    // certtool: the hil-tests check EK certificate chains with an independent verifier.
    "gnutls-bin",
    // libFuzzer (cargo fuzz) is C++.
    "g++",
    // systemd-analyze: the Debian package's test verifies vouchd's unit with it.
    "systemd",
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    // The store and replica tests start private PostgreSQL clusters (initdb, pg_ctl).
    "postgresql",
    // The web console's browser tests drive a real headless Chromium through chromedriver.
    "chromium",
    "chromium-driver",
];
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-arm"];
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/vouch-backports.sources";
/// Where the sysroot of Debian's rustc looks for the library source.
const RUST_SRC_LINK: &str = "/usr/lib/rustlib/src/rust";
const MIN_QEMU_MAJOR: u32 = 10;

/// The directory of Debian's newest PostgreSQL server programs, when initdb and pg_ctl are
/// there.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// One missing piece and how to tell.
#[derive(Debug)]
struct Missing(String);

/// Everything that is missing now.
fn missing() -> Vec<Missing> {
    let mut missing = missing_system();
    missing.extend(venvs_missing());
    missing
}

/// The system packages that are missing now.
fn missing_system() -> Vec<Missing> {
    let mut missing = Vec::new();
    for program in [
        "swtpm",
        "swtpm_setup",
        "tpm2_checkquote",
        "tpm2_makecredential",
        "certtool",
        "g++",
    ] {
        if !shell::on_path(program) {
            missing.push(Missing(format!(
                "`{program}` (swtpm, swtpm-tools, tpm2-tools, gnutls-bin, g++)"
            )));
        }
    }
    if postgres_bin_dir().is_none() {
        missing.push(Missing(
            "PostgreSQL's initdb and pg_ctl under /usr/lib/postgresql/*/bin (postgresql)".into(),
        ));
    }
    for program in ["chromium", "chromedriver"] {
        if !shell::on_path(program) {
            missing.push(Missing(format!("`{program}` (chromium, chromium-driver)")));
        }
    }
    if !shell::on_path("systemd-analyze") {
        missing.push(Missing("`systemd-analyze` (systemd)".into()));
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

// ---- PyKMIP, the KMIP server of vouch-kmip's tests -------------------------------------------

/// The PyKMIP virtualenv; `vouch-kmip`'s tests start `bin/pykmip-server` from here.
pub const PYKMIP_VENV: &str = "/opt/vouch/pykmip-venv";

/// Debian's interpreter (python3 and python3-venv), which creates the virtualenvs.
const PYTHON: &str = "/usr/bin/python3";

/// Every package of the virtualenv, pinned: PyKMIP 0.11.0 (the newest on PyPI) and its
/// dependencies, checked to work together on CPython 3.11 (SQLAlchemy must stay below 2).
pub const PYKMIP_PINS: &[&str] = &[
    "PyKMIP==0.11.0",
    "cryptography==50.0.2",
    "cffi==2.1.1",
    "pycparser==3.12",
    "SQLAlchemy==1.4.54",
    "greenlet==3.5.6",
    "enum-compat==0.0.3",
    "six==1.17.0",
    "requests==2.34.2",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "idna==3.20",
    "urllib3==2.8.0",
];

/// The virtualenv of openapi-spec-validator, the independent OpenAPI 3 validator that checks
/// the document vouchd serves (`verifier/vouchd/tests/api.rs`).
pub const OPENAPI_VENV: &str = "/opt/vouch/openapi-venv";

/// openapi-spec-validator 0.9.0 and its dependencies, pinned, checked on CPython 3.11.
pub const OPENAPI_PINS: &[&str] = &[
    "openapi-spec-validator==0.9.0",
    "openapi-schema-validator==0.9.0",
    "annotated-types==0.8.0",
    "attrs==26.1.0",
    "jsonschema==4.26.0",
    "jsonschema-path==0.5.0",
    "jsonschema-specifications==2025.9.1",
    "lazy-object-proxy==1.13.0",
    "pathable==0.6.0",
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
    "pydantic_core==2.50.5",
    "python-dotenv==1.2.4",
    "PyYAML==6.0.4",
    "referencing==0.37.0",
    "rfc3339-validator==0.1.4",
    "rpds-py==2026.9.1",
    "six==1.17.0",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
];

/// Keylime's virtualenv, created only when `cargo xtask bench --compare keylime` asks.
pub const KEYLIME_VENV: &str = "/opt/vouch/keylime-venv";

/// Keylime 7.14.3 (its wheel declares no dependencies) and what its quote check and its
/// measured-boot log parser import, pinned, checked on CPython 3.11.
pub const KEYLIME_PINS: &[&str] = &[
    "keylime==7.14.3",
    "cryptography==50.0.2",
    "cffi==2.1.1",
    "pycparser==3.12",
    "packaging==26.4",
    "PyYAML==6.0.4",
];

const KEYLIME: Venv = Venv {
    path: KEYLIME_VENV,
    pins: KEYLIME_PINS,
    program: "bin/python",
};

/// The library Keylime's event-log enrichment loads (ctypes), from Debian's libefivar1.
const LIBEFIVAR: &str = "/usr/lib/x86_64-linux-gnu/libefivar.so.1";

/// Installs what `cargo xtask bench --compare keylime` needs when it is missing: the
/// Keylime virtualenv and libefivar1 (as root; otherwise prints the commands).
pub fn ensure_keylime() -> Result<(), String> {
    ensure()?;
    let mut commands = Vec::new();
    if !Path::new(LIBEFIVAR).is_file() {
        commands.push(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libefivar1"
                .to_owned(),
        );
    }
    if KEYLIME.missing().is_some() {
        commands.extend(KEYLIME.commands());
    }
    if commands.is_empty() {
        return Ok(());
    }
    if std::env::var_os("VOUCH_NO_SETUP").is_some() || !is_root() {
        return Err(format!(
            "the Keylime comparison needs, as root:\n    {}",
            commands.join("\n    ")
        ));
    }
    for (i, command) in commands.iter().enumerate() {
        let title = format!("setup keylime {}/{}: {command}", i + 1, commands.len());
        shell::step(&title, Command::new("sh").arg("-c").arg(command))?;
    }
    match KEYLIME.missing() {
        Some(m) => Err(format!("still missing after install: {}", m.0)),
        None if !Path::new(LIBEFIVAR).is_file() => Err(format!("still missing: {LIBEFIVAR}")),
        None => Ok(()),
    }
}

/// A Python virtualenv of pinned packages from PyPI.
struct Venv {
    path: &'static str,
    pins: &'static [&'static str],
    /// A program the venv must hold, relative to it.
    program: &'static str,
}

const VENVS: &[Venv] = &[
    Venv {
        path: PYKMIP_VENV,
        pins: PYKMIP_PINS,
        program: "bin/pykmip-server",
    },
    Venv {
        path: OPENAPI_VENV,
        pins: OPENAPI_PINS,
        program: "bin/openapi-spec-validator",
    },
];

impl Venv {
    /// Written last by the install, holding the pins: the venv counts as installed only when
    /// this file names exactly the pins, so changing a pin reinstalls.
    fn marker(&self) -> PathBuf {
        Path::new(self.path).join("vouch-pins.txt")
    }

    fn marker_text(&self) -> String {
        let mut text = self.pins.join("\n");
        text.push('\n');
        text
    }

    fn missing(&self) -> Option<Missing> {
        let installed = std::fs::read_to_string(self.marker()).ok();
        let program = Path::new(self.path).join(self.program);
        if installed.as_deref() == Some(self.marker_text().as_str()) && program.is_file() {
            None
        } else {
            Some(Missing(format!("the virtualenv {}", self.path)))
        }
    }

    /// The exact commands that (re)create the virtualenv.
    fn commands(&self) -> Vec<String> {
        let pins = self.pins.join(" ");
        let venv = self.path;
        vec![
            format!(
                "{PYTHON} -c 'import ensurepip, venv' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv"
            ),
            format!("rm -rf {venv} && {PYTHON} -m venv {venv}"),
            format!(
                "{venv}/bin/pip install --disable-pip-version-check --no-input --no-cache-dir --only-binary=:all: {pins}"
            ),
            format!("printf '%s\\n' {pins} > {}", self.marker().display()),
        ]
    }
}

fn venvs_missing() -> Vec<Missing> {
    VENVS.iter().filter_map(Venv::missing).collect()
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
    // System packages only when one is missing (apt-get update is slow); then the venv.
    let system = commands(&codename);
    let mut commands = Vec::new();
    if !missing_system().is_empty() {
        commands.extend(system);
    }
    for venv in VENVS {
        if venv.missing().is_some() {
            commands.extend(venv.commands());
        }
    }
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
