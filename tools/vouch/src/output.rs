//! Writing results and messages. Standard output may be closed (a pipe whose reader left) or
//! full (`/dev/full`, a full disk): results go through [`stdout`], which reports that as a
//! [`Failure`] (exit 2) instead of panicking as `println!` does; messages go through
//! [`stderr`], which drops them when standard error cannot take them, since there is nowhere
//! left to say so.

use std::fmt::Write as _;
use std::io::{self, Write as _};

use crate::Failure;

/// Writes `text` to standard output and flushes it, so a write error is seen here and not lost
/// at exit.
pub(crate) fn stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Input(format!("cannot write the output: {e}")))
}

/// Writes `text` and a newline to standard output; see [`stdout`].
pub(crate) fn stdout_line(text: impl std::fmt::Display) -> Result<(), Failure> {
    let mut line = String::new();
    let _ = writeln!(line, "{text}");
    stdout(&line)
}

/// Writes a message and a newline to standard error, dropping it if standard error is closed
/// or full.
pub(crate) fn stderr(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Writes a result for the management commands, whose printing sits deep in their helpers:
/// when standard output cannot take it, says so on standard error and exits 2, as
/// [`stdout`]'s callers do, instead of panicking as `print!` does.
pub(crate) fn emit(text: impl std::fmt::Display) {
    let mut all = String::new();
    let _ = write!(all, "{text}");
    if let Err(Failure::Input(why) | Failure::Refused(why)) = stdout(&all) {
        stderr(format_args!("vouch: {why}"));
        std::process::exit(2);
    }
}

/// [`emit`] with a newline.
pub(crate) fn emit_line(text: impl std::fmt::Display) {
    emit(format_args!("{text}\n"));
}
