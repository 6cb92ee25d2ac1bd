//! `cargo xtask deb`: the Debian packages `vouchd` (the service, its systemd unit, a system
//! user) and `vouch` (the operator CLI), built with `dpkg-deb` from the files under
//! `packaging/`.
//!
//! dpkg-deb rather than cargo-deb: it is part of every Debian system, so packaging costs no
//! extra build, and the package is a handful of plain files (unit, maintainer scripts,
//! copyright) that read as they are installed. Man pages and completion scripts are generated
//! by the binaries themselves (`vouch manpages DIR`, `vouch completions SHELL`), so they always
//! match the command lines they describe.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::shell;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAINTAINER: &str = "The Vouch developers <vouch@vouch-attest.invalid>";
const HOMEPAGE: &str = "https://github.com/vouch-attest/vouch";

/// One binary package.
struct Package {
    name: &'static str,
    /// The `Description:` field: a summary line, then the extended description.
    description: &'static str,
    depends: &'static [&'static str],
    /// Files from the repository: (source, path in the package, mode).
    files: &'static [(&'static str, &'static str, u32)],
    /// Maintainer scripts in `packaging/debian/`, named `<package>.<script>`.
    scripts: &'static [&'static str],
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "vouchd",
        description: "Vouch verifier service: TPM 2.0 attestation and key release\n \
            vouchd decides whether a machine booted the software its operator accepts, from\n \
            measurements its TPM signed, before that machine is trusted with keys. It serves\n \
            the management API (HTTPS), the agent link and the key provider service.\n \
            .\n \
            This package runs it as the systemd service vouchd.service, as the system user\n \
            vouchd, with its data in /var/lib/vouchd and its configuration in /etc/vouchd.",
        depends: &["adduser"],
        files: &[
            (
                "packaging/vouchd.service",
                "usr/lib/systemd/system/vouchd.service",
                0o644,
            ),
            (
                "verifier/vouchd/vouchd.example.toml",
                "etc/vouchd/vouchd.toml",
                0o644,
            ),
        ],
        scripts: &["postinst", "prerm", "postrm"],
    },
    Package {
        name: "vouch",
        description: "Vouch operator CLI\n \
            vouch configures trust in vouchd (clusters, TPM CAs, EKs, software versions,\n \
            hosts, key providers), shows attestation status and events, checks TPM evidence\n \
            offline and bridges a board's serial port to vouchd.",
        depends: &[],
        files: &[],
        scripts: &[],
    },
];

/// `cargo xtask deb [--debug] [--bin-dir DIR] [--out DIR]`; prints the paths of the packages.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut debug = false;
    let mut bin_dir = None;
    let mut out = shell::root().join("target/debian");
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--debug" => debug = true,
            "--bin-dir" => bin_dir = Some(PathBuf::from(value(&mut rest, arg)?)),
            "--out" => out = PathBuf::from(value(&mut rest, arg)?),
            other => return Err(format!("deb: unknown option `{other}`")),
        }
    }
    for program in ["dpkg-deb", "dpkg", "gzip", "strip"] {
        if !shell::on_path(program) {
            return Err(format!(
                "deb: `{program}` is missing; packages are built on Debian (dpkg, gzip, binutils)"
            ));
        }
    }
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => {
            let profile = if debug { "debug" } else { "release" };
            let mut cargo = shell::cargo();
            cargo.args(["build", "--locked", "-p", "vouchd", "-p", "vouch"]);
            if !debug {
                cargo.arg("--release");
            }
            shell::step(&format!("build vouchd and vouch ({profile})"), &mut cargo)?;
            shell::root().join("target").join(profile)
        }
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let arch = shell::output(Command::new("dpkg").arg("--print-architecture"))?;
    for package in &PACKAGES {
        let deb = build(package, &bin_dir, &out, arch.trim())?;
        println!("{}", deb.display());
    }
    Ok(())
}

fn value<'a>(rest: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str, String> {
    rest.next()
        .map(String::as_str)
        .ok_or_else(|| format!("deb: {flag} needs a value"))
}

/// Lays out one package's tree under `out` and builds `<name>_<version>_<arch>.deb` from it.
fn build(package: &Package, bin_dir: &Path, out: &Path, arch: &str) -> Result<PathBuf, String> {
    let name = package.name;
    let root = out.join(format!("{name}_{VERSION}_{arch}"));
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| io(&root, &e))?;
    }
    let binary = bin_dir.join(name);
    if !binary.is_file() {
        return Err(format!(
            "deb: {} is missing; build it first (cargo build -p {name})",
            binary.display()
        ));
    }
    let installed = root.join("usr/bin").join(name);
    copy(&binary, &installed, 0o755)?;
    // As Debian ships programs: without debugging information.
    shell::output(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg(&installed),
    )?;
    for (source, target, mode) in package.files {
        copy(&shell::root().join(source), &root.join(target), *mode)?;
    }
    copy(
        &shell::root().join("packaging/debian/copyright"),
        &root.join("usr/share/doc").join(name).join("copyright"),
        0o644,
    )?;

    // Man pages and completions, from the binary's own command line.
    let man = root.join("usr/share/man/man1");
    shell::output(Command::new(&binary).arg("manpages").arg(&man))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(|e| io(&man, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    for page in &pages {
        set_mode(page, 0o644)?;
    }
    shell::output(Command::new("gzip").args(["-9", "-n"]).args(&pages))?;
    for (shell_name, path) in [
        (
            "bash",
            format!("usr/share/bash-completion/completions/{name}"),
        ),
        ("zsh", format!("usr/share/zsh/vendor-completions/_{name}")),
        (
            "fish",
            format!("usr/share/fish/vendor_completions.d/{name}.fish"),
        ),
    ] {
        let script = shell::output(Command::new(&binary).args(["completions", shell_name]))?;
        write(&root.join(path), &script, 0o644)?;
    }

    // Directories as dpkg expects them, whatever the umask.
    for dir in dirs(&root)? {
        set_mode(&dir, 0o755)?;
    }

    // The control area.
    let debian = root.join("DEBIAN");
    let mut control = format!(
        "Package: {name}\nVersion: {VERSION}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {}\nDepends: {}\nSection: admin\nPriority: optional\n\
         Homepage: {HOMEPAGE}\nDescription: {}\n",
        kib(&root)?,
        depends(package, &binary)?,
        package.description
    );
    if !control.ends_with('\n') {
        control.push('\n');
    }
    write(&debian.join("control"), &control, 0o644)?;
    let conffiles: Vec<String> = package
        .files
        .iter()
        .filter(|(_, target, _)| target.starts_with("etc/"))
        .map(|(_, target, _)| format!("/{target}\n"))
        .collect();
    if !conffiles.is_empty() {
        write(&debian.join("conffiles"), &conffiles.concat(), 0o644)?;
    }
    for script in package.scripts {
        copy(
            &shell::root()
                .join("packaging/debian")
                .join(format!("{name}.{script}")),
            &debian.join(script),
            0o755,
        )?;
    }

    let deb = out.join(format!("{name}_{VERSION}_{arch}.deb"));
    shell::output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-z6", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// `Depends:`: the C library the binary was linked against (the newest `GLIBC_2.N` symbol
/// version it references), then the package's own.
fn depends(package: &Package, binary: &Path) -> Result<String, String> {
    let bytes = std::fs::read(binary).map_err(|e| io(binary, &e))?;
    let needle = b"GLIBC_2.";
    let newest = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(at, _)| {
            let digits: String = bytes
                .get(at + needle.len()..)?
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| char::from(b))
                .collect();
            digits.parse::<u32>().ok()
        })
        .max();
    let mut all = vec![match newest {
        Some(minor) => format!("libc6 (>= 2.{minor})"),
        None => "libc6".to_string(),
    }];
    all.extend(package.depends.iter().map(|d| (*d).to_string()));
    Ok(all.join(", "))
}

/// Every directory under `dir`, itself included.
fn dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, &e))? {
        let path = entry.map_err(|e| io(dir, &e))?.path();
        if path.is_dir() {
            all.extend(dirs(&path)?);
        }
    }
    Ok(all)
}

/// The size of the tree in KiB, as `Installed-Size` counts it.
fn kib(dir: &Path) -> Result<u64, String> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, &e))? {
        let entry = entry.map_err(|e| io(dir, &e))?;
        let meta = entry.metadata().map_err(|e| io(&entry.path(), &e))?;
        bytes += if meta.is_dir() {
            kib(&entry.path())? * 1024
        } else {
            meta.len()
        };
    }
    Ok(bytes.div_ceil(1024))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, &e))?;
    }
    std::fs::copy(from, to).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    set_mode(to, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, &e))?;
    }
    std::fs::write(to, text).map_err(|e| io(to, &e))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(path, &e))
}

fn io(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {e}", path.display())
}
