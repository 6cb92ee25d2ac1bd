//! `vouch image add`: the reference measurements of a firmware image, computed exactly as the
//! board measures itself at boot (`vouch_agent::measure`), so an operator can accept a firmware
//! version without booting it.
//!
//! From an ELF file the flash image is laid out as the board sees it after loading: every
//! loadable segment with file contents at its physical (load) address, from the lowest one up,
//! gaps filled with zero bytes. The agent's version string and the board configuration are read
//! from the symbols `VOUCH_AGENT_VERSION` and `VOUCH_BOARD_CONFIG`. A raw binary is measured as
//! it is, and then `--agent-version` and `--config` must say what the board records.

use object::elf::{FileHeader32, FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol};
use vouch_agent::eventlog::EventLog;
use vouch_agent::measure::{self, BootImage, SHA1, SHA256, SHA384};
use vouch_attest::policy::SoftwareVersion;

/// The PCRs the agent's measured boot extends.
pub const BOOT_PCRS: [u32; 2] = [0, 1];
/// Largest image laid out from an ELF: a board's flash, with room to spare.
const MAX_IMAGE: u64 = 64 * 1024 * 1024;

/// An image as the board holds it, and what the board records beside it.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub base: u64,
    pub image: Vec<u8>,
    pub agent_version: Option<Vec<u8>>,
    pub config: Option<Vec<u8>>,
}

/// Lays out an ELF file's loadable contents as flash holds them.
pub fn layout_elf(bytes: &[u8]) -> Result<Layout, String> {
    let mut segments = match bytes.get(4) {
        Some(1) => loads::<FileHeader32<Endianness>>(bytes)?,
        Some(2) => loads::<FileHeader64<Endianness>>(bytes)?,
        _ => return Err("not an ELF file".into()),
    };
    segments.sort_by_key(|(address, _)| *address);
    let Some(&(base, _)) = segments.first() else {
        return Err("the ELF file has no loadable contents".into());
    };
    let end = segments
        .iter()
        .map(|(address, data)| address.saturating_add(data.len() as u64))
        .max()
        .unwrap_or(base);
    if end - base > MAX_IMAGE {
        return Err(format!(
            "the loadable contents span {} bytes, more than a board's flash; is this a firmware image?",
            end - base
        ));
    }
    let mut image = vec![0u8; usize::try_from(end - base).map_err(|e| e.to_string())?];
    let mut covered = 0u64;
    for (address, data) in &segments {
        if *address < covered {
            return Err("loadable segments overlap".into());
        }
        covered = address + data.len() as u64;
        let start = usize::try_from(address - base).map_err(|e| e.to_string())?;
        image
            .get_mut(start..start + data.len())
            .ok_or("segment outside the image")?
            .copy_from_slice(data);
    }
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
    let symbol = |name: &str| -> Option<Vec<u8>> {
        let sym = file.symbols().find(|s| s.name() == Ok(name))?;
        let start = usize::try_from(sym.address().checked_sub(base)?).ok()?;
        let len = usize::try_from(sym.size()).ok()?;
        image
            .get(start..start.checked_add(len)?)
            .map(<[u8]>::to_vec)
    };
    Ok(Layout {
        base,
        agent_version: symbol("VOUCH_AGENT_VERSION"),
        config: symbol("VOUCH_BOARD_CONFIG"),
        image,
    })
}

/// `(load address, contents)` of every PT_LOAD segment with contents in the file.
fn loads<H: FileHeader<Endian = Endianness>>(bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let header = H::parse(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let headers = header
        .program_headers(endian, bytes)
        .map_err(|e| format!("unreadable program headers: {e}"))?;
    let mut loads = Vec::new();
    for ph in headers {
        if ph.p_type(endian) != PT_LOAD {
            continue;
        }
        let data = ph
            .data(endian, bytes)
            .map_err(|()| "a segment reaches past the end of the file".to_string())?;
        if !data.is_empty() {
            loads.push((ph.p_paddr(endian).into(), data));
        }
    }
    Ok(loads)
}

/// The software version a board running `layout` would present: event digests and final
/// values of PCRs 0 and 1 in the SHA-1, SHA-256 and SHA-384 banks.
pub fn software_version(name: &str, boot: &BootImage<'_>) -> Result<SoftwareVersion, String> {
    let log = boot_event_log(boot)?;
    let parsed = vouch_attest::eventlog::parse(&log)
        .map_err(|e| format!("the agent's event log does not parse: {e}"))?;
    Ok(SoftwareVersion::from_event_log(name, &parsed, &BOOT_PCRS))
}

/// The TCG event log the agent keeps for its measured boot of `boot`, in the SHA-1, SHA-256
/// and SHA-384 banks.
pub fn boot_event_log(boot: &BootImage<'_>) -> Result<Vec<u8>, String> {
    let banks = [SHA1, SHA256, SHA384];
    let sizes: Vec<(u16, u16)> = banks
        .iter()
        .map(|&alg| {
            let size = measure::digest_size(alg).and_then(|s| u16::try_from(s).ok());
            (alg, size.unwrap_or(0))
        })
        .collect();
    let mut log = EventLog::<4096>::new(&sizes).map_err(|_| "event log buffer too small")?;
    for m in measure::boot_measurements(boot, &banks) {
        log.record(m.pcr, m.event_type, &m.digests, m.event_data())
            .map_err(|_| "event log buffer too small")?;
    }
    Ok(log.as_bytes().to_vec())
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are a few bytes long"
)]
mod tests {
    use super::*;

    /// A little-endian ELF32 with the given PT_LOAD segments `(p_paddr, contents, p_vaddr)`
    /// and no sections.
    fn elf32(segments: &[(u32, &[u8], u32)]) -> Vec<u8> {
        let phoff = 52u32;
        let data_start = phoff + 32 * segments.len() as u32;
        let mut out = vec![0u8; 52];
        out[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&40u16.to_le_bytes()); // EM_ARM
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[28..32].copy_from_slice(&phoff.to_le_bytes());
        out[40..42].copy_from_slice(&52u16.to_le_bytes());
        out[42..44].copy_from_slice(&32u16.to_le_bytes());
        out[44..46].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        out[46..48].copy_from_slice(&40u16.to_le_bytes());
        let mut offset = data_start;
        for (paddr, data, vaddr) in segments {
            for word in [
                1,
                offset,
                *vaddr,
                *paddr,
                data.len() as u32,
                data.len() as u32,
                5,
                4,
            ] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            offset += data.len() as u32;
        }
        for (_, data, _) in segments {
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn segments_are_laid_out_at_their_load_addresses() {
        // Code at 0x100, initialised data loaded right after it at 0x108 but run from RAM.
        let elf = elf32(&[
            (0x108, &[9, 9], 0x2000_0000),
            (0x100, &[1, 2, 3, 4, 5, 6], 0x100),
        ]);
        let layout = layout_elf(&elf).unwrap();
        assert_eq!(layout.base, 0x100);
        assert_eq!(layout.image, [1, 2, 3, 4, 5, 6, 0, 0, 9, 9]);
        assert_eq!(layout.agent_version, None);
    }

    #[test]
    fn bad_elf_files_are_refused_with_the_reason() {
        assert!(
            layout_elf(b"\x7fELF\x01")
                .unwrap_err()
                .contains("not an ELF")
        );
        let overlapping = elf32(&[(0x100, &[1, 2, 3, 4], 0x100), (0x102, &[7], 0x102)]);
        assert!(layout_elf(&overlapping).unwrap_err().contains("overlap"));
        let spread = elf32(&[(0, &[1], 0), (0x1000_0000, &[2], 0x1000_0000)]);
        assert!(
            layout_elf(&spread)
                .unwrap_err()
                .contains("more than a board's flash")
        );
        let mut truncated = elf32(&[(0, &[1, 2, 3, 4], 0)]);
        truncated.truncate(truncated.len() - 2);
        assert!(layout_elf(&truncated).unwrap_err().contains("past the end"));
    }

    #[test]
    fn one_changed_byte_changes_pcr_0_only() {
        let image = [0x42u8; 1000];
        let mut other = image;
        other[500] ^= 1;
        let version = |img: &[u8]| {
            let parts = [img];
            software_version(
                "v",
                &BootImage {
                    version: b"agent",
                    image: &parts,
                    base: 0,
                    config: b"cfg",
                },
            )
            .unwrap()
        };
        let (a, b) = (version(&image), version(&other));
        for alg in [vouch_attest::HashAlg::Sha1, vouch_attest::HashAlg::Sha256] {
            assert_ne!(a.pcrs[&alg][&0], b.pcrs[&alg][&0]);
            assert_eq!(a.pcrs[&alg][&1], b.pcrs[&alg][&1]);
        }
    }
}
