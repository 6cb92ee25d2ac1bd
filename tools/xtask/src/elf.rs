//! Flash and RAM use of a 32-bit little-endian ELF image, from its section headers.

const SHF_WRITE: u32 = 0x1;
const SHF_ALLOC: u32 = 0x2;
const SHT_NOBITS: u32 = 8;

/// Bytes of flash and of statically allocated RAM an image occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Everything loaded into flash: vectors, code, read-only data, the initial image of `.data`.
    pub flash: u64,
    /// Writable memory reserved at link time: `.data` and `.bss` (the stack is not included).
    pub ram_static: u64,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Sums the allocated sections of an ELF32 image.
pub fn sizes(bytes: &[u8]) -> Result<Sizes, String> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) || bytes.get(4) != Some(&1) {
        return Err("not a 32-bit ELF file".into());
    }
    let bad = || "truncated ELF section table".to_string();
    let shoff = u32_at(bytes, 0x20).ok_or_else(bad)? as usize;
    let shentsize = u16_at(bytes, 0x2E).ok_or_else(bad)? as usize;
    let shnum = u16_at(bytes, 0x30).ok_or_else(bad)? as usize;
    let mut sizes = Sizes {
        flash: 0,
        ram_static: 0,
    };
    for i in 0..shnum {
        let header = shoff + i * shentsize;
        let kind = u32_at(bytes, header + 4).ok_or_else(bad)?;
        let flags = u32_at(bytes, header + 8).ok_or_else(bad)?;
        let size = u64::from(u32_at(bytes, header + 20).ok_or_else(bad)?);
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        if kind != SHT_NOBITS {
            sizes.flash += size;
        }
        if flags & SHF_WRITE != 0 {
            sizes.ram_static += size;
        }
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_elf32() {
        assert!(sizes(b"hello").is_err());
        assert!(sizes(b"\x7fELF\x02").is_err());
        // A header claiming a section table past the end.
        let mut header = vec![0u8; 0x34];
        header[..5].copy_from_slice(b"\x7fELF\x01");
        header[0x20] = 0xFF;
        header[0x30] = 1;
        header[0x2E] = 40;
        assert!(sizes(&header).is_err());
    }
}
