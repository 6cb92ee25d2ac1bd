//! `cargo xtask fleet`: builds vouchd and the fleet simulator (`tools/fleet`) in release and
//! runs the simulator, which starts vouchd on loopback with its own data directory (unless
//! `--servers` names running ones; with `--store postgres --replicas R` a private PostgreSQL
//! and R replicas on it) and prints its progress on stderr and, with `--json`, one JSON line on
//! stdout.

use crate::shell;

/// Builds both binaries in release, then runs the simulator with `args`.
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        let root = shell::root();
        let mut cmd = shell::cargo();
        cmd.args([
            "run",
            "--release",
            "--locked",
            "-q",
            "-p",
            "vouch-fleet",
            "--",
        ])
        .arg("--help")
        .current_dir(&root);
        return shell::step("vouch-fleet --help", &mut cmd);
    }
    let mut build = shell::cargo();
    build.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "vouchd",
        "-p",
        "vouch-fleet",
    ]);
    shell::step("build vouchd and vouch-fleet (release)", &mut build)?;
    let root = shell::root();
    let release = root.join("target").join("release");
    let mut cmd = std::process::Command::new(release.join("vouch-fleet"));
    cmd.current_dir(&root)
        .arg("--vouchd")
        .arg(release.join("vouchd"))
        .args(args);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run vouch-fleet: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the fleet run failed ({status}): not every host stayed attested, or errors (see above)"
        ))
    }
}
