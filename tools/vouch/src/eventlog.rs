//! `vouch eventlog replay|show`.

use std::fmt::Write as _;
use std::path::Path;

use vouch_attest::codec::to_hex;
use vouch_attest::eventlog::{self, LogFormat, event_type_name};

use crate::output;
use crate::{Failure, read_file};

fn parse_failure(path: &Path, e: &vouch_attest::DecodeError) -> Failure {
    Failure::Input(format!(
        "{}: not a valid TCG event log: {e}",
        path.display()
    ))
}

pub(crate) fn replay(path: &Path, json: bool) -> Result<(), Failure> {
    let bytes = read_file(path, "event log")?;
    let log = eventlog::parse(&bytes).map_err(|e| parse_failure(path, &e))?;
    let replay = log.replay();
    if json {
        let mut banks = serde_json::Map::new();
        for (alg, pcrs) in &replay.pcrs.banks {
            // Insertion order is kept (serde_json's preserve_order): PCRs ascending.
            let mut obj = serde_json::Map::new();
            for (i, v) in pcrs {
                obj.insert(i.to_string(), serde_json::Value::String(to_hex(v)));
            }
            banks.insert(alg.name().to_string(), serde_json::Value::Object(obj));
        }
        let mut root = serde_json::Map::new();
        root.insert("banks".to_string(), serde_json::Value::Object(banks));
        output::stdout_line(serde_json::Value::Object(root))
    } else {
        let mut out = String::new();
        for (alg, pcrs) in &replay.pcrs.banks {
            let _ = writeln!(out, "{alg}:");
            for (i, v) in pcrs {
                let _ = writeln!(out, "  {i:>2}: {}", to_hex(v));
            }
        }
        for alg in &replay.skipped_banks {
            let _ = writeln!(
                out,
                "{alg}: not replayed (this verifier does not compute {alg})"
            );
        }
        output::stdout(&out)
    }
}

pub(crate) fn show(path: &Path) -> Result<(), Failure> {
    let bytes = read_file(path, "event log")?;
    let log = eventlog::parse(&bytes).map_err(|e| parse_failure(path, &e))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "format: {}",
        match log.format {
            LogFormat::Sha1 => "SHA-1 (TPM 1.2 style)",
            LogFormat::CryptoAgile => "crypto-agile",
        }
    );
    if let Some(spec) = &log.spec_id {
        let (major, minor, errata) = spec.spec_version;
        let banks: Vec<String> = spec
            .algorithms
            .iter()
            .map(|(a, _)| a.name().to_string())
            .collect();
        let _ = writeln!(
            out,
            "spec: {major}.{minor} errata {errata}, platform class {}, banks: {}",
            spec.platform_class,
            banks.join(", ")
        );
    }
    let _ = writeln!(out, "events: {}", log.events.len());
    for e in &log.events {
        let ty = event_type_name(e.event_type)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:#010x}", e.event_type));
        let _ = writeln!(
            out,
            "\n#{} at byte {}: PCR {} {ty} ({} bytes)",
            e.number,
            e.offset,
            e.pcr,
            e.data.len()
        );
        for (alg, d) in &e.digests {
            let _ = writeln!(out, "  {:<7} {}", alg.name(), to_hex(d));
        }
        let desc = e.describe();
        if !desc.is_empty() {
            let _ = writeln!(out, "  data    {desc}");
        }
    }
    output::stdout(&out)
}
