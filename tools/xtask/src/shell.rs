//! Running commands with visible progress.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The repository root (two levels above this crate).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Prints a step header, runs `cmd`, and reports how long it took; a non-zero exit is an error
/// that names the step.
pub fn step(title: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("==> {title}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{title}: cannot start {:?}: {e}", cmd.get_program()))?;
    let secs = started.elapsed().as_secs_f32();
    if status.success() {
        eprintln!("    {title}: ok ({secs:.1} s)");
        Ok(())
    } else {
        Err(format!("{title} failed ({status}) after {secs:.1} s"))
    }
}

/// Runs `cmd` and returns its standard output, or an error naming the program.
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host's cargo (rustup's, or whatever `cargo xtask` was started with).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Whether `program` is found on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
