//! The service core knows nothing of its edges: no module outside the HTTP edge (`api/`) and
//! the composition root (`server.rs`, `main.rs`, `lib.rs`) names axum or `crate::api`. The
//! agent link (`agent/`) is the other edge; it may use the core but not the HTTP edge.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test")]

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of code, without comments.
fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

#[test]
fn nothing_below_the_edges_imports_http() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut checked = 0;
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel.starts_with("api/") || matches!(rel.as_str(), "server.rs" | "main.rs" | "lib.rs") {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in code(&text) {
            for banned in ["axum", "crate::api", "hyper"] {
                assert!(
                    !line.contains(banned),
                    "src/{rel}:{n} names `{banned}`, which only the HTTP edge (src/api/) may: {line}"
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} modules checked");
}
