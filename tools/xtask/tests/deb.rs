//! `cargo xtask deb` packages the workspace's debug binaries (built before the tests run, as
//! `cargo xtask test` does), and the packages hold what an installation needs: the programs
//! run from the unpacked tree, vouchd's unit passes `systemd-analyze verify` and keeps its
//! hardening (`systemd-analyze security`), the configuration is a conffile, and the man pages
//! and completion scripts are there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The highest `systemd-analyze security` exposure (tenths, 0 to 100) vouchd's unit may have.
const MAX_EXPOSURE: &str = "15";

/// `target/debug`, where the workspace's programs are.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(2).unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[test]
fn the_packages_install_what_vouchd_and_vouch_need() {
    for program in ["vouchd", "vouch"] {
        assert!(
            bin_dir().join(program).is_file(),
            "{program} is not built in {}: run `cargo build -p vouchd -p vouch` first \
             (`cargo xtask test` does)",
            bin_dir().display()
        );
    }
    for program in ["dpkg-deb", "systemd-analyze"] {
        assert!(
            on_path(program),
            "`{program}` is missing: `cargo xtask setup` installs it"
        );
    }
    let out = fresh_dir();
    let built = run(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deb", "--bin-dir"])
        .arg(bin_dir())
        .arg("--out")
        .arg(&out));
    let debs: Vec<PathBuf> = text(&built).lines().map(PathBuf::from).collect();
    assert_eq!(debs.len(), 2, "{debs:?}");

    for deb in &debs {
        let name = deb
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .split('_')
            .next()
            .unwrap()
            .to_string();
        let info = text(&run(Command::new("dpkg-deb").arg("--info").arg(deb)));
        assert!(info.contains(&format!("Package: {name}\n")), "{info}");
        assert!(
            info.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))),
            "{info}"
        );
        assert!(info.contains("Depends: libc6 (>= 2."), "{info}");

        let root = out.join(format!("root-{name}"));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
        let program = root.join("usr/bin").join(&name);
        let version = text(&run(Command::new(&program).arg("--version")));
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            root.join(format!("usr/share/man/man1/{name}.1.gz"))
                .is_file()
        );
        assert!(
            root.join(format!("usr/share/doc/{name}/copyright"))
                .is_file()
        );
        let bash = root.join(format!("usr/share/bash-completion/completions/{name}"));
        run(Command::new("bash").arg("-n").arg(&bash));
        assert!(
            root.join(format!("usr/share/zsh/vendor-completions/_{name}"))
                .is_file()
        );
        if name == "vouchd" {
            check_vouchd(deb, &root, &out);
        }
    }
}

fn check_vouchd(deb: &Path, root: &Path, out: &Path) {
    // The configuration is a conffile (kept across upgrades), and parses as vouchd's.
    let control = out.join("control-vouchd");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/vouchd/vouchd.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let config = std::fs::read_to_string(root.join("etc/vouchd/vouchd.toml")).unwrap();
    assert!(config.contains("data_dir = \"/var/lib/vouchd\""));

    // The unit, pointed at the unpacked program (verify checks that ExecStart is executable).
    let unit = root.join("usr/lib/systemd/system/vouchd.service");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for directive in [
        "User=vouchd",
        "StateDirectory=vouchd",
        "ConfigurationDirectory=vouchd",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/vouchd",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit_text.contains(directive), "the unit lacks {directive}");
    }
    let program = root.join("usr/bin/vouchd");
    let local = out.join("vouchd.service");
    std::fs::write(
        &local,
        unit_text.replace("/usr/bin/vouchd", program.to_str().unwrap()),
    )
    .unwrap();
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&local));
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(&local));
    let report = text(&security);
    assert!(
        report.contains("Overall exposure level for vouchd.service"),
        "{report}"
    );
}

/// A fresh directory under the target directory, removed first if a previous run left it.
fn fresh_dir() -> PathBuf {
    let dir = bin_dir().join("deb-test");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
