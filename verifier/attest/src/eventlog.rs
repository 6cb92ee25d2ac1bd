//! The TCG PC Client platform firmware event log: both the SHA-1 format of
//! TPM 1.2 and the crypto-agile format introduced by the Spec ID event.
//! Parsing borrows the input; replay recomputes every bank's PCR values.

use std::collections::BTreeMap;

use crate::alg::HashAlg;
use crate::codec::{DecodeError, DecodeReason, Reader, to_hex};
use crate::pcr::{PCR_COUNT, PcrValues, initial_value};

/// EV_NO_ACTION: recorded but never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// The most digest algorithms a Spec ID event may declare.
pub const MAX_ALGORITHMS: usize = 16;

/// Which of the two log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// TCG_PCClientPCREvent records with one SHA-1 digest each.
    Sha1,
    /// TCG_PCR_EVENT2 records after a Spec ID event.
    CryptoAgile,
}

/// The Spec ID event of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    /// Platform class (0 client, 1 server).
    pub platform_class: u32,
    /// Spec version (major, minor, errata).
    pub spec_version: (u8, u8, u8),
    /// 1 for UINT32, 2 for UINT64.
    pub uintn_size: u8,
    /// Declared algorithms and their digest sizes.
    pub algorithms: Vec<(HashAlg, usize)>,
    /// Vendor information.
    pub vendor_info: Vec<u8>,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log, from 0 (the Spec ID event of a crypto-agile log is 0).
    pub number: usize,
    /// Byte offset of the record.
    pub offset: usize,
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// Digests, one per bank the event carries.
    pub digests: Vec<(HashAlg, &'a [u8])>,
    /// Event data.
    pub data: &'a [u8],
}

impl Event<'_> {
    /// The digest for `alg`.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| *d)
    }

    /// The locality of a StartupLocality event.
    pub fn startup_locality(&self) -> Option<u8> {
        if self.event_type != EV_NO_ACTION || self.pcr != 0 {
            return None;
        }
        match self.data.split_at_checked(16) {
            Some((sig, [loc])) if sig == STARTUP_LOCALITY_SIGNATURE => Some(*loc),
            _ => None,
        }
    }

    /// A short description of the event for people.
    pub fn describe(&self) -> String {
        let printable = self
            .data
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == 0);
        if let Some(loc) = self.startup_locality() {
            format!("StartupLocality {loc}")
        } else if printable && !self.data.is_empty() {
            String::from_utf8_lossy(self.data)
                .trim_end_matches('\0')
                .to_string()
        } else if self.data.len() <= 32 {
            to_hex(self.data)
        } else {
            format!(
                "{}… ({} bytes)",
                to_hex(self.data.get(..32).unwrap_or(&[])),
                self.data.len()
            )
        }
    }
}

/// The name of a TCG event type.
pub fn event_type_name(t: u32) -> Option<&'static str> {
    Some(match t {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0002 => "EV_UNUSED",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => return None,
    })
}

/// A parsed event log, borrowing its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog<'a> {
    /// The format.
    pub format: LogFormat,
    /// The Spec ID event of a crypto-agile log.
    pub spec_id: Option<SpecId>,
    /// Every event, including the Spec ID event itself.
    pub events: Vec<Event<'a>>,
}

fn read_sha1_event<'a>(r: &mut Reader<'a>, number: usize) -> Result<Event<'a>, DecodeError> {
    let offset = r.offset();
    let pcr = read_pcr_index(r)?;
    let event_type = r.u32_le("event type")?;
    let digest = r.take(20, "SHA-1 digest")?;
    let size = r.u32_le("event size")?;
    let data = r.take(usize::try_from(size).unwrap_or(usize::MAX), "event data")?;
    Ok(Event {
        number,
        offset,
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1, digest)],
        data,
    })
}

fn read_pcr_index(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    let at = r.offset();
    let pcr = r.u32_le("PCR index")?;
    if pcr >= PCR_COUNT {
        return Err(Reader::err_at(
            at,
            DecodeReason::TooLarge {
                what: "PCR index",
                size: usize::try_from(pcr).unwrap_or(usize::MAX),
                max: usize::try_from(PCR_COUNT - 1).unwrap_or(usize::MAX),
            },
        ));
    }
    Ok(pcr)
}

/// Parses the Spec ID event. A few producers (tpm2-tools' own
/// `specid-vendordata.bin` fixture) count the vendor information outside the
/// event's size; as tpm2-tools does, that vendor information is then read
/// from the bytes that follow, and the count of such bytes is returned.
fn parse_spec_id(event: &Event<'_>) -> Result<Option<(SpecId, usize)>, DecodeError> {
    if event.event_type != EV_NO_ACTION || event.pcr != 0 {
        return Ok(None);
    }
    let mut r = Reader::new(event.data);
    // Offsets inside the Spec ID event are reported relative to the log.
    let base = event.offset.saturating_add(32);
    let rebase = |e: DecodeError| DecodeError {
        offset: e.offset.saturating_add(base),
        reason: e.reason,
    };
    if !event.data.starts_with(SPEC_ID_SIGNATURE) {
        return Ok(None);
    }
    (|| {
        r.take(16, "Spec ID signature")?;
        let platform_class = r.u32_le("platform class")?;
        let minor = r.u8("spec version minor")?;
        let major = r.u8("spec version major")?;
        let errata = r.u8("spec errata")?;
        let uintn_size = r.u8("uintn size")?;
        let at = r.offset();
        let n = usize::try_from(r.u32_le("number of algorithms")?).unwrap_or(usize::MAX);
        if n == 0 || n > MAX_ALGORITHMS {
            return Err(Reader::err_at(
                at,
                DecodeReason::TooLarge {
                    what: "number of algorithms",
                    size: n,
                    max: MAX_ALGORITHMS,
                },
            ));
        }
        let mut algorithms = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let id = r.u16_le("algorithm id")?;
            let size = usize::from(r.u16_le("digest size")?);
            let alg = HashAlg::from_id(id).ok_or(Reader::err_at(
                at,
                DecodeReason::UnsupportedAlgorithm {
                    what: "event log digest",
                    id,
                },
            ))?;
            if alg.size() != size {
                return Err(Reader::err_at(
                    at.saturating_add(2),
                    DecodeReason::Invalid("digest size does not match its algorithm"),
                ));
            }
            if algorithms.iter().any(|(a, _)| *a == alg) {
                return Err(Reader::err_at(
                    at,
                    DecodeReason::Invalid("algorithm declared twice"),
                ));
            }
            algorithms.push((alg, size));
        }
        let vendor_size = usize::from(r.u8("vendor info size")?);
        let (vendor_info, spill) = if r.is_empty() && vendor_size > 0 {
            (Vec::new(), vendor_size)
        } else {
            (r.take(vendor_size, "vendor info")?.to_vec(), 0)
        };
        r.finish()?;
        Ok(Some((
            SpecId {
                platform_class,
                spec_version: (major, minor, errata),
                uintn_size,
                algorithms,
                vendor_info,
            },
            spill,
        )))
    })()
    .map_err(rebase)
}

fn read_agile_event<'a>(
    r: &mut Reader<'a>,
    number: usize,
    spec: &SpecId,
) -> Result<Event<'a>, DecodeError> {
    let offset = r.offset();
    let pcr = read_pcr_index(r)?;
    let event_type = r.u32_le("event type")?;
    let at = r.offset();
    let count = usize::try_from(r.u32_le("digest count")?).unwrap_or(usize::MAX);
    if count > spec.algorithms.len() {
        return Err(Reader::err_at(
            at,
            DecodeReason::TooLarge {
                what: "digest count",
                size: count,
                max: spec.algorithms.len(),
            },
        ));
    }
    let mut digests: Vec<(HashAlg, &[u8])> = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.offset();
        let id = r.u16_le("digest algorithm")?;
        let Some(&(alg, size)) = spec.algorithms.iter().find(|(a, _)| a.id() == id) else {
            return Err(Reader::err_at(
                at,
                DecodeReason::Invalid("digest algorithm not declared in the Spec ID event"),
            ));
        };
        if digests.iter().any(|(a, _)| *a == alg) {
            return Err(Reader::err_at(
                at,
                DecodeReason::Invalid("two digests of the same algorithm in one event"),
            ));
        }
        digests.push((alg, r.take(size, "event digest")?));
    }
    let size = r.u32_le("event size")?;
    let data = r.take(usize::try_from(size).unwrap_or(usize::MAX), "event data")?;
    Ok(Event {
        number,
        offset,
        pcr,
        event_type,
        digests,
        data,
    })
}

/// Parses a log in either format; every size is checked against the input.
pub fn parse(bytes: &[u8]) -> Result<EventLog<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.is_empty() {
        return Err(r.err(DecodeReason::Invalid("the event log is empty")));
    }
    let first = read_sha1_event(&mut r, 0)?;
    let spec_id = match parse_spec_id(&first)? {
        Some((mut spec, spill)) => {
            if spill > 0 {
                spec.vendor_info = r.take(spill, "Spec ID vendor info")?.to_vec();
            }
            Some(spec)
        }
        None => None,
    };
    let mut events = vec![first];
    match &spec_id {
        Some(spec) => {
            while !r.is_empty() {
                let e = read_agile_event(&mut r, events.len(), spec)?;
                events.push(e);
            }
        }
        None => {
            while !r.is_empty() {
                let e = read_sha1_event(&mut r, events.len())?;
                events.push(e);
            }
        }
    }
    Ok(EventLog {
        format: if spec_id.is_some() {
            LogFormat::CryptoAgile
        } else {
            LogFormat::Sha1
        },
        spec_id,
        events,
    })
}

/// The PCR values a log replays to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Every PCR the log extends, per bank that it carries.
    pub pcrs: PcrValues,
    /// The locality from a StartupLocality event (0 if none).
    pub startup_locality: u8,
    /// Banks declared but not computable by this verifier (SM3).
    pub skipped_banks: Vec<HashAlg>,
    /// For each bank and PCR, the numbers of the events extending it.
    extended_by: BTreeMap<(HashAlg, u32), Vec<usize>>,
}

/// The replayed log disagrees with the PCR values the TPM quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayMismatch {
    /// A quoted bank is absent from the log.
    #[error("the event log carries no {0} bank, but the quote covers it")]
    MissingBank(HashAlg),
    /// A quoted PCR does not equal the replayed log.
    #[error(
        "PCR {pcr} ({alg}) mismatch: {explanation}; the log replays to {replayed}, the TPM quoted {quoted}"
    )]
    Pcr {
        /// Bank.
        alg: HashAlg,
        /// PCR index.
        pcr: u32,
        /// The first event at fault, if one can be named.
        event: Option<usize>,
        /// A sentence naming the event.
        explanation: String,
        /// Replayed value, hex.
        replayed: String,
        /// Quoted value, hex.
        quoted: String,
    },
}

impl EventLog<'_> {
    /// The banks the log carries digests for.
    pub fn banks(&self) -> Vec<HashAlg> {
        match &self.spec_id {
            Some(spec) => spec.algorithms.iter().map(|(a, _)| *a).collect(),
            None => vec![HashAlg::Sha1],
        }
    }

    fn measured(&self) -> impl Iterator<Item = &Event<'_>> {
        let skip = usize::from(self.spec_id.is_some());
        self.events
            .iter()
            .skip(skip)
            .filter(|e| e.event_type != EV_NO_ACTION)
    }

    /// The StartupLocality, if an event sets it.
    pub fn startup_locality(&self) -> u8 {
        self.events
            .iter()
            .find_map(Event::startup_locality)
            .unwrap_or(0)
    }

    /// Replays every measured event into every bank it carries. EV_NO_ACTION
    /// events are not extended; a StartupLocality event sets PCR 0's
    /// initial value.
    pub fn replay(&self) -> Replay {
        self.replay_banks(None)
    }

    /// As [`Self::replay`], computing only `banks` (all when `None`): the
    /// verifier needs only the banks a quote covers.
    pub fn replay_banks(&self, banks: Option<&[HashAlg]>) -> Replay {
        let locality = self.startup_locality();
        let mut pcrs = PcrValues::default();
        let mut extended_by: BTreeMap<(HashAlg, u32), Vec<usize>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for alg in self.banks() {
            if !alg.is_computable() {
                skipped.push(alg);
            }
        }
        for e in self.measured() {
            for (alg, digest) in &e.digests {
                if banks.is_some_and(|b| !b.contains(alg)) {
                    continue;
                }
                let bank = pcrs.banks.entry(*alg).or_default();
                let cur = bank
                    .entry(e.pcr)
                    .or_insert_with(|| initial_value(*alg, e.pcr, locality));
                if let Some(next) = alg.hash(&[cur, digest]) {
                    *cur = next;
                    extended_by.entry((*alg, e.pcr)).or_default().push(e.number);
                }
            }
        }
        for alg in &skipped {
            pcrs.banks.remove(alg);
        }
        Replay {
            pcrs,
            startup_locality: locality,
            skipped_banks: skipped,
            extended_by,
        }
    }

    /// Compares the log with quoted PCR values. Every quoted PCR must be
    /// explained by the log: its replayed value, or the PCR's initial value
    /// where the log never extends it.
    pub fn check_against(&self, replay: &Replay, quoted: &PcrValues) -> Result<(), ReplayMismatch> {
        for (alg, pcr, value) in quoted.iter() {
            if !self.banks().contains(&alg) {
                return Err(ReplayMismatch::MissingBank(alg));
            }
            let initial = initial_value(alg, pcr, replay.startup_locality);
            let replayed = replay.pcrs.get(alg, pcr).unwrap_or(&initial);
            if replayed != value {
                return Err(self.explain(replay, alg, pcr, replayed, value));
            }
        }
        Ok(())
    }

    fn explain(
        &self,
        replay: &Replay,
        alg: HashAlg,
        pcr: u32,
        replayed: &[u8],
        quoted: &[u8],
    ) -> ReplayMismatch {
        let events = replay
            .extended_by
            .get(&(alg, pcr))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Recompute the intermediate values: if the quote equals one of
        // them, the log is longer than what the TPM saw and the first
        // event after that point is at fault.
        let mut value = initial_value(alg, pcr, replay.startup_locality);
        let mut matched_after: Option<Option<usize>> = (value == quoted).then_some(None);
        for n in events {
            if let Some(d) = self.events.get(*n).and_then(|e| e.digest(alg))
                && let Some(next) = alg.hash(&[&value, d])
            {
                value = next;
            }
            if matched_after.is_none() && value == quoted {
                matched_after = Some(Some(*n));
            }
        }
        let (event, explanation) = match matched_after {
            Some(after) => {
                let next = match after {
                    None => events.first().copied(),
                    Some(n) => events.iter().copied().find(|e| *e > n),
                };
                (
                    next,
                    match next {
                        Some(n) => format!(
                            "the TPM's value is the log's up to before event {n}; event {n} and later were not extended into the TPM"
                        ),
                        None => "the log's value matches an earlier state".to_string(),
                    },
                )
            }
            None => match events.first() {
                Some(first) => (
                    Some(*first),
                    format!(
                        "no prefix of the log's {} events for this PCR (first: event {first}) reproduces the quoted value",
                        events.len()
                    ),
                ),
                None => (
                    None,
                    "the log never extends this PCR, but the TPM's value is not its initial value"
                        .to_string(),
                ),
            },
        };
        ReplayMismatch::Pcr {
            alg,
            pcr,
            event,
            explanation,
            replayed: to_hex(replayed),
            quoted: to_hex(quoted),
        }
    }
}
