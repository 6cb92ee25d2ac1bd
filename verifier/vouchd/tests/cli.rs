//! `vouchd`'s own command line: its version, and the completion scripts and man pages
//! generated from it (what the Debian package installs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn vouchd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vouchd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version() {
    let o = vouchd(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("vouchd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_parse_and_man_pages_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let o = vouchd(&["completions", "bash"]);
    assert!(o.status.success());
    let script = dir.path().join("vouchd.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("serve"));

    let man = dir.path().join("man/man1");
    let o = vouchd(&["manpages", man.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(man.join("vouchd.1")).unwrap();
    assert!(page.contains(".TH vouchd 1"), "{page}");
    assert!(man.join("vouchd-serve.1").is_file());
}

#[test]
fn the_packaged_configurations_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The Debian package installs the example as /etc/vouchd/vouchd.toml.
    let debian =
        vouchd::config::Config::load(&root.join("verifier/vouchd/vouchd.example.toml")).unwrap();
    assert_eq!(debian.data_dir, std::path::Path::new("/var/lib/vouchd"));
    let container = vouchd::config::Config::load(&root.join("packaging/container.toml")).unwrap();
    assert_eq!(container.data_dir, std::path::Path::new("/var/lib/vouchd"));
    assert!(container.api_listen.ip().is_unspecified());
}
